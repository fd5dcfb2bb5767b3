"""Vanilla vs myopic, the statistics: the myopia gap, the pre-caching share, probe deltas and a verdict in words.

`compare(subjects)` takes loaded runs (`probes.runs`) grouped into subjects, one per model, and returns a
`Comparison`: the rows of `comparison.csv` in the shared results schema, the headline intervals and the verdict.
Runs are compared only when they were made on the same data, split and τ set (checked by the hashes and
settings in their `provenance.json`). Nothing here reads arguments or writes files.

Statistics (all intervals 95%, percentile):
- myopia gap = mean myopic CE − mean vanilla CE over the same held-out tokens, overall and by position,
  with a paired bootstrap over test documents (every resample draws the same documents for both models);
- pre-caching share = (CE_myopic − CE_vanilla) / (CE_bigram − CE_vanilla), the ratio computed in each of the
  same paired resamples;
- probe deltas = vanilla − myopic per layer × τ × target × probe × metric, and the same for the models' own
  next-token top-1 (the `model-output` row): a paired bootstrap over test documents, from the per-document sums
  and counts each probe run writes to `per_doc.parquet` (every resample draws the same documents for both
  models). Only for runs without that file (written before it existed) are the two runs treated as independent
  (a normal approximation from each run's own bootstrap interval, wider than the paired one); each row's
  `method` column says which was used;
- for τ ≥ 2, the share of the vanilla model's above-baseline information that the myopic model lacks,
  (vanilla − myopic) / (vanilla − best count baseline), with an interval of the same kind; beside it the same
  share of the models' own next-token top-1 at τ = 1, so a probe deficit can be told from a weaker myopic model;
- every choice among layers, probes and baselines (the headline cell, the best baseline) is made on the
  train-side validation scores (`val_value`, `probes.selection`), never on the test numbers it reports.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from probes.errors import UsageError
from probes.results import PER_DOC_FILE, tidy
from probes.runs import BASELINES, PROBES, STAGES, Run, _read_table
from probes.selection import VALIDATION, best_per
from probes.stats import bootstrap_mean_ci, bootstrap_weights, resample_sums

LEVEL = 0.95
Z = 1.959963984540054  # two-sided 95% normal quantile
MIN_N_BOOT = 200  # fewer resamples give percentile intervals too coarse to report
ROLES = ("vanilla", "myopic", "bigram")
OWN_OUTPUT = "model-output"  # the probe job's row of the model's own next-token top-1 (τ = 1)
ROLE_OF_KIND = {"vanilla": "vanilla", "myopic": "myopic", "strict-myopic": "myopic", "bigram": "bigram"}

# Verdict thresholds on the pre-caching share (or, without a bigram run, on the share of above-baseline
# probe information the myopic model lacks at the smallest τ ≥ 2).
BREADCRUMBS_BELOW = 0.2
PRECACHING_ABOVE = 0.5
THRESHOLDS_TEXT = (
    f"pre-caching-dominated when the whole interval is ≥ {PRECACHING_ABOVE:g}; breadcrumbs-dominated when it is "
    f"≤ {BREADCRUMBS_BELOW:g}; mixed when it lies within [{BREADCRUMBS_BELOW:g}, {PRECACHING_ABOVE:g}]; "
    "inconclusive when it straddles a threshold or the share is undefined"
)


# ------------------------------------------------------------------------------------------------ subjects


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
    return resample_sums(weights, sums) / resample_sums(weights, counts)[:, None]


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
    """The probe rows (softmax / lstsq) and the model's own next-token row of the studied model, not of a
    random-init control."""
    names = (*PROBES, OWN_OUTPUT)
    rows = run.results[(run.results["kind"].astype(str) == run.kind) & run.results["probe"].isin(names)]
    if "val_value" not in rows.columns:  # a run written before validation scores existed
        rows = rows.assign(val_value=np.nan)
    return rows.dropna(subset=["layer", "tau"])


def best_baselines(run: Run) -> pd.DataFrame:
    """Per (τ, target, metric): the best count baseline (highest accuracy, lowest cross-entropy), chosen on the
    validation documents (`probes.selection`)."""
    rows = run.results[(run.results["kind"].astype(str) == run.kind) & run.results["probe"].isin(BASELINES)]
    best = []
    for (tau, target, metric), group in rows.groupby(["tau", "target", "metric"]):
        pick = best_per(group, ["tau"], BASELINES).iloc[0]
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
        return resample_sums(weights, sums) / resample_sums(weights, counts)


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
        if not ((table["metric"] == "top1") & table["probe"].isin(PROBES)).any():
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
    # τ ≥ 2 for the probes; the models' own next-token row (τ = 1) as the yardstick of overall weakness.
    future = (merged["tau"] >= 2) | (merged["probe"] == OWN_OUTPUT)
    cells = merged[future & merged["metric"].isin(["top1", "ce_nats"])]
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
    """The lacking-share row at the smallest τ ≥ 2, token target, top-1, at the layer and probe best for vanilla
    on the validation documents (`vanilla_val_top1`; runs without validation scores: the test `vanilla_top1`)."""
    lacking = rows[(rows["metric"] == "lacking_share_top1") & (rows["target"] == "token")]
    lacking = lacking[(lacking["probe"] != OWN_OUTPUT) & (lacking["tau"] >= 2)]
    lacking = lacking[np.isfinite(lacking["value"].astype(float))]
    if lacking.empty:
        return None
    tau = lacking["tau"].min()
    at_tau = lacking[lacking["tau"] == tau]
    scores = at_tau["vanilla_val_top1"] if "vanilla_val_top1" in at_tau else pd.Series(np.nan, index=at_tau.index)
    on_validation = bool(scores.notna().all())
    chosen = at_tau.loc[(scores if on_validation else at_tau["vanilla_top1"]).astype(float).idxmax()].copy()
    chosen["chosen_on"] = VALIDATION if on_validation else "test numbers (the runs have no validation scores)"
    return chosen


def own_output_cell(rows: pd.DataFrame) -> pd.Series | None:
    """The share of vanilla's above-baseline next-token top-1 (its own output, τ = 1) the myopic model lacks."""
    own = rows[(rows["metric"] == "lacking_share_top1") & (rows["probe"] == OWN_OUTPUT)]
    return own.iloc[0] if len(own) else None


