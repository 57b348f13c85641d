"""Final answers of MATH problems: extraction, Minerva normalisation and symbolic equivalence.

Extraction follows the Minerva prompt (Lewkowycz et al. 2022), as lm-eval's ``minerva_math``:
the text between "Final Answer: The final answer is" and ". I hope it is correct."; when a model
does not use that sentence, the last ``\\boxed{...}`` is taken instead (documented deviation:
lm-eval scores such a response ``[invalidanswer]``).

Normalisation is the procedure of the Minerva paper's appendix D (keep the right side of an '=',
drop units and filler words, unwrap ``\\text``/``\\boxed``/``$...$``, canonicalise ``\\frac``
and ``\\sqrt`` shorthand, drop thousands separators). Two answers are equivalent when their
normalised strings are equal, or when math-verify (or, without it, sympy's LaTeX parser) proves
them equal.
"""

from __future__ import annotations

import re

INVALID_ANSWER = "[invalidanswer]"

# As lm-eval: the dots are unescaped, and the closing sentence is appended before searching.
_FINAL = re.compile(r"Final Answer: The final answer is(.*?). I hope it is correct.")

_SUBSTITUTIONS = (
    ("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), (r"\ ", ""), (" ", ""), ("mbox", "text"),
    (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"),
)  # fmt: skip
_UNIT_WORDS = (
    "square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units", "sue",
    "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals",
    "edges", "students", "childrentickets", "multiples",
)  # fmt: skip
_REMOVED_TOKENS = (
    "\\ldots", "\\text{s}", "\\text{.}", "\\text{\ns}", "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}",
    r"\mathrm{th}", r"^\circ", r"^{\circ}", r"\;", r",\!", "{,}", '"', "\\dots",
)  # fmt: skip


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``, or ``\\boxed x``), braces balanced."""
    if "\\boxed " in text:
        return text.split("\\boxed ")[-1].split("$")[0].strip()
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    open_at = text.index("{", start)
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
    return None


def extract_answer(response: str) -> str:
    match = _FINAL.search(response + "I hope it is correct.")
    if match:
        return match.group(1).strip()
    boxed = last_boxed(response)
    return boxed if boxed is not None else INVALID_ANSWER


def _drop_unit_words(text: str) -> str:
    # Outside LaTeX command names only, so "\left" keeps its "ft".
    pieces = re.split(r"(\\[a-zA-Z]+)", text)
    for i in range(0, len(pieces), 2):
        for word in _UNIT_WORDS:
            pieces[i] = pieces[i].replace(word, "")
    return "".join(pieces)


def normalize(answer: str) -> str:
    text = answer.split("=")[-1]
    for before, after in _SUBSTITUTIONS:
        text = text.replace(before, after)
    text = _drop_unit_words(text)
    for token in _REMOVED_TOKENS:
        text = text.replace(token, "")
    text = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", r"$\3$", text)
    for command in ("text", "textbf", "overline"):
        text = re.sub(rf"(\\{command}\{{)(.*?)(\}})", r"\2", text)
    text = re.sub(r"(\\boxed\{)(.*)(\})", r"\2", text)
    text = re.sub(r"(frac)([^{])(.)", r"frac{\2}{\3}", text)
    text = re.sub(r"(sqrt)(\[[^\]]*\])(\w)", r"\1\2{\3}", text)
    text = re.sub(r"(sqrt)(?!\[)([^{])", r"sqrt{\2}", text)
    text = text.replace("$", "")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+", text):
        text = text.replace(",", "")
    return text


def symbolically_equal(predicted: str, gold: str) -> bool:
    """math-verify's verdict on two normalised answers (sympy's LaTeX parser when it is missing)."""
    try:
        from math_verify import parse, verify
    except ImportError:
        return _sympy_equal(predicted, gold)
    gold_parsed = parse(f"${gold}$")
    pred_parsed = parse(f"${predicted}$")
    return bool(gold_parsed and pred_parsed and verify(gold_parsed, pred_parsed))


def _sympy_equal(predicted: str, gold: str) -> bool:
    import sympy
    from sympy.parsing.latex import parse_latex

    try:
        difference = parse_latex(predicted) - parse_latex(gold)
        return bool(sympy.simplify(difference) == 0)
    except Exception:  # noqa: BLE001 - sympy raises many unrelated types on unparsable LaTeX: not equal
        return False


def is_equivalent(predicted: str, gold: str) -> bool:
    if predicted == INVALID_ANSWER:
        return False
    return predicted == gold or symbolically_equal(predicted, gold)
