// The dashboard page served at GET /ui on the admin listener: plain HTML, CSS and JavaScript,
// no build step, no external scripts, kept in the binary so the host needs no files at run
// time. Edit the page here. docs/operations.md ("Dashboard") describes it.
//
// Views (the part of the URL after #): #/objects (objects by class, filter by name or id),
// #/object/<class>/<name-or-id> (fields, sockets, key-value entries, tables, read-only SQL,
// evict and run-alarm buttons), #/live (figures from /metrics every second, as small charts),
// #/history/<channel> (a channel's messages, as `doctl history`, with follow).
//
// The script reads only the admin API of the listener that served it. Everything it shows is
// put into the page as text (textContent), never as HTML, and the page's Content-Security-
// Policy allows this one script by its hash, so nothing stored in an object can run here.
#pragma once

namespace dohost {

inline constexpr char kDashboardHead[] = R"page(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dohost dashboard</title>
<style>
  :root { --fg: #1f2428; --muted: #687078; --line: #d9dcdf; --bg: #f7f7f5; --accent: #2b6cb0;
          --live: #2f855a; --evicted: #8a8f94; --failed: #c53030; }
  * { box-sizing: border-box; }
  body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: var(--fg); background: var(--bg); }
  header { display: flex; align-items: center; gap: 1.2em; padding: .5em 1em; background: #22303a;
           color: #fff; flex-wrap: wrap; }
  header h1 { font-size: 1.05em; margin: 0; letter-spacing: .02em; }
  nav { display: flex; gap: .2em; }
  nav a { color: #cfd8de; text-decoration: none; padding: .25em .7em; border-radius: 4px; }
  nav a.active { background: #3b4d5a; color: #fff; }
  #status { margin-left: auto; font-size: .85em; color: #cfd8de; }
  #status[data-state="error"] { color: #ffb4b4; }
  header button { font-size: .85em; }
  main { padding: 1em; max-width: 1200px; }
  .toolbar { display: flex; gap: .6em; flex-wrap: wrap; align-items: center; margin-bottom: .6em; }
  .toolbar form { display: flex; gap: .3em; margin-left: auto; }
  input, select, textarea, button { font: inherit; }
  input, select, textarea { padding: .25em .4em; border: 1px solid var(--line); border-radius: 4px;
                            background: #fff; }
  button { padding: .25em .8em; border: 1px solid #9aa5ad; border-radius: 4px; background: #fff;
           cursor: pointer; }
  button:disabled { color: var(--muted); cursor: default; }
  .hint { color: var(--muted); font-size: .9em; margin: .2em 0 .8em; }
  h2 { font-size: 1.05em; margin: 1.2em 0 .4em; }
  h3 { font-size: .95em; margin: 1.4em 0 .4em; text-transform: uppercase; letter-spacing: .04em;
       color: var(--muted); }
  table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid var(--line); }
  th, td { text-align: left; padding: .3em .6em; border-bottom: 1px solid var(--line);
           vertical-align: top; }
  th { font-weight: 600; font-size: .85em; color: var(--muted); background: #fafafa; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
  td.id, .mono, textarea, td.cell { font-family: ui-monospace, SFMono-Regular, Menlo, monospace;
                                    font-size: .9em; }
  td.cell { white-space: pre-wrap; word-break: break-all; max-width: 40em; }
  .state { display: inline-block; padding: 0 .5em; border-radius: 9px; font-size: .85em;
           color: #fff; background: var(--evicted); }
  .state[data-state="live"] { background: var(--live); }
  .state[data-state="failed"] { background: var(--failed); }
  dl.fields { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1em; margin: .6em 0;
              background: #fff; border: 1px solid var(--line); padding: .6em .8em; }
  dl.fields dt { color: var(--muted); }
  dl.fields dd { margin: 0; word-break: break-all; }
  .actions { display: flex; gap: .6em; align-items: center; margin: .6em 0; }
  #action-result[data-kind="error"], .error { color: var(--failed); }
  .error { background: #fff5f5; border: 1px solid #f5c2c2; padding: .4em .6em; border-radius: 4px; }
  textarea { width: 100%; min-height: 5em; }
  .figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: .8em; }
  .figure { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: .5em .7em; }
  .figure .title { color: var(--muted); font-size: .85em; }
  .figure .value { font-size: 1.6em; font-variant-numeric: tabular-nums; }
  .figure .total { color: var(--muted); font-size: .8em; }
  .figure svg { display: block; width: 100%; height: 48px; }
  .figure polyline { fill: none; stroke: var(--accent); stroke-width: 1.5; }
  #history-lines { list-style: none; padding: 0; margin: .4em 0; background: #fff;
                   border: 1px solid var(--line); font-family: ui-monospace, Menlo, monospace;
                   font-size: .9em; }
  #history-lines li { padding: .15em .6em; border-bottom: 1px solid #eee; white-space: pre-wrap;
                      word-break: break-word; }
  #history-lines .meta { color: var(--muted); }
  #login { max-width: 28em; margin: 3em auto; background: #fff; border: 1px solid var(--line);
           padding: 1em 1.2em; border-radius: 6px; }
</style>
</head>
<body>
<header>
  <h1>dohost</h1>
  <nav>
    <a href="#/objects" data-view="objects">Objects</a>
    <a href="#/live" data-view="live">Live</a>
    <a href="#/history" data-view="history">History</a>
  </nav>
  <span id="status" data-state="connecting" role="status">connecting…</span>
  <button id="logout" type="button" hidden>Forget token</button>
</header>
<div id="login" hidden>
  <form id="login-form">
    <p>The admin API needs its token (<code>DOHOST_ADMIN_TOKEN</code>).</p>
    <label>Admin token <input id="login-token" type="password" autocomplete="current-password"></label>
    <button>Sign in</button>
  </form>
</div>
<main>
<section id="view-objects" hidden>
  <div class="toolbar">
    <input id="filter" type="search" placeholder="Filter by name or id" aria-label="Filter by name or id">
    <select id="class-filter" aria-label="Only this class"><option value="">All classes</option></select>
    <form id="open-form">
      <select id="open-class" aria-label="Class of the object to open"></select>
      <input id="open-name" placeholder="name or id" aria-label="Name or id of the object to open">
      <button>Open</button>
    </form>
  </div>
  <p class="hint">The objects the host tracks: in memory, or evicted with open sockets or a
    pending alarm. Any stored object opens by its name or id.</p>
  <div id="object-groups"></div>
  <p id="objects-empty" class="hint" hidden>No object matches.</p>
</section>
<section id="view-object" hidden>
  <p><a href="#/objects">&larr; Objects</a></p>
  <h2 id="obj-title"></h2>
  <p id="obj-error" class="error" role="alert" hidden></p>
  <dl id="obj-fields" class="fields"></dl>
  <div class="actions">
    <button id="evict" type="button">Evict now</button>
    <button id="run-alarm" type="button">Run alarm now</button>
    <span id="action-result" role="status"></span>
  </div>
  <h3>Sockets</h3>
  <table id="sockets"><thead><tr><th class="num">Id</th><th>State</th><th>Tags</th><th>Attachment</th></tr></thead><tbody></tbody></table>
  <h3>Key-value storage</h3>
  <div class="toolbar"><input id="kv-prefix" type="search" placeholder="Key prefix" aria-label="Key prefix"></div>
  <table id="kv"><thead><tr><th>Key</th><th>Value</th><th class="num">Bytes</th></tr></thead><tbody></tbody></table>
  <button id="kv-more" type="button" hidden>More entries</button>
  <h3>Tables</h3>
  <table id="tables"><thead><tr><th>Table</th><th class="num">Rows</th><th></th></tr></thead><tbody></tbody></table>
  <h3>SQL, read-only</h3>
  <p class="hint">The host opens the object's database read-only for this, like <code>doctl sql</code>:
    a statement that would write is refused and nothing changes. Ctrl+Enter runs it.</p>
  <textarea id="sql-input" spellcheck="false" aria-label="SQL"></textarea>
  <p><button id="sql-run" type="button">Run</button></p>
  <p id="sql-error" class="error" role="alert" hidden></p>
  <div id="sql-result"></div>
</section>
<section id="view-live" hidden>
  <p class="hint">From the host's <code>/metrics</code>, every second; rates are per second over the last second, charts show the last minute.</p>
  <div id="figures" class="figures"></div>
  <h3>By class</h3>
  <table id="class-table"><thead><tr><th>Class</th><th class="num">In memory</th><th class="num">Tracked</th><th class="num">Sockets</th><th class="num">Messages in</th><th class="num">Messages out</th><th class="num">Commits</th><th class="num">Evictions</th><th class="num">Rehydrations</th></tr></thead><tbody></tbody></table>
</section>
<section id="view-history" hidden>
  <form id="history-form" class="toolbar">
    <input id="history-channel" placeholder="channel id" aria-label="Channel id">
    <label><input id="history-follow" type="checkbox" checked> follow</label>
    <button>Show</button>
  </form>
  <p id="history-status" class="hint" role="status"></p>
  <ol id="history-lines"></ol>
</section>
</main>
)page";

inline constexpr char kDashboardScript[] = R"js(
'use strict';
// The token: from ?token= once (then out of the address bar), else from this tab's storage.
const TOKEN_KEY = 'dohost.adminToken';
{
  const params = new URLSearchParams(location.search);
  if (params.has('token')) {
    sessionStorage.setItem(TOKEN_KEY, params.get('token'));
    history.replaceState(null, '', location.pathname + location.hash);
  }
}
let token = sessionStorage.getItem(TOKEN_KEY) || '';
const $ = (id) => document.getElementById(id);

// An element with properties (text, class, data-*, on*) and children; text only, never HTML.
function h(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v == null) continue;
    if (k === 'text') e.textContent = v;
    else if (k === 'class') e.className = v;
    else if (k.startsWith('data-') || k === 'title' || k === 'href') e.setAttribute(k, v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e[k] = v;
  }
  for (const c of children) if (c != null) e.append(c instanceof Node ? c : String(c));
  return e;
}

// --- formats (as doctl prints them) -------------------------------------------------------
function fmtSize(n) {
  if (n == null) return '-';
  if (n < 1024) return n + ' B';
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return v.toFixed(1) + ' ' + units[i];
}
const fmtTime = (ms) => new Date(ms).toISOString();
function fmtRel(ms, now = Date.now()) {
  let d = Math.round((ms - now) / 1000);
  if (d === 0) return 'now';
  const past = d < 0;
  d = Math.abs(d);
  let s;
  if (d < 60) s = d + 's';
  else if (d < 3600) s = Math.floor(d / 60) + 'm' + (d % 60) + 's';
  else if (d < 86400) s = Math.floor(d / 3600) + 'h' + Math.floor((d % 3600) / 60) + 'm';
  else s = Math.floor(d / 86400) + 'd' + Math.floor((d % 86400) / 3600) + 'h';
  return past ? s + ' ago' : 'in ' + s;
}
// The admin API gives bytes as a string, or {"base64url": ...} when they are not UTF-8.
function bytesText(v) {
  if (v === null || v === undefined) return 'NULL';
  if (typeof v === 'object' && typeof v.base64url === 'string') {
    const b = v.base64url.replace(/-/g, '+').replace(/_/g, '/');
    const bin = atob(b + '==='.slice((b.length + 3) % 4));
    let hex = '0x';
    for (let i = 0; i < bin.length; i++) hex += bin.charCodeAt(i).toString(16).padStart(2, '0');
    return hex;
  }
  return String(v);
}
const cellText = (v) => (typeof v === 'object' ? bytesText(v) : String(v));
const enc = encodeURIComponent;
const objectHash = (cls, name) => '#/object/' + enc(cls) + '/' + enc(name);
const objectPath = (cls, name) => '/objects/' + enc(cls) + '/' + enc(name);

// --- the admin API -------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, message, body) { super(message); this.status = status; this.body = body; }
}
async function api(method, path, body) {
  const headers = {};
  if (token) headers.Authorization = 'Bearer ' + token;
  if (body !== undefined) headers['Content-Type'] = 'text/plain; charset=utf-8';
  const r = await fetch(path, { method, headers, body, cache: 'no-store' });
  const text = await r.text();
  let data = text;
  try { data = text ? JSON.parse(text) : null; } catch (e) { /* not JSON: keep the text */ }
  if (r.status === 401) {
    showLogin();
    throw new ApiError(401, 'the admin token is missing or wrong', data);
  }
  if (!r.ok) throw new ApiError(r.status, (data && data.error) || text || r.statusText, data);
  return data;
}

function setStatus(state, text) {
  $('status').dataset.state = state;
  $('status').textContent = text;
}
function showLogin() {
  $('login').hidden = false;
  document.querySelector('main').hidden = true;
  $('login-token').focus();
}
$('login-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  token = $('login-token').value;
  sessionStorage.setItem(TOKEN_KEY, token);
  $('login').hidden = true;
  document.querySelector('main').hidden = false;
  $('logout').hidden = !token;
  tick();
});
$('logout').hidden = !token;
$('logout').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  location.href = '/ui';
});

