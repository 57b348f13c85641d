"""Hyperparameter schemas per evaluation kind, and the validating ``Hyperparameters`` object."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from evalstack.catalog.limits import BATCH_SIZE_RANGE

SACREBLEU_TOKENIZERS = ("none", "zh", "13a", "intl", "char", "ja-mecab", "ko-mecab", "spm", "flores101", "flores200")
ROUGE_TYPES = (
    "rouge1",
    "rouge2",
    "rouge3",
    "rouge4",
    "rouge5",
    "rouge6",
    "rouge7",
    "rouge8",
    "rouge9",
    "rougeL",
    "rougeLsum",
)


@dataclass(frozen=True)
class Param:
    """One hyperparameter: type, default, allowed range or choices, and what it does."""

    kind: type
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    optional: bool = False
    item_choices: tuple[str, ...] | None = None  # for list-of-str values

    def check(self, name: str, value: Any) -> Any:
        if value is None:
            if self.optional:
                return None
            raise ValueError(f"hyperparameter {name!r} may not be None")
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.kind is list:
            if isinstance(value, tuple):
                value = list(value)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or not value:
                raise ValueError(f"hyperparameter {name!r} must be a non-empty list of strings, got {value!r}")
            bad = [v for v in value if self.item_choices and v not in self.item_choices]
            if bad:
                raise ValueError(f"hyperparameter {name!r}: unknown {bad}; valid: {', '.join(self.item_choices or ())}")
            return list(value)
        if not isinstance(value, self.kind) or (self.kind is not bool and isinstance(value, bool)):
            raise ValueError(
                f"hyperparameter {name!r} must be {self.kind.__name__}, got {type(value).__name__} {value!r}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"hyperparameter {name!r} must be a finite number, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"hyperparameter {name!r} must be one of {list(self.choices)}, got {value!r}")
        if self.low is not None and value < self.low:
            raise ValueError(f"hyperparameter {name!r} must be >= {self.low}, got {value!r}")
        if self.high is not None and value > self.high:
            raise ValueError(f"hyperparameter {name!r} must be <= {self.high}, got {value!r}")
        return value


GENERATION: dict[str, Param] = {
    "batch_size": Param(
        int,
        8,
        "Model requests in flight at once (unless max_concurrency is set); a custom scorer's batch.",
        *BATCH_SIZE_RANGE,
    ),
    "max_tokens": Param(int, 512, "Maximum new tokens per generation.", 1, 32768),
    "temperature": Param(float, 0.0, "Sampling temperature; 0 is greedy.", 0.0, 2.0),
    "top_p": Param(float, 1.0, "Nucleus sampling mass.", 0.0, 1.0),
    "max_concurrency": Param(
        int, None, "Concurrent model requests beyond batch_size's range of 1-32.", 1, 256, optional=True
    ),
}

BENCHMARK: dict[str, Param] = {
    **GENERATION,
    "limit": Param(int, None, "Evaluate at most N samples, stratified across subtasks.", 1, None, optional=True),
    "seed": Param(int, 1234, "Seed for sampling with --limit and bootstrap resampling.", 0, 2**32 - 1),
    "num_fewshot": Param(int, None, "Override the benchmark's few-shot count.", 0, 25, optional=True),
}

CUSTOM_SCORER: dict[str, Param] = {
    **GENERATION,
    "average": Param(
        str, "macro", "Averaging for f1/precision/recall.", choices=("micro", "macro", "weighted", "binary")
    ),
    "threshold": Param(float, None, "Binarise numeric predictions at this value.", optional=True),
    "pos_label": Param(str, None, "Positive class for average='binary'.", optional=True),
    "max_order": Param(int, 4, "BLEU n-gram order.", 1, 8),
    "smooth": Param(bool, True, "BLEU smoothing (sacrebleu 'exp') on or off ('none')."),
    "tokenize": Param(str, "13a", "sacrebleu tokenizer.", choices=SACREBLEU_TOKENIZERS),
    "rouge_types": Param(
        list, ["rouge1", "rouge2", "rougeL", "rougeLsum"], "ROUGE variants.", item_choices=ROUGE_TYPES
    ),
    "use_stemmer": Param(bool, False, "Porter stemming in ROUGE."),
    "alpha": Param(float, 0.9, "METEOR alpha.", 0.0, 1.0),
    "beta": Param(float, 3.0, "METEOR beta.", 0.0, 10.0),
    "gamma": Param(float, 0.5, "METEOR gamma.", 0.0, 1.0),
    "model_type": Param(str, "roberta-large", "BERTScore model name or local path."),
    "num_layers": Param(int, None, "BERTScore layer; default is the model's recommended layer.", 1, 48, optional=True),
    "lang": Param(str, "en", "BERTScore language."),
    "rescale_with_baseline": Param(bool, False, "BERTScore baseline rescaling."),
    "limit": Param(int, None, "Score at most the first N samples.", 1, None, optional=True),
    "seed": Param(int, 1234, "Seed of the paired bootstrap that compares base and fine-tuned.", 0, 2**32 - 1),
}

LLM_AS_JUDGE: dict[str, Param] = {
    **GENERATION,
    "threshold": Param(float, 0.5, "Pass-rate threshold on the 0-1 normalized score.", 0.0, 1.0),
    "judge_max_tokens": Param(int, 512, "Maximum tokens of a judge answer.", 1, 8192),
    "max_parse_failure_rate": Param(
        float, 0.5, "Fail the evaluation when a judge metric's unparsable answers exceed this share.", 0.0, 1.0
    ),
    "limit": Param(int, None, "Judge at most the first N samples.", 1, None, optional=True),
}

SCHEMAS: dict[str, dict[str, Param]] = {
    "benchmark": BENCHMARK,
    "custom_scorer": CUSTOM_SCORER,
    "llm_as_judge": LLM_AS_JUDGE,
}


def request_concurrency(values: dict[str, Any]) -> int:
    """How many model requests run at once: max_concurrency when set, else batch_size."""
    return int(values.get("max_concurrency") or values.get("batch_size") or GENERATION["batch_size"].default)


class Hyperparameters:
    """Attribute-style hyperparameters that validate every name, type and range on assignment.

    ``hp.batch_size = 8`` works; ``hp.batch_sise = 8`` raises AttributeError naming the valid
    names; ``hp.batch_size = 64`` raises ValueError with the range.
    """

    def __init__(self, schema: dict[str, Param], values: dict[str, Any] | None = None) -> None:
        object.__setattr__(self, "_schema", schema)
        object.__setattr__(self, "_values", {k: p.default for k, p in schema.items()})
        for key, value in (values or {}).items():
            setattr(self, key, value)

    @classmethod
    def for_kind(cls, eval_type: str, values: dict[str, Any] | None = None) -> Hyperparameters:
        return cls(SCHEMAS[eval_type], values)

    def _unknown(self, name: str) -> AttributeError:
        return AttributeError(f"Unknown hyperparameter {name!r}. Valid names: {', '.join(sorted(self._schema))}")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._schema:
            raise self._unknown(name)
        return self._values[name]

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._schema:
            raise self._unknown(name)
        self._values[name] = self._schema[name].check(name, value)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._values.items()}

    def describe(self) -> dict[str, str]:
        return {k: p.help for k, p in self._schema.items()}

    def __repr__(self) -> str:
        return f"Hyperparameters({self.to_dict()!r})"

    def __dir__(self) -> list[str]:
        return sorted(self._schema)
