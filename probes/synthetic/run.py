"""`probe-future synthetic`: the synthetic pre-caching task, the positive control of the whole study.

    probe-future synthetic --mode vanilla --preset cpu --out runs/synthetic-vanilla
    probe-future synthetic --compare --preset cpu --out runs/synthetic

The task (see `probes.synthetic.task`) can only be solved by pre-caching: a vanilla model must compute
sin(f·x_n) at position n for the targets of later positions, and a myopic model cannot learn to. Training uses
the language models' machinery (`probes.train.run_training`: AdamW, warm-up + cosine schedule, gradient
clipping, checkpoints and exact resume, metrics.jsonl, the myopic gradient modes) with a Huber loss (δ = 1)
on all positions of fresh sequences every step.

A model folder holds config.json + model.safetensors (`probes.synthetic.model`), training.json and
metrics.jsonl. The result folder holds results.csv / results.parquet (the shared schema; probe rows have
`metric=r2` and a `lookback` column, loss rows `metric=huber`) and provenance.json. Every trained model is
probed beside an untrained control (the same initial weights): at small frequencies the current sine is
decodable from random features, so only the comparison says what training added.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from probes.errors import UsageError
from probes.io import atomic_write_json, read_json
from probes.models import resolve_device, weights_hash
from probes.provenance import provenance
from probes.results import tidy, write_results
from probes.stats import bootstrap_mean_ci
from probes.synthetic.model import SyntheticModel, block_config, fresh_model, huber, save_model_folder
from probes.synthetic.probe import fit_ridge, probe_targets, r2_scores
from probes.synthetic.results import BASELINE_KIND, PREDICT_0, headlines
from probes.synthetic.task import (
    LOSS_STREAM,
    PROBE_TEST_STREAM,
    PROBE_TRAIN_STREAM,
    TRAIN_STREAM,
    Batch,
    TaskSpec,
    batch_of,
)
from probes.training.lm import (
    TRAINING_FILE,
    Dist,
    Progress,
    lr_factor,
    make_optimizer,
    optimizer_step,
    prepare_out,
    run_training,
)

TRAIN_MODES = ("vanilla", "myopic", "strict-myopic")
COMPARE_MODES = ("vanilla", "myopic")
CONTROL_KIND = "random-init"
WEIGHT_DECAY = 0.01
WARMUP_FRACTION = 0.01
N_BOOT = 1000
EVAL_BATCH = 256


@dataclass(frozen=True)
class Preset:
    freq: float
    window: int
    p: float
    shift: int
    seq_len: int
    steps: int
    batch_size: int
    lr: float
    n_layer: int = 2
    d_model: int = 128
    n_head: int = 2
    eval_every: int = 500
    save_every: int = 500
    log_every: int = 10
    eval_sequences: int = 512  # held-out sequences for the test loss, and for each side of the probe split


PRESETS = {
    # The paper's recipe: 30M fresh sequences (a GPU job).
    "paper": Preset(
        freq=10.0, window=10, p=1.0, shift=1, seq_len=64, steps=58_593, batch_size=512, lr=1e-3,
        eval_every=2000, save_every=2000, log_every=50, eval_sequences=2048,
    ),
    # f = 3 is learnable in minutes on a CPU core (f = 10 needs hours there). Width 64, not 128: a random
    # 128-wide model already holds sin(3x) linearly (R² 0.97, so the sine probe cannot tell training apart),
    # a 64-wide one much less (0.51), while vanilla still learns the task and the sine (0.99). Four heads, not
    # two: at shift 0 (the control) the myopic model must gather the window with positional keys that only the
    # query side trains; two heads leave it at 0.41x its baseline after 1.28M sequences, four reach 0.246x after 1.54M.
    "cpu": Preset(
        freq=3.0, window=10, p=1.0, shift=1, seq_len=64, steps=6000, batch_size=32, lr=2e-3, d_model=64, n_head=4,
    ),
}  # fmt: skip
KNOBS = ("freq", "window", "p", "shift", "seq_len", "steps", "batch_size", "lr", "n_layer", "d_model", "n_head")


@dataclass(frozen=True)
class SyntheticSettings:
    """A resolved synthetic run; everything but `save_every` is part of its identity."""

    mode: str
    preset: str
    freq: float
    window: int
    p: float
    shift: int
    seq_len: int
    steps: int
    batch_size: int
    lr: float
    warmup: int
    weight_decay: float
    n_layer: int
    d_model: int
    n_head: int
    eval_every: int
    save_every: int
    log_every: int
    eval_sequences: int
    seed: int
    device: str = "auto"

    @property
    def spec(self) -> TaskSpec:
        return TaskSpec(self.freq, self.window, self.p, self.shift, self.seq_len)

    def identity(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        fields.pop("save_every")
        fields.pop("device")
        return {"task": "synthetic", **fields}


def resolve(mode: str, preset: str = "cpu", seed: int = 0, **knobs: Any) -> SyntheticSettings:
    """Fill the preset's values in for the knobs not given; every problem is a one-line UsageError."""
    if mode not in TRAIN_MODES:
        raise UsageError(f"unknown --mode {mode!r}; choose one of {', '.join(TRAIN_MODES)}")
    if preset not in PRESETS:
        raise UsageError(f"unknown --preset {preset!r}; choose one of {', '.join(PRESETS)}")
    device = knobs.pop("device", None) or "auto"
    unknown = sorted(set(knobs) - set(KNOBS) - {f.name for f in dataclasses.fields(Preset)})
    if unknown:
        raise UsageError(f"unknown synthetic-task setting(s): {', '.join(unknown)}")
    values = dataclasses.asdict(PRESETS[preset]) | {k: v for k, v in knobs.items() if v is not None}
    for name in ("steps", "batch_size", "lr", "n_layer", "d_model", "n_head", "eval_sequences", "log_every"):
        if not values[name] > 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {values[name]}")
    settings = SyntheticSettings(
        mode=mode,
        preset=preset,
        warmup=max(1, round(WARMUP_FRACTION * values["steps"])),
        weight_decay=WEIGHT_DECAY,
        seed=seed,
        device=device,
        **{k: type(getattr(PRESETS[preset], k))(v) for k, v in values.items()},
    )
    settings.spec.check()
    block_config(settings.seq_len, settings.n_layer, settings.d_model, settings.n_head)
    return settings


