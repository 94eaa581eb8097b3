"""The ``cogview`` tool: text to image, through an OpenAI-compatible images API or a local diffusers pipeline.

Images are saved as files; the observation (metadata ``cogview_result``) shows
them as Markdown ``![prompt](path)`` so the model can show them to the user.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Protocol

import httpx

from .base import Observation, Tool, ToolError


class ImageBackend(Protocol):
    def generate(self, prompt: str, path: Path) -> str | None:
        """Write the image for ``prompt`` to ``path``; return its URL when the service gave one."""


class OpenAIImages:
    """``POST {base_url}/images/generations`` (OpenAI, CogView's API, or any compatible server)."""

    def __init__(self, base_url: str, api_key: str | None = None, model: str = "cogview-3-flash", *,
                 size: str = "1024x1024", timeout_s: float = 120.0, max_bytes: int = 20_000_000):
        self.base_url, self.model, self.size, self.max_bytes = base_url.rstrip("/"), model, size, max_bytes
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(timeout=timeout_s, headers=headers, trust_env=False)

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIImages(base_url={self.base_url!r}, model={self.model!r})"

    def generate(self, prompt: str, path: Path) -> str | None:
        body = {"model": self.model, "prompt": prompt, "n": 1, "size": self.size}
        try:
            r = self._http.post(f"{self.base_url}/images/generations", json=body)
        except httpx.HTTPError as e:
            raise ToolError(f"image service: {type(e).__name__}: {e}") from None
        if r.status_code >= 400:
            raise ToolError(f"image service answered HTTP {r.status_code}: {r.text[:300]}")
        try:
            item = r.json()["data"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            raise ToolError(f"image service answered without data[0]: {r.text[:300]}") from None
        if item.get("b64_json"):
            path.write_bytes(base64.b64decode(item["b64_json"]))
            return None
        url = item.get("url")
        if not url:
            raise ToolError("image service answered neither b64_json nor url")
        # the URL comes from the service we chose; keep a copy, but the URL alone is still a result
        try:
            with self._http.stream("GET", url) as img:
                img.raise_for_status()
                data = b""
                for chunk in img.iter_bytes():
                    data += chunk
                    if len(data) > self.max_bytes:
                        raise ToolError(f"image at {url} is larger than {self.max_bytes:,} bytes")
            path.write_bytes(data)
        except httpx.HTTPError:
            pass
        return url


class DiffusersImages:
    """A local ``diffusers`` text-to-image pipeline from a weights directory (e.g. CogView3/4 or SDXL)."""

    def __init__(self, model_dir: str | Path, *, device: str = "cpu", steps: int = 30, dtype: str | None = None):
        try:
            import diffusers
        except ImportError:
            raise ImportError("the local cogview backend needs diffusers: pip install diffusers "
                              "(or use an images API with --images-endpoint)") from None
        import torch

        kw = {"torch_dtype": getattr(torch, dtype)} if dtype else {}
        self.pipe = diffusers.AutoPipelineForText2Image.from_pretrained(str(model_dir), local_files_only=True, **kw)
        self.pipe.to(device)
        self.steps = steps

    def generate(self, prompt: str, path: Path) -> str | None:
        self.pipe(prompt, num_inference_steps=self.steps).images[0].save(path)
        return None


class CogViewTool(Tool):
    name = "cogview"
    timeout_s = 600.0

    def __init__(self, backend: ImageBackend, outputs_dir: str | Path):
        self.backend, self.outputs_dir = backend, Path(outputs_dir)

    def spec(self) -> dict:
        return {"type": "cogview"}

    def run(self, arguments) -> Observation:
        prompt = str(arguments).strip()
        if not prompt:
            raise ToolError("cogview needs an image description")
        self.outputs_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = self.outputs_dir / f"cogview-{stamp}-{len(list(self.outputs_dir.iterdir()))}.png"
        url = self.backend.generate(prompt, path)
        saved = path.exists()
        where = str(path) if saved else url
        alt = " ".join(prompt.split())[:60]
        text = f"![{alt}]({where})" + (f"\nURL: {url}" if url and saved else "")
        return Observation(text, "cogview_result", files=[str(path)] if saved else [])
