"""One module per benchmark; :data:`DEFINITIONS` maps each catalog Benchmark to its definition."""

from evalstack.benchmarks.definition import Definition
from evalstack.benchmarks.definitions.arc import Arc
from evalstack.benchmarks.definitions.bbh import Bbh
from evalstack.benchmarks.definitions.boolq import BoolQ
from evalstack.benchmarks.definitions.gsm8k import Gsm8k
from evalstack.benchmarks.definitions.hellaswag import HellaSwag
from evalstack.benchmarks.definitions.hendrycks_math import HendrycksMath
from evalstack.benchmarks.definitions.mmlu import Mmlu
from evalstack.benchmarks.definitions.piqa import Piqa
from evalstack.benchmarks.definitions.race import Race
from evalstack.benchmarks.definitions.truthfulqa import TruthfulQA
from evalstack.benchmarks.definitions.winogrande import WinoGrande
from evalstack.catalog.benchmarks import Benchmark

DEFINITIONS: dict[Benchmark, Definition] = {
    d.benchmark: d
    for d in (
        Mmlu(), Bbh(), HendrycksMath(), Gsm8k(), HellaSwag(), WinoGrande(), Arc(), TruthfulQA(), Piqa(),
        BoolQ(), Race(),
    )
}  # fmt: skip

__all__ = ["DEFINITIONS"]
