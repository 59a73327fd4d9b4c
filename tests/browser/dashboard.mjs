// The dashboard in a real browser: Debian's chromium, headless, driven by
// playwright-core; axe-core checks accessibility. Run by
// tests/integration/test_dashboard.py, which starts litefs-cloud and a
// LiteFS node writing a workload, and passes what it recorded in a JSON file:
//
//   node dashboard.mjs CONFIG.json
//
// Every step prints "step NAME ok"; a failed check throws (exit 1). Console
// errors and page errors fail the run, except the HTTP refusals a step
// expects (a wrong token's 401...) and, on a service without the dashboard
// data endpoints (has_dashapi false), their 404s. The results the Python
// side checks (the downloaded file, the fork's name) go to CONFIG.out.
import { chromium } from 'playwright-core';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const shots = cfg.shots;
mkdirSync(shots, { recursive: true });
const out = {};
const errors = [];
let allowed = [];            // [{re, status}] HTTP refusals the current step expects
const DASHAPI = /\/(dbs|events|db\/timeline|db\/preview(\/rows)?)(\?|$)/;

function check(cond, msg) {
  if (!cond) throw new Error('check failed: ' + msg);
}
async function until(fn, ms, msg) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error('timed out: ' + (typeof msg === 'function' ? await msg() : msg));
    await new Promise((r) => setTimeout(r, 100));
  }
}
const t0 = Date.now();
let tStep = t0;
function step(name) {
  const now = Date.now();
  console.log('step ' + name + ' ok (' + ((now - tStep) / 1000).toFixed(1) + ' s)');
  tStep = now;
}

const browser = await chromium.launch({
  executablePath: cfg.chromium || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});

/* A page whose console errors and page errors are failures. */
async function newPage(viewport, extra) {
  const ctx = await browser.newContext(Object.assign({ viewport: viewport || { width: 1280, height: 800 },
    acceptDownloads: true, timezoneId: 'America/New_York' }, extra || {}));
  // Layout shifts (CLS) from the first paint on: "no layout jumps".
  await ctx.addInitScript(() => {
    window.__cls = 0;
    new PerformanceObserver((l) => { for (const e of l.getEntries()) if (!e.hadRecentInput) window.__cls += e.value; })
      .observe({ type: 'layout-shift', buffered: true });
  });
  const page = await ctx.newPage();
  const failed = new Map(); // url -> status of the last failed response
  page.on('response', (r) => { if (r.status() >= 400) failed.set(r.url(), r.status()); });
  page.on('pageerror', (e) => errors.push('pageerror: ' + e.message));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const url = (m.location() && m.location().url) || '';
    const text = m.text();
    // An event stream refused (a session that ended) is reported by the
    // browser as a MIME-type error of /events.
    if (/EventSource/.test(text) && allowed.some((a) => a.re.test(url))) return;
    if (/Failed to load resource/.test(text)) {
      const st = failed.get(url);
      if (allowed.some((a) => a.re.test(url) && (!a.status || a.status === st))) return;
      if (!cfg.has_dashapi && DASHAPI.test(url) && st === 404) return;
    }
    errors.push('console: ' + text + ' ' + url);
  });
  return page;
}

async function axe(page, name) {
  await page.evaluate(axeSource);
  const r = await page.evaluate(() => globalThis.axe.run(document, { resultTypes: ['violations'] }));
  const bad = r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  check(bad.length === 0, `axe on ${name}: ` + JSON.stringify(bad.map((v) => [v.id, v.impact, v.nodes.map((n) => n.target)])));
}
async function shot(page, name) {
  await page.screenshot({ path: path.join(shots, name + '.png'), fullPage: true });
}
async function signIn(page, token, base) {
  await page.goto((base || cfg.url) + '/');
  await page.waitForSelector('#view-login:not([hidden])');
  await page.fill('#token', token);
  await page.click('#login-btn');
}
async function chosen(page) {
  return page.$eval('#point-txid', (e) => e.textContent).catch(() => null);
}
function nodePos() {
  const [txid, chk] = readFileSync(cfg.node_pos, 'utf8').trim().split('/');
  return { txid: parseInt(txid, 16), chk };
}

