/* The FERBench report page. Everything the data holds (responses, paths, labels, run names) reaches the page
   through textContent or element properties, never as markup: no innerHTML, no inline handlers. The data comes
   from data.js (window.UNIFER_REPORT), written by unifer/report/build.py. */
(function () {
  "use strict";

  var PAGE_SIZE = 50;
  var ERROR = 1, HAS_ANSWER = 2, HEDGED = 4, PROTOCOLS_DISAGREE = 8;
  var WRONG_REASONS = 1, THINK_DISAGREE = 2, TRUNCATED = 4;  // unifer/report/reasoning_view.py
  var ABSENT = -2;
  var HIST_BINS = 20;

  var D = window.UNIFER_REPORT;
  var startMs = performance.now();  // data.js is parsed by now: the rest of the load time is this script's
  var $ = function (id) { return document.getElementById(id); };

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function option(select, value, text) {
    var o = document.createElement("option");
    o.value = String(value);
    o.textContent = text;
    select.appendChild(o);
  }
  function pct(n, d) { return d ? (100 * n / d).toFixed(1) + "%" : "–"; }

  if (!D || !D.items) {
    var err = $("load-error");
    err.textContent = "data.js is missing or broken: rebuild the report with `unifer report`.";
    err.hidden = false;
    return;
  }

  // ---------------------------------------------------------------------------------------------- columns
  var I = D.items, N = I.set.length, C = D.compare;
  var setOf = Int16Array.from(I.set), truth = Int16Array.from(I.truth);
  var preds = [Int16Array.from(I.pp), Int16Array.from(I.ps)];
  var flags = Uint8Array.from(I.flags);
  var rflags = [Uint8Array.from(I.rp || []), Uint8Array.from(I.rs || [])];  // reasoning flags per protocol
  var R = D.reasoning || { units: [], table: null, judge: null };
  var pooledOf = Int16Array.from(D.pooled);
  var ptruth = new Int16Array(N), ppreds = [new Int16Array(N), new Int16Array(N)];
  var lengths = new Int32Array(N);
  for (var i = 0; i < N; i++) {
    ptruth[i] = pooledOf[truth[i]];
    for (var p = 0; p < 2; p++) ppreds[p][i] = preds[p][i] >= 0 ? pooledOf[preds[p][i]] : preds[p][i];
    lengths[i] = I.resp[i].length;
  }
  var cpreds = C ? [Int16Array.from(C.pp), Int16Array.from(C.ps)] : null;
  var lowered = null, loweredC = null;  // the responses (both runs') in lower case, for the search
  function lowerResponses() {
    var low = function (r) { return r.toLowerCase(); };
    lowered = I.resp.map(low);
    if (C) loweredC = C.resp.map(low);
  }
  var UNKNOWN = D.labels.indexOf("unknown");
  var OUTSIDE = -3;  // the matrix's last column: a prediction outside its labels ("unknown")
  var inMatrix = new Uint8Array(D.labels.length);

  var state = { set: -1, protocol: 0, truth: -1, pred: -1, correct: "any", errors: "any", disagree: false,
                noanswer: false, hedged: false, runs: false, search: "", page: 0, cell: null,
                wrongreasons: false, thinkdisagree: false, truncated: false };
  var matches = new Int32Array(N), count = 0;

  // ---------------------------------------------------------------------------------------------- filtering
  function labelName(idx) {
    if (idx === -1) return "error item";
    if (idx === OUTSIDE) return "unknown";
    if (idx === ABSENT) return "absent";
    return D.labels[idx];
  }
  function applyFilters() {
    var t0 = performance.now();
    var s = state.set, pr = state.protocol, pooledView = s < 0;
    var tr = pooledView ? ptruth : truth, pd = pooledView ? ppreds[pr] : preds[pr];
    var q = state.search.toLowerCase();
    inMatrix.fill(0);
    currentMatrix().labels.forEach(function (l) { inMatrix[l] = 1; });
    if (q && !lowered) lowerResponses();
    var mask = 0, want = 0;
    if (state.disagree) { mask |= PROTOCOLS_DISAGREE; want |= PROTOCOLS_DISAGREE; }
    if (state.noanswer) { mask |= HAS_ANSWER | ERROR; }
    if (state.hedged) { mask |= HEDGED; want |= HEDGED; }
    if (state.errors === "exclude" || state.correct !== "any") mask |= ERROR;
    if (state.errors === "only") { mask |= ERROR; want |= ERROR; }
    var rmask = (state.wrongreasons ? WRONG_REASONS : 0) | (state.thinkdisagree ? THINK_DISAGREE : 0) |
      (state.truncated ? TRUNCATED : 0), rf = rflags[pr];
    var cp = cpreds ? cpreds[pr] : null;
    count = 0;
    for (var i = 0; i < N; i++) {
      if (s >= 0 && setOf[i] !== s) continue;
      if ((flags[i] & mask) !== want) continue;
      if (rmask && (rf[i] & rmask) !== rmask) continue;
      if (state.truth >= 0 && tr[i] !== state.truth) continue;
      if (state.pred === OUTSIDE) { if (pd[i] < 0 || inMatrix[pd[i]]) continue; }
      else if (state.pred !== -1 && pd[i] !== state.pred) continue;
      if (state.correct === "right" && pd[i] !== tr[i]) continue;
      if (state.correct === "wrong" && pd[i] === tr[i]) continue;
      if (state.runs && (cp[i] === ABSENT || cp[i] === preds[pr][i])) continue;
      if (q && lowered[i].indexOf(q) < 0 && !(loweredC && loweredC[i].indexOf(q) >= 0)) continue;
      matches[count++] = i;
    }
    state.page = Math.min(state.page, Math.max(0, Math.ceil(count / PAGE_SIZE) - 1));
    window.__report.lastScanMs = performance.now() - t0;
    renderList();
    var ms = performance.now() - t0;
    window.__report.lastFilterMs = ms;
    return ms;
  }

  // ---------------------------------------------------------------------------------------------- items
  var THINK = /<think>([\s\S]*?)<\/think>/i, ANSWER = /<answer>\s*(.*?)\s*<\/answer>/i;

  function highlighted(cls, text) {
    var node = el("pre", cls), q = state.search;
    if (!q) { node.textContent = text; return node; }
    var low = text.toLowerCase(), ql = q.toLowerCase(), at = 0, hit;
    while ((hit = low.indexOf(ql, at)) >= 0) {
      node.appendChild(document.createTextNode(text.slice(at, hit)));
      node.appendChild(el("mark", null, text.slice(hit, hit + q.length)));
      at = hit + q.length;
    }
    node.appendChild(document.createTextNode(text.slice(at)));
    return node;
  }
  // The cues (start, end, unit triples into the response; a negated mention as -1 - unit) inside text, which
  // stands at offset base of the response, marked; plain text when a search is on (its hits are marked then).
  function cueMarked(cls, text, base, cues) {
    if (state.search || !cues || !cues.length) return highlighted(cls, text);
    var node = el("pre", cls), at = 0;
    for (var k = 0; k + 2 < cues.length; k += 3) {
      var a = cues[k] - base, b = cues[k + 1] - base, u = cues[k + 2];
      if (a < at || b > text.length) continue;
      node.appendChild(document.createTextNode(text.slice(at, a)));
      var neg = u < 0, m = el("mark", neg ? "cue neg" : "cue", text.slice(a, b));
      m.title = (R.units[neg ? -1 - u : u] || "") + (neg ? " (negated)" : "");
      node.appendChild(m);
      at = b;
    }
    node.appendChild(document.createTextNode(text.slice(at)));
    return node;
  }
  function responseBlock(resp, itemFlags, cues) {
    var box = el("div", "response");
    if (itemFlags & ERROR) {
      box.appendChild(el("h4", null, "Error item (not scored)"));
      box.appendChild(highlighted("reasoning", resp));
      return box;
    }
    var think = THINK.exec(resp), answer = ANSWER.exec(resp);
    var reasoning = think ? think[1] : resp.replace(ANSWER, "").trim();
    box.appendChild(el("h4", null, think ? "Reasoning" : "Reasoning (no <think> tags)"));
    box.appendChild(think ? cueMarked("reasoning", reasoning, think.index + 7, cues) : highlighted("reasoning", reasoning));
    box.appendChild(el("h4", null, "Answer"));
    if (answer) box.appendChild(highlighted("answer", answer[1]));
    else box.appendChild(el("p", "muted", "no <answer> (the paper protocol then searches the whole response)"));
    var raw = el("details", "raw");
    raw.appendChild(el("summary", null, "whole response (" + resp.length + " characters)"));
    raw.appendChild(cueMarked("whole", resp, 0, cues));
    box.appendChild(raw);
    return box;
  }
  function predLine(box, name, idx, truthIdx, pooledView) {
    var shown = idx >= 0 && pooledView ? pooledOf[idx] : idx;
    var ok = idx >= 0 && (pooledView ? shown === pooledOf[truthIdx] : idx === truthIdx);
    var line = el("div", "pred " + (idx < 0 ? "none" : ok ? "right" : "wrong"));
    line.appendChild(el("span", "key", name + ": "));
    line.appendChild(el("span", "val", labelName(idx) + (idx >= 0 ? (ok ? "  ✓" : "  ✗") : "")));
    box.appendChild(line);
  }
  function badges(box, f) {
    var names = [[ERROR, "error item"], [HEDGED, "hedged"], [PROTOCOLS_DISAGREE, "protocols disagree"]];
    for (var k = 0; k < names.length; k++) if (f & names[k][0]) box.appendChild(el("span", "badge", names[k][1]));
    if (!(f & ERROR) && !(f & HAS_ANSWER)) box.appendChild(el("span", "badge", "no <answer>"));
  }
  function reasonBadges(box, f) {
    var names = [[WRONG_REASONS, "right for the wrong reasons"], [THINK_DISAGREE, "reasoning and answer disagree"],
                 [TRUNCATED, "truncated"]];
    for (var k = 0; k < names.length; k++) if (f & names[k][0]) box.appendChild(el("span", "badge reason", names[k][1]));
  }
  function face(i) {
    var t = I.thumb[i];
    if (t < 0) return el("div", "face placeholder", "no image");
    var img = el("img", "face");
    img.alt = "face: " + I.path[i];
    img.width = 96; img.height = 96;
    img.decoding = "async";
    img.addEventListener("error", function () { img.replaceWith(el("div", "face placeholder", "no image")); });
    img.src = "thumbs/" + String(t).padStart(5, "0") + ".jpg";
    return img;
  }
  function card(i) {
    var c = el("article", "item"), pooledView = state.set < 0;
    c.dataset.item = String(i);
    c.appendChild(face(i));
    var meta = el("div", "meta");
    meta.appendChild(el("div", "where", D.sets[setOf[i]].name + " · record " + I.index[i]));
    meta.appendChild(el("div", "path", I.path[i] || "(no image path)"));
    var tl = el("div", "pred truth");
    tl.appendChild(el("span", "key", "true: "));
    tl.appendChild(el("span", "val", D.labels[truth[i]]));
    meta.appendChild(tl);
    var runs = el("div", C ? "runs two" : "runs");
    var mine = el("div", "run");
    if (C) mine.appendChild(el("h3", null, D.runs[0]));
    for (var p = 0; p < 2; p++) predLine(mine, D.protocols[p], preds[p][i], truth[i], false);
    var b = el("div", "badges"); badges(b, flags[i]); reasonBadges(b, rflags[state.protocol][i]); mine.appendChild(b);
    mine.appendChild(responseBlock(I.resp[i], flags[i], I.cues ? I.cues[i] : null));
    if (I.judge && I.judge[i]) mine.appendChild(el("p", "judge", I.judge[i]));
    runs.appendChild(mine);
    if (C) {
      var theirs = el("div", "run");
      theirs.appendChild(el("h3", null, D.runs[1]));
      if (C.pp[i] === ABSENT) theirs.appendChild(el("p", "muted", "this item is absent from the compared run"));
      else {
        for (p = 0; p < 2; p++) predLine(theirs, D.protocols[p], cpreds[p][i], truth[i], false);
        var b2 = el("div", "badges"); badges(b2, C.flags[i]); theirs.appendChild(b2);
        theirs.appendChild(responseBlock(C.resp[i], C.flags[i]));
      }
      runs.appendChild(theirs);
    }
    meta.appendChild(runs);
    c.appendChild(meta);
    return c;
  }
  function renderList() {
    var list = $("list"), pages = Math.max(1, Math.ceil(count / PAGE_SIZE));
    clear(list);
    var frag = document.createDocumentFragment(), start = state.page * PAGE_SIZE;
    for (var k = start; k < Math.min(count, start + PAGE_SIZE); k++) frag.appendChild(card(matches[k]));
    list.appendChild(frag);
    $("count").textContent = count + (count === 1 ? " item" : " items") + (state.cell ? " in " + state.cell : "");
    $("count").dataset.count = String(count);
    $("page").textContent = "page " + (state.page + 1) + " of " + pages;
    $("prev").disabled = $("prev2").disabled = state.page === 0;
    $("next").disabled = $("next2").disabled = state.page >= pages - 1;
  }

  // ---------------------------------------------------------------------------------------------- tables
  function table(box, t) {
    clear(box);
    var tab = el("table", "scores"), head = el("tr");
    t.header.forEach(function (h) { head.appendChild(el("th", null, h)); });
    var thead = el("thead"); thead.appendChild(head); tab.appendChild(thead);
    var body = el("tbody");
    t.rows.forEach(function (r) {
      var tr = el("tr");
      r.forEach(function (c, k) { tr.appendChild(el(k ? "td" : "th", k ? "num" : null, c)); });
      body.appendChild(tr);
    });
    tab.appendChild(body);
    box.appendChild(tab);
  }

  function notes(box, lines) {
    clear(box);
    (lines || []).forEach(function (line) { box.appendChild(el("p", null, line)); });
  }

  function currentMatrix() { return D.matrices[state.set < 0 ? "all" : D.sets[state.set].key][D.protocols[state.protocol]]; }

  function renderMatrix() {
    var M = currentMatrix(), box = $("matrix");
    clear(box);
    $("matrix-title").textContent = "· " + (state.set < 0 ? "pooled" : D.sets[state.set].name) + " · " +
      D.protocols[state.protocol] + " protocol · accuracy " + (100 * M.accuracy).toFixed(2) + "%";
    var max = 1;
    M.m.forEach(function (row) { row.forEach(function (v) { if (v > max) max = v; }); });
    var tab = el("table", "matrix"), head = el("tr");
    head.appendChild(el("th", "corner", "true \\ predicted"));
    M.labels.forEach(function (l) { head.appendChild(el("th", "col", D.labels[l])); });
    head.appendChild(el("th", "col", "unknown"));
    tab.appendChild(head);
    M.labels.forEach(function (l, r) {
      var tr = el("tr");
      tr.appendChild(el("th", "row", D.labels[l]));
      M.m[r].concat([M.unknown[r]]).forEach(function (v, c) {
        var td = el("td", c === r ? "diag" : null);
        var btn = el("button", "cell", v);
        var col = c < M.labels.length ? M.labels[c] : OUTSIDE;
        btn.dataset.truth = D.labels[l]; btn.dataset.pred = labelName(col);
        btn.title = D.labels[l] + " → " + labelName(col) + ": " + v + " items";
        btn.style.backgroundColor = "rgba(" + (c === r ? "40,120,200," : "200,80,40,") + (v / max * 0.85 + 0.03) + ")";
        btn.addEventListener("click", function () { showCell(l, col); });
        td.appendChild(btn); tr.appendChild(td);
      });
      tab.appendChild(tr);
    });
    box.appendChild(tab);
  }

  function showCell(truthIdx, predIdx) {
    resetFilters(false);
    state.truth = truthIdx; state.pred = predIdx;
    state.cell = D.labels[truthIdx] + " → " + labelName(predIdx) + " (" + D.protocols[state.protocol] + ")";
    syncControls();
    applyFilters();
    $("items").scrollIntoView();
  }

  // ---------------------------------------------------------------------------------------------- statistics
  function renderStats() {
    var s = state.set, pr = state.protocol, pooledView = s < 0;
    var total = 0, errors = 0, answered = 0, hedged = 0, disagree = 0, unknown = [0, 0];
    var lens = [], pairs = {};
    var tr = pooledView ? ptruth : truth, pd = pooledView ? ppreds[pr] : preds[pr];
    for (var i = 0; i < N; i++) {
      if (s >= 0 && setOf[i] !== s) continue;
      total++;
      if (flags[i] & ERROR) { errors++; continue; }
      if (flags[i] & HAS_ANSWER) answered++;
      if (flags[i] & HEDGED) hedged++;
      if (flags[i] & PROTOCOLS_DISAGREE) disagree++;
      for (var p = 0; p < 2; p++) if (preds[p][i] === UNKNOWN) unknown[p]++;
      lens.push(lengths[i]);
      if (pd[i] !== tr[i] && pd[i] !== UNKNOWN) {
        var key = tr[i] + ":" + pd[i];
        pairs[key] = (pairs[key] || 0) + 1;
      }
    }
    var valid = total - errors, dl = $("stats");
    clear(dl);
    function row(name, value, id) {
      dl.appendChild(el("dt", null, name));
      var dd = el("dd", null, value); if (id) dd.id = id; dl.appendChild(dd);
    }
    row("items", total + " (" + errors + " error items, " + valid + " answered)");
    row("with an <answer>", pct(answered, valid) + " (" + answered + ")", "stat-answer");
    row("unknown, paper protocol", pct(unknown[0], valid) + " (" + unknown[0] + ")", "stat-unknown-paper");
    row("unknown, strict protocol", pct(unknown[1], valid) + " (" + unknown[1] + ")", "stat-unknown-strict");
    row("hedged answers", pct(hedged, valid) + " (" + hedged + ")", "stat-hedged");
    row("protocols disagree", pct(disagree, valid) + " (" + disagree + ")", "stat-disagree");
    if (C) {
      var differ = 0, cp = cpreds[pr];
      for (i = 0; i < N; i++) if ((s < 0 || setOf[i] === s) && cp[i] !== ABSENT && cp[i] !== preds[pr][i]) differ++;
      row("runs disagree (" + D.protocols[pr] + ")", "", "stat-runs");
      var show = el("button", "link", differ + " items, side by side");
      show.addEventListener("click", function () {
        resetFilters(false); state.runs = true; syncControls(); applyFilters(); $("items").scrollIntoView();
      });
      $("stat-runs").appendChild(show);
      if (C.onlyInCompare) $("stat-runs").appendChild(el("span", "muted", "; " + C.onlyInCompare + " items only in " + D.runs[1]));
    }
    histogram(lens);
    var top = Object.keys(pairs).sort(function (a, b) { return pairs[b] - pairs[a]; }).slice(0, 10), ol = $("confusions");
    clear(ol);
    top.forEach(function (k) {
      var ab = k.split(":").map(Number), li = el("li");
      var btn = el("button", "link", D.labels[ab[0]] + " → " + D.labels[ab[1]] + ": " + pairs[k]);
      btn.addEventListener("click", function () { showCell(ab[0], ab[1]); });
      li.appendChild(btn); ol.appendChild(li);
    });
    if (!top.length) ol.appendChild(el("li", "muted", "none"));
  }
  function histogram(lens) {
    var box = $("histogram");
    clear(box);
    if (!lens.length) return;
    var sorted = Float64Array.from(lens).sort(), hi = Math.max(1, sorted[Math.floor(0.99 * (sorted.length - 1))]);
    var width = Math.max(1, Math.ceil(hi / HIST_BINS)), bins = new Array(HIST_BINS).fill(0);
    lens.forEach(function (n) { bins[Math.min(HIST_BINS - 1, Math.floor(n / width))]++; });
    var peak = Math.max.apply(null, bins);
    bins.forEach(function (v, k) {
      var bar = el("div", "bar");
      var fill = el("div", "fill");
      fill.style.height = (100 * v / peak) + "%";
      bar.appendChild(fill);
      bar.title = (k * width) + (k === HIST_BINS - 1 ? "+" : "–" + ((k + 1) * width - 1)) + " characters: " + v;
      box.appendChild(bar);
    });
    var axis = el("div", "axis muted", "0 … " + (HIST_BINS * width) + "+ characters; median " + sorted[Math.floor(sorted.length / 2)]);
    box.appendChild(axis);
  }

  // ---------------------------------------------------------------------------------------------- controls
  function fillLabelSelects() {
    var M = currentMatrix(), ft = $("f-truth"), fp = $("f-pred");
    clear(ft); clear(fp);
    option(ft, -1, "any"); option(fp, -1, "any");
    M.labels.forEach(function (l) { option(ft, l, D.labels[l]); option(fp, l, D.labels[l]); });
    option(fp, UNKNOWN, "unknown");
    option(fp, OUTSIDE, "unknown column");
    if (M.labels.indexOf(state.truth) < 0) state.truth = -1;
    if (M.labels.indexOf(state.pred) < 0 && state.pred !== UNKNOWN && state.pred !== OUTSIDE) state.pred = -1;
  }
  function syncControls() {
    $("f-set").value = String(state.set); $("f-protocol").value = String(state.protocol);
    fillLabelSelects();
    $("f-truth").value = String(state.truth); $("f-pred").value = String(state.pred);
    $("f-correct").value = state.correct; $("f-errors").value = state.errors;
    $("f-disagree").checked = state.disagree; $("f-noanswer").checked = state.noanswer;
    $("f-hedged").checked = state.hedged; $("f-runs").checked = state.runs; $("f-search").value = state.search;
    $("f-wrongreasons").checked = state.wrongreasons; $("f-thinkdisagree").checked = state.thinkdisagree;
    $("f-truncated").checked = state.truncated;
  }
  function resetFilters(keepView) {
    state.truth = -1; state.pred = -1; state.correct = "any"; state.errors = "any"; state.disagree = false;
    state.noanswer = false; state.hedged = false; state.runs = false; state.search = ""; state.page = 0;
    state.wrongreasons = state.thinkdisagree = state.truncated = false;
    state.cell = null;
    if (keepView) { syncControls(); applyFilters(); }
  }
  function onChange(id, read, whole) {
    $(id).addEventListener(id === "f-search" ? "input" : "change", function () {
      read($(id)); state.page = 0; state.cell = null;
      if (whole) { fillLabelSelects(); syncControls(); renderMatrix(); renderStats(); }
      applyFilters();
    });
  }

  function init() {
    document.title = D.title;
    $("title").textContent = D.title;
    $("subtitle").textContent = N + " items · " + D.sets.map(function (s) { return s.name; }).join(", ") +
      (C ? " · compared with " + D.runs[1] : "") + " · images under " + D.imageRoot;
    table($("table"), D.table);
    notes($("table-note"), D.table.notes);
    if (C) {
      $("compare-table-title").textContent = D.runs[1] + " (compared run)";
      table($("compare-table"), C.table);
      $("compare-table-box").hidden = false;
      if (C.paired) {
        $("paired-box").hidden = false;
        if (C.paired.error) notes($("paired-note"), [C.paired.error]);
        else {
          $("paired-title").textContent = C.paired.title;
          table($("paired-table"), C.paired);
          notes($("paired-note"), C.paired.notes);
        }
      }
      $("f-runs-box").hidden = false;
    }
    if (R.table) table($("reasoning-table"), R.table);
    if (R.judge) { table($("judge-table"), R.judge); $("judge-box").hidden = false; }
    option($("f-set"), -1, "all sets (pooled labels)");
    D.sets.forEach(function (s, k) { option($("f-set"), k, s.name); });
    D.protocols.forEach(function (p, k) { option($("f-protocol"), k, p); });
    onChange("f-set", function (e) { state.set = Number(e.value); state.truth = state.pred = -1; }, true);
    onChange("f-protocol", function (e) { state.protocol = Number(e.value); }, true);
    onChange("f-truth", function (e) { state.truth = Number(e.value); });
    onChange("f-pred", function (e) { state.pred = Number(e.value); });
    onChange("f-correct", function (e) { state.correct = e.value; });
    onChange("f-errors", function (e) { state.errors = e.value; });
    onChange("f-disagree", function (e) { state.disagree = e.checked; });
    onChange("f-noanswer", function (e) { state.noanswer = e.checked; });
    onChange("f-hedged", function (e) { state.hedged = e.checked; });
    onChange("f-runs", function (e) { state.runs = e.checked; });
    onChange("f-wrongreasons", function (e) { state.wrongreasons = e.checked; });
    onChange("f-thinkdisagree", function (e) { state.thinkdisagree = e.checked; });
    onChange("f-truncated", function (e) { state.truncated = e.checked; });
    onChange("f-search", function (e) { state.search = e.value; });
    $("filters").addEventListener("submit", function (ev) { ev.preventDefault(); });
    $("f-reset").addEventListener("click", function () { resetFilters(true); });
    function turn(d) { return function () { state.page += d; renderList(); $("count").scrollIntoView(); }; }
    $("prev").addEventListener("click", turn(-1)); $("prev2").addEventListener("click", turn(-1));
    $("next").addEventListener("click", turn(1)); $("next2").addEventListener("click", turn(1));
    syncControls();
    renderMatrix();
    renderStats();
    applyFilters();
  }

  window.__report = { lastFilterMs: null, readyMs: null, startMs: startMs, applyFilters: applyFilters };
  init();
  document.body.getBoundingClientRect();  // include the first layout in the load time
  window.__report.readyMs = performance.now();
  document.body.dataset.ready = "1";
  // Lower-case the responses for search once the page is up, so that the first search is as quick as the rest.
  setTimeout(function () { if (!lowered) lowerResponses(); }, 30);
})();
