// Unit tests for static/js/connection.js with a fake clock and a fake WebSocket.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';

import { Connection, backoffDelay, chatServerUrl, BACKOFF } from '../../../static/js/connection.js';

class FakeClock {
  constructor() {
    this.t = 1_000_000;
    this.seq = 0;
    this.tasks = new Map(); // id -> { at, fn, every }
  }
  now = () => this.t;
  timers = {
    setTimeout: (fn, ms) => this.add(fn, ms, null),
    setInterval: (fn, ms) => this.add(fn, ms, ms),
    clearTimeout: (id) => this.tasks.delete(id),
    clearInterval: (id) => this.tasks.delete(id),
  };
  add(fn, ms, every) {
    const id = ++this.seq;
    this.tasks.set(id, { at: this.t + ms, fn, every });
    return id;
  }
  // Moves time forward, running what falls due in order.
  advance(ms) {
    const end = this.t + ms;
    for (;;) {
      let next = null;
      for (const [id, task] of this.tasks) if (task.at <= end && (!next || task.at < next[1].at)) next = [id, task];
      if (!next) break;
      const [id, task] = next;
      this.t = task.at;
      if (task.every) task.at += task.every;
      else this.tasks.delete(id);
      task.fn();
    }
    this.t = end;
  }
}

class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.closedWith = null;
    FakeSocket.all.push(this);
  }
  send(data) {
    if (this.readyState !== 1) throw new Error('not open');
    this.sent.push(JSON.parse(data));
  }
  close(code) {
    this.closedWith = code;
    this.readyState = 3;
  }
  // the server side
  open() {
    this.readyState = 1;
    this.onopen && this.onopen({});
  }
  receive(rec) {
    this.onmessage && this.onmessage({ data: typeof rec === 'string' ? rec : JSON.stringify(rec) });
  }
  drop(code = 1006, reason = '') {
    this.readyState = 3;
    this.onclose && this.onclose({ code, reason, wasClean: code !== 1006 });
  }
  records() {
    return this.sent.map((r) => r.record);
  }
}

function setup(overrides = {}) {
  FakeSocket.all = [];
  const clock = new FakeClock();
  const seen = { records: [], statuses: [], lost: [] };
  const conn = new Connection({
    url: 'ws://127.0.0.1:1/chat-server',
    credentials: () => ({ userName: 'Ann', userId: overrides.userId ?? 'id-1' }),
    WebSocket: FakeSocket,
    now: clock.now,
    timers: clock.timers,
    random: () => 0.5,
    onRecord: (r) => seen.records.push(r),
    onStatus: (s) => seen.statuses.push(s.status),
    onLost: (info) => {
      seen.lost.push(info);
      if (overrides.onLost) overrides.onLost(info, conn);
    },
    ...overrides.options,
  });
  return { clock, conn, seen, sock: () => FakeSocket.all.at(-1) };
}

function handshake(ws) {
  ws.open();
  ws.receive({ record: 'server_hello', protocol_version: '1.0' });
  ws.receive({ record: 'authenticated', user_id: 'id-1' });
}

