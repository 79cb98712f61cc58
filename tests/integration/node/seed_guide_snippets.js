// The client snippets of seed 002 (Atomic Guide WebSocket API), pasted unchanged except that
// TypeScript annotations are left out, wrapped in functions so each can declare its own `ws`,
// and glued together by a run against dohost's `guide` app. The same file runs in Node
// (node/seed_guide.js) and in headless Chromium (guide_chromium.js); in both, the global
// WebSocket is one that sends the seed's hosts (wss://your-domain.com, ws://localhost:8787)
// to the local listener instead, the only change to what the snippets do.
//
// The seed imports ChatWebSocketClient and AnalyticsWebSocketClient from its own code base,
// which it does not show; GuideClient below is the smallest client that fits how the
// snippets use them (constructor options, connect(), send(), queueing until open).
//
// runSeedGuideSnippets({tokens: {alice, bob, carol}, base}) resolves to a list of checks
// {check, ok, ...}. Every user joins the context 'context_123' (the snippets name it).
'use strict';

async function runSeedGuideSnippets(env) {
  const checks = [];
  const calls = [];  // [who, what, value] for every function the snippets call
  const record = (who, what, value) => calls.push([who, what, value]);
  const check = (name, ok, detail) => checks.push({ check: name, ok: !!ok, ...(detail || {}) });
  const found = (who, what, pred) => calls.filter((c) => c[0] === who && c[1] === what &&
                                                     (!pred || pred(c[2]))).map((c) => c[2]);
  async function waitFor(what, fn, timeoutMs = 8000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = fn();
      if (v) return v;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  const opened = (ws) => new Promise((resolve, reject) => {
    if (ws.readyState === WebSocket.OPEN) return resolve();
    ws.addEventListener('open', () => resolve());
    ws.addEventListener('error', () => reject(new Error('connection failed')));
  });

  // --- the seed's client classes, as the snippets use them -----------------------------------
  class GuideClient {
    constructor({ url, token, contextId }) {
      this.ws = new WebSocket(`${url}?token=${encodeURIComponent(token)}&contextId=${contextId}`);
      this.queue = [];
      this.ready = opened(this.ws).then(() => {
        for (const m of this.queue) this.ws.send(JSON.stringify(m));
        this.queue = [];
      });
    }
    connect() { return this.ready; }
    send(message) {
      if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
      else this.queue.push(message);
    }
  }
  const ChatWebSocketClient = GuideClient;
  const AnalyticsWebSocketClient = GuideClient;
  const webSocketMessageSchema = {
    // '@shared/schemas/websocket': the seed's WebSocketMessage interface.
    parse(m) {
      const ok = m && typeof m === 'object' && typeof m.type === 'string' &&
        typeof m.timestamp === 'string' && !Number.isNaN(Date.parse(m.timestamp)) &&
        'data' in m && (m.id === undefined || typeof m.id === 'string') &&
        (m.error === undefined || typeof m.error === 'string');
      if (!ok) throw new Error('not a WebSocketMessage: ' + JSON.stringify(m));
      return m;
    },
  };

  // --- Connection Authentication: "Query Parameter Authentication" ---------------------------
  function queryParameterAuthentication(jwt, contextId) {
const ws = new WebSocket(`wss://your-domain.com/api/chat/ws?token=${encodeURIComponent(jwt)}&contextId=${contextId}`);
    return ws;
  }

  // --- Connection Authentication: "Initial Message Authentication" ---------------------------
  function initialMessageAuthentication(jwt, contextId) {
const ws = new WebSocket('wss://your-domain.com/api/chat/ws');

ws.onopen = () => {
  ws.send(
    JSON.stringify({
      type: 'auth',
      token: jwt,
      contextId: contextId,
    })
  );
};
    return ws;
  }

  // --- Chat WebSocket API: "Incoming Messages" (the three handlers on one socket) -----------
  function chatHandlers(ws, who) {
    const displayMessage = (m) => record(who, 'displayMessage', m);
    const updateTypingIndicator = (userId, isTyping) =>
      record(who, 'updateTypingIndicator', { userId, isTyping });
    const showUserJoined = (username) => record(who, 'showUserJoined', username);
    const showUserLeft = (username) => record(who, 'showUserLeft', username);

ws.onmessage = (event) => {
  const message = JSON.parse(event.data);

  if (message.type === 'message') {
    const { id, content, author, timestamp } = message.data;
    displayMessage({ id, content, author, timestamp });
  }
};

    function typing(message) {
if (message.type === 'typing') {
  const { userId, isTyping } = message.data;
  updateTypingIndicator(userId, isTyping);
}
    }

    function presence(message) {
if (message.type === 'user_joined') {
  const { userId, username } = message.data;
  showUserJoined(username);
}

if (message.type === 'user_left') {
  const { userId, username } = message.data;
  showUserLeft(username);
}
    }

    const newMessage = ws.onmessage;
    ws.onmessage = (event) => {
      newMessage(event);
      const message = JSON.parse(event.data);
      record(who, 'received', message);
      typing(message);
      presence(message);
    };
  }

  // --- Error Handling: "Message Validation" --------------------------------------------------
  function messageValidation(ws, who) {
    const handleMessage = (m) => record(who, 'handleMessage', m);
    const console = { error: (...a) => record(who, 'invalid', a.map(String).join(' ')) };
    const before = ws.onmessage;

ws.onmessage = (event) => {
  try {
    const message = webSocketMessageSchema.parse(JSON.parse(event.data));
    handleMessage(message);
  } catch (error) {
    console.error('Invalid message format:', error);
  }
};

    const validate = ws.onmessage;
    ws.onmessage = (event) => {
      before(event);
      validate(event);
    };
  }

  // --- Error Handling: "Connection Errors" ---------------------------------------------------
  function connectionErrors(ws, who) {
    const showErrorMessage = (m) => record(who, 'showErrorMessage', m);
    const attemptReconnection = () => record(who, 'attemptReconnection', true);
    const console = { error: (...a) => record(who, 'console.error', a) };

ws.onerror = (error) => {
  console.error('WebSocket error:', error);
  showErrorMessage('Connection error occurred');
};

ws.onclose = (event) => {
  if (event.code !== 1000) {
    console.error('WebSocket closed unexpectedly:', event.code, event.reason);
    attemptReconnection();
  }
};
  }

  // --- Monitoring and Debugging: "Connection Status" (annotations left out) ------------------
  // The seed pings every 30 s; here the interval passes in 50 ms so the run stays short.
  function connectionStatus(ws) {
    const setInterval = (fn) => globalThis.setInterval(fn, 50);

class WebSocketMonitor {
  pingInterval = null;

  startPing() {
    this.pingInterval = setInterval(() => {
      if (this.ws.readyState === WebSocket.OPEN) {
        this.ws.send(JSON.stringify({ type: 'ping' }));
      }
    }, 30000);
  }

  handlePong() {
    // Connection is alive
  }
}

    const monitor = new WebSocketMonitor();
    monitor.ws = ws;
    return monitor;
  }

  // --- the run -------------------------------------------------------------------------------
  const { alice, bob, carol } = env.tokens;
  const window = globalThis.window || globalThis;
  window.LAUNCH_SETTINGS = { jwt: alice };

  // Bob by query, his handlers from the seed.
  const bobWs = queryParameterAuthentication(bob, 'context_123');
  chatHandlers(bobWs, 'bob');
  await opened(bobWs);
  check('query token: the socket opens', true);

  // Alice through the seed's chat client.
  const chatClient = new ChatWebSocketClient({
    url: 'wss://your-domain.com/api/chat/ws',
    token: window.LAUNCH_SETTINGS.jwt,
    contextId: 'context_123',
  });

  await chatClient.connect();
  chatHandlers(chatClient.ws, 'alice');
  messageValidation(chatClient.ws, 'alice');
  const joined = await waitFor('bob sees alice join', () => found('bob', 'showUserJoined')[0]);
  check('user_joined reaches the others', joined === 'Alice', { joined });

  // Carol authenticates by first message.
  const carolWs = initialMessageAuthentication(carol, 'context_123');
  chatHandlers(carolWs, 'carol');
  const authOk = await waitFor('carol gets auth_success',
    () => found('carol', 'received', (m) => m.type === 'auth_success')[0]);
  check('first-message auth: auth_success', authOk.data.userId === 'carol' &&
        authOk.data.contextId === 'context_123', { data: authOk.data });
  await waitFor('bob sees carol join', () => found('bob', 'showUserJoined', (n) => n === 'Carol')[0]);

  // "Send Chat Message", verbatim.
chatClient.send({
  type: 'message',
  data: {
    content: 'Hello, everyone!',
    messageType: 'text',
  },
});
  for (const who of ['alice', 'bob', 'carol']) {
    const m = await waitFor(`${who} displays the message`, () => found(who, 'displayMessage')[0]);
    check(`${who}: displayMessage({id, content, author, timestamp})`,
          typeof m.id === 'string' && m.content === 'Hello, everyone!' &&
          m.author.userId === 'alice' && m.author.username === 'Alice' &&
          !Number.isNaN(Date.parse(m.timestamp)), { message: m });
  }

  // "Send Typing Indicator", verbatim.
chatClient.send({
  type: 'typing',
  data: {
    isTyping: true,
  },
});
  const t = await waitFor('bob sees alice typing', () => found('bob', 'updateTypingIndicator')[0]);
  check('typing reaches the others', t.userId === 'alice' && t.isTyping === true, { typing: t });

  // "Request Message History", verbatim: nothing is older than 2024.
chatClient.send({
  type: 'history',
  data: {
    limit: 50,
    before: '2024-01-01T00:00:00Z',
  },
});
  const h = await waitFor('alice gets history', () => found('alice', 'received', (m) => m.type === 'history')[0]);
  check('history before 2024 is empty', h.data.messages.length === 0 && h.data.hasMore === false,
        { data: h.data });
  chatClient.send({ type: 'history', data: { limit: 50 } });
  const h2 = await waitFor('alice gets history', () => found('alice', 'received', (m) => m.type === 'history')[1]);
  check('history now has the message', h2.data.messages.length === 1 &&
        h2.data.messages[0].content === 'Hello, everyone!', { data: h2.data });

  // The monitor's heartbeat.
  const monitor = connectionStatus(chatClient.ws);
  monitor.startPing();
  await waitFor('a pong', () => found('alice', 'received', (m) => m.type === 'pong')[0]);
  clearInterval(monitor.pingInterval);
  monitor.handlePong();
  check('ping is answered with pong', true);

  // Carol leaves.
  carolWs.close();
  const leftName = await waitFor('bob sees carol leave', () => found('bob', 'showUserLeft')[0]);
  check('user_left reaches the others', leftName === 'Carol', { left: leftName });

  // "Analytics WebSocket API": the client and its subscription, verbatim.
  const analyticsClient = new AnalyticsWebSocketClient({
  url: 'wss://your-domain.com/api/analytics/ws',
  token: window.LAUNCH_SETTINGS.jwt,
  contextId: 'context_123',
});
  const updates = [];
  const updateDashboard = (metric, value) => updates.push([metric, value]);
  (function realTimeMetricUpdates(ws) {
ws.onmessage = (event) => {
  const message = JSON.parse(event.data);

  if (message.type === 'metric_update') {
    const { metric, value, timestamp } = message.data;
    updateDashboard(metric, value);
  }
};
  })(analyticsClient.ws);

analyticsClient.send({
  type: 'subscribe',
  data: {
    metrics: ['engagement', 'performance', 'activity'],
  },
});
  const last = (name) => updates.filter((u) => u[0] === name).map((u) => u[1]).pop();
  await waitFor('activity and engagement', () => last('activity') !== undefined && last('engagement') !== undefined);
  check('built-in metrics: activity = chat sockets, engagement = messages', last('activity') === 2 &&
        last('engagement') === 1, { updates });
  // A backend publishes `performance`.
  const answer = await fetch(`${env.base}/api/analytics/metrics`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${bob}` },
    body: JSON.stringify({ contextId: 'context_123', metric: 'performance', value: 0.93 }),
  });
  const delivered = await answer.json();
  await waitFor('performance', () => last('performance') !== undefined);
  check('POST /api/analytics/metrics reaches the dashboard', answer.status === 202 &&
        delivered.delivered === 1 && last('performance') === 0.93, { delivered });
  // The chat sees one more socket: activity goes up.
  const dave = queryParameterAuthentication(bob, 'context_123');
  await waitFor('activity 3', () => last('activity') === 3);
  check('activity follows the chat', true);

  // "Collaboration WebSocket API", verbatim.
  const collaborationClient = new GuideClient({
    url: 'wss://your-domain.com/api/collaboration/ws', token: alice, contextId: 'context_123' });
  const edits = [];
  const applyEdit = (operation, position, content, author) => edits.push({ operation, position, content, author });
  (function receiveEdit(ws) {
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      record('collab', 'received', message);
// Receive edit operation
if (message.type === 'edit') {
  const { operation, position, content, author } = message.data;
  applyEdit(operation, position, content, author);
}
    };
  })(collaborationClient.ws);

// Join collaboration session
collaborationClient.send({
  type: 'join_session',
  data: {
    sessionId: 'session_123',
    role: 'participant',
  },
});
  const state = await waitFor('session_state', () => found('collab', 'received', (m) => m.type === 'session_state')[0]);
  check('join_session gets the session state', state.data.sessionId === 'session_123' &&
        state.data.version === 15 && state.data.participants[0].role === 'participant',
        { data: state.data });

// Send edit operation
collaborationClient.send({
  type: 'edit',
  data: {
    operation: 'insert',
    position: 42,
    content: 'Hello World',
    version: 15,
  },
});
  const e = await waitFor('the edit comes back', () => edits[0]);
  check('edit: applyEdit(operation, position, content, author)', e.operation === 'insert' &&
        e.position === 42 && e.content === 'Hello World' && e.author.userId === 'alice', { edit: e });

// Leave session
collaborationClient.send({
  type: 'leave_session',
  data: {
    sessionId: 'session_123',
  },
});
  await waitFor('session_left', () => found('collab', 'received', (m) => m.type === 'session_left')[0]);
  check('leave_session', true);

  // "Connection Errors" on a socket that goes past 100 messages a minute.
  const noisy = queryParameterAuthentication(bob, 'context_123');
  connectionErrors(noisy, 'noisy');
  await opened(noisy);
  for (let i = 0; i < 101; i++) noisy.send(JSON.stringify({ type: 'typing', data: { isTyping: i % 2 === 0 } }));
  const closedWith = await waitFor('the noisy socket is closed', () => found('noisy', 'console.error')[0]);
  check('over the message limit: close 1008 "Rate limit exceeded", the client reconnects',
        closedWith[1] === 1008 && closedWith[2] === 'Rate limit exceeded' &&
        found('noisy', 'attemptReconnection').length === 1, { closedWith: closedWith.slice(1) });

  // "Message Validation": everything alice received is a WebSocketMessage.
  check('every server message passes the schema', found('alice', 'invalid').length === 0 &&
        found('alice', 'handleMessage').length >= 5,
        { handled: found('alice', 'handleMessage').length, invalid: found('alice', 'invalid') });

  // "Testing WebSockets: Integration Testing", verbatim, with the smallest describe/it/expect.
  let itResult = null;
  const tests = [];
  const describe = (name, body) => body();
  const it = (name, body) => tests.push([name, body]);
  const expect = (v) => ({ toBe: (want) => { if (v !== want) throw new Error(`${v} !== ${want}`); } });
  const waitForMessage = (ws) => new Promise((resolve) => {
    ws.onmessage = (event) => resolve(JSON.parse(event.data));
  });

// Test WebSocket endpoints
describe('Chat WebSocket', () => {
  it('should handle chat messages', async () => {
    const ws = new WebSocket('ws://localhost:8787/api/chat/ws?token=test');

    await new Promise((resolve) => {
      ws.onopen = resolve;
    });

    ws.send(
      JSON.stringify({
        type: 'message',
        data: { content: 'Test message' },
      })
    );

    const response = await waitForMessage(ws);
    expect(response.type).toBe('message');
  });
});

  for (const [name, body] of tests) {
    try {
      await body();
      itResult = 'passed';
    } catch (error) {
      itResult = String(error);
    }
    check(`the seed's integration test: ${name}`, itResult === 'passed', { result: itResult });
  }

  for (const ws of [bobWs, chatClient.ws, analyticsClient.ws, collaborationClient.ws, dave]) ws.close();
  return checks;
}

if (typeof module !== 'undefined') module.exports = { runSeedGuideSnippets };
