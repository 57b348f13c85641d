"""The report page's digest of samples.jsonl: per-metric value counts and the few samples it lists (the
lowest-scoring, the slowest and those the base scored higher).

It is fed by the Report step a block of records at a time as it writes samples.jsonl (``SamplesFile``'s
``observe``), so the page needs no second pass over a file of millions of lines, or one record at a time
by reading the file back (``digest_samples``, to render the page again). Which metric is primary is known only once the
results are aggregated, so the lists are kept for every metric (a few rows each) and the primary's are
picked at the end.
"""

from __future__ import annotations

import heapq
import json
import math
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import contains, itemgetter
from typing import Any

from evalstack.data.text_rows import parse_json
from evalstack.results.sample_timings import SlowSample, TimingDigest

LISTED = 10  # samples per list
MAX_ANSWER_CHARS = 240
_NAN = math.nan
_NO_ID = -1  # no object hashes to -1 in CPython (hash() turns it into -2)


@dataclass(order=True)
class ListedSample:
    line: int  # 1-based line of samples.jsonl
    id: str = field(compare=False)
    subtask: str | None = field(compare=False)
    score: float | None = field(compare=False)
    target: str = field(compare=False, default="")
    answer: str = field(compare=False, default="")
    seconds: float | None = field(compare=False, default=None)  # model time, from sample_timings.jsonl
    requests: int | None = field(compare=False, default=None)  # model answers it used, likewise
    base_score: float | None = field(compare=False, default=None)


@dataclass
class SampleDigest:
    primary: str | None
    most_wrong: list[ListedSample] = field(default_factory=list)
    slowest: list[ListedSample] = field(default_factory=list)
    regressed: list[ListedSample] = field(default_factory=list)
    score_counts: dict[str, Counter[float]] = field(default_factory=dict)
    samples: int = 0
    timings: TimingDigest | None = None  # None: the execution recorded no sample times


def primary_metric(results: Mapping[str, Any]) -> str | None:
    """The declared primary metric (details.primary_metric), else the first non-null metric by name."""
    metrics = results.get("metrics") or {}
    declared = (results.get("details") or {}).get("primary_metric", results.get("primary_metric"))
    if isinstance(declared, str) and declared in metrics:
        return declared
    named = sorted(k for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool))
    return named[0] if named else None


