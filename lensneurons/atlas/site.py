"""The atlas as a static site that opens from disk: no server, no network, every script and style local.

    site/index.html            search by layer/index or text, filters per lens, sortable table, overview plot
    site/card.html#L3/517      one unit's card, its shard loaded on demand
    site/assets/               atlas.js, atlas.css (copied from the package)
    site/data/index.js         one compact row per unit (what the index searches and filters)
    site/data/cards/L3_2.js    the cards of layer 3, units 2·S .. 3·S - 1 (S = shard size)
    site/export/units.jsonl    every card as JSON, one per line (schema: export/schema.json)
    site/export/neuron_records.jsonl   top-activating and random examples in neuron-explainer's NeuronRecord shape

Data files are JavaScript that hands its JSON to a function (`atlasIndex(...)`, `atlasShard(...)`), because
browsers refuse `fetch` on file:// URLs but do run local scripts.
"""
from __future__ import annotations

import json
import shutil
from collections import defaultdict
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from lensneurons.atlas.cards import dominant_labels
from lensneurons.atlas.schema import NEURON_RECORD_SCHEMA, UNIT_SCHEMA
from lensneurons.core.results import atomic_write

INDEX_COLUMNS = ["id", "layer", "unit", "order", "component", "summary", "lang", "rank", "ranks", "sets", "facts",
                 "t", "task", "tasks", "label", "share", "snippet"]

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<link rel="stylesheet" href="assets/atlas.css">
<script>const ATLAS_SHARD_SIZE = {shard_size};</script>
<script src="assets/atlas.js"></script>
</head><body>
{body}
</body></html>
"""

_INDEX_BODY = """<h1 id="title">neuron atlas</h1>
<p class="muted" id="about"></p>
<div id="controls">
  <label>search <input type="text" id="q" placeholder="L3/517, L3, or words of the summary / top sentence"></label>
  <label>AP rank for <select id="lang"></select> ≤ <input type="number" id="top" min="1" placeholder="100"></label>
  <label><input type="checkbox" id="kn"> in a knowledge-neuron set</label>
  <label>|t| ≥ <input type="number" id="t" min="0" step="0.5"> on a task matching <input type="text" id="task" style="width:9em" placeholder="agreement"></label>
  <label>top label share ≥ <input type="number" id="meta" min="0" max="1" step="0.05" placeholder="0.8"></label>
  <input type="hidden" id="sort" value=""><input type="hidden" id="desc" value="">
