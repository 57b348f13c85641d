"""Pinned revisions of the HF datasets equivalents (``EVALSTACK_BENCHMARK_DATA=hf``).

A revision is a dataset repository commit sha. Only shas found pinned in stored public code are
recorded here, each with where it was found (the code search names no repository for these
excerpts, so the note quotes the surrounding code); none was checked against the hub from here.
For the others (``ehovy/race``, ``baber/piqa``) set ``EVALSTACK_HF_REVISION_<BENCHMARK>``
(e.g. ``EVALSTACK_HF_REVISION_RACE``) to the commit to pin; the variable also overrides a pin.
An unpinned dataset is refused, never loaded at a moving ``main``.
"""

from __future__ import annotations

import os
import re

from evalstack.benchmarks.source import HfDataset

PINNED_REVISIONS: dict[str, str] = {
    # Also in a public benchmark table `DATASETS = {"arc": ("allenai/ai2_arc", ...), ...}` that pins
    # winogrande, gsm8k, super_glue and ai2_arc below, and in an `MMLUDataSetProvider(DataSource)`.
    "cais/mmlu": "c30699e8356da336a370243923dbaf21066bb9fe",
    # The `DATASETS` table above, and `load_dataset("openai/gsm8k", "main", revision=...,
    # split="test")` in a script checking the 1,319 test rows.
    "openai/gsm8k": "740312add88f781978c0658806c59bc2815b9866",
    # The `DATASETS` table, `ARC_REV` in a `build_credible_dataset.py`, and a fetch script
    # loading "ARC-Challenge" at this revision.
    "allenai/ai2_arc": "210d026faf9955653af8916fad021475a3f00453",
    # The `DATASETS` table ("boolq": ("aps/super_glue", ...)).
    "aps/super_glue": "3de24cf8022e94f4ee4b9d55a6f539891524d646",
    # The `DATASETS` table, and a table reading "winogrande_xl/train-00000-of-00001.parquet" at it.
    "allenai/winogrande": "01e74176c63542e6b0bcb004dcdea22d94fb67b5",
    # `DATASET_REVISION` of an "lm-eval-compatible HellaSwag handoff evaluation" script
    # (load_dataset("Rowan/hellaswag", revision=DATASET_REVISION, split="validation")).
    "Rowan/hellaswag": "218ec52e09a7e7462a5400043bb9a69a41d06b76",
    # A dataset note: `REV = "..."  # main at the check date`, 817 validation rows for both the
    # "generation" and "multiple_choice" configs.
    "truthfulqa/truthful_qa": "741b8276f2d1982aa3d5b832d3ee81ed3b896490",
    # `REVISION` of the Marin task-compendium recipe `HFSource("EleutherAI/hendrycks_math", REVISION,
    # "algebra", "train")` (parquet layout `algebra/train-00000-of-00001.parquet`).
    "EleutherAI/hendrycks_math": "21a5633873b6a120296cce3e2df9d5550074f4a3",
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
