"""The HTML report: one self-contained file (figures embedded as PNG data URIs, no script, no request).

`write_report(out, subjects, comparison)` renders `out/report.html` from loaded runs (`probes.runs`) and,
when given, a vanilla/myopic comparison (`analysis.comparison`). `report_from_paths` regenerates it from
result folders, as `probe-future report RUN... --out DIR` (`COMMAND`) does: the runs are grouped by model
kind, and a vanilla and a myopic model among them are compared; a single probe run gets a report of its own.
Every string that comes from data or arguments goes through Jinja's autoescaping.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from simple_parsing import field

from analysis.checks import check_subjects
from analysis.comparison import (
    OWN_OUTPUT,
    ROLE_OF_KIND,
    Comparison,
    Subject,
    check_n_boot,
    compare,
    document_gaps,
    window_losses,
)
from analysis.gradients import section as gradient_section
from probes.config import Command, check_seed
from probes.errors import UsageError
from probes.io import atomic_write_text, read_json
from probes.runs import BASELINES, CONTROL_KIND, PROBES, Run, check_apart, claim_folder, find_runs
from probes.selection import Choice, best_layer_and_probe
from probes.stats import bootstrap_mean_ci
from probes.synthetic.results import headlines

TEMPLATES = Path(__file__).resolve().parent / "templates"
DPI = 80
PAPER_SEQ_LEN = 64
FEW_TEST_DOCS = 30
COLORS = {"vanilla": "#1f77b4", "myopic": "#d62728", "bigram": "#7f7f7f"}
# Series without a role of their own (controls, other models) take these in turn: none is a role's colour.
OTHER_COLORS = ("#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


# ------------------------------------------------------------------------------------------------- figures


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list[Any]]:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, ncols, squeeze=False)[0]
    return figure, list(axes)


def _data_uri(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _plain(text: str) -> str:
    """Matplotlib reads `$...$` as mathematics; labels from data are shown literally."""
    return str(text).replace("$", r"\$")


def _short_name(model: str) -> str:
    return Path(model).name or model


RANDOM_INIT_SUFFIX = " (random init)"  # how probes.models.random_init_like names a control


def model_label(kind: str, model: str) -> str:
    """Which model, once: `vanilla` for a model folder named after its kind, `vanilla (gpt2)` otherwise, and
    `random-init control of vanilla` for the control probed beside a model."""
    name = _short_name(model.removesuffix(RANDOM_INIT_SUFFIX))
    if kind == CONTROL_KIND:
        return "untrained control" if name == "untrained" else f"random-init control of {name}"
    return kind if name == kind else f"{kind} ({name})"


def subject_label(subject: Subject) -> str:
    """A subject's name in titles and legends: its model, once (a synthetic-task folder: `synthetic task`)."""
    runs = [run for run in subject.runs.values() if run.stage != "synthetic"]
    if not runs:
        return "synthetic task"
    return model_label(runs[0].kind, runs[0].model)


def series_colors(series: Sequence[tuple[str, str | None]]) -> dict[str, str]:
    """label -> colour for (label, role) series: a role's own colour, else the next unused of `OTHER_COLORS`;
    no two series share one (beyond the palette, colours repeat only after every role and palette colour)."""
    colors: dict[str, str] = {}
    for label, role in series:
        if role in COLORS and COLORS[role] not in colors.values():
            colors[label] = COLORS[role]
    free = [color for color in (*OTHER_COLORS, *COLORS.values()) if color not in colors.values()]
    for position, (label, _) in enumerate(item for item in series if item[0] not in colors):
        colors[label] = free[position % len(free)]
    return colors


@dataclass
class ProbeSet:
    """One model's probe rows (one kind of one probe run) and a label for figures and tables."""

    label: str
    role: str | None
    frame: pd.DataFrame
    run: Run


