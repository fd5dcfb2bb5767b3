"""`probe-future eval`: held-out next-token cross-entropy of a model, overall and by token position.

    probe-future eval --model runs/gpt2-myopic --out reports/eval-myopic

Position p is the loss of predicting token p+1 from tokens 0..p, so a window of T tokens gives positions
0..T-2. Only windows of the held-out documents are scored (the document split that training and the probe job
use for the same --data and --seed); for a checkpoint trained here, --data, --seq-len and --seed default to the
values in its training.json. Every held-out window is scored unless --max-tokens caps the windows drawn (the
command says which). Intervals are 95% bootstrap intervals over held-out documents (windows of one document are
correlated, so whole documents are resampled, as everywhere in the toolkit).

Writes `results.csv`/`results.parquet` (the shared schema: metric ce_nats, probe "model", target "token",
tau 1, a `position` column that is empty for the overall row), `per_window.parquet` (each window's mean and
per-position losses with its window index, document and start, for paired comparisons between models scored on
the same windows) and `provenance.json`.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from simple_parsing import field
from torch import nn

from probes.config import DEFAULT_SEQ_LEN, Command, DataFlags, ModelFlags, OutputFlags, ProgressFlag
from probes.corpus import TokenWindows, load_documents, make_windows, split_by_document
from probes.errors import UsageError
from probes.io import atomic_write, atomic_write_json
from probes.models import PlainModel, load_plain_model
from probes.runs import TEST_FRACTION, claim_folder, input_paths, same_data, training_record
from probes.training.losses import window_losses

FORWARD_MODES = ("auto", "vanilla", "bigram")


def forward_context(model: nn.Module, mode: str) -> AbstractContextManager[Any]:
    """The forward of a checkpoint's training mode: bigram models cannot read the past; every other mode's
    forward is the vanilla one (myopic training changes gradients only)."""
    if mode == "bigram":
        from probes.training.myopic import bigram

        return bigram(model)
    return nullcontext()


# ---------------------------------------------------------------------------------------------- settings


@dataclass(kw_only=True)
class EvalConfig(ModelFlags, DataFlags, OutputFlags, ProgressFlag):
    """The flags of `probe-future eval`. Data, seq_len and seed of None mean the values a checkpoint trained
    here was trained with (for any other model: bundled, 64 and 0)."""

    data: str | None = None
    """bundled | a .txt file | a folder of .txt files | a .jsonl | a hub dataset (default: the training data)"""
    seq_len: int | None = None
    """window length in tokens (default: a trained checkpoint's training value, else 64)"""
    seed: int | None = None
    """seed for sampling, the document split and bootstraps (default: a trained checkpoint's, else 0)"""
    max_tokens: int | None = None
    """cap on the tokens of the windows drawn before the split (default: none, every held-out window is scored)"""
    forward: str = field(default="auto", choices=FORWARD_MODES)
    """auto (bigram for a bigram checkpoint, else vanilla) | vanilla | bigram"""
    batch_size: int = 8
    """windows per forward pass"""
    n_boot: int = 1000
    """bootstrap resamples over held-out documents"""


@dataclass(frozen=True)
class EvalSettings:
    data: str
    seq_len: int
    max_tokens: int | None
    seed: int
    test_fraction: float
    forward: str  # vanilla | bigram
    kind: str  # the checkpoint's training mode, or "pretrained"
    n_train: int | None


def resolve_eval(config: EvalConfig) -> EvalSettings:
    if config.forward not in FORWARD_MODES:
        raise UsageError(f"unknown --forward {config.forward!r}; choose one of {', '.join(FORWARD_MODES)}")
    if config.batch_size < 1:
        raise UsageError("--batch-size must be positive")
    if config.n_boot < 200:
        raise UsageError("--n-boot must be at least 200")
    if config.max_tokens is not None and config.max_tokens <= 0:
        raise UsageError("--max-tokens must be positive")
    record = training_record(config.model) or {}
    data_info = record.get("data_info", {})
    kind = str(record.get("mode", "pretrained"))
    forward = config.forward if config.forward != "auto" else ("bigram" if kind == "bigram" else "vanilla")
    seq_len = config.seq_len if config.seq_len is not None else int(data_info.get("seq_len", DEFAULT_SEQ_LEN))
    if seq_len < 2:
        raise UsageError("--seq-len must be at least 2")
    check_split_seed(config, data_info)
    return EvalSettings(
        data=config.data if config.data is not None else str(data_info.get("spec", "bundled")),
        seq_len=seq_len,
        max_tokens=config.max_tokens,
        seed=config.seed if config.seed is not None else int(data_info.get("seed", 0)),
        test_fraction=float(data_info.get("test_fraction", TEST_FRACTION)),
        forward=forward,
        kind=kind,
        n_train=data_info.get("n_train_windows"),
    )


def check_split_seed(config: EvalConfig, data_info: dict[str, Any]) -> None:
    """Refuse a --seed that splits a checkpoint's own training data otherwise than training did: the held-out
    windows would then include documents the model was trained on."""
    trained_seed, trained_data = data_info.get("seed"), data_info.get("spec")
    if config.seed is None or trained_seed is None or config.seed == trained_seed:
        return
    if config.data is None or (trained_data is not None and same_data(config.data, str(trained_data))):
        raise UsageError(
            f"--seed {config.seed} splits the documents otherwise than training did (seed {trained_seed}): the "
            f"held-out windows would include documents {config.model} was trained on; drop --seed"
        )


def eval_identity(config: EvalConfig, settings: EvalSettings, weights_hash: str, data_hash: str) -> dict[str, Any]:
    """The settings that change a number of an eval run (not where or how verbosely it runs)."""
    given = {"model": config.model, "batch_size": config.batch_size, "n_boot": config.n_boot}
    return given | asdict(settings) | {"weights_hash": weights_hash, "data_hash": data_hash}


# ---------------------------------------------------------------------------------------------- tables


def position_rows(
    losses: np.ndarray, docs: np.ndarray, model: str, settings: EvalSettings, n_boot: int
) -> list[dict[str, Any]]:
    """The overall row and one row per position, each with a bootstrap interval over documents.

    `losses` (windows, positions); `docs` (windows,) the document of each window: the resampling unit.
    """
    from probes.stats import bootstrap_mean_ci

    values = np.concatenate([losses.mean(axis=1, keepdims=True), losses], axis=1)
    point, low, high = bootstrap_mean_ci(values, docs, n_boot=n_boot, seed=settings.seed)
    base = {
        "model": model,
        "kind": settings.kind,
        "layer": None,
        "tau": 1,
        "target": "token",
        "probe": "model",
        "metric": "ce_nats",
        "n_train": settings.n_train,
        "n_test": len(losses),
        "n_test_docs": len(np.unique(docs)),
        "seed": settings.seed,
        "forward": settings.forward,
    }
    rows = []
    for column in range(values.shape[1]):
        position = None if column == 0 else column - 1
        interval = {"value": point[column], "ci_low": low[column], "ci_high": high[column]}
        rows.append(base | interval | {"position": position})
    return rows


def per_window_frame(losses: np.ndarray, windows: TokenWindows, index: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "window": index.astype(np.int64),
            "doc_index": windows.doc_index[index],
            "doc_name": [windows.doc_names[i] for i in windows.doc_index[index]],
            "start": windows.start[index],
            "ce_mean": losses.mean(axis=1),
        }
    )
    by_position = pd.DataFrame(losses, columns=[f"ce_p{p}" for p in range(losses.shape[1])])
    return pd.concat([frame, by_position], axis=1)


