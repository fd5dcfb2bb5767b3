"""The training engine: distributed setup, AdamW with warm-up + cosine decay, exact checkpoint/resume, metrics.

`run_training(run)` trains anything that has the `Trainable` shape: the language models of
`probes.training.lm` and the synthetic task of `probes.synthetic.run`. Every optimizer step uses the same
global batch whatever the number of processes (torchrun) and gradient-accumulation micro-steps; only rank 0
writes files. A run folder holds `training_args.json` (the run's identity), `checkpoint/` (the last resumable
state, swapped in atomically), `metrics.jsonl` (one line per logged step) and, once finished, `training.json`.
Rerunning the same command after an interruption (even kill -9) resumes and reproduces the uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as torch_dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from probes.distributed import Ranks
from probes.errors import UsageError
from probes.io import atomic_write_json, atomic_write_text, read_json, share_file
from probes.runs import TRAINING_ARGS_FILE, TRAINING_FILE, claim_folder
from probes.training.myopic import gradient_mode

GRAD_CLIP = 1.0
ADAM_BETAS = (0.9, 0.95)
PRECISIONS = ("auto", "fp32", "bf16")
CHECKPOINT = "checkpoint"
ARGS_FILE = TRAINING_ARGS_FILE
METRICS_FILE = "metrics.jsonl"


# ---------------------------------------------------------------------------------------------- distributed


def all_mean(value: Tensor, dist: Ranks) -> Tensor:
    if dist.enabled:
        torch_dist.all_reduce(value, op=torch_dist.ReduceOp.SUM)
        value = value / dist.world
    return value


# ---------------------------------------------------------------------------------------------- what the loop trains


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

    `probes.training.lm.Run` (next-token prediction on text) is one; `probes.synthetic.run` supplies another.
    """

    @property
    def settings(self) -> LoopSettings: ...
    @property
    def out(self) -> Path: ...
    @property
    def dist(self) -> Ranks: ...
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
class Progress:
    step: int = 0  # optimizer steps done
    tokens_seen: int = 0


# ---------------------------------------------------------------------------------------------- schedule, one step


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
    """AdamW; weight decay on matrices only (not on biases, norms). Fused (one kernel per step) on CPU and CUDA:
    on the demo's models torch's per-parameter loop costs 2-3 ms a step, the fused kernel 0.6-1 ms."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=ADAM_BETAS, fused=device.type in ("cpu", "cuda"))


class NonFiniteLoss(UsageError):
    """A loss or gradient norm that is NaN or infinite: the run stops, keeping its last good checkpoint."""


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


# ---------------------------------------------------------------------------------------------- checkpoints


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
    share_file(partial / "model.safetensors")  # safetensors writes owner-only files
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


def prepare_out(
    run: Trainable,
    overwrite: bool = False,
    inputs: Sequence[Path] = (),
    shares_with: Sequence[str] = (),
    replaceable: bool = True,
) -> bool:
    """Make `run.out` the folder of this run (rank 0 only); True when the run already finished there.

    The folder claim of every stage (`probes.runs.claim_folder`): a folder of this very run (the same identity)
    is resumed; a training run with other settings is replaced only with `overwrite`; anything else (a file, an
    input, another stage's run, other files) is refused. `shares_with`: stages whose folders the run may share
    (a synthetic-task run trains its model in its own folder).
    """
    resumed = claim_folder(
        run.out,
        "train",
        run.identity,
        overwrite=overwrite,
        marker=ARGS_FILE,
        inputs=inputs,
        shares_with=shares_with,
        replaceable=replaceable,
    )
    return resumed and (run.out / TRAINING_FILE).is_file()


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


# ---------------------------------------------------------------------------------------------- the loop


def _due(step: int, every: int, last: int) -> bool:
    return step == last or (every > 0 and step % every == 0)


def run_training(run: Trainable) -> dict[str, Any]:
    """Train from the last checkpoint (or the start) to the last step; returns the summary of `run.finish`
    (an empty dict on ranks other than 0)."""
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
        with ModeScope(run.model, settings.mode) as scope:
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
                lens_now = _lens_due(run, progress.step)
                if dist.main and (evaluate_now or lens_now or _due(progress.step, settings.log_every, settings.steps)):
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
                    if lens_now:  # the lens differentiates in every mode itself, so outside the run's mode
                        with scope.outside():
                            record |= run.lens_metrics()  # type: ignore[attr-defined]
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


class ModeScope:
    """The run's gradient mode, entered once for the whole loop; `outside()` leaves it for a while."""

    def __init__(self, model: nn.Module, mode: str) -> None:
        self.model, self.mode = model, mode
        self._context: AbstractContextManager[None] | None = None

    def __enter__(self) -> ModeScope:
        self._context = gradient_mode(self.model, self.mode)
        self._context.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        context, self._context = self._context, None
        if context is not None:
            context.__exit__(*exc_info)

    @contextmanager
    def outside(self) -> Iterator[None]:
        self.__exit__(None, None, None)
        try:
            yield
        finally:
            self.__enter__()


def _lens_due(run: Trainable, step: int) -> bool:
    """`--lens-every`: a run that can measure the gradient lens (language models) records it every N steps."""
    every = int(getattr(run.settings, "lens_every", 0) or 0)
    return every > 0 and hasattr(run, "lens_metrics") and _due(step, every, run.settings.steps)


def _lr_of_step(run: Trainable, step: int) -> float:
    """The learning rate that step `step` (0-based) used."""
    return run.settings.lr * lr_factor(step, run.settings.warmup, run.settings.steps)


def _kept(run: Trainable, progress: Progress) -> str:
    state = checkpoint_dir(run.out) / "state.json"
    if state.is_file():
        return f"the last good checkpoint (step {read_json(state)['step']}) is kept in {checkpoint_dir(run.out)}"
    return f"no checkpoint was written yet (step {progress.step} was the last good one)"
