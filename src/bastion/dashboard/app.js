// The bastion live dashboard: polls /admin/live once a second and draws SVG charts. No libraries,
// no external requests: every asset comes from the admin listener.
"use strict";
const NS = "http://www.w3.org/2000/svg";
const CLASS_COLOURS = {"2xx": "#3fb950", "3xx": "#58a6ff", "4xx": "#d29922", "5xx": "#f85149"};
const PALETTE = ["#f85149", "#d29922", "#a371f7", "#58a6ff", "#3fb950", "#db61a2", "#79c0ff", "#e3b341"];
let token = sessionStorage.getItem("bastion-admin-token") || "";
let timer = null;

function el(name, attrs, parent) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}
function clear(svg) { while (svg.firstChild) svg.removeChild(svg.firstChild); }
function text(parent, x, y, value, anchor) {
  const t = el("text", {x, y, "text-anchor": anchor || "start"}, parent);
  t.textContent = value;
  return t;
}
function legend(id, entries) {
  const p = document.getElementById(id);
  p.textContent = "";
  for (const [name, colour] of entries) {
    const i = document.createElement("i");
    i.style.background = colour;
    p.appendChild(i);
    p.appendChild(document.createTextNode(name));
  }
}

function drawRate(data) {
  const svg = document.getElementById("rate");
  clear(svg);
  const W = 720, H = 160, left = 34, n = data.series.length;
  const max = Math.max(1, ...data.series.map(s => s.total));
  const x = i => left + (W - left) * i / Math.max(1, n - 1);
  const y = v => H - (H - 10) * v / max;
  for (const frac of [0, 0.5, 1]) {
    el("line", {x1: left, x2: W, y1: y(max * frac), y2: y(max * frac), stroke: "#263040"}, svg);
    text(svg, left - 4, y(max * frac) + 4, Math.round(max * frac), "end");
  }
  const base = new Array(n).fill(0);
  for (const cls of ["2xx", "3xx", "4xx", "5xx"]) {
    const top = data.series.map((s, i) => base[i] + (s.classes[cls] || 0));
    if (top.every((v, i) => v === base[i])) continue;
    let d = `M${x(0)},${y(top[0])}`;
    for (let i = 1; i < n; i++) d += `L${x(i)},${y(top[i])}`;
    for (let i = n - 1; i >= 0; i--) d += `L${x(i)},${y(base[i])}`;
    el("path", {d: d + "Z", fill: CLASS_COLOURS[cls], "fill-opacity": 0.75, "data-class": cls}, svg);
    top.forEach((v, i) => { base[i] = v; });
  }
  text(svg, left, H + 16, `-${data.seconds}s`);
  text(svg, W, H + 16, "now", "end");
  const last = data.series.slice(-5).reduce((a, s) => a + s.total, 0) / 5;
  document.getElementById("rps").textContent = `${last.toFixed(1)}/s`;
  legend("rate-legend", Object.entries(CLASS_COLOURS));
}

function drawMix(data) {
  const svg = document.getElementById("mix");
  clear(svg);
  const totals = {};
  for (const s of data.series) for (const [k, v] of Object.entries(s.classes)) totals[k] = (totals[k] || 0) + v;
  const sum = Object.values(totals).reduce((a, b) => a + b, 0);
  if (!sum) { text(svg, 110, 115, "no traffic yet", "middle"); legend("mix-legend", []); return; }
  let angle = -Math.PI / 2;
  for (const cls of ["2xx", "3xx", "4xx", "5xx"]) {
    const v = totals[cls] || 0;
    if (!v) continue;
    const a2 = angle + 2 * Math.PI * v / sum;
    const large = a2 - angle > Math.PI ? 1 : 0;
    const p = (a, r) => `${110 + r * Math.cos(a)},${110 + r * Math.sin(a)}`;
    const d = v === sum
      ? `M${p(0, 100)}A100,100 0 1 1 ${p(Math.PI, 100)}A100,100 0 1 1 ${p(0, 100)}M${p(0, 60)}A60,60 0 1 0 ${p(Math.PI, 60)}A60,60 0 1 0 ${p(0, 60)}Z`
      : `M${p(angle, 100)}A100,100 0 ${large} 1 ${p(a2, 100)}L${p(a2, 60)}A60,60 0 ${large} 0 ${p(angle, 60)}Z`;
    el("path", {d, fill: CLASS_COLOURS[cls], "fill-rule": "evenodd", "data-class": cls}, svg);
    angle = a2;
  }
  text(svg, 110, 116, String(sum), "middle").setAttribute("class", "big");
  legend("mix-legend", Object.entries(CLASS_COLOURS).filter(([c]) => totals[c])
    .map(([c, col]) => [`${c} ${Math.round(100 * totals[c] / sum)}%`, col]));
}

