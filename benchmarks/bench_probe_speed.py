"""The probe grid's wall time per token, old code against new, and 2 processes (torchrun) against 1, side by side.

The same job in every variant, one after the other (rounds interleave them, so a busy machine slows all alike):
GPT-2-small width (d 768, 12 heads), 2 blocks, BPE vocab 2048, random (probe_scale_common); the bundled corpus,
100k tokens; the default grid otherwise (every layer, tau 1..5, both targets, both probes, both baselines).
Variants:
  old       the package as it was before streaming (a copy given by --old-tree, e.g. `git archive <rev>`)
  held      this tree, each layer held in memory (the default --memory at this size)
  streamed  this tree, --memory 0: every row read from the store on demand
  torchrun  this tree, `torchrun --nproc_per_node=2` (one thread per process; the others use 2 threads)

    python benchmarks/bench_probe_speed.py --old-tree /tmp/old [--tokens 100000] [--rounds 1]
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

RESULTS = Path(__file__).resolve().parent / "results" / "probe_speed.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-tree", default=None, help="a copy of the package before streaming (skipped if absent)")
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--variants", default="old,held,streamed,torchrun")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--tau", default="1..5")
    parser.add_argument("--layers", default="all")
    parser.add_argument("--max-epochs", type=int, default=None, help="the softmax probe's (default: its own, 8)")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-probe-speed."))
    model = model_dir(work / "model")
    variants = [v for v in args.variants.split(",") if v != "old" or args.old_tree]
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for round_index in range(args.rounds):
        for variant in variants:
            out = work / f"run-{variant}-{round_index}"
            shutil.rmtree(out, ignore_errors=True)
            config = {"model": str(model), "out": str(out), "max_tokens": args.tokens, "device": "cpu"}
            config |= {"tau": args.tau, "layers": args.layers, "max_epochs": args.max_epochs}
            if variant == "streamed":
                config["memory"] = 0
            tree = Path(args.old_tree) if variant == "old" else None
            result = run_child(config, tree=tree, torchrun=2 if variant == "torchrun" else 0)
            results[variant].append(result)
            print(f"round {round_index} {variant}: {result['wall']:.0f} s wall, {result['cpu']:.0f} s CPU", flush=True)
    lines = [
        f"# bench_probe_speed  {datetime.date.today()}  cpus {os.cpu_count()}  load now {os.getloadavg()[0]:.1f}",
        "model: GPT-2-small width (d 768, 12 heads), 2 blocks, BPE vocab 2048, random;",
        f"bundled corpus, {args.tokens:,} tokens;",
        f"layers {args.layers}, tau {args.tau}, token+model targets, softmax (max epochs "
        f"{args.max_epochs or 'default 8'}) + lstsq, unigram + skip-bigram;",
        f"variants run one after the other, {args.rounds} round(s); wall = end-to-end seconds of a fresh process",
    ]
    reference = "old" if "old" in results else variants[0]
    base = min(r["wall"] for r in results[reference])
    for variant, runs in results.items():
        wall = min(r["wall"] for r in runs)
        cpu = min(r["cpu"] for r in runs)
        per_token = 1e6 * wall / args.tokens
        lines.append(
            f"  {variant:<9} wall {wall:6.0f} s ({per_token:7.0f} µs/token; {wall / base:.2f}x {reference}), "
            f"CPU {cpu:6.0f} s, peak RSS {max(r['peak_rss_mib'] for r in runs):5.0f} MiB; "
            f"stages {json.dumps(runs[0]['timings'])}"
        )
    print("\n".join(lines))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
