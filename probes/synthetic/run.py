"""`probe-future synthetic`: the synthetic pre-caching task, the positive control of the whole study.

    probe-future synthetic --mode vanilla --preset cpu --out runs/synthetic-vanilla
    probe-future synthetic --compare --preset cpu --out runs/synthetic

The task (see `probes.synthetic.task`) can only be solved by pre-caching: a vanilla model must compute
sin(f·x_n) at position n for the targets of later positions, and a myopic model cannot learn to. The flags are
the fields of `SyntheticConfig` (`probes.synthetic.settings`); training is `probes.synthetic.training`, probing
`probes.synthetic.evaluation`.

A model folder holds config.json + model.safetensors (`probes.synthetic.model`), training.json and
metrics.jsonl. The result folder holds results.csv / results.parquet (the shared schema; probe rows have
`metric=r2` and a `lookback` column, loss rows `metric=huber`) and provenance.json. Every trained model is
probed beside an untrained control (the same initial weights).

`python -m probes.synthetic.run PAYLOAD` is the internal entry point of one side-by-side training process.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pandas as pd

from probes.config import Command
from probes.errors import UsageError
from probes.models import resolve_device
from probes.runs import claim_folder
from probes.synthetic.evaluation import evaluate
from probes.synthetic.results import PREDICT_0, headlines
from probes.synthetic.settings import COMPARE_MODES, SyntheticConfig, SyntheticSettings, resolve
from probes.synthetic.training import check_folder, is_trained, train_from_payload, train_side_by_side, train_synthetic


def run_synthetic(config: SyntheticConfig) -> pd.DataFrame:
    """Train one model (config.mode) into config.out (resumable), then probe it beside the untrained control."""
    settings = resolve(config)
    folder = Path(config.out).expanduser()
    claim_folder(folder, "synthetic", settings.identity(), replaceable=False)
    train_synthetic(settings, folder, config.progress, shares_with=("synthetic",))
    return evaluate({settings.mode: (settings, folder)}, folder, config.knobs())


def run_synthetic_compare(config: SyntheticConfig) -> pd.DataFrame:
    """Vanilla and myopic models (in out/vanilla, out/myopic), the untrained control and all probes.

    config.mode is not used. Finished models are reused on a rerun; an interrupted one resumes. On CPU with at
    least two cores the models train side by side, one thread each; `workers=1` trains them one after the other.
    """
    folder = Path(config.out).expanduser()
    jobs = _claim_compare(config)
    todo = [job for job in jobs.values() if not is_trained(job[1])]
    if len(todo) > 1 and _workers(config, jobs["vanilla"][0]) > 1:
        train_side_by_side(todo, config.progress)
    else:
        for settings, model_folder in todo:
            train_synthetic(settings, model_folder, config.progress)
    return evaluate(jobs, folder, config.knobs())


def _claim_compare(config: SyntheticConfig, attempts: int = 1) -> dict[str, tuple[SyntheticSettings, Path]]:
    """Claim the comparison folder and check its model folders; the jobs by mode. With `attempts` > 1 a claim
    refused while another process is writing the folder's marker (the two models starting at once) is retried."""
    folder = Path(config.out).expanduser()
    jobs = {mode: (resolve(config, mode), folder / mode) for mode in COMPARE_MODES}
    identity = {mode: settings.identity() for mode, (settings, _) in jobs.items()}
    for attempt in range(attempts):
        try:
            claim_folder(folder, "synthetic", identity, replaceable=False)
            break
        except UsageError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)
    for settings, model_folder in jobs.values():
        check_folder(settings, model_folder)
    return jobs


def train_compare_model(config: SyntheticConfig, mode: str) -> None:
    """Train one model of `run_synthetic_compare` (out/<mode>) on its own, e.g. in a process beside the other;
    the comparison then finds it trained (the same model as training it there)."""
    settings, model_folder = _claim_compare(config, attempts=3)[mode]
    if not is_trained(model_folder):
        train_synthetic(settings, model_folder, config.progress)


def _workers(config: SyntheticConfig, settings: SyntheticSettings) -> int:
    """config.workers, else 2 on a CPU with at least two cores, else 1."""
    if config.workers is not None:
        return config.workers
    return 2 if resolve_device(settings.device).type == "cpu" and (os.cpu_count() or 1) >= 2 else 1


def run_synthetic_command(config: SyntheticConfig) -> int:
    frame = run_synthetic_compare(config) if config.compare else run_synthetic(config)
    print(summary_text(frame))
    print(f"results: {Path(config.out) / 'results.csv'}")
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


COMMAND = Command(
    config=SyntheticConfig,
    run=run_synthetic_command,
    help="the synthetic pre-caching task: train, probe, compare",
)


if __name__ == "__main__":  # a side-by-side training process (see probes.synthetic.training.train_side_by_side)
    if len(sys.argv) != 2:
        sys.stderr.write("internal entry point: use `probe-future synthetic`\n")
        raise SystemExit(2)
    raise SystemExit(train_from_payload(sys.argv[1]))
