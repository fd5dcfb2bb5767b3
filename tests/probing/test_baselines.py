from collections import Counter

import numpy as np
import pytest

from probes.errors import UsageError
from probes.probing.baselines import (
    ADD_K_GRID,
    DEFAULT_ADD_K,
    choose_add_k,
    fit_baselines,
    fit_skip_bigram,
    fit_unigram,
)

V = 7
CURRENT = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 0, 6])
LABELS = np.array([1, 1, 2, 2, 4, 5, 3, 3, 1, 6, -1, 2])


def _brute_unigram(k: float) -> np.ndarray:
    counts = Counter(int(y) for y in LABELS if y >= 0)
    n = sum(counts.values())
    return np.array([(counts[v] + k) / (n + k * V) for v in range(V)])


def _brute_skip_bigram(x: int, y: int, k: float | None) -> float:
    pairs = [(int(a), int(b)) for a, b in zip(CURRENT, LABELS, strict=True) if b >= 0]
    p_uni = _brute_unigram(1.0)[y]
    after = [b for a, b in pairs if a == x]
    if not after:
        return p_uni
    concentration = len(set(after)) if k is None else k
    return (after.count(y) + concentration * p_uni) / (len(after) + concentration)


def test_unigram_matches_brute_force_counts() -> None:
    for k in (1.0, 0.5):
        model = fit_unigram(LABELS, V, k=k)
        assert np.allclose(model.probs, _brute_unigram(k))
        assert model.probs.sum() == pytest.approx(1.0)
    model = fit_unigram(LABELS, V)
    # counts: 1 -> 3, 2 -> 3, 3 -> 2, then 4, 5, 6 once each; ties go to the lowest id
    assert model.top.tolist() == [1, 2, 3, 4, 5]
    scores = model.score(np.zeros(3, np.int64), np.array([1, 2, 0]))
    assert scores.top1.tolist() == [True, False, False]
    assert scores.top5.tolist() == [True, True, False]
    assert np.allclose(scores.ce, -np.log(_brute_unigram(1.0)[[1, 2, 0]]))


@pytest.mark.parametrize("k", [None, 0.1, 2.0])
def test_skip_bigram_matches_brute_force_and_normalises(k: float | None) -> None:
    model = fit_skip_bigram(CURRENT, LABELS, V, k=k)
    for x in range(V):
        xs = np.full(V, x)
        probs = model.prob(xs, np.arange(V))
        assert probs.sum() == pytest.approx(1.0)
        expected = [_brute_skip_bigram(x, y, k) for y in range(V)]
        assert np.allclose(probs, expected)
        # the ranking is the ranking of the probabilities (ties to the lowest id)
        order = np.lexsort((np.arange(V), -probs))[:5]
        assert model.top(np.array([x]))[0].tolist() == order.tolist()


def test_skip_bigram_scores() -> None:
    model = fit_skip_bigram(CURRENT, LABELS, V)
    scores = model.score(np.array([3, 0, 5]), np.array([3, 2, 1]))
    assert scores.top1.tolist() == [True, False, True]  # unseen context 5 falls back to the unigram
    assert scores.top5.tolist() == [True, True, True]
    assert scores.ce is not None and np.all(np.isfinite(scores.ce))


def test_skip_bigram_on_deterministic_corpus_is_perfect() -> None:
    rng = np.random.default_rng(0)
    vocab = 50
    successor = rng.permutation(vocab)
    current = rng.integers(0, vocab, 5000)
    labels = successor[successor[current]]  # tau = 2 of a fixed permutation
    model = fit_skip_bigram(current, labels, vocab)
    test = rng.integers(0, vocab, 1000)
    scores = model.score(test, successor[successor[test]])
    assert scores.top1.mean() == 1.0
    assert fit_unigram(labels, vocab).score(test, successor[successor[test]]).top1.mean() < 0.2


