// convprop explore: the page draws what the server computed (POST /api/forward, the
// training events); no maths of the network is done here.  Helpers: maps.js.
"use strict";

const state = {
  source: null,        // {image: 28x28 array | PNG data URL}
  show: "main",        // which network the forward/backward panels show
  busy: {}, again: {}, // one request in flight per network; "again" if the input changed
  last: {},            // last trace per network
  job: null, events: null, points: [],
  info: null,
};

// ------------------------------------------------------------------ drawing
const draw = $("draw"), dctx = draw.getContext("2d");
function clearCanvas() {
  dctx.fillStyle = "#000"; dctx.fillRect(0, 0, draw.width, draw.height);
}
clearCanvas();
let drawing = false, lastPt = null, inked = false;
function point(ev) {
  const r = draw.getBoundingClientRect();
  return [(ev.clientX - r.left) * draw.width / r.width,
          (ev.clientY - r.top) * draw.height / r.height];
}
draw.addEventListener("pointerdown", (ev) => {
  drawing = true; lastPt = point(ev); draw.setPointerCapture(ev.pointerId);
  stroke(lastPt, lastPt);
});
draw.addEventListener("pointermove", (ev) => {
  if (!drawing) return;
  const p = point(ev); stroke(lastPt, p); lastPt = p;
});
["pointerup", "pointercancel"].forEach((t) => draw.addEventListener(t, () => {
  if (drawing) { drawing = false; useDrawing(); }
}));
function stroke(a, b) {
  dctx.strokeStyle = "#fff"; dctx.fillStyle = "#fff"; dctx.lineWidth = 20;
  dctx.lineCap = "round"; dctx.lineJoin = "round"; dctx.beginPath();
  if (a[0] === b[0] && a[1] === b[1]) {
    // a tap: a filled dot (Chromium 156.0.8078.114 drew nothing for a zero-length
    // round-capped line; the blank pad went to the server, which refused it: a 422)
    dctx.arc(a[0], a[1], dctx.lineWidth / 2, 0, 2 * Math.PI); dctx.fill();
  } else {
    dctx.moveTo(a[0], a[1]); dctx.lineTo(b[0], b[1]); dctx.stroke();
  }
  inked = true;
  useDrawing();
}
function useDrawing() {
  if (!inked) return;
  state.source = { image: draw.toDataURL("image/png") };
  refreshAll();
}

$("clear").addEventListener("click", () => {
  clearCanvas(); inked = false; state.source = null; state.last = {};
  $("prediction").textContent = "–"; $("scores").innerHTML = "";
  $("input-view").getContext("2d").clearRect(0, 0, 28, 28);
  $("feature-maps").innerHTML = '<p class="hint">Draw a digit to see every layer.</p>';
  $("delta-maps").innerHTML = '<p class="hint">Choose the true label to send the error back.</p>';
  $("compare-cols").innerHTML = ""; $("loss-line").textContent = "";
});

$("random").addEventListener("click", async () => {
  const r = await api("/api/random");
  if (!r) return;
  showOnPad(r.image);
  state.source = { image: r.image };
  $("label").value = String(r.label);
  refreshAll();
});

$("upload").addEventListener("change", () => {
  const file = $("upload").files[0];
  if (!file) return;
  const img = new Image();
  img.onload = () => {
    // re-encode as PNG in the page: the server accepts PNG only
    const c = document.createElement("canvas");
    const s = Math.min(1, 1024 / Math.max(img.width, img.height));
    c.width = Math.max(1, Math.round(img.width * s));
    c.height = Math.max(1, Math.round(img.height * s));
    const ctx = c.getContext("2d");
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, c.width, c.height);
    ctx.drawImage(img, 0, 0, c.width, c.height);
    state.source = { image: c.toDataURL("image/png") };
    clearCanvas(); dctx.drawImage(c, 0, 0, draw.width, draw.height); inked = false;
    URL.revokeObjectURL(img.src);
    refreshAll();
  };
  img.onerror = () => message("that file is not an image the browser can read");
  img.src = URL.createObjectURL(file);
  $("upload").value = "";
});

