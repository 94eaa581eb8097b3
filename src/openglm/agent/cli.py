"""``openglm agent``: run the All Tools agent on a task, or interactively, showing each step.

One command (the app's callback), so that mounted as ``openglm agent`` it reads
``openglm agent [OPTIONS] "task"``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.prompt import Confirm
from rich.syntax import Syntax
from rich.text import Text

from openglm.loading import Quantize

from .events import FinalEvent, ObservationEvent, TextDelta, ToolCallEvent, to_dict

app = typer.Typer(add_completion=False, subcommand_metavar="", rich_markup_mode=None,
                  # options may follow the task: `openglm agent "task" --yes`
                  context_settings={"allow_interspersed_args": True})
console = Console()
err = Console(stderr=True, soft_wrap=True)  # paths and messages stay on one line, whatever the width

BUILTINS = ("python", "browser", "cogview")
DEFAULT_HOME = Path(os.environ.get("OPENGLM_HOME", Path.home() / ".openglm")) / "agent"


@app.callback(invoke_without_command=True)
def agent(
    task: Annotated[str | None, typer.Argument(metavar="TASK", help="the task; without one, an interactive "
                                               "session starts")] = None,
    model: Annotated[Path | None, typer.Option("--model", "-m", help="local checkpoint directory")] = None,
    preset: Annotated[str | None, typer.Option(help="random-weight preset instead of the embedded model")] = None,
    endpoint: Annotated[str | None, typer.Option(help="OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1")]
    = None,
    api_key: Annotated[str | None, typer.Option(envvar="OPENGLM_API_KEY", show_default=False,
                                                help="key for --endpoint (better: the environment variable)")] = None,
    served_model: Annotated[str, typer.Option(help="model name at --endpoint")] = "glm-4-9b-chat",
    tools: Annotated[str, typer.Option(help="built-in tools, comma-separated: python,browser,cogview; '' for none")]
    = "python,browser",
    functions: Annotated[list[Path] | None, typer.Option(help="Python file with @function_tool functions")] = None,
    mcp: Annotated[list[str] | None, typer.Option(help="MCP server: a command line (stdio) or an http(s) URL")] = None,
    docs: Annotated[Path | None, typer.Option(help="folder of documents the browser searches (offline; default: "
                                                   "the shipped sample collection)")] = None,
    searxng: Annotated[str | None, typer.Option(help="SearxNG base URL for browser searches instead of --docs")]
    = None,
    allow: Annotated[list[str] | None, typer.Option(help="host or network the browser may reach although private")]
    = None,
    images_endpoint: Annotated[str | None, typer.Option(help="OpenAI-compatible images API root for cogview")] = None,
    images_model: Annotated[str, typer.Option(help="model name at --images-endpoint")] = "cogview-3-flash",
    diffusers: Annotated[Path | None, typer.Option(help="local diffusers weights for cogview")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="allow calls that need confirmation without asking")]
    = False,
    session: Annotated[str | None, typer.Option(help="resume this session id")] = None,
    home: Annotated[Path, typer.Option(help="where sessions and their files live")] = DEFAULT_HOME,
    max_steps: Annotated[int, typer.Option(min=1, help="model turns per task")] = 10,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="tokens per model turn")] = 2048,
    python_timeout: Annotated[float, typer.Option(min=0.0, help="seconds per python execution")] = 60.0,
    multiple_calls: Annotated[bool, typer.Option("--multiple-calls", help="run every call of a turn (an extension)")]
    = False,
    temperature: Annotated[float, typer.Option(min=0.0, help="sampling temperature (0: greedy)")] = 0.0,
    compiled: Annotated[bool, typer.Option("--compile", help="local model: decode through a compiled step "
                                          "(faster tokens after a compile of ~1 min)")] = False,
    quantize: Annotated[Quantize | None, typer.Option(help="local model: quantize the weights as they load "
                                                      "(int8 or int4)")] = None,
    system: Annotated[str | None, typer.Option(help="system prompt for a new session")] = None,
    json_events: Annotated[bool, typer.Option("--json", help="print events as JSON lines")] = False,
    no_sandbox: Annotated[bool, typer.Option("--unsafe-no-sandbox", help="run python WITHOUT the jail")] = False,
) -> None:
    """The GLM-4 All Tools agent (python, browser, text-to-image and your functions): run it on TASK, or
    interactively without one, showing each call, observation and answer.

    \b
    Example:
      openglm agent "What is 2**20? Use python." --tools python
    """
    from .loop import Agent, Limits
    from .session import SessionStore

    chosen = [t.strip() for t in tools.split(",") if t.strip()]
    unknown = [t for t in chosen if t not in BUILTINS]
    if unknown:
        raise typer.BadParameter(f"unknown tool {unknown[0]!r}; choose from {', '.join(BUILTINS)}",
                                 param_hint="--tools")
    if model and endpoint:
        raise typer.BadParameter("give --model or --endpoint, not both", param_hint="--endpoint")
    store = SessionStore(home / "sessions.db")
    if session and not store.exists(session):
        raise typer.BadParameter(f"no session {session!r} in {store.path}", param_hint="--session")
    sid = session or store.create()
    files = home / "sessions" / sid
    closers: list = []
    try:
        toolset = _builtin_tools(chosen, files, docs, searxng, allow or [], images_endpoint, images_model, diffusers,
                                 python_timeout, no_sandbox, closers)
        toolset += _user_tools(functions or [], mcp or [], files / "outputs", closers)
        backend = _backend(model, preset, endpoint, api_key, served_model, temperature, compiled, quantize)
        limits = Limits(max_steps=max_steps, max_turn_tokens=max_new_tokens)
        confirm = (lambda call: True) if yes else _ask
        runner = Agent(backend, toolset, limits=limits, system_prompt=system, multiple_calls=multiple_calls,
                       confirm=confirm, store=store, session_id=sid)
        closers.append(runner)
        if not json_events:
            err.print(f"[dim]session {sid} (resume with --session {sid}); files in {files}[/dim]")
        show = _print_json if json_events else _Display().show
        if task is not None:
            for event in runner.run(task):
                show(event)
            return
        _interactive(runner, show)
    finally:
        for closer in reversed(closers):
            closer.close()


def _builtin_tools(chosen, files: Path, docs, searxng, allow, images_endpoint, images_model, diffusers,
                   python_timeout, no_sandbox, closers) -> list:
    from .tools import (
        BrowserTool,
        CogViewTool,
        DiffusersImages,
        Fetcher,
        LocalSearch,
        OpenAIImages,
        PythonTool,
        SandboxLimits,
        SearxNGSearch,
    )
    from .tools.sandbox import bwrap_path

    out = []
    if "python" in chosen:
        if no_sandbox:
            err.print("[bold red]python runs WITHOUT the sandbox: model-written code has your permissions[/]")
        else:
            try:
                bwrap_path()
            except RuntimeError as e:
                raise typer.BadParameter(str(e), param_hint="--tools") from None
        out.append(PythonTool(files / "data", files / "outputs", SandboxLimits(timeout_s=python_timeout),
                              sandbox=not no_sandbox))
    if "browser" in chosen:
        results = 10
        if searxng:
            engine = SearxNGSearch(searxng)
        elif docs:
            engine = LocalSearch(docs)
        else:  # the shipped collection the embedded model was trained on (with its result count)
            from openglm.embedded import BROWSER_RESULTS, DOCS_DIR

            engine, results = LocalSearch(DOCS_DIR), BROWSER_RESULTS
        out.append(BrowserTool(engine, Fetcher(allow=allow), results=results))
    if "cogview" in chosen:
        if diffusers:
            images = DiffusersImages(diffusers)
        elif images_endpoint:
            images = OpenAIImages(images_endpoint, os.environ.get("OPENGLM_IMAGES_API_KEY"), images_model)
        else:
            raise typer.BadParameter("cogview needs --images-endpoint URL or --diffusers DIR", param_hint="--tools")
        out.append(CogViewTool(images, files / "outputs"))
    closers.extend(out)
    return out


def _user_tools(functions, servers, outputs: Path, closers) -> list:
    from .tools import MCPTools, load_functions

    out = []
    for path in functions:
        out += load_functions(path)
    for server in servers:
        connection = MCPTools(server, out_dir=outputs)
        closers.append(connection)
        out += connection.tools
    return out


def _backend(model, preset, endpoint, api_key, served_model, temperature, compiled, quantize=None):
    from .backends import LocalBackend, OpenAIBackend

    if endpoint:
        return OpenAIBackend(endpoint, api_key, served_model, temperature=temperature)
    from openglm.loading import load_for_inference

    m, tok = load_for_inference(model, preset, compiled=compiled, quantize=quantize)
    return LocalBackend(m, tok, temperature=temperature)


def _ask(call) -> bool:
    args = call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments, ensure_ascii=False)
    try:
        return Confirm.ask(f"[bold yellow]allow[/] {call.name}({args[:300]})?", console=err, default=False)
    except EOFError:
        return False


def _interactive(runner, show) -> None:
    err.print("[dim]interactive agent: type a task; /exit to quit[/dim]")
    while True:
        try:
            line = console.input("[bold green]you>[/] ").strip()
        except EOFError:
            break
        if line == "/exit":
            break
        if line:
            for event in runner.run(line):
                show(event)


def _print_json(event) -> None:
    print(json.dumps(to_dict(event), ensure_ascii=False), flush=True)


class _Display:
    """Readable steps: streamed answer text, a panel per call and per observation."""

    def __init__(self) -> None:
        self.in_text = False

    def show(self, event) -> None:
        if isinstance(event, TextDelta):
            if not self.in_text:
                console.print("[bold magenta]assistant>[/] ", end="")
                self.in_text = True
            console.print(event.text, end="", markup=False, highlight=False, soft_wrap=True)
            return
        if self.in_text:
            console.print()
            self.in_text = False
        if isinstance(event, ToolCallEvent):
            console.print(Panel(_call_body(event), title=f"[bold cyan]{event.name}[/] · step {event.step}",
                                title_align="left", border_style="cyan"))
        elif isinstance(event, ObservationEvent):
            text = event.content if len(event.content) <= 3000 else event.content[:3000] + " …"
            title = ("[bold red]error[/]" if event.is_error else "[green]observation[/]") + (
                f" · {event.metadata}" if event.metadata else "")
            console.print(Panel(Text(text), title=title, title_align="left",
                                border_style="red" if event.is_error else "green"))
        elif isinstance(event, FinalEvent):
            if event.reason != "answer":  # a cut reply was streamed already: only say why it ended
                streamed = event.reason in ("repetition", "max_tokens")
                console.print(f"[bold yellow]stopped: {event.reason}[/] " + ("" if streamed else escape(event.content)))
            console.print(f"[dim]{event.steps} steps, {event.tokens} tokens, {event.seconds:.1f} s[/dim]")
            sys.stdout.flush()


def _call_body(event: ToolCallEvent):
    from openglm.chat.parse import format_browser_call

    args = event.arguments
    if event.name == "python" and isinstance(args, str):
        return Syntax(args, "python", theme="ansi_dark", word_wrap=True)
    if event.name == "simple_browser" and isinstance(args, dict):
        try:
            return Text(format_browser_call(args))
        except ValueError:
            pass
    return Text(args if isinstance(args, str) else json.dumps(args, ensure_ascii=False, indent=2))
