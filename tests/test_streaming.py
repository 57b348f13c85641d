"""Streaming end to end: chunked metrics equal the canonical libraries on the whole corpus, sharded and
chunked runs write byte-identical samples.jsonl, and the Report step's merge holds one chunk, not the data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU
from sklearn import metrics as skm

from evalstack.data import DatasetReader
from evalstack.data.items import item_id, joined_item_ids
from evalstack.engine import run as run_module
from evalstack.engine import scorer_task
from evalstack.engine.run import (
    evaluate_in_process,
    manifest_uri,
    report,
    run_shard,
    score_columns_uri,
    shard_uri,
    verified_records,
    verified_scores,
)
from evalstack.engine.score_columns import ScoreColumnsWriter
from evalstack.engine.scorer_task import ScorerTask
from evalstack.metrics import PresetScorer, compute_preset, custom, dump_scorer, run_custom_scorer
from evalstack.results import compare
from evalstack.results.compare import paired_bootstrap
from evalstack.results.writer import SamplesFile, streamed_line
from evalstack.spec import DatasetSpec
from tests.support.specs import scorer_spec

LABELS = ["cat", "dog", "bird"]
WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "ran", "fast", "slow", "bird", "sang", "in", "tree"]


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))


def _text_rows(n: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        reference = _sentence(rng)
        # Some answers copy the reference, so n-gram matches of every order occur.
        response = reference if i % 4 == 0 else _sentence(rng)
        rows.append({"prompt": f"say something {i}", "response": response, "reference": reference})
    return rows


def _label_rows(n: int, seed: int = 3) -> list[dict]:
    rng = random.Random(seed)
    return [
        {"prompt": f"animal {i}?", "response": rng.choice(LABELS), "reference": rng.choice(LABELS)} for i in range(n)
    ]


def _chunks(values: list, size: int) -> list[list]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def _streamed(metric: str, predictions: list[str], references: list[str], params: dict, size: int = 7):
    scorer = PresetScorer(metric, params)
    per_sample: list[dict] = []
    for preds, refs in zip(_chunks(predictions, size), _chunks(references, size), strict=True):
        scores = scorer.score(preds, refs)
        scorer.add(preds, refs, scores or [])
        per_sample.extend(scores or [])
    return scorer.result(), per_sample, scorer.stderr()


@pytest.mark.parametrize(
    ("metric", "params", "library"),
    [
        ("f1", {"average": "macro"}, skm.f1_score),
        ("f1", {"average": "micro"}, skm.f1_score),
        ("f1", {"average": "weighted"}, skm.f1_score),
        ("precision", {"average": "macro"}, skm.precision_score),
        ("recall", {"average": "weighted"}, skm.recall_score),
        ("f1", {"average": "binary", "pos_label": "cat"}, skm.f1_score),
    ],
)
def test_chunked_classification_equals_sklearn_on_the_whole(metric, params, library) -> None:
    rows = _label_rows(101)
    if params["average"] == "binary":
        rows = [
            {**r, "response": r["response"].replace("bird", "dog"), "reference": r["reference"].replace("bird", "dog")}
            for r in rows
        ]
    predictions = [r["response"] for r in rows]
    references = [r["reference"] for r in rows]
    result, per_sample, _ = _streamed(metric, predictions, references, params)
    kwargs = {k: v for k, v in params.items()}
    expected = float(library(references, predictions, zero_division=0.0, **kwargs))
    assert result.values == {metric: expected}
    assert per_sample == []  # F1 and friends have no per-sample value


def test_chunked_accuracy_equals_sklearn_with_its_stderr() -> None:
    rows = _label_rows(101)
    predictions = [r["response"] for r in rows]
    references = [r["reference"] for r in rows]
    result, per_sample, stderr = _streamed("accuracy", predictions, references, {})
    assert result.values == {"accuracy": skm.accuracy_score(references, predictions)}
    correct = np.array([p == t for p, t in zip(predictions, references, strict=True)], dtype=float)
    assert [s["accuracy"] for s in per_sample] == correct.tolist()
    assert stderr["accuracy"] == pytest.approx(correct.std(ddof=1) / np.sqrt(len(correct)), rel=1e-12)


def test_chunked_bleu_equals_sacrebleu_corpus_score() -> None:
    rows = _text_rows(83)
    predictions = [r["response"] for r in rows]
    references = [r["reference"] for r in rows]
    result, per_sample, stderr = _streamed("bleu", predictions, references, {})
    assert result.values == {"bleu": BLEU().corpus_score(predictions, [references]).score}
    sentence = BLEU(effective_order=True)
    pairs = zip(predictions, references, strict=True)
    assert per_sample == [{"bleu": sentence.sentence_score(p, [r]).score} for p, r in pairs]
    assert stderr == {}  # corpus BLEU is not a mean of samples


def test_chunked_rouge_equals_rouge_score_means() -> None:
    rows = _text_rows(83)
    predictions = [r["response"] for r in rows]
    references = [r["reference"] for r in rows]
    result, per_sample, _ = _streamed("rouge", predictions, references, {})
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"])
    pairs = zip(predictions, references, strict=True)
    direct = [{t: s.fmeasure for t, s in scorer.score(r, p).items()} for p, r in pairs]
    assert per_sample == direct
    assert result.values == {t: sum(d[t] for d in direct) / len(direct) for t in direct[0]}


@pytest.mark.parametrize("metric", ["accuracy", "f1", "precision", "recall", "bleu", "rouge", "meteor"])
def test_chunked_equals_one_shot_for_every_preset(metric: str) -> None:
    rows = _label_rows(61) if metric in ("accuracy", "f1", "precision", "recall") else _text_rows(61)
    predictions = [r["response"] for r in rows]
    references = [r["reference"] for r in rows]
    params = {"average": "macro"} if metric in ("f1", "precision", "recall") else {}
    one_shot = compute_preset(metric, predictions, references, params)
    result, per_sample, _ = _streamed(metric, predictions, references, params, size=5)
    assert result.values == one_shot.values
    assert result.signature == one_shot.signature
    assert per_sample == (one_shot.per_sample or [])


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_sharded_small_chunk_run_is_byte_identical_and_equals_the_libraries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [{**row, "topic": i % 3} for i, row in enumerate(_text_rows(45))]  # metadata travels too
    dataset = _write(tmp_path / "data.jsonl", rows)
    presets = ["rouge", "bleu", "meteor", "accuracy", "f1", "precision", "recall"]
    spec = scorer_spec(dataset, presets)
    whole = evaluate_in_process(spec, str(tmp_path / "one"))
    monkeypatch.setattr(scorer_task, "AGGREGATE_CHUNK", 4)  # many aggregation chunks
    for index in range(3):
        run_shard(spec, "candidate", index, 3, str(tmp_path / "records"))
    sharded = report(spec, str(tmp_path / "three"), records_uri=str(tmp_path / "records"))
    samples = (tmp_path / "one" / "samples.jsonl").read_text()
    assert (tmp_path / "three" / "samples.jsonl").read_text() == samples
    assert (tmp_path / "three" / "results.json").read_bytes() == (tmp_path / "one" / "results.json").read_bytes()
    assert sharded.candidate.metrics == whole.candidate.metrics
    predictions = [r["response"] for r in rows]
    references = [r["reference"] for r in rows]
    lines = [json.loads(line) for line in samples.splitlines()]
    assert [s["id"] for s in lines] == [f"line-{i}" for i in range(1, 46)]
    assert [s["metadata"] for s in lines] == [{"topic": i % 3} for i in range(45)]
    for preset in presets:  # the one-shot value of each preset over the whole dataset
        one_shot = compute_preset(preset, predictions, references)
        assert {k: whole.candidate.metrics[k] for k in one_shot.values} == one_shot.values
        for sample, expected in zip(lines, one_shot.per_sample or [], strict=False):
            assert {k: sample["scores"][k] for k in expected} == expected
    assert whole.candidate.metrics["bleu"] == BLEU().corpus_score(predictions, [references]).score


class WordOverlap:
    """Per-sample lists (streamable way 1) and a batch count that only aggregate() can combine (way 2)."""

    def __init__(self, aggregate: bool) -> None:
        if aggregate:
            self.aggregate = lambda batches: {"batches": float(len(batches)), "hits": sum(b["hits"] for b in batches)}

    def score(self, predictions, ground_truth, metadata=None):
        overlap = [float(bool(set(p.split()) & set(g.split()))) for p, g in zip(predictions, ground_truth, strict=True)]
        if hasattr(self, "aggregate"):
            return {"hits": sum(overlap)}
        return {"overlap": overlap, "topic": [float(m["topic"]) for m in metadata]}


@pytest.mark.parametrize("aggregate", [False, True])
def test_custom_scorer_streams_in_the_report_like_one_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aggregate: bool
) -> None:
    rows = [{**row, "topic": i % 3} for i, row in enumerate(_text_rows(45))]
    scorer = WordOverlap(aggregate)
    scorer_file = tmp_path / "scorer.pkl"
    scorer_file.write_bytes(dump_scorer(scorer))
    spec = scorer_spec(_write(tmp_path / "data.jsonl", rows), [])
    spec = dataclasses.replace(spec, custom_scorer_uri=str(scorer_file))
    expected = run_custom_scorer(
        scorer,
        [r["response"] for r in rows],
        [r["reference"] for r in rows],
        [{"prompt": r["prompt"], "line": i + 1, "topic": r["topic"]} for i, r in enumerate(rows)],
    )
    monkeypatch.setattr(custom, "WHOLE_DATASET_SAMPLES", 10)  # 45 samples: streamed, batch by batch
    monkeypatch.setattr(scorer_task, "AGGREGATE_CHUNK", 4)  # chunks of one batch (8)
    streamed = evaluate_in_process(spec, str(tmp_path / "out"))
    assert streamed.candidate.metrics == expected.values
    lines = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert [s["scores"] for s in lines] == (expected.per_sample or [{}] * len(rows))
    if aggregate:
        assert expected.values["batches"] == 6  # ceil(45 / 8): the batches of one whole-dataset call


def test_limit_takes_the_same_first_records_across_shards(tmp_path: Path) -> None:
    dataset = _write(tmp_path / "data.jsonl", _label_rows(40))
    spec = scorer_spec(dataset, ["accuracy"], limit=13)
    before = [f"line-{r.line}" for r in DatasetReader(DatasetSpec(str(dataset)), limit=13)]
    assert before == [f"line-{i}" for i in range(1, 14)]
    for index in range(4):
        run_shard(spec, "candidate", index, 4, str(tmp_path / "records"))
    out = report(spec, str(tmp_path / "out"), records_uri=str(tmp_path / "records"))
    ids = [json.loads(line)["id"] for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert ids == before
    assert out.candidate.num_samples == 13
    shard_two = (tmp_path / "records" / "records" / "candidate" / "shard-00002-of-00004.jsonl").read_text()
    assert [json.loads(line)["id"] for line in shard_two.splitlines()] == ["line-3", "line-7", "line-11"]


def _manifest(folder: Path, index: int, count: int, ids: list[str], items: int) -> None:
    """The manifest the evaluation step writes beside a shard's records."""
    digest = hashlib.sha256("".join(f"{i}\n" for i in ids).encode()).hexdigest()
    manifest = {"items": items, "dataset_sha256": "ab" * 32, "ids_sha256": digest}
    path = Path(manifest_uri(str(folder), "candidate", index, count))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))


