"""The activation store: residual streams at every requested layer, written in resumable shards.

One forward pass per batch, through TransformerLens hooks, collects `layer 0` (embeddings,
`blocks.0.hook_resid_pre`) and `layer l` (`blocks.{l-1}.hook_resid_post`), plus the model's own top-1
next-token prediction at every position. Shards are fixed groups of windows, each written atomically;
the manifest names the model weights, the data and every setting that changes a stored byte, so a rerun
with the same arguments resumes at the first missing shard and ends with an identical store.

Layout of a store folder:
  manifest.json            identity, shapes, dtype, shard list, `complete`
  windows.safetensors      tokens (W, T), doc_index (W,), start (W,)
  windows.json             document names (doc_index points into this list)
  shard-00000.safetensors  resid.{layer} (w, T, d) for each layer, model_pred (w, T)
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from simple_parsing import field
from tqdm.auto import tqdm

from probes import __version__
from probes.activation_rows import LayerRows
from probes.config import Command, DataFlags, Flags, ModelFlags, OutputFlags, ProgressFlag
from probes.corpus import TokenWindows, load_documents, make_windows
from probes.distributed import Ranks, single
from probes.errors import UsageError
from probes.io import atomic_write, atomic_write_json, read_json
from probes.models import LoadedModel, check_positions, load_model
from probes.precision import AUTOCAST_DTYPES, PRECISIONS, autocast, configure_matmuls, resolve_precision
from probes.runs import STORE_MARKER, claim_folder, input_paths, model_kind
from probes.sharded import DEVICE_MAPS, hooked_forward, load_sharded
from probes.specs import layer_spec, parse_layers

STORE_FORMAT = 1
DTYPES = {"float16": torch.float16, "float32": torch.float32}


def hook_name(layer: int) -> str:
    """The TransformerLens hook that holds `layer` (0 = embeddings, l = output of block l)."""
    return "blocks.0.hook_resid_pre" if layer == 0 else f"blocks.{layer - 1}.hook_resid_post"


@dataclass(frozen=True)
class StoreSettings:
    layers: tuple[int, ...]
    dtype: str = "float16"
    batch_size: int = 8
    shard_windows: int = 64
    precision: str = "fp32"  # resolved: fp32 | bf16 | fp16 (autocast of the extraction forward)

    def __post_init__(self) -> None:
        if self.precision not in AUTOCAST_DTYPES and self.precision != "fp32":
            raise UsageError(f"unknown extraction precision {self.precision!r}: use fp32, bf16 or fp16")
        if self.dtype not in DTYPES:
            raise UsageError(f"unknown --dtype {self.dtype!r}: use float16 or float32")
        if self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if self.shard_windows < self.batch_size or self.shard_windows % self.batch_size:
            raise UsageError("shard size must be a positive multiple of --batch-size")


@dataclass(kw_only=True)
class StoreFlags(Flags):
    """What the store keeps and how it is written: shared by `extract` and the probe job."""

    layers: str = "all"
    """all | 0..12 | 0,6,12 (0 = embeddings)"""
    dtype: str = field(default="float16", choices=tuple(DTYPES))
    """stored precision"""
    batch_size: int = 8
    """windows per forward pass"""
    precision: str = field(default="auto", choices=PRECISIONS)
    """autocast of the extraction forward: auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16"""
    device_map: str | None = field(default=None, choices=DEVICE_MAPS)
    """spread a model that does not fit one device over the GPUs (accelerate): auto | balanced | sequential"""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.layers = layer_spec(self.layers)
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1; got {self.batch_size}")


@dataclass(kw_only=True)
class ExtractConfig(ProgressFlag, OutputFlags, StoreFlags, DataFlags, ModelFlags):
    """`probe-future extract`: the activation store of a model on a corpus."""

    out: str = field(required=True)
    """folder of the activation store"""


def store_identity(model: LoadedModel, windows: TokenWindows, settings: StoreSettings) -> dict[str, Any]:
    """Everything that changes a stored byte; two runs with equal identities write identical stores."""
    return {
        "format": STORE_FORMAT,
        "model": model.name,
        "architecture": model.architecture,
        "weights_hash": model.weights_hash,
        "data_hash": windows.fingerprint(),
        "seq_len": windows.seq_len,
        "n_windows": len(windows),
        "layers": list(settings.layers),
        "dtype": settings.dtype,
        "batch_size": settings.batch_size,
        "shard_windows": settings.shard_windows,
        "d_model": model.d_model,
        "vocab_size": model.vocab_size,
        "device_type": model.device.type,
    } | ({"precision": settings.precision} if settings.precision != "fp32" else {})


def _shard_path(folder: Path, index: int) -> Path:
    return folder / f"shard-{index:05d}.safetensors"


def _prepare_folder(folder: Path, identity: dict[str, Any], overwrite: bool, inputs: Sequence[Path]) -> None:
    extra = {"complete": False, "version": __version__}
    claim_folder(folder, "extract", identity, overwrite=overwrite, marker=STORE_MARKER, inputs=inputs, extra=extra)


def check_forward(model: LoadedModel) -> None:
    """Refuse a model whose own forward the store's TransformerLens forward would not reproduce."""
    if model_kind(model.name) == "bigram":
        raise UsageError(
            f"{model.name} is a transformer-bigram checkpoint: its forward zeroes past keys and values, which the "
            "TransformerLens forward of the activation store does not; probe or extract a vanilla or myopic model"
        )


