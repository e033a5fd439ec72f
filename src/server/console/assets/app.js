// BlinkChamber operator console: plain ES2020, no dependencies. It calls only the
// documented /v1 API with the operator's bearer token, kept in sessionStorage (this tab).
'use strict';

const TOKEN_KEY = 'blinkchamber.console.token';
const POLL_MS = 2000;
const HISTORY_MS = 5 * 60 * 1000;
const PAGE_SIZE = 50;
const PRIORITIES = ['high', 'normal', 'low'];
const PAGES = [
  ['overview', 'Overview'],
  ['queues', 'Queues'],
  ['dead-letters', 'Dead letters'],
  ['sessions', 'Sessions'],
  ['rate-limits', 'Rate limits'],
  ['cache', 'Cache'],
];

const state = {
  token: null,
  access: null, // "full" | "read-only"
  gen: 0, // bumped on every navigation; stale async work checks it
  timers: [],
  history: [], // {t, depth:{high,normal,low}, counters}
  dead: { type: '', contains: '', offset: 0, selected: null },
  sessionsUser: '',
  rlWindow: '5m',
};

// ---------------------------------------------------------------- DOM helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  if (!attrs) return;
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') el.textContent = String(v);
    else if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'testid') el.setAttribute('data-testid', v);
    else if (k === 'class') el.setAttribute('class', v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

const $ = (sel, root = document) => root.querySelector(sel);

function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

// Replaces el's children (null, false and arrays allowed, as in h()).
function fill(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

function tableWrap(caption, headers, body) {
  return h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': caption },
    h('table', null,
      h('caption', { text: caption }),
      h('thead', null, h('tr', null, headers.map((t) => t.startsWith('#')
        ? h('th', { scope: 'col', class: 'num', text: t.slice(1) })
        : h('th', { scope: 'col', text: t })))),
      body));
}

function section(title, ...children) {
  return h('section', { class: 'card' }, h('h2', { text: title }), children);
}

function field(label, value, testid) {
  return [h('dt', { text: label }), h('dd', { testid, text: value })];
}

function canWrite() {
  return state.access === 'full';
}

// ---------------------------------------------------------------- formatting

function fmtNum(n) {
  if (n === null || n === undefined) return '—';
  return String(n);
}

function fmtRate(n) {
  if (n === null || n === undefined || !isFinite(n)) return '—';
  return n < 10 ? n.toFixed(2) : n.toFixed(1);
}

function fmtPct(part, total) {
  if (!total) return '—';
  return (100 * part / total).toFixed(1) + ' %';
}

function pad(n) {
  return String(n).padStart(2, '0');
}

function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtSpan(sec) {
  sec = Math.abs(sec);
  if (sec < 10) return `${sec.toFixed(1)} s`;
  if (sec < 120) return `${Math.round(sec)} s`;
  if (sec < 7200) return `${Math.round(sec / 60)} min`;
  if (sec < 172800) return `${Math.round(sec / 3600)} h`;
  return `${Math.round(sec / 86400)} d`;
}

function fmtAge(sec) {
  return sec === null || sec === undefined ? '—' : fmtSpan(sec);
}

function fmtRelative(iso) {
  if (!iso) return '';
  const diff = (new Date(iso).getTime() - Date.now()) / 1000;
  if (isNaN(diff)) return '';
  return diff >= 0 ? `in ${fmtSpan(diff)}` : `${fmtSpan(diff)} ago`;
}

function timeCell(iso) {
  return h('td', null, h('time', { datetime: iso || undefined, text: fmtTime(iso) }),
    iso ? h('span', { class: 'muted small', text: ` (${fmtRelative(iso)})` }) : null);
}

function statusLabel(st) {
  return String(st || '').toUpperCase() || '—';
}

function badge(st) {
  const label = statusLabel(st);
  return h('span', { class: `badge st-${String(st || '').toLowerCase()}`, text: label });
}

// ---------------------------------------------------------------- messages

let messageSeq = 0;
function say(text, kind = 'ok') {
  const el = $('#status');
  clear(el);
  el.className = `status ${kind}`;
  el.dataset.kind = kind;
  el.dataset.seq = String(++messageSeq);
  el.append(h('strong', { text: kind === 'error' ? 'Problem: ' : 'Done: ' }), text);
}

function sayInfo(text) {
  const el = $('#status');
  clear(el);
  el.className = 'status info';
  el.dataset.kind = 'info';
  el.dataset.seq = String(++messageSeq);
  el.append(text);
}

function clearMessage() {
  const el = $('#status');
  clear(el);
  el.className = 'status';
  delete el.dataset.kind;
}

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, problem) {
    const title = (problem && problem.title) || `HTTP ${status}`;
    const detail = problem && problem.detail;
    super(detail ? `${title}: ${detail}` : title);
    this.status = status;
    this.problem = problem || null;
  }
}

class Unauthorized extends Error {}

async function api(method, path, opts = {}) {
  const headers = { Accept: 'application/json' };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  let body;
  if (opts.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.body);
  }
  let res;
  try {
    res = await fetch(path, { method, headers, body, cache: 'no-store', credentials: 'omit' });
  } catch (e) {
    throw new ApiError(0, { title: 'The server could not be reached', detail: String(e.message || e) });
  }
  if (res.status === 401) {
    tokenRejected();
    throw new Unauthorized('The token was not accepted');
  }
  let data = null;
  const text = await res.text();
  if (text) {
    try { data = JSON.parse(text); } catch (_) { data = null; }
  }
  if (!res.ok) {
    // A problem document: `title: detail` (403 read-only-token: the token may only read).
    const problem = data && typeof data === 'object' ? data : { title: `HTTP ${res.status}`, detail: text.slice(0, 200) };
    throw new ApiError(res.status, problem);
  }
  return { status: res.status, data, headers: res.headers };
}

