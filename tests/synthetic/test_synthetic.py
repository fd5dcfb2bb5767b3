"""The synthetic pre-caching task: generator, ridge probes, training through the shared loop, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from probes import cli
from probes.runs import load_run
from probes.synthetic import SyntheticConfig, run_synthetic_compare
from probes.synthetic.model import load_model_folder
from probes.synthetic.probe import fit_ridge, probe_targets, r2_scores
from probes.synthetic.task import TaskSpec, batch_of, make_batch, window_sums

TOY = ["--steps", "6", "--batch-size", "4", "--d-model", "8", "--n-head", "2", "--seq-len", "16", "--window", "3"]
TOY_KNOBS = {"steps": 6, "batch_size": 4, "d_model": 8, "n_head": 2, "seq_len": 16, "window": 3, "eval_sequences": 32}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def synthetic_cli():
    """`probe-future ARGS` in-process: its exit status (argparse's own errors and --help exit instead of returning)."""
    assert cli.SUBCOMMANDS["synthetic"] == "probes.synthetic.run:COMMAND"

    def run(args: list[str]) -> int:
        try:
            return cli.main(args)
        except SystemExit as stop:
            return int(stop.code or 0)

    return run


# ---------------------------------------------------------------------------------------------- generator


def test_window_sums_by_hand() -> None:
    x = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]])
    s = np.sin(2.0 * x[0])
    shifted = window_sums(x, freq=2.0, window=2, shift=1)[0]
    np.testing.assert_allclose(shifted, [0.0, s[0], s[0] + s[1], s[1] + s[2], s[2] + s[3]])
    own = window_sums(x, freq=2.0, window=2, shift=0)[0]
    np.testing.assert_allclose(own, [s[0], s[0] + s[1], s[1] + s[2], s[2] + s[3], s[3] + s[4]])
    late = window_sums(x, freq=2.0, window=1, shift=3)[0]
    np.testing.assert_allclose(late, [0.0, 0.0, 0.0, s[0], s[1]])


def test_batch_matches_the_formula_with_z() -> None:
    spec = TaskSpec(freq=3.0, window=4, p=0.5, shift=1, seq_len=12)
    batch = make_batch(spec, 5, np.random.default_rng(0))
    assert 0 < batch.z.mean() < 1
    for seq in range(5):
        for n in range(12):
            total = sum(np.sin(3.0 * batch.x[seq, n - i]) for i in range(1, 5) if n - i >= 0)
            expected = total if batch.z[seq, n] else batch.x[seq, n]
            assert batch.y[seq, n] == pytest.approx(expected)
    assert batch.inputs().shape == (5, 12, 2)


def test_batches_are_fresh_and_reproducible() -> None:
    spec = TaskSpec(freq=3.0, window=4, p=1.0, shift=1, seq_len=8)
    np.testing.assert_array_equal(batch_of(spec, 2, 0, 0, 7).x, batch_of(spec, 2, 0, 0, 7).x)
    assert not np.allclose(batch_of(spec, 2, 0, 0, 7).x, batch_of(spec, 2, 0, 0, 8).x)
    assert not np.allclose(batch_of(spec, 2, 0, 0, 7).x, batch_of(spec, 2, 0, 1, 7).x)


# ---------------------------------------------------------------------------------------------- probes


def test_ridge_and_r2_match_scikit_learn() -> None:
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score

    spec = TaskSpec(freq=1.0, window=3, p=1.0, shift=1, seq_len=10)
    rng = np.random.default_rng(1)
    train, test = make_batch(spec, 40, rng), make_batch(spec, 30, rng)

    def features(batch):  # informative, noisy features of the current and previous x
        previous = np.pad(batch.x, ((0, 0), (1, 0)))[:, :-1]
        base = np.stack([np.sin(batch.x), batch.x, np.sin(previous)], axis=-1)
        return base + 0.3 * rng.standard_normal(base.shape)

    train_x, test_x = features(train), features(test)
    train_t, test_t = probe_targets(train, spec.freq, max_lookback=4), probe_targets(test, spec.freq, max_lookback=4)
    weights = fit_ridge(train_x, train_t, lam=1e-4)
    point, low, high = r2_scores(test_x, test_t, weights, n_boot=200, seed=0)
    for j, start in enumerate(train_t.start):
        reference = Ridge(alpha=1e-4).fit(train_x[:, start:].reshape(-1, 3), train_t.values[:, start:, j].ravel())
        np.testing.assert_allclose(weights[j, :3], reference.coef_, rtol=1e-6, atol=1e-9)
        assert weights[j, 3] == pytest.approx(reference.intercept_, abs=1e-9)
        predicted = reference.predict(test_x[:, start:].reshape(-1, 3))
        assert point[j] == pytest.approx(r2_score(test_t.values[:, start:, j].ravel(), predicted), abs=1e-9)
        assert low[j] <= point[j] <= high[j]
    assert point[0] > 0.5 and point[1] > 0.5  # sin(x_n) and sin(x_{n-1}) are in the features


