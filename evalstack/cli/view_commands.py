"""``evalstack view``: browse the current backend's executions in a local, read-only web page."""

from __future__ import annotations

import argparse


def _view(args: argparse.Namespace) -> int:
    # Imported here: the viewer draws with matplotlib, which no other command needs to load.
    from evalstack.view.server import ViewServer, backend_executions

    server = ViewServer(backend_executions(args.region), port=args.port)
    print(f"evalstack view: serving {server.url} (read-only; Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    view = commands.add_parser("view", help="browse executions, reports, comparisons and histories in a browser")
    view.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    view.add_argument("--region", help="AWS region (SageMaker backend)")
    view.set_defaults(handler=_view)
