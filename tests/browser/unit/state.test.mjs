// Unit tests for static/js/state.js: the client's state logic, without a browser.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';

import * as S from '../../../static/js/state.js';

const ALICE = 'a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1';
const BOB = 'b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2';
const CAROL = 'c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3';
const TS = '2024-05-01T12:00:00Z';

// Alice, logged in and authenticated, with `rooms` joined (chat_state seen).
function online(rooms = ['general'], others = []) {
  const state = S.createState();
  S.login(state, 'Alice');
  S.applyRecord(state, { record: 'authenticated', user_id: ALICE });
  for (const name of rooms) {
    S.addRoom(state, name);
    S.applyRecord(state, { record: 'chat_state', chat_name: name, users: others });
    S.applyRecord(state, joined(name, ALICE, 'Alice', 1));
  }
  return state;
}

const joined = (chat, id, name, seq) => ({
  record: 'joined', chat_name: chat, user_name: name, user_id: id, timestamp: TS, sequence: seq,
});
const left = (chat, id, seq) => ({ record: 'left', chat_name: chat, user_id: id, timestamp: TS, sequence: seq });
const msg = (chat, id, text, seq, timestamp = TS) => ({
  record: 'chat_message', chat_name: chat, user_id: id, mime_type: 'text/plain', message: text, timestamp, sequence: seq,
});
const chatUser = (id, name) => ({ record: 'chat_user', user_name: name, user_id: id });
const events = (state, room = 'general') => state.rooms.get(room).events;
const texts = (state, room = 'general') =>
  events(state, room).map((e) => (e.kind === 'message' ? `${e.userName}: ${e.text}` : S.systemText(e)));

describe('records the client sends', () => {
  test('put `record` first, as the Erlang nodes require', () => {
    for (const rec of [
      S.clientHello(), S.authenticate('a', 'b'), S.joinChat('x'), S.leaveChat('x'),
      S.chatMessage('x', 'hi'), S.ping(), S.clientGoodbye(),
    ]) {
      assert.equal(Object.keys(JSON.parse(JSON.stringify(rec)))[0], 'record');
    }
  });

  test('client_hello asks for protocol 1.0', () => {
    assert.deepEqual(S.clientHello(), { record: 'client_hello', protocol_version: '1.0' });
  });

  test('authenticate sends a kept user_id and leaves an absent one out', () => {
    assert.deepEqual(S.authenticate('Ann', 'abc'), { record: 'authenticate', user_name: 'Ann', user_id: 'abc' });
    assert.deepEqual(S.authenticate('Ann', null), { record: 'authenticate', user_name: 'Ann' });
    assert.deepEqual(S.authenticate('Ann', ''), { record: 'authenticate', user_name: 'Ann' });
  });

  test('chat_message is text/plain and carries no user_id, timestamp or sequence', () => {
    assert.deepEqual(S.chatMessage('general', '<b>x</b>'), {
      record: 'chat_message', chat_name: 'general', mime_type: 'text/plain', message: '<b>x</b>',
    });
  });
});