def test_merge_names_the_shard_whose_records_do_not_match(tmp_path: Path) -> None:
    ids = [[f"line-{i}" for i in range(index, 6, 2)] for index in range(2)]
    for index in range(2):
        path = Path(shard_uri(str(tmp_path), "candidate", index, 2))
        path.parent.mkdir(parents=True, exist_ok=True)
        _write(path, [{"id": i} for i in ids[index]])
        _manifest(tmp_path, index, 2, ids[index], 6)
    manifest, merged = verified_records(str(tmp_path), "candidate")
    assert manifest.items == 6
    assert [r["id"] for records, _ in merged for r in records] == [f"line-{i}" for i in range(6)]
    expected = {5: r"00001-of-00002\.jsonl: records beyond", 7: r"00000-of-00002\.jsonl: no record where item 6"}
    for items, message in expected.items():
        for index in range(2):
            _manifest(tmp_path, index, 2, ids[index], items)
        with pytest.raises(RuntimeError, match=message):
            list(verified_records(str(tmp_path), "candidate")[1])


def test_merge_yields_blocks_in_item_order_over_partial_rounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_module, "MERGE_BLOCK", 6)  # blocks of 6 items over 3 shards: 11 items end mid-round
    ids = [[f"line-{i}" for i in range(index, 11, 3)] for index in range(3)]
    for index in range(3):
        path = Path(shard_uri(str(tmp_path), "candidate", index, 3))
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"id": i, "tokenization": {"tokens": 3}} if i == "line-4" else {"id": i} for i in ids[index]]
        _write(path, rows)
        _manifest(tmp_path, index, 3, ids[index], 11)
    blocks = list(verified_records(str(tmp_path), "candidate")[1])
    assert [len(records) for records, _ in blocks] == [6, 5]
    assert [r["id"] for records, _ in blocks for r in records] == [f"line-{i}" for i in range(11)]
    lines = [line for _, block_lines in blocks for line in block_lines]
    # Each line is the record's own, copied, but for the one whose call details samples.jsonl drops.
    assert lines == [None if i == 4 else (json.dumps({"id": f"line-{i}"}) + "\n").encode() for i in range(11)]


