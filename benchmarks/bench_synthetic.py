"""The synthetic pre-caching task on the `cpu` preset: does the instrument see pre-caching where it must exist?

For each seed, trains vanilla and myopic (side by side, one thread each) with `run_synthetic_compare` and reports:
test Huber loss against the predict-0 baseline (goals: vanilla ≤ 0.10×, myopic ≥ 0.85×), the final-layer ridge R²
for y (goals: vanilla ≥ 0.9, myopic ≤ 0.2), and the R² for sin(f·x[n−i]) by layer and look-back for vanilla,
myopic and the untrained control side by side, each model's training wall-clock, and where each head looks
(its share of attention on the target window; the last block's weight by distance). Optional control (seed 0):
p = 0.1 (losses divided by p, as in the paper, beside the predict-x-where-z-is-0 baseline). The shift-0 control
has its own benchmark, bench_shift0.py.

    python benchmarks/bench_synthetic.py [--seeds 0 1 2] [--controls] [--only main p0.1] [--work DIR]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path
from typing import Any

import pandas as pd

from probes.io import read_json
from probes.runs import TRAINING_FILE
from probes.synthetic.attention import attention_by_distance, profile_text, window_share
from probes.synthetic.model import load_model_folder
from probes.synthetic.results import PREDICT_0, headlines
from probes.synthetic.run import run_synthetic_compare
from probes.synthetic.settings import COMPARE_MODES, PRESETS, SyntheticConfig, resolve
from probes.synthetic.training import is_trained

GOALS = "vanilla ≤ 0.10× baseline, myopic ≥ 0.85× baseline; final-layer R²(y): vanilla ≥ 0.9, myopic ≤ 0.2"
LOOKBACKS = (0, 1, 2, 5, 9, 10, 11, 15, 20)


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
    walls = {mode: read_json(folder / mode / TRAINING_FILE)["wall_seconds"] for mode in COMPARE_MODES}
    each = ", ".join(f"{mode} {seconds:.0f} s" for mode, seconds in walls.items())
    return f"{each}; the pair together {max(walls.values()):.0f} s"


def attention_lines(config: SyntheticConfig) -> list[str]:
    """Each head's share of attention on the target window, per block, and the last block's profile by distance."""
    folder, seed, spec = Path(config.out), config.seed, resolve(config, "vanilla").spec
    lines = ["attention share on the window (distances s..s+W−1), per head:"]
    for mode in COMPARE_MODES:
        profile = attention_by_distance(load_model_folder(folder / mode), spec, seed=seed)
        shares = window_share(profile, spec)
        blocks = "; ".join(f"block {i + 1}: " + ", ".join(f"{x:.2f}" for x in heads) for i, heads in enumerate(shares))
        lines.append(f"  {mode}: {blocks}")
        lines += [f"    last block {line}" for line in profile_text(profile, spec)]
    return lines


def run_case(label: str, work: Path, seed: int, **knobs: Any) -> list[str]:
    folder = work / f"{label}-seed{seed}"
    before = load()
    trained_now = not all(is_trained(folder / mode) for mode in COMPARE_MODES)
    started = time.perf_counter()
    config = SyntheticConfig(out=str(folder), compare=True, preset="cpu", seed=seed, progress=False, **knobs)
    frame = run_synthetic_compare(config)
    wall = time.perf_counter() - started
    metric = "huber_over_p" if knobs.get("p", 1.0) < 1.0 else "huber"
    rows = {row.label: row for row in headlines(frame, metric)}
    base, vanilla, myopic = rows[PREDICT_0].loss[0], rows["vanilla"].loss[0], rows["myopic"].loss[0]
    lines = [
        f"## {label}, seed {seed}: {knobs or 'cpu preset'}",
        f"wall {wall:.0f} s for this call ({'training and ' if trained_now else ''}probes; load average before: "
        f"{before}; after: {load()}); training wall (side by side, one thread each): {training_walls(folder)}",
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
    lines += attention_lines(config)
    lines += ["", "R² for sin(f·x[n−i]) by layer × look-back i:", lookback_table(frame), ""]
    lines += ["R² for the window sum and y by layer:", window_sum_table(frame), ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--controls", action="store_true", help="also p = 0.1 (seed 0)")
    parser.add_argument("--only", nargs="+", choices=("main", "p0.1"), help="run only these cases")
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
        cases.append(("p0.1", args.seeds[0], {"p": 0.1}))
    if args.only:
        cases = [case for case in cases if case[0] in args.only]
    for label, seed, knobs in cases:
        case_lines = run_case(label, Path(args.work), seed, **knobs)
        lines += case_lines
        print("\n".join(case_lines), flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
