"""Answer extraction and exact-match comparison, following lm-evaluation-harness's filter rules.

- :func:`regex_extract` is lm-eval's ``regex`` filter followed by ``take_first``: ``findall`` over
  the response, pick match ``group_select`` (negative counts from the end); when a match is a tuple
  of groups, take its first non-empty group; strip; ``[invalid]`` when nothing matches.
- :func:`exact_match` is lm-eval's ``exact_match`` metric: delete every ``regexes_to_ignore``
  pattern from both strings (in order), then optionally lower-case and drop punctuation.
- :func:`extract_letter` reads a multiple-choice letter from a generated answer (generative
  scoring of multiple choice when the backend gives no log-likelihoods).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

INVALID = "[invalid]"


@dataclass(frozen=True)
class RegexFilter:
    name: str
    pattern: str
    group_select: int = 0

    def apply(self, response: str) -> str:
        return regex_extract(response, self.pattern, self.group_select)


def regex_extract(response: str, pattern: str, group_select: int = 0) -> str:
    matches = re.findall(pattern, response)
    if not matches:
        return INVALID
    match = matches[group_select]
    if isinstance(match, tuple):
        groups = [g for g in match if g]
        if not groups:
            return INVALID
        match = groups[0]
    return match.strip()


@dataclass(frozen=True)
class ExactMatch:
    regexes_to_ignore: tuple[str, ...] = ()
    ignore_case: bool = False
    ignore_punctuation: bool = False

    def normalize(self, text: str) -> str:
        for pattern in self.regexes_to_ignore:
            text = re.sub(pattern, "", text)
        if self.ignore_case:
            text = text.lower()
        if self.ignore_punctuation:
            text = text.translate(str.maketrans("", "", string.punctuation))
        return text

    def __call__(self, prediction: str, reference: str) -> float:
        return 1.0 if self.normalize(prediction) == self.normalize(reference) else 0.0


def letters(count: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(count)]


# Generative multiple choice: the answer letter is, in order of preference,
#   1. the letter after "answer is" / "answer:" (optionally bracketed), e.g. "The answer is (B)."
#   2. a response that is only a letter, optionally bracketed or followed by '.', ')' or ':', e.g. "B" or "(B)"
#   3. the first letter at the start of a line followed by '.', ')' or ':', e.g. "C. Paris"
# Only letters of the offered options count; anything else is a parse failure (scored wrong).
# Only the words are case-insensitive: "the answer is a dog" must not read as letter A.
_ANSWER_IS = re.compile(r"(?i:answer)\s*(?:(?i:is)|:)\s*:?\s*\(?\*{0,2}([A-Z])\b")
_ONLY_LETTER = re.compile(r"^\s*\(?([A-Z])\)?\s*[.):]?\s*$")
_LINE_START = re.compile(r"(?m)^\s*\(?([A-Z])[.):]")


def extract_letter(response: str, valid: Sequence[str]) -> str | None:
    for pattern in (_ANSWER_IS, _ONLY_LETTER, _LINE_START):
        for match in pattern.finditer(response):
            letter = match.group(1).upper()
            if letter in valid:
                return letter
    return None
