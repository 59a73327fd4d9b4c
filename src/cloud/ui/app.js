/*
 * litefs-cloud dashboard (docs/dashboard.md). Plain JS, no framework, no
 * inline script (the page's Content-Security-Policy forbids it). Every
 * value from the service reaches the page through textContent or SVG
 * attributes, never as HTML.
 *
 * The script talks to the API endpoints themselves with the session cookie
 * (same origin) and the session's CSRF token on every POST. Endpoints that
 * this service may not have yet (GET /dbs, /db/timeline, /db/preview,
 * /events) are used when present; without them the page falls back to
 * GET /pos and /db/info and says what is missing.
 */
'use strict';

const S = {
  session: null,      // {cluster, csrf, expires_ms}
  dbs: new Map(),     // name -> row (see listRow)
  hasDbs: null,       // GET /dbs exists
  dbsAt: 0,           // when S.dbs was last filled from GET /dbs
  db: null,           // name of the open database
  info: null,         // its /db/info
  view: { from: 0, to: 0 }, // timeline range (ms)
  tl: null,           // the last /db/timeline reply (or the fallback)
  cursor: null,       // keyboard cursor (ms)
  point: null,        // {txid, ts_ms, checksum}: the chosen point
  lastRestore: null,  // {db, txid, checksum, undo_txid}
  fetched: new Map(), // db -> the TXID of the latest state a node took (fetch events)
  live: null,         // EventSource or interval id
  ops: new Map(),     // op ID -> {what, bar, text}: a restore, fork or download under way
  previewSize: null,  // bytes of the chosen point (from its preview)
};

const TZ = Intl.DateTimeFormat().resolvedOptions().timeZone || 'local time';

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || ('HTTP ' + status));
    this.status = status;
    this.body = body || {};
  }
}

async function api(path, opts) {
  const o = Object.assign({ credentials: 'same-origin', headers: {} }, opts || {});
  if (o.method && o.method !== 'GET' && S.session) o.headers['X-CSRF-Token'] = S.session.csrf;
  let r;
  try {
    r = await fetch(path, o);
  } catch (e) {
    // The browser's own words ("Failed to fetch") say nothing to a person.
    throw new ApiError(0, { error: 'no answer from the service (it is down, restarting, or the network is)' });
  }
  let body = null;
  const text = await r.text();
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = { error: text.slice(0, 200) }; }
  if (!r.ok) {
    if (r.status === 401 && S.session && path !== '/ui/login') sessionEnded();
    throw new ApiError(r.status, body);
  }
  return body;
}

/* A 404 for an endpoint this service does not have (not a missing database). */
function missingEndpoint(e) {
  return e.status === 404 && /no such endpoint/i.test(e.message);
}

function q(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') u.set(k, String(v));
  return u.toString();
}

/* ---- Formatting ------------------------------------------------------- */

function hex16(v) {
  if (typeof v === 'string') return v;
  return Number(v).toString(16).padStart(16, '0');
}
function txidNum(v) { return typeof v === 'number' ? v : parseInt(v, 16); }
function bytes(n) {
  if (n === undefined || n === null) return '—';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0, x = Number(n);
  while (x >= 1024 && i < u.length - 1) { x /= 1024; i++; }
  return (i ? x.toFixed(x < 10 ? 1 : 0) : String(x)) + ' ' + u[i];
}
function pad(n, w) { return String(n).padStart(w || 2, '0'); }
function fmtLocal(ms) {
  const d = new Date(ms);
  return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + pad(d.getHours()) + ':' +
    pad(d.getMinutes()) + ':' + pad(d.getSeconds()) + '.' + pad(d.getMilliseconds(), 3);
}
function fmtUTC(ms) { return new Date(ms).toISOString().replace('T', ' ').replace('Z', ' UTC'); }
function ago(ms, now) {
  const s = Math.round(((now || Date.now()) - ms) / 1000);
  if (s < 0) return 'just now';
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.floor(s / 60) + ' min ago';
  if (s < 86400) return Math.floor(s / 3600) + ' h ago';
  return Math.floor(s / 86400) + ' d ago';
}
function timeCell(ms, now) {
  if (!ms) return el('span', { text: '—' });
  return el('span', {}, el('time', { datetime: new Date(ms).toISOString(), title: fmtUTC(ms), text: ago(ms, now) }),
    el('span', { cls: 'abs', text: fmtLocal(ms) }));
}
/* A performance mark at the next frame after a view was drawn: what
 * bench/dashboard_ui.py reads as "first paint" of that view. */
function painted(name) {
  if (performance.getEntriesByName(name).length) return;
  requestAnimationFrame(() => setTimeout(() => performance.mark(name), 0));
}
function notice(msg) {
  const n = $('notice');
  n.textContent = msg || '';
  n.hidden = !msg;
}

/* ---- Session ---------------------------------------------------------- */

function show(view) {
  for (const v of ['login', 'list', 'db']) $('view-' + v).hidden = v !== view;
  // Focus left in a view just hidden (the sign-in form, a link of the
  // list) would send the next Tab somewhere arbitrary: start at the top of
  // the content instead, as a page load would.
  const a = document.activeElement;
  if (!a || a === document.body || a.closest('[hidden]')) $('main').focus({ preventScroll: true });
}

function sessionEnded() {
  S.session = null;
  hint(false);
  stopLive();
  $('who').hidden = true;
  $('signout').hidden = true;
  $('login-error').textContent = 'Your session has ended (expired, signed out, or its token was revoked). Sign in again.';
  show('login');
}

