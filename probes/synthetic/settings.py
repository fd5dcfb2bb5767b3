"""What a synthetic-task run is: the presets, the command's config (its flags) and the resolved settings.

`SyntheticConfig` is what the user asked for (a knob left at None takes the preset's value); `resolve` fills the
preset in and checks everything, giving the `SyntheticSettings` that training, resuming and provenance use.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from simple_parsing import field

from probes.config import DEVICES, ProgressFlag, check_seed
from probes.errors import UsageError
from probes.synthetic.model import block_config
from probes.synthetic.task import TaskSpec

TRAIN_MODES = ("vanilla", "myopic", "strict-myopic")
COMPARE_MODES = ("vanilla", "myopic")
WEIGHT_DECAY = 0.01
WARMUP_FRACTION = 0.01


@dataclass(frozen=True)
class Preset:
    freq: float
    window: int
    p: float
    shift: int
    seq_len: int
    steps: int
    batch_size: int
    lr: float
    n_layer: int = 2
    d_model: int = 128
    n_head: int = 2
    eval_every: int = 500
    save_every: int = 500
    log_every: int = 10
    eval_sequences: int = 512  # held-out sequences for the test loss, and for each side of the probe split


PRESETS = {
    # The paper's recipe: 30M fresh sequences (a GPU job).
    "paper": Preset(
        freq=10.0, window=10, p=1.0, shift=1, seq_len=64, steps=58_593, batch_size=512, lr=1e-3,
        eval_every=2000, save_every=2000, log_every=50, eval_sequences=2048,
    ),
    # f = 3 is learnable in minutes on a CPU core (f = 10 needs hours there). Width 64, not 128: a random
    # 128-wide model already holds sin(3x) linearly (R² 0.97, so the sine probe cannot tell training apart),
    # a 64-wide one much less (0.51), while vanilla still learns the task and the sine (0.99). Four heads, not
    # two: at shift 0 (the control) the myopic model must gather the window with positional keys that only the
    # query side trains; two heads leave it at 0.41x its baseline after 1.28M sequences, four reach 0.246x after 1.54M.
    "cpu": Preset(
        freq=3.0, window=10, p=1.0, shift=1, seq_len=64, steps=6000, batch_size=32, lr=2e-3, d_model=64, n_head=4,
    ),
}  # fmt: skip
PRESET_FIELDS = tuple(preset_field.name for preset_field in dataclasses.fields(Preset))
POSITIVE = ("steps", "batch_size", "lr", "n_layer", "d_model", "n_head", "eval_sequences", "log_every")


def _knob_help(text: str, knob: str) -> str:
    """`text` followed by the knob's value in each preset, e.g. "hidden width (cpu 64, paper 128)"."""
    values = {name: getattr(preset, knob) for name, preset in PRESETS.items()}
    if len(set(values.values())) == 1:
        return f"{text} (every preset {next(iter(values.values())):g})"
    return f"{text} ({', '.join(f'{name} {value:g}' for name, value in sorted(values.items()))})"


def _knob(text: str, knob: str) -> Any:
    """A flag that overrides the preset's value of `knob` (None: the preset's)."""
    return field(default=None, help=_knob_help(text, knob))


@dataclass(kw_only=True)
class SyntheticConfig(ProgressFlag):
    """`probe-future synthetic`: what to train and probe; its fields are the command's flags."""

    out: str = field(required=True)
    """result folder (with --compare: also the models' folders)"""
    mode: str = field(default="vanilla", choices=TRAIN_MODES)
    """gradient mode, as `train --mode` (with --compare: vanilla and myopic)"""
    compare: bool = False
    """train vanilla and myopic, probe both and a control"""
    preset: str = field(default="cpu", choices=tuple(PRESETS))
    """the values of the knobs not given: cpu (minutes on a CPU) or paper (the paper's recipe, a GPU job)"""
    freq: float | None = _knob("f in sin(f·x)", "freq")
    window: int | None = _knob("W: sines summed per target", "window")
    p: float | None = _knob("P(z_n = 1)", "p")
    shift: int | None = _knob("first look-back in the sum, 0 for the control", "shift")
    seq_len: int | None = _knob("sequence length T", "seq_len")
    steps: int | None = _knob("optimizer steps", "steps")
    batch_size: int | None = _knob("fresh sequences per step", "batch_size")
    lr: float | None = _knob("peak learning rate", "lr")
    n_layer: int | None = _knob("GPT-2 blocks", "n_layer")
    d_model: int | None = _knob("hidden width", "d_model")
    n_head: int | None = _knob("attention heads", "n_head")
    eval_every: int | None = field(default=None, cmd=False)
    """steps between validation losses (Python API only; None: the preset's)"""
    save_every: int | None = field(default=None, cmd=False)
    """steps between checkpoints (Python API only; None: the preset's)"""
    log_every: int | None = field(default=None, cmd=False)
    """steps between metrics lines (Python API only; None: the preset's)"""
    eval_sequences: int | None = field(default=None, cmd=False)
    """held-out sequences for the test loss and each side of the probe split (Python API only)"""
    seed: int = 0
    """seed of the initial weights and of all data"""
    device: str = field(default="auto", choices=DEVICES)
    """where to train"""
    workers: int | None = field(default=None, cmd=False)
    """with compare: models trained side by side (None: 2 on a CPU with two cores or more, else 1)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_seed(self.seed)

    def knobs(self) -> dict[str, Any]:
        """The preset values this config overrides."""
        return {name: getattr(self, name) for name in PRESET_FIELDS if getattr(self, name) is not None}


@dataclass(frozen=True)
class SyntheticSettings:
    """A resolved synthetic run; everything but `save_every` is part of its identity."""

    mode: str
    preset: str
    freq: float
    window: int
    p: float
    shift: int
    seq_len: int
    steps: int
    batch_size: int
    lr: float
    warmup: int
    weight_decay: float
    n_layer: int
    d_model: int
    n_head: int
    eval_every: int
    save_every: int
    log_every: int
    eval_sequences: int
    seed: int
    device: str = "auto"

    @property
    def spec(self) -> TaskSpec:
        return TaskSpec(self.freq, self.window, self.p, self.shift, self.seq_len)

    def identity(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        fields.pop("save_every")
        fields.pop("device")
        return {"task": "synthetic", **fields}


def resolve(config: SyntheticConfig, mode: str | None = None) -> SyntheticSettings:
    """The settings of `config` for `mode` (default: config.mode); every problem is a one-line UsageError."""
    mode = config.mode if mode is None else mode
    if mode not in TRAIN_MODES:
        raise UsageError(f"unknown --mode {mode!r}; choose one of {', '.join(TRAIN_MODES)}")
    if config.preset not in PRESETS:
        raise UsageError(f"unknown --preset {config.preset!r}; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[config.preset]
    values = dataclasses.asdict(preset) | config.knobs()
    for name in POSITIVE:
        if not (math.isfinite(values[name]) and values[name] > 0):
            raise UsageError(f"--{name.replace('_', '-')} must be positive and finite, got {values[name]}")
    settings = SyntheticSettings(
        mode=mode,
        preset=config.preset,
        warmup=max(1, round(WARMUP_FRACTION * values["steps"])),
        weight_decay=WEIGHT_DECAY,
        seed=config.seed,
        device=config.device or "auto",
        **{name: type(getattr(preset, name))(value) for name, value in values.items()},
    )
    settings.spec.check()
    block_config(settings.seq_len, settings.n_layer, settings.d_model, settings.n_head)
    return settings
