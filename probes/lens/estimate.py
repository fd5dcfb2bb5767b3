"""The lens numbers from inner products: pooled and expected Gram matrices, metrics, batch-resampling intervals.

Everything here is numpy on small arrays. A Gram matrix holds the inner products of the three parts of the
gradient, in the order of `PARTS`:

    direct = g_strict,  reading the past = g_myopic − g_strict,  pre-caching = g_vanilla − g_myopic,

so g_myopic = direct + reading and g_vanilla = direct + reading + pre-caching (`FROM_PARTS`).

With batches b = 1..B of w_b windows, mean gradients g_b and S = Σ_b w_b g_b:
- pooled: the gradient of the mean loss over every window is S / W (W = Σ w_b), so its Gram is ⟨S, S⟩ / W²;
- expected: for independent batches E⟨g_b, h_b'⟩ = ⟨E g, E h⟩ when b ≠ b', so
  (⟨S_g, S_h⟩ − Σ_b w_b² ⟨g_b, h_b⟩) / (W² − Σ_b w_b²) is an unbiased estimate of ⟨E g, E h⟩: the weighted
  mean over pairs of different batches. It needs only the sums and each batch's own inner products.
Pooled numbers describe the windows measured (resampling would inflate them: a batch drawn twice doubles its
noise). Expected numbers get intervals from resampling batches (with replacement), recomputed from the
batch × batch Gram (a count sketch of it for large components, see `probes.lens.decompose`); a batch is never
paired with itself or with its own copies.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from probes.stats import bootstrap_weights

KINDS = ("strict", "myopic", "vanilla")
PARTS = ("direct", "reading", "precaching")
TO_PARTS = np.array([[1.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [0.0, -1.0, 1.0]])  # parts = TO_PARTS @ kinds
FROM_PARTS = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])  # kinds = FROM_PARTS @ parts
LEVEL = 0.95
NEGLIGIBLE = 1e-5  # a part this small against g_vanilla is rounding (float32), not signal: norm 0, no cosine
EXPECTED = "expected_"


def pooled_gram(totals: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """⟨S, S⟩ / W²: the Gram of the gradient of the mean loss over every window. totals: (..., 3, 3)."""
    return totals / float(weights.sum()) ** 2


def expected_gram(totals: np.ndarray, diagonal: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Unbiased ⟨E g_x, E g_y⟩ from pairs of different batches; NaN with fewer than two batches.

    totals: (..., 3, 3) ⟨S_x, S_y⟩; diagonal: (B, ..., 3, 3) each batch's ⟨g_x,b, g_y,b⟩; weights: (B,).
    """
    w = np.asarray(weights, dtype=np.float64)
    pairs = w.sum() ** 2 - (w**2).sum()
    if len(w) < 2 or pairs <= 0:
        return np.full(totals.shape, np.nan)
    own = np.tensordot(w**2, diagonal, axes=(0, 0))
    return (totals - own) / pairs


def _sqrt(values: np.ndarray) -> np.ndarray:
    """Norms from squared norms; a negative estimate of a squared norm (noise) is a norm of 0."""
    with np.errstate(invalid="ignore"):
        return np.sqrt(np.clip(values, 0.0, None))


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


