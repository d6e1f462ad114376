// The netbroker console: the state /api/state (and the first Server-Sent Event) gives,
// kept current by the events /api/events pushes, drawn as plain DOM and SVG.
"use strict";

const HISTORY = 100;
const state = { layout: { groups: [], brokers: [] }, brokers: {}, groups: {}, log: [] };
let selected = null;
let browsing = null; // {broker, queue}

// ------------------------------------------------------------------ helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function num(n) { return n === null || n === undefined ? "-" : n.toLocaleString("en"); }
function rate(r) { return r === null || r === undefined ? "-" : r.toFixed(1) + "/s"; }
function clock(t) { return new Date(t * 1000).toLocaleTimeString("en-GB"); }
function table(head, rows, numeric) {
  return el("table", {},
    el("thead", {}, el("tr", {}, head.map((h, i) => el("th", { class: numeric.includes(i) ? "num" : "" }, h)))),
    el("tbody", {}, rows));
}

// ------------------------------------------------------------------ the graph

function roleBadge(role) { return el("span", { class: "role " + role }, role); }

function renderGroups() {
  const root = document.getElementById("groups");
  root.replaceChildren(...state.layout.groups.map(g => {
    const gs = state.groups[g.name] || {};
    const meta = [];
    if (g.election) {
      meta.push(gs.master ? "master " + gs.master : "no master");
      if (gs.epoch !== null && gs.epoch !== undefined) meta.push("epoch " + gs.epoch);
      if (gs.in_sync && gs.in_sync.length) meta.push("in-sync " + gs.in_sync.join(","));
    } else {
      meta.push("standalone");
    }
    return el("div", { class: "group", "data-group": g.name },
      el("h2", {}, "group " + g.name),
      el("div", { class: "meta" }, meta.join(" · ")),
      el("div", { class: "brokers" }, g.brokers.map(name => brokerBox(name))));
  }));
  renderArrows();
}

function brokerBox(name) {
  const b = state.brokers[name] || { name, role: "unknown" };
  const pos = b.group_status && b.group_status.position !== null ? "position " + b.group_status.position : "";
  const box = el("div", {
      class: "broker" + (selected === name ? " selected" : ""),
      "data-broker": name, "data-role": b.role, tabIndex: 0, title: b.detail || "" },
    el("div", { class: "name" }, name),
    roleBadge(b.role),
    el("div", { class: "addr" }, b.address || ""),
    pos ? el("div", { class: "pos" }, pos) : null);
  box.addEventListener("click", () => select(name));
  box.addEventListener("keydown", e => { if (e.key === "Enter") select(name); });
  return box;
}

function renderArrows() {
  const svgns = "http://www.w3.org/2000/svg";
  const g = document.getElementById("arrow-lines");
  const origin = document.getElementById("cluster").getBoundingClientRect();
  const box = name => {
    const node = document.querySelector(`.broker[data-broker="${CSS.escape(name)}"]`);
    return node ? node.getBoundingClientRect() : null;
  };
  const groupBox = name => {
    const node = document.querySelector(`.group[data-group="${CSS.escape(name)}"]`);
    return node.getBoundingClientRect();
  };
  const lines = [];
  for (const b of Object.values(state.brokers)) {
    for (const br of b.bridges || []) {
      if (br.inbound || !br.target) continue;
      const from = box(b.name), to = box(br.target);
      if (!from || !to) continue;
      // An arc over the boxes for a bridge to the right, under them for one to the
      // left: the two directions between a pair stay apart, and neither crosses the
      // brokers in between.
      const rightward = to.left + to.width / 2 >= from.left + from.width / 2;
      const x1 = from.left + from.width / 2 - origin.left + (rightward ? 8 : -8);
      const x2 = to.left + to.width / 2 - origin.left + (rightward ? -8 : 8);
      const y1 = (rightward ? from.top : from.bottom) - origin.top;
      const y2 = (rightward ? to.top : to.bottom) - origin.top;
      // The apex clears both brokers' group boxes.
      const fromGroup = groupBox(b.group), toGroup = groupBox(br.target_group);
      const apex = rightward
        ? Math.min(fromGroup.top, toGroup.top) - origin.top - 18
        : Math.max(fromGroup.bottom, toGroup.bottom) - origin.top + 18;
      // A quadratic curve's apex lies halfway between its ends' middle and its control point.
      const cy = 2 * apex - (y1 + y2) / 2;
      const up = br.state === "up";
      const line = document.createElementNS(svgns, "path");
      Object.entries({ d: `M ${x1} ${y1} Q ${(x1 + x2) / 2} ${cy} ${x2} ${y2}`, class: up ? "up" : "down",
                       "marker-end": `url(#head-${up ? "up" : "down"})` })
        .forEach(([k, v]) => line.setAttribute(k, v));
      line.setAttribute("data-bridge", `${b.name}->${br.target}`);
      line.setAttribute("data-state", br.state);
      const label = document.createElementNS(svgns, "text");
      label.setAttribute("x", (x1 + x2) / 2);
      // The apex of a quadratic curve is halfway between its ends and its control point.
      label.setAttribute("y", apex + (rightward ? -5 : 13));
      label.setAttribute("text-anchor", "middle");
      label.textContent = `${b.name}→${br.target} ${br.state}` + (br.rate !== null ? " " + rate(br.rate) : "");
      const title = document.createElementNS(svgns, "title");
      title.textContent = br.label + (br.error ? " — " + br.error : "");
      line.append(title);
      lines.push(line, label);
    }
  }
  g.replaceChildren(...lines);
}

