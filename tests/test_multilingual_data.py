"""Multilingual loaders (fake data in tmp_path; the real sets only under @real_data)."""
import hashlib
import json
from pathlib import Path

import pytest
import torch

from lensneurons.data import (
    DATA_DIR_ENV,
    MANIFEST_DIR_ENV,
    DatasetNotFoundError,
    LanguageTexts,
    flores200,
    flores_plus_from_hub,
    kojima2024,
    load_manifest,
    parallel_sentences,
    pawsx_from_hub,
    resolve,
)
from lensneurons.data import manifests as mf

# --------------------------------------------------------------------------- fake datasets

BLOCK = 4  # lines per negative block in the fake kojima2024 (500 in the real one)
KLANGS = ["en", "de", "fr", "ja"]


def _positive(lang):
    # a duplicate (line 0 == line 3), a blank line, trailing whitespace kept verbatim
    return [f"{lang} p0", f"{lang} p1 ", "", f"{lang} p0", f"{lang} p2", f"{lang} p3"]


def _negative(lang):
    others = [o for o in KLANGS if o != lang]
    lines = []
    for o in others:  # one block per other language; a sentence shared with that language's positives
        lines += [f"{o} p1 ", f"{o} n-{lang}-1", f"{o} n-{lang}-2", f"{o} n-{lang}-3"]
    return lines


FLANGS = ["en", "de", "fr"]
N_DEV, N_DEVTEST = 10, 6


def _flores(lang, split):
    n = N_DEV if split == "dev" else N_DEVTEST
    return [f"  {lang}-{split}-{i} " if i % 3 == 0 else f"{lang}-{split}-{i}" for i in range(n)]


def _write_dataset(data: Path, mdir: Path, name: str, local_dir: str, files: dict, **extra) -> None:
    entries = {}
    for rel, lines in files.items():
        content = "".join(line + "\n" for line in lines).encode("utf-8")
        path = data / local_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        entries[rel] = {"sha256": hashlib.sha256(content).hexdigest(), "lines": len(lines)}
    manifest = {
        "name": name, "description": f"fake {name}", "license": "FAKE", "citation": "fake",
        "source": {"repository": "https://example.org/fake", "commit": None},
        "hub": extra.pop("hub", {"id": f"fake/{name}", "config": None}),
        "local_dir": local_dir, "files": entries,
    }
    manifest.update(extra)
    mdir.mkdir(parents=True, exist_ok=True)
    (mdir / f"{name}.json").write_text(json.dumps(manifest), encoding="utf-8")


@pytest.fixture
def fake(tmp_path, monkeypatch):
    data, mdir = tmp_path / "data", tmp_path / "manifests"
    kfiles = {}
    for lang in KLANGS:
        kfiles[f"positive/{lang}.txt"] = _positive(lang)
        kfiles[f"negative/{lang}.txt"] = _negative(lang)
    _write_dataset(
        data, mdir, "kojima2024", "multilingual/kojima2024", kfiles, hub=None,
        counts={"languages": KLANGS, "negative_block_size": BLOCK,
                "negative_block_order": {lang: [o for o in KLANGS if o != lang] for lang in KLANGS}},
    )
    ffiles = {f"{split}/{lang}.txt": _flores(lang, split) for split in ("dev", "devtest") for lang in FLANGS}
    _write_dataset(data, mdir, "flores200", "multilingual/flores200", ffiles,
                   counts={"languages": FLANGS, "parallel": True})
    _write_dataset(data, mdir, "pud", "multilingual/pud",
                   {f"{lang}.txt": [f" {lang} pud {i}" for i in range(5)] for lang in ("en", "de")},
                   counts={"languages": ["en", "de"], "parallel": True})
    _write_dataset(data, mdir, "tatoeba", "multilingual/tatoeba",
                   {"en.txt": [f"en t{i}" for i in range(7)], "de.txt": [f"de t{i}" for i in range(3)]},
                   counts={"languages": ["en", "de"], "parallel": False})
    monkeypatch.setenv(MANIFEST_DIR_ENV, str(mdir))
    monkeypatch.setenv(DATA_DIR_ENV, str(data))
    mf._HASH_CACHE.clear()
    return {"data": data, "manifests": mdir}