describe('session', () => {
  test('authenticated keeps the user_id the server chose', () => {
    const state = S.createState();
    S.login(state, 'Alice');
    assert.equal(state.phase, 'connecting');
    const out = S.applyRecord(state, { record: 'authenticated', user_id: ALICE });
    assert.equal(out.type, 'authenticated');
    assert.equal(state.session.userId, ALICE);
    assert.equal(state.phase, 'online');
    assert.equal(S.displayName(state, ALICE), 'Alice');
  });

  test('what is saved restores the same identity, rooms and active room', () => {
    const state = online(['general', 'random']);
    S.switchRoom(state, 'general');
    const saved = S.parseSaved(JSON.stringify(S.persistable(state)));
    assert.deepEqual(saved, { userName: 'Alice', userId: ALICE, rooms: ['general', 'random'], activeRoom: 'general' });
    const again = S.createState(saved);
    assert.deepEqual(again.session, { userName: 'Alice', userId: ALICE });
    assert.deepEqual([...again.rooms.keys()], ['general', 'random']);
    assert.equal(again.activeRoom, 'general');
    assert.deepEqual(S.roomsToJoin(again), ['general', 'random']);
    assert.equal(again.phase, 'connecting');
  });

  test('broken or foreign saved data starts logged out', () => {
    for (const text of [null, '', 'not json', '42', '{"userName":""}', '{"userName":7}']) {
      const state = S.createState(S.parseSaved(text));
      assert.equal(state.session, null, String(text));
      assert.equal(state.phase, 'logged-out');
    }
    const odd = S.createState({ userName: 'X', rooms: ['a', '', 5, 'a'], activeRoom: 'nope' });
    assert.deepEqual([...odd.rooms.keys()], ['a']);
    assert.equal(odd.activeRoom, 'a');
  });

  test('logging in again under the same name keeps the user_id; another name does not', () => {
    const state = online();
    S.login(state, 'Alice');
    assert.equal(state.session.userId, ALICE);
    S.login(state, 'Alicia');
    assert.equal(state.session.userId, null);
  });

  test('logout forgets the session and the rooms', () => {
    const state = online(['general', 'random']);
    S.logout(state);
    assert.equal(state.session, null);
    assert.equal(state.rooms.size, 0);
    assert.equal(S.persistable(state), null);
  });

  test('names are trimmed and must not be empty or too long', () => {
    assert.deepEqual(S.validateUserName('  Ann  '), { ok: true, name: 'Ann' });
    assert.equal(S.validateUserName('   ').ok, false);
    assert.equal(S.validateUserName('x'.repeat(S.MAX_NAME_LENGTH + 1)).ok, false);
    assert.equal(S.validateRoomName('😀'.repeat(S.MAX_NAME_LENGTH)).ok, true);
    assert.equal(S.validateRoomName('').ok, false);
  });
});

describe('members', () => {
  test('chat_state fills the member list, joined adds and left removes', () => {
    const state = online(['general'], [chatUser(BOB, 'Bob')]);
    assert.deepEqual(S.memberList(state, 'general').map((m) => m.userName), ['Alice', 'Bob']);
    S.applyRecord(state, joined('general', CAROL, 'Carol', 2));
    assert.deepEqual(S.memberList(state, 'general').map((m) => m.userName), ['Alice', 'Bob', 'Carol']);
    S.applyRecord(state, left('general', BOB, 3));
    assert.deepEqual(S.memberList(state, 'general').map((m) => m.userName), ['Alice', 'Carol']);
    assert.equal(S.memberList(state, 'general')[0].mine, true);
  });

  test('join and leave lines use the name, also for left which carries only user_id', () => {
    const state = online();
    S.applyRecord(state, joined('general', BOB, 'Bob', 2));
    S.applyRecord(state, left('general', BOB, 3));
    assert.deepEqual(texts(state), ['You joined the room', 'Bob joined the room', 'Bob left the room']);
  });

  test('the same user_id present twice (two tabs) leaves only when both are gone', () => {
    const state = online();
    S.applyRecord(state, joined('general', BOB, 'Bob', 2));
    S.applyRecord(state, joined('general', BOB, 'Bob', 3));
    S.applyRecord(state, left('general', BOB, 4));
    assert.ok(S.memberList(state, 'general').some((m) => m.userId === BOB));
    S.applyRecord(state, left('general', BOB, 5));
    assert.ok(!S.memberList(state, 'general').some((m) => m.userId === BOB));
    assert.deepEqual(texts(state), ['You joined the room', 'Bob joined the room', 'Bob left the room']);
  });

  test('a chat_state that already lists us (a stale connection) is handled', () => {
    const state = online(['general'], [chatUser(ALICE, 'Alice'), chatUser(BOB, 'Bob')]);
    assert.equal(S.memberList(state, 'general').length, 2);
    // the stale connection goes away: we are still here
    S.applyRecord(state, left('general', ALICE, 2));
    assert.ok(S.memberList(state, 'general').some((m) => m.mine));
  });

  test('records for rooms we are not in change nothing', () => {
    const state = online();
    for (const rec of [joined('elsewhere', BOB, 'Bob', 1), left('elsewhere', BOB, 1), msg('elsewhere', BOB, 'x', 1)]) {
      assert.equal(S.applyRecord(state, rec).type, 'ignored');
    }
    assert.equal(state.rooms.size, 1);
  });

  test('malformed records are ignored', () => {
    const state = online();
    for (const rec of [null, 5, {}, { record: 7 }, { record: 'joined' }, { record: 'chat_message', chat_name: 'general' },
      { record: 'chat_state', chat_name: 'general', users: 'nope' }, { record: 'something_new' }]) {
      assert.doesNotThrow(() => S.applyRecord(state, rec));
    }
    assert.deepEqual(S.memberList(state, 'general').map((m) => m.userName), ['Alice']);
  });
});