const get = (path) => api('GET', path).then((r) => r.data);

function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== '' && v !== null && v !== undefined) u.set(k, v);
  const q = u.toString();
  return q ? `?${q}` : '';
}

// Reports an error of an action or a load; 401 already showed the token form.
function report(e) {
  if (e instanceof Unauthorized) return;
  say(e.message || String(e), 'error');
}

// ---------------------------------------------------------------- confirm dialog

let confirmFrom = null;
function confirmAction(title, text, okLabel) {
  const dlg = $('#confirm');
  $('#confirm-title').textContent = title;
  $('#confirm-text').textContent = text;
  $('#confirm-ok').textContent = okLabel || 'Confirm';
  confirmFrom = document.activeElement;
  dlg.returnValue = '';
  return new Promise((resolve) => {
    const done = () => {
      dlg.removeEventListener('close', done);
      const from = confirmFrom;
      confirmFrom = null;
      if (from && from.isConnected && typeof from.focus === 'function') from.focus();
      resolve(dlg.returnValue === 'confirm');
    };
    dlg.addEventListener('close', done);
    dlg.showModal();
    $('#confirm-cancel').focus();
  });
}

function initDialog() {
  $('#confirm-ok').addEventListener('click', () => $('#confirm').close('confirm'));
  $('#confirm-cancel').addEventListener('click', () => $('#confirm').close('cancel'));
}

// Runs a confirmed state-changing action; shows its result or the API's problem.
async function act(button, title, text, okLabel, run) {
  if (!(await confirmAction(title, text, okLabel))) {
    sayInfo('Cancelled: nothing was changed.');
    return false;
  }
  if (button) button.disabled = true;
  try {
    const message = await run();
    say(message, 'ok');
    // The button may be gone with the row it was in: keep the focus in the page.
    if (!document.activeElement || document.activeElement === document.body) $('#main').focus({ preventScroll: true });
    return true;
  } catch (e) {
    report(e);
    return false;
  } finally {
    if (button && button.isConnected) button.disabled = false;
  }
}

function actionButton(label, handler, extra = {}) {
  return h('button', { type: 'button', class: 'danger', 'data-destructive': true, ...extra, text: label,
    on: { click: (ev) => handler(ev.currentTarget) } });
}

// ---------------------------------------------------------------- page lifecycle

function stopTimers() {
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
}

function newPage() {
  stopTimers();
  state.gen += 1;
  delete document.body.dataset.ready;
  const gen = state.gen;
  return { gen, alive: () => gen === state.gen && state.token !== null };
}

function markReady(ctx, name) {
  if (!ctx.alive()) return;
  window.__readyAt = performance.now();
  document.body.dataset.ready = name;
}

function notReady() {
  delete document.body.dataset.ready;
}

// Polls fn every POLL_MS (no overlap) while the page is shown.
function poll(ctx, fn, every = POLL_MS) {
  let busy = false;
  const t = setInterval(async () => {
    if (!ctx.alive() || busy) return;
    busy = true;
    try { await fn(); } catch (e) { if (ctx.alive()) report(e); } finally { busy = false; }
  }, every);
  state.timers.push(t);
}

function currentPage() {
  const m = /^#\/([a-z-]+)/.exec(location.hash);
  const name = m ? m[1] : 'overview';
  return PAGES.some(([p]) => p === name) ? name : 'overview';
}

async function route() {
  if (!state.token) {
    showTokenForm();
    return;
  }
  const name = currentPage();
  const ctx = newPage();
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.page === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const title = PAGES.find(([p]) => p === name)[1];
  document.title = `${title} · BlinkChamber console`;
  const main = clear($('#main'));
  main.append(h('h1', { text: title }));
  const body = h('div', { class: 'page', id: `page-${name}` });
  main.append(body);
  try {
    await RENDER[name](ctx, body);
  } catch (e) {
    if (ctx.alive()) {
      report(e);
      body.append(h('p', { class: 'error-text', text: `This page could not be loaded: ${e.message}` }));
    }
  }
}

// ---------------------------------------------------------------- sign in / out

function setAccess(access) {
  state.access = access === 'read-only' ? 'read-only' : 'full';
  document.body.dataset.access = state.access;
  $('#access-badge').textContent = state.access === 'read-only' ? 'Read-only token' : 'Full access';
}

function showChrome(on) {
  $('#nav').hidden = !on;
  $('#who').hidden = !on;
}

function tokenRejected() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.access = null;
  delete document.body.dataset.access;
  showTokenForm('The token was not accepted. Check it and enter it again.');
}

function showTokenForm(problem) {
  stopTimers();
  state.gen += 1;
  notReady();
  showChrome(false);
  document.title = 'Sign in · BlinkChamber console';
  const main = clear($('#main'));
  const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off',
    spellcheck: 'false', required: true, testid: 'token-input', 'aria-describedby': 'token-help' });
  const err = h('p', { id: 'token-error', class: 'error-text', testid: 'token-error', role: 'alert',
    text: problem || '' });
  err.hidden = !problem;
  const form = h('form', { class: 'card signin', testid: 'token-form', novalidate: true },
    h('h1', { text: 'Sign in' }),
    h('p', { id: 'token-help', class: 'muted',
      text: 'Enter a BlinkChamber API bearer token. It is kept for this browser tab only and sent only to this server\'s /v1 API.' }),
    h('label', { for: 'token', text: 'Bearer token' }),
    input,
    err,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', testid: 'token-submit', text: 'Sign in' })));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    if (!token) {
      err.textContent = 'Enter a token.';
      err.hidden = false;
      input.focus();
      return;
    }
    state.token = token;
    try {
      const st = await get('/v1/status');
      sessionStorage.setItem(TOKEN_KEY, token);
      setAccess(st.access);
      showChrome(true);
      clearMessage();
      if (!/^#\/[a-z-]+/.test(location.hash)) history.replaceState(null, '', '#/overview');
      route();
      $('#main').focus();
    } catch (e) {
      if (e instanceof Unauthorized) return; // tokenRejected showed the form again
      state.token = null;
      err.textContent = `The server answered: ${e.message}`;
      err.hidden = false;
    }
  });
  main.append(form);
  markReady({ alive: () => true }, 'signin');
  input.focus();
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.access = null;
  delete document.body.dataset.access;
  showTokenForm();
  say('Signed out; the token was removed from this tab.', 'ok');
}