# ---------------------------------------------------------------------------------------------- training


@dataclass
class SyntheticRun:
    """A `probes.train.Trainable`: the shared loop trains it, checkpoints and resumes it."""

    settings: SyntheticSettings
    out: Path
    dist: Dist
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
        dist=Dist(0, 1, device),
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        identity=settings.identity(),
        progress=progress,
        val=batch_of(settings.spec, settings.eval_sequences, settings.seed, LOSS_STREAM),
    )


def train_synthetic(settings: SyntheticSettings, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train (or resume, or reuse when finished) one model into `out`; returns its training.json."""
    run = build_run(settings, out, progress)
    if prepare_out(run):
        return read_json(run.out / TRAINING_FILE)
    return run_training(run)


def is_trained(out: Path) -> bool:
    return (out / TRAINING_FILE).is_file()


def train_side_by_side(jobs: list[tuple[SyntheticSettings, Path]], progress: bool) -> None:
    """Train each unfinished model in its own single-thread process, all at once (faster on few cores)."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    processes = []
    for index, (settings, out) in enumerate(jobs):
        payload = json.dumps({"settings": dataclasses.asdict(settings), "out": str(out), "progress": progress})
        if index > 0:  # one progress bar is readable; several on one terminal are not
            payload = json.dumps(json.loads(payload) | {"progress": False})
        processes.append(subprocess.Popen([sys.executable, "-m", "probes.synthetic.run", payload], env=env))
    failed = [(settings.mode, process.wait()) for (settings, _), process in zip(jobs, processes, strict=True)]
    failed = [(mode, code) for mode, code in failed if code != 0]
    if failed:
        text = ", ".join(f"{mode} (exit {code})" for mode, code in failed)
        raise UsageError(f"training failed: {text}; rerun the same command to resume")


def _train_from_payload(payload: str) -> int:
    torch.set_num_threads(1)
    job = json.loads(payload)
    try:
        train_synthetic(SyntheticSettings(**job["settings"]), job["out"], job["progress"])
    except UsageError as error:
        sys.stderr.write(f"probe-future: error: {error}\n")
        return 2
    return 0


# ---------------------------------------------------------------------------------------------- evaluation


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


@torch.no_grad()
def layer_features(model: SyntheticModel, batch: Batch, device: torch.device | str = "cpu") -> list[np.ndarray]:
    """Per layer (0 = embeddings), (n, T, d) float64 hidden states."""
    model.eval()
    inputs = batch.inputs(device)
    chunks = [model.hidden_states(inputs[i : i + EVAL_BATCH]) for i in range(0, len(inputs), EVAL_BATCH)]
    return [torch.cat([chunk[layer] for chunk in chunks]).double().cpu().numpy() for layer in range(len(chunks[0]))]


@dataclass
class EvalData:
    loss: Batch
    probe_train: Batch
    probe_test: Batch


def eval_data(settings: SyntheticSettings) -> EvalData:
    n, spec, seed = settings.eval_sequences, settings.spec, settings.seed
    return EvalData(
        loss=batch_of(spec, n, seed, LOSS_STREAM),
        probe_train=batch_of(spec, n, seed, PROBE_TRAIN_STREAM),
        probe_test=batch_of(spec, n, seed, PROBE_TEST_STREAM),
    )


def _loss_rows(losses: np.ndarray, settings: SyntheticSettings, **fields: Any) -> list[dict[str, Any]]:
    groups = np.repeat(np.arange(losses.shape[0]), losses.shape[1])
    value, low, high = bootstrap_mean_ci(losses.ravel(), groups, n_boot=N_BOOT, seed=settings.seed)
    row = {"target": "y", "metric": "huber", "value": value, "ci_low": low, "ci_high": high}
    rows = [row | {"n_test": losses.size} | fields]
    if 0 < settings.p < 1:  # the paper normalises by p: only the z = 1 positions need pre-caching
        scaled = {"metric": "huber_over_p", **{k: row[k] / settings.p for k in ("value", "ci_low", "ci_high")}}
        rows.append(rows[0] | scaled)
    return rows


def evaluate_model(
    model: SyntheticModel, name: str, kind: str, settings: SyntheticSettings, data: EvalData
) -> list[dict[str, Any]]:
    """The model's test loss and R² of every probe target at every layer."""
    device = next(model.parameters()).device
    common = {"model": name, "kind": kind, "seed": settings.seed}
    rows = _loss_rows(test_losses(model, data.loss, device), settings, probe="model", **common)
    train_targets = probe_targets(data.probe_train, settings.freq)
    test_targets = probe_targets(data.probe_test, settings.freq)
    train_layers = layer_features(model, data.probe_train, device)
    test_layers = layer_features(model, data.probe_test, device)
    n_seq, length = data.probe_test.x.shape
    for layer, (train_x, test_x) in enumerate(zip(train_layers, test_layers, strict=True)):
        weights = fit_ridge(train_x, train_targets)
        point, low, high = r2_scores(test_x, test_targets, weights, n_boot=N_BOOT, seed=settings.seed)
        for j, (target, lookback) in enumerate(zip(test_targets.names, test_targets.lookbacks, strict=True)):
            rows.append(
                common
                | {
                    "layer": layer,
                    "target": target,
                    "lookback": lookback,
                    "probe": "ridge",
                    "metric": "r2",
                    "value": point[j],
                    "ci_low": low[j],
                    "ci_high": high[j],
                    "n_train": n_seq * (length - int(train_targets.start[j])),
                    "n_test": n_seq * (length - int(test_targets.start[j])),
                }
            )
    return rows


def baseline_rows(settings: SyntheticSettings, data: EvalData) -> list[dict[str, Any]]:
    """Losses of predicting 0 everywhere, and of predicting x_n where z_n = 0 and 0 elsewhere.

    The second is what a model that learned nothing about the sine sums reaches (the same as the first at p = 1).
    """
    batch, targets = data.loss, data.loss.targets()
    predict_0 = huber(torch.zeros_like(targets), targets).double().numpy()
    copy_x = huber(torch.from_numpy((1.0 - batch.z) * batch.x).float(), targets).double().numpy()
    common = {"kind": BASELINE_KIND, "seed": settings.seed}
    rows = _loss_rows(predict_0, settings, probe=PREDICT_0, model=PREDICT_0, **common)
    if settings.p < 1:
        rows += _loss_rows(copy_x, settings, probe="predict-x-if-z0", model="predict-x-if-z0", **common)
    return rows


def evaluate(
    trained: dict[str, tuple[SyntheticSettings, Path]], out: Path, knobs: dict[str, Any] | None = None
) -> pd.DataFrame:
    """Probe every trained model and the untrained control; write results and provenance into `out`."""
    from probes.synthetic.model import load_model_folder

    first = next(iter(trained.values()))[0]
    data = eval_data(first)
    device = resolve_device(first.device)
    rows: list[dict[str, Any]] = []
    models: dict[str, Any] = {}
    for mode, (settings, folder) in trained.items():
        model = load_model_folder(folder, device)
        rows += evaluate_model(model, str(folder), mode, settings, data)
        models[mode] = {"name": str(folder), "weights_hash": weights_hash(model)}
    control = build_model(first).to(device)
    rows += evaluate_model(control, "untrained", CONTROL_KIND, first, data)
    control_name = f"untrained (initial weights, seed {first.seed})"
    models[CONTROL_KIND] = {"name": control_name, "weights_hash": weights_hash(control)}
    rows += baseline_rows(first, data)  # last: readers take the first kind in the table as the run's model
    frame = tidy(rows)
    write_results(frame, out)
    main_model = models.get("vanilla", next(iter(models.values())))
    atomic_write_json(
        out / "provenance.json",
        provenance(
            stage="synthetic",
            args={**first.identity(), "modes": list(trained), "knobs": knobs or {}},
            model=main_model,
            models=models,
            data={"generator": "probes.synthetic.task", "seed": first.seed, **dataclasses.asdict(first.spec)},
            n_boot=N_BOOT,
            eval_sequences=first.eval_sequences,
        ),
    )
    return frame


# ---------------------------------------------------------------------------------------------- entry points


def run_synthetic(
    out: str | Path, mode: str = "vanilla", preset: str = "cpu", seed: int = 0, progress: bool = True, **knobs: Any
) -> pd.DataFrame:
    """Train one model into `out` (resumable), then probe it beside the untrained control."""
    settings = resolve(mode, preset, seed, **knobs)
    folder = Path(out).expanduser()
    train_synthetic(settings, folder, progress)
    return evaluate({mode: (settings, folder)}, folder, knobs)


def run_synthetic_compare(
    out: str | Path, preset: str = "cpu", seed: int = 0, progress: bool = True, **knobs: Any
) -> pd.DataFrame:
    """Vanilla and myopic models (in out/vanilla, out/myopic), the untrained control and all probes.

    Finished models are reused on a rerun; an interrupted one resumes. On CPU with at least two cores the
    models train side by side, one thread each; `workers=1` trains them one after the other.
    """
    workers = knobs.pop("workers", None)
    folder = Path(out).expanduser()
    jobs = {mode: (resolve(mode, preset, seed, **knobs), folder / mode) for mode in COMPARE_MODES}
    for settings, model_folder in jobs.values():
        if model_folder.exists():
            build = build_run(settings, model_folder, progress=False)
            prepare_out(build)  # refuses a folder of other settings before any training starts
    todo = [job for job in jobs.values() if not is_trained(job[1])]
    device = resolve_device(jobs["vanilla"][0].device)
    if workers is None:
        workers = 2 if device.type == "cpu" and (os.cpu_count() or 1) >= 2 else 1
    if len(todo) > 1 and workers > 1:
        train_side_by_side(todo, progress)
    else:
        for settings, model_folder in todo:
            train_synthetic(settings, model_folder, progress)
    return evaluate(jobs, folder, knobs)


def _knob_help(text: str, knob: str) -> str:
    """`text` followed by the knob's value in each preset, e.g. "hidden width (cpu 64, paper 128)"."""
    values = {name: getattr(preset, knob) for name, preset in PRESETS.items()}
    if len(set(values.values())) == 1:
        return f"{text} (default {next(iter(values.values())):g})"
    return f"{text} ({', '.join(f'{name} {value:g}' for name, value in sorted(values.items()))})"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("synthetic", help="the synthetic pre-caching task: train, probe, compare")
    parser.add_argument("--mode", default="vanilla", help=f"gradient mode: {' | '.join(TRAIN_MODES)}")
    parser.add_argument("--compare", action="store_true", help="train vanilla and myopic, probe both and a control")
    parser.add_argument("--preset", default="cpu", help=f"{' | '.join(PRESETS)} (default cpu)")
    knob_help = {
        "freq": "f in sin(f·x)",
        "window": "W: sines summed per target",
        "p": "P(z_n = 1)",
        "shift": "first look-back in the sum, 0 for the control",
        "seq_len": "sequence length T",
        "steps": "optimizer steps",
        "batch_size": "fresh sequences per step",
        "lr": "peak learning rate",
        "n_layer": "GPT-2 blocks",
        "d_model": "hidden width",
        "n_head": "attention heads",
    }
    for knob in KNOBS:
        kind = int if isinstance(getattr(PRESETS["cpu"], knob), int) else float
        parser.add_argument(
            f"--{knob.replace('_', '-')}", type=kind, default=None, help=_knob_help(knob_help[knob], knob)
        )
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and of all data")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to train")
    parser.add_argument("--out", required=True, help="result folder (with --compare: also the models' folders)")
    parser.set_defaults(func=run_synthetic_command)