describe('messages', () => {
  test('carry the sender name resolved from user_id', () => {
    const state = online(['general'], [chatUser(BOB, 'Bob')]);
    S.applyRecord(state, msg('general', BOB, 'hi', 2));
    S.applyRecord(state, msg('general', ALICE, 'hello', 3));
    const [, m1, m2] = events(state);
    assert.equal(m1.userName, 'Bob');
    assert.equal(m1.mine, false);
    assert.equal(m2.userName, 'Alice');
    assert.equal(m2.mine, true);
    assert.equal(m1.timestamp, TS);
  });

  test('a sender the client never heard of still shows, with a stand-in name', () => {
    const state = online();
    S.applyRecord(state, msg('general', CAROL, 'psst', 2));
    assert.match(events(state).at(-1).userName, /^Unknown user c3c3c3/);
  });

  test('a name stays known after its owner left, for the lines already shown', () => {
    const state = online(['general'], [chatUser(BOB, 'Bob')]);
    S.applyRecord(state, left('general', BOB, 2));
    assert.equal(S.displayName(state, BOB), 'Bob');
  });

  test('markup in a message is kept as plain text in the state', () => {
    const state = online();
    S.applyRecord(state, msg('general', ALICE, '<img src=x onerror=alert(1)>', 2));
    assert.equal(events(state).at(-1).text, '<img src=x onerror=alert(1)>');
  });
});

describe('unread counts and rooms', () => {
  test('count others\' messages in rooms that are not shown; switching clears', () => {
    const state = online(['general', 'random'], [chatUser(BOB, 'Bob')]);
    assert.equal(state.activeRoom, 'random');
    S.applyRecord(state, msg('general', BOB, 'one', 5));
    S.applyRecord(state, msg('general', BOB, 'two', 6));
    S.applyRecord(state, msg('general', ALICE, 'mine', 7));
    S.applyRecord(state, msg('random', BOB, 'here', 8));
    assert.equal(state.rooms.get('general').unread, 2);
    assert.equal(state.rooms.get('random').unread, 0);
    assert.equal(S.totalUnread(state), 2);
    S.switchRoom(state, 'general');
    assert.equal(state.rooms.get('general').unread, 0);
  });

  test('joining a room already in the list only switches to it', () => {
    const state = online(['general', 'random']);
    const { created } = S.addRoom(state, 'general');
    assert.equal(created, false);
    assert.equal(state.activeRoom, 'general');
    assert.equal(state.rooms.size, 2);
  });

  test('leaving the shown room shows its neighbour', () => {
    const state = online(['a', 'b', 'c']);
    S.switchRoom(state, 'b');
    S.removeRoom(state, 'b');
    assert.equal(state.activeRoom, 'c');
    S.removeRoom(state, 'c');
    assert.equal(state.activeRoom, 'a');
    S.removeRoom(state, 'a');
    assert.equal(state.activeRoom, null);
  });

  test('Alt+arrow neighbours wrap around', () => {
    const state = online(['a', 'b', 'c']);
    S.switchRoom(state, 'a');
    assert.equal(S.neighbourRoom(state, -1), 'c');
    assert.equal(S.neighbourRoom(state, 1), 'b');
  });

  test('a late `left` for our old membership does not touch a room joined again', () => {
    const state = online(['general'], [chatUser(BOB, 'Bob')]);
    S.removeRoom(state, 'general');
    S.addRoom(state, 'general'); // join_chat sent again, chat_state not here yet
    assert.equal(S.applyRecord(state, left('general', ALICE, 9)).type, 'ignored');
    S.applyRecord(state, { record: 'chat_state', chat_name: 'general', users: [chatUser(BOB, 'Bob')] });
    S.applyRecord(state, joined('general', ALICE, 'Alice', 10));
    assert.deepEqual(S.memberList(state, 'general').map((m) => m.userName), ['Alice', 'Bob']);
  });
});

