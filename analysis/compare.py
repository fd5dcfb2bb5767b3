"""Vanilla vs myopic: the myopia gap, the pre-caching share, probe deltas and a verdict in words.

    python analysis/compare.py --vanilla RUN --myopic RUN [--bigram RUN] [--out DIR]

A RUN is a probe-run folder (`probe-future probe`), an eval folder (`probe-future eval`: loss by position,
`per_window.parquet`), a synthetic-task folder, or a folder whose subfolders are such runs (one of each stage).
Runs are compared only when they were made on the same data, split and τ set (checked by the hashes and
settings in their `provenance.json`).

Statistics (all intervals 95%, percentile):
- myopia gap = mean myopic CE − mean vanilla CE over the same held-out tokens, overall and by position,
  with a paired bootstrap over test documents (every resample draws the same documents for both models);
- pre-caching share = (CE_myopic − CE_vanilla) / (CE_bigram − CE_vanilla), the ratio computed in each of the
  same paired resamples;
- probe deltas = vanilla − myopic per layer × τ × target × probe × metric. The probe runs keep only their
  aggregated scores, so these intervals treat the two runs as independent (normal approximation from each
  run's own bootstrap interval): wider than a paired interval would be, never narrower;
- for τ ≥ 2, the share of the vanilla model's above-baseline information that the myopic model lacks,
  (vanilla − myopic) / (vanilla − best count baseline), with a Monte Carlo interval under the same
  independent normal approximation.
Writes `comparison.csv` / `comparison.parquet` (the shared results schema), `provenance.json` and `report.html`.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from probes.errors import UsageError
from probes.io import atomic_write_json, read_json
from probes.results import PER_DOC_FILE, tidy, write_results
from probes.stats import bootstrap_mean_ci, bootstrap_weights

LEVEL = 0.95
Z = 1.959963984540054  # two-sided 95% normal quantile
PROBE_NAMES = ("softmax", "lstsq")
BASELINE_NAMES = ("unigram", "skip_bigram")
STAGES = ("probe", "eval", "synthetic")
ROLES = ("vanilla", "myopic", "bigram")
ROLE_OF_KIND = {"vanilla": "vanilla", "myopic": "myopic", "strict-myopic": "myopic", "bigram": "bigram"}
CONTROL_KINDS = ("random-init",)

# Verdict thresholds on the pre-caching share (or, without a bigram run, on the share of above-baseline
# probe information the myopic model lacks at the smallest τ ≥ 2).
BREADCRUMBS_BELOW = 0.2
PRECACHING_ABOVE = 0.5
THRESHOLDS_TEXT = (
    f"pre-caching-dominated when the whole interval is ≥ {PRECACHING_ABOVE:g}; breadcrumbs-dominated when it is "
    f"≤ {BREADCRUMBS_BELOW:g}; mixed when it lies within [{BREADCRUMBS_BELOW:g}, {PRECACHING_ABOVE:g}]; "
    "inconclusive when it straddles a threshold or the share is undefined"
)


# ------------------------------------------------------------------------------------------------ runs


@dataclass
class Run:
    """One finished stage folder: its results table, provenance and (eval runs) per-window losses."""

    path: Path
    stage: str
    results: pd.DataFrame
    provenance: dict[str, Any]
    per_window: pd.DataFrame | None = None

    @property
    def kind(self) -> str:
        """The kind of the model studied (a probe run's random-init control does not count)."""
        kinds = [k for k in self.results["kind"].dropna().astype(str).unique() if k not in CONTROL_KINDS]
        if kinds:
            return kinds[0]
        training = self.training()
        return str(training.get("mode", "unknown")) if training else "unknown"

    @property
    def model(self) -> str:
        rows = self.results[self.results["kind"].astype(str) == self.kind]
        names = rows["model"].dropna().astype(str).unique() if len(rows) else []
        if len(names):
            return str(names[0])
        return str(self.provenance.get("model", {}).get("name", self.path.name))

    @property
    def args(self) -> dict[str, Any]:
        args = self.provenance.get("args", {})
        return args if isinstance(args, dict) else {}

    def setting(self, name: str) -> Any:
        """A run setting, as resolved by the stage (eval runs record defaults filled in from training.json)."""
        resolved = self.args.get("resolved")
        if isinstance(resolved, dict) and resolved.get(name) is not None:
            return resolved[name]
        return self.args.get(name)

    @property
    def data_hash(self) -> str | None:
        data = self.provenance.get("data", {})
        found = (data.get("data_hash") if isinstance(data, dict) else None) or self.args.get("data_hash")
        return str(found) if found else None

    @property
    def weights_hash(self) -> str | None:
        model = self.provenance.get("model", {})
        found = (model.get("weights_hash") if isinstance(model, dict) else None) or self.args.get("weights_hash")
        return str(found) if found else None

    def training(self) -> dict[str, Any]:
        """training.json of the model folder when the model is a local checkpoint this toolkit trained."""
        model = self.provenance.get("model", {})
        name = model.get("name") if isinstance(model, dict) else None
        name = name or self.args.get("model")
        if not name:
            return {}
        path = Path(str(name)).expanduser() / "training.json"
        try:
            found = read_json(path) if path.is_file() else {}
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}


