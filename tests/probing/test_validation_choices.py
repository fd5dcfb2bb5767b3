"""Smoothing and choices made on the train-side validation documents, end to end and for the softmax probe."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from probes.probing.baselines import ADD_K_GRID, choose_add_k
from probes.probing.linear import SoftmaxConfig, fit_softmax
from probes.probing.run import run_probes
from probes.probing.targets import validation_split
from tests.probing.test_baselines import ZIPF_VOCAB, zipf_probs
from tests.probing.test_probe_run import small_config, write_cycle_corpus


def test_probe_run_records_validation_scores_and_smoothing(tiny_gpt2_dir, tmp_path) -> None:
    cycle_corpus = write_cycle_corpus(tmp_path / "docs")
    out = tmp_path / "run"
    results = run_probes(small_config(tiny_gpt2_dir, cycle_corpus, out, tau="1,2", layers="0,2"))
    fitted = results[results["probe"].isin(["softmax", "lstsq", "unigram", "skip_bigram"])]
    assert fitted["val_value"].notna().all()
    assert ((fitted["val_value"] >= 0) & (fitted["val_value"] <= 1) | (fitted["metric"] == "ce_nats")).all()
    smoothed = results[results["probe"].isin(["softmax", "unigram", "skip_bigram"])]
    assert smoothed["smoothing_k"].isin(ADD_K_GRID).all()
    record = json.loads((out / "provenance.json").read_text())["smoothing"]
    assert "validation" in record["method"]
    heads = record["pretrained"]
    assert set(heads) == {"unigram", "softmax OTHER, layer 0", "softmax OTHER, layer 2"}
    assert set(heads["unigram"]) == {"tau=1 token", "tau=1 model", "tau=2 token", "tau=2 model"}


def test_softmax_other_share_is_smoothed_on_validation() -> None:
    """Uninformative inputs, Zipf labels over a 50k vocabulary and 16 classes + OTHER: the probe's CE is the
    unigram's, so it must land near the entropy; add-one inside OTHER (the old spread) misses by far more."""
    rng = np.random.default_rng(0)
    probs = zipf_probs()
    entropy = float(-(probs * np.log(probs)).sum())
    n = 100_000
    X = torch.from_numpy(rng.normal(size=(n, 4)).astype(np.float32))
    Y = torch.from_numpy(rng.choice(ZIPF_VOCAB, n, p=probs))[:, None]
    groups = np.repeat(np.arange(500), 200)
    config = SoftmaxConfig(top_k=16, max_epochs=2, patience=1)
    probe = fit_softmax(X, Y, groups, ZIPF_VOCAB, config)
    fit, val = validation_split(groups, config.val_fraction, config.seed)
    counts = np.bincount(Y[fit, 0].numpy(), minlength=ZIPF_VOCAB).astype(float)
    outside = np.ones(ZIPF_VOCAB, dtype=bool)
    outside[probe.classes[0].numpy()] = False
    assert probe.other_k == [choose_add_k(counts, Y[val, 0].numpy(), outside)]
    X_test = torch.from_numpy(rng.normal(size=(100_000, 4)).astype(np.float32))
    Y_test = torch.from_numpy(rng.choice(ZIPF_VOCAB, 100_000, p=probs))[:, None]
    ce = probe.score(X_test, Y_test)[0].ce.mean()
    assert ce - entropy < 0.15, (ce, entropy, probe.other_k)
    add_one = fit_softmax(X, Y, groups, ZIPF_VOCAB, SoftmaxConfig(top_k=16, max_epochs=2, patience=1, other_k=1.0))
    assert add_one.score(X_test, Y_test)[0].ce.mean() - entropy > 0.2
    assert probe.other_k[0] < 1.0 == pytest.approx(add_one.other_k[0])
