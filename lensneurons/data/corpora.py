"""Sentence corpora with metadata, for describing neurons by what their top sentences share (paper O).

`nltk_corpora()` reads six NLTK corpora straight from their zip files in the ``nltk_data`` dataset
(resolved through ``data_manifests/nltk_data.json``): Brown (genre), movie_reviews and
sentence_polarity (sentiment), subjectivity, pros_cons and inaugural (president, year). Every
sentence carries its source corpus, document and label; sentences of fewer than `min_tokens`
whitespace-separated words are dropped. `from_file` and `from_dataset` turn a user's own CSV/JSONL
file or `datasets.Dataset` into the same record; `pos_tag` tags sentences with NLTK's averaged
perceptron tagger from the same folder.

    corpus = nltk_corpora(["brown", "sentence_polarity"])
    corpus.texts[0], corpus.metadata["corpus"][0], corpus.metadata["genre"][0]
"""
from __future__ import annotations

import csv
import json
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from lensneurons.data.manifests import resolve

PathLike = Union[str, Path]

NLTK_CORPORA = ("brown", "movie_reviews", "sentence_polarity", "subjectivity", "pros_cons", "inaugural")
# every field a loaded NLTK corpus can carry; a sentence has None for fields of other corpora
NLTK_FIELDS = ("corpus", "document", "label", "genre", "sentiment", "subjectivity", "pro_con", "president", "year")


@dataclass
class Corpus:
    """Sentences and their metadata: ``metadata[field][i]`` describes ``texts[i]`` (None = not known).

    `words` and `tags` (one list per sentence) are filled by `tagged()`; the analyses tag on demand
    when they are missing.
    """

    texts: list[str]
    metadata: dict[str, list] = field(default_factory=dict)
    words: Optional[list[list[str]]] = None
    tags: Optional[list[list[str]]] = None

    def __post_init__(self) -> None:
        if isinstance(self.texts, str):
            raise ValueError("texts must be a list of strings, not a single string")
        self.texts = list(self.texts)
        if not self.texts:
            raise ValueError("the corpus is empty: it needs at least one sentence")
        n = len(self.texts)
        for name, values in self.metadata.items():
            if len(values) != n:
                raise ValueError(f"metadata field {name!r} has {len(values)} values but the corpus has {n} texts")
        for name in ("words", "tags"):
            values = getattr(self, name)
            if values is not None and len(values) != n:
                raise ValueError(f"{name} has {len(values)} entries but the corpus has {n} texts")
        if self.words is not None and self.tags is not None:
            for i, (w, t) in enumerate(zip(self.words, self.tags)):
                if len(w) != len(t):
                    raise ValueError(f"sentence {i} has {len(w)} words but {len(t)} tags")

    def __len__(self) -> int:
        return len(self.texts)

    def field(self, name: str) -> list:
        """The values of metadata field `name`; ValueError naming the known fields if it is unknown."""
        if name not in self.metadata:
            raise ValueError(f"unknown metadata field {name!r}; this corpus has {sorted(self.metadata) or 'none'}")
        return self.metadata[name]

    def subset(self, ids: Sequence[int]) -> Corpus:
        """The sentences `ids`, in that order, with their metadata."""
        ids = [int(i) for i in ids]
        pick = lambda xs: None if xs is None else [xs[i] for i in ids]  # noqa: E731
        return Corpus(
            [self.texts[i] for i in ids],
            {k: pick(v) for k, v in self.metadata.items()},
            pick(self.words),
            pick(self.tags),
        )

    def lengths(self) -> list[int]:
        """Length of each sentence in words (tagger words when present, else whitespace-separated)."""
        if self.words is not None:
            return [len(w) for w in self.words]
        return [len(t.split()) for t in self.texts]

    def tagged(self, data_dir: Optional[PathLike] = None) -> Corpus:
        """This corpus with `words` and universal POS `tags` (see `pos_tag`); self if already tagged."""
        if self.words is not None and self.tags is not None:
            return self
        words, tags = pos_tag(self.texts, data_dir=data_dir)
        return Corpus(self.texts, self.metadata, words, tags)

    @classmethod
    def concat(cls, corpora: Sequence[Corpus]) -> Corpus:
        """One corpus of all sentences; a field missing from one part is None for its sentences."""
        corpora = list(corpora)
        if not corpora:
            raise ValueError("concat needs at least one corpus")
        names: list[str] = []
        for c in corpora:
            names += [k for k in c.metadata if k not in names]
        texts = [t for c in corpora for t in c.texts]
        metadata = {k: [v for c in corpora for v in c.metadata.get(k, [None] * len(c))] for k in names}
        tagged = all(c.words is not None and c.tags is not None for c in corpora)
        words = [w for c in corpora for w in c.words] if tagged else None
        tags = [t for c in corpora for t in c.tags] if tagged else None
        return cls(texts, metadata, words, tags)