// ---------------------------------------------------------------- sampling (rates, chart)

function sample(status, stats) {
  const now = Date.now();
  const point = { t: now, v: {} };
  const c = (status && status.counters) || {};
  const totals = (stats && stats.totals) || {};
  // this instance's API
  for (const k of ['requests', 'problems', 'eventsPublished']) if (typeof c[k] === 'number') point.v[k] = c[k];
  // settled by every worker of the backend (events stats), else this instance's count
  const handled = typeof totals.handled === 'number' ? totals.handled : c.eventsHandled;
  const dead = typeof totals.deadLettered === 'number' ? totals.deadLettered : c.eventsDeadLettered;
  if (typeof handled === 'number') point.v.handled = handled;
  if (typeof dead === 'number') point.v.deadLettered = dead;
  if (stats) {
    point.depth = {};
    for (const q of stats.queues || []) point.depth[q.priority] = q.depth;
  }
  state.history.push(point);
  while (state.history.length && state.history[0].t < now - HISTORY_MS) state.history.shift();
  return point;
}

// Rates per second between consecutive points that both have the counter.
function rateSeries(key) {
  const out = [];
  let prev = null;
  for (const p of state.history) {
    if (typeof p.v[key] !== 'number') continue;
    if (prev) {
      const dt = (p.t - prev.t) / 1000;
      const dv = p.v[key] - prev.v[key];
      if (dt > 0 && dv >= 0) out.push({ t: p.t, v: dv / dt });
    }
    prev = p;
  }
  return out;
}

function lastRate(key) {
  const r = rateSeries(key);
  return r.length ? r[r.length - 1].v : null;
}

function latest(key) {
  for (let i = state.history.length - 1; i >= 0; i--) {
    if (typeof state.history[i].v[key] === 'number') return state.history[i].v[key];
  }
  return null;
}

// /v1/events/stats, or null when events are switched off (the overview does without).
async function eventStats() {
  try {
    return await get('/v1/events/stats');
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return null;
    throw e;
  }
}

// ---------------------------------------------------------------- overview

async function renderOverview(ctx, body) {
  const backend = h('dl', { class: 'fields' });
  const rates = h('dl', { class: 'fields' });
  const doctor = h('div', { testid: 'doctor', 'aria-busy': 'true' },
    h('p', { class: 'muted', testid: 'doctor-placeholder', text: 'Running the checks (this can take a few seconds on Redis)…' }));
  const topology = h('div', null, h('p', { class: 'muted', text: 'Waiting for the checks…' }));
  body.append(h('div', { class: 'grid' },
    section('Backend', backend),
    section('Requests and events per second', rates),
    section('Topology', topology),
    section('Doctor', doctor)));

  const showStatus = (st) => {
    setAccess(st.access);
    fill(backend, ...[
      field('Backend', st.backend, 'backend'),
      field('Access', st.access, 'access'),
      field('Version', st.version, 'version'),
      field('Master', st.master || (st.backend === 'memory' ? 'in process' : '—'), 'master'),
      field('Master epoch', fmtNum(st.masterEpoch), 'epoch'),
      field('Last failover', st.lastFailover ? `${fmtTime(st.lastFailover)} (${fmtRelative(st.lastFailover)})` : 'none since start', 'last-failover'),
      field('Started', st.startedAt ? `${fmtTime(st.startedAt)} (${fmtRelative(st.startedAt)})` : '—', 'started'),
    ].flat());
  };

  const showRates = () => {
    const r = (k, testid, label) => {
      const v = lastRate(k);
      const total = latest(k);
      return field(label, total === null ? 'not counted'
        : `${v === null ? 'measuring…' : `${fmtRate(v)} /s`} (${fmtNum(total)} in total)`, testid);
    };
    fill(rates, ...[
      r('requests', 'rate-requests', 'Requests (this instance)'),
      r('problems', 'rate-problems', 'Problems (this instance)'),
      r('eventsPublished', 'rate-published', 'Events published (this instance)'),
      r('handled', 'rate-handled', 'Events handled (all workers)'),
      r('deadLettered', 'rate-dead-lettered', 'Events dead-lettered (all workers)'),
    ].flat());
  };

  const refresh = async () => {
    const [st, stats] = await Promise.all([get('/v1/status'), eventStats()]);
    if (!ctx.alive()) return;
    sample(st, stats);
    showStatus(st);
    showRates();
  };
  await refresh();
  poll(ctx, refresh);
  markReady(ctx, 'overview');

  // The doctor can take seconds on Redis: after the rest of the page.
  try {
    const d = await get('/v1/diagnostics');
    if (!ctx.alive()) return;
    showDiagnostics(d, doctor, topology);
  } catch (e) {
    if (!ctx.alive()) return;
    report(e);
    fill(doctor, h('p', { class: 'error-text', text: `The checks could not be run: ${e.message}` }));
    doctor.removeAttribute('aria-busy');
  }
}

