"""Next-token cross-entropy: the loss that training minimises and `probe-future eval` reports."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm


def next_token_losses(logits: Tensor, tokens: Tensor) -> Tensor:
    """(B, T-1) cross-entropy in nats of predicting tokens[:, p+1] from the logits at position p."""
    batch, seq_len, vocab = logits.shape
    # Shift the targets rather than slice the logits: slicing copies the (B, T, V) logits, forward and backward.
    targets = F.pad(tokens[:, 1:], (0, 1), value=-100)
    losses = F.cross_entropy(logits.reshape(-1, vocab).float(), targets.reshape(-1), reduction="none")
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