function showOnPad(image) {
  // a 28x28 test image, enlarged onto the drawing pad
  const c = mapCanvas(image, 1, 1, true);
  clearCanvas(); dctx.imageSmoothingEnabled = false;
  dctx.drawImage(c, 0, 0, draw.width, draw.height); inked = false;
}

$("label").addEventListener("change", refreshAll);
document.querySelectorAll('input[name="show"]').forEach((r) => r.addEventListener("change",
  () => { state.show = r.value; if (state.last[state.show]) render(state.last[state.show]); }));

// ------------------------------------------------------------------ API
function message(text) { $("message").textContent = text || ""; }

async function api(url, body) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  let r;
  try { r = await fetch(url, opts); } catch (e) { message(`server unreachable: ${e}`); return null; }
  const data = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) { message(data.error || `HTTP ${r.status}`); return null; }
  message("");
  return data;
}

function refreshAll() {
  refresh("main");
  if (state.info && state.info.live) refresh("live");
}

// One request in flight per network; a newer input while it runs is sent right after.
async function refresh(net) {
  if (!state.source) return;
  if (state.busy[net]) { state.again[net] = true; return; }
  state.busy[net] = true; state.again[net] = false;
  const label = $("label").value;
  const r = await api("/api/forward", { image: state.source.image, net,
    label: label === "" ? null : Number(label) });
  state.busy[net] = false;
  if (r) {
    state.last[net] = r;
    if (net === state.show) render(r);
    renderCompare();
  }
  if (state.again[net]) refresh(net);
}

// ------------------------------------------------------------------ rendering
function render(r) {
  $("prediction").textContent = String(r.digit);
  renderScores($("scores"), r.scores, r.digit);
  const iv = $("input-view").getContext("2d");
  iv.drawImage(mapCanvas(r.input, 1, 1, true), 0, 0);
  $("loss-line").textContent = r.loss === null ? "" :
    `loss L = ½ Σ (o − y)² = ${fmt(r.loss)} for label ${r.label}`;
  renderForward(r);
  renderBackward(r);
}

function renderScores(box, scores, top) {
  box.innerHTML = "";
  const m = Math.max(...scores.map(Math.abs), 1e-9);
  scores.forEach((s, j) => {
    const bar = el("div", j === top ? "bar top" : "bar"), fill = el("span");
    fill.style.width = `${Math.max(0, s) / m * 100}%`;
    bar.append(fill);
    box.append(el("span", "num", String(j)), bar, el("span", "num", fmt(s)));
  });
}

function layerHead(text, eq, max) {
  const h = el("div", "layer-head");
  h.append(el("b", null, text));
  if (eq) h.append(el("span", "eq", `eq. (${eq})`));
  if (max !== undefined) h.append(scaleBadge(max));
  return h;
}

function mapsRow(maps, max, zoom, describe) {
  const row = el("div", "row");
  maps.forEach((m, i) => {
    const c = mapCanvas(m, max, zoom);
    c.title = "";
    if (describe) hoverable(c, (r, q) => describe(i, r, q));
    row.append(c);
  });
  return row;
}

function kernelGrid(k, zoom, label) {
  // k: (out, in, kh, kw): one column per output map (under its map), one row per input map
  const max = maxAbs(k);
  const wrap = el("div");
  wrap.append(layerHead(label, label.includes("∂") ? "13" : null, max));
  const grid = el("div", "kgrid");
  grid.style.gridTemplateColumns = `repeat(${k.length}, auto)`;
  for (let i = 0; i < k[0].length; i++) {
    k.forEach((outMap, o) => {
      const kern = outMap[i], c = mapCanvas(kern, max, zoom);
      hoverable(c, (r, q) => [`${label} [out map ${o}, in map ${i}] (${r}, ${q})`,
        fmt(kern[r][q])]);
      grid.append(c);
    });
  }
  wrap.append(grid);
  return wrap;
}

