"""ROUGE imports rouge-score with nltk's __init__ deferred: same scores, no scipy/scikit-learn/pandas, and a
later ``import nltk`` in the same process is complete (METEOR still works). METEOR's signature needs no nltk."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from evalstack.metrics.light_imports import DeferredPackage, import_deferring
from tests.conftest import REPO_ROOT
from tests.support.metrics_data import truthfulqa_rows

TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]

# Runs in a fresh interpreter: evalstack's ROUGE first (so rouge-score is imported the light way), then
# the full nltk and METEOR.
LIGHT_THEN_FULL = textwrap.dedent(
    """
    import json, sys
    cases = json.load(sys.stdin)
    from evalstack.metrics import compute_preset
    out = {"scores": [compute_preset("rouge", c["predictions"], c["references"], c["hp"]).per_sample for c in cases]}
    from evalstack.catalog.hyperparameters import Hyperparameters
    from evalstack.metrics.meteor import meteor_signature
    out["meteor_signature"] = meteor_signature(Hyperparameters.for_kind("custom_scorer"))
    out["after_rouge"] = sorted({m.split(".")[0] for m in sys.modules} & {"nltk", "scipy", "sklearn", "pandas"})
    from rouge_score import rouge_scorer
    import nltk, nltk.stem.porter
    out["after_nltk"] = sorted({m.split(".")[0] for m in sys.modules} & {"nltk", "scipy", "sklearn", "pandas"})
    out["sent_tokenize_forwarded"] = rouge_scorer.nltk.sent_tokenize is nltk.sent_tokenize
    out["porter_complete"] = nltk.stem.porter.PorterStemmer is nltk.stem.PorterStemmer
    from evalstack.metrics.wordnet import load_wordnet
    meteor = compute_preset("meteor", ["the cat sat on the mat"], ["a cat was sitting on the mat"], {})
    out["meteor"] = meteor.values["meteor"]
    wordnet = load_wordnet()
    out["signature_from_nltk"] = {
        "nltk": nltk.__version__,
        "wordnet": f"WordNet {wordnet.get_version()} ({wordnet.root.path})",
        "tokenizer": "nltk.tokenize.NLTKWordTokenizer",
    }
    from nltk.translate.meteor_score import meteor_score
    from evalstack.metrics.meteor import tokenize
    out["meteor_nltk"] = float(meteor_score([tokenize("a cat was sitting on the mat")],
                                            tokenize("the cat sat on the mat"), wordnet=load_wordnet()))
    print(json.dumps(out))
    """
)


def _light_run(cases: list[dict]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", LIGHT_THEN_FULL],
        input=json.dumps(cases),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_light_rouge_equals_canonical_and_full_nltk_still_works() -> None:
    rows = truthfulqa_rows(30)
    predictions = [r["best"] for r in rows]
    # Multi-line texts: rougeLsum treats newlines as sentence boundaries.
    references = ["\n".join(r["others"]) for r in rows]
    cases = [
        {"predictions": predictions, "references": references, "hp": {"rouge_types": TYPES}},
        {"predictions": predictions, "references": references, "hp": {"rouge_types": TYPES, "use_stemmer": True}},
    ]
    out = _light_run(cases)

    for case, scores in zip(cases, out["scores"], strict=True):
        scorer = rouge_scorer.RougeScorer(TYPES, use_stemmer=case["hp"].get("use_stemmer", False))
        pairs = zip(predictions, references, strict=True)
        expected = [{t: s.fmeasure for t, s in scorer.score(r, p).items()} for p, r in pairs]
        assert scores == expected
    assert out["scores"][0] != out["scores"][1]  # the stemmer was used
    assert out["after_rouge"] == []
    assert out["after_nltk"] == ["nltk", "pandas", "scipy", "sklearn"]  # the real nltk, imported after
    assert out["sent_tokenize_forwarded"] is True
    assert out["porter_complete"] is True
    assert out["meteor"] == out["meteor_nltk"]
    # The Report step's METEOR signature, read without nltk, is the one nltk's WordNet reader gives.
    assert out["meteor_signature"] == out["signature_from_nltk"]
    assert 0 < out["meteor"] < 1


@pytest.fixture
def heavy_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A package whose __init__ must not run (it raises), a light submodule, and a module importing both
    ways, under names unique to this test; removed from sys.modules afterwards."""
    name = f"h1heavy_{tmp_path.name.replace('-', '_')}"
    pkg = tmp_path / name
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('heavy __init__ ran')\nEXTRA = 1\n")
    (pkg / "sub" / "__init__.py").write_text("raise RuntimeError('heavy sub __init__ ran')\n")
    (pkg / "sub" / "light.py").write_text("def stem(word):\n    return word.rstrip('s')\n")
    (tmp_path / f"{name}_user.py").write_text(f"import {name}\nfrom {name}.sub import light\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for module in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[module]


def test_deferred_init_never_runs_and_stubs_leave_sys_modules(heavy_package: str) -> None:
    user = import_deferring(f"{heavy_package}_user", (heavy_package, f"{heavy_package}.sub"))
    assert user.light.stem("cats") == "cat"
    assert isinstance(getattr(user, heavy_package), DeferredPackage)
    assert not [m for m in sys.modules if m == heavy_package or m.startswith(f"{heavy_package}.")]
    # Afterwards the stub reads missing attributes from the real package, imported then (this one raises).
    with pytest.raises(RuntimeError, match="heavy __init__ ran"):
        assert getattr(user, heavy_package).EXTRA == 1
    # Imported already: returned as is, nothing deferred again.
    assert import_deferring(f"{heavy_package}_user", (heavy_package,)) is user


def test_concurrent_deferred_imports_get_one_module(heavy_package: str) -> None:
    results: list[object] = []
    errors: list[BaseException] = []

    def load() -> None:
        try:
            results.append(import_deferring(f"{heavy_package}_user", (heavy_package, f"{heavy_package}.sub")))
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 8 and len({id(r) for r in results}) == 1


def test_deferring_a_missing_package_names_it() -> None:
    with pytest.raises(ImportError, match="cannot defer 'h1_no_such_package': it is not an installed package"):
        import_deferring("h1_no_such_module", ("h1_no_such_package",))


def test_wordnet_version_errors_name_the_folder_and_file(tmp_path: Path) -> None:
    from evalstack.metrics.meteor import wordnet_version

    with pytest.raises(FileNotFoundError, match=f"WordNet database not found in {re.escape(str(tmp_path))}"):
        wordnet_version(tmp_path)
    (tmp_path / "data.adj").write_text("  1 a licence header without a version\n00001740 00 a 01 able 0 005\n")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'data.adj'}: no 'WordNet <version> Copyright'")):
        wordnet_version(tmp_path)
    (tmp_path / "data.adj").write_text("  1 header\n  2 WordNet 3.0 Copyright 2006 by Princeton University.\n")
    assert wordnet_version(tmp_path) == "3.0"
