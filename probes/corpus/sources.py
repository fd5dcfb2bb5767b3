"""Corpus sources: `bundled`, a .txt file, a folder of .txt files, a .jsonl file or a hub dataset."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from probes.corpus.document import Document
from probes.errors import UsageError
from probes.hub import cache_only_unless_reachable

_HUB_NAME = re.compile(r"^[\w.-]+(/[\w.-]+)?(:[\w.-]+)?$")

# ---------------------------------------------------------------------------------------------- loading


def load_documents(spec: str) -> list[Document]:
    """Load a corpus: "bundled", a .txt file, a folder of .txt files, a .jsonl file or a hub dataset."""
    if spec == "bundled":
        from probes.corpus.bundled import load_bundled

        documents = load_bundled()
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            documents = _load_folder(path)
        elif path.exists():
            _check_regular(path)
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


def _check_regular(path: Path) -> None:
    """A named pipe, socket or device would block or never end: only regular files are read."""
    if not path.is_file():
        raise UsageError(f"{path} is not a regular file (a named pipe, socket or device); give a file or a folder")


def _text_files(folder: Path) -> list[Path]:
    """Every .txt file under `folder`; an unreadable subfolder or a .txt entry that is not a readable regular
    file (a broken link, a pipe) is an error, so that no part of the corpus is left out unnoticed."""

    def refuse(error: OSError) -> None:
        raise UsageError(f"cannot read folder {error.filename}: {error.strerror or error}")

    files = []
    for root, _, names in os.walk(folder, onerror=refuse):
        for name in names:
            path = Path(root) / name
            if not name.endswith(".txt"):
                continue
            if path.is_symlink() and not path.exists():
                raise UsageError(f"{path} is a broken link (to {os.readlink(path)})")
            _check_regular(path)
            files.append(path)
    return sorted(files)


def _load_folder(folder: Path) -> list[Document]:
    files = _text_files(folder)
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

        with cache_only_unless_reachable():
            dataset = datasets.load_dataset(name, config or None, split="train")
    except Exception as exc:  # network, offline mode, unknown name, ...: all are "dataset unavailable"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"data {spec!r} is not a local file or folder, and the hub dataset could not be loaded: {reason}"
        ) from exc
    if "text" not in dataset.column_names:
        raise UsageError(f'hub dataset {spec} has no "text" field (fields: {", ".join(dataset.column_names)})')
    return [Document(f"{spec}/train/{i}", text) for i, text in enumerate(dataset["text"]) if text]
