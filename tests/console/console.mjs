// The operator console in headless Chromium against live `serve` processes (started by
// tests/console/run.sh, which passes their URLs and tokens in CONSOLE_* variables).
//
// Every wait polls a condition with a deadline and says what it waited for; nothing is a
// fixed sleep. Each step prints `ok` or `FAIL` with the reason; the last lines are
// `N passed, N failed` and the exit code is 1 on any failure. Timings of the second part
// are printed, not asserted.
import { createRequire } from 'node:module';
import { spawn } from 'node:child_process';
import { openSync } from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
import path from 'node:path';

const env = process.env;
const need = (k) => {
  if (!env[k]) {
    console.error(`console: ${k} is not set (run tests/console/run.sh)`);
    process.exit(2);
  }
  return env[k];
};
const REDIS = need('CONSOLE_REDIS_URL');
const MEMORY = need('CONSOLE_MEMORY_URL');
const TOKEN = need('CONSOLE_TOKEN');
const RO_TOKEN = need('CONSOLE_RO_TOKEN');
const BIN = need('CONSOLE_BIN');
const WORKER_CONFIG = need('CONSOLE_WORKER_CONFIG');
const WORKER_LOG = env.CONSOLE_WORKER_LOG || '/dev/null';
const SHOTS = need('CONSOLE_SCREENSHOTS');
const require = createRequire(path.join(need('CONSOLE_NODE_DIR'), 'node_modules', '/'));
const { chromium } = require('playwright-core');

const WAIT = 30_000; // the longest any single condition is waited for (a loaded 2-core machine)
const DEAD_LETTERS = 10_000; // of the timing part
const PAGES = ['overview', 'queues', 'dead-letters', 'sessions', 'rate-limits', 'cache'];
const run = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;

// ------------------------------------------------------------------ harness

let passed = 0;
let failed = 0;
async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    passed += 1;
    console.log(`console: ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed += 1;
    console.log(`console: FAIL ${name}: ${e && e.message ? e.message.split('\n').slice(0, 6).join('\n  ') : e}`);
  }
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

function eq(actual, expected, what) {
  if (!isDeepStrictEqual(actual, expected)) {
    throw new Error(`${what}: got ${JSON.stringify(actual)}, expected ${JSON.stringify(expected)}`);
  }
}

// Polls fn until it returns a truthy value; fails with `what` and the last value seen.
async function waitFor(what, fn, timeout = WAIT, every = 100) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = `error: ${e.message}`;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout / 1000} s waiting for ${what} (last: ${JSON.stringify(last)})`);
    }
    await new Promise((r) => setTimeout(r, every));
  }
}

// ------------------------------------------------------------------ the API, directly

async function api(base, method, p, body, token = TOKEN) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(base + p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
  return { status: res.status, headers: res.headers, data };
}

async function apiOk(base, method, p, body, token) {
  const r = await api(base, method, p, body, token);
  if (r.status >= 300) throw new Error(`${method} ${p} answered ${r.status} ${JSON.stringify(r.data)}`);
  return r.data;
}

// Ids of the dead letters the API lists (query: more parameters, `&type=…`; limit 1000 unless given).
const deadIds = async (base, query = '') =>
  (await apiOk(base, 'GET', `/v1/events/dead-letter?${/limit=/.test(query) ? '' : 'limit=1000'}${query}`.replace('?&', '?'))).map((e) => e.id);

async function publish(base, events) {
  for (let attempt = 0; ; attempt++) {
    const r = await api(base, 'POST', '/v1/events', events);
    if (r.status === 202) return r.data;
    if (r.status === 503 && attempt < 200) { // buffer-full: come back later, as Retry-After says
      await new Promise((res) => setTimeout(res, 100));
      continue;
    }
    throw new Error(`POST /v1/events answered ${r.status} ${JSON.stringify(r.data)}`);
  }
}

const event = (type, id) => ({ specversion: '1.0', id, source: '/console-test', type, time: new Date().toISOString(), data: { run } });

// ------------------------------------------------------------------ the worker (Redis)

let worker = null;
function startWorker() {
  const log = openSync(WORKER_LOG, 'a');
  worker = spawn(BIN, ['worker', '--config', WORKER_CONFIG], { stdio: ['ignore', log, log] });
  worker.exited = new Promise((r) => worker.once('exit', r));
}

