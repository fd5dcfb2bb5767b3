"""Training a synthetic-task model with the language models' engine (`probes.training.loop.run_training`).

AdamW, warm-up + cosine schedule, gradient clipping, checkpoints and exact resume, metrics.jsonl and the myopic
gradient modes come from the engine; this module supplies the task's `Trainable`: a Huber loss (δ = 1) on all
positions of fresh sequences every step. Several models can train side by side, each in its own single-thread
process (`python -m probes.synthetic.run PAYLOAD`, see `train_side_by_side`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probes.distributed import Ranks, single
from probes.errors import UsageError
from probes.io import atomic_write_json, read_json
from probes.models import resolve_device, weights_hash
from probes.provenance import provenance
from probes.runs import TRAINING_FILE
from probes.synthetic.model import SyntheticModel, block_config, fresh_model, huber, save_model_folder
from probes.synthetic.settings import SyntheticSettings
from probes.synthetic.task import LOSS_STREAM, TRAIN_STREAM, Batch, batch_of
from probes.training.loop import Progress, lr_factor, make_optimizer, optimizer_step, prepare_out, run_training

EVAL_BATCH = 256
SIDE_BY_SIDE_ENTRY = "probes.synthetic.run"  # `python -m` this module with a payload trains one model


@dataclass
class SyntheticRun:
    """A `probes.training.loop.Trainable`: the shared loop trains it, checkpoints and resumes it."""

    settings: SyntheticSettings
    out: Path
    dist: Ranks
    model: SyntheticModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    identity: dict[str, Any]
    progress: bool
    val: Batch

    def train_step(self, step: int) -> float:
        batch = batch_of(self.settings.spec, self.settings.batch_size, self.settings.seed, TRAIN_STREAM, step)
        inputs, targets = batch.inputs(self.dist.device), batch.targets(self.dist.device)
        return optimizer_step(self, self.model, step, 1, lambda _: huber(self.model(inputs), targets).mean())

    def validation_loss(self) -> float:
        return float(test_losses(self.model, self.val, self.dist.device).mean())

    def finish(self, progress: Progress, train_loss: float | None, val_loss: float, wall: float) -> dict[str, Any]:
        summary = provenance(
            stage="train",
            **self.identity,
            save_every=self.settings.save_every,
            schedule="linear warm-up, cosine decay to 0",
            optimizer={"name": "AdamW", "weight_decay": self.settings.weight_decay},
            loss="Huber (delta 1), all positions",
            architecture="SyntheticModel",
            n_params=sum(p.numel() for p in self.model.parameters()),
            sequences_seen=progress.step * self.settings.batch_size,
            final_train_loss=train_loss,
            final_val_loss=val_loss,
            weights_hash=weights_hash(self.model),
            wall_seconds=round(wall, 3),
            device=self.dist.device.type,
        )
        save_model_folder(self.model, self.out)
        atomic_write_json(self.out / TRAINING_FILE, summary)
        return summary


@torch.no_grad()
def test_losses(model: SyntheticModel, batch: Batch, device: torch.device | str = "cpu") -> np.ndarray:
    """(n, T) per-position Huber losses of the model on held-out sequences."""
    was_training = model.training
    model.eval()
    inputs, targets = batch.inputs(device), batch.targets(device)
    try:
        losses = [
            huber(model(inputs[i : i + EVAL_BATCH]), targets[i : i + EVAL_BATCH])
            for i in range(0, len(inputs), EVAL_BATCH)
        ]
    finally:
        model.train(was_training)
    return torch.cat(losses).double().cpu().numpy()


def build_model(settings: SyntheticSettings) -> SyntheticModel:
    """The initial weights (the same for every mode of one seed; also the untrained control)."""
    config = block_config(settings.seq_len, settings.n_layer, settings.d_model, settings.n_head)
    return fresh_model(config, settings.seed)


def build_run(settings: SyntheticSettings, out: str | Path, progress: bool = True) -> SyntheticRun:
    device = resolve_device(settings.device)
    model = build_model(settings).to(device).train()
    optimizer = make_optimizer(model, settings.lr, settings.weight_decay, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, settings.warmup, settings.steps)
    )
    return SyntheticRun(
        settings=settings,
        out=Path(out).expanduser(),
        dist=single(device),
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        identity=settings.identity(),
        progress=progress,
        val=batch_of(settings.spec, settings.eval_sequences, settings.seed, LOSS_STREAM),
    )


def train_synthetic(
    settings: SyntheticSettings, out: str | Path, progress: bool = True, shares_with: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Train (or resume, or reuse when finished) one model into `out`; returns its training.json.
    `shares_with`: the stages whose folder `out` may be (a single-model synthetic run trains in its own)."""
    run = build_run(settings, out, progress)
    if prepare_out(run, shares_with=shares_with, replaceable=False):
        return read_json(run.out / TRAINING_FILE)
    return run_training(run)


def check_folder(settings: SyntheticSettings, out: Path) -> None:
    """Refuse (one line) an existing folder that holds a run of other settings, before any training starts."""
    if out.exists():
        prepare_out(build_run(settings, out, progress=False), replaceable=False)


def is_trained(out: Path) -> bool:
    return (out / TRAINING_FILE).is_file()


def train_side_by_side(jobs: list[tuple[SyntheticSettings, Path]], progress: bool) -> None:
    """Train each unfinished model in its own single-thread process, all at once (faster on few cores)."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    processes = []
    for index, (settings, out) in enumerate(jobs):
        show_progress = progress and index == 0  # one progress bar is readable; several on one terminal are not
        payload = json.dumps({"settings": dataclasses.asdict(settings), "out": str(out), "progress": show_progress})
        processes.append(subprocess.Popen([sys.executable, "-m", SIDE_BY_SIDE_ENTRY, payload], env=env))
    failed = [(settings.mode, process.wait()) for (settings, _), process in zip(jobs, processes, strict=True)]
    failed = [(mode, code) for mode, code in failed if code != 0]
    if failed:
        text = ", ".join(f"{mode} (exit {code})" for mode, code in failed)
        raise UsageError(f"training failed: {text}; rerun the same command to resume")


def train_from_payload(payload: str) -> int:
    """One side-by-side training process: the payload names the settings, the folder and the progress bar."""
    torch.set_num_threads(1)
    job = json.loads(payload)
    try:
        train_synthetic(SyntheticSettings(**job["settings"]), job["out"], job["progress"])
    except UsageError as error:
        sys.stderr.write(f"probe-future: error: {error}\n")
        return 2
    return 0
