"""CorpusNeurons (paper O): streaming top-K against brute force, pattern mining, metadata summaries."""
import itertools
import random

import numpy as np
import pytest
import torch

from lensneurons.core.activations import tokenize
from lensneurons.lenses.corpus.analysis import (
    CorpusNeurons,
    PatternIndex,
    frequent_patterns,
    metadata_distribution,
    neuron_vector_distances,
    plot_neuron_clusters,
    plot_sse_curves,
    plot_summary_map,
    vector_distances,
)
from lensneurons.data.corpora import Corpus
from lensneurons.core.models import toy_model
from lensneurons.core.sites import hook_name
from lensneurons.core.stats import TopK

WORDS = "the cat dog sat ran on a mat big small red happy sad film was good bad very".split()


def _sentences(n, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)]


@pytest.fixture(scope="module")
def model():
    return toy_model(attn_only=True, n_layers=2, d_model=16, n_ctx=64)


@pytest.fixture(scope="module")
def corpus():
    texts = _sentences(60)
    return Corpus(texts, {"label": ["pos" if i % 3 else "neg" for i in range(60)]})


def _unpadded_means(model, texts, site="resid"):
    """Mean over each text's own tokens (BOS left out), one text at a time through the full cache (no padding)."""
    rows = []
    for ids in tokenize(model, texts):
        _, cache = model.run_with_cache(torch.tensor([ids]))
        rows.append(torch.stack([cache[hook_name(site, l)][0, 1:].mean(0) for l in range(model.cfg.n_layers)]))
    return torch.stack(rows)  # text layer neuron


def _brute_topk_with_ties(acts, k):
    """Per column: sort by value descending, then by lower id (numpy lexsort, independent of TopK)."""
    n = acts.shape[0]
    flat = acts.reshape(n, -1).numpy()
    ids = np.arange(n)
    values = np.empty((min(k, n), flat.shape[1]), dtype=flat.dtype)
    out_ids = np.empty((min(k, n), flat.shape[1]), dtype=np.int64)
    for j in range(flat.shape[1]):
        order = np.lexsort((ids, -flat[:, j]))[:k]  # last key is primary
        values[:, j], out_ids[:, j] = flat[order, j], order
    shape = (min(k, n), *acts.shape[1:])
    return torch.from_numpy(values).reshape(shape), torch.from_numpy(out_ids).reshape(shape)


# --------------------------------------------------------------------------- top-K


def test_topk_on_model_equals_brute_force(model, corpus):
    k = 7
    cn = CorpusNeurons(k=k, n_sample=0, batch_size=8).fit(model, corpus, progress=False)
    acts = _unpadded_means(model, corpus.texts)
    want = torch.topk(acts, k, dim=0)
    assert cn.top_values_.shape == (k, 2, 16)
    torch.testing.assert_close(cn.top_values_, want.values, atol=1e-5, rtol=1e-5)
    assert torch.equal(cn.top_ids_, want.indices)
    # top_sentences reads the same table
    best = cn.top_sentences(1, 3, n=2)
    assert [i for i, _, _ in best] == want.indices[:2, 1, 3].tolist()
    assert best[0][2] == corpus.texts[best[0][0]]


def test_topk_merged_shards_equal_single_pass(model, corpus):
    single = CorpusNeurons(k=5, n_sample=20, batch_size=8).fit(model, corpus, progress=False)
    parts = [CorpusNeurons(k=5, n_sample=20, batch_size=8).fit(model, corpus, shard=(i, 3), progress=False) for i in range(3)]
    merged = parts[2].merge(parts[0]).merge(parts[1])
    assert torch.equal(merged.top_ids_, single.top_ids_)
    torch.testing.assert_close(merged.top_values_, single.top_values_, atol=1e-6, rtol=0)
    assert torch.equal(merged.sample_ids_, single.sample_ids_)
    torch.testing.assert_close(merged.sample_activations_, single.sample_activations_, atol=1e-6, rtol=0)


def test_topk_ties_lower_id_wins_in_batches_and_shards():
    n, k = 90, 10
    acts = torch.randint(0, 4, (n, 2, 5)).float()  # four distinct values: ties everywhere
    corpus = Corpus([f"s {i} x" for i in range(n)])
    want_values, want_ids = _brute_topk_with_ties(acts, k)
    cn = CorpusNeurons(k=k, n_sample=0).fit_activations(acts, corpus, batch_size=7)
    assert torch.equal(cn.top_ids_, want_ids)
    assert torch.equal(cn.top_values_, want_values)
    # shards fed in shuffled order and merged: same sets, same tie-breaking
    perm = torch.randperm(n)
    shards = [TopK(k) for _ in range(3)]
    for s, chunk in enumerate(perm.chunk(3)):
        for part in chunk.chunk(4):
            shards[s].update(acts[part], part)
    merged = shards[1].merge(shards[2]).merge(shards[0])
    assert torch.equal(merged.ids, want_ids)
    assert torch.equal(merged.values, want_values)


def test_k_larger_than_corpus_keeps_every_sentence():
    acts = torch.randn(4, 1, 3)
    cn = CorpusNeurons(k=10, n_sample=0).fit_activations(acts, Corpus(["a b c"] * 4))
    assert cn.top_ids_.shape == (4, 1, 3)
    assert torch.equal(cn.top_ids_.sort(0).values, torch.arange(4)[:, None, None].expand(4, 1, 3))


