import json

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from lensneurons.core.activations import pooled_activations
from lensneurons.lenses.language.analysis import LanguageNeurons, SteeringConfig, score_generations
from lensneurons.lenses.language.bleu import ReferenceSet
from lensneurons.data.multilingual import LanguageTexts
from lensneurons.core.models import toy_model
from lensneurons.core.patching import patched
from lensneurons.lenses.language.study import RunConfig, run
from lensneurons.core.sites import hook_name

WORDS = {
    "en": ["the house is big", "where is the dog", "we like green tea", "a cat and a mouse", "it rains today"],
    "de": ["das haus ist groß", "wo ist der hund", "wir mögen grünen tee", "eine katze und eine maus", "es regnet heute"],
    "ja": ["家は大きいです", "犬はどこですか", "緑茶が好きです", "猫とねずみ", "今日は雨です"],
}


def toy_texts() -> LanguageTexts:
    texts = [t for lang in WORDS for t in WORDS[lang]]
    pos = {lang: [texts.index(t) for t in WORDS[lang]] for lang in WORDS}
    neg = {lang: [i for other in WORDS if other != lang for i in pos[other]] for lang in WORDS}
    return LanguageTexts(texts=texts, positives=pos, negatives=neg)


@pytest.fixture(scope="module")
def model():
    return toy_model(n_layers=2, d_model=16, d_mlp=20, n_ctx=128)


@pytest.fixture(scope="module")
def fitted(model):
    return LanguageNeurons(k=5, batch_size=4).fit(model, toy_texts(), progress=False)


def test_scores_are_sklearn_average_precision(model, fitted):
    data = toy_texts()
    acts = pooled_activations(model, data.texts, progress=False).flatten(1).numpy()
    for li, lang in enumerate(fitted.languages_):
        idx, labels = data.labelled(lang)
        for neuron in (0, 7, 23, 39):
            want = average_precision_score(labels.numpy(), acts[idx.numpy(), neuron])
            assert fitted.scores_[li].flatten()[neuron].item() == pytest.approx(want, abs=1e-6)


def test_top_bottom_middle_sets(fitted):
    scores = fitted.scores_[0].flatten()
    order = torch.argsort(scores, descending=True, stable=True)
    assert set(fitted.top_["en"].flat.tolist()) == set(order[:5].tolist()) or torch.allclose(
        scores[fitted.top_["en"].flat].sort().values, scores[order[:5]].sort().values
    )
    assert scores[fitted.bottom_["en"].flat].max() <= scores[fitted.top_["en"].flat].min()
    assert len(fitted.middle_["en"]) == 5
    assert torch.all(torch.diag(fitted.overlap("both")) == 10)
    assert fitted.overlap("top").shape == (3, 3)
    assert sum(fitted.layer_histograms("de")["top"].tolist()) == 5


def test_medians_and_clamp(model, fitted):
    data = toy_texts()
    acts = pooled_activations(model, data.texts, progress=False)
    want = np.median(acts[data.positives["ja"]].numpy(), axis=0)
    np.testing.assert_allclose(fitted.medians_[2].numpy(), want, rtol=1e-6)
    edit = fitted.clamp("ja", "both")
    seen = {}
    with patched(model, edit):
        with model.hooks(fwd_hooks=[(hook_name("mlp", l), lambda a, hook, l=l: seen.__setitem__(l, a.clone()))
                                    for l in range(2)]):
            model(model.to_tokens("hello"))
    for layer, index in edit.neurons:
        assert torch.all(seen[layer][..., index] == fitted.medians_[2, layer, index])


def test_bad_input(model, fitted):
    with pytest.raises(ValueError, match="k="):
        LanguageNeurons(k=21).fit(model, toy_texts(), progress=False)
    with pytest.raises(ValueError, match="unknown language"):
        fitted.neurons("fr")
    with pytest.raises(ValueError, match="neuron group"):
        fitted.neurons("en", "sideways")
    with pytest.raises(RuntimeError, match="not fitted"):
        LanguageNeurons().neurons("en")
    with pytest.raises(ValueError, match="rows"):
        LanguageNeurons(k=2).fit_activations(torch.zeros(3, 2, 20), toy_texts())


