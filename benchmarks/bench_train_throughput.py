"""Training throughput of `probe-future train`'s loop against a plain Hugging Face training loop.

Three arms train identical copies of the same randomly initialised GPT-2 (4 layers, d 256, 4 heads, the GPT-2
vocabulary) on 64-token windows, batch 8, AdamW with the same settings:

- `ours-vanilla`: `probes.training.lm.train_step` (batch gather, forward, loss, backward, clipping, finite-loss check,
  optimizer and scheduler step) plus the loop's per-step logging (a metrics.jsonl line and a progress-bar update);
- `hf-plain`: `model(input_ids, labels=input_ids).loss.backward(); optimizer.step(); optimizer.zero_grad()`;
- `ours-myopic`: the first arm inside `gradient_mode(model, "myopic")`.

Blocks of steps are interleaved across the arms and medians of the per-step times are reported, so load from
other processes on the machine hits every arm alike.

    python benchmarks/bench_train_throughput.py [--repeats 15] [--block 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import io
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from probes.distributed import join
from probes.models import resolve_device
from probes.training.lm import Run, TrainConfig, build_run, train_step
from probes.training.loop import MetricsLog, make_optimizer
from probes.training.myopic import gradient_mode

SEQ, BATCH = 64, 8
WORDS = "the king and queen walk through the castle garden at night while the moon shines over the river".split()


def write_corpus(folder: Path, n_docs: int = 40, words_per_doc: int = 400) -> str:
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(n_docs):
        (folder / f"doc-{index:03d}.txt").write_text(" ".join(rng.choice(WORDS) for _ in range(words_per_doc)))
    return str(folder)


def our_run(data: str, out: Path) -> Run:
    config = TrainConfig(
        out=str(out), arch="small", data=data, seq_len=SEQ, batch_size=BATCH, steps=100_000, warmup=0, device="cpu"
    )
    return build_run(config, join(resolve_device("cpu"), timeout=None))


def our_stepper(run: Run, folder: Path, mode: str) -> Callable[[int], None]:
    log = MetricsLog(folder / f"metrics-{mode}.jsonl", 0)
    bar = tqdm(total=None, file=io.StringIO(), mininterval=0.1)

    def step(index: int) -> None:
        with gradient_mode(run.model, mode):
            loss = train_step(run, index)
        log.write({"step": index + 1, "train_loss": loss, "lr": 0.0, "tokens_seen": 0, "tokens_per_second": 0.0})
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        bar.update(1)

    return step


def hf_stepper(run: Run) -> Callable[[int], None]:
    """The plain loop on its own copy of the same model, same optimizer settings, same batches."""
    model = type(run.model)(run.model.config)
    model.load_state_dict(run.model.state_dict())
    model.train()
    optimizer = make_optimizer(model, run.settings.lr, run.settings.weight_decay, torch.device("cpu"))

    def step(index: int) -> None:
        ids = run.data.train[run.order.global_batch(index)]
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def measure(repeats: int, block: int, folder: Path) -> dict[str, list[float]]:
    data = write_corpus(folder / "docs")
    arms: dict[str, Callable[[int], None]] = {}
    vanilla_run = our_run(data, folder / "vanilla")
    arms["ours-vanilla"] = our_stepper(vanilla_run, folder, "vanilla")
    arms["hf-plain"] = hf_stepper(vanilla_run)
    arms["ours-myopic"] = our_stepper(our_run(data, folder / "myopic"), folder, "myopic")
    times: dict[str, list[float]] = {name: [] for name in arms}
    steps = dict.fromkeys(arms, 0)
    for repeat in range(repeats + 1):  # the first round warms up and is not counted
        for name, step in arms.items():
            for _ in range(block):
                start = time.perf_counter()
                step(steps[name])
                if repeat:
                    times[name].append(time.perf_counter() - start)
                steps[name] += 1
    return times


def report(times: dict[str, list[float]], repeats: int, block: int) -> str:
    median = {name: statistics.median(values) for name, values in times.items()}
    tokens = BATCH * SEQ
    lines = [
        "# Training throughput: probe-future train loop vs a plain Hugging Face loop",
        f"date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, python {platform.python_version()}, "
        f"{platform.processor() or platform.machine()}",
        f"model: GPT-2 4 layers, d 256, 4 heads, vocab 50257; seq {SEQ}, batch {BATCH}; AdamW; CPU",
        f"{repeats} interleaved rounds x {block} steps per arm (after one warm-up round); medians of step times",
        "",
        f"{'arm':<14} {'median s/step':>14} {'tokens/s':>10} {'min':>8} {'max':>8}",
    ]
    for name, values in times.items():
        lines.append(
            f"{name:<14} {median[name]:>14.4f} {tokens / median[name]:>10.0f} {min(values):>8.4f} {max(values):>8.4f}"
        )
    best = {name: min(values) for name, values in times.items()}
    lines += [
        "",
        "ratio                                   median    best   goal",
        f"ours-vanilla / hf-plain tokens/s       {median['hf-plain'] / median['ours-vanilla']:>7.3f} "
        f"{best['hf-plain'] / best['ours-vanilla']:>7.3f}   >= 0.95",
        f"ours-myopic / ours-vanilla step time   {median['ours-myopic'] / median['ours-vanilla']:>7.3f} "
        f"{best['ours-myopic'] / best['ours-vanilla']:>7.3f}   <= 1.3",
        "(best = ratio of the fastest steps: less sensitive to load from other processes than the medians)",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--block", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_throughput.txt"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        times = measure(args.repeats, args.block, Path(folder))
    text = report(times, args.repeats, args.block)
    Path(args.out).write_text(text, encoding="utf-8")
    print(text, end="")


if __name__ == "__main__":
    main()
