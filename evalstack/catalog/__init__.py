"""Data-only catalog: benchmarks, preset metrics, judge metrics and service limits."""

from evalstack.catalog.benchmarks import (
    BENCHMARKS,
    Benchmark,
    BenchmarkInfo,
    get_benchmark_properties,
    get_benchmarks,
    resolve_benchmark,
)
from evalstack.catalog.metrics import (
    JUDGE_METRICS,
    BuiltInMetric,
    JudgeMetricInfo,
    get_builtin_metrics,
    resolve_builtin_metric,
    resolve_judge_metric,
)
from evalstack.catalog.names import resolve_name

__all__ = [
    "BENCHMARKS",
    "JUDGE_METRICS",
    "Benchmark",
    "BenchmarkInfo",
    "BuiltInMetric",
    "JudgeMetricInfo",
    "get_benchmark_properties",
    "get_benchmarks",
    "get_builtin_metrics",
    "resolve_benchmark",
    "resolve_builtin_metric",
    "resolve_judge_metric",
    "resolve_name",
]
