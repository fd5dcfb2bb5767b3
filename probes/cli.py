"""The `probe-future` command line: one entry point, a subcommand per stage.

`probe-future --model M --tau 1..5` is shorthand for `probe-future probe --model M --tau 1..5`.
Each stage module exposes `register(subparsers)`, which adds its parser and sets `func` to a callable
taking the parsed arguments. Every UsageError becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from probes.errors import UsageError

# (subcommand, module that registers it); modules are imported lazily so `--help` stays fast.
SUBCOMMANDS: list[tuple[str, str]] = [
    ("probe", "probes.run"),
    ("extract", "probes.activations"),
    ("train", "probes.train"),
    ("eval", "probes.evaluate"),
    ("synthetic", "probes.synthetic"),
    ("demo", "probes.demo"),
    ("compare", "probes.compare_cli"),
    ("report", "probes.compare_cli"),
]
DEFAULT_SUBCOMMAND = "probe"


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports errors as a single line (and exit 2), as every probe-future error does."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def build_parser(only: str | None = None) -> OneLineParser:
    parser = OneLineParser(prog="probe-future", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", parser_class=OneLineParser, metavar="COMMAND")
    for name, module_name in SUBCOMMANDS:
        if only is not None and name != only:
            continue
        importlib.import_module(module_name).register(subparsers)
    return parser


def _normalise_argv(argv: list[str]) -> list[str]:
    known = {name for name, _ in SUBCOMMANDS}
    if not argv or argv[0] in ("-h", "--help"):
        return argv
    if argv[0] not in known:
        return [DEFAULT_SUBCOMMAND, *argv]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    args_list = _normalise_argv(list(sys.argv[1:] if argv is None else argv))
    only = args_list[0] if args_list and not args_list[0].startswith("-") else None
    parser = build_parser(only)
    args = parser.parse_args(args_list)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except UsageError as error:
        sys.stderr.write(f"probe-future: error: {error}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("probe-future: interrupted; rerun the same command to resume\n")
        return 130
    return int(result or 0)


def run_main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())


if __name__ == "__main__":
    run_main()
