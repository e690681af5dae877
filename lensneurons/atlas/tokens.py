"""Per-token values of many units on many texts in one pass: the highlighted sentences of the atlas's cards.

Each card shows its unit's top sentences token by token, and a random sample of the corpus the same way
(the shape of a neuron-explainer `NeuronRecord`). Rather than one forward pass per (unit, text) pair, every
text is read once with all layers hooked, and each unit that asked for the text takes its column.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import torch
from tqdm.auto import tqdm

from lensneurons.core.activations import length_batches, pad_id, tokenize
from lensneurons.core.models import CausalModel
from lensneurons.core.units import unit_hooks, unit_space

Unit = tuple[int, int]


def token_values(
    model: CausalModel,
    texts: Sequence[str],
    wanted: Mapping[int, Sequence[Unit]],
    site: str = "mlp",
    batch_size: int = 8,
    max_length: int | None = 128,
    digits: int = 3,
    progress: bool = True,
) -> dict[tuple[int, int, int], dict]:
    """{(text, layer, unit): {"tokens": [...], "values": [...]}} for every unit `wanted[text]` lists.

    Tokens are the tokenizer's pieces as strings; the BOS position the model reads is left out (as in the
    corpus lens's pages). Values are rounded to `digits` decimals, for the site's JSON files."""
    space = unit_space(model, site)
    ids = sorted(wanted)
    if not ids:
        return {}
    layers = sorted({layer for i in ids for layer, _ in wanted[i]})
    token_ids = tokenize(model, [texts[i] for i in ids], max_length=max_length)
    skip = 1 if model.cfg.default_prepend_bos else 0
    spans = [(start, start + c.width) for c, start in zip(space.components, space.offsets)]
    out: dict[tuple[int, int, int], dict] = {}
    current: dict[int, torch.Tensor] = {}

    def read(layer: int, index: int, act: torch.Tensor) -> None:
        if layer not in current:
            current[layer] = torch.empty(*act.shape[:2], space.width)
        start, stop = spans[index]
        current[layer][:, :, start:stop] = act.reshape(*act.shape[:2], -1).float().cpu()

    bar = tqdm(total=len(ids), desc="token values", unit="text", disable=not progress)
    for batch in length_batches(token_ids, batch_size, pad_id(model), ids=ids, device=model.cfg.device):
        current.clear()
        with torch.inference_mode(), unit_hooks(model, site, layers, read):
            model(batch.tokens, attention_mask=batch.mask.long(), stop_at_layer=max(layers) + 1)
        for row, text in enumerate(batch.ids.tolist()):
            n = int(batch.mask[row].sum())
            pieces = [model.tokenizer.decode([t]) for t in batch.tokens[row, skip:n].tolist()]
            by_layer = defaultdict(list)
            for layer, unit in wanted[text]:
                by_layer[layer].append(unit)
            for layer, units in by_layer.items():
                values = current[layer][row, skip:n][:, units].T
                for unit, column in zip(units, values):
                    out[(text, layer, unit)] = {"tokens": pieces, "values": [round(v, digits) for v in column.tolist()]}
        bar.update(len(batch.ids))
    bar.close()
    return out
