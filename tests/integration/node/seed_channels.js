// Runs the client of seed 004 ("Client Reconnection Logic", class WaddleWebSocket) verbatim
// against dohost's `channels` app, in Node with the `ws` package, and checks that a client whose
// connection drops catches up exactly: after reconnecting it sends `sync` with the `id` (a
// UUID) of the last message it saw and gets every message it missed, once, in order.
//
// Usage: node seed_channels.js <port> <token of alice> <token of bob>
//
// The class is pasted unchanged. Around it, as a browser and the app it belongs to would give
// it: a global WebSocket (the `ws` package, which sends the seed's wss://waddle.chat to
// 127.0.0.1:<port> instead, the only change), and `emit`/`on` (the seed's class calls
// this.emit without defining it; its app mixes in an event emitter). Prints one JSON line per
// check and exits 0 when every check passed.
'use strict';

const path = require('path');
const EventEmitter = require('events');
const WS = require(path.join(__dirname, 'node_modules', 'ws'));

const [port, tokenAlice, tokenBob] = process.argv.slice(2);
if (!port || !tokenAlice || !tokenBob) {
  console.error('usage: node seed_channels.js <port> <token> <token>');
  process.exit(2);
}
const SEED_ORIGIN = 'wss://waddle.chat';
const LOCAL_ORIGIN = `ws://127.0.0.1:${port}`;
globalThis.WebSocket = class extends WS {
  constructor(url, ...rest) {
    super(String(url).replace(SEED_ORIGIN, LOCAL_ORIGIN), ...rest);
  }
};
const quiet = { log() {}, error() {} };  // the class's console lines are not checked

function report(check, ok, detail) {
  process.stdout.write(JSON.stringify({ check, ok, ...(detail || {}) }) + '\n');
  if (!ok) process.exit(1);
}

async function waitFor(what, fn, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) report(what, false, { error: 'timed out' });
    await new Promise((r) => setTimeout(r, 20));
  }
}

const SeedClient = (() => {
  const console = quiet;  // eslint-disable-line no-shadow
  void console;
  // ---- seed 004, "Client Reconnection Logic", unchanged ----
  class WaddleWebSocket {
    constructor(channelId, token) {
      this.channelId = channelId;
      this.token = token;
      this.ws = null;
      this.reconnectAttempts = 0;
      this.messageQueue = [];
      this.lastMessageId = null;
    }
    
    connect() {
      const wsUrl = `wss://waddle.chat/channel/${this.channelId}/websocket`;
      
      this.ws = new WebSocket(wsUrl, {
        headers: {
          'Authorization': `Bearer ${this.token}`
        }
      });
      
      this.ws.onopen = () => {
        console.log('Connected to channel');
        this.reconnectAttempts = 0;
        
        // Send queued messages
        this.flushMessageQueue();
        
        // Request missed messages
        if (this.lastMessageId) {
          this.ws.send(JSON.stringify({
            type: 'sync',
            afterMessageId: this.lastMessageId
          }));
        }
      };
      
      this.ws.onmessage = (event) => {
        const data = JSON.parse(event.data);
        
        if (data.type === 'message') {
          this.lastMessageId = data.message.id;
        }
        
        this.emit(data.type, data);
      };
      
      this.ws.onclose = (event) => {
        console.log('Disconnected:', event.code, event.reason);
        
        // Reconnect with exponential backoff
        if (!event.wasClean) {
          this.scheduleReconnect();
        }
      };
      
      this.ws.onerror = (error) => {
        console.error('WebSocket error:', error);
      };
    }
    
    scheduleReconnect() {
      const delay = Math.min(1000 * Math.pow(2, this.reconnectAttempts), 30000);
      this.reconnectAttempts++;
      
      setTimeout(() => {
        console.log(`Reconnecting... (attempt ${this.reconnectAttempts})`);
        this.connect();
      }, delay);
    }
    
    send(data) {
      if (this.ws?.readyState === WebSocket.OPEN) {
        this.ws.send(JSON.stringify(data));
      } else {
        // Queue message for later
        this.messageQueue.push(data);
      }
    }
    
    flushMessageQueue() {
      while (this.messageQueue.length > 0 && this.ws?.readyState === WebSocket.OPEN) {
        const data = this.messageQueue.shift();
        this.ws.send(JSON.stringify(data));
      }
    }
  }
  // ---- end of the seed's code ----
  return WaddleWebSocket;
})();
Object.assign(SeedClient.prototype, EventEmitter.prototype);

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

function client(token, channel) {
  const c = new SeedClient(channel, token);
  EventEmitter.call(c);
  c.got = { initial_state: 0, message: [], sync: [] };
  c.on('initial_state', () => { c.got.initial_state += 1; });
  c.on('message', (d) => c.got.message.push(d.message));
  c.on('sync', (d) => c.got.sync.push(d));
  return c;
}

(async () => {
  const channel = `seed-${Date.now()}`;
  const alice = client(tokenAlice, channel);
  const bob = client(tokenBob, channel);
  alice.connect();
  bob.connect();
  await waitFor('both connected', () => alice.got.initial_state && bob.got.initial_state);
  report('both connected', true);

  alice.send({ type: 'message', content: 'one' });
  await waitFor('bob hears one', () => bob.got.message.length === 1);
  const first = bob.got.message[0];
  report('message ids are UUIDs', UUID.test(first.id) && bob.lastMessageId === first.id,
    { id: first.id, lastMessageId: bob.lastMessageId });

  // Bob's connection drops without a close frame; the seed's client reconnects (after 1 s).
  const dropped = bob.ws;
  dropped.terminate();
  await waitFor('bob is disconnected', () => dropped.readyState === WS.CLOSED);
  alice.send({ type: 'message', content: 'two' });
  alice.send({ type: 'message', content: 'three' });
  await waitFor('alice hears her messages', () => alice.got.message.length === 3);
  const missed = alice.got.message.slice(1).map((m) => m.id);

  await waitFor('bob reconnects', () => bob.got.initial_state === 2 && bob.ws !== dropped &&
    bob.ws.readyState === WS.OPEN);
  report('bob reconnects', true, { attempts: bob.reconnectAttempts });
  const pages = await waitFor('the sync answer', () =>
    bob.got.sync.some((p) => p.done) && bob.got.sync);
  const replayed = pages.flatMap((p) => p.messages.map((m) => m.id));
  report('sync from the last seen id replays what was missed, once, in order',
    JSON.stringify(replayed) === JSON.stringify(missed) && pages[0].afterMessageId === first.id,
    { replayed, missed, afterMessageId: pages[0].afterMessageId });

  // Live messages carry on after the catch-up, and lastMessageId follows them.
  alice.send({ type: 'message', content: 'four' });
  await waitFor('bob hears four', () => bob.got.message.length === 2);
  report('live again', bob.lastMessageId === bob.got.message[1].id && UUID.test(bob.lastMessageId));
  alice.ws.close();
  bob.ws.close();
  report('done', true);
  setTimeout(() => process.exit(0), 100);
})();
