"""The results table: one tidy schema for every stage (probes, evaluation, synthetic task, comparison).

Each row is one number with its 95% bootstrap interval. Required columns are `RESULT_COLUMNS`;
stages may add their own (`position` for loss by position, `lookback` for the synthetic probes).
`layer` is 0 for the embeddings and l for the output of block l; rows that read no layer
(baselines, whole-model losses) leave it empty.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from probes.errors import UsageError
from probes.io import atomic_write, atomic_write_bytes

RESULT_COLUMNS = [
    "model",
    "kind",
    "layer",
    "tau",
    "target",
    "probe",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "n_train",
    "n_test",
    "seed",
]
# Per-document sums and counts behind every probe row, so two runs can be compared with a paired bootstrap.
PER_DOC_FILE = "per_doc.parquet"
INTEGER_COLUMNS = ("layer", "tau", "n_train", "n_test", "seed", "position", "lookback")


def tidy(rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """Order columns (required first), use nullable integers, check nothing required is missing."""
    frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    for column in RESULT_COLUMNS:
        if column not in frame.columns:
            frame[column] = pd.NA
    for column in INTEGER_COLUMNS:
        if column in frame.columns:
            frame[column] = frame[column].astype("Int64")
    extra = [column for column in frame.columns if column not in RESULT_COLUMNS]
    return frame[RESULT_COLUMNS + extra].reset_index(drop=True)


def write_results(frame: pd.DataFrame, folder: str | Path, stem: str = "results") -> None:
    """`stem.csv` and `stem.parquet`, each written atomically."""
    folder = Path(folder)
    frame = tidy(frame)
    atomic_write_bytes(folder / f"{stem}.csv", frame.to_csv(index=False).encode())
    atomic_write(folder / f"{stem}.parquet", lambda tmp: frame.to_parquet(tmp, index=False))


def read_results(folder: str | Path, stem: str = "results") -> pd.DataFrame:
    path = Path(folder) / f"{stem}.parquet"
    if not path.exists():
        raise UsageError(f"{folder} has no {stem}.parquet: not a finished run folder")
    try:
        return tidy(pd.read_parquet(path))
    except Exception as error:  # a truncated or foreign file
        raise UsageError(f"cannot read {path}: {error}") from None