def probe_sets(subjects: Sequence[Subject]) -> list[ProbeSet]:
    sets = []
    for subject in subjects:
        run = subject.probe
        if run is None:
            continue
        for kind in dict.fromkeys(run.results["kind"].dropna().astype(str)):
            frame = run.results[run.results["kind"].astype(str) == kind]
            model = str(frame["model"].dropna().iloc[0]) if frame["model"].notna().any() else run.model
            role = subject.role if kind == run.kind else None
            sets.append(ProbeSet(model_label(kind, model), role, frame, run))
    return sets


def main_probe(frame: pd.DataFrame) -> str | None:
    present = [name for name in PROBES if (frame["probe"] == name).any()]
    return present[0] if present else None


def top1_grid(frame: pd.DataFrame, probe: str, target: str = "token") -> pd.DataFrame:
    rows = frame[(frame["probe"] == probe) & (frame["metric"] == "top1") & (frame["target"] == target)]
    rows = rows.dropna(subset=["layer", "tau"])
    grid = rows.pivot_table(index="layer", columns="tau", values="value", aggfunc="first")
    grid.index = grid.index.astype(int)
    grid.columns = grid.columns.astype(int)
    return grid


def heatmap_figure(sets: Sequence[ProbeSet], difference: pd.DataFrame | None) -> str | None:
    import seaborn as sns

    panels = []
    for item in sets:
        probe = main_probe(item.frame)
        if probe is not None:
            grid = top1_grid(item.frame, probe)
            if not grid.empty:
                panels.append((f"{item.label}\ntop-1, {probe}, token", grid, "viridis", 0.0, None))
    # One colour scale for every model's panel, so equal colours mean equal accuracy.
    shared = max((float(np.nanmax(grid.to_numpy(float))) for _, grid, *_ in panels), default=1.0)
    panels = [(title, grid, cmap, low, shared) for title, grid, cmap, low, _ in panels]
    if difference is not None and not difference.empty:
        bound = float(np.nanmax(np.abs(difference.to_numpy(float)))) or 1e-9
        panels.append(("vanilla − myopic\ntop-1 difference", difference, "RdBu_r", -bound, bound))
    if not panels:
        return None
    figure, axes = _figure(3.6 * len(panels), 3.2, ncols=len(panels))
    for ax, (title, grid, cmap, low, high) in zip(axes, panels, strict=True):
        annotate = grid.size <= 80
        sns.heatmap(grid, ax=ax, cmap=cmap, vmin=low, vmax=high, annot=annotate, fmt=".2f", annot_kws={"size": 7})
        ax.set_title(_plain(title), fontsize=9)
        ax.set_xlabel("τ (offset of the predicted token)")
        ax.set_ylabel("layer (0 = embeddings)")
        ax.invert_yaxis()
    return _data_uri(figure)


def chosen_layer(item: ProbeSet) -> Choice | None:
    """The model's layer and probe with the best validation top-1 (token target) averaged over τ ≥ 2."""
    frame = item.frame
    rows = frame[(frame["metric"] == "top1") & (frame["target"] == "token") & frame["probe"].isin(PROBES)]
    return best_layer_and_probe(rows, PROBES)


def tau_figure(sets: Sequence[ProbeSet]) -> tuple[str | None, list[tuple[str, str]]]:
    """Test top-1 against τ at each model's layer and probe chosen on the validation documents, with the count
    baselines and each model's own next-token top-1."""
    lines, best = [], []
    for item in sets:
        choice = chosen_layer(item)
        if choice is None:
            continue
        best.append((item.label, f"layer {choice.layer}, {choice.probe} (chosen on the {choice.basis})"))
        lines.append((item, f"{item.label} (layer {choice.layer}, {choice.probe})", choice.test))
    if not lines:
        return None, best
    colors = series_colors([(item.label, item.role) for item, _, _ in lines])
    figure, (ax,) = _figure(6.4, 3.6)
    for item, label, series in lines:
        ax.errorbar(series.index, series.to_numpy(), marker="o", label=_plain(label), color=colors[item.label])
        token = item.frame[(item.frame["metric"] == "top1") & (item.frame["target"] == "token")]
        own = token[token["probe"] == "model-output"]
        if len(own) and item.role is not None:
            own_label = f"{item.label}: own next-token top-1"
            ax.plot([1], [float(own["value"].iloc[0])], "*", color=colors[item.label], markersize=10, label=own_label)
    frame = sets[0].frame
    token = frame[(frame["metric"] == "top1") & (frame["target"] == "token")]
    for name, style in zip(BASELINES, ("--", ":"), strict=True):
        rows = token[token["probe"] == name].sort_values("tau")
        if len(rows):
            ax.plot(rows["tau"].astype(int), rows["value"], style, color="black", label=f"{name} baseline")
    ax.set_xticks(sorted({int(tau) for _, _, series in lines for tau in series.index}))
    ax.set_xlabel("τ")
    ax.set_ylabel("top-1 accuracy (token at t+τ)")
    ax.legend(fontsize=7)
    return _data_uri(figure), best


