"""The KV cache that generation extends token by token."""

from __future__ import annotations

import torch

from .config import GLMConfig


class KVCache:
    """Preallocated keys/values, per layer a [batch, kv_heads, max_len, head_dim] tensor of its own.

    Preallocation means decoding never reallocates or concatenates; attention reads a
    view of the first `length` slots. Separate tensors per layer (not slices of one) let a
    compiled step write a layer's slot in place (writing into a view of a graph input makes
    inductor copy the whole input).
    """

    def __init__(self, cfg: GLMConfig, batch_size: int, max_len: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        shape = (batch_size, cfg.num_kv_heads, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.num_layers)]
        self.max_len = max_len
        self.length = 0  # filled slots; advanced by GLM.forward after all layers ran

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} positions needed, {self.max_len} allocated")
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def reset(self) -> None:
        self.length = 0