async function signIn(ev) {
  ev.preventDefault();
  const input = $('token');
  $('login-error').textContent = '';
  $('login-btn').disabled = true;
  try {
    const s = await api('/ui/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: q({ token: input.value.trim() }),
    });
    input.value = '';
    started(s);
  } catch (e) {
    $('login-error').textContent = e.status === 429 ? 'Too many attempts: ' + e.message
      : e.status === 401 ? 'Sign-in refused: ' + e.message : 'Sign-in failed: ' + e.message;
    input.focus();
  } finally {
    $('login-btn').disabled = false;
  }
}

async function signOut() {
  const s = S.session;
  hint(false);
  stopLive();
  S.session = null;
  try {
    await fetch('/ui/logout', { method: 'POST', credentials: 'same-origin', headers: { 'X-CSRF-Token': s ? s.csrf : '' } });
  } catch (e) { /* signed out here either way */ }
  $('who').hidden = true;
  $('signout').hidden = true;
  $('login-error').textContent = '';
  show('login');
  $('token').focus();
}

function started(s) {
  S.session = s;
  hint(true);
  $('who').textContent = 'cluster ' + s.cluster;
  $('who').hidden = false;
  $('signout').hidden = false;
  // Live updates start once the first view knows whether GET /dbs (and
  // with it /events) exists.
  route().finally(() => {
    early.timeline = null; // the first view had its chance: never a stale one later
    return probeDbs().then(startLive);
  });
}

async function probeDbs() {
  if (S.hasDbs !== null) return;
  try {
    const r = (await takeEarlyDbs()) || await api('/dbs');
    S.hasDbs = true;
    S.dbsAt = Date.now();
    for (const d of r.databases || []) S.dbs.set(d.name, d);
  } catch (e) {
    if (missingEndpoint(e)) S.hasDbs = false;
  }
}

/* ---- Database list ---------------------------------------------------- */

/* One row of the list from GET /dbs, or from /pos + /db/info without it. */
async function loadList() {
  let rows = [], now = Date.now();
  if (S.hasDbs !== false) {
    try {
      const r = (await takeEarlyDbs()) || await api('/dbs');
      S.hasDbs = true;
      S.dbsAt = Date.now();
      rows = r.databases || [];
      if (r.now_ms) now = r.now_ms;
    } catch (e) {
      if (!missingEndpoint(e)) throw e;
      S.hasDbs = false;
    }
  }
  if (S.hasDbs === false) {
    const pos = await api('/pos');
    const names = Object.keys(pos).sort();
    rows = await Promise.all(names.map(async (name) => {
      const row = { name, txid: pos[name].txid, checksum: pos[name].postApplyChecksum };
      try {
        const i = await api('/db/info?' + q({ db: name }));
        Object.assign(row, { ts_ms: i.pos.ts_ms, page_size: i.page_size, pages: i.pages, size: i.page_size * i.pages,
          restorable: i.restorable, history_bytes: i.bytes, transactions: i.transactions });
      } catch (e) { /* a database deleted meanwhile */ }
      return row;
    }));
    notice('This service has no GET /dbs yet: last push, HWM and "pushing" are not shown.');
  }
  S.dbs = new Map(rows.map((r) => [r.name, r]));
  renderList(now);
}