def position_curves(run: Run, n_boot: int, seed: int) -> pd.DataFrame:
    """Mean loss by position with document-bootstrap intervals, from the run's per-window losses."""
    table = window_losses(run)
    point, low, high = bootstrap_mean_ci(table.losses, table.docs, n_boot=n_boot, seed=seed)
    return pd.DataFrame({"position": np.arange(len(point)), "value": point, "ci_low": low, "ci_high": high})


def loss_figure(subjects: Sequence[Subject], comparison: Comparison | None, n_boot: int, seed: int) -> str | None:
    curves = [(subject_label(s), s.role, position_curves(s.eval, n_boot, seed)) for s in subjects if s.eval is not None]
    if not curves:
        return None
    colors = series_colors([(label, role) for label, role, _ in curves])
    gap = None
    if comparison is not None:
        table = comparison.table
        gap = table[(table["metric"] == "gap_ce_nats") & table["position"].notna()] if "position" in table else None
    has_gap = gap is not None and not gap.empty
    figure, axes = _figure(11 if has_gap else 6.4, 3.6, ncols=2 if has_gap else 1)
    for label, _, curve in curves:
        color = colors[label]
        axes[0].plot(curve["position"], curve["value"], label=_plain(label), color=color)
        axes[0].fill_between(curve["position"], curve["ci_low"], curve["ci_high"], alpha=0.25, color=color)
    axes[0].set_xlabel("token position in the window")
    axes[0].set_ylabel("cross-entropy (nats)")
    axes[0].legend(fontsize=7)
    if has_gap:
        assert gap is not None
        position = gap["position"].astype(int)
        axes[1].plot(position, gap["value"], color=COLORS["myopic"])
        axes[1].fill_between(position, gap["ci_low"], gap["ci_high"], alpha=0.25, color=COLORS["myopic"])
        axes[1].axhline(0, color="black", linewidth=0.8)
        axes[1].set_xlabel("token position in the window")
        axes[1].set_ylabel("myopia gap: myopic − vanilla (nats)")
    return _data_uri(figure)


def synthetic_figure(subjects: Sequence[Subject]) -> str | None:
    frames = [s.synthetic.results for s in subjects if s.synthetic is not None]
    if not frames:
        return None
    rows = pd.concat(frames, ignore_index=True)
    if "lookback" not in rows:
        return None
    rows = rows[(rows["metric"] == "r2")].dropna(subset=["layer", "lookback"])
    if "target" in rows:
        rows = rows[rows["target"].astype(str) == "sin"]
    if rows.empty:
        return None
    groups = list(rows.groupby(["kind", "model"], sort=False))
    figure, axes = _figure(4.6 * len(groups), 3.4, ncols=len(groups))
    for ax, ((kind, model), group) in zip(axes, groups, strict=True):
        for layer, by_layer in group.groupby("layer"):
            by_layer = by_layer.sort_values("lookback")
            ax.plot(by_layer["lookback"], by_layer["value"], marker=".", label=f"layer {int(layer)}")
            ax.fill_between(by_layer["lookback"], by_layer["ci_low"], by_layer["ci_high"], alpha=0.2)
        ax.set_title(_plain(f"synthetic task: {model_label(str(kind), str(model))}"), fontsize=9)
        ax.set_xlabel("look-back i (target: sin(f·x[n−i]))")
        ax.set_ylabel("probe R²")
        ax.set_ylim(min(-0.05, float(group["value"].min())), 1.05)
        ax.legend(fontsize=7)
    return _data_uri(figure)


