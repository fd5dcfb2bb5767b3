"""The probe job under torchrun (gloo, CPU): two processes write the one-process results table; a killed rank resumes.

Tolerance: none. Each unit of work (a store shard, a subject's baselines, a layer's probes) is computed by one
process with the same code and data whichever rank runs it, and the tests run every process with one thread
(conftest), so `results.csv` is compared byte for byte. (Different thread counts per process could round BLAS
reductions differently; the table would then agree to float32 rounding, not byte for byte.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probes.distributed import assign
from probes.probing.run import run_probes
from tests.probing.test_probe_run import small_config, write_cycle_corpus

ARGS = ["--tau", "1..2", "--layers", "0,2", "--top-k", "32", "--seq-len", "16", "--max-tokens", "1280"]
ARGS += ["--device", "cpu", "--n-boot", "200", "--dtype", "float32"]


def torchrun(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return [*launcher, "-m", "probes.cli", "probe", "--model", str(model), "--data", str(data), *ARGS, *extra]


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}


def reference(model: Path, data: Path, out: Path, **extra: object) -> bytes:
    run_probes(small_config(model, data, out, tau="1..2", layers="0,2", top_k=32, max_tokens=1280, **extra))
    return (out / "results.csv").read_bytes()


@pytest.fixture(scope="module")
def cycle_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cycle_corpus(tmp_path_factory.mktemp("cycle") / "docs")


def test_assignment_balances_layers_and_is_the_same_on_every_rank() -> None:
    costs = [0.2, 1.0, 1.0, 1.0, 0.2, 1.0, 1.0, 1.0]
    owners = assign(costs, 2)
    assert owners == assign(costs, 2)
    loads = [sum(c for c, o in zip(costs, owners, strict=True) if o == rank) for rank in (0, 1)]
    assert abs(loads[0] - loads[1]) <= 0.2 + 1e-9


def test_two_processes_write_the_one_process_table(tiny_gpt2_dir, cycle_corpus, tmp_path) -> None:
    expected = reference(tiny_gpt2_dir, cycle_corpus, tmp_path / "one", control="random")
    out = tmp_path / "two"
    command = torchrun(tiny_gpt2_dir, cycle_corpus, out, "--control", "random", "--out", str(out))
    done = subprocess.run(command, env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "results.csv").read_bytes() == expected
    assert done.stdout.count("results:") == 1  # rank 0 reports
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["world_size"] == 2 and [r["rank"] for r in provenance["ranks"]] == [0, 1]
    fitted = sorted(unit for record in provenance["ranks"] for unit in record["fitted"])
    kinds = ("pretrained", "random-init")
    assert fitted == sorted(f"{k}/{u}" for k in kinds for u in ("baselines", "layer-000", "layer-002"))
    assert all(record["fitted"] for record in provenance["ranks"])  # both ranks fitted something
    shards = json.loads((out / "activations" / "manifest.json").read_text())["extracted_by"]
    assert [entry["shards"] for entry in shards] == [[0], [1]]


def _worker(launcher: subprocess.Popen[bytes], rank: int) -> int | None:
    """The pid of the torchrun worker with RANK=rank (a child of the launcher)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == launcher.pid and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


@pytest.mark.parametrize("victim", [1])
def test_kill_one_rank_then_rerun_gives_the_same_numbers(tiny_gpt2_dir, cycle_corpus, tmp_path, victim) -> None:
    expected = reference(tiny_gpt2_dir, cycle_corpus, tmp_path / "one")
    out = tmp_path / "killed"
    command = torchrun(tiny_gpt2_dir, cycle_corpus, out, "--out", str(out))
    launcher = subprocess.Popen(command, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list((out / "fits").glob("*.parquet")):
        time.sleep(0.05)
    pid = _worker(launcher, victim)
    assert pid is not None and not (out / "results.csv").exists(), "the run finished before it could be interrupted"
    os.kill(pid, signal.SIGKILL)
    assert launcher.wait(timeout=120) != 0  # torchrun stops the other rank and fails
    assert not (out / "results.csv").exists()
    done = subprocess.run(command, env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "results.csv").read_bytes() == expected