// --- metrics: parsed every second, kept for a minute -----------------------------------------
const FIGURES = [
  { key: 'sockets', title: 'Sockets open', metric: 'dohost_websockets_open', gauge: true },
  { key: 'messages-in', title: 'Messages in /s', metric: 'dohost_websocket_messages_in_total' },
  { key: 'messages-out', title: 'Messages out /s', metric: 'dohost_websocket_messages_out_total' },
  { key: 'commits', title: 'Commits /s', metric: 'dohost_storage_commits_total' },
  { key: 'evictions', title: 'Evictions /s', metric: 'dohost_object_evictions_total' },
  { key: 'rehydrations', title: 'Rehydrations /s', metric: 'dohost_object_rehydrations_total' },
  { key: 'objects-live', title: 'Objects in memory', metric: 'dohost_objects_live', gauge: true },
];
const HISTORY = 60;
const samples = Object.fromEntries(FIGURES.map((f) => [f.key, []]));
let previous = null;  // {t, totals}
let classes = [];
let byClass = new Map();

function parseMetrics(text) {
  const totals = new Map();
  const perClass = new Map();
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})?\s+(\S+)$/.exec(line);
    if (!m) continue;
    const value = Number(m[3]);
    totals.set(m[1], (totals.get(m[1]) || 0) + value);
    const cls = /(?:^|,)class="((?:[^"\\]|\\.)*)"/.exec(m[2] || '');
    if (cls) {
      if (!perClass.has(cls[1])) perClass.set(cls[1], new Map());
      perClass.get(cls[1]).set(m[1], value);
    }
  }
  return { totals, perClass };
}

