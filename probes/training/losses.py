"""Next-token cross-entropy: the loss that training minimises and `probe-future eval` reports.

Training computes it through `NextTokenLoss`: for models whose logits are plainly `hidden @ W.T`, the vocabulary
projection and the cross-entropy run together in row chunks (`linear_cross_entropy`), so the (B, T, V) logits
are never held whole: a chunk's softmax stays in cache on a CPU, and on a GPU a GPT-2 vocabulary at batch
512 x 64 does not need 6.6 GB of float32 logits and as much again for their gradient.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

# Model types whose logits are exactly `hidden @ output_embeddings.weight.T`: no bias, scale or soft-capping.
PLAIN_HEAD_TYPES = frozenset({"gpt2", "gpt_neox", "llama"})
# Float32 logits per chunk: about the size of a CPU core's L2 cache; a GPU takes far larger chunks. Never fewer
# than MIN_CHUNK_ROWS rows: each chunk adds a (V, d) product into the weight's gradient, which fewer rows would
# repeat too often (a GPT-2 vocabulary on a CPU: 256 rows are 51 MB of logits, still a sliver of a batch's).
CHUNK_BYTES = {"cpu": 1 << 20}
DEFAULT_CHUNK_BYTES = 1 << 29
MIN_CHUNK_ROWS = 256


def next_token_losses(logits: Tensor, tokens: Tensor) -> Tensor:
    """(B, T-1) cross-entropy in nats of predicting tokens[:, p+1] from the logits at position p."""
    batch, seq_len, vocab = logits.shape
    # Shift the targets rather than slice the logits: slicing copies the (B, T, V) logits, forward and backward.
    targets = F.pad(tokens[:, 1:], (0, 1), value=-100)
    logits = logits.reshape(-1, vocab).to(torch.promote_types(logits.dtype, torch.float32))  # half → float32
    losses = F.cross_entropy(logits, targets.reshape(-1), reduction="none")
    return losses.view(batch, seq_len)[:, :-1]


@torch.no_grad()
def window_losses(
    model: nn.Module, tokens: Tensor, batch_size: int, device: torch.device, progress: bool = False
) -> np.ndarray:
    """(n_windows, T-1) float64 next-token losses of `model` (its current forward) on `tokens`."""
    rows = []
    for lo in tqdm(range(0, len(tokens), batch_size), desc="eval", unit="batch", disable=not progress):
        batch = tokens[lo : lo + batch_size].to(device)
        logits = model(input_ids=batch).logits
        rows.append(next_token_losses(logits, batch).double().cpu())
    return torch.cat(rows).numpy() if rows else np.zeros((0, tokens.shape[1] - 1))


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of hidden @ weight.T; both gradients are computed chunk by chunk in the forward."""

    @staticmethod
    def forward(ctx: Any, hidden: Tensor, weight: Tensor, targets: Tensor, rows: int) -> Tensor:  # type: ignore[override]
        n = hidden.shape[0]
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight)
        softmax_dtype = torch.promote_types(hidden.dtype, torch.float32)  # float64 stays float64
        total = torch.zeros((), dtype=softmax_dtype, device=hidden.device)
        for lo in range(0, n, rows):
            chunk, target = hidden[lo : lo + rows], targets[lo : lo + rows]
            logits = (chunk @ weight.T).to(softmax_dtype)
            log_norm = torch.logsumexp(logits, dim=-1)
            total += (log_norm - logits.gather(1, target[:, None]).squeeze(1)).sum()
            # d(mean loss)/d(logits) = (softmax - one-hot) / n, built in place over the chunk's logits
            grad_logits = logits.sub_(log_norm[:, None]).exp_()
            grad_logits[torch.arange(len(target), device=target.device), target] -= 1.0
            grad_logits /= n
            grad_logits = grad_logits.to(weight.dtype)
            grad_hidden[lo : lo + rows] = grad_logits @ weight
            grad_weight += grad_logits.T @ chunk
        ctx.save_for_backward(grad_hidden, grad_weight)
        return total / n

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, Tensor, None, None]:  # type: ignore[override]
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_output, grad_weight * grad_output, None, None


def linear_cross_entropy(
    hidden: Tensor, weight: Tensor, targets: Tensor, chunk_bytes: int | None = None, min_rows: int = MIN_CHUNK_ROWS
) -> Tensor:
    """Mean cross-entropy (nats) of the logits `hidden @ weight.T` ((N, d) @ (d, V)) for `targets` (N,).

    Equal to `F.cross_entropy(hidden @ weight.T, targets)` and its gradients up to float rounding, without the
    (N, V) logits: rows go through in chunks of about `chunk_bytes` of float32 logits, at least `min_rows` rows.
    For training only (the gradients are computed in the forward).
    """
    if chunk_bytes is None:
        chunk_bytes = CHUNK_BYTES.get(hidden.device.type, DEFAULT_CHUNK_BYTES)
    rows = max(min_rows, chunk_bytes // (4 * weight.shape[0]))
    return _LinearCrossEntropy.apply(hidden, weight, targets, rows)


def plain_head(model: nn.Module) -> bool:
    """Whether `model`'s logits are its base model's last hidden state times its output embedding matrix."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return model_type in PLAIN_HEAD_TYPES and isinstance(head, nn.Linear) and head.bias is None


class NextTokenLoss(nn.Module):
    """Mean next-token cross-entropy of a causal LM on (B, T) windows: what a training step runs (and DDP wraps).

    Models with a plain head (`plain_head`) go through `linear_cross_entropy`; any other through their logits.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.chunked = plain_head(model)

    def forward(self, tokens: Tensor) -> Tensor:
        if not (self.chunked and torch.is_grad_enabled()):
            return next_token_losses(self.model(input_ids=tokens).logits, tokens).mean()
        hidden = self.model.base_model(input_ids=tokens).last_hidden_state[:, :-1]
        weight = self.model.get_output_embeddings().weight
        return linear_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), weight, tokens[:, 1:].reshape(-1))
