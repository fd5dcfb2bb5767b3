"""The synthetic pre-caching task: sequences whose targets can only be met by preparing features in advance.

Input at position n is (x_n, z_n) with x_n ~ N(0, 1) and z_n ~ Bernoulli(p); the target is

    y_n = z_n · Σ_{i=s..s+W-1} sin(f·x_{n−i}) + (1 − z_n)·x_n

(terms before the sequence start are 0). With the default shift s = 1 the sine of x_n is useless at n but
needed at n+1..n+W, so a model can only solve the task by computing sin(f·x_n) at position n for later use.
With s = 0 the sine is also useful where it is computed (the control: myopic training must then succeed).

Every batch is a pure function of (seed, stream, index), so training never repeats a sequence and a resumed
run sees exactly the data it would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from probes.errors import UsageError

# Independent random streams of one seed.
TRAIN_STREAM, LOSS_STREAM, PROBE_TRAIN_STREAM, PROBE_TEST_STREAM = 0, 1, 2, 3


@dataclass(frozen=True)
class TaskSpec:
    freq: float
    window: int
    p: float
    shift: int
    seq_len: int

    def check(self) -> None:
        """Every problem is a one-line UsageError."""
        if not (self.freq > 0 and np.isfinite(self.freq)):
            raise UsageError(f"--freq must be a positive number, got {self.freq}")
        if not 0.0 <= self.p <= 1.0:
            raise UsageError(f"--p must lie in [0, 1], got {self.p}")
        if self.seq_len < 2:
            raise UsageError(f"--seq-len must be at least 2, got {self.seq_len}")
        if not 1 <= self.window < self.seq_len:
            raise UsageError(f"--window must be at least 1 and less than --seq-len {self.seq_len}, got {self.window}")
        if not 0 <= self.shift < self.seq_len:
            raise UsageError(f"--shift must be at least 0 and less than --seq-len {self.seq_len}, got {self.shift}")


@dataclass
class Batch:
    x: np.ndarray  # (n, T) float64
    z: np.ndarray  # (n, T) float64, 0 or 1
    y: np.ndarray  # (n, T) float64 targets
    window_sum: np.ndarray  # (n, T) float64: y's z = 1 part

    def inputs(self, device: torch.device | str = "cpu") -> Tensor:
        """(n, T, 2) float32 model inputs (x_n, z_n)."""
        return torch.from_numpy(np.stack([self.x, self.z], axis=-1)).float().to(device)

    def targets(self, device: torch.device | str = "cpu") -> Tensor:
        return torch.from_numpy(self.y).float().to(device)


def window_sums(x: np.ndarray, freq: float, window: int, shift: int) -> np.ndarray:
    """Σ_{i=shift..shift+window-1} sin(freq·x_{n−i}) at every position n, terms before the start being 0."""
    n_seq, length = x.shape
    cumulative = np.zeros((n_seq, length + 1))
    np.cumsum(np.sin(freq * x), axis=1, out=cumulative[:, 1:])
    positions = np.arange(length)
    high = np.clip(positions - shift + 1, 0, length)  # sum over m in [low, high)
    low = np.clip(positions - shift - window + 1, 0, length)
    return cumulative[:, high] - cumulative[:, low]


def make_batch(spec: TaskSpec, n: int, rng: np.random.Generator) -> Batch:
    x = rng.standard_normal((n, spec.seq_len))
    z = (rng.random((n, spec.seq_len)) < spec.p).astype(np.float64)
    sums = window_sums(x, spec.freq, spec.window, spec.shift)
    return Batch(x=x, z=z, y=z * sums + (1.0 - z) * x, window_sum=sums)


def batch_of(spec: TaskSpec, n: int, seed: int, stream: int, index: int = 0) -> Batch:
    """The `index`-th batch of `n` sequences of a stream (training step `index`, or a held-out set)."""
    return make_batch(spec, n, np.random.default_rng([seed, stream, index]))
