"""The cross-model tables of docs/results, from SmolLM2 study folders and the committed Gemma tables.

The Gemma folders behind the earlier results no longer exist, so Gemma's side is read from the CSVs already in
docs/results/data; SmolLM2's side is computed from the study folders named on the command line. Each lens is
optional: give the folders that exist.

    python examples/cross_model_tables.py --language results/L_smollm2_paper --ablation results/L_smollm2_kabl \
        --grammar results/S_smollm2 --grammar-reference results/S_gemma_400 --knowledge results/K_smollm2_100 \
        --corpus results/O_smollm2_15k
"""
import argparse
import csv
import json
import math
import random
import re
import statistics
from collections import Counter
from pathlib import Path

import torch

DATA = Path(__file__).parents[1] / "docs" / "results" / "data"
LANGS = ["en", "de", "fr", "es", "zh", "ja"]
CONDITIONS = ["none", "top", "bottom", "both"]
NAMES = {"en": "English", "de": "German", "fr": "French", "es": "Spanish", "zh": "Chinese", "ja": "Japanese"}
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]")


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    print("wrote", path.relative_to(DATA.parents[2]))


def pct(x: float) -> str:
    return f"{round(100 * x, 1):g}"


def cjk_share(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum(bool(CJK.match(c)) for c in letters) / len(letters) if letters else 0.0


# ------------------------------------------------------------------------------------------------ paper L
def language(folder: Path, ablation: Path | None) -> None:
    steering = json.loads((folder / "steering.json").read_text())
    n = steering["en/none"]["n"]
    rates = {c: [steering[f"{lang}/{c}"]["rate"] for lang in LANGS] for c in CONDITIONS}
    write_csv(DATA / "language_neurons" / "steering_paper_units_smollm2.csv",
              [f"% in target language (SmolLM2; {n} generations each; linear units, 64 tokens, T 0.8)",
               *LANGS, "avg"],
              [[c, *(pct(r) for r in rates[c]), f"{100 * statistics.mean(rates[c]):.1f}"] for c in CONDITIONS])

    gemma = {row[next(iter(row))]: row["avg"] for row in read_csv(DATA / "language_neurons" / "steering_paper_units.csv")}
    paper = {row["model"]: row for row in read_csv(DATA / "language_neurons" / "steering_vs_paper.csv")}
    rows = [[m, *(paper[m][c] for c in CONDITIONS)] for m in paper if "(paper)" in m]
    rows.append(["Gemma-3-270M (here; multilingual)", *(gemma[c] for c in CONDITIONS)])
    rows.append(["SmolLM2-135M-Instruct (here; mostly English)",
                 *(f"{100 * statistics.mean(rates[c]):.1f}" for c in CONDITIONS)])
    write_csv(DATA / "language_neurons" / "steering_cross_model.csv",
              ["model (average % in target language; here: linear units, 10 generations per cell)", *CONDITIONS], rows)

    # what the identifier saw under "both", confident or not, and how much CJK script the zh/ja texts hold
    rows = []
    for lang in LANGS:
        cell = steering[f"{lang}/both"]
        labels = Counter(cell["languages"])
        others = ", ".join(f"{k} {v}" for k, v in labels.most_common() if k != lang)
        cjk = sum(cjk_share(t) >= 0.5 for t in cell["texts"])
        named = [sum(NAMES[lang] in t for t in steering[f"{lang}/{c}"]["texts"]) for c in CONDITIONS]
        rows.append([lang, pct(cell["rate"]), labels.get(lang, 0), others or "–", cjk, " / ".join(map(str, named))])
    write_csv(DATA / "language_neurons" / "steering_labels_smollm2.csv",
              ["target (SmolLM2, both sets clamped, 10 generations)", "% confident (score > 0.5)",
               "labelled target at any score", "other labels", "texts with ≥ 50% CJK letters",
               "texts naming the language in English (none / top / bottom / both)"], rows)

    if ablation is not None:
        cells = json.loads((ablation / "ablation.json").read_text())
        ks = sorted({c["k"] for c in cells.values()})
        rows = []
        for k in ks:
            got = [cells[f"{lang}/{k}"] for lang in LANGS]
            # BLEU is NaN where no generation was identified as the target language
            bleu = [c["bleu"] for c in got if c["bleu"] is not None and c["bleu"] == c["bleu"]]
            rows.append([f"{k:,}", *(pct(c["rate"]) for c in got),
                         f"{100 * statistics.mean(c['rate'] for c in got):.1f}",
                         f"{statistics.mean(bleu):.3f}" if bleu else "–"])
        seeds = len(next(iter(cells.values()))["texts"])
        write_csv(DATA / "language_neurons" / "k_ablation_paper_units_smollm2.csv",
                  [f"k (SmolLM2; top-k and bottom-k clamped, linear units; % in target language, {seeds} generations each)",
                   *LANGS, "avg", "BLEU avg"], rows)


# ------------------------------------------------------------------------------------------------ paper S
# Gemma's whole-model numbers quoted in sparse_probing.md's prose (its per-task folder no longer exists)
GEMMA_S = {"λ = 1 mask / dense": "0.966", "top-1% / dense (mean over layers)": "0.77",
           "top-25% / dense": "0.94", "random neurons matching the top 1% (log-k interpolation)": "3.5–4.7×",
           "largest Spearman ρ(mask, |t|)": "0.16", "off-task accuracy, middle layer, λ = 0.2": "0.518",
           "sparse − dense off-task": "−0.001"}


def fifths(n_layers: int) -> list[list[int]]:
    return [[l for l in range(n_layers) if i * n_layers <= 5 * l < (i + 1) * n_layers] for i in range(5)]


def random_match(rows: list[dict]) -> dict[int, float]:
    """Per layer: the k at which the task-averaged random-k curve reaches the task-averaged top-1% accuracy,
    interpolated linearly in log k, divided by the top-1% size."""
    ks = sorted(int(c.removeprefix("random_")) for c in rows[0] if c.startswith("random_") and c[7:].isdigit())
    out = {}
    for layer in sorted({int(r["layer"]) for r in rows}):
        here = [r for r in rows if int(r["layer"]) == layer]
        top = statistics.mean(float(r["top_accuracy"]) for r in here)
        curve = [statistics.mean(float(r[f"random_{k}"]) for r in here) for k in ks]
        ratio = math.nan
        for (k0, a0), (k1, a1) in zip(zip(ks, curve), zip(ks[1:], curve[1:])):
            if a0 < top <= a1:
                t = (top - a0) / (a1 - a0)
                ratio = math.exp(math.log(k0) + t * (math.log(k1) - math.log(k0))) / int(here[0]["top_k"])
                break
        out[layer] = ratio
    return out


SUMMARY_ROWS = ["model", "dense acc. (mean over layers; best layer)", "λ = 0.2: neurons used, acc. / dense",
                "λ = 0.1: neurons used, acc. / dense", "λ = 1 mask / dense", "top-1% / dense (mean over layers)",
                "top-25% / dense", "random neurons matching the top 1% (log-k interpolation)",
                "largest Spearman ρ(mask, |t|)", "off-task accuracy, middle layer, λ = 0.2", "sparse − dense off-task"]


def probing_run(folder: Path) -> tuple[dict, dict, dict]:
    """(summary column, per-layer dense accuracy, {(λ, layer): (density, accuracy / dense)}) of one study folder."""
    per_layer = read_csv(folder / "per_layer.csv")
    layers = sorted({int(r["layer"]) for r in per_layer})
    cell = {(round(float(r["lam"]), 4), int(r["layer"])): r for r in per_layer}
    dense = {l: float(cell[(1.0, l)]["dense_accuracy"]) for l in layers}
    cells = {(lam, l): (float(cell[(lam, l)]["density"]), float(cell[(lam, l)]["accuracy"]) / dense[l])
             for lam in (0.2, 0.1) for l in layers}
    config = json.loads((folder / "config.json").read_text())

    topk = read_csv(folder / "topk_probes.csv")
    width = max(int(r["k"]) for r in topk)
    top1 = max(1, round(0.01 * width))

    def topk_ratio(k: int) -> float:
        acc = {l: statistics.mean(float(r["accuracy"]) for r in topk if int(r["k"]) == k and int(r["layer"]) == l)
               for l in layers}
        return statistics.mean(acc[l] / dense[l] for l in layers)

    match = random_match(read_csv(folder / "random_probes.csv"))
    spearman = max(float(r["spearman"]) for r in per_layer if r["spearman"] not in ("", "nan"))
    cross = [r for r in read_csv(folder / "cross_task.csv") if r["train_task"] != r["test_task"]]
    best = max(layers, key=dense.get)
    mean_cells = lambda lam: (f"{100 * statistics.mean(cells[(lam, l)][0] for l in layers):.1f}%, "  # noqa: E731
                              f"{statistics.mean(cells[(lam, l)][1] for l in layers):.3f}")
    column = dict(zip(SUMMARY_ROWS, [
        f"{len(layers)} layers × d {width}, {config.get('n_pairs') or 1000} pairs per task",
        f"{statistics.mean(dense.values()):.3f} ({dense[best]:.3f}, layer {best})",
        mean_cells(0.2), mean_cells(0.1),
        f"{statistics.mean(float(cell[(1.0, l)]['accuracy']) / dense[l] for l in layers):.3f}",
        f"{topk_ratio(top1):.2f} (top-{top1})",
        f"{topk_ratio(width // 4):.2f} (top-{width // 4})",
        f"{min(match.values()):.1f}–{max(match.values()):.1f}×",
        f"{spearman:.2f}",
        f"{statistics.mean(float(r['sparse']) for r in cross):.3f}",
        f"{statistics.mean(float(r['diff']) for r in cross):+.3f}".replace("-", "−"),
    ]))
    return column, dense, cells


def grammar(folder: Path, reference: Path | None) -> None:
    """SmolLM2's probing folder beside Gemma's paper-size run (committed tables) and, if given, a Gemma run with
    SmolLM2's settings (`reference`), so that data size and model can be told apart."""
    # Gemma's paper-size per-layer table repeats the header "acc. / dense": read it by position
    with open(DATA / "sparse_probing" / "mask_probes_per_layer.csv", newline="", encoding="utf-8") as f:
        gemma = list(csv.reader(f))[1:]
    g_dense = {int(r[0]): float(r[1]) for r in gemma}
    g_cells = {(lam, int(r[0])): (float(r[c].rstrip("%")) / 100, float(r[c + 1]))
               for r in gemma for lam, c in ((0.2, 2), (0.1, 4))}
    g_mean, g_best = statistics.mean(g_dense.values()), max(g_dense, key=g_dense.get)
    runs = [("Gemma-3-270M, 1,000 pairs", {
        "model": "18 layers × d 640, 1000 pairs per task",
        "dense acc. (mean over layers; best layer)": f"{g_mean:.3f} ({g_dense[g_best]:.3f}, layer {g_best})",
        "λ = 0.2: neurons used, acc. / dense": "21.7%, 0.946", "λ = 0.1: neurons used, acc. / dense": "5.3%, 0.894",
        **GEMMA_S}, g_dense, g_cells)]
    if reference is not None:
        runs.append(("Gemma-3-270M, 400 pairs", *probing_run(reference)))
    runs.append(("SmolLM2-135M-Instruct, 400 pairs", *probing_run(folder)))

    rows = []
    for name, _, model_dense, cells in runs:
        for i, group in enumerate(fifths(len(model_dense))):
            row = [name, ["first", "second", "third", "fourth", "last"][i], f"{group[0]}–{group[-1]}",
                   f"{statistics.mean(model_dense[l] for l in group):.3f}"]
            for lam in (0.2, 0.1):
                row += [f"{100 * statistics.mean(cells[(lam, l)][0] for l in group):.1f}%",
                        f"{statistics.mean(cells[(lam, l)][1] for l in group):.2f}"]
            rows.append(row)
    write_csv(DATA / "sparse_probing" / "depth_cross_model.csv",
              ["run", "fifth of the layers", "layers", "dense acc.", "λ = 0.2: neurons used", "acc. / dense",
               "λ = 0.1: neurons used", "acc. / dense"], rows)
    write_csv(DATA / "sparse_probing" / "summary_cross_model.csv", ["", *(name for name, *_ in runs)],
              [[key, *(column[key] for _, column, *_ in runs)] for key in SUMMARY_ROWS])


# ------------------------------------------------------------------------------------------------ paper K
def signed(x: float, digits: int = 1) -> str:
    return f"{x:+,.{digits}f}".replace("-", "−")


def knowledge(folder: Path) -> None:
    neurons = json.loads((folder / "neurons.json").read_text())
    concepts = neurons["concepts"]
    per_fact = [len(c["neurons"]) for c in concepts.values()]
    hist = [int(r["neurons"]) for r in read_csv(folder / "layer_histogram.csv")]
    dist = {(r["edit"], r["target"]): r for r in read_csv(folder / "distribution.csv")}
    relations = Counter(c.split(":", 1)[0] for c in concepts)

    # the same table as the Gemma one in knowledge_neurons.md, from the pipeline's distribution.csv
    order = ["own", "unrelated", "random", "random, same relation", "random, other relation"]
    write_csv(DATA / "knowledge_neurons" / "edit_distribution_smollm2.csv",
              ["edit", "target", "n", "Q1", "median", "Q3", "min", "max", "share < 0"],
              [[edit, target, f"{int(r['n']):,}", *(signed(float(r[c])) for c in ("q1", "median", "q3", "min", "max")),
                f"{100 * float(r['share_below_0']):.0f}%"]
               for edit in ("suppress", "amplify") for target in order if (r := dist.get((edit, target)))])

    gemma_hist = [int(v) for v in read_csv(DATA / "knowledge_neurons" / "neurons_per_layer.csv")[0].values()
                  if v.isdigit()]
    rows = []
    for name, h in (("Gemma-3-270M", gemma_hist), ("SmolLM2-135M-Instruct", hist)):
        n = sum(h)
        rows.append([name, f"{n:,}", *(f"{100 * sum(h[l] for l in group) / n:.1f}" for group in fifths(len(h))),
                     f"{100 * sum(h[len(h) // 2:]) / n:.0f}", f"{100 * h[-1] / n:.1f}"])
    write_csv(DATA / "knowledge_neurons" / "depth_cross_model.csv",
              ["model (knowledge neurons of all facts; % by depth)", "neurons", "first fifth of layers", "second",
               "third", "fourth", "last fifth", "upper half", "last layer alone"], rows)

    med = lambda edit, target: signed(float(dist[(edit, target)]["median"]))  # noqa: E731
    smol = [f"{neurons['n_kept']} of {neurons['n_tried']:,} ({100 * neurons['n_kept'] / neurons['n_tried']:.1f}%)",
            f"{len(relations)}", neurons["baseline"],
            f"{statistics.median(per_fact):.0f} ({min(per_fact)}–{max(per_fact)})",
            med("suppress", "own"), med("amplify", "own"), med("suppress", "unrelated"),
            med("suppress", "random, same relation"), med("suppress", "random, other relation"),
            med("amplify", "random, same relation"), med("amplify", "random, other relation")]
    # Gemma's column: knowledge_neurons.md (100-fact run) and its edit_distribution.csv
    gemma_dist = {(r["edit"], r["target"]): r["median"] for r in read_csv(DATA / "knowledge_neurons" / "edit_distribution.csv")}
    gemma = ["100 of 882 (11.3%)", "13", "mean", "25 (4–124)", *(gemma_dist[k] for k in (
        ("suppress", "own"), ("amplify", "own"), ("suppress", "unrelated"), ("suppress", "random, same relation"),
        ("suppress", "random, other relation"), ("amplify", "random, same relation"),
        ("amplify", "random, other relation")))]
    labels = ["facts known (of tried)", "relations among them", "IG baseline (auto)", "neurons per fact, median (range)",
              "suppress, own prompts: median % change", "amplify, own prompts", "suppress, the fixed unrelated fact",
              "suppress, random fact of the same relation", "suppress, random fact of another relation",
              "amplify, random fact of the same relation", "amplify, random fact of another relation"]
    write_csv(DATA / "knowledge_neurons" / "summary_cross_model.csv", ["", "Gemma-3-270M", "SmolLM2-135M-Instruct"],
              [[label, g, s_] for label, g, s_ in zip(labels, gemma, smol)])


# ------------------------------------------------------------------------------------------------ paper O
def corpus(folder: Path) -> None:
    lengths = {int(r.pop("layer")): [float(v) for v in r.values()] for r in read_csv(folder / "mean_length.csv")}
    layers = sorted(lengths)
    width = len(lengths[layers[0]])
    n_neurons = width * len(layers)
    classifier = read_csv(folder / "classifier_neurons.csv") if (folder / "classifier_neurons.csv").exists() else []
    by_field = {}
    for r in classifier:
        by_field.setdefault(r["field"], Counter())[r["label"]] += 1
    top = torch.load(folder / "top_sentences.pt", weights_only=True)
    ids = top["ids"].permute(1, 2, 0)  # saved as [K, layer, neuron]

    def overlap(a: int, b: int, other: bool) -> float:
        """Mean share of top sentences dimension j of layer a shares with dimension j (or, with `other`, a
        dimension shifted by one seeded random offset, never j itself) of layer b."""
        shift = random.Random(0).randrange(1, width) if other else 0
        sa, sb = ids[layers.index(a)], ids[layers.index(b)]
        return statistics.mean(len(set(sa[j].tolist()) & set(sb[(j + shift) % width].tolist())) / sa.shape[-1]
                               for j in range(width))

    sse = {int(r["layer"]): r for r in read_csv(folder / "sse_curves.csv")}
    total = {l: float(sse[l]["k1"]) for l in layers}
    tight = {l: float(sse[l]["k10"]) / float(sse[l]["k1"]) for l in layers}
    adjacent = [statistics.correlation(lengths[a], lengths[b]) for a, b in zip(layers, layers[1:])]
    n = len(layers)
    quarter = [layers[0], layers[n // 3], layers[2 * n // 3], layers[-1]]
    median_len = {l: statistics.median(lengths[l]) for l in layers}
    field_text = lambda f: (f"{sum(by_field[f].values()):,} (" + ", ".join(  # noqa: E731
        f"{k} {v}" for k, v in by_field[f].most_common(3)) + ")") if f in by_field else "0"
    rows = [
        ["neurons (residual stream, every layer)", "11,520 (18 × 640)", f"{n_neurons:,} ({n} × {width})"],
        ["classifier-like for corpus", "802 (pros_cons 755, inaugural 46, brown 1)", field_text("corpus")],
        ["classifier-like for pro_con", "475 (pro 410, con 65)", field_text("pro_con")],
        ["classifier-like for sentiment", "0", field_text("sentiment")],
        ["classifier-like for subjectivity", "6 (objective 6)", field_text("subjectivity")],
        ["median mean length of top sentences (words), first → last layer",
         "7.8 (0), 10.3 (6), 12.2 (12), 17.5 (17)",
         ", ".join(f"{median_len[l]:.1f} ({l})" for l in quarter)],
        ["Pearson r of mean length, adjacent layers", "0.48–0.94",
         f"{min(adjacent):.2f}–{max(adjacent):.2f}"],
        ["… first and last layer", "—", f"{statistics.correlation(lengths[layers[0]], lengths[layers[-1]]):.2f}"],
        ["top-set overlap, same dimension in the last two layers (random other dimension)", "60.5% (3.2%)",
         f"{100 * overlap(layers[-2], layers[-1], False):.1f}% ({100 * overlap(layers[-2], layers[-1], True):.1f}%)"],
        ["SSE k = 1 (total scatter of top sets): first layer, highest (layer), last layer",
         "8.13, 9.15 (10), 8.26",
         f"{total[layers[0]]:.2f}, {max(total.values()):.2f} ({max(total, key=total.get)}), {total[layers[-1]]:.2f}"],
        ["SSE(10) / SSE(1), range over layers", "0.60–0.72", f"{min(tight.values()):.2f}–{max(tight.values()):.2f}"],
    ]
    write_csv(DATA / "corpus_neurons" / "summary_cross_model.csv",
              ["15,000 sentences (2,500 per corpus, seed 0), K = 250", "Gemma-3-270M", "SmolLM2-135M-Instruct"], rows)
    write_csv(DATA / "corpus_neurons" / "per_layer_smollm2.csv",
              ["layer", "median mean length of top sentences (words)", "r with the next layer", "SSE k = 1",
               "SSE(10) / SSE(1)", "classifier-like for corpus"],
              [[l, f"{median_len[l]:.1f}", f"{adjacent[i]:.2f}" if i < len(adjacent) else "–", f"{total[l]:.2f}",
                f"{tight[l]:.2f}", sum(1 for r in classifier if r["field"] == "corpus" and int(r["layer"]) == l)]
               for i, l in enumerate(layers)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--language", type=Path, help="language-neurons folder (SmolLM2, --preset paper)")
    parser.add_argument("--ablation", type=Path, help="language-neurons folder with the k-ablation")
    parser.add_argument("--grammar", type=Path, help="sparse-probing folder (SmolLM2)")
    parser.add_argument("--grammar-reference", type=Path,
                        help="sparse-probing folder of Gemma with the same settings as --grammar")
    parser.add_argument("--knowledge", type=Path, help="knowledge-neurons folder (SmolLM2)")
    parser.add_argument("--corpus", type=Path, help="corpus-neurons folder (SmolLM2)")
    args = parser.parse_args(argv)
    if args.language:
        language(args.language, args.ablation)
    if args.grammar:
        grammar(args.grammar, args.grammar_reference)
    if args.knowledge:
        knowledge(args.knowledge)
    if args.corpus:
        corpus(args.corpus)


if __name__ == "__main__":
    main()
