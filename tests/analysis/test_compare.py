"""analysis/compare.py (and the statistics of analysis/comparison.py) on small result folders with known answers,
shaped like the real stage outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.compare import CompareConfig, main, run_compare, subjects_from_args
from analysis.comparison import BREADCRUMBS_BELOW, PRECACHING_ABOVE, Z, compare, resampled_means
from analysis.report import ReportConfig, report_from_paths
from probes import cli
from probes.results import RESULT_COLUMNS, write_results
from probes.stats import bootstrap_weights
from tests.test_cli_errors import assert_one_line_error, run_cli

ROOT = Path(__file__).resolve().parents[2]  # the checkout
N_BOOT = 200
T = 8  # positions per window (a window of T + 1 tokens)


# ------------------------------------------------------------------------------------------ run folders


def _provenance(stage: str, model: str, data_hash: str, seed: int = 0, **extra) -> dict:
    args = {"data_hash": data_hash, "seed": seed, "test_fraction": 0.2, "seq_len": T + 1, "taus": "1..3"}
    if stage == "eval":
        args = {"model": model, "seed": None, "resolved": {"seed": seed, "test_fraction": 0.2, "seq_len": T + 1}}
    return {
        "stage": stage,
        "version": "0.1.0",
        "args": args,
        "model": {"name": model, "weights_hash": f"w-{model}"},
        "data": {"spec": "docs", "data_hash": data_hash, "n_windows": 40, "n_test_docs": 10},
    } | extra


def write_eval_run(
    folder: Path, losses: np.ndarray, docs: np.ndarray, kind: str, data_hash: str = "d0", seed: int = 0
) -> Path:
    """An eval folder as `probe-future eval` writes it: results, per_window.parquet, provenance.json."""
    folder.mkdir(parents=True)
    n_windows = len(losses)
    per_window = pd.DataFrame(
        {
            "window": np.arange(n_windows),
            "doc_index": docs,
            "doc_name": [f"doc-{d}.txt" for d in docs],
            "start": np.arange(n_windows) * (T + 1),
            "ce_mean": losses.mean(axis=1),
        }
    )
    per_window = pd.concat([per_window, pd.DataFrame(losses, columns=[f"ce_p{p}" for p in range(T)])], axis=1)
    per_window.to_parquet(folder / "per_window.parquet", index=False)
    base = {"model": f"m-{kind}", "kind": kind, "tau": 1, "target": "token", "probe": "model", "metric": "ce_nats"}
    rows = [base | {"value": losses.mean(), "ci_low": losses.mean(), "ci_high": losses.mean(), "position": None}]
    rows += [base | {"value": v, "ci_low": v, "ci_high": v, "position": p} for p, v in enumerate(losses.mean(axis=0))]
    write_results(pd.DataFrame(rows), folder)
    (folder / "provenance.json").write_text(json.dumps(_provenance("eval", f"m-{kind}", data_hash, seed)))
    return folder


def probe_rows(kind: str, cells: dict[tuple, tuple[float, float, float]]) -> list[dict]:
    """cells: (layer, tau, target, probe, metric) -> (value, ci_low, ci_high)."""
    rows = []
    for (layer, tau, target, probe, metric), (value, low, high) in cells.items():
        rows.append(
            {"model": f"m-{kind}", "kind": kind, "layer": layer, "tau": tau, "target": target, "probe": probe}
            | {"metric": metric, "value": value, "ci_low": low, "ci_high": high, "n_train": 100, "n_test": 50}
            | {"seed": 0, "n_test_docs": 10}
        )
    return rows


def write_probe_run(folder: Path, rows: list[dict], data_hash: str = "d0", taus: str = "1..3", seed: int = 0) -> Path:
    folder.mkdir(parents=True)
    write_results(pd.DataFrame(rows), folder)
    provenance = _provenance("probe", rows[0]["model"], data_hash, seed)
    provenance["args"]["taus"] = taus
    (folder / "provenance.json").write_text(json.dumps(provenance))
    (folder / "run.json").write_text(json.dumps(provenance["args"]))
    return folder


def baseline_cells(tau: int) -> dict[tuple, tuple[float, float, float]]:
    return {
        (None, tau, "token", "skip_bigram", "top1"): (0.1, 0.1, 0.1),
        (None, tau, "token", "unigram", "top1"): (0.05, 0.05, 0.05),
        (None, tau, "token", "skip_bigram", "ce_nats"): (4.0, 4.0, 4.0),
        (None, tau, "token", "unigram", "ce_nats"): (5.0, 5.0, 5.0),
    }


def vanilla_probe_cells() -> dict[tuple, tuple[float, float, float]]:
    cells = {}
    for tau in (1, 2, 3):
        cells |= baseline_cells(tau)
        cells[(1, tau, "token", "softmax", "top1")] = (0.5, 0.4, 0.6)
        cells[(1, tau, "token", "softmax", "ce_nats")] = (3.0, 2.9, 3.1)
        cells[(0, tau, "token", "softmax", "top1")] = (0.2, 0.15, 0.25)
    return cells


def myopic_probe_cells() -> dict[tuple, tuple[float, float, float]]:
    cells = {}
    for tau in (1, 2, 3):
        cells |= baseline_cells(tau)
        cells[(1, tau, "token", "softmax", "top1")] = (0.3, 0.2, 0.4)
        cells[(1, tau, "token", "softmax", "ce_nats")] = (3.5, 3.4, 3.6)
        cells[(0, tau, "token", "softmax", "top1")] = (0.2, 0.15, 0.25)
    return cells


def doc_losses(n_docs: int = 12, per_doc: int = 3, seed: int = 0, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Losses with a large document-level component (what pairing removes) and their document ids."""
    rng = np.random.default_rng(seed)
    docs = np.repeat(np.arange(n_docs), per_doc)
    level = rng.normal(4.0, spread, n_docs)[docs]
    return level[:, None] + rng.normal(0, 0.3, (len(docs), T)), docs


