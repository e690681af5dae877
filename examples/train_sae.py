"""Train a sparse autoencoder on Gemma-3-270M's residual stream with sae-lens's own trainer, and measure it.

    python examples/train_sae.py --data-dir /work/shared/data            # layer 6, 4,096 latents, top-k 32
    python examples/train_sae.py --tokens 100000 --out results/sae_probe  # a short run to measure tokens/s

Text: the six local NLTK corpora (`lensneurons.data.nltk_corpora`: Brown, movie_reviews, sentence_polarity,
subjectivity, pros_cons, inaugural), grouped into documents of at most `--doc-sentences` consecutive
sentences of one source file; one document in `--heldout-every` is held out (never trained on) and the
first `--eval-tokens` tokens of the held-out documents are measured with `sae_quality`.

Writes the SAE to `--out` (sae-lens format, git-ignored `results/`; weights are never committed), and two
small tables, cells formatted for docs/results/sae.md: `quality.csv` and `training_cost.csv` in
`--table-dir` (default docs/results/data/sae; pass `--table-dir ''` to write none).
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import time
from pathlib import Path

import torch

from lensneurons.core.models import load_model
from lensneurons.core.sae_training import eval_tokens, sae_quality, train_sae
from lensneurons.data.corpora import NLTK_CORPORA, nltk_corpora


def documents(data_dir: str | None, doc_sentences: int) -> list[str]:
    """The NLTK corpora as documents: consecutive sentences of one source file, at most `doc_sentences` each."""
    corpus = nltk_corpora(list(NLTK_CORPORA), data_dir=data_dir)
    docs, current, key = [], [], None
    for text, name, doc in zip(corpus.texts, corpus.metadata["corpus"], corpus.metadata["document"]):
        if (name, doc) != key or len(current) == doc_sentences:
            if current:
                docs.append(" ".join(current))
            current, key = [], (name, doc)
        current.append(text)
    docs.append(" ".join(current))
    return docs


def write_csv(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layer", type=int, default=6, help="SAE on blocks.LAYER.hook_resid_post")
    p.add_argument("--d-sae", type=int, default=4096)
    p.add_argument("--architecture", choices=["topk", "standard"], default="topk")
    p.add_argument("--k", type=int, default=32, help="latents kept per token (top-k)")
    p.add_argument("--l1", type=float, default=5.0, help="L1 coefficient (standard)")
    p.add_argument("--tokens", type=int, default=716_800, help="training tokens (350 steps of 2,048)")
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-tokens", type=int, default=2048)
    p.add_argument("--data-dir", default=None, help="folder holding nltk_data/ (default $LENSNEURONS_DATA_DIR)")
    p.add_argument("--doc-sentences", type=int, default=40)
    p.add_argument("--heldout-every", type=int, default=20)
    p.add_argument("--eval-tokens", type=int, default=60_000, help="held-out tokens for EV, L0, dead latents")
    p.add_argument("--ce-rows", type=int, default=80, help="held-out contexts for the losses (3 full passes each)")
    # one thread: on 2 cores shared with another job, 2 torch threads ran the model 4-5x slower
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/sae_gemma_resid6")
    p.add_argument("--table-dir", default="docs/results/data/sae")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    hook = f"blocks.{args.layer}.hook_resid_post"

    docs = documents(args.data_dir, args.doc_sentences)
    random.Random(args.seed).shuffle(docs)
    heldout = docs[:: args.heldout_every]
    train = [d for i, d in enumerate(docs) if i % args.heldout_every]

    model = load_model("gemma-3-270m", device="cpu")
    sae, info = train_sae(model, train, hook, d_sae=args.d_sae, training_tokens=args.tokens, out_dir=args.out,
                          architecture=args.architecture, k=args.k, l1_coefficient=args.l1, lr=args.lr,
                          context_size=args.context, train_batch_size_tokens=args.batch_tokens, seed=args.seed)
    print(f"trained {info['training_tokens']:,} tokens in {info['seconds']:.0f} s "
          f"({info['tokens_per_s']:.0f} tokens/s); saved to {args.out}", flush=True)

    rows = eval_tokens(model, heldout, args.context)
    rows = rows[: max(1, args.eval_tokens // args.context)]
    started = time.perf_counter()
    q = sae_quality(model, sae, hook, rows, batch_size=4, ce_rows=args.ce_rows)
    eval_seconds = time.perf_counter() - started
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux

    result = {**q, **info, "eval_seconds": eval_seconds, "peak_rss_gb": peak_gb, "args": vars(args)}
    (Path(args.out) / "metrics.json").write_text(json.dumps(result, indent=1) + "\n")
    print(result, flush=True)
    if args.table_dir:
        dead = round(q["dead_fraction"] * args.d_sae)
        write_csv(Path(args.table_dir) / "quality.csv", [
            ["measure (held-out text)", "value"],
            ["explained variance", f"{q['explained_variance']:.3f}"],
            ["L0 (active latents per token)", f"{q['l0']:.1f}"],
            ["dead latents (never active)", f"{dead:,} of {args.d_sae:,} ({q['dead_fraction']:.1%})"],
            ["CE loss, clean (nats)", f"{q['ce_clean']:.3f}"],
            ["CE loss, SAE spliced in", f"{q['ce_sae']:.3f} (+{q['ce_sae'] - q['ce_clean']:.3f})"],
            ["CE loss, zero-ablated", f"{q['ce_zero']:.3f}"],
            ["fraction of loss recovered", f"{q['loss_recovered']:.3f}"],
            ["tokens measured", f"{int(q['tokens']):,} (losses: first {int(q['ce_tokens']):,})"],
        ])
        write_csv(Path(args.table_dir) / "training_cost.csv", [
            ["training run", "value"],
            ["site", f"`{hook}` (d_in {sae.cfg.d_in})"],
            ["SAE", f"{args.architecture}, d_sae {args.d_sae:,}" + (f", k {args.k}" if args.architecture == "topk"
                                                                    else f", L1 {args.l1}")],
            ["training tokens", f"{info['training_tokens']:,}"],
            ["training wall time", f"{info['seconds'] / 60:.1f} min"],
            ["tokens/s", f"{info['tokens_per_s']:,.0f} ({args.threads} torch thread{'s' * (args.threads > 1)})"],
            ["evaluation wall time", f"{eval_seconds / 60:.1f} min"],
            ["peak resident memory", f"{peak_gb:.1f} GB"],
        ])
    return result


if __name__ == "__main__":
    main()
