"""probe-future eval: held-out cross-entropy overall and by position, per-window losses, bigram forward."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from probes.corpus import load_documents, make_windows, split_by_document
from probes.errors import UsageError
from probes.evaluate import EvalConfig, resolve_eval
from probes.models import load_plain_model
from probes.results import RESULT_COLUMNS
from probes.training.losses import next_token_losses
from probes.training.myopic import bigram
from tests.training.test_train import (  # noqa: F401 (one_thread: an autouse fixture)
    SEQ,
    error_lines,
    one_thread,
    run_cli,
    train_args,
    write_config,
    write_markov_corpus,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_markov_corpus(tmp_path_factory.mktemp("eval-corpus") / "docs")


@pytest.fixture(scope="module")
def checkpoints(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from probes.cli import main

    folder = tmp_path_factory.mktemp("eval-runs")
    config = write_config(folder)
    runs = {}
    for mode in ("vanilla", "bigram"):
        runs[mode] = folder / mode
        assert main([*train_args(runs[mode], corpus, config), "--mode", mode, "--seed", "1"]) == 0
    return runs


def eval_args(model: Path, out: Path, *extra: str) -> list[str]:
    return ["eval", "--model", str(model), "--out", str(out), "--device", "cpu", "--n-boot", "200", *extra]


def test_results_by_position_in_the_shared_schema(checkpoints, tmp_path, capsys) -> None:
    out = tmp_path / "eval"
    code, err = run_cli(eval_args(checkpoints["vanilla"], out), capsys)
    assert code == 0, err
    results = pd.read_parquet(out / "results.parquet")
    assert list(results.columns[: len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert {"position", "forward"} <= set(results.columns)
    assert set(results["metric"]) == {"ce_nats"} and set(results["probe"]) == {"model"}
    assert set(results["target"]) == {"token"} and set(results["tau"]) == {1}
    assert results["layer"].isna().all() and set(results["kind"]) == {"vanilla"}
    overall = results[results["position"].isna()]
    by_position = results[results["position"].notna()]
    assert len(overall) == 1
    assert list(by_position["position"]) == list(range(SEQ - 1))
    assert (results["ci_low"] <= results["value"]).all() and (results["value"] <= results["ci_high"]).all()
    assert (results["ci_low"] < results["ci_high"]).all()
    assert overall["value"].iloc[0] == pytest.approx(by_position["value"].mean())
    assert pd.read_csv(out / "results.csv").shape == results.shape

    per_window = pd.read_parquet(out / "per_window.parquet")
    assert len(per_window) == overall["n_test"].iloc[0]
    assert {"window", "doc_index", "doc_name", "start", "ce_mean", "ce_p0", f"ce_p{SEQ - 2}"} <= set(per_window)
    assert per_window["ce_mean"].mean() == pytest.approx(overall["value"].iloc[0])
    assert per_window[f"ce_p{SEQ - 2}"].mean() == pytest.approx(by_position["value"].iloc[-1])

    provenance = json.loads((out / "provenance.json").read_text())
    training = json.loads((checkpoints["vanilla"] / "training.json").read_text())
    assert provenance["model"]["weights_hash"] == training["weights_hash"]
    assert provenance["data"]["data_hash"]


def test_scores_only_the_documents_held_out_in_training(checkpoints, corpus, tmp_path, capsys) -> None:
    out = tmp_path / "eval"
    assert run_cli(eval_args(checkpoints["vanilla"], out), capsys)[0] == 0
    loaded = load_plain_model(str(checkpoints["vanilla"]), "cpu")
    windows = make_windows(load_documents(str(corpus)), loaded.tokenizer, SEQ)
    train, test = split_by_document(windows, 0.2, seed=1)  # the checkpoint was trained with --seed 1
    train_docs = {windows.doc_names[i] for i in windows.doc_index[train]}
    scored = set(pd.read_parquet(out / "per_window.parquet")["doc_name"])
    assert scored and not scored & train_docs
    assert scored == {windows.doc_names[i] for i in windows.doc_index[test]}


def test_bigram_checkpoint_is_scored_with_the_bigram_forward(checkpoints, corpus, tmp_path, capsys) -> None:
    auto, vanilla = tmp_path / "auto", tmp_path / "vanilla"
    assert run_cli(eval_args(checkpoints["bigram"], auto), capsys)[0] == 0
    assert run_cli(eval_args(checkpoints["bigram"], vanilla, "--forward", "vanilla"), capsys)[0] == 0
    first = pd.read_parquet(auto / "results.parquet")
    second = pd.read_parquet(vanilla / "results.parquet")
    assert set(first["forward"]) == {"bigram"} and set(second["forward"]) == {"vanilla"}
    assert set(first["kind"]) == {"bigram"}

    per_window = pd.read_parquet(auto / "per_window.parquet")
    loaded = load_plain_model(str(checkpoints["bigram"]), "cpu")
    windows = make_windows(load_documents(str(corpus)), loaded.tokenizer, SEQ, max_tokens=20_000, seed=1)
    tokens = torch.from_numpy(windows.tokens[per_window["window"].to_numpy()])
    with torch.no_grad(), bigram(loaded.hf_model):
        expected = next_token_losses(loaded.hf_model(input_ids=tokens).logits, tokens).double().numpy()
    assert np.allclose(per_window[[f"ce_p{p}" for p in range(SEQ - 1)]].to_numpy(), expected, atol=1e-5)
    # Position 0 sees only its own token either way; later positions differ once the past is hidden.
    assert first["value"].iloc[0] != pytest.approx(second["value"].iloc[0])


def test_pretrained_model_needs_only_data(tiny_gpt2_dir, corpus, tmp_path, capsys) -> None:
    out = tmp_path / "eval"
    code, err = run_cli(eval_args(tiny_gpt2_dir, out, "--data", str(corpus), "--seq-len", "16"), capsys)
    assert code == 0, err
    results = pd.read_parquet(out / "results.parquet")
    assert set(results["kind"]) == {"pretrained"} and set(results["forward"]) == {"vanilla"}
    assert len(results) == 16


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--forward", "myopic-ish"], "argument --forward: invalid choice: 'myopic-ish'"),
        (["--seq-len", "64"], "fewer than --seq-len"),
        (["--n-boot", "10"], "--n-boot must be at least 200"),
        (["--data", "/no/such/corpus"], "data not found"),
    ],
)
def test_bad_input_is_one_line(extra, fragment, checkpoints, tmp_path, capsys) -> None:
    code, err = run_cli(eval_args(checkpoints["vanilla"], tmp_path / "eval", *extra), capsys)
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert fragment in lines[0], lines[0]


def test_python_api_checks_the_forward_mode(tmp_path) -> None:
    with pytest.raises(UsageError, match="unknown --forward"):
        resolve_eval(EvalConfig(model=str(tmp_path), out=str(tmp_path / "eval"), forward="myopic-ish"))


def test_missing_model_is_one_line(tmp_path, capsys) -> None:
    code, err = run_cli(eval_args(tmp_path / "nowhere", tmp_path / "eval"), capsys)
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and "does not exist" in lines[0], err


# ------------------------------------------------------------------ intervals over documents, every window scored

ALIKE_WORDS = ("king", "queen", "castle", "garden", "night", "moon", "river", "soldier", "war", "peace")


def write_alike_corpus(folder: Path, n_docs: int = 60, words: int = 400) -> Path:
    """Documents each made of one repeated word pair: every window of a document is the same token sequence
    (so has the same losses), while documents differ. 24,000 tokens: more than the old 20,000-token default."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(n_docs):
        first, second = ALIKE_WORDS[index % 10], ALIKE_WORDS[(index // 10 + index + 1) % 10]
        (folder / f"doc-{index:03d}.txt").write_text(" " + " ".join([first, second] * (words // 2)), encoding="utf-8")
    return folder


def test_intervals_resample_documents_and_every_window_is_scored(tiny_gpt2_dir, tmp_path, capsys) -> None:
    from probes.corpus.tokenizer import gpt2_tokenizer
    from probes.stats import bootstrap_mean_ci, bootstrap_weights

    corpus = write_alike_corpus(tmp_path / "alike")
    out = tmp_path / "eval"
    code, err = run_cli(eval_args(tiny_gpt2_dir, out, "--data", str(corpus), "--seq-len", "16"), capsys)
    assert code == 0, err
    # Every held-out window, not a 20,000-token sample of the corpus.
    windows = make_windows(load_documents(str(corpus)), gpt2_tokenizer(), 16)
    _, test = split_by_document(windows, 0.2, seed=0)
    per_window = pd.read_parquet(out / "per_window.parquet")
    assert sorted(per_window["window"]) == sorted(test.tolist())

    results = pd.read_parquet(out / "results.parquet")
    overall = results[results["position"].isna()].iloc[0]
    docs = per_window["doc_index"].to_numpy()
    losses = per_window["ce_mean"].to_numpy()
    # Brute force: resample documents (sorted ids), each resample a ratio of document sums over window counts.
    unique, index = np.unique(docs, return_inverse=True)
    weights = bootstrap_weights(len(unique), 200, 0).astype(float)
    sums, counts = np.bincount(index, weights=losses), np.bincount(index).astype(float)
    expected = np.quantile((weights @ sums) / (weights @ counts), [0.025, 0.975])
    assert [overall["ci_low"], overall["ci_high"]] == pytest.approx(list(expected))
    assert overall["n_test_docs"] == len(unique)
    # Windows of a document are alike, so a window-level interval would be far too narrow.
    _, low, high = bootstrap_mean_ci(losses, np.arange(len(losses)), n_boot=200, seed=0)
    assert overall["ci_high"] - overall["ci_low"] > 2.5 * (high - low)


def test_eval_says_what_it_scored(tiny_gpt2_dir, tmp_path, capsys) -> None:
    from probes.cli import main

    corpus = write_alike_corpus(tmp_path / "alike", n_docs=20, words=64)
    base = eval_args(tiny_gpt2_dir, tmp_path / "eval", "--data", str(corpus), "--seq-len", "16")
    assert main(base) == 0
    assert "scored every held-out window" in capsys.readouterr().out
    assert main([*base, "--max-tokens", "640", "--overwrite"]) == 0  # other settings: replaces the run
    assert "scored only the held-out part of a --max-tokens 640 sample" in capsys.readouterr().out
