"""Does zero-baseline integrated gradients add up on a model without a post-MLP norm?

Paper K's IG scales a layer's MLP activations from 0 (the baseline) to their value. On Gemma-3 the MLP output is
normalised after the MLP, so P(answer) barely moves along that path and the attributions do not sum to
P(x) - P(baseline) (docs/results/knowledge_neurons.md). SmolLM2 (Llama architecture) has no post-MLP norm, so
completeness should hold there. This script measures it on each model's own known PARAREL facts (first prompt
of each, the facts drawn in the same random order for both models), every layer, 20 steps.

    LENSNEURONS_DATA_DIR=../shared/data python examples/completeness_across_models.py --facts 20 --out results/completeness
"""
import argparse
import csv
import random
import statistics
from pathlib import Path

from tqdm.auto import tqdm

from lensneurons.core.models import load_model
from lensneurons.data.pararel import pararel, to_prompts
from lensneurons.lenses.knowledge.attribution import integrated_gradients
from lensneurons.lenses.knowledge.facts import select_facts


def measure(name: str, n_facts: int, steps: int, seed: int) -> list[dict]:
    model = load_model(name, device="cpu")
    candidates = list(to_prompts(pararel()).items())
    random.Random(seed).shuffle(candidates)
    facts, tried = select_facts(model, dict(candidates), n_facts, min_correct=0.5, scoring="single")
    rows = []
    for concept, pairs in tqdm(facts.items(), desc=f"IG on {name}", unit="fact"):
        prompt, answer = pairs[0]
        a = integrated_gradients(model, prompt, answer, steps=steps, baseline="zero", scoring="single", warn=False)
        for layer in a.layers:
            rows.append({"model": name, "concept": concept, "prompt": prompt, "answer": answer, "layer": layer,
                         "p": round(a.prob, 6), "p_baseline": round(float(a.baseline_prob[layer]), 6),
                         "sum_attributions": round(float(a.scores[layer].sum()), 6),
                         "error": round(float(a.completeness_error[layer]), 6)})
    print(f"{name}: {len(facts)} facts known of {tried} tried")
    return rows


def summary(rows: list[dict]) -> list[dict]:
    out = []
    for name in dict.fromkeys(r["model"] for r in rows):
        errors = [r["error"] for r in rows if r["model"] == name]
        layers = sorted({r["layer"] for r in rows if r["model"] == name})
        per_layer = [statistics.median(r["error"] for r in rows if r["model"] == name and r["layer"] == layer)
                     for layer in layers]
        out.append({
            "model": name, "facts": len({r["concept"] for r in rows if r["model"] == name}),
            "cells (fact × layer)": len(errors), "median error": f"{statistics.median(errors):.1%}",
            "cells under 10%": f"{sum(e < 0.1 for e in errors) / len(errors):.0%}",
            "cells under 1%": f"{sum(e < 0.01 for e in errors) / len(errors):.0%}",
            "worst layer (median)": f"{layers[max(range(len(layers)), key=per_layer.__getitem__)]} "
                                    f"({max(per_layer):.1%})",
        })
    return out


def write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "gemma-3-270m"])
    parser.add_argument("--facts", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/completeness"))
    args = parser.parse_args()
    rows = [row for name in args.models for row in measure(name, args.facts, args.steps, args.seed)]
    write(args.out / "completeness_per_layer.csv", rows)
    write(args.out / "completeness_summary.csv", summary(rows))
    for row in summary(rows):
        print(row)


if __name__ == "__main__":
    main()
