"""The run-folder contract: what every stage writes and every consumer reads.

Constants shared by the stages and the analysis (the test fraction of the document split, the names of
the probes, baselines and controls), the training record of a checkpoint, the rule by which a stage
claims its output folder, and the reader of any finished run folder (`load_run`, `find_runs`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from probes.errors import UsageError
from probes.io import atomic_write_json, read_json
from probes.results import tidy

TEST_FRACTION = 0.2  # share of documents held out: the split shared by train, eval and the probe job
PROBES = ("softmax", "lstsq")
BASELINES = ("unigram", "skip_bigram")
CONTROL_KIND = "random-init"  # the `kind` of a randomly initialised copy of a model, probed as a control
CONTROL_KINDS = (CONTROL_KIND,)
TRAINING_FILE = "training.json"
PRETRAINED = "pretrained"  # the kind of a model this toolkit did not train
STAGES = ("probe", "eval", "synthetic", "gradient")  # the stages whose finished folders `load_run` reads
RESULTS_FILE = "results.parquet"
PROVENANCE_FILE = "provenance.json"
PER_WINDOW_FILE = "per_window.parquet"  # an eval run's loss by position, one row per window
RUN_MARKER = "run.json"  # written when a probe, eval, synthetic or compare run starts: the folder holds that run
STORE_MARKER = "manifest.json"  # an activation store's marker: its identity and progress
TRAINING_ARGS_FILE = "training_args.json"  # a training run's marker
DEMO_MARKER = "demo.json"  # a demo's marker
# The stage a marker names when it has no `stage` field (markers written before they carried one).
MARKER_STAGES = {RUN_MARKER: "probe", STORE_MARKER: "extract", TRAINING_ARGS_FILE: "train", DEMO_MARKER: "demo"}
STAGE_NOUNS = {
    "probe": "probe run",
    "extract": "activation store",
    "train": "training run",
    "eval": "eval run",
    "synthetic": "synthetic-task run",
    "compare": "comparison",
    "demo": "demo",
    "model": "model folder",
}


def training_record(model_spec: str | Path) -> dict[str, Any] | None:
    """training.json of a checkpoint this toolkit trained; None for any other model."""
    path = Path(model_spec).expanduser() / TRAINING_FILE
    if not path.is_file():
        return None
    try:
        record = read_json(path)
    except (OSError, ValueError):
        raise UsageError(f"{path} is not valid JSON") from None
    return record if isinstance(record, dict) else None


def model_kind(model_spec: str | Path) -> str:
    """vanilla / myopic / ... for checkpoints this toolkit trained; `pretrained` for anything else."""
    record = training_record(model_spec)
    if record is None:
        return PRETRAINED
    return str(record.get("mode", "trained"))


def _noun(stage: str) -> str:
    return STAGE_NOUNS.get(stage, f"{stage} run")


def _a(stage: str) -> str:
    noun = _noun(stage)
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def same_data(given: str, other: str) -> bool:
    """Two --data specs that name the same corpus (the same words, or paths to the same file or folder)."""
    if given == other:
        return True
    here, there = Path(given).expanduser(), Path(other).expanduser()
    return here.exists() and there.exists() and here.resolve() == there.resolve()


def input_paths(*specs: str | Path | None) -> list[Path]:
    """The specs that name local files or folders (a hub name or `bundled` names none)."""
    return [Path(spec).expanduser() for spec in specs if spec is not None and Path(spec).expanduser().exists()]


def check_apart(folder: Path, inputs: Sequence[Path], may_contain: bool = False) -> None:
    """Refuse an output folder that is an input, lies inside one, or (unless `may_contain`) holds one."""
    out = folder.expanduser().resolve()
    for given in inputs:
        source = given.expanduser().resolve()
        if out == source:
            raise UsageError(f"--out {folder} is an input of this run ({given}); choose another --out")
        if out.is_relative_to(source):
            raise UsageError(f"--out {folder} lies inside an input of this run ({given}); choose another --out")
        if not may_contain and source.is_relative_to(out):
            raise UsageError(f"--out {folder} holds an input of this run ({given}); choose another --out")


_UNREADABLE = object()  # the identity of a damaged marker: equal to none


def _read_marker(path: Path) -> tuple[str, Any]:
    """The stage and identity a marker records; a marker without a stage is an older one of its file's stage."""
    default = MARKER_STAGES.get(path.name, "probe")
    try:
        content = read_json(path)
    except (OSError, ValueError):
        return default, _UNREADABLE
    if isinstance(content, dict) and "stage" in content:
        return str(content["stage"]), content.get("identity")
    if isinstance(content, dict) and "identity" in content:
        return default, content["identity"]
    return default, content


