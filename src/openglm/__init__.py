"""openglm: an open, hackable implementation of the ChatGLM / GLM-4 system.

    cfg = openglm.GLMConfig.from_preset("glm-4-9b-chat")
    model = openglm.load_model(path)          # hf Glm/Glm4 or original ChatGLM layout
    tok = openglm.load_tokenizer(path)
    print(openglm.generate(model, tok, [{"role": "user", "content": "你好"}]))
"""

from . import chat
from .infer import generate
from .io import convert, load_model, save_model
from .model import GLM, GLMConfig
from .tokenizer import load_tokenizer

__all__ = ["GLM", "GLMConfig", "chat", "convert", "generate", "load_model", "load_tokenizer", "save_model"]
__version__ = "0.1.0"
