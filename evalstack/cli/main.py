"""The ``evalstack`` command.

Every error is one line on stderr saying what to do, never a traceback (``--debug`` anywhere on the
command line, or ``EVALSTACK_DEBUG=1``, prints it). Exit codes: 0 success, 1 the evaluation failed or
was stopped (or an unexpected error), 2 a usage error or invalid input, 3 something named was not
found. Hyphens and underscores are interchangeable in command and option names.

Building the parser imports only the command modules, which import argparse and data modules (the
catalog, the spec, the pipeline definition): each handler, and the error handling here, imports what it
runs, so ``evalstack --help`` never loads the evaluation stack, botocore or the scientific libraries.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import os
import re
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from evalstack.cli import (
    cache_commands,
    catalog_commands,
    data_commands,
    evaluate_commands,
    executions_commands,
    pipeline_commands,
    view_commands,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND = 0, 1, 2, 3


def _other_spelling(name: str) -> str:
    return name.replace("-", "_") if "-" in name else name.replace("_", "-")


class _Commands(argparse._SubParsersAction):
    """Subcommands answer to both spellings: ``custom-scorer`` and ``custom_scorer``."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        other = _other_spelling(name)
        aliases = list(kwargs.pop("aliases", []))
        if other != name:
            aliases.append(other)
        return super().add_parser(name, aliases=aliases, **kwargs)


class Parser(argparse.ArgumentParser):
    """Options answer to both spellings too: ``--base-model`` and ``--base_model``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _Commands)

    def add_argument(self, *names: Any, **kwargs: Any) -> argparse.Action:
        spelled = list(names)
        for name in names:
            if isinstance(name, str) and name.startswith("--") and _other_spelling(name[2:]) != name[2:]:
                spelled.append("--" + _other_spelling(name[2:]))
        return super().add_argument(*spelled, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="evalstack", description="Evaluate language models locally or on AWS.")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    catalog_commands.register(commands)
    evaluate_commands.register(commands)
    executions_commands.register(commands)
    pipeline_commands.register(commands)
    data_commands.register(commands)
    view_commands.register(commands)
    cache_commands.register(commands)
    return parser


def exit_code(err: BaseException) -> int:
    from botocore.exceptions import ClientError

    from evalstack.runtime.execution import ExecutionNotFoundError, FailedStatusError

    if isinstance(err, ExecutionNotFoundError | FileNotFoundError | LookupError):
        return EXIT_NOT_FOUND
    if isinstance(err, FailedStatusError):
        return EXIT_FAILED
    if isinstance(err, ClientError):
        code = str(err.response.get("Error", {}).get("Code", ""))
        return EXIT_NOT_FOUND if code in ("ResourceNotFound", "NoSuchKey", "NoSuchBucket") else EXIT_USAGE
    if isinstance(err, ValueError | TypeError):
        return EXIT_USAGE
    return EXIT_FAILED


def one_line(err: BaseException) -> str:
    """The error's message on one line; an unexpected error names its type."""
    from botocore.exceptions import ClientError

    text = re.sub(r"\s*\n\s*", " ", str(err)).strip()
    if isinstance(err, ValueError | LookupError | FileNotFoundError | RuntimeError | ClientError):
        return text
    return f"{type(err).__name__}: {text} (run again with --debug for the traceback)"


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # the process is this command (its script, or python -m): it ends when main returns
        # The interpreter's collections at exit walk every object the imports made (botocore, the
        # engine): about a quarter second of a small command, measured, spent freeing memory the OS
        # takes back anyway. Frozen objects skip them; Python promises no finalizer for what lives at exit.
        atexit.register(gc.freeze)
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug is accepted anywhere, not only before the command.
    debug = "--debug" in argv or os.environ.get("EVALSTACK_DEBUG", "") not in ("", "0")
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    try:
        return int(args.handler(args) or EXIT_OK)
    except KeyboardInterrupt:
        print("evalstack: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the one place that turns any error into one line and a code
        if debug:
            traceback.print_exc()
        print(f"evalstack: error: {one_line(err)}", file=sys.stderr)
        return exit_code(err)


if __name__ == "__main__":
    sys.exit(main())