async function pollMetrics() {
  const headers = token ? { Authorization: 'Bearer ' + token } : {};
  const r = await fetch('/metrics', { headers, cache: 'no-store' });
  if (r.status === 401) { showLogin(); throw new ApiError(401, 'the admin token is missing or wrong'); }
  if (!r.ok) throw new ApiError(r.status, 'GET /metrics answered ' + r.status);
  const { totals, perClass } = parseMetrics(await r.text());
  const t = performance.now();
  for (const f of FIGURES) {
    const v = totals.get(f.metric) || 0;
    let point = v;
    if (!f.gauge) {
      if (!previous) continue;
      const dt = (t - previous.t) / 1000;
      point = dt > 0 ? Math.max(0, (v - (previous.totals.get(f.metric) || 0)) / dt) : 0;
    }
    const list = samples[f.key];
    list.push(point);
    if (list.length > HISTORY) list.shift();
  }
  previous = { t, totals };
  byClass = perClass;
  const names = [...perClass.keys()].sort();
  if (names.join('\n') !== classes.join('\n')) {
    classes = names;
    for (const id of ['class-filter', 'open-class']) {
      const select = $(id);
      const keep = select.value;
      select.replaceChildren(...(id === 'class-filter' ? [h('option', { value: '', text: 'All classes' })] : []),
                             ...names.map((c) => h('option', { value: c, text: c })));
      if (names.includes(keep)) select.value = keep;
    }
  }
  if (current.view === 'live') renderLive(totals);
}

