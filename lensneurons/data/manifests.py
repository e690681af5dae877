"""Dataset manifests: where each dataset comes from, its license, and how to find and verify it.

One JSON file per dataset lives in the repository's ``data_manifests/`` folder (override with
``$LENSNEURONS_MANIFEST_DIR``). A manifest records the source repository and commit, the license, a
citation, the Hugging Face hub id to use when no local copy exists, the dataset's folder relative to the
data directory, and the sha256 (and line or byte count) of every local file.

The data themselves are never part of the repository: :func:`resolve` finds them under ``data_dir`` or
``$LENSNEURONS_DATA_DIR`` and checks every listed file against its sha256 (hashed once per process per
file, memoised by path, size and mtime).
"""
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

DATA_DIR_ENV = "LENSNEURONS_DATA_DIR"
MANIFEST_DIR_ENV = "LENSNEURONS_MANIFEST_DIR"

PathLike = Union[str, os.PathLike]

__all__ = [
    "DATA_DIR_ENV",
    "MANIFEST_DIR_ENV",
    "DatasetChecksumError",
    "DatasetNotFoundError",
    "FileEntry",
    "Manifest",
    "find_data_dir",
    "list_datasets",
    "load_from_hub",
    "load_manifest",
    "manifest_dir",
    "resolve",
    "sha256_file",
]


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's local files (or its hub copy) could not be found.

    The message says which dataset, where it was looked for, the environment variable to set, the hub id
    to use instead and the license.
    """

    def __init__(self, message: str, *, dataset: str = "", path: Optional[str] = None,
                 hub_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.dataset = dataset
        self.path = path
        self.hub_id = hub_id

    def __str__(self) -> str:  # FileNotFoundError would otherwise format (errno, strerror)
        return str(self.args[0]) if self.args else ""


class DatasetChecksumError(ValueError):
    """A local file's sha256 differs from the one recorded in its manifest."""

    def __init__(self, message: str, *, dataset: str = "", path: str = "", expected: str = "",
                 actual: str = "") -> None:
        super().__init__(message)
        self.dataset = dataset
        self.path = path
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class FileEntry:
    """One local file of a dataset: its sha256 and, where recorded, line / byte / item counts."""

    sha256: Optional[str] = None
    lines: Optional[int] = None
    bytes: Optional[int] = None
    items: Optional[int] = None


@dataclass(frozen=True)
class Manifest:
    """Provenance and layout of one dataset (the content of ``data_manifests/<name>.json``)."""

    name: str
    description: str
    license: str
    source: dict[str, Any]
    citation: str
    hub: Optional[dict[str, Optional[str]]]
    local_dir: Optional[str]
    files: dict[str, FileEntry]
    counts: dict[str, Any] = field(default_factory=dict)
    hub_alternatives: tuple[dict[str, Optional[str]], ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def hub_id(self) -> Optional[str]:
        return None if self.hub is None else self.hub.get("id")

    @property
    def hub_config(self) -> Optional[str]:
        return None if self.hub is None else self.hub.get("config")

    @property
    def has_local_files(self) -> bool:
        return self.local_dir is not None and bool(self.files)

    def hub_hint(self) -> str:
        """How to get this dataset from the Hugging Face hub instead (one line)."""
        if self.hub_id is not None:
            return f"datasets.load_dataset({_call_args(self.hub)})"
        if self.hub_alternatives:
            alts = ", ".join(f"datasets.load_dataset({_call_args(h)})" for h in self.hub_alternatives)
            return f"no identical copy on the hub; closest hub sources: {alts}"
        return "no copy on the Hugging Face hub"

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "<dict>") -> "Manifest":
        required = ("name", "description", "license", "source", "citation", "hub", "local_dir", "files")
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"manifest {origin}: missing field(s) {missing}")
        source = data["source"]
        if not isinstance(source, dict) or "repository" not in source or "commit" not in source:
            raise ValueError(f"manifest {origin}: 'source' must be an object with 'repository' and 'commit'")
        hub = data["hub"]
        if hub is not None and (not isinstance(hub, dict) or not hub.get("id")):
            raise ValueError(f"manifest {origin}: 'hub' must be null or an object with 'id' (and 'config')")
        if hub is not None:
            hub = {"id": hub["id"], "config": hub.get("config")}
        files: dict[str, FileEntry] = {}
        for rel, entry in dict(data["files"]).items():
            if not isinstance(entry, dict):
                raise ValueError(f"manifest {origin}: file entry {rel!r} must be an object")
            unknown = set(entry) - {"sha256", "lines", "bytes", "items"}
            if unknown:
                raise ValueError(f"manifest {origin}: file entry {rel!r} has unknown keys {sorted(unknown)}")
            sha = entry.get("sha256")
            if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
                raise ValueError(f"manifest {origin}: file entry {rel!r} has a malformed sha256 {sha!r}")
            files[rel] = FileEntry(**entry)
        if files and data["local_dir"] is None:
            raise ValueError(f"manifest {origin}: lists files but has no 'local_dir'")
        return cls(
            name=data["name"],
            description=data["description"],
            license=data["license"],
            source=dict(source),
            citation=data["citation"],
            hub=hub,
            local_dir=data["local_dir"],
            files=files,
            counts=dict(data.get("counts") or {}),
            hub_alternatives=tuple(
                {"id": h["id"], "config": h.get("config")} for h in data.get("hub_alternatives") or ()
            ),
            notes=tuple(data.get("notes") or ()),
        )


def _call_args(hub: Optional[dict[str, Optional[str]]]) -> str:
    if hub is None:
        return ""
    if hub.get("config") is None:
        return repr(hub["id"])
    return f"{hub['id']!r}, {hub['config']!r}"


# --------------------------------------------------------------------------- manifests


