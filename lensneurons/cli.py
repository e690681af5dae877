"""Command line: `lensneurons <study> --model … --out …`; every field of the study's configuration is a flag."""
from __future__ import annotations

import argparse
import importlib
import sys

# study name → (module defining STUDY, one line of help). A study module imports torch and TransformerLens,
# so only the one that runs is imported and `lensneurons --help` stays instant.
STUDIES = {
    "language-neurons": ("lensneurons.lenses.language.study",
                         "language-specific neurons and steering (Kojima et al. 2024)"),
    "knowledge-neurons": ("lensneurons.lenses.knowledge.study",
                          "knowledge neurons: integrated gradients, refinement, suppress/amplify (Ariyama et al.; "
                          "Dai et al. 2021)"),
    "sparse-probing": ("lensneurons.lenses.grammar.study",
                       "sparse probing of grammaticality on BLiMP: L0 mask and Welch-t top-k probes (Sato et al.)"),
    "corpus-neurons": ("lensneurons.lenses.corpus.study",
                       "what single neurons respond to: top-K sentences, patterns, metadata, clusters (Oba et al.)"),
    "finetune-shift": ("lensneurons.lenses.corpus.shift_study",
                       "how far each sentence's neuron vector moves under a short fine-tune (Oba et al., step 5)"),
    "atlas": ("lensneurons.atlas.study",
              "the neuron atlas: every lens on one unit space, one card per unit, a static site to search"),
}


def study(name: str):
    """The `Study` of a subcommand."""
    return importlib.import_module(STUDIES[name][0]).STUDY


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lensneurons", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (_, help_text) in STUDIES.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            s = study(name)
            s.add_arguments(sp)
            sp.set_defaults(func=s.main)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, TypeError, OSError, ModuleNotFoundError) as err:
        # the expected failures (bad values, missing data or packages, unwritable places) as one line
        print(f"lensneurons: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
