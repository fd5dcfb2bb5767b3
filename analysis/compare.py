"""Vanilla vs myopic: the myopia gap, the pre-caching share, probe deltas and a verdict in words.

    python analysis/compare.py --vanilla RUN --myopic RUN [--bigram RUN] [--synthetic RUN] [--out DIR]
    probe-future compare --vanilla RUN --myopic RUN ...        (the same command)

A RUN is a probe-run folder (`probe-future probe`), an eval folder (`probe-future eval`: loss by position,
`per_window.parquet`), or a folder whose subfolders are such runs (one of each stage); `--synthetic` takes a
synthetic-task folder (`probe-future synthetic`), shown in the report beside the comparison; `--gradients` takes
gradient-lens runs of further models (`probe-future gradients`: a pretrained model, the synthetic pair), shown in
the report's gradient allocation section beside those found in the subjects' folders. The statistics
are in `analysis.comparison`: every interval resamples test documents, and every difference between two models
(the myopia gap, the pre-caching share, the probe deltas and shares, through each probe run's `per_doc.parquet`)
is paired, the same documents drawn for both models in each resample. Writes `comparison.csv` /
`comparison.parquet` (the shared results schema), `provenance.json` and `report.html`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from simple_parsing import field

from analysis.checks import check_subjects
from analysis.comparison import Comparison, Subject, compare, subject_from
from analysis.report import group_subjects, prepare_out, write_report
from probes.cli import parse_config
from probes.config import Command, check_seed
from probes.errors import UsageError
from probes.io import atomic_write_json
from probes.results import write_results
from probes.runs import find_runs

DEFAULT_OUT = str(Path("reports") / "comparison")


@dataclass(kw_only=True)
class CompareConfig:
    vanilla: str = field(required=True)
    """run folder(s) of the vanilla model (probe and/or eval)"""
    myopic: str = field(required=True)
    """run folder(s) of the myopic model, same data and split"""
    bigram: str | None = None
    """eval run of the transformer-bigram model (pre-caching share)"""
    synthetic: str | None = None
    """a synthetic-task result folder, shown in the report beside the comparison"""
    gradients: str | None = None
    """gradient-lens runs of further models (a run folder or a folder of them), shown in the report"""
    out: str = DEFAULT_OUT
    """where the comparison is written"""
    n_boot: int = 1000
    """bootstrap resamples over test documents"""
    seed: int = 0
    """seed of the bootstrap"""

    def __post_init__(self) -> None:
        check_seed(self.seed)


def subjects_from_args(vanilla: str, myopic: str, bigram: str | None) -> dict[str, Subject]:
    given = {"vanilla": vanilla, "myopic": myopic} | ({"bigram": bigram} if bigram else {})
    return {role: subject_from(role, find_runs(path), role) for role, path in given.items()}


def synthetic_subjects(path: str | None) -> list[Subject]:
    """The synthetic-task runs of `path` (none without a path), one subject per run."""
    if not path:
        return []
    runs = find_runs(path)
    for run in runs:
        if run.stage != "synthetic":
            raise UsageError(f"--synthetic {path}: {run.path} is a {run.stage} run, not a synthetic-task run")
    return group_subjects(runs)


def gradient_subjects(path: str | None) -> list[Subject]:
    """The gradient-lens runs of `path` (none without a path), one subject per model."""
    if not path:
        return []
    runs = find_runs(path)
    for run in runs:
        if run.stage != "gradient":
            raise UsageError(f"--gradients {path}: {run.path} is a {run.stage} run, not a gradient-lens run")
    return group_subjects(runs)


def write_comparison(
    comparison: Comparison, out: Path, inputs: dict[str, str | None], shown: Sequence[Subject] = ()
) -> None:
    """comparison.{csv,parquet} and provenance.json; `shown`: further subjects in the report (synthetic task)."""
    from probes.provenance import provenance  # imports torch: only when there is something to write

    subjects = [*comparison.subjects.values(), *shown]
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
                    subject.label: {stage: str(run.path) for stage, run in subject.runs.items()} for subject in subjects
                },
            ),
        )
    except OSError as error:
        raise UsageError(f"cannot write to --out {out}: {error.strerror or type(error).__name__}") from None


def run_compare(
    vanilla: str,
    myopic: str,
    bigram: str | None,
    out: str | Path,
    n_boot: int = 1000,
    seed: int = 0,
    synthetic: str | None = None,
    gradients: str | None = None,
) -> Comparison:
    """Load, check, compare, write comparison.{csv,parquet}, provenance.json and report.html into `out`."""
    out = Path(out)
    subjects = subjects_from_args(vanilla, myopic, bigram)
    check_subjects(subjects)
    shown = synthetic_subjects(synthetic) + gradient_subjects(gradients)
    comparison = compare(subjects, n_boot=n_boot, seed=seed)
    prepare_out(out, [run for subject in [*subjects.values(), *shown] for run in subject.runs.values()])
    inputs = {"vanilla": vanilla, "myopic": myopic, "bigram": bigram} | ({"synthetic": synthetic} if synthetic else {})
    inputs |= {"gradients": gradients} if gradients else {}
    write_comparison(comparison, out, inputs, shown)
    write_report(out, subjects=[*subjects.values(), *shown], comparison=comparison)
    return comparison


def compare_command(config: CompareConfig) -> int:
    comparison = run_compare(
        config.vanilla,
        config.myopic,
        config.bigram,
        config.out,
        n_boot=config.n_boot,
        seed=config.seed,
        synthetic=config.synthetic,
        gradients=config.gradients,
    )
    verdict = comparison.verdict
    print(f"verdict: {verdict.label}: {verdict.reason}")
    print(f"thresholds: {verdict.thresholds}")
    print(f"report: {Path(config.out) / 'report.html'}")
    return 0


COMMAND = Command(CompareConfig, compare_command, help="vanilla vs myopic: myopia gap, pre-caching share, verdict")


def main(argv: Sequence[str] | None = None) -> int:
    """`python analysis/compare.py ...`: the same command as `probe-future compare`."""
    try:
        config = parse_config(CompareConfig, argv, prog="compare.py", description=__doc__.splitlines()[0])
        return compare_command(config)
    except UsageError as error:
        sys.stderr.write(f"compare.py: error: {error}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
