import pytest
import torch

from probes.errors import UsageError
from probes.probing.targets import TARGETS, head_labels, pair_groups, pair_mask, target_labels

TOKENS = torch.tensor([[10, 11, 12, 13, 14], [20, 21, 22, 23, 24]])
MODEL_PRED = torch.tensor([[90, 91, 92, 93, 94], [80, 81, 82, 83, 84]])


def test_token_target_tau_1_and_2() -> None:
    assert target_labels(TOKENS, MODEL_PRED, 1, "token").tolist() == [
        [11, 12, 13, 14, -1],
        [21, 22, 23, 24, -1],
    ]
    assert target_labels(TOKENS, MODEL_PRED, 2, "token").tolist() == [
        [12, 13, 14, -1, -1],
        [22, 23, 24, -1, -1],
    ]


def test_model_target_is_prediction_made_at_t_plus_tau_minus_1() -> None:
    # model_pred[:, s] predicts position s + 1, so position t + tau is predicted at t + tau - 1.
    assert target_labels(TOKENS, MODEL_PRED, 1, "model").tolist() == [
        [90, 91, 92, 93, -1],
        [80, 81, 82, 83, -1],
    ]
    assert target_labels(TOKENS, MODEL_PRED, 3, "model").tolist() == [
        [92, 93, -1, -1, -1],
        [82, 83, -1, -1, -1],
    ]


def test_never_wraps_across_windows_or_the_window_end() -> None:
    for tau in range(1, 5):
        for target in TARGETS:
            labels = target_labels(TOKENS, MODEL_PRED, tau, target)
            assert (labels[:, 5 - tau :] == -1).all()
            source = TOKENS if target == "token" else MODEL_PRED
            # each row only holds values from its own window
            for w in range(2):
                kept = labels[w][labels[w] >= 0]
                assert set(kept.tolist()) <= set(source[w].tolist())


def test_pair_mask() -> None:
    assert pair_mask(5, 2).tolist() == [True, True, True, False, False]


@pytest.mark.parametrize("tau", [0, -1, 5, 9])
def test_bad_tau_is_a_usage_error(tau: int) -> None:
    with pytest.raises(UsageError):
        target_labels(TOKENS, MODEL_PRED, tau, "token")
    with pytest.raises(UsageError):
        pair_mask(5, tau)


def test_unknown_target_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        target_labels(TOKENS, MODEL_PRED, 1, "logits")


def test_head_labels_order_and_pair_groups_line_up() -> None:
    Y, heads = head_labels(TOKENS, MODEL_PRED, [1, 2])
    assert heads == [(1, "token"), (1, "model"), (2, "token"), (2, "model")]
    assert Y.shape == (10, 4)
    assert Y[:, 2].tolist() == target_labels(TOKENS, MODEL_PRED, 2, "token").reshape(-1).tolist()
    groups = pair_groups(torch.tensor([7, 9]), 5, 2)
    assert groups.tolist() == [7, 7, 7, 9, 9, 9]
    assert int((Y[:, 2] >= 0).sum()) == len(groups)