def _rewrite_with_manifest(fake, name: str, rel: str, lines: list[str]) -> None:
    """Change a fake file and update its manifest entry so that it still verifies."""
    m = json.loads((fake["manifests"] / f"{name}.json").read_text(encoding="utf-8"))
    content = "".join(line + "\n" for line in lines).encode("utf-8")
    (fake["data"] / m["local_dir"] / rel).write_bytes(content)
    m["files"][rel] = {"sha256": hashlib.sha256(content).hexdigest(), "lines": len(lines)}
    (fake["manifests"] / f"{name}.json").write_text(json.dumps(m), encoding="utf-8")


# --------------------------------------------------------------------------- LanguageTexts


def test_language_texts_labelled_and_summary():
    lt = LanguageTexts(texts=["a", "b", "c"], positives={"x": [0, 0], "y": [2]}, negatives={"x": [2, 1], "y": [0]})
    assert lt.languages == ["x", "y"]
    idx, lab = lt.labelled("x")
    assert idx.dtype == torch.long and lab.dtype == torch.bool
    assert idx.tolist() == [0, 0, 2, 1] and lab.tolist() == [True, True, False, False]
    assert lt.positive_texts("x") == ["a", "a"] and lt.negative_texts("y") == ["a"]
    s = lt.summary()
    assert s["n_texts"] == 3 and s["n_positive"] == 3 and s["n_negative"] == 3
    assert s["per_language"]["x"] == {"positive": 2, "positive_distinct": 1, "negative": 2, "negative_distinct": 2}
    with pytest.raises(ValueError, match="'z'"):
        lt.labelled("z")


@pytest.mark.parametrize(
    "texts, pos, neg, match",
    [
        (["a"], {}, {}, "at least one language"),
        (["a", "b"], {"x": [0], "y": []}, {"x": [1], "y": [0]}, "'y' has no positives"),
        (["a", "b"], {"x": [0]}, {"x": []}, "'x' has no negatives"),
        (["a", "b"], {"x": [0, 2]}, {"x": [1]}, "'x'.*out of range"),
        (["a", "b"], {"x": [0]}, {"x": [-1]}, "'x'.*out of range"),
        (["a", "b"], {"x": [0]}, {"y": [1]}, "same languages"),
        (["a", "a"], {"x": [0]}, {"x": [1]}, "distinct"),
    ],
)
def test_language_texts_validation(texts, pos, neg, match):
    with pytest.raises(ValueError, match=match):
        LanguageTexts(texts=texts, positives=pos, negatives=neg)


# --------------------------------------------------------------------------- kojima2024


def test_kojima_dedupe_keeps_repeats_and_order(fake):
    lt = kojima2024(languages=KLANGS)
    assert lt.languages == KLANGS
    for lang in KLANGS:
        expected_pos = [t for t in _positive(lang) if t.strip()]
        assert lt.positive_texts(lang) == expected_pos  # order, repeats, trailing space verbatim
        assert lt.negative_texts(lang) == _negative(lang)
    assert lt.positives["en"][0] == lt.positives["en"][2]  # the duplicate shares one pool entry
    assert len(set(lt.texts)) == len(lt.texts)
    # "de p1 " is a positive of de and a negative of en/fr/ja: one text in the pool
    assert lt.texts.count("de p1 ") == 1
    shared = lt.texts.index("de p1 ")
    assert shared in lt.positives["de"] and all(shared in lt.negatives[o] for o in ("en", "fr", "ja"))
    # distinct pool size: 4 positives + 3 own negatives per (block) ... computed directly
    all_texts = {t for lang in KLANGS for t in _positive(lang) + _negative(lang) if t.strip()}
    assert len(lt.texts) == len(all_texts)
    s = lt.summary()["per_language"]["en"]
    assert s == {"positive": 5, "positive_distinct": 4, "negative": 12, "negative_distinct": 12}
    assert lt.info["negative_block_order"]["en"] == ["de", "fr", "ja"]


