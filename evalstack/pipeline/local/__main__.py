"""``python -m evalstack.pipeline.local [--detach] ARN``: the runner's entry point (see its module).

The client starts the runner as this package's ``__main__`` so that the step processes the runner forks
through multiprocessing (:mod:`evalstack.pipeline.local.warm`) do not import the runner again as their
own main module.

``--detach`` forks away from the client before anything else is imported: the client waits for the
first process to exit, so it waits for an interpreter to start, not for the runner's imports as well.
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

    from evalstack.pipeline.local.runner import main

    sys.exit(main(argv))
