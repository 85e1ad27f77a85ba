// lote console: the router, the API, sign-in and live updates.
//
// A view is one file, views/NAME.js, exporting `render(ctx)`; a route below
// names it. `render` builds the page into ctx.root and may return
// `{ refresh(change), dispose() }`: refresh runs when the log moved (at most
// a few times a second, never two at once), dispose when the page is left.
// Text reaches the page through textContent only (the `h` helper): an id or
// a command holding markup is shown as text, never run.

const routes = [
  { path: /^\/ui\/?$/, view: "overview", keys: [] },
  { path: /^\/ui\/pools\/?$/, view: "pools", keys: [] },
  { path: /^\/ui\/pools\/([^/]+)\/?$/, view: "pool", keys: ["pool"] },
  { path: /^\/ui\/pools\/([^/]+)\/nodes\/([^/]+)\/?$/, view: "node", keys: ["pool", "node"] },
  { path: /^\/ui\/jobs\/?$/, view: "jobs", keys: [] },
  { path: /^\/ui\/jobs\/([^/]+)\/?$/, view: "job", keys: ["job"] },
  { path: /^\/ui\/jobs\/([^/]+)\/tasks\/([^/]+)\/?$/, view: "task", keys: ["job", "task"] },
  { path: /^\/ui\/schedules\/?$/, view: "schedules", keys: [] },
  { path: /^\/ui\/apps\/?$/, view: "apps", keys: [] },
  { path: /^\/ui\/blobs\/?$/, view: "blobs", keys: [] },
  { path: /^\/ui\/packages\/?$/, view: "packages", keys: [] },
  { path: /^\/ui\/events\/?$/, view: "events", keys: [] },
  { path: /^\/ui\/accounts\/?$/, view: "accounts", keys: [] },
];

const accountNav = [
  ["/ui/", "Overview"], ["/ui/pools", "Pools"], ["/ui/jobs", "Jobs"],
  ["/ui/schedules", "Schedules"], ["/ui/apps", "Apps"], ["/ui/blobs", "Blobs"], ["/ui/packages", "Packages"],
  ["/ui/events", "Events"],
];
const operatorNav = [["/ui/accounts", "Accounts"]];

let session = null;
let current = null;
let live = null;

/** Builds an element; strings become text nodes, never markup. */
export function h(tag, props = {}, ...children) {
  const svg = ["svg", "path", "line", "polyline", "rect", "text", "g", "circle"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") el.textContent = String(v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "style") Object.assign(el.style, v);
    else if (k === "value") el.value = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** A link inside the console (no reload). */
export function link(href, text, props = {}) {
  return h("a", { href, ...props, onclick: (e) => {
    if (e.ctrlKey || e.metaKey || e.shiftKey) return;
    e.preventDefault();
    navigate(href);
  } }, text);
}

export function badge(state) {
  return h("span", { class: `badge ${state}`, "data-testid": "state" }, state);
}

/** A task's state, saying "failed" for a completed task that failed. */
export function taskBadge(task) {
  const failed = task.status === "completed" && task.last_result && task.last_result.failure;
  return failed ? h("span", { class: "badge failed", "data-testid": "state", title: "completed, failed" }, "failed") : badge(task.status);
}

export function fmtTime(t) {
  if (!t) return "";
  const d = new Date(t);
  return isNaN(d) ? String(t) : d.toLocaleString();
}

export function num(n) {
  return Number(n || 0).toLocaleString("en-US");
}

/** The one request variant of a reply `{Variant: body}`. */
export function unwrap(reply, variant) {
  if (reply && typeof reply === "object" && variant in reply) return reply[variant];
  throw new Error(`unexpected reply: ${JSON.stringify(reply).slice(0, 200)}`);
}

class ApiError extends Error {
  constructor(status, body) {
    const e = body && body.error;
    super((e && e.message) || `HTTP ${status}`);
    this.status = status;
    this.code = e && (e.code || e.kind);
  }
}

async function request(method, path, body, raw = false) {
  const headers = {};
  if (method !== "GET") headers["x-lote-csrf"] = session ? session.csrf : "";
  if (body !== undefined && !(body instanceof Blob)) headers["content-type"] = "application/json";
  const res = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : body instanceof Blob ? body : JSON.stringify(body),
  });
  if (res.status === 401 && session) {
    session = null;
    start();
    throw new ApiError(401, { error: { message: "signed out" } });
  }
  if (raw) return res;
  const json = await res.json().catch(() => ({}));
  if (!res.ok) throw new ApiError(res.status, json);
  return json;
}

