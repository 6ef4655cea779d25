// The client when things go wrong: a server restart, protocol errors, and
// the keep-alive. Each test has a flack node of its own.
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import {
  FlackNode, WAIT_MS, connected, eventually, expectMembers, expectMessages, expectSystemLine, frameLog,
  join, launchBrowser, login, openClient, protocolViolations, records, roomList, say, storedSession, uniqueRoom,
} from './harness.mjs';

let browser;
let node;
let clients = [];

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
});

afterEach(async () => {
  for (const c of clients) await c.context.close();
  clients = [];
  if (node) await node.stop();
  node = null;
});

async function person(name, options) {
  const client = await openClient(browser, node, options);
  clients.push(client);
  if (name) await login(client.page, name);
  return client;
}

async function explain(fn) {
  try {
    await fn();
    for (const c of clients) assert.deepEqual(protocolViolations(c), []);
  } catch (err) {
    clients.forEach((c, i) => {
      err.message += `\n--- frames of client ${i} ---\n${frameLog(c)}`;
    });
    if (node) err.message += `\n--- server log ---\n${node.logTail(20)}`;
    throw err;
  }
}

// A websocket route that passes frames between the page and the real node,
// letting `edit` change what the page sends.
function proxy(edit) {
  return (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((message) => server.send(edit(message)));
    server.onMessage((message) => ws.send(message));
  };
}

