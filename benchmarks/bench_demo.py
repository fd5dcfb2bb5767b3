"""The full `probe-future demo`: wall-clock, and the report's headline numbers.

Runs the demo into a fresh folder (or reads a finished one with --read), then writes
benchmarks/results/demo.txt: wall-clock per step and in total (with the load average: the machine may be shared),
the synthetic vanilla/myopic test losses and ridge R², the natural-language myopia gap overall and at positions
0, 10, 60 with 95% CIs, the pre-caching share, and probe top-1 at tau = 1..5 against the baselines.

    python benchmarks/bench_demo.py                       # runs the demo into a temporary folder
    python benchmarks/bench_demo.py --out reports/demo    # runs (or continues) it there
    python benchmarks/bench_demo.py --read reports/demo   # only summarises a finished demo

`make demo` from a fresh clone adds the venv set-up (about a minute) to the demo's own time:
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

from probes.runs import BASELINES, PROBES
from probes.selection import best_per
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
    lines = [
        "probe top-1 for the true token at t+tau (test documents): per tau the layer and probe (softmax or lstsq) "
        "with the best top-1 on the train-side validation documents, vs the baseline chosen the same way"
    ]
    for mode in ("vanilla", "myopic"):
        frame = pd.read_parquet(out / mode / "probe" / "results.parquet")
        top1 = frame[(frame["metric"] == "top1") & (frame["target"] == "token")]
        for kind, rows in top1.groupby("kind", sort=False):
            probes = rows[rows["probe"].isin(PROBES)].dropna(subset=["layer"])
            best = best_per(probes, ["tau"], PROBES).set_index("tau")
            baselines = best_per(rows[rows["probe"].isin(BASELINES)], ["tau"], BASELINES).set_index("tau")
            cells = [
                f"tau={tau}: {row['value']:.3f} (L{int(row['layer'])} {row['probe']}) "
                f"vs {baselines['value'].get(tau, float('nan')):.3f}"
                for tau, row in best.iterrows()
            ]
            label = mode if kind == mode else f"{mode}/{kind}"
            lines.append(f"  {label:<20} " + "; ".join(cells))
            own = rows[rows["probe"] == "model-output"]
            if len(own):
                lines.append(f"  {'':<20} own next-token top-1 {ci(own.iloc[0])}")
    chosen = best["chosen_on"].iloc[0] if len(best) else "?"
    lines.append(f"  (choices made on the {chosen})")
    return lines


def deficit_lines(comparison: pd.DataFrame, out: Path) -> list[str]:
    """The myopic model's probe deficit beside its own next-token deficit (paired over test documents): the
    probes at vanilla's layer and probe chosen per tau on validation, and the models' own output at tau = 1."""
    lines = [
        "myopic deficit (paired over test documents): vanilla − myopic top-1 for the token, and the share of "
        "vanilla's above-baseline top-1 the myopic model lacks"
    ]
    token = comparison[(comparison["target"] == "token")]
    own = token[token["probe"] == "model-output"]
    for metric, label in (("delta_top1", "difference"), ("lacking_share_top1", "share lacking")):
        row = own[own["metric"] == metric]
        if len(row):
            lines.append(f"  own next-token output, tau=1: {label:<14} {ci(row.iloc[0])}")
    vanilla = pd.read_parquet(out / "vanilla" / "probe" / "results.parquet")
    top1 = vanilla[(vanilla["metric"] == "top1") & (vanilla["target"] == "token") & (vanilla["kind"] == "vanilla")]
    chosen = best_per(top1[top1["probe"].isin(PROBES)].dropna(subset=["layer"]), ["tau"], PROBES)
    for pick in chosen.itertuples():
        cell = token[(token["layer"] == pick.layer) & (token["tau"] == pick.tau) & (token["probe"] == pick.probe)]
        parts = []
        for metric, label in (("delta_top1", "difference"), ("lacking_share_top1", "share lacking")):
            row = cell[cell["metric"] == metric]
            if len(row):
                parts.append(f"{label} {ci(row.iloc[0])}")
        where = f"probe, tau={int(pick.tau)} (L{int(pick.layer)} {pick.probe}):"
        lines.append(f"  {where:<30} " + "; ".join(parts))
    return lines


def share_lines(seconds: dict[str, float], wall: float) -> list[str]:
    """Each step's share of the worker-seconds, and the longest chain of steps that wait for each other: what
    the wall-clock cannot go below (the chain) and what it cannot go below on N workers (work / N)."""
    from probes.demo import default_workers, plan

    done = {name: value for name, value in seconds.items() if value > 0}
    total = sum(done.values())
    lines = [f"each step's share of the {total:.0f} worker-seconds (wall {wall:.0f} s, steps side by side):"]
    for name, value in sorted(done.items(), key=lambda item: -item[1]):
        lines.append(f"  {name:<22} {value:6.0f} s  {100 * value / total:5.1f} %")
    after = {step.name: step.after for step in plan()}
    chains: dict[str, tuple[float, list[str]]] = {}

    def chain(name: str) -> tuple[float, list[str]]:
        if name not in chains:
            longest = max((chain(before) for before in after.get(name, ()) if before in done), default=(0.0, []))
            chains[name] = (longest[0] + done.get(name, 0.0), [*longest[1], name])
        return chains[name]

    if done:
        length, names = max(chain(name) for name in done)
        workers = default_workers()
        lines.append(
            f"longest chain {length:.0f} s ({' -> '.join(names)}); work / {workers} workers {total / workers:.0f} s"
        )
    return lines


def summary(out: Path) -> list[str]:
    lines: list[str] = []
    if (out / "synthetic" / "results.parquet").is_file():
        lines += synthetic_lines(out / "synthetic") + [""]
    lines += eval_lines(out) + [""]
    lines += gap_lines(pd.read_csv(out / "comparison.csv")) + [""]
    lines += probe_lines(out) + [""]
    lines += deficit_lines(pd.read_csv(out / "comparison.csv"), out) + [""]
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
    header += share_lines(timings.get("when_run", timings["steps"]), timings["wall_seconds"])
    record = json.loads((out / "demo.json").read_text())
    scale = record.get("identity", record)["scale"]  # {"stage", "identity"}; older demo folders hold the settings
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
