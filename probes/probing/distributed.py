"""The probe job's work split across the ranks of a torchrun job (and the same code path for one process).

    torchrun --nproc_per_node=N -m probes.cli --model M --tau 1..5 --out DIR

1. Extraction: each store (the model's, then the random-init control's) is written by every rank at once,
   shard i by rank i % N (`probes.activations.extract`).
2. Fitting: the units (each subject's baselines and each of its layers) go to ranks by `probes.distributed.assign`
   (longest first, to the least-loaded rank); a finished unit is a file under `fits/`.
3. Assembly: after a barrier every unit is on disk; rank 0 reads them into one results table.
A unit's numbers do not depend on which rank fitted it, so the table equals a one-process run's. After a kill of
any rank (torchrun then stops the others) the same command resumes: finished shards and units are kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd

from probes.activations import ActivationStore
from probes.distributed import Ranks, assign

BASELINE_COST = 0.2  # a unit of baselines costs a fraction of a layer's probes


class Prober(Protocol):
    kind: str

    def baselines(self) -> tuple[pd.DataFrame, pd.DataFrame]: ...
    def layer(self, layer: int) -> tuple[pd.DataFrame, pd.DataFrame]: ...
    def close(self) -> None: ...
    def run(self, layers: Sequence[int], desc: str) -> tuple[pd.DataFrame, pd.DataFrame]: ...


@dataclass
class Subject:
    """One model to probe: how to get its store, and its prober for that store."""

    kind: str
    extract: Callable[[], ActivationStore]
    prober: Callable[[ActivationStore], Prober]


def unit_name(kind: str, layer: int | None) -> str:
    return f"{kind}/baselines" if layer is None else f"{kind}/layer-{layer:03d}"


def probe_subjects(
    subjects: Sequence[Subject], layers: Sequence[int], ranks: Ranks, timings: dict[str, float]
) -> tuple[list[tuple[pd.DataFrame, pd.DataFrame]], list[dict[str, Any]]]:
    """Every subject's (rows, per-document sums), and what each rank did (for provenance.json)."""
    extracted: list[ActivationStore] = []
    for subject in subjects:
        mark = time.perf_counter()
        extracted.append(subject.extract())
        timings[f"extract_seconds_{subject.kind}"] = time.perf_counter() - mark
    probers = [subject.prober(store) for subject, store in zip(subjects, extracted, strict=True)]
    fitted: list[str] = []
    if ranks.enabled:
        units = [(index, layer) for index in range(len(probers)) for layer in (None, *layers)]
        owners = assign([BASELINE_COST if layer is None else 1.0 for _, layer in units], ranks.world)
        mark = time.perf_counter()
        for (index, layer), owner in zip(units, owners, strict=True):
            if owner != ranks.rank:
                continue
            prober = probers[index]
            prober.baselines() if layer is None else prober.layer(layer)
            fitted.append(unit_name(prober.kind, layer))
        for prober in probers:
            prober.close()
        timings["fit_seconds_this_rank"] = time.perf_counter() - mark
    else:
        fitted = [unit_name(prober.kind, layer) for prober in probers for layer in (None, *layers)]
    record = ranks.describe() | {"fitted": fitted, "seconds": {name: round(v, 3) for name, v in timings.items()}}
    records = ranks.gather(record)  # also the barrier after which every unit is on disk
    parts = []
    for subject, prober in zip(subjects, probers, strict=True):
        mark = time.perf_counter()
        parts.append(prober.run(layers, desc=f"probe {subject.kind}"))
        timings[f"probe_seconds_{subject.kind}"] = time.perf_counter() - mark
    return parts, records
