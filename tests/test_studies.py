"""The one results-folder contract of every study, and the pieces it is made of (core.results, core.study)."""
import json

import pytest
import torch

from lensneurons.cli import STUDIES, study
from lensneurons.core.models import toy_model
from lensneurons.core.results import Checkpoint, ConfigMismatchError, ResultsFolder, TensorCache, fingerprint
from lensneurons.data.blimp import MinimalPair
from lensneurons.data.corpora import Corpus
from lensneurons.data.multilingual import LanguageTexts


def _data(name):
    """Small data of the kind each study's run() takes (its data keyword)."""
    if name == "language-neurons":
        texts = ["hello world", "good day", "bonjour le monde", "bonne journée"]
        return LanguageTexts(texts=texts, positives={"en": [0, 1], "fr": [2, 3]}, negatives={"en": [2, 3], "fr": [0, 1]})
    if name == "knowledge-neurons":
        return {"a": [("one two", " three"), ("four five", " six")], "b": [("x y", " z"), ("p q", " r")]}
    if name == "sparse-probing":
        return {"t": [MinimalPair("t", f"the cat sat {i}.", f"cat the sat {i}.", i) for i in range(8)]}
    if name == "atlas":
        from lensneurons.atlas.study import AtlasData

        return AtlasData(*(_data(n) for n in ("language-neurons", "knowledge-neurons", "sparse-probing", "corpus-neurons")))
    sources = ["pros_cons"] * 600 + ["inaugural"] * 300  # enough for finetune-shift's default groups
    return Corpus([f"sentence number {i} here" for i in range(900)], {"corpus": sources})


@pytest.fixture(scope="module")
def model():
    return toy_model(n_layers=2, d_model=16, d_mlp=20, n_ctx=64)


@pytest.mark.parametrize("name", list(STUDIES))
def test_each_study_refuses_a_folder_of_another_configuration(name, model, tmp_path):
    s = study(name)
    cfg = s.configure(**({"k": 5} if name == "language-neurons" else {}))  # k=1000 is too many for the toy model
    changed = next(f.name for f in s.config.__dataclass_fields__.values()
                   if isinstance(getattr(cfg, f.name), int) and not isinstance(getattr(cfg, f.name), bool))
    other = s.config(**{**cfg.to_dict(), changed: getattr(cfg, changed) + 1})
    ResultsFolder.claim(tmp_path, other)  # an earlier run of another configuration
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ConfigMismatchError, match=f"different configuration.*{changed}"):
        s.run(model, cfg, tmp_path, progress=False, **{s.data_keyword: _data(name)})
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    assert json.loads((tmp_path / "config.json").read_text()) == json.loads(json.dumps(other.to_dict()))


def test_claim_saves_the_config_first_and_resumes_the_same_one(tmp_path):
    cfg = study("sparse-probing").configure("demo")
    ResultsFolder.claim(tmp_path, cfg).json("partial.json", {"x": 1})
    again = ResultsFolder.claim(tmp_path, cfg)  # same configuration: resumed, nothing removed
    assert again.read_json("partial.json") == {"x": 1}
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["tasks"] == ["adjunct_island", "passive_1", "determiner_noun_agreement_1"]


def test_mismatch_message_names_every_differing_field(tmp_path):
    s = study("language-neurons")
    ResultsFolder.claim(tmp_path, s.configure("demo"))
    with pytest.raises(ConfigMismatchError) as err:
        ResultsFolder.claim(tmp_path, s.configure("demo", k=7, seeds=3))
    text = str(err.value)
    assert "k: 1000 there, 7 here" in text and "seeds: 8 there, 3 here" in text and "n_positive" not in text


def test_fingerprint_is_stable_and_sees_every_part():
    t = torch.arange(6.0).reshape(2, 3)
    a = fingerprint("acts", t, {"b": 1, "a": [1, 2]})
    assert a == fingerprint("acts", t.clone(), {"a": [1, 2], "b": 1})  # dict order does not matter
    assert a != fingerprint("acts", t.reshape(3, 2), {"a": [1, 2], "b": 1})  # shape does
    assert a != fingerprint("acts", t.double(), {"a": [1, 2], "b": 1})  # dtype does
    t2 = t.clone()
    t2[1, 2] = 5.5
    assert a != fingerprint("acts", t2, {"a": [1, 2], "b": 1})
    assert a != fingerprint("acts", t, {"a": [1, 2], "b": 2})


def test_stage_is_reused_only_for_its_fingerprint(tmp_path):
    folder = ResultsFolder(tmp_path)
    calls = []
    compute = lambda: calls.append(1) or torch.ones(3)  # noqa: E731
    assert torch.equal(folder.stage("acts.pt", "k1", compute), torch.ones(3))
    assert torch.equal(folder.stage("acts.pt", "k1", compute), torch.ones(3))
    assert calls == [1]
    folder.stage("acts.pt", "k2", compute)
    assert calls == [1, 1]
    assert folder.stage("sel.json", "k", lambda: {"a": [1, 2]}) == {"a": [1, 2]}
    assert folder.read_stage("sel.json", "other") is None


def test_checkpoint_and_cache_round_trip(tmp_path):
    ck = Checkpoint(tmp_path / "ck.pt", key="abc")
    assert ck.load() is None
    ck.save({"parts_done": 2})
    assert ck.load() == {"parts_done": 2}
    assert Checkpoint(tmp_path / "ck.pt", key="other").load() is None
    ck.clear()
    assert not (tmp_path / "ck.pt").exists()
    cache = TensorCache(tmp_path / "cache")
    key = fingerprint("x")
    assert cache.get(key) is None and key not in cache
    cache[key] = {"scores": torch.zeros(2)}
    assert torch.equal(cache.get(key)["scores"], torch.zeros(2)) and len(cache) == 1
    with pytest.raises(ValueError, match="fingerprint"):
        cache.get("../escape")


def test_an_interrupted_write_leaves_the_old_file(tmp_path, monkeypatch):
    import os

    folder = ResultsFolder(tmp_path)
    folder.json("table.json", {"v": 1})

    def fail(*a):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(KeyboardInterrupt):
        folder.json("table.json", {"v": 2})
    assert json.loads((tmp_path / "table.json").read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["table.json"]  # no temporary file left behind


@pytest.mark.parametrize("name", list(STUDIES))
def test_a_bad_value_fails_before_data_or_model_load(name, tmp_path, monkeypatch, capsys):
    import dataclasses

    import lensneurons.core.models
    from lensneurons.cli import main

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the configuration was checked")

    monkeypatch.setattr(lensneurons.core.models, "load_model", no_model)
    s = study(name)
    defaults = s.configure()
    bounded = next(f for f in dataclasses.fields(s.config) if f.metadata.get("low") == 1
                   and type(getattr(defaults, f.name)) is int)
    flag = f"--{bounded.name.replace('_', '-')}"
    with pytest.raises(SystemExit) as exit_info:
        main([name, flag, "0", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert f"{flag} must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=f"{flag} must be >= 1"):
        ResultsFolder.claim(tmp_path / "api", s.configure(**{bounded.name: 0}))
    assert not (tmp_path / "api").exists()
