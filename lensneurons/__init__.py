"""lensneurons: neuron-level interpretability on TransformerLens.

Activations flow from hook points through streaming reducers into analyses that return
`NeuronSet`s; neuron sets become edits that patch the model back.

The names below are importable from the top level (`lensneurons.load_model(...)`). They are
resolved on first use, so `import lensneurons` (and the CLI's `--help`) stays fast: torch and
TransformerLens load only when a name that needs them is touched.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "lensneurons.models": ["load_model", "toy_model"],
    "lensneurons.activations": ["pooled_activations", "collect", "stream_pooled"],
    "lensneurons.stats": [
        "average_precision",
        "average_precision_multi",
        "welch_t",
        "median",
        "MeanVar",
        "WelchT",
        "Stack",
        "TopK",
    ],
    "lensneurons.neurons": ["NeuronSet", "overlap_matrix"],
    "lensneurons.patching": ["NeuronEdit", "patched", "zero", "scale", "set_to"],
    "lensneurons.attribution": ["integrated_gradients", "CompletenessWarning"],
    "lensneurons.probes": ["train_probes"],
    "lensneurons.analyses.language_neurons": ["LanguageNeurons"],
    "lensneurons.analyses.knowledge_neurons": ["KnowledgeNeurons"],
    "lensneurons.analyses.sparse_probing": ["SparseProbing"],
    "lensneurons.analyses.corpus_neurons": ["CorpusNeurons"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'lensneurons' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
