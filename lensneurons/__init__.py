"""lensneurons: neuron-level interpretability on TransformerLens.

Activations flow from hook points through streaming reducers into analyses that return
`NeuronSet`s; neuron sets become edits that patch the model back.

The names below are importable from the top level (`lensneurons.load_model(...)`). They are
resolved on first use, so `import lensneurons` (and the CLI's `--help`) stays fast: torch and
TransformerLens load only when a name that needs them is touched.
"""
from __future__ import annotations

import importlib

from lensneurons import _moved

_moved.install()

_EXPORTS = {
    "lensneurons.core.models": ["load_model", "toy_model", "from_config"],
    "lensneurons.core.activations": ["pooled_activations", "collect", "stream_pooled"],
    "lensneurons.core.stats": [
        "average_precision",
        "average_precision_multi",
        "welch_t",
        "median",
        "MeanVar",
        "WelchT",
        "Stack",
        "TopK",
    ],
    "lensneurons.core.units": ["unit_space", "custom_site", "UnitSpace"],
    "lensneurons.core.sites": ["site_width"],
    "lensneurons.core.neurons": ["NeuronSet", "overlap_matrix"],
    "lensneurons.core.patching": ["NeuronEdit", "patched", "zero", "scale", "set_to"],
    "lensneurons.lenses.knowledge.attribution": ["integrated_gradients", "CompletenessWarning"],
    "lensneurons.lenses.grammar.probes": ["train_probes"],
    "lensneurons.lenses.language.analysis": ["LanguageNeurons"],
    "lensneurons.lenses.knowledge.analysis": ["KnowledgeNeurons"],
    "lensneurons.lenses.grammar.analysis": ["SparseProbing"],
    "lensneurons.lenses.corpus.analysis": ["CorpusNeurons"],
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
