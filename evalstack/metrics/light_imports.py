"""Import a module while some packages it imports from have their ``__init__`` deferred.

rouge-score needs one module of nltk (``nltk.stem.porter``, its stemmer; ``nltk.sent_tokenize`` only when
summaries are split into sentences, which evalstack never asks for), but ``import nltk`` runs nltk's
``__init__``, which imports scipy.stats, scikit-learn and pandas: measured on 2 cores, about 3-4 s and
210 MB of RSS, against 0.26 s and 32 MB for rouge-score with nltk's ``__init__`` deferred. That cost was
paid by every step and every metric pool worker that scores ROUGE.

:func:`import_deferring` imports a module while each named package is registered in ``sys.modules``
as a :class:`DeferredPackage`: a package module with the real package's ``__path__`` and spec (so its
submodules import from the real files) whose ``__init__`` has not run. When the import is done the
stubs, and the submodules of those packages imported under them, leave ``sys.modules``: the imported
module keeps its references to them, and a later ``import nltk`` anywhere in the process is a normal,
complete import (its modules are new objects, so the imported module's classes are not the same objects
as the package's; no evalstack code compares them). An attribute the imported module reads from a stub
afterwards (``nltk.sent_tokenize``) comes from the real package, imported then.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from collections.abc import Sequence

# While the stubs are in sys.modules, another thread's ``import nltk`` would get a stub: the window is
# held under this lock, and every deferred import of ours goes through it.
_window = threading.Lock()


class DeferredPackage(types.ModuleType):
    """A package whose ``__init__`` has not run. While it is the ``sys.modules`` entry it only holds
    submodules (a missing attribute raises ``AttributeError``, so ``from pkg import sub`` imports
    ``sub``); once replaced, a missing attribute is read from the real package, imported on first use."""

    def __getattr__(self, name: str) -> object:
        if sys.modules.get(self.__name__) is self:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r} (its __init__ is deferred)")
        return getattr(importlib.import_module(self.__name__), name)


def _stub(name: str) -> DeferredPackage:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"cannot defer {name!r}: it is not an installed package", name=name)
    stub = DeferredPackage(name)
    stub.__spec__ = spec
    stub.__path__ = list(spec.submodule_search_locations)
    stub.__file__ = spec.origin
    stub.__package__ = name
    return stub


def _within(name: str, packages: Sequence[str]) -> bool:
    return any(name == p or name.startswith(f"{p}.") for p in packages)


def import_deferring(module: str, packages: Sequence[str]) -> types.ModuleType:
    """Import ``module`` (or return it, if imported already) while the ``__init__`` of each of ``packages``
    not yet imported is deferred. A parent package must come before its subpackages (``nltk``, then
    ``nltk.stem``): finding a subpackage's spec imports its parent."""
    with _window:
        if module in sys.modules:
            return sys.modules[module]
        before = set(sys.modules)
        deferred = [p for p in packages if p not in before]
        try:
            for name in deferred:
                sys.modules[name] = _stub(name)
            return importlib.import_module(module)
        finally:
            for name in set(sys.modules) - before:
                if _within(name, deferred):
                    del sys.modules[name]
