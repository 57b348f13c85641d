"""Corpus metrics from the evaluation step's corpus states (F1, precision, recall: confusion counts; BLEU:
sacrebleu's statistics): one tokenization for sentence and corpus BLEU, equal to sacrebleu's own, and the
Report step folding the shards' states without parsing a record, into the same files as from the records."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from sacrebleu.metrics import BLEU
from sklearn import metrics as skm

from evalstack.catalog.hyperparameters import Hyperparameters
from evalstack.engine import run as run_module
from evalstack.engine.run import report, run_shard, score_columns_uri
from evalstack.metrics import PresetScorer
from evalstack.metrics.bleu import BleuStats, bleu_scored
from evalstack.spec import EvaluationSpec
from tests.support.specs import scorer_spec

FILES = ("samples.jsonl", "results.json", "report.md")
HP = Hyperparameters.for_kind("custom_scorer", {})


def _truthfulqa(root: Path, n: int) -> list[dict]:
    """The first ``n`` TruthfulQA questions with at least two correct answers besides the best one."""
    rows = []
    with (root / "truthfulqa" / "TruthfulQA.csv").open(encoding="utf-8-sig", newline="") as f:
        for row in csv.DictReader(f):
            others = [a.strip() for a in row["Correct Answers"].split(";") if a.strip() != row["Best Answer"].strip()]
            if len(others) >= 2:
                rows.append({"prompt": row["Question"], "response": row["Best Answer"].strip(), "others": others})
            if len(rows) == n:
                return rows
    raise AssertionError(f"TruthfulQA has fewer than {n} usable rows under {root}")


def _streams(references: list[list[str]]) -> list[list[str | None]]:
    width = max(map(len, references))
    return [[refs[j] if j < len(refs) else None for refs in references] for j in range(width)]


@pytest.mark.parametrize("kind", ["single", "two", "variable"])
def test_bleu_from_one_tokenization_equals_sacrebleu(benchmark_data: Path, kind: str) -> None:
    rows = _truthfulqa(benchmark_data, 40)
    predictions = [r["response"] for r in rows]
    references = {
        "single": [r["others"][:1] for r in rows],
        "two": [r["others"][:2] for r in rows],
        "variable": [r["others"][: 1 + i % 3] for i, r in enumerate(rows)],
    }[kind]
    scored = bleu_scored(predictions, references, HP)
    sentence = BLEU(effective_order=True)
    assert [score for score, _, _ in scored] == [
        sentence.sentence_score(p, refs).score for p, refs in zip(predictions, references, strict=True)
    ]
    # Summed in two parts, in either order, as shards' states are.
    whole = BLEU()
    expected = whole.corpus_score(predictions, _streams(references))
    for parts in ([scored[:15], scored[15:]], [scored[15:], scored[:15]]):
        sums = BleuStats(HP)
        for part in parts:
            state = BleuStats(HP)
            state.add_scored(part)
            sums.add_state(json.loads(json.dumps(state.state())))  # through its file form
        assert sums.values() == {"bleu": expected.score}
        assert sums.signature()["sacrebleu"] == str(whole.get_signature())
    assert ("nrefs:var" in str(whole.get_signature())) == (kind == "variable")


def test_preset_score_block_gives_the_sentence_values_and_the_corpus_state(benchmark_data: Path) -> None:
    rows = _truthfulqa(benchmark_data, 30)
    predictions = [r["response"] for r in rows]
    references = [r["others"][:2] for r in rows]
    columns, state = PresetScorer("bleu", HP).score_block(predictions, references)
    assert columns == {"bleu": [BLEU(effective_order=True).sentence_score(p, r).score for p, r in zip(
        predictions, references, strict=True)]}
    folded = PresetScorer("bleu", HP)
    folded.add_state(state)  # type: ignore[arg-type]
    assert folded.result().values == {"bleu": BLEU().corpus_score(predictions, _streams(references)).score}
    f1 = PresetScorer("f1", Hyperparameters.for_kind("custom_scorer", {"average": "macro"}))
    counts = {'["a", "a"]': 1, '["a", "b"]': 1, '["b", "a"]': 1}  # [true, predicted], labels stripped
    assert f1.score_block(["a", "b ", "a"], ["a", "a", "b"]) == (None, counts)
    with pytest.raises(ValueError, match="no corpus state"):
        PresetScorer("accuracy", HP).add_state({"x": 1})


# --- the Report step from states --------------------------------------------------------------------------


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _labels(root: Path, binary: bool) -> list[dict]:
    """Real labels (BoolQ's answers, or MMLU's letters) and a deterministic imperfect classifier's."""
    if binary:
        with (root / "boolq" / "val.jsonl").open(encoding="utf-8") as f:
            truth = [str(json.loads(line)["label"]) for line in f][:40]
        choices = ["True", "False"]
    else:
        with (root / "mmlu" / "val" / "high_school_biology_val.csv").open(encoding="utf-8", newline="") as f:
            truth = [row[5] for row in csv.reader(f)]
        choices = ["A", "B", "C", "D"]
    predicted = [choices[(choices.index(t) + 1) % len(choices)] if i % 3 == 0 else t for i, t in enumerate(truth)]
    pairs = enumerate(zip(truth, predicted, strict=True))
    return [{"prompt": f"q{i}", "response": p, "reference": t} for i, (t, p) in pairs]


