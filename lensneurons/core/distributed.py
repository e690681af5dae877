"""Merging reducer states across `torchrun` ranks (torch.distributed; gloo on CPU, nccl on GPU)."""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    return dist.get_world_size() if is_active() else 1


def init_from_env(backend: str | None = None) -> None:
    """Join the process group that `torchrun` describes in the environment (no-op when already joined)."""
    if is_active():
        return
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    if backend == "nccl":
        torch.cuda.set_device(dist.get_rank() % torch.cuda.device_count())


def merge_across_ranks(reducer):
    """Gather every rank's reducer state and merge them in rank order; every rank gets the result."""
    states = [None] * world_size()
    dist.all_gather_object(states, _to_cpu(reducer.state_dict()))
    merged = type(reducer).from_state_dict(states[0])
    for state in states[1:]:
        merged.merge(type(reducer).from_state_dict(state))
    return merged


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
