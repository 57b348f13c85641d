"""Checks that run before an evaluation starts, so every mistake that needs no model answer fails in
``evaluate()`` (or the constructor) and nothing is written or requested.

Checked here, in order: the MLflow tracking server ARN's form (and, on the local backend, that the
sagemaker-mlflow plugin it needs is installed); an AWS region for every Bedrock or
SageMaker model; that ``hf:`` model directories exist; the dataset's fields (responses for a label-only
model, references for metrics that need them, numeric labels where a ``threshold`` binarises them),
each error naming the file, the line and near-miss field names to map with ``columns=``; and last,
one short request per model: a GET (5 s) to each HTTP model server, so an unreachable one fails at once
instead of after minutes of retries, and a DescribeModelPackage of each model package, which must exist
and declare what serves it (evalstack's metadata, or one model artifact to serve in the job).
"""

from __future__ import annotations

import difflib
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from evalstack.catalog.metrics import BuiltInMetric
from evalstack.engine.tasks import build_task, model_reference
from evalstack.models.model_package import MODEL_REFERENCE_KEY, validated_metadata
from evalstack.models.reference import ModelReference, parse_model_reference, require_api_key_env
from evalstack.results.tracking import check_mlflow_plugin
from evalstack.runtime.model_resolution import AwsLookup, LookupFailed, call_or_none
from evalstack.spec import EvaluationSpec
from evalstack.task import Item, StreamingTask

PROBE_TIMEOUT_SECONDS = 5.0
# SageMaker managed MLflow: a tracking server or an MLflow app. The account is not checked for 12
# digits because the reference's own examples write "123".
_MLFLOW_ARN = re.compile(
    r"^arn:aws[a-z-]*:sagemaker:[a-z]{2}(-[a-z]+)+-\d+:\d+:(mlflow-tracking-server|mlflow-app)/[A-Za-z0-9-]+$"
)
# Field names datasets commonly use for the model's answer and for the expected one.
_RESPONSE_NAMES = ("prediction", "predictions", "output", "completion", "generated", "model_output", "answer")
_REFERENCE_NAMES = ("label", "target", "ground_truth", "expected", "gold", "answer", "references")
_REGION_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION")


def check_mlflow_arn(arn: str | None) -> None:
    if arn is not None and not _MLFLOW_ARN.match(arn):
        raise ValueError(
            f"mlflow_resource_arn: {arn!r} is not a SageMaker MLflow ARN; expected "
            "arn:aws:sagemaker:<region>:<account>:mlflow-tracking-server/<name> (or mlflow-app/<id>)"
        )


def _references(spec: EvaluationSpec) -> list[tuple[str, ModelReference]]:
    roles = ["candidate", "base"] if spec.evaluate_base_model and spec.base_model else ["candidate"]
    found = [(f"{role} model", parse_model_reference(model_reference(spec, role))) for role in roles]
    if spec.judge is not None:
        from evalstack.judge.task import judge_reference

        found.append(("judge.evaluator_model", parse_model_reference(judge_reference(spec.judge.evaluator_model))))
    return found


def check_models(spec: EvaluationSpec, region: str | None, aws: Callable[[], AwsLookup] | None) -> None:
    """API keys named by api_key_env are set; AWS models need a region; hf: models need their directory.
    The caller's session (``aws``) is asked for its region only when an AWS model needs a region nothing
    else gives (learning a boto3 session's region costs a quarter second that a local run should not pay)."""
    ambient = region or next((os.environ[v] for v in _REGION_VARS if os.environ.get(v)), None)
    for what, ref in _references(spec):
        require_api_key_env(ref)
        if ref.kind in ("bedrock", "sagemaker", "jumpstart") and not (ref.region or ambient):
            ambient = aws().region if aws is not None else None
            if not ambient:
                raise ValueError(
                    f"{what}: {ref.target!r} is a {ref.kind} model and no AWS region is known; pass region=, "
                    f"add ?region=<region> to the reference, or set AWS_REGION"
                )
        if ref.kind == "hf" and not Path(ref.target).expanduser().is_dir():
            raise ValueError(
                f"{what}: hf:{ref.target} is not a directory; hf: takes a local model directory "
                "(a hub id is not downloaded: save the model with save_pretrained and give its path)"
            )


