"""Count baselines scored on the same test pairs as the probes.

- Unigram: the train frequency of the label, add-k smoothed over the full vocabulary,
  P(y) = (n(y) + k) / (N + kV). Top-1/top-5 are the most frequent train labels. Add-one (k = 1) puts most of
  the mass on unseen tokens when the vocabulary is large and the sample small (50k tokens, 20k pairs), so the
  probe job chooses k from `ADD_K_GRID` as the value that minimises the cross-entropy of the train-side
  validation documents under counts of the other train documents (`choose_add_k`, `fit_baselines`), then
  refits on every train pair with that k.
- Skip-bigram: P(y | x), x = the current token at t and y = the label at t+τ (the true token or the
  model's prediction). Estimated with interpolated Witten-Bell smoothing towards the unigram:
  P(y | x) = (n(x, y) + a(x) P(y)) / (n(x) + a(x)), where a(x) is the number of distinct labels seen
  after x. Contexts with many distinct continuations trust the unigram more; a context never seen in
  training gets the unigram exactly. Passing a number as ``k`` uses that fixed concentration a(x) = k
  instead. The ranking for top-1/top-5 comes from the same probabilities, so seen continuations come
  first (by count) and the unigram order fills the rest.

Counts are sparse: a (context, label) pair is keyed as ``x * V + y`` and looked up by binary search,
so nothing V x V is ever allocated. Ties in rankings go to the lowest token id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor

from probes.errors import UsageError
from probes.probing.metrics import PairScores
from probes.probing.targets import VAL_FRACTION, validation_split

TOP = 5
ADD_K_GRID = tuple(float(k) for k in np.logspace(-3, 1, 41))  # 0.001 .. 10, ten steps per decade
DEFAULT_ADD_K = 1.0  # add-one, where there are no validation documents to choose k on


def _as_ids(values: Tensor | np.ndarray, name: str) -> np.ndarray:
    array = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D integer array, got {array.dtype} {array.shape}")
    return array.astype(np.int64, copy=False)


def _check_range(ids: np.ndarray, vocab_size: int, name: str) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"{name} must be token ids in [0, {vocab_size}); pass only pairs that exist")


def _pairs(
    current: Tensor | np.ndarray, labels: Tensor | np.ndarray, vocab_size: int, keep_missing: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Current tokens and labels as int64 arrays; with keep_missing False, -1 labels (no pair) are dropped."""
    x = _as_ids(current, "current")
    y = _as_ids(labels, "labels")
    if x.shape != y.shape:
        raise ValueError(f"current {x.shape} and labels {y.shape} differ in shape")
    if not keep_missing:
        valid = y >= 0
        x, y = x[valid], y[valid]
    _check_range(x, vocab_size, "current")
    _check_range(y, vocab_size, "labels")
    return x, y


def _ranked(scores: np.ndarray, ids: np.ndarray, count: int) -> np.ndarray:
    """The `count` ids with the highest scores, ties to the lowest id."""
    order = np.lexsort((ids, -scores))
    return ids[order[:count]]


