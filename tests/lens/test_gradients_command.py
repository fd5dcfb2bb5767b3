"""`probe-future gradients` end to end on tiny models, bad input as one line, and `train --lens-every`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from probes.runs import find_runs
from tests.conftest import write_documents
from tests.test_cli_errors import assert_one_line_error, run_cli
from tests.training.test_train import read_metrics, train_args, write_config, write_markov_corpus

SEQ = 16


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_documents(tmp_path_factory.mktemp("lens-corpus") / "docs", n_docs=12, words_per_doc=120)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Path:
    """A random 2-block GPT-2 with a 300-token BPE fitted on the corpus, saved as a model folder."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from probes.corpus import load_documents
    from probes.training.lm import train_bpe_tokenizer

    folder = tmp_path_factory.mktemp("tiny-lm")
    tokenizer = train_bpe_tokenizer(load_documents(str(corpus)), 300)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=SEQ, n_embd=32, n_layer=2, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def lens_args(model: Path | str, data: Path | str, out: Path, *extra: str) -> list[str]:
    return [
        "gradients",
        *("--model", str(model), "--data", str(data), "--out", str(out)),
        *("--seq-len", str(SEQ), "--max-tokens", "1024", "--batch-size", "8", "--device", "cpu", "--n-boot", "200"),
        *extra,
    ]


def test_a_language_model_gets_every_component_and_both_estimates(tiny_lm, corpus, tmp_path, capsys) -> None:
    out = tmp_path / "lens"
    code = run_cli(lens_args(tiny_lm, corpus, out), capsys)[0]
    assert code == 0
    results = pd.read_parquet(out / "results.parquet")
    assert set(results["probe"]) == {"gradient"}
    assert list(dict.fromkeys(results["component"])) == [
        "embed", "block.0.attn", "block.0.mlp", "block.1.attn", "block.1.mlp", "unembed", "all",
    ]  # fmt: skip
    metrics = set(results["metric"])
    for name in ("grad_norm_vanilla", "grad_norm_myopic", "grad_norm_strict", "grad_norm_precaching"):
        assert name in metrics and f"expected_{name}" in metrics
    for name in ("precaching_share", "cos_myopic_precaching", "cos_direct_precaching"):
        assert name in metrics and f"expected_{name}" in metrics
    everything = results[results["component"] == "all"].set_index("metric")
    share = everything.loc["precaching_share"]
    assert 0 < share["value"] < 1 and np.isnan(share["ci_low"])  # pooled: what these windows give, no interval
    norm = everything.loc["expected_grad_norm_vanilla"]
    assert norm["ci_low"] <= norm["value"] <= norm["ci_high"]
    assert everything.loc["grad_norm_vanilla", "n_tokens"] == everything.loc["grad_norm_vanilla", "n_test"] * SEQ
    (products,) = (out / "parts").glob("*.npz")
    assert set(np.load(products)) == {"totals", "diagonal", "weights", "batch_ids", "cross"}
    windows = load_file(out / "windows.safetensors")
    assert windows["tokens"].shape == (64, SEQ) and (windows["batch"] >= 0).all()
    # Batches hold whole documents.
    pairs = set(zip(windows["doc_index"].tolist(), windows["batch"].tolist(), strict=True))
    assert len({doc for doc, _ in pairs}) == len(pairs)
    (run,) = find_runs(out)
    assert run.stage == "gradient" and run.kind == "pretrained"
    # Rerunning the same command resumes the finished run and writes the same numbers.
    code, err = run_cli(lens_args(tiny_lm, corpus, out), capsys)
    assert code == 0, err
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), results)


def test_a_synthetic_task_model_is_measured_on_fresh_sequences(tmp_path, capsys) -> None:
    from probes.synthetic import SyntheticConfig, run_synthetic

    model = tmp_path / "syn"
    config = SyntheticConfig(out=str(model), preset="cpu", steps=3, batch_size=4, d_model=16, eval_sequences=16)
    run_synthetic(config)
    out = tmp_path / "lens"
    args = ["gradients", "--model", str(model), "--out", str(out), "--max-tokens", "2048", "--batch-size", "8"]
    code, err = run_cli([*args, "--n-boot", "200", "--device", "cpu"], capsys)
    assert code == 0, err
    results = pd.read_parquet(out / "results.parquet")
    assert set(results["target"]) == {"y"} and set(results["kind"]) == {"vanilla"}
    assert results["n_batches"].iloc[0] == 4
    assert json.loads((out / "provenance.json").read_text())["task"] == "synthetic"


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        ("mistral", "unsupported attention"),
        ("revision", "not in the local Hugging Face cache"),
        ("empty", "has no .txt files"),
        ("local-revision", "--revision names checkpoints of a hub model"),
    ],
)
def test_bad_input_is_one_line_and_makes_no_folder(make, fragment, tiny_lm, corpus, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    if make == "mistral":
        from transformers import MistralConfig, MistralForCausalLM

        model = tmp_path / "mistral"
        MistralForCausalLM(
            MistralConfig(
                vocab_size=50257, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
            )
        ).save_pretrained(model)  # fmt: skip
        args = lens_args(model, corpus, out)
    elif make == "revision":
        args = lens_args("EleutherAI/pythia-14m", corpus, out, "--revision", "step1000")
    elif make == "empty":
        (tmp_path / "empty").mkdir()
        args = lens_args(tiny_lm, tmp_path / "empty", out)
    else:
        args = lens_args(tiny_lm, corpus, out, "--revision", "step1000")
    code, err = run_cli(args, capsys)
    assert_one_line_error(code, err, fragment)
    assert not out.exists()


def test_train_records_the_lens_without_changing_the_run(tmp_path, capsys) -> None:
    """--lens-every N adds the numbers every N steps; the loss curve (dropout on) is the one without it."""
    data = write_markov_corpus(tmp_path / "docs")
    config = write_config(tmp_path, dropout=True)
    reference, measured = tmp_path / "reference", tmp_path / "measured"
    base = ["--mode", "myopic", "--steps", "6", "--eval-every", "0"]
    code, err = run_cli([*train_args(reference, data, config), *base], capsys)
    assert code == 0, err
    code, err = run_cli(
        [*train_args(measured, data, config), *base, "--lens-every", "3", "--lens-windows", "32"], capsys
    )
    assert code == 0, err
    plain, lensed = read_metrics(reference), read_metrics(measured)
    assert [r["train_loss"] for r in plain] == [r["train_loss"] for r in lensed]
    recorded = [r for r in lensed if "lens_precaching_share" in r]
    assert [r["step"] for r in recorded] == [3, 6]
    for record in recorded:
        assert 0 < record["lens_precaching_share"] < 1
        assert record["lens_batches"] >= 2
        assert "lens_expected_cos_myopic_precaching" in record
    assert np.isfinite(recorded[-1]["lens_grad_norm_vanilla"])


def test_the_report_shows_the_gradient_allocation(tiny_lm, corpus, tmp_path, capsys) -> None:
    from analysis.report import report_from_paths

    out = tmp_path / "lens"
    assert run_cli(lens_args(tiny_lm, corpus, out, "--revision"), capsys)[0] == 2  # --revision needs a value
    assert run_cli(lens_args(tiny_lm, corpus, out), capsys)[0] == 0
    html = report_from_paths([str(out)], tmp_path / "report").read_text(encoding="utf-8")
    assert 'id="gradients"' in html and "Gradient allocation" in html
    assert "Gradient lens, pretrained" in html  # the evidence line beside the verdict
    assert "trade-off cosine" in html
