// The neuron atlas: index (search, filters, sorting) and cards, from data files loaded as <script>s so that
// the site opens from disk with no server (browsers refuse fetch() on file:// URLs).
"use strict";

const Atlas = { index: null, shards: {}, waiting: {}, limit: 500 };

function esc(s) {
  return String(s == null ? "" : s).replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function fmt(x, d = 3) { return x == null ? "" : (typeof x === "number" ? +x.toFixed(d) : x); }
function loadScript(src) {
  const s = document.createElement("script");
  s.src = src;
  document.head.appendChild(s);
}

// ------------------------------------------------------------------ data entry points (called by data files)
function atlasIndex(data) { Atlas.index = data; if (document.getElementById("units")) initIndex(); }
function atlasShard(name, cards) {
  Atlas.shards[name] = cards;
  (Atlas.waiting[name] || []).forEach(f => f(cards));
  delete Atlas.waiting[name];
}
function withShard(name, base, f) {
  if (Atlas.shards[name]) return f(Atlas.shards[name]);
  (Atlas.waiting[name] = Atlas.waiting[name] || []).push(f);
  if (Atlas.waiting[name].length === 1) loadScript(base + "data/cards/" + name + ".js");
}

// ------------------------------------------------------------------ index page
function hashParams() {
  const out = {};
  location.hash.replace(/^#/, "").split("&").filter(Boolean).forEach(kv => {
    const [k, v = ""] = kv.split("=");
    out[decodeURIComponent(k)] = decodeURIComponent(v);
  });
  return out;
}
const FIELDS = ["q", "lang", "top", "kn", "t", "task", "meta", "sort", "desc"];

function initIndex() {
  const d = Atlas.index;
  document.getElementById("title").textContent = d.title;
  document.getElementById("about").textContent = d.about;
  const sel = document.getElementById("lang");
  sel.innerHTML = '<option value="">(any language)</option>' + d.languages.map(l => `<option>${esc(l)}</option>`).join("");
  const p = hashParams();
  FIELDS.forEach(f => {
    const el = document.getElementById(f);
    if (!el || p[f] === undefined) return;
    if (el.type === "checkbox") el.checked = p[f] === "1"; else el.value = p[f];
  });
  FIELDS.forEach(f => { const el = document.getElementById(f); if (el) el.addEventListener("input", update); });
  renderHead();
  update();
}

function col(name) { return Atlas.index.columns.indexOf(name); }

function matches(row, c) {
  const d = Atlas.index;
  if (c.q) {
    const m = c.q.match(/^\s*L?(\d+)\s*(?:[\/:.]\s*(\d+))?\s*$/i);
    if (m && (c.q.trim().toUpperCase().startsWith("L") || m[2] !== undefined)) {
      if (row[col("layer")] !== +m[1] || (m[2] !== undefined && row[col("unit")] !== +m[2])) return false;
    } else {
      const hay = [row[col("summary")], row[col("snippet")], row[col("sets")], row[col("task")], row[col("label")]].join(" ").toLowerCase();
      if (!c.q.toLowerCase().split(/\s+/).filter(Boolean).every(w => hay.includes(w))) return false;
    }
  }
  if (c.lang) {
    const rank = row[col("ranks")][d.languages.indexOf(c.lang)];
    if (c.top && !(rank <= +c.top)) return false;
  }
  if (c.kn && !(row[col("facts")] > 0)) return false;
  if (c.t !== "" && c.t != null && !(row[col("t")] >= +c.t)) return false;
  if (c.task) {  // one of the unit's three strongest tasks matches, with |t| over the threshold when one is set
    const want = c.task.toLowerCase();
    if (!(row[col("tasks")] || []).some(([name, t]) => name.toLowerCase().includes(want) && (c.t === "" || Math.abs(t) >= +c.t))) return false;
  }
  if (c.meta !== "" && c.meta != null && !(row[col("share")] >= +c.meta)) return false;
  return true;
}

function current() {
  const c = {};
  FIELDS.forEach(f => { const el = document.getElementById(f); c[f] = el ? (el.type === "checkbox" ? el.checked : el.value) : ""; });
  return c;
}

const SHOWN = [["id", "unit"], ["component", "type"], ["summary", "summary"], ["rank", "best AP rank"], ["lang", "lang"],
  ["facts", "facts"], ["t", "max |t|"], ["task", "task"], ["share", "top label share"]];