def test_report_step_reads_the_shards_not_the_dataset(tmp_path: Path) -> None:
    dataset = _write(tmp_path / "data.jsonl", _label_rows(12))
    expected = hashlib.sha256(dataset.read_bytes()).hexdigest()
    spec = scorer_spec(dataset, ["accuracy"])
    records = str(tmp_path / "records")
    for index in range(2):
        run_shard(spec, "candidate", index, 2, records)
    dataset.unlink()  # the Report step must not need it: the shards' manifests carry count and sha256
    out = report(spec, str(tmp_path / "out"), records_uri=records)
    assert out.candidate.num_samples == 12
    assert out.candidate.dataset_sha256 == expected
    ids = [json.loads(line)["id"] for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert ids == [f"line-{i}" for i in range(1, 13)]


def test_report_step_names_the_shard_that_does_not_match_its_manifest(tmp_path: Path) -> None:
    spec = scorer_spec(_write(tmp_path / "data.jsonl", _label_rows(12)), ["accuracy"])
    records = tmp_path / "records"
    for index in range(2):
        run_shard(spec, "candidate", index, 2, str(records))
    second = Path(shard_uri(str(records), "candidate", 1, 2))
    kept = second.read_text()
    # A record swapped for another item: counts still agree, only the ids differ.
    lines = kept.splitlines(keepends=True)
    second.write_text(lines[0].replace('"line-2"', '"line-1"') + "".join(lines[1:]))
    written_with = r"shard-00001-of-00002\.jsonl: not the records file its score columns \(\S+/scores/candidate/"
    with pytest.raises(RuntimeError, match=written_with + r"shard-00001-of-00002\.bin\) were written with"):
        report(spec, str(tmp_path / "a"), records_uri=str(records))
    columns = {path: path.read_bytes() for path in (records / "scores" / "candidate").iterdir()}
    for path in columns:  # without score columns, the records are parsed and their ids checked
        path.unlink()
    with pytest.raises(RuntimeError, match=r"shard-00001-of-00002\.jsonl: record ids are not those of the items"):
        report(spec, str(tmp_path / "e"), records_uri=str(records))
    for path, data in columns.items():
        path.write_bytes(data)
    second.write_text("".join(lines[:-1]))
    with pytest.raises(RuntimeError, match=r"shard-00001-of-00002\.jsonl: no record where item 11 belongs"):
        report(spec, str(tmp_path / "b"), records_uri=str(records))
    second.write_text(kept)
    manifest = Path(manifest_uri(str(records), "candidate", 1, 2))
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "dataset_sha256": "0" * 64}))
    shown = r"manifests/candidate/shard-00001-of-00002\.json: 12 items of dataset sha256 0+, but"
    with pytest.raises(RuntimeError, match=shown):
        report(spec, str(tmp_path / "c"), records_uri=str(records))
    Path(manifest_uri(str(records), "candidate", 0, 2)).unlink()
    with pytest.raises(RuntimeError, match=r"manifests/candidate/shard-00000-of-00002\.json: missing"):
        report(spec, str(tmp_path / "d"), records_uri=str(records))
    assert not any((tmp_path / name).exists() for name in "abcde")