def test_kojima_subset_and_order_of_languages(fake):
    lt = kojima2024(languages=["ja", "en"])
    assert lt.languages == ["ja", "en"]
    assert lt.texts[0] == "ja p0"
    assert kojima2024(languages="fr").languages == ["fr"]


def test_kojima_negative_subsampling_takes_every_block(fake):
    lt = kojima2024(languages=["en"], n_positive=2, n_negative=3)
    assert lt.positive_texts("en") == ["en p0", "en p1 "]
    # 3 negatives over 3 blocks: the first line of each block, i.e. one per other language
    assert lt.negative_texts("en") == ["de p1 ", "fr p1 ", "ja p1 "]
    lt = kojima2024(languages=["en"], n_negative=7)  # 7 = 3 + 2 + 2: remainder to the first blocks
    assert lt.negative_texts("en") == [
        "de p1 ", "de n-en-1", "de n-en-2", "fr p1 ", "fr n-en-1", "ja p1 ", "ja n-en-1"]
    lt = kojima2024(languages=["en"], n_negative=12)
    assert lt.negative_texts("en") == _negative("en")


def test_kojima_argument_errors(fake):
    with pytest.raises(ValueError, match="available: en, de, fr, ja"):
        kojima2024(languages=["en", "xx"])
    with pytest.raises(ValueError, match="empty language list"):
        kojima2024(languages=[])
    with pytest.raises(ValueError, match="twice"):
        kojima2024(languages=["en", "en"])
    with pytest.raises(ValueError, match="n_negative"):
        kojima2024(languages=["en"], n_negative=2)  # fewer than the 3 blocks
    with pytest.raises(ValueError, match="n_negative"):
        kojima2024(languages=["en"], n_negative=13)
    with pytest.raises(ValueError, match="n_positive"):
        kojima2024(languages=["en"], n_positive=6)
    with pytest.raises(ValueError, match="n_positive"):
        kojima2024(languages=["en"], n_positive=0)


def test_kojima_blank_lines_do_not_shift_blocks(fake):
    neg = _negative("en")
    neg[1] = "   "  # a blank line inside the first block
    _rewrite_with_manifest(fake, "kojima2024", "negative/en.txt", neg)
    lt = kojima2024(languages=["en"])
    assert "   " not in lt.texts and len(lt.negatives["en"]) == 11
    lt = kojima2024(languages=["en"], n_negative=6)
    assert lt.negative_texts("en") == ["de p1 ", "de n-en-2", "fr p1 ", "fr n-en-1", "ja p1 ", "ja n-en-1"]


def test_kojima_missing_data_is_clear(fake, tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFoundError, match=DATA_DIR_ENV):
        kojima2024(languages=KLANGS)


# --------------------------------------------------------------------------- flores200


def test_flores_one_vs_rest(fake):
    lt = flores200(n_per_language=4, seed=1)
    assert lt.languages == FLANGS
    lines = lt.info["line_numbers"]
    assert len(lines) == 4 and lines == sorted(lines) and all(0 <= i < N_DEV for i in lines)
    for lang in FLANGS:
        # same line numbers in every language, whitespace stripped
        assert lt.positive_texts(lang) == [f"{lang}-dev-{i}" for i in lines]
        others = [i for o in FLANGS if o != lang for i in lt.positives[o]]
        assert lt.negatives[lang] == others
        assert not set(lt.positives[lang]) & set(lt.negatives[lang])
        idx, lab = lt.labelled(lang)
        assert idx.shape == (12,) and int(lab.sum()) == 4
    assert len(lt.texts) == 12


