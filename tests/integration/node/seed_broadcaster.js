// Runs the client snippets of seed 001 (Project-Scoped WebSocket Broadcaster, "Usage" and
// "Sending Messages") verbatim against dohost's `broadcaster` app, in Node with the `ws`
// package, and checks what they print.
//
// Usage: node seed_broadcaster.js <port>
//
// The snippets are pasted unchanged. Two things are provided around them, as a browser would:
// a global WebSocket (the `ws` package, which sends the seed's worker host to 127.0.0.1:<port>
// instead, the only change), and console.log, which is recorded so the checks can read what
// the snippets printed. Each snippet runs in its own function, since each declares `ws`.
// Prints one JSON line per check and exits 0 when every check passed.
'use strict';

const path = require('path');
const WS = require(path.join(__dirname, 'node_modules', 'ws'));

const port = process.argv[2];
if (!port) {
  console.error('usage: node seed_broadcaster.js <port>');
  process.exit(2);
}
const SEED_ORIGIN = 'wss://user-websocket.ashish-91e.workers.dev';
const LOCAL_ORIGIN = `ws://127.0.0.1:${port}`;

globalThis.WebSocket = class extends WS {
  constructor(url, ...rest) {
    super(String(url).replace(SEED_ORIGIN, LOCAL_ORIGIN), ...rest);
  }
};

// What the snippets print: [label, value] per console.log call.
const printed = [];
const realLog = console.log;
console.log = (...args) => {
  printed.push(args);
};

function report(check, ok, detail) {
  process.stdout.write(JSON.stringify({ check, ok, ...(detail || {}) }) + '\n');
  if (!ok) {
    realLog(JSON.stringify({ printed }, null, 1));
    process.exit(1);
  }
}

function received(label, pred) {
  return printed.filter((a) => a[0] === label && (!pred || pred(a[1]))).map((a) => a[1]);
}

async function waitFor(what, fn, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) report(what, false, { why: 'timed out' });
    await new Promise((r) => setTimeout(r, 10));
  }
}

setTimeout(() => report('whole run', false, { why: 'timed out' }), 20000).unref();

// ---- "Usage" snippets, verbatim ----------------------------------------------------------

function connectRuntime() {
const ws = new WebSocket('wss://user-websocket.ashish-91e.workers.dev/websocket?type=runtime&projectId=user123');

ws.onopen = () => {
  console.log('Runtime connected');
};

ws.onmessage = (event) => {
  const data = JSON.parse(event.data);
  console.log('Received:', data);
};
  return ws;
}

function connectDataAgent() {
const ws = new WebSocket('wss://user-websocket.ashish-91e.workers.dev/websocket?type=data-agent&projectId=user123');

ws.onopen = () => {
  console.log('Data agent connected');
};

ws.onmessage = (event) => {
  const data = JSON.parse(event.data);
  console.log('Received message:', data);
};
  return ws;
}

function connectAdmin() {
const ws = new WebSocket('wss://user-websocket.ashish-91e.workers.dev/websocket?type=admin&projectId=user123');

ws.onopen = () => {
  console.log('Admin connected');
};

ws.onmessage = (event) => {
  const data = JSON.parse(event.data);
  console.log('Admin received:', data);
};
  return ws;
}

// ---- "Sending Messages" snippets, verbatim (each gets the socket as `ws`) --------------

function runtimeToSpecificAgent(ws) {
const message = {
  id: crypto.randomUUID(),
  type: 'graphql_query',
  from: {
    type: 'runtime'
  },
  to: {
    id: 'specific-agent-client-id'  // Send to specific client
  },
  payload: {
    query: 'query { posts { id title } }',
    variables: {}
  }
};

ws.send(JSON.stringify(message));
}

function runtimeToAllDataAgents(ws) {
const message = {
  id: crypto.randomUUID(),
  type: 'get_docs',
  from: {
    type: 'runtime'
  },
  to: {
    type: 'data-agent'  // Send to all data-agent clients
  },
  payload: {
    requestId: 'docs-123'
  }
};

ws.send(JSON.stringify(message));
}

function agentToRuntime(ws) {
const response = {
  id: crypto.randomUUID(),
  type: 'query_response',
  from: {
    type: 'data-agent'
  },
  to: {
    type: 'runtime'
  },
  payload: {
    data: {
      posts: [
        { id: "1", title: "Hello world" },
        { id: "2", title: "Durable Objects are great" }
      ]
    }
  }
};

ws.send(JSON.stringify(response));
}

function broadcastToAll(ws) {
const broadcast = {
  id: crypto.randomUUID(),
  type: 'announcement',
  from: {
    type: 'runtime'
  },
  payload: {
    message: 'Server will restart in 5 minutes'
  }
  // No 'to' field - broadcasts to all other connected clients
};

ws.send(JSON.stringify(broadcast));
}

// ---- the run --------------------------------------------------------------------------