function sparkline(values) {
  const w = 240, hgt = 48;
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', `0 0 ${w} ${hgt}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  const max = Math.max(1, ...values);
  const step = w / (HISTORY - 1);
  const offset = (HISTORY - values.length) * step;
  const points = values.map((v, i) => `${(offset + i * step).toFixed(1)},${(hgt - 2 - (v / max) * (hgt - 4)).toFixed(1)}`);
  const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
  line.setAttribute('points', points.join(' '));
  svg.append(line);
  return svg;
}
const fmtRate = (v) => (v >= 100 || Number.isInteger(v) ? String(Math.round(v)) : v.toFixed(1));

function renderLive(totals) {
  const box = $('figures');
  box.replaceChildren(...FIGURES.map((f) => {
    const list = samples[f.key];
    const last = list.length ? list[list.length - 1] : null;
    return h('div', { class: 'figure', 'data-metric': f.key },
      h('div', { class: 'title', text: f.title }),
      h('div', { class: 'value', text: last === null ? '…' : f.gauge ? String(last) : fmtRate(last) }),
      f.gauge ? null : h('div', { class: 'total', text: 'total ' + (totals.get(f.metric) || 0) }),
      sparkline(list));
  }));
  const body = $('class-table').tBodies[0];
  body.replaceChildren(...classes.map((c) => {
    const m = byClass.get(c);
    const cell = (name) => h('td', { class: 'num', text: String(m.get(name) ?? 0) });
    return h('tr', { 'data-class': c }, h('td', { text: c }), cell('dohost_objects_live'),
      cell('dohost_objects_known'), cell('dohost_websockets_open'),
      cell('dohost_websocket_messages_in_total'), cell('dohost_websocket_messages_out_total'),
      cell('dohost_storage_commits_total'), cell('dohost_object_evictions_total'),
      cell('dohost_object_rehydrations_total'));
  }));
}