# ---------------------------------------------------------------------------------------------- end to end


def test_compare_runs_resumes_and_loads(tmp_path: Path) -> None:
    config = SyntheticConfig(out=str(tmp_path / "run"), compare=True, progress=False, workers=1, **TOY_KNOBS)
    frame = run_synthetic_compare(config)
    assert set(frame["kind"]) == {"vanilla", "myopic", "random-init", "baseline"}
    r2 = frame[frame["metric"] == "r2"]
    assert set(r2["layer"]) == {0, 1, 2} and set(r2["lookback"].dropna()) == set(range(16))
    assert set(frame[frame["metric"] == "huber"]["probe"]) == {"model", "predict-0"}
    assert frame["value"].notna().all() and (frame["ci_low"] <= frame["ci_high"]).all()
    for mode in ("vanilla", "myopic"):
        folder = tmp_path / "run" / mode
        assert {"config.json", "model.safetensors", "training.json", "metrics.jsonl"} <= {
            p.name for p in folder.iterdir()
        }
        assert len(folder.joinpath("metrics.jsonl").read_text().splitlines()) >= 1
        load_model_folder(folder)
    stamp = (tmp_path / "run" / "vanilla" / "training.json").stat().st_mtime_ns
    again = run_synthetic_compare(config)
    assert (tmp_path / "run" / "vanilla" / "training.json").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(frame, again)

    run = load_run(tmp_path / "run")
    assert run.stage == "synthetic" and run.kind == "vanilla"


def test_cli_single_mode_and_side_by_side_compare(synthetic_cli, tmp_path: Path, capsys) -> None:
    assert synthetic_cli(["synthetic", "--mode", "strict-myopic", *TOY, "--out", str(tmp_path / "one")]) == 0
    assert "strict-myopic: test Huber" in capsys.readouterr().out
    results = pd.read_parquet(tmp_path / "one" / "results.parquet")
    assert set(results["kind"]) == {"strict-myopic", "random-init", "baseline"}
    assert json.loads((tmp_path / "one" / "provenance.json").read_text())["stage"] == "synthetic"

    assert synthetic_cli(["synthetic", "--compare", *TOY, "--out", str(tmp_path / "pair")]) == 0
    assert "myopic: test Huber" in capsys.readouterr().out


def test_cli_summary_with_p_below_one_names_the_extra_baseline(synthetic_cli, tmp_path: Path, capsys) -> None:
    assert synthetic_cli(["synthetic", *TOY, "--p", "0.5", "--out", str(tmp_path / "half")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("predict-0 baseline Huber loss: ")
    assert [line.split(":")[0] for line in lines[1:4]] == ["vanilla", "random-init", "predict-x-if-z0"]
    assert "last-layer ridge R² for y" in lines[1] and "R²" not in lines[3]


def test_other_settings_in_a_finished_folder_are_refused(synthetic_cli, tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "one")
    assert synthetic_cli(["synthetic", *TOY, "--out", out]) == 0
    capsys.readouterr()
    assert synthetic_cli(["synthetic", *TOY, "--freq", "5", "--out", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "freq" in err[0]


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--p", "1.5"], "--p must lie in [0, 1]"),
        (["--p", "-0.1"], "--p must lie in [0, 1]"),
        (["--window", "0"], "--window"),
        (["--window", "16"], "--window"),
        (["--freq", "0"], "--freq must be a positive"),
        (["--freq", "-3"], "--freq must be a positive"),
        (["--preset", "gpu"], "argument --preset: invalid choice: 'gpu'"),
        (["--mode", "bigram"], "argument --mode: invalid choice: 'bigram'"),
        (["--d-model", "9"], "not divisible"),
    ],
)
def test_bad_input_is_one_line(flags, fragment, synthetic_cli, tmp_path: Path, capsys) -> None:
    assert synthetic_cli(["synthetic", *TOY, *flags, "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0]
    assert not (tmp_path / "bad").exists()


def test_help_names_each_presets_value(synthetic_cli, capsys) -> None:
    assert synthetic_cli(["synthetic", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "hidden width (cpu 64, paper 128)" in text
    assert "optimizer steps (cpu 6000, paper 58593)" in text
    assert "sequence length T (every preset 64)" in text
    assert "attention heads (cpu 4, paper 2)" in text
