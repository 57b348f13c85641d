"""evalstack CDK construct library (aws-cdk-lib v2): see docs/deploy.md. Defaults: evalstack.constructs.defaults."""

from evalstack.constructs.approval import ApprovalThresholds, ModelApprovalGate
from evalstack.constructs.bucket import EvaluationBucket
from evalstack.constructs.continuous import ContinuousEvaluation
from evalstack.constructs.function import EvaluationFunction
from evalstack.constructs.key import EvaluationKey, platform_key_statements, prepare_key
from evalstack.constructs.network import EvaluationNetwork
from evalstack.constructs.operations import EvaluationAlarms
from evalstack.constructs.pipeline import EvaluationPipeline, processing_image
from evalstack.constructs.platform import (
    ContinuousEvaluationSettings,
    EvaluationPlatform,
    EvaluationPlatformStack,
    parameter_name,
)
from evalstack.constructs.role import EvaluationRole, PipelineRole

__all__ = [
    "ApprovalThresholds", "ContinuousEvaluation", "ContinuousEvaluationSettings", "EvaluationAlarms",
    "EvaluationBucket", "EvaluationFunction", "EvaluationKey", "EvaluationNetwork", "EvaluationPipeline",
    "EvaluationPlatform", "EvaluationPlatformStack", "EvaluationRole", "ModelApprovalGate", "PipelineRole",
    "parameter_name", "platform_key_statements", "prepare_key", "processing_image",
]  # fmt: skip