// --- objects by class ------------------------------------------------------------------------
let objects = [];
const stateBadge = (state) => h('span', { class: 'state', 'data-state': state, text: state });
function alarmText(o) {
  let text = o.alarm ? `${fmtTime(o.alarm)} (${fmtRel(o.alarm)})` : '-';
  if (o.alarmFailed) text = (o.alarm ? text + ', ' : '') + `FAILED after ${o.alarmFailed.retries} retries`;
  return text;
}
function evictableText(o) {
  if (o.evictable) return 'yes';
  if (o.notEvictableBecause) return 'no: ' + o.notEvictableBecause;
  return o.state === 'live' ? 'no' : '- (not in memory)';
}

function renderObjects() {
  const q = $('filter').value.trim().toLowerCase();
  const only = $('class-filter').value;
  const groups = new Map();
  for (const o of objects) {
    if (only && o.class !== only) continue;
    if (q && !(String(o.name ?? '').toLowerCase().includes(q) || o.id.includes(q))) continue;
    if (!groups.has(o.class)) groups.set(o.class, []);
    groups.get(o.class).push(o);
  }
  const showHost = objects.some((o) => o.host != null);
  const heads = ['Name', 'Id', 'State', 'Sockets', 'Storage', 'Alarm', ...(showHost ? ['Host'] : []), 'Evictable'];
  const sections = [...groups.keys()].sort().map((cls) => {
    const list = groups.get(cls).sort((a, b) => String(a.name ?? a.id).localeCompare(String(b.name ?? b.id)));
    const rows = list.map((o) => h('tr', { 'data-class': o.class, 'data-name': o.name ?? '', 'data-id': o.id, 'data-state': o.state },
      // By id when the name has a '/' (the server decodes %2F before it splits the path).
      h('td', {}, h('a', { href: objectHash(o.class, o.name == null || o.name.includes('/') ? o.id : o.name),
                          text: o.name ?? '(created by id)' })),
      h('td', { class: 'id', text: o.id.slice(0, 16), title: o.id }),
      h('td', {}, stateBadge(o.state)),
      h('td', { class: 'num sockets', text: String(o.sockets) }),
      h('td', { class: 'num', text: fmtSize(o.storageBytes) }),
      h('td', { text: alarmText(o) }),
      showHost ? h('td', { text: o.host ?? '-' }) : null,
      h('td', { class: 'evictable', text: evictableText(o) })));
    return h('section', { class: 'class-group', 'data-class': cls },
      h('h2', { text: `${cls} (${list.length})` }),
      h('table', {}, h('thead', {}, h('tr', {}, ...heads.map((t) => h('th', { text: t })))), h('tbody', {}, ...rows)));
  });
  $('object-groups').replaceChildren(...sections);
  $('objects-empty').hidden = sections.length > 0;
}
$('filter').addEventListener('input', renderObjects);
$('class-filter').addEventListener('change', renderObjects);
$('open-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const name = $('open-name').value.trim();
  if (name) location.hash = objectHash($('open-class').value, name);
});

