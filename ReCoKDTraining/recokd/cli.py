"""The ``recokd`` command line: one sub-command per module in :mod:`recokd.commands`.

Each command module exposes ``register(subparsers)`` which adds its parser and sets
``func`` to a callable taking the parsed arguments and returning an exit status.
User errors (:class:`recokd.errors.RecokdError`) become one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from recokd import __version__
from recokd.errors import RecokdError, no_space_error

COMMAND_MODULES = (
    "phantom",
    "prepare",
    "train_teacher",
    "distill",
    "export",
    "models",
    "segment",
    "benchmark",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recokd",
        description="ReCo-KD distillation of nnU-Net v2 teachers into small students, and inference.",
    )
    parser.add_argument("--version", action="version", version=f"recokd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"recokd.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Our own messages at INFO; third-party libraries (nnU-Net logs every file it copies) only warn.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("recokd").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except RecokdError as error:
        _report_error(args, str(error))
        return 2
    except KeyboardInterrupt:
        _report_error(args, "interrupted")
        return 130
    except Exception as error:
        user_error = no_space_error(error)
        if user_error is not None:
            _report_error(args, str(user_error))
            return 2
        _report_error(args, f"internal error: {error!r}")
        raise


def _report_error(args, message: str) -> None:
    """One line on stderr; with ``--progress json`` also the protocol's error event on stdout."""
    print(f"recokd {args.command}: error: {message}", file=sys.stderr)
    if getattr(args, "progress", None) == "json":
        print(json.dumps({"event": "error", "message": message}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
