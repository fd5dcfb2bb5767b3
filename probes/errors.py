"""User-facing errors: one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input from the user (arguments, files, models). The CLI prints the message and exits 2."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)
