"""A shard's per-sample scores, a column per score key, and its corpus states, written by the evaluation
step beside its records.

The Report step folds means (accuracy, ROUGE, METEOR, BERTScore) from scores alone, and corpus metrics
(F1, precision, recall, BLEU) from states, integer sums the step made where it had the texts (confusion
counts, sacrebleu's statistics: ``PresetScorer.score_block``), summed over the shard's blocks. So when
every shard has this file the Report step reads the scores and states from it instead of parsing millions
of records, and copies the records' lines to samples.jsonl as they are. Only the step's model-free pass
writes it (``run._one_pass``), and only when every record's scores are finite floats under the same keys
(F1 alone has none: the file then holds counts and states).

The file: one JSON header line, ``{"keys": [...], "items": n, "records_sha256": hex, "corpus": {metric:
{name: int}}}`` (the sha256 of the shard's records file, which the Report step checks as it copies the
lines), then blocks, each a little-endian uint64 count followed by that many little-endian float64 values
per key, in key order.
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
from array import array
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

_COUNT = struct.Struct("<Q")
Columns = dict[str, array]  # key -> float64 values ("d")
States = dict[str, dict[str, int]]  # metric -> its corpus state, named integer sums


def _values(values: Sequence[float]) -> array:
    column = array("d", values)
    if sys.byteorder != "little":  # pragma: no cover - every platform we run on is little-endian
        column.byteswap()
    return column


class ScoreColumnsWriter:
    """Collects a shard's score columns and corpus states block by block in ``folder``; ``finish`` writes
    the file, or None when a block's scores were not columns or the shard had no items, so no keys (the
    Report step then parses the records)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "scores.bin"
        self._body_path = folder / "scores.body"
        self._body: IO[bytes] | None = self._body_path.open("wb")
        self.keys: list[str] | None = None
        self.items = 0
        self.corpus: States = {}

    def add(
        self,
        count: int,
        scores: Mapping[str, Sequence[float]] | None,
        corpus: Mapping[str, Mapping[str, int]] | None = None,
    ) -> None:
        """A block of ``count`` records, their scores a column per key (None: not all finite floats under the
        same keys; the file is then not written) and their corpus states (None: no corpus metric), added to
        the shard's."""
        if self._body is None or not count:
            return
        if scores is None or (self.keys is not None and list(scores) != self.keys):
            self._body.close()
            self._body = None
            return
        self.keys = list(scores)
        self._body.write(_COUNT.pack(count))
        for key in self.keys:
            self._body.write(_values(scores[key]).tobytes())
        self.items += count
        for metric, state in (corpus or {}).items():
            sums = self.corpus.setdefault(metric, {})
            for name, value in state.items():
                sums[name] = sums.get(name, 0) + value

    def finish(self, records_sha256: str) -> Path | None:
        self.close()
        if self._body is None or self.keys is None:
            return None
        header = {"keys": self.keys, "items": self.items, "records_sha256": records_sha256, "corpus": self.corpus}
        with self.path.open("wb") as out, self._body_path.open("rb") as body:
            out.write(json.dumps(header, sort_keys=True).encode("utf-8") + b"\n")
            shutil.copyfileobj(body, out)
        self._body_path.unlink()
        return self.path

    def close(self) -> None:
        if self._body is not None:
            self._body.close()


class ScoreColumnsReader:
    """A shard's score columns read in order, ``take(n)`` values of each key at a time, and its corpus
    states (``corpus``: metric -> named integer sums, checked to be that)."""

    def __init__(self, handle: IO[bytes], uri: str) -> None:
        self._handle = handle
        self.uri = uri
        try:
            header = json.loads(handle.readline())
            self.keys = [str(key) for key in header["keys"]]
            self.items = int(header["items"])
            self.records_sha256 = str(header["records_sha256"])
            corpus = header.get("corpus", {})
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise RuntimeError(f"{uri}: not a score columns file ({type(err).__name__}: {err})") from None
        self.corpus: States = _checked_states(corpus, uri)
        self._block: Columns = {key: array("d") for key in self.keys}
        self._size = 0  # items of the block read last
        self._at = 0
        self._read = 0

    def take(self, n: int) -> Columns:
        """The next ``n`` values of every key."""
        out: Columns = {key: array("d") for key in self.keys}
        while n:
            left = self._size - self._at
            if not left:
                self._next_block()
                continue
            step = min(n, left)
            for key, column in self._block.items():
                out[key].extend(column[self._at : self._at + step])
            self._at += step
            n -= step
        return out

    def check_end(self) -> None:
        """Every value was taken, and the file holds no more."""
        if self._read != self.items or self._at != self._size or self._handle.read(1):
            raise RuntimeError(f"{self.uri}: holds scores beyond its {self.items} items")

    def _next_block(self) -> None:
        raw = self._handle.read(_COUNT.size)
        if len(raw) < _COUNT.size:
            raise RuntimeError(f"{self.uri}: ends after {self._read} of its {self.items} items' scores")
        (count,) = _COUNT.unpack(raw)
        self._read += count
        if self._read > self.items:
            raise RuntimeError(f"{self.uri}: holds scores beyond its {self.items} items")
        self._size = count
        for key in self.keys:
            data = self._handle.read(count * 8)
            if len(data) < count * 8:
                raise RuntimeError(f"{self.uri}: ends within the scores of {key!r}")
            column = array("d")
            column.frombytes(data)
            if sys.byteorder != "little":  # pragma: no cover
                column.byteswap()
            self._block[key] = column
        self._at = 0


def _checked_states(corpus: object, uri: str) -> States:
    """The header's corpus states: an object of metrics, each an object of counts (whole numbers, not below 0)."""
    if not isinstance(corpus, dict):
        raise RuntimeError(f"{uri}: field 'corpus': expected an object of corpus states, got {corpus!r}")
    for metric, state in corpus.items():
        if not isinstance(state, dict) or not state:
            raise RuntimeError(f"{uri}: corpus state {metric!r}: expected an object of sums, got {state!r}")
        for name, value in state.items():
            if type(value) is not int or value < 0:
                raise RuntimeError(f"{uri}: corpus state {metric!r}: {name!r}: expected a count, got {value!r}")
    return corpus