def rows_of(out: Path, metric: str) -> pd.DataFrame:
    table = pd.read_parquet(out / "comparison.parquet")
    return table[table["metric"] == metric]


# ------------------------------------------------------------------------------------------- known answers


def test_gap_share_and_by_position_have_exact_answers(tmp_path: Path) -> None:
    losses, docs = doc_losses()
    shift = 0.1 + 0.01 * np.arange(T)  # the myopic model is 0.1 + 0.01 p nats worse at position p
    vanilla = write_eval_run(tmp_path / "v", losses, docs, "vanilla")
    myopic = write_eval_run(tmp_path / "m", losses + shift, docs, "myopic")
    bigram = write_eval_run(tmp_path / "b", losses + 2 * shift, docs, "bigram")
    comparison = run_compare(str(vanilla), str(myopic), str(bigram), tmp_path / "out", n_boot=N_BOOT)
    gap = rows_of(tmp_path / "out", "gap_ce_nats")
    overall = gap[gap["position"].isna()].iloc[0]
    assert overall["value"] == pytest.approx(shift.mean())
    assert overall["ci_low"] == pytest.approx(shift.mean()) and overall["ci_high"] == pytest.approx(shift.mean())
    by_position = gap.dropna(subset=["position"]).sort_values("position")
    assert list(by_position["position"]) == list(range(T))
    np.testing.assert_allclose(by_position["value"], shift)
    np.testing.assert_allclose(by_position["ci_low"], shift)
    np.testing.assert_allclose(by_position["ci_high"], shift)
    share = rows_of(tmp_path / "out", "precaching_share").iloc[0]
    assert share[["value", "ci_low", "ci_high"]].astype(float).tolist() == pytest.approx([0.5, 0.5, 0.5])
    assert comparison.verdict.label == "pre-caching-dominated"
    assert str(PRECACHING_ABOVE) in comparison.verdict.thresholds
    table = pd.read_csv(tmp_path / "out" / "comparison.csv")
    assert list(table.columns[: len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert (tmp_path / "out" / "report.html").is_file()
    assert json.loads((tmp_path / "out" / "provenance.json").read_text())["verdict"]["label"] == "pre-caching-dominated"


def test_gap_interval_is_paired_over_documents(tmp_path: Path) -> None:
    losses, docs = doc_losses(spread=2.0)
    rng = np.random.default_rng(1)
    myopic_losses = losses + 0.1 + rng.normal(0, 0.05, losses.shape)
    vanilla = write_eval_run(tmp_path / "v", losses, docs, "vanilla")
    myopic = write_eval_run(tmp_path / "m", myopic_losses, docs, "myopic")
    comparison = run_compare(str(vanilla), str(myopic), None, tmp_path / "out", n_boot=N_BOOT, seed=3)
    # Brute force: the same document draws for both models, each resample a ratio of document sums.
    weights = bootstrap_weights(len(np.unique(docs)), N_BOOT, 3).astype(float)
    per_window = (myopic_losses - losses).mean(axis=1)
    sums = np.bincount(docs, weights=per_window)
    counts = np.bincount(docs).astype(float)
    expected = np.quantile((weights @ sums) / (weights @ counts), [0.025, 0.975])
    assert comparison.gap is not None
    assert [comparison.gap.low, comparison.gap.high] == pytest.approx(list(expected))
    # Unpaired, the document-level spread (sd 2 nats) would swamp a 0.1 gap; paired it does not.
    assert comparison.gap.high - comparison.gap.low < 0.1
    assert comparison.gap.low > 0
    assert comparison.verdict.label == "inconclusive"  # no bigram run: no scale for the gap
    means = resampled_means(np.stack([losses.mean(1), myopic_losses.mean(1)], 1), docs, N_BOOT, 3)
    assert np.quantile(means[:, 1] - means[:, 0], 0.025) == pytest.approx(expected[0])


def test_identical_runs_give_zero_intervals(tmp_path: Path) -> None:
    losses, docs = doc_losses()
    write_eval_run(tmp_path / "v" / "eval", losses, docs, "vanilla")
    write_probe_run(tmp_path / "v" / "probe", probe_rows("vanilla", vanilla_probe_cells()))
    bigram = write_eval_run(tmp_path / "b", losses + 1.0, docs, "bigram")
    # The statistics of one run against itself (the command refuses it: tests/test_bad_inputs.py).
    comparison = compare(subjects_from_args(str(tmp_path / "v"), str(tmp_path / "v"), str(bigram)), n_boot=N_BOOT)
    write_results(comparison.table, tmp_path / "out", stem="comparison")
    gap = rows_of(tmp_path / "out", "gap_ce_nats")
    assert (gap[["value", "ci_low", "ci_high"]].to_numpy(float) == 0.0).all()
    share = rows_of(tmp_path / "out", "precaching_share").iloc[0]
    assert (share["value"], share["ci_low"], share["ci_high"]) == (0.0, 0.0, 0.0)
    deltas = rows_of(tmp_path / "out", "delta_top1")
    assert (deltas["value"] == 0).all()
    assert (deltas["ci_low"] < 0).all() and (deltas["ci_high"] > 0).all()  # around 0: softmax cells have width
    assert comparison.verdict.label == "breadcrumbs-dominated"
    assert any("identical weights" in note for note in _limitations(comparison))


def _limitations(comparison) -> list[str]:
    from analysis.report import limitations

    return limitations(list(comparison.subjects.values()), comparison)


def test_probe_deltas_and_lacking_share(tmp_path: Path) -> None:
    vanilla = write_probe_run(tmp_path / "v", probe_rows("vanilla", vanilla_probe_cells()))
    myopic = write_probe_run(tmp_path / "m", probe_rows("myopic", myopic_probe_cells()))
    comparison = run_compare(str(vanilla), str(myopic), None, tmp_path / "out", n_boot=1000)
    deltas = rows_of(tmp_path / "out", "delta_top1")
    cell = deltas[(deltas["layer"] == 1) & (deltas["tau"] == 2)].iloc[0]
    half = Z * np.sqrt(2) * (0.1 / Z)  # two independent intervals of half-width 0.1
    assert cell["value"] == pytest.approx(0.2)
    assert [cell["ci_low"], cell["ci_high"]] == pytest.approx([0.2 - half, 0.2 + half])
    ce = rows_of(tmp_path / "out", "delta_ce_nats")
    assert ce[ce["layer"] == 1]["value"].to_numpy() == pytest.approx([-0.5] * 3)  # vanilla − myopic
    lacking = rows_of(tmp_path / "out", "lacking_share_top1")
    assert sorted(lacking["tau"].unique()) == [2, 3]  # τ ≥ 2 only
    at_layer1 = lacking[lacking["layer"] == 1]
    assert at_layer1["value"].to_numpy() == pytest.approx([0.5, 0.5])  # (0.5 − 0.3) / (0.5 − 0.1)
    assert (at_layer1["ci_low"] < 0.5).all() and (at_layer1["ci_high"] > 0.5).all()
    assert lacking[lacking["layer"] == 0]["value"].to_numpy() == pytest.approx([0.0, 0.0])
    ce_lacking = rows_of(tmp_path / "out", "lacking_share_ce_nats")
    assert ce_lacking[ce_lacking["layer"] == 1]["value"].to_numpy() == pytest.approx([0.5, 0.5])  # 0.5 / (4 − 3)
    # Headline: smallest τ ≥ 2, the layer best for vanilla (1); its interval straddles 0.5.
    assert comparison.lacking is not None and int(comparison.lacking["layer"]) == 1
    assert comparison.verdict.label == "inconclusive"


@pytest.mark.parametrize(
    ("shift", "label"),
    [(0.6, "pre-caching-dominated"), (0.35, "mixed"), (0.1, "breadcrumbs-dominated")],
)
def test_verdict_thresholds(shift: float, label: str, tmp_path: Path) -> None:
    losses, docs = doc_losses()
    vanilla = write_eval_run(tmp_path / "v", losses, docs, "vanilla")
    myopic = write_eval_run(tmp_path / "m", losses + shift, docs, "myopic")
    bigram = write_eval_run(tmp_path / "b", losses + 1.0, docs, "bigram")
    comparison = run_compare(str(vanilla), str(myopic), str(bigram), tmp_path / "out", n_boot=N_BOOT)
    assert comparison.verdict.label == label
    assert comparison.share is not None and comparison.share.value == pytest.approx(shift)
    assert f"{BREADCRUMBS_BELOW:g}" in comparison.verdict.thresholds


def test_straddling_interval_is_inconclusive(tmp_path: Path) -> None:
    losses, docs = doc_losses()
    rng = np.random.default_rng(5)
    # The myopic model is 0.5 nats worse on some documents and no worse on others: share ≈ 0.25 ± a lot.
    per_doc = rng.choice([0.0, 0.5], size=docs.max() + 1)[docs]
    vanilla = write_eval_run(tmp_path / "v", losses, docs, "vanilla")
    myopic = write_eval_run(tmp_path / "m", losses + per_doc[:, None], docs, "myopic")
    bigram = write_eval_run(tmp_path / "b", losses + 1.0, docs, "bigram")
    comparison = run_compare(str(vanilla), str(myopic), str(bigram), tmp_path / "out", n_boot=N_BOOT)
    assert comparison.share is not None and comparison.share.low < BREADCRUMBS_BELOW < comparison.share.high
    assert comparison.verdict.label == "inconclusive"
    assert "straddles" in comparison.verdict.reason


# ---------------------------------------------------------------------------------------------- refusals


@pytest.fixture()
def pair(tmp_path: Path) -> tuple[Path, Path]:
    losses, docs = doc_losses()
    vanilla = write_eval_run(tmp_path / "v" / "eval", losses, docs, "vanilla")
    write_eval_run(tmp_path / "m" / "eval", losses + 0.1, docs, "myopic")
    return vanilla.parent, tmp_path / "m"


def _break(kind: str, vanilla: Path, myopic: Path, tmp_path: Path) -> list[str]:
    """Arguments for `compare` with one thing wrong; may change the folders on disk."""
    out = str(tmp_path / "out")
    losses, docs = doc_losses()
    if kind == "other-data":
        other = write_eval_run(tmp_path / "o", losses, docs, "myopic", data_hash="d1")
        return ["--vanilla", str(vanilla), "--myopic", str(other), "--out", out]
    if kind == "other-split":
        other = write_eval_run(tmp_path / "o", losses, docs, "myopic", seed=1)
        return ["--vanilla", str(vanilla), "--myopic", str(other), "--out", out]
    if kind == "other-windows":
        other = write_eval_run(tmp_path / "o", losses[:-3], docs[:-3], "myopic")
        return ["--vanilla", str(vanilla), "--myopic", str(other), "--out", out]
    if kind == "other-taus":
        write_probe_run(vanilla / "probe", probe_rows("vanilla", vanilla_probe_cells()))
        cells = {key: value for key, value in myopic_probe_cells().items() if key[1] != 3}
        write_probe_run(myopic / "probe", probe_rows("myopic", cells), taus="1..2")
        return ["--vanilla", str(vanilla), "--myopic", str(myopic), "--out", out]
    if kind == "missing":
        return ["--vanilla", str(tmp_path / "nowhere"), "--myopic", str(myopic), "--out", out]
    if kind == "empty":
        (tmp_path / "empty").mkdir()
        return ["--vanilla", str(tmp_path / "empty"), "--myopic", str(myopic), "--out", out]
    if kind == "unfinished":
        (tmp_path / "unfinished").mkdir()
        (tmp_path / "unfinished" / "run.json").write_text("{}")
        return ["--vanilla", str(tmp_path / "unfinished"), "--myopic", str(myopic), "--out", out]
    if kind == "half-written":
        (myopic / "eval" / "provenance.json").unlink()
    if kind == "truncated":
        path = myopic / "eval" / "results.parquet"
        path.write_bytes(path.read_bytes()[:100])
    if kind == "no-per-window":
        (myopic / "eval" / "per_window.parquet").unlink()
    if kind == "no-metric":
        path = myopic / "eval" / "per_window.parquet"
        frame = pd.read_parquet(path)
        frame[[c for c in frame.columns if not c.startswith("ce_p")]].to_parquet(path)
    if kind == "probe-without-top1":
        write_probe_run(vanilla / "probe", probe_rows("vanilla", vanilla_probe_cells()))
        cells = {key: value for key, value in myopic_probe_cells().items() if key[4] != "top1"}
        write_probe_run(myopic / "probe", probe_rows("myopic", cells))
    if kind == "out-is-file":
        (tmp_path / "file").write_text("x")
        return ["--vanilla", str(vanilla), "--myopic", str(myopic), "--out", str(tmp_path / "file")]
    if kind == "out-under-file":
        (tmp_path / "file").write_text("x")
        return ["--vanilla", str(vanilla), "--myopic", str(myopic), "--out", str(tmp_path / "file" / "sub")]
    if kind == "n-boot":
        return ["--vanilla", str(vanilla), "--myopic", str(myopic), "--out", out, "--n-boot", "10"]
    if kind == "bigram-without-eval":
        write_probe_run(tmp_path / "b", probe_rows("bigram", vanilla_probe_cells()))
        return ["--vanilla", str(vanilla), "--myopic", str(myopic), "--bigram", str(tmp_path / "b"), "--out", out]
    return ["--vanilla", str(vanilla), "--myopic", str(myopic), "--out", out]


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("other-data", "different data"),
        ("other-split", "different splits"),
        ("other-windows", "different held-out windows"),
        ("other-taus", "different tau sets"),
        ("missing", "does not exist"),
        ("empty", "holds no run"),
        ("unfinished", "unfinished run"),
        ("half-written", "half-written"),
        ("truncated", "cannot read"),
        ("no-per-window", "without per_window.parquet"),
        ("no-metric", "no per-position losses"),
        ("probe-without-top1", "no top1 probe rows"),
        ("out-is-file", "is not a folder"),
        ("out-under-file", "cannot create --out"),
        ("n-boot", "--n-boot"),
        ("bigram-without-eval", "has no eval run"),
    ],
)
def test_bad_input_is_one_line(kind: str, fragment: str, pair, tmp_path: Path, capsys) -> None:
    args = _break(kind, *pair, tmp_path)
    code, err = run_cli(args, capsys, main)
    assert_one_line_error(code, err, fragment)
    if not kind.startswith("out-"):
        assert not (tmp_path / "out").exists()


