"""Multilingual text for finding language-specific neurons (Kojima et al. 2024).

Every loader returns a :class:`LanguageTexts`: one pool of distinct texts plus, for each language, the
indices of its positive texts (sentences in that language) and of its negative texts (sentences in other
languages). Repeated indices are allowed, so duplicates in a source are kept without running the same text
through a model twice.

Local loaders (datasets found with :func:`lensneurons.data.resolve`, checked against their manifests):

- :func:`kojima2024` - the paper's own sets: 500 positives and 2,500 negatives (5 blocks of 500, one other
  language each) per language, for en/de/fr/es/zh/ja.
- :func:`flores200` - FLORES-200 dev/devtest for 17 languages, one-vs-rest over a parallel sample.
- :func:`parallel_sentences` - plain per-language sentence lists of ``tatoeba``, ``pud`` or ``flores200`` (dev).

Hub loaders for users with network access: :func:`flores_plus_from_hub`, :func:`pawsx_from_hub`.
"""
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from lensneurons.data.manifests import PathLike, load_from_hub, load_manifest, resolve

__all__ = [
    "FLORES_PLUS_CODES",
    "KOJIMA_LANGUAGES",
    "LanguageTexts",
    "flores200",
    "flores_plus_from_hub",
    "kojima2024",
    "parallel_sentences",
    "pawsx_from_hub",
]

KOJIMA_LANGUAGES: tuple[str, ...] = ("en", "de", "fr", "es", "zh", "ja")

# FLORES+ (hub) configs. FLORES+ names Simplified Chinese cmn_Hans (FLORES-200 called it zho_Hans).
FLORES_PLUS_CODES: dict[str, str] = {
    "en": "eng_Latn", "de": "deu_Latn", "fr": "fra_Latn", "es": "spa_Latn", "zh": "cmn_Hans",
    "ja": "jpn_Jpan", "ko": "kor_Hang", "ru": "rus_Cyrl", "ar": "arb_Arab", "hi": "hin_Deva",
    "it": "ita_Latn", "pt": "por_Latn", "nl": "nld_Latn", "pl": "pol_Latn", "tr": "tur_Latn",
    "vi": "vie_Latn", "id": "ind_Latn",
}

Languages = Union[str, Sequence[str]]


# --------------------------------------------------------------------------- container


