"""Training-step cost of the myopic gradient: (forward + backward + AdamW step) time, myopic / vanilla.

All modes train the same randomly initialised GPT-2 on the same batch, with repeats interleaved across modes.
Reported: the median and the minimum step time (on a shared machine the minimum is the steadier estimate of the
uncontended cost) and the forward+backward FLOPs counted by torch's FlopCounterMode, a load-independent measure
of the extra work. Vanilla runs the model as loaded (its default attention implementation); the myopic modes run
their own attention math inside the context: GPT-2's myopic mode through the fused attention kernel, and
"myopic-eager" the same gradient through the eager softmax path that attention dropout still takes. No
dropout, as in the demo's models. The first two models are the demo's: its language model (2 layers, d 128,
vocab 2,048, 32 windows of 64) and GPT-2 blocks shaped as its synthetic model (2 layers, d 64, 4 heads, ReLU;
an 8-token vocabulary stands in for its two-number input and one-number output).

    python benchmarks/bench_myopic_step.py [--threads 1] [--repeats 9] [--big-repeats 5]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import GPT2Config, GPT2LMHeadModel

from probes.training.myopic import gradient_mode

MODES = ("vanilla", "myopic", "myopic-eager", "strict-myopic")
# As the demo's models: with attention dropout, GPT-2's myopic mode takes the eager path.
NO_DROPOUT = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
MYOPIC_MODULE = sys.modules["probes.training.myopic"]  # the package exports a function of the same name


def in_mode(model: torch.nn.Module, mode: str) -> AbstractContextManager[None]:
    """Enter `mode`'s gradient mode (myopic-eager: the myopic one through the eager softmax path)."""
    return _eager_myopic(model) if mode == "myopic-eager" else gradient_mode(model, mode)


@contextmanager
def _eager_myopic(model: torch.nn.Module) -> Iterator[None]:
    fusable = MYOPIC_MODULE._fusable
    MYOPIC_MODULE._fusable = lambda *args: False
    try:
        with gradient_mode(model, "myopic"):
            yield
    finally:
        MYOPIC_MODULE._fusable = fusable


@dataclass(frozen=True)
class Case:
    name: str
    layers: int
    width: int
    heads: int
    batch: int
    seq: int
    repeats: int
    vocab: int = 50257
    activation: str = "gelu_new"


def step_times(case: Case, warmup: int = 1) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Wall-clock step times per mode, and the forward+backward matmul/attention FLOPs per mode."""
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=case.layers,
        n_embd=case.width,
        n_head=case.heads,
        n_positions=1024,
        vocab_size=case.vocab,
        activation_function=case.activation,
        bos_token_id=None,
        eos_token_id=None,
        **NO_DROPOUT,
    )
    model = GPT2LMHeadModel(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, config.vocab_size, (case.batch, case.seq))

    def step(mode: str) -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with in_mode(model, mode):
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
            loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    def flops(mode: str) -> float:
        counter = FlopCounterMode(display=False)
        optimizer.zero_grad(set_to_none=True)
        with counter, in_mode(model, mode):
            model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        return float(counter.get_total_flops())

    counted = {mode: flops(mode) for mode in MODES}
    for _ in range(warmup):
        for mode in MODES:
            step(mode)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(case.repeats):
        for mode in MODES:
            times[mode].append(step(mode))
    return times, counted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the demo's workers use one)")
    parser.add_argument("--repeats", type=int, default=9, help="interleaved repeats for the small models")
    parser.add_argument("--big-repeats", type=int, default=5, help="interleaved repeats for the 124M model")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "myopic_step.txt")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cases = [
        Case("demo LM (2L d128)", 2, 128, 4, 32, 64, args.repeats, vocab=2048, activation="gelu_pytorch_tanh"),
        Case("synthetic (2L d64)", 2, 64, 4, 32, 64, args.repeats * 4, vocab=8, activation="relu"),
        Case("gpt2 4L d256", layers=4, width=256, heads=4, batch=8, seq=64, repeats=args.repeats),
        Case("gpt2 124M (12L d768)", layers=12, width=768, heads=12, batch=4, seq=64, repeats=args.big_repeats),
    ]
    lines = [
        "Myopic training step (forward + backward + AdamW), median (and min) of interleaved repeats",
        f"date {datetime.date.today().isoformat()}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"{platform.processor() or platform.machine()}, load average at start {os.getloadavg()[0]:.1f}",
        "",
        f"{'model':<22} {'vocab':>6} {'batch x seq':>11} {'reps':>4} {'mode':<14} {'median s':>9} {'min s':>7} "
        f"{'median ratio':>12} {'min ratio':>9} {'GFLOP':>7} {'FLOP ratio':>10}",
    ]
    print("\n".join(lines), flush=True)
    for case in cases:
        times, counted = step_times(case)
        base_median, base_min = statistics.median(times["vanilla"]), min(times["vanilla"])
        for mode in MODES:
            median, fastest = statistics.median(times[mode]), min(times[mode])
            line = (
                f"{case.name:<22} {case.vocab:>6} {f'{case.batch} x {case.seq}':>11} {case.repeats:>4} {mode:<14} "
                f"{median:>9.3f} {fastest:>7.3f} {median / base_median:>11.2f}x {fastest / base_min:>8.2f}x "
                f"{counted[mode] / 1e9:>7.1f} {counted[mode] / counted['vanilla']:>9.3f}x"
            )
            lines.append(line)
            print(line, flush=True)
    lines.append(f"load average at end {os.getloadavg()[0]:.1f} (other processes on the machine inflate the medians)")
    print(lines[-1])
    lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
