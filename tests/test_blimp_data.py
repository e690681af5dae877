"""BLiMP loader on a fake copy in tmp_path (same on-disk format and manifest checks as the real one)."""
import hashlib
import json

import pytest
import torch

from lensneurons.data import DATA_DIR_ENV, MANIFEST_DIR_ENV, DatasetChecksumError, DatasetNotFoundError
from lensneurons.data import manifests as mf
from lensneurons.data.blimp import blimp_tasks, load_blimp, sentences


def _row(task, i, term):
    return {
        "sentence_good": f"{task} good {i}.", "sentence_bad": f"{task} bad {i}.", "field": "syntax",
        "linguistics_term": term, "UID": task, "simple_LM_method": True, "one_prefix_method": False,
        "two_prefix_method": False, "lexically_identical": True, "pairID": str(i),
    }


@pytest.fixture
def fake(tmp_path, monkeypatch):
    data, mdir = tmp_path / "data", tmp_path / "manifests"
    (data / "blimp").mkdir(parents=True)
    mdir.mkdir()
    files = {}
    for task, n, term in (("task_b", 5, "binding"), ("task_a", 3, "island_effects")):
        content = "".join(json.dumps(_row(task, i, term)) + "\n" for i in range(n)).encode()
        (data / "blimp" / f"{task}.jsonl").write_bytes(content)
        files[f"{task}.jsonl"] = {"sha256": hashlib.sha256(content).hexdigest(), "lines": n}
    manifest = {
        "name": "blimp", "description": "fake", "license": "FAKE", "citation": "fake",
        "source": {"repository": "https://example.org/fake", "commit": None},
        "hub": {"id": "fake/blimp", "config": None}, "local_dir": "blimp", "files": files,
    }
    (mdir / "blimp.json").write_text(json.dumps(manifest), encoding="utf-8")
    monkeypatch.setenv(MANIFEST_DIR_ENV, str(mdir))
    monkeypatch.setenv(DATA_DIR_ENV, str(data))
    mf._HASH_CACHE.clear()
    return data


def test_load_all_and_selected_tasks(fake):
    assert blimp_tasks() == ["task_a", "task_b"]
    pairs = load_blimp()
    assert list(pairs) == ["task_a", "task_b"]
    assert [len(v) for v in pairs.values()] == [3, 5]
    p = pairs["task_b"][4]
    assert (p.task, p.good, p.bad, p.pair_id) == ("task_b", "task_b good 4.", "task_b bad 4.", 4)
    assert (p.field, p.phenomenon) == ("syntax", "binding")
    sub = load_blimp("task_b", limit=2)
    assert list(sub) == ["task_b"] and [q.pair_id for q in sub["task_b"]] == [0, 1]


def test_sentences_interleave_good_and_bad(fake):
    pairs = load_blimp("task_a")["task_a"]
    texts, labels, pair_index = sentences(pairs)
    assert texts == ["task_a good 0.", "task_a bad 0.", "task_a good 1.", "task_a bad 1.", "task_a good 2.",
                     "task_a bad 2."]
    assert labels.tolist() == [True, False] * 3
    assert pair_index.tolist() == [0, 0, 1, 1, 2, 2]
    assert labels.dtype == torch.bool and pair_index.dtype == torch.long


def test_bad_input(fake):
    with pytest.raises(ValueError, match="unknown BLiMP task.*nope.*task_a, task_b"):
        load_blimp(["task_a", "nope"])
    with pytest.raises(ValueError, match="duplicates"):
        load_blimp(["task_a", "task_a"])
    with pytest.raises(ValueError, match="limit"):
        load_blimp(limit=0)
    with pytest.raises(ValueError, match="empty"):
        sentences([])


def test_checksum_and_missing_dir(fake, monkeypatch, tmp_path):
    (fake / "blimp" / "task_a.jsonl").write_text(json.dumps(_row("task_a", 0, "x")) + "\n")
    mf._HASH_CACHE.clear()
    with pytest.raises(DatasetChecksumError, match="task_a.jsonl"):
        load_blimp("task_b")
    assert len(load_blimp("task_b", verify=False)["task_b"]) == 5
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "elsewhere"))
    with pytest.raises(DatasetNotFoundError, match="LENSNEURONS_DATA_DIR"):
        load_blimp("task_b")


@pytest.mark.real_data
def test_real_blimp_counts():
    pairs = load_blimp(["adjunct_island", "passive_1"], limit=10)
    assert [len(v) for v in pairs.values()] == [10, 10]
    assert pairs["adjunct_island"][0].phenomenon == "island_effects"
