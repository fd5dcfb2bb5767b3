"""What the transformer bigram's count of the past positions is worth.

The demo's "transformer bigram" zeroes past keys and values, but a zeroed past position still takes softmax
mass (its score is q · 0 = 0), so the output at t is A_tt v_t with A_tt = exp(s_tt) / (exp(s_tt) + t): the model
can count the positions before it. `probes.training.myopic.bigram(model, count_past=False)` masks the past out of
the softmax as well (each position attends to itself only). This script trains the demo's bigram recipe once more
with that forward and scores both models on the demo's held-out windows, paired over documents:

- retrained: CE(bigram without the count, trained so) − CE(the demo's counting bigram): what the count is worth
  to a model trained with it (both still have their learned position embeddings);
- ablated: the demo's bigram evaluated without its count (no retraining): how much that trained model leans on it.

    python benchmarks/bench_bigram_count.py --demo reports/demo      # a finished demo folder (full scale)

Writes benchmarks/results/bigram_count.txt.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probes.corpus import load_documents, make_windows, split_by_document
from probes.models import load_plain_model
from probes.runs import TEST_FRACTION
from probes.stats import bootstrap_mean_ci, paired_bootstrap_diff_ci
from probes.training import lm, loop
from probes.training.losses import window_losses
from probes.training.myopic import bigram, gradient_mode

RESULTS = Path(__file__).resolve().parent / "results" / "bigram_count.txt"


def without_count(model: torch.nn.Module, mode: str) -> AbstractContextManager[Any]:
    """The training engine's gradient mode, with the bigram's count of past positions removed."""
    return bigram(model, count_past=False) if mode == "bigram" else gradient_mode(model, mode)


def train_without_count(demo: Path, out: Path) -> float:
    """The demo's bigram recipe (its demo.json scale and seed), trained with `bigram(count_past=False)`."""
    record = json.loads((demo / "demo.json").read_text())
    settings = record.get("identity", record)  # demo.json as runs.claim_folder writes it, or the older flat form
    scale, seed = settings["scale"], settings["seed"]
    lm.gradient_mode, loop.gradient_mode = without_count, without_count  # type: ignore[assignment]
    started = time.perf_counter()
    config = lm.TrainConfig(
        out=str(out),
        mode="bigram",
        config=str(demo / "models" / "config.json"),
        tokenizer=scale["tokenizer"],
        data=scale["data"],
        max_tokens=scale["train_tokens"],
        steps=scale["steps"],
        batch_size=scale["batch_size"],
        lr=scale["lr"],
        warmup=scale["warmup"],
        eval_every=0,
        save_every=max(1, scale["steps"] // 4),
        log_every=10,
        seed=seed,
        device="cpu",
        progress=False,
    )
    lm.train(config)
    return time.perf_counter() - started


def held_out_losses(model_dir: Path, count_past: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-window mean CE on every held-out window (as `probe-future eval` scores them), and each window's document."""
    record = json.loads((model_dir / "training.json").read_text())["data_info"]
    loaded = load_plain_model(str(model_dir), "cpu")
    windows = make_windows(
        load_documents(record["spec"]), loaded.tokenizer, int(record["seq_len"]), seed=record["seed"]
    )
    _, test = split_by_document(windows, float(record.get("test_fraction", TEST_FRACTION)), int(record["seed"]))
    model = loaded.hf_model.eval()
    with bigram(model, count_past=count_past):
        losses = window_losses(model, torch.from_numpy(windows.tokens[test]), 32, loaded.device)
    return losses.mean(axis=1), windows.doc_index[test]


def text(values: tuple[float, float, float]) -> str:
    return f"{values[0]:.4f} [{values[1]:.4f}, {values[2]:.4f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", default="reports/demo", help="a finished full-scale demo folder")
    parser.add_argument("--out", default=None, help="where the count-free bigram is trained (default: a temp dir)")
    args = parser.parse_args()
    demo = Path(args.demo)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bigram-count.")) / "bigram-no-count"
    seconds = 0.0 if (out / "training.json").is_file() else train_without_count(demo, out)
    counting, docs = held_out_losses(demo / "models" / "bigram", count_past=True)
    ablated, docs_again = held_out_losses(demo / "models" / "bigram", count_past=False)
    retrained, docs_third = held_out_losses(out, count_past=False)
    assert (docs == docs_again).all() and (docs == docs_third).all()
    lines = [
        "# the transformer bigram's count of past positions: what it is worth (benchmarks/bench_bigram_count.py)",
        f"date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"python {platform.python_version()}, cpus {os.cpu_count()}; demo folder {demo}; load {os.getloadavg()[0]:.2f}",
        f"count-free bigram trained with the demo's recipe in {seconds:.0f} s ({out})",
        f"held-out windows {len(docs)}, documents {len(np.unique(docs))}; 95% intervals resample documents",
        "",
        f"held-out CE, the demo's bigram (counts the past positions)       {text(bootstrap_mean_ci(counting, docs))}",
        f"held-out CE, bigram trained and scored without the count          {text(bootstrap_mean_ci(retrained, docs))}",
        f"held-out CE, the demo's bigram scored without its count (ablated) {text(bootstrap_mean_ci(ablated, docs))}",
        f"what the count is worth: retrained − counting                     "
        f"{text(paired_bootstrap_diff_ci(retrained, counting, docs))}",
        f"how much the trained bigram leans on it: ablated − counting      "
        f"{text(paired_bootstrap_diff_ci(ablated, counting, docs))}",
    ]
    result = "\n".join(lines) + "\n"
    print(result)
    RESULTS.write_text(result, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
