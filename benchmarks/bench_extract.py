"""Extraction speed against a bare forward pass, and peak memory against the number of tokens.

GPT-2-small-sized random model (12 layers, d 768, GPT-2 vocabulary), all 13 layers written to disk.
Rounds interleave the two measurements on the same token batches, so machine noise hits both alike.
Peak RSS is measured in fresh subprocesses extracting 10k and 100k tokens.

    python benchmarks/bench_extract.py [--tokens 4096] [--rounds 3] [--skip-rss]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

RESULTS = Path(__file__).parent / "results" / "extract.txt"


def gpt2_small_dir(folder: Path) -> Path:
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config()).save_pretrained(folder)
    return folder


def corpus_dir(folder: Path, n_docs: int = 400, words: int = 700) -> Path:
    import random

    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(5000)]
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(n_docs):
        (folder / f"d{index:04d}.txt").write_text(" ".join(rng.choice(vocab) for _ in range(words)))
    return folder


def measure_speed(model_dir: Path, data_dir: Path, n_tokens: int, rounds: int) -> list[str]:
    from probes.activations import StoreSettings, extract
    from probes.corpus import load_documents, make_windows
    from probes.models import load_model

    model = load_model(str(model_dir), device="cpu")
    windows = make_windows(load_documents(str(data_dir)), model.tokenizer, 64, max_tokens=n_tokens, seed=0)
    settings = StoreSettings(layers=tuple(range(13)), dtype="float16", batch_size=8, shard_windows=64)
    tokens = torch.from_numpy(windows.tokens)
    bare, extraction = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(rounds):
            started = time.perf_counter()
            with torch.inference_mode():
                for lo in range(0, len(tokens), settings.batch_size):
                    model.hf_model(tokens[lo : lo + settings.batch_size])
            bare.append(windows.tokens.size / (time.perf_counter() - started))
            started = time.perf_counter()
            extract(model, windows, Path(scratch) / f"r{round_index}", settings, progress=False)
            extraction.append(windows.tokens.size / (time.perf_counter() - started))
    ratio = [e / b for e, b in zip(extraction, bare, strict=True)]
    return [
        f"tokens per round: {windows.tokens.size}, rounds: {rounds}, batch 8 x 64, 13 layers, float16 to disk",
        f"bare HF forward (logits)  tok/s: median {statistics.median(bare):8.1f}  all {[round(x) for x in bare]}",
        f"extraction (hooks + disk) tok/s: median {statistics.median(extraction):8.1f}  "
        f"all {[round(x) for x in extraction]}",
        f"ratio extraction / bare: median {statistics.median(ratio):.3f}  all {[round(x, 3) for x in ratio]}"
        "  (goal >= 0.85)",
    ]


def child_peak_rss(model_dir: Path, data_dir: Path, n_tokens: int) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        code = (
            "import resource, sys; from probes.cli import main; "
            f"main(['extract', '--model', {str(model_dir)!r}, '--data', {str(data_dir)!r}, "
            f"'--max-tokens', '{n_tokens}', '--out', {scratch + '/s'!r}, '--device', 'cpu']); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
        )
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
        output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
        return int(output.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-rss", action="store_true")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    lines = [
        f"# bench_extract  {datetime.date.today()}  torch {torch.__version__}  threads {torch.get_num_threads()}",
        "model: GPT-2-small config (12 layers, d 768, vocab 50257), random weights",
    ]
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = gpt2_small_dir(Path(scratch) / "model")
        data_dir = corpus_dir(Path(scratch) / "data")
        lines += measure_speed(model_dir, data_dir, args.tokens, args.rounds)
        print("\n".join(lines), flush=True)
        if not args.skip_rss:
            small = child_peak_rss(model_dir, data_dir, 10_000)
            large = child_peak_rss(model_dir, data_dir, 100_000)
            lines.append(
                f"peak RSS: 10k tokens {small:.0f} MiB, 100k tokens {large:.0f} MiB, "
                f"growth {100 * (large / small - 1):+.1f}%  (goal <= 10%)"
            )
            print(lines[-1])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
