"""Mergeable streaming reducers: `MeanVar`, `WelchT`, `Stack` (and the `Reducer` protocol all of them follow)."""
import functools
from typing import Any, Optional, Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from lensneurons.core.stats._common import check_ids, check_kind, check_trailing, cpu, moments
from lensneurons.core.stats.scores import welch_t_from_moments


@runtime_checkable
class Reducer(Protocol):
    """What `collect` feeds: batches of rows (one per text) with the texts' ids.

    `merge` combines two reducers of disjoint texts exactly (sharded runs equal one pass);
    `state_dict()` holds only CPU tensors and plain values and `from_state_dict` rebuilds the reducer."""

    def update(self, x: Tensor, ids: Tensor) -> "Reducer": ...

    def merge(self, other: "Reducer") -> "Reducer": ...

    def state_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> "Reducer": ...


class MeanVar:
    """Running count, mean and sum of squared deviations (M2) per element, in float64.

    Batches and shards combine with Chan et al.'s parallel formula, so any split of the rows
    gives the single-pass result up to float64 rounding.
    """

    def __init__(self) -> None:
        self._count = 0
        self._mean: Optional[Tensor] = None
        self._m2: Optional[Tensor] = None

    def _combine(self, count: int, mean: Tensor, m2: Tensor) -> None:
        if self._mean is None:
            self._count, self._mean, self._m2 = count, mean, m2
            return
        check_trailing(self._mean, mean.shape, skip=0)
        mean, m2 = mean.to(self._mean.device), m2.to(self._mean.device)
        total = self._count + count
        delta = mean - self._mean
        self._mean = self._mean + delta * (count / total)
        self._m2 = self._m2 + m2 + delta.square() * (self._count * count / total)
        self._count = total

    def update(self, x: Float[Tensor, "batch *neuron"], ids: Optional[Int[Tensor, "batch"]] = None) -> "MeanVar":
        """Add a batch of rows. `ids` is ignored: it lets every reducer be fed `update(x, ids)`."""
        if x.ndim < 1:
            raise ValueError("x must have a batch dimension, got a 0-D tensor")
        if x.shape[0] == 0:
            check_trailing(self._mean, x.shape[1:], skip=0)
            return self
        x = x.detach()
        if self._mean is not None:
            x = x.to(self._mean.device)
        mean, m2 = moments(x.reshape(x.shape[0], -1))
        self._combine(x.shape[0], mean.reshape(x.shape[1:]), m2.reshape(x.shape[1:]))
        return self

    def merge(self, other: "MeanVar") -> "MeanVar":
        """Fold another MeanVar's rows into this one."""
        if other._mean is not None:
            self._combine(other._count, other._mean, other._m2)
        return self

    @property
    def count(self) -> int:
        """Number of rows seen."""
        return self._count

    @property
    def mean(self) -> Float[Tensor, "*neuron"]:
        """Mean per element (float64)."""
        if self._mean is None:
            raise ValueError("MeanVar has seen no rows: mean is undefined")
        return self._mean

    @property
    def var(self) -> Float[Tensor, "*neuron"]:
        """Sample variance per element (ddof=1, float64)."""
        if self._count < 2:
            raise ValueError(f"variance (ddof=1) needs at least 2 rows, MeanVar has seen {self._count}")
        return self._m2 / (self._count - 1)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "MeanVar", "count": self._count, "mean": cpu(self._mean), "m2": cpu(self._m2)}

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> "MeanVar":
        check_kind(d, "MeanVar")
        out = cls()
        out._count, out._mean, out._m2 = int(d["count"]), d["mean"], d["m2"]
        return out