// --- one object ------------------------------------------------------------------------------
let obj = null;  // {cls, name, kvAfter}
function openObject(cls, name) {
  obj = { cls, name, kvAfter: null };
  $('obj-title').textContent = `${cls} ${name}`;
  $('obj-fields').replaceChildren();
  $('obj-error').hidden = true;
  $('action-result').textContent = '';
  $('sockets').tBodies[0].replaceChildren();
  $('sql-error').hidden = true;
  $('sql-result').replaceChildren();
  $('kv-prefix').value = '';
  if (!$('sql-input').value) $('sql-input').value = "SELECT name, type FROM sqlite_schema ORDER BY name";
  loadKv(true);
  loadTables();
}

function renderObject(d) {
  $('obj-error').hidden = true;
  const fields = [
    ['class', d.class], ['id', d.id], ['name', d.name ?? '- (created by id)'],
    ['state', stateBadge(d.state)], ['sockets', String(d.sockets)],
    ['storage', fmtSize(d.storageBytes) + ' (database and WAL)'], ['alarm', alarmText(d)],
  ];
  if (d.alarmFailed) {
    const f = d.alarmFailed;
    fields.push(['alarm failed', `the alarm of ${fmtTime(f.scheduledTime)} gave up after ${f.retries} retries at ${fmtTime(f.failedAt)}`]);
    fields.push(['last error', f.lastError]);
  }
  fields.push(['evictable', evictableText(d)]);
  if (d.host != null) fields.push(['host', d.host]);
  for (const [k, v] of Object.entries(d)) {  // anything newer hosts add
    if (!['class', 'id', 'name', 'state', 'sockets', 'storageBytes', 'alarm', 'alarmFailed', 'evictable',
          'notEvictableBecause', 'host', 'socketList'].includes(k)) fields.push([k, typeof v === 'object' ? JSON.stringify(v) : String(v)]);
  }
  $('obj-fields').replaceChildren(...fields.flatMap(([k, v]) => [h('dt', { text: k }), h('dd', { 'data-field': k }, v)]));
  $('run-alarm').disabled = !d.alarm;
  $('sockets').tBodies[0].replaceChildren(...(d.socketList || []).map((s) => h('tr', { 'data-socket': s.id },
    h('td', { class: 'num', text: String(s.id) }), h('td', { text: s.state }),
    h('td', { text: (s.tags || []).join(', ') || '-' }),
    h('td', { class: 'cell', text: s.attachment === null ? '-' : typeof s.attachment === 'string' ? s.attachment : JSON.stringify(s.attachment) }))));
  if (!(d.socketList || []).length) {
    $('sockets').tBodies[0].append(h('tr', {}, h('td', { colSpan: 4, class: 'hint', text: 'no open sockets' })));
  }
}

async function pollObject() {
  const o = obj;
  try {
    const d = await api('GET', objectPath(o.cls, o.name));
    if (obj === o) renderObject(d);
  } catch (e) {
    if (obj !== o || e.status === 401) throw e;
    $('obj-error').textContent = e.message;
    $('obj-error').hidden = false;
    if (e.status !== 404) throw e;
  }
}

async function action(path, done) {
  const out = $('action-result');
  out.textContent = '…';
  out.dataset.kind = '';
  try {
    out.textContent = done(await api('POST', objectPath(obj.cls, obj.name) + path));
  } catch (e) {
    out.textContent = e.message;
    out.dataset.kind = 'error';
  }
  await pollObject().catch(() => {});
}
$('evict').addEventListener('click', () => action('/evict',
  (r) => (r.evicted ? 'evicted; its sockets stay open' : 'not in memory: nothing to evict')));
$('run-alarm').addEventListener('click', () => action('/alarm', () => 'the alarm ran'));

async function loadKv(fresh) {
  const o = obj;
  if (fresh) o.kvAfter = null;
  const params = new URLSearchParams({ limit: '100' });
  if ($('kv-prefix').value) params.set('prefix', $('kv-prefix').value);
  if (o.kvAfter !== null) params.set('after', o.kvAfter);
  const body = $('kv').tBodies[0];
  try {
    const r = await api('GET', objectPath(o.cls, o.name) + '/kv?' + params);
    if (obj !== o) return;
    if (fresh) body.replaceChildren();
    for (const e of r.entries) {
      body.append(h('tr', {}, h('td', { class: 'cell', text: bytesText(e.key) }),
        h('td', { class: 'cell', text: bytesText(e.value) + (e.valueTruncated ? ' …' : '') }),
        h('td', { class: 'num', text: String(e.valueBytes) })));
    }
    if (fresh && !r.entries.length) body.append(h('tr', {}, h('td', { colSpan: 3, class: 'hint', text: 'no entries' })));
    const last = r.entries[r.entries.length - 1];
    o.kvAfter = last && typeof last.key === 'string' ? last.key : null;
    $('kv-more').hidden = !(r.truncated && o.kvAfter !== null);
  } catch (e) {
    if (obj === o) body.replaceChildren(h('tr', {}, h('td', { colSpan: 3, class: 'error', text: e.message })));
  }
}
$('kv-prefix').addEventListener('input', () => loadKv(true));
$('kv-more').addEventListener('click', () => loadKv(false));

