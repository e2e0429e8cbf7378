// The iotstream dashboard: active alerts (with acknowledge), devices with their latest values,
// and recent forecasts, read from the query API with the admin token: again within a moment of
// every live update (`/api/stream`, Server-Sent Events), and every 10 s whatever happens.
// The token comes from the URL fragment the server prints (`/#token=...`, never sent to the
// server) or from the form, and is kept for this tab only (sessionStorage). Every value from the
// API is put on the page as text, never as HTML.
"use strict";

const REFRESH_MS = 10000;
const MAX_DEVICES = 200;
const KEY = "iotstream.token";

function token() {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) {
    sessionStorage.setItem(KEY, hash.get("token"));
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem(KEY);
}

async function api(path, method) {
  const r = await fetch(path, {
    method: method || "GET",
    headers: { Authorization: "Bearer " + token() },
  });
  if (r.status === 401) {
    sessionStorage.removeItem(KEY);
    throw new Error("unauthorized");
  }
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text === undefined || text === null ? "" : String(text);
  if (cls) td.className = cls;
  return td;
}

function when(ts) {
  return ts ? new Date(ts).toLocaleTimeString() : "";
}

// What each table shows now: it is redrawn only when that changes, so a button is not
// replaced under the pointer every refresh.
const shown = {};

function fill(table, rows, render) {
  const json = JSON.stringify(rows);
  if (shown[table] === json) return;
  shown[table] = json;
  const body = document.querySelector(table + " tbody");
  body.replaceChildren();
  for (const item of rows) render(body.insertRow(), item);
}

function renderAlert(row, a) {
  cell(row, when(a.openedAt));
  cell(row, a.severity, a.severity);
  cell(row, a.deviceId);
  cell(row, a.rule);
  const what = cell(row, a.message);
  const advice = document.createElement("small");
  advice.textContent = a.recommendation;
  what.append(document.createElement("br"), advice);
  const act = row.insertCell();
  if (a.state === "active") {
    const b = document.createElement("button");
    b.textContent = "acknowledge";
    b.onclick = () => api("/api/alerts/" + encodeURIComponent(a.id) + "/ack", "POST").then(refresh, show);
    act.append(b);
  } else {
    act.textContent = a.state;
  }
}

function renderDevice(row, d) {
  cell(row, d.deviceId);
  cell(row, when(d.lastSeen));
  const values = Object.entries(d.metrics || {}).map(([k, v]) => k + " " + v);
  cell(row, values.join(", "));
  cell(row, d.activeAlerts || "");
}

function show(e) {
  document.getElementById("status").textContent = e instanceof Error ? e.message : String(e);
  if (!sessionStorage.getItem(KEY)) {
    unfollow();
    login();
  }
}

async function refresh() {
  const [alerts, devices, forecasts] = await Promise.all([
    api("/api/alerts?state=active&limit=200"),
    api("/api/devices"),
    api("/api/forecasts?limit=10"),
  ]);
  fill("#alerts", alerts.alerts, renderAlert);
  document.getElementById("alert-count").textContent = "(" + alerts.alerts.length + ")";
  // A fleet can be thousands: the devices with open alerts first, then the most recently seen.
  const all = devices.devices.slice().sort(
    (x, y) => (y.activeAlerts || 0) - (x.activeAlerts || 0) || String(y.lastSeen).localeCompare(String(x.lastSeen)),
  );
  fill("#devices", all.slice(0, MAX_DEVICES), renderDevice);
  document.getElementById("device-count").textContent =
    all.length > MAX_DEVICES ? "(" + MAX_DEVICES + " of " + all.length + ")" : "(" + all.length + ")";
  const list = document.getElementById("forecasts");
  list.replaceChildren(
    ...forecasts.forecasts.map((f) => {
      const li = document.createElement("li");
      li.textContent = when(f.at) + " " + f.message;
      return li;
    }),
  );
  document.getElementById("status").textContent = "updated " + new Date().toLocaleTimeString();
}

function login() {
  document.getElementById("board").hidden = true;
  document.getElementById("login").hidden = false;
}

// Live updates: each one asks for a refresh, at most one per 300 ms. Opened once the token has
// worked; the browser reconnects by itself after a network error.
let source = null;
let pending = null;

function follow() {
  if (source || typeof EventSource === "undefined") return;
  source = new EventSource("/api/stream?token=" + encodeURIComponent(token()));
  const soon = () => {
    if (pending) return;
    pending = setTimeout(() => {
      pending = null;
      refresh().catch(show);
    }, 300);
  };
  for (const name of ["alert", "latest", "forecast", "lagged"]) source.addEventListener(name, soon);
}

function unfollow() {
  if (source) source.close();
  source = null;
}

let running = false;

function start() {
  document.getElementById("login").hidden = true;
  document.getElementById("board").hidden = false;
  if (running) return;
  running = true;
  const tick = () => {
    if (!sessionStorage.getItem(KEY)) {
      running = false;
      unfollow();
      return;
    }
    refresh()
      .then(follow, show)
      .finally(() => setTimeout(tick, REFRESH_MS));
  };
  tick();
}

document.getElementById("login").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(KEY, document.getElementById("token").value.trim());
  start();
});

if (token()) start();
else login();
