// Drives the channels demo page (GET /) in headless Chromium: two pages chat, one sees the
// other typing, the host is killed and restarted, and both pages reconnect by themselves
// and catch up on what they missed.
//
// Run by test_channels.py (ChromiumDemoTests), which owns the host. The two talk over lines:
// this script prints `KILL` and `RESTART` when it wants the host killed (SIGKILL) or started
// again; the test answers `KILLED` and `POSTED <n>` (host up again, n messages in the
// channel in total). The last line is `OK <json summary>`; any failure exits 1.
//
// Usage: node chromium_demo.js <base-url> <channel> <token-a> <token-b>
'use strict';

const { withChromium, nextLine, say, log, run } = require('./chromium_support');

const [base, channel, tokenA, tokenB] = process.argv.slice(2);
if (!tokenB) {
  console.error('usage: node chromium_demo.js <base-url> <channel> <token-a> <token-b>');
  process.exit(2);
}

const state = (page) => page.evaluate(() => ({
  status: document.getElementById('status').dataset.state,
  seqs: [...document.querySelectorAll('#messages li')].map((li) => Number(li.dataset.seq)),
  ids: [...document.querySelectorAll('#messages li')].map((li) => li.dataset.id),
  contents: [...document.querySelectorAll('#messages li .content')].map((e) => e.textContent),
  online: [...document.querySelectorAll('#online li')].map((li) => li.dataset.userId),
  typing: document.getElementById('typing').textContent,
  reconnects: window.channelClient ? window.channelClient.reconnects : -1,
  attempts: window.channelClient ? window.channelClient.reconnectAttempts : -1,
  syncPages: window.channelClient ? window.channelClient.syncPages : -1,
  lastMessageId: window.channelClient ? window.channelClient.lastMessageId : null,
  lastSeq: window.channelClient ? window.channelClient.lastSeq : -1,
}));

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

// Every message on the page has its own UUID, and the newest one is what the client syncs from.
function checkIds(s) {
  if (!s.ids.every((id) => UUID.test(id)) || new Set(s.ids).size !== s.ids.length) {
    throw new Error('message ids are not distinct UUIDs: ' + JSON.stringify(s.ids));
  }
  if (s.ids.length > 0 && s.lastMessageId !== s.ids[s.ids.length - 1]) {
    throw new Error(`lastMessageId ${s.lastMessageId} is not the newest message's id`);
  }
}

async function until(what, page, predicate, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  let s;
  while (Date.now() < deadline) {
    s = await state(page);
    if (predicate(s)) return s;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}; page state: ${JSON.stringify(s)}`);
}

async function sendFrom(page, text) {
  await page.fill('#content', text);
  await page.click('#sendButton');
}

async function main() {
  await withChromium('dohost-chromium-', async (context) => {
    const open = async (token) => {
      const page = await context.newPage();
      page.on('pageerror', (e) => log('page error:', e.message));
      const hash = `#channel=${encodeURIComponent(channel)}&token=${encodeURIComponent(token)}`;
      await page.goto(`${base}/${hash}`);
      return page;
    };
    const a = await open(tokenA);
    await until('page A connected', a, (s) => s.status === 'open');
    const b = await open(tokenB);
    await until('page B connected', b, (s) => s.status === 'open' && s.online.length === 2);
    await until('page A sees B online', a, (s) => s.online.includes('bob'));

    // Typing indicator, then a conversation.
    await a.type('#content', 'hel');
    await until('B sees A typing', b, (s) => /is typing/.test(s.typing));
    await a.fill('#content', '');
    await sendFrom(a, 'hello from A');
    await until('B got A\'s message', b, (s) => s.contents.includes('hello from A'));
    await sendFrom(b, 'hi A, B here');
    await until('A got B\'s reply', a, (s) => s.contents.includes('hi A, B here'));
    const before = await state(a);
    if (JSON.stringify(before.seqs) !== JSON.stringify([1, 2])) {
      throw new Error('unexpected seqs before the crash: ' + JSON.stringify(before.seqs));
    }
    checkIds(before);

    // Kill the host; both pages notice and back off (their first retry fails too).
    say('KILL');
    if ((await nextLine()) !== 'KILLED') throw new Error('expected KILLED');
    await until('A waiting to reconnect', a, (s) => s.status === 'waiting' && s.attempts >= 2);
    await until('B waiting to reconnect', b, (s) => s.status === 'waiting' && s.attempts >= 2);

    // Messages posted while the pages are away; then they come back by themselves.
    say('RESTART');
    const posted = await nextLine();
    const m = /^POSTED (\d+)$/.exec(posted);
    if (!m) throw new Error('expected POSTED <n>, got ' + posted);
    const total = Number(m[1]);
    const all = Array.from({ length: total }, (_, i) => i + 1);
    const caughtUp = (s) => s.status === 'open' && JSON.stringify(s.seqs) === JSON.stringify(all);
    const afterA = await until('A reconnected and caught up', a, caughtUp, 40000);
    const afterB = await until('B reconnected and caught up', b, caughtUp, 40000);
    checkIds(afterA);
    checkIds(afterB);
    if (JSON.stringify(afterA.ids) !== JSON.stringify(afterB.ids)) {
      throw new Error('the pages disagree on the ids: ' + JSON.stringify([afterA.ids, afterB.ids]));
    }

    // And the conversation goes on.
    await sendFrom(b, 'back again');
    await until('A got the message after the restart', a,
                (s) => s.contents[s.contents.length - 1] === 'back again');
    const final = await state(a);
    checkIds(final);
    say('OK ' + JSON.stringify({
      total: final.seqs.length,
      reconnectsA: afterA.reconnects,
      reconnectsB: afterB.reconnects,
      syncPagesA: afterA.syncPages,
      syncPagesB: afterB.syncPages,
      lastSeq: final.lastSeq,
      lastMessageId: final.lastMessageId,
    }));
  });
}

run(main);