def _read_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as error:  # a truncated or foreign file
        raise UsageError(f"cannot read {path}: {type(error).__name__}") from None


def _stage_of(folder: Path, results: pd.DataFrame, provenance: dict[str, Any]) -> str:
    stage = provenance.get("stage")
    if stage in STAGES:
        return str(stage)
    if (folder / "per_window.parquet").exists():
        return "eval"
    if "lookback" in results.columns or (results["metric"] == "r2").any():
        return "synthetic"
    return "probe"


def load_run(folder: Path) -> Run:
    """Read one finished run folder; any missing or unreadable part is a one-line UsageError."""
    results_path, provenance_path = folder / "results.parquet", folder / "provenance.json"
    if not results_path.exists():
        if (folder / "run.json").exists():
            raise UsageError(f"{folder} is an unfinished run (no results.parquet yet): rerun its command to finish it")
        raise UsageError(f"{folder} holds no run: no results.parquet")
    if not provenance_path.exists():
        raise UsageError(f"{folder} is half-written: results.parquet without provenance.json")
    try:
        provenance = read_json(provenance_path)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {provenance_path}: {type(error).__name__}") from None
    if not isinstance(provenance, dict):
        raise UsageError(f"cannot read {provenance_path}: not a JSON object")
    results = tidy(_read_table(results_path))
    if results.empty:
        raise UsageError(f"{results_path} has no rows")
    stage = _stage_of(folder, results, provenance)
    per_window = None
    if stage == "eval":
        if not (folder / "per_window.parquet").exists():
            raise UsageError(f"{folder} is an eval run without per_window.parquet: rerun the evaluation")
        per_window = _read_table(folder / "per_window.parquet")
    return Run(folder, stage, results, provenance, per_window)


