"""Both cores for one pass over a JSON Lines file: worker processes parse and check blocks and map them.

The reading process reads the file in blocks (hashing them and counting lines, so the sha256 and line
numbers are its own) and sends each block's bytes to a worker, which parses it, builds its records
(``JsonlRows.parse_block``, ``RecordBuilder.build_block``) and applies the caller's function, e.g. scoring
and encoding the block's records; results come back in file order, a few blocks ahead at most, so memory
stays bounded. A block whose worker raised is done again in the reading process, which knows what came
before it: its error is the row path's exactly.

Workers are started with ``spawn``, as the metric pool's are (``evalstack.metrics.pool``): a step forked
from the local runner's warm parent must not fork a copy of a threaded process. A spawned worker runs
the caller's ``__main__`` file again before it starts (as ``__mp_main__``), so a process whose main file
is a user's script uses workers only when asked (see ``spawn_is_safe``).
"""

from __future__ import annotations

import gc
import io
import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalstack.data.records import RecordBlock, RecordBuilder
from evalstack.data.text_rows import HashedLines, JsonlRows
from evalstack.spec import DatasetSpec

# Below this size a pass stays in one process: starting workers (each imports the engine) would cost
# more than they save.
POOL_MIN_BYTES = 64 * 1024**2
AHEAD = 3  # blocks in flight per worker
# evalstack.metrics.pool's variable (a layer data does not import): it sets the workers of every pool.
WORKERS_ENV = "EVALSTACK_METRIC_WORKERS"


@dataclass(frozen=True)
class BlockTally:
    """What the reader's summary needs of blocks: records read and yielded, the first yielded record's line
    without a prompt and without a response, and whether a yielded record has no reference."""

    read: int
    yielded: int
    no_prompt: int | None
    no_response: int | None
    no_reference: bool

    @classmethod
    def of(cls, block: RecordBlock, read: int) -> BlockTally:
        return cls(
            read=read,
            yielded=len(block),
            no_prompt=block.lines[block.prompts.index(None)] if None in block.prompts else None,
            no_response=block.lines[block.responses.index(None)] if None in block.responses else None,
            no_reference=None in block.references,
        )

    def then(self, later: BlockTally) -> BlockTally:
        """This tally followed by ``later``'s."""
        return BlockTally(
            read=self.read + later.read,
            yielded=self.yielded + later.yielded,
            no_prompt=self.no_prompt if self.no_prompt is not None else later.no_prompt,
            no_response=self.no_response if self.no_response is not None else later.no_response,
            no_reference=self.no_reference or later.no_reference,
        )


class BlockPool:
    """``workers`` processes that parse, check and map the blocks of one pass (see the module docstring).

    ``make_fn`` (picklable, e.g. a module-level function or a partial of one) makes, in each worker, the
    function applied to its blocks: the same function as the one the reading process applies."""

    def __init__(
        self,
        workers: int,
        spec: DatasetSpec,
        make_fn: Callable[[], Callable[[RecordBlock], Any]],
    ) -> None:
        self.workers = workers
        self.spec = spec
        self.make_fn = make_fn

    def wanted(self, size: int) -> bool:
        return self.workers > 1 and size >= POOL_MIN_BYTES

    def results(
        self, rows: JsonlRows, builder: RecordBuilder, fn: Callable[[RecordBlock], Any]
    ) -> Iterator[tuple[BlockTally, Any]]:
        """Each block's tally and ``fn`` of it, in file order."""
        context = multiprocessing.get_context("spawn")
        print(f"data: parsing and checking blocks with {self.workers} worker processes", file=sys.stderr)
        executor = ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=_start, initargs=(self.spec, self.make_fn)
        )
        pending: deque[tuple[int, bytes, Future[tuple[BlockTally, Any]]]] = deque()
        read = 0  # records of the blocks already returned
        try:
            blocks = rows.lines.blocks()
            while True:
                for number, raw in blocks:
                    pending.append((number, raw, executor.submit(_work, number, raw)))
                    if len(pending) >= AHEAD * self.workers:
                        break
                if not pending:
                    return
                number, raw, future = pending.popleft()
                try:
                    tally, value = future.result()
                # Bad data (a DatasetError, or a scoring ValueError such as ModelNeeded): done again here, where
                # what came before is known, so the error is exactly the row path's.
                except ValueError:
                    block = builder.build_block(*rows.parse_block(number, raw, first=read == 0))
                    tally, value = BlockTally.of(block, len(block)), fn(block)
                read += tally.read
                yield tally, value
        finally:
            executor.shutdown(wait=True, cancel_futures=True)


def spawn_is_safe() -> bool:
    """Whether workers spawned from this process start without running any of the user's code again.

    ``multiprocessing``'s spawn re-imports the parent's main module in every worker: a module run with
    ``python -m`` (unless it is a package's ``__main__``, which it skips) and a main script, run as
    ``__mp_main__``. A script that calls ``evaluate()`` at top level without an ``if __name__ ==
    "__main__":`` guard would then evaluate again in each worker, and whether a script has that guard
    cannot be known short of reading it, so a script's process stays single-process unless it opts in.
    Safe: no main file at all (an interactive session, ``python -c``, a notebook kernel, whose user
    namespace stands in as ``__main__``), a package's ``__main__``, evalstack's own modules, and the
    ``evalstack`` console script (pip's wrapper, which guards its call of the CLI)."""
    main = sys.modules.get("__main__")
    if main is None:
        return True
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None:  # python -m NAME
        return name.endswith("__main__") or name.split(".")[0] == "evalstack"
    path = getattr(main, "__file__", None)
    if path is None:
        return True
    entry = getattr(main, "main", None)
    return Path(path).name == "evalstack" and getattr(entry, "__module__", None) == "evalstack.cli.main"


def spawned_workers(workers: int) -> int:
    """``workers`` when spawning them is safe (``spawn_is_safe``) or ``EVALSTACK_METRIC_WORKERS`` is set (a
    script's opt-in, as its guard cannot be seen), else 1."""
    return workers if os.environ.get(WORKERS_ENV, "").strip() or spawn_is_safe() else 1


_worker: tuple[JsonlRows, RecordBuilder, Callable[[RecordBlock], Any]] | None = None


def _start(spec: DatasetSpec, make_fn: Callable[[], Callable[[RecordBlock], Any]]) -> None:
    global _worker
    rows = JsonlRows(HashedLines(io.BytesIO(), spec.uri), spec.uri)
    _worker = (rows, RecordBuilder(spec.columns, spec.uri), make_fn())
    gc.freeze()  # what the worker imported: the collector need not walk it for every block's objects


def _work(number: int, raw: bytes) -> tuple[BlockTally, Any]:
    assert _worker is not None, "a block pool worker is started by _start"
    rows, builder, fn = _worker
    # Whether a row came before is known only to the reading process; it matters only for an error's hint,
    # and a block that fails is done again there.
    block = builder.build_block(*rows.parse_block(number, raw, first=number == 1))
    return BlockTally.of(block, len(block)), fn(block)
