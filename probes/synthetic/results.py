"""The headline numbers of a synthetic-task results table, for every summary that prints them.

One row per trained model and the untrained control (test loss, its ratio to predict-0, the last-layer R² for y
and the layer-1 R² for the current sine), then one per loss baseline. Pandas only, so reading a finished run
(the report, the benchmarks) does not import the training stack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

BASELINE_KIND = "baseline"
PREDICT_0 = "predict-0"

Interval = tuple[float, float, float]  # value, ci_low, ci_high


@dataclass(frozen=True)
class Headline:
    label: str  # the model's kind, or the baseline's name
    loss: Interval | None
    baseline_loss: float  # predict-0's loss in the same metric
    r2_y: Interval | None = None  # last layer
    r2_sine: Interval | None = None  # layer 1, look-back 0

    @property
    def loss_ratio(self) -> float:
        return self.loss[0] / self.baseline_loss if self.loss is not None else math.nan


def _interval(rows: pd.DataFrame, position: int = 0) -> Interval | None:
    if rows.empty:
        return None
    row = rows.iloc[position]
    return float(row["value"]), float(row["ci_low"]), float(row["ci_high"])


def headlines(frame: pd.DataFrame, metric: str = "huber") -> list[Headline]:
    """Models first (in the table's order), then the baselines; `metric` is "huber" or "huber_over_p"."""
    losses = frame[frame["metric"] == metric]
    baseline_rows = losses[losses["kind"] == BASELINE_KIND]
    base = _interval(baseline_rows[baseline_rows["probe"] == PREDICT_0])
    base_loss = base[0] if base is not None else math.nan
    r2 = frame[frame["metric"] == "r2"]
    rows = []
    for kind in frame["kind"].dropna().astype(str).unique():
        if kind == BASELINE_KIND:
            continue
        own = r2[r2["kind"] == kind]
        y = own[own["target"].astype(str) == "y"].sort_values("layer")
        sine = own[(own["target"].astype(str) == "sin") & (own["lookback"] == 0) & (own["layer"] == 1)]
        loss = _interval(losses[(losses["kind"] == kind) & (losses["probe"] == "model")])
        rows.append(Headline(kind, loss, base_loss, _interval(y, -1), _interval(sine)))
    for probe in baseline_rows["probe"].astype(str):
        rows.append(Headline(probe, _interval(baseline_rows[baseline_rows["probe"] == probe]), base_loss))
    return rows