def stage_held(folder: Path) -> str | None:
    """The stage whose run `folder` holds, judged by its markers (or a model folder's files); None if unknown."""
    for name in MARKER_STAGES:
        if (folder / name).is_file():
            return _read_marker(folder / name)[0]
    if (folder / TRAINING_FILE).is_file() or (folder / "config.json").is_file():
        return "model"
    provenance = folder / PROVENANCE_FILE
    if provenance.is_file():
        try:
            stage = read_json(provenance).get("stage")
        except (OSError, ValueError, AttributeError):
            stage = None
        return str(stage) if stage else None
    return None


def _differences(stored: Any, identity: Any) -> str:
    if not (isinstance(stored, dict) and isinstance(identity, dict)):
        return ""
    differs = sorted(key for key in set(stored) | set(identity) if stored.get(key) != identity.get(key))
    return f"; differs in: {', '.join(differs)}" if differs else ""


def claim_folder(
    folder: Path,
    stage: str,
    identity: Any,
    *,
    overwrite: bool = False,
    marker: str = RUN_MARKER,
    inputs: Sequence[Path] = (),
    shares_with: Sequence[str] = (),
    replaceable: bool = True,
    extra: dict[str, Any] | None = None,
    dry_run: bool = False,
) -> bool:
    """Make `folder` the home of the `stage` run named by `identity`, recorded in `folder/marker`.

    Returns True when the folder already holds this very run (the caller resumes it). A run of the same stage
    with other settings is replaced only with `overwrite` (and `replaceable`: the stage has the flag). Anything
    else is refused whatever `overwrite` says: a file, an input of the run (`inputs`), a folder holding another
    stage's run (unless listed in `shares_with`, stages whose folders this one writes into) or other files.
    A folder is created, and its marker written, only when every check has passed; `dry_run` only checks.
    """
    folder = folder.expanduser()
    identity = json.loads(json.dumps(identity, default=str))  # the form the marker stores (tuples as lists)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {folder} exists and is not a folder")
    check_apart(folder, inputs)
    marker_path = folder / marker
    only = f" (--overwrite replaces only {_a(stage)})" if replaceable else ""
    how = "use --overwrite to replace it, or another --out" if replaceable else "use another --out"
    if marker_path.is_file():
        held, stored = _read_marker(marker_path)
        if held == stage and stored == identity:
            return True
        if held != stage:
            raise UsageError(f"{folder} holds {_a(held)}, not {_a(stage)}; use another --out{only}")
        if not (overwrite and replaceable):
            raise UsageError(
                f"{folder} holds another run: {_a(stage)} made with other settings{_differences(stored, identity)}; "
                f"rerun with the same arguments to resume it, or {how}"
            )
        if dry_run:
            return False
        shutil.rmtree(folder)
    elif folder.exists() and any(folder.iterdir()):
        held = stage_held(folder)
        if held == stage and identity is not None:  # written before runs had markers: its settings are unknown
            if not (overwrite and replaceable):
                raise UsageError(f"{folder} holds {_a(stage)} of unknown settings (it has no {marker}); {how}")
            if not dry_run:
                shutil.rmtree(folder)
        elif held != stage and held not in shares_with:
            holds = f"holds {_a(held)}, not {_a(stage)}" if held else f"is not empty and holds no {_noun(stage)}"
            raise UsageError(f"{folder} {holds}; use another --out{only}")
    if dry_run:
        return False
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create --out {folder}: {error.strerror}") from None
    try:
        atomic_write_json(marker_path, {"stage": stage, "identity": identity} | (extra or {}))
    except OSError as error:
        raise UsageError(f"cannot write to --out {folder}: {error.strerror or type(error).__name__}") from None
    return False


# ------------------------------------------------------------------------------------- finished run folders