@dataclass
class LanguageTexts:
    """A pool of distinct texts with per-language positive and negative index lists.

    ``positives[lang]`` / ``negatives[lang]`` index into ``texts``; an index may repeat (a sentence that
    occurs twice in the source keeps both occurrences). ``info`` carries provenance (source, split, seed,
    sampled line numbers, ...).
    """

    texts: list[str]
    positives: dict[str, list[int]]
    negatives: dict[str, list[int]]
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_texts(cls, by_language: Mapping[str, Sequence[str]], source: str = "own texts") -> "LanguageTexts":
        """Your own texts, ``{"en": [...], "fr": [...]}``: each language's texts are its positives and every
        other language's texts its negatives (the paper's protocol). A text listed twice is pooled once."""
        if len(by_language) < 2:
            raise ValueError("give texts of at least two languages: a language's negatives are the others' texts")
        pool: dict[str, int] = {}
        positives = {}
        for lang, texts in by_language.items():
            if isinstance(texts, str) or not texts:
                raise ValueError(f"language {lang!r} needs a non-empty list of texts")
            positives[lang] = [pool.setdefault(text, len(pool)) for text in texts]
        negatives = {lang: [i for other, idx in positives.items() if other != lang for i in idx] for lang in positives}
        return cls(texts=list(pool), positives=positives, negatives=negatives, source=source)

    def __post_init__(self) -> None:
        if not self.positives:
            raise ValueError("LanguageTexts needs at least one language")
        if set(self.positives) != set(self.negatives):
            only_pos = sorted(set(self.positives) - set(self.negatives))
            only_neg = sorted(set(self.negatives) - set(self.positives))
            raise ValueError(
                f"positives and negatives must cover the same languages "
                f"(only in positives: {only_pos}, only in negatives: {only_neg})"
            )
        if len(set(self.texts)) != len(self.texts):
            raise ValueError("texts must be distinct (a shared pool); repeat an index instead of a text")
        n = len(self.texts)
        for kind, table in (("positives", self.positives), ("negatives", self.negatives)):
            for lang, idx in table.items():
                if not idx:
                    raise ValueError(f"language {lang!r} has no {kind}")
                bad = [i for i in idx if not 0 <= i < n]
                if bad:
                    raise ValueError(
                        f"language {lang!r}: {kind} indices out of range [0, {n}): {bad[:5]}"
                        + (" ..." if len(bad) > 5 else "")
                    )

    @property
    def languages(self) -> list[str]:
        return list(self.positives)

    def _check_lang(self, lang: str) -> None:
        if lang not in self.positives:
            raise ValueError(f"unknown language {lang!r}; available: {', '.join(self.languages)}")

    def labelled(self, lang: str) -> tuple[Int[Tensor, " n"], Bool[Tensor, " n"]]:
        """Indices into ``texts`` (positives, then negatives) and labels (True for positives)."""
        self._check_lang(lang)
        pos, neg = self.positives[lang], self.negatives[lang]
        indices = torch.tensor(pos + neg, dtype=torch.long)
        labels = torch.zeros(len(pos) + len(neg), dtype=torch.bool)
        labels[: len(pos)] = True
        return indices, labels

    def positive_texts(self, lang: str) -> list[str]:
        self._check_lang(lang)
        return [self.texts[i] for i in self.positives[lang]]

    def negative_texts(self, lang: str) -> list[str]:
        self._check_lang(lang)
        return [self.texts[i] for i in self.negatives[lang]]

    def summary(self) -> dict[str, Any]:
        """Counts: pool size and, per language, positives / negatives (with and without repeats)."""
        per_language = {
            lang: {
                "positive": len(self.positives[lang]),
                "positive_distinct": len(set(self.positives[lang])),
                "negative": len(self.negatives[lang]),
                "negative_distinct": len(set(self.negatives[lang])),
            }
            for lang in self.languages
        }
        return {
            "source": self.source,
            "languages": self.languages,
            "n_texts": len(self.texts),
            "n_positive": sum(v["positive"] for v in per_language.values()),
            "n_negative": sum(v["negative"] for v in per_language.values()),
            "per_language": per_language,
        }


