"""The live page that ``jax-pccl master --http-port`` serves at ``/``: one
HTML file whose script polls ``/status.json`` every second and draws the run
(peers with heartbeat ages and throughput over the last minutes, groups with
their ring order, the recent joins and drops with their reasons). No assets
from elsewhere: it works on a machine without internet access."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>jax_pccl master</title>
<style>
 body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
 h1 { font-size: 1.3em; margin: 0 0 .2em; } h2 { font-size: 1.05em; margin: 1.2em 0 .3em; }
 table { border-collapse: collapse; } td, th { padding: .2em .8em; border-bottom: 1px solid #ddd; text-align: left; }
 th { background: #f4f4f4; } .num { text-align: right; font-variant-numeric: tabular-nums; }
 .late { color: #b00; font-weight: bold; } .pending { color: #a60; } #error { color: #b00; }
 code { font-size: 12px; } canvas { vertical-align: middle; }
</style></head>
<body>
<h1>jax_pccl master <span id="address"></span></h1>
<div id="summary">loading&hellip;</div><div id="error"></div>
<h2>Groups</h2>
<table id="groups"><thead><tr><th>group</th><th>epoch</th><th>ring</th><th>pending</th>
<th>shared-state revision</th><th>ring order</th></tr></thead><tbody></tbody></table>
<h2>Peers</h2>
<table id="peers"><thead><tr><th>peer</th><th>address</th><th>group</th><th>state</th>
<th>heard</th><th>collectives</th><th>failed</th><th>MB/s</th><th>throughput (last 2 min)</th>
</tr></thead><tbody></tbody></table>
<h2>Recent events</h2>
<table id="events"><thead><tr><th>when</th><th>what</th></tr></thead><tbody></tbody></table>
<script>
"use strict";
const history = {};  // peer id -> recent bytes_per_s samples
const HISTORY = 120;
function cell(row, text, cls) { const td = row.insertCell(); td.textContent = text; if (cls) td.className = cls; return td; }
function spark(values) {
  const c = document.createElement("canvas"); c.width = 160; c.height = 24;
  const g = c.getContext("2d"), top = Math.max(1, ...values);
  g.strokeStyle = "#36c"; g.beginPath();
  values.forEach((v, i) => { const x = i * (c.width - 1) / (HISTORY - 1), y = c.height - 1 - v / top * (c.height - 2);
    i ? g.lineTo(x, y) : g.moveTo(x, y); });
  g.stroke(); return c;
}
function render(s) {
  document.getElementById("address").textContent = s.address;
  document.getElementById("summary").textContent =
    `up ${s.uptime_s.toFixed(0)} s · world size ${s.world_size} · authentication ${s.authentication}` +
    ` · ${s.auth_refusals} refused · ${s.open_connections} connections`;
  const groups = document.querySelector("#groups tbody"); groups.replaceChildren();
  for (const g of s.groups) {
    const r = groups.insertRow(); r.dataset.group = g.group;
    cell(r, g.group); cell(r, g.epoch, "num"); cell(r, g.world_size, "num"); cell(r, g.pending, "num");
    cell(r, g.shared_state_revision === null ? "-" : g.shared_state_revision, "num");
    cell(r, g.ring.join(" \\u2192 ") + (g.optimized ? "  (optimized)" : ""));
  }
  const peers = document.querySelector("#peers tbody"); peers.replaceChildren();
  for (const p of s.peers) {
    const h = history[p.id] = (history[p.id] || []).concat([p.bytes_per_s]).slice(-HISTORY);
    const r = peers.insertRow(); r.dataset.peer = p.id;
    cell(r, p.id); cell(r, p.address); cell(r, p.group, "num"); cell(r, p.state, p.state === "pending" ? "pending" : "");
    cell(r, p.heard_s_ago < 0 ? "-" : p.heard_s_ago.toFixed(1) + " s ago", p.heard_s_ago > 2 ? "num late" : "num");
    cell(r, p.collectives_done, "num"); cell(r, p.collectives_failed, "num");
    cell(r, (p.bytes_per_s / 1e6).toFixed(2), "num"); r.insertCell().appendChild(spark(h));
  }
  const events = document.querySelector("#events tbody"); events.replaceChildren();
  for (const e of s.events.slice().reverse()) {
    const r = events.insertRow(); cell(r, e.s_ago.toFixed(1) + " s ago", "num"); cell(r, e.text);
  }
  document.body.dataset.updated = Date.now();
}
async function poll() {
  try {
    const reply = await fetch("status.json", {cache: "no-store"});
    render(await reply.json());
    document.getElementById("error").textContent = "";
  } catch (err) {
    document.getElementById("error").textContent = "master unreachable: " + err;
  }
}
poll(); setInterval(poll, 1000);
</script></body></html>
"""