# --------------------------------------------------------------------------- NLTK corpora


def nltk_data_dir(data_dir: Optional[PathLike] = None, verify: bool = True) -> Path:
    """The local ``nltk_data`` folder (under ``data_dir`` or ``$LENSNEURONS_DATA_DIR``), checked against its manifest."""
    return resolve("nltk_data", data_dir=data_dir, verify=verify)


def use_nltk_data(data_dir: Optional[PathLike] = None, verify: bool = True) -> Path:
    """Put the local ``nltk_data`` folder first on `nltk.data.path` (tagger, punkt_tab, universal tagset)."""
    import nltk

    root = str(nltk_data_dir(data_dir, verify))
    if root not in nltk.data.path:
        nltk.data.path.insert(0, root)
    return Path(root)


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # the older review corpora are Latin-1
        return raw.decode("latin-1")


def _read(zf: zipfile.ZipFile, member: str) -> str:
    return _decode(zf.read(member))


def _members(zf: zipfile.ZipFile, prefix: str) -> list[str]:
    return sorted(n for n in zf.namelist() if n.startswith(prefix) and not n.endswith("/"))


def _brown(zf: zipfile.ZipFile) -> list[tuple[str, dict[str, Any]]]:
    genres = {}
    for line in _read(zf, "brown/cats.txt").splitlines():
        if line.strip():
            doc, genre = line.split()[:2]
            genres[doc] = genre
    out = []
    for doc in sorted(genres):
        for line in _read(zf, f"brown/{doc}").splitlines():
            # one sentence per non-blank line, tokens as word/tag
            words = [tok.rsplit("/", 1)[0] for tok in line.split()]
            if words:
                out.append((" ".join(words), {"document": doc, "label": genres[doc], "genre": genres[doc]}))
    return out


def _movie_reviews(zf: zipfile.ZipFile) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for label in ("neg", "pos"):
        for member in _members(zf, f"movie_reviews/{label}/"):
            doc = member.split("/", 1)[1]
            for line in _read(zf, member).splitlines():
                if line.strip():
                    out.append((line.strip(), {"document": doc, "label": label, "sentiment": label}))
    return out


def _sentence_polarity(zf: zipfile.ZipFile) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for label in ("neg", "pos"):
        member = f"sentence_polarity/rt-polarity.{label}"
        for line in _read(zf, member).splitlines():
            if line.strip():
                out.append((line.strip(), {"document": member.split("/")[1], "label": label, "sentiment": label}))
    return out


def _subjectivity(zf: zipfile.ZipFile) -> list[tuple[str, dict[str, Any]]]:
    out = []
    # plot summaries are the objective sentences, review snippets ("quotes") the subjective ones
    for member, label in (("subjectivity/plot.tok.gt9.5000", "objective"), ("subjectivity/quote.tok.gt9.5000", "subjective")):
        for line in _read(zf, member).splitlines():
            if line.strip():
                out.append((line.strip(), {"document": member.split("/")[1], "label": label, "subjectivity": label}))
    return out


_PROS_CONS = re.compile(r"<(Pros|Cons)>(.*?)</\1>", re.DOTALL)


