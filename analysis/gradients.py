"""The report's "gradient allocation" section: what the gradient lens (`probe-future gradients`) measured.

For every model given with a gradient run: the pre-caching share and the trade-off cosine per component (the
last revision of a run of several), a table of the all-parameter numbers, the curve over training when one was
recorded (`train --lens-every`, or several `step…` revisions), and plain-word evidence lines for the verdict,
beside the myopia gap and the probes. Reads loaded runs only; writes nothing.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from probes.runs import Run

STAGE = "gradient"
ALL = "all"
DPI = 80
NEGLIGIBLE_SHARE = 1e-4  # a part this small is rounding noise: its cosines mean nothing


@dataclass
class Measured:
    """One gradient run of one model, with the label its subject has in the report."""

    label: str
    role: str | None
    run: Run

    @property
    def rows(self) -> pd.DataFrame:
        """The rows of the last revision measured (the model as it is, for a run without revisions)."""
        results = self.run.results
        if "revision" not in results or results["revision"].isna().all():
            return results
        last = results["revision"].dropna().astype(str).unique()[-1]
        return results[results["revision"].astype(str) == last]

    def value(self, metric: str, component: str = ALL) -> tuple[float, float, float]:
        rows = self.rows
        row = rows[(rows["component"] == component) & (rows["metric"] == metric)]
        if row.empty:
            return math.nan, math.nan, math.nan
        first = row.iloc[0]
        return float(first["value"]), float(first["ci_low"]), float(first["ci_high"])

    def noise(self) -> float:
        """How many times a batch's vanilla gradient exceeds the expected one (NaN when that is estimated at 0)."""
        batch, expected = self.value("batch_grad_norm_vanilla")[0], self.value("expected_grad_norm_vanilla")[0]
        return batch / expected if math.isfinite(expected) and expected > 0 else math.nan


def measured_models(subjects: Sequence[Any]) -> list[Measured]:
    """Every subject's gradient run (subjects: `analysis.comparison.Subject`)."""
    return [Measured(s.label, s.role, s.runs[STAGE]) for s in subjects if STAGE in getattr(s, "runs", {})]


