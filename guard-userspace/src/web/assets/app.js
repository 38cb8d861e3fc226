// agent-guard approval page. No inline script (strict CSP); the token lives
// in sessionStorage and travels only in the Authorization header. Data from
// the daemon is put on the page with textContent, never as HTML.
"use strict";

const KEY = "agent-guard-token";
const POLL_MS = 1000;
const $ = (id) => document.getElementById(id);
let timer = null;

function token() { return sessionStorage.getItem(KEY); }

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

async function api(method, path, body) {
  const opts = { method, headers: { "Authorization": "Bearer " + token() } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  let data = {};
  try { data = await resp.json(); } catch (_) { data = { error: "HTTP " + resp.status }; }
  if (resp.status === 401) {
    signOut("Token refused: " + (data.error || "unauthorized"));
    throw new Error("unauthorized");
  }
  if (!resp.ok || data.ok === false) throw new Error(data.error || ("HTTP " + resp.status));
  return data;
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  if (timer) { clearInterval(timer); timer = null; }
  $("app").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("holds").replaceChildren();
}

function target(t) {
  if (!t) return "";
  if (t.path) return t.path;
  if (t.address !== undefined) return t.address + ":" + t.port;
  return JSON.stringify(t);
}

// A command line as a shell would show it.
function args(a) {
  if (!Array.isArray(a)) return "";
  return a.map((x) => /^[^\s']+$/.test(x) ? x : "'" + String(x).replace(/'/g, "'\\''") + "'").join(" ");
}

// What the agent did in the minutes before the hold.
function recent(r) {
  const parts = [];
  for (const [kind, outcomes] of Object.entries(r.calls || {})) {
    parts.push(kind + " " + Object.entries(outcomes).map(([o, n]) => o + " " + n).join(", "));
  }
  const mins = Math.round((r.window_secs || 300) / 60);
  let text = "last " + mins + " min: " + (parts.length ? parts.join("; ") : "no other calls");
  const last = (r.last || []).map((c) => c.outcome + " " + c.target);
  if (last.length) text += " · latest: " + last.join(", ");
  return text;
}

function secs(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  return s >= 60 ? Math.floor(s / 60) + "m " + (s % 60) + "s" : s + "s";
}

function when(rfc3339) {
  const t = new Date(rfc3339);
  return isNaN(t) ? String(rfc3339) : t.toLocaleString();
}

function option(select, value, label) {
  const o = el("option", null, label);
  o.value = value;
  select.append(o);
}

// One card per hold, created once and then only updated, so polling never
// wipes a reason being typed or a scope being chosen.
function holdCard(h) {
  const card = el("div", "card hold");
  card.dataset.hold = h.id;
  const ctx = h.context || {};
  card.append(el("div", "what", h.kind + " " + target(h.target)));
  card.append(el("div", "meta", "agent " + h.agent + " (" + h.owner + ")" +
    (h.purpose ? " · " + h.purpose : "") + (h.on_behalf_of ? " · on behalf of " + h.on_behalf_of : "")));
  card.append(el("div", "meta", "pid " + h.pid + (h.exe ? " " + h.exe : "") + " · hold " + h.id));
  const cmd = args(h.cmdline);
  if (cmd) card.append(el("div", "cmd", "$ " + cmd));
  if (ctx.ancestry && ctx.ancestry.length) {
    const via = ctx.ancestry.map((p) => p.pid + " " + (args(p.cmdline) || p.comm));
    if (ctx.ancestry_truncated) via.push("…");
    card.append(el("div", "meta via", "via " + via.join(" ← ")));
  }
  if (ctx.recent) card.append(el("div", "meta recent", recent(ctx.recent)));
  const left = el("div", "left");
  left.dataset.role = "left";
  card.append(left);

  const controls = el("div", "controls");
  const scopeLabel = el("label", null, "Scope");
  const scope = el("select", "scope");
  option(scope, "once", "this call only");
  if (String(h.kind).startsWith("file.")) option(scope, "subtree", "this subtree");
  if (h.kind === "net.connect") option(scope, "destination", "this destination");
  option(scope, "agent", "everything this agent asks");
  scopeLabel.append(scope);
  const durLabel = el("label", null, "For");
  const dur = el("select", "duration");
  for (const [v, l] of [[600, "10 minutes"], [3600, "1 hour"], [28800, "8 hours"], [86400, "1 day"]]) option(dur, v, l);
  dur.disabled = true;
  // What the chosen scope grants, exactly; a subtree can be narrowed.
  const offers = {};
  for (const o of ctx.scopes || []) offers[o.scope] = o;
  const pathLabel = el("label", "narrow", "Subtree");
  const path = el("input", "path");
  path.type = "text";
  path.value = (offers.subtree && offers.subtree.path) || "";
  pathLabel.append(path);
  pathLabel.hidden = true;
  const grants = el("div", "grants");
  const explain = () => {
    dur.disabled = scope.value === "once";
    pathLabel.hidden = scope.value !== "subtree";
    const o = offers[scope.value];
    grants.textContent = scope.value === "subtree"
      ? "Grants deletes under " + (path.value || "?") + " for " + dur.selectedOptions[0].textContent
      : o ? "Grants " + o.grants + (scope.value === "once" ? "" : " for " + dur.selectedOptions[0].textContent) : "";
  };
  scope.addEventListener("change", explain);
  dur.addEventListener("change", explain);
  path.addEventListener("input", explain);
  durLabel.append(dur);
  const reasonLabel = el("label", null, "Reason");
  const reason = el("input", "reason");
  reason.type = "text";
  reason.placeholder = "ticket, context";
  reasonLabel.append(reason);
  controls.append(scopeLabel, durLabel, pathLabel, reasonLabel);
  card.append(controls, grants);
  explain();

  const buttons = el("div", "buttons");
  const approve = el("button", "approve", "Approve");
  const deny = el("button", "deny", "Deny");
  const kill = el("button", "kill", "Kill run");
  for (const b of [approve, deny, kill]) b.type = "button";
  buttons.append(approve, deny, kill);
  card.append(buttons);
  const msg = el("div", "error");
  msg.setAttribute("role", "alert");
  card.append(msg);

  const act = async (what, body) => {
    for (const b of [approve, deny, kill]) b.disabled = true;
    msg.textContent = "";
    try {
      if (what === "kill") await api("POST", "/api/holds/" + h.id + "/kill");
      else await api("POST", "/api/holds/" + h.id + "/decide", body);
      card.classList.add("decided");
      refresh();
    } catch (e) {
      msg.textContent = e.message;
      for (const b of [approve, deny, kill]) b.disabled = false;
    }
  };
  const decision = (approveIt) => {
    const body = { approve: approveIt, reason: reason.value };
    if (approveIt && scope.value !== "once") {
      body.scope = scope.value;
      body.for_secs = Number(dur.value);
      if (scope.value === "subtree" && path.value) body.path = path.value;
    }
    return body;
  };
  approve.addEventListener("click", () => act("decide", decision(true)));
  deny.addEventListener("click", () => act("decide", decision(false)));
  kill.addEventListener("click", () => {
    if (window.confirm("Kill the whole run of hold " + h.id + "?")) act("kill");
  });
  return card;
}

function renderHolds(holds) {
  const box = $("holds");
  const seen = new Set();
  for (const h of holds) {
    seen.add(h.id);
    let card = box.querySelector('[data-hold="' + CSS.escape(h.id) + '"]');
    if (!card) {
      card = holdCard(h);
      box.append(card);
      if (location.hash === "#hold=" + h.id) {
        card.classList.add("highlight");
        card.scrollIntoView();
      }
    }
    card.querySelector('[data-role="left"]').textContent =
      "waiting " + secs(h.waited_ms) + " · denied automatically in " + secs(h.left_ms);
  }
  for (const card of Array.from(box.children)) {
    if (!seen.has(card.dataset.hold)) card.remove();
  }
  $("hold-count").textContent = holds.length ? "(" + holds.length + ")" : "";
  $("no-holds").hidden = holds.length > 0;
}

function grantCard(g) {
  const card = el("div", "card grant");
  card.dataset.grant = g.id;
  const s = g.scope || {};
  const what = s.kind === "subtree" ? "deletes under " + s.path
    : s.kind === "destination" ? "connects to " + s.address + ":" + s.port
    : "everything held";
  card.append(el("div", "what", "agent " + g.agent + ": " + what));
  const meta = el("div", "meta");
  meta.dataset.role = "left";
  card.append(meta);
  const revoke = el("button", "revoke", "Revoke");
  revoke.type = "button";
  revoke.addEventListener("click", async () => {
    revoke.disabled = true;
    try { await api("POST", "/api/grants/" + g.id + "/revoke"); refresh(); }
    catch (e) { revoke.disabled = false; $("status").textContent = e.message; }
  });
  const b = el("div", "buttons");
  b.append(revoke);
  card.append(b);
  return card;
}

// Keyed by grant id, as holds are: a card stays while its grant lasts and
// only its countdown changes, so a Revoke button is never swapped out from
// under a finger by the next poll.
function renderGrants(grants) {
  const box = $("grants");
  const seen = new Set();
  for (const g of grants) {
    const id = String(g.id);
    seen.add(id);
    let card = box.querySelector('[data-grant="' + CSS.escape(id) + '"]');
    if (!card) {
      card = grantCard(g);
      box.append(card);
    }
    card.querySelector('[data-role="left"]').textContent =
      "by " + g.by + (g.reason ? " (" + g.reason + ")" : "") + " · ends in " + secs(g.left_secs * 1000);
  }
  for (const card of Array.from(box.children)) {
    if (!seen.has(card.dataset.grant)) card.remove();
  }
  $("no-grants").hidden = grants.length > 0;
}

function renderBudgets(list) {
  const box = $("budgets");
  box.replaceChildren();
  for (const a of list || []) {
    const b = a.budget || {};
    const parts = [];
    for (const name of ["deletes", "connects"]) {
      const u = b[name];
      if (!u) continue;
      parts.push(name + " " + u.used + "/" + u.limit + " per " + u.window + (u.exhausted ? " (spent)" : ""));
    }
    const li = el("li", a.frozen ? "frozen" : "");
    li.dataset.agent = a.agent;
    li.textContent = "agent " + a.agent + ": " + parts.join(", ") +
      " · then " + (b.on_exceed || "ask") + (a.frozen ? " · frozen" : "");
    box.append(li);
  }
  $("no-budgets").hidden = (list || []).length > 0;
}

function renderDecisions(list) {
  const box = $("decisions");
  box.replaceChildren();
  for (const d of list) {
    const li = el("li");
    li.dataset.hold = d.hold;
    li.append(el("span", d.decision, d.decision));
    li.append(document.createTextNode(" " + (d.agent || "") + " " + target(d.target) +
      " by " + d.by + (d.reason ? " (" + d.reason + ")" : "") +
      (d.scope && typeof d.scope === "object" ? " · with a grant" : "") + " · " + when(d.time)));
    box.append(li);
  }
}

async function refresh() {
  if (!token()) return;
  try {
    const s = await api("GET", "/api/state");
    $("login").hidden = true;
    $("app").hidden = false;
    $("logout").hidden = false;
    $("who").textContent = "signed in as " + s.user;
    renderHolds(s.holds);
    renderGrants(s.grants);
    renderBudgets(s.budgets);
    renderDecisions(s.decisions);
    $("status").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    if (e.message !== "unauthorized") $("status").textContent = "cannot reach the daemon: " + e.message;
  }
}

function start() {
  refresh();
  if (!timer) timer = setInterval(refresh, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("token").value.trim());
    $("token").value = "";
    $("login-error").textContent = "";
    start();
  });
  $("logout").addEventListener("click", () => signOut(""));
  if (token()) start(); else signOut("");
});
