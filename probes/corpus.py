"""Text corpora and the fixed-length token windows cut from them.

A document is the unit of the train/test split: windows never mix documents, and every window of a
document lands on the same side of the split.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from probes.errors import UsageError

_HUB_NAME = re.compile(r"^[\w.-]+(/[\w.-]+)?(:[\w.-]+)?$")
_BATCH_DOCS = 64
_PROGRESS_CHARS = 2_000_000


@dataclass(frozen=True)
class Document:
    name: str
    text: str


# ---------------------------------------------------------------------------------------------- loading


def load_documents(spec: str) -> list[Document]:
    """Load a corpus: "bundled", a .txt file, a folder of .txt files, a .jsonl file or a hub dataset."""
    if spec == "bundled":
        from probes.bundled import load_bundled

        documents = load_bundled()
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            documents = _load_folder(path)
        elif path.exists():
            documents = _load_jsonl(path) if path.suffix == ".jsonl" else [Document(path.name, _read_text(path))]
        elif _looks_like_hub_name(spec):
            documents = _load_hub(spec)
        else:
            raise UsageError(f"data not found: no file or folder {spec}")
    documents = [doc for doc in documents if doc.text.strip()]
    if not documents:
        raise UsageError(f"corpus {spec} is empty: it has no non-empty document")
    return documents


def _looks_like_hub_name(spec: str) -> bool:
    if spec.startswith((".", "/", "~")) or spec.endswith((".txt", ".jsonl", ".json")):
        return False
    return bool(_HUB_NAME.match(spec))


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text (bad byte at offset {exc.start})") from exc
    return text.replace("\r\n", "\n")


def _load_folder(folder: Path) -> list[Document]:
    files = sorted(p for p in folder.rglob("*.txt") if p.is_file())
    if not files:
        raise UsageError(f"folder {folder} has no .txt files")
    return [Document(p.relative_to(folder).as_posix(), _read_text(p)) for p in files]


def _load_jsonl(path: Path) -> list[Document]:
    documents: list[Document] = []
    seen: set[str] = set()
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path} line {number} is not valid JSON: {exc.msg}") from exc
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise UsageError(f'{path} line {number} has no string field "text"')
        key = record.get("id", record.get("name"))
        name = f"line-{number}" if key is None else str(key)
        if name in seen:
            raise UsageError(f"{path} line {number}: duplicate document id {name!r}")
        seen.add(name)
        documents.append(Document(name, record["text"]))
    return documents


def _load_hub(spec: str) -> list[Document]:
    name, _, config = spec.partition(":")
    try:
        import datasets

        with _offline_if_requested():
            dataset = datasets.load_dataset(name, config or None, split="train")
    except Exception as exc:  # network, offline mode, unknown name, ...: all are "dataset unavailable"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"data {spec!r} is not a local file or folder, and the hub dataset could not be loaded: {reason}"
        ) from exc
    if "text" not in dataset.column_names:
        raise UsageError(f'hub dataset {spec} has no "text" field (fields: {", ".join(dataset.column_names)})')
    return [Document(f"{spec}/train/{i}", text) for i, text in enumerate(dataset["text"]) if text]


@contextmanager
def _offline_if_requested() -> Iterator[None]:
    """Honour HF_HUB_OFFLINE set after `datasets` was imported (it reads the variable once, at import);
    otherwise an offline machine waits through a minute of network retries before failing."""
    import datasets.config
    import huggingface_hub.constants

    if os.environ.get("HF_HUB_OFFLINE", "").upper() not in {"1", "ON", "YES", "TRUE"}:
        yield
        return
    saved = datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved


# ---------------------------------------------------------------------------------------------- windows


@dataclass
class TokenWindows:
    tokens: np.ndarray  # (n_windows, seq_len) int64
    doc_index: np.ndarray  # (n_windows,) int64, index into doc_names
    start: np.ndarray  # (n_windows,) int64, token offset of the window inside its document
    doc_names: list[str]
    seq_len: int

    def fingerprint(self) -> str:
        """Content hash of the windows: the data hash stamped in provenance."""
        digest = hashlib.sha256()
        digest.update(f"seq_len={self.seq_len};n={len(self)}\n".encode())
        for array in (self.tokens, self.doc_index, self.start):
            digest.update(np.ascontiguousarray(array, dtype="<i8").tobytes())
        digest.update(json.dumps(self.doc_names).encode())
        return digest.hexdigest()

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def subset(self, index: np.ndarray) -> TokenWindows:
        return TokenWindows(
            tokens=self.tokens[index],
            doc_index=self.doc_index[index],
            start=self.start[index],
            doc_names=self.doc_names,
            seq_len=self.seq_len,
        )


def make_windows(
    documents: Sequence[Document],
    tokenizer: PreTrainedTokenizerBase,
    seq_len: int,
    *,
    max_tokens: int | None = None,
    seed: int = 0,
) -> TokenWindows:
    """Cut every document into non-overlapping windows of exactly `seq_len` tokens (the tail is dropped).

    With `max_tokens`, keep floor(max_tokens / seq_len) windows drawn at random (seeded) from all
    documents, in (document, start) order.
    """
    if seq_len < 2:
        raise UsageError(f"seq_len must be at least 2, got {seq_len}")
    if max_tokens is not None:
        if max_tokens <= 0:
            raise UsageError(f"max_tokens must be positive, got {max_tokens}")
        if max_tokens < seq_len:
            raise UsageError(f"max_tokens {max_tokens} is smaller than one window of {seq_len} tokens")

    chunks: list[np.ndarray] = []
    doc_index: list[np.ndarray] = []
    starts: list[np.ndarray] = []
    for i, ids in enumerate(_tokenize(documents, tokenizer)):
        n = len(ids) // seq_len
        if n:
            chunks.append(np.asarray(ids[: n * seq_len], dtype=np.int64).reshape(n, seq_len))
            doc_index.append(np.full(n, i, dtype=np.int64))
            starts.append(np.arange(n, dtype=np.int64) * seq_len)
    if not chunks:
        raise UsageError(f"corpus shorter than one window of {seq_len} tokens")

    windows = TokenWindows(
        tokens=np.concatenate(chunks),
        doc_index=np.concatenate(doc_index),
        start=np.concatenate(starts),
        doc_names=[doc.name for doc in documents],
        seq_len=seq_len,
    )
    if max_tokens is not None and max_tokens // seq_len < len(windows):
        keep = np.random.default_rng(seed).permutation(len(windows))[: max_tokens // seq_len]
        # Windows are built in (document, start) order, so sorting indices restores that order.
        windows = windows.subset(np.sort(keep))
    return windows


def _tokenize(documents: Sequence[Document], tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
    total_chars = sum(len(doc.text) for doc in documents)
    ids: list[list[int]] = []
    with tqdm(
        total=total_chars, unit="char", unit_scale=True, desc="tokenising", disable=total_chars < _PROGRESS_CHARS
    ) as bar:
        for lo in range(0, len(documents), _BATCH_DOCS):
            batch = [doc.text for doc in documents[lo : lo + _BATCH_DOCS]]
            # verbose=False: documents longer than the model context are expected here.
            ids.extend(tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"])
            bar.update(sum(len(text) for text in batch))
    return ids


# ---------------------------------------------------------------------------------------------- split


def split_by_document(
    windows: TokenWindows, test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test window indices (sorted), with every document wholly on one side.

    A document's side depends only on (seed, its name), so it does not move when the window subset changes.
    """
    if not 0.0 < test_fraction < 1.0:
        raise UsageError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    present = np.unique(windows.doc_index)
    if len(present) < 2:
        raise UsageError("need at least 2 documents to split train/test by document")
    scores = np.array([_unit_hash(seed, windows.doc_names[i]) for i in present])
    is_test = scores < test_fraction
    if is_test.all():
        is_test[np.argmax(scores)] = False
    elif not is_test.any():
        is_test[np.argmin(scores)] = True
    test_docs = present[is_test]
    in_test = np.isin(windows.doc_index, test_docs)
    return np.flatnonzero(~in_test), np.flatnonzero(in_test)


def _unit_hash(seed: int, name: str) -> float:
    """A stable pseudo-random number in [0, 1) from (seed, name)."""
    digest = hashlib.sha256(f"{seed}\x00{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64
