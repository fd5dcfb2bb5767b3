"""The full `probe-future demo`: wall-clock, and the report's headline numbers.

Runs the demo into a fresh folder (or reads a finished one with --read), then writes
benchmarks/results/demo.txt: wall-clock per step and in total (with the load average: the machine may be shared),
the synthetic vanilla/myopic test losses and ridge R², the natural-language myopia gap overall and at positions
0, 10, 60 with 95% CIs, the pre-caching share, and probe top-1 at tau = 1..5 against the baselines.

    python benchmarks/bench_demo.py                       # runs the demo into a temporary folder
    python benchmarks/bench_demo.py --out reports/demo    # runs (or continues) it there
    python benchmarks/bench_demo.py --read reports/demo   # only summarises a finished demo

`make demo` from a fresh clone adds the venv set-up (about 2 minutes) to the demo's own time:
    rm -rf .venv reports/demo && time make demo
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from probes.synthetic.results import PREDICT_0, Interval, headlines

RESULTS = Path(__file__).resolve().parent / "results" / "demo.txt"
POSITIONS = (0, 10, 60)


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def ci(row: pd.Series | Interval, digits: int = 3) -> str:
    value, low, high = (row["value"], row["ci_low"], row["ci_high"]) if isinstance(row, pd.Series) else row
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def run_demo(out: Path, scale: str) -> tuple[float, str, str]:
    before = load_average()
    started = time.perf_counter()
    command = [sys.executable, "-m", "probes.cli", "demo", "--out", str(out), "--scale", scale]
    subprocess.run(command, check=True)
    return time.perf_counter() - started, before, load_average()


def synthetic_lines(folder: Path) -> list[str]:
    rows = {row.label: row for row in headlines(pd.read_parquet(folder / "results.parquet"))}
    lines = [
        "synthetic task (cpu preset): test Huber loss, and ridge R² (last layer for y; layer 1 for sin at look-back 0)"
    ]
    lines.append(f"  predict-0 baseline       {ci(rows[PREDICT_0].loss)}")
    for kind in ("vanilla", "myopic", "random-init"):
        row = rows[kind]
        sine_text = ci(row.r2_sine) if row.r2_sine else "-"
        lines.append(
            f"  {kind:<12} loss {ci(row.loss)} ({row.loss_ratio:.2f}x baseline); "
            f"R² y {ci(row.r2_y)}; R² sin(f·x_n) {sine_text}"
        )
    return lines


def gap_lines(comparison: pd.DataFrame) -> list[str]:
    gaps = comparison[comparison["metric"] == "gap_ce_nats"]
    overall = gaps[gaps["position"].isna()].iloc[0]
    lines = ["natural language: myopia gap = myopic − vanilla held-out CE (nats), paired document bootstrap"]
    lines.append(f"  overall                  {ci(overall, 4)}")
    for position in POSITIONS:
        row = gaps[gaps["position"] == position]
        if len(row):
            lines.append(f"  position {position:<3}             {ci(row.iloc[0], 4)}")
    for metric, label in (("bigram_gap_ce_nats", "bigram − vanilla"), ("precaching_share", "pre-caching share")):
        row = comparison[(comparison["metric"] == metric) & comparison["position"].isna()]
        if len(row):
            lines.append(f"  {label:<24} {ci(row.iloc[0], 4)}")
    return lines


def eval_lines(out: Path) -> list[str]:
    lines = ["held-out CE (nats) per model, overall"]
    for mode in ("vanilla", "myopic", "bigram"):
        frame = pd.read_parquet(out / mode / "eval" / "results.parquet")
        lines.append(f"  {mode:<8} {ci(frame[frame['position'].isna()].iloc[0])}")
    return lines


def probe_lines(out: Path) -> list[str]:
    lines = ["probe top-1 for the true token at t+tau: best layer per tau (softmax or lstsq) vs the best baseline"]
    for mode in ("vanilla", "myopic"):
        frame = pd.read_parquet(out / mode / "probe" / "results.parquet")
        top1 = frame[(frame["metric"] == "top1") & (frame["target"] == "token")]
        for kind, rows in top1.groupby("kind", sort=False):
            probes = rows[rows["probe"].isin(["softmax", "lstsq"])]
            best = probes.loc[probes.groupby("tau")["value"].idxmax()].set_index("tau")
            baselines = rows[rows["probe"].isin(["unigram", "skip_bigram"])].groupby("tau")["value"].max()
            cells = [
                f"tau={tau}: {row['value']:.3f} (L{int(row['layer'])} {row['probe']}) "
                f"vs {baselines.get(tau, float('nan')):.3f}"
                for tau, row in best.iterrows()
            ]
            label = mode if kind == mode else f"{mode}/{kind}"
            lines.append(f"  {label:<20} " + "; ".join(cells))
    return lines


def summary(out: Path) -> list[str]:
    lines: list[str] = []
    if (out / "synthetic" / "results.parquet").is_file():
        lines += synthetic_lines(out / "synthetic") + [""]
    lines += eval_lines(out) + [""]
    lines += gap_lines(pd.read_csv(out / "comparison.csv")) + [""]
    lines += probe_lines(out) + [""]
    verdict = json.loads((out / "provenance.json").read_text()).get("verdict", {})
    lines.append(f"verdict: {verdict.get('label')}: {verdict.get('reason')}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="demo folder (default: a new temporary folder)")
    parser.add_argument("--read", default=None, help="only summarise this finished demo folder")
    parser.add_argument("--scale", default="full")
    args = parser.parse_args()
    header = [
        "# probe-future demo: wall-clock and headline numbers",
        f"date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"python {platform.python_version()}, cpus {os.cpu_count()}, {platform.machine()}",
    ]
    if args.read:
        out = Path(args.read)
        header.append(f"summarised from {out} (not run now); load average now {load_average()}")
    else:
        out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-demo.")) / "demo"
        wall, before, after = run_demo(out, args.scale)
        header.append(f"demo --scale {args.scale}: {wall:.0f} s wall; load average before {before}, after {after}")
    timings = json.loads((out / "timings.json").read_text())
    steps = ", ".join(f"{name} {seconds:.0f}" for name, seconds in timings.get("when_run", timings["steps"]).items())
    header.append(f"last run of the demo: {timings['wall_seconds']:.0f} s; step seconds (in parallel workers): {steps}")
    scale = json.loads((out / "demo.json").read_text())["scale"]
    header.append(
        f"NL models: {scale['model']} tokenizer {scale['tokenizer']}, {scale['steps']} steps x "
        f"{scale['batch_size']} windows of 64 tokens, lr {scale['lr']}"
    )
    text = "\n".join(header + [""] + summary(out)) + "\n"
    print(text)
    RESULTS.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
