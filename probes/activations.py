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

import time
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
from probes.config import Command, DataFlags, Flags, ModelFlags, OutputFlags, ProgressFlag
from probes.corpus import TokenWindows, load_documents, make_windows
from probes.errors import UsageError
from probes.io import atomic_write, atomic_write_json, read_json
from probes.models import LoadedModel, load_model
from probes.runs import claim_folder
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

    def __post_init__(self) -> None:
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
    }


def _shard_path(folder: Path, index: int) -> Path:
    return folder / f"shard-{index:05d}.safetensors"


def _prepare_folder(folder: Path, identity: dict[str, Any], overwrite: bool) -> None:
    if not claim_folder(folder, "manifest.json", identity, "an activation store", overwrite):
        atomic_write_json(folder / "manifest.json", {"identity": identity, "complete": False, "version": __version__})


def _write_windows(folder: Path, windows: TokenWindows) -> None:
    tensors = {
        "tokens": torch.from_numpy(np.ascontiguousarray(windows.tokens, dtype=np.int64)),
        "doc_index": torch.from_numpy(np.ascontiguousarray(windows.doc_index, dtype=np.int64)),
        "start": torch.from_numpy(np.ascontiguousarray(windows.start, dtype=np.int64)),
    }
    atomic_write(folder / "windows.safetensors", lambda tmp: save_file(tensors, str(tmp)))
    atomic_write_json(folder / "windows.json", {"doc_names": list(windows.doc_names), "seq_len": windows.seq_len})


@torch.inference_mode()
def forward_batch(
    model: LoadedModel, tokens: torch.Tensor, layers: tuple[int, ...]
) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """One forward pass: the residual stream at each layer and the model's top-1 prediction per position."""
    captured: dict[int, torch.Tensor] = {}
    hooks = []
    for layer in layers:

        def save(tensor: torch.Tensor, hook: Any, layer: int = layer) -> None:
            captured[layer] = tensor.detach()

        hooks.append((hook_name(layer), save))
    logits = model.bridge.run_with_hooks(tokens.to(model.device), fwd_hooks=hooks)
    return captured, logits.argmax(dim=-1)


def extract(
    model: LoadedModel,
    windows: TokenWindows,
    folder: str | Path,
    settings: StoreSettings,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> ActivationStore:
    """Write (or finish writing) the activation store for `windows` into `folder` and open it."""
    folder = Path(folder)
    bad = [layer for layer in settings.layers if layer < 0 or layer > model.n_layers]
    if bad:
        raise UsageError(f"layer {bad[0]} does not exist: {model.name} has layers 0..{model.n_layers}")
    identity = store_identity(model, windows, settings)
    _prepare_folder(folder, identity, overwrite)
    manifest = read_json(folder / "manifest.json")
    if manifest.get("complete"):
        return ActivationStore(folder)
    if not (folder / "windows.json").exists():
        _write_windows(folder, windows)

    n_shards = -(-len(windows) // settings.shard_windows)
    todo = [index for index in range(n_shards) if not _shard_path(folder, index).exists()]
    dtype = DTYPES[settings.dtype]
    tokens_all = torch.from_numpy(np.ascontiguousarray(windows.tokens, dtype=np.int64))
    total_tokens = (
        sum(min(settings.shard_windows, len(windows) - index * settings.shard_windows) for index in todo)
        * windows.seq_len
    )
    started = time.perf_counter()
    bar = tqdm(total=total_tokens, unit="tok", unit_scale=True, desc="extract", disable=not progress)
    for index in todo:
        lo = index * settings.shard_windows
        hi = min(lo + settings.shard_windows, len(windows))
        parts: dict[int, list[torch.Tensor]] = {layer: [] for layer in settings.layers}
        predictions: list[torch.Tensor] = []
        for batch_lo in range(lo, hi, settings.batch_size):
            batch = tokens_all[batch_lo : min(batch_lo + settings.batch_size, hi)]
            captured, predicted = forward_batch(model, batch, settings.layers)
            for layer in settings.layers:
                parts[layer].append(captured[layer].to(dtype=dtype, device="cpu"))
            predictions.append(predicted.to("cpu"))
            bar.update(batch.numel())
        tensors = {f"resid.{layer}": torch.cat(parts[layer]).contiguous() for layer in settings.layers}
        tensors["model_pred"] = torch.cat(predictions).contiguous()
        atomic_write(_shard_path(folder, index), lambda tmp, t=tensors: save_file(t, str(tmp)))
    bar.close()
    elapsed = time.perf_counter() - started
    manifest.update(
        complete=True,
        n_shards=n_shards,
        extract_seconds=round(elapsed, 3),
        tokens_per_second=round(total_tokens / elapsed, 1) if elapsed > 0 and total_tokens else None,
    )
    atomic_write_json(folder / "manifest.json", manifest)
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

    def layer(self, layer: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The residual stream at `layer` for every window: (W, T, d)."""
        if layer not in self.layers:
            raise UsageError(f"layer {layer} is not in the store at {self.folder} (it has {self.layers})")
        return torch.cat([handle.get_tensor(f"resid.{layer}").to(dtype) for handle in self._shards()])

    def model_pred(self) -> torch.Tensor:
        """The model's top-1 prediction at each position (for the token one step later): (W, T)."""
        return torch.cat([handle.get_tensor("model_pred") for handle in self._shards()])


def run_extract(config: ExtractConfig) -> int:
    model = load_model(config.model, config.device)
    documents = load_documents(config.data)
    windows = make_windows(documents, model.tokenizer, config.seq_len, max_tokens=config.max_tokens, seed=config.seed)
    layers = parse_layers(config.layers, model.n_layers)
    shard_windows = max(config.batch_size, (64 // config.batch_size) * config.batch_size)
    settings = StoreSettings(
        layers=layers, dtype=config.dtype, batch_size=config.batch_size, shard_windows=shard_windows
    )
    store = extract(model, windows, config.out, settings, overwrite=config.overwrite, progress=config.progress)
    print(f"activation store: {store.folder} ({len(store.windows)} windows, layers {store.layers})")
    return 0


COMMAND = Command(ExtractConfig, run_extract, help="write the activation store for a model and corpus")
