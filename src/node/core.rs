//! The node's shared state and the signal semantics over it: sending, exit
//! propagation, monitors and links, and what happens when a connection is
//! won or lost. The I/O lives in [`super::dist`]; this module decides.
//!
//! Locking rule: the peer map, the monitor table and the link table each sit
//! behind their own mutex, never held while another is taken or while an
//! [`Inbox`] is called. The monitors of a lost peer are removed in batches
//! of [`CLEANUP_BATCH`] by a task that yields between them, never all under
//! one lock. Exit propagation runs as a work list, not recursion,
//! so a chain of linked processes cannot overflow the stack.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use eetf::Term;
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::dist::connection::Outgoing;
use super::dist::log_limit::LogLimiter;
use super::epmd::client::Registration;
use super::links::LinkTable;
use super::monitors::{Monitor, MonitorTable, Ref, Watched};
use super::pid::Pid;
use super::process::{Delivery, ExitAction, ExitKind, ProcessTable};
use super::term::{atom, tuple};
use super::{NodeConfig, NodeEvent};

/// Monitors of a lost peer removed (and their `'DOWN'`s sent) per step of
/// the cleanup; the cleanup yields to the runtime between steps, so a peer
/// with a million monitors does not hold a runtime thread or the monitor
/// table for the whole of it.
pub(crate) const CLEANUP_BATCH: usize = 1024;

/// Where a peer connection stands.
pub(crate) enum SlotState {
    /// Our own connection attempt is running.
    Connecting(CancellationToken),
    /// A peer's connection attempt is in its handshake; cancelling the
    /// token stops it (another attempt for the same name took over).
    Accepting(CancellationToken),
    /// Connected.
    Up {
        /// Negotiated flags.
        flags: u64,
        /// Whether the peer is visible.
        published: bool,
        /// Closes the connection.
        cancel: CancellationToken,
    },
}

/// One peer: the bounded queue toward it (filled from the first send, drained
/// once a handshake succeeds) and its state.
pub(crate) struct PeerSlot {
    pub id: u64,
    pub tx: mpsc::Sender<Outgoing>,
    pub rx: Option<mpsc::Receiver<Outgoing>>,
    pub state: SlotState,
    /// An `alive` exchange for a new connection of this (up) peer is
    /// running: net_kernel's `up_pending`.
    pub replacing: bool,
}

/// Shared node state.
pub(crate) struct Core {
    pub name: Arc<str>,
    pub creation: u32,
    pub cookie: String,
    pub config: NodeConfig,
    pub table: ProcessTable,
    pub peers: Mutex<HashMap<Arc<str>, PeerSlot>>,
    pub monitors: Mutex<MonitorTable>,
    pub links: Mutex<LinkTable>,
    pub aliases: Mutex<HashMap<Ref, Pid>>,
    pub events: broadcast::Sender<NodeEvent>,
    refs: AtomicU64,
    slots: AtomicU64,
    pub shutdown: CancellationToken,
    pub registration: Mutex<Option<Registration>>,
    /// How many failed handshakes each source address may log.
    pub handshake_log: Mutex<LogLimiter>,
    pub listen_port: Mutex<u16>,
    /// The pid that stands for "the node" as sender of signals no process
    /// sends (REG_SEND needs a sender).
    pub system: Mutex<Option<Pid>>,
    /// The supervised services and how they stand.
    pub services: super::supervisor::Services,
    /// The TLS setup when the distribution runs over TLS
    /// (`-proto_dist inet_tls`), loaded from `config.tls` at start.
    pub tls: Option<crate::node::dist::tls::DistTls>,
    /// OTP's `global` on this node, once started.
    pub global: std::sync::OnceLock<Arc<super::services::global::Shared>>,
}