describe('handshake', () => {
  test('client_hello on open, authenticate with the kept user_id on server_hello', () => {
    const { conn, seen, sock } = setup();
    conn.start();
    assert.equal(sock().url, 'ws://127.0.0.1:1/chat-server');
    sock().open();
    assert.deepEqual(sock().sent, [{ record: 'client_hello', protocol_version: '1.0' }]);
    sock().receive({ record: 'server_hello', protocol_version: '1.0' });
    assert.deepEqual(sock().sent[1], { record: 'authenticate', user_name: 'Ann', user_id: 'id-1' });
    assert.equal(conn.online, false);
    sock().receive({ record: 'authenticated', user_id: 'id-1' });
    assert.equal(conn.online, true);
    assert.equal(conn.status, 'online');
    assert.deepEqual(seen.records.map((r) => r.record), ['server_hello', 'authenticated']);
  });

  test('nothing but the handshake goes out before authenticated', () => {
    const { conn, sock } = setup();
    conn.start();
    sock().open();
    assert.equal(conn.send({ record: 'join_chat', chat_name: 'x' }), false);
    sock().receive({ record: 'server_hello', protocol_version: '1.0' });
    assert.equal(conn.send({ record: 'join_chat', chat_name: 'x' }), false);
    sock().receive({ record: 'authenticated', user_id: 'id-1' });
    assert.equal(conn.send({ record: 'join_chat', chat_name: 'x' }), true);
    assert.deepEqual(sock().records(), ['client_hello', 'authenticate', 'join_chat']);
  });

  test('frames that are not JSON records are skipped', () => {
    const { conn, seen, sock } = setup({ options: { log: () => {} } });
    conn.start();
    handshake(sock());
    sock().receive('not json');
    sock().receive('[1,2]');
    assert.deepEqual(seen.records.map((r) => r.record), ['server_hello', 'authenticated']);
    assert.equal(conn.online, true);
  });

  test('a server that never answers the handshake is given up on', () => {
    const { clock, conn, seen, sock } = setup();
    conn.start();
    sock().open();
    clock.advance(15000);
    assert.equal(seen.lost.length, 1);
    assert.equal(conn.status, 'waiting');
  });
});

describe('keep-alive', () => {
  test('a ping goes out after 20 s without sending, not before', () => {
    const { clock, conn, sock } = setup();
    conn.start();
    handshake(sock());
    clock.advance(19000);
    assert.ok(!sock().records().includes('ping'));
    clock.advance(1000);
    assert.deepEqual(sock().records().slice(-1), ['ping']);
  });

  test('received traffic does not hold the ping back (the server counts our frames)', () => {
    const { clock, conn, sock } = setup();
    conn.start();
    handshake(sock());
    for (let i = 0; i < 5; i += 1) {
      clock.advance(5000);
      sock().receive({ record: 'chat_message', chat_name: 'x', user_id: 'u', message: 'm' });
    }
    assert.ok(sock().records().includes('ping'));
  });

  test('sending holds the ping back', () => {
    const { clock, conn, sock } = setup();
    conn.start();
    handshake(sock());
    for (let i = 0; i < 6; i += 1) {
      clock.advance(10000);
      conn.send({ record: 'chat_message', chat_name: 'x', mime_type: 'text/plain', message: 'm' });
    }
    assert.ok(!sock().records().includes('ping'));
  });

  test('pings keep coming every 20 s while idle and answered', () => {
    const { clock, conn, sock } = setup();
    conn.start();
    handshake(sock());
    for (let i = 0; i < 3; i += 1) {
      clock.advance(20000);
      sock().receive({ record: 'ping_reply' });
    }
    assert.equal(sock().records().filter((r) => r === 'ping').length, 3);
    assert.equal(conn.online, true);
  });

  test('a ping left unanswered marks the connection dead and a reconnect follows', () => {
    const { clock, conn, seen, sock } = setup();
    conn.start();
    const first = sock();
    handshake(first);
    clock.advance(20000); // ping
    clock.advance(15000); // no answer
    assert.equal(seen.lost.length, 1);
    assert.equal(seen.lost[0].local, true);
    assert.equal(first.closedWith, 4000);
    assert.equal(conn.status, 'waiting');
    clock.advance(BACKOFF.maxMs);
    assert.notEqual(sock(), first);
  });
});