function renderList(now) {
  const tb = $('db-rows');
  const rows = [...S.dbs.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
  tb.replaceChildren(...rows.map((r) => {
    const rs = r.restorable || {};
    const win = rs.min_ts_ms ? el('span', {}, el('span', { text: fmtLocal(rs.min_ts_ms) + ' →' }),
      el('span', { cls: 'abs', text: fmtLocal(rs.max_ts_ms) })) : el('span', { text: '—' });
    return el('tr', { 'data-db': r.name },
      el('td', {}, el('a', { href: '#/db/' + encodeURIComponent(r.name), text: r.name })),
      el('td', { cls: 'mono txid', text: hex16(r.txid) }),
      el('td', { cls: 'mono', text: hex16(r.checksum) }),
      el('td', { text: bytes(r.size) }),
      el('td', {}, timeCell(r.last_push_ms || r.ts_ms, now)),
      el('td', { cls: 'mono', text: r.hwm ? hex16(r.hwm) : '—' }),
      el('td', {}, win),
      el('td', { text: bytes(r.history_bytes) }),
      el('td', {}, el('span', { cls: 'badge' + (r.pushing ? ' on' : ''), text: r.pushing === undefined ? '—' : r.pushing ? 'pushing' : 'idle' })));
  }));
  $('list-empty').hidden = rows.length > 0;
  painted('list-painted');
  $('list-sub').textContent = rows.length + ' database' + (rows.length === 1 ? '' : 's') + ' · times in ' + TZ +
    ' (hover for UTC)';
}

/* ---- Database page ---------------------------------------------------- */

async function openDb(name) {
  if (S.db !== name) {
    S.db = name;
    S.point = null;
    S.tl = null;
    S.cursor = null;
    $('point').replaceChildren(el('p', { cls: 'sub', text: 'No point chosen yet: click the timeline, or type a time or a TXID.' }));
    $('preview').replaceChildren(el('p', { cls: 'sub', text: 'Choose a point to see its tables.' }));
    $('rows').replaceChildren();
    $('act-result').replaceChildren();
    $('act-progress').replaceChildren();
    $('act-error').textContent = '';
    $('point-error').textContent = '';
    setActions();
  }
  $('db-h').textContent = name;
  document.title = name + ' · LiteFS Cloud';
  $('zone-local').textContent = 'Your time (' + TZ + ')';
  // A database opened afresh: its whole window's timeline is asked for at
  // once, beside the summary (the first paint waits for one round trip).
  const fresh = !S.view.to || S.view.db !== name;
  const whole = fresh && S.hasDbs !== false
    ? takeEarlyTimeline(name) || api('/db/timeline?' + q({ db: name, max: tlMax($('tl-box').clientWidth) })).catch(() => null)
    : null;
  const info = await fetchInfo(name);
  S.info = info;
  renderSummary();
  const r = info.restorable;
  if (fresh) {
    const span = Math.max(r.max_ts_ms - r.min_ts_ms, 1000);
    S.view = { db: name, from: r.min_ts_ms - span * 0.02, to: r.max_ts_ms + span * 0.02 };
  }
  const tl = whole && await whole;
  if (tl && S.db === name && Number.isFinite(tl.from_ms) && Number.isFinite(tl.to_ms) && tl.to_ms > tl.from_ms) {
    S.view = { db: name, from: tl.from_ms, to: tl.to_ms };
    S.tl = tl;
    drawTimeline();
    return;
  }
  await loadTimeline();
}

/* What the page shows of one database, in /db/info's shape: from GET /dbs
 * where the service has it (it reads an in-memory index; /db/info walks
 * the catalog, seconds for a million transactions), else /db/info. */
async function fetchInfo(name) {
  await probeDbs();
  if (!S.hasDbs) return api('/db/info?' + q({ db: name }));
  // A row fetched within the last second (the probe just made) will do.
  let d = Date.now() - S.dbsAt <= 1000 ? S.dbs.get(name) : null;
  if (!d || !d.restorable) {
    const r = await api('/dbs');
    S.dbsAt = Date.now();
    for (const x of r.databases || []) S.dbs.set(x.name, x);
    d = S.dbs.get(name);
  }
  if (!d || !d.restorable) throw new ApiError(404, { error: 'database not found: ' + name });
  return { pos: { txid: hex16(d.txid), checksum: hex16(d.checksum), ts_ms: d.ts_ms }, page_size: d.page_size,
    pages: d.pages, restorable: Object.assign({}, d.restorable, { min_txid: hex16(d.restorable.min_txid),
      max_txid: hex16(d.restorable.max_txid) }), bytes: d.history_bytes, transactions: d.transactions, snapshots: [] };
}

function renderSummary() {
  const i = S.info, row = S.dbs.get(S.db) || {};
  const items = [
    ['TXID', i.pos.txid], ['Checksum', i.pos.checksum],
    ['Size', bytes(i.page_size * i.pages) + ' (' + i.pages + ' × ' + i.page_size + ' B pages)'],
    ['Last transaction', fmtLocal(i.pos.ts_ms) + ' (' + ago(i.pos.ts_ms) + ')'],
    ['Restorable', i.restorable.min_txid + ' → ' + i.restorable.max_txid],
    ['Restorable from', fmtLocal(i.restorable.min_ts_ms) + ' to ' + fmtLocal(i.restorable.max_ts_ms)],
    ['History stored', bytes(i.bytes) + ' · ' + i.transactions + ' transactions'],
    ['HWM', row.hwm ? hex16(row.hwm) : '—'],
    ['Pushing now', row.pushing === undefined ? '—' : row.pushing ? 'yes' : 'no'],
  ];
  $('db-summary').replaceChildren(...items.map(([k, v]) => el('div', {}, el('dt', { text: k }), el('dd', { cls: 'mono', text: String(v) }))));
}

/* ---- Timeline --------------------------------------------------------- */

let tlSeq = 0;
async function loadTimeline() {
  const seq = ++tlSeq, v = S.view, name = S.db;
  const width = Math.max(200, $('tl-box').clientWidth || 800);
  let tl;
  try {
    tl = await api('/db/timeline?' + q({ db: name, from_ms: Math.floor(v.from), to_ms: Math.ceil(v.to), max: tlMax(width) }));
  } catch (e) {
    if (!missingEndpoint(e)) throw e;
    // No GET /db/timeline yet: what /db/info has (window and snapshots).
    tl = { mode: 'none', transactions: [], buckets: [], compactions: [],
      snapshots: S.info.snapshots || [], window: S.info.restorable, missing: true };
  }
  if (seq !== tlSeq || name !== S.db) return;
  S.tl = tl;
  drawTimeline();
}

const NS = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) {
    const t = document.createElementNS(NS, 'title');
    t.textContent = text;
    e.append(t);
  }
  return e;
}

function niceStep(span) {
  const steps = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4, 3e5, 6e5, 9e5,
    18e5, 36e5, 72e5, 108e5, 216e5, 432e5, 864e5, 1728e5, 6048e5];
  for (const s of steps) if (span / s <= 8) return s;
  return 6048e5;
}

