"""Shared by the probe-job scale benchmarks (bench_probe_memory, bench_probe_speed, bench_probe_torchrun).

The model: GPT-2-small width (d 768, 12 heads) with 2 blocks and a 2,048-token byte-level BPE fitted on the
bundled corpus, random weights. Width sets the activation bytes per token (what streaming is about); fewer
blocks and a small vocabulary make 1M tokens extractable on 2 busy cores. Each measured run is a fresh child
process (`python benchmarks/probe_scale_common.py CONFIG_JSON`) that reports its wall time, CPU time and peak
RSS; `tree` runs another copy of the package (e.g. `git archive HEAD | tar -x -C DIR`) for old-vs-new timings.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
WIDTH = {"n_embd": 768, "n_head": 12, "n_layer": 2, "n_positions": 64}
VOCAB = 2048


def model_dir(folder: Path) -> Path:
    """The benchmark model (built once into `folder`)."""
    if (folder / "config.json").is_file():
        return folder
    from transformers import GPT2Config, GPT2LMHeadModel

    from probes.corpus import load_documents
    from probes.training.lm import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(load_documents("bundled"), VOCAB)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), **WIDTH)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def run_child(config: dict[str, Any], tree: Path | None = None, torchrun: int = 0) -> dict[str, Any]:
    """Run the probe job of `config` (ProbeConfig fields; `max_epochs` for the softmax probe) in a fresh process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    script = [str(Path(__file__).resolve()), json.dumps(config)]
    if torchrun:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"]
        command = [*launcher, *script]
    else:
        command = [sys.executable, *script]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd="/")
    if done.returncode != 0:
        raise RuntimeError(f"probe run failed:\n{done.stderr[-4000:]}")
    wall = time.perf_counter() - started
    reports = [json.loads(line[len("REPORT ") :]) for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    return {
        "wall": wall,
        "cpu": sum(r["cpu"] for r in reports),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in reports),
        "timings": reports[0]["timings"],
    }


def _child(config: dict[str, Any]) -> None:
    try:
        from probes.probing.linear import SoftmaxConfig
        from probes.probing.run import ProbeConfig, run_probes
    except ImportError:  # the package as it was before the re-layout into subpackages (an --old-tree)
        from probes.linear import SoftmaxConfig  # type: ignore[no-redef]
        from probes.run import ProbeRunConfig as ProbeConfig  # type: ignore[no-redef]
        from probes.run import run_probes  # type: ignore[no-redef]

        config["taus"] = config.pop("tau")

    max_epochs = config.pop("max_epochs", None)
    if max_epochs is not None:
        config["softmax"] = SoftmaxConfig(max_epochs=max_epochs)
    run_probes(ProbeConfig(progress=False, **config))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    timings = {}
    provenance = Path(config["out"]) / "provenance.json"
    if int(os.environ.get("RANK", "0")) == 0 and provenance.is_file():
        timings = json.loads(provenance.read_text())["timings"]
    report = {"cpu": usage.ru_utime + usage.ru_stime, "peak_rss_mib": usage.ru_maxrss / 1024, "timings": timings}
    print("REPORT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
