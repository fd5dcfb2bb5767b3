"""Lazy row views: a probe's inputs and labels, read only when a chunk or minibatch asks for them.

The fitting code (`probes.probing.linear`) indexes its inputs as tensors: `X[i:j]` for chunks, `X[rows]` for
minibatches, `len(X)`, `X.shape`. A `RowView` answers the same calls by reading those rows of a store layer
(`probes.activation_rows.LayerRows`) and a `LabelView` by computing those rows' labels from the token ids, so a
fit holds one chunk or minibatch of activations at a time instead of the layer. A view returns exactly the
values the materialised tensor would hold (float32 rows, standardised with the same float64 arithmetic), so
fits from views equal fits from tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from probes.activation_rows import LayerRows


def _positions(key: Any, length: int) -> np.ndarray:
    """Positions in the view selected by a slice, a tensor or an array of positions."""
    if isinstance(key, slice):
        return np.arange(length)[key]
    if isinstance(key, Tensor):
        return key.detach().cpu().numpy().astype(np.int64, copy=False).reshape(-1)
    return np.asarray(key, dtype=np.int64).reshape(-1)


class RowView:
    """A lazy (n, d) float32 matrix: row i is row `index[i]` of one store layer (optionally standardised)."""

    ndim = 2
    dtype = torch.float32

    def __init__(
        self,
        reader: LayerRows,
        index: np.ndarray,
        device: torch.device | str = "cpu",
        mean: Tensor | None = None,
        std: Tensor | None = None,
    ) -> None:
        self.reader = reader
        self.index = np.asarray(index, dtype=np.int64).reshape(-1)
        self.device = torch.device(device)
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.index), self.reader.d))

    def __getitem__(self, key: Any) -> Tensor:
        rows = self.reader.gather(self.index[_positions(key, len(self.index))]).to(self.device)
        if self.mean is not None and self.std is not None:
            rows = ((rows - self.mean) / self.std).float()
        return rows

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> RowView:
        if dtype not in (None, torch.float32):
            raise TypeError("a RowView yields float32 rows")
        return self if device is None else RowView(self.reader, self.index, device, self.mean, self.std)

    def subset(self, positions: Any) -> RowView:
        index = self.index[_positions(positions, len(self.index))]
        return RowView(self.reader, index, self.device, self.mean, self.std)

    def standardised(self, mean: Tensor, std: Tensor) -> RowView:
        """The same rows as `((X - mean) / std).float()` would give (float64 arithmetic, float32 result)."""
        return RowView(self.reader, self.index, self.device, mean.to(self.device), std.to(self.device))


class LabelView:
    """A lazy (n, Hh) int64 label matrix: row i holds the labels of store row `index[i]`, from `labels_of`."""

    ndim = 2
    dtype = torch.int64

    def __init__(
        self,
        labels_of: Callable[[Tensor], Tensor],
        index: np.ndarray,
        n_heads: int,
        device: torch.device | str = "cpu",
        mapping: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        self.labels_of = labels_of
        self.index = np.asarray(index, dtype=np.int64).reshape(-1)
        self.n_heads = n_heads
        self.device = torch.device(device)
        self.mapping = mapping

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.index), self.n_heads))

    def __getitem__(self, key: Any) -> Tensor:
        rows = torch.from_numpy(self.index[_positions(key, len(self.index))])
        labels = self.labels_of(rows).to(self.device)
        return self.mapping(labels) if self.mapping is not None else labels

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> LabelView:
        if dtype not in (None, torch.int64):
            raise TypeError("a LabelView yields int64 labels")
        if device is None:
            return self
        return LabelView(self.labels_of, self.index, self.n_heads, device, self.mapping)

    def subset(self, positions: Any) -> LabelView:
        index = self.index[_positions(positions, len(self.index))]
        return LabelView(self.labels_of, index, self.n_heads, self.device, self.mapping)

    def mapped(self, mapping: Callable[[Tensor], Tensor]) -> LabelView:
        """The same rows with `mapping` applied to each chunk's labels (e.g. token id -> class index)."""
        return LabelView(self.labels_of, self.index, self.n_heads, self.device, mapping)


def subset(rows: Any, index: Tensor) -> Any:
    """`rows[index]`, staying lazy for a view."""
    return rows.subset(index) if isinstance(rows, (RowView, LabelView)) else rows[index]


def is_view(rows: Any) -> bool:
    return isinstance(rows, (RowView, LabelView))
