"""What single neurons respond to (paper O), from a sentence corpus into one results folder.

Stages: load the corpus (NLTK corpora with metadata, or a CSV/JSONL file; optionally the same number
of sentences from each source corpus) → one streaming pass for the top-K sentences of every neuron →
per-neuron descriptions (patterns, words, POS, metadata) for the classifier-like neurons and the
strongest others → layer × neuron map of top-sentence length → per-layer k-means SSE curves of the
neurons' top-set (TF-IDF) embeddings → k-means / t-SNE of neurons by activation pattern. Writes JSON, CSV, PNG and one HTML page per
described neuron (plus index.html).

    lensneurons corpus-neurons --model gemma-3-270m --corpora sentence_polarity subjectivity --out runs/o
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np

from lensneurons.core import distributed
from lensneurons.lenses.corpus.analysis import CorpusNeurons
from lensneurons.lenses.corpus.figures import plot_neuron_clusters, plot_sse_curves, plot_summary_map
from lensneurons.data.corpora import NLTK_CORPORA, Corpus, from_file, nltk_corpora
from lensneurons.core.models import CausalModel, weights_digest
from lensneurons.core.results import ResultsFolder, fingerprint
from lensneurons.core.study import MODEL_HELP, Study, StudyConfig, param


@dataclass
class CorpusNeuronsConfig(StudyConfig):
    model: str = param("gemma-3-270m", MODEL_HELP)
    corpora: list[str] = param(help="NLTK corpora to read", factory=lambda: list(NLTK_CORPORA))
    data_file: str | None = param(None, "a CSV/JSONL corpus instead of the NLTK corpora (text + metadata columns)")
    text_column: str = param("text", "text column of data_file")
    n_sentences: int | None = param(None, "random subsample of the corpus (none: all)", low=1)
    per_corpus: int | None = param(None, "instead: this many random sentences of each source corpus (stratified)", low=1)
    k: int = param(100, "top sentences kept per neuron (paper: 10,000)", low=1)
    site: str = param("resid", "unit space: resid (the paper's) | mlp | mlp_pre | heads | linear | '+'-joined hook names")
    layers: list[int] | None = param(None, "layers analysed (none: all)")
    n_sample: int = param(1000, "sentences whose activations cluster the neurons", low=0)
    n_clusters: int = param(10, "k-means clusters of neurons", low=1)
    tsne: bool = param(True, "a 2-D t-SNE map of the clustered neurons (clusters.png; minutes for tens of thousands)")
    label_fields: list[str] = param(help="metadata fields checked for classifier-like neurons (missing ones skipped)",
                                    factory=lambda: ["label", "corpus", "sentiment", "subjectivity", "pro_con",
                                                     "genre", "president"])
    classifier_threshold: float = param(0.8, "share of a top set one label must reach for a classifier-like neuron", low=0.0, high=1.0)
    min_known: float = param(0.5, "share of a top set that must carry the field for it to count", low=0.0)
    sse_k_max: int = param(10, "k-means SSE curves of top-set embeddings for k = 1..this (0: skip)", low=0)
    n_describe: int = param(10, "neurons described in detail (an HTML page each)", low=0)
    patterns: bool = param(True, "PrefixSpan patterns, words and POS (needs the NLTK tagger data)")
    min_support: float = param(0.1, "minimum support of a pattern, a share of the top set", low=0.0)
    batch_size: int = param(16, "sentences per forward pass", low=1)
    max_length: int = param(128, "tokens kept per sentence", low=2)
    checkpoint_every: int = param(20_000, "sentences per saved part of the top-K pass (a rerun resumes at the next)", low=1)
    random_state: int = param(0, "seed of subsampling and clustering", flags=("--seed",))

    # the paper keeps K = 10,000 sentences per neuron; on 2 CPU cores the default keeps 100
    presets: ClassVar[dict] = {"default": {}, "paper": dict(k=10_000)}


RunConfig = CorpusNeuronsConfig


def load_corpus(cfg: RunConfig) -> Corpus:
    corpus = from_file(cfg.data_file, cfg.text_column) if cfg.data_file else nltk_corpora(cfg.corpora)
    if cfg.per_corpus is not None:
        if cfg.per_corpus < 1:
            raise ValueError(f"per_corpus must be >= 1, got {cfg.per_corpus}")
        if "corpus" not in corpus.metadata:
            raise ValueError("per_corpus needs a 'corpus' metadata field (the NLTK corpora have one)")
        rng = np.random.default_rng(cfg.random_state)
        source = np.array(corpus.metadata["corpus"], dtype=object)
        picked = []
        for name in dict.fromkeys(corpus.metadata["corpus"]):
            members = np.flatnonzero(source == name)
            picked += rng.choice(members, min(cfg.per_corpus, len(members)), replace=False).tolist()
        return corpus.subset(sorted(picked))
    if cfg.n_sentences is not None and cfg.n_sentences < len(corpus):
        if cfg.n_sentences < 1:
            raise ValueError(f"n_sentences must be >= 1, got {cfg.n_sentences}")
        rng = np.random.default_rng(cfg.random_state)
        corpus = corpus.subset(np.sort(rng.choice(len(corpus), cfg.n_sentences, replace=False)).tolist())
    return corpus


def run(
    model: CausalModel, cfg: RunConfig, out: str | Path, corpus: Optional[Corpus] = None, progress: bool = True
) -> dict:
    """Run the study into folder `out`; `corpus` defaults to the one `cfg` names."""
    corpus = load_corpus(cfg) if corpus is None else corpus
    folder = ResultsFolder.claim(out, cfg, model)
    timings = {}

    started = time.time()
    cn = _fit_in_parts(model, cfg, corpus, folder, progress)
    timings["top_k_pass_s"] = round(time.time() - started, 2)
    timings["sentences_per_s"] = round(len(corpus) / max(timings["top_k_pass_s"], 1e-9), 3)
    folder.tensor("top_sentences.pt", {"layers": cn.layers_, "values": cn.top_values_, "ids": cn.top_ids_})
    folder.csv("top_sentences.csv", [{k: v for k, v in row.items() if k != "text"} for row in cn.rows(10)])

    lengths = cn.summary_map("mean_length")
    folder.csv("mean_length.csv", [{"layer": layer, **{str(j): round(float(v), 3) for j, v in enumerate(row)}}
                                   for layer, row in zip(cn.layers_, lengths)])
    folder.figure("mean_length.png", plot_summary_map(lengths, layers=cn.layers_))

    classifier = []
    for name in cfg.label_fields:
        if name in corpus.metadata:
            classifier += [{"field": name, "layer": l, "neuron": j, "label": str(lab), "share": round(s, 4)}
                           for l, j, lab, s in cn.classifier_neurons(name)]
    if classifier:
        folder.csv("classifier_neurons.csv", classifier)

    if cfg.sse_k_max > 0:
        started = time.time()
        sse = cn.sse_curves(k_max=min(cfg.sse_k_max, cn.width_))
        timings["sse_curves_s"] = round(time.time() - started, 2)
        folder.csv("sse_curves.csv", [{"layer": layer, **{f"k{k + 1}": round(float(v), 6) for k, v in enumerate(row)}}
                                      for layer, row in zip(cn.layers_, sse)])
        folder.figure("sse_curves.png", plot_sse_curves(sse, layers=cn.layers_))

    n_neurons = cn.n_layers_ * cn.width_
    if cn.sample_activations_.shape[0] >= 2 and n_neurons >= 2:
        started = time.time()
        labels, emb = cn.cluster(min(cfg.n_clusters, n_neurons), tsne=cfg.tsne)
        timings["clustering_s"] = round(time.time() - started, 2)
        folder.csv("clusters.csv", [
            {"layer": layer, "neuron": j, "cluster": int(labels[s, j]),
             **({"x": round(float(emb[s, j, 0]), 4), "y": round(float(emb[s, j, 1]), 4)} if emb is not None else {})}
            for s, layer in enumerate(cn.layers_) for j in range(cn.width_)
        ])
        if emb is not None:
            folder.figure("clusters.png", plot_neuron_clusters(emb, labels))

    started = time.time()
    descriptions = cn.report(folder.path, model=model, n=cfg.n_describe, fields=cfg.label_fields,
                             patterns=cfg.patterns, min_support=cfg.min_support)
    timings["describe_s"] = round(time.time() - started, 2)
    folder.json("timings.json", timings)
    return {"out": str(folder.path), "n_sentences": len(corpus), "classifier_neurons": classifier,
            "described": [(d.layer, d.neuron) for d in descriptions]}


def _fit_in_parts(model: CausalModel, cfg: RunConfig, corpus: Corpus, folder: ResultsFolder,
                  progress: bool) -> CorpusNeurons:
    """The top-K pass in parts of `cfg.checkpoint_every` sentences; after each part the merged state so far is
    saved (`checkpoint.pt`, one file, replaced atomically), so an interrupted run resumes at the next part. The
    merged parts equal the single pass exactly. Under torchrun the ranks share one pass instead (no checkpoint)."""
    def fresh() -> CorpusNeurons:
        return CorpusNeurons(
            k=cfg.k, site=cfg.site, layers=cfg.layers, n_sample=cfg.n_sample, batch_size=cfg.batch_size,
            max_length=cfg.max_length, classifier_threshold=cfg.classifier_threshold, random_state=cfg.random_state,
            min_known=cfg.min_known,
        )

    if cfg.checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1 sentence, got {cfg.checkpoint_every}")
    if distributed.is_active():
        return fresh().fit(model, corpus, progress=progress)
    n_parts = max(1, math.ceil(len(corpus) / cfg.checkpoint_every))
    # the checkpoint is reused only for the same model weights, settings, corpus and parts
    checkpoint = folder.checkpoint("checkpoint.pt", fingerprint(
        weights_digest(model), cfg.k, cfg.site, cfg.layers, cfg.n_sample, cfg.random_state, cfg.max_length, n_parts,
        corpus.texts))
    saved = checkpoint.load()
    merged, start = None, 0
    if saved is not None:
        merged, start = fresh().load_state_dict(saved["state"], corpus), saved["parts_done"]
    for i in range(start, n_parts):
        part = fresh().fit(model, corpus, shard=(i, n_parts), progress=progress)
        merged = part if merged is None else merged.merge(part)
        checkpoint.save({"parts_done": i + 1, "state": merged.state_dict()})
    return merged



def report(result: dict) -> str:
    return (f"{result['n_sentences']} sentences; {len(result['classifier_neurons'])} classifier-like (neuron, field) "
            f"pairs; described {len(result['described'])} neurons (index.html, neuron_L<layer>_<neuron>.html)")


STUDY = Study("corpus-neurons", "what single neurons respond to: top-K sentences, patterns, metadata, clusters",
              CorpusNeuronsConfig, run, prepare=load_corpus, report=report, data_keyword="corpus")

# the entry points of the hand-written command line this module had before the Study frame
add_arguments, main = STUDY.add_arguments, STUDY.main
