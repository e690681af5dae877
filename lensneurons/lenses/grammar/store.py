"""A disk-backed activation store: one fp16 file per chunk (e.g. per task), written once and reused.

    store = ActivationStore(path, config={"model": ..., "layers": [...]})
    for task in tasks:
        if not store.has(task):
            store.write(task, acts, labels, groups)
    store.mark_complete(tasks)
    ...
    acts, labels, groups = store.read("passive_1")

Every chunk file is written to a temporary name and renamed into place, so a chunk is either absent
or whole. ``COMPLETE`` is written last and lists the chunks; a store interrupted before that is
resumable (finished chunks are kept) but never reported complete. A store made with a different
``config`` is refused rather than mixed.
"""
from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from lensneurons.core.results import atomic_write

__all__ = ["ActivationStore"]

_KEY = re.compile(r"^[A-Za-z0-9_.\-]+$")
_CONFIG = "config.json"
_COMPLETE = "COMPLETE"


class ActivationStore:
    """Chunks of (activations ``text layer neuron``, labels, groups) under one folder, stored as fp16."""

    def __init__(self, path: str | os.PathLike, config: dict | None = None, dtype: torch.dtype = torch.float16):
        self.path = Path(path)
        self.dtype = dtype
        self.path.mkdir(parents=True, exist_ok=True)
        config = json.loads(json.dumps(config or {}, sort_keys=True, default=str))
        existing = self.path / _CONFIG
        if existing.exists():
            have = json.loads(existing.read_text(encoding="utf-8"))
            if have != config:
                raise ValueError(
                    f"activation store {self.path} was written with a different configuration "
                    f"({have}); use another folder or delete it (requested {config})"
                )
        else:
            atomic_write(existing, json.dumps(config, sort_keys=True).encode())
        self.config = config

    def _file(self, key: str) -> Path:
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(f"store key must be a non-empty name of letters, digits, '_', '-', '.'; got {key!r}")
        return self.path / f"{key}.pt"

    def has(self, key: str) -> bool:
        return self._file(key).exists()

    def keys(self) -> list[str]:
        """Chunks written so far (complete or not), sorted."""
        return sorted(p.stem for p in self.path.glob("*.pt"))

    def write(
        self,
        key: str,
        acts: Float[Tensor, "text layer neuron"],
        labels: Bool[Tensor, "text"],
        groups: Int[Tensor, "text"],
    ) -> Path:
        """Write one chunk atomically. ``groups`` ties texts together (e.g. the two sentences of a pair)."""
        if self.is_complete():
            raise ValueError(f"activation store {self.path} is complete; it is written once and not changed")
        buf = io.BytesIO()
        torch.save(
            {"acts": acts.detach().to("cpu", self.dtype).contiguous(), "labels": labels.cpu(), "groups": groups.cpu()},
            buf,
        )
        target = self._file(key)
        atomic_write(target, buf.getvalue())
        return target

    def read(self, key: str) -> tuple[Float[Tensor, "text layer neuron"], Bool[Tensor, "text"], Int[Tensor, "text"]]:
        """One chunk: activations as float32, labels, groups."""
        path = self._file(key)
        if not path.exists():
            raise KeyError(f"no chunk {key!r} in activation store {self.path}; it has {self.keys()}")
        d = torch.load(path, weights_only=True, mmap=True)
        return d["acts"].float(), d["labels"], d["groups"]

    def mark_complete(self, keys: Sequence[str]) -> None:
        """Declare the store finished; every key must have been written."""
        keys = list(keys)
        missing = [k for k in keys if not self.has(k)]
        if missing:
            raise ValueError(f"cannot mark activation store complete: chunks {missing} are not written")
        atomic_write(self.path / _COMPLETE, json.dumps({"keys": keys}).encode())

    def is_complete(self, keys: Sequence[str] | None = None) -> bool:
        """True once ``mark_complete`` ran (and, if ``keys`` is given, for exactly these keys)."""
        marker = self.path / _COMPLETE
        if not marker.exists():
            return False
        have = json.loads(marker.read_text(encoding="utf-8"))["keys"]
        if keys is not None and sorted(have) != sorted(keys):
            return False
        return all(self.has(k) for k in have)

    def complete_keys(self) -> list[str]:
        """The keys of a complete store, in the order given to ``mark_complete``."""
        if not self.is_complete():
            raise ValueError(f"activation store {self.path} is not complete (interrupted or still being written)")
        return json.loads((self.path / _COMPLETE).read_text(encoding="utf-8"))["keys"]

    def as_mapping(self, keys: Sequence[str]) -> Mapping[str, tuple[Tensor, Tensor, Tensor]]:
        """A read-only mapping key -> (activations, labels, groups) that reads each chunk when it is asked for."""
        return _Chunks(self, list(keys))

    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.glob("*.pt"))


class _Chunks(Mapping):
    def __init__(self, store: ActivationStore, keys: list[str]):
        self.store, self.keys_ = store, keys

    def __getitem__(self, key: str) -> tuple[Tensor, Tensor, Tensor]:
        if key not in self.keys_:
            raise KeyError(key)
        return self.store.read(key)

    def __iter__(self):
        return iter(self.keys_)

    def __len__(self) -> int:
        return len(self.keys_)
