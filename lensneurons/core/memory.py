"""Handing freed memory back to the operating system (glibc only; no-ops elsewhere).

glibc keeps freed heap memory for reuse, and every thread that allocates gets its own arena that keeps
its own. For a process that must stay under a memory limit this cached memory counts as resident.
"""
from __future__ import annotations

import ctypes
import gc

_M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018  (both exist on glibc only)
        return libc
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> bool:
    """Collect garbage and return freed heap pages of every arena to the OS; True when glibc did it."""
    gc.collect()
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def map_large_blocks(threshold_bytes: int = 4 * 1024 * 1024) -> bool:
    """Serve every allocation of at least ``threshold_bytes`` by its own mapping, unmapped when freed.

    By default glibc raises this threshold (up to 32 MiB) each time a mapped block is freed, after which
    blocks of that size come from the arenas and stay cached there when freed — in each worker thread's
    own arena. Fixing the threshold keeps that memory from accumulating. Process-wide and permanent;
    True when glibc accepted it.
    """
    if threshold_bytes <= 0:
        raise ValueError(f"threshold_bytes must be positive, got {threshold_bytes}")
    libc = _libc()
    return libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, int(threshold_bytes)) == 1
