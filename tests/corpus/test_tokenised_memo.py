"""Tokenised corpora are reused within a process (the demo's workers tokenise the bundled corpus once per
tokenizer): the same windows as tokenising again, keyed by the tokenizer's content, not the object."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from probes.corpus import load_documents, make_windows
from probes.corpus import windows as windows_module
from probes.corpus.tokenizer import gpt2_tokenizer


def test_reused_tokens_give_the_same_windows(text_folder: Path, tmp_path: Path, monkeypatch) -> None:
    documents = load_documents(str(text_folder))
    windows_module._TOKENISED.clear()
    first = make_windows(documents, gpt2_tokenizer(), 16, max_tokens=16 * 30, seed=0)
    calls = []
    original = windows_module._tokenize_now
    monkeypatch.setattr(windows_module, "_tokenize_now", lambda *a: calls.append(1) or original(*a))
    gpt2_tokenizer().save_pretrained(tmp_path / "tok")
    from transformers import AutoTokenizer

    again = make_windows(documents, AutoTokenizer.from_pretrained(str(tmp_path / "tok")), 16, max_tokens=16 * 30)
    assert calls == [] and first.fingerprint() == again.fingerprint()  # another object, the same tokenizer
    other = documents[:-1]
    make_windows(other, gpt2_tokenizer(), 16)
    assert calls == [1]  # other documents: tokenised anew
    assert all(isinstance(ids, np.ndarray) for ids in windows_module._TOKENISED.values().__iter__().__next__())