@dataclass
class Run:
    """One finished stage folder: its results table, provenance and (eval runs) per-window losses."""

    path: Path
    stage: str
    results: pd.DataFrame
    provenance: dict[str, Any]
    per_window: pd.DataFrame | None = None

    @property
    def kind(self) -> str:
        """The kind of the model studied (a probe run's random-init control does not count)."""
        kinds = [k for k in self.results["kind"].dropna().astype(str).unique() if k not in CONTROL_KINDS]
        if kinds:
            return kinds[0]
        training = self.training()
        return str(training.get("mode", "unknown")) if training else "unknown"

    @property
    def model(self) -> str:
        rows = self.results[self.results["kind"].astype(str) == self.kind]
        names = rows["model"].dropna().astype(str).unique() if len(rows) else []
        if len(names):
            return str(names[0])
        return str(self.provenance.get("model", {}).get("name", self.path.name))

    @property
    def args(self) -> dict[str, Any]:
        args = self.provenance.get("args", {})
        return args if isinstance(args, dict) else {}

    def setting(self, name: str) -> Any:
        """A run setting, as resolved by the stage (eval runs record defaults filled in from training.json)."""
        resolved = self.args.get("resolved")
        if isinstance(resolved, dict) and resolved.get(name) is not None:
            return resolved[name]
        return self.args.get(name)

    @property
    def data_hash(self) -> str | None:
        data = self.provenance.get("data", {})
        found = (data.get("data_hash") if isinstance(data, dict) else None) or self.args.get("data_hash")
        return str(found) if found else None

    @property
    def weights_hash(self) -> str | None:
        model = self.provenance.get("model", {})
        found = (model.get("weights_hash") if isinstance(model, dict) else None) or self.args.get("weights_hash")
        return str(found) if found else None

    def training(self) -> dict[str, Any]:
        """training.json of the model folder when the model is a local checkpoint this toolkit trained."""
        model = self.provenance.get("model", {})
        name = model.get("name") if isinstance(model, dict) else None
        name = name or self.args.get("model")
        if not name:
            return {}
        try:
            record = training_record(str(name))
        except UsageError:  # an unreadable training.json: the run is still shown, without its training
            return {}
        return record or {}


def _read_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as error:  # a truncated or foreign file
        raise UsageError(f"cannot read {path}: {type(error).__name__}") from None


def _stage_of(folder: Path, results: pd.DataFrame, provenance: dict[str, Any]) -> str:
    stage = provenance.get("stage")
    if stage in STAGES:
        return str(stage)
    if (folder / PER_WINDOW_FILE).exists():
        return "eval"
    if "lookback" in results.columns or (results["metric"] == "r2").any():
        return "synthetic"
    return "probe"


def load_run(folder: Path) -> Run:
    """Read one finished run folder; any missing or unreadable part is a one-line UsageError."""
    results_path, provenance_path = folder / RESULTS_FILE, folder / PROVENANCE_FILE
    if not results_path.exists():
        if (folder / RUN_MARKER).exists():
            raise UsageError(f"{folder} is an unfinished run (no {RESULTS_FILE} yet): rerun its command to finish it")
        raise UsageError(f"{folder} holds no run: no {RESULTS_FILE}")
    if not provenance_path.exists():
        raise UsageError(f"{folder} is half-written: {RESULTS_FILE} without {PROVENANCE_FILE}")
    try:
        provenance = read_json(provenance_path)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {provenance_path}: {type(error).__name__}") from None
    if not isinstance(provenance, dict):
        raise UsageError(f"cannot read {provenance_path}: not a JSON object")
    results = tidy(_read_table(results_path))
    if results.empty:
        raise UsageError(f"{results_path} has no rows")
    stage = _stage_of(folder, results, provenance)
    per_window = None
    if stage == "eval":
        if not (folder / PER_WINDOW_FILE).exists():
            raise UsageError(f"{folder} is an eval run without {PER_WINDOW_FILE}: rerun the evaluation")
        per_window = _read_table(folder / PER_WINDOW_FILE)
    return Run(folder, stage, results, provenance, per_window)


def _holds_run(folder: Path) -> bool:
    """A finished run, or a started one of a stage that `load_run` reads."""
    if (folder / RESULTS_FILE).exists():
        return True
    return (folder / RUN_MARKER).is_file() and _read_marker(folder / RUN_MARKER)[0] in STAGES


def find_runs(path: str | Path) -> list[Run]:
    """The run in `path`, or the runs in its direct subfolders."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise UsageError(f"{folder} does not exist")
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder")
    if _holds_run(folder):
        return [load_run(folder)]
    subfolders = sorted(sub for sub in folder.iterdir() if sub.is_dir() and _holds_run(sub))
    if not subfolders:
        raise UsageError(f"{folder} holds no run: no {RESULTS_FILE} in it or in its subfolders")
    return [load_run(sub) for sub in subfolders]