def manifest_dir() -> Path:
    """The folder of manifest JSON files: ``$LENSNEURONS_MANIFEST_DIR`` or the repository's ``data_manifests/``."""
    env = os.environ.get(MANIFEST_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "data_manifests"


def list_datasets() -> list[str]:
    """Names of all datasets that have a manifest, sorted."""
    folder = manifest_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.json"))


def load_manifest(name: str) -> Manifest:
    """Read ``<manifest_dir>/<name>.json``. An unknown name raises ValueError listing the known names."""
    known = list_datasets()
    if name not in known:
        raise ValueError(
            f"unknown dataset {name!r}; known datasets: {', '.join(known) or '(none)'} "
            f"(manifests in {manifest_dir()}, override with ${MANIFEST_DIR_ENV})"
        )
    path = manifest_dir() / f"{name}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"manifest {path} is not valid JSON: {exc}") from exc
    manifest = Manifest.from_dict(data, origin=str(path))
    if manifest.name != name:
        raise ValueError(f"manifest {path} is named {manifest.name!r}, expected {name!r}")
    return manifest


# --------------------------------------------------------------------------- hashing

_HASH_CACHE: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: PathLike) -> str:
    """sha256 of a file, memoised per process by (resolved path, size, mtime)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    with _HASH_LOCK:
        cached = _HASH_CACHE.get(key)
    if cached is not None:
        return cached
    value = _hash_file(p)
    with _HASH_LOCK:
        _HASH_CACHE[key] = value
    return value


# --------------------------------------------------------------------------- resolution


def find_data_dir(data_dir: Optional[PathLike] = None) -> Optional[Path]:
    """The data directory: ``data_dir`` if given, else ``$LENSNEURONS_DATA_DIR``, else None."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else None


def _not_found(manifest: Manifest, problem: str, path: Optional[Path]) -> DatasetNotFoundError:
    lines = [f"dataset {manifest.name!r}: {problem}"]
    if manifest.local_dir is not None:
        lines.append(
            f"  Set ${DATA_DIR_ENV} (or pass data_dir=...) to the folder that contains "
            f"'{manifest.local_dir}/'."
        )
    else:
        lines.append(f"  There is no local copy of this dataset (hub only); ${DATA_DIR_ENV} does not apply.")
    lines.append(f"  Hugging Face hub instead: {manifest.hub_hint()}")
    if manifest.hub_id is not None:
        lines.append(f"    (or lensneurons.data.load_from_hub({manifest.name!r}, split=...))")
    repo = manifest.source.get("repository")
    commit = manifest.source.get("commit")
    lines.append(f"  Source: {repo}" + (f" @ {commit}" if commit else ""))
    lines.append(f"  License: {manifest.license}")
    return DatasetNotFoundError(
        "\n".join(lines), dataset=manifest.name, path=None if path is None else str(path), hub_id=manifest.hub_id
    )


def resolve(name: str, data_dir: Optional[PathLike] = None, verify: bool = True) -> Path:
    """The local directory of dataset ``name`` under ``data_dir`` (default ``$LENSNEURONS_DATA_DIR``).

    With ``verify`` every file listed in the manifest must exist and match its sha256. Raises
    :class:`DatasetNotFoundError` when the directory or a file is missing (the message says where it looked,
    the environment variable to set, the hub id to use instead and the license) and
    :class:`DatasetChecksumError` when a file's content differs from the manifest.
    """
    manifest = load_manifest(name)
    if manifest.local_dir is None:
        raise _not_found(manifest, "no local files are recorded for it.", None)
    base = find_data_dir(data_dir)
    if base is None:
        raise _not_found(
            manifest,
            f"no data directory given: pass data_dir=... or set ${DATA_DIR_ENV} "
            f"(looked for '<data dir>/{manifest.local_dir}').",
            None,
        )
    root = base / manifest.local_dir
    if not root.is_dir():
        raise _not_found(manifest, f"directory not found: {root}", root)
    if verify:
        for rel, entry in manifest.files.items():
            path = root / rel
            if not path.is_file():
                raise _not_found(manifest, f"file not found: {path}", path)
            if entry.sha256 is None:
                continue
            actual = sha256_file(path)
            if actual != entry.sha256:
                raise DatasetChecksumError(
                    f"dataset {name!r}: checksum mismatch for {path}: expected sha256 {entry.sha256}, "
                    f"got {actual}. The file differs from the one recorded in {manifest_dir() / (name + '.json')} "
                    f"(source {manifest.source.get('repository')}).",
                    dataset=name, path=str(path), expected=entry.sha256, actual=actual,
                )
    return root


def load_from_hub(name: str, split: Optional[str] = None, **kwargs: Any) -> Any:
    """``datasets.load_dataset(hub id, config, split=split, **kwargs)`` for dataset ``name``.

    ``config=...`` in ``kwargs`` overrides the manifest's config (e.g. a language or a BLiMP paradigm).
    Any failure (no network, offline mode, gated dataset, missing ``datasets``) becomes a
    :class:`DatasetNotFoundError` with the same guidance as :func:`resolve`.
    """
    manifest = load_manifest(name)
    if manifest.hub_id is None:
        raise _not_found(manifest, "it has no Hugging Face hub id in its manifest.", None)
    config = kwargs.pop("config", manifest.hub_config)
    try:
        import datasets

        return datasets.load_dataset(manifest.hub_id, config, split=split, **kwargs)
    except Exception as exc:  # noqa: BLE001 - every failure gets the same guidance
        where = manifest.hub_id + (f" (config {config!r})" if config is not None else "")
        raise _not_found(
            manifest, f"could not load {where} from the Hugging Face hub: {type(exc).__name__}: {exc}", None
        ) from exc