describe('ordering by sequence', () => {
  test('a record that arrives late goes where its sequence says', () => {
    const state = online(['general'], [chatUser(BOB, 'Bob')]);
    S.applyRecord(state, msg('general', BOB, 'three', 3));
    S.applyRecord(state, msg('general', BOB, 'five', 5));
    S.applyRecord(state, msg('general', BOB, 'two', 2));
    S.applyRecord(state, msg('general', BOB, 'four', 4));
    assert.deepEqual(texts(state), ['You joined the room', 'Bob: two', 'Bob: three', 'Bob: four', 'Bob: five']);
  });

  test('equal sequences (older nodes always send 42) keep arrival order and are all shown', () => {
    const state = online(['general'], [chatUser(BOB, 'Bob')]);
    for (const t of ['a', 'b', 'c']) S.applyRecord(state, msg('general', BOB, t, 42));
    assert.deepEqual(texts(state).slice(1), ['Bob: a', 'Bob: b', 'Bob: c']);
  });

  test('records without a sequence keep arrival order', () => {
    const state = online(['general'], [chatUser(BOB, 'Bob')]);
    S.applyRecord(state, msg('general', BOB, 'x', 7));
    S.applyRecord(state, { ...msg('general', BOB, 'y', 0), sequence: undefined });
    S.applyRecord(state, { ...msg('general', BOB, 'z', 0), sequence: 'soon' });
    assert.deepEqual(texts(state).slice(1), ['Bob: x', 'Bob: y', 'Bob: z']);
  });

  test('an exact repeat of a record is shown once', () => {
    const state = online(['general'], [chatUser(BOB, 'Bob')]);
    S.applyRecord(state, msg('general', BOB, 'once', 2));
    const out = S.applyRecord(state, msg('general', BOB, 'once', 2));
    assert.equal(out.added, false);
    assert.deepEqual(texts(state).slice(1), ['Bob: once']);
  });

  test('insertOrdered returns the position it used', () => {
    const ev = (seq, segment = 1) => ({ seq, segment, kind: 'message', userId: 'u', text: String(seq), timestamp: TS });
    const list = [ev(1), ev(3)];
    assert.equal(S.insertOrdered(list, ev(2)), 1);
    assert.equal(S.insertOrdered(list, ev(0, 0)), 0);
    assert.deepEqual(list.map((e) => e.text), ['0', '1', '2', '3']);
  });

  test('the history is capped', () => {
    const state = online(['general'], [chatUser(BOB, 'Bob')]);
    for (let i = 0; i < S.MAX_EVENTS_PER_ROOM + 10; i += 1) S.applyRecord(state, msg('general', BOB, `m${i}`, i + 2));
    assert.equal(events(state).length, S.MAX_EVENTS_PER_ROOM);
    assert.equal(events(state).at(-1).text, `m${S.MAX_EVENTS_PER_ROOM + 9}`);
  });
});

describe('reconnecting', () => {
  test('a lost connection puts every room back to joining, to be joined again', () => {
    const state = online(['general', 'random']);
    S.connectionLost(state);
    assert.equal(state.phase, 'offline');
    assert.deepEqual(S.roomsToJoin(state), ['general', 'random']);
    // nothing for a room counts until its new chat_state arrives
    assert.equal(S.applyRecord(state, msg('general', ALICE, 'x', 99)).type, 'ignored');
  });

  test('after a server restart the lower sequences come after what was shown before', () => {
    const state = online(['general'], [chatUser(BOB, 'Bob')]);
    S.applyRecord(state, msg('general', BOB, 'before', 50));
    S.connectionLost(state);
    S.applyRecord(state, { record: 'authenticated', user_id: ALICE });
    const out = S.applyRecord(state, { record: 'chat_state', chat_name: 'general', users: [chatUser(BOB, 'Bob')] });
    assert.equal(out.rejoin, true);
    S.applyRecord(state, joined('general', ALICE, 'Alice', 2)); // our own return: no extra line
    S.applyRecord(state, msg('general', BOB, 'after', 3));
    assert.deepEqual(texts(state), [
      'You joined the room', 'Bob: before',
      'Reconnected. Messages sent while you were away are not shown.', 'Bob: after',
    ]);
    assert.deepEqual(S.memberList(state, 'general').map((m) => m.userName), ['Alice', 'Bob']);
  });
});