def find_runs(path: str | Path) -> list[Run]:
    """The run in `path`, or the runs in its direct subfolders."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise UsageError(f"{folder} does not exist")
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder")
    if (folder / "results.parquet").exists() or (folder / "run.json").exists():
        return [load_run(folder)]
    subfolders = sorted(
        sub
        for sub in folder.iterdir()
        if sub.is_dir() and ((sub / "results.parquet").exists() or (sub / "run.json").exists())
    )
    if not subfolders:
        raise UsageError(f"{folder} holds no run: no results.parquet in it or in its subfolders")
    return [load_run(sub) for sub in subfolders]


@dataclass
class Subject:
    """Everything given for one model (one --vanilla / --myopic / --bigram argument): one run per stage."""

    label: str
    role: str | None = None
    runs: dict[str, Run] = field(default_factory=dict)

    @property
    def probe(self) -> Run | None:
        return self.runs.get("probe")

    @property
    def eval(self) -> Run | None:
        return self.runs.get("eval")

    @property
    def synthetic(self) -> Run | None:
        return self.runs.get("synthetic")

    @property
    def model(self) -> str:
        return next(iter(self.runs.values())).model if self.runs else self.label


def subject_from(label: str, runs: Sequence[Run], role: str | None = None) -> Subject:
    subject = Subject(label, role)
    for run in runs:
        if run.stage in subject.runs:
            raise UsageError(
                f"{label}: {subject.runs[run.stage].path} and {run.path} are both {run.stage} runs; "
                "pass the one you mean"
            )
        subject.runs[run.stage] = run
    return subject


# --------------------------------------------------------------------------------------- compatibility


def _short(value: Any) -> str:
    text = str(value)
    return text[:12] if re.fullmatch(r"[0-9a-f]{16,}", text) else text


def _tau_set(run: Run) -> tuple[int, ...]:
    taus = run.results["tau"].dropna()
    return tuple(sorted(int(t) for t in taus.unique()))


def _split_settings(run: Run) -> tuple[Any, Any]:
    return run.setting("seed"), run.setting("test_fraction")


def _same(first: Run, other: Run, what: str, a: Any, b: Any) -> None:
    if a is not None and b is not None and a != b:
        raise UsageError(
            f"{first.path} and {other.path} were made on different {what} ({_short(a)} vs {_short(b)}): "
            "compare runs of the same data, split and tau set"
        )


def check_compatible(reference: Subject, other: Subject) -> None:
    """Refuse two subjects whose runs of the same stage differ in data, split or τ set."""
    for stage in STAGES:
        first, second = reference.runs.get(stage), other.runs.get(stage)
        if first is None or second is None:
            continue
        _same(first, second, "data (data hash)", first.data_hash, second.data_hash)
        _same(first, second, "splits (seed, test fraction)", _split_settings(first), _split_settings(second))
        if stage == "probe":
            _same(first, second, "tau sets", _tau_set(first), _tau_set(second))
        if stage == "eval":
            _same(first, second, "held-out windows", _window_keys(first), _window_keys(second))


# ------------------------------------------------------------------------------------- per-window losses

DOC_COLUMNS = ("doc_index", "doc", "document", "doc_id")
WIDE_COLUMN = re.compile(r"^(?:ce|loss)_?p?(\d+)$")  # ce_p0, ce_p1, ... as probe-future eval writes them


@dataclass
class WindowLosses:
    """Per-token losses of one eval run: (windows, positions), with each window's document, name and key."""

    losses: np.ndarray
    docs: np.ndarray
    names: list[str]
    keys: list[tuple[int, int]]


def _doc_column(frame: pd.DataFrame, path: Path) -> str:
    for name in DOC_COLUMNS:
        if name in frame.columns:
            return name
    raise UsageError(f"{path}/per_window.parquet has no document column ({', '.join(DOC_COLUMNS)})")


def _window_keys(run: Run) -> tuple[tuple[int, int], ...]:
    return tuple(sorted(window_losses(run).keys))


def window_losses(run: Run) -> WindowLosses:
    frame = run.per_window
    if frame is None or frame.empty:
        raise UsageError(f"{run.path} has no per-window losses: the myopia gap needs an eval run")
    doc = _doc_column(frame, run.path)
    wide = sorted((int(match.group(1)), name) for name in frame.columns if (match := WIDE_COLUMN.match(str(name))))
    if not wide:
        raise UsageError(f"{run.path}/per_window.parquet has no per-position losses (ce_p0, ce_p1, ...)")
    losses = frame[[name for _, name in wide]].to_numpy(dtype=np.float64)
    if not np.isfinite(losses).all():
        raise UsageError(f"{run.path}/per_window.parquet holds missing or infinite losses")
    docs = frame[doc].to_numpy()
    names = frame["doc_name"].astype(str).tolist() if "doc_name" in frame else [str(d) for d in docs]
    second = "start" if "start" in frame.columns else ("window" if "window" in frame.columns else None)
    seconds = frame[second].to_numpy() if second else np.arange(len(frame))
    keys = [(int(d), int(s)) for d, s in zip(docs, seconds, strict=True)]
    if len(set(keys)) != len(keys):
        raise UsageError(f"{run.path}/per_window.parquet lists a window twice")
    return WindowLosses(losses, docs, names, keys)


def document_gaps(vanilla: Run, myopic: Run) -> pd.DataFrame:
    """Mean myopic − vanilla loss per held-out document, largest first."""
    (v, m), _ = aligned_losses([vanilla, myopic])
    table = window_losses(vanilla)
    frame = pd.DataFrame({"document": table.names, "gap": (m - v).mean(axis=1)})
    summary = frame.groupby("document", sort=False)["gap"].agg(["mean", "size"]).reset_index()
    summary.columns = ["document", "gap_ce_nats", "windows"]
    return summary.sort_values("gap_ce_nats", ascending=False, ignore_index=True)


