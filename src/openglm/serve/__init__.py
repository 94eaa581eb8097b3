"""Serving: an OpenAI-compatible HTTP API over a local model."""

from .app import create_app

__all__ = ["create_app"]
