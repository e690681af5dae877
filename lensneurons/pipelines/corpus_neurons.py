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

import argparse
import hashlib
import html
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from transformer_lens import HookedTransformer

from lensneurons import distributed
from lensneurons.analyses.corpus_neurons import CorpusNeurons, plot_neuron_clusters, plot_sse_curves, plot_summary_map
from lensneurons.data.corpora import NLTK_CORPORA, Corpus, from_file, nltk_corpora
from lensneurons.models import weights_digest
from lensneurons.report import neuron_report_html
from lensneurons.results import ResultsFolder


@dataclass
class RunConfig:
    model: str = "gemma-3-270m"
    corpora: list[str] = field(default_factory=lambda: list(NLTK_CORPORA))  # NLTK corpora to read
    data_file: Optional[str] = None  # a CSV/JSONL corpus instead of the NLTK corpora
    text_column: str = "text"
    n_sentences: Optional[int] = None  # random subsample of the corpus (None: all)
    per_corpus: Optional[int] = None  # instead: this many random sentences of each source corpus (stratified)
    k: int = 100  # top sentences per neuron (paper: 10,000)
    site: str = "resid"
    layers: Optional[list[int]] = None
    n_sample: int = 1000  # sentences whose activations cluster the neurons
    n_clusters: int = 10
    # metadata fields checked for classifier-like neurons (those the corpus lacks are skipped)
    label_fields: list[str] = field(default_factory=lambda: ["label", "corpus", "sentiment", "subjectivity",
                                                             "pro_con", "genre", "president"])
    classifier_threshold: float = 0.8
    min_known: float = 0.5  # share of a top set that must carry the field for it to count
    sse_k_max: int = 10  # k-means SSE curves of top-set embeddings for k = 1..sse_k_max (0: skip)
    n_describe: int = 10  # neurons described in detail (HTML page each)
    patterns: bool = True  # PrefixSpan patterns, words and POS (needs the NLTK tagger data)
    min_support: float = 0.1
    batch_size: int = 16
    max_length: int = 128
    checkpoint_every: int = 20_000  # sentences per saved part of the top-K pass (a rerun resumes at the next part)
    random_state: int = 0


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