function renderHead() {
  const c = current();
  document.querySelector("#units thead").innerHTML = "<tr>" + SHOWN.map(([k, label]) =>
    `<th data-col="${k}" class="${c.sort === k ? (c.desc === "1" ? "sorted-desc" : "sorted-asc") : ""}">${esc(label)}</th>`).join("") + "</tr>";
  document.querySelectorAll("#units th").forEach(th => th.addEventListener("click", () => {
    const s = document.getElementById("sort"), dsc = document.getElementById("desc");
    dsc.value = s.value === th.dataset.col && dsc.value !== "1" ? "1" : "0";
    s.value = th.dataset.col;
    renderHead();
    update();
  }));
}

function update() {
  const d = Atlas.index, c = current();
  let rows = d.rows.filter(r => matches(r, c));
  if (c.lang && c.sort === "") rows.sort((a, b) => a[col("ranks")][d.languages.indexOf(c.lang)] - b[col("ranks")][d.languages.indexOf(c.lang)]);
  if (c.sort) {
    const i = c.sort === "id" ? col("order") : col(c.sort), sign = c.desc === "1" ? -1 : 1;
    rows.sort((a, b) => {
      const x = a[i], y = b[i];
      if (x == null) return 1; if (y == null) return -1;
      return sign * (typeof x === "number" ? x - y : String(x).localeCompare(String(y)));
    });
  }
  const h = FIELDS.map(f => [f, c[f]]).filter(([, v]) => v !== "" && v !== false).map(([f, v]) => f + "=" + encodeURIComponent(v === true ? "1" : v));
  history.replaceState(null, "", "#" + h.join("&"));
  document.getElementById("count").textContent = `${rows.length.toLocaleString()} of ${d.rows.length.toLocaleString()} units` +
    (rows.length > Atlas.limit ? ` (first ${Atlas.limit} shown)` : "");
  document.querySelector("#units tbody").innerHTML = rows.slice(0, Atlas.limit).map(r => "<tr>" + SHOWN.map(([k]) => {
    const v = r[col(k)];
    if (k === "id") return `<td><a href="card.html#${esc(v)}">${esc(v)}</a></td>`;
    return `<td class="${typeof v === "number" ? "num" : ""}">${esc(fmt(v))}</td>`;
  }).join("") + "</tr>").join("");
  rendered();
}

// when the page last finished drawing, in ms since navigation (read by the browser test and the timings)
function rendered() { document.body.dataset.renderedMs = Math.round(performance.now()); }

// ------------------------------------------------------------------ cards
function shardOf(id, size) {
  const m = id.match(/^L(\d+)\/(\d+)$/);
  return m ? `L${m[1]}_${Math.floor(+m[2] / size)}` : null;
}

