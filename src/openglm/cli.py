"""The `openglm` command: one sub-command per pipeline stage, each a thin call into a package."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(help="openglm: the GLM-4 system, from raw text to a tool-using chat agent.",
                  no_args_is_help=True, add_completion=False)
err = Console(stderr=True)



class Layout(str, Enum):
    hf = "hf"
    chatglm = "chatglm"


class DType(str, Enum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


@contextmanager
def _one_line_errors(*kinds: type[BaseException]):
    """A bad checkpoint is bad input, not a bug: print one `error:` line and exit 1, no traceback."""
    try:
        yield
    except kinds as e:
        raise SystemExit(f"error: {e}") from None


def _torch_dtype(d: DType):
    import torch

    return None if d is DType.auto else getattr(torch, d.value)


ModelOpt = Annotated[Path | None, typer.Option("--model", "-m", help="checkpoint directory (any layout); "
                                               "default: the embedded nano agent model")]
PresetOpt = Annotated[str | None, typer.Option(help="build this preset with random weights instead")]
DTypeOpt = Annotated[DType, typer.Option(help="weight dtype (auto: as stored; generation computes bf16/fp16 "
                                                   "weights in float32 on a CPU without AVX-512)")]
CompileOpt = Annotated[bool, typer.Option("--compile", help="decode through a TorchInductor-compiled step: "
                                          "faster tokens after a compile of ~1 min (needs a C++ compiler)")]


def load_for_inference(model_dir: Path | None, preset: str | None = None, dtype: DType = DType.auto,
                       compiled: bool = False):
    """(model, tokenizer): a checkpoint directory; else a random-weight `preset`; else the embedded
    nano agent model shipped in the package (random `nano` weights if none is shipped).
    compiled: decode through a compiled step (infer.compile_decoding)."""
    model, tok = _load_model(model_dir, preset, dtype)
    if compiled:
        from .infer import compile_decoding

        compile_decoding(model)
        err.print("[dim]the decoding step compiles on first use: ~30-60 s, again for each new batch size or "
                  "context bucket (256, 512, 1024, ... tokens)[/dim]")
    return model, tok


def _load_model(model_dir: Path | None, preset: str | None, dtype: DType):
    import torch

    from .io import CheckpointError, load_model
    from .model import GLM, GLMConfig
    from .speedrun import EMBEDDED_DIR
    from .tokenizer import default_tokenizer, load_tokenizer

    if model_dir is None and preset is None and (EMBEDDED_DIR / "config.json").exists():
        model_dir = EMBEDDED_DIR
    if model_dir is None:
        preset = preset or "nano"
        err.print(f"[yellow]using the '{preset}' preset with RANDOM weights (its output is noise; pass "
                  "--model DIR for a trained checkpoint)[/yellow]")
        torch.manual_seed(0)
        model, tok = GLM(GLMConfig.from_preset(preset)), default_tokenizer()
        if model.config.vocab_size < tok.vocab_size:
            raise typer.BadParameter(f"preset {preset} has {model.config.vocab_size} embeddings, "
                                     f"the default tokenizer needs {tok.vocab_size}")
    else:
        with _one_line_errors(CheckpointError):
            model = load_model(model_dir, dtype=_torch_dtype(dtype))
        tok = load_tokenizer(model_dir)
        if dtype is not DType.auto:  # an explicit dtype is kept even where this CPU runs it slowly
            return model.eval().pack_weights(), tok
    return model.for_inference(), tok


@app.command()
def convert(
    src: Annotated[Path, typer.Argument(help="checkpoint directory to read (hf Glm/Glm4 or chatglm layout)")],
    dst: Annotated[Path, typer.Argument(help="directory to write")],
    layout: Annotated[Layout, typer.Option(help="layout to write")] = Layout.hf,
    dtype: DTypeOpt = DType.auto,
    max_shard_gb: Annotated[float, typer.Option(help="maximum shard size in GB")] = 5.0,
) -> None:
    """Re-save a checkpoint in another layout (and dtype); tokenizer files are copied along."""
    from .io import CheckpointError
    from .io import convert as do_convert

    with _one_line_errors(CheckpointError):
        out = do_convert(src, dst, layout=layout.value, dtype=_torch_dtype(dtype),
                         max_shard_bytes=int(max_shard_gb * 2**30))
    err.print(f"wrote {layout.value} checkpoint to {out}")


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="the prompt (sent as a user turn unless --raw)")],
    model: ModelOpt = None,
    preset: PresetOpt = None,
    dtype: DTypeOpt = DType.auto,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n")] = 128,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    seed: int | None = None,
    raw: Annotated[bool, typer.Option(help="encode the prompt as plain text, not as a chat turn")] = False,
    compiled: CompileOpt = False,
) -> None:
    """Generate a reply to one prompt, streamed to stdout."""
    from .infer import generate as gen

    m, tok = load_for_inference(model, preset, dtype, compiled)
    prompt_in = prompt if raw else [{"role": "user", "content": prompt}]
    _print_stream(gen(m, tok, prompt_in, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                      repetition_penalty=repetition_penalty, seed=seed, stream=True))


def _print_stream(deltas) -> str:
    """Write text deltas to stdout as they come; return the whole text."""
    text = ""
    for delta in deltas:
        text += delta
        sys.stdout.write(delta)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return text


CHAT_HELP = "commands: /reset (forget the conversation), /system TEXT (set the system prompt), /exit"


@app.command()
def chat(
    model: ModelOpt = None,
    preset: PresetOpt = None,
    dtype: DTypeOpt = DType.auto,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n")] = 512,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    compiled: CompileOpt = False,
) -> None:
    """Interactive multi-turn chat with streaming replies (history kept in the GLM-4 format)."""
    from .infer import PromptCache
    from .infer import generate as gen

    m, tok = load_for_inference(model, preset, dtype, compiled)
    reuse = PromptCache()  # each turn computes only the tokens after the history it shares
    system: str | None = None
    history: list[dict] = []
    err.print(CHAT_HELP)
    while True:
        try:
            line = input("user> ")
        except EOFError:
            break
        text = line.strip()
        if not text:
            continue
        if text == "/exit":
            break
        if text == "/reset":
            history = []
            err.print("(conversation cleared)")
            continue
        if text.startswith("/system"):
            system = text.removeprefix("/system").strip() or None
            history = []
            err.print(f"(system prompt {'set' if system else 'cleared'}; conversation cleared)")
            continue
        if text.startswith("/"):
            err.print(f"unknown command {text.split()[0]!r}; {CHAT_HELP}")
            continue
        history.append({"role": "user", "content": text})
        messages = ([{"role": "system", "content": system}] if system else []) + history
        sys.stdout.write("assistant> ")
        reply = _print_stream(gen(m, tok, messages, max_new_tokens, temperature=temperature, top_p=top_p,
                                  seed=seed, stream=True, prompt_cache=reuse))
        history.append({"role": "assistant", "content": reply})


@app.command()
def serve(
    model: ModelOpt = None,
    preset: PresetOpt = None,
    dtype: DTypeOpt = DType.auto,
    host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0 exposes it to the network)")] = "127.0.0.1",
    port: int = 8000,
    name: Annotated[str | None, typer.Option(help="model id clients send (default: the checkpoint's name)")] = None,
    max_tokens: Annotated[int, typer.Option(help="reply budget when a request gives none")] = 1024,
    api_key: Annotated[str | None, typer.Option(envvar="OPENGLM_API_KEY", show_default=False,
                                                help="require this bearer key on /v1 routes")] = None,
    compiled: CompileOpt = False,
) -> None:
    """Serve the model as an OpenAI-compatible API (/v1/chat/completions with tools and streaming)."""
    import uvicorn

    from .serve import create_app

    m, tok = load_for_inference(model, preset, dtype, compiled)
    name = name or (model.name if model else m.config.name)
    err.print(f"serving {name!r} on http://{host}:{port}/v1" + (" (API key required)" if api_key else ""))
    # a bounded shutdown: requests still running after 10 s are cancelled (their generations stop)
    uvicorn.run(create_app(m, tok, name, max_tokens, api_key), host=host, port=port, log_level="warning",
                timeout_graceful_shutdown=10)


@app.command()
def info(model: ModelOpt = None, preset: Annotated[str, typer.Option()] = "glm-4-9b-chat") -> None:
    """Print a model's configuration and parameter count (presets are built on the meta device)."""
    import torch

    from .model import GLM, GLMConfig, count_parameters

    with _one_line_errors(ValueError, OSError):
        cfg = GLMConfig.from_pretrained(model) if model else GLMConfig.from_preset(preset)
    with torch.device("meta"):
        n = count_parameters(GLM(cfg))
    for k, v in cfg.to_dict().items():
        print(f"{k:18s} {v}")
    print(f"{'parameters':18s} {n:,}")


