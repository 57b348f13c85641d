"""LLM-as-judge: rubrics, custom metrics, judge-answer parsing, aggregation and pairwise comparison."""

from evalstack.judge.custom import PLACEHOLDERS, validate_custom_metrics
from evalstack.judge.parsing import parse_judgement, parse_verdict
from evalstack.judge.rubrics import BUILTIN_RUBRICS, Rubric, Sample

__all__ = [
    "BUILTIN_RUBRICS",
    "PLACEHOLDERS",
    "Rubric",
    "Sample",
    "parse_judgement",
    "parse_verdict",
    "validate_custom_metrics",
]
