"""Facts for the knowledge-neuron lens: which the model knows, how they group, and how edits spread.

`select_facts` keeps the concepts whose prompts the model answers correctly (top-1); `relation_of` and
`default_unrelated` group PARAREL concepts by relation; `distribution` summarises the relative change of
P(answer) under edits per edit and target; `concept_pos` tags each concept's answer by part of speech.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformer_lens import HookedEncoder

from lensneurons.core.models import HookedModel
from lensneurons.lenses.knowledge.analysis import pos_group
from lensneurons.lenses.knowledge.attribution import answer_logits, batch_answer_logits, encode, final_resid, right_padded

Prompts = Mapping[str, Sequence[tuple[str, str]]]


def top1_correct(model: HookedModel, pairs: Sequence[tuple[str, str | int]]) -> list[bool]:
    """For each (prompt, answer): whether the answer's first token is the model's most likely token after the
    prompt (at the mask). A causal LM scores all prompts in one right-padded batch."""
    queries = [encode(model, p, a, "first") for p, a in pairs]
    if not queries:
        return []
    with torch.no_grad():
        if isinstance(model, HookedEncoder):  # padding would need an attention mask: one prompt at a time
            return [int(answer_logits(model, final_resid(model, q.tokens), q)[0, 0].argmax()) == int(q.targets[0])
                    for q in queries]
        logits, _, targets = batch_answer_logits(model, final_resid(model, right_padded(model, queries)), queries)
    return (logits.argmax(-1).cpu() == targets).tolist()


def resolve_scoring(model: HookedModel, scoring: str) -> str:
    if scoring == "auto":
        return "single" if isinstance(model, HookedEncoder) else "joint"
    return scoring


def is_single_token(model: HookedModel, answer: str) -> bool:
    return len(model.tokenizer(answer, add_special_tokens=False)["input_ids"]) == 1


def select_facts(
    model: HookedModel, candidates: Prompts, n_concepts: int, min_correct: float = 0.5, scoring: str = "auto",
    progress: bool = False,
) -> tuple[dict, int]:
    """The first `n_concepts` candidates whose prompts the model answers correctly (top-1) for at least
    `min_correct` of them; also how many were tried. With single-token scoring, concepts whose answer is
    several tokens are passed over (not counted)."""
    single = resolve_scoring(model, scoring) == "single"
    kept, tried = {}, 0
    bar = tqdm(total=n_concepts, desc="selecting facts", unit="fact", disable=not progress)
    for concept, pairs in candidates.items():
        if len(kept) >= n_concepts:
            break
        if single and not all(is_single_token(model, a) for _, a in pairs):
            continue
        tried += 1
        correct = top1_correct(model, pairs)
        if sum(correct) >= min_correct * len(pairs) and len(pairs) >= 2:
            kept[concept] = list(pairs)
            bar.update()
        bar.set_postfix(tried=tried, refresh=False)
    bar.close()
    return kept, tried


def relation_of(concept: str) -> str:
    """The PARAREL relation of a concept key ("P36:Japan -> Tokyo" → "P36"); other keys are their own group."""
    return concept.split(":", 1)[0] if ":" in concept else concept


def distribution(rows: Sequence[Mapping]) -> list[dict]:
    """Quartiles, range and share below 0 of the relative change (%) over prompts, per edit and target;
    the random targets also split by whether the other concept shares the edited concept's relation."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        targets = [r["target"]]
        if r["target"] == "random":
            same = relation_of(r["target_concept"]) == relation_of(r["concept"])
            targets.append("random, same relation" if same else "random, other relation")
        for target in targets:
            groups.setdefault((r["edit"], target), []).append(100 * r["relative_change"])
    out = []
    for (edit, target), values in sorted(groups.items()):
        v = np.asarray(values, dtype=float)
        v = v[~np.isnan(v)]
        q1, median, q3 = np.percentile(v, [25, 50, 75]) if len(v) else (np.nan,) * 3
        out.append({"edit": edit, "target": target, "n": len(v), "q1": q1, "median": median, "q3": q3,
                    "min": v.min() if len(v) else np.nan, "max": v.max() if len(v) else np.nan,
                    "share_below_0": float((v < 0).mean()) if len(v) else np.nan})
    return out


def default_unrelated(concepts: Mapping[str, object]) -> str:
    """The fixed unrelated concept: one from the relation with the fewest concepts (the last such).

    PARAREL keys are "relation:subject -> object"; a concept of another relation is the paper's
    intent ("london" for ConceptNet concepts), and the rarest relation shares it with the fewest
    concepts. Keys without a relation prefix (LAMA) each count as their own group.
    """
    if not concepts:
        raise ValueError("no concepts to choose an unrelated one from")
    relation = {c: relation_of(c) for c in concepts}
    size = Counter(relation.values())
    return min(reversed(list(concepts)), key=lambda c: size[relation[c]])


def resolve_baseline(model: HookedModel, baseline: str) -> str:
    if baseline == "auto":
        return "mean" if getattr(model.cfg, "use_normalization_before_and_after", False) else "zero"
    if baseline not in ("zero", "mean"):
        raise ValueError(f"unknown baseline {baseline!r}; expected auto, zero or mean")
    return baseline


def concept_pos(prompts: Prompts, mask_token: str | None = None) -> dict[str, str]:
    """Part-of-speech group of each concept's answer in its first prompt (`pos_group`); "unknown" when
    NLTK's tagger data are missing."""
    out = {}
    for concept, pairs in prompts.items():
        prompt, answer = pairs[0]
        text = prompt.replace(mask_token, answer) if mask_token and mask_token in prompt else prompt + answer
        try:
            out[concept] = pos_group(text, answer.strip())
        except LookupError:
            out[concept] = "unknown"
    return out
