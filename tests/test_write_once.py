"""Readers of evaluation outputs ignore keys an execution never writes.

S3 outputs are write-once (evalstack.storage, the job role's policies), so job code of another
execution cannot replace a file an execution wrote, but it can create keys the execution never
writes: comparison.json of a run without the base, or a shard file one folder down. The gate and the
Report step's merge must not read them.
"""

from __future__ import annotations

import json

import boto3
import pytest

from evalstack import storage
from evalstack.engine.run import shard_uri, shard_uris
from evalstack.lambdas import approval
from tests.support.lambda_platform import Platform

PENDING = "PendingManualApproval"


@pytest.fixture
def platform(aws: str, monkeypatch: pytest.MonkeyPatch) -> Platform:
    return Platform.create(monkeypatch)


def test_a_planted_comparison_of_a_run_without_base_is_not_read(platform: Platform) -> None:
    (package,) = platform.packages(PENDING)  # no Approved package and no base metadata: no base run
    started = platform.evaluate(package)
    assert json.loads(platform.read(started["spec_uri"]))["evaluate_base_model"] is False
    # A score far below the minimum, and a comparison another execution's job planted: "lower is better"
    # would turn the low score into a pass, and the improvement would meet minImprovement.
    planted = {"base": {"accuracy": 0.9}, "improvements": {"accuracy": -0.5}, "higher_is_better": {"accuracy": False}}
    platform.write_report(started, {"metrics": {"accuracy": 0.05}}, planted)

    result = approval.handler(platform.gate_event(started["pipeline_execution_arn"]))

    assert result["status"] == "Rejected", result
    assert any("accuracy 0.0500 is below the minimum" in r for r in result["reasons"]), result["reasons"]
    described = boto3.client("sagemaker").describe_model_package(ModelPackageName=package)
    assert described["ModelApprovalStatus"] == "Rejected"


def test_the_merge_reads_only_the_shards_the_evaluate_steps_write(tmp_path) -> None:
    output = str(tmp_path / "exec")
    real = shard_uri(output, "candidate", 0, 1)
    storage.write_text(real, '{"id": "1", "scores": {"accuracy": 0.0}}\n')
    # Sorted after the real shard, so a reader matching the file name alone would take it instead.
    planted = storage.join(output, "records", "candidate", "x", "shard-00000-of-00001.jsonl")
    storage.write_text(planted, '{"id": "1", "scores": {"accuracy": 1.0}}\n')
    assert shard_uris(output, "candidate") == [real]
