"""Sentence corpora with metadata: NLTK zips faked in tmp_path, user files, and (real_data) the real corpora."""
import hashlib
import json
import zipfile
from pathlib import Path

import nltk
import pytest

from lensneurons.data import DATA_DIR_ENV, MANIFEST_DIR_ENV, DatasetChecksumError, DatasetNotFoundError, load_manifest
from lensneurons.data.corpora import (
    NLTK_CORPORA,
    Corpus,
    from_dataset,
    from_file,
    load_nltk_corpus,
    nltk_corpora,
    pos_tag,
)

# --------------------------------------------------------------------------- a fake nltk_data folder

FAKE = {
    "brown.zip": {
        "brown/cats.txt": "ca01 news\ncb01 editorial\n",
        "brown/ca01": "\n\n\tThe/at jury/nn said/vbd ./.\n\n\tOk/uh ./.\n\n\tIt/pps was/bedz a/at good/jj day/nn ./.\n",
        "brown/cb01": "\n\n\tEditors/nns agree/vb often/rb ./.\n",
    },
    "movie_reviews.zip": {
        "movie_reviews/neg/cv000_1.txt": "a dull and boring film .\nbad .\n\n",
        "movie_reviews/pos/cv001_2.txt": "a lovely little film .\n",
        "movie_reviews/README": "readme\n",
    },
    "sentence_polarity.zip": {
        "sentence_polarity/rt-polarity.pos": "simply the best movie ever .\n",
        # Latin-1, as in the real files
        "sentence_polarity/rt-polarity.neg": "a clich\xe9d and tired mess .\ntoo short\n".encode("latin-1"),
        "sentence_polarity/README.txt": "readme\n",
    },
    "subjectivity.zip": {
        "subjectivity/plot.tok.gt9.5000": "the hero travels to rome .\n",
        "subjectivity/quote.tok.gt9.5000": "an utterly charming piece of work .\n",
    },
    "pros_cons.zip": {
        "pros_cons/IntegratedPros.txt": "  <Pros>Easy to use, cheap</Pros>\n  <Pros>Fast</Pros>\n",
        "pros_cons/IntegratedCons.txt": "  <Cons>Battery dies too quickly</Cons>\n",
    },
    "inaugural.zip": {
        "inaugural/1789-Washington.txt": "Fellow citizens of the Senate. I am here today.\n\nWe go on.\n",
        "inaugural/2021-Biden.txt": "This is democracy's day. Hi.\n",
        "inaugural/README": "speeches\n",
    },
}


def _zip_bytes(members: dict) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content.encode("utf-8") if isinstance(content, str) else content)
    return buf.getvalue()


@pytest.fixture
def fake_nltk(tmp_path, monkeypatch):
    data, mdir = tmp_path / "data", tmp_path / "manifests"
    root = data / "nltk_data"
    files = {}
    for name, members in FAKE.items():
        content = _zip_bytes(members)
        path = root / "corpora" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        files[f"corpora/{name}"] = {"sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content)}
    # an untrained punkt model (empty parameter files) still splits at ". " before a capital
    punkt = root / "tokenizers" / "punkt_tab" / "english"
    punkt.mkdir(parents=True)
    for name in ("abbrev_types.txt", "collocations.tab", "ortho_context.tab", "sent_starters.txt"):
        (punkt / name).write_text("")
    manifest = {
        "name": "nltk_data", "description": "fake", "license": "FAKE", "citation": "fake",
        "source": {"repository": "https://example.org/fake", "commit": None},
        "hub": None, "local_dir": "nltk_data", "files": files,
    }
    mdir.mkdir()
    (mdir / "nltk_data.json").write_text(json.dumps(manifest), encoding="utf-8")
    monkeypatch.setenv(DATA_DIR_ENV, str(data))
    monkeypatch.setenv(MANIFEST_DIR_ENV, str(mdir))
    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))  # use_nltk_data prepends to it
    return root


