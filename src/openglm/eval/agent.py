"""Evaluate a model as a tool-using agent on held-out synthetic tasks (the paper's Table 9 in small).

Each task runs through the real Agent with real tools (sandboxed Python kernel, the browser
over the shipped documents, the world's user functions), offered in the same order as the
task's system message. Measured per task:

- valid: every call names an offered tool and its arguments parse and fit the tool's schema;
- tool choice: the first call is the expected tool (or no call for chat/refusal tasks);
- arguments: the first call's arguments match the expected ones (BFCL-style AST match:
  same keys, numbers compared by value, strings exactly; python code by the output it prints);
- answer: the final reply contains the expected value; and the same question answered with
  no tools offered, for the with/without-tools comparison.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from dataclasses import asdict, dataclass
from functools import cache

import jsonschema

from openglm.chat import tool_name
from openglm.data.synth import Task, world
from openglm.data.synth.tasks import BROWSER_RESULTS, run_python


@dataclass
class TaskResult:
    kind: str
    lang: str
    calls: int = 0
    valid_calls: int = 0
    tool_choice: bool = False
    arguments: bool = False
    answer: bool = False
    answer_without_tools: bool | None = None
    reason: str = ""
    final: str = ""


@cache
def _collection():
    """The BM25 index over the shipped documents, built once for all tasks (pages live per BrowserTool)."""
    from openglm.agent.tools import LocalSearch

    return LocalSearch(world.DOCS_DIR)


def make_tools(specs: list[dict], workdir: str, python=None):
    """Tools for these specs, in order; `python` lets several tasks share one kernel."""
    from openglm.agent.tools import BrowserTool, FunctionTool, PythonTool

    tools = []
    for spec in specs:
        name = tool_name(spec)
        if name == "python":
            tools.append(python or PythonTool(workdir))
        elif name == "simple_browser":
            tools.append(BrowserTool(_collection(), results=BROWSER_RESULTS))
        else:
            s = world.FUNCTION_SCHEMAS[name]
            tools.append(FunctionTool(name, s["description"], s["parameters"], world.FUNCTIONS[name]))
    return tools


def call_is_valid(name: str, arguments, offered: dict[str, dict]) -> bool:
    if name not in offered:
        return False
    if name == "python":
        return isinstance(arguments, str) and bool(arguments.strip())
    if name == "simple_browser":
        return isinstance(arguments, dict) and arguments.get("function") in ("search", "mclick", "open_url")
    if not isinstance(arguments, dict):
        return False
    return not list(jsonschema.Draft202012Validator(offered[name]["function"]["parameters"]).iter_errors(arguments))


def _same_value(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    return a == b


def arguments_match(name: str, got, want) -> bool:
    """AST-style match of one call's arguments against the expected ones."""
    if name == "python":
        try:
            return isinstance(got, str) and run_python(got) == run_python(want)
        except Exception:  # noqa: BLE001 - model-written code that fails (in-process, arithmetic only)
            return False
    return _same_value(got, want)


def evaluate_task(backend, task: Task, python=None, with_baseline: bool = True, limits=None) -> TaskResult:
    """Run one task with its tools (and once more without any); score it."""
    from openglm.agent import Agent, FinalEvent, Limits, ToolCallEvent

    limits = limits or Limits(max_steps=6, max_turn_tokens=256, max_seconds=120)
    specs = task.messages[0]["tools"] if task.messages[0]["role"] == "system" else []
    offered = {tool_name(s): s for s in specs}
    res = TaskResult(task.kind, task.lang)
    question = task.prompt[-1]["content"]
    with tempfile.TemporaryDirectory() as work:
        tools = make_tools(specs, work, python)
        agent = Agent(backend, tools, limits=limits)
        first = None
        for event in agent.run(question):
            if isinstance(event, ToolCallEvent):
                res.calls += 1
                res.valid_calls += call_is_valid(event.name, event.arguments, offered)
                first = first or event
            elif isinstance(event, FinalEvent):
                res.final, res.reason = event.content, event.reason
        for tool in tools:
            if tool is not python:
                tool.close()
    want = task.calls[0] if task.calls else None
    if want is None:
        res.tool_choice = first is None
        res.arguments = first is None
        res.answer = first is None and res.reason == "answer" and bool(res.final.strip())
    else:
        res.tool_choice = first is not None and first.name == want["name"]
        res.arguments = res.tool_choice and arguments_match(want["name"], first.arguments, want["arguments"])
        res.answer = res.reason == "answer" and task.answer in res.final
    if with_baseline and task.answer:
        final = Agent(backend, [], limits=limits).ask(question)
        res.answer_without_tools = task.answer in final.content
    return res


def summarize(results: list[TaskResult]) -> dict:
    """Overall and per-family shares."""
    def block(rs: list[TaskResult]) -> dict:
        calls = sum(r.calls for r in rs)
        tool_tasks = [r for r in rs if r.kind.split("-")[0] in ("arith", "function", "browser")]
        base = [r for r in rs if r.answer_without_tools is not None]
        return {
            "tasks": len(rs),
            "valid_call_rate": sum(r.valid_calls for r in rs) / calls if calls else None,
            "tool_choice": sum(r.tool_choice for r in rs) / len(rs),
            "arguments_match": sum(r.arguments for r in rs) / len(rs),
            "answer_with_tools": sum(r.answer for r in tool_tasks) / len(tool_tasks) if tool_tasks else None,
            "answer_without_tools": sum(r.answer_without_tools for r in base) / len(base) if base else None,
            "overall_success": sum(r.answer for r in rs) / len(rs),
        }
    by_family = defaultdict(list)
    for r in results:
        by_family[r.kind.split("-")[0]].append(r)
    return {"overall": block(results), "by_family": {k: block(v) for k, v in sorted(by_family.items())},
            "results": [asdict(r) for r in results]}


def evaluate(backend, tasks: list[Task], with_baseline: bool = True, progress: bool = True) -> dict:
    """Evaluate every task (one shared Python kernel) and summarise."""
    from rich.progress import track

    from openglm.agent.tools import PythonTool

    with tempfile.TemporaryDirectory() as work, PythonTool(work) as python:
        items = track(tasks, description="agent eval") if progress else tasks
        results = [evaluate_task(backend, t, python, with_baseline) for t in items]
    return summarize(results)


def markdown(summary: dict) -> str:
    """A results table: overall and per family."""
    cols = ["tasks", "valid_call_rate", "tool_choice", "arguments_match", "answer_with_tools",
            "answer_without_tools"]
    fmt = lambda v: "-" if v is None else (str(v) if isinstance(v, int) else f"{v:.0%}")  # noqa: E731
    rows = [("overall", summary["overall"])] + list(summary["by_family"].items())
    lines = ["| set | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(fmt(b[c]) for c in cols) + " |" for name, b in rows]
    return "\n".join(lines)


def to_json(summary: dict) -> str:
    return json.dumps(summary, ensure_ascii=False, indent=2)
