"""What every analysis shares: how it reads activations (`Collection`), its parameters, its saved state.

An analysis is configured by plain parameters plus one `Collection` (site, layers, pooling, batch size,
truncation, BOS), fitted by `fit(model, data)` (which collects activations through the collection) or by
`fit_activations(...)` (activations collected elsewhere), and saved by `state_dict()` / rebuilt by
`from_state_dict(state)`: a dict of tensors and plain values that `torch.save(..., weights_only=True)`
accepts. An analysis never reads or writes files; a study hands it caches and checkpoints.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from jaxtyping import Float
from torch import Tensor

from lensneurons.core.activations import collect, pooled_activations
from lensneurons.core.results import load_state, save_state
from lensneurons.core.models import CausalModel

__all__ = ["Collection", "Analysis", "NotFittedError", "frame"]


@dataclass(frozen=True)
class Collection:
    """How activations are read: the hook site, which layers, how a text's tokens are pooled, how many texts
    run per forward pass, where texts are cut, whether BOS is pooled and whether an EOS token is appended."""

    site: str = "mlp"
    layers: int | Sequence[int] | None = None  # None: every layer (kept as a tuple)
    pooling: str = "mean"
    batch_size: int = 16  # texts per forward pass
    max_length: int | None = 256  # tokens kept per text (None: the model's context)
    include_bos: bool = True
    append_eos: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.layers, list):
            object.__setattr__(self, "layers", tuple(self.layers))
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 text, got {self.batch_size}")

    def _kwargs(self) -> dict[str, Any]:
        layers = list(self.layers) if isinstance(self.layers, tuple) else self.layers
        return dict(site=self.site, layers=layers, pooling=self.pooling, batch_size=self.batch_size,
                    max_length=self.max_length, include_bos=self.include_bos, append_eos=self.append_eos)

    def pooled(self, model: CausalModel, texts: Sequence[str], progress: bool = True,
               shard: tuple[int, int] | None = None) -> Float[Tensor, "text layer neuron"]:
        """Every text's pooled activations (text order kept)."""
        return pooled_activations(model, list(texts), progress=progress, shard=shard, **self._kwargs())

    def collect(self, model: CausalModel, texts: Sequence[str], reducers: Sequence, progress: bool = True,
                shard: tuple[int, int] | None = None) -> list:
        """Stream the pooled activations into `reducers` (see `lensneurons.core.activations.collect`)."""
        return collect(model, list(texts), reducers, progress=progress, shard=shard, **self._kwargs())

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["layers"] = list(self.layers) if isinstance(self.layers, tuple) else self.layers
        return d


class NotFittedError(RuntimeError):
    """An analysis was asked for results before it was fitted."""


class Analysis:
    """Base of the analyses. Subclasses list their constructor parameters (besides `collection`) in
    `params` and the fitted attributes their saved state holds in `fitted` (the first one marks a fitted
    object); the collection's fields are
    also readable (and settable) as attributes (`analysis.site`, `analysis.batch_size`, …)."""

    params: ClassVar[tuple[str, ...]] = ()
    fitted: ClassVar[tuple[str, ...]] = ()
    default_collection: ClassVar[Collection] = Collection()

    def _init_collection(self, collection: Collection | None, **fields: Any) -> None:
        """The collection given, or the class default; fields passed one by one (the older keyword
        arguments) override it."""
        base = collection if collection is not None else self.default_collection
        given = {k: v for k, v in fields.items() if v is not None}
        object.__setattr__(self, "collection", dataclasses.replace(base, **given))

    def __getattr__(self, name: str) -> Any:
        collection = self.__dict__.get("collection")
        if collection is not None and name in Collection.__dataclass_fields__:
            return getattr(collection, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in Collection.__dataclass_fields__ and "collection" in self.__dict__:
            object.__setattr__(self, "collection", dataclasses.replace(self.collection, **{name: value}))
        else:
            object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ parameters and state

    def get_params(self) -> dict[str, Any]:
        """The constructor's arguments as plain values, the collection as a dict."""
        return {**{name: _plain(getattr(self, name)) for name in self.params}, "collection": self.collection.to_dict()}

    def is_fitted(self) -> bool:
        """Whether the first of `fitted` exists (the others may be missing: e.g. a fit from precomputed
        scores has no activations)."""
        return bool(self.fitted) and self.fitted[0] in self.__dict__

    def _check_fitted(self) -> None:
        if not self.is_fitted():
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(model, data) first")

    def state_dict(self) -> dict[str, Any]:
        """The parameters and the fitted results (tensors and plain values; `torch.save`-able, weights_only)."""
        self._check_fitted()
        return {"kind": type(self).__name__, "params": self.get_params(),
                "fitted": {name: self.__dict__[name] for name in self.fitted if name in self.__dict__}}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]):
        """A fitted analysis rebuilt from `state_dict()`."""
        if state.get("kind") != cls.__name__:
            raise ValueError(f"this state is of a {state.get('kind')!r}, not a {cls.__name__}")
        params = dict(state["params"])
        collection = Collection(**params.pop("collection"))
        out = cls(**params, collection=collection)
        out._load_fitted(dict(state["fitted"]))
        return out

    def _load_fitted(self, fitted: dict[str, Any]) -> None:
        for name, value in fitted.items():
            setattr(self, name, value)

    def save(self, path: str | os.PathLike) -> None:
        """Write `state_dict()` to `path` (torch format, loadable with weights_only=True; written atomically)."""
        save_state(path, self.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike, *args: Any):
        """The analysis saved at `path` (extra arguments, e.g. the corpus, go to `from_state_dict`)."""
        return cls.from_state_dict(load_state(path), *args)

    def rows(self) -> list[dict[str, Any]]:
        """The fitted results as table rows (one dict a row); what `to_frame` and the study's CSV hold."""
        raise NotImplementedError

    def to_frame(self):
        """`rows()` as a pandas DataFrame."""
        self._check_fitted()
        return frame(self.rows())


def frame(rows: Sequence[dict]):
    """A pandas DataFrame of `rows` (pandas is imported only when a table is asked for)."""
    import pandas as pd

    return pd.DataFrame(list(rows))


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