def synthetic_summary(subjects: Sequence[Subject]) -> dict[str, Any] | None:
    """Per model of the synthetic task: test loss against predict-0, and the probes that tell pre-caching apart."""
    runs = [s.synthetic for s in subjects if s.synthetic is not None]
    if not runs:
        return None
    header = ["model", "test Huber [95% CI]", "× predict-0", "last-layer R² for y", "layer-1 R² for sin(f·x_n)"]

    def cell(interval: tuple[float, float, float] | None) -> str:
        return interval_text(*interval) if interval is not None else ""

    rows = [
        [row.label, cell(row.loss), fmt(row.loss_ratio, 3) if row.loss else "", cell(row.r2_y), cell(row.r2_sine)]
        for run in runs
        for row in headlines(run.results)
    ]
    data = runs[0].provenance.get("data", {})
    freq = data.get("freq", runs[0].provenance.get("args", {}).get("freq"))
    return {"columns": header, "rows": rows, "freq": fmt(freq, 3).rstrip("0").rstrip(".") if freq else "f"}


# -------------------------------------------------------------------------------------------- text blocks


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, float | np.floating):
        return "" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def interval_text(value: float, low: float, high: float, digits: int = 3) -> str:
    if math.isnan(low) or math.isnan(high):
        return f"{fmt(value, digits)} (interval undefined)"
    return f"{fmt(value, digits)} [{fmt(low, digits)}, {fmt(high, digits)}]"


def table_block(title: str, frame: pd.DataFrame) -> dict[str, Any]:
    frame = frame.dropna(axis=1, how="all")
    rows = [[fmt(value, 4) for value in row] for row in frame.itertuples(index=False)]
    return {"title": title, "columns": [str(c) for c in frame.columns], "rows": rows}


def key_numbers(comparison: Comparison | None, sets: Sequence[ProbeSet]) -> list[dict[str, str]]:
    numbers = []
    if comparison is not None:
        intervals = (
            (comparison.gap, "myopia gap (myopic − vanilla CE, nats)", "paired bootstrap over the same test documents"),
            (
                comparison.gain,
                "what reading the past is worth (bigram − vanilla CE, nats)",
                "the denominator of the share",
            ),
            (
                comparison.share,
                "pre-caching share (CE_myopic − CE_vanilla) / (CE_bigram − CE_vanilla)",
                "ratio computed in each paired resample; the paper's GPT-2 gives 0.12 / 2.05 ≈ 0.06",
            ),
        )
        for estimate, name, note in intervals:
            if estimate is not None:
                numbers.append(
                    {"name": name, "value": interval_text(estimate.value, estimate.low, estimate.high), "note": note}
                )
        numbers += deficit_numbers(comparison)
    for item in sets:
        choice = chosen_layer(item)
        if choice is None:
            continue
        cells = ", ".join(f"τ={tau}: {value:.3f}" for tau, value in choice.test.items())
        where = f"layer {choice.layer}, {choice.probe}"
        name = f"{item.label}: test top-1 at the layer and probe chosen on validation ({where})"
        note = (
            f"chosen on the {choice.basis} (the highest validation top-1 averaged over τ ≥ 2), so picking among "
            "layers does not flatter the test number; top-1 for the token at t+τ; intervals in the tables"
        )
        numbers.append({"name": name, "value": cells, "note": note})
    return numbers


def _interval_of(row: pd.Series) -> str:
    return interval_text(float(row["value"]), float(row["ci_low"]), float(row["ci_high"]))


