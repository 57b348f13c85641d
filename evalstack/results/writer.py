"""Results files: results.json, samples.jsonl (streamed to a local file first) and report.md, each written
atomically."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from evalstack import storage
from evalstack.masking import mask, mask_value

RESULTS_SCHEMA_VERSION = 1
# Libraries whose versions decide a score; recorded in every results.json.
TRACKED_LIBRARIES = (
    "evalstack", "scikit-learn", "sacrebleu", "rouge-score", "nltk", "bert-score", "math-verify", "sympy",
    "numpy", "scipy", "torch", "transformers",
)  # fmt: skip


def library_versions() -> dict[str, str]:
    out = {}
    for name in TRACKED_LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


@dataclass
class EvaluationResult:
    """What results.json holds for one model (candidate or base)."""

    eval_type: str
    name: str
    model: str
    role: str
    num_samples: int
    metrics: dict[str, float | None]
    dataset_sha256: str
    stderr: dict[str, float] = field(default_factory=dict)
    confidence_intervals: dict[str, list[float]] = field(default_factory=dict)
    subtasks: dict[str, dict[str, float]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    library_versions: dict[str, str] = field(default_factory=library_versions)
    schema_version: int = RESULTS_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dumps(data: Any) -> str:
    """Deterministic JSON: sorted keys, NaN rejected (a NaN score is a bug, not a result), secrets masked."""
    return json.dumps(mask_value(data), indent=2, sort_keys=True, allow_nan=False) + "\n"


# Keys a task sets on the first record of each model call to carry that call's details to aggregation
# (how the backend tokenized or which logprobs mode a server offered). They describe the call, not the
# sample, and which record carries them depends on chunking, so samples.jsonl leaves them out: it stays
# byte-identical across 1 and N shards.
CALL_DETAIL_KEYS = frozenset({"tokenization"})


def jsonl_line(record: dict[str, Any]) -> str:
    """One samples.jsonl line: sorted keys, NaN rejected, call details left out."""
    sample = {key: value for key, value in record.items() if key not in CALL_DETAIL_KEYS}
    return json.dumps(sample, sort_keys=True, allow_nan=False) + "\n"


class SamplesFile:
    """samples.jsonl written record by record to a local file (uploaded by the caller once complete)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._handle: IO[str] | None = None

    def __enter__(self) -> SamplesFile:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("w", encoding="utf-8")
        return self

    def write(self, record: dict[str, Any]) -> None:
        assert self._handle is not None, "SamplesFile is written inside its with block"
        self._handle.write(jsonl_line(record))
        self.count += 1

    def __exit__(self, *exc: object) -> None:
        assert self._handle is not None
        self._handle.close()


def _fmt(value: float | None) -> str:
    # A metric with no parsed answer is null in results.json: shown, never dropped.
    if value is None:
        return "null"
    return "nan" if math.isnan(value) else f"{value:.4f}"


def render_table(result: EvaluationResult, comparison: dict[str, Any] | None = None) -> str:
    """A Markdown table of the metrics; with a comparison, base and improvement columns too."""
    lines = []
    if comparison:
        base = comparison.get("base", {})
        improvement = comparison.get("improvements", {})
        lines += ["| metric | fine-tuned | base | improvement |", "|---|---:|---:|---:|"]
        for name, value in sorted(result.metrics.items()):
            b, d = base.get(name), improvement.get(name)
            lines.append(
                f"| {name} | {_fmt(value)} | {'' if b is None else _fmt(b)} | {'' if d is None else f'{d:+.4f}'} |"
            )
    else:
        lines += ["| metric | value | stderr | 95% CI |", "|---|---:|---:|---|"]
        for name, value in sorted(result.metrics.items()):
            se = result.stderr.get(name)
            ci = result.confidence_intervals.get(name)
            ci_text = f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""
            lines.append(f"| {name} | {_fmt(value)} | {'' if se is None else _fmt(se)} | {ci_text} |")
    return "\n".join(lines) + "\n"


def render_report(result: EvaluationResult, comparison: dict[str, Any] | None = None) -> str:
    parts = [
        f"# Evaluation report: {result.name}\n",
        f"- type: {result.eval_type}\n- model: {result.model}\n- samples: {result.num_samples}\n"
        f"- dataset sha256: {result.dataset_sha256}\n",
        "\n## Metrics\n\n" + render_table(result, comparison),
    ]
    if result.subtasks:
        metric_names = sorted({k for values in result.subtasks.values() for k in values})
        rows = ["| subtask | " + " | ".join(metric_names) + " |", "|---|" + "---:|" * len(metric_names)]
        for subtask, values in sorted(result.subtasks.items()):
            cells = " | ".join(_fmt(values[m]) if m in values else "" for m in metric_names)
            rows.append(f"| {subtask} | {cells} |")
        parts.append("\n## Subtasks\n\n" + "\n".join(rows) + "\n")
    if comparison and comparison.get("significance"):
        parts.append("\n## Significance\n\n```json\n" + dumps(comparison["significance"]) + "```\n")
    return mask("".join(parts))


def role_files(output_uri: str, result: EvaluationResult) -> dict[str, str]:
    """A role's files besides samples.jsonl (streamed by :class:`SamplesFile`), URI to content: serialised
    up front so a NaN fails before any write."""
    return {storage.join(output_uri, "results.json"): dumps(result.to_dict())}