// ------------------------------------------------------------------ one broker

function select(name) {
  selected = name;
  document.querySelectorAll(".broker").forEach(n => n.classList.toggle("selected", n.dataset.broker === name));
  renderDetail();
}

function renderDetail() {
  const root = document.getElementById("detail");
  if (!selected) return;
  const b = state.brokers[selected];
  if (!b) return;
  const parts = [el("h2", {}, "broker " + b.name + " ", roleBadge(b.role)),
                 el("p", { class: "hint" }, `group ${b.group} · ${b.address}` + (b.detail ? " · " + b.detail : ""))];
  const notice = document.getElementById("notice");
  parts.push(notice || el("p", { id: "notice" }));

  const gs = state.groups[b.group];
  if (gs && gs.members.length > 1) {
    parts.push(el("h3", {}, "group " + b.group + (gs.epoch !== null ? ", epoch " + gs.epoch : "")),
      table(["member", "role", "in sync", "position"], gs.members.map(m => el("tr", { "data-member": m.name },
        el("td", {}, m.name), el("td", {}, roleBadge(m.role)),
        el("td", {}, gs.in_sync.includes(m.name) ? "yes" : "no"),
        el("td", { class: "num" }, num(m.position)))), [3]));
  }
  if (b.queues === null) {
    parts.push(b.queues_error
      ? el("p", { class: "error" }, "queues not listed: " + b.queues_error)
      : el("p", { class: "hint" }, b.role === "down" ? "Not answering." : "A " + b.role + " holds no queues for clients."));
  } else {
    parts.push(el("h3", {}, "queues"));
    parts.push(b.queues.length === 0 ? el("p", { class: "hint" }, "no queues") :
      table(["queue", "depth", "pending", "in flight", "consumers", "in", "out", ""],
        b.queues.map(q => el("tr", { "data-queue": q.name },
          el("td", { class: "mono" }, q.name),
          el("td", { class: "num depth" }, num(q.depth)),
          el("td", { class: "num" }, num(q.pending)),
          el("td", { class: "num" }, num(q.in_flight)),
          el("td", { class: "num" }, num(q.consumers)),
          el("td", { class: "num" }, rate(q.in_rate)),
          el("td", { class: "num" }, rate(q.out_rate)),
          el("td", {},
            el("button", { class: "browse", type: "button", "data-queue": q.name }, "browse"), " ",
            el("button", { class: "purge danger", type: "button", "data-queue": q.name }, "purge")))),
        [1, 2, 3, 4, 5, 6]));
    parts.push(el("h3", {}, "topics"));
    parts.push(!b.topics || b.topics.length === 0 ? el("p", { class: "hint" }, "no subscriptions") :
      table(["topic", "subscriptions", "active", "depth", "in flight", "in"],
        b.topics.map(t => el("tr", { "data-topic": t.name },
          el("td", { class: "mono" }, t.name), el("td", { class: "num" }, num(t.subscriptions)),
          el("td", { class: "num" }, num(t.active)), el("td", { class: "num" }, num(t.depth)),
          el("td", { class: "num" }, num(t.in_flight)), el("td", { class: "num" }, rate(t.in_rate)))),
        [1, 2, 3, 4, 5]));
  }
  if (b.bridges.length) {
    parts.push(el("h3", {}, "bridges"),
      table(["bridge", "to", "state", "forwarded", "rate", "error"], b.bridges.map(br => el("tr", { "data-bridge": br.label },
        el("td", { class: "mono" }, br.label),
        el("td", {}, br.peer || br.target || "-"),
        el("td", {}, br.state),
        el("td", { class: "num" }, num(br.inbound ? br.received : br.forwarded)),
        el("td", { class: "num" }, rate(br.rate)),
        el("td", { class: "error" }, br.error || ""))), [3, 4]));
  }
  root.replaceChildren(...parts);
}