describe('resilience', { timeout: 6 * WAIT_MS }, () => {
  test('a server restart is survived by reconnecting', async () => {
    node = await FlackNode.start();
    const room = uniqueRoom('phoenix');
    const alice = await person('Alice');
    const bob = await person('Bob');
    await explain(async () => {
      await join(alice.page, room);
      await join(bob.page, room);
      await expectMembers(alice.page, ['Alice', 'Bob']);
      await say(alice.page, 'before the restart');
      await expectMessages(bob.page, ['Alice: before the restart']);
      const ids = [(await storedSession(alice.page)).userId, (await storedSession(bob.page)).userId];

      await node.stop();
      // The outage is visible, and sending waits for the connection.
      for (const { page } of [alice, bob]) {
        await eventually(async () => {
          assert.notEqual(await page.locator('#conn').getAttribute('data-state'), 'online');
          assert.match(await page.locator('#conn-text').textContent(), /Offline|Reconnecting/);
        });
        assert.equal(await page.locator('#send-button').isDisabled(), true);
      }
      await eventually(async () => assert.match(await alice.page.locator('#room-state').textContent(), /Offline/));
      for (const c of [alice, bob]) c.frames.length = 0;

      await node.start(); // same port
      for (const c of [alice, bob]) {
        await connected(c.page);
        await c.page.locator('#room-state').waitFor({ state: 'hidden' });
      }
      // Back as the same people, in the same room, on the new server.
      assert.deepEqual(records(alice, 'sent', 'authenticate')[0].user_id, ids[0]);
      assert.deepEqual(records(bob, 'sent', 'authenticate')[0].user_id, ids[1]);
      assert.deepEqual(records(alice, 'sent', 'join_chat').map((r) => r.chat_name), [room]);
      await expectMembers(alice.page, ['Alice', 'Bob']);
      await expectMembers(bob.page, ['Bob', 'Alice']);
      await expectSystemLine(alice.page, 'Reconnected. Messages sent while you were away are not shown.');

      await say(bob.page, 'after the restart');
      await say(alice.page, 'welcome back');
      const expected = ['Alice: before the restart', 'Bob: after the restart', 'Alice: welcome back'];
      await expectMessages(alice.page, expected);
      await expectMessages(bob.page, expected);
    });
  });

  test('a protocol_error from the server is shown in plain words, and the client carries on', async () => {
    node = await FlackNode.start();
    const good = uniqueRoom('good');
    const doomed = uniqueRoom('doomed');
    // The proxy turns the join of `doomed` into one with an empty name, which
    // the real node refuses (FLACK-002) and then closes the connection.
    const alice = await person('Alice', {
      beforeOpen: (context) => context.routeWebSocket(/\/chat-server$/, proxy((m) => {
        const rec = typeof m === 'string' ? JSON.parse(m) : null;
        if (rec && rec.record === 'join_chat' && rec.chat_name === doomed) return JSON.stringify({ ...rec, chat_name: '' });
        return m;
      })),
    });
    await explain(async () => {
      await join(alice.page, good);
      await alice.page.locator('#join-name').fill(doomed);
      await alice.page.locator('#join-name').press('Enter');
      const banner = alice.page.locator('#banner');
      await banner.waitFor();
      assert.equal(await banner.getAttribute('role'), 'alert');
      assert.equal(await alice.page.locator('#banner-text').textContent(), `Could not join “${doomed}”: A name cannot be empty.`);
      assert.match(await alice.page.locator('#banner-detail').textContent(), /^Code FLACK-002: Field chat_name must not be empty$/);
      // It reconnects by itself, without the refused room, still in the good one.
      await connected(alice.page);
      await eventually(async () => assert.deepEqual((await roomList(alice.page)).map((r) => r.name), [good]));
      await alice.page.locator('#room-state').waitFor({ state: 'hidden' });
      await say(alice.page, 'still here');
      await expectMessages(alice.page, ['Alice: still here']);
      await alice.page.locator('#banner-dismiss').click();
      await banner.waitFor({ state: 'hidden' });
    });
  });

  test('an unknown error code is shown with the server\'s reason', async () => {
    node = await FlackNode.start();
    const alice = await person('Alice', {
      beforeOpen: (context) => context.routeWebSocket(/\/chat-server$/, proxy((m) => {
        const rec = typeof m === 'string' ? JSON.parse(m) : null;
        // message of the wrong JSON type: FLACK-001 on the real node
        if (rec && rec.record === 'chat_message' && rec.message === 'number please') return JSON.stringify({ ...rec, message: 42 });
        return m;
      })),
    });
    await explain(async () => {
      await join(alice.page, uniqueRoom('typed'));
      await say(alice.page, 'number please');
      await alice.page.locator('#banner').waitFor();
      assert.equal(await alice.page.locator('#banner-text').textContent(),
        'Your message was not sent: The server refused a request: Field message must be a string.');
      assert.equal(await alice.page.locator('#banner-detail').textContent(), 'Code FLACK-001: Field message must be a string');
      // The refused text is back in the message box, not lost.
      await connected(alice.page);
      assert.equal(await alice.page.locator('#composer-input').inputValue(), 'number please');
    });
  });

  test('a refused handshake returns to the login form with the reason', async () => {
    node = await FlackNode.start();
    const c = await person(null, {
      beforeOpen: (context) => context.routeWebSocket(/\/chat-server$/, proxy((m) => {
        const rec = typeof m === 'string' ? JSON.parse(m) : null;
        if (rec && rec.record === 'client_hello') return JSON.stringify({ ...rec, protocol_version: '0.9' });
        return m;
      })),
    });
    await explain(async () => {
      await c.page.locator('#login-name').fill('Alice');
      await c.page.locator('#login-name').press('Enter');
      await eventually(async () => assert.equal(await c.page.locator('#login-error').textContent(),
        'The server does not speak this version of the chat protocol. Reloading the page may bring a version it understands. '
        + '(code CHAT-002: An unsupported protocol version was requested: 0.9)'));
      await c.page.locator('#login-form').waitFor();
      assert.equal(await c.page.locator('#login-name').inputValue(), 'Alice');
      assert.equal(await storedSession(c.page), null);
      // It does not keep trying on its own.
      const hellos = records(c, 'sent', 'client_hello').length;
      await c.page.waitForTimeout(1500); // an absence can only be checked over some time
      assert.equal(records(c, 'sent', 'client_hello').length, hellos);
    });
  });

  test('records that arrive out of order are shown in sequence order', async () => {
    node = await FlackNode.start();
    const room = uniqueRoom('shuffle');
    // This proxy holds back Bob's chat_message "first" until "second" has
    // been delivered, as a distributed deployment might.
    let held = null;
    const delivered = [];
    const bob = await person('Bob', {
      beforeOpen: (context) => context.routeWebSocket(/\/chat-server$/, (ws) => {
        const server = ws.connectToServer();
        ws.onMessage((m) => server.send(m));
        server.onMessage((m) => {
          const rec = JSON.parse(m);
          if (rec.record === 'chat_message' && rec.message === 'first') {
            held = m;
            return;
          }
          ws.send(m);
          if (rec.record === 'chat_message') delivered.push(rec.message);
          if (rec.record === 'chat_message' && rec.message === 'second') {
            ws.send(held);
            delivered.push('first');
          }
        });
      }),
    });
    const alice = await person('Alice');
    await explain(async () => {
      await join(bob.page, room);
      await join(alice.page, room);
      await say(alice.page, 'first');
      await expectMessages(alice.page, ['Alice: first']);
      await say(alice.page, 'second');
      await say(alice.page, 'third');
      await expectMessages(bob.page, ['Alice: first', 'Alice: second', 'Alice: third']);
      assert.deepEqual(delivered, ['second', 'first', 'third'], 'the proxy did deliver them out of order');
    });
  });

  test('keep-alive: a ping after 20 s without traffic, answered by the server', async () => {
    node = await FlackNode.start();
    const c = await person(null, { beforeOpen: (context) => context.clock.install() });
    await explain(async () => {
      await login(c.page, 'Quiet');
      await join(c.page, uniqueRoom('hush'));
      // From here on the page's time moves only when the test says so.
      const now = await c.page.evaluate(() => Date.now());
      await c.page.clock.pauseAt(now + 1000);
      await say(c.page, 'the last word'); // sent at the paused instant
      await expectMessages(c.page, ['Quiet: the last word']);
      assert.equal(records(c, 'sent', 'ping').length, 0);
      await c.page.clock.runFor(19000);
      assert.equal(records(c, 'sent', 'ping').length, 0, 'no ping before 20 s');
      await c.page.clock.runFor(1500);
      await eventually(async () => assert.equal(records(c, 'sent', 'ping').length, 1));
      await eventually(async () => assert.equal(records(c, 'received', 'ping_reply').length, 1));
      assert.deepEqual(records(c, 'sent', 'ping')[0], { record: 'ping' });
      // After another quiet 20 s, another one; the connection stays up all along.
      await c.page.clock.runFor(20000);
      await eventually(async () => assert.equal(records(c, 'received', 'ping_reply').length, 2));
      assert.equal(await c.page.locator('#conn').getAttribute('data-state'), 'online');
      assert.equal(records(c, 'sent', 'client_hello').length, 1, 'never reconnected');
    });
  });
});