def test_probe_future_compare_and_refusal(pair, tmp_path: Path, capsys) -> None:
    vanilla, myopic = pair
    assert cli.main(["compare", "--vanilla", str(vanilla), "--myopic", str(myopic), "--out", str(tmp_path / "ok")]) == 0
    assert "verdict: inconclusive" in capsys.readouterr().out
    args = ["compare", "--vanilla", str(vanilla), "--myopic", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]
    code, err = run_cli(args, capsys, cli.main)
    assert_one_line_error(code, err, "does not exist")


def test_both_analysis_subcommands_are_declared() -> None:
    """`compare` and `report` are listed once in the table, each with flags built from its config dataclass."""
    assert cli.SUBCOMMANDS["compare"] == "analysis.compare:COMMAND"
    assert cli.SUBCOMMANDS["report"] == "analysis.report:COMMAND"
    args = ["compare", "--vanilla", "v", "--myopic", "m", "--synthetic", "s", "--n-boot", "300"]
    config = cli.build_parser("compare").parse_args(args).config
    assert config == CompareConfig(vanilla="v", myopic="m", synthetic="s", n_boot=300)
    config = cli.build_parser("report").parse_args(["report", "a", "b", "--out", "o"]).config
    assert config == ReportConfig(runs=["a", "b"], out="o")


