"""openglm: an open, hackable implementation of the ChatGLM / GLM-4 system.

    cfg = openglm.GLMConfig.from_preset("glm-4-9b-chat")
    model = openglm.load_model(path)          # hf Glm/Glm4 or original ChatGLM layout
    small = openglm.load_model(path, quantize="int4")   # quantized while it reads
    tok = openglm.load_tokenizer(path)
    print(openglm.generate(model, tok, [{"role": "user", "content": "你好"}]))

Names are imported on first use, so `import openglm.chat` (pure Python) never loads torch.
"""

from importlib import import_module

_EXPORTS = {
    "GLM": "openglm.model", "GLMConfig": "openglm.model",
    "load_model": "openglm.io", "save_model": "openglm.io", "convert": "openglm.io",
    "quantize_checkpoint": "openglm.io", "QuantSpec": "openglm.model",
    "load_tokenizer": "openglm.tokenizer", "generate": "openglm.infer",
}
__all__ = ["GLM", "GLMConfig", "QuantSpec", "chat", "convert", "generate", "load_model", "load_tokenizer",
           "quantize_checkpoint", "save_model"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    if name == "chat":
        return import_module("openglm.chat")
    raise AttributeError(f"module 'openglm' has no attribute {name!r}")
