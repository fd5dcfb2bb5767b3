"""Model loading: a hub name or a local Hugging Face folder, booted as a TransformerLens bridge.

Every model the toolkit touches goes through `load_model`, so probing, training and evaluation see the
same weights, the same tokenizer and the same hook names. Layer 0 is the embedding output
(`blocks.0.hook_resid_pre`); layer l is the output of block l (`blocks.{l-1}.hook_resid_post`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from probes.corpus.tokenizer import GPT2_VOCAB_SIZE, gpt2_tokenizer
from probes.errors import UsageError
from probes.hub import hub_reachable

TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "tokenizer_config.json")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
CAUSAL_CHECK_LENGTH = 8  # tokens of the forward pass that checks a model cannot see later tokens


@dataclass
class LoadedModel:
    """A causal LM ready for hooks: the HF model, its TransformerLens bridge and its tokenizer."""

    name: str
    hf_model: PreTrainedModel
    bridge: object  # transformer_lens.model_bridge.TransformerBridge (imported lazily: heavy)
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    weights_hash: str

    @property
    def n_layers(self) -> int:
        return int(self.hf_model.config.num_hidden_layers)

    @property
    def d_model(self) -> int:
        return int(self.hf_model.config.hidden_size)

    @property
    def vocab_size(self) -> int:
        return int(self.hf_model.config.vocab_size)

    @property
    def architecture(self) -> str:
        return type(self.hf_model).__name__


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise UsageError(f"unknown device {device!r}: use auto, cpu or cuda")
    return torch.device(device)


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 over parameter names and values: identifies the weights whatever file they came from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or os.sep in spec and not _is_hub_id(spec)


def _is_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not Path(spec).exists()


def _hub_reachable() -> bool:
    """`probes.hub.hub_reachable`, under the name other modules import."""
    return hub_reachable()


def max_positions(config: PretrainedConfig) -> int | None:
    """The longest input the model's position embeddings allow (None when its config does not say)."""
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def check_positions(model: PreTrainedModel, seq_len: int, name: str) -> None:
    """Refuse windows longer than the model's positions, before any work."""
    positions = max_positions(model.config)
    if positions is not None and positions < seq_len:
        raise UsageError(f"{name} has {positions} positions, fewer than --seq-len {seq_len}")


def check_causal(model: PreTrainedModel, name: str) -> None:
    """Refuse a model whose prediction at a position changes with a later token (BERT and other encoders):
    the toolkit studies what a left-to-right model prepares for the future, so it must not see the future."""
    length = min(CAUSAL_CHECK_LENGTH, max_positions(model.config) or CAUSAL_CHECK_LENGTH)
    vocab = min(int(model.config.vocab_size), 1000)
    tokens = torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(0))
    changed = tokens.clone()
    changed[0, -1] = (tokens[0, -1] + 1) % vocab
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            before = model(input_ids=tokens.to(device)).logits[0, :-1]
            after = model(input_ids=changed.to(device)).logits[0, :-1]
    except Exception as error:  # an architecture that cannot run as a causal LM fails in its own way
        raise UsageError(f"cannot run {name} as a causal language model: {_first_line(error)}") from None
    finally:
        model.train(was_training)
    if not torch.allclose(before, after, rtol=1e-4, atol=1e-4):
        raise UsageError(
            f"{name} ({type(model).__name__}) is not a causal language model: its prediction at a position changes "
            "with later tokens; probe-future studies left-to-right models only"
        )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _check_loaded_weights(info: dict[str, Any], source: str) -> None:
    """Missing or unexpected weights mean config.json and the weights file describe different models."""
    problems = {
        "missing_keys": "the config expects weights the file does not have",
        "unexpected_keys": "the file has weights the config's model does not use",
        "mismatched_keys": "weights have other shapes than the config's",
    }
    for key, problem in problems.items():
        names = sorted(str(entry[0] if isinstance(entry, tuple) else entry) for entry in info.get(key) or ())
        if names:
            raise UsageError(
                f"{source}: config.json does not match the weights: {problem} ({len(names)}, e.g. {names[0]})"
            )


def _check_local_folder(folder: Path) -> None:
    if not folder.exists():
        raise UsageError(f"model folder {folder} does not exist")
    if not folder.is_dir():
        raise UsageError(f"--model {folder} is a file; give a Hugging Face model folder or a hub name")
    if not (folder / "config.json").is_file():
        raise UsageError(f"{folder} has no config.json: not a Hugging Face model folder")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise UsageError(f"{folder} has no model.safetensors: no weights to load")