function drawTimeline() {
  const box = $('tl-box'), g = $('tl');
  const W = Math.max(200, box.clientWidth || 800), H = 150, top = 18, base = 112;
  g.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
  const v = S.view, span = Math.max(v.to - v.from, 1);
  const x = (ms) => ((ms - v.from) / span) * W;
  const kids = [];
  const w = S.tl.window || S.info.restorable;
  if (w && w.min_ts_ms) {
    const a = Math.max(0, x(w.min_ts_ms)), b = Math.min(W, x(w.max_ts_ms));
    if (b >= a) kids.push(svg('rect', { x: a, y: top, width: Math.max(b - a, 2), height: base - top, fill: '#dbeafe' }));
  }
  // Axis with ticks at round times (local).
  const step = niceStep(span);
  const off = new Date().getTimezoneOffset() * 60000;
  for (let t = Math.ceil((v.from - off) / step) * step + off; t <= v.to; t += step) {
    const X = x(t);
    kids.push(svg('line', { x1: X, x2: X, y1: base, y2: base + 4, stroke: '#6b7280' }));
    const lbl = step >= 864e5 ? fmtLocal(t).slice(5, 10) : step >= 6e4 ? fmtLocal(t).slice(11, 16) :
      step >= 1e3 ? fmtLocal(t).slice(11, 19) : fmtLocal(t).slice(17, 23);
    kids.push(svg('text', { x: X + 2, y: base + 14 }, undefined));
    kids[kids.length - 1].textContent = lbl;
  }
  kids.push(svg('line', { x1: 0, x2: W, y1: base, y2: base, stroke: '#6b7280' }));
  let status;
  if (S.tl.mode === 'buckets') {
    const max = Math.max(1, ...S.tl.buckets.map((b) => b.count));
    for (const b of S.tl.buckets) {
      const a = x(b.from_ms), c = x(b.to_ms);
      const h = Math.max(2, (Math.log1p(b.count) / Math.log1p(max)) * (base - top - 4));
      kids.push(svg('rect', { x: a, y: base - h, width: Math.max(1, c - a - 0.5), height: h, fill: '#2563eb', 'class': 'bucket' },
        b.count + ' transactions, TXID ' + hex16(b.first_txid) + '–' + hex16(b.last_txid) + ', ' + fmtLocal(b.from_ms) + ' – ' + fmtLocal(b.to_ms)));
    }
    const n = S.tl.buckets.reduce((s, b) => s + b.count, 0);
    status = n + ' transactions in this range, grouped (zoom in to see each one)';
  } else if (S.tl.mode === 'transactions') {
    for (const t of S.tl.transactions) {
      const X = x(t.ts_ms);
      kids.push(svg('line', { x1: X, x2: X, y1: top + 20, y2: base, stroke: t.restorable === false ? '#93c5fd' : '#2563eb', 'stroke-width': 2, 'class': 'tx' },
        'TXID ' + hex16(t.txid) + ' · ' + fmtLocal(t.ts_ms) + ' · ' + bytes(t.size) + (t.restorable === false ? ' (inside a batch: not restorable)' : '')));
    }
    status = S.tl.transactions.length + ' transactions in this range (each line is one)';
  } else {
    status = 'This service has no GET /db/timeline yet: only the restorable window and snapshots are shown.';
  }
  for (const s of S.tl.snapshots || []) {
    const X = x(s.ts_ms);
    if (X < -5 || X > W + 5) continue;
    kids.push(svg('path', { d: 'M' + (X - 5) + ' ' + (top - 12) + 'h10l-5 9z', fill: '#a16207', 'class': 'snap' },
      'snapshot at TXID ' + hex16(s.txid) + ' (L' + s.level + ', ' + bytes(s.size) + ') · ' + fmtLocal(s.ts_ms)));
  }
  for (const c of S.tl.compactions || []) {
    const a = Math.max(0, x(c.from_ms)), b = Math.min(W, x(c.to_ms));
    if (b < 0 || a > W) continue;
    const y = base + 18 + Math.min(c.level, 4) * 4;
    kids.push(svg('rect', { x: a, y, width: Math.max(2, b - a), height: 3, fill: '#7c3aed', 'class': 'comp' },
      'L' + c.level + ' compaction: TXID ' + hex16(c.from_txid) + '–' + hex16(c.to_txid)));
  }
  if (S.point) {
    const X = x(S.point.ts_ms);
    kids.push(svg('line', { x1: X, x2: X, y1: 2, y2: base + 2, stroke: '#dc2626', 'stroke-width': 2, 'class': 'pick' }));
  }
  if (S.cursor !== null) {
    const X = x(S.cursor);
    kids.push(svg('line', { x1: X, x2: X, y1: top, y2: base, stroke: '#111827', 'stroke-dasharray': '3 3' }));
  }
  g.replaceChildren(...kids);
  painted('timeline-painted');
  $('tl-status').textContent = fmtLocal(v.from) + ' → ' + fmtLocal(v.to) + ' (' + TZ + ') · ' + status;
  for (const b of document.querySelectorAll('[data-range]')) b.setAttribute('aria-pressed', String(Math.abs(span - Number(b.dataset.range)) < 1));
}

function zoom(factor, centre) {
  const v = S.view, c = centre === undefined ? (v.from + v.to) / 2 : centre;
  let span = Math.max(20, Math.min((v.to - v.from) * factor, 40 * 864e5));
  const ratio = (c - v.from) / (v.to - v.from);
  S.view = { db: v.db, from: c - span * ratio, to: c - span * ratio + span };
  scheduleTimeline();
}
function setRange(span) {
  const w = S.info.restorable;
  const end = S.point ? S.point.ts_ms + span / 2 : w.max_ts_ms + span * 0.02;
  S.view = { db: S.db, from: end - span, to: end };
  scheduleTimeline();
}
function pan(frac) {
  const d = (S.view.to - S.view.from) * frac;
  S.view = { db: S.db, from: S.view.from + d, to: S.view.to + d };
  scheduleTimeline();
}
let tlTimer = 0;
function scheduleTimeline() {
  if (S.tl) drawTimeline();
  clearTimeout(tlTimer);
  tlTimer = setTimeout(() => loadTimeline().catch(showErr('point-error')), 120);
}
function msAt(clientX) {
  const r = $('tl-box').getBoundingClientRect();
  return S.view.from + ((clientX - r.left) / r.width) * (S.view.to - S.view.from);
}

/* The transaction nearest to ms in the current reply, for keys and clicks. */
function nearestTx(ms, dir) {
  const txs = (S.tl && S.tl.transactions) || [];
  let best = null;
  for (const t of txs) {
    if (dir > 0 && t.ts_ms <= ms) continue;
    if (dir < 0 && t.ts_ms >= ms) continue;
    if (!best || Math.abs(t.ts_ms - ms) < Math.abs(best.ts_ms - ms)) best = t;
  }
  return best;
}

