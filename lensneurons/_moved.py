"""Old module paths (before the core / lenses layout) keep working, with a DeprecationWarning.

`import lensneurons.attribution` returns the module object of `lensneurons.lenses.knowledge.attribution`
itself (not a copy), so private names, monkeypatching and `isinstance` behave as before.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

MOVED = {
    "lensneurons.models": "lensneurons.core.models",
    "lensneurons.memory": "lensneurons.core.memory",
    "lensneurons.distributed": "lensneurons.core.distributed",
    "lensneurons.sites": "lensneurons.core.sites",
    "lensneurons.activations": "lensneurons.core.activations",
    "lensneurons.stats": "lensneurons.core.stats",
    "lensneurons.neurons": "lensneurons.core.neurons",
    "lensneurons.patching": "lensneurons.core.patching",
    "lensneurons.generation": "lensneurons.core.generation",
    "lensneurons.results": "lensneurons.core.results",
    "lensneurons.plots": "lensneurons.lenses.language.figures",
    "lensneurons.langid": "lensneurons.lenses.language.langid",
    "lensneurons.bleu": "lensneurons.lenses.language.bleu",
    "lensneurons.attribution": "lensneurons.lenses.knowledge.attribution",
    "lensneurons.probes": "lensneurons.lenses.grammar.probes",
    "lensneurons.store": "lensneurons.lenses.grammar.store",
    "lensneurons.report": "lensneurons.lenses.corpus.report",
    "lensneurons.finetune": "lensneurons.lenses.corpus.finetune",
    "lensneurons.analyses": None,  # old packages: empty modules whose submodules are the moved ones
    "lensneurons.pipelines": None,
    "lensneurons.analyses.language_neurons": "lensneurons.lenses.language.analysis",
    "lensneurons.analyses.knowledge_neurons": "lensneurons.lenses.knowledge.analysis",
    "lensneurons.analyses.sparse_probing": "lensneurons.lenses.grammar.analysis",
    "lensneurons.analyses.corpus_neurons": "lensneurons.lenses.corpus.analysis",
    "lensneurons.pipelines.language_neurons": "lensneurons.lenses.language.study",
    "lensneurons.pipelines.knowledge_neurons": "lensneurons.lenses.knowledge.study",
    "lensneurons.pipelines.sparse_probing": "lensneurons.lenses.grammar.study",
    "lensneurons.pipelines.corpus_neurons": "lensneurons.lenses.corpus.study",
    "lensneurons.pipelines.finetune_shift": "lensneurons.lenses.corpus.shift_study",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self, is_package=MOVED[fullname] is None)

    def create_module(self, spec):
        new = MOVED[spec.name]
        if new is None:
            return types.ModuleType(spec.name, f"Moved: see {__name__}.MOVED.")
        warnings.warn(f"{spec.name} has moved to {new}; the old path will be removed", DeprecationWarning,
                      stacklevel=3)
        return importlib.import_module(new)

    def exec_module(self, module):
        pass


def install() -> None:
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.append(_MovedModules())
