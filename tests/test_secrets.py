"""Secrets are never written: the masking function, and a scan of everything end-to-end runs leave behind.

The scan runs evaluations on the embedded default with a secret in every input the user controls
(model label, evaluation name, MLflow experiment and run names, hyperparameters, the API key an
OpenAI-compatible server receives and echoes back in an error), then reads every byte under
EVALSTACK_HOME, the output path and the captured output: no secret appears.
"""

from __future__ import annotations

import json
import random
import re
import string
from pathlib import Path

import pytest

from evalstack.evaluate import CustomScorerEvaluator
from evalstack.masking import MASK, looks_like_token, mask, mask_value
from evalstack.models import parse_model_reference
from evalstack.spec import EvaluationSpec
from tests.conftest import EXAMPLES
from tests.support.openai_server import Reply, serve

DATASET = EXAMPLES / "truthfulqa_answers.jsonl"


def _random_token(length: int, seed: int) -> str:
    """A token as providers mint them: random base62 (seeded, so the test is reproducible)."""
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(length))


OPENAI_KEY = "sk-proj-" + _random_token(40, 1)
HF_TOKEN = "hf_" + _random_token(34, 2)
AWS_KEY_ID = "AKIA" + _random_token(16, 3).upper()
AWS_SECRET = _random_token(40, 4)
GITHUB_TOKEN = "ghp_" + _random_token(36, 5)
SLACK_TOKEN = "xoxb-1234567890-" + _random_token(24, 6)
BARE_TOKEN = _random_token(48, 7)
SECRETS = (OPENAI_KEY, HF_TOKEN, AWS_KEY_ID, AWS_SECRET, GITHUB_TOKEN, SLACK_TOKEN, BARE_TOKEN)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("openai:https://user:hunter2@host/v1?model=m", "openai:https://***@host/v1?model=m"),
        ("my-model?api_key=abc&x=1", "my-model?api_key=***&x=1"),
        (
            "?token=t1&password=p2&secret=s3&key=k4&signature=s5",
            "?token=***&password=***&secret=***&key=***&signature=***",
        ),
        ("https://b.s3.amazonaws.com/k?X-Amz-Signature=ab12&X-Amz-Security-Token=cd", None),
        ('{"api_key": "abc", "num_tokens": 5}', '{"api_key": "***", "num_tokens": 5}'),
        ("Authorization: Bearer abc.def-ghi", "Authorization: Bearer ***"),
        (f"key is {OPENAI_KEY}.", f"key is {MASK}."),
        (f"HF {HF_TOKEN}", f"HF {MASK}"),
        (f"{AWS_KEY_ID}:{AWS_SECRET}", f"{MASK}:{MASK}"),
        (f"gh {GITHUB_TOKEN} slack {SLACK_TOKEN}", f"gh {MASK} slack {MASK}"),
        (f"bare {BARE_TOKEN} end", f"bare {MASK} end"),
    ],
)
def test_mask_hides_every_kind_of_secret(text: str, expected: str | None) -> None:
    masked = mask(text)
    if expected is not None:
        assert masked == expected
    assert mask(masked) == masked  # idempotent
    for secret in ("hunter2", "ab12", OPENAI_KEY, HF_TOKEN, AWS_KEY_ID, AWS_SECRET, BARE_TOKEN):
        assert secret not in masked


@pytest.mark.parametrize(
    "text",
    [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  # a sha256: looked up, not secret
        "8f14e45f-ceea-467f-a0e8-7f2b1c3d4e5f",
        "AmazonSageMakerFullAccess2024Policy",
        "TruthfulQAMultipleChoice2024v1",
        "meta-llama/Meta-Llama-3-8B-Instruct",
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        "/tmp/pytest-of-root/pytest-12/test_Secret_scan0/EvalstackHome/spec.json",
        "s3://my-bucket/evaluations/2024/rouge-eval/results.json",
        "arn:aws:sagemaker:us-east-1:123456789012:pipeline/evalstack-custom-scorer/execution/abc123def456",
        "openai:http://127.0.0.1:8000/v1?model=llama3&api_key_env=OPENAI_API_KEY&timeout=30",
        "num_tokens=5 max_tokens: 512",
    ],
)
def test_mask_leaves_ordinary_values_alone(text: str) -> None:
    assert mask(text) == text


def test_random_tokens_are_recognised() -> None:
    assert all(looks_like_token(secret) for secret in (AWS_SECRET, BARE_TOKEN))
    assert mask_value({"a": [BARE_TOKEN, 1, None], "b": {"c": HF_TOKEN}}) == {"a": [MASK, 1, None], "b": {"c": MASK}}


