"""Fixed-length token windows cut from documents, and the train/test split by document.

A document is the unit of the train/test split: windows never mix documents, and every window of a
document lands on the same side of the split.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from probes.corpus.document import Document
from probes.errors import UsageError

_BATCH_DOCS = 64
_PROGRESS_CHARS = 2_000_000

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


def split_by_document(windows: TokenWindows, test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
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
