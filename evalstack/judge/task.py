"""JudgeTask: the LLM-as-judge evaluation as an :class:`evalstack.task.EvalTask`.

Items are dataset rows. Rows without a response are answered by the model the engine passes to
:meth:`JudgeTask.run` first (the base role always generates: a dataset's responses belong to the
model being evaluated). Then every metric's rubric is put to the judge model, which is built here
from ``spec.judge.evaluator_model`` through the normal backend loader, so its calls are cached and
a rerun resumes. :meth:`JudgeTask.compare` adds the position-swapped pairwise comparison.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

from evalstack.catalog.hyperparameters import Hyperparameters, request_concurrency
from evalstack.catalog.limits import MAX_JUDGE_PROMPTS, MIN_DATASET_SAMPLES
from evalstack.catalog.metrics import resolve_judge_metric
from evalstack.data import DatasetReader, Record
from evalstack.data.items import record_item
from evalstack.judge.calls import ask
from evalstack.judge.custom import validate_custom_metrics
from evalstack.judge.pairwise import Pair, judge_pairs
from evalstack.judge.parsing import parse_judgement
from evalstack.judge.rubrics import BUILTIN_RUBRICS, Rubric, Sample, describe
from evalstack.judge.stats import summarise
from evalstack.models import cached_backend
from evalstack.models.base import ModelBackend
from evalstack.models.prompts import answer_prompts
from evalstack.models.reference import is_bedrock_shaped, parse_model_reference
from evalstack.spec import EvaluationSpec
from evalstack.task import Aggregate, Item

ROLES = ("candidate", "base")


class JudgeParseError(ValueError):
    """Too many judge answers could not be parsed (hyperparameter max_parse_failure_rate)."""


def judge_reference(evaluator_model: str) -> str:
    """The judge's model reference. A bare Bedrock model id, inference profile id or Bedrock ARN (as
    the reference API takes) means Bedrock, the default judge backend; anything else must be a full
    model reference. ValueError when it is neither."""
    reference = f"bedrock:{evaluator_model}" if is_bedrock_shaped(evaluator_model) else evaluator_model
    parsed = parse_model_reference(reference)
    if parsed.is_label:
        raise ValueError(
            f"judge.evaluator_model: {evaluator_model!r} is neither a Bedrock model id nor a model reference; "
            "give e.g. 'anthropic.claude-3-sonnet-20240229-v1:0' or 'openai:http://host:port/v1?model=name'"
        )
    return reference


def rubrics_for(spec: EvaluationSpec) -> list[Rubric]:
    """The spec's judge metrics as rubrics, built-in first; ValueError before anything runs."""
    if spec.judge is None:
        raise ValueError("judge: an llm_as_judge evaluation needs a judge configuration")
    builtin = [BUILTIN_RUBRICS[resolve_judge_metric(name).name] for name in spec.judge.builtin_metrics]
    rubrics = builtin + validate_custom_metrics(spec.judge.custom_metrics)
    if not rubrics:
        raise ValueError("judge: give builtin_metrics or custom_metrics")
    names = [r.name for r in rubrics]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"judge.builtin_metrics: {duplicated} listed more than once")
    return rubrics


def _reference_text(reference: str | list[str] | None) -> str | None:
    if isinstance(reference, list):
        return "\n".join(f"- {r}" for r in reference)
    return reference


