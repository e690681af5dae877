"""A results folder: its configuration, named cached stages, JSON/CSV tables and figures.

The contract every study follows: `ResultsFolder.claim(path, config)` saves the configuration first; a
rerun with the same configuration resumes the folder, one with another is refused with the fields that
differ. A stage (pooled activations, a selection, a checkpoint) is saved with the `fingerprint` of what it
was computed from and reused only when that fingerprint matches. Every file is written atomically: a
temporary file in the same folder, flushed to disk, then renamed over the target, so a reader (or a
resumed run) never sees half a file.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["ResultsFolder", "ConfigMismatchError", "TensorCache", "Checkpoint", "atomic_write", "fingerprint", "plain",
           "save_state", "load_state"]

CONFIG = "config.json"


class ConfigMismatchError(ValueError):
    """A results folder holds results of another configuration."""


PARTIAL = ".partial"  # suffix of the temporary file of a write in progress (one left by a killed run is stale)
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


def remove_partial_writes(folder: str | os.PathLike) -> int:
    """Delete the temporary files that killed writes left under `folder`; how many there were."""
    stale = [p for p in Path(folder).rglob(f".*{PARTIAL}") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a flushed temporary file in the same folder and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL)
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; results follow the umask like any other file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_state(path: str | os.PathLike, state: Any) -> Path:
    """`torch.save` a state dict (tensors and plain values) to `path`, atomically."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return atomic_write(path, buf.getvalue())


def load_state(path: str | os.PathLike) -> Any:
    """A state saved by `save_state`, read with `weights_only=True` (no code runs on load)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no saved state at {path}")
    return torch.load(path, weights_only=True)


def plain(obj: Any) -> Any:
    """JSON form of the values results hold: tensors as lists, sets/tuples/ranges as lists, paths as text."""
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, (tuple, range)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def _digestible(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        raw = t.view(torch.uint8) if t.dtype != torch.bool and t.numel() else t.to(torch.uint8)
        return {"tensor": hashlib.sha256(raw.numpy().tobytes()).hexdigest(), "shape": list(t.shape),
                "dtype": str(t.dtype)}
    return plain(obj)


def fingerprint(*parts: Any) -> str:
    """One hex digest of JSON-like parts (tensors by their bytes, shape and dtype; dataclasses by their fields).

    The one key scheme of cached stages: equal inputs give equal fingerprints across processes and runs.
    """
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=_digestible, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _as_config(config: Any) -> dict:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    return json.loads(json.dumps(config, default=plain))  # the form it takes on disk (tuples → lists, …)


def config_differences(have: Mapping, want: Mapping) -> list[str]:
    """'field: <there> there, <here> here' for every field the two configurations disagree on."""
    out = []
    for key in sorted(set(have) | set(want), key=lambda k: (k not in want, list(want).index(k) if k in want else 0)):
        if have.get(key, "<absent>") != want.get(key, "<absent>"):
            out.append(f"{key}: {have.get(key, '<absent>')!r} there, {want.get(key, '<absent>')!r} here")
    return out


class TensorCache:
    """Values keyed by fingerprint, one file each (`<key>.pt`, written atomically) in a folder.

    What analyses are handed for caching (any object with `get` and item assignment works, a dict too), so
    that an analysis itself never touches the disk."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def _file(self, key: str) -> Path:
        if not key.isalnum():
            raise ValueError(f"cache keys are fingerprints (letters and digits), got {key!r}")
        return self.path / f"{key}.pt"

    def get(self, key: str, default: Any = None) -> Any:
        p = self._file(key)
        return torch.load(p, weights_only=True) if p.exists() else default

    def __setitem__(self, key: str, value: Any) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        torch.save(value, buf)
        atomic_write(self._file(key), buf.getvalue())

    def __contains__(self, key: str) -> bool:
        return self._file(key).exists()

    def __len__(self) -> int:
        return len(list(self.path.glob("*.pt"))) if self.path.exists() else 0


