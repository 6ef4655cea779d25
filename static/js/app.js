// The controller: wires the state (state.js), the websocket (connection.js)
// and the page (ui.js) together, and keeps the session in localStorage so a
// reload comes back as the same user in the same rooms.

import * as S from './state.js';
import { Connection, chatServerUrl } from './connection.js';
import { UI } from './ui.js';

const storage = {
  get(key) {
    try {
      return window.localStorage.getItem(key);
    } catch {
      return null;
    }
  },
  set(key, value) {
    try {
      window.localStorage.setItem(key, value);
    } catch {
      // private mode or full storage: the session just will not survive a reload
    }
  },
  remove(key) {
    try {
      window.localStorage.removeItem(key);
    } catch {
      // see above
    }
  },
};

const state = S.createState(S.parseSaved(storage.get(S.STORAGE_KEY)));
const view = {
  conn: { status: 'idle', attempt: 0, retryAt: null },
  now: Date.now(),
  banner: null, // { text, detail, code }
  loginError: '',
  joinError: '',
  drafts: new Map(), // room name -> unsent text
  sidebarOpen: false,
  membersOpen: false,
};

let conn = null;
let lastSent = null; // the last request record, to tell what a protocol_error was about
let countdown = null;

const ui = new UI({
  login: (raw) => {
    const v = S.validateUserName(raw);
    if (!v.ok) {
      view.loginError = v.text;
      render();
      ui.focusLogin();
      return;
    }
    view.loginError = '';
    view.banner = null;
    S.login(state, v.name);
    save();
    startConnection();
    // On a phone the room list is a drawer: open it, since joining a room
    // is the next thing to do.
    if (ui.isNarrow() && state.rooms.size === 0) view.sidebarOpen = true;
    render();
    ui.focusJoin();
  },
  logout: () => {
    if (conn) conn.stop({ goodbye: true });
    conn = null;
    const name = state.session ? state.session.userName : '';
    S.logout(state);
    storage.remove(S.STORAGE_KEY);
    view.banner = null;
    view.drafts.clear();
    view.sidebarOpen = false;
    view.conn = { status: 'idle', attempt: 0, retryAt: null };
    render();
    ui.setLoginName(name);
    ui.focusLogin();
  },
  join: (raw) => {
    const v = S.validateRoomName(raw);
    if (!v.ok) {
      view.joinError = v.text;
      render();
      return;
    }
    view.joinError = '';
    const { created } = S.addRoom(state, v.name);
    if (created) send(S.joinChat(v.name));
    save();
    ui.clearJoinInput();
    if (ui.isNarrow()) view.sidebarOpen = false;
    render();
    ui.focusComposer();
  },
  leave: (name) => {
    const roomName = name || state.activeRoom;
    const room = roomName && state.rooms.get(roomName);
    if (!room) return;
    // A room still 'joining' while online has its join_chat on the wire: the
    // server will have us in it by the time it reads leave_chat.
    if (conn && conn.online) send(S.leaveChat(roomName));
    S.removeRoom(state, roomName);
    view.drafts.delete(roomName);
    save();
    // Keep the focus somewhere visible: on a phone the room list is a
    // closed drawer unless the person left from inside it.
    const fromDrawer = ui.isNarrow() && view.sidebarOpen;
    if (ui.isNarrow() && !state.activeRoom) view.sidebarOpen = true;
    render();
    if (ui.isNarrow() && !fromDrawer && state.activeRoom) ui.focusComposer();
    else ui.focusRoomButton(state.activeRoom); // the join field when no room is left
  },
  switchRoom: (name) => {
    S.switchRoom(state, name);
    if (ui.isNarrow()) view.sidebarOpen = false;
    save();
    render();
    if (ui.isNarrow()) ui.focusComposer();
  },
  stepRoom: (delta) => {
    const next = S.neighbourRoom(state, delta);
    if (!next) return;
    S.switchRoom(state, next);
    save();
    render();
    ui.focusRoomButton(next);
  },
  send: (text) => {
    const room = state.activeRoom && state.rooms.get(state.activeRoom);
    if (!room || text.trim() === '') return;
    if (room.status !== 'joined' || !conn || !conn.online) return;
    if (send(S.chatMessage(room.name, text))) {
      view.drafts.delete(room.name);
      ui.setComposer('');
    }
  },
  draft: (text) => {
    if (state.activeRoom) view.drafts.set(state.activeRoom, text);
  },
  toggleMembers: () => {
    view.membersOpen = !view.membersOpen;
    render();
  },
  toggleSidebar: () => {
    view.sidebarOpen = !view.sidebarOpen;
    render();
    if (view.sidebarOpen) ui.focusRoomButton(state.activeRoom);
  },
  closeOverlays: () => {
    if (!ui.isNarrow()) return false;
    if (view.sidebarOpen) {
      view.sidebarOpen = false;
      render();
      ui.focusRoomsToggle();
      return true;
    }
    if (view.membersOpen) {
      view.membersOpen = false;
      render();
      ui.focusMembersToggle();
      return true;
    }
    return false;
  },
  retryNow: () => {
    if (conn) conn.retryNow();
  },
  dismissBanner: () => {
    view.banner = null;
    render();
  },
  clearJoinError: () => {
    if (view.joinError) {
      view.joinError = '';
      render();
    }
  },
  clearLoginError: () => {
    if (view.loginError) {
      view.loginError = '';
      render();
    }
  },
});

