"""Dataset manifests and resolution (fake data in tmp_path; real data only under @real_data)."""
import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from lensneurons.data import manifests as mf
from lensneurons.data import (
    DATA_DIR_ENV,
    MANIFEST_DIR_ENV,
    DatasetChecksumError,
    DatasetNotFoundError,
    list_datasets,
    load_from_hub,
    load_manifest,
    manifest_dir,
    resolve,
)

REPO_MANIFESTS = Path(__file__).resolve().parents[1] / "data_manifests"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_manifest(folder: Path, name: str, **fields) -> None:
    data = {
        "name": name,
        "description": f"toy dataset {name}",
        "license": "TOY-LICENSE-1.0",
        "source": {"repository": "https://example.org/toy", "commit": "0" * 40},
        "citation": "Nobody (2024). Toy.",
        "hub": {"id": "someorg/toy-hub", "config": "cfg"},
        "local_dir": f"toys/{name}",
        "files": {},
    }
    data.update(fields)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(data), encoding="utf-8")


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A manifest dir with 'toy' (two local files) and 'hubonly', and a data dir holding 'toy'."""
    files = {"a.txt": b"alpha\nbeta\n", "sub/b.txt": "gamma\nδέλτα\nε\n".encode()}
    data = tmp_path / "data"
    for rel, content in files.items():
        p = data / "toys" / "toy" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
    mdir = tmp_path / "manifests"
    _write_manifest(
        mdir, "toy",
        files={rel: {"sha256": _sha(c), "lines": c.count(b"\n")} for rel, c in files.items()},
        counts={"lines": 5},
    )
    _write_manifest(mdir, "hubonly", hub={"id": "someorg/hub-only", "config": None}, local_dir=None)
    monkeypatch.setenv(MANIFEST_DIR_ENV, str(mdir))
    monkeypatch.setenv(DATA_DIR_ENV, str(data))
    mf._HASH_CACHE.clear()
    return {"data": data, "manifests": mdir, "root": data / "toys" / "toy"}


# --------------------------------------------------------------------------- manifests


def test_manifest_dir_env_and_listing(toy):
    assert manifest_dir() == toy["manifests"]
    assert list_datasets() == ["hubonly", "toy"]
    m = load_manifest("toy")
    assert m.name == "toy" and m.license == "TOY-LICENSE-1.0"
    assert m.hub_id == "someorg/toy-hub" and m.hub_config == "cfg"
    assert m.files["a.txt"].lines == 2 and len(m.files["sub/b.txt"].sha256) == 64
    assert m.counts == {"lines": 5} and m.has_local_files


def test_unknown_manifest_name_lists_known(toy):
    with pytest.raises(ValueError) as err:
        load_manifest("nope")
    msg = str(err.value)
    assert "nope" in msg and "toy" in msg and "hubonly" in msg
    with pytest.raises(ValueError):
        resolve("nope")


def test_malformed_manifest_rejected(toy):
    (toy["manifests"] / "broken.json").write_text(json.dumps({"name": "broken"}), encoding="utf-8")
    with pytest.raises(ValueError, match="missing field"):
        load_manifest("broken")
    _write_manifest(toy["manifests"], "badsha", files={"x.txt": {"sha256": "abc"}})
    with pytest.raises(ValueError, match="sha256"):
        load_manifest("badsha")
    _write_manifest(toy["manifests"], "misnamed")
    (toy["manifests"] / "misnamed.json").rename(toy["manifests"] / "other.json")
    with pytest.raises(ValueError, match="expected 'other'"):
        load_manifest("other")


# --------------------------------------------------------------------------- resolve


def test_resolve_from_env_var(toy):
    root = resolve("toy")
    assert root == toy["root"]
    assert (root / "sub" / "b.txt").read_text(encoding="utf-8").splitlines()[1] == "δέλτα"


def test_resolve_from_explicit_data_dir(toy, tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV)
    assert resolve("toy", data_dir=toy["data"]) == toy["root"]
    assert resolve("toy", data_dir=str(toy["data"])) == toy["root"]
    # an explicit data_dir wins over the environment variable
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "elsewhere"))
    assert resolve("toy", data_dir=toy["data"]) == toy["root"]
    with pytest.raises(DatasetNotFoundError):
        resolve("toy")


def test_missing_dataset_message(toy, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError) as err:
        resolve("toy", data_dir=empty)
    exc = err.value
    msg = str(exc)
    assert isinstance(exc, FileNotFoundError)
    assert DATA_DIR_ENV in msg
    assert "someorg/toy-hub" in msg and "datasets.load_dataset('someorg/toy-hub', 'cfg')" in msg
    assert str(empty / "toys" / "toy") in msg
    assert "TOY-LICENSE-1.0" in msg and "'toy'" in msg
    assert exc.dataset == "toy" and exc.hub_id == "someorg/toy-hub" and exc.path == str(empty / "toys" / "toy")


def test_missing_data_dir_setting(toy, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV)
    with pytest.raises(DatasetNotFoundError) as err:
        resolve("toy")
    assert DATA_DIR_ENV in str(err.value) and "someorg/toy-hub" in str(err.value)


def test_missing_file(toy):
    (toy["root"] / "sub" / "b.txt").unlink()
    with pytest.raises(DatasetNotFoundError) as err:
        resolve("toy")
    assert str(toy["root"] / "sub" / "b.txt") in str(err.value)
    # without verification only the directory has to exist
    assert resolve("toy", verify=False) == toy["root"]


def test_checksum_mismatch(toy):
    target = toy["root"] / "a.txt"
    expected = load_manifest("toy").files["a.txt"].sha256
    target.write_bytes(b"alpha\nBETA\n")
    actual = _sha(b"alpha\nBETA\n")
    with pytest.raises(DatasetChecksumError) as err:
        resolve("toy")
    exc = err.value
    assert isinstance(exc, ValueError)
    msg = str(exc)
    assert str(target) in msg and expected in msg and actual in msg
    assert exc.expected == expected and exc.actual == actual and exc.path == str(target)
    assert resolve("toy", verify=False) == toy["root"]


def test_hashes_are_memoised(toy, monkeypatch):
    calls = []
    real = mf._hash_file

    def counting(path):
        calls.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(mf, "_hash_file", counting)
    resolve("toy")
    resolve("toy")
    resolve("toy", data_dir=toy["data"])
    assert sorted(calls) == ["a.txt", "b.txt"]
    # a changed file (size / mtime) is hashed again and caught
    target = toy["root"] / "a.txt"
    target.write_bytes(b"alpha\nbeta\nextra\n")
    with pytest.raises(DatasetChecksumError):
        resolve("toy")
    assert calls.count("a.txt") == 2
    # same size, new mtime: hashed again too
    target.write_bytes(b"alpha\nbeta\n")
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    resolve("toy")
    assert calls.count("a.txt") == 3


def test_hub_only_dataset_has_no_local_dir(toy):
    with pytest.raises(DatasetNotFoundError) as err:
        resolve("hubonly")
    msg = str(err.value)
    assert "someorg/hub-only" in msg and "hub only" in msg


def test_load_from_hub_failure_becomes_not_found(toy, monkeypatch):
    datasets = pytest.importorskip("datasets")
    seen = {}

    def failing(path, name=None, **kw):
        seen.update(path=path, name=name, **kw)
        raise ConnectionError("no network here")

    monkeypatch.setattr(datasets, "load_dataset", failing)
    with pytest.raises(DatasetNotFoundError) as err:
        load_from_hub("toy", split="test")
    assert seen == {"path": "someorg/toy-hub", "name": "cfg", "split": "test"}
    msg = str(err.value)
    assert "someorg/toy-hub" in msg and "no network here" in msg and "TOY-LICENSE-1.0" in msg
    assert isinstance(err.value.__cause__, ConnectionError)
    with pytest.raises(DatasetNotFoundError):
        load_from_hub("toy", split="test", config="other")
    assert seen["name"] == "other"


def test_load_from_hub_passes_through_result(toy, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets, "load_dataset", lambda path, name=None, **kw: ("ok", path, name, kw))
    assert load_from_hub("hubonly") == ("ok", "someorg/hub-only", None, {"split": None})


def test_load_from_hub_without_hub_id(toy):
    _write_manifest(toy["manifests"], "nohub", hub=None)
    with pytest.raises(DatasetNotFoundError, match="no Hugging Face hub id"):
        load_from_hub("nohub")


# --------------------------------------------------------------------------- the repository's manifests

EXPECTED = {
    "kojima2024": ("multilingual/kojima2024", None, 18),
    "flores200": ("multilingual/flores200", "openlanguagedata/flores_plus", 34),
    "tatoeba": ("multilingual/tatoeba", "mteb/tatoeba-bitext-mining", 17),
    "pud": ("multilingual/pud", "universal-dependencies/universal_dependencies", 5),
    "flores_plus": (None, "openlanguagedata/flores_plus", 0),
    "pawsx": (None, "google-research-datasets/paws-x", 0),
    "blimp": ("blimp", "nyu-mll/blimp", 67),
    "pararel": ("pararel", None, 80),
    "lama_conceptnet": ("lama_conceptnet", "lama", 1),
    "nltk_data": ("nltk_data", None, 15),
}


@pytest.fixture
def repo_manifests(monkeypatch):
    monkeypatch.delenv(MANIFEST_DIR_ENV, raising=False)
    assert manifest_dir() == REPO_MANIFESTS


def test_repo_manifests_are_complete(repo_manifests):
    assert set(EXPECTED) <= set(list_datasets())
    for name, (local_dir, hub_id, n_files) in EXPECTED.items():
        m = load_manifest(name)
        assert m.local_dir == local_dir, name
        assert m.hub_id == hub_id, name
        assert len(m.files) == n_files, name
        assert m.license and m.citation and m.description and m.source["repository"], name
        for rel, entry in m.files.items():
            assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256 or ""), (name, rel)
            assert not rel.startswith("/") and ".." not in rel.split("/"), (name, rel)
    assert load_manifest("lama_conceptnet").hub_config == "conceptnet"
    assert {h["id"] for h in load_manifest("kojima2024").hub_alternatives} == {
        "openlanguagedata/flores_plus", "google-research-datasets/paws-x"}


def test_repo_manifest_counts(repo_manifests):
    k = load_manifest("kojima2024")
    assert k.counts["languages"] == ["en", "de", "fr", "es", "zh", "ja"]
    for lang in k.counts["languages"]:
        assert k.files[f"positive/{lang}.txt"].lines == 500
        assert k.files[f"negative/{lang}.txt"].lines == 2500
        assert k.files[f"pawsx/{lang}.txt"].lines == k.counts["pawsx_lines"][lang]
        order = k.counts["negative_block_order"][lang]
        assert len(order) == 5 and lang not in order and set(order) | {lang} == set(k.counts["languages"])
    f = load_manifest("flores200")
    assert len(f.counts["languages"]) == 17
    for rel, entry in f.files.items():
        assert entry.lines == (997 if rel.startswith("dev/") else 1012)
    b = load_manifest("blimp")
    assert all(e.lines == 1000 for e in b.files.values())
    p = load_manifest("pararel")
    assert sum(e.lines for r, e in p.files.items() if r.startswith("patterns/")) == p.counts["patterns"] == 329
    assert sum(e.lines for r, e in p.files.items() if r.startswith("trex_lms_vocab/")) == p.counts["facts"] == 29411
    assert load_manifest("tatoeba").files["en.txt"].lines == 4160
    assert all(e.bytes for e in load_manifest("nltk_data").files.values())


def test_repo_hub_only_error(repo_manifests, tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        resolve("flores_plus", data_dir=tmp_path)
    assert "openlanguagedata/flores_plus" in str(err.value)
    with pytest.raises(DatasetNotFoundError) as err:
        resolve("kojima2024", data_dir=tmp_path)
    msg = str(err.value)
    assert DATA_DIR_ENV in msg and "openlanguagedata/flores_plus" in msg and "google-research-datasets/paws-x" in msg
    assert str(tmp_path / "multilingual" / "kojima2024") in msg


# --------------------------------------------------------------------------- real data


@pytest.mark.real_data
@pytest.mark.parametrize("name", [n for n, (local, _, n_files) in EXPECTED.items() if n_files])
def test_real_manifest_verifies(repo_manifests, name):
    root = resolve(name)  # every listed file exists and matches its sha256
    m = load_manifest(name)
    for rel, entry in m.files.items():
        data = (root / rel).read_bytes()
        if entry.lines is not None:
            assert data.count(b"\n") == entry.lines, rel
        if entry.bytes is not None:
            assert len(data) == entry.bytes, rel
