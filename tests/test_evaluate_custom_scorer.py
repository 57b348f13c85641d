"""CustomScorerEvaluator end to end on the embedded default, against the canonical libraries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from evalstack import storage
from evalstack.evaluate import CustomScorerEvaluator, get_builtin_metrics
from tests.conftest import EXAMPLES
from tests.support.openai_server import prompt_of, serve

DATASET = EXAMPLES / "truthfulqa_answers.jsonl"
RESULT_FILES = ("results.json", "samples.jsonl", "report.md")


def _rows() -> list[dict]:
    return [json.loads(line) for line in DATASET.read_text(encoding="utf-8").splitlines()]


def test_preset_rouge_equals_rouge_score(tmp_path: Path) -> None:
    execution = CustomScorerEvaluator(
        evaluator="rouge", dataset=str(DATASET), model="listed-answers", s3_output_path=str(tmp_path / "out")
    ).evaluate()
    execution.wait()
    assert execution.status == "Succeeded"
    results = execution.results()
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=False)
    rows = _rows()
    scores = [scorer.score(r["reference"], r["response"]) for r in rows]
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        expected = sum(s[key].fmeasure for s in scores) / len(scores)
        assert results["metrics"][key] == pytest.approx(expected, abs=1e-12)
    assert results["num_samples"] == len(rows) == 40
    assert results["eval_type"] == "custom_scorer"
    assert results["model"] == "listed-answers"
    assert len(results["dataset_sha256"]) == 64
    assert results["library_versions"]["rouge-score"] == "0.1.2"
    samples = storage.read_text(storage.join(execution.s3_output_path, "samples.jsonl")).splitlines()
    assert len(samples) == 40
    first = json.loads(samples[0])
    assert first["scores"]["rouge1"] == pytest.approx(scores[0]["rouge1"].fmeasure)
    report = storage.read_text(storage.join(execution.s3_output_path, "report.md"))
    assert "| rouge1 |" in report
    # Aggregates with a defined standard error carry it and a 95% interval around the mean.
    se = results["stderr"]["rouge1"]
    low, high = results["confidence_intervals"]["rouge1"]
    assert low < results["metrics"]["rouge1"] < high and se > 0


class ExactMatch:
    """A user scorer: the share of responses equal to the reference, and how many it saw."""

    def score(self, predictions, ground_truth, metadata=None):
        hits = sum(p.strip().lower() == g.strip().lower() for p, g in zip(predictions, ground_truth, strict=True))
        return {
            "exact_match": hits / len(predictions),
            "has_metadata": float(metadata is not None),
            "sample_count": len(predictions),
        }


def test_custom_scorer_object(tmp_path: Path) -> None:
    rows = _rows()
    expected = sum(r["response"].strip().lower() == r["reference"].strip().lower() for r in rows) / len(rows)
    evaluator = CustomScorerEvaluator(
        evaluator=ExactMatch(), dataset=str(DATASET), model="listed-answers", s3_output_path=f"file://{tmp_path}/o"
    )
    evaluator.hyperparameters.batch_size = 7  # 40 samples: batches of 7 and a last batch of 5
    execution = evaluator.evaluate()
    execution.wait()
    metrics = execution.results()["metrics"]
    assert metrics["exact_match"] == pytest.approx(expected)
    assert metrics["has_metadata"] == 1.0
    assert metrics["sample_count"] == 40  # counted over the whole dataset, never a mean of batch counts
    assert execution.s3_output_path.startswith("file://")


class FailsOnThirdBatch:
    """Streamable (it aggregates its batches), and fails on the third one."""

    def score(self, predictions, ground_truth, metadata=None):
        if metadata[0]["line"] > 20:
            raise ZeroDivisionError("division by zero in my metric")
        return {"ok": 1.0}

    def aggregate(self, batch_results):
        return {"ok": min(b["ok"] for b in batch_results)}


def test_failing_scorer_names_the_batch_and_leaves_no_results(tmp_path: Path) -> None:
    evaluator = CustomScorerEvaluator(
        evaluator=FailsOnThirdBatch(), dataset=str(DATASET), model="m", s3_output_path=str(tmp_path)
    )
    evaluator.hyperparameters.batch_size = 10
    execution = evaluator.evaluate()
    with pytest.raises(RuntimeError, match="batch 2"):
        execution.wait()  # the evaluation runs as a pipeline execution: wait for its end first
    assert execution.status == "Failed"
    assert "batch 2 (samples 20-29)" in execution.failure_reason
    assert "ZeroDivisionError: division by zero in my metric" in execution.failure_reason
    assert "Traceback" not in execution.failure_reason  # the step's own message, not its log
    for name in RESULT_FILES:
        assert not storage.exists(storage.join(execution.s3_output_path, name))
    # The scorer runs in the Report step; the EvaluateModel step's records stay so that a retry resumes there.
    assert not list(Path(tmp_path).rglob("results.json"))


def test_s3_output_maps_to_the_local_object_folder(isolated_environment: Path) -> None:
    execution = CustomScorerEvaluator(
        evaluator=get_builtin_metrics().BLEU, dataset=str(DATASET), model="m", s3_output_path="s3://my-bucket/evals"
    ).evaluate()
    execution.wait()
    assert execution.s3_output_path.startswith("s3://my-bucket/evals/")
    local = storage.local_path(storage.join(execution.s3_output_path, "results.json"))
    assert local.is_relative_to(isolated_environment / "s3" / "my-bucket")
    import sacrebleu

    rows = _rows()
    expected = sacrebleu.corpus_bleu([r["response"] for r in rows], [[r["reference"] for r in rows]]).score
    assert json.loads(local.read_text())["metrics"]["bleu"] == pytest.approx(expected)


def test_several_presets_in_one_run(tmp_path: Path) -> None:
    execution = CustomScorerEvaluator(
        evaluator=["rouge", "meteor"], dataset=str(DATASET), model="m", s3_output_path=str(tmp_path)
    ).evaluate()
    execution.wait()
    assert {"rouge1", "meteor"} <= set(execution.results()["metrics"])


def test_hyperparameters_validate_names_types_and_ranges() -> None:
    evaluator = CustomScorerEvaluator(evaluator="f1", dataset=str(DATASET), model="m")
    evaluator.hyperparameters.average = "weighted"
    evaluator.hyperparameters.threshold = 0.5
    assert evaluator.hyperparameters.threshold == 0.5
    with pytest.raises(AttributeError, match=r"Unknown hyperparameter 'avg'. Valid names: .*average"):
        evaluator.hyperparameters.avg = "macro"
    with pytest.raises(ValueError, match="must be one of \\['micro', 'macro', 'weighted', 'binary'\\]"):
        evaluator.hyperparameters.average = "samples"
    with pytest.raises(ValueError, match="'batch_size' must be <= 32"):
        evaluator.hyperparameters.batch_size = 33
    with pytest.raises(ValueError, match="'max_order' must be int"):
        evaluator.hyperparameters.max_order = "4"
    with pytest.raises(ValueError, match="unknown \\['rouge0'\\]"):
        evaluator.hyperparameters.rouge_types = ["rouge1", "rouge0"]


def _prompts_only(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    rows = _rows()[:12]
    path.write_text("".join(json.dumps({"prompt": r["prompt"], "reference": r["reference"]}) + "\n" for r in rows))
    return path


def test_prompts_only_with_a_label_model_fails_before_writing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    evaluator = CustomScorerEvaluator(
        evaluator="rouge", dataset=str(_prompts_only(tmp_path)), model="my-model", s3_output_path=str(out)
    )
    # a prompts-only dataset needs the model, so the bare name is looked up (this test has no AWS credentials)
    with pytest.raises(ValueError, match="'my-model' is a bare name, so evalstack looked it up in region"):
        evaluator.evaluate()
    assert not out.exists()


def test_prompts_only_dataset_generates_with_the_model(tmp_path: Path) -> None:
    rows = _rows()[:12]
    answers = {r["prompt"]: (r["reference"] if i % 2 == 0 else "I have no comment.") for i, r in enumerate(rows)}
    with serve(lambda path, body: answers[prompt_of(path, body)]) as server:
        evaluator = CustomScorerEvaluator(
            evaluator=ExactMatch(),
            dataset=str(_prompts_only(tmp_path)),
            model=f"openai:{server.base_url}?model=scripted",
            s3_output_path=str(tmp_path / "out"),
        )
        execution = evaluator.evaluate()
        execution.wait()
    assert execution.results()["metrics"]["exact_match"] == pytest.approx(6 / 12)
    assert execution.results()["details"]["generated_responses"] == 12
    assert len(server.requests) == 12


class NaNOnSomeBatches:
    def score(self, predictions, ground_truth, metadata=None):
        return {"quality": float("nan") if metadata[0]["line"] > 30 else 1.0}

    def aggregate(self, batch_results):
        return {"quality": min(b["quality"] for b in batch_results)}


class FailsOnBaseAnswers:
    """Scores the candidate's answers, and fails on the base model's (which the loopback server gives as 'base')."""

    def score(self, predictions, ground_truth, metadata=None):
        if "base answer" in predictions:
            raise RuntimeError("cannot score the base answers")
        return {"ok": 1.0}


def test_nan_score_fails_cleanly(tmp_path: Path) -> None:
    execution = CustomScorerEvaluator(
        evaluator=NaNOnSomeBatches(), dataset=str(DATASET), model="m", s3_output_path=str(tmp_path)
    ).evaluate()
    with pytest.raises(RuntimeError, match=r"returned nan for key 'quality' in batch 4 \(samples 32-39\)"):
        execution.wait(poll=1)
    for name in RESULT_FILES:
        assert not list(tmp_path.rglob(name))


def test_failure_after_the_candidate_is_scored_writes_nothing(tmp_path: Path) -> None:
    with serve(lambda path, body: "base answer") as server:
        execution = CustomScorerEvaluator(
            evaluator=FailsOnBaseAnswers(),
            dataset=str(DATASET),
            model="m",
            base_model=f"openai:{server.base_url}?model=base",
            evaluate_base_model=True,
            s3_output_path=str(tmp_path),
        ).evaluate()
        with pytest.raises(RuntimeError, match="cannot score the base answers"):
            execution.wait(poll=1)
    for name in (*RESULT_FILES, "comparison.json"):
        assert not list(tmp_path.rglob(name)), name
