"""The HTML report: one self-contained file (figures embedded as PNG data URIs, no script, no request).

`write_report(out, subjects, comparison)` renders `out/report.html` from loaded runs (`probes.runs`) and,
when given, a vanilla/myopic comparison (`analysis.comparison`). `report_from_paths` regenerates it from
result folders, as `probe-future report RUN... --out DIR` (`COMMAND`) does: the runs are grouped by model
kind, and a vanilla and a myopic model among them are compared; a single probe run gets a report of its own.
Every string that comes from data or arguments goes through Jinja's autoescaping. The figures are drawn by
`analysis.figures`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
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
)
from analysis.figures import (
    ProbeSet,
    chosen_layer,
    difference_grid,
    heatmap_figure,
    loss_figure,
    model_label,
    probe_sets,
    short_name,
    subject_label,
    synthetic_figure,
    tau_figure,
)
from analysis.gradients import section as gradient_section
from probes.config import Command, check_seed
from probes.errors import UsageError
from probes.io import atomic_write_text, read_json
from probes.runs import CONTROL_KIND, Run, check_apart, claim_folder, find_runs
from probes.synthetic.results import headlines

TEMPLATES = Path(__file__).resolve().parent / "templates"
PAPER_SEQ_LEN = 64
FEW_TEST_DOCS = 30


# -------------------------------------------------------------------------------------------- text blocks


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
            key = role or f"{run.kind}: {short_name(run.model)}"
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
