"""The neuron atlas: cards agree with each lens's own results and with independent references, the site
opens from disk in a real browser, exports follow their schema, and a rerun resumes."""
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from lensneurons.atlas import study as atlas
from lensneurons.atlas.cards import Thresholds, summary_line
from lensneurons.atlas.schema import NEURON_RECORD_SCHEMA, UNIT_SCHEMA
from lensneurons.atlas.sources import label_shares, read_language
from lensneurons.cli import study
from lensneurons.core.models import toy_model
from lensneurons.core.results import ConfigMismatchError
from lensneurons.data.blimp import MinimalPair
from lensneurons.data.corpora import Corpus
from lensneurons.data.multilingual import LanguageTexts
from lensneurons.lenses.corpus.analysis import metadata_distribution
from lensneurons.lenses.corpus.report import token_activations
from lensneurons.lenses.language.analysis import LanguageNeurons

pytestmark = pytest.mark.xdist_group("atlas")

WORDS = ["red", "blue", "cat", "dog", "runs", "sleeps", "the", "a", "not", "very"]


def _corpus(n=240):
    rng = np.random.default_rng(0)
    words = [[WORDS[i] for i in rng.integers(0, len(WORDS), rng.integers(3, 8))] for _ in range(n)]
    meta = {"corpus": [["pros_cons", "inaugural", "brown"][i % 3] for i in range(n)],
            "label": [None if i % 5 == 0 else ["pos", "neg"][i % 2] for i in range(n)]}
    # pre-tagged, so that patterns need no NLTK tagger data
    return Corpus([" ".join(w) for w in words], meta, words, [["NOUN" if len(x) > 3 else "DET" for x in w] for w in words])


def _language():
    texts = ["hello world", "good day to you", "the cat sleeps", "bonjour le monde", "bonne journée", "le chat dort"]
    return LanguageTexts(texts=texts, positives={"en": [0, 1, 2], "fr": [3, 4, 5]},
                         negatives={"en": [3, 4, 5], "fr": [0, 1, 2]})


KNOWLEDGE = {"a": [("one two", " three"), ("four five", " six")], "b": [("x y", " z"), ("p q", " r")],
             "c": [("red blue", " cat"), ("dog runs", " the")]}
PAIRS = {"t": [MinimalPair("t", f"the cat sat {i}.", f"cat the sat {i}.", i) for i in range(12)],
         "agreement_u": [MinimalPair("agreement_u", f"a dog runs {i}.", f"a dog run {i}.", i) for i in range(12)]}

LENS_CONFIGS = {
    "language": dict(k=5, seeds=2, max_new_tokens=4, gen_batch_size=4, ablation_ks=[]),
    "knowledge": dict(n_concepts=3, max_prompts=2, steps=3, min_correct=0.0, n_random=1),
    "grammar": dict(lams=[1.0, 0.2], n_random=1, steps=20, ks=[2, 4], random_ks=[2]),
    "corpus": dict(k=12, n_sample=40, sse_k_max=0, n_describe=0, n_clusters=3),
}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return toy_model(n_layers=2, d_model=16, d_mlp=20, n_ctx=64)


@pytest.fixture(scope="module")
def built(model, tmp_path_factory):
    """Each lens run into its own folder at a tiny size, then the atlas built from those folders."""
    root = tmp_path_factory.mktemp("atlas")
    data = {"language": _language(), "knowledge": KNOWLEDGE, "grammar": PAIRS, "corpus": _corpus()}
    folders = {}
    for lens, name in atlas.LENS_STUDIES.items():
        s = study(name)
        cfg = s.configure(**LENS_CONFIGS[lens], **({"site": "mlp"} if "site" in s.config.__dataclass_fields__ else {}))
        folders[lens] = root / lens
        s.run(model, cfg, folders[lens], progress=False, **{s.data_keyword: data[lens]})
    cfg = atlas.AtlasConfig(n_patterns=6, n_top=4, n_random=2, random_pool=10, shard_size=8, t_threshold=2.0,
                            **{f"{lens}_results": str(p) for lens, p in folders.items()})
    result = atlas.run(model, cfg, root / "atlas", data=atlas.AtlasData(corpus=data["corpus"]), progress=False)
    cards = [json.loads(line) for line in (root / "atlas" / "site" / "export" / "units.jsonl").read_text().splitlines()]
    return {"root": root, "folders": folders, "cfg": cfg, "result": result, "cards": {c["id"]: c for c in cards},
            "data": data}


