"""The ``evalstack`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from evalstack.cli import catalog_commands, evaluate_commands, executions_commands, pipeline_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evalstack", description="Evaluate language models locally or on AWS.")
    commands = parser.add_subparsers(dest="command", required=True)
    catalog_commands.register(commands)
    evaluate_commands.register(commands)
    executions_commands.register(commands)
    pipeline_commands.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        print(f"evalstack: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