function tlKey(ev) {
  const v = S.view, span = v.to - v.from;
  if (S.cursor === null) S.cursor = S.point ? S.point.ts_ms : (v.from + v.to) / 2;
  if (ev.key === 'ArrowLeft' || ev.key === 'ArrowRight') {
    const dir = ev.key === 'ArrowLeft' ? -1 : 1;
    const t = S.tl && S.tl.mode === 'transactions' ? nearestTx(S.cursor, dir) : null;
    S.cursor = t ? t.ts_ms : S.cursor + dir * span / 50;
    if (S.cursor < v.from || S.cursor > v.to) pan(dir * 0.5); else drawTimeline();
    $('tl-status').textContent = 'Cursor at ' + fmtLocal(S.cursor) + ' — Enter chooses it';
  } else if (ev.key === '+' || ev.key === '=') zoom(0.5, S.cursor);
  else if (ev.key === '-') zoom(2, S.cursor);
  else if (ev.key === 'Enter' || ev.key === ' ') pickTime(Math.round(S.cursor));
  else return;
  ev.preventDefault();
}

/* ---- Choosing a point ------------------------------------------------- */

function showErr(id) {
  return (e) => { $(id).textContent = e.message; };
}

async function pick(params) {
  $('point-error').textContent = '';
  try {
    const r = await api('/db/restore/check?' + q(Object.assign({ db: S.db }, params)));
    setPoint({ txid: r.txID, checksum: r.postApplyChecksum, ts_ms: Date.parse(r.timestamp) });
  } catch (e) {
    $('point-error').textContent = e.message;
    const n = e.body && e.body.nearest;
    if (n) {
      const kids = [];
      for (const k of ['before', 'after']) if (n[k]) {
        kids.push(el('button', { type: 'button', cls: 'quiet', text: 'Use ' + k + ': TXID ' + n[k].txID,
          onclick: () => pick({ txid: n[k].txID }) }));
      }
      $('point-error').append(' ', ...kids);
    }
  }
}
function pickTime(ms) { return pick({ timestamp: ms }); }

function setPoint(p) {
  S.point = p;
  S.cursor = null;
  S.previewSize = null;
  $('point').replaceChildren(el('dl', {},
    el('dt', { text: 'TXID' }), el('dd', { cls: 'mono', id: 'point-txid', text: p.txid }),
    el('dt', { text: 'Checksum' }), el('dd', { cls: 'mono', id: 'point-checksum', text: p.checksum }),
    el('dt', { text: 'Time (' + TZ + ')' }), el('dd', { cls: 'mono', text: fmtLocal(p.ts_ms) }),
    el('dt', { text: 'Time (UTC)' }), el('dd', { cls: 'mono', text: fmtUTC(p.ts_ms) })));
  if (S.tl) drawTimeline();
  setActions();
  loadPreview().catch(showErr('point-error'));
}

/* "2026-12-04 21:30", "2026-12-04T21:30:00.250", with Z or +01:00, or ms. */
function parseTime(text, zone) {
  const s = text.trim();
  if (/^\d{11,}$/.test(s)) return Number(s);
  if (/(Z|[+-]\d\d:?\d\d)$/i.test(s)) {
    const t = Date.parse(s.replace(' ', 'T'));
    return isNaN(t) ? null : t;
  }
  const m = /^(\d{4})-(\d\d)-(\d\d)(?:[ T](\d\d):(\d\d)(?::(\d\d)(?:\.(\d{1,3}))?)?)?$/.exec(s);
  if (!m) return null;
  const f = [m[1], m[2] - 1, m[3], m[4] || 0, m[5] || 0, m[6] || 0, (m[7] || '0').padEnd(3, '0')].map(Number);
  return zone === 'utc' ? Date.UTC(...f) : new Date(...f).getTime();
}
function tsHint() {
  const t = parseTime($('pick-ts').value, $('pick-zone').value);
  $('pick-ts-hint').textContent = t === null ? (($('pick-ts').value.trim() ? 'Not a time: use YYYY-MM-DD HH:MM:SS' : '') || '\u00a0')
    : 'That is ' + fmtLocal(t) + ' in ' + TZ + ' = ' + fmtUTC(t);
}

/* ---- Preview ---------------------------------------------------------- */

async function loadPreview() {
  const p = S.point, box = $('preview');
  box.replaceChildren(el('p', { cls: 'sub', text: 'Loading the tables of TXID ' + p.txid + '…' }));
  $('rows').replaceChildren();
  let r;
  try {
    r = await api('/db/preview?' + q({ db: S.db, txid: p.txid }));
  } catch (e) {
    if (missingEndpoint(e)) {
      box.replaceChildren(el('p', { cls: 'sub', text: 'This service has no GET /db/preview yet: download the point to look inside.' }));
      return;
    }
    throw e;
  }
  if (S.point !== p) return;
  S.previewSize = r.page_size * r.pages;
  setActions();
  const rows = r.tables.map((t) => el('tr', { 'data-table': t.name },
    el('td', {}, t.type === 'table' ? el('button', { type: 'button', text: t.name, 'aria-label': 'Show the first rows of ' + t.name,
      onclick: () => loadRows(t.name).catch(showErr('point-error')) }) : el('span', { text: t.name })),
    el('td', { text: t.type }),
    el('td', { cls: 'rowcount', text: t.rows === null || t.rows === undefined ? '—' : String(t.rows) }),
    el('td', {}, el('details', {}, el('summary', { text: 'schema' }), el('pre', { text: t.sql || '' })))));
  box.replaceChildren(
    el('p', { cls: 'sub', text: 'TXID ' + r.txid + ' · ' + bytes(r.page_size * r.pages) + (r.truncated ? ' · list cut short' : '') }),
    el('div', { cls: 'scroll' }, el('table', { id: 'pv-table' },
      el('caption', { cls: 'sr', text: 'Tables at the chosen point' }),
      el('thead', {}, el('tr', {}, ...['Name', 'Type', 'Rows', 'Schema'].map((h) => el('th', { scope: 'col', text: h })))),
      el('tbody', {}, ...rows))));
}

