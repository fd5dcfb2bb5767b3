"""The GPU device check (run by benchmarks/device_check.sh): throughput numbers to record, in under 8 minutes.

(a) extraction tokens/s against a bare forward, GPT-2-small-sized (12 x 768, vocab 50,257) and 1B-sized
    (Llama-style, 16 x 2,048, 8 KV heads, MLP 8,192, vocab 50,257: 1.18B parameters) random models, in the
    `auto` precision (bf16 autocast) and for GPT-2 also in fp32; every layer stored as float16, 64-token windows;
(b) training tokens/s of the 124M GPT-2 config at batch 512 x 64 in bf16, vanilla and myopic (one-pass
    myopic gradient), their ratio; and vanilla with --compile (compile time reported apart);
(c) the default probe grid (`probe-future --model GPT2-small-random --tau 1..5`) wall time.
Writes benchmarks/results/device.txt (or --out). `--dry-run` runs every step at toy size on the CPU (what the
test suite checks); without it a CUDA device is required and its absence fails at once.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results" / "device.txt"


@dataclass(frozen=True)
class Sizes:
    gpt2: dict[str, int]
    big: dict[str, int]
    windows: int  # windows per extraction measurement
    batch: int  # windows per extraction forward
    train_batch: int
    train_steps: int
    grid_tokens: int | None  # None: the probe job's default budget


FULL = Sizes(
    gpt2={"n_layer": 12, "n_embd": 768, "n_head": 12},
    big={"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32, "intermediate_size": 8192},
    windows=1024,
    batch=64,
    train_batch=512,
    train_steps=20,
    grid_tokens=None,
)
DRY = Sizes(
    gpt2={"n_layer": 2, "n_embd": 32, "n_head": 2},
    big={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64},
    windows=16,
    batch=4,
    train_batch=4,
    train_steps=2,
    grid_tokens=1280,
)
SEQ = 64
VOCAB = 50257


def log(lines: list[str], text: str) -> None:
    print(text, flush=True)
    lines.append(text)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(work: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    work()
    synchronize(device)
    return time.perf_counter() - start


def gpt2(shape: dict[str, int]):
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=1024, **shape)).eval()


def llama(sizes: Sizes):
    from transformers import LlamaConfig, LlamaForCausalLM

    heads = sizes.big["num_attention_heads"]
    config = LlamaConfig(
        vocab_size=VOCAB, num_key_value_heads=max(1, heads // 4), max_position_embeddings=SEQ, **sizes.big
    )
    return LlamaForCausalLM(config).eval()


def loaded(hf_model, folder: Path, device: torch.device):
    """A LoadedModel around a random in-memory model (its folder holds only the config and tokenizer)."""
    from probes.corpus.tokenizer import gpt2_tokenizer
    from probes.models import LoadedModel, boot_bridge

    tokenizer = gpt2_tokenizer()
    hf_model.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    hf_model.to(device)
    bridge = boot_bridge(str(folder), hf_model, tokenizer, device)
    return LoadedModel(folder.name, hf_model, bridge, tokenizer, device, "random")


def windows_of(n: int):
    from probes.corpus import TokenWindows

    tokens = np.random.default_rng(0).integers(0, VOCAB, size=(n, SEQ))
    docs = np.arange(n) // 4
    return TokenWindows(tokens, docs, np.zeros(n, dtype=np.int64), [f"d{i}" for i in range(docs[-1] + 1)], SEQ)


def extraction(name: str, hf_model, sizes: Sizes, device: torch.device, precision: str, scratch: Path) -> str:
    """Bare forward vs extraction (hooks on every layer, float16 shards to disk) on the same windows."""
    from probes.activations import StoreSettings, extract
    from probes.precision import autocast, configure_matmuls

    model = loaded(hf_model, scratch / f"{name}-{precision}", device)
    windows = windows_of(sizes.windows)
    tokens = torch.from_numpy(windows.tokens)
    configure_matmuls(precision, device)

    @torch.inference_mode()
    def bare() -> None:
        with autocast(precision, device):
            for lo in range(0, len(tokens), sizes.batch):
                model.hf_model(tokens[lo : lo + sizes.batch].to(device)).logits.argmax(-1).cpu()

    bare()  # warm-up (kernels, allocator)
    bare_seconds = timed(bare, device)
    layers = tuple(range(model.n_layers + 1))
    settings = StoreSettings(layers, "float16", sizes.batch, 8 * sizes.batch, precision)
    store_dir = scratch / f"store-{name}-{precision}"
    extract_seconds = timed(lambda: extract(model, windows, store_dir, settings, progress=False), device)
    n = tokens.numel()
    model.hf_model.to("cpu")
    return (
        f"  {name:<10} {precision:<5} bare forward {n / bare_seconds:>10,.0f} tok/s   extraction "
        f"{n / extract_seconds:>10,.0f} tok/s   ratio {bare_seconds / extract_seconds:.2f}  ({n:,} tokens, "
        f"{len(layers)} layers)"
    )


def train_rate(sizes: Sizes, device: torch.device, mode: str, compiled: bool) -> tuple[float, float]:
    """Tokens/s of optimizer steps of the engine's shape (autocast, the engine's loss module with its chunked
    vocabulary cross-entropy, fused AdamW, clipping) on random windows in one gradient mode; and the seconds of
    the first 3 steps (warm-up, compilation)."""
    from probes.precision import autocast, configure_matmuls
    from probes.training.loop import make_optimizer
    from probes.training.losses import NextTokenLoss
    from probes.training.myopic import gradient_mode

    torch.manual_seed(0)
    model = gpt2(sizes.gpt2).to(device).train()
    loss_of = NextTokenLoss(model)
    forward = torch.compile(loss_of) if compiled else loss_of
    optimizer = make_optimizer(model, 6e-4, 0.1, device)
    tokens = torch.randint(0, VOCAB, (sizes.train_batch, SEQ), device=device)
    precision = "bf16" if device.type == "cuda" else "fp32"
    configure_matmuls(precision, device)

    def steps(count: int) -> None:
        for _ in range(count):
            optimizer.zero_grad(set_to_none=True)
            with autocast(precision, device):
                loss = forward(tokens)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()

    with gradient_mode(model, mode):
        warm = timed(lambda: steps(3), device)
        seconds = timed(lambda: steps(sizes.train_steps), device)
    return sizes.train_steps * tokens.numel() / seconds, warm


def training(sizes: Sizes, device: torch.device) -> list[str]:
    """Vanilla and myopic training throughput (and compiled vanilla on CUDA), with their ratios."""
    runs = [("vanilla", "vanilla", False), ("myopic", "myopic", False)]
    if device.type == "cuda":
        runs.append(("vanilla+compile", "vanilla", True))
    lines, rates = [], {}
    precision = "bf16" if device.type == "cuda" else "fp32"
    for label, mode, compiled in runs:
        try:
            rates[label], warm = train_rate(sizes, device, mode, compiled)
        except Exception as error:  # e.g. compile without a compiler toolchain: report it, keep going
            lines.append(f"  {label:<16} failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
            continue
        lines.append(
            f"  {label:<16} {rates[label]:>10,.0f} tok/s  ({sizes.train_steps} steps of {sizes.train_batch} x {SEQ}, "
            f"{precision}; the 3 steps before, warm-up and any compilation: {warm:.1f} s)"
        )
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if "vanilla" in rates and "myopic" in rates:
        lines.append(f"  myopic / vanilla tokens/s: {rates['myopic'] / rates['vanilla']:.3f}")
    if "vanilla" in rates and "vanilla+compile" in rates:
        lines.append(f"  compiled / eager vanilla tokens/s: {rates['vanilla+compile'] / rates['vanilla']:.3f}")
    return lines


def probe_grid(sizes: Sizes, device: torch.device, scratch: Path) -> list[str]:
    """`probe-future --model DIR --tau 1..5 --out OUT` with every default, timed end to end (a subprocess)."""
    folder = scratch / "gpt2-small-random"
    torch.manual_seed(0)
    gpt2(sizes.gpt2).save_pretrained(folder)
    from probes.corpus.tokenizer import gpt2_tokenizer

    gpt2_tokenizer().save_pretrained(folder)
    data = "bundled"
    try:
        from probes.corpus.bundled import ensure_bundled

        ensure_bundled()
    except Exception:  # no registry on the device machine and no corpus carried: pseudo-English documents
        data = str(scratch / "docs")
        words = (
            "the king and queen walk through the castle garden at night while the moon shines over the river".split()
        )
        rng = np.random.default_rng(0)
        Path(data).mkdir(parents=True, exist_ok=True)
        for index in range(200):
            text = " ".join(rng.choice(words, 400))
            (Path(data) / f"doc-{index:03d}.txt").write_text(text + ".\n", encoding="utf-8")
    out = scratch / "grid"
    command = [sys.executable, "-m", "probes.cli", "--model", str(folder), "--tau", "1..5", "--out", str(out)]
    command += ["--data", data, "--device", device.type]
    if sizes.grid_tokens:
        command += ["--max-tokens", str(sizes.grid_tokens), "--seq-len", "16", "--layers", "0,2"]
    start = time.perf_counter()
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    timings = json.loads((out / "provenance.json").read_text())["timings"]
    return [f"  wall {wall:.1f} s end to end (data: {data.split('/')[-1]}); stage seconds {json.dumps(timings)}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU (no GPU needed)")
    parser.add_argument("--out", default=str(RESULTS), help="where to write the report")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: a,b,c")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        sys.stderr.write("device_check: no CUDA device visible (torch.cuda.is_available() is False); run it on a GPU\n")
        return 2
    device = torch.device("cpu" if args.dry_run else "cuda")
    sizes = DRY if args.dry_run else FULL
    skip = set(args.skip.split(",")) - {""}
    lines: list[str] = []
    name = "dry run on CPU" if args.dry_run else torch.cuda.get_device_name(device)
    log(lines, f"# device check  {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}")
    log(lines, f"device: {name}; torch {torch.__version__}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="device-check.") as scratch_name:
        scratch = Path(scratch_name)
        if "a" not in skip:
            log(lines, "(a) extraction vs bare forward (same windows, same precision; all layers to float16 shards)")
            precisions = ("fp32",) if args.dry_run else ("bf16", "fp32")
            for precision in precisions:
                log(lines, extraction("gpt2-small", gpt2(sizes.gpt2), sizes, device, precision, scratch))
            log(lines, extraction("llama-1b", llama(sizes), sizes, device, precisions[0], scratch))
        if "b" not in skip:
            log(lines, "(b) training the 124M GPT-2 config, batch 512 x 64, bf16 autocast, fused AdamW")
            for line in training(sizes, device):
                log(lines, line)
        if "c" not in skip:
            log(lines, "(c) the default probe grid (GPT-2-small random, 20k tokens, 13 layers, tau 1..5)")
            for line in probe_grid(sizes, device, scratch):
                log(lines, line)
    log(lines, f"total {time.perf_counter() - started:.0f} s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
