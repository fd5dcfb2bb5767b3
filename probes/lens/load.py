"""The models the lens measures: a language model (hub name, local folder, `smollm2-135m`, a hub revision such as
Pythia's `step1000`), or a synthetic-task model folder written by `probe-future synthetic`.

Every problem (a model or revision that cannot be had offline, an architecture the gradient modes do not
support, a model with fewer positions than the window) is one UsageError line, raised before any work.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from probes.errors import UsageError
from probes.io import read_json
from probes.models import PlainModel, load_plain_model, looks_like_path, resolve_device, weights_hash
from probes.runs import training_record
from probes.training.myopic import gradient_mode

STEP = re.compile(r"^step(\d+)$")


@dataclass
class Subject:
    """One measured model: the network, how to name it, and (language models) its tokenizer."""

    name: str  # the --model spec
    revision: str | None
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase | None  # None for a synthetic-task model
    device: torch.device
    weights_hash: str
    kind: str  # vanilla / myopic / ... for checkpoints trained here, else pretrained
    task: str  # "language" or "synthetic"
    architecture: str

    @property
    def train_step(self) -> int | None:
        """The training step a `step…` revision names (Pythia's checkpoints), else the local training's steps."""
        match = STEP.match(self.revision or "")
        return int(match.group(1)) if match else None


def is_synthetic_folder(spec: str) -> bool:
    from probes.synthetic.model import MODEL_TYPE

    config = Path(spec).expanduser() / "config.json"
    if not config.is_file():
        return False
    try:
        return read_json(config).get("model_type") == MODEL_TYPE
    except (OSError, ValueError, AttributeError):
        return False


def check_supported(model: nn.Module) -> None:
    """Refuse, in one line, an architecture the myopic gradient modes cannot handle."""
    for mode in ("myopic", "strict-myopic"):
        with gradient_mode(model, mode):
            pass


def check_revisions(spec: str, revisions: list[str]) -> None:
    """Every revision of a hub model must be in the local cache, or the hub reachable and serving it."""
    if not revisions:
        return
    if is_synthetic_folder(spec) or Path(spec).expanduser().exists() or looks_like_path(spec):
        raise UsageError(f"--revision names checkpoints of a hub model; {spec} is a local folder")
    from transformers import AutoConfig

    from probes.models import _hub_reachable

    for revision in revisions:
        try:
            AutoConfig.from_pretrained(spec, revision=revision, local_files_only=True)
            continue
        except (OSError, ValueError):
            pass
        if not _hub_reachable():
            raise UsageError(
                f"revision {revision!r} of {spec!r} is not in the local Hugging Face cache and the hub is "
                "unreachable; download it once with hub access"
            )
        try:
            AutoConfig.from_pretrained(spec, revision=revision)
        except (OSError, ValueError) as error:
            raise UsageError(f"cannot load revision {revision!r} of {spec!r}: {str(error).splitlines()[0]}") from None


def _hub_revision(spec: str, revision: str, device: str) -> PlainModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from probes.models import load_tokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = AutoModelForCausalLM.from_pretrained(spec, revision=revision, dtype=torch.float32)
        except Exception as error:  # corrupt or missing files surface as several exception types
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UsageError(f"cannot load revision {revision!r} of {spec!r}: {first}") from None
        try:
            tokenizer = AutoTokenizer.from_pretrained(spec, revision=revision)
        except (OSError, ValueError, KeyError, TypeError):
            tokenizer = load_tokenizer(spec, int(model.config.vocab_size))
    target = resolve_device(device)
    return PlainModel(spec, spec, model.eval().to(target), tokenizer, target, weights_hash(model))


def load_subject(spec: str, revision: str | None, device: str, seq_len: int | None) -> Subject:
    """Load one model to measure and check that the lens can measure it."""
    if is_synthetic_folder(spec):
        from probes.synthetic.model import load_model_folder

        target = resolve_device(device)
        network = load_model_folder(spec, target)
        record = training_record(spec) or {}
        return Subject(
            spec, None, network, None, target, weights_hash(network), str(record.get("mode", "unknown")),
            "synthetic", type(network).__name__,
        )  # fmt: skip
    plain = _hub_revision(spec, revision, device) if revision else load_plain_model(spec, device)
    network = plain.hf_model
    check_supported(network)
    config = network.config
    positions = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    if seq_len is not None and isinstance(positions, int) and positions < seq_len:
        raise UsageError(f"{spec} has {positions} positions, fewer than --seq-len {seq_len}")
    record = training_record(spec) if not revision else None
    kind = str(record.get("mode", "trained")) if record else "pretrained"
    return Subject(
        spec, revision, network, plain.tokenizer, plain.device, plain.weights_hash, kind, "language",
        type(network).__name__,
    )  # fmt: skip


def synthetic_task(spec: str) -> tuple[object, int, int]:
    """(TaskSpec, seq_len, seed) of a synthetic-task model folder, from its training.json."""
    from probes.synthetic.task import TaskSpec

    record = training_record(spec)
    if not record:
        raise UsageError(f"{spec} has no training.json: the task it was trained on is unknown")
    try:
        task = TaskSpec(
            float(record["freq"]), int(record["window"]), float(record["p"]), int(record["shift"]),
            int(record["seq_len"]),
        )  # fmt: skip
        return task, int(record["seq_len"]), int(record.get("seed", 0))
    except (KeyError, TypeError, ValueError):
        raise UsageError(f"{spec}/training.json does not describe a synthetic task") from None