function cellText(v) {
  if (v === null) return 'NULL';
  if (typeof v === 'object' && v.blob) return '<blob ' + v.size + ' B> ' + (v.hex || '');
  return String(v);
}

async function loadRows(table) {
  const p = S.point;
  const r = await api('/db/preview/rows?' + q({ db: S.db, txid: p.txid, table, limit: 50, offset: 0 }));
  if (S.point !== p) return;
  $('rows').replaceChildren(
    el('h3', { text: 'First rows of ' + table + ' (' + r.rows.length + ' of ' + r.total + ')' }),
    el('div', { cls: 'scroll' }, el('table', { id: 'rows-table' },
      el('thead', {}, el('tr', {}, ...r.columns.map((c) => el('th', { scope: 'col', text: typeof c === 'string' ? c : c.name })))),
      el('tbody', {}, ...r.rows.map((row) => el('tr', {}, ...row.map((v) => el('td', { cls: 'mono', text: cellText(v) }))))))));
}

/* ---- Progress of a long action ---------------------------------------
 *
 * A restore, fork or download names itself with ?op=ID (random, made here)
 * and the service reports on /events: `progress` {op, phase, done, total}
 * while it rebuilds the state from the stored history (bytes) and writes
 * it as a new transaction (pages); for a download `ready` {op, size} when
 * the file is built and its sending starts (the browser's own download
 * then shows the bytes, from Content-Length), or `failed` {op, error}.
 * Without a live event stream the page still works, with no percentage. */

function opId() {
  return 'op-' + Array.from(crypto.getRandomValues(new Uint32Array(3)), (n) => n.toString(36)).join('');
}

function opStart(what) {
  const id = opId();
  const text = el('span', { id: 'op-text', text: what + ': starting…' });
  const bar = el('progress', { id: 'op-bar', max: '100', 'aria-labelledby': 'op-text' });
  $('act-progress').replaceChildren(el('div', { cls: 'progress', 'data-op': id }, el('p', {}, text), bar));
  S.ops.set(id, { what, bar, text });
  return id;
}

/* An operation answered: its progress line goes (unless a later one took
 * the place). */
function opDone(id) {
  S.ops.delete(id);
  const box = $('act-progress').firstElementChild;
  if (box && box.dataset.op === id) $('act-progress').replaceChildren();
}

const PHASES = {
  build: ['reading its history', (d) => bytes(d.done) + ' of ' + bytes(d.total)],
  write: ['writing the new transaction', (d) => d.done + ' of ' + d.total + ' pages'],
};

function onProgress(d) {
  const o = S.ops.get(d.op);
  if (!o) return; // another page's operation, or one already answered
  const pct = d.total ? Math.floor((d.done * 100) / d.total) : 100;
  const ph = PHASES[d.phase] || [d.phase, (x) => x.done + ' of ' + x.total];
  o.text.textContent = o.what + ': ' + ph[0] + ', ' + ph[1](d) + ' (' + pct + '%)';
  o.bar.value = pct;
}

/* A download's file is built: the browser takes over. */
function onReady(d) {
  const o = S.ops.get(d.op);
  if (!o) return;
  S.ops.delete(d.op);
  o.bar.value = 100;
  o.text.textContent = o.what + ': the file is ready (' + bytes(d.size) + '); your browser is downloading it ' +
    '(its downloads show how far it got).';
}

function onFailed(d) {
  const o = S.ops.get(d.op);
  if (!o) return;
  opDone(d.op);
  $('act-error').textContent = o.what + ' failed: ' + d.error;
}

/* ---- Actions ---------------------------------------------------------- */

function setActions() {
  const p = S.point, on = !!p;
  $('restore-btn').disabled = !on;
  $('fork-btn').disabled = !on;
  const a = $('download');
  if (on) {
    a.href = downloadUrl(null);
    a.setAttribute('download', S.db.replace(/\.(db|sqlite3?)$/, '') + '-' + p.txid + '.db');
    a.classList.remove('disabled');
    a.removeAttribute('aria-disabled');
    a.textContent = 'Download TXID ' + p.txid + (S.previewSize ? ' (' + bytes(S.previewSize) + ')' : '');
  } else {
    a.removeAttribute('href');
    a.classList.add('disabled');
    a.setAttribute('aria-disabled', 'true');
    a.textContent = 'Download';
  }
}

function downloadUrl(op) {
  return '/db/snapshot?' + q({ db: S.db, format: 'sqlite', txid: S.point.txid, op });
}

/* A download that the page can follow: the link gets a fresh op ID just
 * before the browser follows it. */
function startDownload(ev) {
  if (!S.point) { ev.preventDefault(); return; }
  $('act-error').textContent = '';
  const live = S.live instanceof EventSource && S.live.readyState === EventSource.OPEN;
  $('download').href = downloadUrl(live ? opStart('Download of TXID ' + S.point.txid) : null);
}

function openRestore() {
  $('rd-what').textContent = 'Restore ' + S.db + ' to TXID ' + S.point.txid + ' (' + fmtLocal(S.point.ts_ms) +
    '). The current state stays in the history: you can undo this.';
  $('rd-confirm').value = '';
  $('rd-go').disabled = true;
  $('restore-dialog').showModal();
  $('rd-confirm').focus();
}

