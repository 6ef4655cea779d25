// Two people chatting through a real flack node, in headless chromium.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import {
  FlackNode, WAIT_MS, connected, eventually, expectMembers, expectMessages, expectSystemLine, frameLog,
  join, launchBrowser, logLines, login, messages, openClient, protocolViolations, records, roomList, say,
  storedSession, systemLines, uniqueRoom,
} from './harness.mjs';

let node;
let browser;
const clients = [];

async function person(name, options) {
  const client = await openClient(browser, node, options);
  clients.push(client);
  if (name) await login(client.page, name);
  return client;
}

before(async () => {
  node = await FlackNode.start();
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (node) await node.stop();
});

// On failure, show what went over the wire: most surprises are there.
async function withFrames(fn, ...people) {
  try {
    await fn();
  } catch (err) {
    for (const p of people) err.message += `\n--- frames of ${p.name} ---\n${frameLog(p.client)}`;
    err.message += `\n--- server log ---\n${node.logTail(15)}`;
    throw err;
  }
}

describe('two people in one room', { timeout: 4 * WAIT_MS }, () => {
  let alice;
  let bob;
  const room = uniqueRoom('lobby');

  test('they log in, join the same room and see each other join', async () => {
    alice = await person('Alice');
    bob = await person('Bob');
    await withFrames(async () => {
      await join(alice.page, room);
      await join(bob.page, room);
      await expectSystemLine(alice.page, 'Bob joined the room');
      assert.deepEqual(await systemLines(bob.page), ['You joined the room']);
      await expectMembers(alice.page, ['Alice', 'Bob']);
      await expectMembers(bob.page, ['Bob', 'Alice']);
      assert.equal(await alice.page.locator('#members-toggle').textContent(), '2 members');
      // The identity the server gave is kept for next time.
      const saved = await storedSession(alice.page);
      const [authenticated] = records(alice, 'received', 'authenticated');
      assert.equal(saved.userId, authenticated.user_id);
      assert.match(saved.userId, /\S/);
      assert.deepEqual(saved.rooms, [room]);
    }, { name: 'Alice', client: alice }, { name: 'Bob', client: bob });
  });

  test('messages go both ways with the sender\'s name, colour and time', async () => {
    await withFrames(async () => {
      await say(alice.page, 'Hello Bob!');
      await expectMessages(bob.page, ['Alice: Hello Bob!']);
      await say(bob.page, 'Hi Alice, how are you?');
      await expectMessages(alice.page, ['Alice: Hello Bob!', 'Bob: Hi Alice, how are you?']);
      await expectMessages(bob.page, ['Alice: Hello Bob!', 'Bob: Hi Alice, how are you?']);

      const aliceId = (await storedSession(alice.page)).userId;
      const bobId = (await storedSession(bob.page)).userId;
      const seenByBob = (await logLines(bob.page)).filter((l) => l.kind === 'message');
      const seenByAlice = (await logLines(alice.page)).filter((l) => l.kind === 'message');
      assert.equal(seenByBob[0].userId, aliceId);
      assert.equal(seenByBob[1].userId, bobId);
      // The colour comes from the user_id: the same on both screens, different per person.
      assert.equal(seenByBob[0].color, seenByAlice[0].color);
      assert.equal(seenByBob[1].color, seenByAlice[1].color);
      assert.notEqual(seenByBob[0].color, seenByBob[1].color);
      // The time is the server's timestamp, shown as a time of day (UTC in this browser).
      const sent = records(bob, 'received', 'chat_message')[0];
      assert.equal(seenByBob[0].datetime, sent.timestamp);
      assert.equal(seenByBob[0].time, sent.timestamp.slice(11, 16));
      // Own messages are marked as such.
      assert.equal(await alice.page.locator('li.message.mine').count(), 1);
    }, { name: 'Alice', client: alice }, { name: 'Bob', client: bob });
  });

  test('a message containing markup shows as text', async () => {
    const evil = '<img src=x onerror="window.__pwned=1"><b>bold?</b><script>window.__pwned=2</script> & &amp;';
    await withFrames(async () => {
      await say(alice.page, evil);
      await eventually(async () => assert.equal((await messages(bob.page)).at(-1), `Alice: ${evil}`));
      await eventually(async () => assert.equal((await messages(alice.page)).at(-1), `Alice: ${evil}`));
      for (const p of [alice.page, bob.page]) {
        assert.equal(await p.locator('#log-scroller img, #log-scroller b, #log-scroller script').count(), 0);
        assert.equal(await p.evaluate(() => window.__pwned), undefined);
      }
      // The same goes for names: a name is text too.
      const mallory = await person('<i>Mallory</i>');
      await join(mallory.page, room);
      await expectSystemLine(bob.page, '<i>Mallory</i> joined the room');
      assert.equal(await bob.page.locator('#log-scroller i, #member-list i').count(), 0);
      await mallory.page.locator('#logout').click();
      await expectSystemLine(bob.page, '<i>Mallory</i> left the room');
    }, { name: 'Alice', client: alice }, { name: 'Bob', client: bob });
  });

  test('unread counts, switching rooms and leaving a room', async () => {
    const other = uniqueRoom('side');
    await withFrames(async () => {
      await join(bob.page, other); // Bob now looks at the other room
      await say(alice.page, 'one');
      await say(alice.page, 'two');
      await eventually(async () => {
        const rooms = await roomList(bob.page);
        assert.deepEqual(rooms, [
          { name: room, active: false, unread: 2 },
          { name: other, active: true, unread: 0 },
        ]);
      });
      assert.match(await bob.page.title(), /^\(2\) flack/);
      await bob.page.locator('#room-list .room-button', { hasText: room }).click();
      await eventually(async () => assert.deepEqual((await roomList(bob.page)).map((r) => [r.name, r.active, r.unread]), [
        [room, true, 0], [other, false, 0],
      ]));
      assert.deepEqual((await messages(bob.page)).slice(-2), ['Alice: one', 'Alice: two']);

      await bob.page.locator('#leave-room').click();
      await expectSystemLine(alice.page, 'Bob left the room');
      await expectMembers(alice.page, ['Alice']);
      await eventually(async () => assert.deepEqual((await roomList(bob.page)).map((r) => r.name), [other]));
      assert.deepEqual(records(bob, 'sent', 'leave_chat').map((r) => r.chat_name), [room]);
      // Bob is no longer told about the room.
      await say(alice.page, 'anyone?');
      await expectMessages(alice.page, ['Alice: Hello Bob!', 'Bob: Hi Alice, how are you?', `Alice: <img src=x onerror="window.__pwned=1"><b>bold?</b><script>window.__pwned=2</script> & &amp;`, 'Alice: one', 'Alice: two', 'Alice: anyone?']);
      assert.equal((await roomList(bob.page)).find((r) => r.name === room), undefined);

      // and back in, through the join form
      await join(bob.page, room);
      await expectSystemLine(alice.page, 'Bob joined the room');
      await expectMembers(alice.page, ['Alice', 'Bob']);
    }, { name: 'Alice', client: alice }, { name: 'Bob', client: bob });
  });

  test('a reload keeps the identity and the rooms', async () => {
    await withFrames(async () => {
      const before = await storedSession(alice.page);
      alice.frames.length = 0;
      await alice.page.reload();
      await connected(alice.page);
      await alice.page.locator('#room-title', { hasText: room }).waitFor();
      assert.equal(await alice.page.locator('#me-name').textContent(), 'Alice');
      // The kept user_id went to the server, and the server kept it.
      const [auth] = records(alice, 'sent', 'authenticate');
      assert.deepEqual(auth, { record: 'authenticate', user_name: 'Alice', user_id: before.userId });
      assert.equal(records(alice, 'received', 'authenticated')[0].user_id, before.userId);
      assert.deepEqual(records(alice, 'sent', 'join_chat').map((r) => r.chat_name), [room]);
      assert.deepEqual((await storedSession(alice.page)).userId, before.userId);

      await expectMembers(alice.page, ['Alice', 'Bob']);
      await say(alice.page, 'back after a reload');
      await eventually(async () => {
        const last = (await logLines(bob.page)).at(-1);
        assert.equal(last.text, 'back after a reload');
        assert.equal(last.author, 'Alice');
        assert.equal(last.userId, before.userId);
      });
    }, { name: 'Alice', client: alice }, { name: 'Bob', client: bob });
  });

  test('logging out ends the session and forgets the identity', async () => {
    await withFrames(async () => {
      const before = await storedSession(alice.page);
      await alice.page.locator('#logout').click();
      await alice.page.locator('#login-form').waitFor();
      assert.equal(await storedSession(alice.page), null);
      assert.equal(records(alice, 'sent', 'client_goodbye').length, 1);
      await expectSystemLine(bob.page, 'Alice left the room');
      await expectMembers(bob.page, ['Bob']);
      // A new login is a new identity.
      await login(alice.page, 'Alice');
      const after = await storedSession(alice.page);
      assert.notEqual(after.userId, before.userId);
      assert.deepEqual(after.rooms, []);
    }, { name: 'Alice', client: alice }, { name: 'Bob', client: bob });
  });

  test('the page made no errors of its own', () => {
    for (const c of clients) assert.deepEqual(c.errors, []);
  });
});

