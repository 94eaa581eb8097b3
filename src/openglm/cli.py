"""The `openglm` command: one sub-command per pipeline stage, each a thin call into a package.

Importing this module imports neither torch nor any stage package, so `openglm --help` answers at
once: the stage packages' commands (`_STAGES`) are imported when they run or show their help.
A user's mistake ends as one `error:` line on stderr and a non-zero exit; `--debug` shows tracebacks.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperCommand, TyperGroup

from . import __version__
from .embedded import EMBEDDED_DIR
from .loading import Quantize, load_for_inference  # re-exported: callers load models as the CLI does

__all__ = ["app", "load_for_inference", "main"]

# name -> (module, attribute: a Typer app or a command function, one-line help shown by `openglm --help`)
_STAGES = {
    "data": ("openglm.data.cli", "app", "Clean, deduplicate, mix and pack text into token shards."),
    "tokenizer": ("openglm.tokenizer.cli", "app", "Train, merge and report byte-level BPE tokenizers."),
    "pretrain": ("openglm.train.cli", "pretrain", "Pre-train on token shards (causal LM or GLM blank infilling)."),
    "sft": ("openglm.train.cli", "sft", "Supervised fine-tuning on chat JSONL conversations."),
    "dpo": ("openglm.train.cli", "dpo", "Direct preference optimisation on chosen/rejected pairs."),
    "rm": ("openglm.train.cli", "rm", "Train a reward model (scalar head, Bradley-Terry) on chosen/rejected pairs."),
    "score": ("openglm.train.cli", "score", "Score conversations or chosen/rejected pairs with a reward model."),
    "rl": ("openglm.align.cli", "rl", "Reinforcement learning (GRPO, PPO-clip) on checkable rewards."),
    "selfcritique": ("openglm.align.cli", "selfcritique",
                     "Sample answers, grade them with a critic: RFT data and DPO pairs (ChatGLM-Math)."),
    "self-contrast": ("openglm.align.cli", "self_contrast",
                      "DPO pairs from the model's own wrong, dissimilar samples (Self-Contrast)."),
    "agent": ("openglm.agent.cli", "app", "Run the All Tools agent on a task, or interactively."),
    "eval": ("openglm.eval.cli", "app", "Evaluate tool use on held-out tasks and in-context copying."),
}

# Optional packages whose absence is the user's to fix: module -> (what needs it, package, install command).
_OPTIONAL = {
    "opencc": ("Traditional -> Simplified conversion (the t2s option of normalize)", "OpenCC",
               "pip install 'openglm[t2s]'"),
    "ray": ("the ray engine", "ray", "pip install 'openglm[ray]'"),
    "diffusers": ("local cogview images", "diffusers", "pip install 'openglm[images]'"),
    "transformers": ("Hugging Face interop", "transformers", "pip install 'openglm[hf]'"),
}

_debug = [False]  # set by --debug (or OPENGLM_DEBUG=1): let exceptions show their traceback


class _Stage(TyperCommand):
    """A stage package's command, imported only when it runs or shows its own help."""

    def __init__(self, name: str, module: str, attr: str, short_help: str) -> None:
        super().__init__(name, help=short_help, short_help=short_help)
        self._target, self._real = (module, attr), None

    def real(self):
        if self._real is None:
            module, attr = self._target
            obj = getattr(importlib.import_module(module), attr)
            if not isinstance(obj, typer.Typer):  # a plain function: make it a one-command app
                one = typer.Typer(add_completion=False, rich_markup_mode=None)
                one.command()(obj)
                obj = one
            self._real = typer.main.get_command(obj)
        return self._real

    def make_context(self, info_name, args, parent=None, **extra):
        return self.real().make_context(info_name, args, parent=parent, **extra)


class _Root(TyperGroup):
    """The top-level group: mounts the stage commands lazily and turns errors into one line."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name, (module, attr, short_help) in _STAGES.items():
            self.commands.setdefault(name, _Stage(name, module, attr, short_help))

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        _debug[0] = os.environ.get("OPENGLM_DEBUG", "") not in ("", "0")
        try:
            rv = super().main(args, prog_name or "openglm", complete_var, False, **extra)
        except typer.Abort:
            _fail("aborted", 1)
        except Exception as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # a group run bare: its help is the answer
                e.show()
                sys.exit(e.exit_code)
            if _is_usage(e):
                _fail(_usage_message(e), e.exit_code)
            if _debug[0]:
                raise
            _fail(error_line(e), 1)
        sys.exit(rv if isinstance(rv, int) else 0)


def _is_usage(e: BaseException) -> bool:
    """The CLI framework's own errors (bad option values, missing arguments, BadParameter)."""
    return hasattr(e, "format_message") and hasattr(e, "exit_code")