class JudgeTask:
    """LLM-as-judge over a dataset for one role ("candidate" or "base")."""

    def __init__(self, spec: EvaluationSpec, role: str, *, judge: ModelBackend | None = None) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {list(ROLES)}, got {role!r}")
        if spec.dataset is None or not spec.dataset.uri:
            raise ValueError("dataset: required for eval_type 'llm_as_judge'")
        self.spec = spec
        self.dataset = spec.dataset
        self.role = role
        self.rubrics = rubrics_for(spec)
        assert spec.judge is not None  # checked by rubrics_for
        self.judge_reference = judge_reference(spec.judge.evaluator_model)  # fails here, not mid-run
        self.hp = Hyperparameters.for_kind("llm_as_judge", spec.hyperparameters)
        self._judge = judge
        self._items: list[Item] | None = None
        self._sha256: str | None = None
        self._has_responses = False

    # -- EvalTask ---------------------------------------------------------------------------

    @property
    def needs_model(self) -> bool:
        self.items()
        return self.role == "base" or not self._has_responses

    def items(self) -> list[Item]:
        if self._items is None:
            self._items = self._read_items()
        return self._items

    def dataset_sha256(self) -> str:
        self.items()
        assert self._sha256 is not None
        return self._sha256

    def run(self, items: Sequence[Item], model: ModelBackend | None) -> list[dict[str, Any]]:
        if not items:  # an empty shard calls no model
            return []
        samples, sources = self._responses(items, model)
        records: list[dict[str, Any]] = [
            {
                "id": item.id,
                "subtask": None,
                "line": item.data["line"],
                "question": sample.question,
                "response": sample.response,
                "response_source": source,
                "reference": item.data["reference"],
                "context": sample.context,
                "scores": {},
                "judgements": {},
            }
            for item, sample, source in zip(items, samples, sources, strict=True)
        ]
        for rubric in self.rubrics:
            rendered = [rubric.render(sample) for sample in samples]
            prompts = [r.prompt for r in rendered]
            with self._judge_session() as judge:
                parse = partial(parse_judgement, rubric=rubric)
                asked = ask(judge, prompts, parse, rubric.strict_suffix(), self.hp.judge_max_tokens)
            for record, shown, answer in zip(records, rendered, asked, strict=True):
                parsed = answer.parsed
                normalised = rubric.normalise(parsed.score) if parsed.score is not None else None
                record["judgements"][rubric.name] = {
                    "score": parsed.score,
                    "normalized_score": normalised,
                    "reasoning": parsed.reasoning,
                    "raw_output": answer.raw_outputs[-1],
                    "raw_outputs": list(answer.raw_outputs),
                    "parse_status": answer.status,
                    "parse_format": parsed.format,
                    "parse_error": parsed.error,
                    "retries": answer.retries,
                    "reference_used": shown.reference_used,
                    "note": shown.note,
                }
                if normalised is not None:
                    record["scores"][rubric.name] = normalised
        return records

    def aggregate(self, records: Sequence[dict[str, Any]]) -> Aggregate:
        threshold = self.hp.threshold
        agg = Aggregate(metrics={})
        per_metric: dict[str, Any] = {}
        warnings: list[str] = []
        for rubric in self.rubrics:
            judged = [r["judgements"][rubric.name] for r in records]
            values = [j["normalized_score"] for j in judged if j["normalized_score"] is not None]
            raw = [j["score"] for j in judged if j["score"] is not None]
            summary = summarise(values)
            passed = sum(1 for v in values if rubric.passes(v, threshold))
            pass_rate = passed / len(values) if values else None
            per_metric[rubric.name] = {
                **describe(rubric),
                "n": summary.n,
                "mean": summary.mean,
                "raw_mean": sum(raw) / len(raw) if raw else None,
                "std": summary.std,
                "stderr": summary.stderr,
                "ci95": list(summary.ci95) if summary.ci95 else None,
                "pass_rate": pass_rate,
                "threshold": threshold,
                "parse_failures": sum(1 for j in judged if j["parse_status"] == "failed"),
                "retries": sum(j["retries"] for j in judged),
                "reference_missing": sum(1 for j in judged if j["note"]),
            }
            failures = per_metric[rubric.name]["parse_failures"]
            if summary.mean is not None:
                agg.metrics[rubric.name] = summary.mean
                agg.metrics[f"{rubric.name}_pass_rate"] = passed / summary.n
            else:
                # Reported as null, never dropped: a missing metric would read as "not asked for".
                agg.metrics[rubric.name] = None  # type: ignore[assignment]
                agg.metrics[f"{rubric.name}_pass_rate"] = None  # type: ignore[assignment]
                warnings.append(
                    f"{rubric.name}: none of {len(judged)} judge answers could be parsed ({failures} parse "
                    "failures); the metric is null. See raw_output in samples.jsonl"
                )
            rate = failures / len(judged) if judged else 0.0
            if rate > self.hp.max_parse_failure_rate:
                raise JudgeParseError(
                    f"judge metric {rubric.name!r}: {failures} of {len(judged)} judge answers ({rate:.0%}) could not "
                    f"be parsed, more than max_parse_failure_rate={self.hp.max_parse_failure_rate}; check the "
                    "judge model and its prompt, or raise the hyperparameter to accept the failures"
                )
            if summary.stderr is not None:
                agg.stderr[rubric.name] = summary.stderr
            if summary.ci95 is not None:
                agg.confidence_intervals[rubric.name] = list(summary.ci95)
        agg.details = {
            "judge_model": self.judge_reference,
            "threshold": threshold,
            "confidence_interval": "95% Student t on the mean of normalized scores",
            "parse_failures": sum(m["parse_failures"] for m in per_metric.values()),
            "retries": sum(m["retries"] for m in per_metric.values()),
            "per_metric": per_metric,
            "warnings": warnings,
        }
        return agg

    # -- base versus fine-tuned -------------------------------------------------------------

    def compare(self, candidate_records: Sequence[dict[str, Any]], base_records: Sequence[dict[str, Any]]) -> dict:
        """Per-metric means of both models, their difference, and the position-swapped pairwise verdicts."""
        fine_tuned = self.aggregate(candidate_records).metrics
        base = self.aggregate(base_records).metrics
        by_id = {r["id"]: r for r in base_records}
        missing = [r["id"] for r in candidate_records if r["id"] not in by_id]
        if missing or len(by_id) != len(candidate_records):
            raise ValueError(
                f"compare: candidate and base records must cover the same items (unmatched: {missing[:5]})"
            )
        pairs = [
            Pair(
                r["id"],
                Sample(r["question"], r["response"], _reference_text(r["reference"]), r["context"]),
                by_id[r["id"]]["response"],
            )
            for r in candidate_records
        ]
        return {
            "fine_tuned": fine_tuned,
            "base": base,
            "improvement": {
                k: fine_tuned[k] - base[k]
                for k in fine_tuned
                if k in base and fine_tuned[k] is not None and base[k] is not None
            },
            "higher_is_better": {r.name: r.higher_is_better for r in self.rubrics},
            "pairwise": self._pairwise(pairs),
        }

    def _pairwise(self, pairs: list[Pair]) -> dict[str, Any]:
        with self._judge_session() as judge:
            return judge_pairs(judge, pairs, self.hp.judge_max_tokens)

    # -- internals --------------------------------------------------------------------------

    def _read_items(self) -> list[Item]:
        reader = DatasetReader(self.dataset, limit=self.hp.limit)
        records: list[Record] = []
        for record in reader:
            if len(records) == MAX_JUDGE_PROMPTS:
                raise ValueError(
                    f"{self.dataset.uri}: more than {MAX_JUDGE_PROMPTS:,} prompts; an LLM-as-judge "
                    f"evaluation takes at most {MAX_JUDGE_PROMPTS:,} (set hyperparameter 'limit' to judge fewer)"
                )
            records.append(record)
        if len(records) < MIN_DATASET_SAMPLES:
            raise ValueError(
                f"hyperparameters.limit: {len(records)} sample(s) selected; an LLM-as-judge evaluation "
                f"needs at least {MIN_DATASET_SAMPLES}"
            )
        summary = reader.summary
        self._sha256 = summary.sha256
        self._has_responses = summary.has_responses
        return [record_item(r) for r in records]

    def _responses(self, items: Sequence[Item], model: ModelBackend | None) -> tuple[list[Sample], list[str]]:
        """Samples to judge, and where each response came from ("dataset" or "model")."""
        generate = [i for i, item in enumerate(items) if self.role == "base" or item.data["response"] is None]
        generated: dict[int, str] = {}
        if generate:
            unprompted = [items[i].data["line"] for i in generate if items[i].data["prompt"] is None]
            if unprompted:
                raise ValueError(
                    f"{self.dataset.uri}: line {unprompted[0]}: field {self.dataset.columns.prompt!r}: missing; "
                    f"the {self.role} model must answer every prompt"
                )
            if model is None:
                raise ValueError(
                    f"model: {len(generate)} sample(s) have no response in the dataset, so the "
                    f"{self.role} model must generate them, but no model was given"
                )
            answers = answer_prompts(model, [items[i].data["prompt"] for i in generate], self.hp.to_dict())
            generated = dict(zip(generate, answers, strict=True))
        samples: list[Sample] = []
        sources: list[str] = []
        for i, item in enumerate(items):
            response = generated.get(i, item.data["response"])
            samples.append(
                Sample(
                    question=item.data["prompt"] or "(no question given)",
                    response=response,
                    reference=_reference_text(item.data["reference"]),
                    context=item.data["context"],
                )
            )
            sources.append("model" if i in generated else "dataset")
        return samples, sources

    @contextlib.contextmanager
    def _judge_session(self) -> Iterator[ModelBackend]:
        """The judge given to the task (tests), or one on the shared cache, closed after use."""
        if self._judge is not None:
            yield self._judge
            return
        with cached_backend(self.judge_reference, max_concurrency=request_concurrency(self.hp.to_dict())) as judge:
            yield judge