def deficit_numbers(comparison: Comparison) -> list[dict[str, str]]:
    """The myopic model's probe deficit beside its own next-token deficit: a probe share well above the own
    share points to information the vanilla model prepared for later tokens; similar shares, to a myopic model
    that is weaker overall."""
    numbers = []
    table, row = comparison.table, comparison.lacking
    if row is not None:
        numbers.append(
            {
                "name": f"share of vanilla's above-baseline top-1 the myopic model lacks (τ={int(row['tau'])}, "
                f"layer {int(row['layer'])}, {row['probe']}: the layer and probe best for vanilla)",
                "value": _interval_of(row),
                "note": f"{row['method']}; the layer and probe chosen on the {row.get('chosen_on', 'test numbers')}",
            }
        )
    deltas = table[(table["metric"] == "delta_top1") & (table["target"] == "token")] if len(table) else table
    own_delta = deltas[deltas["probe"] == OWN_OUTPUT] if len(deltas) else deltas
    if len(own_delta):
        numbers.append(
            {
                "name": "next-token top-1, vanilla − myopic (each model's own output, τ = 1)",
                "value": _interval_of(own_delta.iloc[0]),
                "note": f"{own_delta.iloc[0]['method']}; how much weaker the myopic model is at its own task",
            }
        )
    if comparison.own is not None:
        numbers.append(
            {
                "name": "share of vanilla's above-baseline next-token top-1 the myopic model lacks (own output, τ = 1)",
                "value": _interval_of(comparison.own),
                "note": "the yardstick for the probe share above: a probe share near this one says the myopic model "
                "is weaker overall, not that the vanilla model prepared more for later tokens",
            }
        )
    return numbers


def _provenance_rows(run: Run) -> list[tuple[str, str]]:
    prov, args = run.provenance, run.args
    data = prov.get("data", {}) if isinstance(prov.get("data"), dict) else {}
    model = prov.get("model", {}) if isinstance(prov.get("model"), dict) else {}
    libraries = prov.get("libraries", {}) if isinstance(prov.get("libraries"), dict) else {}
    commit = prov.get("git_commit")
    rows = [
        ("stage", run.stage),
        ("folder", str(run.path)),
        ("model", run.model),
        ("kind", run.kind),
        ("architecture", model.get("architecture")),
        ("weights hash", run.weights_hash),
        ("data", data.get("spec") or args.get("data")),
        ("data hash", run.data_hash),
        ("windows", data.get("n_windows")),
        ("test documents", data.get("n_test_docs")),
        ("window length", args.get("seq_len")),
        ("token budget", args.get("max_tokens")),
        ("τ", args.get("taus")),
        ("seed", args.get("seed")),
        ("package version", prov.get("version")),
        ("git commit", f"{commit}{' (with local changes)' if prov.get('git_dirty') else ''}" if commit else None),
        ("created", prov.get("created")),
        ("libraries", ", ".join(f"{k} {v}" for k, v in libraries.items() if v)),
    ]
    training = run.training()
    if training:
        rows += [("training mode", training.get("mode")), ("training steps", training.get("steps"))]
    return [(name, str(value)) for name, value in rows if value not in (None, "")]


def limitations(subjects: Sequence[Subject], comparison: Comparison | None) -> list[str]:
    """Caveats read off the runs themselves: model size and training, corpus size, settings."""
    notes: list[str] = []
    for subject in subjects:
        for run in subject.runs.values():
            notes += _run_limitations(run)
    if comparison is not None:
        notes += _comparison_limitations(comparison)
    return list(dict.fromkeys(notes))


def _synthetic_limitations(run: Run) -> list[str]:
    """The synthetic task's models are not language models: their caveats are the task's own."""
    training = run.training()
    steps, batch = training.get("steps"), training.get("batch_size")
    trained = f"{steps} steps" + (f" of {batch} sequences" if batch else "") if steps else "a short run"
    return [
        f"synthetic task ({run.path.name}): the vanilla and myopic models were trained for {trained}; the paper "
        "trained for 58,593 steps of 512 sequences at f = 10. Its untrained control (the initial weights) shows "
        "what random features of the inputs already hold."
    ]


SYNTHETIC_ARCHITECTURE = "SyntheticModel"  # training.json's architecture of a synthetic-task model


