"""Models spread over devices (`--device-map`, accelerate): on a CPU-only machine `auto` keeps every block on the
CPU, which still exercises the hook-based extraction path that sharded models use."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from probes.activations import StoreSettings, extract
from probes.corpus import load_documents, make_windows
from probes.errors import UsageError
from probes.models import load_model
from probes.probing.run import run_probes
from probes.sharded import check_device_map, decoder_blocks, load_sharded, random_init_sharded
from tests.probing.test_probe_run import small_config


def test_hooked_store_equals_the_bridge_store(tiny_gpt2_dir: Path, text_folder: Path, tmp_path: Path) -> None:
    bridged = load_model(str(tiny_gpt2_dir), device="cpu")
    sharded = load_sharded(str(tiny_gpt2_dir), "auto")
    assert sharded.bridge is None and len(decoder_blocks(sharded.hf_model)) == 2
    assert sharded.weights_hash == bridged.weights_hash
    windows = make_windows(load_documents(str(text_folder)), bridged.tokenizer, 16, max_tokens=16 * 12, seed=0)
    settings = StoreSettings(layers=(0, 1, 2), dtype="float32", batch_size=4, shard_windows=8)
    a = extract(bridged, windows, tmp_path / "bridge", settings, progress=False)
    b = extract(sharded, windows, tmp_path / "hooks", settings, progress=False)
    for layer in (0, 1, 2):
        torch.testing.assert_close(a.layer(layer), b.layer(layer), atol=1e-5, rtol=0)
    assert torch.equal(a.model_pred(), b.model_pred())
    control = random_init_sharded(sharded, 1)  # (the fixture model itself is the seed-0 init)
    assert control.bridge is None and control.weights_hash != sharded.weights_hash


def test_probe_job_with_a_device_map(tiny_gpt2_dir: Path, text_folder: Path, tmp_path: Path) -> None:
    config = small_config(tiny_gpt2_dir, text_folder, tmp_path / "run", tau="1", layers="0,2", device_map="auto")
    results = run_probes(config)
    assert set(results["probe"]) >= {"softmax", "lstsq", "unigram", "skip_bigram"}


def test_unknown_device_map_is_one_line() -> None:
    with pytest.raises(UsageError, match="--device-map"):
        check_device_map("everywhere")