function say(text, error) {
  const n = document.getElementById("notice");
  if (n) { n.textContent = text; n.className = error ? "error" : ""; }
}

async function call(url, options) {
  const r = await fetch(url, options);
  const data = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}

async function purge(queue) {
  const broker = selected;
  if (!window.confirm(`Purge every pending message of ${queue} on ${broker}? This cannot be undone.`)) return;
  try {
    const data = await call(`/api/brokers/${encodeURIComponent(broker)}/purge`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Netbroker-Console": "1" },
      body: JSON.stringify({ queue }),
    });
    say(`purged ${num(data.purged)} message${data.purged === 1 ? "" : "s"} from ${queue} on ${broker}`);
    if (browsing && browsing.broker === broker && browsing.queue === queue) browse(queue);
  } catch (e) {
    say(`purge of ${queue} on ${broker} failed: ${e.message}`, true);
  }
}

async function browse(queue) {
  const broker = selected;
  const root = document.getElementById("messages");
  browsing = { broker, queue };
  root.hidden = false;
  try {
    const data = await call(`/api/brokers/${encodeURIComponent(broker)}/queues/${encodeURIComponent(queue)}/messages?limit=50`);
    const rows = data.messages.map(m => el("tr", { "data-message": m.id },
      el("td", { class: "mono" }, m.id),
      el("td", { class: "num" }, m.priority),
      el("td", { class: "num" }, m.redelivery_count),
      el("td", {}, m.persistent ? "yes" : "no"),
      el("td", { class: "mono" }, Object.entries(m.headers).map(([k, v]) => `${k}=${v}`).join(", ") || "-"),
      el("td", { class: "mono" }, m.preview + (m.truncated ? ` … (${num(m.size)} bytes)` : ""))));
    root.replaceChildren(
      el("h2", {}, `${queue} on ${broker}: ${data.messages.length ? "the first " + data.messages.length + " pending" : "no pending messages"}`,
        " ", el("button", { type: "button", id: "close-messages" }, "close")),
      data.messages.length ? table(["id", "priority", "redelivered", "persistent", "headers", "body"], rows, [1, 2]) : "");
  } catch (e) {
    root.replaceChildren(el("p", { class: "error" }, `browse of ${queue} on ${broker} failed: ${e.message}`),
                         el("button", { type: "button", id: "close-messages" }, "close"));
  }
}

document.addEventListener("click", e => {
  const t = e.target;
  if (!(t instanceof HTMLElement)) return;
  if (t.matches("button.purge")) purge(t.dataset.queue);
  else if (t.matches("button.browse")) browse(t.dataset.queue);
  else if (t.id === "close-messages") { browsing = null; document.getElementById("messages").hidden = true; }
});

// ------------------------------------------------------------------ history

function logLine(e) {
  const text = e.kind === "role"
    ? `${e.broker} (${e.group}): ${e.from} → ${e.to}` + (e.detail ? ", " + e.detail : "")
    : `${e.broker} (${e.group}): bridge ${e.bridge} ${e.state}: ${e.error}`;
  return el("li", { class: "log-" + e.kind }, `[${clock(e.time)}] ${text}`);
}

function renderLog() {
  const root = document.getElementById("log");
  root.replaceChildren(...state.log.slice().reverse().map(logLine));
}

// ------------------------------------------------------------------ events

function connect() {
  const conn = document.getElementById("conn");
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => { conn.textContent = "live"; conn.className = "conn live"; });
  source.addEventListener("error", () => { conn.textContent = "reconnecting…"; conn.className = "conn down"; });
  source.addEventListener("state", m => {
    Object.assign(state, JSON.parse(m.data));
    document.getElementById("source").textContent = state.layout.source;
    if (!selected && state.layout.brokers.length) selected = state.layout.brokers[0].name;
    renderGroups(); renderDetail(); renderLog();
  });
  source.addEventListener("broker", m => {
    const b = JSON.parse(m.data);
    state.brokers[b.name] = b;
    const old = document.querySelector(`.broker[data-broker="${CSS.escape(b.name)}"]`);
    if (old) old.replaceWith(brokerBox(b.name));
    renderArrows();
    if (b.name === selected) renderDetail();
  });
  source.addEventListener("group", m => {
    const g = JSON.parse(m.data);
    state.groups[g.name] = g;
    renderGroups();
    if (selected && state.brokers[selected] && state.brokers[selected].group === g.name) renderDetail();
  });
  source.addEventListener("log", m => {
    state.log.push(JSON.parse(m.data));
    if (state.log.length > HISTORY) state.log.splice(0, state.log.length - HISTORY);
    renderLog();
  });
}

window.addEventListener("resize", renderArrows);
connect();
