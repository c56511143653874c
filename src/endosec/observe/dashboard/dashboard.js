// endosec live dashboard: polls the admin listener every second and redraws in place.
// Everything shown comes from the gateway (client paths included), so text is only ever set
// through textContent, never parsed as HTML.
"use strict";

const POLL_MS = 1000;
const RISK_REFRESH_MS = 15000;
const TOKEN_KEY = "endosec.admin-token";
const READ_KEY = "endosec.read-token";
const MAX_TIMELINE = 300;
const MAX_HISTORY = 8;
const SVG = "http://www.w3.org/2000/svg";

// Which state (or mark) an event puts an executor in, for the per-card history.
const HISTORY = {
  quarantine: "quarantined",
  cleanse: "cleansing",
  cleansed: "cleansed",
  activated: "active",
  rotation: "rotated out",
  unhealthy: "unhealthy",
  "cleanse-failed": "failed",
  "activate-failed": "failed",
  "start-failed": "failed",
};

const st = {
  token: null,
  since: null,
  seen: new Set(),
  history: {},
  cards: new Map(),
  activeKey: null,
  riskAt: 0,
  risk: null,
  status: null,
  series: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

function clock(ts) {
  const d = new Date(ts * 1000);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function probability(p) {
  if (p === null || p === undefined) return "–";
  if (p === 0) return "0";
  if (p >= 0.001) return `${(p * 100).toFixed(p >= 0.1 ? 1 : 2)} %`;
  const exp = Math.floor(Math.log10(p));
  const sup = String(exp).replace(/[-0-9]/g, (c) => "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"["-0123456789".indexOf(c)]);
  return `${(p / 10 ** exp).toFixed(1)} × 10${sup}`;
}

// Reads carry the admin or the read token, when one was given (a gateway without
// admin.public_read refuses them otherwise).
async function getJSON(path, headers) {
  const bearer = st.token || sessionStorage.getItem(READ_KEY);
  const auth = bearer ? { Authorization: `Bearer ${bearer}` } : {};
  const response = await fetch(path, { cache: "no-store", headers: headers || auth });
  if (response.status === 401 && !headers) throw new Error("reads need the read or admin token");
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

// ---- events: the timeline and each executor's state history --------------------------------

function eventWho(e) {
  if (e.event === "dissent" || e.event === "no-quorum" || e.event === "all-failed") {
    return [...(e.dissented || []), ...(e.failed || [])];
  }
  if (e.event === "immune-memory") return e.implicated || [];
  return e.executor ? [e.executor] : [];
}

function eventText(e) {
  const req = e.method ? `${e.method} ${e.path}` : "";
  switch (e.event) {
    case "dissent": {
      const parts = [];
      if ((e.dissented || []).length) parts.push(`${e.dissented.join(", ")} disagreed`);
      if ((e.failed || []).length) parts.push(`${e.failed.join(", ")} failed`);
      return `${req}: ${parts.join("; ")}; ${(e.agreed || []).join(", ")} agreed`;
    }
    case "no-quorum":
    case "all-failed":
      return `${req}: ${e.reason || "no value reached the quorum"} (client got 502)`;
    case "quarantine": return e.reason || "removed from voting";
    case "cleanse": return "restarting from its pristine image";
    case "cleansed": return "clean; missed writes replayed";
    case "activated": return "voting";
    case "rotation": return e.reason || "rotated out of the active set";
    case "alert": return e.message || "";
    case "admin": return `operator asked to ${e.action}`;
    case "unhealthy": return "health check failed";
    case "serving": return `clients on ${e.url}`;
    case "config-loaded": return `executors: ${(e.executors || []).join(", ")}`;
    case "immune-memory": return `remembered antigen ${e.id} (${e.features.length} features; response ${e.response})`;
    case "immune-match": return `${req}: matched memory ${e.memory}, met by ${e.response}`;
    case "immune-forgotten": return `memory ${e.id} forgotten after ${e.matches} matches`;
    default: return e.detail || "";
  }
}

function timelineEntry(e) {
  const who = eventWho(e);
  const li = el("li", `ev ev-${e.event}${e.level ? ` level-${e.level}` : ""}`);
  li.dataset.event = e.event;
  li.dataset.executor = who.join(" ");
  li.append(el("time", "ts", clock(e.ts)), el("span", "kind", e.event));
  li.append(el("span", "who", who.join(", ")), el("span", "what", eventText(e)));
  if (e.evidence) {
    const button = el("button", "evidence", "evidence");
    button.type = "button";
    button.dataset.evidence = e.evidence;
    button.addEventListener("click", () => showEvidence(e.evidence, li));
    li.append(button);
  }
  return li;
}

// What the dissenters answered, for the admin only: the server refuses without the token.
async function showEvidence(id, li) {
  const open = li.querySelector("pre.evidence-diff");
  if (open) { open.remove(); return; }
  try {
    const data = await getJSON(`/evidence/${encodeURIComponent(id)}`,
      { Authorization: `Bearer ${st.token}` });
    li.append(el("pre", "evidence-diff", data.diff));
  } catch (err) {
    toast(err.message, "error");
  }
}

function remember(name, label, ts) {
  const list = (st.history[name] = st.history[name] || []);
  list.push({ label, ts });
  if (list.length > MAX_HISTORY) list.splice(0, list.length - MAX_HISTORY);
}

function ingest(events) {
  const timeline = $("timeline");
  let last = st.since;
  const fresh = [];
  for (const e of events) {
    const key = JSON.stringify(e);
    if (st.seen.has(key)) continue;
    fresh.push(e);
    if (last === null || e.ts > last) last = e.ts;
  }
  for (const e of fresh) {
    timeline.prepend(timelineEntry(e));
    if (e.event === "dissent") for (const n of eventWho(e)) remember(n, "dissent", e.ts);
    else if (e.event === "admin") remember(e.executor, `admin: ${e.action}`, e.ts);
    else if (HISTORY[e.event] && e.executor) remember(e.executor, HISTORY[e.event], e.ts);
  }
  while (timeline.childElementCount > MAX_TIMELINE) timeline.lastElementChild.remove();
  // The next poll asks for ts >= last: only events stamped exactly `last` can come again.
  st.seen = new Set([...st.seen, ...fresh.map((e) => JSON.stringify(e))]
    .filter((k) => JSON.parse(k).ts === last));
  st.since = last;
}

// ---- executor cards ---------------------------------------------------------------------

function makeCard(name) {
  const card = el("article", "card");
  card.dataset.executor = name;
  const head = el("header", "card-head");
  const title = el("h3", null, name);
  const badge = el("span", "badge");
  head.append(title, badge);

  const trust = el("div", "trust");
  const bar = el("div", "meter");
  const fill = el("i");
  bar.append(fill);
  const trustValue = el("b");
  trust.append(el("span", "label", "trust"), bar, trustValue);
  const level = el("div", "level");

  const profile = el("ul", "chips profile");
  const counters = el("dl", "counters");

  const spark = el("div", "spark");
  const sparkSvg = svg("svg", { viewBox: "0 0 200 40", preserveAspectRatio: "none",
    role: "img", "aria-label": `${name} latency` });
  const sparkLabel = el("div", "spark-label");
  spark.append(sparkSvg, sparkLabel);

  const history = el("ol", "history");
  const foot = el("footer", "card-foot");
  card.append(head, trust, level, profile, counters, spark, history, foot);
  const refs = { card, badge, fill, trustValue, level, profile, counters, sparkSvg, sparkLabel,
    history, foot, actions: null, profileKey: "" };
  st.cards.set(name, refs);
  $("cards").append(card);
  return refs;
}

function renderProfile(refs, e, shared) {
  const key = `${e.profile.join("|")}#${[...shared].join("|")}`;
  if (key === refs.profileKey) return;
  refs.profileKey = key;
  refs.profile.replaceChildren(...e.profile.map((c) => {
    const chip = el("li", shared.has(c) ? "chip shared" : "chip", c);
    chip.title = shared.has(c) ? "shared with another active executor (common mode)" : "";
    return chip;
  }));
}

function renderCounters(refs, counters) {
  const order = ["dissents", "quarantines", "cleanses", "activations", "rotations"];
  refs.counters.replaceChildren(...order.filter((k) => k in counters).map((k) => {
    const box = el("div", counters[k] && k !== "activations" ? "counter hot" : "counter");
    box.append(el("dt", null, k), el("dd", null, counters[k]));
    return box;
  }));
}

function renderSpark(refs, points) {
  const values = (points || []).slice(-60);
  const nums = values.map((p) => p.mean_ms).filter((v) => v !== null);
  refs.sparkSvg.replaceChildren();
  if (!nums.length) {
    refs.sparkLabel.replaceChildren(el("span", "muted", "latency: waiting for requests"));
    return;
  }
  const peak = Math.max(...nums);
  const step = 200 / Math.max(values.length - 1, 1);
  const xy = (p, i) => [i * step, 38 - (p.mean_ms / (peak * 1.15)) * 34];
  let line = "";
  let area = "";
  let first = null;
  let last = null;
  values.forEach((p, i) => {
    if (p.mean_ms === null) { line += " "; return; }  // a quiet second breaks the line
    const [x, y] = xy(p, i);
    line += `${line && !line.endsWith(" ") ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
    area += `${area ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)} `;
    first = first === null ? x : first;
    last = [x, y, p.mean_ms];
  });
  refs.sparkSvg.append(
    svg("path", { d: `${area}L${last[0].toFixed(1)},40 L${first.toFixed(1)},40 Z`, class: "spark-area" }),
    svg("path", { d: line.trim(), class: "spark-line" }),
    svg("circle", { cx: last[0], cy: last[1], r: 2.5, class: "spark-dot" }));
  refs.sparkLabel.replaceChildren(el("span", "spark-now", `${last[2].toFixed(2)} ms`),
    el("span", "muted", ` mean latency · max ${peak.toFixed(2)} ms over ${values.length} s`));
}

function renderHistory(refs, name) {
  const items = (st.history[name] || []).map((h) => {
    const li = el("li", `step step-${h.label.replace(/[^a-z]+/g, "-")}`, h.label);
    li.dataset.state = h.label;
    li.title = clock(h.ts);
    return li;
  });
  if (!items.length) items.push(el("li", "muted", "no state changes yet"));
  refs.history.replaceChildren(...items);
}

function renderActions(refs, name) {
  const want = document.body.dataset.admin === "true";
  if (!want && refs.actions) { refs.actions.remove(); refs.actions = null; }
  if (!want || refs.actions) return;
  const box = el("div", "actions");
  for (const action of ["quarantine", "cleanse", "activate"]) {
    const b = el("button", `act act-${action}`, action);
    b.type = "button";
    b.dataset.action = action;
    b.addEventListener("click", () => act(name, action, b));
    box.append(b);
  }
  refs.actions = box;
  refs.card.append(box);
}

function renderCard(e, active, shared, series) {
  const refs = st.cards.get(e.name) || makeCard(e.name);
  refs.card.dataset.state = e.state;
  refs.card.classList.toggle("voting", active.has(e.name));
  refs.badge.textContent = e.state;
  refs.badge.className = `badge state-${e.state}`;
  refs.fill.style.width = `${Math.round(e.trust * 100)}%`;
  refs.fill.className = e.level === "L0" || e.level === "L1" ? "low" : "";
  refs.trustValue.textContent = e.trust.toFixed(2);
  refs.level.textContent = `${e.level} \u00b7 ${Math.round(e.points)} points \u00b7 identity ${e.identity}`;
  refs.level.className = `level level-${e.level}`;
  refs.level.title = (st.status.levels && st.status.levels[e.level]) || "";
  renderProfile(refs, e, shared);
  renderCounters(refs, e.counters || {});
  renderSpark(refs, series && series.latency ? series.latency[e.name] : null);
  renderHistory(refs, e.name);
  refs.foot.textContent = `pid ${e.pid ?? "–"} · ${e.running ? "running" : "stopped"} · synced to write #${e.synced}`;
  renderActions(refs, e.name);
}

// ---- summary tiles, verdicts, risk --------------------------------------------------------

function renderMeta(s) {
  const items = [["strategy", s.strategy], ["floor", s.floor],
    ["journal", `#${s.journal.head} (${s.journal.kept} kept)`]];
  $("meta").replaceChildren(...items.flatMap(([k, v]) => [el("dt", null, k), el("dd", null, v)]));
}

function renderTiles(s) {
  $("active").replaceChildren(...s.active.map((n) => el("span", "chip on", n)));
  if (!s.active.length) $("active").append(el("span", "chip off", "none voting"));
  const parts = [`${s.active.length} voting of ${s.executors.length}, floor ${s.floor}`];
  if (s.shadows.length) parts.push(`shadowing: ${s.shadows.join(", ")}`);
  const profiles = s.executors.filter((e) => s.active.includes(e.name)).map((e) => e.profile);
  const common = profiles.length > 1
    ? profiles[0].filter((c) => profiles.every((p) => p.includes(c))) : [];
  parts.push(common.length ? `common to all: ${common.join(", ")}` : "no component common to all");
  $("active-note").textContent = parts.join(" · ");
  const sum = (k) => s.executors.reduce((a, e) => a + ((e.counters || {})[k] || 0), 0);
  $("dissent-total").replaceChildren(String(sum("dissents")), el("small", null, " dissents"));
  $("loop-note").textContent =
    `${sum("quarantines")} quarantines · ${sum("cleanses")} cleanses · ${sum("rotations")} rotations`;
}

function renderVerdictBars(series) {
  const bars = $("verdict-bars");
  const points = ((series && series.verdicts) || []).slice(-60);
  bars.replaceChildren();
  const totals = points.map((p) => Object.values(p.outcomes).reduce((a, b) => a + b, 0));
  const top = Math.max(1, ...totals);
  const w = 240 / 60;
  points.forEach((p, i) => {
    const x = (60 - points.length + i) * w;
    const ok = p.outcomes.accepted || 0;
    const bad = totals[i] - ok;
    const hOk = (ok / top) * 34;
    const hBad = (bad / top) * 34;
    if (hOk) bars.append(svg("rect", { x, y: 36 - hOk, width: w - 1, height: hOk, class: p.dissents ? "bar dissent" : "bar ok" }));
    if (hBad) bars.append(svg("rect", { x, y: 36 - hOk - hBad, width: w - 1, height: hBad, class: "bar fail" }));
  });
  const last = points[points.length - 1];
  $("rate").textContent = last ? (totals[totals.length - 1] / (last.dt || 1)).toFixed(1) : "–";
  const acc = points.reduce((a, p) => a + (p.outcomes.accepted || 0), 0);
  const dis = points.reduce((a, p) => a + p.dissents, 0);
  const fail = totals.reduce((a, b) => a + b, 0) - acc;
  $("verdict-note").textContent = `last ${points.length} s: ${acc} accepted · ${dis} dissenting votes · ${fail} failed closed`;
}

function renderVerdicts(s) {
  const list = s.recent_verdicts.slice(-12).reverse().map((v) => {
    const clean = v.outcome === "accepted" && !v.dissented.length && !v.failed.length;
    const li = el("li", clean ? "verdict ok" : v.outcome === "accepted" ? "verdict dissent" : "verdict fail");
    li.append(el("span", "outcome", v.outcome), el("span", "req", `${v.method} ${v.path}`));
    const who = [`${v.agreed.length} agreed`];
    if (v.dissented.length) who.push(`dissent: ${v.dissented.join(", ")}`);
    if (v.failed.length) who.push(`failed: ${v.failed.join(", ")}`);
    li.append(el("span", "votes", who.join(" · ")));
    return li;
  });
  if (!list.length) list.push(el("li", "muted", "no requests yet"));
  $("verdicts").replaceChildren(...list);
}

function renderRisk(r) {
  if (!r) return;
  $("pdefeat").textContent = probability(r.p_defeat);
  const single = Object.entries(r.single || {});
  const best = single.length ? Math.min(...single.map(([, v]) => v)) : null;
  $("risk-note").textContent = r.n
    ? `at least ${r.k} of ${r.n} voters compromised (${r.strategy}), each component ` +
      `exploitable with p = ${r.p} · one executor alone: ${probability(best)}`
    : "no executor is voting";
  const items = (r.contributions || []).filter((c) => c.contribution > 0).map((c) => {
    const li = el("li");
    li.append(el("span", "chip shared", c.component), el("span", "muted", ` in ${c.executors.join(", ")} `),
      el("b", null, `${(c.share * 100).toFixed(0)} %`));
    return li;
  });
  if (!items.length) items.push(el("li", "muted", "no component is shared by the active set"));
  $("contrib").replaceChildren(...items);
}

function renderMemories(immune) {
  const memories = (immune && immune.memories) || [];
  const items = memories.slice().reverse().map((m) => {
    const li = el("li");
    li.dataset.memory = m.id;
    li.append(el("span", "chip", m.id), el("span", "muted",
      ` ${m.response} · implicates ${m.implicated.join(", ") || "nobody"} · seen ${clock(m.seen)} `),
      el("b", null, `${m.matches} matches`));
    return li;
  });
  if (!items.length) {
    items.push(el("li", "muted", immune && !immune.enabled ? "immune memory is off" : "no antigen remembered"));
  }
  $("memories").replaceChildren(...items);
}

function render() {
  const s = st.status;
  renderMeta(s);
  renderTiles(s);
  const active = new Set(s.active);
  const holders = {};
  for (const e of s.executors) {
    if (!active.has(e.name)) continue;
    for (const c of e.profile) holders[c] = (holders[c] || 0) + 1;
  }
  const shared = new Set(Object.keys(holders).filter((c) => holders[c] > 1));
  for (const e of s.executors) renderCard(e, active, shared, st.series);
  renderVerdictBars(st.series);
  renderVerdicts(s);
  renderRisk(st.risk);
  renderMemories(s.immune);
}

function setLive(ok, detail) {
  $("conn").dataset.live = String(ok);
  $("conn-text").textContent = ok ? `live · ${clock(Date.now() / 1000).slice(0, 8)}` : `offline · ${detail}`;
}

async function poll() {
  try {
    const since = st.since === null ? "" : `?since=${st.since}`;
    const [status, events, series] = await Promise.all(
      [getJSON("/status"), getJSON(`/events${since}`), getJSON("/series")]);
    ingest(events);
    st.status = status;
    st.series = series;
    const key = [...status.active].sort().join(",");
    if (key !== st.activeKey || Date.now() - st.riskAt > RISK_REFRESH_MS) {
      st.risk = await getJSON("/quantify");
      st.activeKey = key;
      st.riskAt = Date.now();
    }
    render();
    setLive(true);
  } catch (err) {
    setLive(false, err.message);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

// ---- admin token and actions ----------------------------------------------------------------

let toastTimer = null;
function toast(text, kind) {
  const box = $("toast");
  box.textContent = text;
  box.className = `toast ${kind || ""}`;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, 4000);
}

function setAdmin(token) {
  st.token = token;
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  document.body.dataset.admin = String(Boolean(token));
  $("auth-form").hidden = Boolean(token);
  $("auth-on").hidden = !token;
  for (const [name, refs] of st.cards) renderActions(refs, name);
}

async function unlock(token, quiet) {
  const response = await fetch("/auth", { cache: "no-store", headers: { Authorization: `Bearer ${token}` } });
  if (response.ok) {
    const body = await response.json();
    if (!body.admin) {  // the read token: the page reads, no actions
      sessionStorage.setItem(READ_KEY, token);
      if (!quiet) toast("Read access for this tab (actions need the admin token)", "ok");
      return;
    }
    setAdmin(token);
    if (!quiet) toast("Admin actions unlocked for this tab", "ok");
    return;
  }
  setAdmin(null);
  if (quiet) return;
  toast(response.status === 403 ? "This gateway has no admin token: actions are disabled"
    : "Wrong token", "error");
}

async function act(name, action, button) {
  button.disabled = true;
  try {
    const response = await fetch(`/executors/${encodeURIComponent(name)}/${action}`,
      { method: "POST", headers: { Authorization: `Bearer ${st.token}` } });
    const body = await response.json().catch(() => ({}));
    if (response.status === 401 || response.status === 403) {
      setAdmin(null);
      toast(body.error || "not authorised", "error");
    } else if (response.ok) {
      toast(`${action} ${name}: accepted`, "ok");
    } else {
      toast(body.error || `${action} ${name}: HTTP ${response.status}`, "error");
    }
  } catch (err) {
    toast(`${action} ${name}: ${err.message}`, "error");
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("auth-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = $("token").value.trim();
    $("token").value = "";
    if (token) unlock(token, false).catch((err) => toast(err.message, "error"));
  });
  $("lock").addEventListener("click", () => { setAdmin(null); toast("Locked", "ok"); });
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) unlock(saved, true).catch(() => setAdmin(null));
  const given = new URLSearchParams(location.hash.slice(1)).get("token");  // /dashboard#token=T
  if (given) {
    history.replaceState(null, "", location.pathname);  // out of sight and of the history
    unlock(given, true).catch(() => setAdmin(null));
  }
  poll();
});