async function loadTables() {
  const o = obj;
  const body = $('tables').tBodies[0];
  try {
    const list = await api('GET', objectPath(o.cls, o.name) + '/tables');
    if (obj !== o) return;
    body.replaceChildren(...list.map((t) => {
      const name = bytesText(t.name);
      const query = () => {
        $('sql-input').value = `SELECT * FROM "${name.replace(/"/g, '""')}" LIMIT 100`;
        runSql();
      };
      return h('tr', { 'data-table': name }, h('td', { class: 'mono', text: name }),
        h('td', { class: 'num', text: t.rows === null ? '?' : String(t.rows) }),
        h('td', {}, h('button', { type: 'button', text: 'Query', onclick: query })));
    }));
    if (!list.length) body.append(h('tr', {}, h('td', { colSpan: 3, class: 'hint', text: 'nothing stored yet' })));
  } catch (e) {
    if (obj === o) body.replaceChildren(h('tr', {}, h('td', { colSpan: 3, class: 'error', text: e.message })));
  }
}

async function runSql() {
  const o = obj;
  const sql = $('sql-input').value;
  $('sql-run').disabled = true;
  $('sql-error').hidden = true;
  try {
    const r = await api('POST', objectPath(o.cls, o.name) + '/sql', sql);
    if (obj === o) showResults(r.results);
  } catch (e) {
    if (obj !== o) return;
    $('sql-error').textContent = (e.body && e.body.readOnly ? 'Refused: ' : 'Error: ') + e.message;
    $('sql-error').hidden = false;
    showResults((e.body && e.body.results) || []);
  } finally {
    $('sql-run').disabled = false;
  }
}
function showResults(results) {
  $('sql-result').replaceChildren(...results.map((res) => h('div', { class: 'result' },
    h('table', {},
      h('thead', {}, h('tr', {}, ...res.columns.map((c) => h('th', { text: c })))),
      h('tbody', {}, ...res.rows.map((row) => h('tr', {}, ...row.map((v) => h('td', { class: 'cell', text: cellText(v) })))))),
    h('p', { class: 'hint', text: `${res.rows.length} row${res.rows.length === 1 ? '' : 's'}${res.truncated ? ' (cut: more rows than the host returns at once)' : ''}` }))));
  if (!results.length && $('sql-error').hidden) $('sql-result').append(h('p', { class: 'hint', text: 'done (no rows)' }));
}
$('sql-run').addEventListener('click', runSql);
$('sql-input').addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); runSql(); }
});