def test_spec_json_masks_a_label_that_carries_a_key() -> None:
    spec = EvaluationSpec(eval_type="custom_scorer", model=f"my-model?api_key={OPENAI_KEY}", metrics=["rouge"])
    text = spec.to_json()
    assert OPENAI_KEY not in text
    assert json.loads(text)["model"] == "my-model?api_key=***"


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        (f"openai:http://127.0.0.1:1/v1?model=m&api_key_env={HF_TOKEN}", "not an environment variable name"),
        (f"openai:http://u:{AWS_SECRET}@127.0.0.1:1/v1?model=m", "must not carry credentials"),
        (f"openai:http://127.0.0.1:1/v1?model=m&api_key={OPENAI_KEY}", "would put a secret in the reference"),
        (f"openai:http://127.0.0.1:1/v1?model=m&token={GITHUB_TOKEN}", "would put a secret in the reference"),
        (f"openai:http://127.0.0.1:1/v1?model=m&api=chat&auth={SLACK_TOKEN}", "unknown option 'auth'"),
    ],
)
def test_references_with_secrets_are_refused_without_echoing_them(
    reference: str, message: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_model_reference(reference)
    assert not any(secret in str(caught.value) for secret in SECRETS)
    out = tmp_path / "out"
    with pytest.raises(ValueError):
        CustomScorerEvaluator(evaluator="rouge", dataset=str(DATASET), model=reference, s3_output_path=str(out))
    assert not out.exists()
    captured = capfd.readouterr()
    assert not any(secret in captured.out + captured.err for secret in SECRETS)


def test_api_key_env_naming_an_unset_variable_is_refused(
    isolated_environment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVALSTACK_UNSET_KEY", raising=False)
    out = tmp_path / "out"
    evaluator = CustomScorerEvaluator(
        evaluator="rouge",
        dataset=str(_prompts_only(tmp_path)),
        model="openai:http://127.0.0.1:1/v1?model=m&api_key_env=EVALSTACK_UNSET_KEY",
        s3_output_path=str(out),
    )
    with pytest.raises(ValueError, match=r"api_key_env names the environment variable 'EVALSTACK_UNSET_KEY', which is"):
        evaluator.evaluate()
    assert not out.exists()


def _prompts_only(folder: Path) -> Path:
    rows = [json.loads(line) for line in DATASET.read_text(encoding="utf-8").splitlines()][:12]
    path = folder / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": r["prompt"], "reference": r["reference"]}) + "\n" for r in rows))
    return path


# The random core of each secret: found even when a writer rewrote its prefix (ghp_ -> ghp-).
CORES = tuple(max(re.findall("[A-Za-z0-9]+", secret), key=len) for secret in SECRETS)


def _leaks(roots: list[Path], captured: str) -> list[str]:
    """Every (file, secret) pair where a secret's core appears, under ``roots`` or in the captured output."""
    found = [f"captured output: {core}" for core in CORES if core in captured]
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            found += [f"{path}: {core}" for core in CORES if core.encode() in data]
    return found


def test_secret_scan_of_everything_a_run_writes(
    isolated_environment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EVALSTACK_SCAN_KEY", OPENAI_KEY)
    outputs = tmp_path / "outputs"

    # 1. Scoring given responses under a label that carries a key; secrets in every free-text option.
    scored = CustomScorerEvaluator(
        evaluator="rouge",
        dataset=str(DATASET),
        model=f"my-model?api_key={OPENAI_KEY}&hf={HF_TOKEN}",
        s3_output_path=str(outputs / "labelled"),
        base_eval_name=f"eval-{GITHUB_TOKEN}",
        mlflow_experiment_name=f"exp-{AWS_KEY_ID}",
        mlflow_run_name=f"run-{BARE_TOKEN}",
    )
    scored.hyperparameters.pos_label = SLACK_TOKEN
    execution = scored.evaluate()
    execution.wait()
    assert execution.status == "Succeeded"
    results = execution.results()
    assert results["model"] == f"my-model?api_key={MASK}&hf={MASK}"

    # 2. A model behind an API key: it answers some prompts, then rejects the key and echoes it back.
    def script(path: str, body: dict) -> Reply | str:
        if "reject" in json.dumps(body):
            return Reply({"error": {"message": f"Incorrect API key provided: {OPENAI_KEY} ({AWS_SECRET})"}}, status=401)
        return "an answer"

    data = tmp_path / "reject.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{word} {i}", "reference": "r"}) + "\n" for i, word in
                            enumerate(["ask"] * 11 + ["reject"])))  # fmt: skip
    with serve(script) as server:
        model = f"openai:{server.base_url}?model=scripted&api_key_env=EVALSTACK_SCAN_KEY"
        rejected = CustomScorerEvaluator(
            evaluator="rouge", dataset=str(data), model=model, s3_output_path=str(outputs / "rejected")
        ).evaluate()
        with pytest.raises(RuntimeError) as caught:
            rejected.wait()
    assert "401" in str(caught.value)
    assert OPENAI_KEY not in str(caught.value)
    assert {headers.get("Authorization") for headers in server.request_headers} == {f"Bearer {OPENAI_KEY}"}

    captured = capfd.readouterr()
    assert _leaks([isolated_environment, outputs], captured.out + captured.err) == []
