"""The 11 benchmarks: names, true subtasks, split sizes, metrics and provenance."""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from evalstack.catalog.names import resolve_name

MMLU_SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge",
    "college_biology", "college_chemistry", "college_computer_science", "college_mathematics",
    "college_medicine", "college_physics", "computer_security", "conceptual_physics", "econometrics",
    "electrical_engineering", "elementary_mathematics", "formal_logic", "global_facts",
    "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_european_history", "high_school_geography", "high_school_government_and_politics",
    "high_school_macroeconomics", "high_school_mathematics", "high_school_microeconomics",
    "high_school_physics", "high_school_psychology", "high_school_statistics", "high_school_us_history",
    "high_school_world_history", "human_aging", "human_sexuality", "international_law", "jurisprudence",
    "logical_fallacies", "machine_learning", "management", "marketing", "medical_genetics",
    "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition", "philosophy", "prehistory",
    "professional_accounting", "professional_law", "professional_medicine", "professional_psychology",
    "public_relations", "security_studies", "sociology", "us_foreign_policy", "virology",
    "world_religions",
)  # fmt: skip

BBH_TASKS = (
    "boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa",
    "dyck_languages", "formal_fallacies", "geometric_shapes", "hyperbaton",
    "logical_deduction_five_objects", "logical_deduction_seven_objects",
    "logical_deduction_three_objects", "movie_recommendation", "multistep_arithmetic_two", "navigate",
    "object_counting", "penguins_in_a_table", "reasoning_about_colored_objects", "ruin_names",
    "salient_translation_error_detection", "snarks", "sports_understanding", "temporal_sequences",
    "tracking_shuffled_objects_five_objects", "tracking_shuffled_objects_seven_objects",
    "tracking_shuffled_objects_three_objects", "web_of_lies", "word_sorting",
)  # fmt: skip

MATH_SUBJECTS = (
    "algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
    "prealgebra", "precalculus",
)  # fmt: skip


class Benchmark(StrEnum):
    """The benchmarks evalstack scores; values are the canonical display names."""

    MMLU = "MMLU"
    BBH = "BBH"
    MATH = "MATH"
    GSM8K = "GSM8K"
    HELLASWAG = "HellaSwag"
    WINOGRANDE = "WinoGrande"
    ARC = "ARC"
    TRUTHFULQA = "TruthfulQA"
    PIQA = "PIQA"
    BOOLQ = "BoolQ"
    RACE = "RACE"


@dataclass(frozen=True)
class BenchmarkInfo:
    name: str
    description: str
    subtasks: tuple[str, ...]
    source: str
    split: str
    licence: str
    metrics: tuple[str, ...]
    citation: str
    task_type: str
    num_samples: int
    # The metric the reference's headline ("accuracy", "score", the comparison's "improvement") reads.
    primary_metric: str = ""
    subtask_sizes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.primary_metric not in self.metrics:
            raise ValueError(f"{self.name}: primary_metric {self.primary_metric!r} is not one of {self.metrics}")

    def properties(self) -> dict[str, Any]:
        """The reference API's property dict."""
        return {
            "name": self.name,
            "description": self.description,
            "subtasks": list(self.subtasks),
            "dataset_info": {
                "source": self.source,
                "split": self.split,
                "size": self.num_samples,
                "licence": self.licence,
                "subtask_sizes": dict(self.subtask_sizes),
            },
            "metrics": list(self.metrics),
            "primary_metric": self.primary_metric,
            "citation": self.citation,
            "task_type": self.task_type,
            "num_samples": self.num_samples,
        }


