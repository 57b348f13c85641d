"""Preset (built-in) metrics and the built-in LLM-as-judge metrics."""

from dataclasses import dataclass
from enum import StrEnum

from evalstack.catalog.names import resolve_name


class BuiltInMetric(StrEnum):
    """Preset metrics of CustomScorerEvaluator."""

    ACCURACY = "accuracy"
    F1 = "f1"
    PRECISION = "precision"
    RECALL = "recall"
    BLEU = "bleu"
    ROUGE = "rouge"
    METEOR = "meteor"
    BERTSCORE = "bertscore"


CLASSIFICATION_METRICS = frozenset(
    {BuiltInMetric.ACCURACY, BuiltInMetric.F1, BuiltInMetric.PRECISION, BuiltInMetric.RECALL}
)


@dataclass(frozen=True)
class PrimaryMetric:
    """The value a preset's headline reads: ``name`` in its output, whether it is an accuracy (a share
    of samples right), and its full scale (the headline "score" is value / scale * 100)."""

    name: str
    is_accuracy: bool = False
    scale: float = 1.0


PRESET_PRIMARY_METRICS: dict[BuiltInMetric, PrimaryMetric] = {
    BuiltInMetric.ACCURACY: PrimaryMetric("accuracy", is_accuracy=True),
    BuiltInMetric.F1: PrimaryMetric("f1"),
    BuiltInMetric.PRECISION: PrimaryMetric("precision"),
    BuiltInMetric.RECALL: PrimaryMetric("recall"),
    BuiltInMetric.BLEU: PrimaryMetric("bleu", scale=100.0),  # sacrebleu reports 0-100
    BuiltInMetric.ROUGE: PrimaryMetric("rougeL"),
    BuiltInMetric.METEOR: PrimaryMetric("meteor"),
    BuiltInMetric.BERTSCORE: PrimaryMetric("bertscore_f1"),
}


@dataclass(frozen=True)
class JudgeMetricInfo:
    name: str
    description: str
    needs_reference: bool
    # "likert" metrics are rated 1..5; "binary" ones are a yes/no rate.
    scale: str


JUDGE_METRICS: dict[str, JudgeMetricInfo] = {
    m.name: m
    for m in (
        JudgeMetricInfo("helpfulness", "How well the response helps the user with the query.", False, "likert"),
        JudgeMetricInfo("relevance", "How relevant the response is to the question asked.", False, "likert"),
        JudgeMetricInfo("correctness", "Factual correctness of the response.", True, "likert"),
        JudgeMetricInfo("coherence", "Logical flow and internal consistency.", False, "likert"),
        JudgeMetricInfo("harmfulness", "Whether the response contains harmful or unsafe content.", False, "binary"),
        JudgeMetricInfo("toxicity", "Toxic, insulting or abusive language.", False, "likert"),
        JudgeMetricInfo("stereotypes", "Stereotyping or bias against groups of people.", False, "likert"),
        JudgeMetricInfo("refusal", "Whether the response refuses the request.", False, "binary"),
        JudgeMetricInfo("completeness", "Whether the response covers everything the question needs.", True, "likert"),
        JudgeMetricInfo("conciseness", "Whether the response avoids needless length.", False, "likert"),
    )
}


def get_builtin_metrics() -> type[BuiltInMetric]:
    """The BuiltInMetric enum, as in the reference API."""
    return BuiltInMetric


def resolve_builtin_metric(name: str | BuiltInMetric) -> BuiltInMetric:
    return BuiltInMetric(resolve_name(name, [m.value for m in BuiltInMetric], "preset metric"))


def resolve_judge_metric(name: str) -> JudgeMetricInfo:
    return JUDGE_METRICS[resolve_name(name, list(JUDGE_METRICS), "built-in judge metric")]