function shapeText(s) { return s.join(" × "); }

function renderForward(r) {
  const box = $("feature-maps");
  box.innerHTML = "";
  r.layers.forEach((L) => {
    const div = el("div", "layer");
    const max = maxAbs(L.maps);
    div.append(layerHead(`${L.name} (${L.kind}) a: ${shapeText(L.shape)}`, null, max));
    const maps = L.maps;  // (C, H, W); the output layer's scores as one 1 x n map
    const zoom = L.kind === "dense" ? 18 : zoomFor(maps[0].length, 72);
    div.append(mapsRow(maps, max, zoom, (i, y, x) => [
      `${L.name} map ${i} (${y}, ${x})`, `a = ${fmt(maps[i][y][x])}`]));
    if (L.kernels) div.append(kernelGrid(L.kernels, 5, `${L.name} kernels k`));
    box.append(div);
  });
}

function renderBackward(r) {
  const box = $("delta-maps");
  box.innerHTML = "";
  if (r.label === null) {
    box.append(el("p", "hint", "Choose the true label to send the error back through " +
      "the network. Hover a pixel to see its value and where it came from."));
    return;
  }
  for (let li = r.layers.length - 1; li >= 0; li--) {
    const L = r.layers[li], above = r.layers[li + 1], below = r.layers[li - 1];
    const div = el("div", "layer");
    const isDelta = L.slope !== undefined;
    const max = maxAbs(L.delta);
    const what = isDelta ? "δ = f′(z) ∘ ∂L/∂a" : "error ∂L/∂a";
    div.append(layerHead(`${L.name}: ${what}`, L.equation, max));
    const maps = L.delta;
    const zoom = L.kind === "dense" ? 18 : zoomFor(maps[0].length, 72);
    div.setAttribute("data-layer", L.name);
    div.append(mapsRow(maps, max, zoom, (i, y, x) => explain(r, li, L, above, i, y, x)));
    if (L.weight_grad && L.kind === "conv") {
      div.append(kernelGrid(L.weight_grad, 5, `${L.name} kernel gradients ∂L/∂k`));
    }
    if (below === undefined && L.weight_grad) {
      div.append(el("div", "sublabel", "the first layer: its kernel gradients (13) " +
        "correlate the input image with these δ maps"));
    }
    box.append(div);
  }
}

// Where a δ value came from, in the words of the paper's equations.
function explain(r, li, L, above, i, y, x) {
  const pick = (a) => a[i][y][x];
  const lines = [`${L.name}${L.kind === "dense" ? ` unit ${x}` : ` map ${i} (${y}, ${x})`}: ` +
    `${fmt(pick(L.delta))}`];
  if (L.slope) lines.push(`= f′(z) ${fmt(pick(L.slope))} × ∂L/∂a ${fmt(pick(L.error))}`);
  if (L.equation === "4") {
    const yj = x === r.label ? 1 : 0;
    lines.push(`eq. (4): ∂L/∂a = o − y = ${fmt(L.maps[0][0][x])} − ${yj}` +
      ` (target 1 for the label ${r.label}, 0 elsewhere)`);
  } else if (L.equation === "8") {
    lines.push("eq. (8): ∂L/∂a = Σ_k W_kj δ_k of the output layer: the ten output " +
      "errors sent back through the fully connected weights, reshaped into maps");
  } else if (L.equation === "11" && above) {
    const s = L.shape[1] / above.shape[1];
    const src = above.delta[i][Math.floor(y / s)][Math.floor(x / s)];
    lines.push(above.pooling === "max"
      ? `eq. (11): up-sampled from ${above.name} (${Math.floor(y / s)}, ${Math.floor(x / s)})` +
        ` = ${fmt(src)}, which goes only to the largest unit of its ${s}×${s} window`
      : `eq. (11): up-sampled from ${above.name} (${Math.floor(y / s)}, ` +
        `${Math.floor(x / s)}) = ${fmt(src)}, divided by s² = ${s * s}`);
  } else if (L.equation === "12" && above) {
    const k = above.kernels[0][0].length;
    lines.push(`eq. (12): Σ over the ${above.shape[0]} maps of ${above.name} of its δ ` +
      `(rows ${Math.max(0, y - k + 1)}…${y}, columns ${Math.max(0, x - k + 1)}…${x}) ` +
      `full-convolved with the kernels rotated by 180°`);
  }
  lines.push(`a = ${fmt(pick(L.maps))}`);
  return lines;
}