def _hub_source(name: str) -> str:
    """Return `name` when the hub (or the local cache) can serve it, else raise a one-line error."""
    try:
        AutoConfig.from_pretrained(name, local_files_only=True)
        return name
    except (OSError, ValueError):
        pass
    if not hub_reachable():
        raise UsageError(
            f"model {name!r} is not in the local Hugging Face cache and the hub is unreachable; "
            "download it once with hub access, or point --model at a local model folder"
        )
    try:
        AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot load model {name!r} from the hub: {str(error).splitlines()[0]}") from None
    return name


def load_tokenizer(source: str, vocab_size: int) -> PreTrainedTokenizerBase:
    """The model's own tokenizer when it has one; the offline GPT-2 tokenizer for a GPT-2 vocabulary."""
    folder = Path(source)
    has_files = folder.is_dir() and any((folder / name).is_file() for name in TOKENIZER_FILES)
    if has_files or not folder.is_dir():
        try:
            return AutoTokenizer.from_pretrained(source, local_files_only=folder.is_dir() or None)
        except (OSError, ValueError, KeyError, TypeError):
            if has_files:
                raise UsageError(f"cannot read the tokenizer files in {folder}") from None
    if vocab_size == GPT2_VOCAB_SIZE:
        return gpt2_tokenizer()
    raise UsageError(
        f"{source} has no tokenizer files and its vocabulary ({vocab_size}) is not GPT-2's; "
        "save the tokenizer into the model folder"
    )


def _load_hf_model(source: str) -> PreTrainedModel:
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, info = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, output_loading_info=True)
    except Exception as error:  # corrupt files surface as OSError, ValueError or safetensors' own errors
        raise UsageError(f"cannot load model weights from {source}: {_first_line(error)}") from None
    _check_loaded_weights(info, source)
    return model.eval()


def boot_bridge(source: str, hf_model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, device: torch.device):
    """Wrap an HF model in a TransformerLens bridge (the same code path as the real `gpt2`)."""
    from transformer_lens.model_bridge import TransformerBridge

    logging.getLogger("transformer_lens").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            bridge = TransformerBridge.boot_transformers(source, hf_model=hf_model, tokenizer=tokenizer, device=device)
        except (ValueError, NotImplementedError, KeyError) as error:
            raise UsageError(
                f"TransformerLens cannot wrap {type(hf_model).__name__}: {str(error).splitlines()[0]}"
            ) from None
    bridge.eval()
    return bridge


@dataclass
class PlainModel:
    """A Hugging Face causal LM and its tokenizer without a TransformerLens bridge: booting the bridge rewires
    the model's modules, and training and scoring need the stock attention layers."""

    name: str
    source: str
    hf_model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    weights_hash: str


def load_plain_model(spec: str, device: str = "auto") -> PlainModel:
    """Load `spec` (local HF folder, hub name or the offline `smollm2-135m` alias) with its tokenizer."""
    from probes import smollm2  # the offline `smollm2-135m` alias stands for a cached local folder

    resolved = smollm2.resolve(spec)
    if Path(resolved).expanduser().exists() or looks_like_path(resolved):
        folder = Path(resolved).expanduser()
        _check_local_folder(folder)
        source = str(folder)
    else:
        source = _hub_source(resolved)
    hf_model = _load_hf_model(source)
    check_causal(hf_model, spec)
    tokenizer = load_tokenizer(source, int(hf_model.config.vocab_size))
    target = resolve_device(device)
    return PlainModel(spec, source, hf_model.to(target), tokenizer, target, weights_hash(hf_model))


def load_model(spec: str, device: str = "auto") -> LoadedModel:
    """Load `spec` like `load_plain_model`, and wrap it in a TransformerLens bridge for hooks."""
    plain = load_plain_model(spec, device)
    bridge = boot_bridge(plain.source, plain.hf_model, plain.tokenizer, plain.device)
    return LoadedModel(
        name=plain.name,
        hf_model=plain.hf_model,
        bridge=bridge,
        tokenizer=plain.tokenizer,
        device=plain.device,
        weights_hash=plain.weights_hash,
    )


def _wrap(
    name: str, source: str, hf_model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, device: torch.device
) -> LoadedModel:
    hf_model.to(device)
    bridge = boot_bridge(source, hf_model, tokenizer, device)
    return LoadedModel(
        name=name,
        hf_model=hf_model,
        bridge=bridge,
        tokenizer=tokenizer,
        device=device,
        weights_hash=weights_hash(hf_model),
    )


def random_init_like(model: LoadedModel, seed: int) -> LoadedModel:
    """The same architecture with fresh random weights: the control for what any network passes through."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh = AutoModelForCausalLM.from_config(model.hf_model.config).eval()
    source = model.name if not Path(model.name).expanduser().is_dir() else str(Path(model.name).expanduser())
    return _wrap(f"{model.name} (random init)", source, fresh, model.tokenizer, model.device)
