"""Future-token targets: which token a probe at position t must predict for an offset τ.

Two targets (the Future Lens conventions):
- ``token``: the true token at t+τ, ``tokens[:, t+τ]``.
- ``model``: the model's own top-1 prediction for position t+τ, which it makes at t+τ-1,
  ``model_pred[:, t+τ-1]``.

Pairs never cross a window edge: positions with t+τ >= T have no target and get the label -1.

Row order used by every probe and baseline: a window's positions are flattened window-major,
row ``w * T + t``; the pairs of one (τ, target) are the rows whose label is not -1, in that order.
``pair_groups`` gives the document of each such pair (the bootstrap unit). ``validation_split`` sets apart the
train-side validation documents that every fitted choice (early stopping, smoothing, the best layer) is made on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from probes.errors import UsageError

TARGETS = ("token", "model")

NO_PAIR = -1


def _check_tau(tau: int, seq_len: int) -> None:
    if not 1 <= tau < seq_len:
        raise UsageError(f"tau must satisfy 1 <= tau < seq-len ({seq_len}); got {tau}")


def pair_mask(seq_len: int, tau: int) -> Tensor:
    """(T,) bool: True at the positions t that have a target inside the window (t + τ < T)."""
    _check_tau(tau, seq_len)
    return torch.arange(seq_len) < seq_len - tau


def target_labels(tokens: Tensor, model_pred: Tensor, tau: int, target: str) -> Tensor:
    """(W, T) int64 labels for offset τ; -1 where t + τ falls outside the window."""
    if target not in TARGETS:
        raise UsageError(f"unknown target {target!r}: choose one of {', '.join(TARGETS)}")
    if tokens.ndim != 2 or tokens.shape != model_pred.shape:
        raise ValueError(f"tokens {tuple(tokens.shape)} and model_pred {tuple(model_pred.shape)} must be (W, T)")
    seq_len = tokens.shape[1]
    _check_tau(tau, seq_len)
    labels = torch.full(tokens.shape, NO_PAIR, dtype=torch.int64, device=tokens.device)
    if target == "token":
        labels[:, : seq_len - tau] = tokens[:, tau:]
    else:
        labels[:, : seq_len - tau] = model_pred[:, tau - 1 : seq_len - 1]
    return labels


def head_labels(
    tokens: Tensor, model_pred: Tensor, taus: Sequence[int], targets: Sequence[str] = TARGETS
) -> tuple[Tensor, list[tuple[int, str]]]:
    """Labels of every (τ, target) head as one (W*T, Hh) matrix, plus the head order.

    Heads are ordered τ-major: (τ1, token), (τ1, model), (τ2, token), ... Rows follow the window-major
    order described in the module docstring, so the matrix lines up with ``H.reshape(W*T, d)``.
    """
    heads = [(tau, target) for tau in taus for target in targets]
    if not heads:
        raise UsageError("no (tau, target) combination to probe")
    columns = [target_labels(tokens, model_pred, tau, target).reshape(-1) for tau, target in heads]
    return torch.stack(columns, dim=1), heads


VAL_FRACTION = 0.1  # share of the train documents held out for validation


def validation_split(
    groups: np.ndarray, val_fraction: float = VAL_FRACTION, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the fitting and validation parts of the train rows; whole documents go to one side.

    The validation documents depend only on the set of documents, the fraction and the seed, so every probe and
    baseline fitted on the same train documents holds out the same ones.
    """
    unique, index = np.unique(np.asarray(groups), return_inverse=True)
    n_val = int(round(val_fraction * len(unique)))
    if val_fraction > 0 and len(unique) >= 2:
        n_val = min(max(n_val, 1), len(unique) - 1)
    else:
        n_val = 0
    is_val_group = np.zeros(len(unique), dtype=bool)
    is_val_group[np.random.default_rng(seed).permutation(len(unique))[:n_val]] = True
    is_val = is_val_group[index.ravel()]
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def pair_groups(doc: Tensor, seq_len: int, tau: int) -> Tensor:
    """(W * (T - τ),) document id of every pair of offset τ, in row order."""
    _check_tau(tau, seq_len)
    return doc.repeat_interleave(seq_len - tau)


def row_labels(tokens: Tensor, model_pred: Tensor, heads: Sequence[tuple[int, str]], rows: Tensor) -> Tensor:
    """(n, Hh) labels of the given flat rows (w * T + t): ``head_labels(...)[0][rows]`` without the (W*T, Hh)
    matrix, so label memory follows the rows asked for, not the store."""
    seq_len = tokens.shape[1]
    for tau, _ in heads:
        _check_tau(tau, seq_len)
    rows = rows.to(torch.int64)
    taus = torch.tensor([tau for tau, _ in heads], dtype=torch.int64)
    is_token = torch.tensor([target == "token" for _, target in heads])
    source = (rows[:, None] + taus - (~is_token).long()).clamp(max=tokens.numel() - 1)  # t+τ, or t+τ-1 for `model`
    values = torch.where(is_token, tokens.reshape(-1)[source], model_pred.reshape(-1)[source])
    return torch.where((rows % seq_len)[:, None] + taus < seq_len, values, NO_PAIR)