def _fail(message: str, code: int):
    # a plain write: rich would wrap (or box) the line at the terminal width and cut paths apart
    sys.stderr.write(f"error: {message.removeprefix('error: ')}\n")
    sys.stderr.flush()
    sys.exit(code)


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _validation_line(e: BaseException) -> str | None:
    """A pydantic ValidationError as `Model: field: problem (got value); ...`, without its URLs."""
    if not type(e).__module__.startswith("pydantic") or not callable(getattr(e, "errors", None)):
        return None
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()))
        got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict | list) else ""
        parts.append(f"{loc}: {err.get('msg', '')}{got}" if loc else f"{err.get('msg', '')}{got}")
    return f"{getattr(e, 'title', 'config')}: " + "; ".join(parts)


def _missing_package(e: BaseException) -> str | None:
    """'X needs the Y package: pip install ...' when `e` (or what caused it) is a missing optional import."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ModuleNotFoundError) and e.name:
            top = e.name.partition(".")[0]
            if top in _OPTIONAL:
                what, package, hint = _OPTIONAL[top]
                return f"{what} needs the {package} package: {hint}"
            try:  # the core install leaves out some extras; _deps knows which one brings a module
                from ._deps import missing_extra
            except ImportError:
                missing_extra = None
            extra = missing_extra(e) if missing_extra else None
            if extra is not None:
                return str(extra)
        e = e.__cause__ or e.__context__
    return None


def error_line(e: BaseException) -> str:
    """One line for an exception a command let through: what is wrong, and what to do if we know."""
    line = _missing_package(e) or _validation_line(e)
    if line:
        return line
    if isinstance(e, ValueError | OSError | ImportError | LookupError):  # bad input, files, settings
        return _one_line(e) or type(e).__name__
    return f"{type(e).__name__}: {_one_line(e)} (an internal error: rerun with --debug for the traceback)"


def _usage_message(e) -> str:
    message = _one_line(e.format_message())
    if getattr(e, "param", None) is None and getattr(e, "param_hint", None) is None:
        # a command's own BadParameter: its message (or the error behind it) says it all
        message = message.removeprefix("Invalid value: ")
        if e.__cause__ is not None:
            message = _validation_line(e.__cause__) or _missing_package(e.__cause__) or message
    ctx = getattr(e, "ctx", None)
    return message + (f" (see '{ctx.command_path} --help')" if ctx is not None else "")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"openglm {__version__}")
        raise typer.Exit()


app = typer.Typer(cls=_Root, name="openglm",
                  help="openglm: the GLM-4 system, from raw text to a tool-using chat agent.", no_args_is_help=True,
                  add_completion=False, rich_markup_mode=None,
                  pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]})


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="show the full traceback of an error")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """openglm: the GLM-4 system, from raw text to a tool-using chat agent."""
    _debug[0] = _debug[0] or debug


def main() -> None:
    """`python -m openglm` and the console script."""
    app(prog_name="openglm")


class Layout(str, Enum):
    hf = "hf"
    chatglm = "chatglm"


class DType(str, Enum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


def _torch_dtype(d: DType):
    import torch

    return None if d is DType.auto else getattr(torch, d.value)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


ModelOpt = Annotated[Path | None, typer.Option("--model", "-m", help="checkpoint directory (any layout); "
                                               "default: the embedded nano agent model")]
PresetOpt = Annotated[str | None, typer.Option(help="build this preset with random weights instead")]
DTypeOpt = Annotated[DType, typer.Option(help="weight dtype (auto: as stored; generation computes bf16/fp16 "
                                              "weights in float32 on a CPU without AVX-512)")]
CompileOpt = Annotated[bool, typer.Option("--compile", help="decode through a TorchInductor-compiled step: "
                                          "faster tokens after a compile of ~1 min (needs a C++ compiler)")]
QuantizeOpt = Annotated[Quantize | None, typer.Option(help="quantize the weights as they load: int8 (per channel) "
                                                   "or int4 (groups of 64); less memory, faster decoding")]
TemperatureOpt = Annotated[float, typer.Option(min=0.0, help="sampling temperature (0: greedy)")]
TopPOpt = Annotated[float, typer.Option(min=0.0, max=1.0, help="nucleus sampling: keep this much probability "
                                        "mass (1: off)")]
TokensOpt = Annotated[int, typer.Option("--max-new-tokens", "-n", min=1, help="reply length limit in tokens")]


def _load(model, preset, dtype, compiled, quantize=None):
    return load_for_inference(model, preset, dtype.value, compiled, say=_say, quantize=quantize)


class Format(str, Enum):
    safetensors = "safetensors"
    gguf = "gguf"


class GGUFType(str, Enum):
    f32 = "f32"
    f16 = "f16"
    bf16 = "bf16"
    q8_0 = "q8_0"
    q4_0 = "q4_0"


@app.command(short_help="Re-save a checkpoint in another layout or dtype, or as GGUF for llama.cpp.")
def convert(
    src: Annotated[Path, typer.Argument(metavar="SRC", help="checkpoint directory to read (hf Glm/Glm4 or chatglm "
                                        "layout)")],
    dst: Annotated[Path, typer.Argument(metavar="DST", help="directory to write (a .gguf file with --format gguf)")],
    layout: Annotated[Layout, typer.Option(help="layout to write")] = Layout.hf,
    dtype: DTypeOpt = DType.auto,
    max_shard_gb: Annotated[float, typer.Option(min=0.001, help="maximum shard size in GB")] = 5.0,
    format: Annotated[Format, typer.Option("--format", help="safetensors folder, or one GGUF file for llama.cpp "
                                           "and Ollama")] = Format.safetensors,
    gguf_type: Annotated[GGUFType, typer.Option("--type", help="GGUF: type of the weight matrices (norms and "
                                                "biases stay f32)")] = GGUFType.f16,
) -> None:
    """Re-save a checkpoint in another layout (and dtype); tokenizer files are copied along. With
    --format gguf, write one GGUF file (weights, tokenizer, chat template) for llama.cpp and Ollama.
    A reward model (openglm rm) is written as transformers' GlmForSequenceClassification.

    \b
    Example:
      openglm convert ./glm-4-9b-chat ./glm4-hf --layout hf --dtype bfloat16
      openglm convert ./my-model my-model-q8.gguf --format gguf --type q8_0
      openglm convert runs/nano_rm/final ./rm-hf
    """
    from .train.reward_model import export_reward_model, is_reward_model

    if is_reward_model(src):
        if format is not Format.safetensors or layout is not Layout.hf:
            raise typer.BadParameter(f"{src} is a reward model: it converts to transformers' "
                                     "GlmForSequenceClassification, --layout hf in safetensors only")
        export_reward_model(src, dst, _torch_dtype(dtype), int(max_shard_gb * 2**30))
        _say(f"wrote reward model (transformers GlmForSequenceClassification) to {dst}")
        return
    if format is Format.gguf:
        from .io.gguf_file import export_gguf

        report = export_gguf(src, dst, gguf_type.value)
        _say(f"wrote {report['path']}: {report['architecture']}, {report['type']}, {report['tensors']} tensors, "
             f"{report['bytes'] / 2**20:,.1f} MiB, {report['tokens']} tokens")
        if not report["same_pre_tokenizer"]:
            _say("note: this tokenizer splits text with its own pattern; llama.cpp splits with GLM-4's, so some "
                 "prompts tokenize differently there")
        return
    from .io import convert as do_convert

    out = do_convert(src, dst, layout=layout.value, dtype=_torch_dtype(dtype),
                     max_shard_bytes=int(max_shard_gb * 2**30))
    _say(f"wrote {layout.value} checkpoint to {out}")


@app.command(short_help="Write an INT8 or INT4 weight-only quantized checkpoint.")
def quantize(
    src: Annotated[Path, typer.Argument(metavar="SRC", help="full-precision checkpoint directory (any layout)")],
    dst: Annotated[Path, typer.Argument(metavar="DST", help="directory to write")],
    bits: Annotated[int, typer.Option(help="8: INT8 per output channel; 4: INT4 in groups")] = 8,
    group_size: Annotated[int, typer.Option(help="INT4: input columns sharing one scale (32, 64, 128 or 256)")]
    = 64,
    keep_head: Annotated[bool, typer.Option("--keep-head", help="leave the output head in full precision")] = False,
    keep_embedding: Annotated[bool, typer.Option("--keep-embedding", help="leave the token embedding in full "
                                                 "precision")] = False,
    max_shard_gb: Annotated[float, typer.Option(min=0.001, help="maximum shard size in GB")] = 5.0,
) -> None:
    """Write a weight-only quantized copy of a checkpoint (tokenizer included), one tensor at a time:
    memory holds the quantized model plus one full-precision tensor. Load it like any checkpoint.

    \b
    Example:
      openglm quantize ./glm-4-9b-chat ./glm-4-9b-chat-int4 --bits 4 --group-size 64
    """
    from .io import quantize_checkpoint
    from .model import QuantSpec

    spec = QuantSpec(bits=bits, group_size=group_size, head=not keep_head, embedding=not keep_embedding)
    out = quantize_checkpoint(src, dst, spec, max_shard_bytes=int(max_shard_gb * 2**30))
    size = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    _say(f"wrote {spec.name} checkpoint to {out} ({size / 2**20:,.1f} MiB of weights)")


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(metavar="PROMPT", help="the prompt (sent as a user turn unless --raw)")],
    model: ModelOpt = None,
    preset: PresetOpt = None,
    dtype: DTypeOpt = DType.auto,
    quantize: QuantizeOpt = None,
    max_new_tokens: TokensOpt = 128,
    temperature: TemperatureOpt = 0.0,
    top_k: Annotated[int, typer.Option(min=0, help="sample among the k likeliest tokens (0: off)")] = 0,
    top_p: TopPOpt = 1.0,
    repetition_penalty: Annotated[float, typer.Option(min=0.0, help="penalise tokens already in the text "
                                                      "(1: off)")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="sampling seed")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="encode the prompt as plain text, not as a chat turn")] = False,
    compiled: CompileOpt = False,
) -> None:
    """Generate a reply to one prompt, streamed to stdout.

    \b
    Example:
      openglm generate "What is the capital of France?" -n 64
    """
    from .infer import generate as gen

    m, tok = _load(model, preset, dtype, compiled, quantize)
    prompt_in = prompt if raw else [{"role": "user", "content": prompt}]
    _print_stream(gen(m, tok, prompt_in, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                      repetition_penalty=repetition_penalty, seed=seed, stream=True), reply=not raw)


def _print_stream(deltas, reply: bool = True) -> str:
    """Write text deltas to stdout as they come; return the whole text. A chat reply starts after the
    newline that ends its (empty) metadata line, which is not part of what the assistant says."""
    text = ""
    for delta in deltas:
        if reply and not text:
            delta = delta.lstrip("\n")
        text += delta
        sys.stdout.write(delta)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return text


CHAT_HELP = "commands: /reset (forget the conversation), /system TEXT (set the system prompt), /exit"


@app.command(short_help="Interactive multi-turn chat with streaming replies.")
def chat(
    model: ModelOpt = None,
    preset: PresetOpt = None,
    dtype: DTypeOpt = DType.auto,
    quantize: QuantizeOpt = None,
    max_new_tokens: TokensOpt = 512,
    temperature: TemperatureOpt = 0.0,
    top_p: TopPOpt = 1.0,
    seed: Annotated[int | None, typer.Option(help="sampling seed")] = None,
    compiled: CompileOpt = False,
) -> None:
    """Interactive multi-turn chat with streaming replies (history kept in the GLM-4 format).

    \b
    Example:
      openglm chat --model ./glm-4-9b-chat
    """
    from .infer import PromptCache
    from .infer import generate as gen

    m, tok = _load(model, preset, dtype, compiled, quantize)
    reuse = PromptCache()  # each turn computes only the tokens after the history it shares
    system: str | None = None
    history: list[dict] = []
    _say(CHAT_HELP)
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
            _say("(conversation cleared)")
            continue
        if text.startswith("/system"):
            system = text.removeprefix("/system").strip() or None
            history = []
            _say(f"(system prompt {'set' if system else 'cleared'}; conversation cleared)")
            continue
        if text.startswith("/"):
            _say(f"unknown command {text.split()[0]!r}; {CHAT_HELP}")
            continue
        history.append({"role": "user", "content": text})
        messages = ([{"role": "system", "content": system}] if system else []) + history
        sys.stdout.write("assistant> ")
        reply = _print_stream(gen(m, tok, messages, max_new_tokens, temperature=temperature, top_p=top_p,
                                  seed=seed, stream=True, prompt_cache=reuse))
        history.append({"role": "assistant", "content": reply})


@app.command(short_help="Serve the model as an OpenAI-compatible API.")
def serve(
    model: ModelOpt = None,
    preset: PresetOpt = None,
    dtype: DTypeOpt = DType.auto,
    quantize: QuantizeOpt = None,
    host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0 exposes it to the network)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port (0: any free one; the line printed once "
                                      "listening names it)")] = 8000,
    name: Annotated[str | None, typer.Option(help="model id clients send (default: the checkpoint's name)")] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="reply budget when a request gives none")] = 1024,
    api_key: Annotated[str | None, typer.Option(envvar="OPENGLM_API_KEY", show_default=False,
                                                help="require this bearer key on /v1 routes")] = None,
    compiled: CompileOpt = False,
) -> None:
    """Serve the model as an OpenAI-compatible API (/v1/chat/completions with tools and streaming).

    \b
    Example:
      OPENGLM_API_KEY=secret openglm serve --port 8000
    """
    from ._deps import require

    uvicorn = require("uvicorn", "serve")

    from .serve import create_app

    m, tok = _load(model, preset, dtype, compiled, quantize)
    name = name or (model.name if model else m.config.name)
    note = " (API key required)" if api_key else ""

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if self.started:  # said only once the port is bound, so a client may connect right away
                bound_host, bound_port = self.servers[0].sockets[0].getsockname()[:2]
                shown = f"[{bound_host}]" if ":" in bound_host else bound_host
                _say(f"serving {name!r} on http://{shown}:{bound_port}/v1{note}")

    # a bounded shutdown: requests still running after 10 s are cancelled (their generations stop)
    config = uvicorn.Config(create_app(m, tok, name, max_tokens, api_key), host=host, port=port,
                            log_level="warning", timeout_graceful_shutdown=10)
    server = Server(config)
    server.run()
    if not server.started:
        raise typer.Exit(3)  # uvicorn said why (the port is taken, ...)


@app.command(short_help="Print a model's configuration and parameter count.")
def info(
    model: ModelOpt = None,
    preset: Annotated[str | None, typer.Option(help="describe this preset instead, e.g. glm-4-9b-chat (built "
                                               "on the meta device)")] = None,
) -> None:
    """Print a model's configuration and parameter count (the embedded model unless --model or --preset).

    \b
    Example:
      openglm info --preset glm-4-9b-chat
    """
    import torch

    from .model import GLM, GLMConfig, count_parameters

    if model is None and preset is None:
        if (EMBEDDED_DIR / "config.json").exists():
            model = EMBEDDED_DIR
        else:
            preset = "nano"
    cfg = GLMConfig.from_pretrained(model) if model else GLMConfig.from_preset(preset)
    with torch.device("meta"):
        n = count_parameters(GLM(cfg))
    source = f"{model}" + (" (the embedded nano agent model)" if model == EMBEDDED_DIR else "") if model else \
        f"preset {preset}"
    print(f"{'model':18s} {source}")
    for k, v in cfg.to_dict().items():
        print(f"{k:18s} {v}")
    print(f"{'parameters':18s} {n:,}")
    if model and (model / "config.json").exists():
        spec = json.loads((model / "config.json").read_text()).get("openglm_quantization")
        if isinstance(spec, dict):
            print(f"{'quantization':18s} int{spec.get('bits')}" + (f", groups of {spec.get('group_size')}"
                                                                  if spec.get("bits") == 4 else ""))


@app.command(short_help="Every stage end to end on a budget, with a report.")
def speedrun(
    out: Annotated[Path, typer.Option(help="run directory (rerun the same command to resume)")] = Path(
        "runs/speedrun"),
    budget: Annotated[str, typer.Option("--budget", "--preset", help="run budget: full (55 min on 2 AVX2 cores, "
                                        "fp32) or smoke (a few minutes, a smoke test); nano and tiny are "
                                        "their former names")] = "full",
    seed: Annotated[int, typer.Option(help="seed of every stage")] = 0,
    install: Annotated[bool, typer.Option("--install", help="copy the result into the package as the embedded "
                                          "default model")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="override a budget field: "
                                                   "pretrain_steps=700 (see openglm.speedrun.Budget)")] = None,
) -> None:
    """Every stage end to end: data, tokenizer, pre-training, agent SFT, DPO, evaluation, report.

    \b
    Example:
      openglm speedrun --out runs/speedrun --budget full --set pretrain_steps=700
    """
    from .speedrun import BUDGET_ALIASES, Speedrun, budget_named
    from .speedrun import install as install_model
    from .train.config import parse_overrides

    try:
        chosen = budget_named(budget).with_overrides(parse_overrides(set_ or []))
        run = Speedrun(out, model="nano", seed=seed, budget=chosen, budget_name=BUDGET_ALIASES.get(budget, budget))
        run.record_settings()
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--budget") from e
    report = run.run()
    _say(f"report: {report}")
    if install:
        _say(f"installed as the embedded model: {install_model(out / 'final')}")


if __name__ == "__main__":
    main()