describe('two tabs of one browser', { timeout: 4 * WAIT_MS }, () => {
  test('share the identity, and logging out in one logs out the other', async () => {
    const first = await person('Robin');
    const room = uniqueRoom('tabs');
    await join(first.page, room);
    const watcher = await person('Watcher');
    await join(watcher.page, room);
    // A second tab: same localStorage, so the same person, already in the room.
    const second = await first.context.newPage();
    await second.goto(node.url);
    await connected(second);
    await second.locator('#room-title', { hasText: room }).waitFor();
    assert.equal(await second.locator('#me-name').textContent(), 'Robin');
    const id = (await storedSession(first.page)).userId;
    assert.equal((await storedSession(second)).userId, id);
    // One person for the others, even with two connections.
    await expectMembers(watcher.page, ['Watcher', 'Robin']);
    await say(second, 'from the second tab');
    await expectMessages(first.page, ['Robin: from the second tab']);

    await first.page.locator('#logout').click();
    await second.locator('#login-form').waitFor();
    assert.equal(await second.locator('#login-name').inputValue(), 'Robin');
    await expectMembers(watcher.page, ['Watcher']);
    await expectSystemLine(watcher.page, 'Robin left the room');
  });
});

describe('reading back', { timeout: 4 * WAIT_MS }, () => {
  test('new messages do not pull the view down while reading further up', async () => {
    const room = uniqueRoom('long');
    const talker = await person('Talker');
    const reader = await person('Reader', { viewport: { width: 900, height: 420 } });
    await join(talker.page, room);
    await join(reader.page, room);
    const lines = Array.from({ length: 25 }, (_, i) => `line ${i + 1}`);
    for (const line of lines) await say(talker.page, line);
    await expectMessages(reader.page, lines.map((l) => `Talker: ${l}`));
    const scroller = reader.page.locator('#log-scroller');
    const atBottom = () => scroller.evaluate((s) => s.scrollHeight - s.scrollTop - s.clientHeight < 48);
    assert.equal(await atBottom(), true, 'following the conversation');
    assert.equal(await reader.page.locator('#jump').isVisible(), false);

    await scroller.evaluate((s) => { s.scrollTop = 0; });
    await say(talker.page, 'one more');
    await reader.page.locator('#jump').waitFor();
    assert.equal(await scroller.evaluate((s) => s.scrollTop), 0, 'still where the reader was');
    await reader.page.locator('#jump').click();
    await reader.page.locator('#jump').waitFor({ state: 'hidden' });
    assert.equal(await atBottom(), true);
  });
});

