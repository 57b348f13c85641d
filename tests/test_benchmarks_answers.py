"""Answer extraction rules on their own: letters, lm-eval regex filters and exact match, MATH answers."""

from __future__ import annotations

import pytest

from evalstack.benchmarks import math_answers
from evalstack.benchmarks.answers import ExactMatch, extract_letter, regex_extract
from evalstack.benchmarks.definitions.gsm8k import FLEXIBLE, MATCH, STRICT


@pytest.mark.parametrize(
    ("reply", "letter"),
    [
        ("B", "B"),
        ("(C)", "C"),
        ("D.", "D"),
        ("The answer is (A).", "A"),
        ("Answer: **B**", "B"),
        ("I think the answer is C because it fits.", "C"),
        ("C. Paris is the capital.", "C"),
        ("the answer is a dog", None),  # a lower-case word is not a letter
        ("The answer is E.", None),  # not an offered letter
        ("No idea.", None),
    ],
)
def test_extract_letter(reply: str, letter: str | None) -> None:
    assert extract_letter(reply, ["A", "B", "C", "D"]) == letter


@pytest.mark.parametrize(
    ("reply", "strict", "flexible", "strict_ok", "flexible_ok"),
    [
        ("#### 42", "42", "42", 1.0, 1.0),
        ("The answer is 42.", "[invalid]", "42.", 0.0, 1.0),
        ("It costs $1,000.", "[invalid]", "$1,000.", 0.0, 0.0),  # gold 42 here
        ("Total: -3, so #### -3", "-3", "-3", 0.0, 0.0),
    ],
)
def test_gsm8k_filters(reply: str, strict: str, flexible: str, strict_ok: float, flexible_ok: float) -> None:
    gold = "Janet has 40 + 2 = <<40+2=42>>42 eggs.\n#### 42"
    assert (STRICT.apply(reply), FLEXIBLE.apply(reply)) == (strict, flexible)
    assert (MATCH(STRICT.apply(reply), gold), MATCH(FLEXIBLE.apply(reply), gold)) == (strict_ok, flexible_ok)
    assert MATCH("$1,000.", "#### 1000") == 1.0


def test_regex_and_exact_match_rules() -> None:
    assert regex_extract("So the answer is (B).", r"(?<=the answer is )(.*)(?=.)") == "(B)"
    assert regex_extract("So the answer is (B)", r"(?<=the answer is )(.*)(?=.)") == "(B"
    assert regex_extract("nothing", r"(\d+)") == "[invalid]"
    assert ExactMatch(ignore_case=True, ignore_punctuation=True)("Yes!", "yes") == 1.0
    assert ExactMatch()("Yes", "yes") == 0.0


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("\\frac12", "\\frac{1}{2}"),
        ("5 cm", "5"),
        ("1,000", "1000"),
        ("0,1", "0,1"),
        ("x = 3", "3"),
        ("\\text{(A)}", "(A)"),
        ("$\\boxed{7}$", "7"),
        ("10^\\circ", "10"),
        ("\\sqrt2", "\\sqrt{2}"),
    ],
)
def test_math_normalize(raw: str, normalized: str) -> None:
    assert math_answers.normalize(raw) == normalized


def test_math_extraction_and_equivalence() -> None:
    minerva = "so $x=2$.\nFinal Answer: The final answer is $\\frac{1}{2}$. I hope it is correct."
    assert math_answers.extract_answer(minerva) == "$\\frac{1}{2}$"
    assert math_answers.extract_answer("thus \\boxed{\\frac{3}{4}} done") == "\\frac{3}{4}"
    assert math_answers.extract_answer("no answer here") == math_answers.INVALID_ANSWER
    assert math_answers.last_boxed("a \\boxed{\\frac{1}{\\sqrt{2}}} b") == "\\frac{1}{\\sqrt{2}}"
    assert math_answers.is_equivalent("0.5", "\\frac{1}{2}")
    assert math_answers.is_equivalent("\\frac{4}{2}", "2")
    assert not math_answers.is_equivalent("3", "2")
    assert not math_answers.is_equivalent(math_answers.INVALID_ANSWER, "2")