def test_large_vocabulary_stays_sparse() -> None:
    vocab = 50257
    rng = np.random.default_rng(1)
    current = rng.integers(0, vocab, 20000)
    labels = rng.integers(0, vocab, 20000)
    model = fit_skip_bigram(current, labels, vocab)
    assert len(model.keys) <= 20000
    scores = model.score(current[:100], labels[:100])
    assert scores.top5.all()  # every train pair is among its context's few seen continuations


def test_errors() -> None:
    with pytest.raises(UsageError):
        fit_unigram(np.array([-1, -1]), V)
    with pytest.raises(UsageError):
        fit_skip_bigram(CURRENT, LABELS, V, k=0.0)
    with pytest.raises(ValueError):
        fit_unigram(np.array([V]), V)


# ------------------------------------------------------------------------------ smoothing chosen on validation

ZIPF_VOCAB = 50_000


def zipf_probs(vocab: int = ZIPF_VOCAB, exponent: float = 1.1) -> np.ndarray:
    probs = 1.0 / np.arange(1, vocab + 1) ** exponent
    return probs / probs.sum()


def test_choose_add_k_is_the_validation_minimiser() -> None:
    rng = np.random.default_rng(2)
    probs = zipf_probs(500)
    fit, val = rng.choice(500, 2000, p=probs), rng.choice(500, 300, p=probs)
    counts = np.bincount(fit, minlength=500).astype(float)
    chosen = choose_add_k(counts, val)
    brute = [-np.log(((counts + k) / (counts.sum() + 500 * k))[val]).sum() for k in ADD_K_GRID]
    assert chosen == ADD_K_GRID[int(np.argmin(brute))]
    # Restricted to a support: only the labels inside count, and the denominator is the support's.
    support = np.arange(500) >= 20
    brute = [
        -np.log(((counts + k) / (counts[support].sum() + support.sum() * k))[val[support[val]]]).sum()
        for k in ADD_K_GRID
    ]
    assert choose_add_k(counts, val, support) == ADD_K_GRID[int(np.argmin(brute))]
    assert choose_add_k(counts, np.array([], dtype=np.int64)) == DEFAULT_ADD_K


def test_unigram_on_a_zipf_sample_reaches_the_entropy() -> None:
    """i.i.d. Zipf labels over a 50k vocabulary: the unigram's test CE must land near the true entropy. Add-one
    over the full vocabulary (the old default) wastes mass on unseen tokens and misses it by far more."""
    rng = np.random.default_rng(0)
    probs = zipf_probs()
    entropy = float(-(probs * np.log(probs)).sum())
    train = rng.choice(ZIPF_VOCAB, 100_000, p=probs)
    groups = np.repeat(np.arange(500), 200)  # documents of 200 pairs
    current = rng.integers(0, ZIPF_VOCAB, len(train))
    test = rng.choice(ZIPF_VOCAB, 200_000, p=probs)
    fitted = fit_baselines(current, train, groups, ZIPF_VOCAB, seed=0)
    ce = fitted.unigram.score(test, test).ce.mean()
    assert ce - entropy < 0.15, (ce, entropy, fitted.k)
    assert fitted.k < 1.0 and fitted.unigram.k == fitted.k and fitted.skip_bigram.unigram.k == fitted.k
    add_one = fit_unigram(train, ZIPF_VOCAB, k=1.0).score(test, test).ce.mean()
    assert add_one - entropy > 0.2, add_one - entropy
    # An unseen context of the skip-bigram falls back on the same smoothed unigram.
    unseen = np.setdiff1d(np.arange(ZIPF_VOCAB), current)[:1]
    assert fitted.skip_bigram.prob(np.repeat(unseen, 3), test[:3]) == pytest.approx(fitted.unigram.probs[test[:3]])
    assert set(fitted.validation) == {"unigram", "skip_bigram"}
    assert len(fitted.validation["unigram"]) == 10_000  # 50 of 500 documents held out for validation
