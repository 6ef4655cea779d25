// Shared pieces of the browser tests: a real flack node per test file,
// Debian's chromium driven by playwright-core, and helpers that read what
// the page shows.
//
// Environment:
//   FLACK_BIN      the flack binary (default: <repo>/target/debug/flack)
//   CHROMIUM       the browser (default: /usr/bin/chromium; never downloaded)
//   FLACK_PIDFILE  if set, the pid of every server started is appended to it,
//                  so run.sh can stop them even if node dies first

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';

import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, '..', '..', '..');
export const STATIC_DIR = path.join(REPO, 'static');
export const FLACK_BIN = path.resolve(REPO, process.env.FLACK_BIN || 'target/debug/flack');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
];

// Waits are for conditions, never for time: generous, because CI shares two
// cores with whatever else runs.
export const WAIT_MS = 30000;

const logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'flack-e2e-'));

// ---------------------------------------------------------------------------
// flack nodes

export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export class FlackNode {
  constructor(port) {
    this.port = port;
    this.url = `http://127.0.0.1:${port}/`;
    this.logFile = path.join(logDir, `flack-${port}.log`);
    this.proc = null;
  }

  static async start() {
    const node = new FlackNode(await freePort());
    await node.start();
    return node;
  }

  async start() {
    if (!fs.existsSync(FLACK_BIN)) {
      throw new Error(`flack binary not found at ${FLACK_BIN}: build it (cargo build) or set FLACK_BIN`);
    }
    const out = fs.openSync(this.logFile, 'a');
    const args = ['foreground', '--bind', '127.0.0.1', '--port', String(this.port), '--static-dir', STATIC_DIR];
    const proc = spawn(FLACK_BIN, args, { stdio: ['ignore', out, out], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' } });
    fs.closeSync(out);
    this.proc = proc;
    this.exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
    if (process.env.FLACK_PIDFILE) fs.appendFileSync(process.env.FLACK_PIDFILE, `${proc.pid}\n`);
    // Ready when it serves the page.
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        throw new Error(`flack exited early (${proc.exitCode ?? proc.signalCode}):\n${this.logTail()}`);
      }
      try {
        const res = await fetch(this.url);
        if (res.ok) break;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`flack did not serve ${this.url} in time:\n${this.logTail()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  // SIGTERM (the node closes its websockets with 1001), SIGKILL if it hangs.
  async stop() {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 15000);
    await this.exited;
    clearTimeout(timer);
  }

  logTail(lines = 40) {
    try {
      return fs.readFileSync(this.logFile, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }
}

// ---------------------------------------------------------------------------
// the browser

export async function launchBrowser() {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`no browser at ${CHROMIUM} (run.sh installs Debian's chromium)`);
  // playwright gives the browser a fresh, temporary --user-data-dir of its own.
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
}

// A person: an isolated browser context (own localStorage) with one page,
// recording the websocket frames it sends and receives.
export async function openClient(browser, node, options = {}) {
  const context = await browser.newContext({
    viewport: options.viewport || { width: 1200, height: 800 },
    colorScheme: options.colorScheme || 'light',
    locale: 'en-GB',
    timezoneId: 'UTC',
    ...(options.contextOptions || {}),
  });
  if (options.beforeOpen) await options.beforeOpen(context);
  const page = await context.newPage();
  const client = { context, page, frames: [], errors: [] };
  let sockets = 0;
  page.on('websocket', (ws) => {
    const socket = ++sockets;
    ws.on('framesent', (f) => client.frames.push({ dir: 'sent', socket, at: Date.now(), data: String(f.payload) }));
    ws.on('framereceived', (f) => client.frames.push({ dir: 'received', socket, at: Date.now(), data: String(f.payload) }));
    ws.on('close', () => client.frames.push({ dir: 'closed', socket, at: Date.now(), data: '' }));
  });
  page.on('pageerror', (err) => client.errors.push(err.message));
  page.on('console', (msg) => {
    if (msg.type() === 'error') client.errors.push(msg.text());
  });
  page.setDefaultTimeout(WAIT_MS);
  await page.goto(node.url);
  return client;
}

// Records of one kind that went one way, parsed.
export function records(client, dir, kind) {
  const out = [];
  for (const f of client.frames) {
    if (f.dir !== dir) continue;
    try {
      const rec = JSON.parse(f.data);
      if (!kind || rec.record === kind) out.push(rec);
    } catch {
      out.push({ record: '(not JSON)', raw: f.data });
    }
  }
  return out;
}

// The fields of each server record, in the order the protocol README lists them.
export const SERVER_FIELDS = {
  server_hello: ['record', 'protocol_version'],
  protocol_error: ['record', 'code', 'reason'],
  authenticated: ['record', 'user_id'],
  chat_state: ['record', 'chat_name', 'users'],
  chat_user: ['record', 'user_name', 'user_id'],
  joined: ['record', 'chat_name', 'user_name', 'user_id', 'timestamp', 'sequence'],
  chat_message: ['record', 'chat_name', 'user_id', 'mime_type', 'message', 'timestamp', 'sequence'],
  left: ['record', 'chat_name', 'user_id', 'timestamp', 'sequence'],
  ping_reply: ['record'],
  server_goodbye: ['record'],
};

// Everything a client received that does not follow the protocol, as text.
export function protocolViolations(client) {
  const problems = [];
  const lastSeq = new Map(); // socket + chat -> last sequence
  for (const f of client.frames) {
    if (f.dir !== 'received') continue;
    let rec;
    try {
      rec = JSON.parse(f.data);
    } catch {
      problems.push(`not JSON: ${f.data}`);
      continue;
    }
    const fields = SERVER_FIELDS[rec.record];
    if (!fields) {
      problems.push(`unknown record: ${f.data}`);
      continue;
    }
    if (JSON.stringify(Object.keys(rec)) !== JSON.stringify(fields)) problems.push(`fields out of order or missing: ${f.data}`);
    if (rec.record === 'chat_state') {
      for (const u of rec.users || []) {
        if (JSON.stringify(Object.keys(u)) !== JSON.stringify(SERVER_FIELDS.chat_user)) problems.push(`chat_user: ${f.data}`);
      }
    }
    if ('timestamp' in rec && !/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/.test(rec.timestamp)) problems.push(`timestamp: ${f.data}`);
    if ('sequence' in rec) {
      if (!Number.isInteger(rec.sequence)) problems.push(`sequence not an integer: ${f.data}`);
      const key = `${f.socket}\u0000${rec.chat_name}`;
      if (lastSeq.has(key) && !(rec.sequence > lastSeq.get(key))) problems.push(`sequence not increasing after ${lastSeq.get(key)}: ${f.data}`);
      lastSeq.set(key, rec.sequence);
    }
  }
  return problems;
}

export function frameLog(client, last = 30) {
  const arrow = { sent: '->', received: '<-', closed: 'xx' };
  return client.frames.slice(-last).map((f) => `#${f.socket} ${arrow[f.dir]} ${f.data}`).join('\n');
}

// Retries `check` (which throws while the page is not there yet).
export async function eventually(check, { timeout = WAIT_MS, interval = 100 } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > deadline) throw err;
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

// ---------------------------------------------------------------------------
// what a person does

export async function login(page, name) {
  await page.locator('#login-name').fill(name);
  await page.locator('#login-name').press('Enter');
  await connected(page);
}

export async function connected(page) {
  await page.locator('#conn[data-state="online"]').waitFor();
}

export async function join(page, room) {
  const sidebarHidden = !(await page.locator('#join-name').isVisible());
  if (sidebarHidden) await page.locator('#rooms-toggle').click();
  await page.locator('#join-name').fill(room);
  await page.locator('#join-name').press('Enter');
  await page.locator('#room-title', { hasText: room }).waitFor();
  await page.locator(`#room-state`).waitFor({ state: 'hidden' });
}

export async function say(page, text) {
  await page.locator('#composer-input').fill(text);
  await page.locator('#composer-input').press('Enter');
}

// ---------------------------------------------------------------------------
// what the page shows

// The log of the room on screen: one entry per line.
export async function logLines(page) {
  return page.locator('#log-scroller ol.log:not([hidden]) > li').evaluateAll((items) =>
    items.map((li) => {
      if (li.classList.contains('message')) {
        return {
          kind: 'message',
          author: li.querySelector('.author').textContent,
          text: li.querySelector('.text').textContent,
          time: li.querySelector('time')?.textContent ?? null,
          datetime: li.querySelector('time')?.getAttribute('datetime') ?? null,
          userId: li.dataset.userId,
          color: getComputedStyle(li.querySelector('.author')).color,
        };
      }
      return { kind: 'system', text: li.querySelector('.system-text').textContent };
    }),
  );
}

export async function messages(page) {
  return (await logLines(page)).filter((l) => l.kind === 'message').map((l) => `${l.author}: ${l.text}`);
}

export async function systemLines(page) {
  return (await logLines(page)).filter((l) => l.kind === 'system').map((l) => l.text);
}

export async function memberNames(page) {
  return page.locator('#member-list .member-name').allTextContents();
}

export async function roomList(page) {
  return page.locator('#room-list > li').evaluateAll((items) =>
    items.map((li) => ({
      name: li.querySelector('.room-name').textContent,
      active: li.querySelector('.room-button').getAttribute('aria-current') === 'true',
      unread: li.querySelector('.badge').hidden ? 0 : Number(li.querySelector('.badge-count').textContent),
    })),
  );
}

export async function storedSession(page) {
  return page.evaluate(() => JSON.parse(localStorage.getItem('flack.session.v1') || 'null'));
}

export async function expectMessages(page, expected) {
  await eventually(async () => assert.deepEqual(await messages(page), expected));
}

export async function expectMembers(page, expected) {
  await eventually(async () => assert.deepEqual(await memberNames(page), expected));
}

export async function expectSystemLine(page, text) {
  await eventually(async () => assert.ok((await systemLines(page)).includes(text), `no line "${text}" in ${JSON.stringify(await systemLines(page))}`));
}

export function uniqueRoom(prefix) {
  return `${prefix}-${Math.random().toString(36).slice(2, 8)}`;
}
