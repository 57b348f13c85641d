"""``python -m evalstack.pipeline.local --detach ARN``: the runner's entry point (see its module).

The client starts the runner as this package's ``__main__`` so that the step processes the runner forks
through multiprocessing (:mod:`evalstack.pipeline.local.warm`) do not import the runner again as their
own main module.
"""

import sys

from evalstack.pipeline.local.runner import main

if __name__ == "__main__":
    sys.exit(main())