def test_one_card_per_unit_and_the_site_files(built, model):
    site = Path(built["result"]["site"]).parent
    assert len(built["cards"]) == model.cfg.n_layers * model.cfg.d_mlp == built["result"]["units"]
    for name in ("index.html", "card.html", "assets/atlas.js", "assets/atlas.css", "data/index.js", "overview.png",
                 "export/schema.json", "export/neuron_records.jsonl"):
        assert (site / name).stat().st_size > 0, name
    shards = sorted(p.name for p in (site / "data" / "cards").iterdir())
    assert shards == [f"L{l}_{i}.js" for l in range(2) for i in range(3)]  # 20 units per layer in shards of 8
    html = (site / "index.html").read_text()
    assert "http" not in html and "http" not in (site / "card.html").read_text()  # nothing from the network


def test_language_part_equals_the_lens_and_ranks_follow_ap(built):
    saved = torch.load(built["folders"]["language"] / "ap_scores.pt", weights_only=True)
    ln = LanguageNeurons.from_scores(saved["scores"], saved["medians"], saved["languages"], k=5,
                                     mean_differences=saved["mean_differences"])
    for li, lang in enumerate(ln.languages_):
        flat = saved["scores"][li].flatten().numpy()
        members = {f"L{l}/{u}": g for g in ("top", "bottom") for l, u in ln.neurons(lang, g)}
        for cid, c in built["cards"].items():
            ap = c["language"]["ap"][lang]
            assert ap == pytest.approx(float(saved["scores"][li, c["layer"], c["unit"]]), abs=1e-4)
            # the rank counts the units of strictly higher AP, plus ties ahead of it in a stable order
            assert (flat > flat[c["layer"] * 20 + c["unit"]]).sum() < c["language"]["rank"][lang] <= (
                flat >= flat[c["layer"] * 20 + c["unit"]]).sum()
            assert c["language"]["median"][lang] == pytest.approx(float(saved["medians"][li, c["layer"], c["unit"]]), abs=1e-4)
            groups = [s["group"] for s in c["language"]["sets"] if s["lang"] == lang]
            assert groups == ([members[cid]] if cid in members else [])
    ranks = read_language(built["folders"]["language"]).ranks
    assert sorted(ranks[0].flatten().tolist()) == list(range(1, 41))  # a permutation


def test_knowledge_and_grammar_parts_equal_the_saved_results(built):
    saved = json.loads((built["folders"]["knowledge"] / "neurons.json").read_text())
    expected = {}
    for concept, c in saved["concepts"].items():
        for layer, unit in c["neurons"]:
            expected.setdefault(f"L{layer}/{unit}", set()).add(concept)
    assert expected  # some concept has neurons
    for cid, c in built["cards"].items():
        assert {f["concept"] for f in c["knowledge"]["facts"]} == expected.get(cid, set())
        for f in c["knowledge"]["facts"]:
            assert f["attribution"] is not None and "suppress/own" in f["effects"]
    state = torch.load(built["folders"]["grammar"] / "probes.pt", weights_only=True)["value"]
    for c in built["cards"].values():
        t = state["t_"][c["layer"], :, c["unit"]]
        got = {row["task"]: row["t"] for row in c["grammar"]["tasks"]}
        assert got == pytest.approx({task: float(t[i]) for i, task in enumerate(state["tasks_"])}, abs=1e-3)
        assert c["grammar"]["max_abs_t"] == pytest.approx(float(t.abs().max()), abs=1e-3)
        for row in c["grammar"]["tasks"]:
            i = state["tasks_"].index(row["task"])
            lams = sorted(set(state["params"]["lams"]), reverse=True)
            assert row["kept_at"] == [lam for li, lam in enumerate(lams) if state["gates_"][li, c["layer"], i, c["unit"]] > 0]


