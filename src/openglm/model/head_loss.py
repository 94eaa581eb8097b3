"""Output head + cross entropy in one pass over row chunks, for training.

For a small model the [tokens, vocab] logits are the biggest tensor of a training step (8 x 512
tokens x 16k vocab = 268 MB in fp32), and the plain path writes and reads it several times:
the fp32 upcast, log-softmax, its backward, the zero-filled gradient. Here each chunk of rows
gets its logits, its loss and its gradients (d loss / d logits = w * (softmax - onehot)) while the
chunk is still in cache, so the full logits never exist. Because the loss is a weighted sum with
weights known up front, the gradients can be made in the forward pass; backward only scales them.
"""

from __future__ import annotations

import torch

CHUNK_ROWS = 1024


def head_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                       weights: torch.Tensor | None = None, chunk: int = CHUNK_ROWS) -> torch.Tensor:
    """sum_i weights_i * CE(hidden_i @ weight.T, targets_i): hidden [N, H], weight [V, H], targets [N].

    Matmuls run in the autocast dtype when autocast is on (as `nn.Linear` would), softmax in fp32.
    """
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
    weights = torch.ones(targets.shape, dtype=torch.float32, device=hidden.device) if weights is None \
        else weights.float()
    with torch.autocast(device, enabled=False):
        if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
            return _HeadCrossEntropy.apply(hidden, weight, targets, weights, dtype, chunk)
        return _chunks(hidden, weight, targets, weights, dtype, chunk, grads=False)[0]


def _chunks(hidden, weight, targets, weights, dtype, chunk, grads: bool):
    w = weight.to(dtype)
    loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
    grad_h = torch.empty_like(hidden) if grads else None
    grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if grads else None
    for s in range(0, hidden.shape[0], chunk):
        h, t, wt = hidden[s:s + chunk].to(dtype), targets[s:s + chunk], weights[s:s + chunk]
        logits = (h @ w.T).float()
        rows = torch.arange(len(t), device=t.device)
        picked = logits[rows, t]
        top = logits.amax(-1, keepdim=True)
        e = logits.sub_(top).exp_()  # one exp pass serves the loss and the softmax, in place
        total = e.sum(-1)
        loss += ((total.log() + top[:, 0] - picked) * wt).sum()
        if grads:
            g = e.mul_((wt / total)[:, None])  # w * softmax
            g[rows, t] -= wt
            g = g.to(dtype)
            grad_h[s:s + chunk] = g @ w
            grad_w += (g.T @ h).float()
    return loss, grad_h, grad_w


class _HeadCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, weights, dtype, chunk):
        loss, grad_h, grad_w = _chunks(hidden, weight, targets, weights, dtype, chunk, grads=True)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_loss, (grad_w * grad_loss).to(ctx.weight_dtype), None, None, None, None