BENCHMARKS: dict[Benchmark, BenchmarkInfo] = {
    Benchmark.MMLU: BenchmarkInfo(
        name="MMLU",
        description="Massive Multitask Language Understanding: 4-way multiple choice over 57 subjects.",
        subtasks=MMLU_SUBJECTS,
        source="hendrycks/test (cais/mmlu)",
        split="test",
        licence="MIT",
        metrics=("acc",),
        citation="Hendrycks et al., Measuring Massive Multitask Language Understanding, ICLR 2021.",
        task_type="multiple_choice",
        num_samples=14042,
        primary_metric="acc",
    ),
    Benchmark.BBH: BenchmarkInfo(
        name="BBH",
        description="BIG-Bench Hard: 27 challenging BIG-Bench tasks, 3-shot chain of thought.",
        subtasks=BBH_TASKS,
        source="suzgunmirac/BIG-Bench-Hard (lukaemon/bbh)",
        split="test",
        licence="MIT",
        metrics=("exact_match",),
        citation="Suzgun et al., Challenging BIG-Bench Tasks and Whether Chain-of-Thought Can Solve Them, 2022.",
        task_type="generation",
        num_samples=6511,
        primary_metric="exact_match",
    ),
    Benchmark.MATH: BenchmarkInfo(
        name="MATH",
        description="Competition mathematics in 7 subjects; final answers checked for symbolic equivalence.",
        subtasks=MATH_SUBJECTS,
        source="hendrycks/math (EleutherAI/hendrycks_math)",
        split="test",
        licence="MIT",
        metrics=("exact_match",),
        citation="Hendrycks et al., Measuring Mathematical Problem Solving With the MATH Dataset, NeurIPS 2021.",
        task_type="generation",
        num_samples=5000,
        primary_metric="exact_match",
        subtask_sizes={
            "algebra": 1187,
            "counting_and_probability": 474,
            "geometry": 479,
            "intermediate_algebra": 903,
            "number_theory": 540,
            "prealgebra": 871,
            "precalculus": 546,
        },
    ),
    Benchmark.GSM8K: BenchmarkInfo(
        name="GSM8K",
        description="Grade-school math word problems, scored by strict-match and flexible-extract.",
        subtasks=(),
        source="openai/grade-school-math (openai/gsm8k, main)",
        split="test",
        licence="MIT",
        metrics=("exact_match_strict", "exact_match_flexible"),
        citation="Cobbe et al., Training Verifiers to Solve Math Word Problems, 2021.",
        task_type="generation",
        num_samples=1319,
        primary_metric="exact_match_strict",
    ),
    Benchmark.HELLASWAG: BenchmarkInfo(
        name="HellaSwag",
        description="Commonsense sentence completion: pick the most plausible of 4 endings.",
        subtasks=(),
        source="rowanz/hellaswag (Rowan/hellaswag)",
        split="validation",
        licence="MIT",
        metrics=("acc", "acc_norm"),
        citation="Zellers et al., HellaSwag: Can a Machine Really Finish Your Sentence?, ACL 2019.",
        task_type="multiple_choice",
        num_samples=10042,
        primary_metric="acc_norm",
    ),
    Benchmark.WINOGRANDE: BenchmarkInfo(
        name="WinoGrande",
        description="Pronoun resolution at scale, scored by partial evaluation of the sentence suffix.",
        subtasks=(),
        source="allenai/winogrande (winogrande_xl, v1.1)",
        split="validation",
        licence="CC-BY",
        metrics=("acc",),
        citation="Sakaguchi et al., WinoGrande: An Adversarial Winograd Schema Challenge at Scale, AAAI 2020.",
        task_type="multiple_choice",
        num_samples=1267,
        primary_metric="acc",
    ),
    Benchmark.ARC: BenchmarkInfo(
        name="ARC",
        description="AI2 Reasoning Challenge: grade-school science questions, easy and challenge sets.",
        subtasks=("easy", "challenge"),
        source="allenai/ai2_arc",
        split="test",
        licence="CC BY-SA 4.0",
        metrics=("acc", "acc_norm"),
        citation="Clark et al., Think you have Solved Question Answering? Try ARC, 2018.",
        task_type="multiple_choice",
        num_samples=3548,
        primary_metric="acc_norm",
        subtask_sizes={"easy": 2376, "challenge": 1172},
    ),
    Benchmark.TRUTHFULQA: BenchmarkInfo(
        name="TruthfulQA",
        description="Questions that some humans answer falsely; multiple choice mc1 and mc2.",
        subtasks=(),
        source="sylinrl/TruthfulQA (truthfulqa/truthful_qa, multiple_choice)",
        split="validation",
        licence="Apache-2.0",
        metrics=("mc1", "mc2"),
        citation="Lin et al., TruthfulQA: Measuring How Models Mimic Human Falsehoods, ACL 2022.",
        task_type="multiple_choice",
        num_samples=817,
        primary_metric="mc2",
    ),
    Benchmark.PIQA: BenchmarkInfo(
        name="PIQA",
        description="Physical commonsense: choose the better of two solutions to a goal.",
        subtasks=(),
        source="ybisk/piqa",
        split="validation",
        licence="AFL-3.0",
        metrics=("acc", "acc_norm"),
        citation="Bisk et al., PIQA: Reasoning about Physical Commonsense in Natural Language, AAAI 2020.",
        task_type="multiple_choice",
        num_samples=1838,
        primary_metric="acc_norm",
    ),
    Benchmark.BOOLQ: BenchmarkInfo(
        name="BoolQ",
        description="Naturally occurring yes/no questions about a Wikipedia passage.",
        subtasks=(),
        source="google/boolq (super_glue, boolq)",
        split="validation",
        licence="CC BY-SA 3.0",
        metrics=("acc",),
        citation="Clark et al., BoolQ: Exploring the Surprising Difficulty of Natural Yes/No Questions, NAACL 2019.",
        task_type="multiple_choice",
        num_samples=3270,
        primary_metric="acc",
    ),
    Benchmark.RACE: BenchmarkInfo(
        name="RACE",
        description="Reading comprehension from English exams for Chinese students, high and middle school.",
        subtasks=("high", "middle"),
        source="RACE (ehovy/race)",
        split="test",
        licence="RACE terms: non-commercial research only",
        metrics=("acc",),
        citation="Lai et al., RACE: Large-scale ReAding Comprehension Dataset From Examinations, EMNLP 2017.",
        task_type="multiple_choice",
        num_samples=4934,
        primary_metric="acc",
        subtask_sizes={"high": 3498, "middle": 1436},
    ),
}


# Primary metrics that are a share of items answered right: the headline calls them "accuracy".
# mc2 (TruthfulQA) is a normalised probability mass, not a share, so it has a score but no accuracy.
ACCURACY_METRICS = frozenset({"acc", "acc_norm", "exact_match", "exact_match_strict", "mc1"})


def get_benchmarks() -> type[Benchmark]:
    """The Benchmark enum, as in the reference API."""
    return Benchmark


def resolve_benchmark(name: str | Benchmark) -> Benchmark:
    """Case-insensitive lookup; ValueError lists the valid names."""
    canonical = resolve_name(name, [b.value for b in Benchmark], "benchmark")
    return Benchmark(canonical)


def get_benchmark_properties(benchmark: str | Benchmark) -> dict[str, Any]:
    """Description, subtasks, dataset_info, metrics, citation, task_type and num_samples."""
    return BENCHMARKS[resolve_benchmark(benchmark)].properties()