@app.command()
def speedrun(
    out: Annotated[Path, typer.Option(help="run directory (rerun the same command to resume)")] = Path(
        "runs/speedrun"),
    preset: Annotated[str, typer.Option(help="budget preset: nano (55 min on 2 AVX2 cores, fp32) "
                                             "or tiny (a smoke test)")] = "nano",
    seed: int = 0,
    install: Annotated[bool, typer.Option(help="copy the result into the package as the embedded "
                                               "default model")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="override a budget field: "
                                                   "pretrain_steps=700 (see openglm.speedrun.Budget)")] = None,
) -> None:
    """Every stage end to end: data, tokenizer, pre-training, agent SFT, DPO, evaluation, report."""
    from .speedrun import PRESETS, Speedrun
    from .speedrun import install as install_model
    from .train.config import parse_overrides

    if preset not in PRESETS:
        raise typer.BadParameter(f"unknown speedrun preset {preset!r}; choose one of {', '.join(PRESETS)}")
    try:
        budget = PRESETS[preset].with_overrides(parse_overrides(set_ or []))
        run = Speedrun(out, preset="nano", seed=seed, budget=budget)
        run.record_settings()
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    report = run.run()
    err.print(f"report: {report}")
    if install:
        err.print(f"installed as the embedded model: {install_model(out / 'final')}")


def _mount_stage_apps() -> None:
    """Each stage package owns its sub-commands; they are mounted here, imported lazily by typer."""
    from .agent.cli import app as agent_app
    from .data.cli import app as data_app
    from .eval.cli import app as eval_app
    from .tokenizer.cli import app as tokenizer_app
    from .train import cli as train_cli

    app.add_typer(agent_app, name="agent")
    app.add_typer(data_app, name="data", help="clean, deduplicate, mix and pack text into token shards")
    for stage in (train_cli.pretrain, train_cli.sft, train_cli.dpo):
        app.command()(stage)
    app.add_typer(eval_app, name="eval", help="evaluate models (agent tool use on held-out tasks, in-context copying)")
    app.add_typer(tokenizer_app, name="tokenizer", help="train, merge and report byte-level BPE tokenizers")


_mount_stage_apps()

if __name__ == "__main__":
    app()
