"""BenchmarkTask: one benchmark (all or some subtasks) as an :class:`evalstack.task.EvalTask`.

- ``items()``: every doc of the selected subtasks in file order, ids ``<benchmark>/<subtask>/<key>``;
  with ``limit`` a stratified sample: the limit is split across subtasks in proportion to their
  sizes (largest remainder, ties to the earlier subtask), and each subtask's share is drawn with
  ``random.Random(f"{seed}:{subtask}")`` and kept in file order. Same inputs, same items.
- ``run()``: builds every request of the slice and hands them to the backend in one call (the
  backend runs them concurrently and caches them). Multiple choice is scored by log-likelihood
  when ``model.supports_loglikelihood``, otherwise generatively by answer letter; each record says
  which (``mode``).
- ``aggregate()``: reads records only (so shards merge): per-subtask means with lm-eval's stderr,
  and the benchmark score as the size-weighted (micro) mean with lm-eval's pooled stderr.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

from evalstack.benchmarks import stats
from evalstack.benchmarks.answers import extract_letter, letters
from evalstack.benchmarks.definition import Definition, Doc, Generation, MultipleChoice
from evalstack.benchmarks.definitions import DEFINITIONS
from evalstack.benchmarks.source import Source, open_source
from evalstack.catalog.benchmarks import resolve_benchmark
from evalstack.catalog.hyperparameters import Hyperparameters
from evalstack.models.base import GenerateRequest, LoglikelihoodRequest, ModelBackend
from evalstack.models.loglikelihood_tokens import loglikelihood_details
from evalstack.spec import EvaluationSpec
from evalstack.task import Aggregate, Item

LOGLIKELIHOOD = "loglikelihood"
GENERATE = "generate"


def select_subtasks(definition: Definition, requested: Sequence[str] | None) -> list[str | None]:
    """The subtasks to run, canonically spelled; ValueError lists the valid ones."""
    valid = definition.subtasks
    name = definition.benchmark.value
    if not requested:
        return list(valid) if valid else [None]
    if not valid:
        raise ValueError(f"{name} has no subtasks, got {list(requested)}. Valid subtasks: (none)")
    by_key = {s.casefold(): s for s in valid}
    unknown = [s for s in requested if s.casefold() not in by_key]
    if unknown:
        raise ValueError(f"Unknown {name} subtask(s) {unknown}. Valid subtasks: {', '.join(valid)}")
    return [by_key[s.casefold()] for s in requested]


def allocate(limit: int, sizes: Sequence[int]) -> list[int]:
    """Split ``limit`` across strata in proportion to ``sizes`` (Hamilton's largest remainder)."""
    total = sum(sizes)
    if limit >= total:
        return list(sizes)
    quotas = [limit * size / total for size in sizes]
    counts = [int(q) for q in quotas]
    order = sorted(range(len(sizes)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: limit - sum(counts)]:
        counts[i] += 1
    return counts


class BenchmarkTask:
    def __init__(self, spec: EvaluationSpec, role: str = "candidate", source: Source | None = None) -> None:
        if not spec.benchmark:
            raise ValueError("benchmark: required for eval_type 'benchmark'")
        self.spec = spec
        self.role = role
        self.definition = DEFINITIONS[resolve_benchmark(spec.benchmark)]
        self.hyperparameters = Hyperparameters.for_kind("benchmark", spec.hyperparameters)
        self.subtasks = select_subtasks(self.definition, spec.subtasks)
        self.source = source or open_source()
        requested = self.hyperparameters.num_fewshot
        self.num_fewshot = self.definition.default_fewshot if requested is None else requested
        self._docs: dict[str | None, list[tuple[str, Doc]]] = {}
        self._shots: dict[str | None, list[Doc]] = {}

    @property
    def needs_model(self) -> bool:
        return True

    @property
    def name(self) -> str:
        return self.definition.benchmark.value

    def _subtask_docs(self, subtask: str | None) -> list[tuple[str, Doc]]:
        if subtask not in self._docs:
            self._docs[subtask] = self.definition.docs(self.source, subtask)
        return self._docs[subtask]

    def shots(self, subtask: str | None) -> list[Doc]:
        if subtask not in self._shots:
            if self.num_fewshot == 0:
                self._shots[subtask] = []
            else:
                pool = self.definition.fewshot_pool(self.source, subtask)
                if self.num_fewshot > len(pool):
                    raise ValueError(
                        f"hyperparameter 'num_fewshot': {self.name} has {len(pool)} few-shot examples"
                        f"{' for ' + subtask if subtask else ''}, asked for {self.num_fewshot}"
                    )
                self._shots[subtask] = pool[: self.num_fewshot]
        return self._shots[subtask]

    def _item_id(self, subtask: str | None, key: str) -> str:
        return "/".join(p for p in (self.definition.key, subtask, key) if p)

    def items(self) -> list[Item]:
        per_subtask = [self._subtask_docs(s) for s in self.subtasks]
        limit = self.hyperparameters.limit
        counts = [len(d) for d in per_subtask] if limit is None else allocate(limit, [len(d) for d in per_subtask])
        out: list[Item] = []
        for subtask, docs, count in zip(self.subtasks, per_subtask, counts, strict=True):
            if count < len(docs):
                rng = random.Random(f"{self.hyperparameters.seed}:{subtask}")
                chosen = sorted(rng.sample(range(len(docs)), count))
                docs = [docs[i] for i in chosen]
            out.extend(Item(self._item_id(subtask, key), subtask, doc) for key, doc in docs)
        return out

    def dataset_sha256(self) -> str:
        """sha256 over every file this task reads: the evaluated splits and the few-shot sources."""
        for subtask in self.subtasks:
            self._subtask_docs(subtask)
            self.shots(subtask)
        return self.source.sha256()

    def run(self, items: Sequence[Item], model: ModelBackend | None) -> list[dict[str, Any]]:
        if model is None:
            raise ValueError(f"{self.name} needs a model backend")
        if not items:
            return []
        definition = self.definition
        if isinstance(definition, Generation):
            return self._run_generation(definition, items, model)
        assert isinstance(definition, MultipleChoice)
        if model.supports_loglikelihood:
            return self._run_loglikelihood(definition, items, model)
        return self._run_lettered(definition, items, model)

    def _generate_request(self, prompt: str, stop: tuple[str, ...]) -> GenerateRequest:
        hp = self.hyperparameters
        return GenerateRequest(
            prompt=prompt, messages=(("user", prompt),), max_tokens=hp.max_tokens,
            temperature=hp.temperature, top_p=hp.top_p, stop=stop,
        )  # fmt: skip

    def _run_generation(self, definition: Generation, items: Sequence[Item], model: ModelBackend) -> list[dict]:
        prompts = [definition.prompt(it.data, self.shots(it.subtask), it.subtask) for it in items]
        responses = model.generate([self._generate_request(p, definition.stop) for p in prompts])
        records = []
        for item, response in zip(items, responses, strict=True):
            scores, extracted = definition.score(item.data, response)
            records.append(_record(item, scores, GENERATE, target=definition.target(item.data),
                                   response=response, extracted=extracted))  # fmt: skip
        return records

    def _run_loglikelihood(self, definition: MultipleChoice, items: Sequence[Item], model: ModelBackend) -> list[dict]:
        per_item = [
            definition.ll_requests(it.data, definition.shots_prefix(self.shots(it.subtask), it.subtask)) for it in items
        ]
        # Choices often share (context, continuation) pairs (TruthfulQA mc1 and mc2): ask once.
        unique = list(dict.fromkeys(pair for pairs in per_item for pair in pairs))
        results = model.loglikelihood([LoglikelihoodRequest(c, k) for c, k in unique])
        by_pair = dict(zip(unique, results, strict=True))
        records = []
        for item, pairs in zip(items, per_item, strict=True):
            lls = [by_pair[pair].logprob for pair in pairs]
            scores = definition.score_loglikelihoods(item.data, lls)
            records.append(_record(item, scores, LOGLIKELIHOOD, target=item.data["gold"], loglikelihoods=lls))
        return _described(records, model)

    def _run_lettered(self, definition: MultipleChoice, items: Sequence[Item], model: ModelBackend) -> list[dict]:
        prompts = [
            definition.lettered_prefix(self.shots(it.subtask), it.subtask) + definition.lettered(it.data)
            for it in items
        ]
        responses = model.generate([self._generate_request(p, ()) for p in prompts])
        metric = definition.generative_metric()
        records = []
        for item, response in zip(items, responses, strict=True):
            valid = letters(len(item.data["options"]))
            letter = extract_letter(response, valid)
            gold = valid[item.data["gold"]]
            records.append(_record(item, {metric: float(letter == gold)}, GENERATE, target=gold,
                                   response=response, extracted={"letter": letter}))  # fmt: skip
        return _described(records, model)

    def aggregate(self, records: Sequence[dict[str, Any]]) -> Aggregate:
        return aggregate_records(self.name, records, self.num_fewshot)


def _described(records: list[dict[str, Any]], model: ModelBackend) -> list[dict[str, Any]]:
    """Multiple-choice records with how the backend scored them (its tokenization, or a server's logprobs
    mode and probe, which tells why letters were used), once per call: aggregate() reports it."""
    details = loglikelihood_details(model)
    if details is not None:
        records[0]["tokenization"] = details
    return records


def _record(item: Item, scores: dict[str, float], mode: str, **extra: Any) -> dict[str, Any]:
    return {"id": item.id, "subtask": item.subtask, "scores": scores, "mode": mode, **extra}


def _summary(values: list[float]) -> tuple[float, float | None]:
    return stats.mean(values), stats.mean_stderr(values)


def aggregate_records(benchmark: str, records: Sequence[dict[str, Any]], num_fewshot: int) -> Aggregate:
    if not records:
        raise ValueError(f"{benchmark}: no records to aggregate")
    metric_names = sorted({m for r in records for m in r["scores"]})
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(record["subtask"] or "", []).append(record)
    has_subtasks = any(key for key in groups)

    metrics: dict[str, float] = {}
    stderr: dict[str, float] = {}
    intervals: dict[str, list[float]] = {}
    subtasks: dict[str, dict[str, float]] = {}
    for metric in metric_names:
        per_group = {
            key: [float(r["scores"][metric]) for r in rows if metric in r["scores"]] for key, rows in groups.items()
        }
        per_group = {key: values for key, values in per_group.items() if values}
        everything = [v for values in per_group.values() for v in values]
        metrics[metric] = stats.mean(everything)
        if has_subtasks:
            summaries = {key: _summary(values) for key, values in sorted(per_group.items())}
            for key, (mu, se) in summaries.items():
                subtasks.setdefault(key, {})[metric] = mu
                if se is not None:
                    subtasks[key][f"{metric}_stderr"] = se
            defined = [(se, len(per_group[key])) for key, (_, se) in summaries.items() if se is not None]
            overall_se = stats.pooled_stderr([se for se, _ in defined], [n for _, n in defined]) if defined else None
        else:
            overall_se = stats.mean_stderr(everything)
        if overall_se is not None:
            stderr[metric] = overall_se
            intervals[metric] = [metrics[metric] - 1.96 * overall_se, metrics[metric] + 1.96 * overall_se]

    described = [r["tokenization"] for r in records if "tokenization" in r]
    tokenizations = list({json.dumps(t, sort_keys=True): t for t in described}.values())
    modes = sorted({r["mode"] for r in records})
    parse_failures = sum(1 for r in records if _parse_failed(r))
    details = {
        "benchmark": benchmark,
        "scoring_mode": modes[0] if len(modes) == 1 else modes,
        "num_samples": len(records),
        "num_fewshot": num_fewshot,
        "subtask_sizes": {key: len(rows) for key, rows in sorted(groups.items()) if key},
        "parse_failures": parse_failures,
        "aggregation": "micro average over samples; stderr pooled over subtasks as lm-eval's pooled_sample_stderr"
        if has_subtasks
        else "mean over samples; stderr = sample stddev (n-1) / sqrt(n)",
    }
    if tokenizations:
        details["tokenization"] = tokenizations[0] if len(tokenizations) == 1 else tokenizations
    return Aggregate(metrics=metrics, stderr=stderr, confidence_intervals=intervals, subtasks=subtasks, details=details)


def _parse_failed(record: dict[str, Any]) -> bool:
    extracted = record.get("extracted")
    if not isinstance(extracted, dict):
        return False
    return any(value in (None, "[invalid]", "[invalidanswer]") for value in extracted.values())
