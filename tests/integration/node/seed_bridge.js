// Runs the client snippets of seed 000 (User-Scoped WebSocket Bridge, "Usage" and "Sending
// Messages") verbatim against dohost's `bridge` app, in Node with the `ws` package, and checks
// what they print.
//
// Usage: node seed_bridge.js <port>
//
// As in seed_broadcaster.js: a global WebSocket (the `ws` package, sending the seed's worker
// host to 127.0.0.1:<port> instead, the only change) and a recorded console.log are all that
// surround the pasted snippets; each snippet runs in its own function. Prints one JSON line
// per check and exits 0 when every check passed.
'use strict';

const path = require('path');
const WS = require(path.join(__dirname, 'node_modules', 'ws'));

const port = process.argv[2];
if (!port) {
  console.error('usage: node seed_bridge.js <port>');
  process.exit(2);
}
const SEED_ORIGIN = 'wss://user-websocket.ashish-91e.workers.dev';
const LOCAL_ORIGIN = `ws://127.0.0.1:${port}`;

globalThis.WebSocket = class extends WS {
  constructor(url, ...rest) {
    super(String(url).replace(SEED_ORIGIN, LOCAL_ORIGIN), ...rest);
  }
};

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

function connectAgent() {
const ws = new WebSocket('wss://user-websocket.ashish-91e.workers.dev/websocket?type=agent&projectId=user123');

ws.onopen = () => {
  console.log('Agent connected');
};

ws.onmessage = (event) => {
  const data = JSON.parse(event.data);
 console.log('received message:', data);
};
  return ws;
}

function connectAdmin() {
const ws = new WebSocket('wss://user-websocket.ashish-91e.workers.dev/websocket?type=admin&projectId=3');

ws.onopen = () => {
  console.log('admin connected');
};

ws.onmessage = (event) => {
  const data = JSON.parse(event.data);
 console.log('received message:', data);
};
  return ws;
}

// ---- "Sending Messages" snippets, verbatim (each gets the socket as `ws`) --------------

function graphqlQuery(ws) {
const message = {
  type: 'graphql_query',
  requestId: 'req-123',
  projectId: 'user123',
  query: 'query { posts { id title author { name } } }',
  variables: {}
};

ws.send(JSON.stringify(message));
}

function queryResponse(ws) {
const response = {
  type: 'query_response',
  requestId: 'req-123',
  projectId: 'user123',
  data: { 
    posts: [
      { id: "1", title: "Hello world" },
      { id: "2", title: "Durable Objects are great" }
    ]
  },
  timestamp: Date.now()
};

ws.send(JSON.stringify(response));
}

function getDocs(ws) {
const docsRequest = {
  type: 'get_docs',
  requestId: 'docs-123',
  projectId: 'user123',
  timestamp: Date.now()
};

ws.send(JSON.stringify(docsRequest));
}

// ---- the run --------------------------------------------------------------------------

function clear() {
  printed.length = 0;
}

(async () => {
  // A runtime alone: the bridge answers with dummy data, shaped as an agent's reply.
  const runtime = connectRuntime();
  await waitFor('runtime connected', () => printed.some((a) => a[0] === 'Runtime connected'));
  const hello = await waitFor('runtime gets connected',
    () => received('Received:', (d) => d.type === 'connected')[0]);
  report('runtime welcome', hello.clientType === 'runtime' && hello.projectId === 'user123' &&
         typeof hello.clientId === 'string' && Number.isInteger(hello.timestamp), { hello });

  graphqlQuery(runtime);
  const dummy = await waitFor('dummy query_response',
    () => received('Received:', (d) => d.type === 'query_response')[0]);
  report('no agent: graphql_query gets dummy data', dummy.requestId === 'req-123' &&
         dummy.projectId === 'user123' && Array.isArray(dummy.data.posts) &&
         dummy.data.posts.length > 0, { first: dummy.data.posts[0] });
  getDocs(runtime);
  const dummyDocs = await waitFor('dummy docs',
    () => received('Received:', (d) => d.type === 'docs')[0]);
  report('no agent: get_docs gets dummy documentation', dummyDocs.requestId === 'docs-123' &&
         typeof dummyDocs.data.tables === 'object');

  // The seed's agent and admin (the admin snippet is for project "3", so it sees nothing of
  // user123's traffic: only its own welcome).
  clear();
  const agent = connectAgent();
  const admin = connectAdmin();
  await waitFor('agent and admin connected', () =>
    ['Agent connected', 'admin connected'].every((l) => printed.some((a) => a[0] === l)));
  const welcomes = await waitFor('two welcomes', () => {
    const w = received('received message:', (d) => d.type === 'connected');
    return w.length === 2 ? w : null;
  });
  const agentHello = welcomes.find((d) => d.clientType === 'agent');
  const adminHello = welcomes.find((d) => d.clientType === 'admin');
  report('agent and admin welcomes', agentHello && agentHello.projectId === 'user123' &&
         adminHello && adminHello.projectId === '3');

  graphqlQuery(runtime);
  const forwarded = await waitFor('agent gets graphql_query',
    () => received('received message:', (d) => d.type === 'graphql_query')[0]);
  report('graphql_query reaches the agent with the runtime id', forwarded.requestId === 'req-123' &&
         forwarded.runtimeId === hello.clientId &&
         forwarded.query === 'query { posts { id title author { name } } }', { forwarded });

  queryResponse(agent);
  const answer = await waitFor('runtime gets the agent answer',
    () => received('Received:', (d) => d.type === 'query_response')[0]);
  report('query_response reaches the runtime', answer.requestId === 'req-123' &&
         answer.data.posts[1].title === 'Durable Objects are great' && !answer.dummy);

  getDocs(runtime);
  const docsAsk = await waitFor('agent gets get_docs',
    () => received('received message:', (d) => d.type === 'get_docs')[0]);
  report('get_docs reaches the agent', docsAsk.requestId === 'docs-123' &&
         docsAsk.runtimeId === hello.clientId);
  // The agent and the admin print with the same label: one copy each means the admin of
  // project 3 got none.
  report('the project-3 admin saw none of it',
    received('received message:', (d) => d.type === 'graphql_query').length === 1 &&
    received('received message:', (d) => d.type === 'get_docs').length === 1);

  runtime.close();
  agent.close();
  admin.close();
  report('done', true);
  process.exit(0);
})().catch((e) => report('exception', false, { why: String(e && e.stack || e) }));
