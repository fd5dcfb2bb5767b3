"""Determinism: a probe run killed with SIGKILL at a random moment and rerun writes the same numbers, bit for bit, as
an uninterrupted run, and two uninterrupted runs agree, while other processes load every core and the killed and
resumed runs use different thread counts (as a demo worker and the command line do).

Runs are forked from one helper process that has imported the toolkit once (a fresh interpreter per run would
spend the test's time budget on imports); each run is a child process, killed with SIGKILL by the helper.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import WORDS
from tests.training.test_train import train_args, write_config

ROOT = Path(__file__).resolve().parents[2]
N_KILLS = 5

# The helper: reads "out threads kill_after" lines, forks a probe run for each (SIGKILLed after kill_after seconds
# when that is >= 0) and answers "done <seconds> <finished>".
ZYGOTE = r"""
import os, signal, sys, time
import numpy as np, torch, threadpoolctl
from probes.cli import main
args = sys.argv[1:]
for line in sys.stdin:
    out, threads, kill_after = line.split()
    threads, kill_after = int(threads), float(kill_after)
    started = time.perf_counter()
    child = os.fork()
    if child == 0:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1), os.dup2(fd, 2)
        torch.set_num_threads(threads)
        threadpoolctl.threadpool_limits(threads)
        code = 1
        try:
            code = main([*args, "--out", out])
        finally:
            os._exit(code)
    if kill_after >= 0:
        deadline = started + kill_after
        while time.perf_counter() < deadline and os.waitpid(child, os.WNOHANG) == (0, 0):
            time.sleep(0.005)
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        _, status = os.waitpid(child, 0)
    except ChildProcessError:
        status = 0
    finished = os.path.exists(os.path.join(out, "results.csv"))
    print(f"done {time.perf_counter() - started:.3f} {int(finished)} {status}", flush=True)
"""


def write_corpus(folder: Path, n_docs: int = 300, words: int = 20, seed: int = 3) -> Path:
    """One-window documents: 60 test documents for the intervals, 240 train documents."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for index in range(n_docs):
        (folder / f"doc-{index:03d}.txt").write_text(" ".join(rng.choice(WORDS) for _ in range(words)) + ".\n")
    return folder


class Helper:
    def __init__(self, args: list[str]) -> None:
        # The runs choose their own thread counts; waiting threads sleep instead of spinning, or two threads on
        # a loaded machine spend the test's time budget waiting for each other.
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
        env.pop("OMP_NUM_THREADS", None)
        self.process = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE, *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, out: Path, threads: int, kill_after: float = -1.0) -> tuple[float, bool]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{out} {threads} {kill_after}\n")
        self.process.stdin.flush()
        _, seconds, finished, status = self.process.stdout.readline().split()
        if kill_after < 0:
            assert status == "0", f"run {out} failed with status {status}"
        return float(seconds), finished == "1"

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)


def load_cores(n: int) -> list[subprocess.Popen]:
    """Busy processes, one per core (the machine the issue saw a resumed run differ on was loaded), niced so that
    the test still fits its time budget."""
    return [subprocess.Popen([sys.executable, "-c", "import os; os.nice(10)\nwhile True: pass"]) for _ in range(n)]


def numbers(out: Path) -> tuple[bytes, pd.DataFrame]:
    return (out / "results.csv").read_bytes(), pd.read_parquet(out / "per_doc.parquet")


@pytest.mark.slow
def test_killed_and_resumed_runs_give_identical_numbers_under_load(tmp_path) -> None:
    from probes.cli import main

    corpus = write_corpus(tmp_path / "docs")
    model = tmp_path / "model"  # a small vocabulary (bpe:300): decoding the least-squares map stays cheap
    assert main(train_args(model, corpus, write_config(tmp_path))) == 0
    args = ["probe", "--model", str(model), "--data", str(corpus), "--tau", "1..2", "--seq-len", "16"]
    args += ["--top-k", "32", "--n-boot", "200", "--device", "cpu", "--dtype", "float32", "--batch-size", "64"]
    load = load_cores(os.cpu_count() or 2)
    helper = Helper(args)
    rng = random.Random(13)
    try:
        seconds, _ = helper.run(tmp_path / "reference", threads=2)
        reference = numbers(tmp_path / "reference")
        helper.run(tmp_path / "again", threads=1)
        again = numbers(tmp_path / "again")
        assert again[0] == reference[0], "two uninterrupted runs (1 and 2 threads) differ"
        interrupted = 0
        for attempt in range(N_KILLS):
            out = tmp_path / f"killed-{attempt}"
            killed_threads, resumed_threads = (2, 1) if attempt % 2 else (1, 2)
            _, finished = helper.run(out, killed_threads, kill_after=rng.uniform(0.1, 0.9) * seconds)
            interrupted += not finished
            helper.run(out, resumed_threads)
            resumed = numbers(out)
            assert resumed[0] == reference[0], f"killed run {attempt} resumed to other numbers"
            pd.testing.assert_frame_equal(resumed[1], reference[1], check_exact=True)
        assert interrupted >= 2, "the kills came too late to interrupt the runs"
    finally:
        for process in load:
            process.send_signal(signal.SIGKILL)
            process.wait()
        helper.close()


def test_fits_and_intervals_do_not_depend_on_the_thread_count() -> None:
    """The two causes found: MKL's float64 gemm (the least-squares map's Gram matrix, a long sum over rows) and a
    multi-threaded BLAS product in the bootstrap (a sum over documents) split their sums by thread count. With
    MKL's strict reproducibility mode (set by `import probes`) and the bootstrap's products outside BLAS, one and
    two threads give the same bits."""
    import numpy as np
    import threadpoolctl
    import torch

    from probes.probing.linear import fit_lstsq
    from probes.stats import bootstrap_mean_ci

    generator = torch.Generator().manual_seed(0)
    X = torch.randn(16384, 32, generator=generator, dtype=torch.float64)
    Y = torch.randn(16384, 32, generator=generator, dtype=torch.float64)
    values = np.random.default_rng(0).normal(size=(4000, 3))
    groups = np.arange(4000) // 4  # 1,000 documents
    before = torch.get_num_threads()
    fits, intervals = [], []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with threadpoolctl.threadpool_limits(threads):
                fits.append(fit_lstsq(X, Y).weight)
                intervals.append(np.stack(bootstrap_mean_ci(values, groups, n_boot=1000, seed=0)))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(fits[0], fits[1])
    assert np.array_equal(intervals[0], intervals[1])
