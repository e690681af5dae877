"""A results folder: config, JSON/CSV tables and figures, each written atomically (never half-written)."""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch


class ResultsFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def _write_bytes(self, name: str, data: bytes) -> Path:
        target = self.path / name
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def json(self, name: str, obj) -> Path:
        return self._write_bytes(name, json.dumps(obj, indent=2, ensure_ascii=False, default=_plain).encode())

    def read_json(self, name: str, default=None):
        p = self.path / name
        return json.loads(p.read_text()) if p.exists() else default

    def csv(self, name: str, rows: Sequence[Mapping]) -> Path:
        buf = io.StringIO()
        if rows:
            writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return self._write_bytes(name, buf.getvalue().encode())

    def tensor(self, name: str, obj) -> Path:
        buf = io.BytesIO()
        torch.save(obj, buf)
        return self._write_bytes(name, buf.getvalue())

    def read_tensor(self, name: str):
        p = self.path / name
        return torch.load(p, weights_only=True) if p.exists() else None

    def figure(self, name: str, fig) -> Path:
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120)
        plt.close(fig)
        return self._write_bytes(name, buf.getvalue())

    def text(self, name: str, text: str) -> Path:
        return self._write_bytes(name, text.encode())


def _plain(obj):
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, (set, tuple, range)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
