"""How far do neuron-level results move under quantisation-sized error?

Both embedded models are 4-bit GGUFs, and neither file holds a higher-precision copy of any quantised matrix
(only norms are F32; embeddings are Q8_0), so the distance to the original weights cannot be measured offline.
What can be measured is the sensitivity of the results to an error of the same size: every quantised matrix
is stored in blocks of 32 values along its input dimension, each block on a grid of `levels` steps; adding
uniform noise of ±half a step to every weight (the rounding error of quantising onto that grid) gives a second
model that is as far from the loaded one as the loaded one is, roughly, from the original.

Compared on the language lens (MLP neurons, each language's 100 first positives of Kojima et al.'s sets as
positives, the other languages' as negatives): how many of each language's top-1,000 AP neurons stay, and the
correlation of all APs; as a yardstick, the same between two disjoint samples of 100 positives (sampling
variation, the error every run already has). Also next-token agreement on those texts.

    LENSNEURONS_DATA_DIR=../shared/data python examples/quantisation_noise.py --out results/quantisation
"""
import argparse
import collections
import csv
from pathlib import Path

import torch

import lensneurons as ln
from lensneurons.core.activations import tokenize
from lensneurons.core import checkpoints
from lensneurons.core.models import EMBEDDED_MODELS, contiguous_linear_weights, tie_unembedding
from lensneurons.data.multilingual import LanguageTexts, kojima2024

# steps of the grid a 32-value block spans, per GGUF tensor type (k-quants: per sub-block of 32)
LEVELS = {"Q4_0": 15, "Q4_1": 15, "Q4_K": 15, "Q5_0": 31, "Q5_1": 31, "Q5_K": 31, "Q6_K": 63, "Q8_0": 255}
# GGUF tensor names -> Hugging Face parameter names (Llama and Gemma-3 layouts)
GGUF_TO_HF = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
              "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
              "ffn_down": "mlp.down_proj"}


def quantised_tensors(name: str) -> dict[str, str]:
    """{Hugging Face weight name: GGUF type} of every quantised matrix of an embedded model."""
    import gguf

    reader = gguf.GGUFReader(str(EMBEDDED_MODELS[name].source(name).locate()))
    out = {}
    for t in reader.tensors:
        if t.tensor_type.name not in LEVELS:
            continue
        if t.name == "token_embd.weight":
            out["model.embed_tokens.weight"] = t.tensor_type.name
        else:
            _, layer, part, _ = t.name.split(".")
            out[f"model.layers.{layer}.{GGUF_TO_HF[part]}.weight"] = t.tensor_type.name
    return out


def add_rounding_noise(hf_model, types: dict[str, str], seed: int) -> dict[str, int]:
    """Add uniform ±step/2 noise to every quantised matrix, the step read from each 32-value block's range."""
    gen = torch.Generator().manual_seed(seed)
    params = dict(hf_model.named_parameters())
    counts = collections.Counter()
    with torch.no_grad():
        for name, kind in types.items():
            w = params[name]
            blocks = w.reshape(w.shape[0], -1, 32)
            step = (blocks.amax(-1, keepdim=True) - blocks.amin(-1, keepdim=True)) / LEVELS[kind]
            noise = (torch.rand(blocks.shape, generator=gen) - 0.5) * step
            w.add_(noise.reshape(w.shape))
            counts[kind] += 1
    return dict(counts)


def load(name: str, noisy: bool, seed: int):
    from transformers import AutoModelForCausalLM

    spec = EMBEDDED_MODELS[name]
    folder = checkpoints.dequantised(spec.source(name))
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    info = add_rounding_noise(hf, quantised_tensors(name), seed) if noisy else {}
    model = checkpoints.hooked_from_folder(folder, name, spec.architecture, torch.device("cpu"), torch.float32,
                                           hf_model=hf)
    return tie_unembedding(contiguous_linear_weights(model)).eval(), info


def texts(offset: int, n: int) -> LanguageTexts:
    data = kojima2024(n_positive=offset + n, n_negative=5)
    return LanguageTexts.from_texts({lang: data.positive_texts(lang)[offset:] for lang in data.languages},
                                    source=f"kojima2024 positives {offset}..{offset + n}")


def overlap(a: ln.LanguageNeurons, b: ln.LanguageNeurons) -> dict[str, float]:
    out = {}
    for lang in a.languages_:
        x, y = a.neurons(lang, "top"), b.neurons(lang, "top")
        out[lang] = len(x & y) / len(x)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "gemma-3-270m"])
    parser.add_argument("--n", type=int, default=100, help="positives per language in each sample")
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/quantisation"))
    args = parser.parse_args()
    sample_a, sample_b = texts(0, args.n), texts(args.n, args.n)
    rows = []
    for name in args.models:
        clean, _ = load(name, noisy=False, seed=args.seed)
        noisy, counts = load(name, noisy=True, seed=args.seed)
        fit = {key: ln.LanguageNeurons(k=args.k).fit(model, data, progress=False)
               for key, model, data in (("clean", clean, sample_a), ("noisy", noisy, sample_a),
                                        ("other sample", clean, sample_b))}
        tokens = tokenize(clean, [sample_a.texts[i] for i in range(0, len(sample_a.texts), 10)])
        agree, kl, n = 0, 0.0, 0
        with torch.inference_mode():
            for ids in tokens:
                t = torch.tensor([ids])
                p, q = clean(t)[0].log_softmax(-1), noisy(t)[0].log_softmax(-1)
                agree += int((p.argmax(-1) == q.argmax(-1)).sum())
                kl += float((p.exp() * (p - q)).sum())
                n += len(ids)
        for compared in ("noisy", "other sample"):
            shared = overlap(fit["clean"], fit[compared])
            ap = torch.corrcoef(torch.stack([fit["clean"].scores_.flatten(), fit[compared].scores_.flatten()]))[0, 1]
            rows.append({"model": name, "compared with": compared, "quantised matrices noised": str(counts or ""),
                         **{f"top-{args.k} kept, {lang}": f"{v:.0%}" for lang, v in shared.items()},
                         "mean kept": f"{sum(shared.values()) / len(shared):.0%}", "AP correlation": f"{float(ap):.4f}",
                         "next-token top-1 agreement": f"{agree / n:.1%}" if compared == "noisy" else "",
                         "KL(clean ‖ noisy) per token": f"{kl / n:.4f}" if compared == "noisy" else ""})
        print(rows[-2], rows[-1], sep="\n")
        del clean, noisy
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "quantisation_noise.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
