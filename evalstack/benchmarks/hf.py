"""Pinned revisions of the HF datasets equivalents (``EVALSTACK_BENCHMARK_DATA=hf``).

A revision is a dataset repository commit sha. Only shas that were checked are recorded here;
for the others set ``EVALSTACK_HF_REVISION_<BENCHMARK>`` (e.g. ``EVALSTACK_HF_REVISION_GSM8K``)
to the commit to pin. An unpinned dataset is refused, never loaded at a moving ``main``.
"""

from __future__ import annotations

import os
import re

from evalstack.benchmarks.source import HfDataset

PINNED_REVISIONS: dict[str, str] = {
    "cais/mmlu": "c30699e8356da336a370243923dbaf21066bb9fe",
}

_SHA = re.compile(r"^[0-9a-f]{40}$")


def hf_table(benchmark_key: str, path: str, name: str | None, split: str) -> HfDataset:
    env = f"EVALSTACK_HF_REVISION_{benchmark_key.upper()}"
    revision = os.environ.get(env) or PINNED_REVISIONS.get(path)
    if not revision:
        raise ValueError(f"no pinned revision for HF dataset {path!r}: set {env} to a 40-hex commit sha")
    if not _SHA.match(revision):
        raise ValueError(f"{env}: {revision!r} is not a 40-hex commit sha")
    return HfDataset(path, name, split, revision)