def aligned_losses(runs: Sequence[Run]) -> tuple[list[np.ndarray], np.ndarray]:
    """Each run's (windows, positions) losses in the first run's window order, and the document per window."""
    tables = [window_losses(run) for run in runs]
    reference = tables[0]
    order = {key: i for i, key in enumerate(reference.keys)}
    matrices = [reference.losses]
    for run, table in zip(runs[1:], tables[1:], strict=True):
        if set(table.keys) != set(order) or table.losses.shape != reference.losses.shape:
            raise UsageError(f"{runs[0].path} and {run.path} were evaluated on different held-out windows")
        index = np.array([order[key] for key in table.keys])
        aligned = np.empty_like(table.losses)
        aligned[index] = table.losses
        matrices.append(aligned)
    return matrices, reference.docs


# ---------------------------------------------------------------------------------------------- statistics


def resampled_means(values: np.ndarray, groups: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, k) column means under document resampling: the same draws as probes.probing.metrics uses for `seed`."""
    _, index = np.unique(groups, return_inverse=True)
    index = index.ravel()
    n_groups = int(index.max()) + 1
    sums = np.zeros((n_groups, values.shape[1]))
    np.add.at(sums, index, values)
    counts = np.bincount(index, minlength=n_groups).astype(np.float64)
    weights = bootstrap_weights(n_groups, n_boot, seed).astype(np.float64)
    return (weights @ sums) / (weights @ counts)[:, None]


def _percentiles(samples: np.ndarray) -> tuple[float, float]:
    finite = samples[np.isfinite(samples)]
    if len(finite) < len(samples):
        return math.nan, math.nan
    alpha = (1.0 - LEVEL) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(low), float(high)


@dataclass
class Interval:
    value: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def _snapped(value: float, low: float, high: float) -> Interval:
    """Resamples of a constant ratio differ from it by rounding only: report those bounds as exact."""
    tolerance = 1e-12 * max(1.0, abs(value))
    low = value if abs(low - value) <= tolerance else low
    high = value if abs(high - value) <= tolerance else high
    return Interval(value, low, high)


def gap_rows(
    vanilla: Run, myopic: Run, bigram: Run | None, n_boot: int, seed: int
) -> tuple[list[dict[str, Any]], Interval, Interval | None, Interval | None]:
    """Myopia gap overall and by position, and (with a bigram run) the pre-caching share: paired over documents."""
    runs = [vanilla, myopic] + ([bigram] if bigram is not None else [])
    matrices, docs = aligned_losses(runs)
    v, m = matrices[0], matrices[1]
    n_windows, n_positions = v.shape
    n_docs = int(len(np.unique(docs)))
    base = {
        "model": myopic.model,
        "kind": "myopic-vanilla",
        "target": "token",
        "probe": "model",
        "tau": 1,
        "seed": seed,
        "n_test_docs": n_docs,
        "method": "paired document bootstrap",
        "vs_model": vanilla.model,
    }
    point, low, high = bootstrap_mean_ci(m - v, docs, n_boot=n_boot, seed=seed, level=LEVEL)
    rows = [
        base
        | {"metric": "gap_ce_nats", "position": p, "value": point[p], "ci_low": low[p], "ci_high": high[p]}
        | {"n_test": n_windows}
        for p in range(n_positions)
    ]
    overall = Interval(*bootstrap_mean_ci((m - v).mean(axis=1), docs, n_boot=n_boot, seed=seed, level=LEVEL))
    rows.insert(0, base | _interval(overall) | {"metric": "gap_ce_nats", "n_test": v.size})
    share = gain = None
    if bigram is not None:
        b = matrices[2]
        means = np.stack([v.mean(axis=1), m.mean(axis=1), b.mean(axis=1)], axis=1)
        samples = resampled_means(means, docs, n_boot, seed)
        past = samples[:, 2] - samples[:, 0]
        full = means.mean(axis=0)
        gain = Interval(float(full[2] - full[0]), *_percentiles(past))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = (samples[:, 1] - samples[:, 0]) / past
        share_value = float((full[1] - full[0]) / (full[2] - full[0])) if full[2] != full[0] else math.nan
        # Where the bigram model is not reliably worse, the ratio's denominator crosses 0: no share.
        low, high = _percentiles(ratios) if gain.low > 0 else (math.nan, math.nan)
        share = _snapped(share_value, low, high)
        share_base = base | {"kind": "bigram-vanilla", "n_test": v.size, "vs_model": vanilla.model}
        rows.append(share_base | _interval(gain) | {"model": bigram.model, "metric": "bigram_gap_ce_nats"})
        rows.append(base | _interval(share) | {"metric": "precaching_share", "n_test": v.size})
    return rows, overall, share, gain


def _interval(interval: Interval) -> dict[str, float]:
    return {"value": interval.value, "ci_low": interval.low, "ci_high": interval.high}


def _se(frame: pd.DataFrame, suffix: str = "") -> np.ndarray:
    width = frame[f"ci_high{suffix}"].to_numpy(float) - frame[f"ci_low{suffix}"].to_numpy(float)
    return width / (2 * Z)


def probe_table(run: Run) -> pd.DataFrame:
    """The probe rows (softmax / lstsq) of the studied model, not of a random-init control."""
    rows = run.results[(run.results["kind"].astype(str) == run.kind) & run.results["probe"].isin(PROBE_NAMES)]
    return rows.dropna(subset=["layer", "tau"])


def best_baselines(run: Run) -> pd.DataFrame:
    """Per (τ, target, metric): the best count baseline (highest accuracy, lowest cross-entropy)."""
    rows = run.results[(run.results["kind"].astype(str) == run.kind) & run.results["probe"].isin(BASELINE_NAMES)]
    best = []
    for (tau, target, metric), group in rows.groupby(["tau", "target", "metric"]):
        pick = group.loc[group["value"].idxmin() if metric == "ce_nats" else group["value"].idxmax()]
        se = (pick["ci_high"] - pick["ci_low"]) / (2 * Z)
        best.append(
            {"tau": tau, "target": target, "metric": metric}
            | {"base": pick["value"], "base_se": se, "base_probe": pick["probe"]}
        )
    return pd.DataFrame(best, columns=["tau", "target", "metric", "base", "base_se", "base_probe"])


CELL = ["layer", "tau", "target", "probe", "metric"]


def _key_part(value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "-"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _cell_key(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """One string per row naming its (layer, τ, target, probe, metric) cell, with missing layers as '-'."""
    parts = [frame[column].astype(object).map(_key_part) for column in columns]
    return pd.Series(["|".join(values) for values in zip(*parts, strict=True)], index=frame.index)


def per_doc_means(run: Run, cells: pd.DataFrame, docs: np.ndarray, weights: np.ndarray) -> np.ndarray | None:
    """(n_boot, n_cells) resampled means of the given cells from the run's per-document sums, or None
    when the run has no per-document table or lacks one of the documents or cells."""
    path = run.path / PER_DOC_FILE
    if not path.is_file():
        return None
    table = _read_table(path)
    table = table[table["kind"].astype(str) == run.kind]
    keys = _cell_key(table, CELL)
    wanted = _cell_key(cells, CELL)
    sums = table.assign(key=keys).pivot_table(index="doc", columns="key", values="sum", aggfunc="sum")
    counts = table.assign(key=keys).pivot_table(index="doc", columns="key", values="count", aggfunc="sum")
    if not set(wanted) <= set(sums.columns) or not set(docs) <= set(sums.index):
        return None
    sums = sums.reindex(index=docs, columns=wanted).fillna(0.0).to_numpy(float)
    counts = counts.reindex(index=docs, columns=wanted).fillna(0.0).to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (weights @ sums) / (weights @ counts)


def _test_docs(*runs: Run) -> np.ndarray | None:
    found = []
    for run in runs:
        path = run.path / PER_DOC_FILE
        if not path.is_file():
            return None
        found.append(set(_read_table(path)["doc"].astype(str)))
    return np.array(sorted(set.intersection(*found))) if found else None


def probe_delta_rows(vanilla: Run, myopic: Run, n_boot: int, seed: int) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """vanilla − myopic per cell, and for τ ≥ 2 the share of above-baseline information the myopic model lacks.

    Intervals are paired document bootstraps (the same resampled test documents for both models) when both
    runs carry per-document sums; otherwise each run's own interval is turned into a standard error and the
    two are combined as independent (conservative for positively correlated runs)."""
    v, m = probe_table(vanilla), probe_table(myopic)
    for run, table in ((vanilla, v), (myopic, m)):
        if not (table["metric"] == "top1").any():
            raise UsageError(f"{run.path} has no top1 probe rows: nothing to compare")
    merged = v.merge(m, on=CELL, suffixes=("_v", "_m"))
    if merged.empty:
        raise UsageError(f"{vanilla.path} and {myopic.path} share no layer, tau, target and probe")
    merged["delta"] = merged["value_v"] - merged["value_m"]
    merged["se_v"], merged["se_m"] = _se(merged, "_v"), _se(merged, "_m")
    base = {"model": vanilla.model, "kind": "vanilla-myopic", "seed": seed, "vs_model": myopic.model}
    docs = _test_docs(vanilla, myopic)
    paired = None
    if docs is not None and len(docs):
        weights = bootstrap_weights(len(docs), n_boot, seed).astype(np.float64)
        means_v = per_doc_means(vanilla, merged[CELL], docs, weights)
        means_m = per_doc_means(myopic, merged[CELL], docs, weights)
        if means_v is not None and means_m is not None:
            paired = (means_v, means_m, weights, docs)
    if paired is not None:
        lows, highs = np.quantile(paired[0] - paired[1], [(1 - LEVEL) / 2, (1 + LEVEL) / 2], axis=0)
        method = "paired bootstrap over test documents"
    else:
        half = Z * np.sqrt(merged["se_v"] ** 2 + merged["se_m"] ** 2)
        lows, highs = merged["delta"] - half, merged["delta"] + half
        method = "independent normal (from each run's bootstrap interval)"
    rows = [
        base
        | {key: row[key] for key in CELL}
        | {"metric": f"delta_{row['metric']}", "value": row["delta"], "ci_low": float(low)}
        | {"ci_high": float(high), "n_test": row["n_test_v"], "method": method}
        for (_, row), low, high in zip(merged.iterrows(), lows, highs, strict=True)
    ]
    rows += _lacking_rows(merged, best_baselines(vanilla), base, n_boot, seed, vanilla, paired)
    return rows, merged


def _lacking_rows(
    merged: pd.DataFrame,
    baselines: pd.DataFrame,
    base: dict[str, Any],
    n_boot: int,
    seed: int,
    vanilla: Run | None = None,
    paired: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    merged = merged.reset_index(drop=True)
    cells = merged[(merged["tau"] >= 2) & merged["metric"].isin(["top1", "ce_nats"])]
    cells = cells.reset_index().merge(baselines, on=["tau", "target", "metric"]).set_index("index")
    baseline_means = None
    if paired is not None and vanilla is not None and len(cells):
        baseline_cells = cells[["tau", "target", "metric", "base_probe"]].rename(columns={"base_probe": "probe"})
        baseline_cells = baseline_cells.assign(layer=pd.NA)[CELL]
        baseline_means = per_doc_means(vanilla, baseline_cells, paired[3], paired[2])
    rng = np.random.default_rng(seed)
    rows = []
    for position, (index, row) in enumerate(cells.iterrows()):
        sign = -1.0 if row["metric"] == "ce_nats" else 1.0  # lower cross-entropy = more information
        above = sign * (row["value_v"] - row["base"])
        value = sign * row["delta"] / above if above > 0 else math.nan
        # As for the pre-caching share: no interval when vanilla is not reliably above the baseline.
        reliable = above - Z * math.hypot(row["se_v"], row["base_se"]) > 0
        if paired is not None and baseline_means is not None:
            vs, ms, bs = paired[0][:, index], paired[1][:, index], baseline_means[:, position]
            method = "paired bootstrap over test documents"
        else:
            draws = rng.standard_normal((3, n_boot))
            vs = row["value_v"] + row["se_v"] * draws[0]
            ms = row["value_m"] + row["se_m"] * draws[1]
            bs = row["base"] + row["base_se"] * draws[2]
            method = "Monte Carlo, independent normal"
        with np.errstate(divide="ignore", invalid="ignore"):
            low, high = _percentiles((vs - ms) / (vs - bs)) if reliable else (math.nan, math.nan)
        rows.append(
            base
            | {key: row[key] for key in CELL}
            | {"metric": f"lacking_share_{row['metric']}", "value": value, "ci_low": low, "ci_high": high}
            | {"n_test": row["n_test_v"], "method": method}
        )
    return rows


# ------------------------------------------------------------------------------------------------- verdict


@dataclass
class Verdict:
    label: str
    reason: str
    statistic: str | None = None
    interval: Interval | None = None
    thresholds: str = THRESHOLDS_TEXT


def classify(statistic: str, interval: Interval) -> Verdict:
    low, high = interval.low, interval.high
    if not (math.isfinite(low) and math.isfinite(high)):
        shown = f"{statistic} = {interval.value:.3f}"
        return Verdict("inconclusive", f"{shown}, but its interval is undefined", statistic, interval)
    shown = f"{statistic} = {interval.value:.3f} [{low:.3f}, {high:.3f}]"
    if low >= PRECACHING_ABOVE:
        return Verdict(
            "pre-caching-dominated", f"{shown}: the whole interval is ≥ {PRECACHING_ABOVE:g}", statistic, interval
        )
    if high <= BREADCRUMBS_BELOW:
        return Verdict(
            "breadcrumbs-dominated", f"{shown}: the whole interval is ≤ {BREADCRUMBS_BELOW:g}", statistic, interval
        )
    if low >= BREADCRUMBS_BELOW and high <= PRECACHING_ABOVE:
        return Verdict(
            "mixed",
            f"{shown}: the interval lies within [{BREADCRUMBS_BELOW:g}, {PRECACHING_ABOVE:g}]",
            statistic,
            interval,
        )
    return Verdict("inconclusive", f"{shown}: the interval straddles a threshold", statistic, interval)


def headline_probe_cell(rows: pd.DataFrame) -> pd.Series | None:
    """The lacking-share row at the smallest τ ≥ 2, token target, top-1, at the layer and probe best for vanilla."""
    lacking = rows[(rows["metric"] == "lacking_share_top1") & (rows["target"] == "token")]
    lacking = lacking[np.isfinite(lacking["value"].astype(float))]
    if lacking.empty:
        return None
    tau = lacking["tau"].min()
    at_tau = lacking[lacking["tau"] == tau]
    return at_tau.loc[at_tau["vanilla_top1"].astype(float).idxmax()]


def decide(share: Interval | None, gap: Interval | None, lacking: pd.Series | None) -> Verdict:
    """The loss-based share decides when there is one (it is paired); else the probe-based share at τ ≥ 2."""
    if share is not None:
        verdict = classify("pre-caching share", share)
        if not math.isfinite(share.low):
            verdict.reason += " (the bigram model is not reliably worse than the vanilla model, so no share)"
        return verdict
    if lacking is not None:
        name = (
            "share of above-baseline top-1 the myopic model lacks "
            f"(τ={int(lacking['tau'])}, layer {int(lacking['layer'])}, {lacking['probe']} probe)"
        )
        return classify(name, Interval(float(lacking["value"]), float(lacking["ci_low"]), float(lacking["ci_high"])))
    if gap is not None:
        sign = "a myopia gap" if gap.excludes_zero() else "no clear myopia gap"
        return Verdict(
            "inconclusive",
            f"{sign} ({gap.value:.3f} nats [{gap.low:.3f}, {gap.high:.3f}]), but without a bigram run or probe runs "
            "there is no scale for how much of what the model gains from the past it is",
        )
    return Verdict("inconclusive", "no vanilla/myopic pair of eval or probe runs was given")


# ---------------------------------------------------------------------------------------------- comparison


@dataclass
class Comparison:
    subjects: dict[str, Subject]
    table: pd.DataFrame
    verdict: Verdict
    gap: Interval | None = None
    share: Interval | None = None
    gain: Interval | None = None
    lacking: pd.Series | None = None
    notes: list[str] = field(default_factory=list)
    n_boot: int = 1000
    seed: int = 0


def compare(subjects: dict[str, Subject], n_boot: int = 1000, seed: int = 0) -> Comparison:
    """All statistics of a vanilla / myopic (/ bigram) set of subjects."""
    if n_boot < 200:
        raise UsageError(f"--n-boot must be at least 200; got {n_boot}")
    vanilla, myopic, bigram = subjects["vanilla"], subjects["myopic"], subjects.get("bigram")
    for other in (myopic, bigram):
        if other is not None:
            check_compatible(vanilla, other)
    shared = [stage for stage in ("probe", "eval") if vanilla.runs.get(stage) and myopic.runs.get(stage)]
    if not shared:
        raise UsageError("the vanilla and myopic runs share neither a probe run nor an eval run: nothing to compare")
    if bigram is not None and bigram.eval is None:
        raise UsageError(f"{bigram.label} has no eval run (per_window.parquet): the pre-caching share needs its loss")
    rows: list[dict[str, Any]] = []
    gap = share = gain = None
    notes: list[str] = []
    if vanilla.eval and myopic.eval:
        gap_part, gap, share, gain = gap_rows(vanilla.eval, myopic.eval, bigram.eval if bigram else None, n_boot, seed)
        rows += gap_part
    elif bigram is not None:
        notes.append("a bigram run was given but no vanilla/myopic eval pair, so no pre-caching share")
    lacking = None
    if vanilla.probe and myopic.probe:
        delta_part, merged = probe_delta_rows(vanilla.probe, myopic.probe, n_boot, seed)
        rows += delta_part
        frame = pd.DataFrame(delta_part)
        top1 = merged[merged["metric"] == "top1"][["layer", "tau", "target", "probe", "value_v"]]
        frame = frame.merge(
            top1.rename(columns={"value_v": "vanilla_top1"}), on=["layer", "tau", "target", "probe"], how="left"
        )
        lacking = headline_probe_cell(frame)
    table = tidy(pd.DataFrame(rows))
    verdict = decide(share, gap, lacking)
    return Comparison(subjects, table, verdict, gap, share, gain, lacking, notes, n_boot, seed)


def subjects_from_args(vanilla: str, myopic: str, bigram: str | None) -> dict[str, Subject]:
    given = {"vanilla": vanilla, "myopic": myopic} | ({"bigram": bigram} if bigram else {})
    return {role: subject_from(role, find_runs(path), role) for role, path in given.items()}


def prepare_out(out: Path) -> None:
    """Create the output folder now, so an unwritable --out fails before any work."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"cannot write to --out {out}: {error.strerror or type(error).__name__}") from None


