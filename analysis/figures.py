"""The report's figures (seaborn/matplotlib, each returned as a PNG data URI) and the model labels they share
with the report's tables. `analysis.report` assembles them into the HTML page.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.comparison import Comparison, Subject, window_losses
from probes.runs import BASELINES, CONTROL_KIND, PROBES, Run
from probes.selection import Choice, best_layer_and_probe
from probes.stats import bootstrap_mean_ci

DPI = 80
COLORS = {"vanilla": "#1f77b4", "myopic": "#d62728", "bigram": "#7f7f7f"}
# Series without a role of their own (controls, other models) take these in turn: none is a role's colour.
OTHER_COLORS = ("#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


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


def short_name(model: str) -> str:
    return Path(model).name or model


RANDOM_INIT_SUFFIX = " (random init)"  # how probes.models.random_init_like names a control


def model_label(kind: str, model: str) -> str:
    """Which model, once: `vanilla` for a model folder named after its kind, `vanilla (gpt2)` otherwise, and
    `random-init control of vanilla` for the control probed beside a model."""
    name = short_name(model.removesuffix(RANDOM_INIT_SUFFIX))
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


def difference_grid(sets: Sequence[ProbeSet]) -> pd.DataFrame | None:
    by_role = {item.role: item for item in sets if item.role in ("vanilla", "myopic")}
    if len(by_role) < 2:
        return None
    probe = main_probe(by_role["vanilla"].frame)
    if probe is None:
        return None
    return top1_grid(by_role["vanilla"].frame, probe) - top1_grid(by_role["myopic"].frame, probe)
