"""JSON Schemas of the atlas's exports (draft 2020-12), written beside them as export/schema.json.

A lens that was not run is absent from a card; a layer a lens did not read is null there.
"""
_NUMBER_OR_NULL = {"type": ["number", "null"]}
_TOKENS = {
    "type": "object", "required": ["tokens", "activations"],
    "properties": {"tokens": {"type": "array", "items": {"type": "string"}},
                   "activations": {"type": "array", "items": {"type": "number"}}},
}

UNIT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "lensneurons atlas unit",
    "type": "object",
    "required": ["id", "layer", "unit", "site", "component", "index_in_component", "neighbours", "summary"],
    "properties": {
        "id": {"type": "string", "pattern": r"^L\d+/\d+$", "description": "L<layer>/<unit index in the layer's unit space>"},
        "layer": {"type": "integer", "minimum": 0},
        "unit": {"type": "integer", "minimum": 0},
        "site": {"type": "string", "description": "the unit space (lensneurons.core.units), e.g. mlp or linear"},
        "component": {"type": "string", "description": "the unit's component within the space, e.g. mlp.hook_post or q"},
        "index_in_component": {"type": "integer", "minimum": 0},
        "neighbours": {"type": "array", "items": {"type": "string"}, "description": "the same index one layer down and up"},
        "summary": {"type": "string", "description": "rule-built restatement of the card's strongest facts"},
        "language": {
            "type": "object", "description": "paper L: AP of the mean-pooled value per language",
            "properties": {
                "ap": {"type": "object", "additionalProperties": _NUMBER_OR_NULL},
                "rank": {"type": "object", "additionalProperties": {"type": "integer"},
                         "description": "1 = the highest AP of that language among all units"},
                "of": {"type": "integer", "description": "number of units ranked"},
                "median": {"type": "object", "additionalProperties": _NUMBER_OR_NULL,
                           "description": "median on the language's texts: the clamp value"},
                "sets": {"type": "array", "items": {"type": "object", "properties": {
                    "lang": {"type": "string"}, "group": {"enum": ["top", "bottom"]}, "k": {"type": "integer"},
                    "steering": {"type": "object", "additionalProperties": {"type": "number"},
                                 "description": "% of generations in lang, per clamped set (none/top/bottom/both)"}}}},
            },
        },
        "knowledge": {
            "type": "object", "description": "paper K: facts whose refined knowledge-neuron set holds the unit",
            "properties": {
                "baseline": {"type": "string"},
                "facts": {"type": "array", "items": {"type": "object", "properties": {
                    "concept": {"type": "string"}, "answer": {"type": "string"}, "prompt": {"type": "string"},
                    "attribution": _NUMBER_OR_NULL, "set_size": {"type": "integer"},
                    "effects": {"type": "object", "additionalProperties": _NUMBER_OR_NULL,
                                "description": "'<suppress|amplify>/<own|unrelated|random>': mean relative change of "
                                               "P(answer) when the whole set is edited"}}}},
            },
        },
        "grammar": {
            "type": ["object", "null"], "description": "paper S: Welch t between grammatical and ungrammatical states",
            "properties": {
                "tasks": {"type": "array", "items": {"type": "object", "properties": {
                    "task": {"type": "string"}, "t": {"type": "number"},
                    "kept_at": {"type": "array", "items": {"type": "number"}, "description": "λ whose mask keeps it"}}}},
                "max_abs_t": _NUMBER_OR_NULL, "n_tasks": {"type": "integer"},
                "kept_tasks": {"type": "object", "additionalProperties": {"type": "integer"}},
            },
        },
        "corpus": {
            "type": ["object", "null"], "description": "paper O: top-K sentences and what they share",
            "properties": {
                "k": {"type": "integer"},
                "top": {"type": "array", "items": {"type": "object", "required": ["sentence", "activation", "text"],
                                                    "properties": {"sentence": {"type": "integer"}, "activation": {"type": "number"},
                                                                   "text": {"type": "string"},
                                                                   "tokens": {"type": "array", "items": {"type": "string"}},
                                                                   "values": {"type": "array", "items": {"type": "number"}}}}},
                "random": {"type": "array", "items": {"type": "object"}},
                "metadata": {"type": "object", "additionalProperties": {"type": "object"},
                             "description": "per field: label -> share of the top sentences that carry the field"},
                "known": {"type": "object", "additionalProperties": {"type": "integer"},
                          "description": "per field: how many of the k top sentences carry it"},
                "cluster": {"type": ["integer", "null"]},
                "mean_length": _NUMBER_OR_NULL,
                "ngrams": {"type": ["array", "null"]}, "skipgrams": {"type": ["array", "null"]},
                "pos_patterns": {"type": ["array", "null"]},
            },
        },
    },
}

NEURON_RECORD_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "neuron-explainer NeuronRecord (the fields lensneurons fills)",
    "type": "object",
    "required": ["neuron_id", "most_positive_activation_records", "random_sample"],
    "properties": {
        "neuron_id": {"type": "object", "required": ["layer_index", "neuron_index"],
                      "properties": {"layer_index": {"type": "integer"}, "neuron_index": {"type": "integer"}}},
        "most_positive_activation_records": {"type": "array", "items": _TOKENS,
                                             "description": "the unit's top sentences by pooled value, best first"},
        "random_sample": {"type": "array", "items": _TOKENS,
                          "description": "sentences drawn per unit from one shared random sample of the corpus"},
    },
}
