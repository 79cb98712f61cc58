// A HopeFlow Realtime client written from the seed document (003) alone, as a user of the
// original Cloudflare service would write it: it knows only the seed's README (WebSocket at the
// root with a Bearer JWT or ?token=, subscribe filters, acks, ping/pong, POST /publish).
//
// Usage: node hopeflow_client.js <base-url> <jwt> <header|query> <userId>
//   base-url: http://127.0.0.1:PORT (the worker domain)
// It connects, subscribes, checks ping/pong, publishes one envelope to its own user through
// POST /publish, acks the envelope it receives with a result, and prints one JSON line per
// step on stdout. Exit code 0 when the publish answered with its own ack result.
'use strict';

const path = require('path');

// Node 20 has no WebSocket global by default: use the `ws` package (tests/integration/node).
const WebSocket = require(path.join(__dirname, 'node', 'node_modules', 'ws'));

const [baseUrl, token, tokenMode, userId] = process.argv.slice(2);
const wsBase = baseUrl.replace(/^http/, 'ws');

function log(event, data) {
  process.stdout.write(JSON.stringify({ event, ...data }) + '\n');
}

function fail(why) {
  log('failure', { why: String(why) });
  process.exit(1);
}

setTimeout(() => fail('timed out'), 15000).unref();

// "Headers: Authorization: Bearer <JWT> ... Browsers may also pass ?token=<JWT> query param."
const socket = tokenMode === 'query'
  ? new WebSocket(`${wsBase}/?token=${encodeURIComponent(token)}`)
  : new WebSocket(`${wsBase}/`, { headers: { Authorization: `Bearer ${token}` } });

const filter = { type: 'chat_message', questId: 'q1', nodeId: 'n1' };
let published = false;

async function publish() {
  // "POST https://<worker-domain>/publish", Bearer JWT, Content-Type: application/json.
  const response = await fetch(`${baseUrl}/publish`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({
      userId,
      type: 'chat_message',
      payload: { questId: 'q1', nodeId: 'n1', text: 'hello from node' },
    }),
  });
  const body = await response.json();
  log('published', {
    status: response.status,
    cors: response.headers.get('access-control-allow-origin'),
    body,
  });
  socket.close(1000, 'done');
  const ok = response.status === 200 && body.clientCount === 1 &&
      Array.isArray(body.results) && body.results.length === 1 &&
      body.results[0] && body.results[0].received === 'hello from node';
  process.exitCode = ok ? 0 : 1;
}

socket.on('open', () => {
  log('open', {});
  // "After connect, clients must send {"type":"subscribe","filters":[...]}".
  socket.send(JSON.stringify({ type: 'subscribe', filters: [filter] }));
  // Messages are handled in order, so the pong says the subscription is in place.
  socket.send('PING');
});

socket.on('message', (data, isBinary) => {
  const text = isBinary ? null : data.toString();
  if (text === 'pong') {
    log('pong', {});
    if (!published) {
      published = true;
      publish().catch(fail);
    }
    return;
  }
  let message;
  try {
    message = JSON.parse(text);
  } catch (e) {
    return;  // not ours to understand
  }
  if (message && typeof message.envelopeId === 'string') {
    log('envelope', { envelope: message });
    // "clients should respond with {"type":"ack","envelopeId":"<id>","result":<any>}".
    socket.send(JSON.stringify({
      type: 'ack',
      envelopeId: message.envelopeId,
      result: { received: message.payload && message.payload.text },
    }));
  }
});

socket.on('unexpected-response', (req, res) => fail(`upgrade refused: ${res.statusCode}`));
socket.on('error', fail);
socket.on('close', (code) => log('closed', { code }));