class Checkpoint:
    """One resumable state in one file, for the work it was saved for (its fingerprint `key`).

    `save` replaces the file atomically after each finished part; `load` gives the state back only for
    the same key (None otherwise, or when there is none); `clear` removes it once the work is done."""

    def __init__(self, path: str | os.PathLike, key: str = ""):
        self.path, self.key = Path(path), key

    def load(self) -> Any:
        if not self.path.exists():
            return None
        saved = torch.load(self.path, weights_only=True)
        return saved["state"] if isinstance(saved, dict) and saved.get("fingerprint") == self.key else None

    def save(self, state: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        torch.save({"fingerprint": self.key, "state": state}, buf)
        atomic_write(self.path, buf.getvalue())

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


class ResultsFolder:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    @classmethod
    def claim(cls, path: str | os.PathLike, config: Any, model: Any = None) -> ResultsFolder:
        """The results folder of one configuration: checked (`config.check()` and, given the model,
        `config.check_model(model)`, where it has them) and saved first, resumed when equal, refused when not."""
        if hasattr(config, "check"):
            config.check()
        if model is not None and hasattr(config, "check_model"):
            config.check_model(model)
        want = _as_config(config)
        saved = Path(path) / CONFIG
        if saved.exists():
            have = json.loads(saved.read_text(encoding="utf-8"))
            if have != want:
                diff = "; ".join(config_differences(have, want))
                raise ConfigMismatchError(
                    f"{path} holds results of a different configuration ({diff}); choose another --out or delete it")
        folder = cls(path)
        remove_partial_writes(folder.path)  # one run per folder: any write in progress was killed
        if not saved.exists():
            folder.json(CONFIG, want)
        return folder

    # ------------------------------------------------------------------ stages

    def stage(self, name: str, key: str, compute: Callable[[], Any]) -> Any:
        """The value saved under `name` for fingerprint `key`, or `compute()` saved under it.

        `.pt` names hold tensors (torch.save), `.json` names JSON values; the key is stored beside the value.
        """
        saved = self.read_stage(name, key)
        if saved is not None:
            return saved
        value = compute()
        self.save_stage(name, key, value)
        return value

    def read_stage(self, name: str, key: str) -> Any:
        """The value saved under `name` if it was computed for fingerprint `key`, else None."""
        saved = self.read_tensor(name) if name.endswith(".pt") else self.read_json(name)
        if isinstance(saved, dict) and saved.get("fingerprint") == key:
            return saved["value"]
        return None

    def save_stage(self, name: str, key: str, value: Any) -> Path:
        record = {"fingerprint": key, "value": value}
        return self.tensor(name, record) if name.endswith(".pt") else self.json(name, record)

    def cache(self, name: str) -> TensorCache:
        """A subfolder of values keyed by fingerprint (e.g. one attribution per prompt)."""
        return TensorCache(self.path / name)

    def checkpoint(self, name: str, key: str) -> Checkpoint:
        """The checkpoint file `name` of the work with fingerprint `key`."""
        return Checkpoint(self.path / name, key)

    # ------------------------------------------------------------------ files

    def write_bytes(self, name: str, data: bytes) -> Path:
        return atomic_write(self.path / name, data)

    def json(self, name: str, obj: Any) -> Path:
        return self.write_bytes(name, json.dumps(obj, indent=2, ensure_ascii=False, default=plain).encode())

    def read_json(self, name: str, default: Any = None) -> Any:
        p = self.path / name
        return json.loads(p.read_text(encoding="utf-8")) if p.exists() else default

    def csv(self, name: str, rows: Sequence[Mapping]) -> Path:
        buf = io.StringIO()
        if rows:
            writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return self.write_bytes(name, buf.getvalue().encode())

    def tensor(self, name: str, obj: Any) -> Path:
        buf = io.BytesIO()
        torch.save(obj, buf)
        return self.write_bytes(name, buf.getvalue())

    def read_tensor(self, name: str) -> Any:
        p = self.path / name
        return torch.load(p, weights_only=True) if p.exists() else None

    def figure(self, name: str, fig) -> Path:
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120)
        plt.close(fig)
        return self.write_bytes(name, buf.getvalue())

    def text(self, name: str, text: str) -> Path:
        return self.write_bytes(name, text.encode())

    def remove(self, *names: str) -> None:
        for name in names:
            (self.path / name).unlink(missing_ok=True)
