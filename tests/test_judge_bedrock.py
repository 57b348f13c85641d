"""The judge on Amazon Bedrock Converse: real request and response shapes, checked by botocore's
Stubber against the bedrock-runtime service model, through the models layer's Bedrock backend."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from evalstack.judge.rubrics import BUILTIN_RUBRICS, Sample
from evalstack.judge.task import JudgeTask
from evalstack.models import load_backend
from tests.support.judge_data import judge_spec, truthfulqa_questions, write_dataset

MODEL_ID = "anthropic.claude-3-sonnet-20240229-v1:0"


def converse_response(text: str) -> dict:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 412, "outputTokens": 31, "totalTokens": 443},
        "metrics": {"latencyMs": 812},
    }


def converse_request(prompt: str) -> dict:
    return {
        "modelId": MODEL_ID,
        "messages": [{"role": "user", "content": [{"text": prompt}]}],
        "inferenceConfig": {"maxTokens": 512, "temperature": 0.0, "topP": 1.0},
    }


def test_bedrock_converse_judge(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALSTACK_HOME", str(tmp_path / "home"))
    rows = truthfulqa_questions(10)
    dataset = write_dataset(tmp_path / "qa.jsonl", rows)
    spec = judge_spec(dataset, MODEL_ID, ["correctness"])  # a bare model id means Bedrock
    spec.validate()

    client = boto3.client(
        "bedrock-runtime", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    rubric = BUILTIN_RUBRICS["correctness"]
    prompts = [rubric.render(Sample(r["question"], r["best"], r["best"])).prompt for r in rows]
    answers = [f'{{"reasoning": "matches the reference", "score": {1 + i % 5}}}' for i in range(10)]
    answers[3] = "I am not able to grade this."
    with Stubber(client) as stub:
        for prompt, answer in zip(prompts, answers, strict=True):
            stub.add_response("converse", converse_response(answer), converse_request(prompt))
        stub.add_response(
            "converse",
            converse_response('{"reasoning": "on retry", "score": 4}'),
            converse_request(prompts[3] + rubric.strict_suffix()),
        )
        judge = load_backend(f"bedrock:{MODEL_ID}", clients={"bedrock-runtime": client}, max_concurrency=1)
        task = JudgeTask(spec, "candidate", judge=judge)
        assert task.judge_reference == f"bedrock:{MODEL_ID}"
        records = task.run(task.items(), None)
        stub.assert_no_pending_responses()

    scores = [r["judgements"]["correctness"]["score"] for r in records]
    assert scores == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
    assert records[3]["judgements"]["correctness"]["parse_status"] == "ok_after_retry"
    assert records[3]["judgements"]["correctness"]["reasoning"] == "on retry"
    assert all(r["judgements"]["correctness"]["reference_used"] for r in records)
    agg = task.aggregate(records)
    assert agg.metrics["correctness"] == pytest.approx(0.5)
    assert agg.metrics["correctness_pass_rate"] == pytest.approx(0.6)
    assert agg.details["retries"] == 1
    assert agg.details["parse_failures"] == 0
