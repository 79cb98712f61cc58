// The demo page the channels app serves at `/`: plain HTML and JavaScript, no build step, kept
// in the binary so the app needs no files at run time. Edit the page here.
//
// What it shows: joining a channel with a token, sending and reading messages, who is typing
// and who is online, and the seed's reconnection (exponential backoff from 1 s up to 30 s, a
// queue for messages typed while offline, `sync` from the last message id after reconnecting:
// the UUID `id` of the newest message seen, as the seed's client sends it; the page orders
// messages by their `seq`).
// A link may carry `#channel=<id>&token=<jwt>` to join at once; the fragment never reaches
// the server. `window.channelClient` is the live client, for debugging and for the tests.
#pragma once

namespace dohost::objects {

inline constexpr char kChannelsDemoPage[] = R"html(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dohost channels</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 0; color: #222; background: #f6f6f4; }
  header { padding: .6em 1em; background: #2b3a42; color: #fff; display: flex; gap: 1em;
           align-items: center; flex-wrap: wrap; }
  header h1 { font-size: 1.1em; margin: 0; }
  header form { display: flex; gap: .4em; flex-wrap: wrap; }
  header input { padding: .25em .4em; }
  #status { margin-left: auto; font-size: .9em; }
  #status[data-state="open"]::before { content: "\25CF "; color: #6c6; }
  #status[data-state="waiting"]::before, #status[data-state="connecting"]::before {
    content: "\25CF "; color: #fc3; }
  #status[data-state="closed"]::before { content: "\25CF "; color: #c66; }
  main { display: grid; grid-template-columns: 1fr 14em; gap: 1em; padding: 1em;
         max-width: 60em; margin: auto; }
  #messages { list-style: none; margin: 0; padding: .5em; background: #fff; height: 60vh;
              overflow-y: auto; border: 1px solid #ddd; }
  #messages li { padding: .15em 0; }
  #messages .who { font-weight: 600; margin-right: .4em; }
  #messages .when { color: #999; font-size: .8em; margin-right: .4em; }
  #messages .thread { color: #579; font-size: .8em; margin-left: .4em; }
  #typing { min-height: 1.4em; color: #777; font-style: italic; font-size: .9em; }
  #send { display: flex; gap: .4em; }
  #content { flex: 1; padding: .4em; }
  aside h2 { font-size: 1em; margin: 0 0 .4em; }
  #online { list-style: none; padding: 0; margin: 0; }
  #online .status { color: #888; font-size: .85em; margin-left: .3em; }
  #errors { color: #a33; font-size: .9em; min-height: 1.2em; }
</style>
</head>
<body>
<header>
  <h1>dohost channels</h1>
  <form id="join">
    <input id="channel" placeholder="channel id" value="general" required>
    <input id="token" placeholder="JWT (HS256)" size="28" required>
    <button id="connect">Join</button>
    <button id="leave" type="button" disabled>Leave</button>
  </form>
  <span id="status" data-state="closed">not connected</span>
</header>
<main>
  <section>
    <ul id="messages"></ul>
    <div id="typing"></div>
    <form id="send">
      <input id="content" placeholder="Write a message" autocomplete="off" maxlength="4000">
      <button id="sendButton">Send</button>
    </form>
    <div id="errors"></div>
  </section>
  <aside>
    <h2>Online</h2>
    <ul id="online"></ul>
    <h2 style="margin-top:1em">Presence</h2>
    <select id="presence">
      <option value="online">online</option>
      <option value="away">away</option>
      <option value="busy">busy</option>
    </select>
  </aside>
</main>
<script>
"use strict";

// The seed's client (WaddleWebSocket), for a browser: the token goes in ?token= because a
// browser cannot set headers on a WebSocket.
class ChannelClient {
  constructor(channelId, token, handlers) {
    this.channelId = channelId;
    this.token = token;
    this.handlers = handlers;
    this.ws = null;
    this.reconnectAttempts = 0;
    this.reconnects = 0;       // successful reconnections, for the page and the tests
    this.everOpened = false;
    this.syncPages = 0;        // sync frames received
    this.messageQueue = [];
    this.lastMessageId = null; // the id (a UUID) of the newest message seen, for sync
    this.lastSeq = 0;          // and its seq: the channel's order
    this.stopped = false;
    this.timer = null;
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}/channel/${encodeURIComponent(this.channelId)}` +
                `/websocket?token=${encodeURIComponent(this.token)}`;
    this.handlers.state("connecting", "connecting\u2026");
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      if (this.everOpened) this.reconnects++;
      this.everOpened = true;
      this.reconnectAttempts = 0;
      this.handlers.state("open", "connected");
      this.flushMessageQueue();
      // Ask for what we missed while away.
      if (this.lastMessageId) this.sync({ afterMessageId: this.lastMessageId });
    };
    ws.onmessage = (event) => {
      let data;
      try { data = JSON.parse(event.data); } catch (e) { return; }
      if (data.type === "message") this.seen(data.message);
      if (data.type === "initial_state") data.messages.forEach((m) => this.seen(m));
      if (data.type === "sync") {
        this.syncPages++;
        data.messages.forEach((m) => this.seen(m));
        // One answer holds at most 1,000 messages; ask again from the last one.
        if (data.done && data.hasMore) this.sync({ afterMessageId: this.lastMessageId });
      }
      if (data.type === "error" && data.afterMessageId !== undefined) {
        // The channel does not know the message we saw last (its history was replaced):
        // read it all again from the start; messages merge by id.
        this.lastMessageId = null;
        this.lastSeq = 0;
        this.sync({ afterSeq: 0 });
      }
      this.handlers.event(data);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) {
        this.handlers.state("closed", "not connected");
        return;
      }
      // Unlike the seed, a clean close (the host restarting says 1001) reconnects too: only
      // leaving the channel stops the client.
      this.scheduleReconnect(event.code, event.reason);
    };
    ws.onerror = () => {};
  }

  seen(m) {
    if (typeof m.seq === "number" && m.seq > this.lastSeq) {
      this.lastSeq = m.seq;
      this.lastMessageId = m.id;
    }
  }

  // from: {afterMessageId: "<uuid>"} or {afterSeq: n}
  sync(from) {
    this.ws.send(JSON.stringify({ type: "sync", ...from }));
  }

  scheduleReconnect(code, reason) {
    const delay = Math.min(1000 * Math.pow(2, this.reconnectAttempts), 30000);
    this.reconnectAttempts++;
    const why = code === 1006 ? "connection lost" : `closed ${code}${reason ? " " + reason : ""}`;
    this.handlers.state("waiting", `${why}; reconnecting in ${delay / 1000} s`);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, delay);
  }

  send(data) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(data));
    } else if (data.type === "message") {
      // Only messages wait for the connection; a stale typing notice is worth nothing.
      this.messageQueue.push(data);
    }
  }

  flushMessageQueue() {
    while (this.messageQueue.length > 0 && this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(this.messageQueue.shift()));
    }
  }

  close() {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000, "left");
    else this.handlers.state("closed", "not connected");
  }
}

const $ = (id) => document.getElementById(id);
const messages = new Map();   // id (a UUID) -> message: replays and live copies merge by id
const online = new Map();     // userId -> {username, status}
const typing = new Map();     // userId -> {username, until}
let client = null;

function time(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function addMessage(m) {
  if (messages.has(m.id)) return;
  messages.set(m.id, m);
  const li = document.createElement("li");
  li.dataset.id = m.id;
  li.dataset.seq = m.seq;
  const when = document.createElement("span");
  when.className = "when";
  when.textContent = time(m.timestamp);
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = m.username;
  const text = document.createElement("span");
  text.className = "content";
  text.textContent = m.content;
  li.append(when, who, text);
  if (m.threadId !== undefined) {
    const t = document.createElement("span");
    t.className = "thread";
    t.textContent = `thread ${m.threadId}`;
    li.append(t);
  }
  // Keep seq order even when a replayed message arrives after newer live ones.
  const list = $("messages");
  let before = null;
  for (let node = list.lastElementChild; node; node = node.previousElementSibling) {
    if (Number(node.dataset.seq) < m.seq) break;
    before = node;
  }
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  list.insertBefore(li, before);
  if (atBottom) list.scrollTop = list.scrollHeight;
  typing.delete(m.userId);
  renderTyping();
}

function renderOnline() {
  const ul = $("online");
  ul.replaceChildren();
  for (const [userId, u] of online) {
    const li = document.createElement("li");
    li.dataset.userId = userId;
    li.textContent = u.username;
    if (u.status) {
      const s = document.createElement("span");
      s.className = "status";
      s.textContent = u.status;
      li.append(s);
    }
    ul.append(li);
  }
}

function renderTyping() {
  const now = Date.now();
  const names = [];
  for (const [userId, t] of typing) {
    if (t.until < now) typing.delete(userId);
    else names.push(t.username);
  }
  $("typing").textContent = names.length === 0 ? "" :
      names.join(", ") + (names.length === 1 ? " is typing\u2026" : " are typing\u2026");
}
setInterval(renderTyping, 1000);

const handlers = {
  state(state, text) {
    $("status").dataset.state = state;
    $("status").textContent = text;
  },
  event(data) {
    switch (data.type) {
      case "initial_state":
        online.clear();
        for (const u of data.onlineUsers) online.set(u.userId, u);
        renderOnline();
        data.messages.forEach(addMessage);
        break;
      case "message":
        addMessage(data.message);
        break;
      case "sync":
        data.messages.forEach(addMessage);
        break;
      case "user_connected":
        online.set(data.userId, { username: data.username });
        renderOnline();
        break;
      case "user_disconnected":
        online.delete(data.userId);
        typing.delete(data.userId);
        renderOnline();
        renderTyping();
        break;
      case "presence":
        online.set(data.userId, { username: data.username, status: data.status });
        renderOnline();
        break;
      case "typing":
        if (data.isTyping) typing.set(data.userId, { username: data.username, until: Date.now() + 5000 });
        else typing.delete(data.userId);
        renderTyping();
        break;
      case "error":
        $("errors").textContent = data.message;
        setTimeout(() => { $("errors").textContent = ""; }, 4000);
        break;
    }
  },
};

function join(channelId, token) {
  if (client) client.close();
  messages.clear();
  online.clear();
  typing.clear();
  $("messages").replaceChildren();
  renderOnline();
  renderTyping();
  client = new ChannelClient(channelId, token, handlers);
  window.channelClient = client;
  client.connect();
  $("leave").disabled = false;
}

$("join").addEventListener("submit", (e) => {
  e.preventDefault();
  join($("channel").value.trim(), $("token").value.trim());
});

$("leave").addEventListener("click", () => {
  if (client) client.close();
  client = null;
  $("leave").disabled = true;
});

// Typing: say so at most every 2 s while keys are pressed, and stop after 3 s of quiet.
let typingSent = 0;
let typingStop = null;
$("content").addEventListener("input", () => {
  if (!client) return;
  const now = Date.now();
  if (now - typingSent > 2000) {
    client.send({ type: "typing", isTyping: true });
    typingSent = now;
  }
  clearTimeout(typingStop);
  typingStop = setTimeout(() => {
    client && client.send({ type: "typing", isTyping: false });
    typingSent = 0;
  }, 3000);
});

$("send").addEventListener("submit", (e) => {
  e.preventDefault();
  const content = $("content").value;
  if (!client || content.trim() === "") return;
  client.send({ type: "message", content });
  $("content").value = "";
  clearTimeout(typingStop);
  if (typingSent) client.send({ type: "typing", isTyping: false });
  typingSent = 0;
});

$("presence").addEventListener("change", () => {
  if (client) client.send({ type: "presence", status: $("presence").value });
});

// #channel=<id>&token=<jwt> joins at once.
const params = new URLSearchParams(location.hash.slice(1));
if (params.get("channel")) $("channel").value = params.get("channel");
if (params.get("token")) {
  $("token").value = params.get("token");
  join($("channel").value.trim(), params.get("token"));
}
</script>
</body>
</html>
)html";

}  // namespace dohost::objects