def write_comparison(comparison: Comparison, out: Path, inputs: dict[str, str]) -> None:
    from probes.provenance import provenance

    try:
        write_results(comparison.table, out, stem="comparison")
        verdict = comparison.verdict
        atomic_write_json(
            out / "provenance.json",
            provenance(
                stage="compare",
                inputs=inputs,
                n_boot=comparison.n_boot,
                seed=comparison.seed,
                verdict={"label": verdict.label, "reason": verdict.reason, "thresholds": verdict.thresholds},
                input_runs={
                    role: {stage: str(run.path) for stage, run in subject.runs.items()}
                    for role, subject in comparison.subjects.items()
                },
            ),
        )
    except OSError as error:
        raise UsageError(f"cannot write to --out {out}: {error.strerror or type(error).__name__}") from None


def run_compare(
    vanilla: str, myopic: str, bigram: str | None, out: str | Path, n_boot: int = 1000, seed: int = 0
) -> Comparison:
    """Load, check, compare, write comparison.{csv,parquet}, provenance.json and report.html into `out`."""
    from analysis.report import write_report

    out = Path(out)
    subjects = subjects_from_args(vanilla, myopic, bigram)
    comparison = compare(subjects, n_boot=n_boot, seed=seed)
    prepare_out(out)
    write_comparison(comparison, out, {"vanilla": vanilla, "myopic": myopic, "bigram": bigram})
    write_report(out, subjects=list(subjects.values()), comparison=comparison)
    return comparison