def run_synthetic_command(args: argparse.Namespace) -> int:
    knobs = {name: getattr(args, name) for name in KNOBS} | {"device": args.device}
    if args.compare:
        frame = run_synthetic_compare(args.out, preset=args.preset, seed=args.seed, **knobs)
    else:
        frame = run_synthetic(args.out, mode=args.mode, preset=args.preset, seed=args.seed, **knobs)
    print(summary_text(frame))
    print(f"results: {Path(args.out) / 'results.csv'}")
    return 0


def summary_text(frame: pd.DataFrame) -> str:
    """Test loss and final-layer R² for y, one line per model, then the baselines other than predict-0."""
    rows = headlines(frame)
    lines = [f"predict-0 baseline Huber loss: {rows[0].baseline_loss if rows else float('nan'):.4f}"]
    for row in rows:
        if row.label == PREDICT_0:
            continue
        loss_text = f"{row.loss[0]:.4f} ({row.loss_ratio:.2f}× baseline)" if row.loss else "?"
        r2_text = f"; last-layer ridge R² for y {row.r2_y[0]:.3f}" if row.r2_y else ""
        lines.append(f"{row.label}: test Huber {loss_text}{r2_text}")
    return "\n".join(lines)


if __name__ == "__main__":  # a side-by-side training process (see train_side_by_side)
    if len(sys.argv) != 2:
        sys.stderr.write("internal entry point: use `probe-future synthetic`\n")
        raise SystemExit(2)
    raise SystemExit(_train_from_payload(sys.argv[1]))
