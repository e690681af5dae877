"""One card per unit: what every lens found about it, and a summary line built from those facts by rules.

A card is a plain JSON-able dict (its schema: `lensneurons.atlas.schema.UNIT_SCHEMA`). The summary line only
restates numbers on the card ("ja top-1,000 AP 0.97 (rank 3)", "|t| 12.4 on anaphor_gender_agreement",
"fires on 'not'", "71% pros_cons"); it never guesses what a unit means.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from lensneurons.atlas.sources import CorpusFacts, GrammarFacts, KnowledgeFacts, LanguageFacts
from lensneurons.core.units import UnitSpace


@dataclass
class Thresholds:
    """When a lens's fact is strong enough to enter the summary line and the index's filters."""

    rank_fraction: float = 0.01  # an AP rank in the best (or worst) 1% of all units
    t: float = 5.0  # Welch |t| on some BLiMP task
    share: float = 0.8  # a metadata label's share of the unit's top sentences that carry the field
    min_known: float = 0.5  # ... counted only where at least this share of the top sentences carry it
    pattern_relative: float = 2.0  # a pattern at least this many times as frequent as in the corpus


@dataclass
class Lenses:
    language: LanguageFacts | None = None
    knowledge: KnowledgeFacts | None = None
    grammar: GrammarFacts | None = None
    corpus: CorpusFacts | None = None
    tokens: dict = field(default_factory=dict)  # (layer, unit) -> {"top": [...], "random": [...]} (atlas.tokens)
    described: dict = field(default_factory=dict)  # (layer, unit) -> NeuronDescription.to_dict() with patterns


def _r(x, digits: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def language_part(f: LanguageFacts, layer: int, unit: int) -> dict:
    n = f.n_units
    return {
        "ap": {lang: _r(f.scores[i, layer, unit]) for i, lang in enumerate(f.languages)},
        "rank": {lang: int(f.ranks[i, layer, unit]) for i, lang in enumerate(f.languages)},
        "of": n,
        "median": {lang: _r(f.medians[i, layer, unit]) for i, lang in enumerate(f.languages)},
        "sets": [{"lang": lang, "group": group, "k": f.k, "steering": f.steering.get(lang, {})}
                 for lang, group in f.sets.get((layer, unit), [])],
    }


def knowledge_part(f: KnowledgeFacts, layer: int, unit: int) -> dict:
    facts = []
    for concept, attribution in f.members.get((layer, unit), []):
        fact = f.facts[concept]
        facts.append({"concept": concept, "answer": fact["answer"], "prompt": fact["prompts"][0] if fact["prompts"] else "",
                      "attribution": _r(attribution, 6), "set_size": fact["n_neurons"],
                      "effects": {k: _r(v) for k, v in fact["effects"].items()}})
    facts.sort(key=lambda x: -(x["attribution"] or 0.0))
    return {"facts": facts, "baseline": f.baseline}


def grammar_part(f: GrammarFacts, layer: int, unit: int, top: int = 8) -> dict | None:
    slot = f.slot(layer)
    if slot is None:
        return None
    t = f.t[slot, :, unit]
    order = sorted(range(len(f.tasks)), key=lambda i: -abs(float(t[i])))
    return {
        "tasks": [{"task": f.tasks[i], "t": _r(t[i], 3),
                   "kept_at": [lam for li, lam in enumerate(f.lams) if bool(f.kept[li, slot, i, unit])]}
                  for i in order[:top]],
        "max_abs_t": _r(abs(float(t[order[0]])), 3) if order else None,
        "kept_tasks": {str(lam): int(f.kept[li, slot, :, unit].sum()) for li, lam in enumerate(f.lams)},
        "n_tasks": len(f.tasks),
    }


def corpus_part(f: CorpusFacts, layer: int, unit: int, tokens: dict | None, described: dict | None,
                n_top: int) -> dict | None:
    cn = f.neurons
    if layer not in cn.layers_:
        return None
    top = [{"sentence": i, "activation": _r(v), "text": text} for i, v, text in cn.top_sentences(layer, unit, n_top)]
    for row, tok in zip(top, (tokens or {}).get("top", [])):
        row.update(tokens=tok["tokens"], values=tok["values"])
    slot = cn.layers_.index(layer)
    meta = {name: {k: _r(v, 3) for k, v in shares.of(slot, unit).items()} for name, shares in f.metadata.items()}
    part = {"top": top, "k": int(cn.top_ids_.shape[0]), "metadata": {k: v for k, v in meta.items() if v},
            "known": {name: int(shares.known[slot, unit]) for name, shares in f.metadata.items() if meta[name]},
            "cluster": f.clusters.get((layer, unit)), "mean_length": _r(f.mean_length[slot, unit], 2),
            "random": (tokens or {}).get("random", [])}
    d = described or f.descriptions.get((layer, unit))
    if d:
        part.update({key: d.get(key) for key in ("ngrams", "skipgrams", "pos_patterns", "pos_distribution",
                                                  "classifier_like", "chance", "outlier", "activation_ratio")})
    return part


def card(lenses: Lenses, space: UnitSpace, layer: int, unit: int, n_layers: int, n_top: int = 5,
         thresholds: Thresholds = Thresholds()) -> dict:
    component, within = space.component_of(unit)
    out = {"id": unit_id(layer, unit), "layer": layer, "unit": unit, "site": space.site,
           "component": component.label, "index_in_component": within,
           "neighbours": [unit_id(l, unit) for l in (layer - 1, layer + 1) if 0 <= l < n_layers]}
    if lenses.language is not None:
        out["language"] = language_part(lenses.language, layer, unit)
    if lenses.knowledge is not None:
        out["knowledge"] = knowledge_part(lenses.knowledge, layer, unit)
    if lenses.grammar is not None:
        out["grammar"] = grammar_part(lenses.grammar, layer, unit)
    if lenses.corpus is not None:
        out["corpus"] = corpus_part(lenses.corpus, layer, unit, lenses.tokens.get((layer, unit)),
                                    lenses.described.get((layer, unit)), n_top)
    out["summary"] = summary_line(out, thresholds)
    return out


def unit_id(layer: int, unit: int) -> str:
    return f"L{layer}/{unit}"


def summary_line(c: dict, th: Thresholds = Thresholds()) -> str:
    """A short line of the card's strongest facts, each a restatement of a number on the card."""
    parts = []
    lang = c.get("language")
    if lang:
        for s in lang["sets"]:
            i = lang["rank"][s["lang"]]
            where = f"rank {i:,}" if s["group"] == "top" else f"rank {lang['of'] + 1 - i:,} from the bottom"
            parts.append(f"{s['lang']} {s['group']}-{s['k']:,} AP {lang['ap'][s['lang']]:.2f} ({where})")
        if not lang["sets"]:
            best = min(lang["rank"], key=lang["rank"].get)
            if lang["rank"][best] <= th.rank_fraction * lang["of"]:
                parts.append(f"{best} top-{th.rank_fraction:.0%} AP {lang['ap'][best]:.2f}")
    know = c.get("knowledge")
    if know and know["facts"]:
        names = ", ".join(f"{f['concept']} → {f['answer'].strip()}" for f in know["facts"][:2])
        more = len(know["facts"]) - 2
        parts.append(f"knowledge neuron of {names}" + (f" (+{more})" if more > 0 else ""))
    gram = c.get("grammar")
    if gram and gram["max_abs_t"] is not None and gram["max_abs_t"] >= th.t:
        parts.append(f"|t| {gram['max_abs_t']:.1f} on {gram['tasks'][0]['task']}")
    corp = c.get("corpus")
    if corp:
        pattern = next((p for p in (corp.get("ngrams") or []) + (corp.get("skipgrams") or [])
                        if (p.get("relative") or 0) >= th.pattern_relative), None)
        if pattern:
            share = pattern["support_top"] / corp["k"]  # support_top counts top sentences
            parts.append(f"fires on '{' '.join(pattern['items'])}' ({share:.0%} of top sentences)")
        for name, label, share in dominant_labels(corp, th):
            parts.append(f"{share:.0%} {label}" + ("" if name == "corpus" else f" ({name})"))
        if corp.get("outlier"):
            parts.append("outlier dimension")
    return "; ".join(parts) if parts else "no lens singles it out"


def dominant_labels(corp: dict | None, th: Thresholds = Thresholds(), share: float | None = None) -> list[tuple]:
    """(field, label, share) of each metadata field whose most common label reaches `share` (default
    `th.share`) of the unit's top sentences that carry the field, where at least `th.min_known` of the top
    sentences carry it (a field known for 2 of 20 sentences says little), highest share first."""
    if not corp:
        return []
    floor = th.share if share is None else share
    known = corp.get("known") or {}
    out = [(name, *next(iter(dist.items()))) for name, dist in (corp.get("metadata") or {}).items()
           if known.get(name, corp["k"]) >= th.min_known * corp["k"]]
    return sorted(((n, lab, s) for n, lab, s in out if s is not None and s >= floor), key=lambda x: -x[2])
