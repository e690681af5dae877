"""Neuron edits (zero, scale, set to given values) applied as TransformerLens hooks.

    with patched(model, zero(neurons)):           # suppress knowledge neurons
        model(tokens)
    with patched(model, set_to(neurons, medians)):  # clamp language neurons, also during generate
        model.generate(...)

Edits work on any unit space (`lensneurons.core.units`): the hooks overwrite only the chosen coordinates of
the component that holds them, so every other unit keeps exactly its value; they are removed on exit and
on exception.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lensneurons.core.models import HookedModel
from lensneurons.core.neurons import NeuronSet
from lensneurons.core.results import load_state, save_state
from lensneurons.core.units import unit_hooks, unit_space


@dataclass(frozen=True)
class NeuronEdit:
    """One operation on a set of neurons: `set` them to `values`, or `scale` them by `values`."""

    neurons: NeuronSet
    op: Literal["set", "scale"]
    values: Float[Tensor, "k"]  # one value per neuron, in `neurons`' (sorted) order

    def __post_init__(self):
        if self.op not in ("set", "scale"):
            raise ValueError(f"unknown edit op {self.op!r}; expected 'set' or 'scale'")
        if self.values.shape != (len(self.neurons),):
            raise ValueError(f"{len(self.neurons)} neurons but {tuple(self.values.shape)} values")
        if not torch.isfinite(self.values).all():
            raise ValueError(f"edit values must be finite numbers; got {self.values[~torch.isfinite(self.values)][:5].tolist()}")

    def state_dict(self) -> dict:
        """Plain values and a tensor (`torch.load(..., weights_only=True)` reads it back)."""
        return {"neurons": self.neurons.to_dict(), "op": self.op, "values": self.values.detach().cpu()}

    @classmethod
    def from_state_dict(cls, state: dict) -> NeuronEdit:
        return cls(NeuronSet.from_dict(state["neurons"]), state["op"], state["values"])

    def save(self, path: str | os.PathLike) -> None:
        save_state(path, self.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> NeuronEdit:
        return cls.from_state_dict(load_state(path))


def zero(neurons: NeuronSet) -> NeuronEdit:
    return NeuronEdit(neurons, "set", torch.zeros(len(neurons)))


def scale(neurons: NeuronSet, factor: float) -> NeuronEdit:
    return NeuronEdit(neurons, "scale", torch.full((len(neurons),), float(factor)))


def set_to(neurons: NeuronSet, values: Float[Tensor, "layer neuron"] | Float[Tensor, "k"]) -> NeuronEdit:
    """Set each neuron to a value: either one per neuron (in the set's order) or a full (layer, width) table."""
    if values.ndim == 2:
        if tuple(values.shape) != (neurons.n_layers, neurons.width):
            raise ValueError(
                f"value table has shape {tuple(values.shape)}, expected ({neurons.n_layers}, {neurons.width})"
            )
        values = values[neurons.layers, neurons.indices]
    return NeuronEdit(neurons, "set", values.detach().float().cpu())


def edit_hooks(
    model: HookedModel,
    edits: list[NeuronEdit],
    positions: Int[Tensor, "p"] | slice | None = None,
    row_positions: Int[Tensor, "batch"] | None = None,
) -> list[tuple[str, list[int], Callable]]:
    """(site, layers, reader) per unit space that `edits` touch: the readers `units.unit_hooks` calls to apply
    the edits (in order) at `positions` of every row (default: all positions), or at one position per row
    of the batch, `row_positions` (e.g. each prompt's last token in a right-padded batch)."""
    if positions is not None and row_positions is not None:
        raise ValueError("give positions (the same for every row) or row_positions (one per row), not both")
    given = positions if positions is not None else row_positions
    span = (int(given.min()), int(given.max())) if isinstance(given, Tensor) and given.numel() else None
    if isinstance(positions, Tensor):
        positions = positions.long()[:, None]  # (p, 1) against (1, k) unit indices: a p×k block
    where = slice(None) if positions is None else positions
    if row_positions is not None:
        row_positions = row_positions.long()
        rows = torch.arange(len(row_positions))[:, None]
    # site -> (layer, component) -> [(indices within the component, op, values)]
    per_site: dict[str, dict[tuple[int, int], list[tuple[Tensor, str, Tensor]]]] = {}
    for edit in edits:
        s = edit.neurons
        space = unit_space(model, s.site)
        if s.n_layers != model.cfg.n_layers or s.width != space.width:
            raise ValueError(
                f"neuron set shape {s.n_layers}×{s.width} at site {s.site!r} does not match the model "
                f"({model.cfg.n_layers}×{space.width})"
            )
        ops = per_site.setdefault(s.site, {})
        for layer, idx in s.by_layer().items():
            vals = edit.values[s.layers == layer]
            for index, (c, start) in enumerate(zip(space.components, space.offsets)):
                inside = (idx >= start) & (idx < start + c.width)
                if inside.any():
                    ops.setdefault((layer, index), []).append((idx[inside] - start, edit.op, vals[inside]))

    def make_reader(ops: dict):
        cached: dict[tuple[int, int, torch.device], list] = {}

        def reader(layer: int, index: int, act: Tensor) -> Tensor | None:
            if (layer, index) not in ops:
                return None
            if row_positions is not None and act.shape[0] != len(row_positions):
                raise ValueError(f"row_positions has {len(row_positions)} entries but the batch has {act.shape[0]} rows")
            if span is not None and not (-act.shape[1] <= span[0] and span[1] < act.shape[1]):
                raise ValueError(f"edit positions {span[0]}..{span[1]} are outside this input of {act.shape[1]} "
                                 f"positions (0..{act.shape[1] - 1}, or negative from the end)")
            key = (layer, index, act.device)
            if key not in cached:
                dev = act.device

                def at(i):
                    if row_positions is None:
                        return slice(None), _to(where, dev), i.to(dev)
                    # rows and positions (batch, 1) against unit indices (1, k): a batch×k block
                    return rows.to(dev), row_positions[:, None].to(dev), i.to(dev)[None]

                cached[key] = [(at(i), op, v.to(dev, act.dtype)) for i, op, v in ops[(layer, index)]]
            # in place is safe for inference; with autograd we edit a copy
            out = act.clone() if act.requires_grad else act
            for where_, op, vals in cached[key]:
                out[where_] = vals if op == "set" else out[where_] * vals
            return out

        return reader

    return [(site, sorted({layer for layer, _ in ops}), make_reader(ops)) for site, ops in per_site.items()]


def _to(where, device):
    return where.to(device) if isinstance(where, Tensor) else where


@contextmanager
def patched(
    model: HookedModel,
    *edits: NeuronEdit,
    positions: Int[Tensor, "p"] | slice | None = None,
    row_positions: Int[Tensor, "batch"] | None = None,
) -> Iterator[HookedModel]:
    """Apply `edits` to every forward pass inside the block (including `generate`); always removed after.
    `positions` / `row_positions`: see `edit_hooks`."""
    with ExitStack() as stack:
        for site, layers, reader in edit_hooks(model, list(edits), positions, row_positions):
            stack.enter_context(unit_hooks(model, site, layers, reader))
        yield model
