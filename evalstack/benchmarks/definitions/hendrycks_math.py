"""MATH: lm-eval ``minerva_math``: "Problem:\\n...\\n\\nSolution:", the 4 Minerva exemplars, stop at "Problem:".

File: ``math/test.jsonl`` (``problem``, ``level``, ``type``, ``solution``, ``idx``); ``type`` names
the subject. The gold answer is the normalised last ``\\boxed{}`` of the solution; a response is
right when its normalised final answer is equivalent (see :mod:`evalstack.benchmarks.math_answers`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from evalstack.benchmarks import math_answers
from evalstack.benchmarks.definition import Doc, Generation, field, read_jsonl
from evalstack.benchmarks.hf import hf_table
from evalstack.benchmarks.source import FileSource, HfDataset, Source
from evalstack.catalog.benchmarks import Benchmark

# The four exemplars of the Minerva prompt (Lewkowycz et al. 2022, appendix D.2), as lm-eval uses them.
MINERVA_SHOTS: tuple[Doc, ...] = (
    {
        "problem": "Find the domain of the expression  $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.",
        "solution": "The expressions inside each square root must be non-negative. Therefore, $x-2 \\ge 0$, so "
        "$x\\ge2$, and $5 - x \\ge 0$, so $x \\le 5$. Also, the denominator cannot be equal to zero, so $5-x>0$, "
        "which gives $x<5$. Therefore, the domain of the expression is $\\boxed{[2,5)}$.\n"
        "Final Answer: The final answer is $[2,5)$. I hope it is correct.",
    },
    {
        "problem": "If $\\det \\mathbf{A} = 2$ and $\\det \\mathbf{B} = 12,$ then find "
        "$\\det (\\mathbf{A} \\mathbf{B}).$",
        "solution": "We have that $\\det (\\mathbf{A} \\mathbf{B}) = (\\det \\mathbf{A})(\\det \\mathbf{B}) = "
        "(2)(12) = \\boxed{24}.$\nFinal Answer: The final answer is $24$. I hope it is correct.",
    },
    {
        "problem": "Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights instead, "
        "how many times must Terrell lift them in order to lift the same total weight?",
        "solution": "If Terrell lifts two 20-pound weights 12 times, he lifts a total of $2\\cdot 12\\cdot20=480$ "
        "pounds of weight.  If he lifts two 15-pound weights instead for $n$ times, he will lift a total of "
        "$2\\cdot15\\cdot n=30n$ pounds of weight.  Equating this to 480 pounds, we can solve for $n$:\n"
        "\\begin{align*}\n30n&=480\\\\\n\\Rightarrow\\qquad n&=480/30=\\boxed{16}\n\\end{align*}\n"
        "Final Answer: The final answer is $16$. I hope it is correct.",
    },
    {
        "problem": "If the system of equations\n\n\\begin{align*}\n6x-4y&=a,\\\\\n6y-9x &=b.\n\\end{align*}has a "
        "solution $(x, y)$ where $x$ and $y$ are both nonzero,\nfind $\\frac{a}{b},$ assuming $b$ is nonzero.",
        "solution": "If we multiply the first equation by $-\\frac{3}{2}$, we obtain\n\n$$6y-9x=-\\frac{3}{2}a.$$"
        "Since we also know that $6y-9x=b$, we have\n\n"
        "$$-\\frac{3}{2}a=b\\Rightarrow\\frac{a}{b}=\\boxed{-\\frac{2}{3}}.$$\n"
        "Final Answer: The final answer is $-\\frac{2}{3}$. I hope it is correct.",
    },
)


def subject_key(type_name: str) -> str:
    """'Counting & Probability' -> 'counting_and_probability'."""
    return type_name.strip().lower().replace(" & ", "_and_").replace(" ", "_")


def _doc(problem: str, solution: str, level: str, where: str) -> Doc:
    boxed = math_answers.last_boxed(solution)
    if boxed is None:
        raise ValueError(f"{where}: the solution has no \\boxed{{}} final answer")
    return {"problem": problem, "solution": solution, "level": level, "answer": math_answers.normalize(boxed)}


class HendrycksMath(Generation):
    benchmark = Benchmark.MATH
    default_fewshot = 4
    stop: ClassVar[tuple[str, ...]] = ("Problem:",)

    def query(self, doc: Doc) -> str:
        return f"Problem:\n{doc['problem']}\n\nSolution:"

    def target(self, doc: Doc) -> str:
        return str(doc["solution"])

    def read_files(self, source: FileSource, subtask: str | None) -> list[tuple[str, Doc]]:
        relpath = "math/test.jsonl"
        out = []
        for lineno, row in enumerate(read_jsonl(source, relpath), start=1):
            where = f"{source.uri(relpath)}: line {lineno}"
            if subject_key(field(row, "type", where)) != subtask:
                continue
            doc = _doc(field(row, "problem", where), field(row, "solution", where), str(row.get("level", "")), where)
            out.append((f"test-{field(row, 'idx', where)}", doc))
        return out

    def fewshot_pool(self, source: Source, subtask: str | None) -> list[Doc]:
        return list(MINERVA_SHOTS)

    def hf_table(self, subtask: str | None) -> HfDataset:
        return hf_table(self.key, "EleutherAI/hendrycks_math", subtask, "test")

    def from_hf(self, row: dict[str, Any], subtask: str | None) -> Doc:
        return _doc(row["problem"], row["solution"], row["level"], f"hendrycks_math/{subtask}")

    def score(self, doc: Doc, response: str) -> tuple[dict[str, float], dict[str, Any]]:
        raw = math_answers.extract_answer(response)
        predicted = raw if raw == math_answers.INVALID_ANSWER else math_answers.normalize(raw)
        return {"exact_match": float(math_answers.is_equivalent(predicted, doc["answer"]))}, {"answer": predicted}