# --------------------------------------------------------------------------- pattern mining


def _brute_patterns(top, corpus, min_count, min_len, max_len, contiguous):
    def contained(seq, items):
        if contiguous:
            return any(tuple(seq[i : i + len(items)]) == items for i in range(len(seq) - len(items) + 1))
        return any(tuple(seq[i] for i in idx) == items for idx in itertools.combinations(range(len(seq)), len(items)))

    candidates = set()
    for seq in top:
        for n in range(min_len, max_len + 1):
            if contiguous:
                candidates |= {tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)}
            else:
                candidates |= {tuple(seq[i] for i in idx) for idx in itertools.combinations(range(len(seq)), n)}
    rows = []
    for items in candidates:
        st = sum(contained(s, items) for s in top)
        if st >= min_count:
            sc = sum(contained(s, items) for s in corpus)
            rows.append((items, st, sc, (st / len(top)) / (max(sc, 1) / len(corpus))))
    rows.sort(key=lambda r: (-r[3], -r[1], r[0]))
    return rows


HAND_TOP = [
    "a x b c".split(),
    "a b y".split(),
    "z a q b c".split(),
    "c d".split(),
]
HAND_REST = [["c", "d", "e"]] * 8 + [["a", "e"], ["b", "e"], ["e", "c"], ["b", "a"]]


@pytest.mark.parametrize("contiguous", [False, True])
def test_relative_frequency_ranking_matches_brute_force(contiguous):
    corpus = HAND_TOP + HAND_REST
    got = frequent_patterns(HAND_TOP, corpus, min_support=2, min_len=1, max_len=3, contiguous=contiguous, top_n=None)
    want = _brute_patterns(HAND_TOP, corpus, 2, 1, 3, contiguous)
    assert [(p.items, p.support_top, p.support_corpus) for p in got] == [r[:3] for r in want]
    np.testing.assert_allclose([p.relative for p in got], [r[3] for r in want])


def test_relative_frequency_prefers_specific_over_common_patterns():
    corpus = HAND_TOP + HAND_REST
    got = frequent_patterns(HAND_TOP, corpus, min_support=1, min_len=2, max_len=2, top_n=None)
    # skip-gram (a, b): 3 of 4 top sentences, 3 of 16 corpus sentences -> (3/4) / (3/16) = 4;
    # (a, c) has the same relative frequency but less support, so it comes after (a, b);
    # (c, d) is in the top set too but common in the corpus (9 of 16), so it ranks last
    assert got[0].items == ("a", "b") and got[0].relative == pytest.approx(4.0)
    assert [p.items for p in got].index(("a", "c")) > 0 and got[1].relative == pytest.approx(4.0)
    assert got[-1].items == ("c", "d") and got[-1].relative == pytest.approx((1 / 4) / (9 / 16))
    # min_support 0.5 of 4 top sentences = 2: (c, d) drops out
    assert ("c", "d") not in [p.items for p in frequent_patterns(HAND_TOP, corpus, min_support=0.5, max_len=2)]
    # as contiguous n-grams (a, b) occurs in one top sentence only
    assert ("a", "b") not in [p.items for p in frequent_patterns(HAND_TOP, corpus, contiguous=True, min_support=2)]


def test_pattern_index_counts_sentences_not_occurrences():
    index = PatternIndex([["a", "a", "b"], ["b", "a"], ["a", "b", "a", "b"]])
    assert index.support(("a", "b"), contiguous=False) == 2
    assert index.support(("a",), contiguous=True) == 3
    assert index.support(("b", "a"), contiguous=True) == 2
    assert index.support(("q",), contiguous=False) == 0


# --------------------------------------------------------------------------- metadata and summaries


def _hand_corpus():
    texts = ["good film here", "great good film", "bad bad film", "a fine day out", "so very sad", "nice and good", "meh okay fine x"]
    meta = {
        "sentiment": ["pos", "pos", "neg", "pos", "neg", "pos", None],
        "source": ["a", "b", "a", "a", "b", "b", "a"],
    }
    return Corpus(texts, meta)


def _hand_acts():
    # neuron (0, 0) prefers texts 1, 0, 5, 3 (all pos); neuron (0, 1) prefers 2, 4, 6, 0
    acts = torch.zeros(7, 1, 2)
    acts[:, 0, 0] = torch.tensor([5.0, 6, 0, 3, 1, 4, 2])
    acts[:, 0, 1] = torch.tensor([3.0, 0, 6, 1, 5, 2, 4])
    return acts