// A marker the runtime sends to the admins (and, by type, to the agents) after a message, so
// "X did not receive it" can be checked without waiting: each socket receives in order.
let barriers = 0;
async function barrier(from, toType, label) {
  const id = `barrier-${++barriers}`;
  from.send(JSON.stringify({ id, type: 'barrier', from: {}, to: { type: toType }, payload: {} }));
  await waitFor(`${id} reaches ${toType}`, () => received(label, (d) => d.id === id).length > 0);
  const all = printed.filter((a) => a[0] === label).map((a) => a[1]);
  return all.slice(0, all.findIndex((d) => d.id === id));
}

(async () => {
  const runtime = connectRuntime();
  const agent = connectDataAgent();
  const admin = connectAdmin();
  await waitFor('all three connected', () =>
    ['Runtime connected', 'Data agent connected', 'Admin connected'].every(
      (l) => printed.some((a) => a[0] === l)));
  const welcome = {};
  for (const [label, name] of [['Received:', 'runtime'], ['Received message:', 'agent'],
                               ['Admin received:', 'admin']]) {
    const c = await waitFor(`${name} gets connected`,
      () => received(label, (d) => d.type === 'connected')[0]);
    const p = c.payload || {};
    report(`${name} welcome`, c.from && c.from.type === 'system' && typeof p.clientId === 'string' &&
           p.projectId === 'user123' && Number.isInteger(p.clientCount) &&
           Number.isInteger(p.timestamp), { payload: p });
    welcome[name] = p.clientId;
  }

  // Runtime -> all data agents (by type): the agent and the admin get it, from set by the server.
  runtimeToAllDataAgents(runtime);
  const docs = await waitFor('agent gets get_docs',
    () => received('Received message:', (d) => d.type === 'get_docs')[0]);
  report('to.type reaches the data agent', docs.from.id === welcome.runtime &&
         docs.from.type === 'runtime' && docs.payload.requestId === 'docs-123', { docs });
  const docsCopy = await waitFor('admin copy of get_docs',
    () => received('Admin received:', (d) => d.type === 'get_docs')[0]);
  report('admin gets a copy of the routed message', docsCopy.id === docs.id);
  report('the sender does not get its own message',
    received('Received:', (d) => d.type === 'get_docs').length === 0);

  // Agent -> runtime (response).
  agentToRuntime(agent);
  const answer = await waitFor('runtime gets query_response',
    () => received('Received:', (d) => d.type === 'query_response')[0]);
  report('the response reaches the runtime', answer.from.id === welcome.agent &&
         answer.from.type === 'data-agent' && answer.payload.data.posts[0].title === 'Hello world');
  await waitFor('admin copy of query_response',
    () => received('Admin received:', (d) => d.type === 'query_response')[0]);

  // Broadcast (no `to`): the agent gets it, the admin does not.
  broadcastToAll(runtime);
  const news = await waitFor('agent gets the announcement',
    () => received('Received message:', (d) => d.type === 'announcement')[0]);
  report('broadcast reaches the other clients',
    news.payload.message === 'Server will restart in 5 minutes' && news.from.id === welcome.runtime);
  const adminSaw = await barrier(runtime, 'admin', 'Admin received:');
  report('admins do not get broadcasts', !adminSaw.some((d) => d.type === 'announcement'));

  // Runtime -> specific agent, verbatim: the placeholder id matches no client.
  runtimeToSpecificAgent(runtime);
  const err = await waitFor('runtime gets an error for the placeholder id',
    () => received('Received:', (d) => d.type === 'error')[0]);
  report('unknown to.id is an error to the sender',
    /specific-agent-client-id/.test(err.payload.message), { error: err.payload });

  // The same snippet with the placeholder filled in (as its comment asks): the socket it sends
  // on puts the agent's real id where the snippet has the placeholder.
  const filledIn = { send: (text) => runtime.send(text.replace('specific-agent-client-id', welcome.agent)) };
  runtimeToSpecificAgent(filledIn);
  const query = await waitFor('agent gets the graphql_query by id',
    () => received('Received message:', (d) => d.type === 'graphql_query')[0]);
  report('to.id reaches that client', query.to.id === welcome.agent &&
         query.payload.query === 'query { posts { id title } }' && query.from.id === welcome.runtime);
  await waitFor('admin copy of graphql_query',
    () => received('Admin received:', (d) => d.type === 'graphql_query')[0]);

  // client_left when the agent goes.
  agent.close();
  const left = await waitFor('runtime gets client_left',
    () => received('Received:', (d) => d.type === 'client_left')[0]);
  report('client_left names the client that left', left.payload.clientId === welcome.agent &&
         left.payload.clientCount === 2);
  runtime.close();
  admin.close();
  report('done', true, { printed: printed.length });
  process.exit(0);
})().catch((e) => report('exception', false, { why: String(e && e.stack || e) }));
