"""Helpers shared by the statistics and the reducers: column blocks, float64 moments, cheap checks."""
from typing import Optional

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor


def column_chunks(n_columns: int, chunk_size: int):
    for start in range(0, n_columns, chunk_size):
        yield start, min(start + chunk_size, n_columns)


# Elements in one temporary block of the chunked loops below (32 MiB in float64). On CPU,
# touching fresh large buffers (page faults) can cost more than the arithmetic itself, and
# blocks this small are reused by the allocator; much smaller blocks add per-call overhead.
BLOCK_ELEMENTS = 1 << 22


def moments(flat: Float[Tensor, "n column"]) -> tuple[Float[Tensor, "column"], Float[Tensor, "column"]]:
    """Mean and sum of squared deviations (M2) of each column, in float64 (two-pass)."""
    n, n_cols = flat.shape
    mean = torch.empty(n_cols, dtype=torch.float64, device=flat.device)
    m2 = torch.empty_like(mean)
    # sums over rows as matrix-vector products: several times faster than .sum(dim=0) on CPU
    ones = torch.ones(n, dtype=torch.float64, device=flat.device)
    for start, stop in column_chunks(n_cols, max(1, BLOCK_ELEMENTS // n)):
        block = flat[:, start:stop].to(torch.float64, copy=True)  # our copy: in-place steps are safe
        mean[start:stop] = (ones @ block) / n
        m2[start:stop] = ones @ block.sub_(mean[start:stop]).square_()
    return mean, m2



def numpy_view(t: Tensor) -> Optional[np.ndarray]:
    """A numpy view of a CPU tensor of a dtype numpy has (None otherwise): for small checks, where
    numpy's per-call cost is a fraction of torch's."""
    if t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64, torch.float16, torch.int64, torch.int32):
        return t.numpy()
    return None


def has_nan(x: Tensor) -> bool:
    a = numpy_view(x)
    return bool(np.isnan(a).any()) if a is not None else bool(torch.isnan(x).any())


def min_max(ids: Tensor) -> tuple[int, int]:
    a = numpy_view(ids)
    if a is not None:
        return int(a.min()), int(a.max())
    return int(ids.min()), int(ids.max())


def cpu(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.detach().cpu()


def check_kind(d: dict, kind: str) -> None:
    if d.get("kind") != kind:
        raise ValueError(f"state dict is for {d.get('kind')!r}, not {kind!r}")


def check_ids(ids: Tensor, n_rows: int) -> None:
    if ids.ndim != 1 or ids.shape[0] != n_rows:
        raise ValueError(f"ids has shape {tuple(ids.shape)} but x has {n_rows} rows")


def check_trailing(have: Optional[Tensor], new_shape: torch.Size, skip: int = 1) -> None:
    if have is not None and have.shape[skip:] != new_shape:
        raise ValueError(f"neuron shape {tuple(new_shape)} does not match earlier {tuple(have.shape[skip:])}")
