"""The neuron atlas: every lens on one unit space of one model, joined into one card per unit, as a static site.

Stages, each saved as it finishes (a rerun resumes): every lens that has no saved results is run into
`<out>/<lens>/` at the chosen scale (or its saved folder is given) → the corpus lens's top sentences and a
shared random sample are read token by token in one pass (`token_values.json`) → PrefixSpan patterns for the
units most lenses single out (`patterns.json`) → cards, index, exports and the overview plot (`<out>/site/`).

    lensneurons atlas --model gemma-3-270m --site mlp --out results/atlas_demo
    lensneurons atlas --preset full --language-results results/paper ... --out results/atlas_full
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lensneurons.atlas import sources
from lensneurons.atlas.cards import Lenses, Thresholds, card, dominant_labels
from lensneurons.atlas.figures import overview
from lensneurons.atlas.site import write_site
from lensneurons.atlas.tokens import token_values
from lensneurons.core.models import weights_digest
from lensneurons.core.results import ResultsFolder, fingerprint
from lensneurons.core.study import MODEL_HELP, Study, StudyConfig, param
from lensneurons.core.units import unit_space

LENSES = ("language", "knowledge", "grammar", "corpus")
# each lens's study (lensneurons.cli.STUDIES) and its configuration at each scale: (preset, changes)
LENS_STUDIES = {"language": "language-neurons", "knowledge": "knowledge-neurons", "grammar": "sparse-probing",
                "corpus": "corpus-neurons"}
SCALES = {
    # minutes on 2 CPU cores: each lens's own demo size; 3,000 sentences for the corpus lens
    "demo": {"language": ("demo", dict(ablation_ks=[])), "knowledge": ("demo", {}), "grammar": ("demo", {}),
             "corpus": ("default", dict(n_sentences=3000, k=20, n_sample=300, sse_k_max=0, n_describe=0,
                                        tsne=False))},
    # the paper-size runs of the results docs (hours)
    "full": {"language": ("mlp-units", {}), "knowledge": ("paper", {}), "grammar": ("paper", {}),
             "corpus": ("default", dict(n_sentences=45000, k=750, n_describe=0))},
}


@dataclass
class AtlasData:
    """Data for the lenses the atlas runs itself (None: each lens loads its own dataset)."""

    language: Any = None  # LanguageTexts
    knowledge: Any = None  # {concept: [(prompt, answer)]}
    grammar: Any = None  # {task: [MinimalPair]}
    corpus: Any = None  # Corpus


@dataclass
class AtlasConfig(StudyConfig):
    model: str = param("gemma-3-270m", MODEL_HELP)
    site: str = param("mlp", "the unit space every lens reads (knowledge neurons need mlp: other spaces skip that lens)")
    scale: str = param("demo", "size of the lens runs the atlas starts itself", choices=tuple(SCALES))
    lenses: list[str] = param(help="lenses joined on the cards", factory=lambda: list(LENSES))
    language_results: str | None = param(None, "a finished language-neurons folder to reuse (none: run it into <out>/language)")
    knowledge_results: str | None = param(None, "a finished knowledge-neurons folder to reuse")
    grammar_results: str | None = param(None, "a finished sparse-probing folder to reuse")
    corpus_results: str | None = param(None, "a finished corpus-neurons folder to reuse")
    n_top: int = param(5, "top sentences per card, shown token by token", low=1)
    n_random: int = param(3, "random corpus sentences per card (drawn from one shared sample)", low=0)
    random_pool: int = param(50, "size of the shared random sample of the corpus", low=1)
    n_patterns: int = param(40, "units whose top sentences are mined for PrefixSpan patterns (those most lenses single out)", low=0)
    t_threshold: float = param(5.0, "Welch |t| from which a BLiMP task enters a summary line", low=0.0)
    shard_size: int = param(256, "cards per data file of the site", low=1)
    random_state: int = param(0, "seed of the random sample", flags=("--seed",))

    presets: ClassVar[dict] = {"demo": {}, "full": dict(scale="full", n_patterns=500)}

    def check(self) -> None:
        super().check()
        unknown = [lens for lens in self.lenses if lens not in LENSES]
        if unknown or not self.lenses:
            raise ValueError(f"--lenses must name some of {list(LENSES)}, got {self.lenses}")


def lens_config(cfg: AtlasConfig, lens: str):
    """The configuration the atlas runs `lens` with: its preset at the atlas's scale, on the atlas's model and site."""
    from lensneurons.cli import study

    preset, changes = SCALES[cfg.scale][lens]
    s = study(LENS_STUDIES[lens])
    fields = s.config.__dataclass_fields__
    if lens == "language" and cfg.site != "mlp" and preset == "mlp-units":
        preset = "paper"  # the paper's protocol, on the atlas's units
    extra = {"model": cfg.model, **({"site": cfg.site} if "site" in fields else {}), **changes}
    return s, s.configure(preset, **extra)


def _lens_folder(cfg: AtlasConfig, lens: str, model, folder: ResultsFolder, data: AtlasData, progress: bool) -> Path:
    given = getattr(cfg, f"{lens}_results")
    if given is not None:
        saved = sources.read_config(given)
        for key, unstated in (("model", cfg.model), ("site", "mlp")):  # a lens without a site reads mlp neurons
            if saved.get(key, unstated) != getattr(cfg, key):
                raise ValueError(f"--{lens}-results {given} was run with {key} {saved.get(key, unstated)!r}; "
                                 f"the atlas uses {getattr(cfg, key)!r}")
        return Path(given)
    s, lens_cfg = lens_config(cfg, lens)
    out = folder.path / lens
    lens_data = getattr(data, lens)
    s.run(model, lens_cfg, out, progress=progress, **({s.data_keyword: lens_data} if lens_data is not None else {}))
    return out


def run(model, cfg: AtlasConfig, out: str | Path, data: AtlasData | None = None, progress: bool = True) -> dict:
    """Run (or resume) the atlas into folder `out`; the site is `<out>/site/index.html`."""
    data = data or AtlasData()
    lenses = [lens for lens in cfg.lenses if not (lens == "knowledge" and cfg.site != "mlp")]
    folder = ResultsFolder.claim(out, cfg, model)
    timings: dict[str, float] = {}
    space = unit_space(model, cfg.site)
    paths = {}
    for lens in lenses:
        started = time.time()
        paths[lens] = _lens_folder(cfg, lens, model, folder, data, progress)
        timings[f"{lens}_s"] = round(time.time() - started, 1)

    started = time.time()
    facts = Lenses(
        language=sources.read_language(paths["language"]) if "language" in paths else None,
        knowledge=sources.read_knowledge(paths["knowledge"]) if "knowledge" in paths else None,
        grammar=sources.read_grammar(paths["grammar"]) if "grammar" in paths else None,
        corpus=sources.read_corpus(paths["corpus"], data.corpus) if "corpus" in paths else None,
    )
    _check_widths(facts, space.width)
    thresholds = Thresholds(t=cfg.t_threshold)
    n_layers = model.cfg.n_layers
    units = [(layer, unit) for layer in range(n_layers) for unit in range(space.width)]
    if facts.corpus is not None:
        facts.tokens = _token_stage(model, cfg, folder, facts.corpus, progress)
    timings["read_s"] = round(time.time() - started, 1)

    started = time.time()
    cards = {u: card(facts, space, *u, n_layers, cfg.n_top, thresholds) for u in units}
    corpus_cfg = sources.read_config(paths["corpus"]) if "corpus" in paths else {}
    if facts.corpus is not None and cfg.n_patterns and corpus_cfg.get("patterns", True):
        # patterns for the units most lenses single out; their cards are redone with them
        ranked = sorted((u for u in units if u[0] in facts.corpus.neurons.layers_),
                        key=lambda u: (-interest(cards[u], thresholds), u))
        chosen = ranked[: cfg.n_patterns]
        facts.described = _pattern_stage(folder, facts.corpus, chosen, corpus_cfg, progress)
        cards.update({u: card(facts, space, *u, n_layers, cfg.n_top, thresholds) for u in chosen})
    timings["cards_s"] = round(time.time() - started, 1)
    cards = list(cards.values())

    started = time.time()
    languages = facts.language.languages if facts.language else []
    about = (f"{model.cfg.model_name}, unit space {cfg.site!r} ({space.width:,} units per layer, {len(units):,} in all); "
             f"lenses: {', '.join(lenses)}" + ("" if "knowledge" in lenses or "knowledge" not in cfg.lenses
                                               else " (knowledge neurons are read on the mlp space only)"))
    size = write_site(folder.path / "site", cards, languages, title=f"neuron atlas · {model.cfg.model_name}",
                      about=about, shard_size=cfg.shard_size, overview=overview(cards, n_layers, thresholds))
    timings["site_s"] = round(time.time() - started, 1)
    folder.csv("notable_units.csv", notable(cards, thresholds)[:50])
    folder.json("timings.json", {**timings, **size})
    return {"out": str(folder.path), "site": str(folder.path / "site" / "index.html"), "units": len(cards),
            "lenses": lenses, **size, "timings": timings}


def _check_widths(facts: Lenses, width: int) -> None:
    found = {"language": facts.language and facts.language.scores.shape[-1],
             "grammar": facts.grammar and facts.grammar.t.shape[-1],
             "corpus": facts.corpus and facts.corpus.neurons.width_}
    bad = {k: v for k, v in found.items() if v and v != width}
    if bad:
        raise ValueError(f"saved lens results have other unit counts per layer ({bad}) than the atlas's site ({width})")


def _token_stage(model, cfg: AtlasConfig, folder: ResultsFolder, corpus: sources.CorpusFacts, progress: bool) -> dict:
    cn = corpus.neurons
    rng = np.random.default_rng(cfg.random_state)
    n_texts = len(cn.corpus_)
    pool = rng.choice(n_texts, min(cfg.random_pool, n_texts), replace=False).tolist()
    wanted: dict[int, list] = {}
    plan: dict[tuple[int, int], dict] = {}
    for slot, layer in enumerate(cn.layers_):
        for unit in range(cn.width_):
            top = cn.top_ids_[: cfg.n_top, slot, unit].tolist()
            rand = rng.choice(pool, min(cfg.n_random, len(pool)), replace=False).tolist() if cfg.n_random else []
            plan[(layer, unit)] = {"top": top, "random": rand}
            for i in top + rand:
                wanted.setdefault(int(i), []).append((layer, unit))
    key = fingerprint("tokens-once", weights_digest(model), cfg.site, sorted((k, tuple(v)) for k, v in wanted.items()))

    def compute():  # each text's tokens once, then one list of values per (text, unit)
        values = token_values(model, cn.corpus_.texts, wanted, site=cfg.site, progress=progress)
        tokens = {str(t): v["tokens"] for (t, _, _), v in values.items()}
        return {"tokens": tokens, "values": [[t, l, u, v["values"]] for (t, l, u), v in values.items()]}

    stage = folder.stage("token_values.json", key, compute)
    saved = {(t, l, u): {"tokens": stage["tokens"][str(t)], "values": v} for t, l, u, v in stage["values"]}
    return {unit: {part: [{"sentence": i, **saved[(i, *unit)]} for i in ids] for part, ids in p.items()}
            for unit, p in plan.items()}


def interest(c: dict, th: Thresholds) -> int:
    """How many lenses single the unit out (the order in which units are mined for patterns and listed)."""
    lang, know, gram, corp = (c.get(k) for k in ("language", "knowledge", "grammar", "corpus"))
    return (bool(lang and (lang["sets"] or min(lang["rank"].values()) <= th.rank_fraction * lang["of"]))
            + bool(know and know["facts"])
            + bool(gram and gram["max_abs_t"] is not None and gram["max_abs_t"] >= th.t)
            + bool(dominant_labels(corp, th)))


def notable(cards: list[dict], th: Thresholds) -> list[dict]:
    scored = [(interest(c, th), c) for c in cards]
    scored.sort(key=lambda x: (-x[0], x[1]["layer"], x[1]["unit"]))
    return [{"unit": c["id"], "lenses": n, "summary": c["summary"]} for n, c in scored if n > 0]


def _pattern_stage(folder: ResultsFolder, corpus: sources.CorpusFacts, chosen: list,
                   corpus_cfg: dict, progress: bool) -> dict:
    """PrefixSpan n-grams, skip-grams and POS patterns (the corpus lens's `describe`) of the chosen units."""
    from tqdm.auto import tqdm

    min_support = corpus_cfg.get("min_support", 0.1)
    key = fingerprint(chosen, min_support, corpus_cfg)

    def compute():
        return [corpus.neurons.describe(layer, unit, min_support=min_support).to_dict()
                for layer, unit in tqdm(chosen, desc="patterns", disable=not progress)]

    return {(d["layer"], d["neuron"]): d for d in folder.stage("patterns.json", key, compute)}


def report(result: dict) -> str:
    return (f"{result['units']:,} unit cards from {', '.join(result['lenses'])}; site {result['site']} "
            f"({result['files']} files, {result['bytes'] / 2**20:.1f} MiB)")


STUDY = Study("atlas", "the neuron atlas: every lens on one card per unit, a static site", AtlasConfig, run,
              report=report, data_keyword="data")