# A record as the evaluation step writes it (``streamed_line``), as a template: 200,000 of them are
# written in well under a second.
RECORD = (
    '{{"generated":false,"id":"line-{n}","line":{n},"metadata":{{}},"prompt":"animal {i}?",'
    '"reference":"{reference}","response":"{response}","scores":{{"accuracy":{score}}},"subtask":null}}\n'
)


def _shards(folder: Path, rows: int, count: int, columns: bool = False) -> tuple[list[str], list[str]]:
    """Shard files as the evaluation step writes them, generated directly (no model, no dataset pass), with
    their score columns files if ``columns``; returns the references and responses written."""
    rng = random.Random(rows)
    truth = [rng.choice(LABELS) for _ in range(rows)]
    predicted = [rng.choice(LABELS) for _ in range(rows)]
    for index in range(count):
        path = Path(shard_uri(str(folder), "candidate", index, count))
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = (
            RECORD.format(n=i + 1, i=i, reference=t, response=p, score=float(t == p))
            for i, t, p in ((i, truth[i], predicted[i]) for i in range(index, rows, count))
        )
        path.write_text("".join(lines))
        _manifest(folder, index, count, [f"line-{i + 1}" for i in range(index, rows, count)], rows)
        if columns:
            scratch = folder / f"scratch-{index}"
            scratch.mkdir()
            writer = ScoreColumnsWriter(scratch)
            scores = [float(truth[i] == predicted[i]) for i in range(index, rows, count)]
            for block in _chunks(scores, 4096):  # the evaluation step writes a block at a time too
                writer.add(len(block), {"accuracy": block})
            written = writer.finish(hashlib.sha256(path.read_bytes()).hexdigest())
            target = Path(score_columns_uri(str(folder), "candidate", index, count))
            target.parent.mkdir(parents=True, exist_ok=True)
            written.rename(target)  # type: ignore[union-attr]
    return truth, predicted


