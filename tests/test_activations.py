"""The activation store against Hugging Face's own hidden states, and its resume behaviour."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GPT2LMHeadModel

from probes.activations import ActivationStore, StoreSettings, extract
from probes.corpus import load_documents, make_windows
from probes.errors import UsageError
from probes.models import load_model


@pytest.fixture(scope="module")
def model(tiny_gpt2_dir: Path):
    return load_model(str(tiny_gpt2_dir), device="cpu")


@pytest.fixture(scope="module")
def windows(model, text_folder: Path):
    return make_windows(load_documents(str(text_folder)), model.tokenizer, 16, max_tokens=16 * 40, seed=0)


def test_store_equals_hf_hidden_states(model, windows, tiny_gpt2_dir: Path, tmp_path: Path) -> None:
    settings = StoreSettings(layers=(0, 1, 2), dtype="float32", batch_size=4, shard_windows=8)
    store = extract(model, windows, tmp_path / "store", settings, progress=False)
    reference = GPT2LMHeadModel.from_pretrained(tiny_gpt2_dir).eval()
    tokens = torch.from_numpy(windows.tokens)
    with torch.no_grad():
        out = reference(tokens, output_hidden_states=True)
        final_resid = {}
        handle = reference.transformer.ln_f.register_forward_hook(
            lambda module, inputs, output: final_resid.setdefault("x", inputs[0])
        )
        reference(tokens)
        handle.remove()
    for layer in (0, 1):
        torch.testing.assert_close(store.layer(layer), out.hidden_states[layer], atol=1e-5, rtol=0)
    # HF's last hidden state is after the final norm; the store keeps the residual stream itself.
    torch.testing.assert_close(store.layer(2), final_resid["x"], atol=1e-5, rtol=0)
    torch.testing.assert_close(reference.transformer.ln_f(store.layer(2)), out.hidden_states[2], atol=1e-5, rtol=0)
    assert torch.equal(store.model_pred(), out.logits.argmax(-1))
    assert np.array_equal(store.windows.tokens, windows.tokens)
    assert store.windows.fingerprint() == windows.fingerprint()


def test_float16_store_is_close(model, windows, tmp_path: Path) -> None:
    full = extract(model, windows, tmp_path / "a", StoreSettings(layers=(2,), dtype="float32"), progress=False)
    half = extract(model, windows, tmp_path / "b", StoreSettings(layers=(2,), dtype="float16"), progress=False)
    torch.testing.assert_close(half.layer(2), full.layer(2), atol=1e-2, rtol=1e-2)


def _store_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*.safetensors"))}


def test_resume_after_lost_shards_is_identical(model, windows, tmp_path: Path) -> None:
    settings = StoreSettings(layers=(0, 2), dtype="float16", batch_size=2, shard_windows=4)
    whole = extract(model, windows, tmp_path / "whole", settings, progress=False)
    partial = tmp_path / "partial"
    extract(model, windows, partial, settings, progress=False)
    # Simulate an interruption: later shards never written, manifest not marked complete.
    for shard in sorted(partial.glob("shard-*.safetensors"))[3:]:
        shard.unlink()
    manifest = json.loads((partial / "manifest.json").read_text())
    manifest["complete"] = False
    (partial / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UsageError, match="incomplete"):
        ActivationStore(partial)
    extract(model, windows, partial, settings, progress=False)
    assert _store_bytes(partial) == _store_bytes(whole.folder)


def test_refuses_store_of_another_run(model, windows, tmp_path: Path) -> None:
    folder = tmp_path / "store"
    extract(model, windows, folder, StoreSettings(layers=(0,)), progress=False)
    with pytest.raises(UsageError, match="another run"):
        extract(model, windows, folder, StoreSettings(layers=(1,)), progress=False)
    store = extract(model, windows, folder, StoreSettings(layers=(1,)), overwrite=True, progress=False)
    assert store.layers == [1]


def test_kill_dash_nine_then_rerun_resumes_identically(tiny_gpt2_dir: Path, text_folder: Path, tmp_path: Path) -> None:
    args = [
        sys.executable,
        "-m",
        "probes.cli",
        "extract",
        "--model",
        str(tiny_gpt2_dir),
        "--data",
        str(text_folder),
        "--seq-len",
        "16",
        "--max-tokens",
        str(16 * 160),
        "--batch-size",
        "1",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    reference = tmp_path / "reference"
    subprocess.run([*args, "--out", str(reference)], check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [*args, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (killed / "shard-00000.safetensors").exists():
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not json.loads((killed / "manifest.json").read_text())["complete"], "extraction finished before the kill"
    subprocess.run([*args, "--out", str(killed)], check=True, env=env, capture_output=True)
    assert _store_bytes(killed) == _store_bytes(reference)
    assert not list(killed.glob(".*.tmp"))


def test_peak_memory_is_per_shard(model, windows, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards are written as they fill: no more than one shard's activations are held at once."""
    import probes.activations as activations

    held: list[int] = []
    original = activations.save_file

    def spy(tensors, path):
        held.append(sum(t.numel() for t in tensors.values()))
        original(tensors, path)

    monkeypatch.setattr(activations, "save_file", spy)
    extract(
        model, windows, tmp_path / "s", StoreSettings(layers=(0, 1, 2), batch_size=2, shard_windows=4), progress=False
    )
    per_shard = 4 * windows.seq_len * (3 * model.d_model + 1)
    assert max(held[1:]) <= per_shard
