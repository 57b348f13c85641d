"""A process pool for the per-sample CPU metrics (ROUGE, METEOR, sentence BLEU) of a step.

Each sample's value depends on that sample alone, so a chunk is cut into contiguous slices, one per
worker, and the slices' results are concatenated in order: the same floats in the same order as the
in-process computation. One pool serves a whole step process (``step_pool``), started on the first
chunk big enough to pay for it and shut down when the process ends.

Workers are started with ``spawn``: a fresh interpreter with the step's own environment and nothing
else of the parent's memory, which also holds inside a step forked from the local runner's warm parent
(``evalstack.pipeline.local.warm``, whose memory is the runner's preload, and where ``fork`` would copy a
threaded process).
"""

from __future__ import annotations

import itertools
import multiprocessing
import multiprocessing.util
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from evalstack.catalog.hyperparameters import Hyperparameters

WORKERS_ENV = "EVALSTACK_METRIC_WORKERS"
# Below this many samples per worker a chunk is scored in-process: pickling and start-up would
# cost more than they save, and a small run never starts a pool at all.
MIN_SAMPLES_PER_WORKER = 256

Samples = list[dict[str, float]]
SamplesFn = Callable[[Sequence[str], Any, Hyperparameters], Samples]


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, as a container's CPU set limits it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def worker_count() -> int:
    """Workers for the step's pool: every available core, or ``EVALSTACK_METRIC_WORKERS`` (1: in-process)."""
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if not raw:
        return available_cores()
    try:
        count = int(raw)
    except ValueError:
        raise ValueError(f"{WORKERS_ENV}: {raw!r} is not a whole number of worker processes") from None
    if count < 1:
        raise ValueError(f"{WORKERS_ENV}: {count} must be at least 1 (1 scores in-process)")
    return count


def _slices(n: int, parts: int) -> list[slice]:
    """``parts`` contiguous slices covering ``range(n)``, sizes differing by at most one."""
    size, extra = divmod(n, parts)
    bounds = [0]
    for i in range(parts):
        bounds.append(bounds[-1] + size + (i < extra))
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


class SamplePool:
    """Scores per-sample metrics over ``workers`` processes, started lazily and reused across chunks."""

    def __init__(self, workers: int, min_samples_per_worker: int = MIN_SAMPLES_PER_WORKER) -> None:
        if workers < 1:
            raise ValueError(f"workers: {workers} must be at least 1")
        self.workers = workers
        self.min_samples_per_worker = min_samples_per_worker
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self._executor is not None

    def pooled(self, n: int) -> bool:
        """Whether a chunk of ``n`` samples goes to the pool rather than staying in-process."""
        return self.workers > 1 and n >= self.workers * self.min_samples_per_worker

    def score(self, fn: SamplesFn, predictions: Sequence[str], references: Any, hp: Hyperparameters) -> Samples:
        n = len(predictions)
        if len(references) != n:
            raise ValueError(f"{n} predictions but {len(references)} references")
        if not self.pooled(n):
            return fn(predictions, references, hp)
        parts = _slices(n, self.workers)
        futures = [self._pool().submit(fn, list(predictions[s]), list(references[s]), hp) for s in parts]
        return [sample for future in futures for sample in future.result()]

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                context = multiprocessing.get_context("spawn")
                self._executor = ProcessPoolExecutor(self.workers, mp_context=context)
                print(f"metrics: scoring per-sample metrics with {self.workers} worker processes", file=sys.stderr)
            return self._executor

    def shutdown(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


_step_pool: SamplePool | None = None
_step_lock = threading.Lock()


def step_pool() -> SamplePool:
    """The pool of this step process, sized on first use and shut down when the process exits."""
    global _step_pool
    with _step_lock:
        if _step_pool is None:
            _step_pool = SamplePool(worker_count())
            # multiprocessing's exit hook runs this both in a main process and in a step forked
            # as a multiprocessing child (the warm runner), before it joins child processes.
            multiprocessing.util.Finalize(None, _step_pool.shutdown, exitpriority=100)
        return _step_pool
