"""PARAREL (Elazar et al. 2021): T-REx facts with their relation's paraphrased patterns.

The data of Dai et al. (2022): every fact (subject, relation, object) is asked with each of its relation's
patterns (`[X]` = subject, `[Y]` = object), which gives several differently-worded prompts for one piece of
knowledge. Found through `data_manifests/pararel.json` (`lensneurons.data.resolve`).

For decoder-only models the object must be the next token(s) after the prompt: each pattern is cut at
`[Y]` (``cut=True``, patterns whose subject comes after `[Y]` are dropped) or only patterns that end at
`[Y]` (nothing but punctuation after it) are kept (``cut=False``).
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lensneurons.data.manifests import PathLike, resolve

STYLES = ("decoder", "masked")


@dataclass(frozen=True)
class Fact:
    relation: str  # e.g. "P36"
    uuid: str
    subject: str
    object: str  # obj_label
    prompts: tuple[str, ...]  # decoder: text before the object; masked: the pattern with a mask token
    answer: str  # what follows each prompt: " " + object for decoder prompts, the object for masked ones

    @property
    def key(self) -> str:
        return f"{self.relation}:{self.subject} -> {self.object}"

    def pairs(self) -> list[tuple[str, str]]:
        return [(p, self.answer) for p in self.prompts]


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def decoder_prompt(pattern: str, subject: str, cut: bool = True) -> str | None:
    """The pattern filled with the subject and ended before `[Y]`; None when that is not possible."""
    if pattern.count("[Y]") != 1 or pattern.count("[X]") != 1:
        return None
    before, after = pattern.split("[Y]")
    if "[X]" not in before:
        return None
    if not cut and re.sub(r"[\s.!?,;:]", "", after):
        return None
    prompt = before.replace("[X]", subject).rstrip()
    return prompt or None


def pararel(
    data_dir: PathLike | None = None,
    relations: Sequence[str] | None = None,
    style: str = "decoder",
    cut: bool = True,
    min_prompts: int = 2,
    mask_token: str = "[MASK]",
    verify: bool = True,
) -> list[Fact]:
    """All facts of the chosen relations (default: every relation with patterns), in file order.

    Facts with fewer than `min_prompts` distinct prompts are left out (refinement needs several).
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
    if min_prompts < 1:
        raise ValueError(f"min_prompts must be >= 1, got {min_prompts}")
    root = resolve("pararel", data_dir, verify=verify)
    available = sorted(p.stem for p in (root / "patterns").glob("P*.jsonl"))
    with_facts = {p.stem for p in (root / "trex_lms_vocab").glob("P*.jsonl")}
    available = [r for r in available if r in with_facts]
    if relations is None:
        relations = available
    unknown = [r for r in relations if r not in available]
    if unknown:
        raise ValueError(f"unknown PARAREL relation(s) {unknown}; available: {available}")
    facts = []
    for rel in relations:
        patterns = [row["pattern"] for row in _read_jsonl(root / "patterns" / f"{rel}.jsonl")]
        for row in _read_jsonl(root / "trex_lms_vocab" / f"{rel}.jsonl"):
            subject, obj = row["sub_label"], row["obj_label"]
            if style == "decoder":
                prompts = [decoder_prompt(p, subject, cut) for p in patterns]
                answer = " " + obj
            else:
                prompts = [p.replace("[X]", subject).replace("[Y]", mask_token) for p in patterns]
                answer = obj
            distinct = tuple(dict.fromkeys(p for p in prompts if p))
            if len(distinct) >= min_prompts:
                facts.append(Fact(rel, row["uuid"], subject, obj, distinct, answer))
    return facts


def to_prompts(facts: Sequence[Fact]) -> dict[str, list[tuple[str, str]]]:
    """{fact key: [(prompt, answer), ...]}, the input of `KnowledgeNeurons.fit`."""
    return {f.key: f.pairs() for f in facts}
