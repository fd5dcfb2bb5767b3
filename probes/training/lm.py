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
writes files. The loop, checkpoints and metrics are the engine's (`probes.training.loop`); this module supplies
the language-model task: tokenizer, windows, model and the next-token loss.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from simple_parsing import field
from torch import Tensor, nn
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from probes.config import DEVICES, Command, DataFlags, OutputFlags, ProgressFlag
from probes.corpus import Document, TokenWindows, load_documents, make_windows, split_by_document
from probes.corpus.tokenizer import gpt2_tokenizer
from probes.distributed import Ranks, join, leave
from probes.errors import UsageError
from probes.io import atomic_write_json, read_json, share_file
from probes.models import check_causal, load_plain_model, resolve_device, weights_hash
from probes.precision import configure_matmuls
from probes.provenance import provenance
from probes.runs import TEST_FRACTION, TRAINING_FILE, input_paths
from probes.training.loop import (
    ADAM_BETAS,
    GRAD_CLIP,
    PRECISIONS,
    Progress,
    lr_factor,
    make_optimizer,
    optimizer_step,
    prepare_out,
    resolved_precision,
    run_training,
)
from probes.training.losses import NextTokenLoss, window_losses
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
END_OF_TEXT = "<|endoftext|>"


# ---------------------------------------------------------------------------------------------- settings


@dataclass(kw_only=True)
class TrainConfig(DataFlags, OutputFlags, ProgressFlag):
    """What the user asked for (the flags of `probe-future train`); None means "the preset's value"."""

    mode: str = field(default="vanilla", choices=MODES)
    """gradient mode (see docs/TRAINING.md)"""
    arch: str | None = field(default=None, help=f"architecture preset: {' | '.join(PRESETS)} (default: {DEFAULT_ARCH})")
    config: str | None = None
    """a model config JSON file with a model_type, instead of --arch"""
    init: str = "random"
    """random (from scratch) | a model to fine-tune"""
    tokenizer: str | None = None
    """gpt2 (default) | bpe:N (trained on the training documents)"""
    seq_len: int | None = None
    """window length in tokens (default: the preset's, 64)"""
    max_tokens: int | None = None
    """cap on the training tokens, sampled as whole windows (default: all)"""
    seed: int = 0
    """seed for the initial weights, the document split and the data order"""
    steps: int | None = None
    """optimizer steps (default: the preset's)"""
    batch_size: int | None = None
    """GLOBAL batch in windows, across processes (default: the preset's)"""
    grad_accum: int = 1
    """micro-steps per optimizer step"""
    lr: float | None = None
    """peak learning rate (default: the preset's)"""
    warmup: int | None = None
    """linear warm-up steps (default: the preset's)"""
    weight_decay: float | None = None
    """AdamW weight decay, matrices only (default: the preset's)"""
    eval_every: int | None = None
    """held-out loss every N steps, 0: at the end (default: the preset's)"""
    save_every: int | None = None
    """checkpoint every N steps, 0: at the end (default: the preset's)"""
    eval_windows: int = 256
    """held-out windows for the validation loss"""
    log_every: int = 1
    """a metrics.jsonl line every N steps"""
    lens_every: int = 0
    """the gradient lens's all-parameter numbers in metrics.jsonl every N steps (0: never; see docs/TRAINING.md)"""
    lens_windows: int = 128
    """held-out windows the gradient lens measures (whole documents, batches of 16)"""
    precision: str = field(default="auto", choices=PRECISIONS)
    """auto (bf16 autocast on CUDA, else fp32) | fp32 | bf16"""
    compile: bool = False
    """torch.compile the model's forward (CUDA; the first steps pay the compile time)"""
    device: str = field(default="auto", choices=DEVICES)
    """where to train: auto | cpu | cuda"""


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
    lens_every: int = 0
    lens_windows: int = 128

    def identity(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        for name in ("save_every", "lens_every", "lens_windows"):  # what is saved or recorded, not what is trained
            fields.pop(name)
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
        lens_windows=config.lens_windows,
    )
    _check_non_negative(
        lens_every=config.lens_every,
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
        lens_every=config.lens_every,
        lens_windows=config.lens_windows,
    )


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not (math.isfinite(value) and value > 0):
            raise UsageError(f"--{name.replace('_', '-')} must be positive and finite, got {value}")


def _check_non_negative(**values: float) -> None:
    for name, value in values.items():
        if not (math.isfinite(value) and value >= 0):
            raise UsageError(f"--{name.replace('_', '-')} must be finite and not negative, got {value}")


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


# ---------------------------------------------------------------------------------------------- data