async function doRestore(txid, undoOf) {
  const name = S.db, before = S.info ? S.info.pos.txid : null;
  $('act-error').textContent = '';
  const op = opStart((undoOf ? 'Undoing the restore of ' : 'Restoring ') + name + ' to TXID ' + txid);
  try {
    const r = await api('/db/restore?' + q({ db: name, txid, op }), { method: 'POST' });
    opDone(op);
    S.dbsAt = 0; // the database moved: no cached row
    S.lastRestore = { db: name, txid: r.txID, checksum: r.postApplyChecksum, undo_txid: r.undo_txid || before, applied: false };
    // The primary often takes the restored state within milliseconds, so
    // its fetch event can arrive before this reply is handled.
    const f = S.fetched.get(name);
    if (f && txidNum(f) >= txidNum(r.txID)) {
      S.lastRestore.applied = hex16(f);
      S.lastRestore.fetched = true;
    }
    renderRestore(undoOf);
    await openDb(name);
  } catch (e) {
    opDone(op);
    $('act-result').replaceChildren();
    $('act-error').textContent = 'Restore failed: ' + e.message;
  }
}

function renderRestore(undoOf) {
  const L = S.lastRestore;
  const state = L.applied ? el('span', { cls: 'ok', id: 'applied', text: L.fetched
    ? 'Applied: the primary took the restored state (TXID ' + L.applied + ').'
    : 'Applied: a node pushed TXID ' + L.applied + ' on top of the restored state.' })
    : el('span', { id: 'applied', text: 'Waiting for the primary to apply it (shown when a node pushes on top of it).' });
  $('act-result').replaceChildren(el('div', { cls: 'box' },
    el('p', {}, el('strong', { text: undoOf ? 'Restore undone. ' : 'Restored. ' }),
      'New TXID ', el('code', { id: 'new-txid', text: L.txid }), ' (checksum ', el('code', { text: L.checksum }), '). ',
      'Undo point: TXID ', el('code', { id: 'undo-txid', text: L.undo_txid || '—' }), '.'),
    el('p', {}, state),
    L.undo_txid ? el('button', { type: 'button', id: 'undo-btn', text: 'Undo this restore',
      onclick: () => doRestore(L.undo_txid, L.txid) }) : null));
}

async function doFork(ev) {
  ev.preventDefault();
  const as = $('fork-name').value.trim();
  $('act-error').textContent = '';
  const op = opStart('Forking TXID ' + S.point.txid + ' into ' + as);
  try {
    const r = await api('/db/restore?' + q({ db: S.db, txid: S.point.txid, as, op }), { method: 'POST' });
    opDone(op);
    $('act-result').replaceChildren(el('div', { cls: 'box' }, el('p', {}, 'Forked into ',
      el('a', { href: '#/db/' + encodeURIComponent(as), id: 'fork-link', text: as }), ' at TXID ', el('code', { text: r.txID }), '.')));
    $('fork-name').value = '';
    loadList().catch(() => {});
  } catch (e) {
    opDone(op);
    $('act-result').replaceChildren();
    $('act-error').textContent = 'Fork failed: ' + e.message;
  }
}

/* ---- Live updates ----------------------------------------------------- */

/* A position moved: the list row, the open page, a restore's state. */
function onPos(db, txid, checksum, ts_ms, hwm) {
  const row = S.dbs.get(db) || { name: db };
  Object.assign(row, { txid, checksum });
  if (ts_ms) row.ts_ms = row.last_push_ms = ts_ms;
  if (hwm) row.hwm = hwm;
  S.dbs.set(db, row);
  const L = S.lastRestore;
  if (L && L.db === db && !L.applied && txidNum(txid) > txidNum(L.txid)) {
    L.applied = hex16(txid);
    if (S.db === db) renderRestore(false);
  }
}

function startLive() {
  stopLive();
  if (!S.session) return;
  if (S.hasDbs) {
    const es = new EventSource('/events');
    es.addEventListener('pos', (m) => {
      const d = JSON.parse(m.data);
      onPos(d.db, d.txid, d.checksum, d.ts_ms, d.hwm);
      refreshViews();
    });
    es.addEventListener('restore', () => refreshViews(true));
    es.addEventListener('progress', (m) => onProgress(JSON.parse(m.data)));
    es.addEventListener('ready', (m) => onReady(JSON.parse(m.data)));
    es.addEventListener('failed', (m) => onFailed(JSON.parse(m.data)));
    es.addEventListener('lost', () => refreshViews(true));
    // A node took the latest state: after a restore, the primary applying it.
    es.addEventListener('fetch', (m) => {
      const d = JSON.parse(m.data), L = S.lastRestore;
      S.fetched.set(d.db, d.txid);
      if (L && !L.applied && L.db === d.db && txidNum(d.txid) >= txidNum(L.txid)) {
        L.applied = hex16(d.txid);
        L.fetched = true;
        if (S.db === d.db) renderRestore(false);
      }
    });
    es.onopen = () => { $('live').textContent = 'live'; };
    es.onerror = () => {
      $('live').textContent = 'reconnecting…';
      // An ended session would make the browser retry forever: stop then.
      api('/ui/session').then((x) => { if (!x.signed_in && S.session) sessionEnded(); }).catch(() => {});
    };
    S.live = es;
  } else {
    $('live').textContent = 'updating every 2 s';
    S.live = setInterval(poll, 2000);
  }
}
function stopLive() {
  if (!S.live) return;
  if (S.live instanceof EventSource) S.live.close(); else clearInterval(S.live);
  S.live = null;
  $('live').textContent = '';
}
async function poll() {
  if (!S.session) return;
  try {
    const pos = await api('/pos');
    for (const [db, p] of Object.entries(pos)) {
      const old = S.dbs.get(db);
      if (!old || old.txid !== p.txid) onPos(db, p.txid, p.postApplyChecksum, Date.now(), null);
    }
    refreshViews();
  } catch (e) { /* the next tick retries; a 401 signs out */ }
}
let refreshTimer = 0;
function refreshViews(full) {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    if (!S.session) return;
    if (!$('view-list').hidden) (full ? loadList() : Promise.resolve(renderList())).catch(() => {});
    if (!$('view-db').hidden && S.db) {
      fetchInfo(S.db).then((i) => { S.info = i; renderSummary(); }).catch(() => {});
    }
  }, 300);
}

