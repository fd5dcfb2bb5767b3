import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, Ridge

from probes.errors import UsageError
from probes.probing.baselines import fit_unigram
from probes.probing.linear import (
    SoftmaxConfig,
    fit_lstsq,
    fit_softmax,
    lstsq_grid,
    lstsq_pairs,
    lstsq_scores,
)
from probes.probing.targets import head_labels, pair_groups


def closed_form_ridge(X: torch.Tensor, Y: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: W = (XcᵀXc + λI)⁻¹XcᵀYc, b = mean(Y) - mean(X) W, in float64."""
    X, Y = X.double(), Y.double()
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    W = torch.linalg.inv(Xc.T @ Xc + lam * torch.eye(X.shape[1], dtype=torch.float64)) @ Xc.T @ Yc
    return W, Y.mean(0) - X.mean(0) @ W


def _permutation_corpus(
    n_windows: int, seq_len: int, vocab: int, d: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Windows where token t+1 = perm(token t); hidden state = embedding of the current token + noise."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(vocab, generator=gen)
    tokens = torch.empty(n_windows, seq_len, dtype=torch.int64)
    tokens[:, 0] = torch.randint(0, vocab, (n_windows,), generator=gen)
    for t in range(1, seq_len):
        tokens[:, t] = perm[tokens[:, t - 1]]
    embed = torch.randn(vocab, d, generator=gen)
    H = embed[tokens] + 0.3 * torch.randn(n_windows, seq_len, d, generator=gen)
    return tokens, H, perm


def test_planted_future_token_signal_is_found_for_every_tau() -> None:
    vocab, seq_len, d = 30, 16, 48
    tokens, H, _ = _permutation_corpus(400, seq_len, vocab, d, seed=0)
    model_pred = torch.roll(tokens, -1, dims=1)  # a perfect model: its prediction at s is token s+1
    taus = range(1, 6)
    Y, heads = head_labels(tokens, model_pred, taus)
    rows = H.reshape(-1, d)
    doc = torch.arange(400)
    train = doc.repeat_interleave(seq_len) < 300
    probe = fit_softmax(rows[train], Y[train], doc.repeat_interleave(seq_len)[train], vocab, SoftmaxConfig())
    scores = probe.score(rows[~train], Y[~train])
    current = tokens.reshape(-1)
    for (tau, target), s in zip(heads, scores, strict=True):
        assert s.top1.mean() >= 0.95, (tau, target, s.top1.mean())
        head = heads.index((tau, target))
        unigram = fit_unigram(Y[train, head], vocab)
        test_rows = ~train & (Y[:, head] >= 0)
        assert unigram.score(current[test_rows], Y[test_rows, head]).top1.mean() <= 0.2
        assert len(s) == int(test_rows.sum()) == len(pair_groups(doc[300:], seq_len, tau))


def _blobs(n: int, d: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(99).normal(0, 1.0, (k, d))
    y = rng.integers(0, k, n)
    X = means[y] + rng.normal(0, 1.5, (n, d))
    return torch.tensor(X, dtype=torch.float32), torch.tensor(y)


def test_agrees_with_sklearn_logistic_regression() -> None:
    X, y = _blobs(2000, 16, 10, seed=1)
    Xt, yt = _blobs(4000, 16, 10, seed=2)
    groups = np.arange(2000) // 20
    config = SoftmaxConfig(top_k=10, lr=2e-2, batch_size=256, max_epochs=30, patience=4, weight_decay=0.0)
    probe = fit_softmax(X, y[:, None], groups, 10, config)
    ours = probe.score(Xt, yt[:, None])[0].top1.mean()
    reference = LogisticRegression(max_iter=2000).fit(X.numpy(), y.numpy())
    theirs = (reference.predict(Xt.numpy()) == yt.numpy()).mean()
    assert 0.5 < theirs < 0.95  # a problem where the comparison means something
    assert abs(ours - theirs) <= 0.01


def test_label_outside_top_k_is_wrong_and_full_distribution_sums_to_one() -> None:
    vocab, d, k = 12, 8, 4
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(600, d, generator=gen)
    # skewed labels that depend on X, so every token appears and the top 4 are clear
    y = torch.clamp((X[:, 0].abs() * 4).long() + torch.randint(0, 3, (600,), generator=gen), max=vocab - 1)
    probe = fit_softmax(X, y[:, None], np.arange(600) // 10, vocab, SoftmaxConfig(top_k=k, max_epochs=5))
    top = set(probe.classes[0].tolist())
    assert len(top) == k
    rest = [v for v in range(vocab) if v not in top]
    ranked = probe.predict_topk(X)
    assert set(ranked.unique().tolist()) <= top  # predictions never leave the top K
    outside = torch.tensor([rest[i % len(rest)] for i in range(600)])
    s = probe.score(X, outside[:, None])[0]
    assert not s.top1.any() and not s.top5.any()
    # enumerate the vocabulary: the probabilities of every token sum to one for every row
    all_labels = torch.arange(vocab).repeat(50, 1).T.reshape(-1)  # each of 50 rows x every token
    rows = X[:50].repeat(vocab, 1)
    total = probe.log_prob(rows, all_labels[:, None]).exp().view(vocab, 50).sum(dim=0)
    assert torch.allclose(total, torch.ones(50, dtype=total.dtype), atol=1e-5)
    ce = s.ce
    assert ce is not None and np.all(np.isfinite(ce))


def test_many_heads_at_once_equal_heads_one_by_one() -> None:
    X, y = _blobs(800, 16, 6, seed=3)
    Y = torch.stack([y, (y + 2) % 6, torch.where(torch.arange(800) % 3 == 0, -1, y)], dim=1)
    config = SoftmaxConfig(top_k=4, max_epochs=4, val_fraction=0.0)
    groups = np.arange(800) // 16
    joint = fit_softmax(X, Y, groups, 6, config)
    for h in range(3):
        single = fit_softmax(X, Y[:, h : h + 1], groups, 6, config)
        assert torch.equal(joint.classes[h], single.classes[0])
        assert torch.allclose(joint.weight[h], single.weight[0], atol=1e-4)
        assert torch.allclose(joint.log_probs_topk(X)[:, h], single.log_probs_topk(X)[:, 0], atol=1e-4)


def test_deterministic_and_early_stopping_bookkeeping() -> None:
    X, y = _blobs(1000, 8, 5, seed=4)
    groups = np.arange(1000) // 10
    config = SoftmaxConfig(max_epochs=6, seed=3)
    a = fit_softmax(X, y[:, None], groups, 5, config)
    b = fit_softmax(X, y[:, None], groups, 5, config)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert a.weight.shape == (1, 8, 6)
    assert a.log_probs_topk(X).shape == (1000, 1, 6)
    assert 1 <= a.best_epoch[0] <= a.epochs_run <= 6


def test_softmax_errors() -> None:
    X, y = _blobs(100, 4, 3, seed=0)
    with pytest.raises(UsageError):
        SoftmaxConfig(top_k=0)
    with pytest.raises(UsageError):
        fit_softmax(X, torch.full((100, 1), -1), np.arange(100), 3)
    with pytest.raises(ValueError):
        fit_softmax(X, y[:, None] + 5, np.arange(100), 3)


def test_lstsq_equals_closed_form_and_sklearn_ridge() -> None:
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(300, 10, generator=gen, dtype=torch.float64) * 3 + 1
    noise = torch.randn(300, 6, generator=gen, dtype=torch.float64)
    Y = X @ torch.randn(10, 6, generator=gen, dtype=torch.float64) + noise
    lam = 2.5
    lmap = fit_lstsq(X, Y, ridge=lam, chunk_rows=64)  # chunking must not change the answer
    W, b = closed_form_ridge(X, Y, lam)
    assert torch.allclose(lmap.weight, W, atol=1e-6) and torch.allclose(lmap.bias, b, atol=1e-6)
    ridge = Ridge(alpha=lam).fit(X.numpy(), Y.numpy())
    assert np.allclose(lmap.weight.numpy(), ridge.coef_.T, atol=1e-6)
    assert np.allclose(lmap.predict(X).numpy(), ridge.predict(X.numpy()), atol=1e-6)
    default = fit_lstsq(X, Y)
    Xc = X - X.mean(0)
    assert default.ridge == pytest.approx(1e-3 * float((Xc.T @ Xc).diagonal().mean()))


def test_lstsq_final_layer_tau_1_reproduces_model_prediction() -> None:
    gen = torch.Generator().manual_seed(1)
    n_windows, seq_len, d, vocab = 40, 12, 16, 50
    final = torch.randn(n_windows, seq_len, d, generator=gen)
    unembed = torch.randn(d, vocab, generator=gen)

    def decode(resid: torch.Tensor) -> torch.Tensor:
        return resid @ unembed

    model_pred = decode(final).argmax(dim=-1)
    tokens = torch.randint(0, vocab, (n_windows, seq_len), generator=gen)
    X, Yres = lstsq_pairs(final, final, 1)
    lmap = fit_lstsq(X, Yres, ridge=0.0)
    assert torch.allclose(lmap.weight, torch.eye(d, dtype=torch.float64), atol=1e-8)
    scores = lstsq_grid(final, final, final, tokens, model_pred, [1, 2], decode, ridge=0.0, chunk_rows=37)
    assert scores[(1, "model")].top1.all()
    assert len(scores[(2, "token")]) == n_windows * (seq_len - 2)
    # ce is the model's own cross-entropy on the true next token
    log_probs = torch.log_softmax(decode(final[:, :-1]), dim=-1)
    expected = -log_probs.gather(-1, tokens[:, 1:, None]).reshape(-1)
    assert np.allclose(scores[(1, "token")].ce, expected.double().numpy(), atol=1e-4)


def test_lstsq_scores_shapes_and_errors() -> None:
    X = torch.randn(20, 4)
    lmap = fit_lstsq(X, X)
    labels = torch.randint(0, 7, (20,))
    out = lstsq_scores(lmap, X, lambda r: r @ torch.ones(4, 7), {"token": labels}, chunk_rows=6)
    assert len(out["token"]) == 20 and out["token"].ce is not None
    with pytest.raises(ValueError):
        lstsq_scores(lmap, X, lambda r: r @ torch.ones(4, 7), {"token": labels[:5]})
    with pytest.raises(UsageError):
        fit_lstsq(X, X, ridge=-1.0)