// --- a channel's history (channels app: ChannelWebSocket/<channel>, table channel_messages) ---
let hist = null;  // {channel, last, timer}
const HISTORY_PAGE = 500;
const HISTORY_SHOWN = 5000;
function openHistory(channel) {
  if (hist && hist.timer) clearTimeout(hist.timer);
  hist = null;
  $('history-channel').value = channel;
  $('history-lines').replaceChildren();
  if (!channel) { $('history-status').textContent = 'Enter a channel id.'; return; }
  hist = { channel, last: 0, timer: null };
  $('history-status').textContent = 'Reading…';
  pollHistory(hist);
}
function historyLine(m) {
  const who = m.user_id === undefined || m.user_id === m.username ? m.username : `${m.username} (${m.user_id})`;
  const id = m.seq ?? m.id;
  const thread = m.thread_id === null || m.thread_id === undefined ? '' : `  [thread ${m.thread_id}]`;
  return h('li', { 'data-id': String(id) },
    h('span', { class: 'meta', text: `${fmtTime(Number(m.timestamp))}  #${id}  ` }),
    h('span', { class: 'who', text: `${who}: ` }), h('span', { class: 'content', text: String(m.content) }),
    h('span', { class: 'meta', text: thread }));
}
async function pollHistory(state) {
  let full = false;
  try {
    const r = await api('POST', objectPath('ChannelWebSocket', state.channel) + '/sql',
      `SELECT rowid AS rowid_, * FROM channel_messages WHERE rowid > ${state.last} ORDER BY rowid LIMIT ${HISTORY_PAGE}`);
    if (hist !== state) return;
    const res = r.results[0];
    const list = $('history-lines');
    for (const row of res.rows) {
      const m = Object.fromEntries(res.columns.map((c, i) => [c, typeof row[i] === 'object' && row[i] !== null ? bytesText(row[i]) : row[i]]));
      state.last = m.rowid_;
      list.append(historyLine(m));
    }
    while (list.children.length > HISTORY_SHOWN) list.firstElementChild.remove();
    full = res.rows.length === HISTORY_PAGE;
    const count = list.children.length;
    $('history-status').textContent = `${count} message${count === 1 ? '' : 's'}` +
      ($('history-follow').checked ? ', following' : '');
  } catch (e) {
    if (hist !== state) return;
    $('history-status').textContent = e.status === 404 && /stored nothing|no object /.test(e.message)
      ? `No channel ${state.channel} yet` + ($('history-follow').checked ? '; waiting for it' : '')
      : e.message;
  }
  if (hist === state && (full || $('history-follow').checked)) {
    state.timer = setTimeout(() => pollHistory(state), full ? 0 : 1000);
  }
}
$('history-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const channel = $('history-channel').value.trim();
  const target = '#/history/' + enc(channel);
  if (location.hash === target) openHistory(channel); else location.hash = target;
});
$('history-follow').addEventListener('change', () => {
  if (hist && $('history-follow').checked && !hist.timer) pollHistory(hist);
});

// --- views and the one-second tick -------------------------------------------------------------
const VIEWS = ['objects', 'object', 'live', 'history'];
let current = { view: 'objects', args: [] };
function route() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').map((p) => { try { return decodeURIComponent(p); } catch (e) { return p; } });
  let view = VIEWS.includes(parts[0]) ? parts[0] : 'objects';
  if (view === 'object' && parts.length < 3) view = 'objects';
  current = { view, args: parts.slice(1) };
  for (const v of VIEWS) $('view-' + v).hidden = v !== view;
  const tab = view === 'object' ? 'objects' : view;
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.view === tab);
  if (view === 'object') openObject(parts[1], parts.slice(2).join('/')); else obj = null;
  if (view === 'history') openHistory(parts.slice(1).join('/'));
  else if (hist) { clearTimeout(hist.timer); hist = null; }
  tick();
}
window.addEventListener('hashchange', route);

let ticking = false;
async function tick() {
  if (ticking || !$('login').hidden) return;
  ticking = true;
  try {
    await pollMetrics();
    if (current.view === 'objects') {
      objects = await api('GET', '/objects');
      renderObjects();
    } else if (current.view === 'object' && obj) {
      await pollObject();
    }
    setStatus('ok', 'updated ' + new Date().toLocaleTimeString());
  } catch (e) {
    if (e.status !== 401) setStatus('error', e.message || String(e));
  } finally {
    ticking = false;
  }
}
setInterval(tick, 1000);
route();
)js";

// The answer to GET /ui without the admin token (when one is set): a form that asks for it.
inline constexpr char kDashboardLogin[] = R"page(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dohost dashboard: sign in</title>
<style>
  body { font: 14px/1.45 system-ui, sans-serif; background: #f7f7f5; color: #1f2428; }
  form { max-width: 26em; margin: 4em auto; background: #fff; border: 1px solid #d9dcdf;
         border-radius: 6px; padding: 1em 1.2em; }
  input, button { font: inherit; padding: .25em .5em; }
  .wrong { color: #c53030; }
</style>
</head>
<body>
<form method="get" action="/ui">
  <h1>dohost</h1>
  <p>The admin API of this host needs its token (<code>DOHOST_ADMIN_TOKEN</code>).</p>
  <!--message-->
  <p><label>Admin token <input name="token" type="password" autocomplete="current-password" autofocus></label>
  <button>Sign in</button></p>
</form>
</body>
</html>
)page";

}  // namespace dohost
