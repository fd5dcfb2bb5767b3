"""The three gradients of a batch's mean loss, and the running inner products the lens estimates need.

For each batch (a set of whole documents, cut into chunks of at most a few dozen windows for memory) the mean
loss is differentiated three times with dropout off: under `myopic(model, strict=True)` (g_strict), under
`myopic(model)` (g_myopic) and as is (g_vanilla). Nothing per batch is kept but small numbers:
- the running sums S_x = Σ_b w_b g_x,b of each part x: direct (g_strict), reading the past
  (g_myopic − g_strict) and pre-caching (g_vanilla − g_myopic), three parameter-sized buffers;
- each batch's own inner products ⟨g_x,b, g_y,b⟩ of the parts per component (3 × 3 per component);
- a sketch of each batch's parts per component (at most `sketch_dim` numbers per component and gradient),
  from which the batch × batch inner products behind the resampling intervals are estimated: a component
  of at most `sketch_dim` scalars is kept exactly, a larger one is folded into `sketch_dim` buckets with fixed
  random signs (a count sketch: ⟨sketch a, sketch b⟩ is an unbiased estimate of ⟨a, b⟩).
Peak memory: the model, its gradient, two gradient buffers and the three sums (7 parameter-sized tensors), plus
one chunk's activations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from probes.lens.estimate import KINDS
from probes.lens.groups import ParameterGroups
from probes.training.myopic import gradient_mode

MODE_OF_KIND = {"strict": "strict-myopic", "myopic": "myopic", "vanilla": "vanilla"}
DEFAULT_SKETCH_DIM = 4096
_DOT_CHUNK = 1 << 16  # float32 inner products over slices of this many scalars, summed in float64


@dataclass(frozen=True)
class LensBatch:
    """One unit of the cross-batch estimate: whole documents (or independent sequences), in chunks."""

    batch_id: int
    chunks: tuple[Any, ...]  # each chunk is an input of the loss function
    chunk_weights: tuple[int, ...]  # windows (sequences) per chunk

    @property
    def weight(self) -> int:
        return sum(self.chunk_weights)


LossFn = Callable[[nn.Module, Any], Tensor]  # the mean loss over one chunk's positions


@dataclass
class GradientStats:
    """What `measure` keeps: enough for every lens number and its interval."""

    components: tuple[str, ...]
    batch_ids: np.ndarray  # (B,)
    weights: np.ndarray  # (B,) windows per batch
    totals: np.ndarray  # (G, 3, 3) ⟨S_x, S_y⟩ per component, S_x = Σ_b w_b g_x,b over the parts x (PARTS)
    diagonal: np.ndarray  # (B, G, 3, 3) ⟨g_x,b, g_y,b⟩
    sketches: list[np.ndarray]  # per component: (B, 3, m) sketched g_x,b
    exact_sketch: tuple[bool, ...]  # per component: the sketch is the gradient itself

    def cross(self) -> np.ndarray:
        """(B, B, G, 3, 3) batch × batch inner products (sketched off the diagonal, exact on it)."""
        n_batches, n_groups = len(self.weights), len(self.components)
        cross = np.empty((n_batches, n_batches, n_groups, 3, 3))
        for group, sketch in enumerate(self.sketches):
            cross[:, :, group] = np.einsum("bxm,cym->bcxy", sketch, sketch)
        index = np.arange(n_batches)
        cross[index, index] = self.diagonal
        return cross

    def ordered(self) -> GradientStats:
        """The same numbers with batches sorted by id: what resampling sees does not depend on batch order."""
        order = np.argsort(self.batch_ids, kind="stable")
        return GradientStats(
            self.components,
            self.batch_ids[order],
            self.weights[order],
            self.totals,
            self.diagonal[order],
            [sketch[order] for sketch in self.sketches],
            self.exact_sketch,
        )


def gram3(parts: Sequence[Tensor]) -> np.ndarray:
    """The 3 × 3 inner products of three same-shaped tensors, summed in float64.

    float64 inputs: one dot product per pair. float32 inputs: dot products over slices of `_DOT_CHUNK` scalars
    (float32 BLAS, the slices small enough that each partial sum is exact to about 1e-8 relative), summed in
    float64 across slices. Each slice of the three is read while it is in cache; no float64 copy is made.
    """
    flat = [part.reshape(-1) for part in parts]
    n = flat[0].numel()
    chunk = n if flat[0].dtype == torch.float64 else _DOT_CHUNK
    pairs = [(x, y) for x in range(3) for y in range(x, 3)]
    sums = torch.zeros(len(pairs), dtype=torch.float64, device=flat[0].device)
    for lo in range(0, max(n, 1), chunk):
        pieces = [vector[lo : lo + chunk] for vector in flat]
        sums += torch.stack([torch.dot(pieces[x], pieces[y]) for x, y in pairs]).double()
    values = sums.cpu().numpy()
    gram = np.empty((3, 3))
    for (x, y), value in zip(pairs, values, strict=True):
        gram[x, y] = gram[y, x] = value
    return gram


class Sketcher:
    """Fixed per-component maps from a gradient to at most `dim` numbers (exact when the component fits).

    A larger component's scalars, in order, get independent random signs and fall into bucket (position mod
    `dim`): a count sketch, whose inner products are unbiased estimates of the gradients' inner products. The signs
    are kept per parameter in its dtype (one more copy of those parameters) so that a sketch is one multiply and
    one sum over rows, with no conversion.
    """

    def __init__(self, groups: ParameterGroups, dim: int, seed: int) -> None:
        self.groups = groups
        sizes = groups.sizes
        self.dims = tuple(min(size, dim) for size in sizes)
        self.exact = tuple(size <= dim for size in sizes)
        self.offsets: list[int] = []
        self.signs: list[Tensor | None] = []
        filled = [0] * len(sizes)
        generator = torch.Generator().manual_seed(seed)
        for tensor, group in zip(groups.parameters, groups.group_of, strict=True):
            self.offsets.append(filled[group])
            filled[group] += tensor.numel()
            if self.exact[group]:
                self.signs.append(None)
            else:
                signs = torch.empty(tensor.numel()).bernoulli_(0.5, generator=generator).mul_(2).sub_(1)
                self.signs.append(signs.to(tensor.device, tensor.dtype))

    def sketch(self, gradients: Sequence[Tensor]) -> list[np.ndarray]:
        """Per component, the (m,) sketch of one gradient (given per parameter)."""
        device = gradients[0].device
        out = [torch.zeros(dim, dtype=torch.float64, device=device) for dim in self.dims]
        for gradient, group, offset, signs in zip(
            gradients, self.groups.group_of, self.offsets, self.signs, strict=True
        ):
            flat = gradient.reshape(-1)
            if signs is not None:
                flat = flat * signs
            _fold_into(out[group], flat, offset % self.dims[group])
        return [vector.cpu().numpy() for vector in out]


def _fold_into(out: Tensor, flat: Tensor, start: int) -> None:
    """out[(start + i) mod m] += flat[i] for every i, m = len(out): a partial first row, whole rows, a partial last."""
    m, n = len(out), flat.numel()
    head = min(n, (m - start) % m)
    out[start : start + head] += flat[:head]
    rows = (n - head) // m
    if rows:
        out += flat[head : head + rows * m].view(rows, m).sum(0)
    tail = flat[head + rows * m :]
    out[: len(tail)] += tail


def batch_gradient(model: nn.Module, batch: LensBatch, loss_fn: LossFn, mode: str) -> None:
    """Leave the gradient of the batch's mean loss (over its windows) in `.grad`, under gradient `mode`."""
    model.zero_grad(set_to_none=True)
    total = batch.weight
    with gradient_mode(model, mode):
        for chunk, weight in zip(batch.chunks, batch.chunk_weights, strict=True):
            (loss_fn(model, chunk) * (weight / total)).backward()


