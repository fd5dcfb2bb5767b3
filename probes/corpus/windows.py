"""Fixed-length token windows cut from documents, and the train/test split by document.

A document is the unit of the train/test split: windows never mix documents, and every window of a
document lands on the same side of the split.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
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
    # Documents with at least one window before --max-tokens drew a sample of windows (None: no sample drawn);
    # it tells a refusal what happened when the sample left too few documents.
    sampled_from_docs: int | None = None

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
            sampled_from_docs=self.sampled_from_docs,
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
        windows.sampled_from_docs = len(chunks)
    return windows


# Token ids of recently tokenised corpora, per process: the demo's worker processes train, evaluate and probe
# models that share one tokenizer on one corpus, and tokenising it costs seconds each time.
_TOKENISED: OrderedDict[tuple[str, str], list[np.ndarray]] = OrderedDict()
_TOKENISED_KEEP = 2


def _corpus_key(documents: Sequence[Document], tokenizer: PreTrainedTokenizerBase) -> tuple[str, str] | None:
    """(tokenizer, documents) content hashes; None for a tokenizer without a serialisable fast backend."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    texts = hashlib.sha256()
    for doc in documents:
        texts.update(f"{len(doc.name)}:{doc.name}{len(doc.text)}:".encode())
        texts.update(doc.text.encode())
    return hashlib.sha256(backend.to_str().encode()).hexdigest(), texts.hexdigest()


def _tokenize(documents: Sequence[Document], tokenizer: PreTrainedTokenizerBase) -> list[np.ndarray]:
    """Token ids of every document (the same ids as tokenising it again; reused within a process)."""
    key = _corpus_key(documents, tokenizer)
    if key is not None and key in _TOKENISED:
        _TOKENISED.move_to_end(key)
        return _TOKENISED[key]
    ids = [np.asarray(doc_ids, dtype=np.int64) for doc_ids in _tokenize_now(documents, tokenizer)]
    if key is not None:
        _TOKENISED[key] = ids
        while len(_TOKENISED) > _TOKENISED_KEEP:
            _TOKENISED.popitem(last=False)
    return ids


def _tokenize_now(documents: Sequence[Document], tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
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
        raise UsageError(_too_few_documents(windows, present))
    scores = np.array([_unit_hash(seed, windows.doc_names[i]) for i in present])
    is_test = scores < test_fraction
    if is_test.all():
        is_test[np.argmax(scores)] = False
    elif not is_test.any():
        is_test[np.argmin(scores)] = True
    test_docs = present[is_test]
    in_test = np.isin(windows.doc_index, test_docs)
    return np.flatnonzero(~in_test), np.flatnonzero(in_test)


def _too_few_documents(windows: TokenWindows, present: np.ndarray) -> str:
    """Why the windows come from fewer than 2 documents, in words."""
    need = "the train/test split by document needs windows from at least 2 documents"
    if len(present) == 0:
        return f"no windows: {need}"
    name, n_docs = windows.doc_names[present[0]], len(windows.doc_names)
    if windows.sampled_from_docs is not None and windows.sampled_from_docs >= 2:
        return (
            f"the {len(windows)} windows that --max-tokens sampled all come from one document ({name}), of the "
            f"{windows.sampled_from_docs} long enough for a window; {need}: raise --max-tokens"
        )
    if n_docs >= 2:
        return (
            f"only one of the {n_docs} documents ({name}) is at least one window ({windows.seq_len} tokens) long; "
            f"{need}: lower --seq-len or add documents"
        )
    return f"the corpus is one document ({name}); {need}"


def _unit_hash(seed: int, name: str) -> float:
    """A stable pseudo-random number in [0, 1) from (seed, name)."""
    digest = hashlib.sha256(f"{seed}\x00{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64