def _run_limitations(run: Run) -> list[str]:
    if run.stage == "synthetic":
        return _synthetic_limitations(run)
    training = run.training()
    if training.get("architecture") == SYNTHETIC_ARCHITECTURE:  # another stage's run of a synthetic-task model
        return [
            f"synthetic task, {model_label(run.kind, run.model)} ({run.stage}): a model of the synthetic task, not a "
            f"language model, trained for {training.get('steps')} steps of {training.get('batch_size')} sequences."
        ]
    notes = []
    name = model_label(run.kind, run.model)
    kinds = set(run.results["kind"].dropna().astype(str))
    if run.kind == CONTROL_KIND or CONTROL_KIND in kinds:
        notes.append(
            f"{name} ({run.stage}): the random-init control is untrained, a control rather than evidence about "
            "planning. At layer 0 it shows what the current token's identity alone gives away (random embeddings "
            "still tell tokens apart); from layer 1 on its random attention also mixes in earlier tokens, so there "
            "it is what an untrained network of this shape passes through, not what the embeddings alone give."
        )
    training = run.training()
    if training:
        steps, tokens = training.get("steps"), training.get("tokens_seen")
        params = training.get("n_params")
        size = f"{params / 1e6:.1f}M parameters, " if isinstance(params, int | float) else ""
        seen = f" ({tokens:,} tokens)" if isinstance(tokens, int) else ""
        notes.append(
            f"{name}: {size}trained for {steps} steps{seen}; the paper's GPT-2 runs used 124M parameters and "
            "about 9.1k steps of 512 × 64 tokens. Small or short runs have less to pre-cache."
        )
    elif run.kind == "pretrained":
        notes.append(f"{name}: a pretrained checkpoint; how it was trained is not recorded in these runs.")
    data = run.provenance.get("data", {}) if isinstance(run.provenance.get("data"), dict) else {}
    n_docs = data.get("n_test_docs")
    if isinstance(n_docs, int) and n_docs < FEW_TEST_DOCS:
        notes.append(
            f"{name} ({run.stage}): only {n_docs} test documents; intervals resample documents, so they are coarse."
        )
    n_windows, seq_len = data.get("n_windows"), run.args.get("seq_len")
    if isinstance(n_windows, int) and isinstance(seq_len, int):
        notes.append(
            f"{name} ({run.stage}): {n_windows:,} windows of {seq_len} tokens ({n_windows * seq_len:,} tokens) "
            f"of {data.get('spec') or run.args.get('data')}."
        )
        if seq_len != PAPER_SEQ_LEN:
            notes.append(f"{name}: windows of {seq_len} tokens (the paper used {PAPER_SEQ_LEN}).")
    top_k = run.args.get("top_k")
    if run.stage == "probe" and isinstance(top_k, int):
        notes.append(
            f"{name}: the softmax probe predicts the {top_k} most frequent targets per head (+ OTHER); a rarer "
            "target always counts as wrong, which caps its top-1."
        )
    return notes


def _comparison_limitations(comparison: Comparison) -> list[str]:
    notes = list(comparison.notes)
    vanilla, myopic = comparison.subjects["vanilla"], comparison.subjects["myopic"]
    methods = comparison.table["method"] if "method" in comparison.table else pd.Series(dtype=str)
    deltas = comparison.table["metric"].astype(str).str.startswith(("delta_", "lacking_share_"))
    if vanilla.probe and myopic.probe and methods[deltas].astype(str).str.contains("independent").any():
        notes.append(
            "Probe deltas: a probe run without per_doc.parquet (written before it existed) keeps only aggregated "
            "scores, so these intervals treat the two runs as independent (wider than the paired bootstrap over "
            "documents used otherwise)."
        )
    kinds = {run.kind for run in vanilla.runs.values()}
    if kinds - {"vanilla"}:
        notes.append(f"The vanilla side is of kind {', '.join(sorted(kinds))}, not a vanilla checkpoint trained here.")
    for stage in ("probe", "eval"):
        first, second = vanilla.runs.get(stage), myopic.runs.get(stage)
        if first and second and first.weights_hash and first.weights_hash == second.weights_hash:
            notes.append(f"The vanilla and myopic {stage} runs used identical weights: the comparison is a self-check.")
    if "bigram" not in comparison.subjects:
        notes.append("No bigram run was given, so no pre-caching share (the gap has no scale of its own).")
    gain = comparison.gain
    if gain is not None and not gain.low > 0:
        shown = interval_text(gain.value, gain.low, gain.high)
        notes.append(
            f"The bigram model is not reliably worse than the vanilla model ({shown} nats): the vanilla model "
            "gains little from reading the past, so the pre-caching share is undefined."
        )
    return notes


