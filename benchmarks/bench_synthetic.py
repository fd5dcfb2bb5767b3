"""The synthetic pre-caching task on the `cpu` preset: does the instrument see pre-caching where it must exist?

For each seed, trains vanilla and myopic (side by side, one thread each) with `run_synthetic_compare` and reports:
test Huber loss against the predict-0 baseline (goals: vanilla ≤ 0.10×, myopic ≥ 0.85×), the final-layer ridge R²
for y (goals: vanilla ≥ 0.9, myopic ≤ 0.2), and the R² for sin(f·x[n−i]) by layer and look-back for vanilla,
myopic and the untrained control side by side, and each model's training wall-clock. Optional controls (seed
0): shift 0 (the sine is useful where it is computed, so myopic training should learn; the paper reaches 0.10,
0.08× its baseline) and p = 0.1 (losses divided by p, as in the paper, beside the predict-x-where-z-is-0
baseline).

    python benchmarks/bench_synthetic.py [--seeds 0 1 2] [--controls] [--only main shift0 p0.1] [--work DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import pandas as pd

from probes.synthetic import COMPARE_MODES, PRESETS, run_synthetic_compare
from probes.synthetic_results import PREDICT_0, headlines

GOALS = "vanilla ≤ 0.10× baseline, myopic ≥ 0.85× baseline; final-layer R²(y): vanilla ≥ 0.9, myopic ≤ 0.2"
LOOKBACKS = (0, 1, 2, 5, 9, 10, 11, 15, 20)
# Myopic training needs many more sequences than vanilla to learn the window sum even when no pre-caching is
# needed (only position j's own loss shapes its state and its position embedding), and it oscillates at batch 32.
SHIFT0_CONTROL = {"shift": 0, "batch_size": 128, "lr": 1e-3, "steps": 10_000}


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def lookback_table(frame: pd.DataFrame) -> str:
    rows = frame[(frame["target"] == "sin") & (frame["metric"] == "r2") & frame["lookback"].isin(LOOKBACKS)]
    table = rows.pivot_table(index=["kind", "layer"], columns="lookback", values="value").round(3)
    order = [k for k in ("vanilla", "myopic", "random-init") if k in table.index.get_level_values(0)]
    return table.loc[order].to_string()


def window_sum_table(frame: pd.DataFrame) -> str:
    rows = frame[(frame["target"].isin(["window_sum", "y"])) & (frame["metric"] == "r2")]
    return rows.pivot_table(index=["kind", "layer"], columns="target", values="value").round(3).to_string()


def training_walls(folder: Path) -> str:
    """Each model's own training time (from its training.json), so a rerun that reuses the models still says it."""
    walls = {mode: json.loads((folder / mode / "training.json").read_text())["wall_seconds"] for mode in COMPARE_MODES}
    return ", ".join(f"{mode} {seconds:.0f} s" for mode, seconds in walls.items())


def window_attention(folder: Path, knobs: dict[str, Any], seed: int) -> str:
    """Share of each head's attention on positions n−W+1−shift..n−shift (n ≥ W): does the model gather the window?"""
    import torch

    from probes.synthetic import resolve
    from probes.synthetic_data import LOSS_STREAM, batch_of
    from probes.synthetic_model import load_model_folder

    spec = resolve("vanilla", "cpu", seed, **knobs).spec
    inputs = batch_of(spec, 256, seed, LOSS_STREAM).inputs()
    distance = torch.arange(spec.seq_len)[:, None] - torch.arange(spec.seq_len)[None, :]
    window = (distance >= spec.shift) & (distance < spec.shift + spec.window)
    parts = []
    for mode in COMPARE_MODES:
        model = load_model_folder(folder / mode)
        model.body.config._attn_implementation = "eager"  # attention weights are only returned by eager attention
        with torch.no_grad():
            attentions = model.body(inputs_embeds=model.inp(inputs), output_attentions=True).attentions
        shares = [(a * window).sum(-1)[:, :, spec.window :].mean(dim=(0, 2)).tolist() for a in attentions]
        text = "; ".join(f"block {i + 1}: " + ", ".join(f"{x:.2f}" for x in heads) for i, heads in enumerate(shares))
        parts.append(f"{mode} {text}")
    return " | ".join(parts)


def run_case(label: str, work: Path, seed: int, **knobs: Any) -> list[str]:
    folder = work / f"{label}-seed{seed}"
    before = load()
    started = time.perf_counter()
    frame = run_synthetic_compare(folder, preset="cpu", seed=seed, progress=False, **knobs)
    wall = time.perf_counter() - started
    metric = "huber_over_p" if knobs.get("p", 1.0) < 1.0 else "huber"
    rows = {row.label: row for row in headlines(frame, metric)}
    base, vanilla, myopic = rows[PREDICT_0].loss[0], rows["vanilla"].loss[0], rows["myopic"].loss[0]
    lines = [
        f"## {label}, seed {seed}: {knobs or 'cpu preset'}",
        f"wall {wall:.0f} s for this call (load average before: {before}; after: {load()}); training wall "
        f"(side by side, one thread each): {training_walls(folder)}",
        f"test {metric}: predict-0 {base:.4f}; vanilla {vanilla:.4f} "
        f"({vanilla / base:.3f}×); myopic {myopic:.4f} ({myopic / base:.3f}×)",
    ]
    if "predict-x-if-z0" in rows:  # p < 1: the baseline that already solves the z = 0 positions
        ref = rows["predict-x-if-z0"].loss[0]
        lines.append(
            f"test {metric}: predict-x-if-z0 {ref:.4f}; vanilla {vanilla / ref:.3f}×, myopic {myopic / ref:.3f}× of it"
        )
    for kind in ("vanilla", "myopic", "random-init"):
        value, low, high = rows[kind].r2_y
        lines.append(f"final-layer ridge R²(y) {kind}: {value:.3f} [{low:.3f}, {high:.3f}]")
    lines.append(f"attention share on the window, per head: {window_attention(folder, knobs, seed)}")
    lines += ["", "R² for sin(f·x[n−i]) by layer × look-back i:", lookback_table(frame), ""]
    lines += ["R² for the window sum and y by layer:", window_sum_table(frame), ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--controls", action="store_true", help="also the shift-0 control and p = 0.1 (seed 0)")
    parser.add_argument("--only", nargs="+", choices=("main", "shift0", "p0.1"), help="run only these cases")
    parser.add_argument("--work", default="runs/bench-synthetic", help="where the models are trained (resumable)")
    parser.add_argument("--out", default="benchmarks/results/synthetic.txt")
    args = parser.parse_args()
    preset = PRESETS["cpu"]
    lines = [
        f"# synthetic pre-caching task, cpu preset ({datetime.date.today()}, {platform.processor() or 'cpu'}, "
        f"{os.cpu_count()} cores)",
        f"preset: {preset}",
        f"goals: {GOALS}",
        "",
    ]
    cases: list[tuple[str, int, dict[str, Any]]] = [("main", seed, {}) for seed in args.seeds]
    if args.controls:
        cases += [("shift0", args.seeds[0], SHIFT0_CONTROL), ("p0.1", args.seeds[0], {"p": 0.1})]
    if args.only:
        cases = [case for case in cases if case[0] in args.only]
    for label, seed, knobs in cases:
        case_lines = run_case(label, Path(args.work), seed, **knobs)
        lines += case_lines
        print("\n".join(case_lines), flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