describe('protocol errors', () => {
  test('an error before authentication is fatal, after it is not', () => {
    const state = S.createState();
    S.login(state, 'Alice');
    const early = S.applyRecord(state, { record: 'protocol_error', code: 'CHAT-002', reason: 'An unsupported protocol version was requested: 9' });
    assert.equal(early.fatal, true);
    const later = online();
    const out = S.applyRecord(later, { record: 'protocol_error', code: 'CHAT_PROTOCOL-006', reason: 'Chat already joined' });
    assert.equal(out.fatal, false);
    assert.equal(later.error.text, 'You are already in that room.');
  });

  test('every v1 code has plain words', () => {
    const codes = ['CHAT-001', 'CHAT-002', 'CHAT-003', ...[1, 2, 3, 4, 5, 6, 7, 8].map((n) => `CHAT_PROTOCOL-00${n}`)];
    for (const code of codes) {
      const text = S.describeProtocolError(code, 'whatever');
      assert.doesNotMatch(text, /whatever|CHAT/, code);
      assert.match(text, /^[A-Z].*\.$/, code);
    }
  });

  test('an unknown code shows the server\'s reason', () => {
    assert.equal(S.describeProtocolError('FLACK-017', 'user_name must not be empty'),
      'The server refused a request: user_name must not be empty.');
    assert.equal(S.describeProtocolError('FLACK-1', ''), 'The server refused a request: no reason given.');
  });

  test('the Rust node\'s stricter codes have plain words too', () => {
    assert.equal(S.describeProtocolError('FLACK-002', 'Field chat_name must not be empty'), 'A name cannot be empty.');
    assert.equal(S.describeProtocolError('FLACK-004', 'Frame exceeds the limit of 65536 bytes'), 'That message is too long for the server.');
    assert.equal(S.describeProtocolError('FLACK-001', 'Field message must be a string'),
      'The server refused a request: Field message must be a string.');
  });

  test('close codes read as sentences', () => {
    assert.match(S.describeClose(4008, 'slow consumer: outbound queue full'), /fell behind/);
    assert.match(S.describeClose(1009, ''), /too large/);
    assert.match(S.describeClose(1008, 'slow consumer'), /policy.*\(slow consumer\)/);
    assert.match(S.describeClose(4321, 'x'), /code 4321/);
  });
});

describe('presentation helpers', () => {
  test('the hue comes from the user_id alone and spreads over the circle', () => {
    assert.equal(S.hueForUser(ALICE), S.hueForUser(ALICE));
    const hues = new Set();
    for (let i = 0; i < 200; i += 1) {
      const h = S.hueForUser(`user-${i}`);
      assert.ok(Number.isInteger(h) && h >= 0 && h < 360);
      hues.add(Math.floor(h / 30));
    }
    assert.equal(hues.size, 12, 'every 30° sector is used');
    assert.notEqual(S.hueForUser(ALICE), S.hueForUser(BOB));
  });

  test('timestamps in RFC 3339 parse; anything else does not', () => {
    assert.equal(S.parseTimestamp('2024-05-01T12:34:56Z').toISOString(), '2024-05-01T12:34:56.000Z');
    assert.equal(S.parseTimestamp('2024-05-01T12:34:56+02:00').toISOString(), '2024-05-01T10:34:56.000Z');
    for (const bad of ['', 'yesterday', '2024-05-01', 42, null, '2024-13-45T99:99:99Z']) {
      assert.equal(S.parseTimestamp(bad), null, String(bad));
    }
  });

  test('messages group when one person writes twice within five minutes', () => {
    const m = (userId, timestamp) => ({ kind: 'message', userId, timestamp });
    assert.equal(S.continuesGroup(m(BOB, TS), m(BOB, '2024-05-01T12:04:59Z')), true);
    assert.equal(S.continuesGroup(m(BOB, TS), m(BOB, '2024-05-01T12:05:00Z')), false);
    assert.equal(S.continuesGroup(m(BOB, TS), m(ALICE, TS)), false);
    assert.equal(S.continuesGroup({ kind: 'joined', userId: BOB, timestamp: TS }, m(BOB, TS)), false);
    assert.equal(S.continuesGroup(null, m(BOB, TS)), false);
  });

  test('initials take the first character, also outside ASCII', () => {
    assert.equal(S.initials('alice'), 'A');
    assert.equal(S.initials('  émile'), 'É');
    assert.equal(S.initials('😀 x'), '😀');
    assert.equal(S.initials(''), '?');
  });
});
