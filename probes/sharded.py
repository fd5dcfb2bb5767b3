"""Models that do not fit one device: Hugging Face `device_map` loading (accelerate) for extraction.

`--device-map auto` (or `balanced`, `balanced_low_0`, `sequential`) loads the checkpoint with
`AutoModelForCausalLM.from_pretrained(..., device_map=..., dtype="auto")`: accelerate places consecutive blocks
on the visible GPUs (spilling to CPU memory when they are full) and moves activations between them during the
forward. The weights keep the checkpoint's dtype (bf16 for most large models). The store then reads the residual
stream with forward hooks on the model's own decoder blocks instead of the TransformerLens bridge, which needs
the model on one device: layer 0 is the input of the first block, layer l the output of block l. These are the
values of `blocks.0.hook_resid_pre` / `blocks.{l-1}.hook_resid_post`.

Supported: extraction and the probe job in one process that spans the machine's GPUs (not under torchrun, whose
ranks each hold a whole model), for decoder-only models whose blocks form one `nn.ModuleList` (GPT-2, Llama,
Mistral, Qwen, GPT-NeoX/Pythia, GPT-J, OPT, ...). Not supported: disk offload (`offload_folder`), training.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel
from transformers.utils import logging as hf_logging

from probes.errors import UsageError
from probes.models import LoadedModel, load_tokenizer, looks_like_path, weights_hash

DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def check_device_map(device_map: str | None) -> None:
    if device_map is not None and device_map not in DEVICE_MAPS:
        raise UsageError(f"unknown --device-map {device_map!r}: choose one of {', '.join(DEVICE_MAPS)}")


def decoder_blocks(model: PreTrainedModel) -> nn.ModuleList:
    """The model's list of decoder blocks (`transformer.h`, `model.layers`, `gpt_neox.layers`, ...)."""
    n_layers = int(model.config.num_hidden_layers)
    for module in model.base_model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            return module
    raise UsageError(f"cannot find the {n_layers} decoder blocks of {type(model).__name__} for --device-map")


def input_device(model: PreTrainedModel) -> torch.device:
    embeddings = model.get_input_embeddings()
    return next(embeddings.parameters()).device


def load_sharded(spec: str, device_map: str) -> LoadedModel:
    """`spec` loaded across the visible devices by accelerate; hooks instead of a TransformerLens bridge."""
    check_device_map(device_map)
    from probes import smollm2

    source = smollm2.resolve(spec)
    if looks_like_path(source) or Path(source).expanduser().exists():
        source = str(Path(source).expanduser())
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf_model = AutoModelForCausalLM.from_pretrained(source, device_map=device_map, dtype="auto")
    except Exception as error:  # missing files, no accelerate, a map that needs disk offload, ...
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"cannot load {spec} with --device-map {device_map}: {message}") from None
    if any(device in ("disk", "meta") for device in (getattr(hf_model, "hf_device_map", None) or {}).values()):
        raise UsageError(f"{spec} does not fit the GPUs and CPU memory: disk offload is not supported")
    hf_model.eval()
    decoder_blocks(hf_model)
    tokenizer = load_tokenizer(source, int(hf_model.config.vocab_size))
    return LoadedModel(spec, hf_model, None, tokenizer, input_device(hf_model), weights_hash(hf_model))


def random_init_sharded(model: LoadedModel, seed: int) -> LoadedModel:
    """The random-init control of a sharded model, placed on the same devices block by block."""
    from accelerate import dispatch_model

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh = AutoModelForCausalLM.from_config(model.hf_model.config, dtype=model.hf_model.dtype).eval()
    device_map = getattr(model.hf_model, "hf_device_map", None)
    fresh = dispatch_model(fresh, device_map=device_map) if device_map else fresh.to(model.device)
    name = f"{model.name} (random init)"
    return LoadedModel(name, fresh, None, model.tokenizer, input_device(fresh), weights_hash(fresh))


def _hidden(value: Any) -> torch.Tensor:
    return value[0] if isinstance(value, tuple) else value


@torch.inference_mode()
def hooked_forward(
    model: LoadedModel, tokens: torch.Tensor, layers: tuple[int, ...]
) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """`probes.activations.forward_batch` without the bridge: forward hooks on the HF decoder blocks."""
    blocks = decoder_blocks(model.hf_model)
    captured: dict[int, torch.Tensor] = {}
    handles = []
    if 0 in layers:

        def before_first(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            captured[0] = (args[0] if args else kwargs["hidden_states"]).detach()

        handles.append(blocks[0].register_forward_pre_hook(before_first, with_kwargs=True))
    for layer in layers:
        if layer == 0:
            continue

        def after(module: nn.Module, args: Any, output: Any, layer: int = layer) -> None:
            captured[layer] = _hidden(output).detach()

        handles.append(blocks[layer - 1].register_forward_hook(after))
    try:
        logits = model.hf_model(tokens.to(model.device, non_blocking=True), use_cache=False).logits
    finally:
        for handle in handles:
            handle.remove()
    return captured, logits.argmax(dim=-1)