def test_fake_nltk_corpora_sentences_and_metadata(fake_nltk):
    c = nltk_corpora()
    rows = list(zip(c.texts, c.metadata["corpus"], c.metadata["label"]))
    assert rows == [
        ("The jury said .", "brown", "news"),
        ("It was a good day .", "brown", "news"),
        ("Editors agree often .", "brown", "editorial"),
        ("a dull and boring film .", "movie_reviews", "neg"),
        ("a lovely little film .", "movie_reviews", "pos"),
        ("a clich\xe9d and tired mess .", "sentence_polarity", "neg"),
        ("simply the best movie ever .", "sentence_polarity", "pos"),
        ("the hero travels to rome .", "subjectivity", "objective"),
        ("an utterly charming piece of work .", "subjectivity", "subjective"),
        ("Battery dies too quickly", "pros_cons", "con"),
        ("Easy to use, cheap", "pros_cons", "pro"),
        ("Fellow citizens of the Senate.", "inaugural", "Washington"),
        ("I am here today.", "inaugural", "Washington"),
        ("We go on.", "inaugural", "Washington"),
        ("This is democracy's day.", "inaugural", "Biden"),
    ]
    m = c.metadata
    assert m["genre"][:3] == ["news", "news", "editorial"] and m["genre"][3] is None
    assert m["document"][0] == "ca01" and m["document"][3] == "neg/cv000_1.txt"
    assert m["sentiment"][3:7] == ["neg", "pos", "neg", "pos"] and m["sentiment"][0] is None
    assert m["subjectivity"][7:9] == ["objective", "subjective"]
    assert m["pro_con"][9:11] == ["con", "pro"]
    assert m["president"][11:] == ["Washington", "Washington", "Washington", "Biden"]
    assert m["year"][11:] == [1789, 1789, 1789, 2021]
    assert all(len(v) == len(c) for v in m.values())


def test_fake_min_tokens_and_selection(fake_nltk):
    all_brown = load_nltk_corpus("brown", min_tokens=0)
    assert all_brown.texts == ["The jury said .", "Ok .", "It was a good day .", "Editors agree often ."]
    # "Ok ." (2 tokens), "bad ." and "We go on." (3 tokens stay), "Hi." (1) and "Fast" (1)
    short = nltk_corpora(["movie_reviews", "inaugural", "pros_cons"], min_tokens=0)
    kept = nltk_corpora(["movie_reviews", "inaugural", "pros_cons"])
    dropped = [t for t in short.texts if t not in kept.texts]
    assert sorted(dropped) == sorted(["bad .", "Hi.", "Fast"])
    assert "We go on." in kept.texts
    assert set(kept.metadata["corpus"]) == {"movie_reviews", "inaugural", "pros_cons"}


def test_fake_bad_names_and_missing_or_changed_data(fake_nltk, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown NLTK corpus"):
        nltk_corpora(["brown", "reuters"])
    with pytest.raises(ValueError, match="distinct"):
        nltk_corpora(["brown", "brown"])
    with pytest.raises(ValueError, match="min_tokens"):
        load_nltk_corpus("brown", min_tokens=-1)
    (fake_nltk / "corpora" / "brown.zip").write_bytes(b"changed")
    with pytest.raises(DatasetChecksumError):
        load_nltk_corpus("brown")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFoundError, match="nltk_data"):
        nltk_corpora()


# --------------------------------------------------------------------------- a user's own corpus


def test_from_csv_jsonl_and_dataset(tmp_path):
    csv_path = tmp_path / "c.csv"
    csv_path.write_text("text,author,topic\nhello there world,ann,x\n\"a, b, c\",bob,y\n", encoding="utf-8")
    c = from_file(csv_path)
    assert c.texts == ["hello there world", "a, b, c"]
    assert c.metadata == {"author": ["ann", "bob"], "topic": ["x", "y"]}
    assert from_file(csv_path, metadata_columns=["topic"]).metadata == {"topic": ["x", "y"]}

    jl = tmp_path / "c.jsonl"
    jl.write_text('{"sentence": "one two three", "stars": 5}\n\n{"sentence": "four five six", "stars": 1}\n')
    c = from_file(jl, text_column="sentence")
    assert c.texts == ["one two three", "four five six"] and c.metadata == {"stars": [5, 1]}

    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": ["x y z", "p q r"], "label": [0, 1]})
    c = from_dataset(ds)
    assert c.texts == ["x y z", "p q r"] and c.metadata == {"label": [0, 1]}
    with pytest.raises(ValueError, match="unknown metadata field 'genre'"):
        from_dataset(ds, metadata_columns=["genre"])
    with pytest.raises(ValueError, match="empty"):
        from_dataset(datasets.Dataset.from_dict({"text": []}))


