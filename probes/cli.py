"""The `probe-future` command line: one entry point, a subcommand per stage.

`probe-future --model M --tau 1..5` is shorthand for `probe-future probe --model M --tau 1..5`.
Every subcommand is declared in `SUBCOMMANDS` as "module:attribute" naming a `probes.config.Command`:
its config dataclass, whose fields are the flags (generated here with simple-parsing), and the function
that runs it. Modules are imported only for the subcommand asked for, so `--help` stays fast. Every
UsageError becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any, TypeVar

import simple_parsing
from simple_parsing.help_formatter import SimpleHelpFormatter
from simple_parsing.wrappers.field_wrapper import DashVariant

from probes.config import Command
from probes.errors import UsageError

SUBCOMMANDS: dict[str, str] = {
    "probe": "probes.probing.run:COMMAND",
    "extract": "probes.activations:COMMAND",
    "train": "probes.training.lm:COMMAND",
    "eval": "probes.evaluate:COMMAND",
    "synthetic": "probes.synthetic.run:COMMAND",
    "demo": "probes.demo:COMMAND",
    "compare": "analysis.compare:COMMAND",
    "report": "analysis.report:COMMAND",
    "gradients": "probes.lens.run:COMMAND",
}
DEFAULT_SUBCOMMAND = "probe"
CONFIG_DEST = "config"
C = TypeVar("C")


class HelpFormatter(SimpleHelpFormatter):
    """simple-parsing's help, without a "(default: ...)" where there is none or the help already says it."""

    def _get_help_string(self, action: Any) -> str | None:
        help_text = action.help or ""
        if "default" in help_text or action.default is None or action.required:
            return help_text
        return super()._get_help_string(action)


class OneLineParser(simple_parsing.ArgumentParser):
    """Flags from dataclasses; errors as a single line (and exit 2), as every probe-future error is."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("add_option_string_dash_variants", DashVariant.DASH)
        kwargs.setdefault("add_config_path_arg", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)  # `eval --mode` must not be read as `--model`
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def load_command(name: str) -> Command[Any]:
    module_name, _, attribute = SUBCOMMANDS[name].partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def add_config(parser: OneLineParser, config: type[Any]) -> None:
    parser.add_arguments(config, dest=CONFIG_DEST)


def build_parser(only: str | None = None) -> OneLineParser:
    parser = OneLineParser(prog="probe-future", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", parser_class=OneLineParser, metavar="COMMAND")
    for name in SUBCOMMANDS:
        if only is not None and name != only:
            subparsers.add_parser(name)  # listed in the usage line; its flags are built only when asked for
            continue
        command = load_command(name)
        sub = subparsers.add_parser(name, help=command.help, description=command.help, **(command.flags or {}))
        add_config(sub, command.config)
    return parser


def parse_config(config: type[C], argv: Sequence[str] | None, prog: str, description: str = "") -> C:
    """A config from argv for a script with a single command (e.g. `python analysis/compare.py`)."""
    parser = OneLineParser(prog=prog, description=description)
    add_config(parser, config)
    return getattr(parser.parse_args(list(sys.argv[1:] if argv is None else argv)), CONFIG_DEST)


def _normalise_argv(argv: list[str]) -> list[str]:
    if not argv or argv[0] in ("-h", "--help"):
        return argv
    if argv[0] not in SUBCOMMANDS:
        return [DEFAULT_SUBCOMMAND, *argv]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    args_list = _normalise_argv(list(sys.argv[1:] if argv is None else argv))
    only = args_list[0] if args_list and not args_list[0].startswith("-") else None
    try:
        parser = build_parser(only)
        args = parser.parse_args(args_list)
        config = getattr(args, CONFIG_DEST, None)
        if config is None:
            parser.print_help()
            return 2
        return int(load_command(args.command).run(config) or 0)
    except UsageError as error:
        sys.stderr.write(f"probe-future: error: {error}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("probe-future: interrupted; rerun the same command to resume\n")
        return 130


def run_main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())


if __name__ == "__main__":
    run_main()