async function stopWorker() {
  if (!worker) return;
  const w = worker;
  worker = null;
  w.kill('SIGTERM');
  const t = setTimeout(() => w.kill('SIGKILL'), 15_000);
  await w.exited;
  clearTimeout(t);
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    if (worker) worker.kill('SIGKILL');
    process.exit(1);
  });
}
process.on('exit', () => { if (worker) worker.kill('SIGKILL'); });

// ------------------------------------------------------------------ the browser

const problems = []; // script errors and CSP violations seen in any page
const diagnostics = new Map(); // page -> the last /v1/diagnostics body it was given

async function newPage(browser, width = 1280) {
  const context = await browser.newContext({ viewport: { width, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on('pageerror', (e) => problems.push(`script error: ${e.message}`));
  page.on('response', async (r) => {
    if (new URL(r.url()).pathname !== '/v1/diagnostics' || r.status() !== 200) return;
    try { diagnostics.set(page, await r.json()); } catch (_) { /* the page moved on */ }
  });
  page.on('console', (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) problems.push(`CSP: ${m.text()}`);
  });
  return { context, page };
}

const ready = (page, name, timeout = WAIT) =>
  page.waitForFunction((n) => document.body.dataset.ready === n, name, { timeout });

// Navigates the console to a page (a hash route) and waits until it says it is ready.
async function show(page, name) {
  const same = await page.evaluate((n) => {
    delete document.body.dataset.ready;
    const same = location.hash === `#/${n}`;
    if (!same) location.hash = `#/${n}`;
    return same;
  }, name);
  if (same) await page.reload();
  await ready(page, name);
}

const text = (page, testid) => page.locator(`[data-testid="${testid}"]`).first().innerText();
const texts = (loc) => loc.evaluateAll((els) => els.map((e) => e.innerText.trim()));
const attrs = (loc, a) => loc.evaluateAll((els, a) => els.map((e) => e.getAttribute(a)), a);

async function statusSeq(page) {
  return page.evaluate(() => Number(document.querySelector('[data-testid=status]').dataset.seq || 0));
}

// Waits for a message after `seq` in the status area and returns its text.
async function message(page, seq) {
  await page.waitForFunction((s) => Number(document.querySelector('[data-testid=status]').dataset.seq || 0) > s, seq);
  return (await text(page, 'status')).trim();
}

// Clicks a button that opens the confirmation dialog (or, with keyboard, focuses it and
// presses Enter, then Tab from Cancel to Confirm and Enter), checks the dialog has the
// focus and confirms; returns the message shown afterwards.
async function confirmed(page, button, keyboard = false) {
  const seq = await statusSeq(page);
  if (keyboard) {
    await button.focus();
    await page.keyboard.press('Enter');
  } else {
    await button.click();
  }
  const dialog = page.locator('[data-testid=confirm-dialog]');
  await dialog.waitFor({ state: 'visible' });
  const focused = await page.evaluate(() => document.activeElement?.closest('dialog[open]') ? document.activeElement.dataset.testid : null);
  assert(focused, 'the confirmation dialog opened without the focus');
  if (keyboard) {
    eq(focused, 'confirm-cancel', 'the button focused when the dialog opens');
    await page.keyboard.press('Tab');
    eq(await page.evaluate(() => document.activeElement?.dataset.testid), 'confirm-ok', 'the button focused after Tab');
    await page.keyboard.press('Enter');
  } else {
    await page.locator('[data-testid=confirm-ok]').click();
  }
  await dialog.waitFor({ state: 'hidden' });
  return message(page, seq);
}

async function shot(page, name) {
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: false });
}

async function signIn(page, base, token, expect = 'overview') {
  await page.goto(`${base}/ui`);
  await ready(page, 'signin');
  await page.fill('[data-testid=token-input]', token);
  await page.click('[data-testid=token-submit]');
  if (expect) await ready(page, expect);
}

// ------------------------------------------------------------------ part 1: Redis

