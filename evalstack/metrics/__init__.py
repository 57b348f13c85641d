"""Preset metrics as thin adapters over the canonical libraries, and the custom scorer protocol."""

from evalstack.metrics.custom import CustomScorer, ScorerError, dump_scorer, load_scorer, run_custom_scorer
from evalstack.metrics.registry import PresetScorer, compute_preset
from evalstack.metrics.result import MetricResult

__all__ = [
    "CustomScorer",
    "MetricResult",
    "PresetScorer",
    "ScorerError",
    "compute_preset",
    "dump_scorer",
    "load_scorer",
    "run_custom_scorer",
]
