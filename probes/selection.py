"""Choices among layers, probes and baselines: made on the train-side validation documents, never on test numbers.

Every probe and baseline row of a probe run carries `val_value`: the same method refitted without the train-side
validation documents (the ones the softmax probe holds out for early stopping) and scored on them. A choice (the
better probe of a cell, a model's best layer and probe, the better baseline) looks only at `val_value`; what is
reported is the test `value` of the choice, so picking the best of many layers does not flatter the number shown.
Runs written before `val_value` existed have none: their choices fall back to the test numbers and say so
(`Choice.basis`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

VALIDATION = "validation documents"
TEST_FALLBACK = "test numbers (this run has no validation scores)"
LOWER_IS_BETTER = ("ce_nats",)


def basis(rows: pd.DataFrame) -> tuple[str, str]:
    """The column a choice among `rows` is made on, and its description: `val_value` when every row has one."""
    if len(rows) and "val_value" in rows.columns and bool(rows["val_value"].notna().all()):
        return "val_value", VALIDATION
    return "value", TEST_FALLBACK


def _ordered(rows: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """Rows sorted so that ties go to the lowest layer and the first probe of `order`."""
    rank = {name: position for position, name in enumerate(order)}
    keys = rows.assign(_rank=rows["probe"].map(lambda name: rank.get(str(name), len(rank))))
    columns = [column for column in ("layer", "_rank") if column in keys.columns]
    return keys.sort_values(columns, kind="stable", na_position="first").drop(columns="_rank")


def best_per(rows: pd.DataFrame, by: Sequence[str], order: Sequence[str] = ()) -> pd.DataFrame:
    """For each group of `by` (within one metric), the row whose validation score is best (test value as well).

    Ties go to the lowest layer, then the first probe of `order`. The result keeps every column of the chosen
    rows and adds `chosen_on` (`VALIDATION` or `TEST_FALLBACK`).
    """
    if rows.empty:
        return rows.assign(chosen_on=pd.Series(dtype=str))
    column, described = basis(rows)
    metric = str(rows["metric"].iloc[0])
    score = rows[column].astype(float) * (-1.0 if metric in LOWER_IS_BETTER else 1.0)
    ordered = _ordered(rows.assign(_score=score), order)
    picks = ordered.groupby(list(by), sort=True)["_score"].idxmax()
    return ordered.loc[picks.to_numpy()].drop(columns="_score").assign(chosen_on=described)


@dataclass(frozen=True)
class Choice:
    """One model's layer and probe, chosen on validation top-1 averaged over τ ≥ 2 (all τ when only τ = 1)."""

    layer: int
    probe: str
    basis: str
    test: pd.Series  # τ -> test top-1 of the choice
    validation: pd.Series  # τ -> validation top-1 of the choice


def best_layer_and_probe(rows: pd.DataFrame, order: Sequence[str] = ()) -> Choice | None:
    """The (layer, probe) of `rows` (top-1 rows of one model and target) with the best mean validation top-1."""
    rows = rows.dropna(subset=["layer", "tau"])
    if rows.empty:
        return None
    column, described = basis(rows)
    future = rows[rows["tau"] >= 2] if (rows["tau"] >= 2).any() else rows
    means = future.groupby(["layer", "probe"], sort=False)[column].mean().reset_index()
    means = _ordered(means, order)
    best = means.loc[means[column].astype(float).idxmax()]
    chosen = rows[(rows["layer"] == best["layer"]) & (rows["probe"] == best["probe"])].sort_values("tau")
    taus = chosen["tau"].astype(int).to_numpy()
    values = chosen["val_value"] if "val_value" in chosen else pd.Series(np.nan, index=chosen.index)
    return Choice(
        layer=int(best["layer"]),
        probe=str(best["probe"]),
        basis=described,
        test=pd.Series(chosen["value"].astype(float).to_numpy(), index=taus),
        validation=pd.Series(values.astype(float).to_numpy(), index=taus),
    )
