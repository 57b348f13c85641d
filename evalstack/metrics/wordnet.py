"""Load WordNet 3.0 for METEOR from Debian's ``wordnet-base`` package, with no download.

nltk normally fetches WordNet into ``nltk_data`` over the network, which evaluation
machines may not reach. Debian's ``wordnet-base`` (``apt-get install wordnet-base``) installs
the WordNet 3.0 database files in ``/usr/share/wordnet`` (``$WNSEARCHDIR`` overrides it, as
for WordNet's own tools), and nltk's ``WordNetCorpusReader`` reads those files as they are,
except for one: ``lexnames``, the table of the 45 lexicographer file names, which upstream
WordNet ships as a file but Debian compiles into libwordnet instead. The table is fixed by
WordNet's lexnames(5WN) format, so it is served from here.
"""

from __future__ import annotations

import io
import os
import warnings
from functools import cache
from pathlib import Path

DEFAULT_WORDNET_DIR = "/usr/share/wordnet"

# lexnames(5WN), WordNet 3.0: file number (the line index), name, syntactic category
# (1 noun, 2 verb, 3 adjective, 4 adverb).
LEXNAMES = (
    ("adj.all", 3),
    ("adj.pert", 3),
    ("adv.all", 4),
    ("noun.Tops", 1),
    ("noun.act", 1),
    ("noun.animal", 1),
    ("noun.artifact", 1),
    ("noun.attribute", 1),
    ("noun.body", 1),
    ("noun.cognition", 1),
    ("noun.communication", 1),
    ("noun.event", 1),
    ("noun.feeling", 1),
    ("noun.food", 1),
    ("noun.group", 1),
    ("noun.location", 1),
    ("noun.motive", 1),
    ("noun.object", 1),
    ("noun.person", 1),
    ("noun.phenomenon", 1),
    ("noun.plant", 1),
    ("noun.possession", 1),
    ("noun.process", 1),
    ("noun.quantity", 1),
    ("noun.relation", 1),
    ("noun.shape", 1),
    ("noun.state", 1),
    ("noun.substance", 1),
    ("noun.time", 1),
    ("verb.body", 2),
    ("verb.change", 2),
    ("verb.cognition", 2),
    ("verb.communication", 2),
    ("verb.competition", 2),
    ("verb.consumption", 2),
    ("verb.contact", 2),
    ("verb.creation", 2),
    ("verb.emotion", 2),
    ("verb.motion", 2),
    ("verb.perception", 2),
    ("verb.possession", 2),
    ("verb.social", 2),
    ("verb.stative", 2),
    ("verb.weather", 2),
    ("adj.ppl", 3),
)


def lexnames_text() -> str:
    return "".join(f"{i:02d}\t{name}\t{pos}\n" for i, (name, pos) in enumerate(LEXNAMES))


def wordnet_dir() -> Path:
    return Path(os.environ.get("WNSEARCHDIR") or DEFAULT_WORDNET_DIR)


def load_wordnet(directory: str | Path | None = None):
    """An nltk WordNet reader over the WordNet 3.0 files in ``directory`` (default: ``wordnet_dir()``)."""
    return _load_wordnet(Path(directory) if directory else wordnet_dir())


@cache  # parsing the index files takes seconds; the reader is read-only
def _load_wordnet(root: Path):
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    if not (root / "data.noun").is_file():
        raise FileNotFoundError(
            f"WordNet database not found in {root} (no data.noun). METEOR needs WordNet 3.0: "
            "install Debian's wordnet-base package (apt-get install -y wordnet-base) "
            "or set WNSEARCHDIR to a WordNet 'dict' directory."
        )

    class DebianWordNetReader(WordNetCorpusReader):
        def open(self, file):
            if file == "lexnames" and not (root / "lexnames").is_file():
                return io.StringIO(lexnames_text())
            return super().open(file)

        def map_wn(self, version="wordnet"):
            # nltk maps synsets onto its downloaded "wordnet" corpus here, for Open
            # Multilingual Wordnet lookups only; this reader *is* WordNet 3.0 and has no OMW.
            return None

    # nltk only reads corpora under its data path (a guard against path traversal), so the
    # WordNet directory is registered there, as nltk's own error message advises.
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))
    with warnings.catch_warnings():
        # No Open Multilingual Wordnet reader: METEOR only needs English synonyms.
        warnings.filterwarnings("ignore", message="The multilingual functions are not available")
        return DebianWordNetReader(str(root), None)
