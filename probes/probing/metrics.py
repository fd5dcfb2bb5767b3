"""Per-pair probe scores (top-1, top-5, cross-entropy) and their document-level intervals."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probes.stats import Interval, bootstrap_mean_ci


@dataclass
class PairScores:
    """Scores of one probe or baseline on its test pairs (one entry per pair, in pair order).

    ``top1`` / ``top5``: whether the true label is the top prediction / among the top five.
    ``ce``: cross-entropy in nats of a proper distribution over the full vocabulary, or None when the
    method gives no probabilities.
    """

    top1: np.ndarray
    top5: np.ndarray
    ce: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.top1 = np.asarray(self.top1, dtype=bool)
        self.top5 = np.asarray(self.top5, dtype=bool)
        if self.ce is not None:
            self.ce = np.asarray(self.ce, dtype=np.float64)
        lengths = {len(self.top1), len(self.top5)} | ({len(self.ce)} if self.ce is not None else set())
        if len(lengths) != 1:
            raise ValueError(f"PairScores arrays differ in length: {sorted(lengths)}")

    def __len__(self) -> int:
        return len(self.top1)


def summarise(
    scores: PairScores, groups: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, Interval]:
    """metric -> (value, ci_low, ci_high) for top1, top5 and (when available) ce_nats."""
    names = ["top1", "top5"]
    columns = [scores.top1, scores.top5]
    if scores.ce is not None:
        names.append("ce_nats")
        columns.append(scores.ce)
    matrix = np.stack([np.asarray(column, dtype=np.float64) for column in columns], axis=1)
    point, low, high = bootstrap_mean_ci(matrix, groups, n_boot=n_boot, seed=seed, level=level)
    return {name: (float(point[i]), float(low[i]), float(high[i])) for i, name in enumerate(names)}
