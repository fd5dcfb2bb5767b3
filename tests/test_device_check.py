"""benchmarks/device_check: without a GPU the script stops at once with one line; its Python part runs at toy
size on the CPU (`--dry-run`), so a GPU machine will not be the first place it runs."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU machine runs the real check")
def test_script_fails_fast_without_a_gpu() -> None:
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_check.sh")], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("device_check: no NVIDIA GPU") and len(done.stderr.strip().splitlines()) == 1


def test_python_part_dry_run(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("device_check", ROOT / "benchmarks" / "device_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    if not torch.cuda.is_available():
        assert module.main(["--out", str(tmp_path / "none.txt")]) == 2  # the real check needs CUDA
    out = tmp_path / "device.txt"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    assert module.main(["--dry-run", "--skip", "c", "--out", str(out)]) == 0  # (c) is the probe job, tested apart
    text = out.read_text()
    assert "extraction" in text and "myopic / vanilla tokens/s" in text