function showDiagnostics(d, doctor, topology) {
  const checks = d.checks || [];
  const count = (st) => checks.filter((c) => c.status === st).length;
  const issues = checks.filter((c) => c.status !== 'pass');
  fill(doctor, 
    h('p', { class: 'summary' }, h('span', { class: `badge st-${d.status}`, testid: 'doctor-status', text: statusLabel(d.status) }),
      ` ${checks.length} checks, ${count('pass')} pass, ${count('warn')} warn, ${count('fail')} fail` +
      (d.reachable === false ? ' — the backend could not be reached' : '')),
    issues.length
      ? h('ul', { class: 'issues' }, issues.map((c) =>
        h('li', { testid: 'doctor-issue', 'data-check': c.check },
          badge(c.status), ' ', h('code', { text: c.check }), ' ', c.measured || '',
          c.advice ? h('div', { class: 'advice' }, h('span', { class: 'muted', text: 'Next step: ' }), c.advice) : null)))
      : h('p', { text: 'Every check passes.' }));
  doctor.removeAttribute('aria-busy');
  const topo = checks.filter((c) => c.group === 'topology' || String(c.check).startsWith('topology.'));
  fill(topology, topo.length
    ? tableWrap('Topology checks', ['Check', 'Status', 'Measured'],
      h('tbody', null, topo.map((c) => h('tr', { testid: 'topology-row', 'data-check': c.check },
        h('td', null, h('code', { text: c.check })), h('td', null, badge(c.status)), h('td', { class: 'wrap', text: c.measured || '' })))))
    : h('p', { class: 'muted', text: 'No topology checks for this backend.' }));
}

// ---------------------------------------------------------------- queues

async function renderQueues(ctx, body) {
  const cells = {};
  const rows = PRIORITIES.map((p) => {
    cells[p] = {
      depth: h('td', { class: 'num', testid: `depth-${p}` }),
      inFlight: h('td', { class: 'num', testid: `inflight-${p}` }),
      retrying: h('td', { class: 'num', testid: `retrying-${p}` }),
      oldest: h('td', { class: 'num', testid: `oldest-${p}` }),
    };
    return h('tr', { testid: 'queue-row', 'data-priority': p }, h('th', { scope: 'row', text: p }),
      cells[p].depth, cells[p].inFlight, cells[p].retrying, cells[p].oldest);
  });
  const dead = h('span', { testid: 'dead-total' });
  const depthChart = h('div', { class: 'chart', testid: 'chart-depth' });
  const rateChart = h('div', { class: 'chart', testid: 'chart-throughput' });
  const consumers = h('div', { testid: 'consumers' });
  body.append(
    section('Queues',
      tableWrap('Event queues', ['Priority', '#Depth', '#In flight', '#Retrying', '#Oldest age'], h('tbody', null, rows)),
      h('p', null, 'Dead letters: ', dead, ' ', h('a', { href: '#/dead-letters', text: 'show them' }))),
    h('div', { class: 'grid' },
      section('Depth, last 5 minutes', depthChart),
      section('Throughput, last 5 minutes', rateChart)),
    section('Consumers and their leases', consumers));

  const show = (stats) => {
    const byP = {};
    for (const q of stats.queues || []) byP[q.priority] = q;
    for (const p of PRIORITIES) {
      const q = byP[p] || {};
      cells[p].depth.textContent = fmtNum(q.depth);
      cells[p].inFlight.textContent = fmtNum(q.inFlight);
      cells[p].retrying.textContent = fmtNum(q.retrying);
      cells[p].oldest.textContent = q.depth > 0 && (q.oldestAge === null || q.oldestAge === undefined)
        ? 'unknown (no event time)' : fmtAge(q.oldestAge);
    }
    dead.textContent = fmtNum(stats.dead);
    const cs = stats.consumers || [];
    fill(consumers, cs.length
      ? tableWrap('Consumers', ['Consumer', '#Held', 'Lease expires'], h('tbody', null, cs.map((c) => {
        const left = (new Date(c.leaseExpiresAt).getTime() - Date.now()) / 1000;
        return h('tr', { testid: 'consumer-row', 'data-consumer': c.consumer },
          h('td', null, h('code', { text: c.consumer })),
          h('td', { class: 'num', text: fmtNum(c.held) }),
          h('td', { text: isNaN(left) ? '—' : left >= 0 ? `in ${Math.round(left)} s` : `expired ${Math.round(-left)} s ago` }));
      })))
      : h('p', { class: 'muted', text: 'No consumer holds a lease now.' }));
    drawCharts(depthChart, rateChart);
  };

  const refresh = async () => {
    const [stats, st] = await Promise.all([get('/v1/events/stats'), get('/v1/status')]);
    if (!ctx.alive()) return;
    setAccess(st.access);
    sample(st, stats);
    show(stats);
  };
  await refresh();
  poll(ctx, refresh);
  markReady(ctx, 'queues');
}

function drawCharts(depthEl, rateEl) {
  const now = Date.now();
  const depth = PRIORITIES.map((p) => ({
    name: p,
    points: state.history.filter((x) => x.depth).map((x) => ({ t: x.t, v: x.depth[p] || 0 })),
  }));
  chart(depthEl, depth, now, 'events', fmtNum);
  chart(rateEl, [
    { name: 'published (this instance)', points: rateSeries('eventsPublished') },
    { name: 'handled (all workers)', points: rateSeries('handled') },
    { name: 'dead-lettered (all workers)', points: rateSeries('deadLettered') },
  ], now, 'per second', fmtRate);
}