def _chosen_neurons(cn: CorpusNeurons, cfg: RunConfig) -> list[tuple[int, int]]:
    """Classifier-like neurons first (strongest first), then the neurons with the highest mean top activation."""
    chosen = []
    for name in cfg.label_fields:
        if name in cn.corpus_.metadata:
            # the strongest few of each field, so that one field cannot fill the whole list
            for layer, j, _, _ in cn.classifier_neurons(name)[: max(1, cfg.n_describe // 4)]:
                if (layer, j) not in chosen:
                    chosen.append((layer, j))
    strength = cn.summary_map("mean_activation").flatten()
    for flat in strength.argsort(descending=True).tolist():
        pair = (cn.layers_[flat // cn.width_], flat % cn.width_)
        if pair not in chosen:
            chosen.append(pair)
        if len(chosen) >= cfg.n_describe:
            break
    return chosen[: cfg.n_describe]


def run(
    model: HookedTransformer, cfg: RunConfig, out: str | Path, corpus: Optional[Corpus] = None, progress: bool = True
) -> dict:
    """Run the study into folder `out`; `corpus` defaults to the one `cfg` names."""
    folder = ResultsFolder(out)
    folder.json("config.json", asdict(cfg))
    corpus = load_corpus(cfg) if corpus is None else corpus
    timings = {}

    started = time.time()
    cn = _fit_in_parts(model, cfg, corpus, folder, progress)
    timings["top_k_pass_s"] = round(time.time() - started, 2)
    timings["sentences_per_s"] = round(len(corpus) / max(timings["top_k_pass_s"], 1e-9), 3)
    folder.tensor("top_sentences.pt", {"layers": cn.layers_, "values": cn.top_values_, "ids": cn.top_ids_})
    folder.csv("top_sentences.csv", [
        {"layer": layer, "neuron": j, "rank": r, "sentence": int(cn.top_ids_[r, s, j]),
         "activation": round(float(cn.top_values_[r, s, j]), 6)}
        for s, layer in enumerate(cn.layers_) for j in range(cn.width_) for r in range(min(10, cn.top_ids_.shape[0]))
    ])

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
        labels, emb = cn.cluster(min(cfg.n_clusters, n_neurons))
        timings["clustering_s"] = round(time.time() - started, 2)
        folder.csv("clusters.csv", [
            {"layer": layer, "neuron": j, "cluster": int(labels[s, j]),
             "x": round(float(emb[s, j, 0]), 4), "y": round(float(emb[s, j, 1]), 4)}
            for s, layer in enumerate(cn.layers_) for j in range(cn.width_)
        ])
        folder.figure("clusters.png", plot_neuron_clusters(emb, labels))

    started = time.time()
    descriptions = []
    index = ["<!doctype html><html><head><meta charset='utf-8'><title>neurons</title></head><body>",
             f"<h1>Described neurons ({html.escape(cfg.site)})</h1><ul>"]
    for layer, j in _chosen_neurons(cn, cfg):
        d = cn.describe(layer, j, min_support=cfg.min_support, patterns=cfg.patterns)
        descriptions.append(d.to_dict())
        page = f"neuron_L{layer}_{j}.html"
        folder.text(page, neuron_report_html(d, cn.corpus_.texts, model=model, site=cfg.site))
        tag = f" — classifier-like: {html.escape(str(d.classifier_like))}" if d.classifier_like else ""
        index.append(f"<li><a href='{page}'>layer {layer}, neuron {j}</a>{tag}</li>")
    timings["describe_s"] = round(time.time() - started, 2)
    folder.json("descriptions.json", descriptions)
    folder.text("index.html", "\n".join(index + ["</ul></body></html>"]))
    folder.json("timings.json", timings)
    return {"out": str(folder.path), "n_sentences": len(corpus), "classifier_neurons": classifier,
            "described": [(d["layer"], d["neuron"]) for d in descriptions]}


def _fit_in_parts(model: HookedTransformer, cfg: RunConfig, corpus: Corpus, folder: ResultsFolder,
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
    fingerprint = hashlib.sha256(json.dumps({
        "weights": weights_digest(model), "k": cfg.k, "site": cfg.site, "layers": cfg.layers, "n_sample": cfg.n_sample,
        "random_state": cfg.random_state, "max_length": cfg.max_length, "n_parts": n_parts,
        "texts": hashlib.sha256("\n".join(corpus.texts).encode()).hexdigest(),
    }, sort_keys=True).encode()).hexdigest()
    saved = folder.read_tensor("checkpoint.pt")
    merged, start = None, 0
    if saved is not None and saved["fingerprint"] == fingerprint:
        merged, start = fresh().load_state_dict(saved["state"], corpus), saved["parts_done"]
    for i in range(start, n_parts):
        part = fresh().fit(model, corpus, shard=(i, n_parts), progress=progress)
        merged = part if merged is None else merged.merge(part)
        folder.tensor("checkpoint.pt", {"fingerprint": fingerprint, "parts_done": i + 1, "state": merged.state_dict()})
    return merged


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the `corpus-neurons` subcommand (defaults: `RunConfig`)."""
    d = RunConfig()
    parser.add_argument("--model", default=d.model, help="embedded model or any TransformerLens name")
    parser.add_argument("--corpora", nargs="+", default=None, help=f"NLTK corpora (default: all of {', '.join(NLTK_CORPORA)})")
    parser.add_argument("--data-file", default=None, help="a CSV/JSONL corpus instead (text column + metadata columns)")
    parser.add_argument("--text-column", default=d.text_column)
    parser.add_argument("--n-sentences", type=int, default=None, help="random subsample of the corpus")
    parser.add_argument("--per-corpus", type=int, default=None,
                        help="instead: this many random sentences from each source corpus (stratified)")
    parser.add_argument("--k", type=int, default=d.k, help="top sentences kept per neuron")
    parser.add_argument("--site", default=d.site, help="resid (the paper's) | mlp | mlp_pre")
    parser.add_argument("--layers", type=int, nargs="+", default=None)
    parser.add_argument("--n-sample", type=int, default=d.n_sample, help="sentences for clustering neurons")
    parser.add_argument("--n-clusters", type=int, default=d.n_clusters)
    parser.add_argument("--label-fields", nargs="+", default=d.label_fields,
                        help="metadata fields checked for classifier-like neurons (missing ones skipped)")
    parser.add_argument("--classifier-threshold", type=float, default=d.classifier_threshold,
                        help="share of a top set one label must reach")
    parser.add_argument("--sse-k-max", type=int, default=d.sse_k_max, help="k-means SSE curves up to this k (0: skip)")
    parser.add_argument("--n-describe", type=int, default=d.n_describe, help="neurons described in HTML pages")
    parser.add_argument("--no-patterns", action="store_true", help="skip PrefixSpan/POS (no tagger needed)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--max-length", type=int, default=d.max_length)
    parser.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                        help="sentences per saved part of the top-K pass (a rerun with the same settings resumes)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--out", required=True, help="results folder")
    parser.add_argument("--quiet", action="store_true")


def main(args: argparse.Namespace) -> dict:
    """Run the `corpus-neurons` subcommand from parsed `args`."""
    from lensneurons.models import load_model

    cfg = RunConfig(
        model=args.model, corpora=list(args.corpora or NLTK_CORPORA), data_file=args.data_file,
        text_column=args.text_column, n_sentences=args.n_sentences, per_corpus=args.per_corpus, k=args.k,
        site=args.site, layers=args.layers, n_sample=args.n_sample, n_clusters=args.n_clusters,
        label_fields=list(args.label_fields), classifier_threshold=args.classifier_threshold,
        sse_k_max=args.sse_k_max, n_describe=args.n_describe, patterns=not args.no_patterns, batch_size=args.batch_size,
        max_length=args.max_length, checkpoint_every=args.checkpoint_every,
    )
    started = time.time()
    model = load_model(cfg.model, device=args.device)
    result = run(model, cfg, args.out, progress=not args.quiet)
    print(f"{result['n_sentences']} sentences; {len(result['classifier_neurons'])} classifier-like (neuron, field) "
          f"pairs on {cfg.label_fields}; described {len(result['described'])} neurons.")
    print(f"Results are in {result['out']}/ ({time.time() - started:.0f} s): config.json, top_sentences.{{pt,csv}},")
    print("  mean_length.{csv,png}, classifier_neurons.csv, sse_curves.{csv,png}, clusters.{csv,png}, descriptions.json,")
    print("  index.html and neuron_L<layer>_<neuron>.html")
    return result
