"""The cost of reading other unit spaces, side by side on the same length-sorted batches.

  A  bare forward, `stop_at_layer=n_layers`, nothing kept
  B  `pooled_activations(site="mlp")`, every layer (one hook per layer)
  C  `pooled_activations(site="linear")`, every layer (7 hooks per layer on Gemma: q k v o gate up down)
  D  `pooled_activations(site="resid", layers=[L])`: the residual stream of one layer
  E  the same through a random sae-lens SAE on that hook (`sae_site`, d_sae = 8 x d_model): D plus encoding

Runs are interleaved and the median of `--repeats` is reported; C/A is the price of the linear space
(target <= 1.3), E - D the SAE's share, next to the SAE's encode alone on the same tokens.

    python -m benchmarks.bench_units [--model gemma-3-270m|toy] [--texts 96] [--device cpu|cuda]
"""
import argparse
import statistics
import time

import torch

from benchmarks.bench_collection import _peak_rss_mib, _reset_peak, _rss_mib, _sync, _texts
from lensneurons.core.activations import length_batches, pad_id, pooled_activations, tokenize
from lensneurons.core.models import load_model, toy_model
from lensneurons.core.units import sae_site, unit_space


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m", choices=["gemma-3-270m", "toy"])
    parser.add_argument("--texts", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    model = (toy_model(n_layers=4, d_model=64, d_mlp=256, n_heads=4, n_ctx=128, gated_mlp=True).to(device)
             if args.model == "toy" else load_model(args.model, device=device))
    from sae_lens import StandardSAE, StandardSAEConfig

    n, d = model.cfg.n_layers, model.cfg.d_model
    layer = n // 2
    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=d, d_sae=8 * d, device=str(device))).to(device).eval()
    sae_units = sae_site(model, {layer: sae}, path="hook_resid_post", name="bench")
    texts, source = _texts(args.texts, 0)
    token_ids = tokenize(model, texts)
    batches = list(length_batches(token_ids, args.batch_size, pad_id(model), device=device))
    lin = unit_space(model, "linear")
    print(f"model: {args.model} on {device} ({n} layers), torch threads {torch.get_num_threads()}; {len(texts)} texts: "
          f"{source}; linear units per layer: {lin.width} ({', '.join(f'{c.label} {c.width}' for c in lin.components)})")

    def bare():
        with torch.inference_mode():
            for b in batches:
                model(b.tokens, attention_mask=b.mask.long(), stop_at_layer=n)

    def pooled(site, layers=None):
        return lambda: pooled_activations(model, texts, site=site, layers=layers, batch_size=args.batch_size,
                                          progress=False)

    methods = {"A bare forward": bare, "B mlp": pooled("mlp"), "C linear": pooled("linear"),
               "D resid, one layer": pooled("resid", [layer]), "E SAE latents, one layer": pooled(sae_units)}
    for fn in methods.values():
        fn()
    times = {k: [] for k in methods}
    grown = dict.fromkeys(methods, 0.0)
    for _ in range(args.repeats):
        for key, fn in methods.items():
            _reset_peak(device)
            before = _rss_mib()
            _sync(device)
            started = time.perf_counter()
            fn()
            _sync(device)
            times[key].append(time.perf_counter() - started)
            grown[key] = max(grown[key], _peak_rss_mib() - before)

    resid = pooled_activations(model, texts, site="resid", layers=[layer], batch_size=args.batch_size, progress=False)
    del resid
    # the SAE's encode alone, on the hook's values at every real token of the same texts
    acts = []
    from lensneurons.core.units import unit_hooks

    with torch.inference_mode(), unit_hooks(model, "resid", [layer], lambda l, i, a: acts.append(a.clone())):
        for b in batches:
            model(b.tokens, attention_mask=b.mask.long(), stop_at_layer=layer + 1)
    encode = []
    with torch.inference_mode():
        for _ in range(args.repeats):
            _sync(device)
            started = time.perf_counter()
            for a in acts:
                sae.encode(a)
            _sync(device)
            encode.append(time.perf_counter() - started)

    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["A bare forward"]
    print(f"\n{'method':28} {'median s':>9} {'x bare':>7} {'peak RSS growth MiB':>20}")
    for key in methods:
        print(f"{key:28} {med[key]:9.2f} {med[key] / base:7.2f} {grown[key]:20.0f}")
    print(f"{'SAE encode alone':28} {statistics.median(encode):9.2f}")
    extra = med["E SAE latents, one layer"] - med["D resid, one layer"]
    print(f"\nC/A = {med['C linear'] / base:.2f} (target <= 1.3); E - D = {extra:.2f} s against "
          f"{statistics.median(encode):.2f} s of encoding alone")


if __name__ == "__main__":
    main()