/** A message-API request, by the server's own dispatcher. */
export function call(req) {
  return request("POST", "/api/call", req);
}

export function get(path, params = {}) {
  const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== ""));
  return request("GET", q.toString() ? `${path}?${q}` : path);
}

export function put(path, params, blob) {
  const q = new URLSearchParams(params);
  return request("PUT", `${path}?${q}`, blob);
}

export function notice(text, ok = false) {
  const n = document.getElementById("notice");
  n.textContent = text;
  n.className = ok ? "ok" : "";
  n.hidden = !text;
  if (text) setTimeout(() => { if (n.textContent === text) n.hidden = true; }, 6000);
}

/** Runs an action, then says how it went. */
export async function act(label, fn) {
  try {
    await fn();
    notice(`${label}: done`, true);
  } catch (e) {
    notice(`${label}: ${e.message}`);
  }
}

/**
 * Each pool's nodes counted by state, in the pools' order, and in words
 * ("2 idle, 1 running"; "" for none).
 */
export async function nodeStates(pools) {
  const lists = await Promise.all(pools.map((p) =>
    call({ ListNodes: { pool: p.state.spec.id } }).then((r) => unwrap(r, "Nodes")).catch(() => [])));
  return lists.map((nodes) => {
    const by = {};
    for (const n of nodes) by[n.state.state] = (by[n.state.state] || 0) + 1;
    return { count: nodes.length, words: Object.entries(by).map(([s, c]) => `${c} ${s}`).join(", ") };
  });
}

/** `fn` at most once per `ms`; a call in between runs once when due, with
 * the latest call's arguments (so filter calls before throttling them). */
export function throttled(ms, fn) {
  let last = 0;
  let timer = null;
  let latest = [];
  return async (...args) => {
    latest = args;
    const wait = last + ms - Date.now();
    if (wait > 0) {
      if (!timer) timer = setTimeout(() => { timer = null; last = Date.now(); fn(...latest); }, wait);
      return;
    }
    last = Date.now();
    await fn(...args);
  };
}

/** Runs `fn` every `ms` while the page is shown; returns its dispose. */
export function every(ms, fn) {
  const id = setInterval(fn, ms);
  return () => clearInterval(id);
}

/** Whether a live change touches an entity under one of `prefixes`. */
export function touches(change, prefixes) {
  return change.more || change.entities.some((e) => prefixes.some((p) => e.startsWith(p)));
}

export function navigate(href, replace = false) {
  if (replace) history.replaceState(null, "", href);
  else history.pushState(null, "", href);
  show();
}

/** Keeps a page's filters in its address (deep links), without reloading. */
export function setQuery(values) {
  const q = new URLSearchParams(location.search);
  for (const [k, v] of Object.entries(values)) {
    if (v === undefined || v === null || v === "") q.delete(k); else q.set(k, v);
  }
  const s = q.toString();
  history.replaceState(null, "", location.pathname + (s ? `?${s}` : ""));
}

