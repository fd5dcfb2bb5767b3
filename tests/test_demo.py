"""`probe-future demo` at toy size: every step end to end (synthetic, train x3, eval, probe, compare, report)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from probes import cli
from probes.demo import NL_MODES, PROBED_MODES, SCALES, Layout, chain_lengths, plan, run_demo
from tests.conftest import write_documents


@pytest.fixture(scope="module")
def toy_scale(tmp_path_factory: pytest.TempPathFactory):
    docs = write_documents(tmp_path_factory.mktemp("demo-corpus") / "docs", n_docs=20, words_per_doc=400)
    return replace(SCALES["toy"], data=str(docs))


@pytest.fixture(scope="module")
def toy_demo(tmp_path_factory: pytest.TempPathFactory, toy_scale) -> Path:
    out = tmp_path_factory.mktemp("demo") / "out"
    run_demo(out, toy_scale, workers=2)
    return out


def test_plan_orders_steps_after_what_they_need() -> None:
    names = [step.name for step in plan()]
    assert names[:3] == ["synthetic myopic", "synthetic vanilla", "synthetic"] and names[-1] == "report"
    for step in plan():
        assert all(names.index(before) < names.index(step.name) for before in step.after)
    assert [step.name for step in plan(include_synthetic=False)][0] == "train myopic"


def test_the_longest_chain_starts_first() -> None:
    """The synthetic pair trains in two workers; among ready steps the one with most work behind it goes first."""
    lengths = chain_lengths(plan())
    assert lengths["train vanilla"] > lengths["train bigram"]  # the vanilla model is probed after training
    assert lengths["synthetic myopic"] > lengths["synthetic vanilla"] > lengths["synthetic"] > lengths["report"]
    assert max(lengths, key=lengths.__getitem__) in ("train vanilla", "synthetic myopic")


@pytest.mark.slow
def test_every_step_writes_its_results(toy_demo: Path) -> None:
    layout = Layout(toy_demo)
    assert (layout.synthetic / "results.parquet").is_file()
    for mode in NL_MODES:
        assert (layout.model(mode) / "training.json").is_file()
        assert (layout.eval(mode) / "per_window.parquet").is_file()
    for mode in PROBED_MODES:
        results = pd.read_parquet(layout.probe(mode) / "results.parquet")
        assert set(results["tau"].dropna().astype(int)) == {1, 2, 3, 4, 5}
    vanilla_probe = pd.read_parquet(layout.probe("vanilla") / "results.parquet")
    assert "random-init" in set(vanilla_probe["kind"])  # the control
    comparison = pd.read_csv(toy_demo / "comparison.csv")
    assert len(comparison) > 0
    html = layout.report.read_text(encoding="utf-8")
    assert "synthetic" in html.lower() and "myopi" in html.lower()
    timings = json.loads((toy_demo / "timings.json").read_text())
    assert all(seconds > 0 for seconds in timings["steps"].values())


@pytest.mark.slow
def test_rerun_skips_finished_steps(toy_demo: Path, toy_scale, capsys: pytest.CaptureFixture[str]) -> None:
    before = (toy_demo / "report.html").stat().st_mtime_ns
    run_demo(toy_demo, toy_scale, workers=1)
    timings = json.loads((toy_demo / "timings.json").read_text())
    assert all(seconds == 0 for seconds in timings["steps"].values())
    assert "skipped (already done)" in capsys.readouterr().out
    assert (toy_demo / "report.html").stat().st_mtime_ns == before


def test_flags_build_the_demo_config() -> None:
    assert cli.SUBCOMMANDS["demo"] == "probes.demo:COMMAND"
    parser = cli.build_parser("demo")
    config = getattr(parser.parse_args(["demo", "--fast", "--no-synthetic", "--workers", "2"]), cli.CONFIG_DEST)
    assert (config.fast, config.synthetic, config.workers, config.out) == (True, False, 2, "reports/demo")
    assert getattr(parser.parse_args(["demo"]), cli.CONFIG_DEST).synthetic is True


def test_refuses_a_folder_of_other_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("mine\n")
    assert cli.main(["demo", "--fast", "--out", str(tmp_path), "--no-synthetic"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty" in err


def test_refuses_another_scale_in_the_same_folder(tmp_path: Path, toy_scale) -> None:
    from probes.demo import prepare
    from probes.errors import UsageError

    prepare(Layout(tmp_path), toy_scale, seed=0)
    with pytest.raises(UsageError, match="other settings; differs in: seed"):
        prepare(Layout(tmp_path), toy_scale, seed=1)


def test_bad_workers_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--fast", "--out", str(tmp_path / "x"), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err


@pytest.mark.slow
def test_a_removed_step_is_redone_and_the_report_follows(toy_demo: Path, toy_scale) -> None:
    import shutil

    shutil.rmtree(Layout(toy_demo).eval("bigram"))
    run_demo(toy_demo, toy_scale, workers=1)
    steps = json.loads((toy_demo / "timings.json").read_text())["steps"]
    assert steps["eval bigram"] > 0 and steps["report"] > 0
    assert all(seconds == 0 for name, seconds in steps.items() if name not in ("eval bigram", "report"))