function renderCompare() {
  const box = $("compare-cols");
  const nets = ["main", "live"].filter((n) => state.last[n]);
  if (nets.length < 2) return;
  $("compare-hint").hidden = true;
  box.innerHTML = "";
  nets.forEach((n) => {
    const r = state.last[n], col = el("div", "col");
    col.append(el("h3", null, `${n === "main" ? "model" : "live"}: ${r.activation}`));
    col.append(el("div", "pred-small", String(r.digit)));
    const sc = el("div"); sc.id = `scores-${n}`;
    sc.style.display = "grid"; sc.style.gridTemplateColumns = "16px 1fr 58px";
    sc.style.gap = "2px 6px"; sc.style.fontSize = "12px";
    renderScores(sc, r.scores, r.digit);
    col.append(sc);
    if (r.label !== null) {
      r.layers.slice().reverse().forEach((L) => {
        if (L.kind === "dense") return;
        const max = maxAbs(L.delta);
        col.append(layerHead(`${L.name} δ`, L.equation, max));
        col.append(mapsRow(L.delta, max, zoomFor(L.delta[0].length, 36)));
      });
    } else {
      col.append(el("p", "hint", "choose a label to compare δ"));
    }
    box.append(col);
  });
}

// ------------------------------------------------------------------ live training
const activation = $("activation");
function syncSliders() {
  $("k-row").hidden = activation.value !== "tanh-linear";
  $("alpha-row").hidden = activation.value !== "leaky-relu";
  $("k-value").textContent = $("k").value;
  $("alpha-value").textContent = $("alpha").value;
}
[activation, $("k"), $("alpha")].forEach((e) => e.addEventListener("input", syncSliders));
syncSliders();

function activationName() {
  if (activation.value === "tanh-linear") return `tanh-linear:${$("k").value}`;
  if (activation.value === "leaky-relu") return `leaky-relu:${$("alpha").value}`;
  return activation.value;
}

$("train-start").addEventListener("click", async () => {
  const r = await api("/api/train/start", {
    activation: activationName(), lr: Number($("lr").value),
    batch_size: Number($("batch").value), iterations: Number($("iterations").value),
    spec: $("spec").value,
  });
  if (!r) return;
  state.job = r.job; state.points = []; drawChart();
  $("train-start").disabled = true; $("train-stop").disabled = false;
  $("save-model").classList.add("disabled");
  $("train-status").textContent = `training ${r.settings.activation}…`;
  state.info = state.info || {}; state.info.live = true;
  const live = $("show-live");
  live.disabled = false; live.checked = true; state.show = "live";
  $("live-name").textContent = `network trained live (${r.settings.activation})`;
  state.last.live = null;
  const es = new EventSource(`/api/train/events?job=${r.job}`);
  state.events = es;
  let lastRefresh = 0;
  es.onmessage = (m) => {
    const ev = JSON.parse(m.data);
    if (ev.type === "progress") {
      state.points.push([ev.iteration, ev.rl]);
      drawChart();
      renderDiagnostics(ev.diagnostics);
      $("train-status").textContent = `iteration ${ev.iteration}: L = ${fmt(ev.loss)}, ` +
        `rL = ${fmt(ev.rl)}`;
      if (performance.now() - lastRefresh > 300) { lastRefresh = performance.now(); refresh("live"); }
    } else if (ev.type === "done") {
      es.close(); state.events = null;
      trainingEnded(ev);
    }
  };
  es.onerror = () => {
    if (state.events === es) { es.close(); state.events = null;
      trainingEnded({ status: "lost", message: "connection to the server lost" }); }
  };
});