impl Core {
    pub fn new(name: Arc<str>, creation: u32, cookie: String, config: NodeConfig) -> Self {
        let (events, _) = broadcast::channel(256);
        Self {
            table: ProcessTable::new(name.clone(), creation),
            name,
            creation,
            cookie,
            config,
            peers: Mutex::new(HashMap::new()),
            monitors: Mutex::new(MonitorTable::new()),
            links: Mutex::new(LinkTable::new()),
            aliases: Mutex::new(HashMap::new()),
            events,
            refs: AtomicU64::new(1),
            slots: AtomicU64::new(1),
            shutdown: CancellationToken::new(),
            registration: Mutex::new(None),
            handshake_log: Mutex::new(LogLimiter::new()),
            listen_port: Mutex::new(0),
            system: Mutex::new(None),
            services: Default::default(),
            tls: None,
            global: std::sync::OnceLock::new(),
        }
    }

    pub fn distributed(&self) -> bool {
        self.config.name.is_some()
    }

    pub fn is_local_node(&self, node: &str) -> bool {
        node == &*self.name
    }

    /// A reference unique to this node incarnation.
    pub fn make_ref(&self) -> Ref {
        let n = self.refs.fetch_add(1, Ordering::Relaxed);
        eetf::Reference {
            node: eetf::Atom::from(&*self.name),
            id: vec![(n & 0x3_ffff) as u32, (n >> 18) as u32, (n >> 50) as u32],
            creation: self.creation,
        }
    }

    pub fn next_slot_id(&self) -> u64 {
        self.slots.fetch_add(1, Ordering::Relaxed)
    }

    pub fn system_pid(&self) -> Pid {
        self.system
            .lock()
            .clone()
            .unwrap_or_else(|| Pid::new(self.name.clone(), 0, 0, self.creation))
    }

    // ----- sending -------------------------------------------------------

    /// The queue toward `node`, creating the slot and starting a connection
    /// attempt when there is none (erlang:send's auto-connect).
    fn peer_tx(self: &Arc<Self>, node: &Arc<str>) -> Option<(u64, mpsc::Sender<Outgoing>)> {
        if !self.distributed()
            || !node.contains('@')
            || self.shutdown.is_cancelled()
            || self.is_local_node(node)
        {
            return None;
        }
        let mut peers = self.peers.lock();
        let slot = peers.entry(node.clone()).or_insert_with(|| {
            let cancel = self.shutdown.child_token();
            let (tx, rx) = mpsc::channel(self.config.peer_queue);
            let id = self.next_slot_id();
            let core = self.clone();
            let target = node.clone();
            let token = cancel.clone();
            tokio::spawn(
                async move { super::dist::connection::connect(core, target, id, token).await },
            );
            PeerSlot {
                id,
                tx,
                rx: Some(rx),
                state: SlotState::Connecting(cancel),
                replacing: false,
            }
        });
        Some((slot.id, slot.tx.clone()))
    }

    /// Starts a connection to `node` if there is none (net_kernel:connect_node
    /// without the wait). Returns false when `node` cannot be a peer.
    pub fn connect(self: &Arc<Self>, node: &Arc<str>) -> bool {
        self.peer_tx(node).is_some()
    }

