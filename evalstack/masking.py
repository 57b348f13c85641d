"""The one masking function for everything evalstack writes: specs, results, reports, logs, state, errors.

:func:`mask` replaces, in any text, what may be a secret with ``***``:

- URL credentials: ``https://user:pass@host`` -> ``https://***@host``;
- the values of query or option keys that name a secret (``api_key=``, ``token=``, ``secret=``,
  ``password=``, ``key=``, ``signature=``, ``X-Amz-Signature=``, ``*_key=``, ``*_token=``, ...);
- values that look like tokens: known prefixes (OpenAI ``sk-``, Hugging Face ``hf_``, AWS access key
  ids ``AKIA``/``ASIA``, GitHub ``ghp_``/``gho_``/``ghs_``/``github_pat_``, Slack ``xox?-``, Google
  ``AIza``, JWTs) and long high-entropy strings (40-character AWS secret keys, base64/base62 runs).

Hex digests and UUIDs (sha256 of a dataset, execution ids) are not masked: one case and 16 symbols
carry too little entropy per character to pass the entropy test, and they are what users look up.
Masking is idempotent and never fails, so it is safe in error paths.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

MASK = "***"

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s?#'\"]+)@")
# A key that names a secret, as a whole word or as the last part of a snake/kebab-case name.
_SECRET_KEY = (
    r"(?:[A-Za-z0-9]+[_-])*(?:api[_-]?key|apikey|access[_-]?key|secret|secret[_-]?key|password|passwd|pwd|token"
    r"|auth|authorization|bearer|credential|credentials|signature|sig|key|session[_-]?token|private[_-]?key)"
)
# key=value in a query string or option list; the value runs to the next separator.
_SECRET_ASSIGNMENT = re.compile(rf"(?P<key>(?<![A-Za-z0-9])(?i:{_SECRET_KEY}))(?P<sep>=)(?P<value>[^&\s;,'\"#]+)")
# "key": "value" in JSON text and key: value in YAML-ish text.
_SECRET_FIELD = re.compile(rf"(?P<key>[\"']?(?i:{_SECRET_KEY})[\"']?\s*:\s*[\"'])(?P<value>[^\"'\s]+)(?=[\"'])")
_BEARER = re.compile(r"(?i)(?P<key>\bbearer\s+)(?P<value>[A-Za-z0-9._~+/=-]{8,})")
_PREFIXED_TOKEN = re.compile(
    r"(?<![A-Za-z0-9])(?:"
    r"sk-[A-Za-z0-9_-]{8,}"  # OpenAI, Anthropic (sk-ant-...)
    r"|hf_[A-Za-z0-9]{8,}"  # Hugging Face
    r"|(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{12,}"  # AWS key and principal ids
    r"|gh[pousr]_[A-Za-z0-9]{16,}|github_pat_[A-Za-z0-9_]{16,}"  # GitHub
    r"|xox[abposr]-[A-Za-z0-9-]{8,}"  # Slack
    r"|AIza[A-Za-z0-9_-]{20,}"  # Google API keys
    r"|glpat-[A-Za-z0-9_-]{16,}"  # GitLab
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"  # JWT
    r")"
)
# Candidate random runs: base62 of 20+ characters, and AWS secret access keys (40 of base64's alphabet).
_LONG_RUN = re.compile(r"(?<![A-Za-z0-9+/])(?:[A-Za-z0-9]{20,}|[A-Za-z0-9+/]{40})(?![A-Za-z0-9+/])")
_MIN_ENTROPY_BITS = 3.5  # per character; a random 20-character base62 string is above it 99 times in 100
# Random text rarely has three lower-case letters in a row (0.42**3 per position for base62), while
# names made of words (AmazonSageMakerFullAccess2024Policy) are mostly such runs.
_WORDLIKE = re.compile(r"[a-z]{3,}")
_MAX_WORDLIKE_SHARE = 0.35  # of a run shorter than 32 characters; 0.5 from 32 on, where chance evens out


def _entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _char_class(char: str) -> int:
    return 0 if char.islower() else 1 if char.isupper() else 2 if char.isdigit() else 3


def looks_like_token(text: str) -> bool:
    """A known token prefix, or a long run mixing upper case, lower case and digits as random text does."""
    if _PREFIXED_TOKEN.fullmatch(text):
        return True
    if not _LONG_RUN.fullmatch(text):
        return False
    if len({_char_class(c) for c in text if c.isalnum()}) < 3:
        return False
    wordlike = sum(len(run) for run in _WORDLIKE.findall(text)) / len(text)
    limit = _MAX_WORDLIKE_SHARE if len(text) < 32 else 0.5
    return wordlike <= limit and _entropy(text) > _MIN_ENTROPY_BITS


def _mask_run(match: re.Match[str]) -> str:
    return MASK if looks_like_token(match[0]) else match[0]


def mask(text: str) -> str:
    """``text`` with URL credentials, secret-named values and token-like strings replaced by ``***``."""
    if not isinstance(text, str) or not text:
        return text
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = _SECRET_ASSIGNMENT.sub(lambda m: f"{m['key']}{m['sep']}{MASK}", text)
    text = _SECRET_FIELD.sub(lambda m: f"{m['key']}{MASK}", text)
    text = _BEARER.sub(lambda m: f"{m['key']}{MASK}", text)
    text = _PREFIXED_TOKEN.sub(MASK, text)
    return _LONG_RUN.sub(_mask_run, text)


def mask_value(value: Any) -> Any:
    """``value`` with every string inside it (dict keys excepted) masked; for JSON-able data."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {key: mask_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(item) for item in value]
    return value
