from collections import Counter

import numpy as np
import pytest

from probes.errors import UsageError
from probes.probing.baselines import fit_skip_bigram, fit_unigram

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