def _merge_peak(
    tmp_path: Path, rows: int, columns: bool = False, shards: int = 3
) -> tuple[int, dict, tuple[list[str], list[str]]]:
    """The Report step's merge and aggregation of ``rows`` records in ``shards`` shards, from their records
    or (with ``columns``) their score columns: the peak of memory traced, the metrics and the labels."""
    folder = tmp_path / f"rows-{rows}"
    labels = _shards(folder, rows, shards, columns)
    # The records path folds F1's confusion counts from the texts too; the columns written here hold none.
    metrics = ["accuracy"] if columns else ["accuracy", "f1"]
    spec = scorer_spec(_write(tmp_path / "small.jsonl", _label_rows(10)), metrics, average="macro")
    task = ScorerTask(spec, "candidate")
    tracemalloc.start()
    try:
        with SamplesFile(folder / "samples.jsonl", streamed=True) as samples:
            if columns:
                scored = verified_scores(str(folder), "candidate")
                assert scored is not None and task.folds_scores
                agg = task.aggregate_scores(scored[1], samples.write_block, scored[2])
            else:
                agg = task.aggregate_stream(verified_records(str(folder), "candidate")[1], samples.write_block)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert samples.count == rows
    return peak, agg.metrics, labels


@pytest.mark.parametrize(
    ("columns", "shards"), [(False, 3), (True, 3), (True, 1)], ids=["records", "score columns", "one shard copied"]
)
def test_report_merge_memory_does_not_grow_with_rows(tmp_path: Path, columns: bool, shards: int) -> None:
    # Two full blocks of the merges of lines; a copied file's reads are blocks of bytes (a record is about
    # 230), one held while the next is read, so a few of those.
    small = 2 * max(scorer_task.AGGREGATE_CHUNK, run_module.SCORE_MERGE_BLOCK)
    if shards == 1:
        small = 4 * run_module.COPY_BLOCK_BYTES // 230
    small_peak, _, _ = _merge_peak(tmp_path, small, columns, shards)
    large_peak, metrics, (truth, predicted) = _merge_peak(tmp_path, 200_000, columns, shards)
    # Ten times the rows, the same peak: one aggregation chunk and one line per shard, never the data.
    assert large_peak < small_peak * 1.25 + 256 * 1024, (small_peak, large_peak)
    assert large_peak < 10 * 1024**2  # 200,000 records are ~40 MB of JSON, ~300 MB as dicts
    assert metrics["accuracy"] == skm.accuracy_score(truth, predicted)
    if not columns:
        assert metrics["f1"] == skm.f1_score(truth, predicted, average="macro")
    samples = (tmp_path / "rows-200000" / "samples.jsonl").read_text().splitlines(keepends=True)
    assert [json.loads(line)["id"] for line in samples[:4]] == ["line-1", "line-2", "line-3", "line-4"]
    # The template is the evaluation step's encoding, so the merge copied these lines as they are.
    assert all(streamed_line(json.loads(line)).decode() == line for line in samples[:4])


def test_blockwise_bootstrap_equals_one_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compare, "BOOTSTRAP_BLOCK", 1000)  # 3 resamples per block of 300 pairs
    rng = np.random.default_rng(0)
    candidate, base = rng.random(300), rng.random(300)
    expected_rng = np.random.default_rng(11)
    diffs = candidate - base
    indices = expected_rng.integers(0, 300, size=(500, 300))
    low, high = np.percentile(diffs[indices].mean(axis=1), [2.5, 97.5])
    test = paired_bootstrap(candidate, base, 11, resamples=500)
    assert test["ci95"] == [float(low), float(high)]


@pytest.mark.parametrize("lines", [[], [7], range(3, 9), [1, 10, 100]])
def test_joined_item_ids_are_the_item_ids_each_followed_by_a_newline(lines: list[int]) -> None:
    # The evaluation step hashes these into the shard's manifest; the Report step hashes the records' ids.
    assert joined_item_ids(lines) == "".join(f"{item_id(line)}\n" for line in lines)
