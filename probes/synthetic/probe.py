"""Ridge probes from hidden states to the synthetic task's features, scored by R² on held-out sequences.

Targets: sin(f·x_{n−i}) for look-backs i = 0..max_lookback (only at positions n ≥ i), the window sum
(y's z = 1 part) and y itself. The ridge has an unpenalised bias; it is fitted in closed form from
per-position Gram matrices, so every target's own set of positions costs one suffix sum, not a refit.
R² = 1 − SSE/SST on the held-out sequences, with percentile intervals from resampling whole sequences
(per-sequence sums of squares, so every resample is two matrix products).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probes.stats import bootstrap_weights
from probes.synthetic.task import Batch

RIDGE_LAMBDA = 1e-4
MAX_LOOKBACK = 20
LEVEL = 0.95


@dataclass
class Targets:
    values: np.ndarray  # (S, T, m)
    start: np.ndarray  # (m,) first position at which each target is defined
    names: list[str]
    lookbacks: list[int | None]


def probe_targets(batch: Batch, freq: float, max_lookback: int = MAX_LOOKBACK) -> Targets:
    n_seq, length = batch.x.shape
    lookbacks = list(range(min(max_lookback, length - 1) + 1))
    sines = np.sin(freq * batch.x)
    columns = [np.pad(sines, ((0, 0), (i, 0)))[:, :length] for i in lookbacks]
    columns += [batch.window_sum, batch.y]
    return Targets(
        values=np.stack(columns, axis=-1),
        start=np.array(lookbacks + [0, 0]),
        names=["sin"] * len(lookbacks) + ["window_sum", "y"],
        lookbacks=[*lookbacks, None, None],
    )


def _with_bias(features: np.ndarray) -> np.ndarray:
    return np.concatenate([features, np.ones(features.shape[:-1] + (1,))], axis=-1)


def _suffix_sums(per_position: np.ndarray) -> np.ndarray:
    """Entry t = sum over positions ≥ t."""
    return np.flip(np.cumsum(np.flip(per_position, 0), axis=0), 0)


def fit_ridge(features: np.ndarray, targets: Targets, lam: float = RIDGE_LAMBDA) -> np.ndarray:
    """(m, d+1) weights (last column: bias) of ridge fits of every target on `features` (S, T, d)."""
    x = _with_bias(np.asarray(features, dtype=np.float64))
    gram = _suffix_sums(np.einsum("std,ste->tde", x, x, optimize=True))
    cross = _suffix_sums(np.einsum("std,stm->tdm", x, targets.values, optimize=True))
    penalty = lam * np.diag(np.r_[np.ones(x.shape[-1] - 1), 0.0])
    columns = np.arange(len(targets.start))
    a = gram[targets.start] + penalty
    b = cross[targets.start, :, columns]
    return np.linalg.solve(a, b[..., None])[..., 0]


def r2_scores(
    features: np.ndarray, targets: Targets, weights: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R² of every target on held-out `features` (S, T, d): (point, ci_low, ci_high), each (m,)."""
    x = _with_bias(np.asarray(features, dtype=np.float64))
    predictions = np.einsum("std,md->stm", x, weights, optimize=True)
    mask = (np.arange(x.shape[1])[:, None] >= targets.start[None, :]).astype(np.float64)  # (T, m)
    y = targets.values * mask
    per_sequence = np.stack(
        [
            (((y - predictions) * mask) ** 2).sum(axis=1),
            np.broadcast_to(mask.sum(axis=0), y.shape[::2]),
            y.sum(axis=1),
            (y**2).sum(axis=1),
        ]
    )  # (4, S, m): SSE, count, Σy, Σy² per held-out sequence
    point = _r2(per_sequence.sum(axis=1))
    draws = bootstrap_weights(x.shape[0], n_boot, seed).astype(np.float64)
    resampled = _r2(np.einsum("bs,ksm->kbm", draws, per_sequence, optimize=True))
    alpha = (1.0 - LEVEL) / 2.0
    low, high = np.quantile(resampled, [alpha, 1.0 - alpha], axis=0)
    return point, low, high


def _r2(totals: np.ndarray) -> np.ndarray:
    sse, count, total, squares = totals
    sst = squares - total**2 / count
    return 1.0 - sse / np.where(sst > 0, sst, np.nan)