def decide(
    share: Interval | None, gap: Interval | None, lacking: pd.Series | None, probes_given: bool = False
) -> Verdict:
    """The loss-based share decides when there is one (it is paired); else the probe-based share at τ ≥ 2.
    `probes_given`: a vanilla/myopic pair of probe runs was compared (whether or not it gave a finite share)."""
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
    no_probe_share = (
        "the probe runs give no finite share of above-baseline top-1 the myopic model lacks (at no τ ≥ 2 is the "
        "vanilla probe above the best count baseline)"
    )
    if gap is not None:
        sign = "a myopia gap" if gap.excludes_zero() else "no clear myopia gap"
        shown = f"{sign} ({gap.value:.3f} nats [{gap.low:.3f}, {gap.high:.3f}])"
        if probes_given:
            return Verdict(
                "inconclusive",
                f"{shown}, but without a bigram run there is no pre-caching share, and {no_probe_share}",
            )
        return Verdict(
            "inconclusive",
            f"{shown}, but without a bigram run or probe runs "
            "there is no scale for how much of what the model gains from the past it is",
        )
    if probes_given:
        return Verdict("inconclusive", f"a vanilla/myopic pair of probe runs was compared, but {no_probe_share}")
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
    own: pd.Series | None = None  # lacking share of the models' own next-token top-1 (τ = 1), beside `lacking`


def check_n_boot(n_boot: int) -> None:
    if n_boot < MIN_N_BOOT:
        raise UsageError(f"--n-boot must be at least {MIN_N_BOOT}; got {n_boot}")


def compare(subjects: dict[str, Subject], n_boot: int = 1000, seed: int = 0) -> Comparison:
    """All statistics of a vanilla / myopic (/ bigram) set of subjects."""
    check_n_boot(n_boot)
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
    lacking = own = None
    if vanilla.probe and myopic.probe:
        delta_part, merged = probe_delta_rows(vanilla.probe, myopic.probe, n_boot, seed)
        rows += delta_part
        frame = pd.DataFrame(delta_part)
        keep = ["layer", "tau", "target", "probe", "value_v"] + (["val_value_v"] if "val_value_v" in merged else [])
        top1 = merged[merged["metric"] == "top1"][keep]
        top1 = top1.rename(columns={"value_v": "vanilla_top1", "val_value_v": "vanilla_val_top1"})
        frame = frame.merge(top1, on=["layer", "tau", "target", "probe"], how="left")
        lacking = headline_probe_cell(frame)
        own = own_output_cell(frame)
    table = tidy(pd.DataFrame(rows))
    verdict = decide(share, gap, lacking, probes_given=bool(vanilla.probe and myopic.probe))
    return Comparison(subjects, table, verdict, gap, share, gain, lacking, notes, n_boot, seed, own)