def add_compare_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vanilla", required=True, help="run folder(s) of the vanilla model (probe and/or eval)")
    parser.add_argument("--myopic", required=True, help="run folder(s) of the myopic model, same data and split")
    parser.add_argument("--bigram", default=None, help="eval run of the transformer-bigram model (pre-caching share)")
    parser.add_argument("--out", default=str(Path("reports") / "comparison"), help="where the comparison is written")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples over test documents")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")


def compare_command(args: argparse.Namespace) -> int:
    comparison = run_compare(args.vanilla, args.myopic, args.bigram, args.out, n_boot=args.n_boot, seed=args.seed)
    verdict = comparison.verdict
    print(f"verdict: {verdict.label}: {verdict.reason}")
    print(f"thresholds: {verdict.thresholds}")
    print(f"report: {Path(args.out) / 'report.html'}")
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="compare.py", description=__doc__.splitlines()[0])
    add_compare_args(parser)
    args = parser.parse_args(argv)
    try:
        return compare_command(args)
    except UsageError as error:
        sys.stderr.write(f"compare.py: error: {error}\n")
        return 2


if __name__ == "__main__":
    # Run as a script: re-enter through the package so `analysis.report` sees the same classes.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from analysis.compare import main as package_main

    raise SystemExit(package_main())