def text_of(value: Any) -> str:
    """A value as the page shows it: text as it is, anything else as JSON, cut to MAX_ANSWER_CHARS."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= MAX_ANSWER_CHARS else text[: MAX_ANSWER_CHARS - 1] + "…"


def _answer(record: Mapping[str, Any]) -> str:
    extracted = record.get("extracted")
    response = record.get("response")
    if isinstance(extracted, Mapping) and response is not None:
        return f"{text_of(response)} → {text_of(extracted)}"
    return text_of(response if response is not None else extracted)


def _margin(record: Mapping[str, Any]) -> float:
    """How sure a log-likelihood answer was of a wrong choice (0 for generated answers)."""
    lls, gold = record.get("loglikelihoods"), record.get("target")
    if not isinstance(lls, list) or not isinstance(gold, int) or not 0 <= gold < len(lls) or len(lls) < 2:
        return 0.0
    return max(v for i, v in enumerate(lls) if i != gold) - lls[gold]


def _finite(value: Any) -> float | None:
    """A per-sample score as a float; None when it is no number or not finite (a judge's unparsed score)."""
    if isinstance(value, int | float):
        number = float(value)
        if math.isfinite(number):
            return number
    return None


def _listed(
    number: int, record: Mapping[str, Any], score: float | None, base_score: float | None, timing: SlowSample | None
) -> ListedSample:
    return ListedSample(
        line=number,
        id=str(record.get("id")),
        subtask=record.get("subtask"),
        score=score,
        target=text_of(record.get("target", record.get("reference"))),
        answer=_answer(record),
        seconds=timing.seconds if timing is not None else None,
        requests=timing.requests if timing is not None else None,
        base_score=base_score,
    )


class BaseScores:
    """The base's per-sample scores of every metric, by line, for the regressed list: the base role is
    merged first, so its scores are in hand when the candidate's records flow. Costs 8 bytes per sample
    and metric, plus 8 per sample for its id's hash (the comparison's paired tests already hold 16 per
    sample and metric). Both roles list the same items in the same order; a base in another order is
    looked up by id through an index built on first need."""

    def __init__(self) -> None:
        self._ids = array("q")  # hash of each line's id
        self._values: dict[str, array[float]] = {}  # per metric, NaN where a line has no finite score
        self._index: dict[int, int] | None = None

    def add_block(self, first: int, records: Sequence[Mapping[str, Any]], scores: Any = None) -> None:
        """``add`` for records on consecutive lines from ``first`` (``scores``: as ``SampleDigester``'s)."""
        for number, record in enumerate(records, start=first):
            self.add(number, record)

    def add(self, number: int, record: Mapping[str, Any]) -> None:
        """The record on line ``number`` (from 1, in order) of the base's samples.jsonl."""
        while len(self._ids) < number - 1:  # a blank line: no sample there
            self._ids.append(_NO_ID)
            for column in self._values.values():
                column.append(_NAN)
        line = len(self._ids)
        self._ids.append(hash(record["id"]))
        for metric, value in (record.get("scores") or {}).items():
            column = self._values.get(metric)
            if column is None:
                column = self._values[metric] = array("d", [_NAN]) * line
            score = _finite(value)
            column.append(_NAN if score is None else score)
        for column in self._values.values():
            if len(column) == line:  # no score of that metric on this line
                column.append(_NAN)

    def position(self, line: int, record_id: Any) -> int | None:
        """Where the base holds the sample of ``record_id`` (0-based), expected at ``line``; None if nowhere."""
        key = hash(record_id)
        if line < len(self._ids) and self._ids[line] == key:
            return line
        if self._index is None:
            self._index = {hashed: at for at, hashed in enumerate(self._ids)}  # the last of a repeated id
        return self._index.get(key)

    def score(self, position: int | None, metric: str | None) -> float | None:
        column = self._values.get(metric) if position is not None and metric is not None else None
        if column is None:
            return None
        value = column[position]  # type: ignore[index]
        return None if math.isnan(value) else value


@dataclass
class _Kept:
    """What a listed row needs besides the metric: the record (a few of them are kept) and where the base
    holds it."""

    number: int
    record: Mapping[str, Any]
    base_at: int | None
    timing: SlowSample | None


class SampleDigester:
    """Builds the digest from records in samples.jsonl order: ``add(line_number, record)`` for each, then
    ``result(primary)``. Holds per-metric value counts and at most LISTED records per list and metric."""

    def __init__(self, timings: TimingDigest | None = None, base: BaseScores | None = None) -> None:
        self.samples = 0
        self.timings = timings
        self.base = base
        self._slow: dict[int, SlowSample] = {s.line: s for s in timings.slowest} if timings is not None else {}
        self._counts: dict[str, Counter[float]] = {}
        # Per metric, min-heaps of (key..., _Kept) keeping the LISTED largest keys (keys are unique).
        self._wrong: dict[str, list[tuple[Any, ...]]] = {}
        self._regressed: dict[str, list[tuple[Any, ...]]] = {}
        self._found: dict[int, _Kept] = {}

    def add(self, number: int, record: Mapping[str, Any]) -> None:
        self.samples += 1
        base_at = self.base.position(number - 1, record.get("id")) if self.base is not None else None
        timing = self._slow.get(number) if self._slow else None
        kept: _Kept | None = None
        for metric, value in (record.get("scores") or {}).items():
            # At millions of samples this loop is the digest's cost: plain floats take the short path.
            if value.__class__ is float and value - value == 0.0:  # finite
                score = value
            else:
                score = _finite(value)
                if score is None:
                    continue
            counts = self._counts.get(metric)
            if counts is None:
                counts = self._counts[metric] = Counter()
            counts[score] += 1
            if score != 1.0:
                heap = self._wrong.get(metric)
                if heap is None:
                    heap = self._wrong[metric] = []
                # Lowest score first; among equals, the most confident wrong answer, then file order: lines
                # come in order, so a line that only ties the least kept one is not kept either.
                if len(heap) < LISTED or -score > heap[0][0] or (-score == heap[0][0] and _margin(record) > heap[0][1]):
                    kept = kept or _Kept(number, record, base_at, timing)
                    _keep(heap, (-score, _margin(record), -number), kept)
            if base_at is not None:
                base_score = self.base.score(base_at, metric)  # type: ignore[union-attr]
                if base_score is not None and base_score > score:
                    kept = kept or _Kept(number, record, base_at, timing)
                    _keep(self._regressed.setdefault(metric, []), (base_score - score, -number), kept)
        if timing is not None and timing.id == str(record.get("id")):
            self._found[number] = kept or _Kept(number, record, base_at, timing)

    def add_block(
        self, first: int, records: Sequence[Mapping[str, Any]], scores: Mapping[str, Sequence[float]] | None = None
    ) -> None:
        """``add`` for records on consecutive lines from ``first``, with the same digest. A block whose
        records all have finite float scores under the same keys (and no base to compare with) is counted a
        column at a time, and only the rows that could enter a most-wrong list go through Python: from
        ``scores``, those columns when the caller has them, so that ``records`` are read only for those
        rows."""
        columns = None
        if self.base is None:
            columns = scores if scores is not None else _score_columns(records)
        if columns is None:
            for number, record in enumerate(records, start=first):
                self.add(number, record)
            return
        self.samples += len(records)
        kept: dict[int, _Kept] = {}
        for metric, values in columns.items():
            counts = self._counts.get(metric)
            if counts is None:
                counts = self._counts[metric] = Counter()
            counts.update(values)  # in first-seen order, as add() counts them
            heap = self._wrong.get(metric)
            for at in _wrong_candidates(values, heap, records):
                heap = self._wrong.setdefault(metric, [])
                score, record, number = values[at], records[at], first + at
                # add()'s test and key, in the same line order
                if len(heap) < LISTED or -score > heap[0][0] or (-score == heap[0][0] and _margin(record) > heap[0][1]):
                    entry = kept.get(at) or kept.setdefault(at, _Kept(number, record, None, self._slow.get(number)))
                    _keep(heap, (-score, _margin(record), -number), entry)
        last = first + len(records)
        for number, timing in self._slow.items():
            if first <= number < last and timing.id == str(records[number - first].get("id")):
                at = number - first
                self._found[number] = kept.get(at) or _Kept(number, records[at], None, timing)

    def result(self, primary: str | None) -> SampleDigest:
        score_counts: dict[str, Counter[float]] = {}
        for metric, counts in self._counts.items():
            rounded = score_counts[metric] = Counter()
            for value, n in counts.items():
                rounded[round(value, 6)] += n
        return SampleDigest(
            primary,
            most_wrong=[self._row(e[-1], primary) for e in sorted(self._wrong.get(primary or "", []), reverse=True)],
            slowest=[self._row(self._found[s.line], primary) for s in self._slow.values() if s.line in self._found],
            regressed=[self._row(e[-1], primary) for e in sorted(self._regressed.get(primary or "", []), reverse=True)],
            score_counts=score_counts,
            samples=self.samples,
            timings=self.timings,
        )

    def _row(self, kept: _Kept, primary: str | None) -> ListedSample:
        score = _finite((kept.record.get("scores") or {}).get(primary)) if primary else None
        base_score = self.base.score(kept.base_at, primary) if self.base is not None else None
        return _listed(kept.number, kept.record, score, base_score, kept.timing)


def _score_columns(records: Sequence[Mapping[str, Any]]) -> dict[str, list[float]] | None:
    """Each metric's scores over the records, when every record has finite float scores under the same
    keys in the same order; else None."""
    if not records:
        return {}
    try:
        scores = list(map(itemgetter("scores"), records))
        # The first record's keys, each found in every record, and as many keys in each: the same keys.
        keys = list(scores[0])
        if set(map(len, scores)) != {len(keys)}:
            return None
        columns = {metric: list(map(itemgetter(metric), scores)) for metric in keys}
    except (KeyError, TypeError):  # no scores, not a dict, or a key missing
        return None
    for values in columns.values():
        if set(map(type, values)) != {float} or not all(map(math.isfinite, values)):
            return None
    return columns


def _wrong_candidates(
    values: Sequence[float], heap: list[tuple[Any, ...]] | None, records: Sequence[Mapping[str, Any]]
) -> list[int]:
    """Positions of the values that could enter ``heap`` (a most-wrong list) in add(): a score other than
    1.0 while it is not full, then one below its least wrong, or equal to it when a margin can break the
    tie (a record without log-likelihoods has margin 0.0). The heap's threshold only rises, so testing
    against it at the block's start keeps every row that could enter, and add()'s own test then decides
    each one in order."""
    import numpy as np

    column = np.array(values)
    candidate = column != 1.0
    if heap is not None and len(heap) >= LISTED:
        least, margin = -heap[0][0], heap[0][1]
        tied = column == least
        if margin >= 0.0 and _none_have(records, np.flatnonzero(tied).tolist(), "loglikelihoods"):
            tied = False
        candidate &= (column < least) | tied
    return np.flatnonzero(candidate).tolist()


def _none_have(records: Sequence[Mapping[str, Any]], positions: list[int], key: str) -> bool:
    """Whether none of the records at ``positions`` has ``key``. Records parsed only when asked for (the
    Report step's, from score columns) may tell for the whole block without parsing any (``may_have``)."""
    may_have = getattr(records, "may_have", None)
    if positions and may_have is not None and not may_have(key):
        return True
    return not any(map(contains, map(records.__getitem__, positions), repeat(key)))


def _keep(heap: list[tuple[Any, ...]], key: tuple[Any, ...], kept: _Kept) -> None:
    if len(heap) < LISTED:
        heapq.heappush(heap, (*key, kept))
    elif key > heap[0][:-1]:
        heapq.heapreplace(heap, (*key, kept))


def _lines(lines: Iterable[str]) -> Iterable[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield number, parse_json(line)  # orjson: millions of lines at scale


def digest_samples(
    lines: Iterable[str],
    primary: str | None,
    base_lines: Iterable[str] | None = None,
    timings: TimingDigest | None = None,
) -> SampleDigest:
    """The digest from samples.jsonl read back (and the base's), e.g. to render a page again.
    ``timings`` (from sample_timings.jsonl) names the slowest samples' lines; their rows are filled here."""
    base = None
    if base_lines is not None:
        base = BaseScores()
        for number, record in _lines(base_lines):
            base.add(number, record)
    digester = SampleDigester(timings, base)
    for number, record in _lines(lines):
        digester.add(number, record)
    return digester.result(primary)