def _texts(root: Path) -> list[dict]:
    # Multi-reference rows with one to three references each, and a row with one as a plain string.
    rows = [
        {"prompt": r["prompt"], "response": r["response"], "reference": r["others"][: 1 + i % 3]}
        for i, r in enumerate(_truthfulqa(root, 36))
    ]
    rows[0]["reference"] = rows[0]["reference"][0]
    return rows


CASES = {
    "f1-macro": (["f1", "precision", "recall"], {"average": "macro"}),
    "f1-micro": (["f1"], {"average": "micro"}),
    "f1-weighted": (["f1", "recall"], {"average": "weighted"}),
    "binary": (["f1", "precision", "recall"], {"average": "binary", "pos_label": "True"}),
    "bleu": (["bleu", "rouge"], {}),
}


def _case_spec(tmp_path: Path, root: Path, case: str) -> EvaluationSpec:
    metrics, hyperparameters = CASES[case]
    rows = _texts(root) if case == "bleu" else _labels(root, binary=case == "binary")
    return scorer_spec(_write(tmp_path / "data.jsonl", rows), metrics, **hyperparameters)


def _no_record_parsed(*_args: object) -> None:
    raise AssertionError("a record was parsed in the merge")


@pytest.mark.parametrize("shards", [1, 3])
@pytest.mark.parametrize("case", list(CASES))
def test_report_from_corpus_states_equals_report_from_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, benchmark_data: Path, case: str, shards: int
) -> None:
    spec = _case_spec(tmp_path, benchmark_data, case)
    records = tmp_path / "records"
    for index in range(shards):
        run_shard(spec, "candidate", index, shards, str(records))
    with monkeypatch.context() as patch:
        patch.setattr(run_module, "_parsed_block", _no_record_parsed)
        from_states = report(spec, str(tmp_path / "states"), records_uri=str(records))
    shutil.rmtree(records / "scores")
    report(spec, str(tmp_path / "records-out"), records_uri=str(records))

    for name in FILES:
        assert (tmp_path / "states" / name).read_bytes() == (tmp_path / "records-out" / name).read_bytes(), name
    rows = [json.loads(line) for line in Path(spec.dataset.uri).read_text().splitlines()]  # type: ignore[union-attr]
    metrics = from_states.candidate.metrics
    if case == "bleu":
        predictions = [r["response"] for r in rows]
        references = [[r["reference"]] if isinstance(r["reference"], str) else r["reference"] for r in rows]
        assert metrics["bleu"] == BLEU().corpus_score(predictions, _streams(references)).score
    else:
        hyperparameters = CASES[case][1]
        expected = skm.f1_score([r["reference"] for r in rows], [r["response"] for r in rows], **hyperparameters)
        assert metrics["f1"] == pytest.approx(expected, abs=0, rel=1e-15) and 0 < metrics["f1"] < 1


def _shards_of(tmp_path: Path, root: Path, case: str) -> tuple[EvaluationSpec, str, Path]:
    spec = _case_spec(tmp_path, root, case)
    records = str(tmp_path / "records")
    for index in range(2):
        run_shard(spec, "candidate", index, 2, records)
    return spec, records, Path(score_columns_uri(records, "candidate", 1, 2))


