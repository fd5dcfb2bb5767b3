"""The lens while a model trains: `probe-future train --lens-every N` adds the all-parameter numbers to
`metrics.jsonl` every N steps, measured on a fixed probe set of held-out windows (whole documents per batch),
so a run records how its own pre-caching signal evolves as it learns.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from probes.corpus import TokenWindows
from probes.lens.data import document_batches, next_token_loss
from probes.lens.decompose import LensBatch, measure
from probes.lens.estimate import EXPECTED, estimate
from probes.lens.groups import ALL, ParameterGroups

LENS_BATCH = 16  # windows per lens batch (at most): more batches make the cross-batch estimate steadier
PREFIX = "lens_"
RECORDED = (
    "grad_norm_vanilla",
    "grad_norm_myopic",
    "grad_norm_precaching",
    "precaching_share",
    "cos_myopic_precaching",
    "cos_direct_precaching",
)


def probe_batches(tokens: Tensor, documents: Tensor, n_windows: int, seed: int) -> list[LensBatch]:
    """Up to `n_windows` held-out windows (whole documents, in a seeded order), in batches of whole documents."""
    doc_index = documents.numpy().astype(np.int64)
    order = np.random.default_rng(seed).permutation(np.unique(doc_index))
    keep: list[np.ndarray] = []
    for document in order:
        if sum(len(k) for k in keep) >= n_windows:
            break
        keep.append(np.flatnonzero(doc_index == document))
    index = np.sort(np.concatenate(keep))[:n_windows] if keep else np.zeros(0, dtype=np.int64)
    windows = TokenWindows(
        tokens=tokens.numpy()[index],
        doc_index=doc_index[index],
        start=np.zeros(len(index), dtype=np.int64),
        doc_names=[str(d) for d in range(int(doc_index.max()) + 1 if len(doc_index) else 0)],
        seq_len=int(tokens.shape[1]),
    )
    # At least four batches where the documents allow: the cross-batch estimate needs pairs of batches.
    batches, _ = document_batches(windows, max(1, min(LENS_BATCH, len(index) // 4)), seed)
    return batches


def _all_in_one(model: nn.Module) -> ParameterGroups:
    """Every trainable parameter in one component: the record holds the all-parameter numbers only."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    return ParameterGroups(
        names=tuple(name for name, _ in named),
        parameters=tuple(p for _, p in named),
        group_of=tuple(0 for _ in named),
        components=(ALL,),
    )


def lens_record(model: nn.Module, batches: list[LensBatch]) -> dict[str, float | None]:
    """The all-parameter pooled and expected numbers (no intervals), as `lens_…` metrics.jsonl fields."""
    with torch.enable_grad():
        stats = measure(model, batches, next_token_loss, _all_in_one(model), sketch_dim=0)
    estimates = estimate(stats.totals, stats.diagonal, stats.weights, None, 0, 0)
    record: dict[str, float | None] = {}
    for prefix, table in (("", estimates.pooled), (EXPECTED, estimates.expected)):
        for name in RECORDED:
            value = float(table[name][0][0])
            record[PREFIX + prefix + name] = value if math.isfinite(value) else None
    record[PREFIX + "batches"] = len(batches)
    return record
