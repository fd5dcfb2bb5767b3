"""`probe-future compare` and `probe-future report`: the analysis scripts under the common entry point.

The implementation lives in the top-level `analysis/` folder of the source checkout (users also run it as
`python analysis/compare.py`). When `analysis` is not importable (the console script does not put the checkout
on the path), the checkout beside this package is added to `sys.path`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType

from probes.errors import UsageError

CHECKOUT = Path(__file__).resolve().parents[1]


def _analysis(name: str) -> ModuleType:
    """`analysis.<name>`, from the installed packages or else from the source checkout."""
    try:
        return importlib.import_module(f"analysis.{name}")
    except ModuleNotFoundError as error:
        if error.name not in ("analysis", f"analysis.{name}"):
            raise
    if not (CHECKOUT / "analysis" / f"{name}.py").is_file():
        raise UsageError("the analysis scripts are not installed: run probe-future from a source checkout")
    sys.path.insert(0, str(CHECKOUT))
    return importlib.import_module(f"analysis.{name}")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add both subcommands; safe to call more than once with the same subparsers (each is added once)."""
    if "compare" not in subparsers.choices:
        parser = subparsers.add_parser("compare", help="vanilla vs myopic: myopia gap, pre-caching share, verdict")
        parser.set_defaults(func=run_compare_command)
        _add_compare_args(parser)
    if "report" not in subparsers.choices:
        parser = subparsers.add_parser("report", help="regenerate the HTML report from result folders")
        parser.add_argument("runs", nargs="+", metavar="RUN", help="probe, eval, synthetic or comparison folders")
        parser.add_argument("--out", required=True, help="folder that receives report.html")
        parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples over test documents")
        parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
        parser.set_defaults(func=run_report_command)


def _add_compare_args(parser: argparse.ArgumentParser) -> None:
    # Same flags as `python analysis/compare.py`, declared there; imported only when this parser is built.
    try:
        _analysis("compare").add_compare_args(parser)
    except UsageError as error:
        parser.set_defaults(func=_unavailable(str(error)))


def _unavailable(message: str):  # noqa: ANN202
    def fail(args: argparse.Namespace) -> int:
        raise UsageError(message)

    return fail


def run_compare_command(args: argparse.Namespace) -> int:
    return int(_analysis("compare").compare_command(args))


def run_report_command(args: argparse.Namespace) -> int:
    if args.n_boot < 200:
        raise UsageError(f"--n-boot must be at least 200; got {args.n_boot}")
    path = _analysis("report").report_from_paths(args.runs, args.out, n_boot=args.n_boot, seed=args.seed)
    print(f"report: {path}")
    return 0