function trainingEnded(ev) {
  $("train-start").disabled = false; $("train-stop").disabled = true;
  $("save-model").classList.remove("disabled");
  const err = ev.test_error === null || ev.test_error === undefined ? "" :
    `; test error ${(100 * ev.test_error).toFixed(2)} % on the sample's test images`;
  $("train-status").textContent = `${ev.status}${ev.message ? `: ${ev.message}` : ""}${err}`;
  refresh("live");
}

$("train-stop").addEventListener("click", () => api("/api/train/stop", {}));
window.addEventListener("pagehide", () => {
  if (state.events) navigator.sendBeacon("/api/train/stop", "{}");
});

function drawChart() {
  const c = $("loss-chart"), ctx = c.getContext("2d"), pts = state.points;
  c.setAttribute("data-points", String(pts.length));
  const W = c.width, H = c.height, padL = 48, padB = 22, padT = 8, padR = 8;
  ctx.clearRect(0, 0, W, H);
  ctx.font = "11px system-ui, sans-serif"; ctx.fillStyle = "#5b6673";
  ctx.strokeStyle = "#d9dee4"; ctx.lineWidth = 1;
  ctx.strokeRect(padL, padT, W - padL - padR, H - padT - padB);
  if (!pts.length) { ctx.fillText("rL appears here while training", padL + 10, H / 2); return; }
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const xmax = Math.max(Number($("iterations").value) || 1, ...xs);
  const ymax = Math.max(...ys) * 1.05 || 1, ymin = 0;
  const X = (v) => padL + (W - padL - padR) * v / xmax;
  const Y = (v) => padT + (H - padT - padB) * (1 - (v - ymin) / (ymax - ymin));
  for (let k = 0; k <= 4; k++) {
    const v = ymin + (ymax - ymin) * k / 4;
    ctx.fillText(v.toFixed(3), 4, Y(v) + 4);
    ctx.beginPath(); ctx.moveTo(padL, Y(v)); ctx.lineTo(W - padR, Y(v)); ctx.stroke();
  }
  ctx.fillText("0", padL, H - 6); ctx.fillText(String(xmax), W - padR - 30, H - 6);
  ctx.fillText("iteration", W / 2 - 20, H - 6);
  ctx.strokeStyle = "#2464a8"; ctx.lineWidth = 2; ctx.beginPath();
  pts.forEach((p, k) => (k ? ctx.lineTo(X(p[0]), Y(p[1])) : ctx.moveTo(X(p[0]), Y(p[1]))));
  ctx.stroke();
}
drawChart();

function renderDiagnostics(d) {
  const body = $("diagnostics").querySelector("tbody");
  body.innerHTML = "";
  const head = el("tr");
  ["layer", "mean |δ|", "saturated", "dead"].forEach((t) => head.append(el("th", null, t)));
  body.append(head);
  Object.entries(d).forEach(([layer, m]) => {
    const tr = el("tr");
    const pct = (v) => (v === undefined ? "–" : `${(100 * v).toFixed(1)} %`);
    [layer, fmt(m.delta), pct(m.saturated), pct(m.dead)].forEach((t) => tr.append(el("td", null, t)));
    body.append(tr);
  });
}

// ------------------------------------------------------------------ start
(async () => {
  const r = await api("/api/info");
  if (!r) return;
  const m = r.networks.main;
  $("main-name").textContent = `model: ${m.spec}, ${m.activation} (${m.source})`;
})();
