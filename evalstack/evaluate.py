"""The public evaluation API, named as SageMaker's ``sagemaker.train.evaluate`` module.

from evalstack.evaluate import BenchMarkEvaluator, get_benchmarks
"""

from evalstack.catalog import get_benchmark_properties, get_benchmarks, get_builtin_metrics
from evalstack.catalog.benchmarks import Benchmark
from evalstack.catalog.metrics import BuiltInMetric
from evalstack.runtime.evaluators import (
    BenchMarkEvaluator,
    CustomScorerEvaluator,
    DryRun,
    LLMAsJudgeEvaluator,
    VpcConfig,
)
from evalstack.runtime.execution import (
    EvaluationPipelineExecution,
    ExecutionNotFoundError,
    FailedStatusError,
    PipelineExecutionStatus,
    StepDetail,
    TimeoutExceededError,
)
from evalstack.spec import CustomJudgeMetric

__all__ = [
    "BenchMarkEvaluator",
    "Benchmark",
    "BuiltInMetric",
    "CustomJudgeMetric",
    "CustomScorerEvaluator",
    "DryRun",
    "EvaluationPipelineExecution",
    "ExecutionNotFoundError",
    "FailedStatusError",
    "LLMAsJudgeEvaluator",
    "PipelineExecutionStatus",
    "StepDetail",
    "TimeoutExceededError",
    "VpcConfig",
    "get_benchmark_properties",
    "get_benchmarks",
    "get_builtin_metrics",
]
