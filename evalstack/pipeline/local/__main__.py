"""``python -m evalstack.pipeline.local [--detach] [--warm] (ARN | --standby LOG)``: the runner's entry point
(see its module).

The client starts the runner as this package's ``__main__``, a module that imports nothing of ours until
it runs: the metric pools of a step start their workers with multiprocessing's ``spawn``, which imports the
main module of the process again.

``--detach`` forks away from the client before anything else is imported: the client waits for the
first process to exit, so it waits for an interpreter to start, not for the runner's imports as well.
``--warm`` (the client passes it when a step runs our entry point) forks the warm parent next, so its
imports overlap the runner's own. ``--standby``: see :mod:`evalstack.pipeline.local.standby`.
"""

import os
import sys

if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["--detach"]:
        if os.fork():
            os._exit(0)  # the client reaps this parent; the child is adopted by init
        os.setsid()
        argv = argv[1:]
    if argv[:1] == ["--warm"]:
        from evalstack.pipeline.local import warm

        warm.fork_server()
        argv = argv[1:]

    from evalstack.pipeline.local.runner import main

    sys.exit(main(argv))
