import sys, tempfile
from openglm.agent import Agent, LocalBackend, Limits, ToolCallEvent, FinalEvent
from openglm.agent.tools import PythonTool
from openglm.data.synth import generate_tasks
from openglm.eval.agent import call_is_valid, make_tools, tool_name
from openglm.io import load_model
from openglm.speedrun import EMBEDDED_DIR
from openglm.tokenizer import load_tokenizer
seed = int(sys.argv[1]) if len(sys.argv) > 1 else 123
model = load_model(sys.argv[2] if len(sys.argv) > 2 else EMBEDDED_DIR).for_inference()
tok = load_tokenizer(sys.argv[2] if len(sys.argv) > 2 else EMBEDDED_DIR)
backend = LocalBackend(model, tok)
calls = bad = 0
with tempfile.TemporaryDirectory() as w, PythonTool(w) as py:
    for t in generate_tasks(100, seed=seed, split="heldout"):
        specs = t.messages[0]["tools"] if t.messages[0]["role"] == "system" else []
        offered = {tool_name(s): s for s in specs}
        with tempfile.TemporaryDirectory() as work:
            tools = make_tools(specs, work, py)
            for ev in Agent(backend, tools, limits=Limits(max_steps=6, max_turn_tokens=256, max_seconds=120)).run(t.prompt[-1]["content"]):
                if isinstance(ev, ToolCallEvent):
                    calls += 1
                    ok = call_is_valid(ev.name, ev.arguments, offered)
                    if not ok:
                        bad += 1
                        print(f"[{t.kind}] Q={t.prompt[-1]['content'][:80]!r}\n   offered={list(offered)} call={ev.name} args={str(ev.arguments)[:160]!r}")
            for tool in tools:
                if tool is not py:
                    tool.close()
print("calls", calls, "invalid", bad, "valid rate", 1 - bad / calls)
