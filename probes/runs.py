"""The run-folder contract: what every stage writes and every consumer reads.

Constants shared by the stages and the analysis (the test fraction of the document split, the names of
the probes, baselines and controls), the training record of a checkpoint, and the rule by which a stage
claims its output folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from probes.errors import UsageError
from probes.io import read_json

TEST_FRACTION = 0.2  # share of documents held out: the split shared by train, eval and the probe job
PROBES = ("softmax", "lstsq")
BASELINES = ("unigram", "skip_bigram")
CONTROL_KIND = "random-init"  # the `kind` of a randomly initialised copy of a model, probed as a control
CONTROL_KINDS = (CONTROL_KIND,)
TRAINING_FILE = "training.json"
PRETRAINED = "pretrained"  # the kind of a model this toolkit did not train


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