# ---------------------------------------------------------------------------------------------- rendering


def _environment() -> jinja2.Environment:
    # autoescape=True for every template: the name ends in .j2, which select_autoescape would not match.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
    )


def difference_grid(sets: Sequence[ProbeSet]) -> pd.DataFrame | None:
    by_role = {item.role: item for item in sets if item.role in ("vanilla", "myopic")}
    if len(by_role) < 2:
        return None
    probe = main_probe(by_role["vanilla"].frame)
    if probe is None:
        return None
    return top1_grid(by_role["vanilla"].frame, probe) - top1_grid(by_role["myopic"].frame, probe)


def _document_gap_table(comparison: Comparison | None, n: int = 5) -> dict[str, Any] | None:
    if comparison is None:
        return None
    vanilla, myopic = comparison.subjects["vanilla"].eval, comparison.subjects["myopic"].eval
    if vanilla is None or myopic is None:
        return None
    gaps = document_gaps(vanilla, myopic)
    shown = gaps if len(gaps) <= 2 * n else pd.concat([gaps.head(n), gaps.tail(n)])
    return table_block(f"held-out documents with the largest and smallest myopia gap (of {len(gaps)})", shown)


def context(subjects: Sequence[Subject], comparison: Comparison | None, n_boot: int, seed: int) -> dict[str, Any]:
    sets = probe_sets(subjects)
    tau_uri, best = tau_figure(sets)
    tables = []
    if comparison is not None and not comparison.table.empty:
        tables.append(table_block("comparison (comparison.csv)", comparison.table))
    for subject in subjects:
        for run in subject.runs.values():
            tables.append(table_block(f"{subject.label}: {run.stage} results ({run.path})", run.results))
    return {
        "title": "probe-future report: " + ", ".join(dict.fromkeys(subject_label(s) for s in subjects)),
        "verdict": comparison.verdict if comparison is not None else None,
        "single_kinds": ", ".join(sorted({run.kind for s in subjects for run in s.runs.values()})),
        "numbers": key_numbers(comparison, sets),
        "setup": [
            {"label": f"{s.label}: {run.stage}", "rows": _provenance_rows(run)}
            for s in subjects
            for run in s.runs.values()
        ],
        "document_gaps": _document_gap_table(comparison),
        "loss_figure": loss_figure(subjects, comparison, n_boot, seed),
        "heatmap_figure": heatmap_figure(sets, difference_grid(sets)),
        "tau_figure": tau_uri,
        "best_layers": best,
        "synthetic_figure": synthetic_figure(subjects),
        "synthetic_summary": synthetic_summary(subjects),
        "gradients": gradient_section(subjects, comparison),
        "tables": tables,
        "limitations": limitations(subjects, comparison),
        "n_boot": n_boot,
    }


def render(subjects: Sequence[Subject], comparison: Comparison | None, n_boot: int = 1000, seed: int = 0) -> str:
    return _environment().get_template("report.html.j2").render(**context(subjects, comparison, n_boot, seed))


def prepare_out(out: Path, runs: Sequence[Run] = ()) -> None:
    """Claim the output folder (`probes.runs.claim_folder`): a new folder, a comparison's, or a demo's (the demo
    writes its comparison into its own folder, beside the runs); never a run folder, or inside one."""
    check_apart(out, [run.path for run in runs], may_contain=True)
    claim_folder(out, "compare", None, shares_with=("demo",), replaceable=False)


