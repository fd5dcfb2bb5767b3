"""Probe fits from the activation store in bounded memory: no layer is ever loaded whole unless it fits.

Every fit reads its inputs through lazy views (`probes.probing.rowviews`) over a store layer
(`probes.activation_rows.LayerRows`):
- the least-squares map accumulates XᵀX and XᵀR (float64) over 8,192-pair chunks: the Gram matrices of every τ
  in one pass, sums of the validation documents apart, so the maps with and without them share it; the maps
  equal the in-memory fit's to float64 rounding;
- the softmax probe's minibatches are drawn by the same seeded permutation over the train rows and read
  across shards; its standardisation and validation losses are chunked sums;
- the count baselines need only the token ids; intervals come from per-document sums.

`--memory` (GB) is the activation budget of one process: a layer (plus the final layer for the least-squares
map) is loaded whole when it fits, else read from disk chunk by chunk. The numbers do not depend on the choice.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from probes.activation_rows import LayerRows
from probes.probing.linear import Decode, LstsqMap, LstsqSums, cross_sums, gram_sums, lstsq_scores
from probes.probing.metrics import PairScores
from probes.probing.targets import TARGETS, target_labels

GIB = 1024**3
Device = torch.device | str
DEFAULT_MEMORY_SHARE = 0.25  # of the machine's RAM, split among the processes of one machine


def default_memory_gb(local_processes: int = 1) -> float:
    """A quarter of this machine's RAM, shared by the probe processes running on it."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * GIB
    return DEFAULT_MEMORY_SHARE * total / max(1, local_processes) / GIB


# Holding a layer costs about this many times its float16 bytes: the layer itself, the train rows as float32
# and once more standardised (3.2 with 80 % of the rows in train), and the scores' chunks.
HELD_LAYER_COPIES = 5


def cache_in_memory(layer_bytes: int, layers_at_once: int, memory_gb: float) -> bool:
    """Whether the layers a fit reads at once (the layer, and the final layer for the least-squares map) can be
    held whole within the activation budget; otherwise they are read from the store as needed."""
    return layer_bytes * (HELD_LAYER_COPIES + layers_at_once - 1) <= memory_gb * GIB


def pair_rows(windows: np.ndarray, seq_len: int, tau: int) -> np.ndarray:
    """Store rows (w * T + t) of every pair of offset τ in the given windows, in pair order (t < T - τ)."""
    windows = np.asarray(windows, dtype=np.int64)
    return (windows[:, None] * seq_len + np.arange(seq_len - tau)).reshape(-1)


def lstsq_sums(
    layer: LayerRows, final: LayerRows, windows: np.ndarray, seq_len: int, taus: Sequence[int], device: Device = "cpu"
) -> dict[int, LstsqSums]:
    """Per τ, the least-squares sums of the pairs of `windows` (pair (w, t): the layer's row (w, t), the final
    layer's row (w, t + τ - 1)). The Gram matrices of every τ come from one pass (the positions before the
    last max τ of each window, then each of those positions alone); the cross sums take one pass per τ."""
    from probes.probing.rowviews import RowView

    longest, shortest = max(taus), min(taus)
    windows = np.asarray(windows, dtype=np.int64)
    body = gram_sums(RowView(layer, pair_rows(windows, seq_len, longest), device))
    tails = [
        gram_sums(RowView(layer, windows * seq_len + p, device)) for p in range(seq_len - longest, seq_len - shortest)
    ]
    sums: dict[int, LstsqSums] = {}
    for tau in taus:
        n, sum_x, gram = body
        for tail_n, tail_sum, tail_gram in tails[: longest - tau]:
            n, sum_x, gram = n + tail_n, sum_x + tail_sum, gram + tail_gram
        rows = pair_rows(windows, seq_len, tau)
        sum_y, cross = cross_sums(RowView(layer, rows, device), RowView(final, rows + tau - 1, device))
        sums[tau] = LstsqSums(n, sum_x, sum_y, gram, cross)
    return sums


def score_maps(
    maps: dict[int, LstsqMap],
    layer: LayerRows,
    windows: np.ndarray,
    tokens: torch.Tensor,
    model_pred: torch.Tensor,
    decode: Decode,
    device: Device = "cpu",
    targets: Sequence[str] = TARGETS,
    chunk_rows: int = 256,
) -> dict[tuple[int, str], PairScores]:
    """Each τ's map scored on the pairs of `windows` against every target. tokens / model_pred: (W, T) of the
    whole store; pairs are window-major, t < T - τ."""
    from probes.probing.rowviews import RowView

    seq_len = tokens.shape[1]
    chosen = torch.from_numpy(np.asarray(windows, dtype=np.int64))
    tokens_at, pred_at = tokens[chosen], model_pred[chosen]
    results: dict[tuple[int, str], PairScores] = {}
    for tau, lmap in maps.items():
        X = RowView(layer, pair_rows(windows, seq_len, tau), device)
        labels = {
            target: target_labels(tokens_at, pred_at, tau, target)[:, : seq_len - tau].reshape(-1) for target in targets
        }
        for target, scores in lstsq_scores(lmap, X, decode, labels, chunk_rows=chunk_rows).items():  # type: ignore[arg-type]
            results[(tau, target)] = scores
    return results


def lstsq_grid_rows(
    layer: LayerRows,
    final: LayerRows,
    train_windows: np.ndarray,
    test_windows: np.ndarray,
    tokens: torch.Tensor,
    model_pred: torch.Tensor,
    taus: Sequence[int],
    decode: Decode,
    device: Device = "cpu",
    ridge: float | None = None,
    targets: Sequence[str] = TARGETS,
    chunk_rows: int = 256,
) -> dict[tuple[int, str], PairScores]:
    """`probes.probing.linear.lstsq_grid` from the store (the same maps to float64 rounding), one chunk in memory.

    tokens / model_pred: (W, T) of the whole store; the pairs of τ are window-major, t < T - τ, and the
    regression target of pair (w, t) is the final-layer row of (w, t + τ - 1).
    """
    sums = lstsq_sums(layer, final, train_windows, tokens.shape[1], taus, device)
    maps = {tau: sums[tau].solve(ridge) for tau in taus}
    return score_maps(maps, layer, test_windows, tokens, model_pred, decode, device, targets, chunk_rows)
