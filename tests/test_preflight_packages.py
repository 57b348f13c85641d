"""A model package is described before the run (moto server): one that does not exist, or declares
nothing to serve, fails in ``evaluate()`` with the package and field named, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from evalstack.evaluate import BenchMarkEvaluator, EvaluationPipelineExecution
from evalstack.runtime.model_resolution import AwsLookup
from evalstack.runtime.preflight import preflight
from evalstack.spec import EvaluationSpec
from tests.support.model_packages import register_package


def _register(container: dict[str, object], metadata: dict[str, str] | None = None) -> str:
    return register_package(boto3.client("sagemaker", region_name="us-east-1"), metadata=metadata, **container)


def _fails_and_writes_nothing(model: str, home: Path) -> str:
    evaluator = BenchMarkEvaluator("ARC", model=model, region="us-east-1")
    with pytest.raises(ValueError) as raised:
        evaluator.evaluate()
    assert not (home / "results").exists()
    assert EvaluationPipelineExecution.get_all() == []
    return str(raised.value)


@pytest.mark.parametrize(
    ("container", "metadata", "expected"),
    [
        ({}, None, "InferenceSpecification.Containers declares no model data"),
        ({"ModelDataUrl": "s3://Not_A_Bucket/model.tar.gz"}, None, "InferenceSpecification.Containers[0].ModelDataUrl"),
        ({}, {"evalstack:model_reference": "nope://x"}, "CustomerMetadataProperties['evalstack:model_reference']"),
    ],
    ids=["no model data", "bad model data uri", "bad metadata reference"],
)
def test_a_package_that_declares_nothing_servable_fails_before_the_run(
    aws: str, isolated_environment: Path, container: dict, metadata: dict | None, expected: str
) -> None:
    arn = _register(container, metadata)
    message = _fails_and_writes_nothing(arn, isolated_environment)
    assert arn in message and expected in message


def test_a_package_that_does_not_exist_is_named(aws: str, isolated_environment: Path) -> None:
    arn = "arn:aws:sagemaker:us-east-1:123456789012:model-package/nothing-here/1"
    message = _fails_and_writes_nothing(arn, isolated_environment)
    assert message == f"candidate model: model package {arn} does not exist (DescribeModelPackage found nothing)"


@pytest.mark.parametrize(
    ("container", "metadata"),
    [
        ({"ModelDataUrl": "s3://models/llm/model.tar.gz"}, None),
        ({}, {"evalstack:model_reference": "openai:http://h/v1?model=m"}),
    ],
    ids=["one model artifact", "evalstack metadata"],
)
def test_a_servable_package_passes(aws: str, container: dict, metadata: dict | None) -> None:
    arn = _register(container, metadata)
    spec = EvaluationSpec(eval_type="benchmark", model=arn, benchmark="ARC").validate()
    preflight(spec, reach=True, aws=lambda: AwsLookup(boto3.Session(), "us-west-2"))  # the ARN's region is used