def test_flores_sampling_is_seeded(fake):
    a = flores200(languages=["en", "de"], n_per_language=5, seed=3)
    b = flores200(languages=["en", "de"], n_per_language=5, seed=3)
    assert a.texts == b.texts and a.positives == b.positives
    seeds = {tuple(flores200(languages=["en", "de"], n_per_language=5, seed=s).info["line_numbers"]) for s in range(6)}
    assert len(seeds) > 1


def test_flores_splits(fake):
    assert flores200(split="devtest", n_per_language=None).positive_texts("fr") == [
        f"fr-devtest-{i}" for i in range(N_DEVTEST)]
    lt = flores200(split="all", n_per_language=None, languages=["en", "fr"])
    assert lt.positive_texts("en") == [f"en-dev-{i}" for i in range(N_DEV)] + [
        f"en-devtest-{i}" for i in range(N_DEVTEST)]
    with pytest.raises(ValueError, match="split"):
        flores200(split="test")
    with pytest.raises(ValueError, match="only 6 available"):
        flores200(split="devtest", n_per_language=7)
    with pytest.raises(ValueError, match="at least two languages"):
        flores200(languages=["en"])
    with pytest.raises(ValueError, match="available: en, de, fr"):
        flores200(languages=["en", "zz"])


def test_flores_not_parallel_is_an_error(fake):
    _rewrite_with_manifest(fake, "flores200", "dev/de.txt", _flores("de", "dev")[:-1])
    with pytest.raises(ValueError, match="not parallel"):
        flores200(n_per_language=2)


# --------------------------------------------------------------------------- parallel_sentences


def test_parallel_sentences(fake):
    pud = parallel_sentences("pud", ["en", "de"])
    assert pud == {lang: [f"{lang} pud {i}" for i in range(5)] for lang in ("en", "de")}
    fl = parallel_sentences("flores200")
    assert list(fl) == FLANGS and fl["de"][3] == "de-dev-3" and len(fl["en"]) == N_DEV
    tat = parallel_sentences("tatoeba")
    assert {k: len(v) for k, v in tat.items()} == {"en": 7, "de": 3}  # tatoeba is not aligned
    with pytest.raises(ValueError, match="unknown source"):
        parallel_sentences("europarl", ["en"])
    with pytest.raises(ValueError, match="available: en, de"):
        parallel_sentences("pud", ["ja"])
    _rewrite_with_manifest(fake, "pud", "de.txt", ["x"])
    with pytest.raises(ValueError, match="parallel"):
        parallel_sentences("pud")


# --------------------------------------------------------------------------- hub loaders (offline)


@pytest.fixture
def offline(monkeypatch):
    """Force Hugging Face offline mode (the libraries read the env vars at import, so patch them too)."""
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants as hub_constants

    monkeypatch.delenv(MANIFEST_DIR_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)