def test_metadata_distributions_on_hand_made_corpus():
    cn = CorpusNeurons(k=4, n_sample=0, classifier_threshold=0.9).fit_activations(_hand_acts(), _hand_corpus())
    assert cn.top_ids_[:, 0, 0].tolist() == [1, 0, 5, 3]
    d0 = cn.metadata_distributions(0, 0)
    assert d0["sentiment"] == {"pos": 1.0}
    assert d0["source"] == pytest.approx({"a": 0.5, "b": 0.5})
    d1 = cn.metadata_distributions(0, 1)  # texts 2, 4, 6, 0: neg, neg, None, pos -> None skipped
    assert d1["sentiment"] == pytest.approx({"neg": 2 / 3, "pos": 1 / 3})
    assert list(d1["sentiment"]) == ["neg", "pos"]
    share, labels = cn.label_dominance("sentiment")
    torch.testing.assert_close(share, torch.tensor([[1.0, 2 / 3]], dtype=torch.float64))
    assert labels == [["pos", "neg"]]
    assert cn.classifier_neurons("sentiment") == [(0, 0, "pos", 1.0)]
    assert cn.describe(0, 0, patterns=False).classifier_like == {"sentiment": "pos"}
    assert cn.describe(0, 1, patterns=False).classifier_like == {}
    assert metadata_distribution([None, None]) == {}


def test_label_dominance_matches_per_neuron_distributions():
    n = 50
    corpus = Corpus(_sentences(n, seed=3), {"topic": [random.Random(i).choice("xyz") if i % 7 else None for i in range(n)]})
    cn = CorpusNeurons(k=9, n_sample=0).fit_activations(torch.randn(n, 2, 6), corpus)
    share, labels = cn.label_dominance("topic")
    for layer in range(2):
        for j in range(6):
            dist = cn.metadata_distributions(layer, j, ["topic"])["topic"]
            best = max(dist.values())
            assert share[layer, j].item() == pytest.approx(best)
            assert dist[labels[layer][j]] == pytest.approx(best)


def test_summary_map_mean_length():
    n = 40
    corpus = Corpus(_sentences(n, seed=5))
    acts = torch.randn(n, 3, 4)
    cn = CorpusNeurons(k=6, n_sample=0).fit_activations(acts, corpus)
    got = cn.summary_map("mean_length")
    lengths = [len(t.split()) for t in corpus.texts]
    for layer in range(3):
        for j in range(4):
            top = torch.topk(acts[:, layer, j], 6).indices.tolist()
            assert got[layer, j].item() == pytest.approx(np.mean([lengths[i] for i in top]))
    torch.testing.assert_close(cn.summary_map("min_activation").float(), torch.topk(acts, 6, dim=0).values[-1])
    fig = plot_summary_map(got)
    assert fig.axes


def test_describe_patterns_with_given_tags():
    words = [s.split() for s in ["the good film", "a good film indeed", "the bad plot", "good film again", "the end"]]
    tags = [["DET", "ADJ", "NOUN"], ["DET", "ADJ", "NOUN", "ADV"], ["DET", "ADJ", "NOUN"], ["ADJ", "NOUN", "ADV"], ["DET", "NOUN"]]
    corpus = Corpus([" ".join(w) for w in words], {}, words, tags)
    acts = torch.tensor([3.0, 4, 0, 5, 1]).reshape(5, 1, 1)
    cn = CorpusNeurons(k=3, n_sample=0).fit_activations(acts, corpus)
    d = cn.describe(0, 0, min_support=3, max_len=2)
    assert d.sentence_ids == [3, 1, 0]
    assert d.ngrams[0].items == ("good", "film") and d.ngrams[0].support_top == 3
    assert d.ngrams[0].relative == pytest.approx((3 / 3) / (3 / 5))
    assert ("ADJ", "NOUN") in [p.items for p in d.pos_patterns]
    assert d.top_words["NOUN"][0] == ("film", 3)
    assert d.top_words["ADJ"][0] == ("good", 3)
    assert sum(d.pos_distribution.values()) == pytest.approx(1.0)
    assert d.pos_distribution["NOUN"] == pytest.approx(3 / 10)
    assert d.mean_length == pytest.approx(10 / 3)
    assert d.to_dict()["ngrams"][0]["items"] == ["good", "film"]


def test_cluster_shapes_and_determinism(model, corpus):
    cn = CorpusNeurons(k=3, n_sample=30).fit(model, corpus, progress=False)
    assert cn.sample_activations_.shape == (30, 2, 16)
    labels, emb = cn.cluster(n_clusters=4)
    assert labels.shape == (2, 16) and emb.shape == (2, 16, 2)
    assert set(labels.unique().tolist()) <= set(range(4))
    again, _ = cn.cluster(n_clusters=4, tsne=False)
    assert torch.equal(labels, again)
    assert plot_neuron_clusters(emb, labels).axes
    with pytest.raises(ValueError, match="n_clusters"):
        cn.cluster(n_clusters=33)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("k", [0, -3])
def test_bad_k(k, corpus):
    with pytest.raises(ValueError, match="k must be"):
        CorpusNeurons(k=k).fit_activations(torch.randn(len(corpus), 1, 2), corpus)