def _pros_cons(zf: zipfile.ZipFile) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for member in ("pros_cons/IntegratedCons.txt", "pros_cons/IntegratedPros.txt"):
        for kind, text in _PROS_CONS.findall(_read(zf, member)):
            label = "pro" if kind == "Pros" else "con"
            text = " ".join(text.split())
            if text:
                out.append((text, {"document": member.split("/")[1], "label": label, "pro_con": label}))
    return out


def _inaugural(zf: zipfile.ZipFile) -> list[tuple[str, dict[str, Any]]]:
    import nltk

    out = []
    for member in _members(zf, "inaugural/"):
        name = member.split("/", 1)[1]
        match = re.fullmatch(r"(\d{4})-(.+)\.txt", name)
        if match is None:  # README
            continue
        year, president = int(match.group(1)), match.group(2)
        for sentence in nltk.sent_tokenize(" ".join(_read(zf, member).split())):
            out.append((sentence, {"document": name, "label": president, "president": president, "year": year}))
    return out


_READERS = {
    "brown": _brown,
    "movie_reviews": _movie_reviews,
    "sentence_polarity": _sentence_polarity,
    "subjectivity": _subjectivity,
    "pros_cons": _pros_cons,
    "inaugural": _inaugural,
}


def load_nltk_corpus(
    name: str, data_dir: Optional[PathLike] = None, min_tokens: int = 3, verify: bool = True
) -> Corpus:
    """One NLTK corpus as a `Corpus` with the fields in `NLTK_FIELDS` (see `nltk_corpora`)."""
    if name not in _READERS:
        raise ValueError(f"unknown NLTK corpus {name!r}; expected one of {list(NLTK_CORPORA)}")
    if min_tokens < 0:
        raise ValueError(f"min_tokens must be >= 0, got {min_tokens}")
    root = use_nltk_data(data_dir, verify)  # inaugural needs punkt_tab for sentence splitting
    path = root / "corpora" / f"{name}.zip"
    if not path.is_file():
        raise ValueError(f"NLTK corpus {name!r} not found: {path} does not exist")
    with zipfile.ZipFile(path) as zf:
        rows = _READERS[name](zf)
    rows = [(text, meta) for text, meta in rows if len(text.split()) >= min_tokens]
    if not rows:
        raise ValueError(f"NLTK corpus {name!r} has no sentence of at least {min_tokens} tokens")
    metadata = {f: [meta.get(f) for _, meta in rows] for f in NLTK_FIELDS if f != "corpus"}
    metadata = {"corpus": [name] * len(rows), **metadata}
    return Corpus([text for text, _ in rows], metadata)


def nltk_corpora(
    names: Optional[Sequence[str]] = None,
    data_dir: Optional[PathLike] = None,
    min_tokens: int = 3,
    verify: bool = True,
) -> Corpus:
    """Sentences of the NLTK corpora `names` (default all of `NLTK_CORPORA`) with their metadata.

    Fields: ``corpus``, ``document`` (file or Brown document id), ``label`` (the corpus' own label:
    genre, pos/neg, objective/subjective, pro/con, president), and per corpus ``genre``,
    ``sentiment``, ``subjectivity``, ``pro_con``, ``president`` and ``year`` (None elsewhere).
    Sentences with fewer than `min_tokens` whitespace-separated words are dropped (the paper
    drops sentences under 3 tokens). The corpora are read from ``<data dir>/nltk_data/corpora``.
    """
    names = list(NLTK_CORPORA if names is None else names)
    if not names:
        raise ValueError("names is empty: choose at least one of " + ", ".join(NLTK_CORPORA))
    if isinstance(names, str) or len(set(names)) != len(names):
        raise ValueError(f"names must be a list of distinct corpus names, got {names!r}")
    return Corpus.concat([load_nltk_corpus(n, data_dir, min_tokens, verify) for n in names])