@dataclass
class TrainData:
    train: Tensor  # (n_train, seq_len) int64 windows of the training documents
    val: Tensor  # (n_val, seq_len) int64 windows of the held-out documents
    data_hash: str  # fingerprint of all windows (what `probe-future eval` stamps for the same data)
    train_hash: str
    n_train_docs: int
    n_test_docs: int
    val_docs: Tensor | None = None  # (n_val,) document of each held-out window (the gradient lens batches by it)


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
        val_docs=torch.from_numpy(windows.doc_index[test_idx]),
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

    def __init__(self, n_windows: int, batch_size: int, grad_accum: int, seed: int, dist: Ranks) -> None:
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
            model = AutoModelForCausalLM.from_config(config)
        except ValueError as error:
            raise UsageError(f"cannot build a causal LM from the config: {str(error).splitlines()[0]}") from None
    check_causal(model, f"the {config.model_type} model of the config")
    return model


def check_positions(model: PreTrainedModel, seq_len: int) -> None:
    positions = max_positions(model.config)
    if positions is not None and positions < seq_len:
        raise UsageError(f"the model has {positions} positions, fewer than --seq-len {seq_len}")


# ---------------------------------------------------------------------------------------------- the run


@dataclass
class Run:
    """Everything a training run needs, built once (identically on every rank)."""

    settings: Settings
    out: Path
    dist: Ranks
    tokenizer: PreTrainedTokenizerBase
    data: TrainData
    model: PreTrainedModel  # the inner model (what gradient_mode patches and save_pretrained writes)
    wrapped: nn.Module  # the training loss of `model` (NextTokenLoss), in DDP when distributed
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

    def lens_metrics(self) -> dict[str, Any]:
        """The gradient lens on the held-out probe set (`--lens-every`; rank 0, outside the gradient mode)."""
        from probes.lens.training import lens_record, probe_batches

        assert self.data.val_docs is not None
        batches = probe_batches(self.data.val, self.data.val_docs, self.settings.lens_windows, self.settings.seed)
        return lens_record(self.model, batches)

    def finish(self, progress: Progress, train_loss: float | None, val_loss: float, wall: float) -> dict[str, Any]:
        summary = training_summary(self, progress, train_loss, val_loss, wall)
        export(self, summary)
        return summary


def build_run(config: TrainConfig, dist: Ranks) -> Run:
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
    wrapped: nn.Module = NextTokenLoss(model)
    if dist.enabled:
        device_ids = [dist.device.index] if dist.device.type == "cuda" else None
        wrapped = nn.parallel.DistributedDataParallel(wrapped, device_ids=device_ids)
    configure_matmuls(resolved_precision(settings.precision, dist.device), dist.device)  # TF32 unless fp32
    if config.compile:
        wrapped = torch.compile(wrapped)  # type: ignore[assignment]
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


def check_batch(settings: Settings, dist: Ranks, n_train: int) -> None:
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


def train_step(run: Run, step: int) -> float:
    """One optimizer step on the global batch of `step` (0-based); returns its mean loss over all ranks."""
    micro_batches = run.order.micro_batches(step)

    def micro_loss(index: int) -> Tensor:
        tokens = run.data.train[micro_batches[index]].to(run.dist.device, non_blocking=True)
        with run.autocast():
            return run.wrapped(tokens)

    return optimizer_step(run, run.wrapped, step, len(micro_batches), micro_loss)


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


# ---------------------------------------------------------------------------------------------- the finished folder


def export(run: Run, summary: dict[str, Any]) -> None:
    """The Hugging Face folder (weights, config, tokenizer), then training.json, which marks the run finished."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tmp = Path(tempfile.mkdtemp(prefix=".export.", dir=run.out))
    try:
        run.model.save_pretrained(tmp)
        run.tokenizer.save_pretrained(tmp)
        for path in sorted(tmp.iterdir()):
            share_file(path)  # safetensors writes owner-only files; every output is shared alike
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


# ---------------------------------------------------------------------------------------------- the command


def train(config: TrainConfig) -> dict[str, Any]:
    """Train (or resume) the run described by `config`; returns the contents of training.json."""
    dist = join(resolve_device(config.device), timeout=None)
    try:
        run = build_run(config, dist)
        inputs = input_paths(config.data, config.config, None if config.init == "random" else config.init)
        finished = prepare_out(run, overwrite=config.overwrite, inputs=inputs) if dist.main else False
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
        leave(dist, together=False)  # after the barrier above on success; after a failure, without one


@contextmanager
def _quiet_on_other_ranks(dist_rank: int) -> Iterator[None]:
    """Errors are reported once, by rank 0; the other ranks exit with the same status."""
    try:
        yield
    except UsageError:
        if dist_rank == 0:
            raise
        raise SystemExit(2) from None


def run_train_command(config: TrainConfig) -> int:
    with _quiet_on_other_ranks(int(os.environ.get("RANK", "0"))):
        summary = train(config)
    if summary:
        print(
            f"trained {summary['mode']} model: {summary['steps']} steps, final val loss "
            f"{summary['final_val_loss']:.4f} nats; checkpoint: {config.out}"
        )
    return 0


COMMAND = Command(
    TrainConfig,
    run_train_command,
    help="train or fine-tune a model: vanilla, myopic, strict-myopic or transformer-bigram",
)
