"""Views of single neurons: token-level activations of their top texts, and an HTML neuron report page.

`token_activations` reruns a text and reads one neuron at every token; `colored_tokens_view` shows
that with circuitsvis (for notebooks; it loads its script from a CDN), and `neuron_report_html`
writes a self-contained page (inline colours, no scripts) with what `CorpusNeurons.describe` found.
"""
from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import torch
from jaxtyping import Float
from torch import Tensor

from lensneurons.core.activations import tokenize
from lensneurons.core.results import atomic_write
from lensneurons.core.sites import SITES, check_layers, hook_name
from lensneurons.core.units import unit_hooks, unit_space
from lensneurons.lenses.corpus.patterns import collapse_redundant
from lensneurons.core.models import CausalModel


def token_activations(
    model: CausalModel, text: str, layer: int, neuron: int, site: str = "resid", include_bos: bool = False
) -> tuple[list[str], Float[Tensor, "pos"]]:
    """The text's tokens (as strings) and the neuron's value at each; the model's BOS only with `include_bos`."""
    if not isinstance(text, str):
        raise TypeError(f"token_activations takes one text (a str), got {type(text).__name__}; call it once per text")
    (layer,) = check_layers(model, layer)
    space = unit_space(model, site)
    component, within = space.component_of(neuron)  # refuses a unit out of range, naming the site
    index = space.components.index(component)
    (ids,) = tokenize(model, [text])
    seen = {}

    def read(layer_: int, index_: int, act: Tensor) -> None:
        if index_ == index:
            seen["values"] = act[0, :, within].float().cpu()

    with torch.inference_mode(), unit_hooks(model, site, [layer], read):
        model(torch.tensor([ids], device=model.cfg.device), stop_at_layer=layer + 1)
    tokens = [model.tokenizer.decode([i]) for i in ids]
    values = seen["values"]
    if model.cfg.default_prepend_bos and not include_bos:
        return tokens[1:], values[1:]
    return tokens, values


def colored_tokens_view(model: CausalModel, texts: Sequence[str], layer: int, neuron: int, site: str = "resid") -> Any:
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


def pooling_note(collection: Any = None, site: str = "resid") -> str:
    """One sentence saying what a sentence's activation is, from a `Collection` (or the site alone)."""
    if collection is None:
        return f"A sentence's activation is the unit's value at site {site!r} pooled over the sentence's tokens."
    how = {"mean": "the mean over", "max": "the maximum over", "last": "the value at the last of"}[collection.pooling]
    bos = "BOS included" if collection.include_bos else "BOS excluded"
    cut = f", at most {collection.max_length} tokens" if collection.max_length else ""
    return (f"A sentence's activation is {how} the sentence's tokens ({bos}{cut}) of the unit's value at "
            f"{_where(collection.site)}.")


def _where(site: str) -> str:
    if site in SITES:
        return f"<code>{html.escape(hook_name(site, 0).replace('.0.', '.{layer}.'))}</code>"
    if site == "linear":
        return "every Linear output of block {layer} (queries, keys, values, attention output, MLP projections)"
    paths = ["attn.hook_z"] if site == "heads" else site.split("+")
    return " + ".join(f"<code>blocks.{{layer}}.{html.escape(p)}</code>" for p in paths)


_LEGEND = ("<p class='legend'>Token colours: <span style='background:rgba(0,110,255,.9)'>&nbsp;positive&nbsp;</span> "
           "<span style='background:rgba(255,60,60,.9)'>&nbsp;negative&nbsp;</span>; opacity "
           "<span style='background:rgba(0,110,255,.25)'>&nbsp;25%&nbsp;</span>"
           "<span style='background:rgba(0,110,255,.5)'>&nbsp;50%&nbsp;</span>"
           "<span style='background:rgba(0,110,255,1)'>&nbsp;100%&nbsp;</span> of {scale} (the largest "
           "|value| among the tokens shown). Hover a token for its value.</p>")


def _chance_line(name: Any, c: dict) -> str:
    return (f"<li><b>{html.escape(str(name))} = {html.escape(str(c['label']))}</b> in {100 * c['share']:.0f}% of the "
            f"{c['known']} top sentences that carry the field; chance level: {100 * c['corpus_share']:.1f}% (its share "
            f"of the corpus); probability of reaching {100 * c['share']:.0f}% in {c['known']} random sentences: "
            f"{c['p_value']:.2g} (binomial).</li>")


