// Takes the README's screenshot of the web client: three people chatting
// through a real flack node, seen by one of them. Writes
// static/img/screenshot.png (run.sh --screenshot, or `node screenshot.mjs`).
import fs from 'node:fs';
import path from 'node:path';

import { FlackNode, STATIC_DIR, expectMessages, join, launchBrowser, login, openClient, say } from './e2e/harness.mjs';

const out = process.argv[2] || path.join(STATIC_DIR, 'img', 'screenshot.png');
const node = await FlackNode.start();
const browser = await launchBrowser();
try {
  const [alice, bob, carol] = await Promise.all(
    [1, 2, 3].map(() => openClient(browser, node, { viewport: { width: 1200, height: 720 } })),
  );
  await login(alice.page, 'Alice');
  await login(bob.page, 'Bob');
  await login(carol.page, 'Carol');
  for (const room of ['random', 'deploys', 'general']) {
    await join(alice.page, room);
    await join(bob.page, room);
  }
  await join(carol.page, 'general');
  await join(carol.page, 'random');

  const script = [
    [bob, 'general', 'Morning! Is the new node in the cluster yet?'],
    [alice, 'general', 'Yes, since 9:40. It joined the Erlang nodes without a hitch.'],
    [carol, 'general', 'Nice. The web client reconnects by itself when a node restarts, too.'],
    [carol, 'general', 'I restarted mine twice and only saw a short "Reconnecting…".'],
    [bob, 'general', 'And <b>markup</b> stays plain text, as it should.'],
    [alice, 'general', 'Let\'s move the rollout chat to #deploys.'],
  ];
  const expected = [];
  for (const [who, room, text] of script) {
    await who.page.locator('#room-list .room-button', { hasText: room }).first().click();
    await say(who.page, text);
    expected.push(`${who === alice ? 'Alice' : who === bob ? 'Bob' : 'Carol'}: ${text}`);
    await expectMessages(alice.page, expected);
  }
  for (const who of [carol, bob]) await who.page.locator('#room-list .room-button', { hasText: 'random' }).click();
  await say(carol.page, 'Lunch at 12:30?');
  await say(bob.page, 'Anyone seen my coffee mug?');
  // let the unread badge for #random show up in Alice's list
  await alice.page.locator('#room-list li[data-unread="2"]').waitFor();
  await alice.page.locator('#composer-input').fill('Sounds good, see you there');
  await alice.page.locator('#composer-input').blur();
  fs.mkdirSync(path.dirname(out), { recursive: true });
  await alice.page.screenshot({ path: out });
  console.log(`wrote ${out} (${fs.statSync(out).size} bytes)`);
} finally {
  await browser.close();
  await node.stop();
}
