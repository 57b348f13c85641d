"""Evaluate the expressions of a pipeline definition: ``Get``, ``Std:Join``, ``Std:JsonGet`` and conditions."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# One step of a property path: ``.Name``, ``[0]`` or ``['key']`` / ``["key"]``.
_TOKEN = re.compile(r"""\.?([A-Za-z_][A-Za-z0-9_:-]*)|\[(\d+)\]|\[['"]([^'"]+)['"]\]""")

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "Equals": operator.eq,
    "GreaterThan": operator.gt,
    "GreaterThanOrEqualTo": operator.ge,
    "LessThan": operator.lt,
    "LessThanOrEqualTo": operator.le,
}


class ExpressionError(ValueError):
    """An expression that cannot be evaluated (unknown parameter, missing property, bad path)."""


def parse_path(path: str) -> list[str | int]:
    tokens: list[str | int] = []
    pos = 0
    while pos < len(path):
        match = _TOKEN.match(path, pos)
        if not match or match.end() == pos:
            raise ExpressionError(f"cannot parse path {path!r} at character {pos}")
        name, index, key = match.groups()
        tokens.append(int(index) if index is not None else (name or key))
        pos = match.end()
    return tokens


def walk(value: Any, tokens: list[str | int], path: str) -> Any:
    for token in tokens:
        try:
            value = value[token]
        except (KeyError, IndexError, TypeError) as err:
            raise ExpressionError(f"{path}: no {token!r} in the value") from err
    return value


def step_references(obj: Any) -> set[str]:
    """Names of the steps whose properties ``obj`` reads (data dependencies)."""
    found: set[str] = set()
    if isinstance(obj, dict):
        ref = obj.get("Get")
        if isinstance(ref, str) and ref.startswith("Steps."):
            found.add(str(parse_path(ref)[1]))
        for value in obj.values():
            found |= step_references(value)
    elif isinstance(obj, list):
        for value in obj:
            found |= step_references(value)
    return found


@dataclass
class Context:
    """What expressions of one execution can see."""

    parameters: dict[str, Any]
    execution: dict[str, Any]
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)  # step name -> properties

    def get(self, path: str) -> Any:
        tokens = parse_path(path)
        root = tokens[0]
        if root == "Parameters":
            if len(tokens) != 2 or tokens[1] not in self.parameters:
                raise ExpressionError(f"{path}: unknown parameter")
            return self.parameters[tokens[1]]
        if root == "Execution":
            if len(tokens) != 2 or tokens[1] not in self.execution:
                raise ExpressionError(f"{path}: unknown execution variable")
            return self.execution[tokens[1]]
        if root == "Steps" and len(tokens) >= 2:
            step = tokens[1]
            if step not in self.steps:
                raise ExpressionError(f"{path}: step {step!r} has not run")
            return walk(self.steps[step], tokens[2:], path)
        raise ExpressionError(f"{path}: unknown reference")

    def resolve(self, obj: Any) -> Any:
        """``obj`` with every expression replaced by its value."""
        if isinstance(obj, list):
            return [self.resolve(v) for v in obj]
        if not isinstance(obj, dict):
            return obj
        if set(obj) == {"Get"}:
            return self.get(obj["Get"])
        if set(obj) == {"Std:Join"}:
            spec = obj["Std:Join"]
            return str(spec["On"]).join(_to_text(self.resolve(v)) for v in spec["Values"])
        if set(obj) == {"Std:JsonGet"}:
            spec = obj["Std:JsonGet"]
            document = self.resolve(spec["PropertyFile"])
            return walk(document, parse_path(spec["Path"]), spec["Path"])
        return {k: self.resolve(v) for k, v in obj.items()}

    def condition(self, cond: dict[str, Any]) -> bool:
        kind = cond["Type"]
        if kind in _COMPARE:
            left, right = self.resolve(cond["LeftValue"]), self.resolve(cond["RightValue"])
            try:
                return bool(_COMPARE[kind](left, right))
            except TypeError as err:
                raise ExpressionError(f"{kind}: cannot compare {left!r} with {right!r}") from err
        if kind == "In":
            return self.resolve(cond["QueryValue"]) in self.resolve(cond["Values"])
        if kind == "Not":
            return not self.condition(cond["Expression"])
        if kind == "Or":
            return any(self.condition(c) for c in cond["Conditions"])
        raise ExpressionError(f"unsupported condition type {kind!r}")


def _to_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
