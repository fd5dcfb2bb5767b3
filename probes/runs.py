"""The run-folder contract: what every stage writes and every consumer reads.

Constants shared by the stages and the analysis (the test fraction of the document split, the names of
the probes, baselines and controls), the training record of a checkpoint, the rule by which a stage
claims its output folder, and the reader of any finished run folder (`load_run`, `find_runs`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from probes.errors import UsageError
from probes.io import read_json
from probes.results import tidy

TEST_FRACTION = 0.2  # share of documents held out: the split shared by train, eval and the probe job
PROBES = ("softmax", "lstsq")
BASELINES = ("unigram", "skip_bigram")
CONTROL_KIND = "random-init"  # the `kind` of a randomly initialised copy of a model, probed as a control
CONTROL_KINDS = (CONTROL_KIND,)
TRAINING_FILE = "training.json"
PRETRAINED = "pretrained"  # the kind of a model this toolkit did not train
STAGES = ("probe", "eval", "synthetic")  # the stages whose finished folders `load_run` reads
RESULTS_FILE = "results.parquet"
PROVENANCE_FILE = "provenance.json"
PER_WINDOW_FILE = "per_window.parquet"  # an eval run's loss by position, one row per window
RUN_MARKER = "run.json"  # written when a probe run starts: its folder holds a run, finished or not


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


def claim_folder(folder: Path, marker: str, identity: Any, what: str, overwrite: bool) -> bool:
    """Make `folder` the home of the run named by `identity` (kept in `folder/marker`).

    Returns True when the folder already holds this very run (the caller resumes it). A folder holding
    another run, or other files, is refused with one line unless `overwrite`, which empties it first.
    Otherwise the folder is created and the marker written.
    """
    marker_path = folder / marker
    if marker_path.exists():
        try:
            existing = read_json(marker_path)
        except (OSError, ValueError):
            existing = None
        stored = existing.get("identity", existing) if isinstance(existing, dict) else existing
        if stored == identity:
            return True
        if not overwrite:
            raise UsageError(f"{folder} holds {what} of another run; use --overwrite or another --out")
        shutil.rmtree(folder)
    elif folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise UsageError(f"{folder} is not empty and holds no {what}; use --overwrite or another --out")
        shutil.rmtree(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create {folder}: {error.strerror}") from None
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
    return (folder / RESULTS_FILE).exists() or (folder / RUN_MARKER).exists()


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