def _near(wanted: str, present: Iterable[str], known: Sequence[str]) -> list[str]:
    names = sorted(set(present))
    close = difflib.get_close_matches(wanted, names, n=3, cutoff=0.6)
    return list(dict.fromkeys([*close, *(n for n in names if n.lower() in known)]))


def _field_error(spec: EvaluationSpec, item: Item, role: str, why: str, known: Sequence[str]) -> ValueError:
    assert spec.dataset is not None
    column = getattr(spec.dataset.columns, role)
    near = _near(column, item.data["metadata"], known)
    hint = (
        f"; the record has {', '.join(repr(n) for n in near)}: map it with columns={{{role!r}: {near[0]!r}}}"
        if near
        else f"; map the right field with columns={{{role!r}: '<field>'}}"
    )
    return ValueError(f"{spec.dataset.uri}: line {item.data['line']}: field {column!r}: missing; {why}{hint}")


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def missing_response(
    spec: EvaluationSpec, items: Sequence[Item], model: ModelReference, *, near_miss_only: bool = False
) -> ValueError | None:
    """The error for a record without a response when ``model`` is a label; with ``near_miss_only``, only
    when the record has a field that looks like the response (so a mapping, not a model, is missing)."""
    assert spec.dataset is not None
    missing = next((i for i in items if i.data["response"] is None), None)
    if missing is None:
        return None
    if near_miss_only and not _near(spec.dataset.columns.response, missing.data["metadata"], _RESPONSE_NAMES):
        return None
    why = f"model {model.target!r} is a label only (no backend to call), so every record needs its response"
    return _field_error(spec, missing, "response", why, _RESPONSE_NAMES)


def check_dataset(spec: EvaluationSpec, items: Iterable[Item], model: ModelReference) -> None:
    """Responses, references and label types the evaluation will need, read from the records in one pass
    (``items`` may stream: the dataset is never held), to the end unless a response is missing."""
    dataset = spec.dataset
    custom = dataset is not None and spec.eval_type == "custom_scorer"
    threshold = spec.hyperparameters.get("threshold")
    classification = {BuiltInMetric.ACCURACY, BuiltInMetric.F1, BuiltInMetric.PRECISION, BuiltInMetric.RECALL}
    numeric = custom and threshold is not None and bool(classification & set(spec.metrics))
    no_reference: Item | None = None
    not_numeric: tuple[Item, str, str] | None = None
    for item in items:
        if dataset is not None and model.is_label and item.data["response"] is None:
            error = missing_response(spec, [item], model)
            assert error is not None
            raise error
        if custom and no_reference is None and item.data["reference"] is None:
            no_reference = item
        if numeric and not_numeric is None:
            not_numeric = _not_numeric(item)
    # The errors in the order the checks had when each read the whole list.
    if no_reference is not None:
        needs = ", ".join(spec.metrics) or "the custom scorer"
        raise _field_error(spec, no_reference, "reference", f"{needs} compares with a reference", _REFERENCE_NAMES)
    if not_numeric is not None:
        assert dataset is not None
        item, role, bad = not_numeric
        column = getattr(dataset.columns, role)
        raise ValueError(
            f"{dataset.uri}: line {item.data['line']}: field {column!r}: {bad!r} is not a number, "
            f"but hyperparameter threshold={threshold} binarises numeric labels; remove the threshold "
            "for text labels (set average and pos_label instead)"
        )


def _not_numeric(item: Item) -> tuple[Item, str, str] | None:
    for role in ("reference", "response"):
        value = item.data[role]
        values = value if isinstance(value, list) else [value]
        bad = next((v for v in values if v is not None and not _is_number(v)), None)
        if bad is not None:
            return item, role, bad
    return None


