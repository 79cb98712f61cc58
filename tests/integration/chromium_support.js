// What the headless Chromium tests share: the browser with the project's flags, the line
// protocol with the Python test that owns the host (requests on stdout, answers on stdin), and
// the ending (`FAIL <reason>` and exit 1 on any failure).
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');
const { chromium } = require(path.join(__dirname, 'node', 'node_modules', 'playwright-core'));

// Runs `body(context)` in a fresh headless Chromium profile, closed and removed afterwards.
async function withChromium(prefix, body) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    return await body(context);
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

// The next line from the test on stdin (trimmed); lines that come early wait for their turn.
const pending = [];
const waiting = [];
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const w = waiting.shift();
  if (w) w(line.trim()); else pending.push(line.trim());
});
function nextLine() {
  if (pending.length) return Promise.resolve(pending.shift());
  return new Promise((resolve) => waiting.push(resolve));
}
const say = (line) => process.stdout.write(line + '\n');
const log = (...args) => process.stderr.write(args.join(' ') + '\n');

// Runs `main` and exits: 0 when it resolves; else its stack on stderr, `FAIL <reason>` on
// stdout, exit 1.
function run(main) {
  main().then(() => process.exit(0), (e) => {
    log(e && e.stack ? e.stack : String(e));
    say('FAIL ' + (e && e.message ? e.message : String(e)));
    process.exit(1);
  });
}

module.exports = { withChromium, nextLine, say, log, run };
