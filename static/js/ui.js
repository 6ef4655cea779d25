// DOM rendering for the flack web client.
//
// Every piece of text from the server or the person goes into the page
// through textContent or an attribute, never as markup: nothing in this file
// parses HTML. The UI owns the elements and forwards what the person does to
// the controller through the `actions` it is given.

import {
  continuesGroup,
  hueForUser,
  initials,
  memberList,
  parseTimestamp,
  systemText,
  totalUnread,
} from './state.js';

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function setHidden(node, hidden) {
  if (node.hidden !== hidden) node.hidden = hidden;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

const sameDay = (a, b) =>
  a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();

export function formatTime(date, now = new Date()) {
  const time = date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  if (sameDay(date, now)) return time;
  const day = date.toLocaleDateString([], { month: 'short', day: 'numeric' });
  return `${day}, ${time}`;
}

function timeElement(timestamp) {
  const date = parseTimestamp(timestamp);
  if (!date) return null;
  const t = el('time', 'time', formatTime(date));
  t.dateTime = timestamp;
  t.title = date.toLocaleString();
  return t;
}

function avatar(userId, name, extraClass = '') {
  const a = el('span', `avatar${extraClass ? ` ${extraClass}` : ''}`, initials(name));
  a.setAttribute('aria-hidden', 'true');
  a.style.setProperty('--hue', String(hueForUser(userId)));
  return a;
}

export class UI {
  constructor(actions) {
    this.actions = actions;
    this.e = {
      conn: $('conn'),
      connText: $('conn-text'),
      connCountdown: $('conn-countdown'),
      retryNow: $('retry-now'),
      me: $('me'),
      meAvatar: $('me-avatar'),
      meName: $('me-name'),
      logout: $('logout'),
      banner: $('banner'),
      bannerText: $('banner-text'),
      bannerDetail: $('banner-detail'),
      bannerDismiss: $('banner-dismiss'),
      loginView: $('login-view'),
      loginForm: $('login-form'),
      loginName: $('login-name'),
      loginError: $('login-error'),
      loginButton: $('login-button'),
      chatView: $('chat-view'),
      roomsToggle: $('rooms-toggle'),
      roomsToggleBadge: $('rooms-toggle-badge'),
      sidebar: $('sidebar'),
      joinForm: $('join-form'),
      joinName: $('join-name'),
      joinError: $('join-error'),
      roomList: $('room-list'),
      noRooms: $('no-rooms'),
      welcome: $('welcome'),
      room: $('room'),
      roomTitle: $('room-title'),
      roomState: $('room-state'),
      membersToggle: $('members-toggle'),
      leaveRoom: $('leave-room'),
      scroller: $('log-scroller'),
      jump: $('jump'),
      composer: $('composer'),
      composerInput: $('composer-input'),
      sendButton: $('send-button'),
      members: $('members'),
      memberList: $('member-list'),
      skipLink: $('skip-link'),
    };
    this.roomItems = new Map(); // room name -> { li, button, name, status, badge, leave }
    this.logs = new Map(); // room name -> { ol, items: Map(event id -> li), scrollTop, atBottom }
    this.shownRoom = null;
    this.wire();
  }

  wire() {
    const { e, actions } = this;
    e.loginForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      actions.login(e.loginName.value);
    });
    e.logout.addEventListener('click', () => actions.logout());
    e.joinForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      actions.join(e.joinName.value);
    });
    e.joinName.addEventListener('input', () => actions.clearJoinError());
    e.loginName.addEventListener('input', () => actions.clearLoginError());
    e.composer.addEventListener('submit', (ev) => {
      ev.preventDefault();
      actions.send(e.composerInput.value);
    });
    e.composerInput.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        e.composer.requestSubmit();
      }
    });
    e.composerInput.addEventListener('input', () => {
      this.autoGrow();
      actions.draft(e.composerInput.value);
    });
    e.leaveRoom.addEventListener('click', () => actions.leave(null));
    e.membersToggle.addEventListener('click', () => actions.toggleMembers());
    e.roomsToggle.addEventListener('click', () => actions.toggleSidebar());
    e.retryNow.addEventListener('click', () => actions.retryNow());
    e.bannerDismiss.addEventListener('click', () => actions.dismissBanner());
    e.roomList.addEventListener('click', (ev) => {
      const target = ev.target instanceof Element ? ev.target : null;
      const li = target && target.closest('li[data-room]');
      if (!li) return;
      const name = this.roomNameOf(li);
      if (target.closest('.room-leave')) actions.leave(name);
      else if (target.closest('.room-button')) actions.switchRoom(name);
    });
    document.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape') {
        if (actions.closeOverlays()) ev.preventDefault();
      } else if (ev.altKey && !ev.ctrlKey && !ev.metaKey && (ev.key === 'ArrowUp' || ev.key === 'ArrowDown')) {
        ev.preventDefault();
        actions.stepRoom(ev.key === 'ArrowUp' ? -1 : 1);
      }
    });
    e.scroller.addEventListener('scroll', () => {
      const log = this.shownRoom && this.logs.get(this.shownRoom);
      if (!log) return;
      log.atBottom = this.isAtBottom();
      if (log.atBottom && log.unseen) {
        log.unseen = false;
        setHidden(e.jump, true);
      }
    });
    e.jump.addEventListener('click', () => {
      e.scroller.scrollTop = e.scroller.scrollHeight;
      const log = this.shownRoom && this.logs.get(this.shownRoom);
      if (log) log.unseen = false;
      setHidden(e.jump, true);
      e.composerInput.focus();
    });
  }

  roomNameOf(li) {
    for (const [name, item] of this.roomItems) if (item.li === li) return name;
    return null;
  }

  isAtBottom() {
    const s = this.e.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 48;
  }

  autoGrow() {
    const t = this.e.composerInput;
    t.style.height = 'auto';
    t.style.height = `${Math.min(t.scrollHeight, 200)}px`;
  }

  // ---------------------------------------------------------------------
  render(state, view) {
    const { e } = this;
    const loggedIn = !!state.session;
    document.body.dataset.view = loggedIn ? 'chat' : 'login';
    setHidden(e.loginView, loggedIn);
    setHidden(e.chatView, !loggedIn);
    setHidden(e.me, !loggedIn);
    setHidden(e.roomsToggle, !loggedIn);
    setHidden(e.skipLink, !(loggedIn && state.activeRoom));

    this.renderConnection(state, view);
    this.renderBanner(view);

    if (!loggedIn) {
      setText(e.loginError, view.loginError || '');
      e.loginName.setAttribute('aria-invalid', view.loginError ? 'true' : 'false');
      e.loginButton.disabled = view.conn.status === 'connecting' && !!state.session;
      this.clearRooms();
      document.title = 'flack';
      return;
    }

    setText(e.meName, state.session.userName);
    e.meAvatar.textContent = initials(state.session.userName);
    e.meAvatar.style.setProperty('--hue', String(hueForUser(state.session.userId || state.session.userName)));
    e.me.title = state.session.userId ? `Your id: ${state.session.userId}` : '';
    e.me.dataset.userId = state.session.userId || '';

    setText(e.joinError, view.joinError || '');
    e.joinName.setAttribute('aria-invalid', view.joinError ? 'true' : 'false');

    e.chatView.classList.toggle('sidebar-open', !!view.sidebarOpen);
    e.chatView.classList.toggle('members-open', !!view.membersOpen);
    e.roomsToggle.setAttribute('aria-expanded', String(!!view.sidebarOpen));

    this.renderRoomList(state);
    this.renderActiveRoom(state, view);

    const unread = totalUnread(state);
    setHidden(e.roomsToggleBadge, unread === 0);
    setText(e.roomsToggleBadge, unread ? String(unread) : '');
    const roomPart = state.activeRoom ? ` — ${state.activeRoom}` : '';
    document.title = `${unread ? `(${unread}) ` : ''}flack${roomPart}`;
  }

  renderConnection(state, view) {
    const { e } = this;
    let mode;
    let text;
    let countdown = '';
    const c = view.conn;
    if (!state.session) {
      mode = c.status === 'connecting' || c.status === 'handshaking' ? 'connecting' : 'logged-out';
      text = mode === 'connecting' ? 'Connecting…' : '';
    } else if (c.status === 'online') {
      mode = 'online';
      text = 'Connected';
    } else if (c.status === 'waiting') {
      mode = 'offline';
      // The live region says it once; the countdown beside it is not read out every second.
      const secs = c.retryAt ? Math.max(0, Math.ceil((c.retryAt - view.now) / 1000)) : 0;
      text = 'Offline. Reconnecting';
      countdown = secs > 0 ? ` in ${secs} s` : '…';
    } else if (c.status === 'stopped' || c.status === 'idle') {
      mode = 'offline';
      text = 'Not connected';
    } else {
      mode = 'connecting';
      text = c.attempt > 0 ? 'Reconnecting…' : 'Connecting…';
    }
    e.conn.dataset.state = mode;
    setText(e.connText, text);
    setText(e.connCountdown, countdown);
    setHidden(e.retryNow, !(state.session && c.status === 'waiting'));
  }

  renderBanner(view) {
    const { e } = this;
    const b = view.banner;
    setHidden(e.banner, !b);
    if (!b) return;
    setText(e.bannerText, b.text);
    setText(e.bannerDetail, b.detail || '');
    e.banner.dataset.code = b.code || '';
  }

  clearRooms() {
    for (const item of this.roomItems.values()) item.li.remove();
    this.roomItems.clear();
    for (const log of this.logs.values()) log.ol.remove();
    this.logs.clear();
    this.shownRoom = null;
    this.e.memberList.replaceChildren();
  }

  renderRoomList(state) {
    const { e } = this;
    for (const [name, item] of this.roomItems) {
      if (!state.rooms.has(name)) {
        item.li.remove();
        this.roomItems.delete(name);
      }
    }
    let index = 0;
    for (const room of state.rooms.values()) {
      let item = this.roomItems.get(room.name);
      if (!item) {
        item = this.makeRoomItem(room.name);
        this.roomItems.set(room.name, item);
      }
      const active = room.name === state.activeRoom;
      item.li.classList.toggle('active', active);
      if (active) item.button.setAttribute('aria-current', 'true');
      else item.button.removeAttribute('aria-current');
      const joining = room.status !== 'joined';
      setText(item.status, joining ? (state.phase === 'online' ? 'joining…' : 'offline') : '');
      setHidden(item.status, !joining);
      setHidden(item.badge, room.unread === 0);
      setText(item.count, room.unread > 99 ? '99+' : String(room.unread));
      setText(item.srUnread, room.unread === 1 ? ' unread message' : ' unread messages');
      item.li.dataset.unread = String(room.unread);
      if (e.roomList.children[index] !== item.li) e.roomList.insertBefore(item.li, e.roomList.children[index] || null);
      index += 1;
    }
    setHidden(e.noRooms, state.rooms.size > 0);
  }

  makeRoomItem(name) {
    const li = el('li', 'room-item');
    li.dataset.room = name;
    const button = el('button', 'room-button');
    button.type = 'button';
    const hash = el('span', 'room-hash', '#');
    hash.setAttribute('aria-hidden', 'true');
    const label = el('span', 'room-name', name);
    const status = el('span', 'room-status');
    const badge = el('span', 'badge');
    const count = el('span', 'badge-count');
    const srUnread = el('span', 'visually-hidden');
    badge.append(count, srUnread);
    button.append(hash, label, status, badge);
    const leave = el('button', 'room-leave', '×');
    leave.type = 'button';
    leave.setAttribute('aria-label', `Leave room ${name}`);
    leave.title = 'Leave room';
    li.append(button, leave);
    return { li, button, label, status, badge, count, srUnread, leave };
  }

  renderActiveRoom(state, view) {
    const { e } = this;
    const room = state.activeRoom ? state.rooms.get(state.activeRoom) : null;
    setHidden(e.welcome, !!room);
    setHidden(e.room, !room);

    // Logs of rooms that are gone.
    for (const [name, log] of this.logs) {
      if (!state.rooms.has(name)) {
        log.ol.remove();
        this.logs.delete(name);
      }
    }

    if (this.shownRoom !== (room && room.name)) {
      const previous = this.shownRoom && this.logs.get(this.shownRoom);
      if (previous) {
        previous.scrollTop = e.scroller.scrollTop;
        previous.atBottom = this.isAtBottom();
        previous.ol.hidden = true;
      }
      this.shownRoom = room ? room.name : null;
      if (room) {
        e.composerInput.value = view.drafts.get(room.name) || '';
        this.autoGrow();
      }
    }
    if (!room) {
      e.memberList.replaceChildren();
      setHidden(e.members, true);
      e.membersToggle.hidden = true;
      return;
    }

    setText(e.roomTitle, room.name);
    const joined = room.status === 'joined';
    const online = state.phase === 'online';
    setText(e.roomState, joined ? '' : online ? 'Joining…' : 'Offline: waiting to rejoin');
    setHidden(e.roomState, joined);

    const log = this.logFor(room.name);
    const wasShown = !log.ol.hidden;
    const stick = wasShown ? this.isAtBottom() : log.atBottom;
    log.ol.hidden = false;
    const grew = this.renderLog(state, room, log);
    if (!wasShown) {
      if (log.atBottom) e.scroller.scrollTop = e.scroller.scrollHeight;
      else e.scroller.scrollTop = log.scrollTop;
    } else if (stick || grew.mine) {
      e.scroller.scrollTop = e.scroller.scrollHeight;
    } else if (grew.added > 0) {
      // Reading further up: say that there is more below instead of jumping.
      log.unseen = true;
    }
    log.atBottom = this.isAtBottom();
    if (log.atBottom) log.unseen = false;
    setHidden(e.jump, !log.unseen);

    const canSend = joined && online;
    e.sendButton.disabled = !canSend;
    e.composerInput.setAttribute('aria-disabled', String(!canSend));
    e.composerInput.placeholder = canSend ? `Message #${room.name}` : 'You can send once reconnected';

    // Members
    const members = memberList(state, room.name);
    e.membersToggle.hidden = false;
    setText(e.membersToggle, members.length === 1 ? '1 member' : `${members.length} members`);
    e.membersToggle.setAttribute('aria-expanded', String(!!view.membersOpen));
    setHidden(e.members, false);
    this.renderMembers(members);
  }

  logFor(name) {
    let log = this.logs.get(name);
    if (!log) {
      const ol = el('ol', 'log');
      ol.setAttribute('role', 'log');
      ol.setAttribute('aria-live', 'polite');
      ol.setAttribute('aria-relevant', 'additions');
      ol.setAttribute('aria-label', `Messages in ${name}`);
      ol.dataset.room = name;
      ol.hidden = true;
      this.e.scroller.append(ol);
      log = { ol, items: new Map(), scrollTop: 0, atBottom: true, unseen: false };
      this.logs.set(name, log);
    }
    return log;
  }

  // Brings the room's <ol> in line with room.events (which is ordered).
  renderLog(state, room, log) {
    const ids = new Set(room.events.map((ev) => ev.id));
    for (const [id, li] of log.items) {
      if (!ids.has(id)) {
        li.remove();
        log.items.delete(id);
      }
    }
    const result = { added: 0, mine: false };
    const { ol } = log;
    let prev = null;
    room.events.forEach((event, i) => {
      let li = log.items.get(event.id);
      if (!li) {
        li = this.makeEvent(event);
        log.items.set(event.id, li);
        result.added += 1;
        if (event.mine && event.kind === 'message') result.mine = true;
      }
      li.classList.toggle('continued', continuesGroup(prev, event));
      if (ol.children[i] !== li) ol.insertBefore(li, ol.children[i] || null);
      prev = event;
    });
    return result;
  }

  makeEvent(event) {
    if (event.kind === 'message') {
      const li = el('li', `event message${event.mine ? ' mine' : ''}`);
      li.dataset.userId = event.userId;
      if (event.seq !== null) li.dataset.seq = String(event.seq);
      li.append(avatar(event.userId, event.userName));
      const body = el('div', 'body');
      const meta = el('p', 'meta');
      const author = el('span', 'author', event.userName);
      author.style.setProperty('--hue', String(hueForUser(event.userId)));
      meta.append(author);
      if (event.mine) meta.append(el('span', 'you-tag', '(you)'));
      const time = timeElement(event.timestamp);
      if (time) meta.append(time);
      body.append(meta, el('p', 'text', event.text));
      li.append(body);
      return li;
    }
    const li = el('li', `event system ${event.kind}`);
    if (event.userId) li.dataset.userId = event.userId;
    if (event.seq !== null && event.kind !== 'system') li.dataset.seq = String(event.seq);
    li.append(el('span', 'system-text', systemText(event)));
    const time = timeElement(event.timestamp);
    if (time) li.append(time);
    return li;
  }

  renderMembers(members) {
    const list = this.e.memberList;
    const keep = new Map();
    for (const li of list.children) keep.set(li.dataset.userId, li);
    members.forEach((m, i) => {
      let li = keep.get(m.userId);
      const label = m.mine ? `${m.userName} (you)` : m.userName;
      if (!li || li.dataset.label !== label) {
        const fresh = el('li', 'member');
        fresh.dataset.userId = m.userId;
        fresh.dataset.label = label;
        const name = el('span', 'member-name', m.userName);
        name.style.setProperty('--hue', String(hueForUser(m.userId)));
        fresh.append(avatar(m.userId, m.userName, 'small'), name);
        if (m.mine) fresh.append(el('span', 'you-tag', '(you)'));
        if (li) li.replaceWith(fresh);
        li = fresh;
      }
      keep.delete(m.userId);
      if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
    });
    for (const li of keep.values()) li.remove();
  }

  // ---------------------------------------------------------------------
  focusComposer() {
    this.e.composerInput.focus();
  }

  focusJoin() {
    this.e.joinName.focus();
  }

  focusLogin() {
    this.e.loginName.focus();
  }

  focusRoomButton(name) {
    const item = name && this.roomItems.get(name);
    if (item) item.button.focus();
    else this.e.joinName.focus();
  }

  focusRoomsToggle() {
    this.e.roomsToggle.focus();
  }

  focusMembersToggle() {
    this.e.membersToggle.focus();
  }

  setLoginName(name) {
    this.e.loginName.value = name;
  }

  clearJoinInput() {
    this.e.joinName.value = '';
  }

  setComposer(text) {
    this.e.composerInput.value = text;
    this.autoGrow();
  }

  isNarrow() {
    return window.matchMedia('(max-width: 47.99rem)').matches;
  }

  isWide() {
    return window.matchMedia('(min-width: 68rem)').matches;
  }
}
