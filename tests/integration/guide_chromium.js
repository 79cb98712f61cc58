// Runs the client snippets of seed 002 (node/seed_guide_snippets.js) in headless Chromium
// against dohost's `guide` app: a page of the app's own origin (/health) gets the snippets as
// a script and a WebSocket that sends the seed's hosts to the local listener. Prints one JSON
// line per check; exits 0 when every check passed.
//
// Usage: node guide_chromium.js <port> <jwt alice> <jwt bob> <jwt carol>
'use strict';

const fs = require('fs');
const path = require('path');
const { withChromium } = require('./chromium_support');

const [port, alice, bob, carol] = process.argv.slice(2);
if (!carol) {
  console.error('usage: node guide_chromium.js <port> <jwt alice> <jwt bob> <jwt carol>');
  process.exit(2);
}
const snippets = fs.readFileSync(path.join(__dirname, 'node', 'seed_guide_snippets.js'), 'utf8');

async function main() {
  return withChromium('dohost-chromium-', async (context) => {
    const page = await context.newPage();
    page.on('pageerror', (e) => process.stderr.write(`page error: ${e.message}\n`));
    const base = `http://127.0.0.1:${port}`;
    await page.goto(`${base}/health`);
    await page.addScriptTag({ content: snippets });
    const checks = await page.evaluate(async ({ base, tokens }) => {
      const local = base.replace('http://', 'ws://');
      const Native = window.WebSocket;
      window.WebSocket = class extends Native {
        constructor(url, ...rest) {
          super(String(url).replace('wss://your-domain.com', local).replace('ws://localhost:8787', local),
                ...rest);
        }
      };
      return await runSeedGuideSnippets({ tokens, base });
    }, { base, tokens: { alice, bob, carol } });
    checks.push({ check: 'browser', ok: true, userAgent: await page.evaluate(() => navigator.userAgent) });
    for (const c of checks) process.stdout.write(JSON.stringify(c) + '\n');
    return checks.every((c) => c.ok);
  });
}

setTimeout(() => {
  process.stdout.write(JSON.stringify({ check: 'whole run', ok: false, why: 'timed out' }) + '\n');
  process.exit(1);
}, 90000).unref();

main().then((ok) => process.exit(ok ? 0 : 1)).catch((e) => {
  process.stdout.write(JSON.stringify({ check: 'exception', ok: false, why: String(e && e.stack || e) }) + '\n');
  process.exit(1);
});
