// Drives the dashboard (GET /ui on the admin listener) in headless Chromium as a person would:
// signs in with the admin token, finds objects by class and by name, opens one and reads its
// sockets and storage, runs a query, is refused a writing statement, evicts the object and
// sees its state change, runs an alarm, watches the live figures move, and follows a
// channel's history. It checks only what the page shows (text, numbers).
//
// Run by test_dashboard.py (ChromiumDashboardTests), which owns the host and its clients. When
// this script needs something done by a client, it prints a line (`OPEN 2 SOCKETS`, `TRAFFIC`,
// `WAKE`, `SAY`) and waits for `DONE`. The last line is `OK <json summary>`; any failure
// prints `FAIL <reason>` and exits 1.
//
// Usage: node chromium_dashboard.js <admin-base-url> <admin-token>
'use strict';

const { withChromium, nextLine, say, run } = require('./chromium_support');

const [base, adminToken] = process.argv.slice(2);
if (!adminToken) {
  console.error('usage: node chromium_dashboard.js <admin-base-url> <admin-token>');
  process.exit(2);
}

async function ask(request) {
  say(request);
  const answer = await nextLine();
  if (answer !== 'DONE') throw new Error(`expected DONE after ${request}, got ${answer}`);
}

// Polls `read(page)` until `predicate` holds for what it returns.
async function until(what, page, read, predicate, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  let seen;
  while (Date.now() < deadline) {
    seen = await read(page);
    if (predicate(seen)) return seen;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}; the page shows: ${JSON.stringify(seen)}`);
}

// What the page shows, read from the DOM as text. Each returns a reader for until().
const inPage = (fn, arg) => (page) => page.evaluate(fn, arg);
const text = (selector) => inPage((sel) => {
  const e = document.querySelector(sel);
  return e && !e.closest('[hidden]') ? e.textContent.trim() : null;
}, selector);
const objectRows = inPage(() => [...document.querySelectorAll('#object-groups tr[data-name]')]
  .map((tr) => ({ name: tr.cells[0].textContent, cls: tr.dataset.class,
                  state: tr.cells[2].textContent, sockets: Number(tr.cells[3].textContent),
                  evictable: tr.querySelector('.evictable').textContent })));
const groupTitles = inPage(() => [...document.querySelectorAll('#object-groups h2')].map((e) => e.textContent));
const field = (name) => text(`#obj-fields dd[data-field="${name}"]`);
const tableText = (selector) => inPage((sel) => [...document.querySelectorAll(`${sel} tbody tr`)]
  .map((tr) => [...tr.cells].map((td) => td.textContent)), selector);
const figure = (key) => inPage((k) => {
  const e = document.querySelector(`.figure[data-metric="${k}"]`);
  if (!e) return null;
  const total = e.querySelector('.total');
  const points = e.querySelector('polyline').getAttribute('points').split(' ').filter(Boolean);
  return { value: e.querySelector('.value').textContent,
           total: total ? Number(total.textContent.replace(/^total /, '')) : null,
           points: points.length,
           // the chart's highest point, in the chart's own units (48 is its height)
           peak: Math.max(0, ...points.map((p) => 48 - Number(p.split(',')[1]))) };
}, key);
const lineTexts = inPage(() => [...document.querySelectorAll('#history-lines li')].map((li) => li.textContent));

async function main() {
  const summary = {};
  await withChromium('dohost-dashboard-', async (context) => {
    const page = await context.newPage();
    const problems = [];
    page.on('pageerror', (e) => problems.push('page error: ' + e.message));
    // Answers with an error status (the 401 sign-in page, the refused write, the missing
    // channel) are expected; Chromium logs each as "Failed to load resource".
    page.on('console', (m) => {
      if (m.type() === 'error' && !/^Failed to load resource/.test(m.text())) problems.push('console: ' + m.text());
    });

    // Signing in: without the token the host answers a form; the token then leaves the
    // address bar and the page works.
    const first = await page.goto(`${base}/ui#/objects`);
    if (first.status() !== 401) throw new Error('expected 401 without the token, got ' + first.status());
    if (!/needs its token/.test(await page.textContent('body'))) throw new Error('no sign-in form');
    await page.fill('input[name="token"]', 'not-it');
    await Promise.all([page.waitForNavigation(), page.click('button')]);
    if (!/not the admin token/.test(await page.textContent('body'))) throw new Error('a wrong token was not refused');
    await page.fill('input[name="token"]', adminToken);
    await Promise.all([page.waitForNavigation(), page.click('button')]);
    await until('the objects view', page, text('#status'), (s) => /^updated/.test(s || ''));
    if (page.url().includes('token=')) throw new Error('the token stayed in the address bar: ' + page.url());

    // Objects by class.
    await until('the objects', page, objectRows, (rows) =>
      ['dash-echo', 'dash-room', 'dash-project'].every((n) => rows.some((r) => r.name === n)));
    const titles = await groupTitles(page);
    for (const cls of ['TestEcho', 'ChannelWebSocket', 'Broadcaster']) {
      if (!titles.some((t) => t.startsWith(cls + ' ('))) throw new Error(`no ${cls} group: ${titles}`);
    }
    const echoRow = (rows) => rows.find((r) => r.name === 'dash-echo');
    const rows = await until('dash-echo live with one socket', page, objectRows,
      (rs) => echoRow(rs) && echoRow(rs).state === 'live' && echoRow(rs).sockets === 1);
    summary.evictableShown = echoRow(rows).evictable;
    await page.fill('#filter', 'no-such-object');
    await until('the filter hiding everything', page, text('#objects-empty'), (t) => t === 'No object matches.');
    await page.fill('#filter', 'dash-e');
    await until('the filter keeping dash-echo only', page, objectRows,
      (rs) => rs.length === 1 && rs[0].name === 'dash-echo');

    // One object.
    await page.click('#object-groups a:text("dash-echo")');
    await until('the object view', page, field('state'), (s) => s === 'live');
    const sockets = await until('its socket', page, tableText('#sockets'), (r) => r.length === 1 && r[0][1] === 'open');
    if (sockets[0][2] !== 'user:ann, room') throw new Error('tags: ' + sockets[0][2]);
    if (sockets[0][3] !== '{"role":"host"}') throw new Error('attachment: ' + sockets[0][3]);
    await until('its key-value entry', page, tableText('#kv'), (r) => r.some((c) => c[0] === 'constructed' && c[1] === '1'));
    await until('its tables', page, tableText('#tables'), (r) => r.some((c) => c[0] === '_do_kv' && c[1] === '1'));

    // SQL: a query, then a writing statement that is refused and changes nothing.
    // _do_kv holds keys and values as BLOBs (the page shows a BLOB cell in hex).
    await page.fill('#sql-input', "SELECT CAST(key AS TEXT) AS k, CAST(value AS TEXT) AS v, value FROM _do_kv");
    await page.click('#sql-run');
    await until('the query result', page, tableText('#sql-result'), (r) => JSON.stringify(r) === '[["constructed","1","0x31"]]');
    await page.fill('#sql-input', 'DELETE FROM _do_kv');
    await page.click('#sql-run');
    const refusal = await until('the refusal', page, text('#sql-error'), (t) => t && /^Refused: /.test(t));
    if (!/readonly database/.test(refusal) || !/nothing was changed/.test(refusal)) throw new Error('refusal: ' + refusal);
    await page.fill('#sql-input', 'SELECT count(*) AS n FROM _do_kv');
    await page.keyboard.press('Control+Enter');
    await until('the entries still there', page, tableText('#sql-result'), (r) => JSON.stringify(r) === '[["1"]]');
    if (!(await page.isHidden('#sql-error'))) throw new Error('the refusal stayed after a good query');

    // Evict: the state changes to evicted, the socket stays; a message brings it back.
    await page.click('#evict');
    await until('the eviction message', page, text('#action-result'), (t) => t === 'evicted; its sockets stay open');
    await until('state evicted', page, field('state'), (s) => s === 'evicted');
    await until('the socket still open', page, tableText('#sockets'), (r) => r.length === 1);
    await ask('WAKE');
    await until('state live again', page, field('state'), (s) => s === 'live');

    // A name with a '/' opens too (by its id).
    await page.goto(`${base}/ui#/objects`);
    await page.fill('#filter', 'dash/');
    await until('the slashed name', page, objectRows, (rs) => rs.length === 1 && rs[0].name === 'dash/slash');
    await page.click('#object-groups a:text("dash/slash")');
    await until('its object view', page, field('name'), (t) => t === 'dash/slash');
    await until('its socket', page, field('sockets'), (t) => t === '1');

    // The Broadcaster's cleanup alarm, run now.
    await page.goto(`${base}/ui#/objects`);
    await page.fill('#open-name', 'dash-project');
    await page.selectOption('#open-class', 'Broadcaster');
    await page.click('#open-form button');
    await until('the pending alarm', page, field('alarm'), (t) => t && /^\d{4}-.*\(in /.test(t));
    await page.click('#run-alarm');
    await until('the alarm ran', page, text('#action-result'), (t) => t === 'the alarm ran');
    // Its client left a moment ago: the alarm keeps the project and stays set for a whole
    // delay after that activity.
    await until('the alarm still pending', page, field('alarm'), (t) => t && /^\d{4}-.*\(in /.test(t));
    if (await page.isDisabled('#run-alarm')) throw new Error('run-alarm disabled with an alarm pending');

    // Live figures: numbers that move with what the clients do.
    await page.click('nav a[data-view="live"]');
    const before = await until('the sockets figure', page, figure('sockets'), (f) => f && f.value !== '…');
    const socketsBefore = Number(before.value);
    await ask('OPEN 2 SOCKETS');
    const after = await until('two more sockets', page, figure('sockets'), (f) => Number(f.value) === socketsBefore + 2);
    summary.socketsSeen = Number(after.value);
    const inBefore = await figure('messages-in')(page);
    await ask('TRAFFIC');
    const moving = await until('messages in per second', page, figure('messages-in'),
      (f) => Number(f.value) > 0 && f.total >= inBefore.total + 20 && f.peak > 10);
    summary.messagesInPerSecond = Number(moving.value);
    summary.messagesInChartPeak = moving.peak;
    if (moving.points < 3) throw new Error('the chart has too few points: ' + moving.points);
    const evictions = await figure('evictions')(page);
    if (!(evictions.total >= 1)) throw new Error('evictions total: ' + JSON.stringify(evictions));
    const byClass = await tableText('#class-table')(page);
    const echo = byClass.find((r) => r[0] === 'TestEcho');
    if (!echo || Number(echo[3]) !== 3) throw new Error('TestEcho sockets by class: ' + JSON.stringify(byClass));

    // A channel's history, then a message arriving while following.
    await page.click('nav a[data-view="history"]');
    await page.fill('#history-channel', 'dash-room');
    await page.click('#history-form button');
    const history = await until('the history', page, lineTexts, (l) => l.length === 2);
    if (!/#1  Ann \(u1\): first words$/.test(history[0])) throw new Error('line: ' + history[0]);
    if (!/^\d{4}-\d\d-\d\dT.*Z  #2  Ann \(u1\): second words$/.test(history[1])) throw new Error('line: ' + history[1]);
    await ask('SAY');
    const followed = await until('the new message', page, lineTexts, (l) => l.length === 3);
    if (!/said while following$/.test(followed[2])) throw new Error('followed: ' + followed[2]);
    await until('the count', page, text('#history-status'), (t) => t === '3 messages, following');
    await page.fill('#history-channel', 'no-such-channel');
    await page.click('#history-form button');
    await until('no such channel', page, text('#history-status'), (t) => t === 'No channel no-such-channel yet; waiting for it');

    if (problems.length) throw new Error(problems.join('; '));
  });
  say('OK ' + JSON.stringify(summary));
}

run(main);
