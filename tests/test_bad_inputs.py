"""Hostile input, one table: every bad input is one line on stderr and exit status 2, never a traceback, writes
nothing (the --out folder stays absent or unchanged) and leaves every input as it was (hashed before and after).

Each case builds its command from a shared `World` (a tiny random GPT-2, a small corpus, tiny trained vanilla,
myopic and bigram checkpoints with their eval runs, a finished probe run) and names a fragment its refusal must
contain. Below the table: the folder-claim guard of `probes.runs.claim_folder` over every pair of stages, and the
permissions of a trained checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from analysis import compare as compare_script
from probes.cli import main
from probes.errors import UsageError
from probes.runs import MARKER_STAGES, RUN_MARKER, claim_folder
from tests.conftest import write_documents
from tests.test_cli_errors import assert_one_line_error, run_cli

SEQ = 16  # window of the trained checkpoints (their config has 16 positions)
TINY_CONFIG = {"model_type": "gpt2", "n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": SEQ}
NO_DROPOUT = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
BERT_CONFIG = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
BERT_CONFIG |= {"intermediate_size": 64, "max_position_embeddings": SEQ}
CASE_SECONDS = 60  # a case that blocks (a named pipe read) fails instead of hanging the suite


# ---------------------------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class World:
    """What the cases are built from; shared by the session, and never changed by a case."""

    model: Path  # a tiny random GPT-2 (128 positions, the GPT-2 vocabulary)
    docs: Path  # a folder of 12 .txt documents
    tiny_config: Path  # a --config for `train` (1 layer, 16 positions)
    trained: dict[str, Path]  # mode -> checkpoint folder (vanilla, myopic, bigram)
    evals: dict[str, Path]  # mode -> eval run of that checkpoint
    bigram_as_vanilla: Path  # the bigram checkpoint evaluated with the ordinary forward
    probe_run: Path  # a finished probe run of the tiny GPT-2


def _ok(args: list[str]) -> None:
    code = main(args)
    assert code == 0, f"setting up the world failed: {args}"


def _train(out: Path, docs: Path, config: Path, mode: str) -> Path:
    args = ["train", "--mode", mode, "--config", str(config), "--tokenizer", "bpe:300", "--data", str(docs)]
    _ok([*args, "--seq-len", str(SEQ), "--steps", "2", "--batch-size", "4", "--device", "cpu", "--out", str(out)])
    return out


@pytest.fixture(scope="session")
def world(tiny_gpt2_dir: Path, text_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("world")
    config = root / "tiny-config.json"
    config.write_text(json.dumps(TINY_CONFIG | NO_DROPOUT), encoding="utf-8")
    trained = {mode: _train(root / mode, text_folder, config, mode) for mode in ("vanilla", "myopic", "bigram")}
    evals = {}
    for mode, model in trained.items():
        evals[mode] = root / f"eval-{mode}"
        _ok(["eval", "--model", str(model), "--out", str(evals[mode]), "--device", "cpu", "--n-boot", "200"])
    as_vanilla = root / "eval-bigram-as-vanilla"
    args = ["eval", "--model", str(trained["bigram"]), "--forward", "vanilla", "--n-boot", "200", "--device", "cpu"]
    _ok([*args, "--out", str(as_vanilla)])
    probe_run = root / "probe-run"
    probe = ["probe", "--model", str(tiny_gpt2_dir), "--data", str(text_folder), "--seq-len", str(SEQ)]
    probe += ["--max-tokens", "640", "--tau", "1", "--layers", "0", "--probe", "lstsq", "--target", "token"]
    _ok([*probe, "--n-boot", "200", "--device", "cpu", "--out", str(probe_run)])
    return World(tiny_gpt2_dir, text_folder, config, trained, evals, as_vanilla, probe_run)


# ---------------------------------------------------------------------------------------------- snapshots


def snapshot(path: Path) -> Any:
    """Everything about a path that a command could change: kind, mode and content of each entry below it."""
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_symlink():
        return ("link", os.readlink(path))
    if path.is_dir():
        return {str(sub.relative_to(path)): _entry(sub) for sub in sorted(path.rglob("*"))} | {".": _entry(path)}
    return _entry(path)


def _entry(path: Path) -> tuple[str, int, str]:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return ("link", info.st_mode, os.readlink(path))
    if stat.S_ISREG(info.st_mode):
        return ("file", info.st_mode, hashlib.sha256(path.read_bytes()).hexdigest())
    return ("other", info.st_mode, "")  # folders, pipes: never read


# ---------------------------------------------------------------------------------------------- the table


@dataclass
class Attempt:
    """One bad command: its arguments, the paths that must not change, the entry point, a patch to apply."""

    args: list[str]
    watch: list[Path]
    entry: Callable[[list[str]], int] = main
    patch: Callable[[pytest.MonkeyPatch], None] | None = None


@dataclass(frozen=True)
class Case:
    name: str
    fragment: str
    build: Callable[[World, Path], Attempt]


def copy_of(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target


def probe(model: Path | str, data: Path | str, out: Path, *extra: str) -> list[str]:
    args = ["probe", "--model", str(model), "--data", str(data), "--out", str(out), "--device", "cpu"]
    return [*args, "--seq-len", str(SEQ), "--max-tokens", "640", "--tau", "1", "--n-boot", "200", *extra]


def extract(model: Path | str, data: Path | str, out: Path, *extra: str) -> list[str]:
    args = ["extract", "--model", str(model), "--data", str(data), "--out", str(out), "--device", "cpu"]
    return [*args, "--seq-len", str(SEQ), "--max-tokens", "640", *extra]


def train(w: World, out: Path, *extra: str) -> list[str]:
    args = ["train", "--config", str(w.tiny_config), "--tokenizer", "bpe:300", "--data", str(w.docs), "--out", str(out)]
    return [*args, "--seq-len", str(SEQ), "--steps", "2", "--batch-size", "4", "--device", "cpu", *extra]


def evaluate(model: Path, out: Path, *extra: str) -> list[str]:
    return ["eval", "--model", str(model), "--out", str(out), "--device", "cpu", "--n-boot", "200", *extra]


def synthetic(out: Path, *extra: str) -> list[str]:
    knobs = ["--steps", "2", "--batch-size", "4", "--d-model", "16", "--device", "cpu"]
    return ["synthetic", "--out", str(out), *knobs, *extra]


def compare(vanilla: Path, myopic: Path, out: Path, *extra: str) -> list[str]:
    return ["compare", "--vanilla", str(vanilla), "--myopic", str(myopic), "--out", str(out), "--n-boot", "200", *extra]


def with_model_config(edit: dict[str, Any], command: str) -> Callable[[World, Path], Attempt]:
    """A copy of the tiny model whose config.json disagrees with its weights."""

    def build(w: World, tmp: Path) -> Attempt:
        model = copy_of(w.model, tmp / "model")
        config = json.loads((model / "config.json").read_text())
        (model / "config.json").write_text(json.dumps(config | edit))
        args = extract(model, w.docs, tmp / "out") if command == "extract" else evaluate(model, tmp / "out")
        if command == "eval":
            args += ["--data", str(w.docs), "--seq-len", str(SEQ)]
        return Attempt(args, [tmp / "out", model, w.docs])

    return build


def bert_folder(folder: Path) -> Path:
    """A tiny BERT with a language-model head: it reads the whole window, later tokens included."""
    from transformers import BertConfig, BertLMHeadModel

    config = BertConfig(
        vocab_size=50257, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    BertLMHeadModel(config).save_pretrained(folder)
    return folder


def non_causal(command: str) -> Callable[[World, Path], Attempt]:
    def build(w: World, tmp: Path) -> Attempt:
        if command == "train":
            config = tmp / "bert.json"
            config.write_text(json.dumps(BERT_CONFIG))
            args = ["train", "--config", str(config), "--tokenizer", "bpe:300", "--data", str(w.docs)]
            args += ["--seq-len", str(SEQ), "--steps", "2", "--batch-size", "4", "--device", "cpu"]
            return Attempt([*args, "--out", str(tmp / "out")], [tmp / "out", w.docs, config])
        model = bert_folder(tmp / "bert")
        builders = {"probe": probe, "extract": extract}
        if command in builders:
            args = builders[command](model, w.docs, tmp / "out")
        else:
            args = evaluate(model, tmp / "out", "--data", str(w.docs), "--seq-len", str(SEQ))
        return Attempt(args, [tmp / "out", model, w.docs])

    return build


def out_into(target: Callable[[World, Path], Path], make: Callable[[World, Path, Path], list[str]]):
    """--out pointed at a folder that must survive (an input, another stage's run, a file)."""

    def build(w: World, tmp: Path) -> Attempt:
        out = target(w, tmp)
        return Attempt(make(w, tmp, out), [out, w.model, w.docs, *w.trained.values()])

    return build


def a_file(w: World, tmp: Path) -> Path:
    path = tmp / "a-file"
    path.write_text("not a folder\n")
    return path


def other_files(w: World, tmp: Path) -> Path:
    folder = tmp / "notes"
    folder.mkdir()
    (folder / "thesis.tex").write_text("months of work\n")
    return folder


def data_folder_with(kind: str) -> Callable[[World, Path], Attempt]:
    """A copy of the corpus with one part that cannot be read as text."""

    def build(w: World, tmp: Path) -> Attempt:
        docs = copy_of(w.docs, tmp / "docs")
        patch = None
        if kind == "broken-link":
            (docs / "gone.txt").symlink_to(tmp / "nowhere.txt")
        elif kind == "pipe-inside":
            os.mkfifo(docs / "pipe.txt")
        elif kind == "unreadable-folder":
            locked = docs / "part-two"
            locked.mkdir()
            (locked / "more.txt").write_text("the second half of the corpus " * 40)
            locked.chmod(0)
            patch = _deny(locked)  # root reads any folder: refuse it the way a user's system would
        return Attempt(extract(w.model, docs, tmp / "out"), [tmp / "out", docs], patch=patch)

    return build


def _deny(locked: Path) -> Callable[[pytest.MonkeyPatch], None]:
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:
        if Path(os.fsdecode(path)) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    def patch(monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(os, "scandir", scandir)

    return patch


def named_pipe(w: World, tmp: Path) -> Attempt:
    pipe = tmp / "corpus.txt"
    os.mkfifo(pipe)
    return Attempt(probe(w.model, pipe, tmp / "out"), [tmp / "out", w.model])


def one_big_document(w: World, tmp: Path) -> Attempt:
    """One long document among ten of one window each: a small --max-tokens sample draws only the long one."""
    docs = tmp / "docs"
    write_documents(docs, n_docs=10, words_per_doc=14)
    write_documents(docs / "big", n_docs=1, words_per_doc=12000, seed=1)
    return Attempt(probe(w.model, docs, tmp / "out", "--max-tokens", "64"), [tmp / "out", w.model, docs])


def in_a_fresh_process(env: dict[str, str]) -> Callable[[list[str]], int]:
    """An entry point that runs `probe-future` in its own process (the hub libraries read their settings once, at
    import) and passes its stderr on."""

    def entry(args: list[str]) -> int:
        command = [sys.executable, "-m", "probes.cli", *args]
        done = subprocess.run(command, env=os.environ | env, capture_output=True, text=True, timeout=CASE_SECONDS)
        sys.stderr.write(done.stderr)
        return done.returncode

    return entry


def unreachable_hub(w: World, tmp: Path) -> Attempt:
    """Online (offline mode off), but the hub's host does not resolve: a hub dataset is refused in one line at once,
    not after a minute of retries."""
    online = in_a_fresh_process({"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "https://hub.invalid"})
    args = extract(w.model, "no-org/no-such-dataset", tmp / "out")
    return Attempt(args, [tmp / "out", w.model], entry=online)


def split_seed_eval_pair(w: World, tmp: Path) -> Attempt:
    """Eval runs whose split seed (1) is not the seed their models were trained with (0)."""
    runs = []
    for mode in ("vanilla", "myopic"):
        run = copy_of(w.evals[mode], tmp / mode)
        record = json.loads((run / "provenance.json").read_text())
        record["args"]["seed"] = 1
        record["args"]["resolved"]["seed"] = 1
        (run / "provenance.json").write_text(json.dumps(record))
        runs.append(run)
    return Attempt(compare(runs[0], runs[1], tmp / "out"), [tmp / "out", *runs])


def seed_case(command: str) -> Callable[[World, Path], Attempt]:
    def build(w: World, tmp: Path) -> Attempt:
        out = tmp / "out"
        builders: dict[str, Callable[[], list[str]]] = {
            "probe": lambda: probe(w.model, w.docs, out, "--seed", "-1"),
            "extract": lambda: extract(w.model, w.docs, out, "--seed", "-1"),
            "train": lambda: train(w, out, "--seed", "-1"),
            "eval": lambda: evaluate(w.trained["vanilla"], out, "--seed", "-1"),
            "synthetic": lambda: synthetic(out, "--seed", "-1"),
            "demo": lambda: ["demo", "--out", str(out), "--fast", "--no-synthetic", "--seed", "-1"],
            "compare": lambda: compare(w.evals["vanilla"], w.evals["myopic"], out, "--seed", "-1"),
            "report": lambda: ["report", str(w.evals["vanilla"]), "--out", str(out), "--seed", "-1"],
        }
        return Attempt(builders[command](), [out, w.model, w.docs, *w.trained.values(), *w.evals.values()])

    return build


def out_is_file(command: str) -> Callable[[World, Path], Attempt]:
    def make(w: World, tmp: Path, out: Path) -> list[str]:
        return {
            "probe": lambda: probe(w.model, w.docs, out),
            "extract": lambda: extract(w.model, w.docs, out),
            "train": lambda: train(w, out),
            "eval": lambda: evaluate(w.trained["vanilla"], out),
            "synthetic": lambda: synthetic(out),
            "demo": lambda: ["demo", "--out", str(out), "--fast", "--no-synthetic"],
            "compare": lambda: compare(w.evals["vanilla"], w.evals["myopic"], out),
        }[command]()

    return out_into(a_file, make)


def script_entry(build_args: Callable[[World, Path], list[str]]) -> Callable[[World, Path], Attempt]:
    """`python analysis/compare.py ...` (the same command as `probe-future compare`)."""

    def build(w: World, tmp: Path) -> Attempt:
        args = build_args(w, tmp)[1:]  # without the subcommand
        return Attempt(args, [tmp / "out", *w.evals.values()], entry=compare_script.main)

    return build


def probe_into(target: Callable[[World, Path], Path]) -> Callable[[World, Path], Attempt]:
    return out_into(target, lambda w, tmp, out: probe(w.model, w.docs, out, "--overwrite"))


def plain(make: Callable[[World, Path, Path], list[str]], *inputs: str) -> Callable[[World, Path], Attempt]:
    """An attempt on tmp/out; `inputs`: the parts of the world it reads (hashed before and after)."""

    def build(w: World, tmp: Path) -> Attempt:
        return Attempt(make(w, tmp, tmp / "out"), [tmp / "out", *(getattr(w, name) for name in inputs)])

    return build


def into_input(copy: str, make: Callable[[World, Path, Path], list[str]]) -> Callable[[World, Path], Attempt]:
    """--out pointed at (or into, or above) a copy of an input: `make(world, tmp, copy)` gives the command."""

    def build(w: World, tmp: Path) -> Attempt:
        source = {"model": w.model, "docs": w.docs, "trained": w.trained["vanilla"]}[copy]
        mine = copy_of(source, tmp / copy)
        return Attempt(make(w, tmp, mine), [tmp, w.model, w.docs])

    return build


def on(runs: Callable[[World], list[Path]], make: Callable[[World, Path], list[str]]) -> Callable[..., Attempt]:
    """A command on finished runs of the world (which must stay as they are)."""
    return lambda w, tmp: Attempt(make(w, tmp), [tmp / "out", *runs(w)])


def evals(w: World) -> list[Path]:
    return [*w.evals.values(), w.bigram_as_vanilla]


def a_probe_run(w: World, tmp: Path) -> Path:
    return w.probe_run


def init_model_as_out(w: World, tmp: Path, model: Path) -> list[str]:
    args = ["train", "--init", str(model), "--data", str(w.docs), "--seq-len", str(SEQ), "--steps", "2"]
    return [*args, "--batch-size", "4", "--device", "cpu", "--out", str(model), "--overwrite"]


def pair_of(vanilla: str, myopic: str, *extra: str) -> Callable[[World, Path], list[str]]:
    return lambda w, tmp: compare(w.evals[vanilla], w.evals[myopic], tmp / "out", *extra)


HUGE = "..99999999999"  # after 0 (layers) or 1 (tau): 10^11 values
SEEDED = ("probe", "extract", "train", "eval", "synthetic", "demo", "compare", "report")
OUT_FILE = ("probe", "extract", "train", "eval", "synthetic", "demo", "compare")
V, M = "vanilla", "myopic"

CASES: list[Case] = [
    # 1. ranges are bounded before they are expanded
    Case("tau-range-huge", "more than 100,000", plain(lambda w, t, o: probe(w.model, w.docs, o, "--tau", "1" + HUGE))),
    Case("layers-huge-probe", "more than 100,000",
         plain(lambda w, t, o: probe(w.model, w.docs, o, "--layers", "0" + HUGE))),
    Case("layers-huge-extract", "more than 100,000",
         plain(lambda w, t, o: extract(w.model, w.docs, o, "--layers", "0" + HUGE))),
    # 2. --overwrite never deletes what is not a run of the same stage; nothing is written into an input
    Case("out-is-the-model", "is an input", into_input("model", lambda w, t, m: probe(m, w.docs, m, "--overwrite"))),
    Case("out-inside-the-model", "lies inside an input",
         into_input("model", lambda w, t, m: probe(m, w.docs, m / "probe"))),
    Case("out-is-the-data", "is an input", into_input("docs", lambda w, t, d: extract(w.model, d, d, "--overwrite"))),
    Case("out-holds-the-data", "holds an input",
         into_input("docs", lambda w, t, d: probe(w.model, d, t, "--overwrite"))),
    Case("train-out-is-the-init-model", "is an input", into_input("trained", init_model_as_out)),
    Case("eval-out-is-the-model", "is an input", into_input("trained", lambda w, t, m: evaluate(m, m))),
    Case("probe-over-a-checkpoint", "holds a training run, not a probe run",
         probe_into(lambda w, t: copy_of(w.trained[V], t / "checkpoint"))),
    Case("probe-over-other-files", "is not empty and holds no probe run", probe_into(other_files)),
    Case("probe-over-an-eval-run", "holds an eval run, not a probe run", probe_into(lambda w, t: w.evals[V])),
    Case("extract-over-a-probe-run", "holds a probe run, not an activation store",
         out_into(a_probe_run, lambda w, t, o: extract(w.model, w.docs, o, "--overwrite"))),
    Case("train-over-a-probe-run", "holds a probe run, not a training run",
         out_into(a_probe_run, lambda w, t, o: train(w, o, "--overwrite"))),
    Case("synthetic-over-a-probe-run", "holds a probe run, not a synthetic-task run",
         out_into(a_probe_run, lambda w, t, o: synthetic(o))),
    Case("demo-over-a-probe-run", "holds a probe run, not a demo",
         out_into(a_probe_run, lambda w, t, o: ["demo", "--out", str(o), "--fast"])),
    Case("compare-over-a-probe-run", "holds a probe run, not a comparison",
         out_into(a_probe_run, lambda w, t, o: compare(w.evals[V], w.evals[M], o))),
    Case("compare-out-is-an-input", "is an input",
         out_into(lambda w, t: w.evals[V], lambda w, t, o: compare(w.evals[V], w.evals[M], o))),
    # 3. eval claims its --out as every stage does
    Case("eval-over-a-probe-run", "holds a probe run, not an eval run",
         out_into(a_probe_run, lambda w, t, o: evaluate(w.trained[V], o))),
    # 4. a config that disagrees with its weights
    Case("config-fewer-layers-than-weights", "does not use", with_model_config({"n_layer": 1}, "extract")),
    Case("config-more-layers-than-weights", "does not have", with_model_config({"n_layer": 3}, "eval")),
    # 5. models that see the future
    *[Case(f"bert-{command}", "not a causal language model", non_causal(command))
      for command in ("probe", "extract", "eval", "train")],
    # 6. windows longer than the model's positions
    Case("probe-seq-len-beyond-positions", "128 positions",
         plain(lambda w, t, o: probe(w.model, w.docs, o, "--seq-len", "200"), "model", "docs")),
    Case("extract-seq-len-beyond-positions", "128 positions",
         plain(lambda w, t, o: extract(w.model, w.docs, o, "--seq-len", "200"), "model", "docs")),
    # 7. a negative seed, in every entry point
    *[Case(f"seed-minus-one-{command}", "--seed must be between", seed_case(command)) for command in SEEDED],
    Case("seed-minus-one-compare-script", "--seed must be between", script_entry(pair_of(V, M, "--seed", "-1"))),
    # 8. --out is a file
    *[Case(f"out-is-a-file-{command}", "exists and is not a folder", out_is_file(command)) for command in OUT_FILE],
    # 9-11. numbers that cannot be used, refused before any folder is made
    Case("extract-batch-size-0", "--batch-size",
         plain(lambda w, t, o: extract(w.model, w.docs, o, "--batch-size", "0"), "model", "docs")),
    Case("probe-batch-size-0", "--batch-size",
         plain(lambda w, t, o: probe(w.model, w.docs, o, "--batch-size", "0"), "model", "docs")),
    *[Case(f"train{flag}-{value}", f"{flag} must be", plain(lambda w, t, o, a=f"{flag}={value}": train(w, o, a)))
      for flag, value in (("--lr", "nan"), ("--lr", "inf"), ("--weight-decay", "nan"))],
    Case("synthetic-lr-inf", "--lr must be positive and finite", plain(lambda w, t, o: synthetic(o, "--lr", "inf"))),
    # 12. parts of a data folder that cannot be read
    Case("data-unreadable-subfolder", "cannot read folder", data_folder_with("unreadable-folder")),
    Case("data-broken-link", "is a broken link", data_folder_with("broken-link")),
    Case("data-pipe-inside-a-folder", "not a regular file", data_folder_with("pipe-inside")),
    # 13 and 13.4. comparisons that would not mean what they say
    Case("compare-same-run-twice", "name the same eval run", on(evals, pair_of(V, V))),
    Case("compare-roles-swapped", "(were two roles swapped?)", on(evals, pair_of(M, V))),
    Case("compare-bigram-scored-as-vanilla", "with the vanilla forward",
         on(evals, lambda w, t: [*pair_of(V, M)(w, t), "--bigram", str(w.bigram_as_vanilla)])),
    Case("compare-eval-split-not-training-split", "trained with seed 0", split_seed_eval_pair),
    Case("eval-split-seed-not-training-seed", "splits the documents otherwise than training",
         on(lambda w: [w.trained[V]], lambda w, t: evaluate(w.trained[V], t / "out", "--seed", "1"))),
    # 14. the bigram forward, which the store's hooks cannot reproduce
    Case("probe-a-bigram-checkpoint", "transformer-bigram checkpoint",
         on(lambda w: [w.trained["bigram"]], lambda w, t: probe(w.trained["bigram"], w.docs, t / "out"))),
    Case("extract-a-bigram-checkpoint", "transformer-bigram checkpoint",
         on(lambda w: [w.trained["bigram"]], lambda w, t: extract(w.trained["bigram"], w.docs, t / "out"))),
    # 15. a sample drawn from one document says so
    Case("sample-from-one-big-document", "--max-tokens sampled all come from one document", one_big_document),
    # 16. a named pipe is refused, not read forever
    Case("data-is-a-named-pipe", "not a regular file", named_pipe),
    # 17. online, but the hub does not answer: one line, at once
    Case("hub-unreachable-dataset", "could not be loaded", unreachable_hub),
]  # fmt: skip


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Turn a command that blocks into a failure instead of a hung suite."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"the command ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_refused_in_one_line_and_writes_nothing(
    case: Case, world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    attempt = case.build(world, tmp_path)
    before = {path: snapshot(path) for path in attempt.watch}
    if attempt.patch is not None:
        attempt.patch(monkeypatch)
    try:
        with time_limit(CASE_SECONDS):
            code, err = run_cli(attempt.args, capsys, attempt.entry)
    finally:
        monkeypatch.undo()  # before the inputs are hashed again
    assert_one_line_error(code, err, case.fragment)
    assert " no a " not in err and " no an " not in err
    assert {path: snapshot(path) for path in attempt.watch} == before


def test_the_table_tries_every_entry_point() -> None:
    assert len(CASES) >= 60 and len({case.name for case in CASES}) == len(CASES)
    assert {command for command in SEEDED} == {
        "probe",
        "extract",
        "train",
        "eval",
        "synthetic",
        "demo",
        "compare",
        "report",
    }


# ---------------------------------------------------------------------------------------------- the folder claim

STAGE_MARKERS = {"probe": RUN_MARKER, "eval": RUN_MARKER, "synthetic": RUN_MARKER, "compare": RUN_MARKER}
STAGE_MARKERS |= {stage: marker for marker, stage in MARKER_STAGES.items() if stage not in STAGE_MARKERS}


def claim(folder: Path, stage: str, identity: Any, **options: Any) -> bool:
    return claim_folder(folder, stage, identity, marker=STAGE_MARKERS[stage], **options)


@pytest.mark.parametrize("held", sorted(STAGE_MARKERS))
@pytest.mark.parametrize("claimed", sorted(STAGE_MARKERS))
def test_a_run_folder_is_replaced_only_by_a_run_of_its_stage(held: str, claimed: str, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    assert claim(folder, held, {"settings": 1}) is False
    (folder / "result.csv").write_text("a finished result\n")
    assert claim(folder, held, {"settings": 1}) is True  # the same run: resumed
    if held == claimed:
        with pytest.raises(UsageError, match="other settings"):
            claim(folder, claimed, {"settings": 2})
        assert (folder / "result.csv").exists()
        assert claim(folder, claimed, {"settings": 2}, overwrite=True) is False  # replaced
        assert not (folder / "result.csv").exists()
        return
    for overwrite in (False, True):
        with pytest.raises(UsageError, match="holds an? .*, not an? "):
            claim(folder, claimed, {"settings": 2}, overwrite=overwrite)
    assert (folder / "result.csv").read_text() == "a finished result\n"


@pytest.mark.parametrize("overwrite", [False, True])
def test_overwrite_never_removes_what_is_not_a_run(overwrite: bool, tmp_path: Path) -> None:
    folder = other_files(None, tmp_path)  # type: ignore[arg-type]
    before = snapshot(folder)
    for stage in STAGE_MARKERS:
        with pytest.raises(UsageError, match="is not empty and holds no"):
            claim(folder, stage, {"settings": 1}, overwrite=overwrite)
    assert snapshot(folder) == before


def test_older_markers_without_a_stage_still_resume(tmp_path: Path) -> None:
    folder = tmp_path / "probe"
    folder.mkdir()
    (folder / RUN_MARKER).write_text(json.dumps({"tau": [1, 2]}))  # run.json as probe runs wrote it before
    assert claim(folder, "probe", {"tau": (1, 2)}) is True
    with pytest.raises(UsageError, match="holds a probe run, not an eval run"):
        claim(folder, "eval", {"tau": [1, 2]}, overwrite=True)


# ---------------------------------------------------------------------------------------------- what is written


def test_a_trained_checkpoint_is_readable_like_every_output(world: World) -> None:
    umask = os.umask(0)
    os.umask(umask)
    for path in world.trained["vanilla"].rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
