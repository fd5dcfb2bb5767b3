"""The probe job end to end on tiny random models: planted signals, schema, resume, bad input."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from probes.cli import main
from probes.probing.run import ProbeConfig, run_probes
from probes.results import RESULT_COLUMNS
from tests.test_cli_errors import assert_one_line_error, run_cli

# Each is a single GPT-2 token with its leading space, so the text is a sequence of exactly these tokens.
CYCLE = (
    "king queen castle garden night moon river soldier war peace people storm house water fire "
    "stone tree bird horse ship sword crown bread wine gold iron salt glass rope door"
).split()


def write_cycle_corpus(folder: Path, n_docs: int = 40, words: int = 120, seed: int = 0) -> Path:
    """Documents in which the word after `w` is always the next word of a fixed cycle."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(n_docs):
        start = rng.randrange(len(CYCLE))
        text = " ".join(CYCLE[(start + step) % len(CYCLE)] for step in range(words))
        (folder / f"doc-{index:03d}.txt").write_text(" " + text, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def cycle_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cycle_corpus(tmp_path_factory.mktemp("cycle") / "docs")


def small_config(model: Path, data: Path, out: Path, **overrides) -> ProbeConfig:
    settings = dict(
        model=str(model),
        data=str(data),
        out=str(out),
        tau="1..5",
        seq_len=16,
        max_tokens=16 * 120,
        device="cpu",
        n_boot=200,
        progress=False,
        dtype="float32",
    )
    settings.update(overrides)
    return ProbeConfig(**settings)


def test_planted_signal_is_recovered_at_layer_zero(tiny_gpt2_dir, cycle_corpus, tmp_path) -> None:
    from probes.corpus.tokenizer import gpt2_tokenizer

    tokenizer = gpt2_tokenizer()
    assert all(len(tokenizer(" " + word)["input_ids"]) == 1 for word in CYCLE)
    results = run_probes(small_config(tiny_gpt2_dir, cycle_corpus, tmp_path / "run", layers="0", probe=["softmax"]))
    top1 = results[(results["metric"] == "top1") & (results["target"] == "token")]
    softmax = top1[top1["probe"] == "softmax"].set_index("tau")["value"]
    unigram = top1[top1["probe"] == "unigram"].set_index("tau")["value"]
    skip_bigram = top1[top1["probe"] == "skip_bigram"].set_index("tau")["value"]
    assert list(softmax.index) == [1, 2, 3, 4, 5]
    assert (softmax >= 0.95).all(), softmax
    assert (unigram <= 0.15).all(), unigram
    assert (skip_bigram >= 0.99).all(), skip_bigram  # the count model knows the cycle too


def test_results_schema_and_intervals(tiny_gpt2_dir, cycle_corpus, tmp_path) -> None:
    out = tmp_path / "run"
    results = run_probes(small_config(tiny_gpt2_dir, cycle_corpus, out, tau="1,3", control="random"))
    for name in ("results.csv", "results.parquet", "provenance.json", "run.json"):
        assert (out / name).is_file()
    assert list(results.columns[: len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert set(results["kind"]) == {"pretrained", "random-init"}
    assert set(results["probe"]) == {"softmax", "lstsq", "unigram", "skip_bigram", "model-output"}
    assert set(results["target"]) == {"token", "model"}
    assert set(results["metric"]) == {"top1", "top5", "ce_nats"}
    assert ((results["ci_low"] <= results["value"] + 1e-12) & (results["value"] <= results["ci_high"] + 1e-12)).all()
    probes = results[results["probe"].isin(["softmax", "lstsq"])]
    assert set(probes["layer"]) == {0, 1, 2}
    # Every test window contributes exactly T - τ pairs: no pair crosses a window edge.
    for tau, group in probes.groupby("tau"):
        n_test_windows = group["n_test"].iloc[0] // (16 - tau)
        assert (group["n_test"] == n_test_windows * (16 - tau)).all()
    on_disk = pd.read_csv(out / "results.csv")
    assert len(on_disk) == len(results)
    # lstsq at the last layer for τ = 1 maps h_t to itself: it reproduces the model's own prediction.
    own = results[
        (results["probe"] == "lstsq")
        & (results["layer"] == 2)
        & (results["tau"] == 1)
        & (results["target"] == "model")
        & (results["metric"] == "top1")
        & (results["kind"] == "pretrained")
    ]
    assert own["value"].iloc[0] > 0.99


def test_cli_prints_table_and_rerun_is_identical(tiny_gpt2_dir, cycle_corpus, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    args = [
        "--model",
        str(tiny_gpt2_dir),
        "--data",
        str(cycle_corpus),
        "--tau",
        "1..2",
        "--seq-len",
        "16",
        "--max-tokens",
        "1280",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--n-boot",
        "200",
        "--layers",
        "0,2",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "best baseline" in printed and "layer 2" in printed
    first = (out / "results.csv").read_bytes()
    assert main(args) == 0
    assert (out / "results.csv").read_bytes() == first


def test_kill_dash_nine_during_probing_resumes(tiny_gpt2_dir, cycle_corpus, tmp_path) -> None:
    base = [
        sys.executable,
        "-m",
        "probes.cli",
        "probe",
        "--model",
        str(tiny_gpt2_dir),
        "--data",
        str(cycle_corpus),
        "--tau",
        "1..4",
        "--seq-len",
        "16",
        "--max-tokens",
        "1920",
        "--device",
        "cpu",
        "--n-boot",
        "200",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    reference = tmp_path / "reference"
    subprocess.run([*base, "--out", str(reference)], check=True, env=env, capture_output=True)
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [*base, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 180
    while time.time() < deadline and not (killed / "fits" / "layer-000.parquet").exists():
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "results.csv").exists(), "the run finished before it could be interrupted"
    subprocess.run([*base, "--out", str(killed)], check=True, env=env, capture_output=True)
    assert (killed / "results.csv").read_bytes() == (reference / "results.csv").read_bytes()


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--tau", "0..3"], "tau must satisfy"),
        (["--tau", "16"], "tau must satisfy"),
        (["--tau", "5..1"], "empty"),
        (["--tau", "one"], "cannot read tau"),
        (["--layers", "0..7"], "layer 3 does not exist"),
        (["--probe", "mlp"], "unknown probe"),
        (["--target", "future"], "unknown target"),
        (["--control", "shuffled"], "unknown control"),
        (["--max-tokens", "16"], "at least 2 documents"),
        (["--n-boot", "10"], "--n-boot"),
    ],
)
def test_bad_probe_input(extra, fragment, tiny_gpt2_dir, cycle_corpus, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    args = [
        "probe",
        "--model",
        str(tiny_gpt2_dir),
        "--data",
        str(cycle_corpus),
        "--seq-len",
        "16",
        "--max-tokens",
        "640",
        "--out",
        str(out),
        "--device",
        "cpu",
        *extra,
    ]
    # later flags override earlier ones, so `extra` may replace --max-tokens
    code, err = run_cli(args, capsys)
    assert_one_line_error(code, err, fragment)
    assert not out.exists()


def test_equivalent_tau_specs_name_one_run(tiny_gpt2_dir, cycle_corpus, tmp_path, capsys) -> None:
    """τ is parsed once into a sorted tuple: `1..3` and `3,1,2` are one run, and the second resumes it."""
    out = tmp_path / "run"
    args = ["probe", "--model", str(tiny_gpt2_dir), "--data", str(cycle_corpus), "--seq-len", "16"]
    args += ["--max-tokens", "640", "--layers", "0..1", "--probe", "softmax", "--n-boot", "200", "--device", "cpu"]
    args += ["--out", str(out)]
    code, err = run_cli([*args, "--tau", "1..3"], capsys)
    assert code == 0, err
    first = pd.read_csv(out / "results.csv")
    finished = {path.name: path.stat().st_mtime_ns for path in (out / "fits").iterdir()}
    code, err = run_cli([*args, "--tau", "3,1,2", "--layers", "1,0"], capsys)
    assert code == 0, err
    assert json.loads((out / "run.json").read_text())["identity"]["tau"] == [1, 2, 3]
    assert {path.name: path.stat().st_mtime_ns for path in (out / "fits").iterdir()} == finished  # reused
    pd.testing.assert_frame_equal(first, pd.read_csv(out / "results.csv"))


def test_tau_spec_is_canonical_in_the_python_api(tmp_path) -> None:
    config = ProbeConfig(model="m", out=str(tmp_path), tau="5,1..3", layers="2, 0..1")
    assert config.tau == (1, 2, 3, 5)
    assert config.layers == "0,1,2"
    assert config.identity() == ProbeConfig(model="m", out="elsewhere", tau=(3, 2, 1, 5), layers="0..2").identity()