def neuron_report_html(
    description: Any,
    texts: Sequence[str],
    model: Optional[CausalModel] = None,
    site: str = "resid",
    n_sentences: int = 20,
    collection: Any = None,
) -> str:
    """A self-contained HTML page for one neuron from a `NeuronDescription` and the corpus texts.

    With `model`, each top sentence is shown token by token, coloured by the neuron's activation.
    `collection` (the analysis' `Collection`) says how sentence activations were pooled.
    """
    d = description
    site = collection.site if collection is not None else site
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>neuron L{d.layer}.{d.neuron}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse;"
        "margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}"
        ".s{font-family:monospace;white-space:pre-wrap;margin:.2em 0}.warn{background:#fff3cd;padding:.5em}"
        ".legend span{font-family:monospace}</style></head><body>",
        f"<h1>Neuron {d.neuron} of layer {d.layer} ({html.escape(site)})</h1>",
        f"<p>{len(d.sentence_ids)} top sentences; mean length {d.mean_length:.1f} words. "
        f"{pooling_note(collection, site)}</p>",
    ]
    ratio = getattr(d, "activation_ratio", float("nan"))
    if getattr(d, "outlier", False):
        parts.append(f"<p class='warn'><b>Outlier dimension.</b> Its mean top activation is {ratio:,.0f}× the median "
                     f"unit of layer {d.layer}. A few residual dimensions carry such massive values in every text, "
                     f"so the ranking of sentences by this unit says more about position and length than content.</p>")
    if d.classifier_like:
        chance = getattr(d, "chance", {})
        lines = [_chance_line(k, chance[k]) if k in chance else f"<li>{html.escape(str(k))} = {html.escape(str(v))}</li>"
                 for k, v in d.classifier_like.items()]
        parts.append(f"<p><b>Classifier-like:</b></p><ul>{''.join(lines)}</ul>")
    parts.append("<h2>Metadata of the top sentences</h2>")
    for name, dist in d.metadata.items():
        if dist:
            parts.append(f"<h3>{html.escape(str(name))}</h3>")
            parts.append(_table([(v, f"{100 * s:.1f}%") for v, s in list(dist.items())[:15]], ["value", "share"]))
    skipgrams, dropped = collapse_redundant(d.skipgrams, d.ngrams)
    for title, patterns in (("n-grams", d.ngrams), ("skip-grams (PrefixSpan)", skipgrams), ("POS sequences", d.pos_patterns)):
        if patterns:
            parts.append(f"<h2>Frequent {title}</h2>")
            rows = [(" ".join(p.items), p.support_top, p.support_corpus, _fmt(p.relative)) for p in patterns]
            parts.append(_table(rows, ["pattern", "top sentences", "corpus sentences", "relative frequency"]))
            if patterns is skipgrams and dropped:
                parts.append(f"<p>{dropped} more skip-grams are left out: each is a listed n-gram with the same "
                             f"support, or is contained in a longer listed skip-gram found in as many top sentences.</p>")
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
        parts.append(_LEGEND.format(scale=_fmt(scale)))
        for (i, a), (tokens, values) in zip(shown, per_token):
            parts.append(f"<div class='s'>[{i}] {_fmt(a)}: {_colored_spans(tokens, values.tolist(), scale)}</div>")
    else:
        parts.append(_table([(i, _fmt(a), texts[i]) for i, a in shown], ["sentence", "activation", "text"]))
    parts.append("</body></html>")
    return "\n".join(parts)


def index_html(descriptions: Sequence[Any], site: str = "resid") -> str:
    """The page that links every neuron page, with its classifier-like labels and outlier flags."""
    items = []
    for d in descriptions:
        tags = []
        if d.classifier_like:
            tags.append("classifier-like: " + ", ".join(f"{k} = {v}" for k, v in d.classifier_like.items()))
        if getattr(d, "outlier", False):
            tags.append(f"outlier dimension ({d.activation_ratio:,.0f}× its layer's median)")
        tag = f" — {html.escape('; '.join(tags))}" if tags else ""
        items.append(f"<li><a href='{page_name(d.layer, d.neuron)}'>layer {d.layer}, neuron {d.neuron}</a>{tag}</li>")
    return "\n".join(["<!doctype html><html><head><meta charset='utf-8'><title>neurons</title></head><body>",
                      f"<h1>Described neurons ({html.escape(site)})</h1><ul>", *items, "</ul></body></html>"])


def page_name(layer: int, neuron: int) -> str:
    return f"neuron_L{layer}_{neuron}.html"


def write_report(
    folder: str | Path,
    descriptions: Sequence[Any],
    texts: Sequence[str],
    model: Optional[CausalModel] = None,
    collection: Any = None,
) -> Path:
    """Write a page per described neuron, ``index.html`` and ``descriptions.json`` into `folder` (each file
    atomically); the folder comes back."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    site = collection.site if collection is not None else "resid"
    for d in descriptions:
        page = neuron_report_html(d, texts, model=model, collection=collection, site=site)
        atomic_write(folder / page_name(d.layer, d.neuron), page.encode("utf-8"))
    atomic_write(folder / "descriptions.json", json.dumps([d.to_dict() for d in descriptions], indent=1).encode())
    atomic_write(folder / "index.html", index_html(descriptions, site).encode("utf-8"))
    return folder
