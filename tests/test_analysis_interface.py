"""The interface the four analyses share: one Collection, get_params, state_dict / from_state_dict, NotFittedError."""
import io

import pytest
import torch

from lensneurons.core.analysis import Analysis, Collection, NotFittedError
from lensneurons.core.models import toy_model
from lensneurons.data.blimp import MinimalPair
from lensneurons.data.corpora import Corpus
from lensneurons.data.multilingual import LanguageTexts
from lensneurons.lenses.corpus.analysis import CorpusNeurons
from lensneurons.lenses.grammar.analysis import SparseProbing
from lensneurons.lenses.knowledge.analysis import KnowledgeNeurons
from lensneurons.lenses.language.analysis import LanguageNeurons

ANALYSES = [LanguageNeurons, KnowledgeNeurons, SparseProbing, CorpusNeurons]


@pytest.fixture(scope="module")
def model():
    return toy_model(n_layers=2, d_model=16, d_mlp=20, n_ctx=64)


def _saved(state):
    """What torch.save / torch.load(weights_only=True) give back: a saved state must survive it."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("cls", ANALYSES)
def test_every_analysis_shares_the_interface(cls):
    a = cls()
    assert isinstance(a, Analysis) and isinstance(a.collection, Collection)
    for method in ("fit", "fit_activations", "state_dict", "from_state_dict", "get_params"):
        assert callable(getattr(a, method)), method
    assert "random_state" in a.get_params() or cls is LanguageNeurons  # L has nothing random to seed
    with pytest.raises(NotFittedError, match=f"this {cls.__name__} is not fitted yet"):
        a.state_dict()


def test_collection_fields_read_and_set_through_the_analysis():
    cn = CorpusNeurons(k=3, layers=[1], batch_size=4)
    assert cn.collection == Collection(site="resid", layers=(1,), pooling="mean", batch_size=4, max_length=128,
                                       include_bos=False)
    assert (cn.site, cn.layers, cn.batch_size) == ("resid", (1,), 4)
    cn.batch_size = 8
    assert cn.collection.batch_size == 8
    custom = Collection(site="mlp", max_length=32)
    assert LanguageNeurons(collection=custom).collection is not None
    assert LanguageNeurons(collection=custom).max_length == 32
    assert LanguageNeurons(collection=custom, max_length=16).collection.max_length == 16  # a field given wins
    with pytest.raises(ValueError, match="batch_size"):
        Collection(batch_size=0)


def test_collection_pooled_equals_pooled_activations(model):
    from lensneurons.core.activations import pooled_activations

    texts = ["a b c", "hello there", "x"]
    c = Collection(site="mlp", layers=(0, 1), pooling="max", batch_size=2, max_length=8, include_bos=False)
    want = pooled_activations(model, texts, site="mlp", layers=[0, 1], pooling="max", batch_size=2, max_length=8,
                              include_bos=False, progress=False)
    assert torch.equal(c.pooled(model, texts, progress=False), want)


def test_language_neurons_round_trip(model):
    texts = ["hello world", "good day", "nice one", "bonjour le monde", "bonne journée", "très bien"]
    data = LanguageTexts(texts=texts, positives={"en": [0, 1, 2], "fr": [3, 4, 5]},
                         negatives={"en": [3, 4, 5], "fr": [0, 1, 2]})
    ln = LanguageNeurons(k=3).fit(model, data, progress=False)
    back = LanguageNeurons.from_state_dict(_saved(ln.state_dict()))
    assert back.get_params() == ln.get_params()
    assert torch.equal(back.scores_, ln.scores_) and torch.equal(back.medians_, ln.medians_)
    for lang in ("en", "fr"):
        assert back.neurons(lang, "both") == ln.neurons(lang, "both")
    table = ln.to_frame()
    assert list(table.columns) == ["lang", "group", "layer", "neuron", "ap", "median", "mean_difference"]
    assert len(table) == 2 * 2 * 3 and set(table.group) == {"top", "bottom"}
    en_top = table[(table.lang == "en") & (table.group == "top")]
    assert list(zip(en_top.layer, en_top.neuron)) == list(ln.neurons("en", "top"))
    assert en_top.ap.tolist() == [round(float(ln.scores_[0, l, j]), 6) for l, j in ln.neurons("en", "top")]
    with pytest.raises(ValueError, match="not a LanguageNeurons"):
        LanguageNeurons.from_state_dict({**ln.state_dict(), "kind": "CorpusNeurons"})


def test_knowledge_neurons_round_trip(model):
    prompts = {"a": [("one two", " three"), ("four five", " six")], "b": [("x y", " z"), ("p q", " r")]}
    kn = KnowledgeNeurons(steps=3, t=0.1, p=50, tolerance=float("inf")).fit(model, prompts, progress=False)
    back = KnowledgeNeurons.from_state_dict(_saved(kn.state_dict()))
    assert back.get_params() == kn.get_params()
    for c in prompts:
        assert back.neurons_[c] == kn.neurons_[c]
        assert torch.equal(back.attributions_[c], kn.attributions_[c])
    assert back.evaluate(model, progress=False) == kn.evaluate(model, progress=False)
    table = kn.to_frame()
    assert len(table) == sum(len(s) for s in kn.neurons_.values())
    first = table.iloc[0]
    assert first.attribution == pytest.approx(float(kn.attributions_[first.concept].mean(0)[first.layer, first.neuron]))


def test_sparse_probing_round_trip(model):
    pairs = {t: [MinimalPair(t, f"the cat {t} sat {i}.", f"cat the {t} sat {i}.", i) for i in range(8)]
             for t in ("t_a", "t_b")}
    sp = SparseProbing(lams=[1.0, 0.2], ks=[2], random_ks=[2], n_random=1, top_fraction=0.1, steps=10,
                       cross_layer=1).fit(model, pairs, progress=False)
    back = SparseProbing.from_state_dict(_saved(sp.state_dict()))
    assert torch.equal(back.mask_accuracy_, sp.mask_accuracy_) and torch.equal(back.cross_task_, sp.cross_task_)
    assert back.neurons("t_a", 0.2) == sp.neurons("t_a", 0.2)
    table = sp.to_frame()
    assert len(table) == 2 * len(sp.lams_) * 2 and set(table.task) == {"t_a", "t_b"}


def test_corpus_neurons_round_trip_and_refusals(model):
    corpus = Corpus([f"sentence {i} is here" for i in range(12)], {"label": ["a", "b"] * 6})
    cn = CorpusNeurons(k=3, layers=[0, 1], n_sample=4).fit(model, corpus, progress=False)
    state = _saved(cn.state_dict())
    back = CorpusNeurons.from_state_dict(state, corpus)
    assert torch.equal(back.top_ids_, cn.top_ids_) and torch.equal(back.top_values_, cn.top_values_)
    table = cn.to_frame()
    assert len(table) == 2 * 16 * 3 and list(table.columns)[-1] == "text"
    row = table.iloc[0]
    assert row.text == corpus.texts[row.sentence] and row.sentence == int(cn.top_ids_[0, 0, 0])
    with pytest.raises(ValueError, match="other parameters.*k"):
        CorpusNeurons(k=4, layers=[0, 1], n_sample=4).load_state_dict(state, corpus)
    reversed_corpus = Corpus(corpus.texts[::-1], {"label": corpus.metadata["label"][::-1]})
    with pytest.raises(ValueError, match="another corpus"):
        CorpusNeurons.from_state_dict(state, reversed_corpus)


def test_neuron_sets_and_attributions_as_tables(model):
    from lensneurons.core.neurons import NeuronSet
    from lensneurons.lenses.knowledge.attribution import integrated_gradients

    s = NeuronSet.from_pairs("mlp", 2, 20, torch.tensor([1, 0]), torch.tensor([3, 7]))
    assert s.to_frame().values.tolist() == [["mlp", 0, 7], ["mlp", 1, 3]]
    a = integrated_gradients(model, "one two", " three", layers=[1], steps=3, warn=False)
    table = a.to_frame()
    assert len(table) == 20 and set(table.layer) == {1}
    assert table.attribution.tolist() == a.scores[1].tolist()


def test_save_and_load_with_weights_only(model, tmp_path):
    from lensneurons.core.neurons import NeuronSet
    from lensneurons.core.patching import NeuronEdit, patched, scale
    from lensneurons.lenses.knowledge.attribution import Attribution, integrated_gradients

    corpus = Corpus([f"sentence {i} is here" for i in range(12)], {"label": ["a", "b"] * 6})
    cn = CorpusNeurons(k=3, layers=[1], n_sample=4).fit(model, corpus, progress=False)
    cn.save(tmp_path / "cn.pt")
    assert torch.equal(CorpusNeurons.load(tmp_path / "cn.pt", corpus).top_ids_, cn.top_ids_)

    edit = scale(NeuronSet.from_pairs("mlp", 2, 20, torch.tensor([0, 1]), torch.tensor([3, 4])), 2.0)
    edit.save(tmp_path / "edit.pt")
    torch.load(tmp_path / "edit.pt", weights_only=True)  # used to be an UnpicklingError
    back = NeuronEdit.load(tmp_path / "edit.pt")
    assert back.neurons == edit.neurons and back.op == edit.op and torch.equal(back.values, edit.values)
    tokens = model.to_tokens("one two")
    with patched(model, edit):
        want = model(tokens)
    with patched(model, back):
        assert torch.equal(model(tokens), want)

    a = integrated_gradients(model, "one two", " three", layers=[1], steps=3, warn=False)
    a.save(tmp_path / "a.pt")
    again = Attribution.load(tmp_path / "a.pt")
    assert torch.equal(again.scores, a.scores) and again.layers == a.layers and again.prob == a.prob
    with pytest.raises(FileNotFoundError, match="no saved state"):
        Attribution.load(tmp_path / "missing.pt")
