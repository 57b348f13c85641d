"""Spawned block-pool workers (the evaluation step's pool, ``evalstack.data.block_pool``) run the parent's
main file again, so a pool is used only where that cannot run a user's script twice: the CLI, ``python
-c``, an interactive session, a package's ``__main__``, evalstack's own modules; a plain script only when
it opts in with ``EVALSTACK_METRIC_WORKERS``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from evalstack.data import block_pool
from evalstack.metrics import pool as metrics_pool


def _python(args: list[str], cwd: Path, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` with ``EVALSTACK_METRIC_WORKERS`` unset unless ``env`` sets it."""
    environment = {k: v for k, v in os.environ.items() if k != metrics_pool.WORKERS_ENV} | env
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=environment, input=stdin, capture_output=True, text=True, timeout=120
    )


DECIDE = "from evalstack.data.block_pool import spawned_workers; print(spawned_workers(2))"


@pytest.mark.parametrize(
    ("how", "workers"),
    [("python -c", 2), ("stdin", 1), ("script", 1), ("script, opted in", 2), ("package __main__", 2), ("module", 1)],
)
def test_the_pool_is_used_only_where_no_user_script_runs_again(how: str, workers: int, tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    for path in (tmp_path / "script.py", tmp_path / "module.py", tmp_path / "pkg" / "__main__.py"):
        path.write_text(DECIDE + "\n")
    command, stdin, env = {
        "python -c": (["-c", DECIDE], None, {}),
        "stdin": (["-"], DECIDE, {}),
        "script": (["script.py"], None, {}),
        "script, opted in": (["script.py"], None, {metrics_pool.WORKERS_ENV: "2"}),
        "package __main__": (["-m", "pkg"], None, {}),
        "module": (["-m", "module"], None, {}),
    }[how]
    done = _python(command, tmp_path, stdin, **env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(workers)]


def test_the_variable_that_opts_in_is_the_metric_pools() -> None:
    assert block_pool.WORKERS_ENV == metrics_pool.WORKERS_ENV