def _hits(top: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 and top-5 hits for per-pair ranked predictions `top` (n, 5) (-1 = no prediction)."""
    return top[:, 0] == labels, (top == labels[:, None]).any(axis=1)


def _check_smoothing(k: float) -> None:
    if not k > 0:
        raise UsageError(f"smoothing constant must be positive; got {k}")


def choose_add_k(counts: np.ndarray, val_labels: np.ndarray, support: np.ndarray | None = None) -> float:
    """The k of `ADD_K_GRID` minimising the cross-entropy of `val_labels` under (n(y) + k) / (N + k|S|).

    ``counts`` (V,): label counts of the fitting documents; ``support`` (V,) bool: the tokens the distribution
    covers (every token by default; validation labels outside it are ignored). Ties go to the smaller k;
    without validation labels, `DEFAULT_ADD_K`.
    """
    counts = np.asarray(counts, dtype=np.float64)
    inside = np.ones(len(counts), dtype=bool) if support is None else np.asarray(support, dtype=bool)
    labels = np.asarray(val_labels, dtype=np.int64)
    labels = labels[(labels >= 0) & inside[np.clip(labels, 0, None)]]
    if len(labels) == 0:
        return DEFAULT_ADD_K
    seen, multiplicity = np.unique(labels, return_counts=True)
    grid = np.asarray(ADD_K_GRID)
    total, size = float(counts[inside].sum()), float(inside.sum())
    log_probs = np.log(counts[seen][None, :] + grid[:, None]) - np.log(total + grid * size)[:, None]
    return float(grid[int(np.argmax((log_probs * multiplicity).sum(axis=1)))])  # no BLAS: the same bits anywhere


@dataclass
class Unigram:
    """Add-k smoothed label frequencies over the full vocabulary."""

    probs: np.ndarray  # (V,)
    top: np.ndarray  # (5,) most frequent labels
    k: float = DEFAULT_ADD_K  # the add-k constant

    def log_prob(self, labels: np.ndarray) -> np.ndarray:
        return np.log(self.probs[labels])

    def score(self, current: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> PairScores:
        """Per-pair scores; `current` is ignored (kept for a uniform baseline interface)."""
        _, y = _pairs(current, labels, len(self.probs), keep_missing=True)
        top = np.broadcast_to(self.top, (len(y), len(self.top)))
        top1, top5 = _hits(top, y)
        return PairScores(top1=top1, top5=top5, ce=-self.log_prob(y))


def fit_unigram(labels: Tensor | np.ndarray, vocab_size: int, k: float = 1.0) -> Unigram:
    """Unigram over the train labels (-1 entries, i.e. no pair, are ignored)."""
    _check_smoothing(k)
    y = _as_ids(labels, "labels")
    y = y[y >= 0]
    if len(y) == 0:
        raise UsageError("no train pairs for the unigram baseline: use more text or a smaller tau")
    _check_range(y, vocab_size, "labels")
    counts = np.bincount(y, minlength=vocab_size).astype(np.float64)
    probs = (counts + k) / (counts.sum() + k * vocab_size)
    top = _ranked(counts, np.arange(vocab_size), min(TOP, vocab_size))
    return Unigram(probs=probs, top=top, k=float(k))


@dataclass
class SkipBigram:
    """Sparse skip-bigram P(label at t+τ | token at t), smoothed towards the unigram."""

    unigram: Unigram
    keys: np.ndarray  # sorted x * V + y of every seen (context, label) pair
    pair_counts: np.ndarray  # n(x, y) for each key
    context_counts: np.ndarray  # (V,) n(x)
    concentration: np.ndarray  # (V,) a(x)
    top_contexts: np.ndarray  # sorted contexts with a top-5 table
    top_table: np.ndarray  # (len(top_contexts), 5) ranked labels of each seen context

    @property
    def vocab_size(self) -> int:
        return len(self.context_counts)

    def pair_count(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """n(x, y) for arrays of contexts and labels (0 for unseen pairs)."""
        query = x * self.vocab_size + y
        position = np.minimum(np.searchsorted(self.keys, query), len(self.keys) - 1)
        return np.where(self.keys[position] == query, self.pair_counts[position], 0.0)

    def prob(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """P(y | x) for arrays of contexts and labels."""
        n_x = self.context_counts[x]
        a_x = self.concentration[x]
        p_uni = self.unigram.probs[y]
        seen = n_x > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            conditional = (self.pair_count(x, y) + a_x * p_uni) / (n_x + a_x)
        return np.where(seen, conditional, p_uni)

    def top(self, x: np.ndarray) -> np.ndarray:
        """(n, 5) ranked predictions for each context (the unigram order for unseen contexts)."""
        result = np.broadcast_to(self.unigram.top, (len(x), len(self.unigram.top))).copy()
        position = np.minimum(np.searchsorted(self.top_contexts, x), len(self.top_contexts) - 1)
        seen = self.top_contexts[position] == x
        result[seen] = self.top_table[position[seen]]
        return result

    def score(self, current: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> PairScores:
        x, y = _pairs(current, labels, self.vocab_size, keep_missing=True)
        top1, top5 = _hits(self.top(x), y)
        return PairScores(top1=top1, top5=top5, ce=-np.log(self.prob(x, y)))


def _top_table(model: SkipBigram) -> tuple[np.ndarray, np.ndarray]:
    """Ranked top-5 labels of every seen context.

    The top five of P(. | x) lie among the labels seen after x and the unigram top five (every unseen
    label is ranked by the unigram alone), so only those candidates are scored.
    """
    vocab = model.vocab_size
    contexts = np.flatnonzero(model.context_counts)
    seen_x, seen_y = model.keys // vocab, model.keys % vocab
    extra_x = np.repeat(contexts, len(model.unigram.top))
    extra_y = np.tile(model.unigram.top, len(contexts))
    candidates = np.unique(np.concatenate([seen_x * vocab + seen_y, extra_x * vocab + extra_y]))
    cx, cy = candidates // vocab, candidates % vocab
    probs = model.prob(cx, cy)
    order = np.lexsort((cy, -probs, cx))
    cx, cy = cx[order], cy[order]
    first = np.searchsorted(cx, cx, side="left")
    rank = np.arange(len(cx)) - first
    width = min(TOP, vocab)
    table = np.full((len(contexts), width), -1, dtype=np.int64)
    keep = rank < width
    table[np.searchsorted(contexts, cx[keep]), rank[keep]] = cy[keep]
    return contexts, table


def fit_skip_bigram(
    current: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    vocab_size: int,
    k: float | None = None,
    unigram_k: float = 1.0,
) -> SkipBigram:
    """Fit from train pairs (current token x_t, label at t+τ); pairs with label -1 are ignored.

    ``k=None`` (default) uses Witten-Bell smoothing; a number uses that fixed concentration towards the
    unigram. ``unigram_k`` is the add-k constant of the unigram it backs off to.
    """
    if k is not None:
        _check_smoothing(k)
    x, y = _pairs(current, labels, vocab_size, keep_missing=False)
    if len(y) == 0:
        raise UsageError("no train pairs for the skip-bigram baseline: use more text or a smaller tau")
    keys, pair_counts = np.unique(x * vocab_size + y, return_counts=True)
    context_counts = np.bincount(x, minlength=vocab_size).astype(np.float64)
    if k is None:
        concentration = np.bincount(keys // vocab_size, minlength=vocab_size).astype(np.float64)
    else:
        concentration = np.full(vocab_size, float(k))
    model = SkipBigram(
        unigram=fit_unigram(y, vocab_size, k=unigram_k),
        keys=keys,
        pair_counts=pair_counts.astype(np.float64),
        context_counts=context_counts,
        concentration=concentration,
        top_contexts=np.zeros(0, dtype=np.int64),
        top_table=np.zeros((0, min(TOP, vocab_size)), dtype=np.int64),
    )
    model.top_contexts, model.top_table = _top_table(model)
    return model


BASELINE_NAMES = ("unigram", "skip_bigram")


@dataclass
class Baselines:
    """The count baselines of one (τ, target) head, fitted on every train pair.

    ``k``: the add-k of the unigram (and of the skip-bigram's fallback to it), chosen on the validation documents.
    ``validation``: each baseline refitted on the fitting documents only, scored on the validation documents
    (what a choice between baselines, or between them and the probes, may look at); empty without them.
    """

    unigram: Unigram
    skip_bigram: SkipBigram
    k: float
    validation: dict[str, PairScores]

    def models(self) -> dict[str, Unigram | SkipBigram]:
        return {"unigram": self.unigram, "skip_bigram": self.skip_bigram}


def fit_baselines(
    current: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    groups: np.ndarray,
    vocab_size: int,
    val_fraction: float = VAL_FRACTION,
    seed: int = 0,
) -> Baselines:
    """Unigram and skip-bigram from train pairs (current token, label), pairs of label -1 ignored.

    ``groups``: the document of each pair. A ``val_fraction`` of the documents (`validation_split`, the same
    documents the softmax probe holds out for the same seed) chooses the unigram's add-k; the final models use
    every train pair.
    """
    x, y = _pairs(current, labels, vocab_size, keep_missing=True)
    keep = y >= 0
    x, y, groups = x[keep], y[keep], np.asarray(groups)[keep]
    if len(y) == 0:
        raise UsageError("no train pairs for the count baselines: use more text or a smaller tau")
    fit, val = validation_split(groups, val_fraction, seed)
    k = choose_add_k(np.bincount(y[fit], minlength=vocab_size), y[val])
    validation: dict[str, PairScores] = {}
    if len(val):
        on_fit = {
            "unigram": fit_unigram(y[fit], vocab_size, k=k),
            "skip_bigram": fit_skip_bigram(x[fit], y[fit], vocab_size, unigram_k=k),
        }
        validation = {name: model.score(x[val], y[val]) for name, model in on_fit.items()}
    return Baselines(
        unigram=fit_unigram(y, vocab_size, k=k),
        skip_bigram=fit_skip_bigram(x, y, vocab_size, unigram_k=k),
        k=k,
        validation=validation,
    )
