"""`probe-future gradients`: the gradient lens on any checkpoint, without retraining.

    probe-future gradients --model smollm2-135m --out runs/smollm2-gradients
    probe-future gradients --model EleutherAI/pythia-70m --revision step1000 step143000 --out runs/pythia-curve

For every window of --data up to --max-tokens (no train/test split), batches of whole documents, each
differentiated three times (g_vanilla, g_myopic, g_strict; `probes.lens.decompose`). Writes `results.csv` /
`results.parquet` in the shared schema (probe `gradient`, a `component` column: all, embed, block.{l}.attn,
block.{l}.mlp, unembed; pooled metrics and `expected_…` ones with batch-resampling intervals; a `revision`
and `train_step` column), `windows.safetensors` (the windows measured and each one's batch) and
`provenance.json`. Several revisions are measured one after the other; a finished revision is kept in `parts/`
(its rows, and in an .npz the inner products behind them: per component the 3 × 3 products of the running sums,
each batch's own, the batch weights and the batch × batch products), so an interrupted run resumes at the next one.
A synthetic-task model folder (`probe-future synthetic`) is measured on fresh task sequences with its Huber loss.
"""

from __future__ import annotations

import hashlib
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file
from simple_parsing import field

from probes.config import Command, DataFlags, ModelFlags, OutputFlags, ProgressFlag, names
from probes.corpus import TokenWindows, load_documents, make_windows
from probes.errors import UsageError
from probes.io import atomic_write, atomic_write_json, read_json
from probes.lens.data import document_batches, huber_loss, next_token_loss, synthetic_batches
from probes.lens.decompose import DEFAULT_SKETCH_DIM, LensBatch, measure
from probes.lens.estimate import EXPECTED, estimate
from probes.lens.groups import ALL, block_index, parameter_groups
from probes.lens.load import Subject, check_revisions, is_synthetic_folder, load_subject, synthetic_task
from probes.results import tidy, write_results
from probes.runs import claim_folder, input_paths

PROBE = "gradient"
STAGE = "gradient"
DEFAULT_LENS_TOKENS = 65_536  # 1,024 windows of 64 tokens: 32 batches of 32
MIN_BOOT = 200
PARTS = "parts"


