"""Corpora: documents from a source, the bundled offline corpus, the GPT-2 tokenizer, token windows."""

from probes.corpus.document import Document
from probes.corpus.sources import load_documents
from probes.corpus.windows import TokenWindows, make_windows, split_by_document

__all__ = ["Document", "TokenWindows", "load_documents", "make_windows", "split_by_document"]