</div>
<p id="count" class="muted"></p>
<table id="units"><thead></thead><tbody></tbody></table>
<h2>Per layer</h2>
<img class="overview" src="overview.png" alt="per-layer counts of units each lens singles out">
<script src="data/index.js"></script>
"""

_CARD_BODY = """<p><a href="index.html">← atlas index</a></p>
<div id="card"><p class="muted">loading…</p></div>
<script>window.addEventListener("hashchange", () => openCard("")); openCard("");</script>
"""


def index_row(card: dict, order: int, languages: Sequence[str]) -> list:
    lang = card.get("language") or {}
    gram = card.get("grammar") or {}
    corp = card.get("corpus") or {}
    ranks = [lang["rank"][l] for l in languages] if lang else []
    best = min(range(len(ranks)), key=ranks.__getitem__) if ranks else None
    best_label = dominant_labels(corp, share=0.0)[:1]  # fields known for too few top sentences are left out
    label, share = (f"{best_label[0][1]} ({best_label[0][0]})", best_label[0][2]) if best_label else (None, None)
    top = corp.get("top") or []
    values = {
        "id": card["id"], "layer": card["layer"], "unit": card["unit"], "order": order, "component": card["component"],
        "summary": card["summary"], "lang": languages[best] if best is not None else None,
        "rank": ranks[best] if best is not None else None, "ranks": ranks,
        "sets": ",".join(f"{s['lang']}:{s['group']}" for s in lang.get("sets", [])),
        "facts": len((card.get("knowledge") or {}).get("facts", [])),
        "t": gram.get("max_abs_t"), "task": gram["tasks"][0]["task"] if gram.get("tasks") else None,
        "tasks": [[t["task"], t["t"]] for t in gram.get("tasks", [])[:3]],  # the task filter's candidates
        "label": label, "share": share, "snippet": top[0]["text"][:120] if top else "",
    }
    return [values[c] for c in INDEX_COLUMNS]


def shard_name(layer: int, unit: int, shard_size: int) -> str:
    return f"L{layer}_{unit // shard_size}"


def _js_call(function: str, *args) -> bytes:
    return (f"{function}(" + ", ".join(json.dumps(a, ensure_ascii=False, separators=(",", ":")) for a in args)
            + ");\n").encode("utf-8")


def neuron_record(card: dict) -> dict | None:
    """The card's examples in the shape of neuron-explainer's `NeuronRecord` (None without per-token values)."""
    corp = card.get("corpus") or {}
    top = [{"tokens": s["tokens"], "activations": s["values"]} for s in corp.get("top", []) if "tokens" in s]
    if not top:
        return None
    return {"neuron_id": {"layer_index": card["layer"], "neuron_index": card["unit"]},
            "most_positive_activation_records": top,
            "random_sample": [{"tokens": s["tokens"], "activations": s["values"]} for s in corp.get("random", [])]}


def write_site(folder: str | Path, cards: Sequence[dict], languages: Sequence[str], title: str, about: str,
               shard_size: int = 256, overview=None) -> dict:
    """Write the site into `folder` (replacing an earlier one's data); returns its file count and size."""
    folder = Path(folder)
    for sub in ("data", "export", "assets"):
        shutil.rmtree(folder / sub, ignore_errors=True)
    (folder / "data" / "cards").mkdir(parents=True)
    (folder / "export").mkdir()
    (folder / "assets").mkdir()
    for name in ("atlas.js", "atlas.css"):
        atomic_write(folder / "assets" / name, resources.files("lensneurons.atlas").joinpath("assets", name).read_bytes())
    page = dict(shard_size=shard_size)
    atomic_write(folder / "index.html", _PAGE.format(title=title, body=_INDEX_BODY, **page).encode("utf-8"))
    atomic_write(folder / "card.html", _PAGE.format(title="unit · " + title, body=_CARD_BODY, **page).encode("utf-8"))

    shards: dict[str, dict] = defaultdict(dict)
    rows, records, units = [], [], []
    for order, c in enumerate(cards):
        shards[shard_name(c["layer"], c["unit"], shard_size)][c["id"]] = c
        rows.append(index_row(c, order, languages))
        units.append(json.dumps(c, ensure_ascii=False, separators=(",", ":")))
        record = neuron_record(c)
        if record is not None:
            records.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    for name, shard in shards.items():
        atomic_write(folder / "data" / "cards" / f"{name}.js", _js_call("atlasShard", name, shard))
    atomic_write(folder / "data" / "index.js", _js_call("atlasIndex", {
        "title": title, "about": about, "languages": list(languages), "columns": INDEX_COLUMNS, "rows": rows}))
    atomic_write(folder / "export" / "units.jsonl", ("\n".join(units) + "\n").encode("utf-8"))
    atomic_write(folder / "export" / "neuron_records.jsonl", ("\n".join(records) + "\n" if records else "").encode("utf-8"))
    atomic_write(folder / "export" / "schema.json", json.dumps(
        {"units.jsonl": UNIT_SCHEMA, "neuron_records.jsonl": NEURON_RECORD_SCHEMA}, indent=1).encode("utf-8"))
    if overview is not None:
        import io

        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        overview.savefig(buf, format="png", dpi=110)
        plt.close(overview)
        atomic_write(folder / "overview.png", buf.getvalue())
    files = [p for p in folder.rglob("*") if p.is_file()]
    return {"files": len(files), "bytes": sum(p.stat().st_size for p in files), "shards": len(shards)}


def card_html(card: dict) -> str:
    """One card as self-contained HTML (the site's own script and style inlined), e.g. for a notebook:
    `IPython.display.HTML(card_html(card))`."""
    assets = resources.files("lensneurons.atlas").joinpath("assets")
    element = "atlas-card-" + card["id"].replace("/", "-")
    return (f"<style>{_scoped(assets.joinpath('atlas.css').read_text(encoding='utf-8'), '.atlas-card')}</style>"
            f"<div class=\"atlas-card\" id=\"{element}\"></div><script>{assets.joinpath('atlas.js').read_text(encoding='utf-8')}\n"
            f"renderCard(document.getElementById({json.dumps(element)}), {json.dumps(card, ensure_ascii=False)});</script>")


def _scoped(css: str, scope: str) -> str:
    """The site's style with every rule limited to elements inside `scope` (page-wide rules dropped), so that a
    card inlined into a notebook leaves the notebook's own look alone. The style sheet has one rule per line."""
    out = []
    for rule in css.splitlines():
        for part in filter(None, (r.strip() for r in rule.split("}"))):
            selectors, _, body = part.partition("{")
            if selectors.strip() == "body":
                continue
            out.append(", ".join(f"{scope} {sel.strip()}" for sel in selectors.split(",")) + " {" + body + "}")
    return "\n".join(out)
