"""evalstack CDK construct library (aws-cdk-lib v2): see docs/deploy.md."""

from evalstack.constructs.approval import ApprovalThresholds, ModelApprovalGate
from evalstack.constructs.bucket import EvaluationBucket
from evalstack.constructs.continuous import ContinuousEvaluation
from evalstack.constructs.function import EvaluationFunction
from evalstack.constructs.key import EvaluationKey
from evalstack.constructs.network import EvaluationNetwork
from evalstack.constructs.pipeline import EvaluationPipeline, repository_image
from evalstack.constructs.platform import (
    ContinuousEvaluationSettings,
    EvaluationPlatform,
    EvaluationPlatformStack,
    parameter_name,
)
from evalstack.constructs.role import EvaluationRole

__all__ = [
    "ApprovalThresholds", "ContinuousEvaluation", "ContinuousEvaluationSettings", "EvaluationBucket",
    "EvaluationFunction", "EvaluationKey", "EvaluationNetwork", "EvaluationPipeline", "EvaluationPlatform",
    "EvaluationPlatformStack", "EvaluationRole", "ModelApprovalGate", "parameter_name", "repository_image",
]  # fmt: skip
