"""Command line: `lensneurons <analysis> --model … --out …`."""
from __future__ import annotations

import argparse
import importlib
import sys
import time


def _language_neurons(args: argparse.Namespace) -> None:
    from lensneurons.models import load_model
    from lensneurons.pipelines.language_neurons import RunConfig, load_texts, run

    cfg = RunConfig.preset(
        args.preset,
        model=args.model,
        data=args.data,
        languages=args.languages,
        k=args.k,
        seeds=args.seeds,
        max_new_tokens=args.max_new_tokens,
        n_positive=args.n_positive,
        n_negative=args.n_negative,
        ablation_seeds=args.ablation_seeds,
        ablation_ks=args.ablation_ks,
    )
    started = time.time()
    data = load_texts(cfg)  # a missing dataset fails here, before the model takes its time to load
    model = load_model(cfg.model, device=args.device)
    result = run(model, cfg, args.out, data=data, progress=not args.quiet)
    print(f"\nSteering: % of {cfg.seeds} generations in the target language (fastText score > 0.5)")
    for row in result["steering"]:
        print("  " + "  ".join(f"{k}={v}" for k, v in row.items()))
    print(f"\nResults, tables and figures are in {result['out']}/ ({time.time() - started:.0f} s):")
    print("  config.json, language_neurons.csv, layer_histograms.{csv,png}, overlap.{csv,png},")
    print("  activation_distributions.png, steering.{json,csv,png}, samples.md, ablation.{json,csv,png}")


_PIPELINES = [
    ("knowledge-neurons", "lensneurons.pipelines.knowledge_neurons",
     "knowledge neurons: integrated gradients, refinement, suppress/amplify (Ariyama et al.; Dai et al. 2021)"),
    ("sparse-probing", "lensneurons.pipelines.sparse_probing",
     "sparse probing of grammaticality on BLiMP: L0 mask and Welch-t top-k probes (Sato et al.)"),
    ("corpus-neurons", "lensneurons.pipelines.corpus_neurons",
     "what single neurons respond to: top-K sentences, patterns, metadata, clusters (Oba et al.)"),
    ("finetune-shift", "lensneurons.pipelines.finetune_shift",
     "how far each sentence's neuron vector moves under a short fine-tune (Oba et al., step 5)"),
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lensneurons", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    ln = sub.add_parser("language-neurons", help="language-specific neurons and steering (Kojima et al. 2024)")
    ln.add_argument("--model", default="gemma-3-270m", help="embedded model or any TransformerLens name")
    ln.add_argument("--preset", default="paper", help="demo | paper | flores17")
    ln.add_argument("--data", default=None, help="kojima2024 | flores200 (default: the preset's)")
    ln.add_argument("--languages", nargs="+", default=None)
    ln.add_argument("--k", type=int, default=None, help="top-k and bottom-k neurons per language")
    ln.add_argument("--seeds", type=int, default=None, help="generations per condition (seeds 1..N)")
    ln.add_argument("--max-new-tokens", type=int, default=None)
    ln.add_argument("--n-positive", type=int, default=None)
    ln.add_argument("--n-negative", type=int, default=None)
    ln.add_argument("--ablation-seeds", type=int, default=None, help="generations per k in the k-ablation")
    ln.add_argument("--ablation-ks", type=int, nargs="*", default=None, help="k values of the k-ablation (none: skip)")
    ln.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    ln.add_argument("--out", required=True, help="results folder (a rerun resumes it)")
    ln.add_argument("--quiet", action="store_true")
    ln.set_defaults(func=_language_neurons)

    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, module, help_text in _PIPELINES:
        sp = sub.add_parser(name, help=help_text)
        if name == chosen:  # importing a pipeline pulls in torch and TransformerLens: only the one that runs
            pipeline = importlib.import_module(module)
            pipeline.add_arguments(sp)
            sp.set_defaults(func=pipeline.main)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as err:
        print(f"lensneurons: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