function save() {
  const saved = S.persistable(state);
  if (saved) storage.set(S.STORAGE_KEY, JSON.stringify(saved));
  else storage.remove(S.STORAGE_KEY);
}

function send(rec) {
  if (!conn || !conn.send(rec)) return false;
  lastSent = rec;
  return true;
}

function render() {
  view.now = Date.now();
  ui.render(state, view);
}

function startConnection() {
  if (conn) conn.stop({ goodbye: false });
  lastSent = null;
  conn = new Connection({
    url: chatServerUrl(window.location),
    credentials: () => ({ userName: state.session.userName, userId: state.session.userId }),
    onRecord,
    onStatus,
    onLost,
    log: (...args) => console.warn(...args),
  });
  conn.start();
}

function onRecord(rec) {
  const out = S.applyRecord(state, rec);
  switch (out.type) {
    case 'authenticated':
      save();
      if (view.banner && view.banner.kind === 'connection') view.banner = null;
      for (const name of S.roomsToJoin(state)) send(S.joinChat(name));
      break;
    case 'protocol_error':
      onProtocolError(out);
      break;
    default:
      break;
  }
  render();
}

function onProtocolError(out) {
  const err = state.error;
  if (out.fatal) {
    // The server refused the handshake itself: trying again would go the
    // same way. Back to the login form, with the reason.
    if (conn) conn.stop({ goodbye: false });
    conn = null;
    const name = state.session ? state.session.userName : '';
    S.logout(state);
    // Keep the name for the form; drop a user_id the server may have refused.
    storage.remove(S.STORAGE_KEY);
    view.conn = { status: 'idle', attempt: 0, retryAt: null };
    view.loginError = `${err.text} (code ${err.code || 'none'}: ${err.reason || 'no reason given'})`;
    render();
    ui.setLoginName(name);
    ui.focusLogin();
    return;
  }
  // After authentication the error is about one request; the connection is
  // closed by the server and we come back without that request.
  let text = err.text;
  if (lastSent && lastSent.record === 'join_chat') {
    const room = state.rooms.get(lastSent.chat_name);
    if (room && room.status !== 'joined') {
      S.removeRoom(state, lastSent.chat_name);
      save();
      text = `Could not join “${lastSent.chat_name}”: ${err.text}`;
    }
  } else if (lastSent && lastSent.record === 'chat_message') {
    // Put the refused message back so it is not lost.
    const name = lastSent.chat_name;
    if (state.rooms.has(name) && !view.drafts.get(name)) {
      view.drafts.set(name, lastSent.message);
      if (state.activeRoom === name) ui.setComposer(lastSent.message);
    }
    text = `Your message was not sent: ${err.text}`;
  }
  view.banner = { kind: 'protocol', text, detail: `Code ${err.code || 'none'}: ${err.reason}`, code: err.code };
}

function onStatus(s) {
  view.conn = s;
  if (s.status === 'connecting' || s.status === 'handshaking') S.connecting(state);
  if (s.status === 'waiting') {
    if (!countdown) countdown = setInterval(render, 1000);
  } else if (countdown) {
    clearInterval(countdown);
    countdown = null;
  }
  render();
}

function onLost(info) {
  lastSent = null;
  S.connectionLost(state);
  if (!info.protocolError && !info.local && ![1000, 1001, 1005, 1006, 1012].includes(info.code)) {
    // The server had a reason worth showing (e.g. it closed a slow client).
    view.banner = {
      kind: 'connection',
      text: S.describeClose(info.code, info.reason),
      detail: 'Reconnecting automatically.',
      code: String(info.code),
    };
  }
  render();
}

// Logging out in another tab of this browser logs this one out too: they
// share the identity in localStorage.
window.addEventListener('storage', (ev) => {
  if (ev.key === S.STORAGE_KEY && ev.newValue === null && state.session) {
    if (conn) conn.stop({ goodbye: true });
    conn = null;
    const name = state.session.userName;
    S.logout(state);
    view.banner = null;
    view.drafts.clear();
    view.conn = { status: 'idle', attempt: 0, retryAt: null };
    render();
    ui.setLoginName(name);
  }
});

// The browser knows when the network comes back: no need to wait out the backoff.
window.addEventListener('online', () => {
  if (conn) conn.retryNow();
});

// Say goodbye when the page goes away, so the others see us leave at once;
// a page restored from the back/forward cache connects again.
window.addEventListener('pagehide', () => {
  if (conn) conn.stop({ goodbye: true });
  conn = null;
});
window.addEventListener('pageshow', (ev) => {
  if (ev.persisted && state.session && !conn) {
    S.connectionLost(state);
    startConnection();
    render();
  }
});

view.membersOpen = ui.isWide();
if (state.session) {
  ui.setLoginName(state.session.userName);
  startConnection();
}
render();
if (!state.session) ui.focusLogin();