def _grads(groups: ParameterGroups) -> list[Tensor]:
    return [p.grad if p.grad is not None else torch.zeros_like(p) for p in groups.parameters]


def measure(
    model: nn.Module,
    batches: Sequence[LensBatch],
    loss_fn: LossFn,
    groups: ParameterGroups,
    sketch_dim: int = DEFAULT_SKETCH_DIM,
    seed: int = 0,
    progress: bool = False,
) -> GradientStats:
    """Run the three gradients on every batch; keep the sums, each batch's inner products and the sketches
    (none with `sketch_dim` 0: no intervals)."""
    was_training = model.training
    model.eval()  # dropout off
    n_groups = len(groups.components)
    sums = [[torch.zeros_like(p) for p in groups.parameters] for _ in KINDS]
    diagonal = np.zeros((len(batches), n_groups, 3, 3))
    sketcher = Sketcher(groups, sketch_dim, seed) if sketch_dim > 0 else None
    dims = sketcher.dims if sketcher is not None else (0,) * n_groups
    sketches = [np.zeros((len(batches), 3, dim)) for dim in dims]
    try:
        for b, batch in enumerate(tqdm(batches, desc="gradient lens", unit="batch", disable=not progress)):
            current: list[list[Tensor]] = []
            for kind in KINDS:
                batch_gradient(model, batch, loss_fn, MODE_OF_KIND[kind])
                grads = _grads(groups)
                # The last kind's gradient is used in place; the others are copied before the next pass.
                current.append(grads if kind == KINDS[-1] else [g.detach().clone() for g in grads])
            _to_parts(current)
            _batch_products(current, groups, diagonal[b])
            for x, gradient in enumerate(current):
                for group, vector in enumerate(sketcher.sketch(gradient) if sketcher is not None else ()):
                    sketches[group][b, x] = vector
                for total, g in zip(sums[x], gradient, strict=True):
                    total.add_(g, alpha=float(batch.weight))
            del current
            model.zero_grad(set_to_none=True)
        totals = np.zeros((n_groups, 3, 3))
        _batch_products(sums, groups, totals)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return GradientStats(
        components=groups.components,
        batch_ids=np.array([batch.batch_id for batch in batches], dtype=np.int64),
        weights=np.array([batch.weight for batch in batches], dtype=np.float64),
        totals=totals,
        diagonal=diagonal,
        sketches=sketches,
        exact_sketch=sketcher.exact if sketcher is not None else (False,) * n_groups,
    )


def _to_parts(gradients: list[list[Tensor]]) -> None:
    """(strict, myopic, vanilla) → (direct, reading the past, pre-caching), in place, parameter by parameter.

    The parts' inner products are then taken from the differences themselves, not by cancelling large
    inner products of the gradients (which would leave rounding noise where a part is exactly zero).
    """
    for strict, myopic, vanilla in zip(*gradients, strict=True):
        vanilla.sub_(myopic)
        myopic.sub_(strict)


def _batch_products(gradients: list[list[Tensor]], groups: ParameterGroups, into: np.ndarray) -> None:
    """into[group] += the 3 × 3 inner products of the three parts given per parameter, restricted to the group."""
    for index, group in enumerate(groups.group_of):
        into[group] += gram3([parts[index] for parts in gradients])