def pos_tag(
    texts: Sequence[str], data_dir: Optional[PathLike] = None, tagset: str = "universal"
) -> tuple[list[list[str]], list[list[str]]]:
    """Words (NLTK's Treebank tokenizer) and POS tags of each text, from NLTK's averaged perceptron tagger.

    `tagset` is ``"universal"`` (NOUN, VERB, ADJ, ...) or ``"penn"`` (the tagger's own tags). The
    tagger data come from the local ``nltk_data`` folder.
    """
    if tagset not in ("universal", "penn"):
        raise ValueError(f"unknown tagset {tagset!r}; expected 'universal' or 'penn'")
    import nltk
    from nltk.tag.mapping import map_tag
    from nltk.tag.perceptron import PerceptronTagger

    use_nltk_data(data_dir)
    words = [nltk.word_tokenize(t, preserve_line=True) for t in texts]
    tagged = PerceptronTagger().tag_sents(words)
    if tagset == "universal":
        tags = [[map_tag("en-ptb", "universal", t) for _, t in sent] for sent in tagged]
    else:
        tags = [[t for _, t in sent] for sent in tagged]
    return words, tags


# --------------------------------------------------------------------------- a user's own corpus


def _metadata_columns(
    columns: list[str], text_column: str, metadata_columns: Optional[Sequence[str]], origin: str
) -> list[str]:
    """The metadata fields to keep: every column but the text unless named; each must exist."""
    if text_column not in columns:
        raise ValueError(f"{origin} has no text column {text_column!r}; its columns are {columns}")
    if metadata_columns is None:
        return [c for c in columns if c != text_column]
    for c in metadata_columns:
        if c not in columns:
            raise ValueError(f"unknown metadata field {c!r}: {origin} has columns {columns}")
    return list(metadata_columns)


def _from_rows(rows: list[dict], text_column: str, metadata_columns: Optional[Sequence[str]], origin: str) -> Corpus:
    if not rows:
        raise ValueError(f"{origin} is empty: the corpus needs at least one row")
    metadata_columns = _metadata_columns(list(rows[0]), text_column, metadata_columns, origin)
    texts = []
    for i, row in enumerate(rows):
        text = row.get(text_column)
        if not isinstance(text, str):
            raise ValueError(f"{origin} row {i}: text column {text_column!r} holds {text!r}, not a string")
        texts.append(text)
    return Corpus(texts, {c: [row.get(c) for row in rows] for c in metadata_columns})


def from_file(path: PathLike, text_column: str = "text", metadata_columns: Optional[Sequence[str]] = None) -> Corpus:
    """A corpus from a CSV (``.csv``, header row) or JSON-lines (``.jsonl``) file.

    Every column other than `text_column` becomes a metadata field unless `metadata_columns` names them.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"corpus file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    elif suffix in (".jsonl", ".ndjson"):
        rows = []
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{path}:{n} is not valid JSON: {exc}") from exc
    else:
        raise ValueError(f"unsupported corpus file type {suffix!r} ({path}); expected .csv or .jsonl")
    return _from_rows(rows, text_column, metadata_columns, str(path))


def from_dataset(dataset: Any, text_column: str = "text", metadata_columns: Optional[Sequence[str]] = None) -> Corpus:
    """A corpus from a `datasets.Dataset` (or anything with `column_names` and column indexing)."""
    if len(dataset) == 0:
        raise ValueError("the dataset is empty: the corpus needs at least one row")
    metadata_columns = _metadata_columns(list(dataset.column_names), text_column, metadata_columns, "the dataset")
    return Corpus(list(dataset[text_column]), {c: list(dataset[c]) for c in metadata_columns})


def from_frame(frame: Any, text_column: str = "text", metadata_columns: Optional[Sequence[str]] = None) -> Corpus:
    """A corpus from a pandas DataFrame: one row per sentence, every other column a metadata field (missing
    values become None) unless `metadata_columns` names them."""
    if len(frame) == 0:
        raise ValueError("the data frame is empty: the corpus needs at least one row")
    metadata_columns = _metadata_columns([str(c) for c in frame.columns], text_column, metadata_columns,
                                         "the data frame")
    clean = frame.astype(object).where(frame.notna(), None)
    return Corpus([str(t) for t in frame[text_column]], {c: clean[c].tolist() for c in metadata_columns})