# ---------------------------------------------------------------------------------------------- the job


def evaluate(config: EvalConfig) -> pd.DataFrame:
    """Score the model on the held-out windows; write and return the results table."""
    from probes.results import tidy, write_results

    started = time.perf_counter()
    settings = resolve_eval(config)
    loaded = load_plain_model(config.model, config.device)
    model = loaded.hf_model.eval()
    positions = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions < settings.seq_len:
        raise UsageError(f"{config.model} has {positions} positions, fewer than --seq-len {settings.seq_len}")
    windows = make_windows(
        load_documents(settings.data),
        loaded.tokenizer,
        settings.seq_len,
        max_tokens=settings.max_tokens,
        seed=settings.seed,
    )
    _, test = split_by_document(windows, settings.test_fraction, settings.seed)
    if len(test) == 0:
        raise UsageError("no held-out windows to score: use more text")
    out = Path(config.out).expanduser()
    identity = eval_identity(config, settings, loaded.weights_hash, windows.fingerprint())
    inputs = input_paths(config.model, settings.data)
    claim_folder(out, "eval", identity, overwrite=config.overwrite, inputs=inputs)
    tokens = torch.from_numpy(windows.tokens[test])
    with forward_context(model, settings.forward):
        losses = window_losses(model, tokens, config.batch_size, loaded.device, progress=config.progress)
    results = tidy(position_rows(losses, windows.doc_index[test], config.model, settings, config.n_boot))
    write_results(results, out)
    per_window = per_window_frame(losses, windows, test)
    atomic_write(out / "per_window.parquet", lambda tmp: per_window.to_parquet(tmp, index=False))
    _write_provenance(out, config, settings, loaded, windows, test, time.perf_counter() - started)
    return results


def _write_provenance(
    out: Path,
    config: EvalConfig,
    settings: EvalSettings,
    loaded: PlainModel,
    windows: TokenWindows,
    test: np.ndarray,
    seconds: float,
) -> None:
    from probes.provenance import provenance

    atomic_write_json(
        out / "provenance.json",
        provenance(
            stage="eval",
            args=asdict(config) | {"resolved": asdict(settings)},
            model={
                "name": loaded.name,
                "architecture": type(loaded.hf_model).__name__,
                "weights_hash": loaded.weights_hash,
            },
            data={
                "spec": settings.data,
                "data_hash": windows.fingerprint(),
                "n_windows": len(windows),
                "n_test_windows": int(len(test)),
                "n_test_docs": int(len(np.unique(windows.doc_index[test]))),
            },
            device=loaded.device.type,
            timings={"total_seconds": round(seconds, 3)},
        ),
    )


# ---------------------------------------------------------------------------------------------- CLI


def run_eval_command(config: EvalConfig) -> int:
    results = evaluate(config)
    overall = results[results["position"].isna()].iloc[0]
    print(scored_text(overall, config.max_tokens))
    print(
        f"held-out cross-entropy: {overall['value']:.4f} nats "
        f"[{overall['ci_low']:.4f}, {overall['ci_high']:.4f}] (95% interval over documents, "
        f"{overall['forward']} forward); results: {Path(config.out) / 'results.csv'}"
    )
    return 0


def scored_text(overall: pd.Series, max_tokens: int | None) -> str:
    """What was scored, in words: every held-out window, or those of a --max-tokens sample."""
    counts = f"{overall['n_test']} windows of {overall['n_test_docs']} held-out documents"
    if max_tokens is None:
        return f"scored every held-out window: {counts}"
    return f"scored only the held-out part of a --max-tokens {max_tokens} sample: {counts} (drop --max-tokens for all)"


COMMAND = Command(EvalConfig, run_eval_command, help="held-out cross-entropy of a model, overall and by position")
