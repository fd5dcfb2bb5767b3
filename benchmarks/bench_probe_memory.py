"""Peak memory of the probe job at 100k and 1M tokens: with streaming fits it is set by --memory, not by tokens.

GPT-2-small width (d 768, 12 heads), 2 blocks, a 2,048-token BPE, random weights (probe_scale_common). Each run
is a fresh process: bundled corpus, layers 0 and 2 (the final layer, the least-squares target), tau 1 and 2,
both targets, both probes and baselines, the softmax probe limited to 2 epochs (time, not memory), the same
--memory budget at both sizes. A layer in float16 is 1.5 KB per token: 150 MB at 100k tokens, 1.5 GB at 1M.

    python benchmarks/bench_probe_memory.py [--tokens 100000 1000000] [--memory 0.5] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import tempfile
from pathlib import Path

from probe_scale_common import model_dir, run_child

RESULTS = Path(__file__).resolve().parent / "results" / "probe_memory.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--memory", type=float, default=0.5, help="the probe job's --memory (GB), the same for all")
    parser.add_argument("--workdir", default=None, help="keep the model and runs here (default: a temporary folder)")
    parser.add_argument("--tau", default="1,2")
    parser.add_argument("--layers", default="0,2")
    parser.add_argument("--max-epochs", type=int, default=2, help="the softmax probe's epochs")
    parser.add_argument(
        "--refit", action="store_true", help="keep finished activation stores in --workdir, refit everything else"
    )
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-probe-memory."))
    model = model_dir(work / "model")
    lines = [
        f"# bench_probe_memory  {datetime.date.today()}  cpus {os.cpu_count()}  load at start {os.getloadavg()[0]:.1f}",
        "model: GPT-2-small width (d 768, 12 heads), 2 blocks, BPE vocab 2048, random; bundled corpus;",
        f"layers {args.layers}; tau {args.tau}; targets token+model; softmax ({args.max_epochs} epochs) + lstsq; "
        f"unigram + skip-bigram; --memory {args.memory} GB",
    ]
    if args.refit:
        lines.append("each run refits on the finished activation store of an earlier run (extraction not repeated)")
    peaks = {}
    for tokens in args.tokens:
        config = {"model": str(model), "out": str(work / f"run-{tokens}"), "max_tokens": tokens, "tau": args.tau}
        config |= {"layers": args.layers, "device": "cpu", "memory": args.memory, "max_epochs": args.max_epochs}
        if args.refit:  # the probe job on a finished store: everything but the extraction
            for name in ("fits", "results.csv", "results.parquet", "per_doc.parquet", "provenance.json"):
                path = Path(config["out"]) / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        result = run_child(config)
        peaks[tokens] = result["peak_rss_mib"]
        layer_mib = tokens * 768 * 2 / 2**20
        lines.append(
            f"{tokens:>9,} tokens: peak RSS {result['peak_rss_mib']:7.0f} MiB "
            f"(one float16 layer {layer_mib:6.0f} MiB); "
            f"wall {result['wall']:.0f} s, CPU {result['cpu']:.0f} s; stages {json.dumps(result['timings'])}"
        )
        print(lines[-1], flush=True)
    if len(peaks) >= 2:
        small, large = min(peaks), max(peaks)
        growth = peaks[large] / peaks[small] - 1
        lines.append(f"peak RSS growth {small:,} -> {large:,} tokens: {100 * growth:+.1f}%  (goal <= +20%)")
    print(lines[-1])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