async function redisPart(browser) {
  const B = REDIS;
  const { context, page } = await newPage(browser);

  await step('a wrong token gets a clear message and is not kept', async () => {
    await signIn(page, B, 'not-a-token', null);
    const err = page.locator('[data-testid=token-error]');
    await err.waitFor({ state: 'visible' });
    const t = await err.innerText();
    assert(/The token was not accepted/.test(t), `the message is ${JSON.stringify(t)}`);
    const kept = await page.evaluate(() => sessionStorage.length);
    eq(kept, 0, 'entries in sessionStorage after a refused token');
    assert(await page.locator('nav').isHidden(), 'the navigation shows before signing in');
  });

  await step('the overview shows the backend, the access and the master the API names', async () => {
    await page.fill('[data-testid=token-input]', TOKEN);
    await page.click('[data-testid=token-submit]');
    await ready(page, 'overview');
    const st = await apiOk(B, 'GET', '/v1/status');
    eq(await text(page, 'backend'), st.backend, 'backend');
    eq(await text(page, 'access'), st.access, 'access');
    eq(st.access, 'full', 'the API says the full token has access');
    eq(await text(page, 'master'), st.master, 'master');
    eq(await text(page, 'epoch'), st.masterEpoch === null ? '—' : String(st.masterEpoch), 'master epoch');
    const stored = await page.evaluate(() => Object.keys(sessionStorage).length);
    eq(stored, 1, 'entries in sessionStorage once signed in');
    // requests/s needs two polls of /v1/status (every 2 s)
    await waitFor('a requests/s rate on the overview', async () => /\/s/.test(await text(page, 'rate-requests')));
  });

  await step('the overview shows the doctor summary and every non-pass check of /v1/diagnostics', async () => {
    await page.locator('[data-testid=doctor-status]').waitFor();
    const shown = await text(page, 'doctor-status');
    const issues = await attrs(page.locator('[data-testid=doctor-issue]'), 'data-check');
    const topo = await attrs(page.locator('[data-testid=topology-row]'), 'data-check');
    // A check's outcome may change from one run to the next (a slow-log entry on a loaded
    // machine): compare with the report the page was given, and its checks with a fresh one.
    const d = await waitFor('the /v1/diagnostics answer the page was given', () => diagnostics.get(page), 5_000);
    const fresh = await apiOk(B, 'GET', '/v1/diagnostics');
    eq(d.checks.map((c) => c.check).sort(), fresh.checks.map((c) => c.check).sort(), 'checks the page was given');
    const expected = {
      status: d.status.toUpperCase(),
      issues: d.checks.filter((c) => c.status !== 'pass').map((c) => c.check).sort(),
      topology: d.checks.filter((c) => c.group === 'topology' || c.check.startsWith('topology.')).map((c) => c.check).sort(),
    };
    eq({ status: shown, issues: [...issues].sort(), topology: [...topo].sort() }, expected, 'doctor summary');
    assert(topo.length > 0, 'no topology check on a Redis backend');
    const advice = d.checks.filter((c) => c.status !== 'pass' && c.advice);
    for (const c of advice) {
      const li = await page.locator(`[data-testid=doctor-issue][data-check="${c.check}"]`).innerText();
      assert(li.includes(c.advice), `check ${c.check} is shown without its advice`);
      assert(li.includes(c.status.toUpperCase()), `check ${c.check} is shown without its status as text`);
    }
    await shot(page, 'overview');
  });

  await step('on a phone-sized screen (375 px) nothing overflows sideways', async () => {
    await page.setViewportSize({ width: 375, height: 800 });
    await waitFor('the layout to settle at 375 px', () => page.evaluate(() => document.documentElement.clientWidth === 375));
    const wide = await page.evaluate(() => document.documentElement.scrollWidth);
    assert(wide <= 375, `the page is ${wide} px wide at 375 px (tables must scroll inside their box)`);
    await shot(page, 'overview-phone');
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  const failedIds = [1, 2, 3, 4, 5].map((i) => `console-${run}-failed-${i}`);
  const otherIds = [1, 2].map((i) => `console-${run}-other-${i}`);
  await step('events sent to a refused webhook are dead-lettered by the worker', async () => {
    startWorker();
    await publish(B, [...failedIds.map((id) => event('console.failed', id)), ...otherIds.map((id) => event('console.other', id))]);
    await waitFor('7 dead letters in the API', async () => {
      const ids = await deadIds(B);
      return [...failedIds, ...otherIds].every((id) => ids.includes(id));
    });
    // With the worker stopped a replayed event stays in its queue, where the test sees it.
    await stopWorker();
  });

  await step('the dead-letter list shows what the API lists, and the total', async () => {
    await show(page, 'dead-letters');
    const [ids, stats] = await Promise.all([deadIds(B, '&limit=50'), apiOk(B, 'GET', '/v1/events/stats')]);
    eq(await attrs(page.locator('[data-testid=dead-row]'), 'data-id'), ids.slice(0, 50), 'dead-letter rows');
    eq(await text(page, 'dead-total'), String(stats.dead), 'dead-letter total');
  });

  await step('selecting a dead letter shows its full event JSON', async () => {
    const id = failedIds[0];
    await page.locator(`[data-testid=dead-row][data-id="${id}"] [data-testid=dead-show]`).click();
    const pre = page.locator('[data-testid=dead-detail]');
    await pre.waitFor();
    const shown = JSON.parse(await pre.innerText());
    eq(shown, await apiOk(B, 'GET', `/v1/events/dead-letter/${id}`), `dead letter ${id}`);
    assert(/refused|connect|failed-hook/i.test(shown.lasterror || ''), `lasterror ${JSON.stringify(shown.lasterror)}`);
    await shot(page, 'dead-letters');
  });

  const applyFilter = async (type, contains) => {
    await page.fill('[data-testid=filter-type]', type);
    await page.fill('[data-testid=filter-contains]', contains);
    await page.click('[data-testid=filter-apply]'); // clears `ready` at once
    await ready(page, 'dead-letters');
  };

  await step('the filter by type and by error text is applied by the server', async () => {
    await applyFilter('console.other', '');
    eq(await attrs(page.locator('[data-testid=dead-row]'), 'data-id'), await deadIds(B, '&type=console.other'), 'rows filtered by type');
    eq((await attrs(page.locator('[data-testid=dead-row]'), 'data-id')).sort(), [...otherIds].sort(), 'rows of type console.other');
    await applyFilter('', 'FAILED-HOOK');
    eq(await attrs(page.locator('[data-testid=dead-row]'), 'data-id'), await deadIds(B, '&contains=FAILED-HOOK'), 'rows filtered by error text');
    eq((await attrs(page.locator('[data-testid=dead-row]'), 'data-id')).sort(), [...failedIds].sort(), 'rows whose error names failed-hook');
    await applyFilter('', '');
  });

  await step('cancelling the dialog (Escape) changes nothing', async () => {
    const id = failedIds[1];
    const seq = await statusSeq(page);
    await page.locator(`[data-testid=dead-row][data-id="${id}"] [data-testid=dead-delete]`).click();
    await page.locator('[data-testid=confirm-dialog]').waitFor({ state: 'visible' });
    await page.keyboard.press('Escape');
    await page.locator('[data-testid=confirm-dialog]').waitFor({ state: 'hidden' });
    const m = await message(page, seq);
    assert(/Cancelled/.test(m), `the message after cancelling is ${JSON.stringify(m)}`);
    eq((await api(B, 'GET', `/v1/events/dead-letter/${id}`)).status, 200, `GET dead letter ${id} after a cancelled delete`);
  });

  await step('replaying a dead letter from the console puts it back in its queue', async () => {
    const id = failedIds[0];
    const before = await apiOk(B, 'GET', '/v1/events/stats');
    const depth = (s) => s.queues.reduce((n, q) => n + q.depth, 0);
    const m = await confirmed(page, page.locator(`[data-testid=dead-row][data-id="${id}"] [data-testid=dead-replay]`));
    assert(m.includes(`Replayed dead letter ${id}`), `the message is ${JSON.stringify(m)}`);
    await waitFor(`row ${id} to leave the list`, async () => (await page.locator(`[data-testid=dead-row][data-id="${id}"]`).count()) === 0);
    eq((await api(B, 'GET', `/v1/events/dead-letter/${id}`)).status, 404, `GET dead letter ${id} after the replay`);
    const after = await apiOk(B, 'GET', '/v1/events/stats');
    eq(after.dead, before.dead - 1, 'the API\'s dead count after one replay');
    eq(depth(after), depth(before) + 1, 'events waiting in the queues after one replay (worker stopped)');
    eq(await text(page, 'dead-total'), String(after.dead), 'dead-letter total after the replay');
  });

  await step('deleting a dead letter from the console (keyboard only) removes it', async () => {
    const id = failedIds[1];
    const m = await confirmed(page, page.locator(`[data-testid=dead-row][data-id="${id}"] [data-testid=dead-delete]`), true);
    assert(m.includes(`Deleted dead letter ${id}`), `the message is ${JSON.stringify(m)}`);
    eq((await api(B, 'GET', `/v1/events/dead-letter/${id}`)).status, 404, `GET dead letter ${id} after the delete`);
    await waitFor(`row ${id} to leave the list`, async () => (await page.locator(`[data-testid=dead-row][data-id="${id}"]`).count()) === 0);
  });

  await step('replaying the filtered set replays exactly the matching dead letters', async () => {
    await applyFilter('console.other', '');
    const m = await confirmed(page, page.locator('[data-testid=replay-set]'));
    eq(m.replace(/^Done:\s*/, ''), `Replayed ${otherIds.length} dead letters`, 'the message');
    const ids = await deadIds(B);
    assert(otherIds.every((id) => !ids.includes(id)), 'a console.other dead letter is still there');
    eq(ids.filter((id) => failedIds.includes(id)).sort(), failedIds.slice(2).sort(), 'the other dead letters');
    eq(await page.locator('[data-testid=dead-row]').count(), 0, 'rows left under the filter');
    await applyFilter('', '');
  });

  const queuesMatch = async () => {
    const s = await apiOk(B, 'GET', '/v1/events/stats');
    for (const q of s.queues) {
      if ((await text(page, `depth-${q.priority}`)) !== String(q.depth)) return false;
      if ((await text(page, `inflight-${q.priority}`)) !== String(q.inFlight)) return false;
      if ((await text(page, `retrying-${q.priority}`)) !== String(q.retrying)) return false;
    }
    return (await text(page, 'dead-total')) === String(s.dead) && s;
  };

  await step('the queues page shows the depths of the API, and a live chart', async () => {
    await show(page, 'queues');
    const s = await waitFor('the queue table to match /v1/events/stats', queuesMatch);
    assert(s.queues.reduce((n, q) => n + q.depth, 0) >= 3, 'the replayed events are not waiting in a queue');
    await waitFor('a line in the depth chart', async () => (await page.locator('[data-testid=chart-depth] polyline').count()) > 0);
    await waitFor('a line in the throughput chart', async () => (await page.locator('[data-testid=chart-throughput] polyline').count()) > 0);
    await shot(page, 'queues');
  });

  await step('after the worker ran, the queue table and the consumers are those of the API', async () => {
    // The worker takes the waiting (replayed) events; they fail and go back to dead letters.
    startWorker();
    await waitFor('the queues to drain', async () => {
      const s = await apiOk(B, 'GET', '/v1/events/stats');
      return s.queues.every((q) => q.depth === 0 && q.inFlight === 0 && q.retrying === 0);
    });
    await stopWorker();
    await waitFor('the queue table and the consumers to match /v1/events/stats after the worker ran', async () => {
      const s = await queuesMatch();
      if (!s) return false;
      const shown = await attrs(page.locator('[data-testid=consumer-row]'), 'data-consumer');
      return isDeepStrictEqual(shown, (s.consumers || []).map((c) => c.consumer));
    });
  });

  // A user with sessions for the read-only check, before anything is revoked.
  const roUser = `console-ro-${run}`;
  await apiOk(B, 'POST', '/v1/sessions', { userId: roUser });

  await step('a read-only token gets access read-only and sees no button that changes state', async () => {
    const ro = await newPage(browser);
    try {
      await signIn(ro.page, B, RO_TOKEN);
      eq(await text(ro.page, 'access'), 'read-only', 'access');
      eq((await apiOk(B, 'GET', '/v1/status', undefined, RO_TOKEN)).access, 'read-only', 'the API\'s access for the read-only token');
      const refused = await api(B, 'DELETE', `/v1/events/dead-letter/${failedIds[2]}`, undefined, RO_TOKEN);
      eq(refused.status, 403, 'DELETE with the read-only token');
      for (const name of PAGES) {
        await show(ro.page, name);
        if (name === 'dead-letters') {
          await ro.page.locator('[data-testid=dead-row]').first().waitFor();
          await ro.page.locator('[data-testid=dead-show]').first().click();
          await ro.page.locator('[data-testid=dead-detail]').waitFor();
        }
        if (name === 'sessions') {
          await ro.page.fill('[data-testid=user-input]', roUser);
          await ro.page.click('[data-testid=user-lookup]');
          await ready(ro.page, 'sessions');
          eq(await ro.page.locator('[data-testid=session-row]').count(), 1, 'session rows of the read-only check');
        }
        const visible = await ro.page.locator('[data-destructive]').evaluateAll(
          (els) => els.filter((e) => e.getClientRects().length > 0).map((e) => e.textContent.trim()));
        eq(visible, [], `buttons that change state on ${name} with a read-only token`);
      }
      eq((await api(B, 'GET', `/v1/events/dead-letter/${failedIds[2]}`)).status, 200, 'the dead letter the read-only token tried to delete');
    } finally {
      await ro.context.close();
    }
  });

  await step('deleting the filtered set (error text) removes exactly the matching dead letters', async () => {
    await show(page, 'dead-letters');
    const matching = await deadIds(B, '&contains=other-hook');
    assert(matching.length === otherIds.length, `dead letters whose error names other-hook: ${matching}`);
    await applyFilter('', 'other-hook');
    const m = await confirmed(page, page.locator('[data-testid=purge-set]'));
    eq(m.replace(/^Done:\s*/, ''), `Deleted ${matching.length} dead letters`, 'the message');
    const ids = await deadIds(B);
    assert(matching.every((id) => !ids.includes(id)), 'a purged dead letter is still there');
    assert(failedIds.slice(2).every((id) => ids.includes(id)), 'a dead letter outside the filter was purged');
    await applyFilter('', '');
  });

  await step('sessions: look up a user, revoke one, then all; the API agrees', async () => {
    const user = `console-user-${run}`;
    const created = [];
    for (let i = 0; i < 3; i++) created.push(await apiOk(B, 'POST', '/v1/sessions', { userId: user, kind: i === 2 ? 'admin' : 'user' }));
    await show(page, 'sessions');
    await page.fill('[data-testid=user-input]', user);
    await page.click('[data-testid=user-lookup]');
    await ready(page, 'sessions');
    const listed = (await apiOk(B, 'GET', `/v1/sessions?userId=${user}`)).sessions;
    eq(await text(page, 'session-count'), String(listed.length), 'session count');
    eq(await attrs(page.locator('[data-testid=session-row]'), 'data-handle-prefix'), listed.map((x) => x.handle.slice(0, 8)), 'session rows (handle prefixes)');
    const html = await page.content();
    for (const s of created) assert(!html.includes(s.id), 'a usable session id is in the page');
    await shot(page, 'sessions');
    const m = await confirmed(page, page.locator('[data-testid=session-row]').first().locator('[data-testid=session-revoke]'));
    assert(/Revoked session/.test(m), `the message is ${JSON.stringify(m)}`);
    const left = (await apiOk(B, 'GET', `/v1/sessions?userId=${user}`)).sessions;
    eq(left.map((x) => x.handle), listed.slice(1).map((x) => x.handle), 'sessions left after revoking the first');
    await waitFor('two session rows', async () => (await page.locator('[data-testid=session-row]').count()) === 2);
    const m2 = await confirmed(page, page.locator('[data-testid=session-revoke-all]'));
    assert(m2.includes('Revoked 2 sessions'), `the message is ${JSON.stringify(m2)}`);
    eq((await apiOk(B, 'GET', `/v1/sessions?userId=${user}`)).sessions, [], 'sessions left after revoking all');
    await waitFor('the session count to be 0', async () => (await text(page, 'session-count')) === '0');
  });

  await step('rate limits: the rules and the most limited keys are those of the API', async () => {
    const key = `198.51.100.${Math.floor(Math.random() * 200) + 1}`;
    let denied = 0;
    for (let i = 0; i < 9; i++) {
      const r = await api(B, 'POST', '/v1/ratelimit/check', { rule: 'login', key });
      if (r.status === 429) denied += 1;
      else if (r.status !== 200) throw new Error(`POST /v1/ratelimit/check answered ${r.status} ${JSON.stringify(r.data)}`);
    }
    assert(denied > 0, 'no check was denied');
    await show(page, 'rate-limits');
    const rules = (await apiOk(B, 'GET', '/v1/ratelimit/rules')).rules;
    eq(await attrs(page.locator('[data-testid=rule-row]'), 'data-rule'), rules.map((r) => r.name), 'rule rows');
    eq(await texts(page.locator('[data-testid=rule-limit]')), rules.map((r) => String(r.limit)), 'rule limits');
    const top = (await apiOk(B, 'GET', '/v1/ratelimit/top?window=5m')).keys;
    const mine = top.find((k) => k.key === key);
    assert(mine && mine.denied === denied, `the API's top keys ${JSON.stringify(top)} lack ${key} denied ${denied} times`);
    const row = page.locator(`[data-testid=top-row][data-key="${key}"]`);
    await row.waitFor();
    eq(await row.locator('[data-testid=top-denied]').innerText(), String(denied), `denials of ${key}`);
    await page.selectOption('[data-testid=window-select]', '1m'); // clears `ready` at once
    await ready(page, 'rate-limits');
    const top1 = (await apiOk(B, 'GET', '/v1/ratelimit/top?window=1m')).keys;
    eq(await attrs(page.locator('[data-testid=top-row]'), 'data-key'), top1.map((k) => k.key), 'top keys over 1 min');
    await shot(page, 'rate-limits');
  });

  await step('cache: hits per namespace are those of the API; invalidating by tag and whole namespace', async () => {
    const ns = `console-${run}`;
    await apiOk(B, 'PUT', `/v1/cache/${ns}/a`, { value: 1, tags: ['t1'] });
    await apiOk(B, 'PUT', `/v1/cache/${ns}/b`, { value: 2, tags: ['t1'] });
    await apiOk(B, 'PUT', `/v1/cache/${ns}/c`, { value: 3, tags: ['t2'] });
    for (const k of ['a', 'a', 'b', 'c']) await apiOk(B, 'GET', `/v1/cache/${ns}/${k}`);
    eq((await api(B, 'GET', `/v1/cache/${ns}/missing`)).status, 404, 'GET of a key never written');
    await show(page, 'cache');
    const row = page.locator(`[data-testid=ns-row][data-namespace="${ns}"]`);
    await waitFor(`the row of namespace ${ns} to match /v1/cache/stats`, async () => {
      const s = (await apiOk(B, 'GET', '/v1/cache/stats')).namespaces.find((n) => n.namespace === ns);
      if (!s || !(await row.count())) return false;
      const shown = await texts(row.locator('[data-testid=l1-hits], [data-testid=l2-hits], [data-testid=misses]'));
      return isDeepStrictEqual(shown, [String(s.l1Hits), String(s.l2Hits), String(s.misses)]) && s;
    }, 15_000);
    await page.fill('[data-testid=inv-namespace]', ns);
    await page.fill('[data-testid=inv-tags]', 't1');
    const m = await confirmed(page, page.locator('[data-testid=inv-submit]'));
    assert(/Invalidated tag t1 in namespace .*: removed 2$/.test(m), `the message is ${JSON.stringify(m)}`);
    eq(await text(page, 'removed'), '2', 'removed');
    eq((await api(B, 'GET', `/v1/cache/${ns}/a`)).status, 404, 'GET of an invalidated key');
    eq((await api(B, 'GET', `/v1/cache/${ns}/c`)).status, 200, 'GET of a key of another tag');
    await page.check('[data-testid=inv-all]');
    const m2 = await confirmed(page, page.locator('[data-testid=inv-submit]'));
    const removed = await text(page, 'removed');
    // On Redis a whole-namespace clear counts the keys it unlinks (tombstones and tag sets too).
    assert(/Invalidated namespace .*: removed \d+$/.test(m2) && Number(removed) >= 1, `the message is ${JSON.stringify(m2)}, removed ${removed}`);
    eq((await api(B, 'GET', `/v1/cache/${ns}/c`)).status, 404, 'GET after invalidating the whole namespace');
    await shot(page, 'cache');
  });

  await step('the overview counts the events published here and those the workers settled', async () => {
    await show(page, 'overview');
    await waitFor('the event counts of /v1/status and /v1/events/stats on the overview', async () => {
      const [st, stats] = await Promise.all([apiOk(B, 'GET', '/v1/status'), apiOk(B, 'GET', '/v1/events/stats')]);
      const published = await text(page, 'rate-published');
      const dead = await text(page, 'rate-dead-lettered');
      return published.includes(`(${st.counters.eventsPublished} in total)`) &&
        dead.includes(`(${stats.totals.deadLettered} in total)`) && stats.totals.deadLettered > 0;
    });
  });

  await step('the nav links every page and is usable with the keyboard', async () => {
    eq(await attrs(page.locator('nav a'), 'href'), PAGES.map((p) => `#/${p}`), 'nav links');
    await page.locator('nav a[href="#/queues"]').focus();
    await page.keyboard.press('Enter');
    await ready(page, 'queues');
  });

  await step('every page fits a phone-sized screen (375 px): tables scroll inside their box', async () => {
    await page.setViewportSize({ width: 375, height: 800 });
    try {
      for (const name of PAGES) {
        await show(page, name);
        const wide = await page.evaluate(() => document.documentElement.scrollWidth);
        assert(wide <= 375, `${name} is ${wide} px wide at 375 px`);
      }
    } finally {
      await page.setViewportSize({ width: 1280, height: 800 });
    }
  });

  await step('signing out forgets the token', async () => {
    await page.click('[data-testid=sign-out]');
    await ready(page, 'signin');
    eq(await page.evaluate(() => sessionStorage.length), 0, 'entries in sessionStorage after signing out');
    await page.reload();
    await ready(page, 'signin');
  });

  await context.close();
}

// ------------------------------------------------------------------ part 2: timings

async function timingPart(browser) {
  const B = MEMORY;
  let t0 = Date.now();
  await step(`${DEAD_LETTERS} dead letters on the memory backend`, async () => {
    const batch = 1000;
    for (let i = 0; i < DEAD_LETTERS; i += batch) {
      const events = [];
      for (let j = i; j < Math.min(i + batch, DEAD_LETTERS); j++) events.push(event('console.failed', `bulk-${run}-${String(j).padStart(5, '0')}`));
      await publish(B, events);
    }
    await waitFor(`${DEAD_LETTERS} dead letters`, async () => {
      const s = await apiOk(B, 'GET', '/v1/events/stats');
      return s.dead >= DEAD_LETTERS && s.queues.every((q) => q.depth === 0 && q.inFlight === 0);
    }, 120_000, 250);
    console.log(`console: timing: ${DEAD_LETTERS} events published and dead-lettered in ${Date.now() - t0} ms`);
  });

  const { context, page } = await newPage(browser);
  try {
    await step('timing: navigation start to ready, per page (10 000 dead letters)', async () => {
      await signIn(page, B, TOKEN);
      // Two rounds: the first visit of each page, then the same again with the browser's
      // caches and code warm (as an operator moving between pages finds them).
      const rows = [];
      for (const round of ['first visit', 'again']) {
        for (const name of PAGES) {
          await page.goto('about:blank');
          await page.goto(`${B}/ui#/${name}`);
          await ready(page, name);
          const ms = await page.evaluate(() => window.__readyAt);
          rows.push([name, round, ms]);
          console.log(`console: timing: ${name.padEnd(12)} ${ms.toFixed(0).padStart(5)} ms from navigation start to ready (${round})`);
        }
      }
    });

    await step('dead letters are paged 50 at a time by offset and the Link header', async () => {
      await page.goto('about:blank');
      await page.goto(`${B}/ui#/dead-letters`);
      await ready(page, 'dead-letters');
      const stats = await apiOk(B, 'GET', '/v1/events/stats');
      eq(await text(page, 'dead-total'), String(stats.dead), 'dead-letter total');
      const first = await api(B, 'GET', '/v1/events/dead-letter?limit=50');
      eq(await attrs(page.locator('[data-testid=dead-row]'), 'data-id'), first.data.map((e) => e.id), 'the first page');
      assert(/rel="?next"?/.test(first.headers.get('link') || ''), `no Link rel=next on the first page: ${first.headers.get('link')}`);
      const before = await page.evaluate(() => performance.now());
      await page.click('[data-testid=page-next]'); // clears `ready` at once
      await ready(page, 'dead-letters');
      const after = await page.evaluate(() => window.__readyAt);
      console.log(`console: timing: next page of dead letters ${(after - before).toFixed(0)} ms from the click to ready`);
      const second = await apiOk(B, 'GET', '/v1/events/dead-letter?limit=50&offset=50');
      eq(await attrs(page.locator('[data-testid=dead-row]'), 'data-id'), second.map((e) => e.id), 'the second page');
      assert(await page.locator('[data-testid=page-prev]').isEnabled(), 'Previous is disabled on the second page');
    });

    await step('an action the API refuses shows the API\'s problem', async () => {
      // Another operator deletes a dead letter the page still lists; replaying it here is a 404.
      const id = await page.locator('[data-testid=dead-row]').first().getAttribute('data-id');
      eq((await api(B, 'DELETE', `/v1/events/dead-letter/${id}`)).status, 204, `DELETE dead letter ${id} through the API`);
      const problem = (await api(B, 'GET', `/v1/events/dead-letter/${id}`)).data;
      const m = await confirmed(page, page.locator(`[data-testid=dead-row][data-id="${id}"] [data-testid=dead-replay]`));
      assert(m.startsWith('Problem:') && m.includes(problem.title), `the message is ${JSON.stringify(m)}, the API's problem ${JSON.stringify(problem)}`);
      eq(await page.evaluate(() => document.querySelector('[data-testid=status]').dataset.kind), 'error', 'the kind of message');
    });
  } finally {
    await context.close();
  }
}

// ------------------------------------------------------------------ main

const started = Date.now();
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-dev-shm-usage'] });
try {
  await redisPart(browser);
  await timingPart(browser);
  await step('no script error and no CSP violation in any page', async () => {
    eq(problems, [], 'problems');
  });
} catch (e) {
  failed += 1;
  console.log(`console: FAIL the test stopped: ${e.stack || e}`);
} finally {
  await stopWorker();
  await browser.close();
}
console.log(`console: ${((Date.now() - started) / 1000).toFixed(1)} s; screenshots in ${SHOTS}`);
console.log(`console: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
