"""Bad input: one line on stderr, exit status 2, no traceback, nothing half-written."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from probes.cli import main
from tests.conftest import save_tiny_gpt2


def run_cli(
    args: list[str], capsys: pytest.CaptureFixture[str], entry: Callable[[list[str]], int] = main
) -> tuple[int, str]:
    """Run a command-line entry point in-process: its exit status and what it wrote to stderr."""
    try:
        code = entry(args)
    except SystemExit as stop:  # argparse errors
        code = int(stop.code or 0)
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, fragment: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip() and "%|" not in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert fragment in lines[0], lines[0]


@pytest.fixture()
def corrupt_model_dir(tiny_gpt2_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "corrupt"
    folder.mkdir()
    (folder / "config.json").write_bytes((tiny_gpt2_dir / "config.json").read_bytes())
    (folder / "model.safetensors").write_bytes(b"not a safetensors file at all")
    return folder


def extract_args(model: str, data: str, out: Path, *extra: str) -> list[str]:
    return ["extract", "--model", model, "--data", data, "--out", str(out), "--device", "cpu", *extra]


@pytest.mark.parametrize(
    ("model_kind", "fragment"),
    [
        ("hub", "not in the local Hugging Face cache"),
        ("missing", "does not exist"),
        ("empty", "no config.json"),
        ("corrupt", "cannot load model weights"),
    ],
)
def test_bad_model(model_kind, fragment, corrupt_model_dir, text_folder, tmp_path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    model = {
        "hub": "no-such-org/no-such-model-xyz",
        "missing": str(tmp_path / "nowhere"),
        "empty": str(empty),
        "corrupt": str(corrupt_model_dir),
    }[model_kind]
    out = tmp_path / "out"
    code, err = run_cli(extract_args(model, str(text_folder), out), capsys)
    assert_one_line_error(code, err, fragment)
    assert not out.exists()


def test_unknown_hub_name_offline_is_quick(text_folder, tmp_path, capsys) -> None:
    import time

    started = time.perf_counter()
    code, err = run_cli(extract_args("gpt2-unknown-size", str(text_folder), tmp_path / "o"), capsys)
    assert_one_line_error(code, err, "not in the local Hugging Face cache")
    assert time.perf_counter() - started < 10


def test_bad_corpus(tiny_gpt2_dir, tmp_path, capsys) -> None:
    empty_dir = tmp_path / "empty-corpus"
    empty_dir.mkdir()
    short = tmp_path / "short.txt"
    short.write_text("only a few words here")
    unreadable = tmp_path / "unreadable.txt"
    unreadable.write_bytes(b"\xff\xfe\x00 broken \xc3\x28")
    cases = [
        (str(empty_dir), ""),
        (str(short), "shorter than one window"),
        (str(unreadable), ""),
        (str(tmp_path / "missing.txt"), ""),
    ]
    for data, fragment in cases:
        out = tmp_path / "out"
        code, err = run_cli(extract_args(str(tiny_gpt2_dir), data, out), capsys)
        assert_one_line_error(code, err, fragment)
        assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--seq-len", "1"], "--seq-len"),
        (["--max-tokens", "0"], "--max-tokens"),
        (["--max-tokens", "-5"], "--max-tokens"),
        (["--layers", "0..9"], "layer 3 does not exist"),
        (["--layers", "x"], "layer"),
        (["--dtype", "int8"], "--dtype"),
    ],
)
def test_bad_settings(extra, fragment, tiny_gpt2_dir, text_folder, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code, err = run_cli(extract_args(str(tiny_gpt2_dir), str(text_folder), out, *extra), capsys)
    assert_one_line_error(code, err, fragment)
    assert not out.exists()


def test_out_holding_another_store_is_refused(tmp_path, text_folder, capsys) -> None:
    first = save_tiny_gpt2(tmp_path / "m1", seed=1)
    second = save_tiny_gpt2(tmp_path / "m2", seed=2)
    out = tmp_path / "store"
    small = ["--seq-len", "16", "--max-tokens", "160"]
    assert run_cli(extract_args(str(first), str(text_folder), out, *small), capsys)[0] == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    code, err = run_cli(extract_args(str(second), str(text_folder), out, *small), capsys)
    assert_one_line_error(code, err, "another run")
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert run_cli(extract_args(str(second), str(text_folder), out, *small, "--overwrite"), capsys)[0] == 0


def test_unwritable_out(tiny_gpt2_dir, text_folder, tmp_path, capsys) -> None:
    if os.geteuid() == 0:
        blocker = tmp_path / "a-file"
        blocker.write_text("x")
        out = blocker / "sub"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        out = locked / "sub"
    code, err = run_cli(extract_args(str(tiny_gpt2_dir), str(text_folder), out, "--max-tokens", "640"), capsys)
    assert_one_line_error(code, err, "cannot create")