describe('on a phone-sized screen, with the keyboard only', { timeout: 4 * WAIT_MS }, () => {
  test('log in, join a room, talk, and use the room drawer', async () => {
    const phone = await person(null, { viewport: { width: 390, height: 844 }, contextOptions: { isMobile: true, hasTouch: true } });
    const friend = await person('Friend');
    const room = uniqueRoom('pocket');
    await join(friend.page, room);
    const { page } = phone;
    await withFrames(async () => {
      // The name field has the focus from the start.
      await page.keyboard.type('Pat');
      await page.keyboard.press('Enter');
      await connected(page);
      // The room drawer opens by itself with the focus in "Join a room".
      await eventually(async () => assert.equal(await page.evaluate(() => document.activeElement.id), 'join-name'));
      await page.keyboard.type(room);
      await page.keyboard.press('Enter');
      await page.locator('#room-title', { hasText: room }).waitFor();
      // The drawer closed and the focus is in the message box.
      await eventually(async () => assert.equal(await page.evaluate(() => document.activeElement.id), 'composer-input'));
      await page.locator('#sidebar').waitFor({ state: 'hidden' });
      await page.keyboard.type('typed on a phone');
      await page.keyboard.press('Enter');
      await expectMessages(friend.page, ['Pat: typed on a phone']);
      await say(friend.page, 'got it');
      await expectMessages(page, ['Pat: typed on a phone', 'Friend: got it']);
      // Nothing sticks out sideways.
      assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth));
      // The drawer: toggled from the keyboard, closed with Escape, focus returns.
      await page.locator('#rooms-toggle').focus();
      await page.keyboard.press('Enter');
      await page.locator('#sidebar').waitFor({ state: 'visible' });
      assert.equal(await page.locator('#rooms-toggle').getAttribute('aria-expanded'), 'true');
      await page.keyboard.press('Escape');
      await page.locator('#sidebar').waitFor({ state: 'hidden' });
      assert.equal(await page.evaluate(() => document.activeElement.id), 'rooms-toggle');
    }, { name: 'Pat', client: phone }, { name: 'Friend', client: friend });
  });

  test('every control can be reached with Tab and has a name', async () => {
    const c = await person('Kim');
    await join(c.page, uniqueRoom('tabs'));
    const seen = [];
    for (let i = 0; i < 25; i += 1) {
      await c.page.keyboard.press('Tab');
      seen.push(await c.page.evaluate(() => {
        const e = document.activeElement;
        const label = e.getAttribute('aria-label') || (e.labels && e.labels[0] && e.labels[0].textContent) || e.textContent;
        return `${e.tagName.toLowerCase()}#${e.id}|${(label || '').trim()}`;
      }));
    }
    for (const id of ['#logout', '#join-name', '#composer-input', '#send-button', '#leave-room', '#members-toggle']) {
      assert.ok(seen.some((s) => s.includes(id)), `${id} not reached by Tab: ${seen.join(', ')}`);
    }
    assert.ok(seen.some((s) => s.startsWith('button#|Leave room tabs-')), 'the room list\'s leave button is reachable');
    for (const s of seen) assert.match(s.split('|')[1] || '', /\S/, `unnamed control: ${s}`);
  });
});

test('every record the server sent follows the protocol', () => {
  assert.ok(clients.length >= 5);
  for (const c of clients) assert.deepEqual(protocolViolations(c), []);
});
