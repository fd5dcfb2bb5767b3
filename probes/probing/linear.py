"""Linear future-token probes: a many-headed softmax probe and the Future Lens least-squares map.

Softmax probe
    Multinomial logistic regression from the hidden state h_t to a label, fitted for many heads at once
    (one head per (τ, target)): inputs X (N, d) are shared, labels Y (N, Hh) hold -1 where a head has
    no pair. One weight tensor (Hh, d, K+1) means a single matmul per minibatch serves every head.
    Each head keeps its K most frequent train labels as classes plus an OTHER class for the rest.
    Predictions rank the K real classes only, so a true label outside the top K is always wrong.
    For cross-entropy the OTHER probability is spread over the out-of-top-K tokens in proportion to
    their add-k smoothed train frequency, which makes every head a proper distribution over the
    full vocabulary, comparable to the count baselines. Each head's k is the value of
    `probes.probing.baselines.ADD_K_GRID` that minimises the cross-entropy of the validation documents'
    out-of-top-K labels (`choose_add_k`), as for the unigram baseline.

Least-squares map (Future Lens "linear approximation")
    A ridge map from h_t at some layer to the model's final-layer residual at t+τ-1, decoded with the
    model's own final norm and unembedding: the logits it produces are the model's prediction for
    position t+τ. Closed form in float64; no vocabulary-sized parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from probes.errors import UsageError
from probes.models import resolve_device
from probes.probing.baselines import choose_add_k
from probes.probing.metrics import PairScores
from probes.probing.rowviews import is_view, subset
from probes.probing.targets import TARGETS, VAL_FRACTION, target_labels, validation_split

TOP = 5
SCORE_CHUNK_ROWS = 4096
# Default ridge of the least-squares map, relative to the mean diagonal of the centred Gram matrix:
# small enough to leave a well-conditioned map unchanged, large enough to make a rank-deficient one
# (e.g. dead residual directions) solvable.
RELATIVE_RIDGE = 1e-3


# --------------------------------------------------------------------------------------------------
# Softmax probe
# --------------------------------------------------------------------------------------------------


@dataclass
class SoftmaxConfig:
    """Training settings of the softmax probe (defaults chosen with benchmarks/bench_probe_fit.py).

    ``top_k`` 256 classes per head (+ OTHER): cost grows linearly with heads x (K+1), and 10 heads
    (5 τ x 2 targets) x 257 classes on 16k rows of width 768 take a few seconds per layer on 2 CPU
    cores, so a 13-layer grid fits in a few minutes. Text labels are Zipf-shaped: the top 256 carry most
    pairs, and a linear probe rarely gets the rare ones right anyway. Raise it for a fuller vocabulary.
    ``lr`` 5e-3 with ``batch_size`` 256: on the 1,000-class benchmark the best validation epoch comes
    after 2-3 epochs and held-out top-1 matches scikit-learn's best-regularised LogisticRegression.
    Early stopping (``patience`` 2, at most ``max_epochs`` 8) is the main regulariser; the decoupled
    ``weight_decay`` 1e-2 (weights only, not biases) is a mild extra.
    """

    top_k: int = 256
    weight_decay: float = 1e-2
    lr: float = 5e-3
    batch_size: int = 256
    max_epochs: int = 8
    patience: int = 2
    val_fraction: float = VAL_FRACTION
    other_k: float | None = None  # add-k of OTHER's spread; None: chosen on the validation documents
    seed: int = 0
    device: str = "cpu"  # cpu | cuda | cuda:N | auto

    def __post_init__(self) -> None:
        checks = [
            (self.top_k >= 1, f"top_k must be at least 1; got {self.top_k}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0; got {self.weight_decay}"),
            (self.lr > 0, f"lr must be positive; got {self.lr}"),
            (self.batch_size >= 1, f"batch_size must be at least 1; got {self.batch_size}"),
            (self.max_epochs >= 1, f"max_epochs must be at least 1; got {self.max_epochs}"),
            (self.patience >= 1, f"patience must be at least 1; got {self.patience}"),
            (0.0 <= self.val_fraction < 1.0, f"val_fraction must be in [0, 1); got {self.val_fraction}"),
            (self.other_k is None or self.other_k > 0, f"other_k must be positive; got {self.other_k}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)


@dataclass
class SoftmaxProbe:
    """A fitted many-headed softmax probe. Tensors live on the fitting device."""

    mean: Tensor  # (d,) input standardisation
    std: Tensor  # (d,)
    weight_flat: Tensor  # (d, Hh * (K+1)): column block h is head h
    bias: Tensor  # (Hh, K+1)
    logit_mask: Tensor  # (Hh, K+1): 0, or -inf for an OTHER class with no tokens in it
    classes: Tensor  # (Hh, K) token id of each real class, most frequent first
    class_of: Tensor  # (Hh, V) class index of each token (K = OTHER)
    log_other: Tensor  # (Hh, V) log share of each out-of-top-K token in OTHER's mass (-inf in top K)
    vocab_size: int
    other_k: list[float] = field(default_factory=list)  # per head, the add-k of OTHER's spread
    best_epoch: list[int] = field(default_factory=list)  # per head, 1-based; 0 = never validated
    epochs_run: int = 0
    val_loss: list[float] = field(default_factory=list)  # per head, best validation CE over K+1 classes

    @property
    def n_heads(self) -> int:
        return self.bias.shape[0]

    @property
    def top_k(self) -> int:
        return self.classes.shape[1]

    @property
    def weight(self) -> Tensor:
        """(Hh, d, K+1) view of the weights."""
        d = self.weight_flat.shape[0]
        return self.weight_flat.view(d, self.n_heads, self.top_k + 1).permute(1, 0, 2)

    def _logits(self, X: Tensor) -> Tensor:
        """(n, Hh, K+1) logits for raw (unstandardised) inputs."""
        Xs = (X.to(self.mean.device, torch.float32) - self.mean) / self.std
        return _affine_logits(Xs, self.weight_flat, self.bias, self.logit_mask)

    @torch.no_grad()
    def log_probs_topk(self, X: Tensor) -> Tensor:
        """(N, Hh, K+1) log-probabilities over each head's K classes and OTHER (last)."""
        chunks = [
            F.log_softmax(self._logits(X[i : i + SCORE_CHUNK_ROWS]), dim=-1) for i in range(0, len(X), SCORE_CHUNK_ROWS)
        ]
        return torch.cat(chunks).cpu()

    def _full_log_prob(self, log_probs: Tensor, labels: Tensor) -> Tensor:
        """(n, Hh) log P(label) over the full vocabulary; labels must be valid token ids."""
        heads = torch.arange(self.n_heads, device=labels.device)
        cls = self.class_of[heads, labels]
        chosen = log_probs.gather(-1, cls.unsqueeze(-1)).squeeze(-1)
        return torch.where(cls == self.top_k, chosen + self.log_other[heads, labels], chosen)

    @torch.no_grad()
    def log_prob(self, X: Tensor, Y: Tensor) -> Tensor:
        """(N, Hh) full-vocabulary log-probability of each label; NaN where Y is -1."""
        Y = _check_labels(Y, len(X), self.n_heads, self.vocab_size).to(self.mean.device)
        parts = []
        for i in range(0, len(X), SCORE_CHUNK_ROWS):
            labels = Y[i : i + SCORE_CHUNK_ROWS]
            log_probs = F.log_softmax(self._logits(X[i : i + SCORE_CHUNK_ROWS]), dim=-1)
            values = self._full_log_prob(log_probs, labels.clamp(min=0))
            parts.append(torch.where(labels >= 0, values, torch.nan))
        return torch.cat(parts).cpu()

    @torch.no_grad()
    def predict_topk(self, X: Tensor, k: int = TOP) -> Tensor:
        """(N, Hh, k) token ids ranked by probability among each head's top-K classes."""
        parts = []
        for i in range(0, len(X), SCORE_CHUNK_ROWS):
            logits = self._logits(X[i : i + SCORE_CHUNK_ROWS])[..., : self.top_k]
            ranked = logits.topk(min(k, self.top_k), dim=-1).indices  # (n, Hh, k)
            parts.append(torch.gather(self.classes.expand(len(ranked), -1, -1), 2, ranked))
        return torch.cat(parts).cpu()

    @torch.no_grad()
    def score(self, X: Tensor, Y: Tensor) -> list[PairScores]:
        """PairScores of every head, each over the rows where that head's label is not -1 (in row order)."""
        Y = _check_labels(Y, len(X), self.n_heads, self.vocab_size)
        hit_parts, log_prob_parts = [], []
        for i in range(0, len(X), SCORE_CHUNK_ROWS):
            labels = Y[i : i + SCORE_CHUNK_ROWS].to(self.mean.device)
            log_probs = F.log_softmax(self._logits(X[i : i + SCORE_CHUNK_ROWS]), dim=-1)
            ranked_classes = log_probs[..., : self.top_k].topk(min(TOP, self.top_k), dim=-1).indices
            ranked = torch.gather(self.classes.expand(len(labels), -1, -1), 2, ranked_classes)
            hit_parts.append((ranked == labels.unsqueeze(-1)).cpu())
            log_prob_parts.append(self._full_log_prob(log_probs, labels.clamp(min=0)).cpu())
        hits, log_prob = torch.cat(hit_parts), torch.cat(log_prob_parts)
        scores = []
        for h in range(self.n_heads):
            rows = Y[:, h] >= 0
            scores.append(
                PairScores(
                    top1=hits[rows, h, 0].numpy(),
                    top5=hits[rows, h].any(dim=1).numpy(),
                    ce=(-log_prob[rows, h]).double().numpy(),
                )
            )
        return scores


