from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from probes.corpus.tokenizer import GPT2_VOCAB_SIZE, gpt2_tokenizer, gpt2_tokenizer_dir


def test_hello_world_ids() -> None:
    tokenizer = gpt2_tokenizer()
    assert tokenizer("Hello world", add_special_tokens=False)["input_ids"] == [15496, 995]
    assert len(tokenizer) == GPT2_VOCAB_SIZE
    assert tokenizer.eos_token_id == GPT2_VOCAB_SIZE - 1


def test_round_trip() -> None:
    tokenizer = gpt2_tokenizer()
    text = "To be, or not to be, that is the question:\n  Whether 'tis nobler in the mind — ünïcödé, 3.14!"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > 10
    assert tokenizer.decode(ids) == text


def test_folder_is_cached() -> None:
    folder = gpt2_tokenizer_dir()
    assert (folder / "tokenizer_config.json").exists()
    assert gpt2_tokenizer_dir() == folder


def test_builds_and_loads_offline(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PROBE_FUTURE_CACHE": str(tmp_path)}
    code = (
        "from probes.corpus.tokenizer import gpt2_tokenizer;"
        "print(gpt2_tokenizer()('Hello world', add_special_tokens=False)['input_ids'])"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[15496, 995]"
    assert (tmp_path / "gpt2-tokenizer" / "tokenizer_config.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["gpt2-tokenizer"]  # no temporary folder left behind