def test_bad_input_messages(model, corpus):
    with pytest.raises(ValueError, match="empty"):
        Corpus([])
    with pytest.raises(ValueError, match="out of range"):
        CorpusNeurons(k=2, layers=[5]).fit(model, corpus, progress=False)
    with pytest.raises(ValueError, match="no hook point or module .blocks.0.attn.hook_zz."):
        CorpusNeurons(k=2, site="attn.hook_zz").fit(model, corpus, progress=False)
    with pytest.raises(ValueError, match="rows"):
        CorpusNeurons(k=2).fit_activations(torch.randn(3, 1, 2), corpus)
    cn = CorpusNeurons(k=2, n_sample=0).fit_activations(torch.randn(len(corpus), 1, 2), corpus)
    with pytest.raises(ValueError, match="unknown metadata field 'genre'"):
        cn.metadata_distributions(0, 0, ["genre"])
    with pytest.raises(ValueError, match="unknown metadata field"):
        cn.label_dominance("genre")
    with pytest.raises(ValueError, match="not analysed"):
        cn.top_sentences(3, 0)
    with pytest.raises(ValueError, match="out of range"):
        cn.top_sentences(0, 2)
    with pytest.raises(ValueError, match="summary statistic"):
        cn.summary_map("median")
    with pytest.raises(RuntimeError, match="not fitted"):
        CorpusNeurons().top_sentences(0, 0)
    with pytest.raises(ValueError, match="min_support"):
        frequent_patterns([["a"]], [["a"]], min_support=0)


# --------------------------------------------------------------------------- views and the pipeline


def test_token_activations_and_views(model, corpus):
    from lensneurons.lenses.corpus.report import colored_tokens_view, token_activations

    text = corpus.texts[0]
    tokens, values = token_activations(model, text, layer=1, neuron=5)
    (ids,) = tokenize(model, [text])
    _, cache = model.run_with_cache(torch.tensor([ids]))
    torch.testing.assert_close(values, cache[hook_name("resid", 1)][0, 1:, 5])  # BOS left out
    assert len(tokens) == len(ids) - 1 and "".join(tokens) == text  # byte tokens
    # the mean over the tokens is the sentence's activation in the top-K table
    cn = CorpusNeurons(k=len(corpus), n_sample=0).fit(model, corpus, progress=False)
    row = (cn.top_ids_[:, 1, 5] == 0).nonzero().item()
    assert cn.top_values_[row, 1, 5].item() == pytest.approx(values.mean().item(), abs=1e-5)
    view = colored_tokens_view(model, corpus.texts[:2], 1, 5)
    assert "ColoredTokens" in str(view)
    with pytest.raises(ValueError, match="out of range"):
        token_activations(model, text, layer=0, neuron=16)


def test_pipeline_resumes_part_by_part_and_equals_one_pass(model, tmp_path, monkeypatch):
    from lensneurons.lenses.corpus.study import RunConfig, run

    texts = _sentences(30, seed=4)
    corpus = Corpus(texts, {"label": ["a" if i % 3 else "b" for i in range(30)]})
    cfg = RunConfig(k=4, n_sample=10, n_clusters=2, n_describe=1, layers=[0, 1], sse_k_max=0, patterns=False,
                    checkpoint_every=8)  # 4 parts
    one_pass = CorpusNeurons(k=4, layers=[0, 1], n_sample=10).fit(model, corpus, progress=False)
    fits = []
    real_fit = CorpusNeurons.fit

    def fit(self, *a, **k):
        if len(fits) == stop_after:
            raise KeyboardInterrupt
        fits.append(k.get("shard"))
        return real_fit(self, *a, **k)

    monkeypatch.setattr(CorpusNeurons, "fit", fit)
    stop_after = 2  # interrupted during the third part
    with pytest.raises(KeyboardInterrupt):
        run(model, cfg, tmp_path / "out", corpus=corpus, progress=False)
    stop_after = None
    run(model, cfg, tmp_path / "out", corpus=corpus, progress=False)
    assert fits == [(0, 4), (1, 4), (2, 4), (3, 4)]  # the rerun started at the third part
    saved = torch.load(tmp_path / "out" / "top_sentences.pt")
    assert torch.equal(saved["ids"], one_pass.top_ids_) and torch.equal(saved["values"], one_pass.top_values_)
    run(model, cfg, tmp_path / "out", corpus=corpus, progress=False)
    assert len(fits) == 4  # finished: nothing recomputed
    with pytest.raises(ValueError, match="different configuration.*k: 4 there, 3 here"):
        run(model, RunConfig(**{**cfg.__dict__, "k": 3}), tmp_path / "out", corpus=corpus, progress=False)
    other = Corpus(texts[::-1], {"label": corpus.metadata["label"][::-1]})
    run(model, cfg, tmp_path / "out", corpus=other, progress=False)
    assert fits[4:] == [(i, 4) for i in range(4)]  # another corpus does not reuse the checkpoint


