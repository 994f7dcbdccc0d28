"""`prunescope`: the command line. Each subcommand lives in a module of this package that
defines ``register(subparsers)``; it parses arguments and calls one documented Python
function, importing heavy libraries only when it runs."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import traceback

import harness.cli as cli_package
from harness.errors import PrunescopeError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prunescope",
        description="What else does pruning do to your LLM? Prune, generate, score, annotate, report.",
    )
    parser.add_argument("--debug", action="store_true", help="print the traceback of any error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(cli_package.__path__), key=lambda m: m.name):
        if info.name != "main" and not info.name.startswith("_"):
            importlib.import_module(f"harness.cli.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command: exit 2 with one message for bad input or usage (argparse's own
    errors exit 2 too), 1 with one line for an unexpected error; tracebacks only with
    ``--debug``."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except PrunescopeError as exc:
        _debug_traceback(args)
        print(f"prunescope {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is kept, rerun to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: one line, the traceback on request
        _debug_traceback(args)
        print(f"prunescope {args.command}: internal error: {type(exc).__name__}: {exc}"
              + ("" if args.debug else " (rerun as `prunescope --debug ...` for the traceback)"),
              file=sys.stderr)
        return 1


def _debug_traceback(args) -> None:
    if args.debug:
        traceback.print_exc()


if __name__ == "__main__":
    sys.exit(main())