class WelchT:
    """Streaming Welch's t: rows go to `pos` or `neg` by `labels[ids]`.

    `labels` covers every text up front; `t` equals `welch_t` on all rows. Duplicate ids are
    not detected.
    """

    def __init__(self, labels: Bool[Tensor, "text"]) -> None:
        if labels.dtype != torch.bool:
            raise ValueError(f"labels must be a bool tensor, got {labels.dtype}")
        self.labels = labels.detach()
        self.pos = MeanVar()
        self.neg = MeanVar()

    def update(self, x: Float[Tensor, "batch *neuron"], ids: Int[Tensor, "batch"]) -> "WelchT":
        """Add rows `x` for texts `ids`."""
        check_ids(ids, x.shape[0])
        n = self.labels.shape[0]
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= n):
            raise ValueError(f"ids must lie in [0, {n}), got range [{int(ids.min())}, {int(ids.max())}]")
        if self.labels.device != x.device:
            self.labels = self.labels.to(x.device)
        is_pos = self.labels[ids.to(x.device)]
        self.pos.update(x[is_pos])
        self.neg.update(x[~is_pos])
        return self

    def merge(self, other: "WelchT") -> "WelchT":
        """Fold another WelchT (built with the same labels) into this one."""
        if not torch.equal(self.labels.cpu(), other.labels.cpu()):
            raise ValueError("cannot merge WelchT reducers built with different labels")
        self.pos.merge(other.pos)
        self.neg.merge(other.neg)
        return self

    @property
    def t(self) -> Float[Tensor, "*neuron"]:
        """Welch's t of positive rows against negative rows (float64)."""
        p, q = self.pos, self.neg
        if p.count < 2 or q.count < 2:
            raise ValueError(
                f"Welch's t needs at least 2 rows per group, got {p.count} positive and {q.count} negative"
            )
        return welch_t_from_moments(p.mean, p.var, p.count, q.mean, q.var, q.count)

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "WelchT",
            "labels": cpu(self.labels),
            "pos": self.pos.state_dict(),
            "neg": self.neg.state_dict(),
        }

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> "WelchT":
        check_kind(d, "WelchT")
        out = cls(d["labels"])
        out.pos = MeanVar.from_state_dict(d["pos"])
        out.neg = MeanVar.from_state_dict(d["neg"])
        return out


class Stack:
    """Keeps every row with its text id; `values` gives them ordered by id.

    Shards merged in any order therefore give exactly the single-pass matrix. Duplicate ids
    raise ValueError at merge and when results are read.
    """

    def __init__(self) -> None:
        self._values: list[Tensor] = []
        self._ids: list[Tensor] = []
        self._sorted = False  # True when the state is one chunk, ordered by id and checked

    def update(self, x: Float[Tensor, "batch *neuron"], ids: Int[Tensor, "batch"]) -> "Stack":
        """Add rows `x` for texts `ids`."""
        check_ids(ids, x.shape[0])
        device = x.device
        if self._values:
            check_trailing(self._values[0], x.shape[1:])
            device = self._values[0].device
        # a copy: the caller may reuse its buffer, and a view would keep its whole base alive
        self._values.append(x.detach().to(device, copy=True))
        self._ids.append(ids.detach().to(device=device, dtype=torch.int64))
        self._sorted = False
        return self

    def _consolidate(self) -> None:
        if not self._values:
            raise ValueError("Stack has seen no rows")
        if self._sorted:
            return
        ids = torch.cat(self._ids) if len(self._ids) > 1 else self._ids[0]
        if len(self._values) == 1 and (ids.numel() <= 1 or bool((ids[1:] > ids[:-1]).all())):
            values = self._values[0]  # one chunk in order (and so without duplicates)
        else:
            order = torch.argsort(ids)
            ids = ids[order]
            dup = ids[1:] == ids[:-1]
            if dup.any():
                raise ValueError(f"duplicate text id {int(ids[1:][dup][0])} in Stack")
            # Each batch's rows go straight to their places and the batch is freed at once, so the
            # rows are held about once, not twice as with a concatenation. Newest batches first: they
            # sit at the top of the heap, where freed memory goes back to the OS.
            dest = torch.empty_like(order)
            dest[order] = torch.arange(len(order), device=order.device)
            dtype = functools.reduce(torch.promote_types, (v.dtype for v in self._values))
            values = torch.empty((len(ids), *self._values[0].shape[1:]), dtype=dtype, device=ids.device)
            end = len(ids)
            while self._values:
                batch = self._values.pop()
                values.index_copy_(0, dest[end - len(batch) : end], batch.to(dtype))
                end -= len(batch)
                del batch
        self._values, self._ids, self._sorted = [values], [ids], True

    def merge(self, other: "Stack") -> "Stack":
        """Fold another Stack's rows into this one."""
        for x, ids in zip(other._values, other._ids):
            self.update(x, ids)
        if self._values:
            self._consolidate()
        return self

    @property
    def values(self) -> Float[Tensor, "text *neuron"]:
        """All rows, ordered by id."""
        self._consolidate()
        return self._values[0]

    @property
    def ids(self) -> Int[Tensor, "text"]:
        """Ids of the rows of `values`, ascending."""
        self._consolidate()
        return self._ids[0]

    def state_dict(self) -> dict[str, Any]:
        if not self._values:
            return {"kind": "Stack", "values": None, "ids": None}
        return {"kind": "Stack", "values": cpu(self.values), "ids": cpu(self.ids)}

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> "Stack":
        check_kind(d, "Stack")
        out = cls()
        if d["values"] is not None:
            out.update(d["values"], d["ids"])
        return out