try {
  const page = await newPage();

  // ---- sign-in: a wrong token is refused with a message, the right one gets in.
  allowed = [{ re: /\/ui\/login$/, status: 401 }];
  await signIn(page, 'lfsc_' + '0'.repeat(64));
  await page.waitForFunction(() => document.getElementById('login-error').textContent.includes('not valid'));
  await shot(page, '01-sign-in-refused');
  await axe(page, 'sign-in');
  allowed = [];
  await signIn(page, cfg.token);
  await page.waitForSelector('#view-list:not([hidden]) tr[data-db="db"]');
  const cookies = await page.context().cookies();
  const sc = cookies.find((c) => c.name === 'lfsc_session');
  check(sc && sc.httpOnly && sc.sameSite === 'Strict' && sc.expires > 0 && !sc.secure,
    'session cookie flags over http: ' + JSON.stringify(sc));
  check(!page.url().includes(cfg.token), 'token in the URL');
  step('sign-in');

  // ---- the list shows the service's TXIDs.
  const txid = await page.$eval('tr[data-db="db"] td.txid', (e) => e.textContent);
  check(txid === cfg.last.txid, `list TXID ${txid} != ${cfg.last.txid}`);
  await page.waitForTimeout(300);
  const clsList = await page.evaluate(() => window.__cls);
  check(clsList < 0.1, 'layout shift on sign-in and the list: ' + clsList);
  await shot(page, '02-databases');
  await axe(page, 'databases');
  step('list');

  // ---- the timeline; a point by click.
  await page.click('tr[data-db="db"] a');
  await page.waitForSelector('#view-db:not([hidden])');
  await page.waitForFunction(() => typeof S !== 'undefined' && S.tl !== null);
  await shot(page, '03-timeline');
  await axe(page, 'database');
  const byClick = cfg.click;
  const box = await page.$('#tl-box');
  const bb = await box.boundingBox();
  const view = await page.evaluate(() => S.view);
  const x = bb.x + ((byClick.ts_ms + 5 - view.from) / (view.to - view.from)) * bb.width;
  await page.mouse.click(x, bb.y + bb.height / 2);
  await until(async () => (await chosen(page)) === byClick.txid, 5000,
    async () => `click chose ${await chosen(page)}, wanted ${byClick.txid}`);
  step('pick by click');
  if (cfg.has_dashapi) {
    await page.waitForSelector('#pv-table tr[data-table="t"] td.rowcount');
    const rows = await page.$eval('#pv-table tr[data-table="t"] td.rowcount', (e) => e.textContent);
    check(Number(rows) === byClick.rows, `preview rows ${rows} != ${byClick.rows}`);
    await page.click('#pv-table tr[data-table="t"] button');
    await page.waitForSelector('#rows-table tbody tr');
    step('preview row counts');
  }
  await shot(page, '04-point-and-preview');

  // ---- a point by typed timestamp (UTC), then by local time.
  const typed = cfg.typed;
  await page.selectOption('#pick-zone', 'utc');
  await page.fill('#pick-ts', new Date(typed.ts_ms + 2).toISOString().replace('T', ' ').replace('Z', ''));
  await page.press('#pick-ts', 'Enter');
  await until(async () => (await chosen(page)) === typed.txid, 5000, async () => `typed UTC chose ${await chosen(page)}, wanted ${typed.txid}`);
  await page.selectOption('#pick-zone', 'local');
  const local = await page.evaluate((ms) => fmtLocal(ms), typed.ts_ms + 2);
  await page.click('#pick-txid-form button'); // no TXID typed: nothing happens
  await page.fill('#pick-ts', local);
  await page.click('#pick-ts-form button');
  await until(async () => (await chosen(page)) === typed.txid, 5000, 'typed local time');
  step('pick by typed timestamp');

  // ---- zoom: a range button, then + and the wheel narrow the view.
  await page.click('button[data-range="60000"]');
  check(await page.$eval('button[data-range="60000"]', (b) => b.getAttribute('aria-pressed')) === 'true', '1 minute not pressed');
  const span0 = await page.evaluate(() => S.view.to - S.view.from);
  check(Math.abs(span0 - 60000) < 1, 'range button span ' + span0);
  await page.click('#tl-in');
  const span1 = await page.evaluate(() => S.view.to - S.view.from);
  check(Math.abs(span1 - 30000) < 1, 'zoom in span ' + span1);
  await page.click('#tl-fit');
  await page.waitForFunction(() => S.tl && S.tl.mode !== undefined);
  step('zoom');

  // ---- keyboard: focus the timeline, move, choose.
  await page.focus('#tl-box');
  await page.keyboard.press('ArrowLeft');
  await page.keyboard.press('Enter');
  await until(async () => (await chosen(page)) !== null, 5000, 'keyboard choice');
  await page.fill('#pick-txid', typed.txid);
  await page.press('#pick-txid', 'Enter');
  await until(async () => (await chosen(page)) === typed.txid, 5000, 'typed TXID');
  step('keyboard and TXID');

  // ---- restore in place, confirmed by typing the name: the node follows.
  const before = nodePos();
  await page.click('#restore-btn');
  await page.waitForSelector('#restore-dialog[open]');
  check(await page.$eval('#rd-go', (b) => b.disabled), 'restore enabled before the name was typed');
  await page.fill('#rd-confirm', 'db');
  await shot(page, '05-restore-confirm');
  await page.click('#rd-go');
  await page.waitForSelector('#new-txid');
  const newTxid = await page.$eval('#new-txid', (e) => e.textContent);
  const undoTxid = await page.$eval('#undo-txid', (e) => e.textContent);
  check(parseInt(newTxid, 16) === before.txid + 1, `restore made TXID ${newTxid}, node was at ${before.txid}`);
  check(undoTxid === cfg.last.txid, `undo point ${undoTxid} != ${cfg.last.txid}`);
  await until(() => nodePos().chk === typed.chk, 10000, () => `node at ${JSON.stringify(nodePos())}, wanted ${typed.chk}`);
  const rowsAfter = Number(execFileSync('sqlite3', [cfg.node_db, 'SELECT count(*) FROM t']).toString().trim());
  check(rowsAfter === typed.rows, `node has ${rowsAfter} rows after the restore, wanted ${typed.rows}`);
  if (cfg.has_dashapi) {
    // The node took the restored state (a fetch event): the page says applied.
    await page.waitForSelector('#applied.ok', { timeout: 10000 });
    const how = await page.$eval('#applied', (e) => e.textContent);
    check(/took the restored state/.test(how), 'applied without the fetch event: ' + how);
    execFileSync('sqlite3', [cfg.node_db, "INSERT INTO t(v) VALUES ('after restore')"]);
  } else {
    // The node writes on top of the restored state: the page says applied.
    execFileSync('sqlite3', [cfg.node_db, "INSERT INTO t(v) VALUES ('after restore')"]);
    await page.waitForSelector('#applied.ok', { timeout: 10000 });
  }
  await shot(page, '06-restored');
  step('restore in place reaches the node');

  // ---- undo: back to the state before the restore.
  await page.click('#undo-btn');
  await until(() => nodePos().chk === cfg.last.chk, 10000, () => `after undo node at ${JSON.stringify(nodePos())}, wanted ${cfg.last.chk}`);
  step('undo');

  // ---- fork and download the point chosen by TXID.
  const fk = cfg.fork;
  await page.fill('#pick-txid', fk.txid);
  await page.press('#pick-txid', 'Enter');
  await until(async () => (await chosen(page)) === fk.txid, 5000, 'fork point');
  await page.fill('#fork-name', 'fork.db');
  await page.click('#fork-btn');
  await page.waitForSelector('#fork-link');
  const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
  out.download = path.join(shots, 'download.db');
  await dl.saveAs(out.download);
  await page.click('#fork-link');
  await page.waitForFunction(() => document.getElementById('db-h').textContent === 'fork.db');
  await page.goto(cfg.url + '/ui/#/');
  await page.waitForSelector('tr[data-db="fork.db"]');
  await shot(page, '07-databases-after-fork');
  step('fork and download');

  // ---- CSRF: the same-site page of another origin posts a restore with
  // the session cookie; refused. A same-origin POST without the token too.
  allowed = [{ re: /\/db\/restore/, status: 403 }];
  const evil = await page.context().newPage();
  evil.on('pageerror', (e) => errors.push('pageerror (evil): ' + e.message));
  const [resp] = await Promise.all([
    evil.waitForResponse((r) => r.url().includes('/db/restore')),
    evil.goto(cfg.evil_url),
  ]);
  check(resp.status() === 403, 'forged cross-origin POST got ' + resp.status());
  const st = await page.evaluate(async () => (await fetch('/db/restore?db=db&txid=1', { method: 'POST' })).status);
  check(st === 403, 'POST without the CSRF token got ' + st);
  allowed = [];
  const posNow = await page.evaluate(async () => (await (await fetch('/pos')).json()).db.txid);
  check(parseInt(posNow, 16) === nodePos().txid, 'a refused POST changed the database');
  step('csrf refused');

  // ---- phone width: the list and the database page.
  const phone = await newPage({ width: 375, height: 740 });
  await signIn(phone, cfg.token);
  await phone.waitForSelector('tr[data-db="db"]');
  await shot(phone, '08-phone-databases');
  await phone.goto(cfg.url + '/ui/#/db/db');
  await phone.waitForFunction(() => typeof S !== 'undefined' && S.tl !== null);
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, 'the database page is wider than the phone by ' + overflow + ' px');
  const clsPhone = await phone.evaluate(() => window.__cls);
  check(clsPhone < 0.1, 'layout shift opening the database page (phone): ' + clsPhone);
  console.log(`layout shift: list ${clsList.toFixed(3)}, database page (phone) ${clsPhone.toFixed(3)}`);
  await shot(phone, '09-phone-database');
  await axe(phone, 'database (phone)');
  step('phone width');

  // ---- another cluster's token sees nothing of this one.
  const other = await newPage();
  await signIn(other, cfg.other_token);
  await other.waitForSelector('#view-list:not([hidden])');
  await other.waitForFunction(() => document.getElementById('list-empty').hidden === false);
  allowed = [{ re: /\/db\/(info|snapshot)/, status: 404 }];
  const peek = await other.evaluate(async () => [(await fetch('/db/info?db=db')).status,
    (await fetch('/db/snapshot?db=db&format=sqlite')).status]);
  check(peek[0] === 404 && peek[1] === 404, 'another cluster saw db: ' + peek);
  allowed = [];
  step('other cluster sees nothing');

  // ---- sign-out ends the session on the service too.
  const jar = await page.context().cookies();
  await page.click('#signout');
  await page.waitForSelector('#view-login:not([hidden])');
  allowed = [{ re: /\/(pos|events)$/, status: 401 }];
  const ctx2 = await browser.newContext();
  await ctx2.addCookies(jar);
  const replay = await ctx2.request.get(cfg.url + '/pos');
  check(replay.status() === 401, 'the cookie still works after sign-out: ' + replay.status());
  await ctx2.close();
  allowed = [];
  step('sign-out');

  // ---- a session expires (a service with -ui-session 2s).
  const ex = await newPage();
  await ex.goto(cfg.short_url + '/');
  await ex.fill('#token', cfg.short_token);
  await ex.click('#login-btn');
  await ex.waitForSelector('#view-list:not([hidden])');
  allowed = [{ re: /\/(pos|dbs|db\/info|events)/, status: 401 }]; // the page's own poll may see it first
  await new Promise((r) => setTimeout(r, 2500));
  await ex.evaluate(() => loadList().catch(() => {}));
  await ex.waitForSelector('#view-login:not([hidden])');
  await ex.waitForTimeout(300);
  const msg = await ex.$eval('#login-error', (e) => e.textContent);
  check(/session has ended/.test(msg), 'expiry message: ' + msg);
  allowed = [];
  step('session expiry');

  // ---- the admin view (loopback listener, admin key): a new token shown
  // once signs in; revoking it ends that session at once.
  allowed = [{ re: /\/admin\/login$/, status: 401 }];
  const adm = await newPage();
  await adm.goto(cfg.admin_url + '/');
  await adm.waitForSelector('#view-login:not([hidden])');
  await adm.fill('#token', '0'.repeat(64));
  await adm.click('#login-btn');
  await adm.waitForFunction(() => /wrong admin key/.test(document.getElementById('login-error').textContent));
  allowed = [];
  await adm.fill('#token', cfg.admin_key);
  await adm.click('#login-btn');
  await adm.waitForSelector('tr[data-cluster="prod"]');
  check(await adm.$('tr[data-cluster="other"]'), 'admin view lists every cluster');
  await adm.click('button[aria-label="New token for prod"]');
  await adm.waitForSelector('#token-text');
  const fresh = await adm.$eval('#token-text', (e) => e.value);
  check(/^lfsc_[0-9a-f]{64}$/.test(fresh), 'new token shown: ' + fresh);
  await shot(adm, '11-admin-new-token');
  await axe(adm, 'admin');
  const viaNew = await newPage();
  await signIn(viaNew, fresh);
  await viaNew.waitForSelector('tr[data-db="db"]');
  const tokenId = await adm.$eval('#new-token strong', (e) => /ID ([0-9a-f]+)/.exec(e.textContent)[1]);
  // From the revocation on, that page's requests (its 2 s poll too) are 401.
  allowed = [{ re: /\/(pos|dbs|db\/info|events)/, status: 401 }];
  await adm.click(`button[aria-label="Revoke token ${tokenId}"]`);
  await adm.waitForFunction((id) => !document.querySelector(`[data-token="${id}"]`), tokenId);
  await viaNew.evaluate(() => loadList().catch(() => {}));
  await viaNew.waitForSelector('#view-login:not([hidden])');
  await viaNew.waitForTimeout(300);
  allowed = [];
  step('admin view: token created, signed in, revoked');

  // ---- over https (a TLS front before the service): the cookie is Secure,
  // the page and its event stream work, and a big database's download,
  // restore and fork show how far they got, and a failure says why.
  const tp = await newPage(null, { ignoreHTTPSErrors: true });
  await signIn(tp, cfg.token, cfg.tls_url);
  await tp.waitForSelector('tr[data-db="big.db"]');
  const tc = (await tp.context().cookies()).find((c) => c.name === 'lfsc_session');
  check(tc && tc.secure && tc.httpOnly && tc.sameSite === 'Strict', 'session cookie over https: ' + JSON.stringify(tc));
  await tp.click('tr[data-db="big.db"] a');
  await tp.waitForFunction(() => typeof S !== 'undefined' && S.tl !== null);
  await tp.waitForFunction(() => document.getElementById('live').textContent === 'live');
  const bigPoint = cfg.big[0].txID;
  await tp.fill('#pick-txid', bigPoint);
  await tp.press('#pick-txid', 'Enter');
  await until(async () => (await chosen(tp)) === bigPoint, 5000, 'big point');
  await tp.waitForFunction(() => /MiB\)$/.test(document.getElementById('download').textContent));
  // Every text the action's status line shows, as it is shown.
  await tp.evaluate(() => {
    window.__seen = [];
    new MutationObserver((rs) => { for (const r of rs) for (const n of r.addedNodes) window.__seen.push(n.textContent); })
      .observe(document.getElementById('act-progress'), { childList: true, subtree: true });
  });
  const midway = /\((?:[1-9]|[1-9]\d)%\)$/; // a percentage strictly between 0 and 100
  const [bdl] = await Promise.all([tp.waitForEvent('download'), tp.click('#download')]);
  await tp.waitForFunction(() => /file is ready \(15 MiB\)/.test(document.getElementById('act-progress').textContent));
  await shot(tp, '12-https-download-ready');
  out.big_download = path.join(shots, 'big-download.db');
  await bdl.saveAs(out.big_download);
  let seen = await tp.evaluate(() => window.__seen.splice(0));
  check(seen.some((t) => /reading its history, [\d.]+ MiB of 15 MiB/.test(t) && midway.test(t)),
    'download progress: ' + JSON.stringify(seen));
  await tp.click('#restore-btn');
  await tp.fill('#rd-confirm', 'big.db');
  await tp.click('#rd-go');
  await tp.waitForSelector('#new-txid');
  seen = await tp.evaluate(() => window.__seen.splice(0));
  check(seen.some((t) => /^Restoring big\.db .*reading its history/.test(t) && midway.test(t)) &&
    seen.some((t) => /writing the new transaction, \d+ of \d+ pages/.test(t) && midway.test(t)),
    'restore progress: ' + JSON.stringify(seen));
  // A fork into a name that exists: refused, and said so.
  allowed = [{ re: /\/db\/restore/, status: 409 }];
  await tp.fill('#fork-name', 'db');
  await tp.click('#fork-btn');
  await tp.waitForFunction(() => /^Fork.* failed: .*exists/.test(document.getElementById('act-error').textContent));
  check(await tp.$eval('#act-progress', (e) => e.textContent) === '', 'progress left after a failed fork');
  allowed = [];
  // A download that cannot be built (a TXID past the window): the browser
  // only sees a failed download; the page says why.
  await tp.evaluate(() => { S.point = Object.assign({}, S.point, { txid: '00000000000fffff' }); setActions(); });
  await tp.click('#download');
  await tp.waitForFunction(() => /^Download of TXID 00000000000fffff failed: .*outside the restorable window/
    .test(document.getElementById('act-error').textContent));
  await axe(tp, 'database over https with a result');
  step('https: Secure cookie, progress of download and restore, a failure said');

  // ---- sign-in attempts are rate-limited per address, with a message.
  allowed = [{ re: /\/ui\/login$/ }];
  const rl = await newPage();
  let text = '';
  for (let i = 0; i < 7 && !/Too many/.test(text); i++) {
    await signIn(rl, 'lfsc_' + '1'.repeat(64));
    await rl.waitForFunction(() => document.getElementById('login-error').textContent !== '');
    text = await rl.$eval('#login-error', (e) => e.textContent);
  }
  check(/Too many/.test(text), 'no rate limit: ' + text);
  await shot(rl, '10-rate-limited');
  allowed = [];
  step('rate limit');

  check(errors.length === 0, 'console or page errors:\n' + errors.join('\n'));
  writeFileSync(cfg.out, JSON.stringify(out));
  console.log('dashboard: all steps passed');
} finally {
  await browser.close();
}
