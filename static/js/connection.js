// The websocket to the flack node: handshake, keep-alive and reconnecting.
//
// One Connection lives as long as the person is logged in. It opens a
// websocket, says client_hello, answers server_hello with authenticate (with
// the user_id kept from before, if any), and from `authenticated` on passes
// every record to the controller. When the socket goes away it waits a while
// (exponential backoff with jitter) and starts over, until stop().
//
// No DOM here, and timers, clock and WebSocket can be handed in, so node's
// test runner drives it with a fake clock (tests/browser/unit/).

import { authenticate, clientGoodbye, clientHello, ping } from './state.js';

export const PING_AFTER_MS = 20000; // the protocol: ping after 20 s without traffic
export const REPLY_TIMEOUT_MS = 15000; // no frame at all this long after a ping: the link is dead
export const CONNECT_TIMEOUT_MS = 15000; // socket open + handshake must finish within this
export const BACKOFF = { baseMs: 500, maxMs: 30000 };

const OPEN = 1;

// Delay before reconnect attempt number `attempt` (0-based): the ceiling
// doubles from baseMs up to maxMs and the delay is drawn from its upper half,
// so many clients dropped at once do not come back in lockstep.
export function backoffDelay(attempt, { baseMs, maxMs } = BACKOFF, random = Math.random) {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(attempt, 0), 30));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

// The chat endpoint of the node that served the page, next to the page
// itself (so it also works behind a proxy that mounts flack under a path).
export function chatServerUrl(loc) {
  const page = new URL(loc.href);
  const scheme = page.protocol === 'https:' ? 'wss:' : 'ws:';
  const target = new URL('chat-server', page);
  return `${scheme}//${target.host}${target.pathname}`;
}

export class Connection {
  constructor(options) {
    const o = { ...options };
    this.url = o.url;
    this.credentials = o.credentials; // () => ({ userName, userId })
    this.onRecord = o.onRecord || (() => {});
    this.onStatus = o.onStatus || (() => {});
    this.onLost = o.onLost || (() => {});
    this.WS = o.WebSocket || globalThis.WebSocket;
    this.now = o.now || (() => Date.now());
    this.timers = o.timers || globalThis;
    this.random = o.random || Math.random;
    this.pingAfterMs = o.pingAfterMs ?? PING_AFTER_MS;
    this.replyTimeoutMs = o.replyTimeoutMs ?? REPLY_TIMEOUT_MS;
    this.connectTimeoutMs = o.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
    this.tickMs = o.tickMs ?? 1000;
    this.backoff = o.backoff || BACKOFF;
    this.log = o.log || (() => {});

    this.ws = null;
    this.status = 'idle'; // idle | connecting | handshaking | online | waiting | stopped
    this.stopped = true;
    this.attempt = 0; // failed attempts since the last successful authentication
    this.retryAt = null;
    this.retryTimer = null;
    this.tickTimer = null;
    this.resetSocketState();
  }

  resetSocketState() {
    this.authenticated = false;
    this.openedAt = 0;
    this.lastSentAt = 0;
    this.lastReceivedAt = 0;
    this.pingSentAt = null;
    this.protocolError = null;
  }

  setStatus(status) {
    this.status = status;
    this.onStatus({ status, attempt: this.attempt, retryAt: this.retryAt });
  }

  start() {
    this.stopped = false;
    this.attempt = 0;
    if (!this.tickTimer) this.tickTimer = this.timers.setInterval(() => this.tick(), this.tickMs);
    this.open();
  }

  open() {
    if (this.stopped) return;
    this.clearRetry();
    this.resetSocketState();
    this.openedAt = this.now();
    let ws;
    try {
      ws = new this.WS(this.url);
    } catch (err) {
      this.ws = null;
      this.setStatus('connecting');
      this.lost({ code: 1006, reason: String(err && err.message ? err.message : err), local: true });
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.lastReceivedAt = this.now();
      this.sendRaw(clientHello());
      this.setStatus('handshaking');
    };
    ws.onmessage = (event) => {
      if (ws !== this.ws) return;
      this.receive(event.data);
    };
    ws.onclose = (event) => {
      if (ws !== this.ws) return;
      this.lost({ code: event.code, reason: event.reason || '', wasClean: !!event.wasClean });
    };
    ws.onerror = () => {
      // A close event always follows; that is where we react.
    };
    this.setStatus('connecting');
  }