def test_pipeline_writes_results(model, tmp_path):
    import argparse
    import json

    from lensneurons.lenses.corpus.study import STUDY, RunConfig, run

    words = [s.split() for s in _sentences(30, seed=9)]
    tags = [["NOUN" if w in ("cat", "dog", "mat", "film") else "ADJ" if w in ("big", "red", "good") else "X" for w in s]
            for s in words]
    corpus = Corpus([" ".join(w) for w in words], {"label": ["a" if i % 2 else "b" for i in range(30)]}, words, tags)
    cfg = RunConfig(k=5, n_sample=12, n_clusters=3, n_describe=3, layers=[1], classifier_threshold=0.8)
    result = run(model, cfg, tmp_path / "out", corpus=corpus, progress=False)
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"config.json", "top_sentences.csv", "top_sentences.pt", "mean_length.csv", "mean_length.png",
            "clusters.csv", "clusters.png", "descriptions.json", "index.html", "timings.json",
            "sse_curves.csv", "sse_curves.png"} <= names
    described = json.loads((tmp_path / "out" / "descriptions.json").read_text())
    assert len(described) == 3 and len(result["described"]) == 3
    page = (tmp_path / "out" / f"neuron_L{described[0]['layer']}_{described[0]['neuron']}.html").read_text()
    assert "Top sentences" in page and "<span" in page
    # classifier-like: at least 4 of a neuron's 5 top sentences share a label (each label is half the corpus)
    ids = torch.load(tmp_path / "out" / "top_sentences.pt")["ids"][:, 0]  # k neuron
    want = []
    for j in range(ids.shape[1]):
        n_a = sum(corpus.metadata["label"][i] == "a" for i in ids[:, j].tolist())
        if max(n_a, 5 - n_a) >= 4:
            want.append((1, j, "a" if n_a >= 4 else "b"))
    got = [(r["layer"], r["neuron"], r["label"]) for r in result["classifier_neurons"]]
    assert want and sorted(got) == sorted(want)

    parser = argparse.ArgumentParser()
    STUDY.add_arguments(parser)
    got = STUDY.config_from_args(parser.parse_args(["--out", "x", "--k", "7", "--corpora", "brown", "--no-patterns",
                                                    "--per-corpus", "50", "--label-fields", "corpus", "genre"]))
    assert (got.k, got.corpora, got.patterns, got.site) == (7, ["brown"], False, "resid")
    assert (got.per_corpus, got.label_fields) == (50, ["corpus", "genre"])


def test_per_corpus_sampling_is_stratified(monkeypatch):
    from lensneurons.lenses.corpus import study as pipeline

    sources = ["a"] * 30 + ["b"] * 5 + ["c"] * 12
    corpus = Corpus([f"text number {i}" for i in range(len(sources))], {"corpus": sources})
    monkeypatch.setattr(pipeline, "nltk_corpora", lambda names: corpus)
    got = pipeline.load_corpus(pipeline.RunConfig(per_corpus=8))
    counts = {name: got.metadata["corpus"].count(name) for name in "abc"}
    assert counts == {"a": 8, "b": 5, "c": 8}  # all of b: it has fewer than 8
    assert len(set(got.texts)) == len(got) == 21
    with pytest.raises(ValueError, match="per_corpus"):
        pipeline.load_corpus(pipeline.RunConfig(per_corpus=0))


# --------------------------------------------------------------------------- classifier coverage


def test_classifier_needs_enough_sentences_with_the_field():
    # field "sentiment" known for 2 of neuron 0's 4 top sentences, 4 of 4 for neuron 1
    texts = [f"t {i} x" for i in range(8)]
    meta = {"sentiment": ["pos", "pos", None, None, "neg", "neg", "neg", "neg"]}
    acts = torch.zeros(8, 1, 2)
    acts[:, 0, 0] = torch.tensor([8.0, 7, 6, 5, 0, 0, 0, 0])
    acts[:, 0, 1] = torch.tensor([0.0, 0, 0, 0, 8, 7, 6, 5])
    cn = CorpusNeurons(k=4, n_sample=0, classifier_threshold=0.9, min_known=0.75).fit_activations(acts, Corpus(texts, meta))
    assert cn.classifier_neurons("sentiment") == [(0, 1, "neg", 1.0)]
    assert cn.describe(0, 0, patterns=False).classifier_like == {}
    loose = CorpusNeurons(k=4, n_sample=0, classifier_threshold=0.9, min_known=2).fit_activations(acts, Corpus(texts, meta))
    assert [r[:3] for r in loose.classifier_neurons("sentiment")] == [(0, 0, "pos"), (0, 1, "neg")]
    with pytest.raises(ValueError, match="min_known"):
        CorpusNeurons(k=4, min_known=0).fit_activations(acts, Corpus(texts, meta))


def test_a_field_empty_for_every_sentence_dominates_nothing(model, tmp_path):
    # the NLTK corpora name "genre", "pro_con" and "president"; a subset of corpora can leave one all None
    texts = _sentences(12, seed=4)
    meta = {"genre": [None] * 12, "label": ["a" if i % 2 else "b" for i in range(12)]}
    cn = CorpusNeurons(k=3, n_sample=0).fit_activations(torch.randn(12, 1, 4), Corpus(texts, meta))
    share, labels = cn.label_dominance("genre")
    assert share.eq(0).all() and labels == [[None] * 4]
    assert cn.classifier_neurons("genre") == []
    assert "genre" not in cn.describe(0, 0, patterns=False).classifier_like

    from lensneurons.lenses.corpus.study import RunConfig, run
    cfg = RunConfig(k=3, n_sample=6, layers=[0], sse_k_max=0, n_describe=1, patterns=False,
                    label_fields=["genre", "label"])
    result = run(model, cfg, tmp_path / "out", corpus=Corpus(texts, meta), progress=False)
    assert all(r["field"] == "label" for r in result["classifier_neurons"])
    assert (tmp_path / "out" / "index.html").exists()


# --------------------------------------------------------------------------- SSE curves of top-set embeddings