def _checked_by_scan(spec: EvaluationSpec, task: object, model: ModelReference) -> bool:
    """Whether a streamed task's validating pass (made once per unchanged file and process, and needed for
    the count anyway) shows that ``check_dataset`` would find nothing: every record has a reference, and a
    response when the model is a label. A threshold's numeric check still reads the records."""
    if not isinstance(task, StreamingTask) or spec.hyperparameters.get("threshold") is not None:
        return False
    summary = task.scan()
    return summary.has_references and (summary.has_responses or not model.is_label)


def probe(reference: ModelReference, what: str) -> None:
    """One GET of an OpenAI-compatible server's /models with a 5 s limit: any HTTP answer, even an
    error status, shows the server is there; no answer fails now rather than after the retries."""
    if reference.kind != "openai":
        return
    import httpx  # here: importing httpx loads its CLI's rich and click, which no other client path needs

    url = f"{reference.target}/models"
    try:
        httpx.get(url, timeout=PROBE_TIMEOUT_SECONDS)
    except httpx.HTTPError as err:
        raise ValueError(
            f"{what}: the server at {reference.target} did not answer within {PROBE_TIMEOUT_SECONDS:g} s "
            f"({type(err).__name__}); start it or fix the URL"
        ) from err


def check_package(reference: ModelReference, what: str, aws: AwsLookup) -> None:
    """A model package exists and declares what serves it: a valid ``evalstack:model_reference``, or
    exactly one model artifact that the job serves (the job repeats the check with its own role)."""
    from evalstack.models.package_serving import package_artifact

    arn = reference.target
    aws = aws.in_region(reference.region)  # the package's own region, from its ARN
    try:
        described = call_or_none(aws.sagemaker.describe_model_package, ModelPackageName=arn)
    except LookupFailed as err:
        # The caller may lack sagemaker:DescribeModelPackage where the job role has it: the job decides.
        warnings.warn(f"{what}: model package {arn} not checked before the run ({err})", stacklevel=3)
        return
    if described is None:
        raise ValueError(f"{what}: model package {arn} does not exist (DescribeModelPackage found nothing)")
    metadata = dict(described.get("CustomerMetadataProperties") or {})
    if MODEL_REFERENCE_KEY in metadata:
        validated_metadata(arn, MODEL_REFERENCE_KEY, metadata)
    else:
        package_artifact(arn, described)


def preflight(
    spec: EvaluationSpec,
    *,
    region: str | None = None,
    reach: bool = True,
    aws: Callable[[], AwsLookup] | None = None,
    local: bool = False,
) -> None:
    """Every check above, for ``spec``; ValueError on the first failure. ``reach=False`` skips the
    requests. ``aws`` gives the caller's AWS session, asked for its region only when a model needs one
    and nothing else names it, and used to describe model packages. ``local``: the steps run on this
    machine, so what the Report step imports must be installed here (the image has it otherwise)."""
    check_mlflow_arn(spec.mlflow.resource_arn)
    if local:
        check_mlflow_plugin(spec.mlflow.resource_arn)
    check_models(spec, region, aws)
    tasks = {"candidate": build_task(spec, "candidate")}
    if spec.evaluate_base_model and spec.base_model:
        tasks["base"] = build_task(spec, "base")
    calls: list[tuple[str, ModelReference]] = []
    for role, task in tasks.items():
        reference = parse_model_reference(model_reference(spec, role))
        if role == "candidate" and not _checked_by_scan(spec, task, reference):
            # A streamed dataset is read once here, not held (the summary is kept).
            check_dataset(spec, task.iter_items() if isinstance(task, StreamingTask) else task.items(), reference)
        elif not isinstance(task, StreamingTask):
            task.items()  # validated as before; a streamed one was read for the candidate
        if task.needs_model:
            calls.append((f"{role} model", reference))
    if spec.judge is not None:
        calls.append(next(c for c in _references(spec) if c[0] == "judge.evaluator_model"))
    if reach:
        for what, reference in calls:
            probe(reference, what)
            if reference.kind == "model-package" and aws is not None:
                check_package(reference, what, aws())