/* ---- Routing and start ------------------------------------------------ */

async function route() {
  if (!S.session) { show('login'); return; }
  const h = location.hash;
  try {
    if (h.startsWith('#/db/')) {
      show('db');
      await openDb(decodeURIComponent(h.slice(5)));
    } else {
      show('list');
      document.title = 'Databases · LiteFS Cloud';
      await loadList();
    }
  } catch (e) {
    if (e.status !== 401) notice('Could not load this page: ' + e.message);
  }
}

function wire() {
  $('login-form').addEventListener('submit', signIn);
  $('signout').addEventListener('click', signOut);
  window.addEventListener('hashchange', route);
  for (const b of document.querySelectorAll('[data-range]')) b.addEventListener('click', () => setRange(Number(b.dataset.range)));
  $('tl-fit').addEventListener('click', () => {
    const w = S.info.restorable, span = Math.max(w.max_ts_ms - w.min_ts_ms, 1000);
    S.view = { db: S.db, from: w.min_ts_ms - span * 0.02, to: w.max_ts_ms + span * 0.02 };
    scheduleTimeline();
  });
  $('tl-in').addEventListener('click', () => zoom(0.5));
  $('tl-out').addEventListener('click', () => zoom(2));
  $('tl-left').addEventListener('click', () => pan(-0.5));
  $('tl-right').addEventListener('click', () => pan(0.5));
  $('tl-box').addEventListener('click', (ev) => {
    const ms = msAt(ev.clientX);
    const span = S.view.to - S.view.from, t = nearestTx(ms, 0);
    // A click within 6 px of a transaction line takes that transaction.
    if (t && Math.abs(t.ts_ms - ms) < span * 6 / $('tl-box').clientWidth) pick({ txid: hex16(t.txid) });
    else pickTime(Math.round(ms));
  });
  $('tl-box').addEventListener('wheel', (ev) => { ev.preventDefault(); zoom(ev.deltaY > 0 ? 1.5 : 1 / 1.5, msAt(ev.clientX)); }, { passive: false });
  $('tl-box').addEventListener('keydown', tlKey);
  $('pick-ts').addEventListener('input', tsHint);
  $('pick-zone').addEventListener('change', tsHint);
  $('pick-ts-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = parseTime($('pick-ts').value, $('pick-zone').value);
    if (t === null) { $('point-error').textContent = 'Not a time: use YYYY-MM-DD HH:MM:SS (or RFC 3339 with Z or an offset)'; return; }
    pickTime(t);
  });
  $('pick-txid-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = $('pick-txid').value.trim();
    if (!v) return;
    pick({ txid: v });
  });
  $('restore-btn').addEventListener('click', openRestore);
  $('rd-confirm').addEventListener('input', () => { $('rd-go').disabled = $('rd-confirm').value !== S.db; });
  $('rd-cancel').addEventListener('click', () => $('restore-dialog').close());
  $('restore-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    if ($('rd-confirm').value !== S.db) return;
    $('restore-dialog').close();
    doRestore(S.point.txid, null);
  });
  $('fork-form').addEventListener('submit', doFork);
  $('download').addEventListener('click', startDownload);
  window.addEventListener('resize', () => { if (S.tl && !$('view-db').hidden) drawTimeline(); });
  setInterval(() => { if (!$('view-list').hidden && S.session) renderList(); }, 15000);
}

/* ---- Early requests ---------------------------------------------------
 *
 * A browser that was signed in last time (a hint in localStorage, not a
 * secret: the cookie decides) asks for the view's data at load, beside
 * GET /ui/session, instead of after it and after the view's first layout:
 * GET /dbs, and for #/db/NAME its whole-window timeline, with the bucket
 * count worked out from the window's width (the CSS's paddings) rather
 * than from a layout. Each answer is used once, by the first view that
 * wants it; a failed one (the session ended meanwhile) is just not used. */
const HINT = 'lfsc-signed-in';
const early = { dbs: null, timeline: null };

function hint(on) {
  try { if (on) localStorage.setItem(HINT, '1'); else localStorage.removeItem(HINT); } catch (e) { /* private mode */ }
}

/* Buckets for the timeline's width: about one per 2 px. */
function tlMax(width) {
  return Math.floor(Math.max(200, width || 800) / 2);
}

function askEarly() {
  let signedIn = false;
  try { signedIn = localStorage.getItem(HINT) === '1'; } catch (e) { /* no storage: no early requests */ }
  if (!signedIn) return;
  early.dbs = api('/dbs').catch(() => null);
  if (location.hash.startsWith('#/db/')) {
    const name = decodeURIComponent(location.hash.slice(5));
    const phone = window.innerWidth <= 600; // app.css: paddings of main, .card and .tl-box's border
    const width = Math.min(window.innerWidth, 1240) - (phone ? 20 + 22 + 2 : 32 + 34 + 2);
    early.timeline = { name, reply: api('/db/timeline?' + q({ db: name, max: tlMax(width) })).catch(() => null) };
  }
}

function takeEarlyDbs() {
  const p = early.dbs;
  early.dbs = null;
  return p || Promise.resolve(null);
}

function takeEarlyTimeline(name) {
  const t = early.timeline;
  early.timeline = null;
  return t && t.name === name ? t.reply : null;
}

async function boot() {
  askEarly();
  wire();
  try {
    const s = await api('/ui/session');
    if (s && s.signed_in) { started(s); return; }
  } catch (e) { /* the sign-in form it is */ }
  show('login');
}

document.addEventListener('DOMContentLoaded', boot);
