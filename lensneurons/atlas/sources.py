"""What each lens saved, read back per unit: the atlas's inputs.

Each reader takes a lens's results folder (as its study writes it) and returns the per-unit facts the cards
show, as arrays over (layer, unit) where the lens covers every unit and as {(layer, unit): [...]} where it
marks a few. Nothing here recomputes a lens; the corpus reader rebuilds the fitted `CorpusNeurons` from the
state its study saved (its checkpoint holds the merged top-K pass), which needs the corpus itself.
"""
from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lensneurons.core.results import CONFIG
from lensneurons.lenses.language.analysis import LanguageNeurons

Unit = tuple[int, int]


def read_config(folder: str | Path) -> dict:
    """The configuration a results folder was made with; a clear error when the folder is not a results folder."""
    path = Path(folder) / CONFIG
    if not path.exists():
        raise FileNotFoundError(f"{folder} is not a results folder (it has no {CONFIG}); run the lens into it first")
    return json.loads(path.read_text(encoding="utf-8"))


def _rows(path: Path) -> list[dict]:
    if not path.exists() or path.stat().st_size == 0:
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _need(folder: Path, *names: str) -> None:
    missing = [n for n in names if not (folder / n).exists()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {missing}: the lens did not finish there (rerun it to resume)")


@dataclass
class LanguageFacts:
    """AP of every unit for every language, its rank among all units (1 = highest AP), the clamp medians,
    the top/bottom sets each unit belongs to and the steering rates of those sets."""

    languages: list[str]
    k: int
    scores: np.ndarray  # (lang, layer, unit) average precision
    ranks: np.ndarray  # (lang, layer, unit) 1 = the highest AP of that language
    medians: np.ndarray  # (lang, layer, unit) the value a clamp sets
    sets: dict[Unit, list[tuple[str, str]]]  # (layer, unit) -> [(lang, "top" | "bottom")]
    steering: dict[str, dict[str, float]]  # lang -> condition -> % of generations in lang

    @property
    def n_units(self) -> int:
        return self.scores[0].size


def read_language(folder: str | Path) -> LanguageFacts:
    folder = Path(folder)
    _need(folder, "ap_scores.pt")
    cfg = read_config(folder)
    saved = torch.load(folder / "ap_scores.pt", weights_only=True)
    ln = LanguageNeurons.from_scores(saved["scores"], saved["medians"], saved["languages"], k=cfg["k"],
                                     site=cfg.get("site", "mlp"), mean_differences=saved.get("mean_differences"))
    flat = ln.scores_.flatten(1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(1, flat.shape[1] + 1).expand_as(order).contiguous())
    sets: dict[Unit, list] = defaultdict(list)
    for lang in ln.languages_:
        for group in ("top", "bottom"):
            for layer, unit in ln.neurons(lang, group):
                sets[(layer, unit)].append((lang, group))
    steering = {r["lang"]: {c: float(v) for c, v in r.items() if c != "lang"}
                for r in _rows(folder / "steering.csv") if r["lang"] != "avg"}
    return LanguageFacts(ln.languages_, ln.k, ln.scores_.numpy(), ranks.view_as(ln.scores_).numpy(), ln.medians_.numpy(),
                         dict(sets), steering)


@dataclass
class KnowledgeFacts:
    """The facts whose refined knowledge-neuron sets hold each unit, with its attribution there and the
    effect of editing the whole set (mean relative change of P(answer), per edit and target)."""

    facts: dict[str, dict]  # concept -> {"answer", "prompts", "neurons", "effects": {"suppress/own": ...}}
    members: dict[Unit, list[tuple[str, float | None]]]  # (layer, unit) -> [(concept, attribution)]
    baseline: str


def read_knowledge(folder: str | Path) -> KnowledgeFacts:
    folder = Path(folder)
    _need(folder, "neurons.json")
    saved = json.loads((folder / "neurons.json").read_text(encoding="utf-8"))
    attribution = {(r["concept"], int(r["layer"]), int(r["neuron"])): float(r["attribution"])
                   for r in _rows(folder / "knowledge_neurons.csv")}  # absent in folders of before session 24
    effects: dict[str, dict] = defaultdict(dict)
    for r in _rows(folder / "summary.csv"):
        effects[r["concept"]][f"{r['edit']}/{r['target']}"] = float(r["mean_relative_change"])
    facts, members = {}, defaultdict(list)
    for concept, c in saved["concepts"].items():
        facts[concept] = {"answer": c["prompts"][0][1] if c["prompts"] else "", "prompts": [p for p, _ in c["prompts"]],
                          "n_neurons": len(c["neurons"]), "effects": effects.get(concept, {})}
        for layer, unit in c["neurons"]:
            members[(layer, unit)].append((concept, attribution.get((concept, layer, unit))))
    return KnowledgeFacts(facts, dict(members), saved.get("baseline", ""))


@dataclass
class GrammarFacts:
    """Welch |t| of every unit on every BLiMP task (grammatical vs ungrammatical states) and which L0 mask
    probes keep it, per λ."""

    tasks: list[str]
    layers: list[int]  # the probed layers; slot i of the arrays is layer layers[i]
    lams: list[float]
    t: np.ndarray  # (slot, task, unit)
    kept: np.ndarray  # (lam, slot, task, unit) bool: the mask probe's gate is open

    def slot(self, layer: int) -> int | None:
        return self.layers.index(layer) if layer in self.layers else None


def read_grammar(folder: str | Path) -> GrammarFacts:
    folder = Path(folder)
    _need(folder, "probes.pt")
    state = torch.load(folder / "probes.pt", weights_only=True)["value"]
    lams = sorted(set(state["params"]["lams"]), reverse=True)  # the order SparseProbing fits them in
    return GrammarFacts(list(state["tasks_"]), list(state["layers_"]), lams, state["t_"].numpy(),
                        (state["gates_"] > 0).numpy())


@dataclass
class LabelShares:
    """One metadata field's most common labels among every unit's top sentences: `codes[r, slot, unit]` is
    the r-th label (an index into `labels`, -1 past the last) and `shares` its share of the sentences that
    carry the field. Ties are ordered by first appearance in the unit's top list, as in
    `lensneurons.lenses.corpus.analysis.metadata_distribution`."""

    labels: list
    codes: np.ndarray  # (rank, slot, unit) int
    shares: np.ndarray  # (rank, slot, unit) float
    known: np.ndarray  # (slot, unit) int: how many of the unit's top sentences carry the field

    def of(self, slot: int, unit: int) -> dict:
        return {str(self.labels[c]): float(s) for c, s in zip(self.codes[:, slot, unit], self.shares[:, slot, unit])
                if c >= 0}


def label_shares(values: list, top_ids: np.ndarray, keep: int = 6) -> LabelShares:
    """`LabelShares` of one field (`values`, one per sentence, None for unknown) over `top_ids` (K, slot, unit)."""
    labels = list(dict.fromkeys(v for v in values if v is not None))
    code_of = {v: i for i, v in enumerate(labels)}
    codes = np.array([code_of.get(v, -1) if v is not None else -1 for v in values], dtype=np.int64)[top_ids]
    known = (codes >= 0).sum(0)
    k = top_ids.shape[0]
    counts = np.stack([(codes == i).sum(0) for i in range(len(labels))]) if labels else np.zeros((0, *known.shape))
    first = np.stack([np.where((codes == i).any(0), (codes == i).argmax(0), k) for i in range(len(labels))]) \
        if labels else np.zeros((0, *known.shape))
    # order labels by count (descending), then by first appearance; keep the best `keep`
    order = np.lexsort((first, -counts), axis=0)[:keep] if labels else np.zeros((0, *known.shape), dtype=np.int64)
    top_counts = np.take_along_axis(counts, order, 0) if labels else counts
    shares = np.divide(top_counts, known, out=np.zeros(top_counts.shape), where=known > 0)
    codes_out = np.where(top_counts > 0, order, -1)
    return LabelShares(labels, codes_out, shares, known)


@dataclass
class CorpusFacts:
    """The fitted corpus lens (top-K sentences, metadata) with its neuron clusters and saved descriptions,
    and per-unit tables computed once for all units (metadata shares, mean top-sentence length)."""

    neurons: object  # a fitted lensneurons.lenses.corpus.analysis.CorpusNeurons
    clusters: dict[Unit, int] = field(default_factory=dict)
    descriptions: dict[Unit, dict] = field(default_factory=dict)
    metadata: dict[str, LabelShares] = field(default_factory=dict)
    mean_length: np.ndarray | None = None  # (slot, unit) words

    def __post_init__(self):
        cn = self.neurons
        top = cn.top_ids_.numpy()
        self.metadata = {name: label_shares(values, top) for name, values in cn.corpus_.metadata.items()}
        self.mean_length = np.asarray(cn.lengths_, dtype=np.float64)[top].mean(0)


def read_corpus(folder: str | Path, corpus=None) -> CorpusFacts:
    """`corpus`: the sentences the lens ran on (default: loaded again from the folder's configuration)."""
    from lensneurons.lenses.corpus.analysis import CorpusNeurons
    from lensneurons.lenses.corpus.study import CorpusNeuronsConfig, load_corpus

    folder = Path(folder)
    _need(folder, "checkpoint.pt", "top_sentences.pt")
    if corpus is None:
        corpus = load_corpus(CorpusNeuronsConfig(**read_config(folder)))
    state = torch.load(folder / "checkpoint.pt", weights_only=True)["state"]["state"]
    cn = CorpusNeurons.from_state_dict(state, corpus)
    clusters = {(int(r["layer"]), int(r["neuron"])): int(r["cluster"]) for r in _rows(folder / "clusters.csv")}
    path = folder / "descriptions.json"
    described = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
    return CorpusFacts(cn, clusters, {(d["layer"], d["neuron"]): d for d in described})