    /// Queues `out` toward `node`, connecting first if needed. A peer whose
    /// queue is full is not reading: it is disconnected (every monitor and
    /// link across it fires with `noconnection`, which keeps Erlang's
    /// guarantee that signals between two processes arrive in order or not
    /// at all) and `Full` is returned.
    pub fn route(self: &Arc<Self>, node: &Arc<str>, out: Outgoing) -> Delivery {
        let Some((id, tx)) = self.peer_tx(node) else {
            return Delivery::Gone;
        };
        match tx.try_send(out) {
            Ok(()) => Delivery::Accepted,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    "outgoing queue to {node} is full: the peer is not reading; disconnecting"
                );
                self.connection_lost(node, id, "queue_full");
                Delivery::Full
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Gone,
        }
    }

    /// Like [`Core::route`] but waits for room in the peer's queue. It
    /// waits while less than a quarter of the queue is free, so that bulk
    /// traffic that can wait (chat fan-out) never fills the queue that the
    /// messages which cannot wait (gproc_dist's broadcasts and replies,
    /// sent with [`Core::route`]) also use.
    pub async fn route_wait(self: &Arc<Self>, node: &Arc<str>, out: Outgoing) -> Delivery {
        let Some((_, tx)) = self.peer_tx(node) else {
            return Delivery::Gone;
        };
        let headroom = (self.config.peer_queue / 4).max(1);
        let mut out = out;
        loop {
            // Polled rather than queued on the channel's semaphore: a waiter
            // queued there would take every freed slot for itself and leave
            // none for the messages that cannot wait.
            if tx.capacity() > headroom {
                match tx.try_send(out) {
                    Ok(()) => return Delivery::Accepted,
                    Err(mpsc::error::TrySendError::Full(back)) => out = back,
                    Err(mpsc::error::TrySendError::Closed(_)) => return Delivery::Gone,
                }
            }
            if tx.is_closed() {
                return Delivery::Gone;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Waits until the queue toward `node` keeps an eighth of its places
    /// free (or there is no such peer), for a process about to answer a
    /// peer's request: answers then never take the places kept for the
    /// messages that cannot wait, and never overflow the queue of a peer
    /// that reads. Meanwhile the process's own bounded mailbox fills, and
    /// further requests are shed there.
    pub async fn room_for_answer(&self, node: &str) {
        let keep_free = (self.config.peer_queue / 8).max(4);
        loop {
            let tx = match self.peers.lock().get(node) {
                Some(slot) => slot.tx.clone(),
                None => return,
            };
            if tx.capacity() > keep_free || tx.is_closed() {
                return;
            }
            drop(tx);
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Sends `msg` to `to`, local or remote.
    pub fn send(self: &Arc<Self>, from: Option<&Pid>, to: &Pid, msg: Term) -> Delivery {
        if self.is_local_node(&to.node) {
            return self.table.send(to, from, msg);
        }
        self.route(
            &to.node.clone(),
            Outgoing::Send {
                from: from.cloned(),
                to: to.clone(),
                msg,
            },
        )
    }

    /// Sends `msg` to the process registered as `name` on `node`.
    pub fn send_named(
        self: &Arc<Self>,
        from: Option<&Pid>,
        node: &Arc<str>,
        name: &str,
        msg: Term,
    ) -> Delivery {
        if self.is_local_node(node) {
            return self.table.send_named(name, from, msg);
        }
        let from = from.cloned().unwrap_or_else(|| self.system_pid());
        self.route(
            node,
            Outgoing::RegSend {
                from,
                name: name.to_owned(),
                msg,
            },
        )
    }

    /// Replies to a `gen:call` From (`{Pid, Tag}`), through the caller's
    /// alias when the tag is `[alias|Ref]` and the peer knows aliases.
    pub fn reply(self: &Arc<Self>, me: &Pid, from: &Term, reply: Term) {
        let Some([to, tag]) =
            super::term::as_tuple(from).and_then(|t| <&[Term; 2]>::try_from(t).ok())
        else {
            return;
        };
        let Term::Pid(to) = to else {
            return;
        };
        let to = Pid::from(to);
        let msg = tuple(vec![tag.clone(), reply]);
        if let Term::ImproperList(l) = tag
            && l.elements.len() == 1
            && super::term::as_atom(&l.elements[0]) == Some("alias")
            && let Term::Reference(alias) = &*l.last
            && !self.is_local_node(&to.node)
        {
            self.route(
                &to.node.clone(),
                Outgoing::AliasSend {
                    from: me.clone(),
                    alias: (**alias).clone(),
                    fallback: to,
                    msg,
                },
            );
            return;
        }
        self.send(Some(me), &to, msg);
    }

    // ----- process exit ----------------------------------------------------

    /// Ends local process `pid` with `reason` and everything that follows:
    /// its monitors fire, its links propagate (possibly ending more local
    /// processes), its own monitors of others are dropped.
    pub fn exit_process(self: &Arc<Self>, pid: &Pid, reason: Term) {
        let mut work = vec![(pid.clone(), reason)];
        while let Some((pid, reason)) = work.pop() {
            let Some(inbox) = self.table.take(&pid) else {
                continue;
            };
            inbox.terminated(&reason);
            self.aliases.lock().retain(|_, p| p != &pid);
            let fired = self.monitors.lock().take_target(&pid);
            for m in fired {
                self.fire_down(&m, reason.clone());
            }
            let held = self.monitors.lock().take_watcher(&pid);
            for m in held {
                if m.local_target.is_none() {
                    self.route(
                        &m.watched.node().clone(),
                        Outgoing::Demonitor {
                            from: pid.clone(),
                            to: m.watched.clone(),
                            reference: m.reference.clone(),
                        },
                    );
                }
            }
            let partners = self.links.lock().take(&pid);
            for partner in partners {
                if self.is_local_node(&partner.node) {
                    if let Some(next) =
                        self.exit_signal_local(&partner, &pid, &reason, ExitKind::Link)
                    {
                        work.push((partner, next));
                    }
                } else {
                    self.route(
                        &partner.node.clone(),
                        Outgoing::Exit {
                            from: pid.clone(),
                            to: partner.clone(),
                            reason: reason.clone(),
                        },
                    );
                }
            }
        }
    }

    /// Hands an exit signal to a local process; returns the reason it ends
    /// with, if it ends. Signals to unknown pids vanish.
    fn exit_signal_local(
        &self,
        to: &Pid,
        from: &Pid,
        reason: &Term,
        kind: ExitKind,
    ) -> Option<Term> {
        let inbox = self.table.lookup(to)?;
        match inbox.exit_signal(from, reason, kind) {
            ExitAction::Ignore => None,
            ExitAction::Terminate(r) => Some(r),
        }
    }

    /// An exit signal to a local process from anywhere.
    pub fn signal_exit(self: &Arc<Self>, to: &Pid, from: &Pid, reason: &Term, kind: ExitKind) {
        if let Some(r) = self.exit_signal_local(to, from, reason, kind) {
            self.exit_process(to, r);
        }
    }

    /// Delivers the `'DOWN'` of monitor `m`: to a local watcher as a message,
    /// to a remote one as `MONITOR_P_EXIT`.
    fn fire_down(self: &Arc<Self>, m: &Monitor, reason: Term) {
        if self.is_local_node(&m.watcher.node) {
            let down = tuple(vec![
                atom("DOWN"),
                Term::from(m.reference.clone()),
                atom("process"),
                m.watched.to_term(),
                reason,
            ]);
            self.table.send(&m.watcher, None, down);
        } else {
            self.route(
                &m.watcher.node.clone(),
                Outgoing::MonitorExit {
                    watched: m.watched.clone(),
                    to: m.watcher.clone(),
                    reference: m.reference.clone(),
                    reason,
                },
            );
        }
    }

    // ----- monitors ---------------------------------------------------------

    /// `erlang:monitor(process, Watched)` by local `watcher`.
    pub fn monitor(self: &Arc<Self>, watcher: &Pid, watched: Watched) -> Ref {
        let reference = self.make_ref();
        let local_target = match &watched {
            Watched::Pid(p) if self.is_local_node(&p.node) => {
                Some(self.table.is_alive(p).then(|| p.clone()))
            }
            Watched::Name { name, node } if self.is_local_node(node) => {
                Some(self.table.whereis(name))
            }
            _ => None,
        };
        let m = Monitor {
            reference: reference.clone(),
            watcher: watcher.clone(),
            watched: watched.clone(),
            local_target: None,
        };
        match local_target {
            Some(None) => self.fire_down(&m, atom("noproc")),
            Some(Some(target)) => self.monitors.lock().add(
                &self.name,
                Monitor {
                    local_target: Some(target),
                    ..m
                },
            ),
            None => {
                if !self.distributed() {
                    self.fire_down(&m, atom("noconnection"));
                    return reference;
                }
                self.monitors.lock().add(&self.name, m);
                let node = watched.node().clone();
                let out = Outgoing::Monitor {
                    from: watcher.clone(),
                    to: watched,
                    reference: reference.clone(),
                };
                if self.route(&node, out) == Delivery::Gone
                    && let Some(m) = self.monitors.lock().remove(&reference)
                {
                    self.fire_down(&m, atom("noconnection"));
                }
            }
        }
        reference
    }

    /// `erlang:demonitor(Ref)`.
    pub fn demonitor(self: &Arc<Self>, reference: &Ref) {
        let m = self.monitors.lock().remove(reference);
        if let Some(m) = m
            && m.local_target.is_none()
            && !self.is_local_node(m.watched.node())
        {
            self.route(
                &m.watched.node().clone(),
                Outgoing::Demonitor {
                    from: m.watcher,
                    to: m.watched,
                    reference: m.reference,
                },
            );
        }
    }

    /// A remote process asks to monitor one of ours (`MONITOR_P`).
    pub fn remote_monitor(self: &Arc<Self>, watcher: Pid, target: &Term, reference: Ref) {
        let (watched, pid) = match target {
            Term::Pid(p) => {
                let p = Pid::from(p);
                let alive = self.table.is_alive(&p);
                (Watched::Pid(p.clone()), alive.then_some(p))
            }
            Term::Atom(a) => (
                Watched::Name {
                    name: a.name.clone(),
                    node: self.name.clone(),
                },
                self.table.whereis(&a.name),
            ),
            _ => return,
        };
        let m = Monitor {
            reference,
            watcher,
            watched,
            local_target: pid.clone(),
        };
        match pid {
            Some(_) => self.monitors.lock().add(&self.name, m),
            None => self.fire_down(&m, atom("noproc")),
        }
    }

    /// `MONITOR_P_EXIT` from a peer: the watched remote process ended.
    pub fn remote_down(self: &Arc<Self>, reference: &Ref, reason: Term) {
        let m = self.monitors.lock().remove(reference);
        if let Some(m) = m {
            self.fire_down(&m, reason);
        }
    }

    // ----- links ------------------------------------------------------------

    /// `link/1` from local `a` to `b`.
    pub fn link(self: &Arc<Self>, a: &Pid, b: &Pid) {
        if self.is_local_node(&b.node) {
            if self.table.is_alive(b) {
                self.links.lock().add(a, b);
            } else {
                self.signal_exit(a, b, &atom("noproc"), ExitKind::Link);
            }
            return;
        }
        self.links.lock().add(a, b);
        if self.route(
            &b.node.clone(),
            Outgoing::Link {
                from: a.clone(),
                to: b.clone(),
            },
        ) == Delivery::Gone
        {
            self.links.lock().remove(a, b);
            self.signal_exit(a, b, &atom("noconnection"), ExitKind::Link);
        }
    }

    /// `unlink/1` from local `a` to `b`.
    pub fn unlink(self: &Arc<Self>, a: &Pid, b: &Pid) {
        if self.is_local_node(&b.node) {
            self.links.lock().remove(a, b);
            return;
        }
        let id = self.links.lock().start_unlink(a, b);
        self.route(
            &b.node.clone(),
            Outgoing::Unlink {
                id,
                from: a.clone(),
                to: b.clone(),
            },
        );
    }

    // ----- connections ------------------------------------------------------

    /// A handshake for slot `id` succeeded: the slot is now up. Returns the
    /// queue to drain, or `None` when the slot is gone or taken.
    pub fn claim(
        self: &Arc<Self>,
        node: &Arc<str>,
        id: u64,
        flags: u64,
        cancel: CancellationToken,
    ) -> Option<mpsc::Receiver<Outgoing>> {
        let published = flags & super::dist::flags::PUBLISHED != 0;
        let rx = {
            let mut peers = self.peers.lock();
            let slot = peers.get_mut(node).filter(|s| s.id == id)?;
            let rx = slot.rx.take()?;
            slot.state = SlotState::Up {
                flags,
                published,
                cancel,
            };
            rx
        };
        tracing::info!(
            "connected to {node}{}",
            if published { "" } else { " (hidden)" }
        );
        let _ = self.events.send(NodeEvent::Up(node.clone()));
        Some(rx)
    }

    /// Connection (or attempt) `id` to `node` ended with `reason`: if it is
    /// still the current one, remove it and fire everything across it.
    pub fn connection_lost(self: &Arc<Self>, node: &Arc<str>, id: u64, reason: &str) {
        let was_up = {
            let mut peers = self.peers.lock();
            match peers.get(node) {
                Some(slot) if slot.id == id => {}
                _ => return,
            }
            let Some(slot) = peers.remove(node) else {
                return;
            };
            match slot.state {
                SlotState::Up { cancel, .. } => {
                    cancel.cancel();
                    true
                }
                SlotState::Connecting(cancel) | SlotState::Accepting(cancel) => {
                    cancel.cancel();
                    false
                }
            }
        };
        let refs = self.monitors.lock().detach_node(node);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if refs.len() > CLEANUP_BATCH => {
                let core = self.clone();
                runtime.spawn(async move {
                    let mut refs = refs.into_iter();
                    loop {
                        let batch = core
                            .monitors
                            .lock()
                            .remove_many(refs.by_ref().take(CLEANUP_BATCH));
                        if batch.is_empty() {
                            break;
                        }
                        core.monitors_lost(batch);
                        tokio::task::yield_now().await;
                    }
                });
            }
            _ => {
                let monitors = self.monitors.lock().remove_many(refs);
                self.monitors_lost(monitors);
            }
        }
        let links = self.links.lock().take_node(node);
        for (local, remote) in links {
            self.signal_exit(&local, &remote, &atom("noconnection"), ExitKind::Link);
        }
        if was_up {
            tracing::info!("lost connection to {node}: {reason}");
            let _ = self
                .events
                .send(NodeEvent::Down(node.clone(), reason.to_owned()));
        } else {
            tracing::debug!("connection attempt with {node} ended: {reason}");
        }
    }

    /// Monitors across a lost connection: local watchers get `noconnection`.
    fn monitors_lost(self: &Arc<Self>, monitors: Vec<Monitor>) {
        for m in monitors {
            if self.is_local_node(&m.watcher.node) {
                self.fire_down(&m, atom("noconnection"));
            }
        }
    }

    /// The peers with a live connection: `(name, visible)`.
    pub fn connected(&self) -> Vec<(Arc<str>, bool)> {
        let mut out: Vec<(Arc<str>, bool)> = self
            .peers
            .lock()
            .iter()
            .filter_map(|(n, s)| match s.state {
                SlotState::Up { published, .. } => Some((n.clone(), published)),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    /// The negotiated flags toward `node`, when connected.
    pub fn peer_flags(&self, node: &str) -> Option<u64> {
        match self.peers.lock().get(node)?.state {
            SlotState::Up { flags, .. } => Some(flags),
            _ => None,
        }
    }

    /// `erlang:disconnect_node/1`.
    pub fn disconnect(self: &Arc<Self>, node: &Arc<str>) -> bool {
        let id = match self.peers.lock().get(node) {
            Some(slot) => slot.id,
            None => return false,
        };
        self.connection_lost(node, id, "disconnect");
        true
    }
}