def test_user_corpus_bad_input(tmp_path):
    empty = tmp_path / "e.csv"
    empty.write_text("text,label\n")
    with pytest.raises(ValueError, match="empty"):
        from_file(empty)
    f = tmp_path / "c.csv"
    f.write_text("body,label\nabc def ghi,1\n")
    with pytest.raises(ValueError, match="no text column 'text'"):
        from_file(f)
    with pytest.raises(ValueError, match="unknown metadata field 'genre'"):
        from_file(f, text_column="body", metadata_columns=["genre"])
    with pytest.raises(ValueError, match="unsupported"):
        from_file(_touch(tmp_path / "c.txt"))
    with pytest.raises(ValueError, match="not found"):
        from_file(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="empty"):
        Corpus([])
    with pytest.raises(ValueError, match="has 1 values"):
        Corpus(["a b c", "d e f"], {"label": [1]})
    with pytest.raises(ValueError, match="unknown metadata field"):
        Corpus(["a b c"], {"label": [1]}).field("genre")


def _touch(path: Path) -> Path:
    path.write_text("x\n")
    return path


def test_corpus_subset_and_concat():
    a = Corpus(["a b c", "d e f"], {"label": [1, 2]})
    b = Corpus(["g h i"], {"genre": ["news"]})
    c = Corpus.concat([a, b])
    assert c.texts == ["a b c", "d e f", "g h i"]
    assert c.metadata == {"label": [1, 2, None], "genre": [None, None, "news"]}
    s = c.subset([2, 0])
    assert s.texts == ["g h i", "a b c"] and s.metadata["label"] == [None, 1]
    assert c.lengths() == [3, 3, 3]


# --------------------------------------------------------------------------- the real corpora


@pytest.mark.real_data
def test_real_nltk_corpora_counts(monkeypatch):
    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))
    counts = load_manifest("nltk_data").counts
    brown = load_nltk_corpus("brown", min_tokens=0)
    assert len(brown) == counts["brown_sents"]
    assert sum(len(t.split()) for t in brown.texts) == counts["brown_words"]
    assert len(set(brown.metadata["genre"])) == counts["brown_categories"]
    assert len(set(brown.metadata["document"])) == counts["brown_fileids"]
    # the remaining counts are stated in shared/data/nltk_data/MANIFEST.md (corpora table)
    assert len(load_nltk_corpus("sentence_polarity", min_tokens=0)) == 10_662
    assert len(load_nltk_corpus("subjectivity", min_tokens=0)) == 10_000
    assert len(set(load_nltk_corpus("movie_reviews").metadata["document"])) == 2_000
    inaugural = load_nltk_corpus("inaugural")
    assert len(set(inaugural.metadata["document"])) == 59
    assert min(inaugural.metadata["year"]) == 1789
    pc = load_nltk_corpus("pros_cons")
    assert set(pc.metadata["pro_con"]) == {"pro", "con"}
    everything = nltk_corpora()
    assert set(everything.metadata["corpus"]) == set(NLTK_CORPORA)
    assert all(len(t.split()) >= 3 for t in everything.texts)
    # the tagger example from MANIFEST.md
    words, tags = pos_tag(["The cat sat on the mat."])
    assert list(zip(words[0], tags[0])) == [
        ("The", "DET"), ("cat", "NOUN"), ("sat", "VERB"), ("on", "ADP"), ("the", "DET"), ("mat", "NOUN"), (".", "."),
    ]
