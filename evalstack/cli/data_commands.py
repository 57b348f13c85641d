"""``evalstack data fetch NAME [--root DIR]``: fill a local benchmark data root from the HF hub."""

from __future__ import annotations

import argparse

from evalstack.benchmarks.source import DATA_ENV


def _fetch(args: argparse.Namespace) -> None:
    from evalstack.benchmarks.fetch import default_root, fetch

    root = args.root or default_root()
    if not root:
        raise ValueError(f"--root: name the data root folder to fill, or set {DATA_ENV} to it")
    written = fetch(args.name, root)
    for relpath in written:
        print(relpath)
    print(f"{len(written)} file(s) written under {root}; read them with {DATA_ENV}={root}")


def register(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="benchmark data").add_subparsers(required=True)
    fetch_parser = data.add_parser(
        "fetch",
        help="write a benchmark's files into a local data root from the HF datasets at their pinned revisions",
    )
    fetch_parser.add_argument("name", help="benchmark name, e.g. GSM8K")
    fetch_parser.add_argument("--root", help=f"the data root folder (default: ${DATA_ENV})")
    fetch_parser.set_defaults(handler=_fetch)
