"""`TopK`: per element, the k best values seen and the ids of their texts, in one streaming pass."""
from typing import Any, Optional

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from lensneurons.core.stats import _common
from lensneurons.core.stats._common import (
    check_ids,
    check_kind,
    column_chunks,
    cpu,
    has_nan,
    min_max,
)


class TopK:
    """Per element, the k largest (or smallest) values seen and the ids of their texts.

    Order is by value, best first, then by smaller id: a strict order when ids are unique,
    so brute force, any batch order and any merge of shards give identical values and ids.
    Ids must lie in [0, 2**32); duplicate ids are not detected. Values are kept in float32
    (float64 when the first update is float64) and returned in the first update's dtype.
    """

    # Rows selected at once: batches are pooled into a block of at least k and _BLOCK rows, up to
    # _MAX_BLOCK when the elements are few (at most _BLOCK_VALUES values), since each block re-ranks the state.
    _BLOCK = 512
    _MAX_BLOCK = 8192
    _BLOCK_VALUES = 1 << 22
    _NUMPY_ON_CPU = True  # pack contenders with numpy on CPU (tests turn it off to run the torch path)

    def __init__(self, k: int, largest: bool = True) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self.largest = largest
        # the best so far, (n_elements, m) with m <= k, best first along dim 1
        self._values: Optional[Tensor] = None
        self._ids: Optional[Tensor] = None
        self._shape: Optional[torch.Size] = None  # neuron shape
        self._dtype: Optional[torch.dtype] = None  # dtype of the first update
        self._device: Optional[torch.device] = None
        self._ordered = True  # whether the state is best first; between flushes it need not be
        # rows not yet selected are copied into one preallocated block (the caller may reuse its buffer)
        self._pending: Optional[Tensor] = None  # (block rows, n_elements)
        self._pending_ids: Optional[Tensor] = None
        self._n_pending = 0

    # The state must hold normal tensors, not inference tensors: it is sorted in place when read, often after
    # the inference_mode of the stream that filled it has ended (which may have selected its last block).
    @torch.inference_mode(False)
    def _select(self, rows: Tensor, ids: Tensor) -> None:
        """Keep the best k of the state and the candidate `rows` (c, n_elements), whose ids
        are `ids`: (c,) shared by all elements, or (c, n_elements)."""
        if self._values is not None and self._values.shape[1] == self.k:
            rows, ids = self._contenders(rows, ids)
            if rows.shape[0] == 0:
                return
        c, n_elements = rows.shape
        m = 0 if self._values is None else self._values.shape[1]
        k = min(self.k, m + c)
        best_values = torch.empty(n_elements, k, dtype=rows.dtype, device=rows.device)
        best_ids = torch.empty(n_elements, k, dtype=torch.int64, device=rows.device)
        for start, stop in column_chunks(n_elements, max(1, _common.BLOCK_ELEMENTS // (m + c))):
            cand = torch.empty(stop - start, m + c, dtype=rows.dtype, device=rows.device)
            # transposing a compact copy is much faster than transposing the strided slice
            cand[:, m:] = rows[:, start:stop].contiguous().T
            new_ids = ids if ids.ndim == 1 else ids[:, start:stop].T
            old_ids = None
            if m:
                cand[:, :m] = self._values[start:stop]
                old_ids = self._ids[start:stop]
            best_values[start:stop], best_ids[start:stop] = self._best(cand, old_ids, new_ids, k, ordered=False)
        self._values, self._ids, self._ordered = best_values, best_ids, False

    @torch.inference_mode(False)
    def _order(self) -> None:
        """Sort the state best first (it is kept unsorted between flushes: selecting the k best without
        ordering them is several times cheaper at large k)."""
        if self._ordered or self._values is None:
            return
        n_elements, m = self._values.shape
        for start, stop in column_chunks(n_elements, max(1, _common.BLOCK_ELEMENTS // m)):
            ids = self._ids[start:stop]
            self._values[start:stop], self._ids[start:stop] = self._best(
                self._values[start:stop].clone(), ids, ids[:, :0], m, ordered=True)
        self._ordered = True

    def _contenders(self, rows: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
        """Only the candidates that can still enter a full state: per element, those at least as good as
        its k-th best (equal ones too, their id decides), packed to the top of a (c', n_elements) block
        with per-element ids. The rest of the block is padding with the worst value: an element gets
        padding only if some of its rows fall below its k-th best, so that value beats the padding and
        no padding enters. After the first few blocks few values qualify, so ranking them is much
        cheaper than ranking every row; while more than half of a block qualifies it is returned as is."""
        kth = self._values.amin(1) if self.largest else self._values.amax(1)  # the state is unsorted
        if self._NUMPY_ON_CPU and rows.device.type == "cpu":
            return self._contenders_numpy(rows, ids, kth)
        fits = rows >= kth if self.largest else rows <= kth  # (c, n_elements)
        count = fits.sum(0)
        width = int(count.max())
        if 2 * width > rows.shape[0]:  # packing would save little: rank the block as it is
            return rows, ids
        n_elements = rows.shape[1]
        pad_value = float("-inf") if self.largest else float("inf")
        values = torch.full((width, n_elements), pad_value, dtype=rows.dtype, device=rows.device)
        new_ids = torch.full((width, n_elements), 2**32 - 1, dtype=torch.int64, device=rows.device)
        if width:
            element, row = torch.nonzero(fits.T, as_tuple=True)  # grouped by element, rows ascending
            slot = torch.arange(len(element), device=rows.device) - (count.cumsum(0) - count)[element]
            values[slot, element] = rows[row, element]
            new_ids[slot, element] = ids[row] if ids.ndim == 1 else ids[row, element]
        return values, new_ids

    def _contenders_numpy(self, rows: Tensor, ids: Tensor, kth: Tensor) -> tuple[Tensor, Tensor]:
        """`_contenders` on CPU: numpy's comparison and flat nonzero are several times faster here than
        torch's, which matters at small k, where this packing is most of the cost of a block."""
        r, threshold = rows.numpy(), kth.numpy()
        c, n_elements = r.shape
        fits = r >= threshold if self.largest else r <= threshold
        row, element = np.divmod(np.flatnonzero(fits), n_elements)  # ascending rows within each element
        count = np.bincount(element, minlength=n_elements)
        width = int(count.max()) if len(element) else 0
        if 2 * width > c:
            return rows, ids
        order = np.argsort(element, kind="stable")  # grouped by element, rows still ascending
        row, element = row[order], element[order]
        slot = np.arange(len(element)) - (np.cumsum(count) - count)[element]
        values = np.full((width, n_elements), -np.inf if self.largest else np.inf, dtype=r.dtype)
        new_ids = np.full((width, n_elements), 2**32 - 1, dtype=np.int64)
        values[slot, element] = r[row, element]
        new_ids[slot, element] = ids.numpy()[row] if ids.ndim == 1 else ids.numpy()[row, element]
        return torch.from_numpy(values), torch.from_numpy(new_ids)

    def _best(
        self, cand: Tensor, old_ids: Optional[Tensor], new_ids: Tensor, k: int, ordered: bool = True
    ) -> tuple[Tensor, Tensor]:
        """The k best of `cand` (rows, m + c) and their ids, best first if `ordered` (else in any
        order); the first m columns are the kept ones, with ids `old_ids` (rows, m), the rest have
        ids `new_ids`."""
        m = 0 if old_ids is None else old_ids.shape[1]
        if cand.dtype == torch.float32:
            # One int64 key per candidate, ascending = best first then smaller id, so that
            # a single topk replaces a two-key sort: an int32 that orders like the float
            # in the high half, the id in the low half. In-place steps avoid fresh buffers.
            cand.add_(0.0)  # turns -0.0 into 0.0, which it equals
            bits = cand.view(torch.int32)
            key32 = bits >> 31
            key32 &= 0x7FFFFFFF
            key32 ^= bits
            if self.largest:
                key32.bitwise_not_()
            key = key32.long()
            del key32
            key <<= 32
            key[:, m:] |= new_ids
            if m:
                key[:, :m] |= old_ids
            best, order = key.topk(k, dim=1, largest=False, sorted=ordered)
            return cand.gather(1, order), best & 0xFFFFFFFF
        # float64 leaves no room for the id in 64 bits: two stable sorts, by id then by value
        cand_ids = torch.empty(cand.shape, dtype=torch.int64, device=cand.device)
        cand_ids[:, m:] = new_ids
        if m:
            cand_ids[:, :m] = old_ids
        order = torch.sort(cand_ids, dim=1, stable=True).indices
        cand, cand_ids = cand.gather(1, order), cand_ids.gather(1, order)
        order = torch.sort(cand, dim=1, descending=self.largest, stable=True).indices[:, :k]
        return cand.gather(1, order), cand_ids.gather(1, order)

    def _flush(self, release: bool = False) -> None:
        """Select the pending rows. `release` also frees the block (at k = 10,000 over 11,520 neurons
        it is 461 MB); readers release it, and an update after a read allocates a fresh one."""
        if self._n_pending:
            rows, ids = self._pending[: self._n_pending], self._pending_ids[: self._n_pending]
            self._n_pending = 0
            self._select(rows, ids)
        if release:
            self._pending = self._pending_ids = None

    def update(self, x: Float[Tensor, "batch *neuron"], ids: Int[Tensor, "batch"]) -> "TopK":
        """Add rows `x` for texts `ids`."""
        if x.ndim < 1:
            raise ValueError("x must have a batch dimension, got a 0-D tensor")
        check_ids(ids, x.shape[0])
        if self._shape is not None and x.shape[1:] != self._shape:
            raise ValueError(f"neuron shape {tuple(x.shape[1:])} does not match earlier {tuple(self._shape)}")
        if x.shape[0] == 0:
            return self
        x, ids = x.detach(), ids.detach()
        low, high = min_max(ids)
        if low < 0 or high >= 2**32:
            raise ValueError(f"ids must lie in [0, 2**32), got range [{low}, {high}]")
        if has_nan(x):
            raise ValueError("x contains NaN: TopK needs every value to be comparable")
        if self._dtype is None:
            self._shape, self._dtype, self._device = x.shape[1:], x.dtype, x.device
        if self._pending is None:
            # float32 holds float16/bfloat16 exactly, so selection on it is exact
            work = torch.float64 if self._dtype == torch.float64 else torch.float32
            n_elements = self._shape.numel()
            n_rows = max(self.k, self._BLOCK, min(self._MAX_BLOCK, self._BLOCK_VALUES // max(n_elements, 1)))
            with torch.inference_mode(False):  # a normal tensor, so that it can be filled outside inference mode too
                self._pending = torch.empty(n_rows, n_elements, dtype=work, device=self._device)
                self._pending_ids = torch.empty(n_rows, dtype=torch.int64, device=self._device)
        rows = x.reshape(x.shape[0], -1)
        done = 0
        while done < rows.shape[0]:
            take = min(rows.shape[0] - done, self._pending.shape[0] - self._n_pending)
            self._pending[self._n_pending : self._n_pending + take].copy_(rows[done : done + take])
            self._pending_ids[self._n_pending : self._n_pending + take].copy_(ids[done : done + take])
            self._n_pending += take
            done += take
            if self._n_pending == self._pending.shape[0]:
                self._flush()
        return self

    def merge(self, other: "TopK") -> "TopK":
        """Fold another TopK (same k and direction) into this one."""
        if (other.k, other.largest) != (self.k, self.largest):
            raise ValueError(
                f"cannot merge TopK(k={other.k}, largest={other.largest}) into TopK(k={self.k}, largest={self.largest})"
            )
        other._flush(release=True)
        if other._values is None:
            return self
        if self._shape is not None and other._shape != self._shape:
            raise ValueError(f"neuron shape {tuple(other._shape)} does not match {tuple(self._shape)}")
        if self._dtype is None:
            self._shape, self._dtype, self._device = other._shape, other._dtype, other._device
        self._flush(release=True)
        work = self._values.dtype if self._values is not None else other._values.dtype
        self._select(other._values.to(self._device, work).T, other._ids.to(self._device).T)
        return self

    def _result(self, t: Optional[Tensor], dtype: Optional[torch.dtype]) -> Tensor:
        if t is None:
            raise ValueError("TopK has seen no rows")
        return t.T.reshape(t.shape[1], *self._shape).to(dtype)

    @property
    def values(self) -> Float[Tensor, "k *neuron"]:
        """The best values per element, best first (fewer than k rows if fewer were seen)."""
        self._flush(release=True)
        self._order()
        return self._result(self._values, self._dtype)

    @property
    def ids(self) -> Int[Tensor, "k *neuron"]:
        """Text ids of `values`."""
        self._flush(release=True)
        self._order()
        return self._result(self._ids, torch.int64)

    def state_dict(self) -> dict[str, Any]:
        self._flush(release=True)
        self._order()
        return {
            "kind": "TopK",
            "k": self.k,
            "largest": self.largest,
            "shape": None if self._shape is None else list(self._shape),
            "dtype": None if self._dtype is None else str(self._dtype).removeprefix("torch."),
            "values": cpu(self._values),
            "ids": cpu(self._ids),
        }

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> "TopK":
        check_kind(d, "TopK")
        out = cls(int(d["k"]), bool(d["largest"]))
        if d["values"] is not None:
            out._shape = torch.Size(d["shape"])
            out._dtype = getattr(torch, d["dtype"])
            out._values, out._ids = d["values"], d["ids"]
            out._device = out._values.device
        return out
