"""The shared ingredients of every subcommand, as dataclasses whose fields are the command-line flags.

A stage's config composes the ingredients it needs (by inheritance, so the flags stay flat:
`--model`, `--seq-len`, ...) and adds its own fields. `probes.cli` generates each subcommand's flags from
its config (simple-parsing: the field's docstring is the flag's help), so the command line, the Python API
and the demo build the same objects and cannot drift apart. A field with `cmd=False` is Python-only.
No stage logic lives here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from simple_parsing import field

from probes.errors import UsageError

DEVICES = ("auto", "cpu", "cuda")
DEFAULT_SEQ_LEN = 64  # the paper's window length
DEFAULT_MAX_TOKENS = 20_000


class Flags:
    """Base of every ingredient: each checks its own fields in `__post_init__` and passes on to the next."""

    def __post_init__(self) -> None:
        pass


@dataclass(kw_only=True)
class ModelFlags(Flags):
    model: str = field(required=True)
    """hub name (gpt2, EleutherAI/pythia-70m, ...) or a local model folder"""
    device: str = field(default="auto", choices=DEVICES)
    """where to run: auto | cpu | cuda"""


@dataclass(kw_only=True)
class DataFlags(Flags):
    data: str = "bundled"
    """bundled | a .txt file | a folder of .txt files | a .jsonl with a 'text' field | a hub dataset"""
    seq_len: int = DEFAULT_SEQ_LEN
    """window length in tokens"""
    max_tokens: int | None = DEFAULT_MAX_TOKENS
    """token budget, sampled as whole windows across the corpus"""
    seed: int = 0
    """seed for sampling, splits, fits and bootstraps"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.seq_len is not None and self.seq_len < 2:
            raise UsageError(f"--seq-len must be at least 2; got {self.seq_len}")
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise UsageError(f"--max-tokens must be positive; got {self.max_tokens}")
        check_seed(self.seed)


def check_seed(seed: int | None) -> None:
    """Every seed of the toolkit seeds numpy and torch, which take 0 .. 2**32 - 1 (None: a default is used)."""
    if seed is not None and not 0 <= seed < 2**32:
        raise UsageError(f"--seed must be between 0 and 2**32 - 1; got {seed}")


@dataclass(kw_only=True)
class OutputFlags(Flags):
    out: str = field(required=True)
    """the run folder"""
    overwrite: bool = False
    """replace a run folder of the same stage written with other settings"""


@dataclass(kw_only=True)
class ProgressFlag(Flags):
    progress: bool = field(default=True, cmd=False)
    """progress bars (Python API only; the command line always shows them)"""


def names(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """`a,b` (or a sequence of names) as a tuple of names; the flag type of comma-separated lists."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    return tuple(part.strip() for part in parts if part.strip())


def choose(values: tuple[str, ...], allowed: tuple[str, ...], what: str) -> None:
    """One line naming the first value that is not allowed (or the empty list)."""
    unknown = [value for value in values if value not in allowed]
    if unknown or not values:
        raise UsageError(f"unknown {what} {unknown[0] if unknown else ''!r}: choose from {', '.join(allowed)}")


C = TypeVar("C")


@dataclass(frozen=True)
class Command(Generic[C]):
    """A subcommand: its config dataclass (whose fields are its flags) and what runs it."""

    config: type[C]
    run: Callable[[C], int]
    help: str
    flags: dict[str, Any] | None = None  # argparse settings for the parser itself (e.g. a description)
