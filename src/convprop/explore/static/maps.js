// convprop explore: drawing helpers shared by app.js (colour scale, map canvases, hover
// tips).  Loaded first; classic script, so its functions are globals.
"use strict";

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ colour scales
function diverging(v, max) {
  // blue (negative) - near white (0) - red (positive), v / max in [-1, 1]
  const t = max > 0 ? Math.max(-1, Math.min(1, v / max)) : 0;
  const w = [247, 247, 247], p = [178, 24, 43], n = [33, 102, 172];
  const c = t >= 0 ? p : n, a = Math.abs(t);
  return [0, 1, 2].map((i) => Math.round(w[i] + (c[i] - w[i]) * a));
}

function maxAbs(arr) {
  let m = 0;
  const walk = (a) => {
    if (Array.isArray(a)) a.forEach(walk); else if (Math.abs(a) > m) m = Math.abs(a);
  };
  walk(arr);
  return m;
}

function fmt(v) {
  if (v === null || v === undefined) return "–";
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a >= 0.01 && a < 1000 ? v.toFixed(4) : v.toExponential(2);
}

// A 2-D array as a canvas, each value a pixel, shown `zoom` times larger.
function mapCanvas(map, max, zoom, grey) {
  const h = map.length, w = map[0].length;
  const c = document.createElement("canvas");
  c.width = w; c.height = h;
  c.style.width = `${w * zoom}px`; c.style.height = `${h * zoom}px`;
  const ctx = c.getContext("2d"), img = ctx.createImageData(w, h);
  for (let r = 0; r < h; r++) {
    for (let q = 0; q < w; q++) {
      const v = map[r][q], k = 4 * (r * w + q);
      const rgb = grey ? [v * 255, v * 255, v * 255] : diverging(v, max);
      img.data[k] = rgb[0]; img.data[k + 1] = rgb[1]; img.data[k + 2] = rgb[2];
      img.data[k + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
  return c;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function scaleBadge(max) {
  const s = el("span", "scale");
  s.append(`−${fmt(max)}`, el("i"), `+${fmt(max)}`);
  return s;
}

function zoomFor(h, target) { return Math.max(1, Math.floor(target / h)); }

// ------------------------------------------------------------------ hover tips
const tip = $("tip");
function hoverable(canvas, describe) {
  canvas.addEventListener("mousemove", (ev) => {
    const r = canvas.getBoundingClientRect();
    const row = Math.floor((ev.clientY - r.top) / r.height * canvas.height);
    const col = Math.floor((ev.clientX - r.left) / r.width * canvas.width);
    if (row < 0 || col < 0 || row >= canvas.height || col >= canvas.width) return;
    tip.innerHTML = "";
    describe(row, col).forEach((line, i) => {
      const d = el("div", null, line);
      if (i === 0) d.style.fontWeight = "600";
      tip.append(d);
    });
    tip.hidden = false;
    tip.style.left = `${Math.min(ev.clientX + 14, window.innerWidth - 390)}px`;
    tip.style.top = `${ev.clientY + 14}px`;
  });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
}
