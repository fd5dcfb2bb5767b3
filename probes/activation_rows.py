"""Rows of one layer of an activation store, read on demand: memory holds what was asked for, not the layer.

A store shard keeps `resid.{layer}` as a (w, T, d) tensor in a safetensors file, so row r of the layer
(window r // T, position r % T, in store order) is d contiguous values at a known byte offset. `LayerRows`
reads any set of rows with positioned reads (`os.preadv`, one read per run of consecutive rows), or, with
`in_memory=True`, loads the layer once in its stored dtype and indexes it. Both give identical float32
rows, so a fit does not depend on which one it used; only its peak memory and speed do.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

# safetensors dtype -> (numpy dtype of the raw bytes, torch dtype they stand for)
RAW_DTYPES = {
    "F16": (np.float16, torch.float16),
    "F32": (np.float32, torch.float32),
    "BF16": (np.uint16, torch.bfloat16),
}


def tensor_location(path: Path, name: str) -> tuple[int, str, list[int]]:
    """Byte offset of tensor `name` in a safetensors file, its dtype code and its shape."""
    with open(path, "rb") as handle:
        (header_size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(header_size))
    entry = header[name]
    return 8 + header_size + int(entry["data_offsets"][0]), str(entry["dtype"]), list(entry["shape"])


class LayerRows:
    """Row access to one stored layer across its shards; `gather(rows)` -> (len(rows), d) float32."""

    def __init__(self, shard_paths: Sequence[Path], key: str, in_memory: bool = False) -> None:
        locations = [tensor_location(Path(path), key) for path in shard_paths]
        dtypes = {dtype for _, dtype, _ in locations}
        if len(dtypes) != 1 or next(iter(dtypes)) not in RAW_DTYPES:
            raise ValueError(f"{key}: unsupported or mixed stored dtypes {sorted(dtypes)}")
        self.key = key
        self._raw, self._torch_dtype = RAW_DTYPES[dtypes.pop()]
        shapes = [shape for _, _, shape in locations]
        self.d = int(shapes[0][-1])
        self._shard_rows = np.array([int(np.prod(shape[:-1])) for shape in shapes], dtype=np.int64)
        self._first_row = np.concatenate([[0], np.cumsum(self._shard_rows)])
        self.n_rows = int(self._first_row[-1])
        self._row_bytes = self.d * np.dtype(self._raw).itemsize
        self._offsets = [offset for offset, _, _ in locations]
        self._fds: list[int] = []
        self._data: torch.Tensor | None = None
        if in_memory:
            parts = []
            for path in shard_paths:
                with safe_open(str(path), framework="pt") as handle:
                    parts.append(handle.get_tensor(key).reshape(-1, self.d))
            self._data = torch.cat(parts) if parts else torch.zeros(0, self.d, dtype=self._torch_dtype)
        else:
            self._fds = [os.open(path, os.O_RDONLY) for path in shard_paths]

    @property
    def in_memory(self) -> bool:
        return self._data is not None

    @property
    def nbytes(self) -> int:
        """Bytes of the whole layer in its stored dtype."""
        return self.n_rows * self._row_bytes

    def __len__(self) -> int:
        return self.n_rows

    def gather(self, rows: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The given rows (store order: window * T + position) as a (len(rows), d) float32 tensor, in order."""
        index = rows.cpu().numpy() if isinstance(rows, torch.Tensor) else np.asarray(rows)
        index = index.astype(np.int64, copy=False).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= self.n_rows):
            raise IndexError(f"row index out of range for {self.key} ({self.n_rows} rows)")
        if self._data is not None:
            return self._data[torch.from_numpy(index)].float()
        out = np.empty((len(index), self.d), dtype=self._raw)
        if len(index):
            self._read_into(out, index)
        raw = torch.from_numpy(out)
        return (raw.view(self._torch_dtype) if self._raw is np.uint16 else raw).float()

    def _read_into(self, out: np.ndarray, index: np.ndarray) -> None:
        shard = np.searchsorted(self._first_row, index, side="right") - 1
        local = index - self._first_row[shard]
        breaks = np.flatnonzero((np.diff(index) != 1) | (np.diff(shard) != 0)) + 1
        starts = np.concatenate([[0], breaks]).tolist()
        ends = np.concatenate([breaks, [len(index)]]).tolist()
        buffer = memoryview(out.reshape(-1).view(np.uint8))
        size = self._row_bytes
        for start, end in zip(starts, ends, strict=True):
            part = int(shard[start])
            offset = self._offsets[part] + int(local[start]) * size
            wanted = (end - start) * size
            if os.preadv(self._fds[part], [buffer[start * size : end * size]], offset) != wanted:
                raise OSError(f"short read from shard {part} of {self.key}")

    def blocks(self, block_rows: int) -> Iterator[tuple[int, torch.Tensor]]:
        """Every row in store order, `block_rows` at a time: (first row, (n, d) float32)."""
        for start in range(0, self.n_rows, block_rows):
            yield start, self.gather(np.arange(start, min(start + block_rows, self.n_rows)))

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        self._data = None

    def __enter__(self) -> LayerRows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
