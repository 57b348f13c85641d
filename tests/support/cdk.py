"""Synthesize the evalstack CDK app once per context and keep what the tests inspect.

jsii starts a Node process and a full synth takes seconds, so test modules wrap :func:`synthesize`
in session-scoped fixtures and share the result.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

# Asset hashes change with any edit of the lambdas or the repository; snapshots compare structure.
_ASSET_HASH = re.compile(r"[0-9a-f]{64}")


@dataclass
class Synthesis:
    stack_name: str
    template: dict[str, Any]
    template_path: Path
    validation_report: dict[str, Any]
    error: str | None
    acknowledgements: list[dict[str, str]]

    def resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.template["Resources"].items() if v["Type"] == resource_type}

    def violations(self, plugin: str) -> list[dict[str, Any]]:
        """What ``plugin`` reported; CDK lists only plugins that reported something."""
        if self.validation_report.get("title") != "Validation Report":
            raise ValueError(f"{self.stack_name}: no policy validation report was written")
        return [
            violation
            for report in self.validation_report["pluginReports"]
            if report["summary"]["pluginName"] == plugin
            for violation in report["violations"]
        ]


def _acknowledgements(root: Any) -> list[dict[str, str]]:
    from aws_cdk import Validations

    out = []
    for node in root.node.find_all():
        for entry in node.node.metadata:
            if entry.type == Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                # The metadata maps each acknowledged rule id to its reason.
                out.extend({"path": node.node.path, "id": k, "reason": v} for k, v in entry.data.items())
    return out


def synthesize(context: dict[str, Any], outdir: Path) -> Synthesis:
    """Build the app of ``app.py`` with ``context`` into ``outdir``; a failed validation is recorded,
    not raised, so the nag tests can show which findings are new."""
    import aws_cdk as cdk

    from evalstack.constructs.app import build_app

    app = cdk.App(context={"@aws-cdk/core:validationReportJson": True, **context}, outdir=str(outdir))
    stack = build_app(app)
    error = None
    try:
        app.synth()
    except RuntimeError as err:  # ValidationFailed: the report file says why
        error = str(err)
    report_path = outdir / "policy-validation-report.json"
    template_path = outdir / f"{stack.stack_name}.template.json"
    return Synthesis(
        stack_name=stack.stack_name,
        template=json.loads(template_path.read_text()),
        template_path=template_path,
        validation_report=json.loads(report_path.read_text()) if report_path.exists() else {},
        error=error,
        acknowledgements=_acknowledgements(stack),
    )


def render(value: Any) -> str:
    """A CloudFormation string with its intrinsic parts replaced by ``TOKEN``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(render(p) for p in parts)
    return "TOKEN"


def normalized(template: dict[str, Any]) -> dict[str, Any]:
    """The template with asset hashes replaced, for snapshots."""
    return json.loads(_ASSET_HASH.sub("<asset-hash>", json.dumps(template, sort_keys=True)))


@dataclass
class AppSynthesis:
    """Every stack template of an app with stages, by construct path (e.g. ``Dev/Platform``)."""

    outdir: Path
    templates: dict[str, dict[str, Any]]
    template_paths: dict[str, Path]
    validation_report: dict[str, Any]
    error: str | None
    warnings: dict[str, list[str]]

    def violations(self) -> list[dict[str, Any]]:
        if self.validation_report.get("title") != "Validation Report":
            raise ValueError("no policy validation report was written")
        return [v for report in self.validation_report["pluginReports"] for v in report["violations"]]

    def resources(self, stack: str, resource_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.templates[stack]["Resources"].items() if v["Type"] == resource_type}


def synthesize_app(app: Any, outdir: Path) -> AppSynthesis:
    """Synthesize ``app`` (built with ``outdir``); record a failed validation instead of raising it."""
    error = None
    try:
        assembly = app.synth()
    except RuntimeError as err:  # ValidationFailed: the report file says why
        error = str(err)
        assembly = None
    templates, paths, warnings = {}, {}, {}
    stacks = assembly.stacks_recursively if assembly is not None else []
    for stack in stacks:
        templates[stack.hierarchical_id] = stack.template
        paths[stack.hierarchical_id] = Path(stack.template_full_path)
        warnings[stack.hierarchical_id] = [
            str(m.entry.data) for m in stack.messages if m.entry.type == "aws:cdk:warning"
        ]
    report_path = outdir / "policy-validation-report.json"
    return AppSynthesis(
        outdir=outdir,
        templates=templates,
        template_paths=paths,
        validation_report=json.loads(report_path.read_text()) if report_path.exists() else {},
        error=error,
        warnings=warnings,
    )