def _check_labels(Y: Tensor, n_rows: int, n_heads: int | None, vocab_size: int) -> Tensor:
    if Y.ndim != 2 or len(Y) != n_rows or (n_heads is not None and Y.shape[1] != n_heads):
        expected = f"({n_rows}, {n_heads if n_heads is not None else 'Hh'})"
        raise ValueError(f"labels must have shape {expected}, got {tuple(Y.shape)}")
    Y = Y.to(torch.int64)
    if Y.numel() and (Y.min() < -1 or Y.max() >= vocab_size):
        raise ValueError(f"labels must be token ids in [0, {vocab_size}) or -1 (no pair)")
    return Y


def _head_vocab(Y: Tensor, vocab_size: int, top_k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per head: label counts (Hh, V), the top-K classes and the token -> class map (K = OTHER)."""
    n_heads = Y.shape[1]
    k = min(top_k, vocab_size)
    counts = torch.stack([torch.bincount(Y[:, h][Y[:, h] >= 0], minlength=vocab_size) for h in range(n_heads)]).double()
    classes = torch.sort(-counts, dim=1, stable=True).indices[:, :k]  # ties go to the lowest id
    class_of = torch.full((n_heads, vocab_size), k, dtype=torch.int64, device=Y.device)
    class_of.scatter_(1, classes, torch.arange(k, device=Y.device).expand(n_heads, k).contiguous())
    return counts, classes, class_of


def _other_smoothing(counts: Tensor, outside: Tensor, Y_val: Tensor, fixed: float | None) -> list[float]:
    """Per head, the add-k of OTHER's spread: `fixed`, or chosen on the validation labels outside the top K."""
    if fixed is not None:
        return [float(fixed)] * counts.shape[0]
    counts_np, outside_np, labels = counts.cpu().numpy(), outside.cpu().numpy(), Y_val.cpu().numpy()
    return [choose_add_k(counts_np[h], labels[:, h], outside_np[h]) for h in range(counts.shape[0])]


def _other_log_shares(counts: Tensor, outside: Tensor, other_k: Sequence[float]) -> Tensor:
    """(Hh, V) log share of each out-of-top-K token in OTHER's mass: add-k smoothed counts (-inf in the top K)."""
    k = torch.tensor(other_k, dtype=counts.dtype, device=counts.device)[:, None]
    smoothed = torch.where(outside, counts + k, torch.zeros_like(counts))
    total = smoothed.sum(dim=1, keepdim=True)
    total = torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(outside, (smoothed / total).log(), torch.full_like(counts, -torch.inf)).float()


def _to_classes(Y: Tensor, class_of: Tensor) -> Tensor:
    heads = torch.arange(Y.shape[1], device=Y.device)
    return torch.where(Y >= 0, class_of[heads, Y.clamp(min=0)], -1)


def _moments(X: Tensor, index: Tensor, chunk_rows: int = SCORE_CHUNK_ROWS) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation (float64, unbiased, at least 1e-6) of the rows `index` of X, a chunk at a
    time, so a lazy row view (probes.probing.rowviews) never holds more than one chunk."""
    total = torch.zeros(X.shape[1], dtype=torch.float64, device=X.device)
    for i in range(0, len(index), chunk_rows):
        total += X[index[i : i + chunk_rows]].double().sum(dim=0)
    mean = total / max(len(index), 1)
    squares = torch.zeros_like(total)
    for i in range(0, len(index), chunk_rows):
        squares += (X[index[i : i + chunk_rows]].double() - mean).square().sum(dim=0)
    return mean, (squares / max(len(index) - 1, 1)).sqrt().clamp(min=1e-6)


def _affine_logits(Xs: Tensor, weight_flat: Tensor, bias: Tensor, logit_mask: Tensor) -> Tensor:
    """(n, Hh, K+1) logits of standardised rows: one addmm adds the bias and the mask inside the matrix
    product, instead of two more passes over the (n, Hh·(K+1)) logits (a seventh of a training step on CPU)."""
    n_heads, n_classes = bias.shape
    logits = torch.addmm((bias + logit_mask).view(-1), Xs, weight_flat)
    return logits.view(len(Xs), n_heads, n_classes)


def _head_losses(probe: SoftmaxProbe, Xs: Tensor, Yc: Tensor) -> Tensor:
    """(Hh,) mean cross-entropy over the K+1 classes of each head on standardised rows."""
    total = torch.zeros(probe.n_heads, dtype=torch.float64, device=Xs.device)
    count = torch.zeros(probe.n_heads, dtype=torch.float64, device=Xs.device)
    for i in range(0, len(Xs), SCORE_CHUNK_ROWS):
        y = Yc[i : i + SCORE_CHUNK_ROWS]
        logits = _affine_logits(Xs[i : i + SCORE_CHUNK_ROWS], probe.weight_flat, probe.bias, probe.logit_mask)
        losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-1, reduction="none")
        total += losses.view(len(y), -1).sum(dim=0).double()
        count += (y >= 0).sum(dim=0).double()
    return total / count.clamp(min=1.0)


def fit_softmax(
    X: Tensor, Y: Tensor, groups: Tensor | np.ndarray, vocab_size: int, config: SoftmaxConfig | None = None
) -> SoftmaxProbe:
    """Fit one softmax probe with Hh heads.

    X: (N, d) inputs. Y: (N, Hh) int64 token ids, -1 where a head has no pair. groups: (N,) document ids;
    a ``val_fraction`` of the documents is held out (seeded) for early stopping, and each head keeps the
    weights of its best validation epoch. Training stops once no head has improved for ``patience``
    epochs. Deterministic for a given seed and device.
    """
    config = config or SoftmaxConfig()
    device = resolve_device(config.device)
    if X.ndim != 2:
        raise ValueError(f"X must be (N, d), got {tuple(X.shape)}")
    Y = Y if is_view(Y) else _check_labels(Y, len(X), None, vocab_size)
    group_array = groups.cpu().numpy() if isinstance(groups, Tensor) else np.asarray(groups)
    if group_array.shape != (len(X),):
        raise ValueError(f"groups must have shape ({len(X)},), got {group_array.shape}")
    fit_rows, val_rows = validation_split(group_array, config.val_fraction, config.seed)
    fit_index = torch.from_numpy(fit_rows)
    if not bool((Y[fit_index] >= 0).any()):
        raise UsageError("no train pairs for the softmax probe: use more text or a smaller tau")

    X = X.to(device, torch.float32)
    Y = Y.to(device)
    counts, classes, class_of = _head_vocab(Y[fit_index.to(device)], vocab_size, config.top_k)
    outside = class_of == classes.shape[1]
    has_other = outside.any(dim=1)
    other_k = _other_smoothing(counts, outside, Y[torch.from_numpy(val_rows).to(device)], config.other_k)
    log_other = _other_log_shares(counts, outside, other_k)
    mean, std = _moments(X, fit_index.to(device))
    Xs = X.standardised(mean, std) if is_view(X) else ((X - mean) / std).float()
    Yc = Y.mapped(lambda y: _to_classes(y, class_of)) if is_view(Y) else _to_classes(Y, class_of)

    n_heads, k = classes.shape
    logit_mask = torch.zeros(n_heads, k + 1, device=device)
    logit_mask[~has_other, k] = -torch.inf
    probe = SoftmaxProbe(
        mean=mean.float(),
        std=std.float(),
        weight_flat=torch.zeros(X.shape[1], n_heads * (k + 1), device=device),
        bias=_prior_bias(Yc[fit_index.to(device)], k + 1),
        logit_mask=logit_mask,
        classes=classes,
        class_of=class_of,
        log_other=log_other,
        vocab_size=vocab_size,
        other_k=other_k,
    )
    _train(probe, Xs, Yc, fit_rows, val_rows, config)
    return probe


def _prior_bias(Yc: Tensor, n_classes: int) -> Tensor:
    """Start each head at its smoothed class prior: the zero-weight model's best bias."""
    counts = torch.stack(
        [torch.bincount(Yc[:, h][Yc[:, h] >= 0], minlength=n_classes) for h in range(Yc.shape[1])]
    ).float()
    return ((counts + 0.5) / (counts + 0.5).sum(dim=1, keepdim=True)).log()


def _train(
    probe: SoftmaxProbe, Xs: Tensor, Yc: Tensor, fit_rows: np.ndarray, val_rows: np.ndarray, config: SoftmaxConfig
) -> None:
    """Minibatch AdamW over the fitting rows; per-head best-epoch selection on the validation rows."""
    device = Xs.device
    weight = probe.weight_flat.requires_grad_(True)
    bias = probe.bias.requires_grad_(True)
    optimizer = torch.optim.AdamW(
        [
            {"params": [weight], "weight_decay": config.weight_decay},
            {"params": [bias], "weight_decay": 0.0},
        ],
        lr=config.lr,
        fused=Xs.device.type in ("cpu", "cuda"),  # one kernel per step instead of one per operation
    )
    n_heads, n_classes = probe.bias.shape
    fit_index = torch.from_numpy(fit_rows).to(device)
    val_index = torch.from_numpy(val_rows).to(device)
    X_val, Y_val = subset(Xs, val_index), subset(Yc, val_index)  # lazy views stay lazy
    best_loss = torch.full((n_heads,), torch.inf, dtype=torch.float64, device=device)
    best_weight = weight.detach().clone().view(-1, n_heads, n_classes)
    best_bias = bias.detach().clone()
    best_epoch = torch.zeros(n_heads, dtype=torch.int64)
    stale = torch.zeros(n_heads, dtype=torch.int64)
    generator = torch.Generator().manual_seed(config.seed)

    for epoch in range(1, config.max_epochs + 1):
        order = fit_index[torch.randperm(len(fit_index), generator=generator).to(device)]
        for start in range(0, len(order), config.batch_size):
            rows = order[start : start + config.batch_size]
            y = Yc[rows]
            logits = _affine_logits(Xs[rows], weight, bias, probe.logit_mask)
            # Rows of (B*Hh, K+1): much faster than the class-in-dim-1 layout on CPU.
            loss = F.cross_entropy(logits.reshape(-1, n_classes), y.reshape(-1), ignore_index=-1, reduction="sum")
            loss = loss / len(rows)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        probe.epochs_run = epoch
        if len(val_rows) == 0:
            continue
        with torch.no_grad():
            losses = _head_losses(probe, X_val, Y_val)
            improved = losses < best_loss
            best_loss = torch.where(improved, losses, best_loss)
            best_weight[:, improved] = weight.detach().view(-1, n_heads, n_classes)[:, improved]
            best_bias[improved] = bias.detach()[improved]
            improved_cpu = improved.cpu()
            best_epoch[improved_cpu] = epoch
            stale = torch.where(improved_cpu, 0, stale + 1)
        if bool((stale >= config.patience).all()):
            break

    weight.requires_grad_(False)
    bias.requires_grad_(False)
    if len(val_rows):
        probe.weight_flat = best_weight.reshape(-1, n_heads * n_classes).contiguous()
        probe.bias = best_bias
        probe.val_loss = best_loss.cpu().tolist()
    probe.best_epoch = best_epoch.tolist() if len(val_rows) else [probe.epochs_run] * n_heads


# --------------------------------------------------------------------------------------------------
# Least-squares map (Future Lens linear approximation)
# --------------------------------------------------------------------------------------------------

Decode = Callable[[Tensor], Tensor]


@dataclass
class LstsqMap:
    """Affine map x -> x @ weight + bias, fitted in float64."""

    weight: Tensor  # (d_in, d_out) float64
    bias: Tensor  # (d_out,) float64
    ridge: float  # the absolute ridge penalty used

    def predict(self, X: Tensor) -> Tensor:
        """(n, d_out) predictions, float64 for float64 inputs, float32 otherwise."""
        out_dtype = torch.float64 if X.dtype == torch.float64 else torch.float32
        result = X.to(self.weight.device, torch.float64) @ self.weight + self.bias
        return result.to(out_dtype)


def _column_means(X: Tensor, chunk_rows: int) -> Tensor:
    total = torch.zeros(X.shape[1], dtype=torch.float64, device=X.device)
    for i in range(0, len(X), chunk_rows):
        total += X[i : i + chunk_rows].double().sum(dim=0)
    return total / len(X)


def fit_lstsq(X: Tensor, Yres: Tensor, ridge: float | None = None, chunk_rows: int = 8192) -> LstsqMap:
    """Ridge regression Yres ≈ X W + b in closed form (float64, intercept by centring, unpenalised).

    W = (XcᵀXc + λI)⁻¹ XcᵀYc, b = mean(Y) - mean(X) W. ``ridge`` is λ; None uses
    ``RELATIVE_RIDGE`` (1e-3) times the mean diagonal of XcᵀXc.
    """
    if X.ndim != 2 or Yres.ndim != 2 or len(X) != len(Yres):
        raise ValueError(f"X {tuple(X.shape)} and Yres {tuple(Yres.shape)} must be (n, d_in) and (n, d_out)")
    _check_lstsq(len(X), ridge)
    Yres = Yres.to(X.device)
    mean_x, mean_y = _column_means(X, chunk_rows), _column_means(Yres, chunk_rows)
    gram = torch.zeros(X.shape[1], X.shape[1], dtype=torch.float64, device=X.device)
    cross = torch.zeros(X.shape[1], Yres.shape[1], dtype=torch.float64, device=X.device)
    for i in range(0, len(X), chunk_rows):
        xc = X[i : i + chunk_rows].double() - mean_x
        gram += xc.T @ xc
        cross += xc.T @ (Yres[i : i + chunk_rows].double() - mean_y)
    return _ridge_map(gram, cross, mean_x, mean_y, ridge)


def _check_lstsq(n_pairs: int, ridge: float | None) -> None:
    if n_pairs < 2:
        raise UsageError("the least-squares probe needs at least two train pairs")
    if ridge is not None and ridge < 0:
        raise UsageError(f"ridge must be >= 0; got {ridge}")


def _ridge_map(gram: Tensor, cross: Tensor, mean_x: Tensor, mean_y: Tensor, ridge: float | None) -> LstsqMap:
    """The map from the centred XcᵀXc and XcᵀYc: λ = ``ridge``, or RELATIVE_RIDGE × the mean diagonal of XcᵀXc."""
    lam = float(ridge) if ridge is not None else RELATIVE_RIDGE * float(gram.diagonal().mean())
    system = gram + lam * torch.eye(len(gram), dtype=torch.float64, device=gram.device)
    weight = torch.linalg.solve(system, cross)
    return LstsqMap(weight=weight, bias=mean_y - mean_x @ weight, ridge=lam)


@dataclass
class LstsqSums:
    """float64 sums over one set of pairs, from which `solve` gives `fit_lstsq`'s map of those pairs.

    Sums of disjoint sets add up (``a + b``), so a map fitted with and without the validation documents takes one
    pass over the data instead of two, and the Gram matrices of several τ share one pass (their pairs differ only
    in the last positions of each window).
    """

    n: int
    sum_x: Tensor  # (d_in,)
    sum_y: Tensor  # (d_out,)
    gram: Tensor  # (d_in, d_in) ΣxxT
    cross: Tensor  # (d_in, d_out) ΣxyT

    def __add__(self, other: LstsqSums) -> LstsqSums:
        return LstsqSums(
            self.n + other.n,
            self.sum_x + other.sum_x,
            self.sum_y + other.sum_y,
            self.gram + other.gram,
            self.cross + other.cross,
        )

    def solve(self, ridge: float | None = None) -> LstsqMap:
        """The ridge map of these pairs, centred as in `fit_lstsq` (to float64 rounding)."""
        _check_lstsq(self.n, ridge)
        mean_x, mean_y = self.sum_x / self.n, self.sum_y / self.n
        gram = self.gram - self.n * torch.outer(mean_x, mean_x)
        cross = self.cross - self.n * torch.outer(mean_x, mean_y)
        return _ridge_map(gram, cross, mean_x, mean_y, ridge)


def gram_sums(X: Tensor, chunk_rows: int = 8192) -> tuple[int, Tensor, Tensor]:
    """(rows, Σx, ΣxxT) of X in float64, a chunk at a time."""
    d = X.shape[1]
    total = torch.zeros(d, dtype=torch.float64, device=X.device)
    gram = torch.zeros(d, d, dtype=torch.float64, device=X.device)
    for i in range(0, len(X), chunk_rows):
        x = X[i : i + chunk_rows].double()
        total += x.sum(dim=0)
        gram += x.T @ x
    return len(X), total, gram


def cross_sums(X: Tensor, Y: Tensor, chunk_rows: int = 8192) -> tuple[Tensor, Tensor]:
    """(Σy, ΣxyT) of paired rows in float64, a chunk at a time."""
    total = torch.zeros(Y.shape[1], dtype=torch.float64, device=X.device)
    cross = torch.zeros(X.shape[1], Y.shape[1], dtype=torch.float64, device=X.device)
    for i in range(0, len(X), chunk_rows):
        y = Y[i : i + chunk_rows].to(X.device).double()
        total += y.sum(dim=0)
        cross += X[i : i + chunk_rows].double().T @ y
    return total, cross


@torch.no_grad()
def lstsq_scores(
    lmap: LstsqMap, X: Tensor, decode: Decode, labels: Mapping[str, Tensor], chunk_rows: int = 256
) -> dict[str, PairScores]:
    """Score a fitted map against one or more label vectors on the same test pairs.

    X: (n, d) test inputs. ``decode`` maps predicted final residuals (m, d) to full-vocabulary logits
    (m, V) (the model's final norm and unembedding). ``labels``: name -> (n,) token ids. Rows are
    decoded ``chunk_rows`` at a time so (chunk_rows, V) is the largest array held.
    """
    for name, y in labels.items():
        if y.shape != (len(X),):
            raise ValueError(f"labels {name!r} must have shape ({len(X)},), got {tuple(y.shape)}")
    parts: dict[str, list[tuple[Tensor, Tensor, Tensor]]] = {name: [] for name in labels}
    for i in range(0, len(X), chunk_rows):
        log_probs = F.log_softmax(decode(lmap.predict(X[i : i + chunk_rows])).float(), dim=-1)
        ranked = log_probs.topk(min(TOP, log_probs.shape[-1]), dim=-1).indices
        for name, y in labels.items():
            chunk = y[i : i + chunk_rows].to(log_probs.device, torch.int64)
            hits = ranked == chunk.unsqueeze(1)
            ce = -log_probs.gather(1, chunk.unsqueeze(1)).squeeze(1)
            parts[name].append((hits[:, 0].cpu(), hits.any(dim=1).cpu(), ce.double().cpu()))
    return {
        name: PairScores(
            top1=torch.cat([p[0] for p in chunks]).numpy(),
            top5=torch.cat([p[1] for p in chunks]).numpy(),
            ce=torch.cat([p[2] for p in chunks]).numpy(),
        )
        for name, chunks in parts.items()
    }


def lstsq_pairs(H: Tensor, final: Tensor, tau: int) -> tuple[Tensor, Tensor]:
    """Inputs h_t (n, d) and regression targets final[:, t+τ-1] (n, d) for every pair of offset τ.

    Rows follow the pair order of ``probes.probing.targets`` (window-major, t < T - τ).
    """
    if H.ndim != 3 or final.shape[:2] != H.shape[:2]:
        raise ValueError(f"H {tuple(H.shape)} and final {tuple(final.shape)} must be (W, T, d)")
    seq_len = H.shape[1]
    if not 1 <= tau < seq_len:
        raise UsageError(f"tau must satisfy 1 <= tau < seq-len ({seq_len}); got {tau}")
    X = H[:, : seq_len - tau].reshape(-1, H.shape[2])
    Yres = final[:, tau - 1 : seq_len - 1].reshape(-1, final.shape[2])
    return X, Yres


def lstsq_grid(
    H_train: Tensor,
    final_train: Tensor,
    H_test: Tensor,
    tokens_test: Tensor,
    model_pred_test: Tensor,
    taus: Sequence[int],
    decode: Decode,
    ridge: float | None = None,
    targets: Sequence[str] = TARGETS,
    chunk_rows: int = 256,
) -> dict[tuple[int, str], PairScores]:
    """Fit the least-squares map of one layer for every τ and score it against every target.

    H_*: (W, T, d) hidden states of the layer, final_train: (W, T, d) final-layer residual (before the
    final norm), tokens_test / model_pred_test: (W_test, T). One decode per test chunk serves all
    targets. Pair order per τ matches ``probes.probing.targets.pair_groups``.
    """
    seq_len = H_test.shape[1]
    results: dict[tuple[int, str], PairScores] = {}
    for tau in taus:
        lmap = fit_lstsq(*lstsq_pairs(H_train, final_train, tau), ridge=ridge)
        X_test = H_test[:, : seq_len - tau].reshape(-1, H_test.shape[2])
        labels = {
            target: target_labels(tokens_test, model_pred_test, tau, target)[:, : seq_len - tau].reshape(-1)
            for target in targets
        }
        for target, scores in lstsq_scores(lmap, X_test, decode, labels, chunk_rows=chunk_rows).items():
            results[(tau, target)] = scores
    return results
