// Runs the client snippets of seed 002 (node/seed_guide_snippets.js) in Node with the `ws`
// package against dohost's `guide` app, and prints one JSON line per check. Exits 0 when every
// check passed. The host must have dev_token = "test" and a default_context_id (the seed's
// own integration test connects with ?token=test and no contextId).
//
// Usage: node seed_guide.js <port> <jwt alice> <jwt bob> <jwt carol>
'use strict';

const path = require('path');
const WS = require(path.join(__dirname, 'node_modules', 'ws'));
const { runSeedGuideSnippets } = require('./seed_guide_snippets.js');

const [port, alice, bob, carol] = process.argv.slice(2);
if (!carol) {
  console.error('usage: node seed_guide.js <port> <jwt alice> <jwt bob> <jwt carol>');
  process.exit(2);
}
const local = `ws://127.0.0.1:${port}`;

// The seed's hosts go to the local listener; nothing else changes.
globalThis.WebSocket = class extends WS {
  constructor(url, ...rest) {
    super(String(url).replace('wss://your-domain.com', local).replace('ws://localhost:8787', local),
          ...rest);
  }
};

setTimeout(() => {
  process.stdout.write(JSON.stringify({ check: 'whole run', ok: false, why: 'timed out' }) + '\n');
  process.exit(1);
}, 60000).unref();

runSeedGuideSnippets({ tokens: { alice, bob, carol }, base: `http://127.0.0.1:${port}` })
  .then((checks) => {
    for (const c of checks) process.stdout.write(JSON.stringify(c) + '\n');
    process.exit(checks.every((c) => c.ok) ? 0 : 1);
  })
  .catch((e) => {
    process.stdout.write(JSON.stringify({ check: 'exception', ok: false, why: String(e && e.stack || e) }) + '\n');
    process.exit(1);
  });
