"""probe-future train: learning, exact resume after kill -9, DDP under torchrun, every mode, bad input."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from probes.corpus import load_documents, make_windows, split_by_document
from probes.distributed import Ranks
from probes.distributed import single as single_process
from probes.errors import UsageError
from probes.training.lm import BatchOrder, TrainConfig, resolve_settings, train_bpe_tokenizer
from probes.training.loop import lr_factor
from tests.test_cli_errors import run_cli

REPO = Path(__file__).resolve().parents[1]
SEQ = 16
TINY = {"model_type": "gpt2", "n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": SEQ}
NO_DROPOUT = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
VOCAB_WORDS = (
    "the king and queen walk through castle garden at night while moon shines over river "
    "soldier speaks of war peace people listen in silence before storm breaks"
).split()


def write_markov_corpus(folder: Path, n_docs: int = 12, words_per_doc: int = 240, seed: int = 0) -> Path:
    """Documents from a word chain where every word has two possible successors: easy to learn,
    far below the unigram entropy when learnt."""
    rng = random.Random(seed)
    successors = {word: rng.sample(VOCAB_WORDS, 2) for word in VOCAB_WORDS}
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(n_docs):
        word, words = rng.choice(VOCAB_WORDS), []
        for _ in range(words_per_doc):
            words.append(word)
            word = rng.choice(successors[word])
        (folder / f"doc-{index:03d}.txt").write_text(" ".join(words) + ".\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models train fastest on one thread, and a busy machine slows multi-threaded tiny ops badly."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def markov_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_markov_corpus(tmp_path_factory.mktemp("markov") / "docs")


def write_config(folder: Path, dropout: bool = False) -> Path:
    path = folder / "tiny-config.json"
    path.write_text(json.dumps(TINY | ({} if dropout else NO_DROPOUT)), encoding="utf-8")
    return path


def train_args(out: Path, data: Path, config: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--config",
        str(config),
        "--tokenizer",
        "bpe:300",
        "--data",
        str(data),
        "--seq-len",
        str(SEQ),
        "--batch-size",
        "8",
        "--steps",
        "12",
        "--warmup",
        "2",
        "--lr",
        "3e-3",
        "--eval-every",
        "6",
        "--eval-windows",
        "16",
        "--device",
        "cpu",
        "--out",
        str(out),
        *extra,
    ]


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip() and "%|" not in line and "step/s" not in line]


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def curve(out: Path) -> list[tuple]:
    return [(r["step"], r["train_loss"], r["lr"], r.get("val_loss")) for r in read_metrics(out)]


def subprocess_env() -> dict[str, str]:
    # One thread, as in this process (the resumed run must compute exactly what the reference run did).
    fixed = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    return os.environ | fixed | {"PYTHONPATH": str(REPO)}


# ---------------------------------------------------------------------------------------------- pure parts


def test_lr_schedule_warms_up_then_decays_to_zero() -> None:
    assert lr_factor(0, 4, 20) == pytest.approx(0.25)
    assert lr_factor(3, 4, 20) == pytest.approx(1.0)
    assert lr_factor(4, 4, 20) == pytest.approx(1.0)
    assert lr_factor(12, 4, 20) == pytest.approx(0.5)
    assert lr_factor(20, 4, 20) == pytest.approx(0.0)
    assert lr_factor(0, 0, 10) == pytest.approx(1.0)


def test_batch_order_splits_the_same_global_batch_across_ranks_and_micro_steps() -> None:
    single = BatchOrder(50, 8, 1, seed=3, dist=single_process(torch.device("cpu")))
    for step in (0, 5, 6, 13):  # 6 steps per epoch: step 6 starts a new permutation
        expected = single.global_batch(step)
        assert len(set(expected)) == 8
        shards = [
            batch
            for rank in range(2)
            for batch in BatchOrder(50, 8, 2, seed=3, dist=Ranks(rank, 2, 1, torch.device("cpu"))).micro_batches(step)
        ]
        assert sorted(np.concatenate(shards)) == sorted(expected)
    assert not np.array_equal(single.global_batch(0), single.global_batch(6))
    assert np.array_equal(single.global_batch(6), BatchOrder(50, 8, 1, 3, single.dist).global_batch(6))


def test_bpe_tokenizer_is_deterministic(markov_folder: Path) -> None:
    documents = load_documents(str(markov_folder))
    first, second = train_bpe_tokenizer(documents, 300), train_bpe_tokenizer(documents, 300)
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()
    text = "the king walks"
    assert first.decode(first(text)["input_ids"]) == text


# ---------------------------------------------------------------------------------------------- training


def unigram_entropy(tokens: np.ndarray) -> float:
    counts = np.bincount(tokens.ravel()).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def test_tiny_model_learns_well_below_the_unigram_entropy(markov_folder, tmp_path, capsys) -> None:
    from transformers import AutoTokenizer

    out = tmp_path / "run"
    args = train_args(out, markov_folder, write_config(tmp_path))
    args[args.index("--steps") + 1] = "150"
    args[args.index("--eval-every") + 1] = "0"
    code, err = run_cli([*args, "--batch-size", "16", "--warmup", "10", "--log-every", "10"], capsys)
    assert code == 0, err
    training = json.loads((out / "training.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    windows = make_windows(load_documents(str(markov_folder)), tokenizer, SEQ)
    train_idx, _ = split_by_document(windows, 0.2, 0)
    entropy = unigram_entropy(windows.tokens[train_idx])
    assert training["final_val_loss"] < 0.5 * entropy, (training["final_val_loss"], entropy)
    assert training["tokens_seen"] == 150 * 16 * SEQ
    assert [r["step"] for r in read_metrics(out)] == list(range(10, 151, 10))


@pytest.mark.slow
def test_resume_after_kill_reproduces_the_uninterrupted_run(markov_folder, tmp_path, capsys) -> None:
    config = write_config(tmp_path, dropout=True)  # dropout: the RNG state must be restored too
    steps = ["--steps", "80", "--save-every", "10", "--eval-every", "20"]
    reference = tmp_path / "reference"
    code, err = run_cli([*train_args(reference, markov_folder, config), *steps], capsys)
    assert code == 0, err

    out = tmp_path / "killed"
    args = [*train_args(out, markov_folder, config), *steps]
    process = subprocess.Popen(
        [sys.executable, "-m", "probes.cli", *args],
        env=subprocess_env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = out / "checkpoint" / "state.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        logged = len((out / "metrics.jsonl").read_text().splitlines()) if (out / "metrics.jsonl").exists() else 0
        if state.exists() and logged >= 25:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be interrupted"
    assert not (out / "training.json").exists()
    interrupted_at = json.loads(state.read_text())["step"]
    assert 0 < interrupted_at < 80

    code, err = run_cli(args, capsys)
    assert code == 0, err
    assert curve(out) == curve(reference)
    final, expected = load_file(out / "model.safetensors"), load_file(reference / "model.safetensors")
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[name], expected[name]) for name in final)


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(markov_folder, tmp_path, capsys) -> None:
    config = write_config(tmp_path)
    single = tmp_path / "single"
    code, err = run_cli([*train_args(single, markov_folder, config), "--mode", "myopic"], capsys)
    assert code == 0, err

    double = tmp_path / "double"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        "-m",
        "probes.cli",
        *train_args(double, markov_folder, config),
        "--mode",
        "myopic",
        "--grad-accum",
        "2",
    ]
    result = subprocess.run(command, env=subprocess_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = read_metrics(single), read_metrics(double)
    assert [r["step"] for r in one] == [r["step"] for r in two]
    for a, b in zip(one, two, strict=True):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-4, (a, b)
        assert abs(a.get("val_loss", 0.0) - b.get("val_loss", 0.0)) < 1e-4, (a, b)
    training = json.loads((double / "training.json").read_text())
    assert training["world_size"] == 2 and training["mode"] == "myopic"


@pytest.mark.parametrize("mode", ["myopic", "strict-myopic", "bigram"])
def test_every_mode_trains_and_loads(mode, markov_folder, tmp_path, capsys) -> None:
    from probes.models import load_model

    out = tmp_path / mode
    code, err = run_cli([*train_args(out, markov_folder, write_config(tmp_path)), "--mode", mode], capsys)
    assert code == 0, err
    losses = [r["train_loss"] for r in read_metrics(out)]
    assert len(losses) == 12 and losses[-1] < losses[0]
    assert json.loads((out / "training.json").read_text())["mode"] == mode
    loaded = load_model(str(out), "cpu")
    assert loaded.vocab_size == len(loaded.tokenizer) <= 300


def test_checkpoint_is_accepted_by_the_probe_job(markov_folder, tmp_path, capsys) -> None:
    import pandas as pd

    out, probe_out = tmp_path / "myopic", tmp_path / "probe"
    code, err = run_cli([*train_args(out, markov_folder, write_config(tmp_path)), "--mode", "myopic"], capsys)
    assert code == 0, err
    args = ["probe", "--model", str(out), "--out", str(probe_out), "--data", str(markov_folder), "--tau", "1..2"]
    args += ["--probe", "lstsq", "--seq-len", str(SEQ), "--max-tokens", "2000", "--n-boot", "200", "--device", "cpu"]
    code, err = run_cli(args, capsys)
    assert code == 0, err
    results = pd.read_parquet(probe_out / "results.parquet")
    assert set(results["kind"]) == {"myopic"}
    assert results["value"].notna().all()


def test_fine_tune_from_a_local_model(tiny_gpt2_dir, markov_folder, tmp_path, capsys) -> None:
    out = tmp_path / "finetuned"
    args = ["train", "--init", str(tiny_gpt2_dir), "--data", str(markov_folder), "--seq-len", str(SEQ)]
    args += ["--steps", "3", "--batch-size", "4", "--eval-windows", "4", "--device", "cpu", "--out", str(out)]
    code, err = run_cli(args, capsys)
    assert code == 0, err
    training = json.loads((out / "training.json").read_text())
    assert training["init"] == str(tiny_gpt2_dir) and training["vocab_size"] == 50257


def test_rerunning_a_finished_run_changes_nothing(markov_folder, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    args = train_args(out, markov_folder, write_config(tmp_path))
    assert run_cli(args, capsys)[0] == 0
    before = (out / "training.json").read_text(), (out / "metrics.jsonl").read_text()
    assert run_cli(args, capsys)[0] == 0
    assert ((out / "training.json").read_text(), (out / "metrics.jsonl").read_text()) == before


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(markov_folder, tmp_path, capsys) -> None:
    out = tmp_path / "diverge"
    args = train_args(out, markov_folder, write_config(tmp_path))
    args[args.index("--lr") + 1] = "1e30"
    code, err = run_cli([*args, "--warmup", "0", "--save-every", "1"], capsys)
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1, err
    assert "training diverged" in lines[0] and "last good checkpoint" in lines[0]
    saved = json.loads((out / "checkpoint" / "state.json").read_text())["step"]
    assert f"(step {saved})" in lines[0]
    assert not (out / "training.json").exists()


# ---------------------------------------------------------------------------------------------- bad input


def _bad_config(tmp_path: Path) -> Path:
    path = tmp_path / "bad.json"
    path.write_text('{"model_type": "gpt2", "n_layer": 2,', encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda args, tmp: [*args, "--mode", "sideways"], "argument --mode: invalid choice: 'sideways'"),
        (lambda args, tmp: [*_drop(args, "--config"), "--arch", "huge"], "unknown --arch"),
        (lambda args, tmp: _replace(args, "--config", str(_bad_config(tmp))), "is not valid JSON"),
        (lambda args, tmp: _replace(args, "--config", str(tmp / "missing.json")), "does not exist"),
        (lambda args, tmp: _replace(args, "--tokenizer", "words"), "unknown --tokenizer"),
        (lambda args, tmp: _replace(args, "--batch-size", "4000"), "larger than the data"),
        (lambda args, tmp: [*args, "--grad-accum", "3"], "not divisible"),
        (lambda args, tmp: _replace(args, "--steps", "0"), "--steps must be positive"),
    ],
)
def test_bad_input_is_one_line(change, fragment, markov_folder, tmp_path, capsys) -> None:
    args = change(train_args(tmp_path / "out", markov_folder, write_config(tmp_path)), tmp_path)
    code, err = run_cli(args, capsys)
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"mode": "sideways"}, "unknown --mode"),
        ({"precision": "fp8"}, "unknown --precision"),
        ({"arch": "small", "config": "model.json"}, "give --arch or --config, not both"),
        ({"init": "gpt2", "tokenizer": "bpe:300"}, "drop --tokenizer"),
        ({"seq_len": 1}, "--seq-len must be at least 2"),
    ],
)
def test_python_api_checks_what_the_command_line_checks(change, fragment) -> None:
    with pytest.raises(UsageError, match=fragment):
        resolve_settings(TrainConfig(out="unused", **change))


def _drop(args: list[str], flag: str) -> list[str]:
    index = args.index(flag)
    return args[:index] + args[index + 2 :]


def _replace(args: list[str], flag: str, value: str) -> list[str]:
    args = list(args)
    args[args.index(flag) + 1] = value
    return args


def test_init_model_not_available_offline(markov_folder, tmp_path, capsys) -> None:
    args = ["train", "--init", "no-such-org/no-such-model-xyz", "--data", str(markov_folder)]
    code, err = run_cli([*args, "--device", "cpu", "--out", str(tmp_path / "out")], capsys)
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1, err
    assert "not in the local Hugging Face cache" in lines[0]


def test_resuming_with_other_arguments_is_refused(markov_folder, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    args = train_args(out, markov_folder, write_config(tmp_path))
    assert run_cli([*args, "--steps", "2"], capsys)[0] == 0
    code, err = run_cli([*args, "--steps", "2", "--lr", "1e-3"], capsys)
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1, err
    assert "other settings" in lines[0] and "lr" in lines[0]


def test_overwrite_replaces_a_run_of_other_settings(markov_folder, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    args = train_args(out, markov_folder, write_config(tmp_path))
    assert run_cli([*args, "--steps", "2"], capsys)[0] == 0
    code, err = run_cli([*args, "--steps", "3", "--overwrite"], capsys)
    assert code == 0, err
    assert json.loads((out / "training.json").read_text())["steps"] == 3
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3]


def test_a_folder_of_other_files_is_refused_without_overwrite(markov_folder, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("keep me", encoding="utf-8")
    args = train_args(out, markov_folder, write_config(tmp_path))
    code, err = run_cli(args, capsys)
    assert code == 2 and "holds no training run" in err, err
    assert (out / "notes.txt").exists()