// A line chart built with DOM calls (no innerHTML: the CSP and the data both say so).
function chart(el, series, now, unit, fmt) {
  const W = 600, H = 180, L = 48, R = 8, T = 10, B = 24;
  const t0 = now - HISTORY_MS;
  let max = 0;
  for (const sr of series) for (const p of sr.points) max = Math.max(max, p.v);
  max = niceMax(max);
  const x = (t) => L + ((t - t0) / HISTORY_MS) * (W - L - R);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  const latest = series.map((sr) => `${sr.name} ${sr.points.length ? fmt(sr.points[sr.points.length - 1].v) : 'no data'}`).join(', ');
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart-svg', role: 'img',
    'aria-label': `${unit}, last 5 minutes; now: ${latest}` });
  for (const f of [0, 0.5, 1]) {
    const v = max * f;
    svg.append(s('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'grid-line' }),
      s('text', { x: L - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'axis', text: fmtAxis(v) }));
  }
  for (const [t, label] of [[t0, '−5 min'], [now - HISTORY_MS / 2, '−2.5 min'], [now, 'now']]) {
    svg.append(s('text', { x: x(t), y: H - 6, 'text-anchor': t === t0 ? 'start' : t === now ? 'end' : 'middle', class: 'axis', text: label }));
  }
  series.forEach((sr, i) => {
    if (!sr.points.length) return;
    const pts = sr.points.map((p) => `${x(Math.max(p.t, t0)).toFixed(1)},${y(p.v).toFixed(1)}`).join(' ');
    svg.append(s('polyline', { points: pts, class: `series s${i}`, fill: 'none' }));
  });
  const legend = h('ul', { class: 'legend' }, series.map((sr, i) =>
    h('li', null, s('svg', { viewBox: '0 0 24 8', class: 'swatch', 'aria-hidden': 'true' },
      s('line', { x1: 0, x2: 24, y1: 4, y2: 4, class: `series s${i}` })),
    ` ${sr.name}: ${sr.points.length ? fmt(sr.points[sr.points.length - 1].v) : '—'}`)));
  fill(el, svg, legend);
}

function niceMax(v) {
  if (v <= 0) return 1;
  const e = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * e) return m * e;
  return 10 * e;
}

