"""`NeuronSet`: a set of neurons (layer, index) at one site, with set algebra and summaries."""
from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lensneurons.core.results import atomic_write
from lensneurons.core.sites import check_site


class TiedScoresWarning(UserWarning):
    """Equal scores straddle a top-k cut: which of them are in the set depends on the tie-break."""


def _warn_on_ties(scores: Tensor, order: Tensor, k: int, broken_by: str) -> None:
    if k >= len(order):
        return
    cut = scores[order[k - 1]]
    if scores[order[k]] == cut:
        n_tied, n_in = int((scores == cut).sum()), int((scores[order[:k]] == cut).sum())
        warnings.warn(f"{n_tied} units share the score {float(cut):.6g} at the top-{k} cut; {n_in} of them are "
                      f"in the set, chosen by {broken_by}", TiedScoresWarning, stacklevel=3)


@dataclass(frozen=True)
class NeuronSet:
    """Neurons of a model at one site, stored as sorted unique flat ids `layer * width + index`.

    `n_layers` and `width` (neurons per layer) fix the flat numbering, so two sets can only be
    combined when they describe the same site of the same model shape.
    """

    site: str
    n_layers: int
    width: int
    flat: Int[Tensor, "k"] = field(default_factory=lambda: torch.empty(0, dtype=torch.long))

    def __post_init__(self):
        check_site(self.site)
        if self.n_layers < 1 or self.width < 1:
            raise ValueError(f"n_layers and width must be >= 1, got {self.n_layers} and {self.width}")
        flat = torch.unique(torch.as_tensor(self.flat, dtype=torch.long).flatten().cpu())  # sorted
        if len(flat) and (flat[0] < 0 or flat[-1] >= self.n_layers * self.width):
            raise ValueError(
                f"neuron ids must lie in [0, {self.n_layers * self.width}) for {self.n_layers} layers × {self.width}"
            )
        object.__setattr__(self, "flat", flat)

    # construction -------------------------------------------------------------------------
    @classmethod
    def from_pairs(
        cls, site: str, n_layers: int, width: int, layers: Int[Tensor, "k"], indices: Int[Tensor, "k"]
    ) -> NeuronSet:
        layers, indices = torch.as_tensor(layers), torch.as_tensor(indices)
        if layers.shape != indices.shape:
            raise ValueError(f"layers and indices differ in length: {len(layers)} vs {len(indices)}")
        if len(layers) and (layers.min() < 0 or layers.max() >= n_layers):
            raise ValueError(f"layer out of range: expected 0..{n_layers - 1}")
        if len(indices) and (indices.min() < 0 or indices.max() >= width):
            raise ValueError(f"neuron index out of range: expected 0..{width - 1}")
        return cls(site, n_layers, width, layers.long() * width + indices.long())

    @classmethod
    def top_k(
        cls,
        site: str,
        scores: Float[Tensor, "layer neuron"],
        k: int,
        largest: bool = True,
        layers: Sequence[int] | None = None,
        n_layers: int | None = None,
        tiebreak: Float[Tensor, "layer neuron"] | None = None,
    ) -> NeuronSet:
        """The k highest- (or lowest-) scoring neurons of a per-layer score table.

        NaN scores are refused. Row r of `scores` is model layer `layers[r]` (default: row r is layer r) of a
        model with `n_layers` layers (default: the rows' largest layer + 1), so a table of some layers gives
        a set numbered by the model's layers. Equal scores are ordered by `tiebreak` (in the same direction:
        larger first for `largest`), then by lower layer and index; when equal scores straddle the cut a
        `TiedScoresWarning` says how many there are and what broke the tie.
        """
        if torch.isnan(scores).any() or (tiebreak is not None and torch.isnan(tiebreak).any()):
            raise ValueError("scores contain NaN: a NaN has no rank; drop or fill those neurons first")
        rows, width = scores.shape
        layers = list(range(rows)) if layers is None else [int(layer) for layer in layers]
        if len(layers) != rows:
            raise ValueError(f"layers names {len(layers)} model layers but scores have {rows} rows")
        n_layers = max(layers) + 1 if n_layers is None else n_layers
        if min(layers) < 0 or max(layers) >= n_layers:
            raise ValueError(f"layers {layers} are out of range for a model of {n_layers} layers")
        if not 1 <= k <= scores.numel():
            raise ValueError(f"k must be in 1..{scores.numel()} (the number of neurons), got {k}")
        sign = -1.0 if largest else 1.0
        flat_scores = scores.flatten().double()
        order = torch.arange(flat_scores.numel())
        if tiebreak is not None:  # stable sorts: the last key sorted is the first key of the order
            if tiebreak.shape != scores.shape:
                raise ValueError(f"tiebreak has shape {tuple(tiebreak.shape)}, scores {tuple(scores.shape)}")
            order = order[torch.sort(sign * tiebreak.flatten().double(), stable=True).indices]
        order = order[torch.sort(sign * flat_scores[order], stable=True).indices]
        _warn_on_ties(flat_scores, order, k, "the tiebreak key" if tiebreak is not None else "layer and index")
        order = order[:k]
        model_layer = torch.as_tensor(layers)[order // width]
        return cls(site, n_layers, width, model_layer * width + order % width)

    # views ----------------------------------------------------------------------------------
    @property
    def layers(self) -> Int[Tensor, "k"]:
        return self.flat // self.width

    @property
    def indices(self) -> Int[Tensor, "k"]:
        return self.flat % self.width

    def by_layer(self) -> dict[int, Int[Tensor, "_"]]:
        """{layer: neuron indices} for layers that contain at least one neuron."""
        layers, indices = self.layers, self.indices
        return {int(layer): indices[layers == layer] for layer in torch.unique(layers)}

    def layer_histogram(self) -> Int[Tensor, "layer"]:
        return torch.bincount(self.layers, minlength=self.n_layers)

    def mask(self) -> Tensor:
        """Boolean (layer, width) mask of the set."""
        m = torch.zeros(self.n_layers * self.width, dtype=torch.bool)
        m[self.flat] = True
        return m.view(self.n_layers, self.width)

    def __len__(self) -> int:
        return len(self.flat)

    def __iter__(self):
        return iter(zip(self.layers.tolist(), self.indices.tolist()))

    def __contains__(self, neuron) -> bool:
        layer, index = neuron
        return bool(torch.isin(torch.tensor(layer * self.width + index), self.flat))

    def __eq__(self, other) -> bool:
        return isinstance(other, NeuronSet) and self._shape == other._shape and torch.equal(self.flat, other.flat)

    def __hash__(self) -> int:
        return hash((self._shape, tuple(self.flat.tolist())))

    def __repr__(self) -> str:
        return f"NeuronSet(site={self.site!r}, {len(self)} neurons over {self.n_layers}×{self.width})"

    # set algebra ----------------------------------------------------------------------------
    @property
    def _shape(self) -> tuple[str, int, int]:
        return (self.site, self.n_layers, self.width)

    def _check_compatible(self, other: NeuronSet) -> None:
        if self._shape != other._shape:
            raise ValueError(f"cannot combine neuron sets of different sites/shapes: {self._shape} vs {other._shape}")

    def __or__(self, other: NeuronSet) -> NeuronSet:
        self._check_compatible(other)
        return NeuronSet(*self._shape, torch.cat([self.flat, other.flat]))

    def __and__(self, other: NeuronSet) -> NeuronSet:
        self._check_compatible(other)
        return NeuronSet(*self._shape, self.flat[torch.isin(self.flat, other.flat)])

    def __sub__(self, other: NeuronSet) -> NeuronSet:
        self._check_compatible(other)
        return NeuronSet(*self._shape, self.flat[~torch.isin(self.flat, other.flat)])

    # persistence ----------------------------------------------------------------------------
    def to_frame(self):
        """One row per neuron: site, layer, neuron (a pandas DataFrame)."""
        import pandas as pd

        return pd.DataFrame({"site": self.site, "layer": self.layers.tolist(), "neuron": self.indices.tolist()},
                            columns=["site", "layer", "neuron"])

    def to_dict(self) -> dict:
        return {
            "site": self.site,
            "n_layers": self.n_layers,
            "width": self.width,
            "neurons": [[layer, index] for layer, index in self],
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> NeuronSet:
        missing = [key for key in ("site", "n_layers", "width", "neurons") if key not in d]
        if missing:
            raise ValueError(f"not a saved NeuronSet: it lacks {missing} (it has {sorted(d)})")
        pairs = torch.tensor(d["neurons"], dtype=torch.long).reshape(-1, 2)
        return cls.from_pairs(d["site"], d["n_layers"], d["width"], pairs[:, 0], pairs[:, 1])

    def save(self, path: str | Path) -> None:
        atomic_write(path, json.dumps(self.to_dict()).encode())

    @classmethod
    def load(cls, path: str | Path) -> NeuronSet:
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except ValueError as err:  # JSONDecodeError and undecodable bytes
            raise ValueError(f"{path} is not a saved NeuronSet (JSON written by NeuronSet.save): {err}") from None
        if not isinstance(d, Mapping):
            raise ValueError(f"{path} is not a saved NeuronSet: it holds a {type(d).__name__}, not an object")
        try:
            return cls.from_dict(d)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None


def overlap_matrix(sets: Mapping[str, NeuronSet]) -> Int[Tensor, "row col"]:
    """|A ∩ B| for every pair of named sets (rows and columns in the mapping's order)."""
    names = list(sets)
    if not names:
        raise ValueError("overlap_matrix needs at least one neuron set")
    for n in names[1:]:
        sets[names[0]]._check_compatible(sets[n])
    masks = torch.stack([sets[n].mask().flatten() for n in names]).to(torch.int64)
    return masks @ masks.T
