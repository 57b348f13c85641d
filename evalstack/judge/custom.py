"""Custom judge metrics: validated into rubrics before anything runs.

A custom metric is ``{name, description, prompt_template[, scale]}``. Its template may use
``{question}`` (or its alias ``{prompt}``), ``{response}``, ``{reference}`` and ``{context}``;
literal braces are written ``{{`` and ``}}`` as in :meth:`str.format`.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

from evalstack.catalog.limits import MAX_CUSTOM_METRICS, MAX_PROMPT_TEMPLATE_BYTES
from evalstack.catalog.metrics import JUDGE_METRICS
from evalstack.judge.rubrics import Rubric
from evalstack.spec import CustomJudgeMetric

PLACEHOLDERS = ("question", "prompt", "response", "reference", "context")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_FIELDS = ("name", "description", "prompt_template", "scale")


def template_placeholders(template: str, where: str) -> frozenset[str]:
    """The placeholder names ``template`` uses; ValueError on unknown ones or bad brace syntax."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ValueError(f"{where}: invalid template syntax ({err}); write literal braces as {{{{ and }}}}") from err
    used: set[str] = set()
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in PLACEHOLDERS or spec or conversion:
            shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(
                f"{where}: unknown placeholder {shown}; allowed: "
                + ", ".join("{" + p + "}" for p in PLACEHOLDERS)
                + " (write literal braces as {{ and }})"
            )
        used.add(field)
    return frozenset(used)


def _scale(value: Any, where: str) -> tuple[int, int]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        or not value[0] < value[1]
    ):
        raise ValueError(f"{where}.scale: must be two integers [low, high] with low < high, got {value!r}")
    return int(value[0]), int(value[1])


def _as_fields(metric: CustomJudgeMetric | Mapping[str, Any], where: str) -> dict[str, Any]:
    if isinstance(metric, CustomJudgeMetric):
        fields: dict[str, Any] = {
            "name": metric.name,
            "description": metric.description,
            "prompt_template": metric.prompt_template,
            "scale": metric.scale,
        }
    elif isinstance(metric, Mapping):
        unknown = sorted(set(metric) - set(_FIELDS))
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}; allowed: {', '.join(_FIELDS)}")
        fields = {**metric, "scale": metric.get("scale", (1, 5))}
    else:
        shown = ", ".join(_FIELDS[:3])
        raise ValueError(f"{where}: a custom metric is a dict with {shown}, got {type(metric).__name__}")
    for key in _FIELDS[:3]:
        if not isinstance(fields.get(key), str) or not fields[key].strip():
            raise ValueError(f"{where}.{key}: required non-empty string")
    return fields


def validate_custom_metrics(metrics: Sequence[CustomJudgeMetric | Mapping[str, Any]] | None) -> list[Rubric]:
    """Check custom judge metrics and return their rubrics; raises ValueError naming the problem.

    Called by the evaluator at construction and again by the judge task, so a bad metric fails
    before any model is called.
    """
    metrics = list(metrics or [])
    if len(metrics) > MAX_CUSTOM_METRICS:
        raise ValueError(f"custom_metrics: at most {MAX_CUSTOM_METRICS} custom metrics, got {len(metrics)}")
    rubrics: list[Rubric] = []
    seen: set[str] = set()
    for i, metric in enumerate(metrics):
        where = f"custom_metrics[{i}]"
        fields = _as_fields(metric, where)
        name = fields["name"]
        if not _NAME.match(name):
            raise ValueError(f"{where}.name: {name!r} must start with a letter and use letters, digits, _ or -")
        if name.casefold() in seen or name.casefold() in JUDGE_METRICS:
            raise ValueError(f"{where}.name: {name!r} is already used by another metric")
        seen.add(name.casefold())
        template = fields["prompt_template"]
        size = len(template.encode("utf-8"))
        if size > MAX_PROMPT_TEMPLATE_BYTES:
            raise ValueError(
                f"{where}.prompt_template: {size} bytes exceeds the {MAX_PROMPT_TEMPLATE_BYTES}-byte limit"
            )
        used = template_placeholders(template, f"{where}.prompt_template")
        if "response" not in used:
            raise ValueError(f"{where}.prompt_template: must contain {{response}}, the answer being judged")
        low, high = _scale(fields["scale"], where)
        rubrics.append(
            Rubric(
                name=name,
                description=fields["description"],
                low=low,
                high=high,
                binary=False,
                higher_is_better=True,
                needs_reference=False,
                criteria=template,
                custom=True,
                placeholders=used,
            )
        )
    return rubrics
