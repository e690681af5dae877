"""The four lenses on a model and data of your own, with every result as a pandas table.

    python examples/own_model_and_data.py

The model here is a small random HookedTransformer built from a config and a tokenizer made in memory,
so the numbers mean nothing; swap in your own model (any HookedTransformer, or `ln.load_model(...)`) and
your own texts, and the same calls give real results. The tests run this file, so it cannot rot.
"""
import pandas as pd
from tokenizers import Tokenizer, models, pre_tokenizers
from transformer_lens import HookedTransformerConfig
from transformers import PreTrainedTokenizerFast

import lensneurons as ln
from lensneurons.data import Corpus, LanguageTexts, from_frame, minimal_pairs
from lensneurons.lenses.language.analysis import SteeringConfig


def own_model():
    """A byte-level tokenizer made in memory and a 2-layer model: TransformerLens alone would fail to load
    such a tokenizer (it re-loads tokenizers by path); `from_config` takes care of it."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(["<pad>", "<s>", "</s>"] + alphabet)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    cfg = HookedTransformerConfig(n_layers=2, d_model=32, d_head=8, n_heads=4, d_mlp=64, d_vocab=len(tokenizer),
                                  n_ctx=64, act_fn="gelu", seed=0)
    return ln.from_config(cfg, tokenizer)


def main() -> dict[str, pd.DataFrame]:
    model = own_model()
    tables = {}

    # L: language-specific neurons from your own texts, then steering from a prompt with their medians
    texts = LanguageTexts.from_texts({
        "en": ["the weather is nice today", "I like reading books", "where is the station"],
        "fr": ["il fait beau aujourd'hui", "j'aime lire des livres", "où est la gare"],
    })
    lang = ln.LanguageNeurons(k=5).fit(model, texts, progress=False)
    tables["language"] = lang.to_frame()
    steered = lang.generate(model, "fr", "both", SteeringConfig(seeds=[1, 2], max_new_tokens=8), prompt="Today")
    print("steered continuations:", steered)

    # K: knowledge neurons of your own facts (prompt, answer)
    facts = {"capital": [("The capital of France is", " Paris"), ("France's capital city is", " Paris")],
             "colour": [("The colour of the sky is", " blue"), ("On a clear day the sky is", " blue")]}
    knowledge = ln.KnowledgeNeurons(steps=4, tolerance=float("inf")).fit(model, facts, progress=False)
    tables["knowledge"] = knowledge.to_frame()

    # S: sparse probes of your own minimal pairs
    pairs = {"agreement": minimal_pairs("agreement", [(f"The dog {i} runs.", f"The dog {i} run.") for i in range(10)])}
    probing = ln.SparseProbing(lams=[1.0, 0.2], ks=[4], random_ks=[4], n_random=1, top_fraction=0.1, steps=30,
                               cross_layer=1).fit(model, pairs, progress=False)
    tables["grammar"] = probing.to_frame()

    # O: what single neurons respond to, in a corpus from a DataFrame with a metadata column
    frame = pd.DataFrame({"text": [f"sentence number {i} about {t}" for i, t in enumerate(["cats", "dogs"] * 8)],
                          "topic": ["cats", "dogs"] * 8})
    corpus: Corpus = from_frame(frame)
    corpus_neurons = ln.CorpusNeurons(k=3, n_sample=8).fit(model, corpus, progress=False)
    tables["corpus"] = corpus_neurons.to_frame()

    for name, table in tables.items():
        print(f"\n{name}: {len(table)} rows\n{table.head(3).to_string()}")
    return tables


if __name__ == "__main__":
    main()