def _fitted_random(n=40, n_layers=2, width=6, k=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    corpus = Corpus(_sentences(n, seed=seed))
    acts = torch.randn(n, n_layers, width, generator=g)
    return CorpusNeurons(k=k, n_sample=0).fit_activations(acts, corpus), corpus


def test_top_set_embeddings_are_means_of_top_sentence_vectors():
    from sklearn.feature_extraction.text import TfidfVectorizer

    cn, corpus = _fitted_random()
    vectors = torch.randn(len(corpus), 3)
    emb = cn.top_set_embeddings(1, sentence_vectors=vectors)
    for j in range(6):
        ids = cn.top_ids_[:, 1, j]
        torch.testing.assert_close(emb[j], vectors.double()[ids].mean(0))
    # default: mean of the L2-normalised TF-IDF rows of the top sentences
    tfidf = TfidfVectorizer(token_pattern=r"(?u)\b\w+\b").fit_transform(corpus.texts).toarray()
    dense = cn.top_set_embeddings(0).toarray()
    for j in range(6):
        np.testing.assert_allclose(dense[j], tfidf[cn.top_ids_[:, 0, j].numpy()].mean(0), atol=1e-12)
    with pytest.raises(ValueError, match="rows"):
        cn.top_set_embeddings(0, sentence_vectors=torch.randn(3, 2))


@pytest.mark.parametrize("given", [False, True])
def test_sse_curves_against_brute_force(given):
    cn, corpus = _fitted_random(width=6)
    vectors = torch.randn(len(corpus), 4) if given else None
    sse = cn.sse_curves(k_max=6, sentence_vectors=vectors, n_init=30)  # restarts: the optimum on 6 points
    assert sse.shape == (2, 6)
    for slot in range(2):
        emb = cn.top_set_embeddings(slot, sentence_vectors=vectors)
        x = emb.numpy() if given else emb.toarray()
        assert sse[slot, 0].item() == pytest.approx(((x - x.mean(0)) ** 2).sum())
        # k = number of neurons: every neuron its own centre (distinct top sets)
        assert sse[slot, -1].item() == pytest.approx(0.0, abs=1e-9)
        # k = 2 against the best of all 2-partitions; the curve never rises here
        best2 = min(
            sum(((x[m] - x[m].mean(0)) ** 2).sum() for m in (mask, ~mask))
            for mask in (np.array([(c >> b) & 1 for b in range(6)], dtype=bool) for c in range(1, 2**5))
        )
        assert sse[slot, 1].item() == pytest.approx(best2, rel=1e-6)
        assert (sse[slot, 1:] <= sse[slot, :-1] + 1e-9).all()
    assert plot_sse_curves(sse, layers=[0, 1]).axes
    with pytest.raises(ValueError, match="k_max"):
        cn.sse_curves(k_max=7)


# --------------------------------------------------------------------------- across models


def test_vector_distances_brute_force():
    a, b = torch.randn(5, 2, 3), torch.randn(5, 2, 3)
    l1, l2 = vector_distances(a, b)
    for i in range(5):
        d = [float(x - y) for x, y in zip(a[i].flatten(), b[i].flatten())]
        assert l1[i].item() == pytest.approx(sum(abs(v) for v in d))
        assert l2[i].item() == pytest.approx(sum(v * v for v in d) ** 0.5)
    with pytest.raises(ValueError, match="same shape"):
        vector_distances(a, b[:4])


def test_neuron_vector_distances_on_toy_models(model):
    other = toy_model(attn_only=True, n_layers=2, d_model=16, n_ctx=64, seed=7)
    groups = {"train": _sentences(6, seed=1), "held_out": _sentences(4, seed=2), "ood": ["x y z", "1 2 3 4 5"]}
    same = neuron_vector_distances(model, model, groups, batch_size=3)
    assert set(same) == set(groups)
    for name, row in same.items():
        assert row["manhattan"] == 0.0 and row["euclidean"] == 0.0 and row["n"] == len(groups[name])
    got = neuron_vector_distances(model, other, groups, batch_size=3)
    for name, texts in groups.items():
        a, b = _unpadded_means(model, texts), _unpadded_means(other, texts)
        diff = (a - b).reshape(len(texts), -1).double()
        assert got[name]["manhattan"] == pytest.approx(diff.abs().sum(1).mean().item(), rel=1e-4)
        assert got[name]["euclidean"] == pytest.approx(diff.norm(dim=1).mean().item(), rel=1e-4)
        relative = diff.norm(dim=1) / a.reshape(len(texts), -1).double().norm(dim=1)
        assert got[name]["relative_euclidean"] == pytest.approx(relative.mean().item(), rel=1e-4)
        assert got[name]["relative_euclidean_std"] == pytest.approx(relative.std().item(), rel=1e-4)
        per_layer = [(a[:, l] - b[:, l]).double().norm(dim=1).mean().item() for l in range(a.shape[1])]
        assert got[name]["euclidean_by_layer"] == pytest.approx(per_layer, rel=1e-4)
    rows = neuron_vector_distances(model, other, groups, batch_size=3, per_sentence=True)
    for name in groups:
        each = rows[name]["per_sentence"]
        assert len(each["euclidean"]) == len(groups[name])
        assert np.mean(each["relative_euclidean"]) == pytest.approx(got[name]["relative_euclidean"], rel=1e-9)
    one_layer = neuron_vector_distances(model, other, {"g": groups["train"]}, layers=[1])
    a, b = _unpadded_means(model, groups["train"])[:, 1], _unpadded_means(other, groups["train"])[:, 1]
    assert one_layer["g"]["euclidean"] == pytest.approx((a - b).double().norm(dim=1).mean().item(), rel=1e-4)
    with pytest.raises(ValueError, match="d_model"):
        neuron_vector_distances(model, toy_model(attn_only=True, n_layers=2, d_model=8), groups)
    with pytest.raises(ValueError, match="empty"):
        neuron_vector_distances(model, other, {"g": []})


def test_finetune_returns_a_trained_copy():
    from lensneurons.lenses.corpus.finetune import finetune, lm_loss

    base = toy_model(n_layers=1, d_model=16, n_ctx=64)
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    texts = ["the cat sat on the mat"] * 4 + ["the dog ran"] * 4
    tuned = finetune(base, texts, steps=30, lr=1e-2, batch_size=4)
    for n, p in base.named_parameters():  # the input model is untouched
        assert torch.equal(p, before[n])
    assert lm_loss(tuned, texts) < lm_loss(base, texts) - 0.5
    assert not tuned.training
    frozen = finetune(base, texts, steps=3, lr=1e-2, params="blocks", optimizer="sgd")
    assert torch.equal(frozen.embed.W_E, base.embed.W_E) and torch.equal(frozen.unembed.W_U, base.unembed.W_U)
    assert not torch.equal(frozen.blocks[0].mlp.W_in, base.blocks[0].mlp.W_in)
    # the tuned model's neurons moved most on its own training sentences
    moved = neuron_vector_distances(base, tuned, {"train": texts, "other": ["zq xv", "1234 5678"]})
    assert moved["train"]["euclidean"] > 0
    for bad, match in ((dict(params="embed"), "params"), (dict(optimizer="lbfgs"), "optimizer"), (dict(steps=0), "steps")):
        with pytest.raises(ValueError, match=match):
            finetune(base, texts, **bad)


def test_finetune_shift_pipeline_splits_groups_and_measures_movement(tmp_path):
    from lensneurons.lenses.corpus.shift_study import RunConfig, run, sentence_groups

    base = toy_model(n_layers=2, d_model=16, n_ctx=64)
    texts = _sentences(30, seed=4) + ["zq xv 99 17 kk"] * 6
    corpus = Corpus(texts, {"source": ["reviews"] * 30 + ["noise"] * 6})
    cfg = RunConfig(group_field="source", train_on="reviews", out_of_domain="noise", n_per_group=6, steps=20,
                    lr=1e-2, batch_size=3)
    groups = sentence_groups(corpus, cfg)
    train, held, ood = groups.values()
    assert len(train) == len(held) == len(ood) == 6 and not set(train) & set(held)
    assert set(train + held) <= set(texts[:30]) and set(ood) == {"zq xv 99 17 kk"}
    result = run(base, cfg, tmp_path / "shift", corpus=corpus, progress=False)
    assert result["losses"]["training"]["after"] < result["losses"]["training"]["before"]
    # the folder's distances are those of the fine-tuned copy (same seed, same steps) measured directly
    from lensneurons.lenses.corpus.finetune import finetune

    tuned = finetune(base, train, steps=20, lr=1e-2, batch_size=3, params="blocks", seed=0)
    direct = neuron_vector_distances(base, tuned, groups)
    for name in groups:
        assert result["distances"][name]["euclidean"] == pytest.approx(direct[name]["euclidean"], rel=1e-5)
    from scipy.stats import ttest_ind

    rows = neuron_vector_distances(base, tuned, groups, per_sentence=True)
    names = list(groups)
    for test, other in zip(result["tests"], names[1:]):
        want = ttest_ind(rows[names[0]]["per_sentence"]["relative_euclidean"],
                         rows[other]["per_sentence"]["relative_euclidean"], equal_var=False)
        assert test["b"] == other and test["welch_t"] == pytest.approx(want.statistic, rel=1e-4)
    for name in ("config.json", "groups.json", "per_sentence.csv", "finetune_shift.json", "finetune_shift.csv",
                 "finetune_shift.png"):
        assert (tmp_path / "shift" / name).is_file()
    for bad, match in ((dict(group_field="genre"), "no metadata field 'genre'"),
                       (dict(out_of_domain="reviews"), "another source"),
                       (dict(n_per_group=20), "has 30 sentences, 40 needed"),
                       (dict(train_on="films"), "'films' has 0 sentences")):
        with pytest.raises(ValueError, match=match):
            sentence_groups(corpus, RunConfig(**{**cfg.__dict__, **bad}))


def test_length_adjusted_group_tests_match_least_squares():
    from sklearn.linear_model import LinearRegression

    from lensneurons.lenses.corpus.shift_study import group_tests

    rng = np.random.default_rng(0)
    lengths = {"training": rng.integers(3, 30, 200), "held": rng.integers(3, 15, 150), "ood": rng.integers(10, 80, 120)}
    effect = {"training": 0.02, "held": 0.0, "ood": 0.0}  # at equal length only training moves more
    each = {g: {"relative_euclidean": (0.4 - 0.06 * np.log(n) + effect[g] + rng.normal(0, 0.01, len(n))).tolist()}
            for g, n in lengths.items()}
    tests = group_tests(each, {g: n.tolist() for g, n in lengths.items()})
    x = np.column_stack([np.log(np.concatenate(list(lengths.values()))),
                         np.repeat([0, 1, 0], [200, 150, 120]), np.repeat([0, 0, 1], [200, 150, 120])])
    y = np.concatenate([each[g]["relative_euclidean"] for g in lengths])
    fit = LinearRegression().fit(x, y)
    assert [t["adjusted_difference"] for t in tests] == pytest.approx(-fit.coef_[1:], rel=1e-9)
    assert tests[0]["log_tokens_slope"] == pytest.approx(fit.coef_[0], rel=1e-9)
    assert tests[0]["adjusted_p_value"] < 1e-10 and tests[1]["adjusted_p_value"] < 1e-10
    # ood sentences are longer, so their raw mean is lower although at equal length they match held-out ones
    assert tests[1]["mean_b"] < np.mean(each["held"]["relative_euclidean"])
    assert abs(tests[1]["adjusted_difference"] - 0.02) < 0.005
    with pytest.raises(ValueError, match="one length per sentence"):
        group_tests(each, {"training": [3] * 200, "held": [3] * 150, "ood": [3] * 10})


# --------------------------------------------------------------------------- reports (issue 17)


def test_report_writes_pages_index_and_descriptions_from_the_api(model, tmp_path):
    import json
    import math

    n = 40
    corpus = Corpus(_sentences(n, seed=5), {"label": ["a" if i < 10 else "b" for i in range(n)]})
    acts = torch.randn(n, 1, 8, generator=torch.Generator().manual_seed(0))
    acts[:10, 0, 2] += 5.0  # unit 2 prefers the ten "a" sentences: classifier-like for label = a
    acts[:, 0, 5] = 1000.0 + acts[:, 0, 5]  # unit 5: a massive dimension, huge in every sentence
    cn = CorpusNeurons(k=8, n_sample=0, classifier_threshold=0.8).fit_activations(acts, corpus)
    ratios = cn.activation_ratios()
    assert ratios[0, 5] > 100 and (ratios[0, [0, 1, 3, 4, 6, 7]] < 10).all()

    described = cn.report(tmp_path / "r", neurons=[(0, 2), (0, 5)], patterns=False)
    names = sorted(p.name for p in (tmp_path / "r").iterdir())
    assert names == ["descriptions.json", "index.html", "neuron_L0_2.html", "neuron_L0_5.html"]
    saved = json.loads((tmp_path / "r" / "descriptions.json").read_text())
    assert [(d["layer"], d["neuron"], d["outlier"]) for d in saved] == [(0, 2, False), (0, 5, True)]
    c = described[0].chance["label"]
    # binomial tail by hand: P(X >= 8) for X ~ Binomial(8, 10/40)
    assert (c["label"], c["known"], c["corpus_share"]) == ("a", 8, 0.25)
    assert c["p_value"] == pytest.approx(sum(math.comb(8, j) * 0.25 ** j * 0.75 ** (8 - j) for j in range(8, 9)))
    page2 = (tmp_path / "r" / "neuron_L0_2.html").read_text()
    assert "chance level: 25.0%" in page2 and "BOS excluded, at most 128 tokens" in page2
    assert "blocks.{layer}.hook_resid_post" in page2 and "Outlier dimension" not in page2
    assert "Outlier dimension" in (tmp_path / "r" / "neuron_L0_5.html").read_text()
    index = (tmp_path / "r" / "index.html").read_text()
    assert "classifier-like: label = a" in index and "outlier dimension" in index

    # default neurons: the classifier-like first; a model colours tokens and adds the legend
    model_cn = CorpusNeurons(k=4, n_sample=0, layers=[1]).fit(model, Corpus(_sentences(12, seed=2)), progress=False)
    default = model_cn.report(tmp_path / "m", model=model, n=2, patterns=False)
    assert [(d.layer, d.neuron) for d in default] == model_cn.notable_neurons(2)
    assert "Token colours" in (tmp_path / "m" / f"neuron_L1_{default[0].neuron}.html").read_text()


def test_redundant_skipgrams_are_collapsed():
    from lensneurons.lenses.corpus.patterns import Pattern, collapse_redundant

    def p(items, support):
        return Pattern(tuple(items.split()), support, 10, 1.0)

    skip = [p("the cat", 5), p("the cat sat", 5), p("the sat", 5), p("a mat", 4), p("a", 6), p("big dog", 3)]
    ngrams = [p("big dog", 3), p("a mat", 2)]
    kept, dropped = collapse_redundant(skip, ngrams)
    # "the cat" and "the sat" sit inside "the cat sat" in as many sentences; "big dog" is an n-gram of equal
    # support; "a mat" is an n-gram in fewer sentences (its gapped form says more), "a" has more support
    assert [" ".join(q.items) for q in kept] == ["the cat sat", "a mat", "a"] and dropped == 3