function fmtAxis(v) {
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

// ---------------------------------------------------------------- dead letters

async function renderDeadLetters(ctx, body) {
  const f = state.dead;
  const typeIn = h('input', { id: 'dl-type', name: 'type', type: 'text', value: f.type, autocomplete: 'off', testid: 'filter-type' });
  const textIn = h('input', { id: 'dl-contains', name: 'contains', type: 'text', value: f.contains, autocomplete: 'off', testid: 'filter-contains' });
  const form = h('form', { class: 'filters', role: 'search', testid: 'dead-filter' },
    h('div', { class: 'fieldset' }, h('label', { for: 'dl-type', text: 'Type (exact)' }), typeIn),
    h('div', { class: 'fieldset' }, h('label', { for: 'dl-contains', text: 'Error contains' }), textIn),
    h('div', { class: 'actions' },
      h('button', { type: 'submit', class: 'primary', testid: 'filter-apply', text: 'Apply filter' }),
      h('button', { type: 'button', testid: 'filter-clear', text: 'Clear', on: { click: () => {
        typeIn.value = '';
        textIn.value = '';
        form.requestSubmit();
      } } })));
  const total = h('span', { testid: 'dead-total' });
  const info = h('p', { class: 'muted', testid: 'dead-range' });
  const list = h('div', { testid: 'dead-list' });
  const pager = h('div', { class: 'actions pager' });
  const bulk = h('div', { class: 'actions' });
  const detail = h('div', { testid: 'dead-detail-panel' });
  const detailCard = section('Selected dead letter', detail);
  detailCard.classList.add('sticky');
  detail.append(h('p', { class: 'muted', text: 'Select a dead letter by its id to see the whole event.' }));
  body.append(
    section('Filter', form, h('p', null, 'Dead letters in total: ', total)),
    h('div', { class: 'split' }, section('Dead letters', info, list, pager, bulk), detailCard));

  const filterText = () => {
    const parts = [];
    if (f.type) parts.push(`of type ${f.type}`);
    if (f.contains) parts.push(`whose error contains "${f.contains}"`);
    return parts.length ? `every dead letter ${parts.join(' and ')}` : 'every dead letter';
  };

  const showDetail = async (id, button) => {
    f.selected = id;
    for (const tr of list.querySelectorAll('tr[data-id]')) tr.classList.toggle('selected', tr.dataset.id === id);
    fill(detail, h('p', { class: 'muted', text: `Loading ${id}…` }));
    try {
      const ev = await get(`/v1/events/dead-letter/${encodeURIComponent(id)}`);
      if (!ctx.alive()) return;
      fill(detail, 
        h('p', null, h('strong', { text: 'Id: ' }), h('code', { testid: 'dead-detail-id', text: ev.id })),
        h('pre', { class: 'json', testid: 'dead-detail', tabindex: '0', text: JSON.stringify(ev, null, 2) }),
        canWrite() ? h('div', { class: 'actions' },
          actionButton('Replay', (b) => replayOne(ev.id, b), { testid: 'detail-replay' }),
          actionButton('Delete', (b) => deleteOne(ev.id, b), { testid: 'detail-delete' })) : null);
      if (button) detail.querySelector('pre').focus();
    } catch (e) {
      if (!ctx.alive()) return;
      if (e instanceof ApiError && e.status === 404) {
        fill(detail, h('p', { text: `Dead letter ${id} is gone (replayed or deleted).` }));
      } else {
        report(e);
        clear(detail);
      }
    }
  };

  const reload = async () => {
    notReady();
    await load();
    markReady(ctx, 'dead-letters');
  };

  const replayOne = (id, b) => act(b, 'Replay this dead letter?',
    `Dead letter ${id} goes back to its queue with its attempts reset.`, 'Replay', async () => {
      await api('POST', `/v1/events/dead-letter/${encodeURIComponent(id)}/replay`);
      if (f.selected === id) { f.selected = null; clear(detail); }
      await reload();
      return `Replayed dead letter ${id}`;
    });

  const deleteOne = (id, b) => act(b, 'Delete this dead letter?',
    `Dead letter ${id} is deleted for good. This cannot be undone.`, 'Delete', async () => {
      await api('DELETE', `/v1/events/dead-letter/${encodeURIComponent(id)}`);
      if (f.selected === id) { f.selected = null; clear(detail); }
      await reload();
      return `Deleted dead letter ${id}`;
    });

  const replaySet = (b) => act(b, 'Replay these dead letters?',
    `${cap(filterText())} goes back to its queue with its attempts reset.`, 'Replay', async () => {
      const body = {};
      if (f.type) body.type = f.type;
      if (f.contains) body.contains = f.contains;
      const r = await api('POST', '/v1/events/replay', { body });
      f.offset = 0;
      await reload();
      const n = r.data && r.data.replayed;
      return `Replayed ${n} dead letter${n === 1 ? '' : 's'}`;
    });

  const purgeSet = (b) => act(b, 'Delete these dead letters?',
    `${cap(filterText())} is deleted for good. This cannot be undone.`, 'Delete', async () => {
      const r = await api('DELETE', `/v1/events/dead-letter${qs({ type: f.type, contains: f.contains })}`);
      f.offset = 0;
      await reload();
      const n = r.data && r.data.purged;
      return `Deleted ${n} dead letter${n === 1 ? '' : 's'}`;
    });

  const load = async () => {
    const path = `/v1/events/dead-letter${qs({ limit: PAGE_SIZE, offset: f.offset || '', type: f.type, contains: f.contains })}`;
    const [res, stats] = await Promise.all([api('GET', path), get('/v1/events/stats')]);
    if (!ctx.alive()) return;
    let items = Array.isArray(res.data) ? res.data : [];
    if (!items.length && f.offset > 0) {
      f.offset = Math.max(0, f.offset - PAGE_SIZE);
      return load();
    }
    const next = nextOffset(res.headers.get('Link'));
    total.textContent = fmtNum(stats.dead);
    info.textContent = items.length
      ? `Showing ${f.offset + 1}–${f.offset + items.length}${f.type || f.contains ? ' matching the filter' : ''}, oldest first.`
      : (f.type || f.contains ? 'No dead letter matches the filter.' : 'There are no dead letters.');
    fill(list, items.length ? tableWrap('Dead letters', ['Type', 'Id', 'Last error', 'Dead since', 'Actions'],
      h('tbody', null, items.map((ev) => h('tr', { testid: 'dead-row', 'data-id': ev.id, class: ev.id === f.selected ? 'selected' : undefined },
        h('td', null, h('code', { text: ev.type })),
        h('td', null, h('button', { type: 'button', class: 'link', testid: 'dead-show', 'aria-label': `Show dead letter ${ev.id}`,
          text: ev.id, on: { click: (e) => showDetail(ev.id, e.currentTarget) } })),
        h('td', { class: 'err', title: ev.lasterror || '', text: clip(ev.lasterror, 140) }),
        timeCell(ev.deadat),
        h('td', null, canWrite() ? h('div', { class: 'row-actions' },
          actionButton('Replay', (b) => replayOne(ev.id, b), { testid: 'dead-replay', 'aria-label': `Replay ${ev.id}` }),
          actionButton('Delete', (b) => deleteOne(ev.id, b), { testid: 'dead-delete', 'aria-label': `Delete ${ev.id}` }))
          : h('span', { class: 'muted', text: 'read-only' })))))) : '');
    fill(pager, 
      h('button', { type: 'button', testid: 'page-prev', disabled: f.offset <= 0, text: '← Previous 50',
        on: { click: () => { f.offset = Math.max(0, f.offset - PAGE_SIZE); reload().catch(report); } } }),
      h('button', { type: 'button', testid: 'page-next', disabled: next === null, text: 'Next 50 →',
        on: { click: () => { f.offset = next; reload().catch(report); } } }));
    clear(bulk);
    if (canWrite() && items.length) {
      bulk.append(
        actionButton(f.type || f.contains ? 'Replay all matching' : 'Replay all', replaySet, { testid: 'replay-set' }),
        actionButton(f.type || f.contains ? 'Delete all matching' : 'Delete all', purgeSet, { testid: 'purge-set' }));
    }
  };

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    f.type = typeIn.value.trim();
    f.contains = textIn.value.trim();
    f.offset = 0;
    reload().catch(report);
  });

  await load();
  if (f.selected) showDetail(f.selected, null);
  markReady(ctx, 'dead-letters');
}

// The offset of a `Link: <…offset=N…>; rel="next"` header, or null.
function nextOffset(link) {
  if (!link) return null;
  for (const part of link.split(',')) {
    const m = /<([^>]*)>\s*;\s*rel="?next"?/i.exec(part);
    if (!m) continue;
    try {
      const u = new URL(m[1], location.href);
      const o = parseInt(u.searchParams.get('offset'), 10);
      if (!isNaN(o)) return o;
    } catch (_) { /* ignore */ }
  }
  return null;
}

function clip(t, n) {
  t = t == null ? '' : String(t);
  return t.length > n ? `${t.slice(0, n - 1)}…` : t;
}

function cap(t) {
  return t.charAt(0).toUpperCase() + t.slice(1);
}

// ---------------------------------------------------------------- sessions

