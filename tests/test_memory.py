"""Freed memory goes back to the OS: measured in a child process, since the allocator setting is process-wide."""
import subprocess
import sys

import pytest

from lensneurons.core.memory import _libc, map_large_blocks

glibc = pytest.mark.skipif(_libc() is None, reason="needs glibc's malloc")

# Frees four touched 8 MiB blocks that sit below a later allocation (so the heap top cannot be trimmed)
# and prints how many MiB the resident set shrank by.
CHILD = r"""
import ctypes, sys
from lensneurons.core.memory import map_large_blocks, release_freed_memory
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
def touched(size):
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    return p
mode = sys.argv[1]
if mode == "map":
    assert map_large_blocks(4 << 20)
size = 8 << 20
libc.free(touched(size))  # a mapped block; freeing it makes glibc serve 8 MiB blocks from the heap later
blocks = [touched(size) for _ in range(4)]
pin = touched(1 << 20)
before = rss()
for p in blocks:
    libc.free(p)
if mode == "trim":
    assert release_freed_memory()
print((before - rss()) / 2**20)
"""


def freed_mib(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


@glibc
def test_glibc_keeps_freed_blocks_by_default():
    # the behaviour the two functions below exist for; if this fails, they are not needed here
    assert freed_mib("default") < 8


@glibc
def test_map_large_blocks_returns_freed_blocks_at_once():
    assert freed_mib("map") >= 31


@glibc
def test_release_freed_memory_returns_freed_heap_pages():
    assert freed_mib("trim") >= 31


def test_map_large_blocks_rejects_a_non_positive_threshold():
    with pytest.raises(ValueError, match="threshold_bytes"):
        map_large_blocks(0)


def test_a_tied_unembedding_shares_the_embedding_and_gives_the_same_logits():
    import torch

    from lensneurons.core.models import contiguous_linear_weights, tie_unembedding, toy_model

    torch.manual_seed(0)
    model = toy_model(n_layers=1, d_model=8, d_mlp=16, n_ctx=16)
    tokens = torch.tensor([[1, 5, 7, 2]])
    untied = model.unembed.W_U.data_ptr()
    tie_unembedding(model)  # a random W_U is not W_E.T: left alone
    assert model.unembed.W_U.data_ptr() == untied
    with torch.no_grad():
        model.unembed.W_U.copy_(model.embed.W_E.T)
    contiguous_linear_weights(model)
    before = model(tokens)
    tie_unembedding(model)
    assert model.unembed.W_U.data_ptr() == model.embed.W_E.data_ptr()  # one copy in memory
    assert torch.equal(model(tokens), before)  # the same values and layout: identical logits
