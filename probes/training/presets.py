"""Architecture presets and model configs for `probe-future train`.

A preset names a model architecture and the training hyper-parameters that suit it; every hyper-parameter
flag given on the command line overrides the preset's value. `--config file.json` replaces the architecture
with any Hugging Face config (a JSON object with a "model_type", as in a model folder's config.json).

The from-scratch presets use no dropout (single-pass pre-training, and runs that match exactly across
process counts and resumes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from transformers import AutoConfig, GPT2Config, PretrainedConfig

from probes.errors import UsageError
from probes.models import max_positions

NO_DROPOUT = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}


@dataclass(frozen=True)
class Hyper:
    """Training hyper-parameters; `batch_size` is the global batch in sequences."""

    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.1
    seq_len: int = 64
    eval_every: int = 100
    save_every: int = 100


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    # GPT-2 config fields; n_positions None means "the window length".
    gpt2: dict[str, Any]
    hyper: Hyper = field(default_factory=Hyper)
    tokenizer: str = "gpt2"

    def model_config(self, vocab_size: int, seq_len: int, end_token_id: int | None) -> PretrainedConfig:
        fields = {**self.gpt2}
        if fields["n_positions"] is None:
            fields["n_positions"] = seq_len
        ends = {"bos_token_id": end_token_id, "eos_token_id": end_token_id}
        return GPT2Config(vocab_size=vocab_size, **NO_DROPOUT, **ends, **fields)


_GPT2_124M = {"n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024}

PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            "tiny",
            "GPT-2 architecture, 2 layers, d 64, 2 heads: tests and quick CPU runs",
            {"n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": None},
            Hyper(steps=300, batch_size=16, lr=3e-3, warmup=30, eval_every=50, save_every=50),
        ),
        Preset(
            "small",
            "GPT-2 architecture, 4 layers, d 256, 4 heads: a CPU demo",
            {"n_layer": 4, "n_embd": 256, "n_head": 4, "n_positions": None},
            Hyper(steps=2000, batch_size=32, lr=1e-3, warmup=100, eval_every=200, save_every=200),
        ),
        Preset(
            "gpt2",
            "the GPT-2 124M config (12 layers, d 768, 12 heads, 1024 positions)",
            _GPT2_124M,
            Hyper(steps=2000, batch_size=64, lr=6e-4, warmup=200, eval_every=200, save_every=200),
        ),
        Preset(
            "gpt2-paper",
            "GPT-2 124M with the paper's recipe: 64-token windows, batch 512, AdamW lr 6e-4, "
            "1,000 warm-up steps, cosine decay, 9,100 steps",
            _GPT2_124M,
            Hyper(steps=9100, batch_size=512, lr=6e-4, warmup=1000, eval_every=500, save_every=500),
        ),
    )
}

# Hyper-parameters for --config (no preset) and for fine-tuning a pretrained model (--init MODEL).
CONFIG_HYPER = Hyper()
FINETUNE_HYPER = Hyper(steps=1000, batch_size=32, lr=1e-4, warmup=100, weight_decay=0.1)


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UsageError(f"unknown --arch {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The JSON object of a `--config` file; every problem is a one-line error."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UsageError(f"config file {path} is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise UsageError(f"config file {path} is not valid JSON: {error.msg} (line {error.lineno})") from None
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must hold a JSON object")
    if not isinstance(data.get("model_type"), str):
        raise UsageError(f'config file {path} has no "model_type" (e.g. "gpt2", "llama", "gpt_neox")')
    return data


def config_from_dict(data: dict[str, Any], vocab_size: int, seq_len: int, end_token_id: int | None) -> PretrainedConfig:
    """A model config from a `--config` object; the vocabulary and end-of-text token follow the tokenizer."""
    ignored = ("model_type", "vocab_size", "bos_token_id", "eos_token_id")
    fields = {key: value for key, value in data.items() if key not in ignored}
    fields |= {"bos_token_id": end_token_id, "eos_token_id": end_token_id}
    model_type = data["model_type"]
    try:
        config = AutoConfig.for_model(model_type, vocab_size=vocab_size, **fields)
    except (ValueError, TypeError, KeyError) as error:
        message = str(error).split(". ")[0].splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"cannot build a {model_type!r} model config: {message}") from None
    positions = max_positions(config)
    if positions is not None and positions < seq_len:
        raise UsageError(f"the config allows {positions} positions, fewer than --seq-len {seq_len}")
    return config


def with_overrides(hyper: Hyper, **overrides: Any) -> Hyper:
    """`hyper` with every non-None override applied (flags the user gave)."""
    return replace(hyper, **{key: value for key, value in overrides.items() if value is not None})
