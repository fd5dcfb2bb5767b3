"""`probe-future train`: train (or fine-tune) a causal LM in one of the gradient modes of `probes.training.myopic`.

    probe-future train --mode myopic --arch gpt2-paper --out runs/gpt2-myopic
    torchrun --nproc_per_node=8 -m probes.cli train --mode myopic --arch gpt2-paper --out runs/gpt2-myopic

Loss: mean next-token cross-entropy over every position of fixed-length windows cut from the training
documents; AdamW, linear warm-up then cosine decay to zero, gradient clipping at 1.0. The held-out documents
(the same document split as `probe-future eval` and the probe job use, for the same --data and --seed) give the
validation loss.

The run folder (--out) ends up as a Hugging Face model folder (config.json, model.safetensors, tokenizer files)
plus `training.json` (settings, data hash, git hash, final losses) and `metrics.jsonl` (one line per logged step).
While training, `checkpoint/` holds the last resumable state; rerunning the same command after an interruption
(even kill -9) resumes from it and reproduces the uninterrupted run.

Under torchrun the same command trains with DistributedDataParallel: every optimizer step uses the same global
batch of the same global data order, split across ranks and gradient-accumulation micro-steps; only rank 0
writes files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from probes.corpus import Document, TokenWindows, load_documents, make_windows, split_by_document
from probes.corpus.tokenizer import gpt2_tokenizer
from probes.errors import UsageError
from probes.evaluate import next_token_losses, window_losses
from probes.io import atomic_write_json, atomic_write_text, read_json
from probes.models import load_plain_model, resolve_device, weights_hash
from probes.provenance import provenance
from probes.training.myopic import MODES, gradient_mode
from probes.training.presets import (
    CONFIG_HYPER,
    FINETUNE_HYPER,
    PRESETS,
    Hyper,
    config_from_dict,
    get_preset,
    max_positions,
    read_config_file,
    with_overrides,
)

DEFAULT_ARCH = "small"
TEST_FRACTION = 0.2  # the document split shared with `probe-future eval` and the probe job
GRAD_CLIP = 1.0
ADAM_BETAS = (0.9, 0.95)
PRECISIONS = ("auto", "fp32", "bf16")
CHECKPOINT = "checkpoint"
ARGS_FILE = "training_args.json"
METRICS_FILE = "metrics.jsonl"
TRAINING_FILE = "training.json"
END_OF_TEXT = "<|endoftext|>"


# ---------------------------------------------------------------------------------------------- settings


@dataclass
class TrainConfig:
    """What the user asked for; None means "the preset's value" (see probes.training.presets)."""

    out: str
    mode: str = "vanilla"
    arch: str | None = None
    config: str | None = None
    init: str = "random"
    tokenizer: str | None = None
    data: str = "bundled"
    seq_len: int | None = None
    max_tokens: int | None = None
    steps: int | None = None
    batch_size: int | None = None
    grad_accum: int = 1
    lr: float | None = None
    warmup: int | None = None
    weight_decay: float | None = None
    eval_every: int | None = None
    save_every: int | None = None
    eval_windows: int = 256
    log_every: int = 1
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    progress: bool = True


@dataclass(frozen=True)
class Settings:
    """The resolved settings of a run. Everything but `save_every` is part of the run's identity."""

    mode: str
    arch: str | None
    config: dict[str, Any] | None
    init: str
    tokenizer: str
    data: str
    seq_len: int
    max_tokens: int | None
    steps: int
    batch_size: int
    grad_accum: int
    lr: float
    warmup: int
    weight_decay: float
    eval_every: int
    save_every: int
    eval_windows: int
    log_every: int
    seed: int
    precision: str

    def identity(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        fields.pop("save_every")
        return fields


def resolve_settings(config: TrainConfig) -> Settings:
    """Check the flags and fill in the preset's defaults; every problem is a one-line UsageError."""
    if config.mode not in MODES:
        raise UsageError(f"unknown --mode {config.mode!r}; choose one of {', '.join(MODES)}")
    if config.precision not in PRECISIONS:
        raise UsageError(f"unknown --precision {config.precision!r}; choose one of {', '.join(PRECISIONS)}")
    finetune = config.init != "random"
    if config.arch is not None and config.config is not None:
        raise UsageError("give --arch or --config, not both")
    if finetune and (config.arch is not None or config.config is not None):
        raise UsageError("--init MODEL fine-tunes that model's own architecture: drop --arch/--config")
    if finetune and config.tokenizer is not None:
        raise UsageError("--init MODEL trains with that model's own tokenizer: drop --tokenizer")
    model_config = read_config_file(config.config) if config.config is not None else None
    arch = None if finetune or model_config is not None else (config.arch or DEFAULT_ARCH)
    base: Hyper = get_preset(arch).hyper if arch else (FINETUNE_HYPER if finetune else CONFIG_HYPER)
    hyper = with_overrides(
        base,
        steps=config.steps,
        batch_size=config.batch_size,
        lr=config.lr,
        warmup=config.warmup,
        weight_decay=config.weight_decay,
        seq_len=config.seq_len,
        eval_every=config.eval_every,
        save_every=config.save_every,
    )
    tokenizer = "init" if finetune else (config.tokenizer or "gpt2")
    if not finetune:
        parse_tokenizer_spec(tokenizer)
    _check_positive(
        steps=hyper.steps,
        batch_size=hyper.batch_size,
        grad_accum=config.grad_accum,
        lr=hyper.lr,
        eval_windows=config.eval_windows,
        log_every=config.log_every,
    )
    _check_non_negative(
        warmup=hyper.warmup,
        weight_decay=hyper.weight_decay,
        eval_every=hyper.eval_every,
        save_every=hyper.save_every,
    )
    if hyper.seq_len < 2:
        raise UsageError("--seq-len must be at least 2")
    if config.max_tokens is not None and config.max_tokens < hyper.seq_len:
        raise UsageError(f"--max-tokens {config.max_tokens} is less than one window of {hyper.seq_len} tokens")
    return Settings(
        mode=config.mode,
        arch=arch,
        config=model_config,
        init=config.init,
        tokenizer=tokenizer,
        data=config.data,
        seq_len=hyper.seq_len,
        max_tokens=config.max_tokens,
        steps=hyper.steps,
        batch_size=hyper.batch_size,
        grad_accum=config.grad_accum,
        lr=hyper.lr,
        warmup=hyper.warmup,
        weight_decay=hyper.weight_decay,
        eval_every=hyper.eval_every,
        save_every=hyper.save_every,
        eval_windows=config.eval_windows,
        log_every=config.log_every,
        seed=config.seed,
        precision=config.precision,
    )


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")


def _check_non_negative(**values: float) -> None:
    for name, value in values.items():
        if value < 0:
            raise UsageError(f"--{name.replace('_', '-')} must not be negative, got {value}")


def parse_tokenizer_spec(spec: str) -> int | None:
    """None for the GPT-2 tokenizer, N for a byte-level BPE of N tokens trained on the training documents."""
    if spec == "gpt2":
        return None
    kind, _, size = spec.partition(":")
    if kind == "bpe" and size.isdigit():
        if int(size) < 257:
            raise UsageError(f"--tokenizer {spec}: a byte-level BPE needs at least 257 tokens (256 bytes + end)")
        return int(size)
    raise UsageError(f"unknown --tokenizer {spec!r}; use gpt2 or bpe:N (e.g. bpe:8000)")


# ---------------------------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class Dist:
    """This process's place in the job (a single process is rank 0 of 1)."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device: str) -> Dist:
    """Join the torchrun job when there is one (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(0, 1, resolve_device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    target = resolve_device(device)
    if target.type == "cuda":
        target = torch.device("cuda", local_rank)
        torch.cuda.set_device(target)
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend="nccl" if target.type == "cuda" else "gloo")
    return Dist(rank, world, target)


def close_distributed(dist: Dist) -> None:
    if dist.enabled and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def all_mean(value: Tensor, dist: Dist) -> Tensor:
    if dist.enabled:
        torch_dist.all_reduce(value, op=torch_dist.ReduceOp.SUM)
        value = value / dist.world
    return value


# ---------------------------------------------------------------------------------------------- data


@dataclass
class TrainData:
    train: Tensor  # (n_train, seq_len) int64 windows of the training documents
    val: Tensor  # (n_val, seq_len) int64 windows of the held-out documents
    data_hash: str  # fingerprint of all windows (what `probe-future eval` stamps for the same data)
    train_hash: str
    n_train_docs: int
    n_test_docs: int


def split_documents(documents: list[Document], seed: int) -> list[Document]:
    """The training side of the document split (the side depends only on the seed and the document name)."""
    n = len(documents)
    one_per_document = TokenWindows(
        tokens=np.zeros((n, 1), dtype=np.int64),
        doc_index=np.arange(n, dtype=np.int64),
        start=np.zeros(n, dtype=np.int64),
        doc_names=[doc.name for doc in documents],
        seq_len=1,
    )
    train, _ = split_by_document(one_per_document, TEST_FRACTION, seed)
    return [documents[i] for i in train]


def load_train_data(settings: Settings, documents: list[Document], tokenizer: PreTrainedTokenizerBase) -> TrainData:
    windows = make_windows(documents, tokenizer, settings.seq_len, seed=settings.seed)
    train_idx, test_idx = split_by_document(windows, TEST_FRACTION, settings.seed)
    rng = np.random.default_rng(settings.seed)
    if settings.max_tokens is not None and settings.max_tokens // settings.seq_len < len(train_idx):
        train_idx = np.sort(rng.permutation(train_idx)[: settings.max_tokens // settings.seq_len])
    if len(test_idx) > settings.eval_windows:
        test_idx = np.sort(rng.permutation(test_idx)[: settings.eval_windows])
    train = windows.subset(train_idx)
    return TrainData(
        train=torch.from_numpy(train.tokens),
        val=torch.from_numpy(windows.tokens[test_idx]),
        data_hash=windows.fingerprint(),
        train_hash=train.fingerprint(),
        n_train_docs=int(len(np.unique(train.doc_index))),
        n_test_docs=int(len(np.unique(windows.doc_index[test_idx]))),
    )


def epoch_order(n_windows: int, seed: int, epoch: int) -> np.ndarray:
    """The data order of one epoch: a permutation that depends only on (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n_windows)


class BatchOrder:
    """Window indices of every (step, micro-step, rank): a pure function of the step, so resuming is exact.

    The global batch of step s is the s-th block of `batch_size` windows in the concatenated epoch
    permutations (an epoch's incomplete last block is skipped). Micro-step a of rank r takes the
    (a * world + r)-th slice of batch_size / (world * grad_accum) windows of it.
    """

    def __init__(self, n_windows: int, batch_size: int, grad_accum: int, seed: int, dist: Dist) -> None:
        self.n_windows, self.batch_size, self.seed = n_windows, batch_size, seed
        self.grad_accum, self.dist = grad_accum, dist
        self.micro = batch_size // (dist.world * grad_accum)
        self.steps_per_epoch = n_windows // batch_size
        self._epoch, self._order = -1, np.empty(0, dtype=np.int64)

    def global_batch(self, step: int) -> np.ndarray:
        epoch, offset = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, epoch_order(self.n_windows, self.seed, epoch)
        return self._order[offset * self.batch_size : (offset + 1) * self.batch_size]

    def micro_batches(self, step: int) -> list[np.ndarray]:
        batch = self.global_batch(step)
        slots = [a * self.dist.world + self.dist.rank for a in range(self.grad_accum)]
        return [batch[slot * self.micro : (slot + 1) * self.micro] for slot in slots]


# ---------------------------------------------------------------------------------------------- tokenizer, model


def train_bpe_tokenizer(documents: list[Document], vocab_size: int) -> PreTrainedTokenizerBase:
    """A byte-level BPE (GPT-2 style) trained on `documents`; deterministic for the same documents."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator((doc.text for doc in documents), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
        model_max_length=1_000_000,
    )


def build_tokenizer(settings: Settings, documents: list[Document]) -> PreTrainedTokenizerBase:
    size = parse_tokenizer_spec(settings.tokenizer)
    if size is None:
        return gpt2_tokenizer()
    return train_bpe_tokenizer(split_documents(documents, settings.seed), size)


def model_config(settings: Settings, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    vocab, end = len(tokenizer), tokenizer.eos_token_id
    if settings.config is not None:
        return config_from_dict(settings.config, vocab, settings.seq_len, end)
    return get_preset(settings.arch or DEFAULT_ARCH).model_config(vocab, settings.seq_len, end)


def fresh_model(config: PretrainedConfig, seed: int) -> PreTrainedModel:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return AutoModelForCausalLM.from_config(config)
        except ValueError as error:
            raise UsageError(f"cannot build a causal LM from the config: {str(error).splitlines()[0]}") from None


def check_positions(model: PreTrainedModel, seq_len: int) -> None:
    positions = max_positions(model.config)
    if positions is not None and positions < seq_len:
        raise UsageError(f"the model has {positions} positions, fewer than --seq-len {seq_len}")


# ---------------------------------------------------------------------------------------------- the run


class LoopSettings(Protocol):
    """The settings the training loop reads (a language-model run's `Settings`, or another task's)."""

    @property
    def mode(self) -> str: ...
    @property
    def steps(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def seq_len(self) -> int: ...
    @property
    def lr(self) -> float: ...
    @property
    def warmup(self) -> int: ...
    @property
    def eval_every(self) -> int: ...
    @property
    def save_every(self) -> int: ...
    @property
    def log_every(self) -> int: ...


class Trainable(Protocol):
    """What `run_training` needs: the loop, schedule, checkpoints and metrics work for any task that has this.

    `Run` (next-token prediction on text) is one; `probes.synthetic.run` supplies another.
    """

    @property
    def settings(self) -> LoopSettings: ...
    @property
    def out(self) -> Path: ...
    @property
    def dist(self) -> Dist: ...
    @property
    def model(self) -> nn.Module: ...
    @property
    def optimizer(self) -> torch.optim.Optimizer: ...
    @property
    def scheduler(self) -> torch.optim.lr_scheduler.LambdaLR: ...
    @property
    def identity(self) -> dict[str, Any]: ...
    @property
    def progress(self) -> bool: ...

    def train_step(self, step: int) -> float:
        """One optimizer step (0-based `step`); returns its mean loss."""
        ...

    def validation_loss(self) -> float: ...

    def finish(self, progress: Progress, train_loss: float | None, val_loss: float, wall: float) -> dict[str, Any]:
        """Write the final model folder; returns the summary written to training.json."""
        ...


@dataclass
class Run:
    """Everything a training run needs, built once (identically on every rank)."""

    settings: Settings
    out: Path
    dist: Dist
    tokenizer: PreTrainedTokenizerBase
    data: TrainData
    model: PreTrainedModel  # the inner model (what gradient_mode patches and save_pretrained writes)
    wrapped: nn.Module  # DDP around `model` when distributed, else `model`
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    order: BatchOrder
    identity: dict[str, Any]
    progress: bool

    def autocast(self) -> AbstractContextManager[Any]:
        if resolved_precision(self.settings.precision, self.dist.device) == "bf16":
            return torch.autocast(device_type=self.dist.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def train_step(self, step: int) -> float:
        return train_step(self, step)

    def validation_loss(self) -> float:
        return validation_loss(self)

    def finish(self, progress: Progress, train_loss: float | None, val_loss: float, wall: float) -> dict[str, Any]:
        summary = training_summary(self, progress, train_loss, val_loss, wall)
        export(self, summary)
        return summary


def resolved_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    return precision


def lr_factor(step: int, warmup: int, steps: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to zero at `steps`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not on biases, norms)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=ADAM_BETAS, fused=device.type == "cuda")


def build_run(config: TrainConfig, dist: Dist) -> Run:
    settings = resolve_settings(config)
    documents = load_documents(settings.data)
    init_hash = None
    if settings.init == "random":
        tokenizer = build_tokenizer(settings, documents)
        model = fresh_model(model_config(settings, tokenizer), settings.seed)
    else:
        loaded = load_plain_model(settings.init, "cpu")
        tokenizer, model, init_hash = loaded.tokenizer, loaded.hf_model, loaded.weights_hash
    check_positions(model, settings.seq_len)
    with gradient_mode(model, settings.mode):
        pass  # an architecture the mode cannot handle fails here, before any work
    data = load_train_data(settings, documents, tokenizer)
    check_batch(settings, dist, len(data.train))
    if len(data.val) == 0:
        raise UsageError("no held-out windows: the test documents are all shorter than one window")

    torch.manual_seed(settings.seed + dist.rank)  # dropout differs across ranks, as in any DDP run
    model.to(dist.device).train()
    wrapped: nn.Module = model
    if dist.enabled:
        device_ids = [dist.device.index] if dist.device.type == "cuda" else None
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    optimizer = make_optimizer(model, settings.lr, settings.weight_decay, dist.device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, settings.warmup, settings.steps)
    )
    identity = settings.identity() | {"data_hash": data.data_hash, "train_hash": data.train_hash}
    if init_hash is not None:
        identity["init_weights_hash"] = init_hash
    return Run(
        settings=settings,
        out=Path(config.out).expanduser(),
        dist=dist,
        tokenizer=tokenizer,
        data=data,
        model=model,
        wrapped=wrapped,
        optimizer=optimizer,
        scheduler=scheduler,
        order=BatchOrder(len(data.train), settings.batch_size, settings.grad_accum, settings.seed, dist),
        identity=identity,
        progress=config.progress,
    )


def check_batch(settings: Settings, dist: Dist, n_train: int) -> None:
    shards = dist.world * settings.grad_accum
    if settings.batch_size % shards:
        raise UsageError(
            f"--batch-size {settings.batch_size} is not divisible by processes × --grad-accum "
            f"({dist.world} × {settings.grad_accum})"
        )
    if settings.batch_size > n_train:
        raise UsageError(
            f"--batch-size {settings.batch_size} is larger than the data: {n_train} training windows of "
            f"{settings.seq_len} tokens; use a smaller batch or more text"
        )


# ---------------------------------------------------------------------------------------------- one step


class NonFiniteLoss(UsageError):
    pass


def train_step(run: Run, step: int) -> float:
    """One optimizer step on the global batch of `step` (0-based); returns its mean loss over all ranks."""
    micro_batches = run.order.micro_batches(step)

    def micro_loss(index: int) -> Tensor:
        tokens = run.data.train[micro_batches[index]].to(run.dist.device, non_blocking=True)
        with run.autocast():
            logits = run.wrapped(input_ids=tokens).logits
        return next_token_losses(logits, tokens).mean()

    return optimizer_step(run, run.wrapped, step, len(micro_batches), micro_loss)


def optimizer_step(
    run: Trainable, wrapped: nn.Module, step: int, n_micro: int, micro_loss: Callable[[int], Tensor]
) -> float:
    """Accumulate the gradients of `n_micro` micro-batch losses, clip, stop on a non-finite value, step.

    `micro_loss(index)` runs the forward of micro-batch `index` through `wrapped` (DDP around the model when
    distributed) and returns its mean loss. Returns the mean loss of the step over all ranks.
    """
    run.optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=run.dist.device)
    for index in range(n_micro):
        last = index == n_micro - 1
        # DDP averages gradients across ranks once per optimizer step, on the last micro-step.
        sync = nullcontext() if last or not run.dist.enabled else wrapped.no_sync()  # type: ignore[operator]
        with sync:
            loss = micro_loss(index)
            (loss / n_micro).backward()
        total += loss.detach()
    mean_loss = all_mean(total / n_micro, run.dist)
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), GRAD_CLIP)
    loss_value = float(mean_loss)
    if not (math.isfinite(loss_value) and math.isfinite(float(grad_norm))):
        bad = "loss" if not math.isfinite(loss_value) else "gradient norm"
        raise NonFiniteLoss(f"{bad} is {float(mean_loss if bad == 'loss' else grad_norm)} at step {step + 1}")
    run.optimizer.step()
    run.scheduler.step()
    return loss_value


@torch.no_grad()
def validation_loss(run: Run) -> float:
    """Mean next-token loss on the held-out windows (rank 0 only; the forward of the training mode)."""
    run.model.eval()
    try:
        with run.autocast():
            losses = window_losses(run.model, run.data.val, batch_size=32, device=run.dist.device)
    finally:
        run.model.train()
    return float(losses.mean())


# ---------------------------------------------------------------------------------------------- checkpoints


@dataclass
class Progress:
    step: int = 0  # optimizer steps done
    tokens_seen: int = 0


def checkpoint_dir(out: Path) -> Path:
    return out / CHECKPOINT


def _recover_checkpoint(out: Path) -> None:
    """Finish or undo a checkpoint swap that an interruption cut short."""
    previous = out / f".{CHECKPOINT}.previous"
    if not checkpoint_dir(out).exists() and previous.exists():
        previous.rename(checkpoint_dir(out))
    shutil.rmtree(previous, ignore_errors=True)
    shutil.rmtree(out / f".{CHECKPOINT}.partial", ignore_errors=True)


def save_checkpoint(run: Trainable, progress: Progress) -> None:
    """Write model, optimizer, scheduler, step and every rank's RNG state; swap it in atomically.

    Called on every rank (the RNG states are gathered); only rank 0 writes.
    """
    from safetensors.torch import save_model

    rng = {"cpu": torch.get_rng_state()}
    if run.dist.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(run.dist.device)
    rngs: list[Any] = [rng]
    if run.dist.enabled:
        rngs = [None] * run.dist.world
        torch_dist.all_gather_object(rngs, rng)
    if not run.dist.main:
        return
    out = run.out
    partial, previous = out / f".{CHECKPOINT}.partial", out / f".{CHECKPOINT}.previous"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_model(run.model, str(partial / "model.safetensors"))
    torch.save(run.optimizer.state_dict(), partial / "optimizer.pt")
    trainer_state = {
        "scheduler": run.scheduler.state_dict(),
        "step": progress.step,
        "tokens_seen": progress.tokens_seen,
        "rng": [{name: state.cpu() for name, state in entry.items()} for entry in rngs],
    }
    torch.save(trainer_state, partial / "trainer.pt")
    atomic_write_json(partial / "state.json", {"step": progress.step, "tokens_seen": progress.tokens_seen})
    _fsync_folder(partial)
    target = checkpoint_dir(out)
    if target.exists():
        target.rename(previous)
    partial.rename(target)
    _fsync_folder(out)
    shutil.rmtree(previous, ignore_errors=True)


def _fsync_folder(folder: Path) -> None:
    """Flush the folder's files and the folder itself (its entries) to disk."""
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def load_checkpoint(run: Trainable) -> Progress | None:
    """Restore the last checkpoint into the run (every rank reads it; the folder must be shared)."""
    from safetensors.torch import load_model as load_safetensors

    folder = checkpoint_dir(run.out)
    if not (folder / "trainer.pt").is_file():
        return None
    try:
        load_safetensors(run.model, str(folder / "model.safetensors"), device=str(run.dist.device))
        optimizer_state = torch.load(folder / "optimizer.pt", map_location=run.dist.device, weights_only=True)
        trainer_state = torch.load(folder / "trainer.pt", map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file: every failure mode means "cannot resume"
        raise UsageError(f"cannot resume from {folder}: {str(error).splitlines()[0]}") from None
    run.optimizer.load_state_dict(optimizer_state)
    run.scheduler.load_state_dict(trainer_state["scheduler"])
    rngs = trainer_state["rng"]
    if run.dist.rank < len(rngs):
        torch.set_rng_state(rngs[run.dist.rank]["cpu"])
        if "cuda" in rngs[run.dist.rank] and run.dist.device.type == "cuda":
            torch.cuda.set_rng_state(rngs[run.dist.rank]["cuda"], run.dist.device)
    return Progress(step=int(trainer_state["step"]), tokens_seen=int(trainer_state["tokens_seen"]))


# ---------------------------------------------------------------------------------------------- run folder


def prepare_out(run: Trainable) -> bool:
    """Check the folder belongs to this run (or is new; rank 0 only); True when the run already finished."""
    out, identity = run.out, run.identity
    args_file = out / ARGS_FILE
    if args_file.exists():
        try:
            stored = read_json(args_file)
        except (OSError, ValueError):
            raise UsageError(f"{args_file} is unreadable; use another --out") from None
        if stored != identity:
            differs = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
            raise UsageError(
                f"{out} holds a training run with other settings (differs in: {', '.join(differs)}); "
                "rerun with the same arguments to resume, or use another --out"
            )
        return (out / TRAINING_FILE).is_file()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} is not empty and holds no training run; use another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create {out}: {error.strerror}") from None
    atomic_write_json(args_file, identity)
    return False


class MetricsLog:
    """metrics.jsonl, one JSON object per logged step; on resume, lines past the checkpoint are dropped."""

    def __init__(self, path: Path, resume_step: int) -> None:
        self.path = path
        kept = [record for record in self.read(path) if record["step"] <= resume_step]
        atomic_write_text(path, "".join(json.dumps(record) + "\n" for record in kept))
        self.handle = open(path, "a", encoding="utf-8")

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        if not path.exists():
            return []
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interruption
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
        return records

    def write(self, record: dict[str, Any]) -> None:
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def export(run: Run, summary: dict[str, Any]) -> None:
    """The Hugging Face folder (weights, config, tokenizer), then training.json, which marks the run finished."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tmp = Path(tempfile.mkdtemp(prefix=".export.", dir=run.out))
    try:
        run.model.save_pretrained(tmp)
        run.tokenizer.save_pretrained(tmp)
        for path in sorted(tmp.iterdir()):
            os.replace(path, run.out / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_json(run.out / TRAINING_FILE, summary)


def training_summary(run: Run, progress: Progress, train_loss: float | None, val_loss: float, wall: float) -> dict:
    settings = run.settings
    return provenance(
        stage="train",
        **settings.identity(),
        save_every=settings.save_every,
        world_size=run.dist.world,
        precision_used=resolved_precision(settings.precision, run.dist.device),
        schedule="linear warm-up, cosine decay to 0",
        optimizer={"name": "AdamW", "betas": list(ADAM_BETAS), "grad_clip": GRAD_CLIP},
        model_type=run.model.config.model_type,
        architecture=type(run.model).__name__,
        n_params=sum(p.numel() for p in run.model.parameters()),
        vocab_size=len(run.tokenizer),
        data_info={
            "spec": settings.data,
            "data_hash": run.data.data_hash,
            "train_hash": run.data.train_hash,
            "seq_len": settings.seq_len,
            "seed": settings.seed,
            "test_fraction": TEST_FRACTION,
            "n_train_windows": len(run.data.train),
            "n_val_windows": len(run.data.val),
            "n_train_docs": run.data.n_train_docs,
            "n_test_docs": run.data.n_test_docs,
        },
        tokens_seen=progress.tokens_seen,
        final_train_loss=train_loss,
        final_val_loss=val_loss,
        weights_hash=weights_hash(run.model),
        wall_seconds=round(wall, 3),
        device=run.dist.device.type,
    )


# ---------------------------------------------------------------------------------------------- the loop


def train(config: TrainConfig) -> dict[str, Any]:
    """Train (or resume) the run described by `config`; returns the contents of training.json."""
    dist = init_distributed(config.device)
    try:
        run = build_run(config, dist)
        finished = prepare_out(run) if dist.main else False
        if dist.enabled:
            torch_dist.barrier()  # rank 0 has checked and set up the folder
            finished = (run.out / TRAINING_FILE).is_file()
        summary = read_json(run.out / TRAINING_FILE) if finished and dist.main else {}
        if not finished:
            summary = run_training(run)
        if dist.enabled:
            # Leave together: a rank that tears down the process group while rank 0 still evaluates and
            # writes the checkpoint can hang in the shutdown.
            torch_dist.barrier()
        return summary
    finally:
        close_distributed(dist)


def _due(step: int, every: int, last: int) -> bool:
    return step == last or (every > 0 and step % every == 0)


def run_training(run: Trainable) -> dict[str, Any]:
    settings, dist = run.settings, run.dist
    started = time.perf_counter()
    if dist.main:
        _recover_checkpoint(run.out)
    if dist.enabled:
        torch_dist.barrier()
    progress = load_checkpoint(run) or Progress()
    log = MetricsLog(run.out / METRICS_FILE, progress.step) if dist.main else None
    tokens_per_step = settings.batch_size * settings.seq_len
    bar = tqdm(
        total=settings.steps,
        initial=progress.step,
        desc=f"train {settings.mode}",
        unit="step",
        disable=not (dist.main and run.progress),
    )
    loss, val_loss = None, None
    interval_tokens, interval_seconds = 0, 0.0
    try:
        with gradient_mode(run.model, settings.mode):
            for step in range(progress.step, settings.steps):
                tick = time.perf_counter()
                try:
                    loss = run.train_step(step)
                except NonFiniteLoss as error:
                    raise NonFiniteLoss(
                        f"training diverged: {error}; {_kept(run, progress)}; "
                        "train into a new --out with a lower --lr or a longer --warmup"
                    ) from None
                interval_seconds += time.perf_counter() - tick
                interval_tokens += tokens_per_step
                progress = Progress(step + 1, progress.tokens_seen + tokens_per_step)
                evaluate_now = _due(progress.step, settings.eval_every, settings.steps)
                if dist.main and (evaluate_now or _due(progress.step, settings.log_every, settings.steps)):
                    record: dict[str, Any] = {
                        "step": progress.step,
                        "train_loss": loss,
                        "lr": _lr_of_step(run, step),
                        "tokens_seen": progress.tokens_seen,
                        "tokens_per_second": round(interval_tokens / max(interval_seconds, 1e-9), 1),
                    }
                    if evaluate_now:
                        val_loss = run.validation_loss()
                        record["val_loss"] = val_loss
                    assert log is not None
                    log.write(record)
                    bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{record['tokens_per_second']:.0f}", refresh=False)
                    interval_tokens, interval_seconds = 0, 0.0
                bar.update(1)
                if _due(progress.step, settings.save_every, settings.steps):
                    save_checkpoint(run, progress)
    finally:
        bar.close()
        if log is not None:
            log.close()
    if not dist.main:
        return {}
    if val_loss is None:  # the run had already reached its last step before this resume
        val_loss = run.validation_loss()
    if loss is None:
        loss = next((r["train_loss"] for r in reversed(MetricsLog.read(run.out / METRICS_FILE))), None)
    return run.finish(progress, loss, val_loss, time.perf_counter() - started)


def _lr_of_step(run: Trainable, step: int) -> float:
    """The learning rate that step `step` (0-based) used."""
    return run.settings.lr * lr_factor(step, run.settings.warmup, run.settings.steps)


def _kept(run: Trainable, progress: Progress) -> str:
    state = checkpoint_dir(run.out) / "state.json"
    if state.is_file():
        return f"the last good checkpoint (step {read_json(state)['step']}) is kept in {checkpoint_dir(run.out)}"
    return f"no checkpoint was written yet (step {progress.step} was the last good one)"


@contextmanager
def _quiet_on_other_ranks(dist_rank: int) -> Iterator[None]:
    """Errors are reported once, by rank 0; the other ranks exit with the same status."""
    try:
        yield
    except UsageError:
        if dist_rank == 0:
            raise
        raise SystemExit(2) from None


# ---------------------------------------------------------------------------------------------- CLI


def register(subparsers: argparse._SubParsersAction) -> None:
    from probes.config import add_data_args

    parser = subparsers.add_parser(
        "train", help="train or fine-tune a model: vanilla, myopic, strict-myopic or transformer-bigram"
    )
    parser.add_argument("--mode", default="vanilla", help=f"gradient mode: {' | '.join(MODES)}")
    parser.add_argument("--arch", default=None, help=f"architecture preset: {' | '.join(PRESETS)} (default small)")
    parser.add_argument("--config", default=None, help="a model config JSON file with a model_type, instead of --arch")
    parser.add_argument("--init", default="random", help="random (from scratch) | a model to fine-tune")
    parser.add_argument("--tokenizer", default=None, help="gpt2 (default) | bpe:N (trained on the training documents)")
    add_data_args(parser)
    parser.set_defaults(seq_len=None, max_tokens=None)
    _set_help(parser, "--seq-len", "window length in tokens (default: the preset's, 64)")
    _set_help(parser, "--max-tokens", "cap on the training tokens, sampled as whole windows (default: all)")
    _set_help(parser, "--seed", "seed for the initial weights, the document split and the data order")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the preset's)")
    parser.add_argument("--batch-size", type=int, default=None, help="GLOBAL batch in windows, across processes")
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-steps per optimizer step")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate")
    parser.add_argument("--warmup", type=int, default=None, help="linear warm-up steps")
    parser.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (matrices only)")
    parser.add_argument("--eval-every", type=int, default=None, help="held-out loss every N steps (0: at the end)")
    parser.add_argument("--save-every", type=int, default=None, help="checkpoint every N steps (0: at the end)")
    parser.add_argument("--eval-windows", type=int, default=256, help="held-out windows for the validation loss")
    parser.add_argument("--log-every", type=int, default=1, help="a metrics.jsonl line every N steps")
    parser.add_argument("--precision", default="auto", help="auto (bf16 autocast on CUDA, else fp32) | fp32 | bf16")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to train")
    parser.add_argument("--out", required=True, help="run folder: the checkpoint, training.json, metrics.jsonl")
    parser.set_defaults(func=run_train_command)


def _set_help(parser: argparse.ArgumentParser, flag: str, text: str) -> None:
    parser._option_string_actions[flag].help = text


def run_train_command(args: argparse.Namespace) -> int:
    config = TrainConfig(
        out=args.out,
        mode=args.mode,
        arch=args.arch,
        config=args.config,
        init=args.init,
        tokenizer=args.tokenizer,
        data=args.data,
        seq_len=args.seq_len,
        max_tokens=args.max_tokens,
        steps=args.steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=args.lr,
        warmup=args.warmup,
        weight_decay=args.weight_decay,
        eval_every=args.eval_every,
        save_every=args.save_every,
        eval_windows=args.eval_windows,
        log_every=args.log_every,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
    )
    with _quiet_on_other_ranks(int(os.environ.get("RANK", "0"))):
        summary = train(config)
    if summary:
        print(
            f"trained {summary['mode']} model: {summary['steps']} steps, final val loss "
            f"{summary['final_val_loss']:.4f} nats; checkpoint: {args.out}"
        )
    return 0
