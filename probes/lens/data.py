"""What the lens measures on: batches of whole documents (language models) or of fresh sequences (synthetic task).

The cross-batch estimate needs batches that are independent of each other, so a document never spans two
batches: documents are taken in a seeded random order and packed into batches of about `batch_size` windows
(a document longer than that makes one larger batch). Each batch is cut into chunks of at most `batch_size`
windows, the unit of one forward/backward pass.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from probes.corpus import TokenWindows
from probes.errors import UsageError
from probes.lens.decompose import LensBatch
from probes.training.losses import next_token_losses

LENS_STREAM = 100  # the synthetic task's random stream for lens sequences (the task's own streams are 0..3)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def next_token_loss(model: nn.Module, chunk: Tensor) -> Tensor:
    """Mean next-token cross-entropy over every position of a chunk of token windows."""
    tokens = chunk.to(_device(model))
    return next_token_losses(model(input_ids=tokens).logits, tokens).mean()


def huber_loss(model: nn.Module, chunk: tuple[Tensor, Tensor]) -> Tensor:
    """Mean Huber loss (δ = 1) over every position of a chunk of synthetic-task sequences."""
    from probes.synthetic.model import huber

    device = _device(model)
    inputs, targets = chunk
    return huber(model(inputs.to(device)), targets.to(device)).mean()


def _chunks(index: np.ndarray, size: int) -> list[np.ndarray]:
    return [index[lo : lo + size] for lo in range(0, len(index), size)]


def document_batches(windows: TokenWindows, batch_size: int, seed: int) -> tuple[list[LensBatch], np.ndarray]:
    """Batches of whole documents, about `batch_size` windows each; and each window's batch id."""
    if batch_size < 1:
        raise UsageError(f"--batch-size must be positive; got {batch_size}")
    if len(windows) == 0:
        raise UsageError("no windows to measure: the corpus is empty or shorter than one window")
    documents = np.random.default_rng(seed).permutation(np.unique(windows.doc_index))
    n_batches = max(1, len(windows) // batch_size)
    target = len(windows) / n_batches
    members: list[list[np.ndarray]] = [[]]
    filled = 0
    for document in documents:
        members[-1].append(np.flatnonzero(windows.doc_index == document))
        filled += len(members[-1][-1])
        if filled >= target * len(members) - 1e-9 and len(members) < n_batches:
            members.append([])
    members = [parts for parts in members if parts]
    batch_of_window = np.full(len(windows), -1, dtype=np.int64)
    batches = []
    tokens = torch.from_numpy(np.ascontiguousarray(windows.tokens, dtype=np.int64))
    for batch_id, parts in enumerate(members):
        index = np.sort(np.concatenate(parts))
        batch_of_window[index] = batch_id
        pieces = _chunks(index, batch_size)
        batches.append(
            LensBatch(
                batch_id=batch_id,
                chunks=tuple(tokens[torch.from_numpy(piece)] for piece in pieces),
                chunk_weights=tuple(len(piece) for piece in pieces),
            )
        )
    return batches, batch_of_window


def synthetic_batches(spec: object, n_sequences: int, batch_size: int, seed: int) -> list[LensBatch]:
    """Batches of fresh synthetic-task sequences (independent by construction), `batch_size` each."""
    from probes.synthetic.task import TaskSpec, batch_of

    assert isinstance(spec, TaskSpec)
    if n_sequences < 1:
        raise UsageError("--max-tokens is smaller than one synthetic sequence")
    sizes = [min(batch_size, n_sequences - lo) for lo in range(0, n_sequences, batch_size)]
    batches = []
    for index, size in enumerate(sizes):
        batch = batch_of(spec, size, seed, LENS_STREAM, index)
        batches.append(LensBatch(index, ((batch.inputs(), batch.targets()),), (size,)))
    return batches