function drawChrome() {
  const nav = document.getElementById("nav");
  nav.replaceChildren();
  const items = session ? (session.operator ? operatorNav : accountNav) : [];
  for (const [href, text] of items) {
    const here = href === "/ui/" ? location.pathname === "/ui/" || location.pathname === "/ui" : location.pathname.startsWith(href);
    nav.append(link(href, text, { class: here ? "here" : "" }));
  }
  const who = document.getElementById("who");
  who.replaceChildren();
  if (session) {
    who.append(session.operator ? "operator (admin key)" : `account ${session.account}`,
      h("button", { "data-testid": "sign-out", onclick: signOut }, "Sign out"));
  }
}

async function signOut() {
  try { await request("DELETE", "/api/session"); } catch (_) { /* ended anyway */ }
  session = null;
  if (live) { live.close(); live = null; }
  history.pushState(null, "", "/ui/");
  start();
}

/**
 * The live feed: one stream of "what changed" for the whole console, one
 * connection per tab (browsers allow six per server). A page that wants
 * the events themselves (the events page) asks for them with
 * `liveEvents(true)`; the stream is reopened with them, and without them
 * when that page is left.
 */
let liveWithEvents = false;
function openLive() {
  if (live) live.close();
  live = new EventSource(liveWithEvents ? "/api/live?events=1" : "/api/live");
  const dot = document.getElementById("live");
  live.addEventListener("hello", () => dot.classList.add("on"));
  live.onerror = () => dot.classList.remove("on");
  live.addEventListener("change", (e) => {
    dot.classList.add("on");
    const change = JSON.parse(e.data);
    if (current) current.changed(change);
  });
}

export function liveEvents(on) {
  if (liveWithEvents === on) return;
  liveWithEvents = on;
  if (session) openLive();
}

// A page put aside (another page loaded in the tab) holds no connection.
window.addEventListener("pagehide", () => { if (live) { live.close(); live = null; } });
window.addEventListener("pageshow", (e) => { if (e.persisted && session) openLive(); });

/** One page on screen: its view's handle and a refresh that never overlaps. */
class Page {
  constructor(handle) {
    this.handle = handle || {};
    this.busy = false;
    this.again = null;
    this.gone = false;
  }
  async changed(change) {
    if (!this.handle.refresh || this.gone) return;
    if (this.busy) { this.again = change; return; }
    this.busy = true;
    try { await this.handle.refresh(change); } catch (e) { console.warn(e); }
    this.busy = false;
    if (this.again && !this.gone) { const next = this.again; this.again = null; this.changed(next); }
  }
  dispose() {
    this.gone = true;
    if (this.handle.dispose) this.handle.dispose();
  }
}

async function show() {
  if (current) { current.dispose(); current = null; }
  drawChrome();
  const root = document.getElementById("view");
  root.replaceChildren();
  if (!session) {
    const view = await import("./views/signin.js");
    view.render({ root, signedIn });
    return;
  }
  const path = location.pathname;
  const route = routes.find((r) => r.path.test(path));
  if (!route) {
    root.append(h("h1", {}, "No such page"), link("/ui/", "Back to the overview"));
    return;
  }
  if (session.operator && route.view !== "accounts") {
    history.replaceState(null, "", "/ui/accounts");
    return show();
  }
  const match = path.match(route.path);
  const params = {};
  route.keys.forEach((k, i) => { params[k] = decodeURIComponent(match[i + 1]); });
  const view = await import(`./views/${route.view}.js`);
  const page = new Page();
  current = page;
  try {
    const handle = await view.render({ root, params, query: new URLSearchParams(location.search), session });
    page.handle = handle || {};
    if (page.gone && page.handle.dispose) page.handle.dispose();
  } catch (e) {
    root.append(h("p", { class: "muted", "data-testid": "error" }, `Cannot show this page: ${e.message}`));
  }
}

function signedIn(s) {
  session = s;
  openLive();
  show();
}

async function start() {
  try {
    const res = await fetch("/api/session", { credentials: "same-origin" });
    session = res.ok ? await res.json() : null;
  } catch (_) {
    session = null;
  }
  if (session) openLive();
  show();
}

window.addEventListener("popstate", show);
start();
