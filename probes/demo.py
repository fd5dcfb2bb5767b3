"""`probe-future demo`: the whole study on the embedded offline default, end to end, resumable.

    probe-future demo                  # the full demo (about 7 minutes on 2 CPU cores)
    probe-future demo --scale toy      # the same pipeline at toy size (about a minute; what the tests run)

Steps (each writes its own folder under --out and is skipped when a previous run already finished it):

1. `synthetic/`: the synthetic pre-caching task, a vanilla and a myopic model and their ridge probes
   (`probes.synthetic.run_synthetic_compare`, the `cpu` preset);
2. `models/{vanilla,myopic,bigram}/`: three small GPT-2-architecture models trained on the bundled corpus with
   a byte-level BPE fitted on the training documents (`probe-future train`);
3. `{vanilla,myopic,bigram}/eval/`: held-out loss by position (`probe-future eval`);
4. `{vanilla,myopic}/probe/`: future-token probes at tau = 1..5 (`probe-future probe`), with a random-init control;
5. `{vanilla,myopic}/gradients/` and `gradients/synthetic-{vanilla,myopic}/`: the gradient lens on the trained
   models and on the synthetic pair (`probe-future gradients`);
6. `comparison.csv` and `report.html`: the myopia gap, the pre-caching share and the probe deltas with
   bootstrap intervals, and the HTML report, synthetic task included (`probe-future compare`).

Each step builds its stage's config (the same object the stage's flags make) and runs the stage; the comparison
is reached through the subcommand table (`probes.cli.load_command`), as `probes` never imports `analysis`.
Independent steps run side by side in single-thread worker processes (on few cores that is faster than one
process with several threads). An interrupted demo continues where it stopped when rerun.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import simple_parsing

from probes.config import Command, check_seed
from probes.errors import UsageError
from probes.runs import DEMO_MARKER, claim_folder

DEFAULT_OUT = Path("reports") / "demo"
NL_MODES = ("vanilla", "myopic", "bigram")
PROBED_MODES = ("vanilla", "myopic")
PROBE_TAUS = (1, 2, 3, 4, 5)
REPORT_MARK = ".report-done"
# The gradient lens per model: token budget and windows per batch (other scales: 16,384 tokens, batches of 16).
LENS_TOKENS = {"full": 32_768, "toy": 2_048}
LENS_BATCH = {"full": 32, "toy": 8}
SYNTHETIC_MARK = ".demo-done"


@dataclass(frozen=True)
class Scale:
    """Sizes of one demo scale; everything else is fixed by the pipeline."""

    name: str
    model: dict[str, Any]  # GPT-2 config fields (written to models/config.json for `train --config`)
    tokenizer: str
    steps: int
    batch_size: int
    lr: float
    warmup: int
    train_tokens: int | None  # cap on the training tokens (None: every training document)
    eval_tokens: int | None  # token budget of the windows the evaluation draws its held-out part from
    probe_tokens: int  # token budget of the probe job (train and test documents together)
    n_boot: int
    control: bool  # also probe a random-init copy of the vanilla model
    synthetic: dict[str, Any] = field(default_factory=dict)  # SyntheticConfig fields on top of the cpu preset
    data: str = "bundled"


GPT2_SMALL_CPU = {"model_type": "gpt2", "n_layer": 2, "n_embd": 128, "n_head": 4, "n_positions": 64}
# No dropout, and GPT-2's tanh-approximated GELU as one fused kernel (GPT-2's own "gelu_new" is the same function
# in five passes: an eighth of a training step of this model on a CPU).
CPU_BLOCKS = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "activation_function": "gelu_pytorch_tanh"}

SCALES: dict[str, Scale] = {
    "full": Scale(
        name="full",
        model=GPT2_SMALL_CPU | CPU_BLOCKS,
        tokenizer="bpe:2048",
        steps=800,
        batch_size=32,
        lr=3e-3,
        warmup=50,
        train_tokens=None,
        eval_tokens=None,
        probe_tokens=60_000,
        n_boot=1000,
        control=True,
        # Half the cpu preset's 6,000 steps: vanilla reaches 0.09x the baseline's loss, myopic stays at it. Not
        # fewer: a myopic model's loss dips below the baseline early in training and climbs back (at 2,000 steps it
        # ends at 0.66x). Nor fewer language-model steps: at 600 the pre-caching share is 0.44, not 0.34.
        synthetic={"steps": 3000},
    ),
    "toy": Scale(
        name="toy",
        model={"model_type": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64} | CPU_BLOCKS,
        tokenizer="bpe:300",
        steps=8,
        batch_size=8,
        lr=3e-3,
        warmup=2,
        train_tokens=20_000,
        eval_tokens=20_000,
        probe_tokens=8_000,
        n_boot=200,
        control=True,
        synthetic={"steps": 6, "batch_size": 8, "d_model": 16, "eval_sequences": 64, "workers": 1},
    ),
}


# ---------------------------------------------------------------------------------------------- folders


@dataclass(frozen=True)
class Layout:
    """Where every step of the demo writes."""

    out: Path

    @property
    def synthetic(self) -> Path:
        return self.out / "synthetic"

    @property
    def model_config(self) -> Path:
        return self.out / "models" / "config.json"

    def model(self, mode: str) -> Path:
        return self.out / "models" / mode

    def eval(self, mode: str) -> Path:
        return self.out / mode / "eval"

    def probe(self, mode: str) -> Path:
        return self.out / mode / "probe"

    def subject(self, mode: str) -> Path:
        return self.out / mode

    def gradients(self, mode: str) -> Path:
        return self.out / mode / "gradients"

    @property
    def synthetic_gradients(self) -> Path:
        return self.out / "gradients"

    @property
    def report(self) -> Path:
        return self.out / "report.html"


def _finished(folder: Path, *names: str) -> bool:
    return all((folder / name).is_file() for name in names)


def synthetic_finished(layout: Layout) -> bool:
    return (layout.synthetic / SYNTHETIC_MARK).is_file()


# ---------------------------------------------------------------------------------------------- steps
# Each step is a top-level function of picklable arguments: it runs in a worker process. It returns the
# seconds it spent (0 when it found its work already done).


def _quiet_worker(threads: int) -> None:
    """Worker start-up: a thread budget, and no per-step progress bars (the demo prints its own lines)."""
    os.environ["TQDM_DISABLE"] = "1"  # before tqdm is imported: the stages' own bars would interleave
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging
    import warnings

    import torch

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _synthetic_config(layout: Layout, scale: Scale, seed: int) -> Any:
    from probes.synthetic import SyntheticConfig

    knobs = {"workers": 1} | scale.synthetic  # this worker is one of the demo's parallel slots
    return SyntheticConfig(out=str(layout.synthetic), compare=True, preset="cpu", seed=seed, progress=False, **knobs)


def step_synthetic_model(layout: Layout, scale: Scale, seed: int, mode: str) -> float:
    """One model of the synthetic pair: the two train in two workers at once (the demo's longest chain)."""
    if synthetic_finished(layout) or _finished(layout.synthetic / mode, "training.json"):
        return 0.0
    from probes.synthetic.run import train_compare_model

    started = time.perf_counter()
    train_compare_model(_synthetic_config(layout, scale, seed), mode)
    return time.perf_counter() - started


def step_synthetic(layout: Layout, scale: Scale, seed: int) -> float:
    """The synthetic comparison (probes, losses, the untrained control) once both models are trained."""
    if synthetic_finished(layout):
        return 0.0
    from probes.synthetic import run_synthetic_compare

    started = time.perf_counter()
    run_synthetic_compare(_synthetic_config(layout, scale, seed))
    (layout.synthetic / SYNTHETIC_MARK).write_text("finished\n", encoding="utf-8")
    return time.perf_counter() - started


def step_train(layout: Layout, scale: Scale, seed: int, mode: str) -> float:
    if _finished(layout.model(mode), "training.json"):
        return 0.0
    from probes.training.lm import TrainConfig, train

    started = time.perf_counter()
    config = TrainConfig(
        out=str(layout.model(mode)),
        mode=mode,
        config=str(layout.model_config),
        tokenizer=scale.tokenizer,
        data=scale.data,
        max_tokens=scale.train_tokens,
        steps=scale.steps,
        batch_size=scale.batch_size,
        lr=scale.lr,
        warmup=scale.warmup,
        eval_every=0,
        save_every=max(1, scale.steps // 4),
        log_every=10,
        seed=seed,
        device="cpu",
        progress=False,
    )
    train(config)
    return time.perf_counter() - started


def step_eval(layout: Layout, scale: Scale, seed: int, mode: str) -> float:
    if _finished(layout.eval(mode), "results.parquet", "per_window.parquet", "provenance.json"):
        return 0.0
    from probes.evaluate import EvalConfig, evaluate

    started = time.perf_counter()
    config = EvalConfig(
        model=str(layout.model(mode)),
        out=str(layout.eval(mode)),
        max_tokens=scale.eval_tokens,
        batch_size=32,
        n_boot=scale.n_boot,
        device="cpu",
        progress=False,
    )
    evaluate(config)
    return time.perf_counter() - started


def step_probe(layout: Layout, scale: Scale, seed: int, mode: str) -> float:
    if _finished(layout.probe(mode), "results.parquet", "provenance.json"):
        return 0.0
    from probes.probing.run import ProbeConfig, run_probes

    started = time.perf_counter()
    config = ProbeConfig(
        model=str(layout.model(mode)),
        out=str(layout.probe(mode)),
        data=scale.data,
        tau=PROBE_TAUS,
        control="random" if scale.control and mode == "vanilla" else None,
        max_tokens=scale.probe_tokens,
        n_boot=scale.n_boot,
        seed=seed,
        device="cpu",
        batch_size=32,
        progress=False,
    )
    run_probes(config)
    return time.perf_counter() - started


def _lens(model: Path, out: Path, scale: Scale, seed: int) -> None:
    from probes.lens.run import GradientsConfig, run_gradients

    config = GradientsConfig(
        model=str(model),
        out=str(out),
        data=scale.data,
        max_tokens=LENS_TOKENS.get(scale.name, 16_384),
        batch_size=LENS_BATCH.get(scale.name, 16),
        n_boot=scale.n_boot,
        seed=seed,
        device="cpu",
        progress=False,
    )
    run_gradients(config)


def step_gradients(layout: Layout, scale: Scale, seed: int) -> float:
    """The gradient lens on the trained vanilla and myopic models (one step: they share the tokenised windows)."""
    todo = [mode for mode in PROBED_MODES if not _finished(layout.gradients(mode), "results.parquet")]
    if not todo:
        return 0.0
    started = time.perf_counter()
    for mode in todo:
        _lens(layout.model(mode), layout.gradients(mode), scale, seed)
    return time.perf_counter() - started


def step_gradients_synthetic(layout: Layout, scale: Scale, seed: int) -> float:
    """The gradient lens on the synthetic pair, where pre-caching is required."""
    todo = [m for m in PROBED_MODES if not _finished(layout.synthetic_gradients / f"synthetic-{m}", "results.parquet")]
    if not todo:
        return 0.0
    started = time.perf_counter()
    for mode in todo:
        _lens(layout.synthetic / mode, layout.synthetic_gradients / f"synthetic-{mode}", scale, seed)
    return time.perf_counter() - started


def _inputs_stamp(layout: Layout) -> str:
    """What the report was made from: every input results file with its modification time."""
    files = sorted(layout.out.glob("*/*/results.parquet")) + sorted(layout.synthetic.glob("results.parquet"))
    return json.dumps([[str(path.relative_to(layout.out)), path.stat().st_mtime_ns] for path in files])


def step_report(layout: Layout, scale: Scale, seed: int) -> float:
    """The comparison (comparison.csv, provenance.json) and the report, with the synthetic task beside it."""
    mark, stamp = layout.out / REPORT_MARK, _inputs_stamp(layout)
    if mark.is_file() and layout.report.is_file() and mark.read_text(encoding="utf-8") == stamp:
        return 0.0
    from probes.cli import load_command

    started = time.perf_counter()
    command = load_command("compare")
    config = command.config(
        vanilla=str(layout.subject("vanilla")),
        myopic=str(layout.subject("myopic")),
        bigram=str(layout.subject("bigram")),
        synthetic=str(layout.synthetic) if synthetic_finished(layout) else None,
        gradients=str(layout.synthetic_gradients) if layout.synthetic_gradients.is_dir() else None,
        out=str(layout.out),
        n_boot=scale.n_boot,
        seed=seed,
    )
    command.run(config)
    mark.write_text(stamp, encoding="utf-8")
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------- scheduling


@dataclass(frozen=True)
class Step:
    name: str
    function: Callable[..., float]
    args: tuple[Any, ...] = ()
    after: tuple[str, ...] = ()


# Seconds a step takes on 2 CPU cores at the full scale. The synthetic pair's and the smaller steps' values are
# kept from the previous configuration (this one's two runs in benchmarks/results/demo.txt: synthetic myopic
# 130-150 s, vanilla 96-116 s, evaluations 10-14 s); a training as in those runs (105-126 s); the probes from a
# 60,000-token run on their own (79 and 44 s). Only their order matters, for the rule that starts, among the steps
# that are ready, the one with the longest chain of work still behind it.
STEP_COST = {"synthetic myopic": 129, "synthetic vanilla": 115, "synthetic": 3, "train": 115, "probe vanilla": 79}
STEP_COST |= {"probe myopic": 44, "eval": 13, "gradients": 14, "gradients synthetic": 4, "report": 8}


def _cost(name: str) -> float:
    return STEP_COST.get(name, STEP_COST.get(name.split()[0], 10.0))


def chain_lengths(steps: list[Step]) -> dict[str, float]:
    """Per step: its cost plus the longest chain of steps that wait for it (its critical-path length)."""
    waiting: dict[str, list[str]] = {step.name: [] for step in steps}
    for step in steps:
        for name in step.after:
            waiting[name].append(step.name)
    lengths: dict[str, float] = {}

    def length(name: str) -> float:
        if name not in lengths:
            lengths[name] = _cost(name) + max((length(after) for after in waiting[name]), default=0.0)
        return lengths[name]

    return {step.name: length(step.name) for step in steps}


def plan(include_synthetic: bool = True) -> list[Step]:
    """Every step with what it waits for (run_steps starts the ready step with the longest chain first)."""
    steps: list[Step] = []
    if include_synthetic:
        models = tuple(f"synthetic {mode}" for mode in ("myopic", "vanilla"))
        steps += [Step(name, step_synthetic_model, (name.split()[1],)) for name in models]
        steps.append(Step("synthetic", step_synthetic, (), models))
    steps += [Step(f"train {mode}", step_train, (mode,)) for mode in ("myopic", "vanilla", "bigram")]
    steps += [Step(f"probe {mode}", step_probe, (mode,), (f"train {mode}",)) for mode in PROBED_MODES]
    steps += [Step(f"eval {mode}", step_eval, (mode,), (f"train {mode}",)) for mode in NL_MODES]
    steps.append(Step("gradients", step_gradients, (), tuple(f"train {mode}" for mode in PROBED_MODES)))
    if include_synthetic:
        trained = tuple(f"synthetic {mode}" for mode in ("myopic", "vanilla"))
        steps.append(Step("gradients synthetic", step_gradients_synthetic, (), trained))
    done_before_report = tuple(step.name for step in steps)
    return [*steps, Step("report", step_report, (), done_before_report)]


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def run_steps(steps: list[Step], layout: Layout, scale: Scale, seed: int, workers: int) -> dict[str, float]:
    """Run `steps` respecting `after`, up to `workers` at a time; returns each step's seconds."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    priority = chain_lengths(steps)
    pending = sorted(steps, key=lambda step: -priority[step.name])  # stable: plan order breaks ties
    running: dict[Future[float], Step] = {}
    context = get_context("spawn")  # a clean interpreter per worker: no forked torch thread pools
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_quiet_worker, initargs=(threads,)) as pool:
        while pending or running:
            ready = [s for s in pending if all(name in seconds for name in s.after)]
            for step in ready[: workers - len(running)]:  # submitted only when a worker is free
                pending.remove(step)
                _say(started, f"start {step.name}")
                running[pool.submit(step.function, layout, scale, seed, *step.args)] = step
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                step = running.pop(future)
                if future.exception() is not None:
                    if running:
                        _say(started, f"{step.name} failed; letting the running steps finish (their work is kept)")
                    raise future.exception()  # type: ignore[misc]
                seconds[step.name] = future.result()
                verb = "skipped (already done)" if seconds[step.name] == 0 else f"done in {seconds[step.name]:.0f} s"
                _say(started, f"{step.name}: {verb}")
    return seconds


def _say(started: float, text: str) -> None:
    print(f"[{time.perf_counter() - started:6.0f} s] {text}", flush=True)


# ---------------------------------------------------------------------------------------------- the demo


def _settings(scale: Scale, seed: int) -> dict[str, Any]:
    """What a demo folder is made with: another scale or seed needs another folder."""
    return {"scale": asdict(scale), "seed": seed}


def prepare(layout: Layout, scale: Scale, seed: int) -> None:
    """Claim --out (a folder of another scale or seed is refused), write the model config."""
    claim_folder(layout.out, "demo", _settings(scale, seed), marker=DEMO_MARKER, replaceable=False)
    try:
        layout.model_config.parent.mkdir(parents=True, exist_ok=True)
        layout.model_config.write_text(json.dumps(scale.model, indent=1) + "\n", encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot write to --out {layout.out}: {error.strerror}") from None


def run_demo(
    out: str | Path, scale: str | Scale = "full", seed: int = 0, workers: int | None = None, synthetic: bool = True
) -> Path:
    """Run (or continue) the demo into `out`; returns the report's path. `scale`: a name of SCALES, or a Scale."""
    if isinstance(scale, str) and scale not in SCALES:
        raise UsageError(f"unknown --scale {scale!r}; choose one of {', '.join(SCALES)}")
    if workers is not None and workers < 1:
        raise UsageError("--workers must be at least 1")
    check_seed(seed)
    chosen = SCALES[scale] if isinstance(scale, str) else scale
    layout = Layout(Path(out).expanduser())
    claim_folder(layout.out, "demo", _settings(chosen, seed), marker=DEMO_MARKER, replaceable=False, dry_run=True)
    _check_corpus(chosen.data)
    prepare(layout, chosen, seed)
    started = time.perf_counter()
    seconds = run_steps(plan(synthetic), layout, chosen, seed, workers or default_workers())
    write_timings(layout.out / "timings.json", time.perf_counter() - started, seconds)
    return layout.report


def write_timings(path: Path, wall: float, seconds: dict[str, float]) -> None:
    """This run's wall-clock and step seconds (0 = skipped), and each step's seconds from the run that did it."""
    previous = json.loads(path.read_text(encoding="utf-8")).get("when_run", {}) if path.is_file() else {}
    when_run = previous | {name: round(value, 1) for name, value in seconds.items() if value > 0}
    timings = {"wall_seconds": round(wall, 1), "steps": seconds, "when_run": when_run}
    path.write_text(json.dumps(timings, indent=1) + "\n", encoding="utf-8")


def _check_corpus(data: str) -> None:
    if data != "bundled":
        return
    from probes.corpus.bundled import ensure_bundled

    ensure_bundled()


def headline(out: Path) -> str:
    """The verdict line of the comparison, as the report states it."""
    provenance = Path(out) / "provenance.json"
    if not provenance.is_file():
        return ""
    verdict = json.loads(provenance.read_text(encoding="utf-8")).get("verdict", {})
    return f"verdict: {verdict.get('label', '?')}: {verdict.get('reason', '')}"


@dataclass(kw_only=True)
class DemoConfig:
    """`probe-future demo`: where and at which size to run the whole study; its fields are the command's flags."""

    out: str = str(DEFAULT_OUT)
    """where the demo writes"""
    scale: str = simple_parsing.field(default="full", choices=tuple(SCALES))
    """full, or toy (the same pipeline in about a minute)"""
    fast: bool = False
    """same as --scale toy"""
    seed: int = 0
    """seed of the models, the split and the bootstraps"""
    workers: int | None = None
    """steps run side by side (default: CPU cores, at most 4)"""
    synthetic: bool = simple_parsing.flag(default=True, negative_option="--no-synthetic")
    """run the synthetic task (--no-synthetic skips it)"""

    def __post_init__(self) -> None:
        check_seed(self.seed)


def run_demo_command(config: DemoConfig) -> int:
    scale = "toy" if config.fast else config.scale
    report = run_demo(Path(config.out), scale, config.seed, config.workers, synthetic=config.synthetic)
    line = headline(report.parent)
    if line:
        print(line)
    print(f"report: {report.resolve()}")
    return 0


COMMAND = Command(DemoConfig, run_demo_command, help="run the whole study on the embedded offline default")
