"""Views of single neurons: token-level activations of their top texts, and an HTML neuron report page.

`token_activations` reruns a text and reads one neuron at every token; `colored_tokens_view` shows
that with circuitsvis (for notebooks; it loads its script from a CDN), and `neuron_report_html`
writes a self-contained page (inline colours, no scripts) with what `CorpusNeurons.describe` found.
"""
from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any, Optional

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from lensneurons.core.activations import tokenize
from lensneurons.core.sites import check_layers, hook_name, site_width


def token_activations(
    model: HookedTransformer, text: str, layer: int, neuron: int, site: str = "resid", include_bos: bool = False
) -> tuple[list[str], Float[Tensor, "pos"]]:
    """The text's tokens (as strings) and the neuron's value at each; the model's BOS only with `include_bos`."""
    if not isinstance(text, str):
        raise TypeError(f"token_activations takes one text (a str), got {type(text).__name__}; call it once per text")
    (layer,) = check_layers(model, layer)
    width = site_width(model, site)
    if not 0 <= neuron < width:
        raise ValueError(f"neuron {neuron} is out of range for a layer of {width} neurons at site {site!r}")
    (ids,) = tokenize(model, [text])
    name = hook_name(site, layer)
    with torch.inference_mode():
        _, cache = model.run_with_cache(torch.tensor([ids], device=model.cfg.device), names_filter=name,
                                        stop_at_layer=layer + 1)
    tokens = [model.tokenizer.decode([i]) for i in ids]
    values = cache[name][0, :, neuron].float().cpu()
    if model.cfg.default_prepend_bos and not include_bos:
        return tokens[1:], values[1:]
    return tokens, values


def colored_tokens_view(model: HookedTransformer, texts: Sequence[str], layer: int, neuron: int, site: str = "resid") -> Any:
    """circuitsvis view of the neuron over `texts` (one line per text), on one shared colour scale."""
    from circuitsvis.tokens import colored_tokens

    tokens: list[str] = []
    values: list[float] = []
    for text in texts:
        t, v = token_activations(model, text, layer, neuron, site)
        tokens += t + ["\n"]
        values += v.tolist() + [0.0]
    return colored_tokens(tokens, values)


def _colored_spans(tokens: Sequence[str], values: Sequence[float], scale: float) -> str:
    spans = []
    for tok, v in zip(tokens, values):
        a = min(1.0, abs(v) / scale) if scale > 0 else 0.0
        rgb = "0,110,255" if v >= 0 else "255,60,60"
        spans.append(f'<span title="{v:.3f}" style="background: rgba({rgb},{a:.2f})">{html.escape(tok)}</span>')
    return "".join(spans)


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def neuron_report_html(
    description: Any,
    texts: Sequence[str],
    model: Optional[HookedTransformer] = None,
    site: str = "resid",
    n_sentences: int = 20,
) -> str:
    """A self-contained HTML page for one neuron from a `NeuronDescription` and the corpus texts.

    With `model`, each top sentence is shown token by token, coloured by the neuron's activation.
    """
    d = description
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>neuron L{d.layer}.{d.neuron}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse;"
        "margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}"
        ".s{font-family:monospace;white-space:pre-wrap;margin:.2em 0}</style></head><body>",
        f"<h1>Neuron {d.neuron} of layer {d.layer} ({html.escape(site)})</h1>",
        f"<p>{len(d.sentence_ids)} top sentences; mean length {d.mean_length:.1f} words.</p>",
    ]
    if d.classifier_like:
        labels = ", ".join(f"{html.escape(str(k))} = {html.escape(str(v))}" for k, v in d.classifier_like.items())
        parts.append(f"<p><b>Classifier-like:</b> {labels}</p>")
    parts.append("<h2>Metadata of the top sentences</h2>")
    for name, dist in d.metadata.items():
        if dist:
            parts.append(f"<h3>{html.escape(str(name))}</h3>")
            parts.append(_table([(v, f"{100 * s:.1f}%") for v, s in list(dist.items())[:15]], ["value", "share"]))
    for title, patterns in (("n-grams", d.ngrams), ("skip-grams (PrefixSpan)", d.skipgrams), ("POS sequences", d.pos_patterns)):
        if patterns:
            parts.append(f"<h2>Frequent {title}</h2>")
            rows = [(" ".join(p.items), p.support_top, p.support_corpus, _fmt(p.relative)) for p in patterns]
            parts.append(_table(rows, ["pattern", "top sentences", "corpus sentences", "relative frequency"]))
    if d.top_words:
        parts.append("<h2>Top words</h2>")
        rows = [(c, ", ".join(f"{w} ({n})" for w, n in words[:10])) for c, words in d.top_words.items()]
        parts.append(_table(rows, ["class", "words (count)"]))
    if d.pos_distribution:
        parts.append("<h2>POS distribution</h2>")
        parts.append(_table([(t, f"{100 * s:.1f}%") for t, s in d.pos_distribution.items()], ["tag", "share"]))
    parts.append("<h2>Top sentences</h2>")
    shown = list(zip(d.sentence_ids, d.activations))[:n_sentences]
    if model is not None:
        per_token = [token_activations(model, texts[i], d.layer, d.neuron, site) for i, _ in shown]
        scale = max((float(v.abs().max()) for _, v in per_token), default=0.0)
        for (i, a), (tokens, values) in zip(shown, per_token):
            parts.append(f"<div class='s'>[{i}] {_fmt(a)}: {_colored_spans(tokens, values.tolist(), scale)}</div>")
    else:
        parts.append(_table([(i, _fmt(a), texts[i]) for i, a in shown], ["sentence", "activation", "text"]))
    parts.append("</body></html>")
    return "\n".join(parts)