async function renderSessions(ctx, body) {
  const input = h('input', { id: 'user-id', name: 'userId', type: 'text', value: state.sessionsUser,
    autocomplete: 'off', required: true, maxlength: '256', testid: 'user-input' });
  const form = h('form', { class: 'filters', role: 'search', testid: 'sessions-form' },
    h('div', { class: 'fieldset' }, h('label', { for: 'user-id', text: 'User id' }), input),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', testid: 'user-lookup', text: 'Look up' })));
  const out = h('div', { testid: 'sessions' });
  body.append(section('Look up a user', form), section('Sessions', out));

  const load = async () => {
    const user = state.sessionsUser;
    if (!user) {
      fill(out, h('p', { class: 'muted', text: 'Enter a user id to list their sessions.' }));
      return;
    }
    const r = await get(`/v1/sessions${qs({ userId: user })}`);
    if (!ctx.alive()) return;
    const list = r.sessions || [];
    fill(out, 
      h('p', null, h('span', { testid: 'session-count', text: String(list.length) }),
        ` session${list.length === 1 ? '' : 's'} of `, h('code', { text: user }), '.'),
      list.length ? tableWrap(`Sessions of ${user}`, ['Handle', 'Kind', 'Created', 'Idle expiry', 'Absolute expiry', 'Actions'],
        h('tbody', null, list.map((sess) => h('tr', { testid: 'session-row', 'data-handle-prefix': shortHandle(sess.handle) },
          h('td', null, h('code', { title: 'A handle only revokes; it is not a session id', text: `${shortHandle(sess.handle)}…` })),
          h('td', { text: sess.kind }),
          timeCell(sess.createdAt),
          timeCell(sess.idleExpiresAt),
          timeCell(sess.expiresAt),
          h('td', null, canWrite() ? actionButton('Revoke', (b) => revokeOne(user, sess, b),
            { testid: 'session-revoke', 'aria-label': `Revoke session ${shortHandle(sess.handle)}` }) : h('span', { class: 'muted', text: 'read-only' })))))) : null,
      canWrite() && list.length ? h('div', { class: 'actions' },
        actionButton(`Revoke all ${list.length} sessions`, (b) => revokeAll(user, b), { testid: 'session-revoke-all' })) : null);
  };

  const reload = async () => {
    notReady();
    await load();
    markReady(ctx, 'sessions');
  };

  const revokeOne = (user, sess, b) => act(b, 'Revoke this session?',
    `The ${sess.kind} session ${shortHandle(sess.handle)}… of ${user} is ended at once.`, 'Revoke', async () => {
      await api('DELETE', `/v1/sessions/handles/${encodeURIComponent(sess.handle)}`);
      await reload();
      return `Revoked session ${shortHandle(sess.handle)}… of ${user}`;
    });

  const revokeAll = (user, b) => act(b, 'Revoke every session of this user?',
    `Every session of ${user} is ended at once: the user is logged out everywhere.`, 'Revoke all', async () => {
      const r = await api('DELETE', `/v1/sessions${qs({ userId: user })}`);
      await reload();
      const n = r.data && r.data.revoked;
      return `Revoked ${n} session${n === 1 ? '' : 's'} of ${user}`;
    });

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    state.sessionsUser = input.value.trim();
    reload().catch(report);
  });

  await load();
  markReady(ctx, 'sessions');
}

function shortHandle(handle) {
  return String(handle || '').slice(0, 8);
}

// ---------------------------------------------------------------- rate limits

async function renderRateLimits(ctx, body) {
  const rules = h('div', { testid: 'rules' });
  const select = h('select', { id: 'rl-window', name: 'window', testid: 'window-select' },
    ['1m', '5m', '15m'].map((w) => h('option', { value: w, selected: w === state.rlWindow, text: `last ${w.replace('m', ' min')}` })));
  const top = h('div', { testid: 'top-keys' });
  body.append(
    section('Rules', rules),
    section('Most limited keys',
      h('div', { class: 'filters' }, h('div', { class: 'fieldset' }, h('label', { for: 'rl-window', text: 'Window' }), select)),
      top));

  const showRules = (r) => {
    const list = r.rules || [];
    fill(rules, list.length ? tableWrap('Rate-limit rules', ['Rule', 'Descriptor', 'Algorithm', '#Limit', 'Period', '#Burst', 'Failure mode'],
      h('tbody', null, list.map((x) => h('tr', { testid: 'rule-row', 'data-rule': x.name },
        h('td', null, h('code', { text: x.name })),
        h('td', { text: (x.descriptor || []).join(' + ') }),
        h('td', { text: x.algorithm }),
        h('td', { class: 'num', testid: 'rule-limit', text: fmtNum(x.limit) }),
        h('td', { text: x.period }),
        h('td', { class: 'num', text: fmtNum(x.burst) }),
        h('td', { text: x.failureMode })))))
      : h('p', { class: 'muted', text: 'No rules are configured (rateLimit.rules).' }));
  };

  const loadTop = async () => {
    const w = state.rlWindow;
    const r = await get(`/v1/ratelimit/top${qs({ window: w })}`);
    if (!ctx.alive() || w !== state.rlWindow) return;
    const keys = r.keys || [];
    fill(top, keys.length ? tableWrap(`Most limited keys, last ${r.window || w}`, ['Rule', 'Key', '#Denied', 'Last denied'],
      h('tbody', null, keys.map((k) => h('tr', { testid: 'top-row', 'data-rule': k.rule, 'data-key': k.key },
        h('td', null, h('code', { text: k.rule })),
        h('td', null, h('code', { text: k.key })),
        h('td', { class: 'num', testid: 'top-denied', text: fmtNum(k.denied) }),
        timeCell(k.lastDeniedAt)))))
      : h('p', { class: 'muted', testid: 'top-empty', text: `No key was limited in the last ${w.replace('m', ' min')}.` }));
  };

  select.addEventListener('change', () => {
    state.rlWindow = select.value;
    notReady();
    loadTop().then(() => markReady(ctx, 'rate-limits')).catch(report);
  });

  const [r] = await Promise.all([get('/v1/ratelimit/rules'), loadTop()]);
  if (!ctx.alive()) return;
  showRules(r);
  poll(ctx, loadTop, 5000);
  markReady(ctx, 'rate-limits');
}