def write_report(
    out: str | Path, subjects: Sequence[Subject], comparison: Comparison | None = None, n_boot: int | None = None
) -> Path:
    out = Path(out)
    boot = n_boot or (comparison.n_boot if comparison is not None else 1000)
    seed = comparison.seed if comparison is not None else 0
    html = render(subjects, comparison, boot, seed)
    path = out / "report.html"
    try:
        atomic_write_text(path, html)
    except OSError as error:
        raise UsageError(f"cannot write to --out {out}: {error.strerror or type(error).__name__}") from None
    return path


# ------------------------------------------------------------------------------------ from result folders


def _expand(path: str | Path) -> list[Run]:
    """Runs of a folder; a comparison folder stands for the runs it compared."""
    folder = Path(path).expanduser()
    provenance = folder / "provenance.json"
    if (folder / "comparison.parquet").exists() and provenance.exists():
        try:
            recorded = read_json(provenance).get("input_runs", {})
        except (OSError, ValueError, AttributeError):
            raise UsageError(f"cannot read {provenance}") from None
        return [run for stages in recorded.values() for p in stages.values() for run in find_runs(p)]
    return find_runs(folder)


def group_subjects(runs: Sequence[Run]) -> list[Subject]:
    """One subject per vanilla / myopic / bigram kind; every other model (or control) gets its own."""
    subjects: dict[str, Subject] = {}
    for run in runs:
        synthetic = run.stage == "synthetic" or run.provenance.get("task") == "synthetic"  # (gradient runs too)
        role = ROLE_OF_KIND.get(run.kind) if not synthetic else None
        if synthetic:
            key = f"synthetic task: {run.path.name}"
        else:
            key = role or f"{run.kind}: {_short_name(run.model)}"
        subject = subjects.setdefault(key, Subject(key, role))
        if run.stage in subject.runs:
            if subject.runs[run.stage].path.resolve() == run.path.resolve():
                continue
            raise UsageError(
                f"{subject.runs[run.stage].path} and {run.path} are both {run.stage} runs of kind {key}; "
                "pass one of them"
            )
        subject.runs[run.stage] = run
    return list(subjects.values())


def _comparable(vanilla: Subject, myopic: Subject) -> bool:
    return any(vanilla.runs.get(stage) and myopic.runs.get(stage) for stage in ("probe", "eval"))


def report_from_paths(paths: Sequence[str], out: str | Path, n_boot: int = 1000, seed: int = 0) -> Path:
    runs = [run for path in paths for run in _expand(path)]
    subjects = group_subjects(runs)
    roles = {subject.role: subject for subject in subjects if subject.role is not None}
    if "bigram" in roles and roles["bigram"].eval is None:
        del roles["bigram"]  # a bigram model's probe run is shown, but the share needs its loss
    check_subjects(roles)
    comparison = None
    if "vanilla" in roles and "myopic" in roles and _comparable(roles["vanilla"], roles["myopic"]):
        comparison = compare(roles, n_boot=n_boot, seed=seed)
    prepare_out(Path(out), runs)
    return write_report(out, subjects, comparison, n_boot=n_boot)


# ---------------------------------------------------------------------------------------------- the command


@dataclass(kw_only=True)
class ReportConfig:
    runs: list[str] = field(positional=True, nargs="+", metavar="RUN")
    """probe, eval, synthetic or comparison folders"""
    out: str = field(required=True)
    """folder that receives report.html"""
    n_boot: int = 1000
    """bootstrap resamples over test documents"""
    seed: int = 0
    """seed of the bootstrap"""

    def __post_init__(self) -> None:
        check_seed(self.seed)


def run_report_command(config: ReportConfig) -> int:
    check_n_boot(config.n_boot)
    path = report_from_paths(config.runs, config.out, n_boot=config.n_boot, seed=config.seed)
    print(f"report: {path}")
    return 0


COMMAND = Command(ReportConfig, run_report_command, help="regenerate the HTML report from result folders")
