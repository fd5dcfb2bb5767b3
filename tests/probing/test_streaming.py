"""Streaming probe fits: rows read from the store on demand give exactly the fits of the layer held in memory.

Tolerance: none. Every streaming fit reads the same float32 values and runs the same arithmetic in the same order
(the least-squares map's 8,192-pair chunks, the softmax probe's seeded minibatches, 4,096-row chunks for the
standardisation and the validation losses), so weights and scores are bitwise equal. The only change against the
pre-streaming code is the softmax standardisation (chunked float64 sums instead of one `mean`/`std` over the
matrix): `test_chunked_standardisation_matches_whole_matrix_statistics` bounds that difference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from probes.activations import ActivationStore, StoreSettings, extract
from probes.corpus import load_documents, make_windows
from probes.models import load_model
from probes.probing import linear
from probes.probing.linear import SoftmaxConfig, fit_lstsq, fit_softmax, lstsq_grid
from probes.probing.rowviews import LabelView, RowView
from probes.probing.run import final_decoder, run_probes
from probes.probing.streaming import lstsq_grid_rows, lstsq_sums, pair_rows
from probes.probing.targets import head_labels, row_labels
from tests.probing.test_probe_run import small_config


@pytest.fixture(scope="module")
def model(tiny_gpt2_dir: Path):
    return load_model(str(tiny_gpt2_dir), device="cpu")


@pytest.fixture(scope="module")
def store(model, text_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> ActivationStore:
    windows = make_windows(load_documents(str(text_folder)), model.tokenizer, 16, max_tokens=16 * 60, seed=0)
    settings = StoreSettings(layers=(0, 1, 2), dtype="float16", batch_size=4, shard_windows=8)
    return extract(model, windows, tmp_path_factory.mktemp("store"), settings, progress=False)


@pytest.mark.parametrize("in_memory", [False, True])
def test_rows_equal_the_loaded_layer(store: ActivationStore, in_memory: bool) -> None:
    flat = store.layer(1).reshape(-1, store.identity["d_model"])
    rng = np.random.default_rng(0)
    with store.rows(1, in_memory=in_memory) as rows:
        assert len(rows) == len(flat) and rows.in_memory == in_memory
        for index in (rng.permutation(len(flat))[:300], np.arange(5, 200), np.array([len(flat) - 1, 0, 0])):
            assert torch.equal(rows.gather(index), flat[torch.from_numpy(index)])
        assert torch.equal(torch.cat([block for _, block in rows.blocks(37)]), flat)
    shards = torch.cat([block for _, block in store.iter_layer(1)])
    assert torch.equal(shards, store.layer(1))


def test_row_labels_equal_the_label_matrix(store: ActivationStore) -> None:
    tokens = torch.from_numpy(store.windows.tokens)
    pred = store.model_pred()
    labels, heads = head_labels(tokens, pred, (1, 3, 15))
    rows = torch.from_numpy(np.random.default_rng(1).permutation(tokens.numel()))
    assert torch.equal(row_labels(tokens, pred, heads, rows), labels[rows])


def _views(store: ActivationStore, rows, layer: int = 1):
    reader = store.rows(layer)
    tokens, pred = torch.from_numpy(store.windows.tokens), store.model_pred()
    heads = [(tau, target) for tau in (1, 2) for target in ("token", "model")]
    labels = LabelView(lambda r: row_labels(tokens, pred, heads, r), rows, len(heads))
    return reader, RowView(reader, rows), labels, heads


def test_streaming_softmax_equals_in_memory(store: ActivationStore, model) -> None:
    seq_len = store.windows.seq_len
    rows = np.arange(0, len(store.windows) * seq_len, 1)[: 40 * seq_len]
    groups = store.windows.doc_index.repeat(seq_len)[rows]
    reader, X_view, Y_view, heads = _views(store, rows)
    X = store.layer(1).reshape(-1, store.identity["d_model"])[torch.from_numpy(rows)]
    Y = head_labels(torch.from_numpy(store.windows.tokens), store.model_pred(), (1, 2))[0][torch.from_numpy(rows)]
    config = SoftmaxConfig(top_k=8, max_epochs=3, batch_size=32)
    in_memory = fit_softmax(X, Y, groups, model.vocab_size, config)
    streamed = fit_softmax(X_view, Y_view, groups, model.vocab_size, config)  # type: ignore[arg-type]
    for name in ("weight_flat", "bias", "mean", "std", "classes", "log_other"):
        assert torch.equal(getattr(in_memory, name), getattr(streamed, name)), name
    assert in_memory.best_epoch == streamed.best_epoch
    for a, b in zip(in_memory.score(X, Y), streamed.score(RowView(reader, rows), Y), strict=True):  # type: ignore[arg-type]
        assert np.array_equal(a.top1, b.top1) and np.array_equal(a.ce, b.ce)
    reader.close()


def test_streaming_lstsq_equals_in_memory(store: ActivationStore, model) -> None:
    seq_len, d = store.windows.seq_len, store.identity["d_model"]
    train, test = np.arange(0, 45), np.arange(45, len(store.windows))
    tokens, pred = torch.from_numpy(store.windows.tokens), store.model_pred()
    H, final = store.layer(1), store.layer(2)
    with store.rows(1) as layer_rows, store.rows(2) as final_rows:
        X = RowView(layer_rows, pair_rows(train, seq_len, 2))
        R = RowView(final_rows, pair_rows(train, seq_len, 2) + 1)
        a = fit_lstsq(X, R, chunk_rows=50)  # type: ignore[arg-type]
        pairs, targets = H[train][:, : seq_len - 2], final[train][:, 1 : seq_len - 1]
        b = fit_lstsq(pairs.reshape(-1, d), targets.reshape(-1, d), chunk_rows=50)
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
        decode = final_decoder(model)
        streamed = lstsq_grid_rows(layer_rows, final_rows, train, test, tokens, pred, (1, 3), decode)
    in_memory = lstsq_grid(H[train], final[train], H[test], tokens[test], pred[test], (1, 3), decode)
    assert streamed.keys() == in_memory.keys()
    for key, scores in in_memory.items():
        assert np.array_equal(scores.top1, streamed[key].top1) and np.array_equal(scores.ce, streamed[key].ce), key


def test_summed_moments_give_the_direct_fit(store: ActivationStore) -> None:
    """Maps from summed moments (two sets of windows apart, then added; every τ's Gram matrix from one pass) equal
    `fit_lstsq` on each τ's pairs of all those windows, to float64 rounding."""
    seq_len, d = store.windows.seq_len, store.identity["d_model"]
    first, second, taus = np.arange(0, 20), np.arange(20, 45), (1, 3, 4)
    with store.rows(1) as layer_rows, store.rows(2) as final_rows:
        sums_first = lstsq_sums(layer_rows, final_rows, first, seq_len, taus)
        sums_second = lstsq_sums(layer_rows, final_rows, second, seq_len, taus)
    H, final = store.layer(1)[:45], store.layer(2)[:45]
    for tau in taus:
        summed = sums_first[tau] + sums_second[tau]
        assert summed.n == 45 * (seq_len - tau)
        pairs = H[:, : seq_len - tau].reshape(-1, d)
        targets = final[:, tau - 1 : seq_len - 1].reshape(-1, d)
        for ridge in (None, 0.0):
            direct, from_sums = fit_lstsq(pairs, targets, ridge=ridge), summed.solve(ridge)
            scale = float(direct.weight.abs().max())
            torch.testing.assert_close(from_sums.weight, direct.weight, rtol=1e-9, atol=1e-9 * scale)
            torch.testing.assert_close(from_sums.bias, direct.bias, rtol=1e-9, atol=1e-9 * scale)
            assert from_sums.ridge == pytest.approx(direct.ridge, rel=1e-12)


def test_probe_job_from_disk_equals_in_memory(tiny_gpt2_dir: Path, text_folder: Path, tmp_path: Path) -> None:
    """`--memory 0` reads every row from disk; the default holds each layer: the tables are identical."""
    common = dict(tau="1..3", layers="0,2", max_tokens=16 * 80)
    held = run_probes(small_config(tiny_gpt2_dir, text_folder, tmp_path / "held", **common))
    streamed = run_probes(small_config(tiny_gpt2_dir, text_folder, tmp_path / "streamed", memory=0, **common))
    pd.testing.assert_frame_equal(held, streamed)


def test_chunked_standardisation_matches_whole_matrix_statistics(store: ActivationStore) -> None:
    """The chunked float64 mean/std agree with torch's whole-matrix ones to float64 rounding (1e-12 relative)."""
    X = store.layer(1).reshape(-1, store.identity["d_model"])
    index = torch.arange(len(X))
    mean, std = linear._moments(X, index, chunk_rows=100)
    torch.testing.assert_close(mean, X.double().mean(dim=0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(std, X.double().std(dim=0), rtol=1e-12, atol=1e-12)