def test_corpus_part_top_sentences_metadata_and_token_values(built, model):
    corpus = built["data"]["corpus"]
    acts = []
    from lensneurons.core.activations import pooled_activations

    cfg = json.loads((built["folders"]["corpus"] / "config.json").read_text())
    from lensneurons.lenses.corpus.analysis import CorpusNeurons

    pooling = CorpusNeurons.default_collection.pooling
    acts = pooled_activations(model, corpus.texts, site="mlp", pooling=pooling, max_length=cfg["max_length"],
                              include_bos=False, progress=False)
    for c in list(built["cards"].values())[::7]:
        column = acts[:, c["layer"], c["unit"]]
        top = c["corpus"]["top"]
        # brute-force top-K: the card's values are the largest pooled values, best first
        assert [s["activation"] for s in top] == pytest.approx(column.sort(descending=True).values[:4].tolist(), abs=1e-4)
        for s in top + c["corpus"]["random"]:
            tokens, values = token_activations(model, corpus.texts[s["sentence"]], c["layer"], c["unit"], site="mlp")
            assert s["tokens"] == tokens and s["values"] == pytest.approx(values.tolist(), abs=2e-3)
        ids = [s["sentence"] for s in top]
        assert [corpus.texts[i] for i in ids] == [s["text"] for s in top]
    # metadata shares over the whole top-K list equal the corpus lens's own distribution, order included
    from lensneurons.atlas.sources import read_corpus

    facts = read_corpus(built["folders"]["corpus"], corpus)
    for c in built["cards"].values():
        want = facts.neurons.metadata_distributions(c["layer"], c["unit"])
        for field, dist in want.items():
            expected = {str(k): round(v, 3) for k, v in list(dist.items())[:6]}
            assert c["corpus"]["metadata"].get(field, {}) == expected
        # and how many top sentences carry each field, counted directly
        ids = facts.neurons.top_ids_[:, facts.neurons.layers_.index(c["layer"]), c["unit"]].tolist()
        for field in c["corpus"]["metadata"]:
            assert c["corpus"]["known"][field] == sum(corpus.metadata[field][i] is not None for i in ids)


def test_label_shares_order_ties_by_first_appearance_like_the_lens():
    rng = np.random.default_rng(1)
    values = [None if x == 4 else "abcd"[x] for x in rng.integers(0, 5, 50)]
    top = rng.integers(0, 50, (12, 2, 9))
    got = label_shares(values, top, keep=10)
    for slot in range(2):
        for unit in range(9):
            want = metadata_distribution([values[i] for i in top[:, slot, unit]])
            have = got.of(slot, unit)
            assert list(have) == list(want) and list(have.values()) == pytest.approx(list(want.values()))


def test_patterns_for_the_units_most_lenses_single_out(built):
    described = [c for c in built["cards"].values() if c["corpus"].get("ngrams") is not None]
    assert len(described) == 6
    interest = {cid: atlas.interest(c, Thresholds(t=2.0)) for cid, c in built["cards"].items()}
    assert min(interest[c["id"]] for c in described) >= max(
        v for cid, v in interest.items() if cid not in {c["id"] for c in described})
    # a pattern's share in the summary line is its count of top sentences over the K the lens kept
    import re

    for c in described:
        m = re.search(r"fires on '(.*?)' \((\d+)% of top sentences\)", c["summary"])
        if m:
            p = next(p for p in c["corpus"]["ngrams"] + c["corpus"]["skipgrams"] if " ".join(p["items"]) == m[1])
            assert int(m[2]) == round(100 * p["support_top"] / c["corpus"]["k"]) <= 100


def test_exports_follow_their_schema(built):
    jsonschema = pytest.importorskip("jsonschema")
    site = Path(built["result"]["site"]).parent
    for c in built["cards"].values():
        jsonschema.validate(c, UNIT_SCHEMA)
    records = [json.loads(line) for line in (site / "export" / "neuron_records.jsonl").read_text().splitlines()]
    assert len(records) == len(built["cards"])
    for r in records:
        jsonschema.validate(r, NEURON_RECORD_SCHEMA)
        c = built["cards"][f"L{r['neuron_id']['layer_index']}/{r['neuron_id']['neuron_index']}"]
        assert [x["activations"] for x in r["most_positive_activation_records"]] == [s["values"] for s in c["corpus"]["top"]]
        assert len(r["random_sample"]) == 2
    saved = json.loads((site / "export" / "schema.json").read_text())
    assert saved == json.loads(json.dumps({"units.jsonl": UNIT_SCHEMA, "neuron_records.jsonl": NEURON_RECORD_SCHEMA}))


