// Pure state logic for the flack web client.
//
// Nothing in this module touches the DOM, the network, timers or storage, so
// node's test runner can import it as it is (tests/browser/unit/). The
// controller (app.js) owns one state object, feeds it server records and the
// person's actions through the functions below, and asks ui.js to draw it.
//
// The functions mutate the state they are given: a chat keeps thousands of
// events and copying them on every record would buy nothing here.

export const PROTOCOL_VERSION = '1.0';
export const MAX_EVENTS_PER_ROOM = 1000;
export const MAX_NAME_LENGTH = 64;
export const STORAGE_KEY = 'flack.session.v1';

// ---------------------------------------------------------------------------
// Records the client sends. `record` always comes first: the Erlang nodes
// match on it being the first field.

export function clientHello() {
  return { record: 'client_hello', protocol_version: PROTOCOL_VERSION };
}

export function authenticate(userName, userId) {
  const rec = { record: 'authenticate', user_name: userName };
  if (typeof userId === 'string' && userId !== '') rec.user_id = userId;
  return rec;
}

export function joinChat(chatName) {
  return { record: 'join_chat', chat_name: chatName };
}

export function leaveChat(chatName) {
  return { record: 'leave_chat', chat_name: chatName };
}

export function chatMessage(chatName, text) {
  return { record: 'chat_message', chat_name: chatName, mime_type: 'text/plain', message: text };
}

export const ping = () => ({ record: 'ping' });
export const clientGoodbye = () => ({ record: 'client_goodbye' });

// ---------------------------------------------------------------------------
// State

export function createState(saved = null) {
  const state = {
    session: null, // { userName, userId } once the person has logged in
    phase: 'logged-out', // 'logged-out' | 'connecting' | 'online' | 'offline'
    users: new Map(), // user_id -> user_name, across rooms, kept after people leave
    rooms: new Map(), // chat_name -> room, in the order they were joined
    activeRoom: null,
    error: null, // { code, reason, text, fatal } from the last protocol_error
    nextEventId: 1,
  };
  if (saved && typeof saved.userName === 'string' && saved.userName.trim() !== '') {
    state.session = {
      userName: saved.userName,
      userId: typeof saved.userId === 'string' && saved.userId !== '' ? saved.userId : null,
    };
    state.phase = 'connecting';
    const names = Array.isArray(saved.rooms) ? saved.rooms : [];
    for (const name of names) {
      if (typeof name === 'string' && name !== '' && !state.rooms.has(name)) {
        state.rooms.set(name, newRoom(name));
      }
    }
    if (typeof saved.activeRoom === 'string' && state.rooms.has(saved.activeRoom)) {
      state.activeRoom = saved.activeRoom;
    } else {
      state.activeRoom = state.rooms.size ? state.rooms.keys().next().value : null;
    }
  }
  return state;
}

function newRoom(name) {
  return {
    name,
    // 'joining': join_chat is (to be) sent and chat_state has not arrived yet;
    // 'joined': chat_state arrived on the current connection.
    status: 'joining',
    members: new Map(), // user_id -> number of presences (same id may be here twice)
    events: [],
    unread: 0,
    segment: 0, // bumped by each chat_state: sequences restart with a new server
    maxSeq: null, // highest sequence seen in the current segment
    everJoined: false,
  };
}

// What survives a reload, for localStorage.
export function persistable(state) {
  if (!state.session) return null;
  return {
    userName: state.session.userName,
    userId: state.session.userId,
    rooms: [...state.rooms.keys()],
    activeRoom: state.activeRoom,
  };
}

