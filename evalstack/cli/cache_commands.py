"""``evalstack cache info|clear``: the response cache of this machine (see :mod:`evalstack.models.cache`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _size(count: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def _info(args: argparse.Namespace) -> int:
    from evalstack.models.cache import cache_info

    info = cache_info(args.path)
    print(f"Cache:   {info.path}")
    if not info.exists:
        print("Entries: 0 (no cache file yet)")
        return 0
    print(f"Entries: {info.entries}")
    print(f"Size:    {_size(info.size_bytes)} ({info.size_bytes} bytes)")
    return 0


def _clear(args: argparse.Namespace) -> int:
    from evalstack.models.cache import clear_cache, default_cache_path

    removed = clear_cache(args.path)
    if not removed:
        print(f"no cache at {args.path or default_cache_path()}")
        return 0
    for path in removed:
        print(f"removed {path}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    cache = commands.add_parser("cache", help="inspect or clear the model response cache")
    actions = cache.add_subparsers(dest="cache_command", required=True)
    for name, handler, text in (
        ("info", _info, "show the cache file, its entries and size"),
        ("clear", _clear, "remove the cache (run it while no evaluation is running)"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("--path", type=Path, help="cache file (default: $EVALSTACK_CACHE or $EVALSTACK_HOME/cache)")
        action.set_defaults(handler=handler)
