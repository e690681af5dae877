"""LAMA ConceptNet with the concept selection of Ariyama et al.'s concept-neurons code (paper K).

The LAMA file (`ConceptNet/test.jsonl`, CC BY-NC 4.0) is not shipped; pass its path or put it under
`<data dir>/lama_conceptnet/ConceptNet/test.jsonl`. The selection rule, as written down in
`lama_conceptnet/MANIFEST.md` (paper run: 4 templates, at most 10 words):

1. Per record: subject = `sub_surface` / `sub_label` / `sub` (first present), object = `obj_surface` /
   `obj_label` / `obj`; sentence = the last of `masked_sentences` with exactly one `[MASK]` (else skipped).
2. The subject, used as a case-insensitive regular expression (not escaped; an invalid pattern skips the
   record), must occur in the sentence. The template is the sentence with `[MASK]` replaced by the
   object and then the first match of the subject replaced by `[MASK]`, NFKD-normalised; it is kept if it
   has at most `max_words` space-separated words. Templates are collected per subject as a set.
3. Subjects with fewer than `min_templates` distinct templates are dropped; the rest are the concepts, in
   order of their first kept template. `exclude` removes words (default: the 27 words the reference list
   leaves out). Templates keep their first-seen order (the original code's order depended on the hash seed).
"""
from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lensneurons.data.manifests import DatasetNotFoundError, PathLike, load_manifest, resolve

REFERENCE_LIST = "concept_neurons_place_of_neurons_nt4_at0.2_mw10.csv"
LAMA_FILE = Path("ConceptNet") / "test.jsonl"
# left out of the 702-concept reference list (MANIFEST.md, step 4)
NG_WORDS = frozenset(
    "marijuana grenade guns bigotry rifle revolver pistol destruction terrorism fart farting urinate urinating "
    "ejaculate orgasm penis copulate copulating flirt flirting sex reproduce reproducing fuck pee poop shit".split()
)


@dataclass(frozen=True)
class Concept:
    name: str  # the subject as written in the data: the answer
    templates: tuple[str, ...]  # sentences with the concept replaced by "[MASK]"

    def decoder_pairs(self) -> list[tuple[str, str]]:
        """(prompt, answer) pairs for decoder-only models: each template cut before `[MASK]`; templates that
        start with `[MASK]` have no prompt and are dropped."""
        pairs = []
        for t in self.templates:
            before = t.split("[MASK]", 1)[0]
            prompt = before.rstrip()
            if prompt:
                answer = (" " if before != prompt else "") + self.name
                pairs.append((prompt, answer))
        return list(dict.fromkeys(pairs))

    def masked_pairs(self) -> list[tuple[str, str]]:
        return [(t, self.name) for t in self.templates]


def _first(record: dict, keys: Sequence[str]) -> str | None:
    for k in keys:
        if record.get(k):
            return record[k]
    return None


def select_concepts(
    records: Iterable[dict], min_templates: int = 4, max_words: int = 10, exclude: Iterable[str] = NG_WORDS
) -> list[Concept]:
    """The concept-neurons selection over LAMA-format records (see the module docstring)."""
    if min_templates < 1 or max_words < 1:
        raise ValueError(f"min_templates and max_words must be >= 1, got {min_templates} and {max_words}")
    templates: dict[str, dict[str, None]] = {}  # ordered sets
    for record in records:
        subject = _first(record, ("sub_surface", "sub_label", "sub"))
        obj = _first(record, ("obj_surface", "obj_label", "obj"))
        single = [s for s in record.get("masked_sentences", []) if s.count("[MASK]") == 1]
        if subject is None or obj is None or not single:
            continue
        sentence = single[-1]
        try:
            pattern = re.compile(subject, re.IGNORECASE)
        except re.error:
            continue
        if not pattern.search(sentence):
            continue
        filled = pattern.sub("[MASK]", sentence.replace("[MASK]", obj), count=1)
        template = unicodedata.normalize("NFKD", filled)
        if len(template.split(" ")) <= max_words:
            templates.setdefault(subject, {})[template] = None
    excluded = set(exclude)
    return [
        Concept(subject, tuple(ts))
        for subject, ts in templates.items()
        if len(ts) >= min_templates and subject not in excluded
    ]


def lama_conceptnet(
    path: PathLike | None = None,
    data_dir: PathLike | None = None,
    min_templates: int = 4,
    max_words: int = 10,
    exclude: Iterable[str] = NG_WORDS,
) -> list[Concept]:
    """The paper's concepts from the LAMA ConceptNet file (`path`, or found under the data directory)."""
    if path is None:
        root = resolve("lama_conceptnet", data_dir, verify=False)
        path = root / LAMA_FILE
        if not path.is_file():
            m = load_manifest("lama_conceptnet")
            raise DatasetNotFoundError(
                f"dataset 'lama_conceptnet': the LAMA file is not available: {path} does not exist.\n"
                f"  Put LAMA's data.zip ConceptNet/test.jsonl there or pass path=...; hub: {m.hub_hint()}\n"
                f"  License: {m.license}",
                dataset="lama_conceptnet", path=str(path), hub_id=m.hub_id,
            )
    with open(path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    return select_concepts(records, min_templates, max_words, exclude)


def reference_concepts(data_dir: PathLike | None = None, path: PathLike | None = None) -> list[str]:
    """The 702 concepts of the concept-neurons reference list (bert-base-uncased run), in file order."""
    if path is None:
        path = resolve("lama_conceptnet", data_dir) / REFERENCE_LIST
    names = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith("<LEGEND>:"):
            # the legend may have the first data row glued onto it
            line = line.split("<median of layer nums>", 1)[-1]
        name = line.split(",", 1)[0].strip()
        if name:
            names.append(name)
    return names
