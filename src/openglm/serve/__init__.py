"""Serving: an OpenAI-compatible HTTP API over a local model."""

from .._deps import extra_imports

with extra_imports("serve"):  # fastapi: pip install 'openglm[serve]'
    from .app import create_app

__all__ = ["create_app"]
