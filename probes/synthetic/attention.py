"""Where a synthetic-task model's heads look: mean attention weight by distance n − m, per block and head.

A model that solves the task gathers the window n−s−W+1..n−s in some block; how much of each head's weight falls
there, and how it is spread over the distances, shows whether it does (a box over the window) or only weights
the recent past (a decaying profile).
"""

from __future__ import annotations

import numpy as np
import torch

from probes.synthetic.model import SyntheticModel
from probes.synthetic.task import LOSS_STREAM, TaskSpec, batch_of

EXTRA_DISTANCES = 4  # distances shown past the window's far edge


def max_distance(spec: TaskSpec) -> int:
    return min(spec.shift + spec.window - 1 + EXTRA_DISTANCES, spec.seq_len - 1)


@torch.no_grad()
def attention_by_distance(model: SyntheticModel, spec: TaskSpec, n_sequences: int = 256, seed: int = 0) -> np.ndarray:
    """(blocks, heads, D+1) mean weight that position n puts on n − k, k = 0..D (D = `max_distance(spec)`).

    Averaged over held-out sequences and over the positions n ≥ D, where every distance shown exists.
    """
    inputs = batch_of(spec, n_sequences, seed, LOSS_STREAM).inputs(next(model.parameters()).device)
    config = model.body.config
    implementation = config._attn_implementation
    config._attn_implementation = "eager"  # only eager attention returns its weights
    try:
        attentions = model.body(inputs_embeds=model.inp(inputs), output_attentions=True).attentions
    finally:
        config._attn_implementation = implementation
    reach = max_distance(spec)
    positions = torch.arange(reach, spec.seq_len)
    by_distance = [
        torch.stack([weights[:, :, positions, positions - k].mean(dim=(0, 2)) for k in range(reach + 1)], dim=-1)
        for weights in attentions
    ]
    return torch.stack(by_distance).double().cpu().numpy()


def window_share(profile: np.ndarray, spec: TaskSpec) -> np.ndarray:
    """(blocks, heads) share of each head's weight on the target window (distances s..s+W−1)."""
    return profile[..., spec.shift : spec.shift + spec.window].sum(-1)


def profile_text(profile: np.ndarray, spec: TaskSpec, block: int = -1) -> list[str]:
    """One line per head of `block`: its window share, then its weight at each distance (window in brackets)."""
    shares = window_share(profile, spec)[block]
    lines = []
    for head, weights in enumerate(profile[block]):
        cells = [f"{w:.2f}" for w in weights]
        cells[spec.shift] = "[" + cells[spec.shift]
        cells[min(spec.shift + spec.window, len(cells)) - 1] += "]"
        lines.append(f"head {head}: window {shares[head]:.2f} | by distance 0..{len(cells) - 1}: {' '.join(cells)}")
    return lines