def _uri(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _text(value: float, low: float, high: float, digits: int = 3) -> str:
    if not math.isfinite(value):
        return "undefined"
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


# ------------------------------------------------------------------------------------------------ figures


def component_figure(models: Sequence[Measured]) -> str | None:
    """Per component: the pre-caching share (pooled, and expected with its interval) and the trade-off cosine."""
    if not models:
        return None
    figure = Figure(figsize=(11, 3.8), layout="constrained")
    FigureCanvasAgg(figure)
    share_ax, cos_ax = figure.subplots(1, 2)
    for model in models:
        rows = model.rows
        components = [c for c in dict.fromkeys(rows["component"].astype(str)) if c != ALL]
        x = np.arange(len(components))
        pooled = [model.value("precaching_share", c)[0] for c in components]
        expected = np.array([model.value("expected_precaching_share", c) for c in components])
        cosine = np.array([model.value("expected_cos_myopic_precaching", c) for c in components])
        line = share_ax.plot(x, pooled, marker="o", label=f"{model.label} (pooled)")[0]
        share_ax.errorbar(x, expected[:, 0], yerr=_errors(expected), fmt="s--", color=line.get_color(), alpha=0.6)
        shown = np.array(pooled) > NEGLIGIBLE_SHARE
        cos_ax.errorbar(
            x[shown], cosine[shown, 0], yerr=_errors(cosine[shown]), fmt="o-", color=line.get_color(), label=model.label
        )
        share_ax.set_xticks(x, components, rotation=60, fontsize=7)
        cos_ax.set_xticks(x, components, rotation=60, fontsize=7)
    share_ax.set_ylabel("‖pre-caching‖ / ‖g_vanilla‖")
    share_ax.set_title("pre-caching share (circles: pooled; squares: expected, 95% interval)", fontsize=9)
    share_ax.legend(fontsize=7)
    cos_ax.axhline(0, color="black", linewidth=0.8)
    cos_ax.set_ylim(-1.05, 1.05)
    cos_ax.set_ylabel("cos(E g_myopic, E pre-caching)")
    cos_ax.set_title("trade-off cosine, expected (where pre-caching is not zero)", fontsize=9)
    return _uri(figure)


def _errors(values: np.ndarray) -> np.ndarray | None:
    if len(values) == 0:
        return None
    low = np.where(np.isfinite(values[:, 1]), values[:, 0] - values[:, 1], 0.0)
    high = np.where(np.isfinite(values[:, 2]), values[:, 2] - values[:, 0], 0.0)
    return np.abs(np.stack([low, high]))


def training_curves(models: Sequence[Measured]) -> list[tuple[str, pd.DataFrame]]:
    """(label, frame of step, pooled share, expected cosine) per model with a curve over training."""
    curves = []
    for model in models:
        results = model.run.results
        if "train_step" in results and results["train_step"].notna().sum() and results["revision"].nunique() > 1:
            rows = results[results["component"] == ALL]
            table = rows.pivot_table(index="train_step", columns="metric", values="value", aggfunc="first")
            curves.append((f"{model.label} (revisions)", _curve_frame(table.reset_index(), "train_step", "")))
            continue
        path = Path(str(model.run.provenance.get("model", {}).get("name", ""))).expanduser() / "metrics.jsonl"
        if path.is_file():
            records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            lens = pd.DataFrame([r for r in records if "lens_precaching_share" in r])
            if not lens.empty:
                curves.append((f"{model.label} (--lens-every)", _curve_frame(lens, "step", "lens_")))
    return curves


def _curve_frame(table: pd.DataFrame, step: str, prefix: str) -> pd.DataFrame:
    def column(name: str) -> pd.Series:
        return table[prefix + name] if prefix + name in table else pd.Series(np.nan, index=table.index)

    return pd.DataFrame(
        {
            "step": table[step].astype(float),
            "share": column("precaching_share").astype(float),
            "expected_share": column("expected_precaching_share").astype(float),
            "expected_cos": column("expected_cos_myopic_precaching").astype(float),
        }
    ).sort_values("step")


def curve_figure(curves: Sequence[tuple[str, pd.DataFrame]]) -> str | None:
    if not curves:
        return None
    figure = Figure(figsize=(11, 3.4), layout="constrained")
    FigureCanvasAgg(figure)
    share_ax, cos_ax = figure.subplots(1, 2)
    for label, frame in curves:
        line = share_ax.plot(frame["step"], frame["share"], marker=".", label=f"{label}: pooled")[0]
        share_ax.plot(frame["step"], frame["expected_share"], "--", color=line.get_color(), label=f"{label}: expected")
        cos_ax.plot(frame["step"], frame["expected_cos"], marker=".", color=line.get_color(), label=label)
    share_ax.set_xlabel("training step")
    share_ax.set_ylabel("pre-caching share (all parameters)")
    share_ax.legend(fontsize=7)
    cos_ax.axhline(0, color="black", linewidth=0.8)
    cos_ax.set_xlabel("training step")
    cos_ax.set_ylabel("cos(E g_myopic, E pre-caching)")
    return _uri(figure)


# ------------------------------------------------------------------------------------------------ words


def summary_rows(models: Sequence[Measured]) -> dict[str, Any] | None:
    if not models:
        return None
    header = [
        "model",
        "pre-caching share, pooled",
        "pre-caching share, expected [95%]",
        "cos(myopic, pre-caching), expected [95%]",
        "‖E g_myopic‖ / ‖E g_vanilla‖",
        "batch noise ‖g_b‖ / ‖E g_vanilla‖",
        "tokens, batches",
    ]
    rows = []
    for model in models:
        noise = model.noise()
        first = model.rows.iloc[0]
        rows.append(
            [
                model.label,
                _text(*model.value("precaching_share")),
                _text(*model.value("expected_precaching_share")),
                _text(*model.value("expected_cos_myopic_precaching")),
                _text(*model.value("expected_myopic_to_vanilla"), digits=2),
                f"{noise:.1f}" if math.isfinite(noise) else "undefined",
                f"{int(first['n_tokens']):,}, {int(first['n_batches'])}",
            ]
        )
    return {"columns": header, "rows": rows}


def cosine_words(cosine: tuple[float, float, float]) -> str:
    value, low, high = cosine
    if not math.isfinite(value):
        return "cannot be estimated (a part's expected norm is lost in the batch noise)"
    shown = _text(value, low, high)
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"is {shown}, without an interval at this token budget"
    if high < 0:
        return f"is negative, {shown}: what later tokens ask of the weights pulls against what the present asks"
    if low > 0:
        return f"is positive, {shown}: what later tokens ask of the weights also helps the present tokens"
    return f"is {shown}, not distinguishable from 0: no measurable trade-off between present and future"


def model_evidence(model: Measured) -> str:
    share, expected_share = model.value("precaching_share"), model.value("expected_precaching_share")
    ratio = model.value("expected_myopic_to_vanilla")[0]
    noise = model.noise()
    cosine = cosine_words(model.value("expected_cos_myopic_precaching"))
    text = (
        f"Gradient lens, {model.label} ({model.run.kind}): pre-caching carries {share[0]:.0%} of the gradient's "
        f"norm on the windows measured (pooled); for the expected gradient the share is {_text(*expected_share)} "
        f"and its cosine with the expected myopic gradient {cosine}."
    )
    components = [c for c in dict.fromkeys(model.rows["component"].astype(str)) if c != ALL]
    shares = {c: model.value("precaching_share", c)[0] for c in components}
    top = max(shares, key=lambda c: shares[c] if math.isfinite(shares[c]) else -1.0, default=None)
    if top is not None and shares[top] > 2 * share[0]:
        text += (
            f" Per component it reaches {shares[top]:.0%} ({top}): the all-parameter norm is dominated by components "
            "that get no pre-caching signal."
        )
    if math.isfinite(ratio) and ratio > 2:
        text += (
            f" The expected myopic gradient is {ratio:.1f}× the expected vanilla one: the two parts largely cancel, "
            "so the model gives up loss at present positions for later ones."
        )
    elif math.isfinite(ratio) and ratio < 0.2:
        text += (
            f" The expected myopic gradient is only {ratio:.2f}× the vanilla one: the model sits near the optimum of "
            "the myopic objective, and what is left is the pre-caching signal vanilla training would follow."
        )
    if not math.isfinite(expected_share[1]) and math.isfinite(noise):
        text += (
            f" A batch's gradient is {noise:.0f}× the expected one here, so the expected numbers need more tokens "
            "for an interval."
        )
    return text


def evidence(comparison: Any, models: Sequence[Measured]) -> list[str]:
    """Plain-word lines for the verdict: the myopia gap, the probes and the gradient lens, side by side."""
    lines = []
    gap = getattr(comparison, "gap", None)
    if gap is not None:
        direction = (
            "higher" if gap.low > 0 else "lower" if gap.high < 0 else "not clearly different from the vanilla one"
        )
        shown = _text(gap.value, gap.low, gap.high)
        lines.append(
            f"Myopia gap: the myopic model's held-out loss is {direction}"
            + (f" by {shown} nats" if direction != "not clearly different from the vanilla one" else f" ({shown})")
            + " — what the vanilla model gains by training earlier positions for later ones."
        )
    lacking = getattr(comparison, "lacking", None)
    if lacking is not None:
        shown = _text(float(lacking["value"]), float(lacking["ci_low"]), float(lacking["ci_high"]))
        # A myopic model that is weaker overall lacks probe information too: read the probe share beside the
        # share of its own next-token top-1 it lacks (issue 13).
        own = getattr(comparison, "own", None)
        own_shown = _text(float(own["value"]), float(own["ci_low"]), float(own["ci_high"])) if own is not None else ""
        yardstick = (
            f"; of its own next-token top-1 it lacks {own_shown}"
            " — a probe share well above that points to information prepared on purpose, a similar one to a myopic "
            "model that is weaker overall"
            if own is not None
            else " — information prepared on purpose only if that exceeds what the myopic model lacks at its own "
            "next token"
        )
        lines.append(
            f"Probes: the myopic model lacks {shown} of the vanilla model's above-baseline top-1 for the token "
            f"τ = {int(lacking['tau'])} ahead{yardstick}."
        )
    lines += [model_evidence(model) for model in models]
    return lines


def section(subjects: Sequence[Any], comparison: Any) -> dict[str, Any] | None:
    """Everything the template's gradient-allocation section and verdict evidence need; None without lens runs."""
    models = measured_models(subjects)
    if not models:
        return None
    curves = training_curves(models)
    return {
        "figure": component_figure(models),
        "summary": summary_rows(models),
        "curve_figure": curve_figure(curves),
        "evidence": evidence(comparison, models),
    }