def test_rerun_resumes_without_recomputing(built, model, monkeypatch):
    def fail(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(atlas, "token_values", fail)
    monkeypatch.setattr("lensneurons.lenses.corpus.analysis.CorpusNeurons.describe", fail)
    again = atlas.run(model, built["cfg"], built["root"] / "atlas", data=atlas.AtlasData(corpus=built["data"]["corpus"]),
                      progress=False)
    site = Path(again["site"]).parent
    cards = {json.loads(l)["id"]: json.loads(l) for l in (site / "export" / "units.jsonl").read_text().splitlines()}
    assert cards == built["cards"]


def test_bad_input_names_the_problem(built, model, tmp_path):
    lang = str(built["folders"]["language"])
    with pytest.raises(ValueError, match="--lenses must name some of"):
        atlas.run(model, atlas.AtlasConfig(lenses=["vision"]), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="was run with site 'mlp'; the atlas uses 'resid'"):
        atlas.run(model, atlas.AtlasConfig(site="resid", lenses=["language"], language_results=lang), tmp_path / "b",
                  progress=False)
    with pytest.raises(FileNotFoundError, match="not a results folder"):
        atlas.run(model, atlas.AtlasConfig(lenses=["language"], language_results=str(tmp_path)), tmp_path / "c",
                  progress=False)
    atlas.run(model, atlas.AtlasConfig(lenses=["language"], language_results=lang), tmp_path / "d", progress=False)
    with pytest.raises(ConfigMismatchError):
        atlas.run(model, atlas.AtlasConfig(lenses=["language"], language_results=lang, n_top=2), tmp_path / "d",
                  progress=False)


def test_the_atlas_runs_a_missing_lens_itself(model, tmp_path, monkeypatch):
    monkeypatch.setitem(atlas.SCALES["demo"], "language", ("demo", LENS_CONFIGS["language"]))
    result = atlas.run(model, atlas.AtlasConfig(lenses=["language"]), tmp_path, data=atlas.AtlasData(language=_language()),
                       progress=False)
    assert (tmp_path / "language" / "ap_scores.pt").exists() and result["units"] == 40
    assert json.loads((tmp_path / "language" / "config.json").read_text())["k"] == 5


def test_summary_line_restates_the_card():
    c = {"language": {"sets": [{"lang": "ja", "group": "top", "k": 1000}], "rank": {"ja": 3, "de": 900},
                      "ap": {"ja": 0.971, "de": 0.5}, "of": 36864},
         "knowledge": {"facts": [{"concept": "P36:Finland", "answer": " Helsinki"}]},
         "grammar": {"max_abs_t": 12.44, "tasks": [{"task": "anaphor_gender_agreement"}]},
         "corpus": {"metadata": {"corpus": {"pros_cons": 0.71, "brown": 0.2}, "label": {"pos": 0.85},
                                 "pro_con": {"con": 1.0}}, "known": {"corpus": 10, "label": 6, "pro_con": 2},
                    "k": 10, "ngrams": [{"items": ["not"], "support_top": 4, "relative": 3.0}]}}
    # pro_con is known for 2 of the 10 top sentences only: its 100% is not a fact worth a summary
    assert summary_line(c, Thresholds(share=0.7)) == (
        "ja top-1,000 AP 0.97 (rank 3); knowledge neuron of P36:Finland → Helsinki; |t| 12.4 on "
        "anaphor_gender_agreement; fires on 'not' (40% of top sentences); 85% pos (label); 71% pros_cons")
    assert summary_line({}) == "no lens singles it out"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _dom(url: str) -> str:
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=4000",
                          "--dump-dom", url], capture_output=True, text=True, timeout=120)
    return out.stdout


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_site_searches_and_opens_a_card_in_a_real_browser(built):
    site = Path(built["result"]["site"]).parent
    cards = built["cards"]
    index = _dom(f"{(site / 'index.html').as_uri()}#q=L1/7")
    assert "1 of 40 units" in index and 'href="card.html#L1/7"' in index
    assert 'data-rendered-ms="' in index  # the page stamps when it finished drawing
    members = [cid for cid, c in cards.items() if c["knowledge"]["facts"]]
    filtered = _dom(f"{(site / 'index.html').as_uri()}#kn=1")
    assert f"{len(members)} of 40 units" in filtered and all(f'card.html#{cid}"' in filtered for cid in members)
    word = next(c["summary"].split()[0] for c in cards.values() if c["summary"] != "no lens singles it out")
    by_text = _dom(f"{(site / 'index.html').as_uri()}#q={word}")
    assert f"{sum(word.lower() in (c['summary'] + c['corpus']['top'][0]['text'][:120]).lower() for c in cards.values())} of 40" in by_text
    c = cards["L1/7"]
    page = _dom(f"{(site / 'card.html').as_uri()}#L1/7")
    from html import escape

    assert escape(c["summary"], quote=False) in page
    assert c["corpus"]["top"][0]["tokens"][1] in page and "Grammar (S)" in page and "Languages (L)" in page
    assert 'data-rendered-ms="' in page
    assert "No unit named" in _dom(f"{(site / 'card.html').as_uri()}#nonsense")
