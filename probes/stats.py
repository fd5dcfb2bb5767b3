"""Document-level bootstrap confidence intervals, shared by every stage.

Pairs from the same document are correlated, so intervals resample whole documents: a resample draws
G documents with replacement out of G, and its statistic is the sum of the values of the pairs in the
drawn documents divided by the number of those pairs (a ratio estimator; documents hold different
numbers of pairs). Intervals are percentile intervals.

The bootstrap is vectorised: per-document sums and counts, times an (n_boot, G) matrix of how often each
document was drawn, gives every resample in two matrix products. Those products (`resample_sums`) run in numpy's
own single-threaded loop, not BLAS: a multi-threaded BLAS splits the sum over documents by its thread count, so the
last bits of an interval would depend on how many threads the machine gave it.
"""

from __future__ import annotations

import numpy as np

from probes.errors import UsageError

MIN_BOOT = 200

Interval = tuple[float, float, float]


def bootstrap_weights(n_groups: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_groups) int64: how many times each group is drawn in each resample.

    Row b is the draw counts of ``rng.integers(0, n_groups, n_groups)`` for the b-th row of one
    (n_boot, n_groups) draw from ``np.random.default_rng(seed)``.
    """
    draws = np.random.default_rng(seed).integers(0, n_groups, size=(n_boot, n_groups))
    return bootstrap_counts(draws, n_groups)


def bootstrap_counts(draws: np.ndarray, n_groups: int) -> np.ndarray:
    """Turn (n_boot, k) drawn group indices into (n_boot, n_groups) draw counts."""
    n_boot = draws.shape[0]
    flat = (draws + np.arange(n_boot)[:, None] * n_groups).ravel()
    return np.bincount(flat, minlength=n_boot * n_groups).reshape(n_boot, n_groups)


def resample_sums(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`weights @ values` ((n_boot, G) @ (G,) or (G, m)) with a summation order fixed by the shapes alone: the
    same bits for any BLAS and thread count."""
    spec = "bg,g->b" if values.ndim == 1 else "bg,gm->bm"
    return np.einsum(spec, weights, values, optimize=False)


def _group_index(groups: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups must have shape ({n},), got {groups.shape}")
    _, index = np.unique(groups, return_inverse=True)
    return index.ravel(), int(index.max()) + 1


def _check_args(n: int, n_boot: int, level: float) -> None:
    if n == 0:
        raise UsageError("no test pairs to score: use more text or a smaller tau")
    if n_boot < MIN_BOOT:
        raise UsageError(f"n_boot must be at least {MIN_BOOT}; got {n_boot}")
    if not 0.0 < level < 1.0:
        raise UsageError(f"confidence level must be in (0, 1); got {level}")


def _bootstrap(
    values: np.ndarray, groups: np.ndarray, n_boot: int, seed: int, level: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Columnwise point estimates and percentile CIs for a (n, m) value matrix."""
    n = values.shape[0]
    _check_args(n, n_boot, level)
    index, n_groups = _group_index(groups, n)
    sums = np.zeros((n_groups, values.shape[1]))
    np.add.at(sums, index, values)
    counts = np.bincount(index, minlength=n_groups).astype(np.float64)
    weights = bootstrap_weights(n_groups, n_boot, seed).astype(np.float64)
    stats = resample_sums(weights, sums) / resample_sums(weights, counts)[:, None]
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha], axis=0)
    point = values.mean(axis=0)
    # Resample ratios of constant values differ from the mean by rounding only: report those as exact.
    tolerance = 1e-12 * np.maximum(1.0, np.abs(point))
    low = np.where(np.abs(low - point) <= tolerance, point, low)
    high = np.where(np.abs(high - point) <= tolerance, point, high)
    return point, low, high


def bootstrap_mean_ci(
    values: np.ndarray, groups: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over pairs with a document-bootstrap percentile CI: (point, low, high).

    ``values`` (n,) gives floats; (n, m) gives three (m,) arrays, all columns drawn from the same
    resamples.
    """
    array = np.asarray(values, dtype=np.float64)
    if array.ndim not in (1, 2):
        raise ValueError(f"values must be (n,) or (n, m), got shape {array.shape}")
    _check_args(len(array), n_boot, level)
    point, low, high = _bootstrap(array.reshape(len(array), -1), np.asarray(groups), n_boot, seed, level)
    if array.ndim == 1:
        return float(point[0]), float(low[0]), float(high[0])
    return point, low, high


def paired_bootstrap_diff_ci(
    a: np.ndarray, b: np.ndarray, groups: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> Interval:
    """mean(a) - mean(b) over the same pairs, with a CI from resampling the same documents for both."""
    first = np.asarray(a, dtype=np.float64)
    second = np.asarray(b, dtype=np.float64)
    if first.shape != second.shape or first.ndim != 1:
        raise ValueError(f"a and b must be (n,) arrays of equal length, got {first.shape} and {second.shape}")
    result = bootstrap_mean_ci(first - second, groups, n_boot=n_boot, seed=seed, level=level)
    assert isinstance(result[0], float)
    return result  # type: ignore[return-value]
