"""The default probe grid end to end on a GPT-2-small-sized model: goal <= 20 minutes on 2 CPU cores.

Random weights with the GPT-2 configuration (12 layers, d 768, vocabulary 50,257), the bundled corpus,
20k tokens, all 13 layers, tau = 1..5, both targets, both probe families, both baselines, bootstrap CIs:
exactly `probe-future --model DIR --tau 1..5 --out OUT` with every default.

    python benchmarks/bench_probe_grid.py
"""

from __future__ import annotations

import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

RESULTS = Path(__file__).parent / "results" / "probe_grid.txt"


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = Path(scratch) / "gpt2-small-random"
        torch.manual_seed(0)
        GPT2LMHeadModel(GPT2Config()).save_pretrained(model_dir)
        out = Path(scratch) / "run"
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        command = [sys.executable, "-m", "probes.cli", "--model", str(model_dir), "--tau", "1..5", "--out", str(out)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - started
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_seconds = cpu.ru_utime + cpu.ru_stime
        provenance = json.loads((out / "provenance.json").read_text())
        n_rows = sum(1 for _ in open(out / "results.csv")) - 1
    lines = [
        f"# bench_probe_grid  {datetime.date.today()}  torch {torch.__version__}  threads {torch.get_num_threads()}",
        f"load average at start {load_before:.2f}, at end {os.getloadavg()[0]:.2f}",
        "model: GPT-2-small config, random weights; data: bundled, 20k tokens (defaults); layers 0..12; tau 1..5;",
        "targets token+model; probes softmax+lstsq; baselines unigram+skip_bigram; 1,000 bootstrap resamples",
        f"wall clock end to end: {wall:.0f} s ({wall / 60:.1f} min)  (goal <= 20 min)",
        f"CPU time of the run: {cpu_seconds:.0f} s (on an otherwise idle 2-core machine wall ~ CPU / 2)",
        f"stage timings: {json.dumps(provenance['timings'])}",
        f"results rows: {n_rows}; test documents: {provenance['data']['n_test_docs']}",
        "console table:",
        done.stdout.strip(),
    ]
    print("\n".join(lines))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
