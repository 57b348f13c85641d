"""JSON Lines files for the readers' equivalence tests: valid files that are not plain in some block, and
invalid files whose error each reading path must give exactly as the row path gives it."""

from __future__ import annotations

import json
from typing import Any


def row(i: int, **extra: Any) -> dict[str, Any]:
    return {"prompt": f"Question {i}?", "response": "yes" if i % 3 else "no", "reference": "yes", **extra}


def lines(rows: list[Any]) -> str:
    return "".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in rows)


PLAIN = lines([row(i) for i in range(30)])
# Valid files that are not plain in some block: each must still read exactly as the row path reads it.
VALID = {
    "plain": PLAIN,
    "blank and whitespace lines": PLAIN.replace("\n", "\n\n", 3).replace("\n", "\n  \t \n", 1),
    "crlf": PLAIN.replace("\n", "\r\n"),
    "utf-8 bom": "\ufeff" + PLAIN,
    "no final newline": PLAIN.rstrip("\n"),
    "unicode": lines([row(i, note="naïve café ☕ 𝄞") | {"prompt": f"Qué {i} 日本?"} for i in range(20)]),
    "numbers and booleans as labels": lines([row(i) | {"reference": [1, 2.5, True, 0][i % 4]} for i in range(20)]),
    "list references": lines([row(i) | {"reference": ["yes", "y"] if i % 2 else "yes"} for i in range(20)]),
    "metadata keys in varying order": lines(
        [{"topic": i % 4, "prompt": f"q{i}", "reference": "a", "id": f"x{i}"} for i in range(10)]
        + [{"id": f"y{i}", "prompt": f"q{i}", "topic": None, "reference": "a", "w": 1.5} for i in range(10)]
    ),
    "same metadata keys in another order": lines(
        [{"a": i, "prompt": f"q{i}", "b": "x"} if i % 2 else {"b": "x", "prompt": f"q{i}", "a": i} for i in range(12)]
    ),
    "nested metadata": lines([row(i, meta={"a": [1, {"b": "c"}], "n": None}) for i in range(12)]),
    "reference aliases": lines(
        [{"prompt": f"q{i}", "ground_truth": "g", "response": "g"} for i in range(6)]
        + [{"prompt": f"q{i}", "label": "l", "response": "x"} for i in range(6)]
        + [{"prompt": f"q{i}", "label": "l", "ground_truth": "g", "response": "g"} for i in range(6)]
    ),
    "null responses, missing references": lines(
        [row(i) | {"response": None} for i in range(4)] + [row(i) for i in range(4)] + [{"prompt": "q"}] * 4
    ),
    "no prompts where responses are given": lines([{"response": f"r{i}", "reference": "r"} for i in range(12)]),
    "nan and big integers (json reads them)": lines([row(i) for i in range(10)] + ['{"prompt": "q", "x": NaN}'])
    + lines(['{"prompt": "q", "big": 123456789012345678901234567890}']),
    "duplicate keys": lines(['{"prompt": "a", "prompt": "b", "reference": "r", "k": 1, "k": 2}'] * 12),
    "escapes": lines([row(i, s='q"uote\\back,"x","y" \t\u0001 %d %s') for i in range(12)]),
}
# Invalid files: each must fail with the row path's message, wherever its bad line falls in a block.
INVALID = {
    "invalid json": lines([row(i) for i in range(14)] + ['{"prompt": "q",}'] + [row(i) for i in range(5)]),
    "lone surrogate in metadata": lines([row(i) for i in range(11)] + ['{"prompt": "q", "m": ["\\ud800"]}']),
    "lone surrogate in a prompt": lines([row(i) for i in range(3)] + ['{"prompt": "q\\udfff", "reference": "r"}']),
    "a json array": lines(['[{"prompt": "a"}]'] + [row(i) for i in range(12)]),
    "a number line": lines([row(i) for i in range(12)] + ["7"]),
    "two objects on a line": lines([row(i) for i in range(12)] + ['{"prompt": "a"},{"prompt": "b"}']),
    "an object split over lines": lines([row(i) for i in range(12)] + ['{"prompt": "a"', '"reference": "b"}']),
    "blank prompt": lines([row(i) for i in range(12)] + [row(99) | {"prompt": "  "}]),
    "object as a prompt": lines([row(i) for i in range(12)] + [row(99) | {"prompt": {"a": 1}}]),
    "empty reference list": lines([row(i) for i in range(12)] + [row(99) | {"reference": []}]),
    "no prompt where the model is needed": lines(
        [row(i) | {"response": None} for i in range(11)] + ['{"response": "r"}']
    ),
    "too few records": lines([row(i) for i in range(5)]),
}
INVALID_BYTES = {
    "invalid utf-8": PLAIN.encode() + b'{"prompt": "caf\xe9"}\n' + PLAIN.encode(),
    "utf-8 encoded surrogate": PLAIN.encode() + b'{"prompt": "\xed\xa0\x80"}\n',
    "utf-16": "\ufeff".encode("utf-16-le") + PLAIN.encode("utf-16-le"),
}