@dataclass(kw_only=True)
class GradientsConfig(ModelFlags, DataFlags, OutputFlags, ProgressFlag):
    """The flags of `probe-future gradients`."""

    max_tokens: int | None = DEFAULT_LENS_TOKENS
    """token budget, whole windows sampled across the corpus (default 65,536: 1,024 windows of 64)"""
    revision: list[str] = field(default_factory=list, nargs="+", required=False)
    """hub checkpoints to measure one after the other, e.g. step1000 step143000 (default: the model as it is)"""
    batch_size: int = 32
    """windows per batch (whole documents): the unit of the cross-batch estimate and of one backward pass"""
    n_boot: int = 1000
    """resamples of the batches for the intervals (0: no intervals)"""
    sketch_dim: int = DEFAULT_SKETCH_DIM
    """numbers kept per component and batch for the intervals (a larger component is count-sketched)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.revision = list(names(self.revision)) if self.revision else []
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be positive; got {self.batch_size}")
        if self.n_boot != 0 and self.n_boot < MIN_BOOT:
            raise UsageError(f"--n-boot must be 0 or at least {MIN_BOOT}; got {self.n_boot}")
        if self.sketch_dim < 1:
            raise UsageError(f"--sketch-dim must be positive; got {self.sketch_dim}")
        if len(set(self.revision)) != len(self.revision):
            raise UsageError("--revision lists a revision twice")

    def identity(self) -> dict[str, Any]:
        fields = asdict(self)
        for name in ("out", "overwrite", "progress", "device"):
            fields.pop(name)
        return fields


# ---------------------------------------------------------------------------------------------- measuring


@dataclass
class Measured:
    """One measured model (one revision): its rows, what provenance records about it, and the inner products
    behind every number (kept beside the rows, so the metrics can be recomputed without the model)."""

    rows: pd.DataFrame
    info: dict[str, Any]
    products: dict[str, np.ndarray]


_WINDOWS: dict[
    tuple[Any, ...], TokenWindows
] = {}  # tokenising a corpus takes seconds: models of one tokenizer share it


def _windows(tokenizer: Any, config: GradientsConfig, documents: list[Any]) -> TokenWindows:
    vocab = hashlib.sha256(repr(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()
    key = (config.data, config.seq_len, config.max_tokens, config.seed, vocab, type(tokenizer).__name__)
    if key not in _WINDOWS:
        _WINDOWS.clear()
        _WINDOWS[key] = make_windows(
            documents, tokenizer, config.seq_len, max_tokens=config.max_tokens, seed=config.seed
        )
    return _WINDOWS[key]


def _language_batches(
    subject: Subject, config: GradientsConfig, documents: list[Any]
) -> tuple[list[LensBatch], TokenWindows, np.ndarray]:
    assert subject.tokenizer is not None
    windows = _windows(subject.tokenizer, config, documents)
    batches, batch_of_window = document_batches(windows, config.batch_size, config.seed)
    return batches, windows, batch_of_window


def _synthetic_batches(config: GradientsConfig) -> tuple[list[LensBatch], int]:
    task, seq_len, _ = synthetic_task(config.model)
    budget = config.max_tokens if config.max_tokens is not None else DEFAULT_LENS_TOKENS
    return synthetic_batches(task, budget // seq_len, config.batch_size, config.seed), seq_len


def _sequences_hash(batches: list[LensBatch]) -> str:
    digest = hashlib.sha256()
    for batch in batches:
        for inputs, targets in batch.chunks:
            digest.update(inputs.numpy().tobytes())
            digest.update(targets.numpy().tobytes())
    return digest.hexdigest()


def measure_subject(subject: Subject, config: GradientsConfig, documents: list[Any] | None, out: Path) -> Measured:
    """The lens numbers of one model; writes windows.safetensors for the first one measured."""
    started = time.perf_counter()
    if subject.task == "synthetic":
        batches, seq_len = _synthetic_batches(config)
        loss_fn, target = huber_loss, "y"
        data = {"spec": "synthetic task (fresh sequences)", "data_hash": _sequences_hash(batches)}
        n_docs = sum(batch.weight for batch in batches)
        _write_sequences(out, batches)
    else:
        assert documents is not None
        batches, windows, batch_of_window = _language_batches(subject, config, documents)
        seq_len, loss_fn, target = config.seq_len, next_token_loss, "token"
        data = {"spec": config.data, "data_hash": windows.fingerprint()}
        n_docs = int(len(np.unique(windows.doc_index)))
        _write_windows(out, windows, batch_of_window)
    groups = parameter_groups(subject.model)
    sketch_dim = config.sketch_dim if config.n_boot else 0
    stats = measure(subject.model, batches, loss_fn, groups, sketch_dim, config.seed, config.progress)
    stats = stats.ordered()
    cross = stats.cross() if config.n_boot and len(batches) > 1 else None
    estimates = estimate(stats.totals, stats.diagonal, stats.weights, cross, config.n_boot, config.seed)
    n_windows = int(stats.weights.sum())
    base = {
        "model": subject.name,
        "kind": subject.kind,
        "target": target,
        "probe": PROBE,
        "n_test": n_windows,
        "seed": config.seed,
        "revision": subject.revision,
        "train_step": subject.train_step,
        "n_batches": len(batches),
        "n_tokens": n_windows * seq_len,
    }
    rows = result_rows(estimates, (*stats.components, ALL), base)
    seconds = time.perf_counter() - started
    info = {
        "revision": subject.revision,
        "architecture": subject.architecture,
        "weights_hash": subject.weights_hash,
        "kind": subject.kind,
        "n_params": sum(p.numel() for p in groups.parameters),
        "data": data | {"n_windows": n_windows, "n_docs": n_docs, "n_batches": len(batches), "seq_len": seq_len},
        "sketched_components": [c for c, exact in zip(stats.components, stats.exact_sketch, strict=True) if not exact],
        "seconds": round(seconds, 3),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
    }
    if subject.device.type == "cuda":
        info["peak_cuda_gib"] = round(torch.cuda.max_memory_allocated(subject.device) / 2**30, 3)
    products = {"totals": stats.totals, "diagonal": stats.diagonal, "weights": stats.weights}
    products |= {"batch_ids": stats.batch_ids} | ({"cross": cross} if cross is not None else {})
    return Measured(rows, info, products)


def result_rows(estimates: Any, components: tuple[str, ...], base: dict[str, Any]) -> pd.DataFrame:
    """One row per (component, metric): pooled metrics, `expected_…` metrics and the batch noise scale."""
    rows = []
    for index, component in enumerate(components):
        where = base | {"component": component, "block": block_index(component), "layer": None, "tau": None}
        for prefix, table in (("", estimates.pooled), (EXPECTED, estimates.expected)):
            for metric, (value, low, high) in table.items():
                rows.append(
                    where | {"metric": prefix + metric, "value": value[index], "ci_low": low[index]}
                    | {"ci_high": high[index]}
                )  # fmt: skip
        noise = float(estimates.batch_norm_vanilla[index])
        rows.append(where | {"metric": "batch_grad_norm_vanilla", "value": noise, "ci_low": np.nan, "ci_high": np.nan})
    frame = pd.DataFrame(rows)
    for column in ("block", "train_step", "n_batches", "n_tokens"):
        frame[column] = frame[column].astype("Int64")
    return frame


def _write_windows(out: Path, windows: TokenWindows, batch_of_window: np.ndarray) -> None:
    path = out / "windows.safetensors"
    if path.exists():
        return
    tensors = {
        "tokens": torch.from_numpy(np.ascontiguousarray(windows.tokens, dtype=np.int64)),
        "doc_index": torch.from_numpy(np.ascontiguousarray(windows.doc_index, dtype=np.int64)),
        "start": torch.from_numpy(np.ascontiguousarray(windows.start, dtype=np.int64)),
        "batch": torch.from_numpy(batch_of_window),
    }
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))
    atomic_write_json(out / "windows.json", {"doc_names": list(windows.doc_names), "seq_len": windows.seq_len})


def _write_sequences(out: Path, batches: list[LensBatch]) -> None:
    path = out / "windows.safetensors"
    if path.exists():
        return
    inputs = torch.cat([chunk[0] for batch in batches for chunk in batch.chunks])
    targets = torch.cat([chunk[1] for batch in batches for chunk in batch.chunks])
    ids = torch.cat([torch.full((batch.weight,), batch.batch_id, dtype=torch.int64) for batch in batches])
    tensors = {"inputs": inputs.contiguous(), "targets": targets.contiguous(), "batch": ids}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))


# ---------------------------------------------------------------------------------------------- the job


def _save_products(path: Path, products: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as handle:  # a file handle: np.savez would append .npz to the temporary name
        np.savez(handle, **products)


def _part_stem(index: int, revision: str | None) -> str:
    label = "".join(c if c.isalnum() or c in "-_." else "_" for c in (revision or "model"))
    return f"{index:03d}-{label}"


def run_gradients(config: GradientsConfig) -> pd.DataFrame:
    """Measure the model (each revision in turn, resumably); write and return the results table."""
    started = time.perf_counter()
    check_revisions(config.model, config.revision)
    targets: list[str | None] = list(config.revision) or [None]
    synthetic = is_synthetic_folder(config.model)
    documents = None if synthetic else load_documents(config.data)
    first = load_subject(config.model, targets[0], config.device, None if synthetic else config.seq_len)
    out = Path(config.out).expanduser()
    inputs = input_paths(config.model, None if synthetic else config.data)
    claim_folder(out, STAGE, config.identity(), overwrite=config.overwrite, inputs=inputs)
    (out / PARTS).mkdir(exist_ok=True)
    frames, infos = [], []
    for index, revision in enumerate(targets):
        stem = out / PARTS / _part_stem(index, revision)
        if stem.with_suffix(".parquet").is_file() and stem.with_suffix(".json").is_file():
            frames.append(pd.read_parquet(stem.with_suffix(".parquet")))
            infos.append(read_json(stem.with_suffix(".json")))
            continue
        subject = first if index == 0 else load_subject(config.model, revision, config.device, config.seq_len)
        measured = measure_subject(subject, config, documents, out)
        if infos and measured.info["data"]["data_hash"] != infos[0]["data"]["data_hash"]:
            raise UsageError(f"revision {revision} tokenises --data differently from {targets[0]}: measure it apart")
        atomic_write(stem.with_suffix(".npz"), lambda tmp, m=measured: _save_products(tmp, m.products))
        atomic_write(stem.with_suffix(".parquet"), lambda tmp, m=measured: m.rows.to_parquet(tmp, index=False))
        atomic_write_json(stem.with_suffix(".json"), measured.info)
        frames.append(measured.rows)
        infos.append(measured.info)
        del subject
    results = tidy(pd.concat(frames, ignore_index=True))
    write_results(results, out)
    _write_provenance(out, config, infos, synthetic, time.perf_counter() - started)
    return results


def _write_provenance(
    out: Path, config: GradientsConfig, infos: list[dict[str, Any]], synthetic: bool, seconds: float
) -> None:
    from probes.provenance import provenance

    data = infos[0]["data"]
    atomic_write_json(
        out / "provenance.json",
        provenance(
            stage=STAGE,
            task="synthetic" if synthetic else "language",
            args=asdict(config),
            model={"name": config.model, "architecture": infos[0]["architecture"]}
            | {"weights_hash": infos[0]["weights_hash"], "revisions": infos},
            data=data,
            definitions={
                "direct": "g_strict",
                "reading the past": "g_myopic - g_strict",
                "pre-caching": "g_vanilla - g_myopic",
                "pooled": "gradients of the mean loss over every window measured",
                "expected": "unbiased estimate from pairs of different batches (whole documents)",
            },
            timings={"total_seconds": round(seconds, 3), "peak_rss_gib": max(i["peak_rss_gib"] for i in infos)},
        ),
    )


# ---------------------------------------------------------------------------------------------- the command


def _shown(row: pd.Series) -> str:
    if np.isnan(row["ci_low"]):
        return f"{row['value']:.3f}"
    return f"{row['value']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def summary_lines(results: pd.DataFrame) -> list[str]:
    """All-parameter pre-caching share and trade-off cosine, per revision."""
    lines = []
    rows = results[results["component"] == ALL]
    for revision, group in rows.groupby(rows["revision"].astype(object).fillna("-"), sort=False):
        values = {row["metric"]: row for _, row in group.iterrows()}
        label = "" if revision == "-" else f"{revision}: "
        lines.append(
            f"{label}pre-caching share of the gradient {_shown(values['precaching_share'])} (pooled), "
            f"{_shown(values['expected_precaching_share'])} (expected); cosine(myopic, pre-caching) expected "
            f"{_shown(values['expected_cos_myopic_precaching'])}; {int(group['n_batches'].iloc[0])} batches, "
            f"{int(group['n_tokens'].iloc[0]):,} tokens"
        )
    return lines


def run_gradients_command(config: GradientsConfig) -> int:
    results = run_gradients(config)
    for line in summary_lines(results):
        print(line)
    print(f"results: {Path(config.out) / 'results.csv'}")
    return 0


COMMAND = Command(
    GradientsConfig,
    run_gradients_command,
    help="the gradient lens: how much of the training signal goes to future tokens (no retraining)",
)
