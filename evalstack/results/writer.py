"""Results files: results.json, samples.jsonl (streamed to a local file first) and report.md, each written
atomically."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from evalstack import storage
from evalstack.masking import mask, mask_value

try:  # optional, as for the dataset reader; without it streamed lines are json's, in the same compact form
    import orjson

    _fast_dumps: Any = orjson.dumps
    _FAST_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
except ImportError:  # pragma: no cover - depends on the installed extras
    _fast_dumps = None

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


_SAMPLE_ENCODER = json.JSONEncoder(sort_keys=True, allow_nan=False)  # built once: json.dumps builds one per call


def jsonl_line(record: dict[str, Any]) -> str:
    """One samples.jsonl line: sorted keys, NaN rejected, call details left out."""
    if not CALL_DETAIL_KEYS.isdisjoint(record):
        record = {key: value for key, value in record.items() if key not in CALL_DETAIL_KEYS}
    return _SAMPLE_ENCODER.encode(record) + "\n"


def streamed_line(record: dict[str, Any]) -> bytes:
    """One line of a streamed task's shard records and samples.jsonl (the same bytes, so the Report step
    copies an unchanged record's line): sorted keys and compact, by orjson, about ten times faster than
    json on these records, which matters at millions of them. A score that is not a finite number is
    rejected, as in ``jsonl_line``; orjson writes any other NaN or infinity (e.g. in a dataset's metadata)
    as null. What orjson cannot encode (non-string keys, integers beyond 64 bits) json writes."""
    for key, value in (record.get("scores") or {}).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"record {record.get('id')!r}: score {key!r} is {value}, not a finite number")
    if not CALL_DETAIL_KEYS.isdisjoint(record):
        record = {key: value for key, value in record.items() if key not in CALL_DETAIL_KEYS}
    if _fast_dumps is None:
        return _json_line(record)
    try:
        return _fast_dumps(record, option=_FAST_OPTIONS)
    except TypeError:  # what orjson cannot encode (integers beyond 64 bits, ...): json encodes it
        return _json_line(record)


def _json_line(record: dict[str, Any]) -> bytes:
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8") + b"\n"


class SamplesFile:
    """samples.jsonl written a block of records at a time to a local file (uploaded by the caller once
    complete).

    ``streamed``: lines are ``streamed_line``'s (a streamed task's), else ``jsonl_line``'s. ``observe``
    is called with each block of records as it is written, the line number (from 1) of its first and their
    scores a column per key when the writer was given them (else None), e.g. to digest the samples for the
    report page without reading the file again."""

    def __init__(
        self,
        path: Path,
        *,
        streamed: bool = False,
        observe: Callable[[int, Sequence[dict[str, Any]], Any], None] | None = None,
    ) -> None:
        self.path = path
        self.count = 0
        self._encode = streamed_line if streamed else _jsonl_bytes
        self._observe = observe
        self._handle: IO[bytes] | None = None

    def __enter__(self) -> SamplesFile:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("wb")
        return self

    def write_block(self, records: Sequence[dict[str, Any]], lines: Sequence[bytes | None], scores: Any = None) -> None:
        """Write ``records`` with one call; a line that is not None is the record's line already encoded (a
        shard's line the record was parsed from and left unchanged), written as it is. With no None among
        them, ``lines`` may also be pieces of whole lines (``ScoreBlock``). ``scores``: the records' scores a
        column per key, when the caller has them (passed on to ``observe``)."""
        assert self._handle is not None, "SamplesFile is written inside its with block"
        if None in lines:
            encode = self._encode
            lines = [encode(record) if line is None else line for record, line in zip(records, lines, strict=True)]
        self._handle.writelines(lines)  # type: ignore[arg-type]
        first = self.count + 1
        self.count += len(records)
        if self._observe is not None and records:
            self._observe(first, records, scores)

    def __exit__(self, *exc: object) -> None:
        assert self._handle is not None
        self._handle.close()


def _jsonl_bytes(record: dict[str, Any]) -> bytes:
    return jsonl_line(record).encode("utf-8")


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