def _cosine(inner: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """inner / norms; undefined outside [−1, 1], where an estimated Gram is not positive semi-definite (the
    parts are lost in the batch noise) and no angle fits the numbers."""
    value = _ratio(inner, norms)
    with np.errstate(invalid="ignore"):
        return np.where(np.abs(value) <= 1.0 + 1e-9, np.clip(value, -1.0, 1.0), np.nan)


def metrics(parts: np.ndarray) -> dict[str, np.ndarray]:
    """Norms, the pre-caching share and cosines from a (..., 3, 3) Gram of the parts (direct, reading, pre-caching).

    An expected-gradient estimate can put a squared norm below 0 (the part is lost in the batch noise): the norm
    is then 0, its share 0 and its cosines undefined; `sq_norm_…` keeps the raw estimate. A part below
    `NEGLIGIBLE` × ‖g_vanilla‖ counts as 0 too. An estimated cosine outside [−1, 1] is undefined.
    """
    gram = FROM_PARTS @ parts @ FROM_PARTS.T  # of (strict, myopic, vanilla)
    norm = {kind: _sqrt(gram[..., i, i]) for i, kind in enumerate(KINDS)}
    part_norm = {part: _sqrt(parts[..., i, i]) for i, part in enumerate(PARTS)}
    myopic_precaching = parts[..., 0, 2] + parts[..., 1, 2]  # ⟨g_myopic, pre-caching⟩
    # A part at the level of rounding (the last block's pre-caching part, say) has no direction to speak of.
    for part in ("reading", "precaching"):
        part_norm[part] = np.where(part_norm[part] > NEGLIGIBLE * norm["vanilla"], part_norm[part], 0.0)
    return {
        "grad_norm_vanilla": norm["vanilla"],
        "grad_norm_myopic": norm["myopic"],
        "grad_norm_strict": norm["strict"],
        "grad_norm_reading": part_norm["reading"],
        "grad_norm_precaching": part_norm["precaching"],
        "precaching_share": _ratio(part_norm["precaching"], norm["vanilla"]),
        "cos_myopic_precaching": _cosine(myopic_precaching, norm["myopic"] * part_norm["precaching"]),
        "cos_direct_precaching": _cosine(parts[..., 0, 2], part_norm["direct"] * part_norm["precaching"]),
        "cos_reading_precaching": _cosine(parts[..., 1, 2], part_norm["reading"] * part_norm["precaching"]),
        "myopic_to_vanilla": _ratio(norm["myopic"], norm["vanilla"]),
        "sq_norm_vanilla": gram[..., 2, 2],
        "sq_norm_myopic": gram[..., 1, 1],
        "sq_norm_precaching": parts[..., 2, 2],
    }


# ---------------------------------------------------------------------------------------------- resampling


@dataclass(frozen=True)
class Estimates:
    """Per component (the last one is `all`): metric → (value, ci_low, ci_high) arrays of length G + 1.

    Pooled numbers describe the windows measured and carry no interval; expected ones carry 95% intervals.
    """

    pooled: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    expected: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    batch_norm_vanilla: np.ndarray  # sqrt of the mean over batches of ‖g_vanilla,b‖²: the noise scale


def with_all(per_group: np.ndarray, axis: int) -> np.ndarray:
    """Append the sum over components (inner products add up over disjoint parameter sets)."""
    return np.concatenate([per_group, per_group.sum(axis=axis, keepdims=True)], axis=axis)


def resampled_grams(cross: np.ndarray, weights: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Expected-gradient Grams of each batch resample, and of the sample itself, from a batch × batch Gram.

    cross: (B, B, G, 3, 3) inner products ⟨g_x,b, g_y,b'⟩ (its diagonal b = b' exact). A resample draws B
    batches with replacement; its estimate averages ⟨g_b, h_b'⟩ over the pairs of draws that are different
    batches (a batch drawn twice is never paired with itself). Returns (n_boot, G, 3, 3) and (G, 3, 3).
    """
    n_batches = cross.shape[0]
    flat = cross.reshape(n_batches, n_batches, -1)
    own = np.einsum("bbk->bk", flat)  # (B, k): each batch with itself
    w = np.asarray(weights, dtype=np.float64)

    def grams(u: np.ndarray) -> np.ndarray:
        # u: (R, B) resampled window weights; (Σ_bb' u_b u_b' K_bb' − Σ_b u_b² K_bb) / Σ_b≠b' u_b u_b'
        everything = np.einsum("rb,rbk->rk", u, np.einsum("rc,bck->rbk", u, flat))
        same = (u**2) @ own
        pairs = u.sum(axis=1) ** 2 - (u**2).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            expected = (everything - same) / np.where(pairs > 0, pairs, np.nan)[:, None]
        return expected.reshape(len(u), *cross.shape[2:])

    counts = bootstrap_weights(n_batches, n_boot, seed).astype(np.float64)
    replicates = [grams(counts[lo : lo + 100] * w[None, :]) for lo in range(0, n_boot, 100)]  # small intermediates
    return np.concatenate(replicates), grams(w[None, :])[0]


def metric_range(name: str) -> tuple[float, float]:
    """The values a metric can take: norms, shares and ratios ≥ 0, cosines in [−1, 1], raw squared norms any."""
    if name.startswith("cos_"):
        return -1.0, 1.0
    if name.startswith("sq_norm_"):
        return -np.inf, np.inf
    return 0.0, np.inf


def interval(
    name: str, exact: np.ndarray, sketched: np.ndarray, replicates: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Percentile interval of the replicates, moved by what the sketch changed in the sample's own value, and
    kept within the metric's range.

    Replicates where the quantity is undefined (a ratio over a norm estimated at 0) are left out while they are
    at most (1 − LEVEL) / 2 of all; beyond that the column gets no interval.
    """
    alpha = (1.0 - LEVEL) / 2.0
    undefined = (~np.isfinite(replicates)).mean(axis=0)
    safe = np.where(np.isfinite(replicates), replicates, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # columns with no defined replicate: NaN, as wanted
        low, high = np.nanquantile(safe, [alpha, 1.0 - alpha], axis=0)
    keep = (undefined <= alpha) & np.isfinite(exact - sketched)
    shift = np.where(np.isfinite(exact - sketched), exact - sketched, 0.0)
    lowest, highest = metric_range(name)
    low, high = np.clip(low + shift, lowest, highest), np.clip(high + shift, lowest, highest)
    return exact, np.where(keep, low, np.nan), np.where(keep, high, np.nan)


def estimate(
    totals: np.ndarray,
    diagonal: np.ndarray,
    weights: np.ndarray,
    cross: np.ndarray | None,
    n_boot: int,
    seed: int,
) -> Estimates:
    """Pooled and expected metrics per component and over all parameters; batch-resampling intervals for the
    expected ones. totals (G, 3, 3), diagonal (B, G, 3, 3), weights (B,), cross (B, B, G, 3, 3) or None."""
    totals_all = with_all(totals, axis=0)
    diagonal_all = with_all(diagonal, axis=1)
    nan = np.full(totals_all.shape[0], np.nan)
    pooled = {name: (value, nan, nan) for name, value in metrics(pooled_gram(totals_all, weights)).items()}
    exact_expected = metrics(expected_gram(totals_all, diagonal_all, weights))
    if cross is None or n_boot <= 0 or len(weights) < 2:
        expected = {name: (value, nan, nan) for name, value in exact_expected.items()}
    else:
        boot, sample = resampled_grams(with_all(cross, axis=2), weights, n_boot, seed)
        sample_metrics, boot_metrics = metrics(sample), metrics(boot)
        expected = {
            name: interval(name, exact_expected[name], sample_metrics[name], boot_metrics[name])
            for name in exact_expected
        }
    w = np.asarray(weights, dtype=np.float64)
    batch_sq = np.tensordot(w / w.sum(), diagonal_all.sum(axis=(-1, -2)), axes=(0, 0))  # ‖g_vanilla,b‖², parts summed
    return Estimates(pooled, expected, _sqrt(batch_sq))
