import numpy as np
import pytest

from probes.errors import UsageError
from probes.probing.metrics import PairScores, summarise
from probes.stats import bootstrap_mean_ci, bootstrap_weights, paired_bootstrap_diff_ci


def _data(n_docs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(5, 30, n_docs)
    groups = np.repeat(np.arange(n_docs), sizes)
    doc_rate = rng.uniform(0.2, 0.8, n_docs)[groups]
    return (rng.random(len(groups)) < doc_rate).astype(float), groups


def test_ci_contains_point_and_point_is_pair_mean() -> None:
    values, groups = _data(50)
    point, low, high = bootstrap_mean_ci(values, groups)
    assert point == pytest.approx(values.mean())
    assert low < point < high


def test_ci_shrinks_with_more_documents() -> None:
    small = bootstrap_mean_ci(*_data(20))
    large = bootstrap_mean_ci(*_data(500))
    assert (large[2] - large[1]) < 0.5 * (small[2] - small[1])


def test_constant_values_give_zero_width() -> None:
    _, groups = _data(30)
    values = np.full(len(groups), 0.3)
    point, low, high = bootstrap_mean_ci(values, groups)
    assert point == low == high == pytest.approx(0.3)


def test_paired_identical_inputs_give_exact_zero() -> None:
    values, groups = _data(30)
    assert paired_bootstrap_diff_ci(values, values, groups) == (0.0, 0.0, 0.0)


def test_paired_difference_uses_same_documents() -> None:
    values, groups = _data(40)
    shifted = values + 0.1
    point, low, high = paired_bootstrap_diff_ci(shifted, values, groups)
    assert point == pytest.approx(0.1) and low == pytest.approx(0.1) and high == pytest.approx(0.1)


def test_vectorised_equals_brute_force_loop() -> None:
    values, groups = _data(25, seed=3)
    n_boot, seed = 300, 11
    _, low, high = bootstrap_mean_ci(values, groups, n_boot=n_boot, seed=seed)
    draws = np.random.default_rng(seed).integers(0, 25, size=(n_boot, 25))
    stats = []
    for row in draws:
        picked = np.concatenate([values[groups == g] for g in row])
        stats.append(picked.mean())
    expected = np.quantile(stats, [0.025, 0.975])
    assert low == pytest.approx(expected[0], abs=1e-12)
    assert high == pytest.approx(expected[1], abs=1e-12)


def test_weights_are_draw_counts() -> None:
    weights = bootstrap_weights(7, 250, seed=5)
    assert weights.shape == (250, 7)
    assert (weights.sum(axis=1) == 7).all()
    assert np.array_equal(weights, bootstrap_weights(7, 250, seed=5))


def test_deterministic_and_group_labels_arbitrary() -> None:
    values, groups = _data(30)
    renamed = np.array([f"doc{g:04d}" for g in groups])  # same sort order, so same resamples
    assert bootstrap_mean_ci(values, groups, seed=4) == bootstrap_mean_ci(values, renamed, seed=4)


def test_matrix_input_matches_columns() -> None:
    values, groups = _data(30)
    matrix = np.stack([values, 1 - values], axis=1)
    point, low, high = bootstrap_mean_ci(matrix, groups)
    single = bootstrap_mean_ci(values, groups)
    assert (point[0], low[0], high[0]) == pytest.approx(single)


def test_n_boot_minimum_and_empty_input() -> None:
    values, groups = _data(10)
    with pytest.raises(UsageError):
        bootstrap_mean_ci(values, groups, n_boot=100)
    with pytest.raises(UsageError):
        bootstrap_mean_ci(np.zeros(0), np.zeros(0))


def test_summarise_metrics() -> None:
    values, groups = _data(30)
    scores = PairScores(top1=values > 0, top5=np.ones(len(values), bool), ce=values * 2.0)
    summary = summarise(scores, groups)
    assert set(summary) == {"top1", "top5", "ce_nats"}
    assert summary["top5"] == (1.0, 1.0, 1.0)
    assert summary["ce_nats"][0] == pytest.approx(2 * values.mean())
    no_ce = summarise(PairScores(top1=values > 0, top5=values > 0), groups)
    assert set(no_ce) == {"top1", "top5"}


def test_pair_scores_rejects_ragged() -> None:
    with pytest.raises(ValueError):
        PairScores(top1=np.zeros(3, bool), top5=np.zeros(4, bool))
