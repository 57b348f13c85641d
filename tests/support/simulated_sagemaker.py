"""A simulated clock and a SageMaker execution that runs for a set time on that clock.

``simulated_execution(seconds)`` gives an :class:`EvaluationPipelineExecution` whose client is a
real botocore SageMaker client; its DescribePipelineExecution calls are answered in-process (a
``before-call`` handler, as botocore's Stubber does) with Executing until the simulated clock
reaches ``seconds``, then Succeeded. Sleeping advances the clock, so hours pass instantly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse

from evalstack.runtime.backend import Backend
from evalstack.runtime.execution import EvaluationPipelineExecution

ARN = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/evalstack-benchmark/execution/simulated0001"


@dataclass
class SimulatedClock:
    now: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class SimulatedService:
    clock: SimulatedClock
    duration: float
    calls: list[float] = field(default_factory=list)

    def describe(self, **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        self.calls.append(self.clock.now)
        status = "Succeeded" if self.clock.now >= self.duration else "Executing"
        body = {
            "PipelineArn": ARN.split("/execution/")[0],
            "PipelineExecutionArn": ARN,
            "PipelineExecutionStatus": status,
            "CreationTime": datetime(2026, 1, 1, tzinfo=UTC),
        }
        return AWSResponse(None, 200, {}, None), body


def simulated_execution(duration: float) -> tuple[EvaluationPipelineExecution, SimulatedService]:
    clock = SimulatedClock()
    service = SimulatedService(clock, duration)
    client = boto3.client(
        "sagemaker", region_name="us-east-1", aws_access_key_id="simulated", aws_secret_access_key="simulated"
    )
    client.meta.events.register("before-call.sagemaker.DescribePipelineExecution", service.describe)
    execution = EvaluationPipelineExecution(
        name="simulated",
        arn=ARN,
        status="Executing",
        eval_type="benchmark",
        s3_output_path="s3://simulated/out",
        creation_time=None,
        _backend=Backend("sagemaker", client),
        _clock=clock,
    )
    return execution, service