class _Pool:
    """Distinct texts in order of first appearance."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self._index: dict[str, int] = {}

    def add(self, texts: list[str]) -> list[int]:
        """Add texts (new ones at the end); their indices in order, repeats included."""
        index, pool = self._index, self.texts
        out = []
        for text in texts:
            i = index.get(text)
            if i is None:
                i = index[text] = len(pool)
                pool.append(text)
            out.append(i)
        return out


# --------------------------------------------------------------------------- helpers


def _read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 file, split on '\\n' only, with the newline (and a CR before it) removed."""
    text = path.read_bytes().decode("utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _languages(languages: Optional[Languages], available: Sequence[str], dataset: str) -> list[str]:
    if languages is None:
        return list(available)
    langs = [languages] if isinstance(languages, str) else list(languages)
    if not langs:
        raise ValueError(f"{dataset}: empty language list; available: {', '.join(available)}")
    unknown = [lang for lang in langs if lang not in available]
    if unknown:
        raise ValueError(f"{dataset}: unknown language(s) {unknown}; available: {', '.join(available)}")
    dupes = sorted({lang for lang in langs if langs.count(lang) > 1})
    if dupes:
        raise ValueError(f"{dataset}: language(s) listed twice: {dupes}")
    return langs


def _available(manifest_name: str, folder: str = "") -> list[str]:
    """Languages of a dataset: the manifest's ``counts.languages`` (order kept) that have a file in ``folder``."""
    manifest = load_manifest(manifest_name)
    prefix = f"{folder}/" if folder else ""
    have = [
        rel[len(prefix):-len(".txt")]
        for rel in manifest.files
        if rel.startswith(prefix) and rel.endswith(".txt") and "/" not in rel[len(prefix):]
    ]
    order = list(manifest.counts.get("languages") or [])
    return [lang for lang in order if lang in have] + sorted(lang for lang in have if lang not in order)


def _require_two(langs: list[str], dataset: str) -> None:
    if len(langs) < 2:
        raise ValueError(f"{dataset}: one-vs-rest needs at least two languages, got {langs}")


def _check_count(n: Optional[int], what: str) -> None:
    if n is not None and n < 1:
        raise ValueError(f"{what} must be a positive integer or None, got {n}")


def _sample_positions(valid: list[int], n: Optional[int], seed: int, what: str) -> list[int]:
    """A seeded sample of ``n`` positions from ``valid`` (sorted), or all of them when ``n`` is None."""
    if n is None:
        return list(valid)
    if n > len(valid):
        raise ValueError(f"{what}: asked for {n} sentences per language, only {len(valid)} available")
    return sorted(random.Random(seed).sample(valid, n))


def _one_vs_rest(per_language: dict[str, list[str]], source: str, info: dict[str, Any]) -> LanguageTexts:
    """Positives of L = L's texts; negatives of L = the positives of every other language, in order."""
    if len(per_language) < 2:
        raise ValueError(f"{source}: one-vs-rest needs at least two languages, got {list(per_language)}")
    pool = _Pool()
    positives = {lang: pool.add(texts) for lang, texts in per_language.items()}
    negatives = {
        lang: [i for other, idx in positives.items() if other != lang for i in idx] for lang in positives
    }
    return LanguageTexts(texts=pool.texts, positives=positives, negatives=negatives, source=source, info=info)


# --------------------------------------------------------------------------- Kojima et al. 2024


def kojima2024(
    languages: Languages = KOJIMA_LANGUAGES,
    n_positive: Optional[int] = None,
    n_negative: Optional[int] = None,
    data_dir: Optional[PathLike] = None,
) -> LanguageTexts:
    """The exact positive / negative sentence sets of Kojima et al. 2024.

    For each language: ``positive/<lang>.txt`` (500 sentences in that language) and
    ``negative/<lang>.txt`` (2,500 sentences = 5 blocks of 500, each block one other language). Texts are
    kept verbatim (only the newline is removed; blank lines are dropped) and de-duplicated into one pool;
    the per-language index lists keep file order and repeats.

    ``n_positive`` keeps the first n positives; ``n_negative`` keeps the first ``n_negative / 5`` lines of
    *each* negative block (the remainder goes to the first blocks), so every other language stays
    represented. Both are for quick runs; None keeps everything.
    """
    _check_count(n_positive, "n_positive")
    _check_count(n_negative, "n_negative")
    available = [lang for lang in _available("kojima2024", "positive") if lang in _available("kojima2024", "negative")]
    langs = _languages(languages, available, "kojima2024")
    root = resolve("kojima2024", data_dir)
    counts = load_manifest("kojima2024").counts
    block = int(counts.get("negative_block_size", 500))
    block_order = counts.get("negative_block_order") or {}

    pool = _Pool()
    positives: dict[str, list[int]] = {}
    negatives: dict[str, list[int]] = {}
    for lang in langs:
        pos = [t for t in _read_lines(root / "positive" / f"{lang}.txt") if t.strip()]
        if n_positive is not None:
            if n_positive > len(pos):
                raise ValueError(f"kojima2024: n_positive={n_positive} but {lang!r} has {len(pos)} positives")
            pos = pos[:n_positive]

        raw = _read_lines(root / "negative" / f"{lang}.txt")
        if len(raw) % block:
            raise ValueError(
                f"kojima2024: negative/{lang}.txt has {len(raw)} lines, not a multiple of the block size {block}"
            )
        blocks = [[t for t in raw[i: i + block] if t.strip()] for i in range(0, len(raw), block)]
        if n_negative is not None:
            if n_negative < len(blocks):
                raise ValueError(
                    f"kojima2024: n_negative={n_negative} is smaller than the number of negative blocks "
                    f"({len(blocks)}); every block (one other language each) must keep at least one sentence"
                )
            base, extra = divmod(n_negative, len(blocks))
            takes = [base + (1 if b < extra else 0) for b in range(len(blocks))]
            short = [(b, len(blk)) for b, (blk, k) in enumerate(zip(blocks, takes)) if k > len(blk)]
            if short:
                raise ValueError(
                    f"kojima2024: n_negative={n_negative} needs {max(takes)} sentences per block but "
                    f"{lang!r} block(s) {short} are shorter"
                )
            blocks = [blk[:k] for blk, k in zip(blocks, takes)]

        positives[lang] = pool.add(pos)
        negatives[lang] = pool.add([t for blk in blocks for t in blk])

    info: dict[str, Any] = {
        "dataset": "kojima2024",
        "root": str(root),
        "n_positive": n_positive,
        "n_negative": n_negative,
        "negative_block_order": {lang: list(block_order.get(lang, [])) for lang in langs},
    }
    return LanguageTexts(texts=pool.texts, positives=positives, negatives=negatives, source="kojima2024", info=info)


# --------------------------------------------------------------------------- FLORES-200


_FLORES_SPLITS = ("dev", "devtest", "all")


def _parallel_positions(lines: dict[str, list[str]], n: int | None, seed: int, name: str) -> list[int]:
    """Seeded sample of line numbers that are non-empty in every language of a parallel corpus."""
    sizes = {lang: len(v) for lang, v in lines.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"{name}: files are not parallel, line counts differ: {sizes}")
    n_lines = next(iter(sizes.values()))
    valid = [i for i in range(n_lines) if all(v[i] for v in lines.values())]
    return _sample_positions(valid, n, seed, name)


def flores200(
    languages: Optional[Languages] = None,
    split: str = "dev",
    n_per_language: Optional[int] = 500,
    seed: int = 0,
    data_dir: Optional[PathLike] = None,
) -> LanguageTexts:
    """FLORES-200, one language against the rest.

    Positives of language L are ``n_per_language`` sentences of L: a seeded random sample of line numbers
    (sorted), the *same* line numbers in every language since the files are parallel. Negatives of L are
    the positives of all other languages. ``split`` is ``"dev"`` (997 lines), ``"devtest"`` (1,012) or
    ``"all"`` (dev then devtest); ``languages=None`` takes all 17; ``n_per_language=None`` takes every line.
    Surrounding whitespace is stripped.
    """
    if split not in _FLORES_SPLITS:
        raise ValueError(f"flores200: split must be one of {_FLORES_SPLITS}, got {split!r}")
    _check_count(n_per_language, "n_per_language")
    splits = ["dev", "devtest"] if split == "all" else [split]
    available = _available("flores200", splits[0])
    for sp in splits[1:]:
        available = [lang for lang in available if lang in _available("flores200", sp)]
    langs = _languages(languages, available, "flores200")
    _require_two(langs, "flores200")
    root = resolve("flores200", data_dir)

    lines = {
        lang: [t.strip() for sp in splits for t in _read_lines(root / sp / f"{lang}.txt")] for lang in langs
    }
    chosen = _parallel_positions(lines, n_per_language, seed, f"flores200 ({split})")
    info = {"dataset": "flores200", "root": str(root), "split": split, "seed": seed,
            "n_per_language": n_per_language, "line_numbers": chosen}
    return _one_vs_rest({lang: [lines[lang][i] for i in chosen] for lang in langs}, "flores200", info)


# --------------------------------------------------------------------------- plain sentence lists


_PARALLEL_SOURCES = {"tatoeba": ("tatoeba", ""), "pud": ("pud", ""), "flores200": ("flores200", "dev")}


def parallel_sentences(
    source: str,
    languages: Optional[Languages] = None,
    data_dir: Optional[PathLike] = None,
) -> dict[str, list[str]]:
    """Per-language sentence lists of ``"tatoeba"``, ``"pud"`` or ``"flores200"`` (dev split).

    Every line is kept, in file order, with surrounding whitespace stripped. ``pud`` and ``flores200`` are
    line-aligned (line i is the same sentence in every language; checked). ``tatoeba`` is *not*: each
    language file is its own sample of Tatoeba, and ``en`` is the de-duplicated English side of several pairs.
    """
    if source not in _PARALLEL_SOURCES:
        raise ValueError(f"unknown source {source!r}; available: {', '.join(_PARALLEL_SOURCES)}")
    dataset, folder = _PARALLEL_SOURCES[source]
    langs = _languages(languages, _available(dataset, folder), source)
    root = resolve(dataset, data_dir)
    base = root / folder if folder else root
    out = {lang: [t.strip() for t in _read_lines(base / f"{lang}.txt")] for lang in langs}
    if load_manifest(dataset).counts.get("parallel", False):
        sizes = {lang: len(v) for lang, v in out.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"{source}: expected parallel files, line counts differ: {sizes}")
    return out


# --------------------------------------------------------------------------- hub loaders


def flores_plus_from_hub(
    languages: Languages = KOJIMA_LANGUAGES,
    split: str = "dev",
    n_per_language: Optional[int] = 500,
    seed: int = 0,
    codes: Optional[dict[str, str]] = None,
    **load_kwargs: Any,
) -> LanguageTexts:
    """Like :func:`flores200`, from FLORES+ on the Hugging Face hub (``openlanguagedata/flores_plus``).

    Needs network access and an accepted licence on the hub (the dataset is gated; log in first).
    ``codes`` overrides the language -> config mapping (:data:`FLORES_PLUS_CODES`). Failures raise
    :class:`~lensneurons.data.DatasetNotFoundError`.
    """
    if split not in ("dev", "devtest"):
        raise ValueError(f"flores_plus: split must be 'dev' or 'devtest', got {split!r}")
    _check_count(n_per_language, "n_per_language")
    mapping = {**FLORES_PLUS_CODES, **(codes or {})}
    langs = _languages(languages, list(mapping), "flores_plus")
    _require_two(langs, "flores_plus")
    lines: dict[str, list[str]] = {}
    for lang in langs:
        ds = load_from_hub("flores_plus", split=split, config=mapping[lang], **load_kwargs)
        rows = list(zip(ds["id"], ds["text"])) if "id" in ds.column_names else list(enumerate(ds["text"]))
        lines[lang] = [str(text).strip() for _, text in sorted(rows, key=lambda r: r[0])]
    chosen = _parallel_positions(lines, n_per_language, seed, f"flores_plus ({split})")
    info = {"dataset": "flores_plus", "split": split, "seed": seed, "n_per_language": n_per_language,
            "codes": {lang: mapping[lang] for lang in langs}, "line_numbers": chosen}
    return _one_vs_rest({lang: [lines[lang][i] for i in chosen] for lang in langs}, "flores_plus", info)


def pawsx_from_hub(
    languages: Languages = KOJIMA_LANGUAGES,
    split: str = "test",
    n_per_language: Optional[int] = 500,
    seed: int = 0,
    **load_kwargs: Any,
) -> LanguageTexts:
    """PAWS-X sentences from the hub (``google-research-datasets/paws-x``), one language against the rest.

    Per language: the distinct non-empty ``sentence1`` / ``sentence2`` texts of ``split``, of which a seeded
    sample of ``n_per_language`` (kept in dataset order) are the positives. Failures (e.g. no network) raise
    :class:`~lensneurons.data.DatasetNotFoundError`.
    """
    _check_count(n_per_language, "n_per_language")
    available = list(load_manifest("pawsx").counts.get("languages") or KOJIMA_LANGUAGES)
    langs = _languages(languages, available, "pawsx")
    _require_two(langs, "pawsx")
    per_language: dict[str, list[str]] = {}
    for lang in langs:
        ds = load_from_hub("pawsx", split=split, config=lang, **load_kwargs)
        seen: dict[str, None] = {}
        for s1, s2 in zip(ds["sentence1"], ds["sentence2"]):
            for s in (s1, s2):
                s = str(s).strip()
                if s:
                    seen.setdefault(s, None)
        distinct = list(seen)
        chosen = _sample_positions(list(range(len(distinct))), n_per_language, seed, f"pawsx {lang} ({split})")
        per_language[lang] = [distinct[i] for i in chosen]
    info = {"dataset": "pawsx", "split": split, "seed": seed, "n_per_language": n_per_language}
    return _one_vs_rest(per_language, "pawsx", info)
