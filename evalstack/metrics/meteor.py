"""METEOR: a thin adapter over ``nltk.translate.meteor_score`` with WordNet 3.0 synonyms.

nltk >= 3.9 needs pre-tokenised input. Text is tokenised with nltk's ``NLTKWordTokenizer``
(the Treebank-style word tokenizer inside ``nltk.word_tokenize``), which needs no data files;
``word_tokenize`` itself first splits sentences with Punkt, which cannot be downloaded here,
so the two differ only where a sentence ends inside one answer. With several references,
nltk's ``meteor_score`` keeps the best-scoring one. The corpus value is the mean of the
per-sample scores, as in Hugging Face ``evaluate``'s meteor.

nltk is imported by the scoring only: importing it costs seconds (its ``__init__`` imports scipy,
scikit-learn and pandas), and the Report step, which needs only the signature, reads nltk's version
from its package metadata and WordNet's from its files without loading the database.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from functools import cache
from importlib.metadata import version
from pathlib import Path

from evalstack.catalog.hyperparameters import Hyperparameters
from evalstack.metrics.result import reference_lists
from evalstack.metrics.wordnet import load_wordnet, wordnet_dir

# The line of the licence header that nltk's WordNetCorpusReader.get_version reads the version from.
_WORDNET_VERSION = re.compile(r"Word[nN]et (\d+\+?|\d+\.\d+) Copyright")


@cache
def _tokenizer():
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


def tokenize(text: str) -> list[str]:
    return _tokenizer().tokenize(text)


def meteor_samples(
    predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], hp: Hyperparameters
) -> list[dict[str, float]]:
    from nltk.translate.meteor_score import meteor_score

    refs = reference_lists(predictions, references)
    wordnet = load_wordnet()
    return [
        {
            "meteor": float(
                meteor_score(
                    [tokenize(r) for r in rs],
                    tokenize(p),
                    alpha=hp.alpha,
                    beta=hp.beta,
                    gamma=hp.gamma,
                    wordnet=wordnet,
                )
            )
        }
        for p, rs in zip(predictions, refs, strict=True)
    ]


def wordnet_version(root: Path) -> str:
    """The WordNet version in ``root``'s ``data.adj`` licence header, as nltk's reader reads it."""
    path = root / "data.adj"
    if not path.is_file():
        raise FileNotFoundError(
            f"WordNet database not found in {root} (no data.adj). METEOR needs WordNet 3.0: install Debian's "
            "wordnet-base package (apt-get install -y wordnet-base) or set WNSEARCHDIR to a WordNet 'dict' directory."
        )
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.startswith("  "):
                break  # the header is the lines starting with two spaces
            match = _WORDNET_VERSION.search(line)
            if match:
                return match.group(1)
    raise ValueError(f"{path}: no 'WordNet <version> Copyright' line in its licence header")


def meteor_signature(hp: Hyperparameters) -> dict[str, str]:
    root = wordnet_dir()
    return {
        "nltk": version("nltk"),
        "wordnet": f"WordNet {wordnet_version(root)} ({os.path.abspath(root)})",
        "tokenizer": "nltk.tokenize.NLTKWordTokenizer",
    }
