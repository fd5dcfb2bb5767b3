"""The synthetic-task model: Linear(2 → d), GPT-2 blocks fed through `inputs_embeds`, Linear(d → 1).

A model folder holds `config.json` (the GPT-2 block config plus this wrapper's shape) and `model.safetensors`;
loading reads only those two files and never unpickles anything.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import Tensor, nn
from transformers import GPT2Config, GPT2Model

from probes.errors import UsageError
from probes.io import atomic_write, atomic_write_json, read_json

MODEL_TYPE = "synthetic-precache"
N_INPUTS = 2
HUBER_DELTA = 1.0


def block_config(seq_len: int, n_layer: int, d_model: int, n_head: int) -> GPT2Config:
    """GPT-2 blocks with a ReLU MLP, learned positions and no dropout (the token embedding is unused)."""
    if d_model % n_head:
        raise UsageError(f"--d-model {d_model} is not divisible by --n-head {n_head}")
    return GPT2Config(
        vocab_size=1,
        n_positions=seq_len,
        n_embd=d_model,
        n_layer=n_layer,
        n_head=n_head,
        activation_function="relu",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,
        eos_token_id=None,
    )


class SyntheticModel(nn.Module):
    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.config = config
        self.inp = nn.Linear(N_INPUTS, config.n_embd)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.body = GPT2Model(config)
        self.out = nn.Linear(config.n_embd, 1)

    def forward(self, inputs: Tensor) -> Tensor:
        """(B, T, 2) inputs → (B, T) predictions."""
        hidden = self.body(inputs_embeds=self.inp(inputs)).last_hidden_state
        return self.out(hidden).squeeze(-1)

    @torch.no_grad()
    def hidden_states(self, inputs: Tensor) -> tuple[Tensor, ...]:
        """(B, T, d) per layer: 0 = embeddings (input projection + positions), l = output of block l.

        As in Hugging Face models, the last entry has the final layer norm applied.
        """
        return self.body(inputs_embeds=self.inp(inputs), output_hidden_states=True).hidden_states


def fresh_model(config: GPT2Config, seed: int) -> SyntheticModel:
    torch.manual_seed(seed)
    return SyntheticModel(config)


def huber(predictions: Tensor, targets: Tensor) -> Tensor:
    """Per-position Huber loss (δ = 1)."""
    return F.huber_loss(predictions, targets, delta=HUBER_DELTA, reduction="none")


def save_model_folder(model: SyntheticModel, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "model.safetensors", lambda tmp: save_model(model, str(tmp)))
    config = {"model_type": MODEL_TYPE, "architecture": "SyntheticModel", "n_inputs": N_INPUTS}
    atomic_write_json(folder / "config.json", config | {"blocks": model.config.to_dict()})


def load_model_folder(folder: str | Path, device: str | torch.device = "cpu") -> SyntheticModel:
    folder = Path(folder)
    try:
        config = read_json(folder / "config.json")
        if config.get("model_type") != MODEL_TYPE:
            raise ValueError(f"model_type is {config.get('model_type')!r}, not {MODEL_TYPE!r}")
        model = SyntheticModel(GPT2Config.from_dict(config["blocks"]))
        load_model(model, str(folder / "model.safetensors"), device=str(device))
    except (OSError, ValueError, KeyError) as error:
        raise UsageError(f"cannot load a synthetic-task model from {folder}: {str(error).splitlines()[0]}") from None
    return model.to(device).eval()
