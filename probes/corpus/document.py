"""A document: the unit of the train/test split (windows never mix documents)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    name: str
    text: str