export function parseSaved(text) {
  if (typeof text !== 'string') return null;
  try {
    const v = JSON.parse(text);
    return v && typeof v === 'object' ? v : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------
// The person's actions

export function normalizeName(raw) {
  return typeof raw === 'string' ? raw.trim() : '';
}

export function validateUserName(raw) {
  const name = normalizeName(raw);
  if (name === '') return { ok: false, text: 'Please enter a name.' };
  if ([...name].length > MAX_NAME_LENGTH) {
    return { ok: false, text: `Names can be at most ${MAX_NAME_LENGTH} characters.` };
  }
  return { ok: true, name };
}

export function validateRoomName(raw) {
  const name = normalizeName(raw);
  if (name === '') return { ok: false, text: 'Please enter a room name.' };
  if ([...name].length > MAX_NAME_LENGTH) {
    return { ok: false, text: `Room names can be at most ${MAX_NAME_LENGTH} characters.` };
  }
  return { ok: true, name };
}

export function login(state, userName) {
  const previous = state.session;
  // Logging in again under the same name on this browser keeps the identity.
  const userId = previous && previous.userName === userName ? previous.userId : null;
  state.session = { userName, userId };
  state.phase = 'connecting';
  state.error = null;
  return state;
}

export function logout(state) {
  state.session = null;
  state.phase = 'logged-out';
  state.users.clear();
  state.rooms.clear();
  state.activeRoom = null;
  return state;
}

// Returns { room, created }. A room already in the list is only switched to.
export function addRoom(state, name) {
  let room = state.rooms.get(name);
  const created = !room;
  if (!room) {
    room = newRoom(name);
    state.rooms.set(name, room);
  }
  switchRoom(state, name);
  return { room, created };
}

export function removeRoom(state, name) {
  if (!state.rooms.has(name)) return false;
  const names = [...state.rooms.keys()];
  const index = names.indexOf(name);
  state.rooms.delete(name);
  if (state.activeRoom === name) {
    const rest = names.filter((n) => n !== name);
    state.activeRoom = rest.length ? rest[Math.min(index, rest.length - 1)] : null;
    if (state.activeRoom) state.rooms.get(state.activeRoom).unread = 0;
  }
  return true;
}

export function switchRoom(state, name) {
  const room = state.rooms.get(name);
  if (!room) return false;
  state.activeRoom = name;
  room.unread = 0;
  return true;
}

// The room `delta` steps away from the active one in the list, wrapping.
export function neighbourRoom(state, delta) {
  const names = [...state.rooms.keys()];
  if (!names.length) return null;
  const i = names.indexOf(state.activeRoom);
  if (i < 0) return names[0];
  return names[(i + delta + names.length * Math.abs(delta)) % names.length];
}

export function totalUnread(state) {
  let n = 0;
  for (const room of state.rooms.values()) n += room.unread;
  return n;
}

// ---------------------------------------------------------------------------
// Connection life cycle, as seen by the state

export function connectionLost(state) {
  if (!state.session) return state;
  state.phase = 'offline';
  for (const room of state.rooms.values()) {
    room.status = 'joining';
  }
  return state;
}

export function connecting(state) {
  if (state.session) state.phase = 'connecting';
  return state;
}

// Rooms to send join_chat for after (re-)authenticating.
export function roomsToJoin(state) {
  return [...state.rooms.values()].filter((r) => r.status === 'joining').map((r) => r.name);
}

// ---------------------------------------------------------------------------
// Server records

const isStr = (v) => typeof v === 'string';
const isSeq = (v) => typeof v === 'number' && Number.isFinite(v);

// Applies one record from the server. Returns a small description of what it
// meant, for the controller: { type, room?, ... }. Unknown or malformed records
// come back as { type: 'ignored' } and change nothing.
export function applyRecord(state, rec) {
  if (!rec || typeof rec !== 'object' || !isStr(rec.record)) return { type: 'ignored' };
  switch (rec.record) {
    case 'server_hello':
      return { type: 'server_hello' };
    case 'authenticated':
      return onAuthenticated(state, rec);
    case 'chat_state':
      return onChatState(state, rec);
    case 'joined':
      return onJoined(state, rec);
    case 'left':
      return onLeft(state, rec);
    case 'chat_message':
      return onChatMessage(state, rec);
    case 'protocol_error':
      return onProtocolError(state, rec);
    case 'ping_reply':
      return { type: 'ping_reply' };
    case 'server_goodbye':
      return { type: 'server_goodbye' };
    default:
      return { type: 'ignored' };
  }
}

function onAuthenticated(state, rec) {
  if (!state.session || !isStr(rec.user_id) || rec.user_id === '') return { type: 'ignored' };
  state.session.userId = rec.user_id;
  state.phase = 'online';
  state.error = null;
  state.users.set(rec.user_id, state.session.userName);
  return { type: 'authenticated', userId: rec.user_id };
}

function onChatState(state, rec) {
  const room = isStr(rec.chat_name) ? state.rooms.get(rec.chat_name) : undefined;
  if (!room || !Array.isArray(rec.users)) return { type: 'ignored' };
  const rejoin = room.everJoined;
  room.status = 'joined';
  room.everJoined = true;
  room.segment += 1;
  room.maxSeq = null;
  room.members = new Map();
  for (const u of rec.users) {
    if (!u || !isStr(u.user_id) || u.user_id === '') continue;
    if (isStr(u.user_name)) state.users.set(u.user_id, u.user_name);
    room.members.set(u.user_id, (room.members.get(u.user_id) || 0) + 1);
  }
  if (rejoin) {
    addLocalEvent(state, room, {
      kind: 'system',
      text: 'Reconnected. Messages sent while you were away are not shown.',
    });
  }
  return { type: 'chat_state', room: room.name, rejoin };
}

// Only records for a room whose chat_state has arrived on this connection
// count: anything earlier belongs to a previous membership.
function joinedRoom(state, rec) {
  if (!isStr(rec.chat_name)) return null;
  const room = state.rooms.get(rec.chat_name);
  return room && room.status === 'joined' ? room : null;
}

function onJoined(state, rec) {
  const room = joinedRoom(state, rec);
  if (!room || !isStr(rec.user_id) || rec.user_id === '') return { type: 'ignored' };
  const name = isStr(rec.user_name) && rec.user_name !== '' ? rec.user_name : null;
  if (name) state.users.set(rec.user_id, name);
  const before = room.members.get(rec.user_id) || 0;
  room.members.set(rec.user_id, before + 1);
  const mine = isMe(state, rec.user_id);
  // A second presence of someone already here (another tab, or our own
  // connection the server has not yet noticed is gone) is not news, and
  // neither is our own return after a reconnect: chat_state said so already.
  if (before === 0 && !(mine && room.segment > 1)) {
    addServerEvent(state, room, {
      kind: 'joined',
      userId: rec.user_id,
      userName: name || displayName(state, rec.user_id),
      mine,
      timestamp: isStr(rec.timestamp) ? rec.timestamp : null,
      seq: isSeq(rec.sequence) ? rec.sequence : null,
    });
  }
  return { type: 'joined', room: room.name, userId: rec.user_id, mine };
}

function onLeft(state, rec) {
  const room = joinedRoom(state, rec);
  if (!room || !isStr(rec.user_id)) return { type: 'ignored' };
  const before = room.members.get(rec.user_id) || 0;
  if (before <= 1) room.members.delete(rec.user_id);
  else room.members.set(rec.user_id, before - 1);
  const mine = isMe(state, rec.user_id);
  if (before === 1) {
    addServerEvent(state, room, {
      kind: 'left',
      userId: rec.user_id,
      userName: displayName(state, rec.user_id),
      mine,
      timestamp: isStr(rec.timestamp) ? rec.timestamp : null,
      seq: isSeq(rec.sequence) ? rec.sequence : null,
    });
  }
  return { type: 'left', room: room.name, userId: rec.user_id, mine };
}

function onChatMessage(state, rec) {
  const room = joinedRoom(state, rec);
  if (!room || !isStr(rec.user_id) || !isStr(rec.message)) return { type: 'ignored' };
  const mine = isMe(state, rec.user_id);
  const added = addServerEvent(state, room, {
    kind: 'message',
    userId: rec.user_id,
    userName: displayName(state, rec.user_id),
    mine,
    text: rec.message,
    timestamp: isStr(rec.timestamp) ? rec.timestamp : null,
    seq: isSeq(rec.sequence) ? rec.sequence : null,
  });
  if (added && !mine && state.activeRoom !== room.name) room.unread += 1;
  return { type: 'chat_message', room: room.name, userId: rec.user_id, mine, added };
}

function onProtocolError(state, rec) {
  const code = isStr(rec.code) ? rec.code : '';
  const reason = isStr(rec.reason) ? rec.reason : '';
  // Before `authenticated` nothing the person could retry would go better:
  // the handshake itself was refused.
  const fatal = state.phase !== 'online';
  state.error = { code, reason, text: describeProtocolError(code, reason), fatal };
  return { type: 'protocol_error', code, reason, fatal };
}

export function isMe(state, userId) {
  return !!(state.session && state.session.userId && state.session.userId === userId);
}

export function displayName(state, userId) {
  const name = state.users.get(userId);
  if (name) return name;
  return `Unknown user ${String(userId).slice(0, 6)}`;
}

// Members of a room, sorted for display: you first, then by name.
export function memberList(state, roomName) {
  const room = state.rooms.get(roomName);
  if (!room) return [];
  const list = [...room.members.keys()].map((userId) => ({
    userId,
    userName: displayName(state, userId),
    mine: isMe(state, userId),
  }));
  list.sort((a, b) => {
    if (a.mine !== b.mine) return a.mine ? -1 : 1;
    return a.userName.localeCompare(b.userName) || a.userId.localeCompare(b.userId);
  });
  return list;
}

// ---------------------------------------------------------------------------
// Ordering
//
// Events are ordered by (segment, sequence). A segment is one membership on
// one connection: every chat_state starts a new one, because a restarted
// server may start counting again. Within a segment a late record is put
// where its sequence says; records without a usable sequence (and ties, such
// as the constant 42 of older Erlang nodes) keep their arrival order.

function comesAfter(existing, incoming) {
  if (existing.segment !== incoming.segment) return existing.segment > incoming.segment;
  if (existing.seq === null || incoming.seq === null) return false;
  return existing.seq > incoming.seq;
}

function sameRecord(a, b) {
  return (
    a.segment === b.segment &&
    a.seq !== null &&
    a.seq === b.seq &&
    a.kind === b.kind &&
    a.userId === b.userId &&
    a.text === b.text &&
    a.timestamp === b.timestamp
  );
}

export function insertOrdered(events, event) {
  let i = events.length;
  while (i > 0 && comesAfter(events[i - 1], event)) i -= 1;
  // An exact repeat of a record already shown is dropped.
  for (let j = i - 1; j >= 0 && events[j].segment === event.segment; j -= 1) {
    if (event.seq !== null && events[j].seq !== null && events[j].seq < event.seq) break;
    if (sameRecord(events[j], event)) return -1;
  }
  events.splice(i, 0, event);
  return i;
}

function addServerEvent(state, room, fields) {
  const event = { id: state.nextEventId++, segment: room.segment, text: '', ...fields };
  const at = insertOrdered(room.events, event);
  if (at < 0) return false;
  if (event.seq !== null && (room.maxSeq === null || event.seq > room.maxSeq)) room.maxSeq = event.seq;
  trim(room);
  return true;
}

// System lines made by the client itself sit after everything seen so far.
export function addLocalEvent(state, room, fields) {
  const event = {
    id: state.nextEventId++,
    segment: room.segment,
    seq: room.maxSeq,
    userId: null,
    userName: null,
    mine: false,
    timestamp: null,
    text: '',
    ...fields,
  };
  room.events.push(event);
  trim(room);
  return event;
}

function trim(room) {
  if (room.events.length > MAX_EVENTS_PER_ROOM) {
    room.events.splice(0, room.events.length - MAX_EVENTS_PER_ROOM);
  }
}

// ---------------------------------------------------------------------------
// Presentation helpers that need no DOM

// A stable hue (0-359) from a user_id: FNV-1a over its UTF-16 code units.
// The stylesheet turns it into a colour with fixed perceived lightness
// (oklch), so every hue reads equally well on the light and the dark theme.
export function hueForUser(userId) {
  let h = 0x811c9dc5;
  const s = String(userId);
  for (let i = 0; i < s.length; i += 1) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  // Fold the high bits in: FNV's low bits alone vary poorly for short ids.
  h ^= h >>> 16;
  return (h >>> 0) % 360;
}

export function initials(name) {
  const first = [...normalizeName(name)][0];
  return first ? first.toUpperCase() : '?';
}

// Timestamps are RFC 3339; ours are YYYY-MM-DDTHH:MM:SSZ. Returns a Date or null.
export function parseTimestamp(ts) {
  if (!isStr(ts)) return null;
  if (!/^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/.test(ts)) return null;
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? null : d;
}

// Two events belong to one visual group when the same person wrote them
// within five minutes of each other with nothing else in between.
export function continuesGroup(prev, event) {
  if (!prev || prev.kind !== 'message' || event.kind !== 'message') return false;
  if (prev.userId !== event.userId) return false;
  const a = parseTimestamp(prev.timestamp);
  const b = parseTimestamp(event.timestamp);
  if (!a || !b) return false;
  const dt = b.getTime() - a.getTime();
  return dt >= 0 && dt < 5 * 60 * 1000;
}

export function systemText(event) {
  if (event.kind === 'joined') return event.mine ? 'You joined the room' : `${event.userName} joined the room`;
  if (event.kind === 'left') return event.mine ? 'You left the room' : `${event.userName} left the room`;
  return event.text;
}

// ---------------------------------------------------------------------------
// Errors in plain words

const PROTOCOL_ERRORS = {
  'CHAT-001': 'The server expected this app to introduce itself first. Reloading the page usually fixes this.',
  'CHAT-002': 'The server does not speak this version of the chat protocol. Reloading the page may bring a version it understands.',
  'CHAT-003': 'The server received a message it did not expect at that moment.',
  'CHAT_PROTOCOL-001': 'The server did not understand a message from this app.',
  'CHAT_PROTOCOL-002': 'The server expected you to log in first.',
  'CHAT_PROTOCOL-003': 'You were already logged in on this connection.',
  'CHAT_PROTOCOL-004': 'A name is needed to log in.',
  'CHAT_PROTOCOL-005': 'A room needs a name.',
  'CHAT_PROTOCOL-006': 'You are already in that room.',
  'CHAT_PROTOCOL-007': 'You can only send messages to rooms you have joined.',
  'CHAT_PROTOCOL-008': 'You can only leave rooms you have joined.',
  // Stricter checks of the Rust nodes; their reason names the field.
  'FLACK-002': 'A name cannot be empty.',
  'FLACK-003': 'The server only accepts plain-text messages.',
  'FLACK-004': 'That message is too long for the server.',
};

export function describeProtocolError(code, reason) {
  const known = PROTOCOL_ERRORS[code];
  if (known) return known;
  const why = isStr(reason) && reason.trim() !== '' ? reason.trim() : 'no reason given';
  return `The server refused a request: ${why}${/[.!?]$/.test(why) ? '' : '.'}`;
}

// Close codes the server (or the browser) may give when a connection ends.
export function describeClose(code, reason) {
  const why = isStr(reason) && reason.trim() !== '' ? ` (${reason.trim()})` : '';
  switch (code) {
    case 1000:
    case 1005:
      return `The server closed the connection${why}.`;
    case 1001:
      return `The server is going away, probably restarting${why}.`;
    case 1006:
      return 'The connection to the server was lost.';
    case 1008:
      return `The server closed the connection because of a policy violation${why}.`;
    case 1009:
      return `That message was too large for the server${why}.`;
    case 1011:
      return `The server hit an internal error${why}.`;
    case 1012:
      return `The server is restarting${why}.`;
    case 1013:
      return `The server is busy; it asked to try again later${why}.`;
    case 4008:
      return 'This browser fell behind the conversation, so the server disconnected it.';
    default:
      return `The server closed the connection (code ${code})${why}.`;
  }
}