def test_generation_is_steered_and_seeded(model, fitted):
    cfg = SteeringConfig(seeds=[1, 2, 3], max_new_tokens=5, batch_size=2)
    a = fitted.generate(model, "de", "both", cfg)
    b = fitted.generate(model, "de", "both", SteeringConfig(seeds=[1, 2, 3], max_new_tokens=5, batch_size=3))
    assert a == b and len(a) == 3
    bos = model.to_tokens("")
    with patched(model, fitted.clamp("de", "both")):
        steered = model(bos)
    assert not torch.allclose(steered, model(bos))


def test_drop_activations_keeps_what_steering_needs(model):
    ln = LanguageNeurons(k=5, batch_size=4).fit(model, toy_texts(), progress=False)
    cfg = SteeringConfig(seeds=[1, 2], max_new_tokens=4, batch_size=2)
    before = ln.generate(model, "de", "both", cfg)
    ln.activation_split("de")
    ln.drop_activations()
    assert ln.generate(model, "de", "both", cfg) == before
    with pytest.raises(RuntimeError, match="drop_activations"):
        ln.activation_split("de")


def test_from_scores_rebuilds_the_fitted_sets(model, fitted):
    again = LanguageNeurons.from_scores(fitted.scores_, fitted.medians_, fitted.languages_, k=fitted.k)
    for lang in fitted.languages_:
        for which in ("top", "bottom", "both", "middle"):
            assert again.neurons(lang, which) == fitted.neurons(lang, which)
    cfg = SteeringConfig(seeds=[1, 2], max_new_tokens=4, batch_size=2)
    assert again.generate(model, "de", "both", cfg) == fitted.generate(model, "de", "both", cfg)
    with pytest.raises(ValueError, match="one row per language"):
        LanguageNeurons.from_scores(fitted.scores_, fitted.medians_, ["de"], k=fitted.k)


def test_score_generations_counts_confident_hits():
    row = score_generations(["Das ist ein sehr schönes Haus.", "This is a house.", ""], "de")
    assert row["rate"] == pytest.approx(1 / 3)


def test_bleu_equals_nltk():
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    rng = np.random.default_rng(0)
    refs = [list(rng.integers(0, 8, size=rng.integers(3, 12))) for _ in range(20)]
    ref_set = ReferenceSet(refs)
    for _ in range(30):
        hyp = list(rng.integers(0, 8, size=rng.integers(1, 15)))
        want = sentence_bleu(refs, hyp, smoothing_function=SmoothingFunction().method1)
        assert ref_set.sentence_bleu(hyp) == pytest.approx(want, abs=1e-12)


def test_pipeline_writes_everything_and_resumes(model, tmp_path):
    cfg = RunConfig(model="toy", k=3, seeds=2, max_new_tokens=4, gen_batch_size=2, ablation_ks=[2, 6],
                    ablation_seeds=2)
    run(model, cfg, tmp_path, data=toy_texts(), progress=False)
    for name in ["config.json", "language_neurons.csv", "layer_histograms.png", "overlap.csv", "overlap.png",
                 "activation_distributions.png", "steering.json", "steering.csv", "steering.png", "samples.md",
                 "ablation.csv", "ablation.png", "pooled_activations.pt"]:
        assert (tmp_path / name).exists(), name
    steering = json.loads((tmp_path / "steering.json").read_text())
    assert len(steering) == 3 * 4
    before = (tmp_path / "steering.json").stat().st_mtime_ns
    run(model, cfg, tmp_path, data=toy_texts(), progress=False)  # everything cached: nothing regenerated
    assert json.loads((tmp_path / "steering.json").read_text()) == steering
    with pytest.raises(ValueError, match="different configuration"):
        run(model, RunConfig(model="toy", k=4), tmp_path, data=toy_texts(), progress=False)
    assert before > 0