def test_script_runs_from_the_checkout(pair, tmp_path: Path) -> None:
    vanilla, myopic = pair
    env = {**os.environ, "PYTHONPATH": ""}
    args = [sys.executable, "analysis/compare.py", "--vanilla", str(vanilla), "--myopic", str(myopic)]
    done = subprocess.run([*args, "--out", str(tmp_path / "out")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "verdict:" in done.stdout and (tmp_path / "out" / "comparison.csv").is_file()
    missing = [*args[:3], str(tmp_path / "nowhere"), *args[4:]]
    refused = subprocess.run(missing, cwd=ROOT, env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    # From any folder, by its path: the script needs no sys.path of its own (the package is installed).
    script = [sys.executable, str(ROOT / "analysis" / "compare.py"), "--help"]
    helped = subprocess.run(script, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert helped.returncode == 0 and "--synthetic" in helped.stdout, helped.stderr


def write_synthetic_run(folder: Path) -> Path:
    """A synthetic-task folder: probe R² by layer and look-back for a vanilla and a myopic model."""
    rows = [
        {"model": f"syn-{kind}", "kind": kind, "layer": 1, "tau": None, "target": "sin", "probe": "ridge"}
        | {"metric": "r2", "value": value, "ci_low": value - 0.01, "ci_high": value + 0.01, "lookback": lookback}
        for kind, scale in (("vanilla", 1.0), ("myopic", 0.0))
        for lookback in range(4)
        for value in [scale * float(np.exp(-lookback / 3))]
    ]
    write_results(pd.DataFrame(rows), folder)
    (folder / "provenance.json").write_text(json.dumps({"stage": "synthetic", "data": {"freq": 3.0}}))
    return folder


def test_synthetic_task_is_reported_beside_the_comparison(pair, tmp_path: Path, capsys) -> None:
    vanilla, myopic = pair
    synthetic = write_synthetic_run(tmp_path / "synthetic")
    args = ["--vanilla", str(vanilla), "--myopic", str(myopic), "--synthetic", str(synthetic)]
    assert main([*args, "--out", str(tmp_path / "out"), "--n-boot", str(N_BOOT)]) == 0
    assert "verdict:" in capsys.readouterr().out
    assert "Synthetic task" in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    recorded = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert recorded["inputs"]["synthetic"] == str(synthetic)
    assert str(synthetic) in [path for stages in recorded["input_runs"].values() for path in stages.values()]
    again = report_from_paths([str(tmp_path / "out")], tmp_path / "again", n_boot=N_BOOT)  # as `report` does
    assert "Synthetic task" in again.read_text(encoding="utf-8")
    # Without --synthetic, the same comparison and no synthetic section.
    assert main([*args[:4], "--out", str(tmp_path / "plain"), "--n-boot", str(N_BOOT)]) == 0
    assert "Synthetic task" not in (tmp_path / "plain" / "report.html").read_text(encoding="utf-8")
    same = pd.read_parquet(tmp_path / "plain" / "comparison.parquet")
    pd.testing.assert_frame_equal(same, pd.read_parquet(tmp_path / "out" / "comparison.parquet"))
    # A folder of another stage is refused, in one line, before anything is written.
    code, err = run_cli([*args[:5], str(vanilla), "--out", str(tmp_path / "x")], capsys, main)
    assert_one_line_error(code, err, "not a synthetic-task run")
    assert not (tmp_path / "x").exists()


def write_per_doc(folder: Path, kind: str, cells: dict[tuple, tuple[float, float, float]], docs, rng) -> dict:
    """per_doc.parquet as the probe job writes it: per-document sums and counts for every cell."""
    records, truth = [], {}
    for (layer, tau, target, probe, metric), (value, _, _) in cells.items():
        counts = rng.integers(5, 15, len(docs)).astype(float)
        noise = rng.normal(0, 0.05, len(docs))
        sums = (value + noise) * counts
        truth[(layer, tau, target, probe, metric)] = (sums, counts)
        for doc, total, count in zip(docs, sums, counts, strict=True):
            records.append(
                {"kind": kind, "layer": layer, "tau": tau, "target": target, "probe": probe, "metric": metric}
                | {"doc": doc, "sum": total, "count": count}
            )
    frame = pd.DataFrame(records)
    frame["layer"] = frame["layer"].astype("Int64")
    frame["tau"] = frame["tau"].astype("Int64")
    frame.to_parquet(folder / "per_doc.parquet", index=False)
    return truth


def test_probe_deltas_are_paired_when_per_document_sums_exist(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    docs = [f"doc-{i:02d}" for i in range(15)]  # sorted, as the comparison orders documents
    vanilla = write_probe_run(tmp_path / "v", probe_rows("vanilla", vanilla_probe_cells()))
    myopic = write_probe_run(tmp_path / "m", probe_rows("myopic", myopic_probe_cells()))
    truth_v = write_per_doc(vanilla, "vanilla", vanilla_probe_cells(), docs, rng)
    truth_m = write_per_doc(myopic, "myopic", myopic_probe_cells(), docs, rng)
    run_compare(str(vanilla), str(myopic), None, tmp_path / "out", n_boot=N_BOOT, seed=4)
    deltas = rows_of(tmp_path / "out", "delta_top1")
    cell = deltas[(deltas["layer"] == 1) & (deltas["tau"] == 2)].iloc[0]
    assert cell["method"].startswith("paired")
    # Brute force: the same document draws for both models, ratio-of-sums means per resample.
    weights = bootstrap_weights(len(docs), N_BOOT, 4).astype(float)
    key = (1, 2, "token", "softmax", "top1")
    (sv, cv), (sm, cm) = truth_v[key], truth_m[key]
    expected = []
    for row in weights:
        expected.append((row @ sv) / (row @ cv) - (row @ sm) / (row @ cm))
    low, high = np.quantile(expected, [0.025, 0.975])
    assert [cell["ci_low"], cell["ci_high"]] == pytest.approx([low, high])
    # Paired intervals here are far tighter than the independent ones from the ±0.1 run intervals.
    assert cell["ci_high"] - cell["ci_low"] < 0.1
    lacking = rows_of(tmp_path / "out", "lacking_share_top1")
    assert lacking["method"].str.startswith("paired").all()