describe('reconnecting', () => {
  test('backoff doubles from 0.5 s up to 30 s, drawn from the upper half', () => {
    const cfg = { baseMs: 500, maxMs: 30000 };
    assert.equal(backoffDelay(0, cfg, () => 0), 250);
    assert.equal(backoffDelay(0, cfg, () => 1), 500);
    assert.equal(backoffDelay(3, cfg, () => 1), 4000);
    assert.equal(backoffDelay(20, cfg, () => 1), 30000);
    assert.equal(backoffDelay(1000, cfg, () => 0), 15000);
    for (let a = 0; a < 12; a += 1) {
      const d = backoffDelay(a, cfg);
      assert.ok(d >= 250 && d <= 30000, `attempt ${a}: ${d}`);
    }
  });

  test('a dropped connection comes back after the backoff and authenticates again', () => {
    const { clock, conn, seen, sock } = setup();
    conn.start();
    const first = sock();
    handshake(first);
    first.drop(1006);
    assert.equal(conn.status, 'waiting');
    assert.deepEqual(seen.lost.map((l) => [l.code, l.wasAuthenticated]), [[1006, true]]);
    clock.advance(backoffDelay(0, BACKOFF, () => 0.5) - 1);
    assert.equal(FakeSocket.all.length, 1);
    clock.advance(1);
    assert.equal(FakeSocket.all.length, 2);
    handshake(sock());
    assert.deepEqual(sock().sent[1], { record: 'authenticate', user_name: 'Ann', user_id: 'id-1' });
    assert.equal(conn.attempt, 0);
  });

  test('failed attempts wait longer each time', () => {
    const { clock, conn, sock } = setup();
    conn.start();
    const waits = [];
    for (let i = 0; i < 4; i += 1) {
      sock().drop(1006);
      const before = clock.t;
      const count = FakeSocket.all.length;
      while (FakeSocket.all.length === count) clock.advance(50);
      waits.push(clock.t - before);
    }
    assert.deepEqual(waits, [400, 750, 1500, 3000]);
  });

  test('retryNow skips the wait', () => {
    const { conn, sock } = setup();
    conn.start();
    sock().drop(1006);
    assert.equal(FakeSocket.all.length, 1);
    conn.retryNow();
    assert.equal(FakeSocket.all.length, 2);
  });

  test('a protocol_error ends the connection at once and reports it', () => {
    const { conn, seen, sock } = setup();
    conn.start();
    const first = sock();
    handshake(first);
    first.receive({ record: 'protocol_error', code: 'FLACK-001', reason: 'too big' });
    assert.equal(seen.lost.length, 1);
    assert.equal(seen.lost[0].protocolError.code, 'FLACK-001');
    assert.equal(conn.status, 'waiting');
    // the server's own close that follows changes nothing
    first.drop(1000);
    assert.equal(seen.lost.length, 1);
  });

  test('the controller can give up from onLost (a refused login)', () => {
    const { clock, conn, sock } = setup({ onLost: (info, c) => info.protocolError && c.stop({ goodbye: false }) });
    conn.start();
    sock().open();
    sock().receive({ record: 'protocol_error', code: 'CHAT-002', reason: 'An unsupported protocol version was requested: 1.0' });
    clock.advance(60000);
    assert.equal(FakeSocket.all.length, 1);
    assert.equal(conn.status, 'stopped');
  });

  test('stop says client_goodbye, closes and does not come back', () => {
    const { clock, conn, sock } = setup();
    conn.start();
    handshake(sock());
    conn.stop({ goodbye: true });
    assert.deepEqual(sock().records().slice(-1), ['client_goodbye']);
    assert.equal(sock().closedWith, 1000);
    clock.advance(120000);
    assert.equal(FakeSocket.all.length, 1);
  });
});

describe('chat server URL', () => {
  test('follows the page: scheme, host, port and path', () => {
    assert.equal(chatServerUrl({ href: 'http://127.0.0.1:8123/' }), 'ws://127.0.0.1:8123/chat-server');
    assert.equal(chatServerUrl({ href: 'https://chat.example.org/' }), 'wss://chat.example.org/chat-server');
    assert.equal(chatServerUrl({ href: 'http://[::1]:9000/flack.html?x=1#y' }), 'ws://[::1]:9000/chat-server');
    assert.equal(chatServerUrl({ href: 'https://example.org/flack/' }), 'wss://example.org/flack/chat-server');
  });
});
