"""Probing trained synthetic-task models beside their untrained control, into the shared results schema.

Every model gets its test Huber loss (bootstrapped over sequences) and, at every layer, a ridge probe to each
target of `probes.synthetic.probe` (R² with bootstrap intervals). The untrained control has the same initial
weights: at small frequencies the current sine is decodable from random features, so only the comparison says
what training added. The loss baselines (predict 0; with p < 1 also predict x_n where z_n = 0) close the table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from probes.io import atomic_write_json
from probes.models import resolve_device, weights_hash
from probes.provenance import provenance
from probes.results import tidy, write_results
from probes.runs import CONTROL_KIND, PROVENANCE_FILE
from probes.stats import bootstrap_mean_ci
from probes.synthetic.model import SyntheticModel, huber, load_model_folder
from probes.synthetic.probe import fit_ridge, probe_targets, r2_scores
from probes.synthetic.results import BASELINE_KIND, PREDICT_0
from probes.synthetic.settings import SyntheticSettings
from probes.synthetic.task import LOSS_STREAM, PROBE_TEST_STREAM, PROBE_TRAIN_STREAM, Batch, batch_of
from probes.synthetic.training import EVAL_BATCH, build_model, test_losses

N_BOOT = 1000


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
        out / PROVENANCE_FILE,
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