function drawRejections(data) {
  const svg = document.getElementById("rejections");
  clear(svg);
  const W = 720, H = 140, left = 34, step = 5;
  const groups = [];
  for (let i = 0; i < data.series.length; i += step) {
    const g = {};
    for (const s of data.series.slice(i, i + step)) for (const [k, v] of Object.entries(s.rejections)) g[k] = (g[k] || 0) + v;
    groups.push(g);
  }
  const max = Math.max(1, ...groups.map(g => Object.values(g).reduce((a, b) => a + b, 0)));
  const bw = (W - left) / groups.length;
  const colour = {};
  data.policies.forEach((p, i) => { colour[p] = PALETTE[i % PALETTE.length]; });
  groups.forEach((g, i) => {
    let base = H;
    for (const p of data.policies) {
      const v = g[p] || 0;
      if (!v) continue;
      const h = (H - 10) * v / max;
      el("rect", {x: left + i * bw + 1, y: base - h, width: Math.max(1, bw - 2), height: h, fill: colour[p],
                  "data-policy": p}, svg);
      base -= h;
    }
  });
  text(svg, left - 4, 14, max, "end");
  text(svg, left - 4, H, "0", "end");
  legend("rej-legend", data.policies.map(p => [p, colour[p]]));
}

function drawBars(id, rows, format) {
  const svg = document.getElementById(id);
  clear(svg);
  if (!rows.length) { text(svg, 170, 100, "nothing yet", "middle"); return; }
  const max = Math.max(...rows.map(r => r[1]));
  rows.slice(0, 8).forEach(([label, value, extra], i) => {
    const y = 6 + i * 24;
    el("rect", {x: 0, y, width: 340, height: 18, fill: "#20293a", rx: 3}, svg);
    const w = Math.max(2, 340 * (format ? extra : value / max));
    el("rect", {x: 0, y, width: w, height: 18, fill: format ? (extra < 0.2 ? "#f85149" : "#3fb950") : "#58a6ff",
                "fill-opacity": 0.7, rx: 3}, svg);
    text(svg, 6, y + 13, `${label}`).setAttribute("class", "label");
    text(svg, 334, y + 13, format ? format(value) : String(value), "end");
  });
}

function drawEvents(data) {
  const body = document.querySelector("#events tbody");
  body.textContent = "";
  for (const e of data.events.slice(0, 25)) {
    const tr = document.createElement("tr");
    const cells = [new Date(e.time * 1000).toLocaleTimeString(), e.status, e.policy, `${e.method} ${e.path}`, e.client, e.reason];
    cells.forEach((value, i) => {
      const td = document.createElement("td");
      td.textContent = value;  // text, never HTML: paths and reasons come from clients
      if (i === 1) td.className = `s${String(e.status)[0]}`;
      tr.appendChild(td);
    });
    body.appendChild(tr);
  }
}

async function poll() {
  const status = document.getElementById("status");
  try {
    const r = await fetch("/admin/live", {headers: {Authorization: `Bearer ${token}`}, cache: "no-store"});
    if (r.status === 401) { status.textContent = "the admin token was refused"; stop(); return; }
    if (!r.ok) { status.textContent = `admin API answered ${r.status}`; return; }
    const data = await r.json();
    drawRate(data); drawMix(data); drawRejections(data);
    drawBars("clients", data.top_clients);
    drawBars("limited", data.top_limited);
    drawBars("headroom", data.headroom.map(h => [h.route, h.remaining, h.of ? h.remaining / h.of : 0]),
             v => `${v} left`);
    drawEvents(data);
    const workers = data.workers ? ` · ${data.workers} worker${data.workers > 1 ? "s" : ""}` : "";
    status.textContent = `live · updated ${new Date(data.now * 1000).toLocaleTimeString()}${workers}`;
    document.body.dataset.updated = String(data.now);
  } catch (err) {
    status.textContent = "the admin listener is unreachable";
  }
}
function stop() { if (timer) clearInterval(timer); timer = null; }
function start() { stop(); poll(); timer = setInterval(poll, 1000); }

document.getElementById("auth").addEventListener("submit", ev => {
  ev.preventDefault();
  token = document.getElementById("token").value.trim();
  sessionStorage.setItem("bastion-admin-token", token);
  start();
});
if (token) start();