function openCard(base) {
  const id = decodeURIComponent(location.hash.replace(/^#/, "")), el = document.getElementById("card");
  const shard = shardOf(id, ATLAS_SHARD_SIZE);
  if (!shard) { el.innerHTML = `<p>No unit named <code>${esc(id)}</code>; units are named L&lt;layer&gt;/&lt;index&gt;.</p>`; return; }
  withShard(shard, base, cards => {
    if (!cards[id]) { el.innerHTML = `<p>The atlas has no unit ${esc(id)}.</p>`; return; }
    renderCard(el, cards[id], base);
    document.title = `${id} · neuron atlas`;
    rendered();
  });
}

function tokens(tok, vals, scale) {
  return tok.map((t, i) => {
    const v = vals[i], a = Math.min(1, Math.abs(v) / (scale || 1));
    const bg = v >= 0 ? `rgba(220,50,30,${a.toFixed(2)})` : `rgba(40,90,220,${a.toFixed(2)})`;
    return `<span class="tok" style="background:${bg}" title="${esc(fmt(v))}">${esc(t)}</span>`;
  }).join("");
}

function table(head, rows) {
  return `<table><tr>${head.map(h => `<th>${esc(h)}</th>`).join("")}</tr>` +
    rows.map(r => "<tr>" + r.map(v => `<td class="${typeof v === "number" ? "num" : ""}">${esc(fmt(v))}</td>`).join("") + "</tr>").join("") + "</table>";
}

function renderCard(el, c, base = "") {
  const h = [`<h1>${esc(c.id)} <span class="muted">${esc(c.site)} · ${esc(c.component)} ${esc(c.index_in_component)}</span></h1>`,
    `<p class="summary">${esc(c.summary)}</p>`,
    `<p class="muted">same index in neighbouring layers: ${c.neighbours.map(n => `<a href="${base}card.html#${esc(n)}">${esc(n)}</a>`).join(" · ")}</p>`];
  const L = c.language;
  if (L) {
    h.push(`<h2>Languages (L): average precision of the mean-pooled value, rank among ${L.of.toLocaleString()} units</h2>`);
    h.push(table(["language", "AP", "rank (1 = highest)", "median (clamp value)"],
      Object.keys(L.ap).map(l => [l, L.ap[l], L.rank[l], L.median[l]])));
    h.push(L.sets.length ? "<p>Member of " + L.sets.map(s => `${esc(s.lang)} ${esc(s.group)}-${s.k}` +
      (s.steering && s.steering[s.group] != null ? ` (clamping ${esc(s.group)} steers ${esc(s.steering[s.group])}% of generations into ${esc(s.lang)}, none: ${esc(s.steering.none)}%)` : "")).join("; ") + "</p>"
      : "<p class='muted'>In no language's top or bottom set.</p>");
  }
  const K = c.knowledge;
  if (K) {
    h.push(`<h2>Knowledge (K): refined knowledge-neuron sets holding this unit (baseline ${esc(K.baseline)})</h2>`);
    h.push(K.facts.length ? table(["fact", "answer", "a prompt", "attribution", "set size", "suppress own %", "suppress unrelated %", "amplify own %", "amplify unrelated %"],
      K.facts.map(f => [f.concept, f.answer, f.prompt, f.attribution, f.set_size,
        ...["suppress/own", "suppress/unrelated", "amplify/own", "amplify/unrelated"].map(k => f.effects[k] == null ? null : +(100 * f.effects[k]).toFixed(1))]))
      : "<p class='muted'>In no fact's knowledge-neuron set.</p>");
  }
  const S = c.grammar;
  if (S) {
    h.push(`<h2>Grammar (S): Welch |t| of grammatical vs ungrammatical states, strongest of ${S.n_tasks} BLiMP tasks</h2>`);
    h.push(table(["task", "t", "kept by the L0 mask probe at λ"], S.tasks.map(t => [t.task, t.t, t.kept_at.join(", ")])));
    h.push(`<p class="muted">Tasks whose mask probe keeps the unit, per λ: ${Object.entries(S.kept_tasks).map(([l, n]) => `${l}: ${n}`).join(" · ")}</p>`);
  } else if (c.grammar === null) {
    h.push("<h2>Grammar (S)</h2><p class='muted'>This layer was not probed.</p>");
  }
  const O = c.corpus;
  if (O) {
    const scale = Math.max(1e-9, ...O.top.flatMap(s => (s.values || [s.activation]).map(Math.abs)));
    h.push(`<h2>Corpus (O): top sentences of ${O.k} kept (value per token; the sentence's score is its pooled value)</h2>`);
    h.push(`<p class="legend muted"><span style="background:rgba(220,50,30,.8);color:#fff">positive</span><span style="background:rgba(40,90,220,.8);color:#fff">negative</span> scale ±${fmt(scale)}</p>`);
    h.push(O.top.map(s => `<div class="sentence"><b>${fmt(s.activation)}</b> ` + (s.tokens ? tokens(s.tokens, s.values, scale) : esc(s.text)) + "</div>").join(""));
    if (O.random && O.random.length) {
      h.push("<p class='muted'>Random sentences of the corpus, same scale:</p>");
      h.push(O.random.map(s => `<div class="sentence">${tokens(s.tokens, s.values, scale)}</div>`).join(""));
    }
    const meta = Object.entries(O.metadata);
    const known = O.known || {};
    if (meta.length) h.push("<div class='grid'>" + meta.map(([f, d]) => `<div><b>${esc(f)}</b> among the ` +
      (known[f] != null ? `${known[f]} of ${O.k} top sentences that have one` : "top sentences") +
      table(["label", "share"], Object.entries(d).map(([k, v]) => [k, v])) + "</div>").join("") + "</div>");
    const pats = ["ngrams", "skipgrams", "pos_patterns"].filter(k => O[k] && O[k].length);
    pats.forEach(k => {
      h.push(`<p><b>${k.replace("_", " ")}</b> (PrefixSpan; share of top sentences, times as frequent as in the corpus)</p>`);
      h.push(table(["pattern", "top sentences with it", "relative frequency"], O[k].slice(0, 8).map(p => [p.items.join(" "), `${p.support_top} of ${O.k}`, p.relative])));
    });
    if (!pats.length) h.push("<p class='muted'>Patterns were not mined for this unit.</p>");
    h.push(`<p class="muted">cluster ${esc(O.cluster == null ? "–" : O.cluster)} · mean top-sentence length ${esc(O.mean_length)} words` +
      (O.outlier ? " · outlier dimension" : "") + "</p>");
  }
  el.innerHTML = h.join("\n");
}