def test_pawsx_from_hub_offline_is_not_found(offline, tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        pawsx_from_hub(["en", "de"], cache_dir=str(tmp_path))
    assert "google-research-datasets/paws-x" in str(err.value)


def test_flores_plus_from_hub_offline_is_not_found(offline, tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        flores_plus_from_hub(["en", "de"], cache_dir=str(tmp_path))
    assert "openlanguagedata/flores_plus" in str(err.value) and "eng_Latn" in str(err.value)


def test_hub_loaders_build_one_vs_rest(monkeypatch):
    """The hub loaders' assembly, with datasets.load_dataset replaced by an in-memory fake."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.delenv(MANIFEST_DIR_ENV, raising=False)
    calls = []

    def fake_load(path, name=None, split=None, **kw):
        calls.append((path, name, split))
        if path == "openlanguagedata/flores_plus":
            return datasets.Dataset.from_dict({"id": [3, 1, 2], "text": [f"{name} c ", f"{name} a", f"{name} b"]})
        return datasets.Dataset.from_dict(
            {"sentence1": [f"{name} x", f"{name} y"], "sentence2": [f"{name} y", f"{name} z"], "label": [1, 0]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    fp = flores_plus_from_hub(["en", "zh"], n_per_language=None)
    assert fp.positive_texts("zh") == ["cmn_Hans a", "cmn_Hans b", "cmn_Hans c"]  # sorted by id, stripped
    assert fp.negative_texts("en") == fp.positive_texts("zh")
    px = pawsx_from_hub(["en", "de"], n_per_language=2, seed=0)
    assert set(px.positive_texts("de")) <= {"de x", "de y", "de z"} and len(px.positives["de"]) == 2
    assert ("google-research-datasets/paws-x", "de", "test") in calls


# --------------------------------------------------------------------------- real data


@pytest.fixture
def real(monkeypatch):
    monkeypatch.delenv(MANIFEST_DIR_ENV, raising=False)


@pytest.mark.real_data
def test_real_kojima2024(real):
    m = load_manifest("kojima2024")
    lt = kojima2024()
    assert lt.languages == ["en", "de", "fr", "es", "zh", "ja"]
    s = lt.summary()
    for lang in lt.languages:
        per = s["per_language"][lang]
        assert per["positive"] == m.counts["positive_per_language"] == 500
        assert per["negative"] == m.counts["negative_per_language"] == 2500
        assert per["positive_distinct"] == m.counts["positive_distinct"][lang]
        assert not set(lt.positives[lang]) & set(lt.negatives[lang])
    # no sentence is shared between languages, so the pool is the sum of per-language distinct counts
    assert len(lt.texts) == sum(m.counts["distinct_sentences_all_files"].values())
    # every negative block holds sentences of its language: FLORES-200 dev or that language's PAWS-X list
    root = resolve("kojima2024")
    flores_root = resolve("flores200")
    for lang in lt.languages:
        negs = lt.negative_texts(lang)
        for b, other in enumerate(m.counts["negative_block_order"][lang]):
            known = {t.strip() for t in (flores_root / "dev" / f"{other}.txt").read_text(encoding="utf-8").split("\n")}
            known |= set((root / "pawsx" / f"{other}.txt").read_text(encoding="utf-8").split("\n"))
            block = negs[b * 500:(b + 1) * 500]
            assert all(t in known or t.strip() in known for t in block), (lang, other)
    quick = kojima2024(n_positive=50, n_negative=50)
    for lang in quick.languages:
        assert len(quick.positives[lang]) == 50 and len(quick.negatives[lang]) == 50
        full_negs = lt.negative_texts(lang)
        assert quick.negative_texts(lang) == [t for b in range(5) for t in full_negs[b * 500:b * 500 + 10]]


@pytest.mark.real_data
def test_real_flores200(real):
    lt = flores200()
    assert len(lt.languages) == 17 and lt.languages[:6] == ["en", "de", "fr", "es", "zh", "ja"]
    s = lt.summary()
    assert s["n_texts"] == 17 * 500
    for lang in lt.languages:
        assert s["per_language"][lang]["positive"] == 500
        assert s["per_language"][lang]["negative"] == 16 * 500
    en_lines = (resolve("flores200") / "dev" / "en.txt").read_text(encoding="utf-8").split("\n")
    assert lt.positive_texts("en") == [en_lines[i].strip() for i in lt.info["line_numbers"]]
    all_lines = flores200(languages=["en", "ja"], split="all", n_per_language=None)
    assert len(all_lines.positives["ja"]) == 997 + 1012


@pytest.mark.real_data
def test_real_parallel_sentences(real):
    pud = parallel_sentences("pud")
    assert list(pud) == ["en", "de", "fr", "es", "zh"] and all(len(v) == 1000 for v in pud.values())
    tat = parallel_sentences("tatoeba")
    assert len(tat) == 17 and len(tat["en"]) == 4160 and len(tat["ja"]) == 1000
    fl = parallel_sentences("flores200", ["en", "de"])
    assert len(fl["en"]) == len(fl["de"]) == 997