def _write_windows(folder: Path, windows: TokenWindows) -> None:
    tensors = {
        "tokens": torch.from_numpy(np.ascontiguousarray(windows.tokens, dtype=np.int64)),
        "doc_index": torch.from_numpy(np.ascontiguousarray(windows.doc_index, dtype=np.int64)),
        "start": torch.from_numpy(np.ascontiguousarray(windows.start, dtype=np.int64)),
    }
    atomic_write(folder / "windows.safetensors", lambda tmp: save_file(tensors, str(tmp)))
    atomic_write_json(folder / "windows.json", {"doc_names": list(windows.doc_names), "seq_len": windows.seq_len})


def extraction_autocast(precision: str, device: torch.device) -> AbstractContextManager[object]:
    configure_matmuls(precision, device)
    return autocast(precision, device)


def to_host(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`tensor` as `dtype` on the CPU. From a GPU it is converted there (fewer bytes to copy) and copied
    asynchronously into pinned memory: synchronise the device before reading the result."""
    if tensor.device.type != "cuda":
        return tensor.to(dtype=dtype, device="cpu")
    host = torch.empty(tensor.shape, dtype=dtype, pin_memory=True)
    host.copy_(tensor.to(dtype), non_blocking=True)
    return host


@torch.inference_mode()
def forward_batch(
    model: LoadedModel, tokens: torch.Tensor, layers: tuple[int, ...]
) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """One forward pass: the residual stream at each layer and the model's top-1 prediction per position."""
    if model.bridge is None:  # a model spread over devices (probes.sharded): hooks on its own blocks
        return hooked_forward(model, tokens, layers)
    captured: dict[int, torch.Tensor] = {}
    hooks = []
    for layer in layers:

        def save(tensor: torch.Tensor, hook: Any, layer: int = layer) -> None:
            captured[layer] = tensor.detach()

        hooks.append((hook_name(layer), save))
    logits = model.bridge.run_with_hooks(tokens.to(model.device, non_blocking=True), fwd_hooks=hooks)
    return captured, logits.argmax(dim=-1)


def extract(
    model: LoadedModel,
    windows: TokenWindows,
    folder: str | Path,
    settings: StoreSettings,
    *,
    overwrite: bool = False,
    progress: bool = True,
    inputs: Sequence[Path] = (),
    ranks: Ranks | None = None,
) -> ActivationStore:
    """Write (or finish writing) the activation store for `windows` into `folder` and open it; `inputs`: the
    local files and folders it is made from, which `folder` must keep apart from.

    Under torchrun (`ranks`), every rank writes the shards i with i % world == rank into the same folder (which
    every rank must see); rank 0 claims the folder first and marks the store complete after the last shard."""
    folder = Path(folder)
    bad = [layer for layer in settings.layers if layer < 0 or layer > model.n_layers]
    if bad:
        raise UsageError(f"layer {bad[0]} does not exist: {model.name} has layers 0..{model.n_layers}")
    check_forward(model)
    ranks = ranks or single(model.device)
    identity = store_identity(model, windows, settings)

    def start() -> dict[str, Any]:
        _prepare_folder(folder, identity, overwrite, inputs)
        manifest = read_json(folder / "manifest.json")
        if not manifest.get("complete") and not (folder / "windows.json").exists():
            _write_windows(folder, windows)
        return manifest

    manifest = ranks.on_main(start)
    if manifest.get("complete"):
        return ActivationStore(folder)

    n_shards = -(-len(windows) // settings.shard_windows)
    mine = [index for index in range(n_shards) if index % ranks.world == ranks.rank]
    todo = [index for index in mine if not _shard_path(folder, index).exists()]
    dtype = DTYPES[settings.dtype]
    tokens_all = torch.from_numpy(np.ascontiguousarray(windows.tokens, dtype=np.int64))
    if model.device.type == "cuda":
        tokens_all = tokens_all.pin_memory()  # host-to-device copies can then run asynchronously
    total_tokens = (
        sum(min(settings.shard_windows, len(windows) - index * settings.shard_windows) for index in todo)
        * windows.seq_len
    )
    started = time.perf_counter()
    bar = tqdm(total=total_tokens, unit="tok", unit_scale=True, desc="extract", disable=not (progress and ranks.main))
    autocast = extraction_autocast(settings.precision, model.device)
    for index in todo:
        lo = index * settings.shard_windows
        hi = min(lo + settings.shard_windows, len(windows))
        parts: dict[int, list[torch.Tensor]] = {layer: [] for layer in settings.layers}
        predictions: list[torch.Tensor] = []
        for batch_lo in range(lo, hi, settings.batch_size):
            batch = tokens_all[batch_lo : min(batch_lo + settings.batch_size, hi)]
            with autocast:
                captured, predicted = forward_batch(model, batch, settings.layers)
            for layer in settings.layers:
                parts[layer].append(to_host(captured[layer], dtype))
            predictions.append(to_host(predicted, torch.int64))
            bar.update(batch.numel())
        if model.device.type == "cuda":  # the asynchronous copies into pinned memory have landed (every GPU of a
            for index in range(torch.cuda.device_count()):  # --device-map model may have sent some)
                torch.cuda.synchronize(index)
        tensors = {f"resid.{layer}": torch.cat(parts[layer]).contiguous() for layer in settings.layers}
        tensors["model_pred"] = torch.cat(predictions).contiguous()
        atomic_write(_shard_path(folder, index), lambda tmp, t=tensors: save_file(t, str(tmp)))
    bar.close()
    elapsed = time.perf_counter() - started
    done = ranks.gather(ranks.describe() | {"shards": todo, "tokens": total_tokens, "seconds": round(elapsed, 3)})
    if ranks.main:
        tokens, wall = sum(entry["tokens"] for entry in done), max(entry["seconds"] for entry in done)
        manifest.update(
            complete=True,
            n_shards=n_shards,
            extract_seconds=round(wall, 3),
            tokens_per_second=round(tokens / wall, 1) if wall > 0 and tokens else None,
        )
        if ranks.enabled:
            manifest["extracted_by"] = done
        atomic_write_json(folder / "manifest.json", manifest)
    ranks.barrier()
    return ActivationStore(folder)


class ActivationStore:
    """Read access to a finished store: one layer at a time, all windows or a subset."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        manifest_path = self.folder / "manifest.json"
        if not manifest_path.exists():
            raise UsageError(f"{self.folder} holds no activation store (no manifest.json)")
        self.manifest: dict[str, Any] = read_json(manifest_path)
        if not self.manifest.get("complete"):
            raise UsageError(f"the activation store in {self.folder} is incomplete; rerun the extraction to finish it")
        self.identity: dict[str, Any] = self.manifest["identity"]
        with safe_open(str(self.folder / "windows.safetensors"), framework="pt") as handle:
            tokens = handle.get_tensor("tokens").numpy()
            doc_index = handle.get_tensor("doc_index").numpy()
            start = handle.get_tensor("start").numpy()
        names = read_json(self.folder / "windows.json")
        self.windows = TokenWindows(
            tokens=tokens, doc_index=doc_index, start=start, doc_names=names["doc_names"], seq_len=names["seq_len"]
        )
        self._n_shards = int(self.manifest["n_shards"])

    @property
    def layers(self) -> list[int]:
        return list(self.identity["layers"])

    def _shards(self):
        for index in range(self._n_shards):
            with safe_open(str(_shard_path(self.folder, index)), framework="pt") as handle:
                yield handle

    def _check_layer(self, layer: int) -> None:
        if layer not in self.layers:
            raise UsageError(f"layer {layer} is not in the store at {self.folder} (it has {self.layers})")

    def layer(self, layer: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The residual stream at `layer` for every window: (W, T, d). Memory grows with the store; for large
        stores use `iter_layer` (shard by shard) or `rows` (any rows, read on demand)."""
        self._check_layer(layer)
        return torch.cat([handle.get_tensor(f"resid.{layer}").to(dtype) for handle in self._shards()])

    def iter_layer(self, layer: int, dtype: torch.dtype = torch.float32) -> Iterator[tuple[int, torch.Tensor]]:
        """The layer shard by shard: (first window, (w, T, d)); one shard in memory at a time."""
        self._check_layer(layer)
        first = 0
        for handle in self._shards():
            block = handle.get_tensor(f"resid.{layer}").to(dtype)
            yield first, block
            first += len(block)

    def shard_paths(self) -> list[Path]:
        return [_shard_path(self.folder, index) for index in range(self._n_shards)]

    def rows(self, layer: int, in_memory: bool = False) -> LayerRows:
        """Row access to `layer` (row = window * T + position): `gather(rows)`, `blocks(n)`; read from disk on
        demand, or loaded once (`in_memory`). Close it (or use it in a `with`) when done."""
        self._check_layer(layer)
        return LayerRows(self.shard_paths(), f"resid.{layer}", in_memory=in_memory)

    def layer_nbytes(self) -> int:
        """Bytes of one stored layer (every window, stored dtype)."""
        d, itemsize = int(self.identity["d_model"]), DTYPES[self.identity["dtype"]].itemsize
        return len(self.windows) * self.windows.seq_len * d * itemsize

    def model_pred(self) -> torch.Tensor:
        """The model's top-1 prediction at each position (for the token one step later): (W, T)."""
        return torch.cat([handle.get_tensor("model_pred") for handle in self._shards()])


def load_subject(config: ModelFlags, device_map: str | None) -> LoadedModel:
    """The model to extract from: on one device with its TransformerLens bridge, or spread by `device_map`."""
    if device_map is None:
        return load_model(config.model, config.device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("--device-map spreads one model over the GPUs of one process; do not combine it with torchrun")
    return load_sharded(config.model, device_map)


def run_extract(config: ExtractConfig) -> int:
    model = load_subject(config, config.device_map)
    check_positions(model.hf_model, config.seq_len, model.name)
    check_forward(model)
    documents = load_documents(config.data)
    windows = make_windows(documents, model.tokenizer, config.seq_len, max_tokens=config.max_tokens, seed=config.seed)
    layers = parse_layers(config.layers, model.n_layers)
    shard_windows = max(config.batch_size, (64 // config.batch_size) * config.batch_size)
    settings = StoreSettings(
        layers=layers,
        dtype=config.dtype,
        batch_size=config.batch_size,
        shard_windows=shard_windows,
        precision=resolve_precision(config.precision, model.device),
    )
    inputs = input_paths(config.model, config.data)
    store = extract(
        model, windows, config.out, settings, overwrite=config.overwrite, progress=config.progress, inputs=inputs
    )
    print(f"activation store: {store.folder} ({len(store.windows)} windows, layers {store.layers})")
    return 0


COMMAND = Command(ExtractConfig, run_extract, help="write the activation store for a model and corpus")