// ---------------------------------------------------------------- cache

async function renderCache(ctx, body) {
  const table = h('div', { testid: 'cache-stats' });
  const entries = h('span', { testid: 'l1-entries' });
  const parts = [section('Hit rates (this instance, since start)', h('p', null, 'Entries in L1: ', entries), table)];
  let nsList = null;
  if (canWrite()) {
    nsList = h('datalist', { id: 'ns-list' });
    const ns = h('input', { id: 'inv-ns', name: 'namespace', type: 'text', required: true, list: 'ns-list', autocomplete: 'off', testid: 'inv-namespace' });
    const tags = h('input', { id: 'inv-tags', name: 'tags', type: 'text', autocomplete: 'off', testid: 'inv-tags' });
    const all = h('input', { id: 'inv-all', name: 'all', type: 'checkbox', testid: 'inv-all' });
    const result = h('p', { testid: 'inv-result', 'aria-live': 'polite' });
    all.addEventListener('change', () => { tags.disabled = all.checked; });
    const form = h('form', { class: 'filters', testid: 'invalidate-form' },
      h('div', { class: 'fieldset' }, h('label', { for: 'inv-ns', text: 'Namespace' }), ns, nsList),
      h('div', { class: 'fieldset' }, h('label', { for: 'inv-tags' }, 'Tags ', h('span', { id: 'inv-tags-help', class: 'muted small', text: '(comma-separated)' })), tags),
      h('div', { class: 'fieldset check' }, all, h('label', { for: 'inv-all', text: 'Whole namespace' })),
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'danger', 'data-destructive': true, testid: 'inv-submit', text: 'Invalidate' })),
      result);
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const namespace = ns.value.trim();
      const tagList = tags.value.split(',').map((t) => t.trim()).filter(Boolean);
      if (!namespace) { say('Enter a namespace.', 'error'); ns.focus(); return; }
      if (!all.checked && !tagList.length) { say('Enter one or more tags, or tick "Whole namespace".', 'error'); tags.focus(); return; }
      const what = all.checked ? `every entry of namespace ${namespace}` : `the entries of namespace ${namespace} tagged ${tagList.join(', ')}`;
      act(form.querySelector('button[type=submit]'), 'Invalidate cache entries?',
        `${cap(what)} are removed here, in Redis and in every instance's memory.`, 'Invalidate', async () => {
          const r = await api('POST', `/v1/cache/${encodeURIComponent(namespace)}/invalidate`,
            { body: all.checked ? { all: true } : { tags: tagList } });
          const n = r.data && r.data.removed;
          fill(result, 'Removed: ', h('strong', { testid: 'removed', text: fmtNum(n) }), ` (namespace ${namespace}).`);
          return all.checked ? `Invalidated namespace ${namespace}: removed ${n}`
            : `Invalidated tag${tagList.length === 1 ? '' : 's'} ${tagList.join(', ')} in namespace ${namespace}: removed ${n}`;
        });
    });
    parts.push(section('Invalidate', form));
  }
  body.append(...parts);

  const refresh = async () => {
    const r = await get('/v1/cache/stats');
    if (!ctx.alive()) return;
    const list = r.namespaces || [];
    entries.textContent = r.l1 ? fmtNum(r.l1.entries) : '';
    entries.parentElement.hidden = !r.l1;
    if (nsList) fill(nsList, list.map((n) => h('option', { value: n.namespace })));
    fill(table, list.length ? tableWrap('Cache hit rates by namespace', ['Namespace', '#L1 hits', '#L2 hits', '#Misses', '#L1 hit rate', '#L2 hit rate', '#Hit rate'],
      h('tbody', null, list.map((n) => {
        const total = n.l1Hits + n.l2Hits + n.misses;
        return h('tr', { testid: 'ns-row', 'data-namespace': n.namespace },
          h('th', { scope: 'row' }, h('code', { text: n.namespace })),
          h('td', { class: 'num', testid: 'l1-hits', text: fmtNum(n.l1Hits) }),
          h('td', { class: 'num', testid: 'l2-hits', text: fmtNum(n.l2Hits) }),
          h('td', { class: 'num', testid: 'misses', text: fmtNum(n.misses) }),
          h('td', { class: 'num', text: fmtPct(n.l1Hits, total) }),
          h('td', { class: 'num', text: fmtPct(n.l2Hits, total) }),
          h('td', { class: 'num', testid: 'hit-rate', text: fmtPct(n.l1Hits + n.l2Hits, total) }));
      })))
      : h('p', { class: 'muted', text: 'No namespace has been read through this instance yet.' }));
  };
  await refresh();
  poll(ctx, refresh, 5000);
  markReady(ctx, 'cache');
}

const RENDER = {
  overview: renderOverview,
  queues: renderQueues,
  'dead-letters': renderDeadLetters,
  sessions: renderSessions,
  'rate-limits': renderRateLimits,
  cache: renderCache,
};

// ---------------------------------------------------------------- start

async function start() {
  initDialog();
  $('#sign-out').addEventListener('click', signOut);
  window.addEventListener('hashchange', () => { clearMessage(); route(); });
  state.token = sessionStorage.getItem(TOKEN_KEY);
  if (!state.token) {
    showTokenForm();
    return;
  }
  try {
    const st = await get('/v1/status');
    setAccess(st.access);
    showChrome(true);
    route();
  } catch (e) {
    if (e instanceof Unauthorized) return;
    showChrome(true);
    report(e);
    route();
  }
}

document.addEventListener('DOMContentLoaded', start);