def _with_corpus(path: Path, whole: bytes, corpus: object) -> None:
    header, body = whole.split(b"\n", 1)
    path.write_bytes(json.dumps({**json.loads(header), "corpus": corpus}).encode() + b"\n" + body)


def test_a_damaged_or_mismatched_corpus_state_is_named(tmp_path: Path, benchmark_data: Path) -> None:
    spec, records, columns = _shards_of(tmp_path, benchmark_data, "f1-macro")
    whole = columns.read_bytes()
    header = json.loads(whole.split(b"\n", 1)[0])
    # F1 has no per-sample scores: the file holds counts, and the shard's confusion counts, one per item.
    assert header["keys"] == [] and sum(header["corpus"]["f1"].values()) == header["items"] > 10
    named = r"scores/candidate/shard-00001-of-00002\.bin: "
    bad = {
        "missing": ({}, named + r"corpus states of \[\], but the metrics need \['f1', 'precision', 'recall'\]"),
        "negative": ({**header["corpus"], "f1": {'["A", "A"]': -1}}, named + r"corpus state 'f1': .* expected a count"),
        "not a pair": ({**header["corpus"], "recall": {'"A"': 3}}, named + r"corpus state 'recall': key .* is not a"),
        "not an object": ([1], named + r"field 'corpus': expected an object"),
    }
    for name, (corpus, message) in bad.items():
        _with_corpus(columns, whole, corpus)
        with pytest.raises(RuntimeError, match=message):
            report(spec, str(tmp_path / name.replace(" ", "-")), records_uri=records)
        assert not (tmp_path / name.replace(" ", "-")).exists(), name


def test_a_bleu_state_without_its_sums_is_named(tmp_path: Path, benchmark_data: Path) -> None:
    spec, records, columns = _shards_of(tmp_path, benchmark_data, "bleu")
    whole = columns.read_bytes()
    corpus = json.loads(whole.split(b"\n", 1)[0])["corpus"]
    assert sorted(corpus) == ["bleu"] and corpus["bleu"]["hyp_len"] > 0
    del corpus["bleu"]["total_4"]
    _with_corpus(columns, whole, corpus)
    with pytest.raises(RuntimeError, match=r"shard-00001-of-00002\.bin: corpus state 'bleu': missing \['total_4'\]"):
        report(spec, str(tmp_path / "out"), records_uri=records)


class Overlap:
    """A custom scorer: word overlap, per sample."""

    def score(self, predictions, ground_truth, metadata=None):
        pairs = zip(predictions, ground_truth, strict=True)
        return {"overlap": [float(bool(set(p.split()) & set(g.split()))) for p, g in pairs]}


def test_a_custom_scorer_goes_the_records_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, benchmark_data: Path
) -> None:
    from evalstack.metrics import dump_scorer

    scorer = tmp_path / "scorer.pkl"
    scorer.write_bytes(dump_scorer(Overlap()))
    rows = [{**row, "reference": row["others"][0]} for row in _truthfulqa(benchmark_data, 20)]
    spec = scorer_spec(_write(tmp_path / "data.jsonl", rows), ["bleu"])
    spec = dataclasses.replace(spec, custom_scorer_uri=str(scorer))
    run_shard(spec, "candidate", 0, 1, str(tmp_path / "records"))
    assert Path(score_columns_uri(str(tmp_path / "records"), "candidate", 0, 1)).is_file()
    monkeypatch.setattr(run_module, "verified_scores", _no_record_parsed)
    out = report(spec, str(tmp_path / "out"), records_uri=str(tmp_path / "records"))
    expected = BLEU().corpus_score([r["response"] for r in rows], [[r["reference"] for r in rows]]).score
    assert out.candidate.metrics["bleu"] == expected and "overlap" in out.candidate.metrics


def test_pooled_score_block_equals_in_process(benchmark_data: Path) -> None:
    from evalstack.metrics.pool import SamplePool

    rows = _truthfulqa(benchmark_data, 60)
    predictions = [r["response"] for r in rows]
    references = [r["others"][: 1 + i % 2] for i, r in enumerate(rows)]
    pool = SamplePool(2, min_samples_per_worker=20)
    try:
        pooled = PresetScorer("bleu", HP, pool).score_block(predictions, references)
        assert pool.started
    finally:
        pool.shutdown()
    assert pooled == PresetScorer("bleu", HP).score_block(predictions, references)