  receive(data) {
    this.lastReceivedAt = this.now();
    this.pingSentAt = null;
    let rec;
    try {
      rec = JSON.parse(data);
    } catch {
      this.log('flack: ignoring a frame that is not JSON', data);
      return;
    }
    if (!rec || typeof rec !== 'object' || typeof rec.record !== 'string') {
      this.log('flack: ignoring a frame that is not a record', data);
      return;
    }
    switch (rec.record) {
      case 'server_hello': {
        const { userName, userId } = this.credentials();
        this.sendRaw(authenticate(userName, userId));
        break;
      }
      case 'authenticated':
        this.authenticated = true;
        this.attempt = 0;
        this.retryAt = null;
        this.setStatus('online');
        break;
      case 'protocol_error':
        this.protocolError = rec;
        break;
      default:
        break;
    }
    this.onRecord(rec);
    // After a protocol_error the server closes the connection; we do not
    // wait for it, whatever happens to the close frame.
    if (rec.record === 'protocol_error' && this.ws && !this.stopped) {
      this.lost({ code: 1000, reason: '', afterProtocolError: true });
    }
  }

  // True when the record went out on an authenticated connection.
  send(rec) {
    if (!this.ws || this.ws.readyState !== OPEN || !this.authenticated) return false;
    this.sendRaw(rec);
    return true;
  }

  sendRaw(rec) {
    this.ws.send(JSON.stringify(rec));
    this.lastSentAt = this.now();
  }

  get online() {
    return !!this.ws && this.authenticated && this.ws.readyState === OPEN;
  }

  tick() {
    const ws = this.ws;
    if (!ws || this.stopped) return;
    const t = this.now();
    if (!this.authenticated) {
      if (t - this.openedAt >= this.connectTimeoutMs) {
        this.lost({ code: 0, reason: 'no answer from the server', local: true });
      }
      return;
    }
    if (ws.readyState !== OPEN) return;
    if (this.pingSentAt !== null && t - this.pingSentAt >= this.replyTimeoutMs) {
      this.lost({ code: 0, reason: 'the server stopped answering', local: true });
      return;
    }
    if (t - this.lastSentAt >= this.pingAfterMs) {
      this.sendRaw(ping());
      if (this.pingSentAt === null) this.pingSentAt = t;
    }
  }

  lost(info) {
    const ws = this.ws;
    const wasAuthenticated = this.authenticated;
    const protocolError = this.protocolError;
    this.ws = null;
    this.resetSocketState();
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        if (ws.readyState <= OPEN) ws.close(info.local ? 4000 : 1000);
      } catch {
        // closing an already broken socket may throw; it is gone either way
      }
    }
    if (this.stopped) return;
    this.onLost({ ...info, protocolError, wasAuthenticated });
    if (this.stopped) return; // the controller gave up (e.g. a refused login)
    const delay = backoffDelay(this.attempt, this.backoff, this.random);
    this.attempt += 1;
    this.retryAt = this.now() + delay;
    this.retryTimer = this.timers.setTimeout(() => {
      this.retryTimer = null;
      this.open();
    }, delay);
    this.setStatus('waiting');
  }

  clearRetry() {
    if (this.retryTimer) this.timers.clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.retryAt = null;
  }

  // Skip the rest of the backoff wait (the person asked, or the browser
  // says the network is back).
  retryNow() {
    if (this.stopped || this.ws) return;
    this.open();
  }

  stop({ goodbye = true } = {}) {
    this.stopped = true;
    this.clearRetry();
    if (this.tickTimer) this.timers.clearInterval(this.tickTimer);
    this.tickTimer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        if (goodbye && ws.readyState === OPEN && this.authenticated) ws.send(JSON.stringify(clientGoodbye()));
        if (ws.readyState <= OPEN) ws.close(1000);
      } catch {
        // nothing more to do for a socket that is already broken
      }
    }
    this.resetSocketState();
    this.setStatus('stopped');
  }
}
