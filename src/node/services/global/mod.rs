//! OTP's `global` on this node: `global_name_server`, its locker and its
//! resolvers, speaking global's protocol version 8 (OTP 25 to 27) with the
//! Erlang nodes, so that this node is a full member of global: it takes
//! part in every node-up exchange (so `global:sync()` returns on the Erlang
//! nodes), holds and sees global names, answers and takes global locks.
//!
//! - [`server`]: the pure state machine (names, locks, where each node-up
//!   exchange stands), a port of global.erl.
//! - [`locker`]: the locker process that takes the exchange locks.
//! - [`calls`]: `multi_call`, `set_lock`, `del_lock`, `trans_all_known`, as
//!   the calling process runs them.
//! - [`resolve`]: name clashes (`exchange_names`, `resolve_it`).
//! - [`wire`]: the protocol's terms and Erlang's term order where it counts.
//!
//! This module is the I/O around them: the supervised `global_name_server`
//! process (its state outlives a restart), and [`Global`], the handle the
//! node's own code uses to register, look up and unregister global names
//! and to take global locks.
//!
//! `prevent_overlapping_partitions` comes from the node's kernel
//! configuration ([`crate::node::NodeConfig`]), on by default as in OTP 25
//! (see [`server`]). What this node does differently from an Erlang node:
//! it has no global groups, and the clash resolvers it can run are global's
//! own three.

pub mod calls;
pub mod locker;
pub mod resolve;
pub mod server;
pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;

use eetf::Term;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::calls::{Caller, GNS};
use self::locker::{LockIsSet, Locker};
use self::server::{Action, GlobalServer, LockerMsg};
use self::wire::{Op, gen_cast};
use crate::node::mailbox::{Mailbox, Received};
use crate::node::pid::Pid;
use crate::node::supervisor::{ChildSpec, Intensity, Service, supervise};
use crate::node::term::{as_atom, as_tuple, atom, list, tuple};
use crate::node::{Node, NodeEvent};

/// Messages queued toward the locker before global_name_server stops
/// handing it more (it then logs and drops them; only a flood from a peer
/// gets there, since the locker takes each exchange's messages in turn).
pub(crate) const LOCKER_QUEUE: usize = 4096;

/// What global keeps on a node, shared by the service, the locker and the
/// [`Global`] handle.
pub struct Shared {
    state: Arc<Mutex<GlobalServer>>,
    /// One registration at a time, as global's registrar process does.
    registrar: tokio::sync::Mutex<()>,
}

/// Messages to global_name_server from its helpers.
enum Internal {
    ExchangeOps {
        node: Arc<str>,
        tag: i64,
        ops: Vec<Op>,
        resolved: Vec<Op>,
    },
    ExtraNodedown(Arc<str>),
}

/// Starts `global_name_server` under the node's supervisor.
pub fn start(node: &Node) {
    let shared = Arc::new(Shared {
        state: Arc::new(Mutex::new(
            GlobalServer::new(Arc::from(node.name())).with_partitions(
                node.core().config.prevent_overlapping_partitions,
                x_creation(node.core().creation),
            ),
        )),
        registrar: tokio::sync::Mutex::new(()),
    });
    if node.core().global.set(shared.clone()).is_err() {
        tracing::warn!("global_name_server already started");
        return;
    }
    let spec = ChildSpec {
        name: GNS,
        mailbox: 65_536,
        intensity: Intensity::NODE_SERVICE,
        shutdown: node.core().shutdown.clone(),
    };
    if let Err(error) = supervise(node, spec, GlobalService { shared }) {
        tracing::warn!(%error, "{GNS} not started");
    }
}

/// global's `XCreation` for this node: a random `creation_extension` with
/// its low 32 bits clear, plus the node's creation, plus 2^59, so that each
/// incarnation of a node reports lost connections under its own number.
fn x_creation(creation: u32) -> i64 {
    let extension = (rand::random::<u64>() % ((1 << 60) - 1)) & !0xFFFF_FFFF;
    // Below 2^60 + 2^59 + 2^32: an i64.
    (extension as i64) + i64::from(creation) + (1 << 59)
}

struct GlobalService {
    shared: Arc<Shared>,
}

impl Service for GlobalService {
    fn serve(&mut self, node: Node, pid: Pid, mailbox: Mailbox) -> BoxFuture<'_, ()> {
        let shared = self.shared.clone();
        Box::pin(async move { serve(shared, node, pid, mailbox).await })
    }
}

/// One incarnation of global_name_server.
async fn serve(shared: Arc<Shared>, node: Node, me: Pid, mut mailbox: Mailbox) {
    let stop = node.core().shutdown.child_token();
    let _stop_on_exit = stop.clone().drop_guard();
    // Unbounded, but never long: a resolver reports once per exchange, a
    // sync_others task once per node, and the locker waits for the end of
    // each exchange after its one lock_is_set.
    let (internal_tx, mut internal_rx) = mpsc::unbounded_channel::<Internal>();
    let (locker_tx, locker_rx) = mpsc::channel::<LockerMsg>(LOCKER_QUEUE);
    let (lock_is_set_tx, mut lock_is_set_rx) = mpsc::unbounded_channel::<LockIsSet>();
    let (locker_pid, locker_mailbox) = node.spawn_mailbox(1024);
    {
        let mut state = shared.state.lock();
        state.set_locker(locker_pid.clone());
        // Exchanges a previous incarnation left unfinished start afresh
        // below, with every connected peer global does not know yet.
        state.restart();
    }
    let locker = Locker::new(
        node.clone(),
        locker_pid.clone(),
        locker_mailbox,
        locker_rx,
        shared.state.clone(),
        lock_is_set_tx,
        stop.clone(),
    );
    {
        let node = node.clone();
        let locker_pid = locker_pid.clone();
        tokio::spawn(async move {
            locker.run().await;
            node.exit_process(&locker_pid, atom("shutdown"));
        });
    }
    let mut io = Io {
        node: node.clone(),
        me: me.clone(),
        shared: shared.clone(),
        locker: locker_tx,
        internal: internal_tx,
        monitors: HashMap::new(),
        by_ref: HashMap::new(),
        stop: stop.clone(),
    };
    let mut events = node.subscribe();
    // Every holder monitored again (a new incarnation has new monitors), and
    // an exchange with every peer that connected before we were up (nodeup
    // skips those global knows already).
    let holders = shared.state.lock().all_holders();
    io.watch(holders);
    for peer in visible(&node) {
        io.step(|s, out| s.nodeup(&peer, out));
    }
    loop {
        tokio::select! {
            // Node events first: on an Erlang node the `nodedown` of a
            // connection this node drops is in global's mailbox before any
            // later message from a peer, and prevent_overlapping_partitions
            // depends on that order (a peer's `remove_connection` handled
            // before our own nodedown would leave our loss unreported).
            biased;
            _ = stop.cancelled() => return,
            e = events.recv() => match e {
                Ok(NodeEvent::Up(peer)) => {
                    if visible(&node).contains(&peer) {
                        io.step(|s, out| s.nodeup(&peer, out));
                    }
                }
                Ok(NodeEvent::Down(peer, _)) => io.step(|s, out| s.nodedown(&peer, out)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => io.reconcile(),
                Err(_) => return,
            },
            Some(m) = lock_is_set_rx.recv() => {
                io.step(|s, out| s.lock_is_set(&m.node, m.tag, m.lock_id, out));
            }
            Some(m) = internal_rx.recv() => match m {
                Internal::ExchangeOps { node: peer, tag, ops, resolved } => {
                    io.step(|s, out| s.exchange_ops(&peer, tag, ops, resolved, out))
                }
                Internal::ExtraNodedown(peer) => io.step(|s, out| s.extra_nodedown(&peer, out)),
            },
            r = mailbox.recv() => match r {
                Some(Received::Message(_, msg)) => io.message(&msg),
                _ => return,
            },
        }
    }
}

/// The visible peers connected now: those global exchanges with (none
/// when this node is hidden, since all its connections are hidden then).
fn visible(node: &Node) -> Vec<Arc<str>> {
    if node.core().config.hidden {
        return Vec::new();
    }
    node.core()
        .connected()
        .into_iter()
        .filter(|(_, v)| *v)
        .map(|(n, _)| n)
        .collect()
}

/// global_name_server's I/O: carries out the state machine's actions and
/// keeps one monitor on each pid its table refers to.
struct Io {
    node: Node,
    me: Pid,
    shared: Arc<Shared>,
    locker: mpsc::Sender<LockerMsg>,
    internal: mpsc::UnboundedSender<Internal>,
    monitors: HashMap<Pid, eetf::Reference>,
    by_ref: HashMap<eetf::Reference, Pid>,
    stop: CancellationToken,
}

impl Io {
    fn step(&mut self, f: impl FnOnce(&mut GlobalServer, &mut Vec<Action>)) {
        let mut out = Vec::new();
        let touched = {
            let mut state = self.shared.state.lock();
            f(&mut state, &mut out);
            state.take_touched()
        };
        self.watch(touched);
        for action in out {
            self.perform(action);
        }
    }

    /// Monitors the pids the table now refers to, and drops the monitors
    /// of those it no longer does.
    fn watch(&mut self, touched: Vec<Pid>) {
        for pid in touched {
            let refers = self.shared.state.lock().refers_to(&pid);
            match (refers, self.monitors.contains_key(&pid)) {
                (true, false) => {
                    let r = self.node.monitor(&self.me, &pid);
                    self.by_ref.insert(r.clone(), pid.clone());
                    self.monitors.insert(pid, r);
                }
                (false, true) => {
                    if let Some(r) = self.monitors.remove(&pid) {
                        self.by_ref.remove(&r);
                        self.node.demonitor(&r);
                    }
                }
                _ => {}
            }
        }
    }

    fn message(&mut self, msg: &Term) {
        let node = self.node.clone();
        match as_tuple(msg) {
            Some([tag, from, request]) if as_atom(tag) == Some("$gen_call") => {
                let caller = match as_tuple(from) {
                    Some([Term::Pid(p), _]) => Pid::from(p),
                    _ => return,
                };
                let connected = move |n: &str| node.core().peer_flags(n).is_some();
                self.step(|s, out| s.call(from, &caller, request, &connected, out));
            }
            Some([tag, cast]) if as_atom(tag) == Some("$gen_cast") => {
                self.step(|s, out| s.cast(cast, out));
            }
            Some([tag, Term::Reference(r), _, _, _]) if as_atom(tag) == Some("DOWN") => {
                if let Some(pid) = self.by_ref.remove(&**r) {
                    self.monitors.remove(&pid);
                    self.step(|s, _| s.process_down(&pid));
                }
            }
            _ => {
                let alive = move |p: &Pid| node.is_alive(p);
                let now = std::time::Instant::now();
                self.step(|s, out| s.info(msg, &alive, now, out));
            }
        }
    }

    /// After missed node events: a `nodeup` for every visible peer global
    /// does not know, a `nodedown` for every known node not connected.
    fn reconcile(&mut self) {
        let up = visible(&self.node);
        let known = self.shared.state.lock().known_nodes();
        for peer in &known {
            if !up.contains(peer) {
                self.step(|s, out| s.nodedown(peer, out));
            }
        }
        for peer in up {
            self.step(|s, out| s.nodeup(&peer, out));
        }
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::Cast { node, msg } => {
                self.node
                    .send_named(&node, GNS, gen_cast(msg), Some(&self.me));
            }
            Action::Send { node, msg } => {
                if self.node.core().peer_flags(&node).is_some() {
                    self.node.send_named(&node, GNS, msg, Some(&self.me));
                }
            }
            Action::Reply { from, reply } => self.node.reply(&self.me, &from, reply),
            Action::Locker(m) => {
                if self.locker.try_send(m).is_err() {
                    tracing::warn!(
                        "global: the locker's queue is full; a message to it is dropped"
                    );
                }
            }
            Action::Resolve {
                node: peer,
                tag,
                names,
            } => {
                let node = self.node.clone();
                let shared = self.shared.clone();
                let internal = self.internal.clone();
                let stop = self.stop.clone();
                tokio::spawn(async move {
                    let resolve = resolve::exchange_names(&node, &shared.state, &peer, names);
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        (ops, resolved) = resolve => {
                            let _ = internal.send(Internal::ExchangeOps { node: peer, tag, ops, resolved });
                        }
                    }
                });
            }
            Action::SyncOthers(nodes) => {
                for peer in nodes {
                    if *peer == *self.node.name() {
                        continue;
                    }
                    let node = self.node.clone();
                    let internal = self.internal.clone();
                    let me = self.me.clone();
                    tokio::spawn(async move {
                        if node.connect(&peer).await {
                            let msg = tuple(vec![atom("in_sync"), atom(node.name()), atom("true")]);
                            node.send_named(&peer, GNS, gen_cast(msg), Some(&me));
                        } else {
                            tracing::warn!(
                                "'global' at {} failed to connect to {peer}",
                                node.name()
                            );
                            let _ = internal.send(Internal::ExtraNodedown(peer));
                        }
                    });
                }
            }
            Action::Disconnect(peer) => {
                tracing::warn!(
                    "'global' at {} disconnected node {peer} in order to prevent overlapping partitions",
                    self.node.name()
                );
                self.node.disconnect(&peer);
            }
        }
    }
}

/// The node's own use of global: names and locks shared with every node
/// of the cluster, Erlang or Rust. Get it with [`Node::global`].
#[derive(Clone)]
pub struct Global {
    node: Node,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Global {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Global")
            .field("node", &self.node.name())
            .finish()
    }
}

/// A global lock held by a process of this node, made for it by
/// [`Global::set_lock`]. Dropping it without [`GlobalLock::release`] ends
/// the holder, and every node drops the lock when it sees it end.
pub struct GlobalLock {
    node: Node,
    holder: Pid,
    mailbox: Option<Mailbox>,
    id: Term,
    nodes: Vec<Arc<str>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for GlobalLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalLock")
            .field("holder", &self.holder)
            .field("id", &self.id)
            .finish()
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
}

impl GlobalLock {
    /// The process holding the lock (the lock ends with it).
    pub fn holder(&self) -> &Pid {
        &self.holder
    }

    /// `global:del_lock(Id, Nodes)`, then the holder ends.
    pub async fn release(mut self) {
        if let Some(mut mailbox) = self.mailbox.take() {
            let mut caller =
                Caller::new(&self.node, &self.holder, &mut mailbox, &self.shared.state);
            caller.del_lock(&self.id, &self.nodes).await;
        }
        self.node.exit_process(&self.holder, atom("normal"));
    }
}

impl Drop for GlobalLock {
    fn drop(&mut self) {
        if self.node.is_alive(&self.holder) {
            self.node.exit_process(&self.holder, atom("normal"));
        }
    }
}

impl Global {
    /// `global:whereis_name(Name)`.
    pub fn whereis_name(&self, name: &Term) -> Option<Pid> {
        let node = &self.node;
        self.shared
            .state
            .lock()
            .where_alive(name, &|p| node.is_alive(p))
    }

    /// `global:registered_names()`.
    pub fn registered_names(&self) -> Vec<Term> {
        self.shared.state.lock().registered_names()
    }

    /// The nodes global knows (synced or told of by a synced node).
    pub fn known_nodes(&self) -> Vec<String> {
        self.shared
            .state
            .lock()
            .known_nodes()
            .iter()
            .map(|n| n.to_string())
            .collect()
    }

    /// Runs `f` with the lock `{global, Registrar}` taken on every known
    /// node (global's `trans_all_known/1`), from a process of its own.
    async fn trans_all_known<T>(
        &self,
        f: impl AsyncFnOnce(&mut Caller<'_>, &[Arc<str>]) -> T,
    ) -> T {
        let _one_at_a_time = self.shared.registrar.lock().await;
        let (pid, mut mailbox) = self.node.spawn_mailbox(1024);
        let mut caller = Caller::new(&self.node, &pid, &mut mailbox, &self.shared.state);
        let id = tuple(vec![atom("global"), pid.clone().into()]);
        let nodes = caller.set_lock_known(&id).await;
        let out = f(&mut caller, &nodes).await;
        caller.delete_global_lock(&id, &nodes).await;
        self.node.exit_process(&pid, atom("normal"));
        out
    }

    /// `global:register_name(Name, Pid)` with global's default resolver
    /// (`random_exit_name`): false when the name is taken or `pid` holds
    /// another global name already. Every node of the cluster learns it;
    /// it goes away everywhere when `pid` ends.
    pub async fn register_name(&self, name: Term, pid: &Pid) -> bool {
        let me = self.clone();
        let pid = pid.clone();
        self.trans_all_known(async move |caller, nodes| {
            let free =
                me.whereis_name(&name).is_none() && me.shared.state.lock().names_of(&pid) == 0;
            if free {
                let request = tuple(vec![
                    atom("register"),
                    name,
                    pid.into(),
                    wire::random_exit_name(),
                ]);
                caller.multi_call(nodes, &request).await;
            }
            free
        })
        .await
    }

    /// `global:unregister_name(Name)`.
    pub async fn unregister_name(&self, name: Term) {
        if self.whereis_name(&name).is_none() {
            return;
        }
        self.trans_all_known(async move |caller, nodes| {
            let request = tuple(vec![atom("unregister"), name]);
            caller.multi_call(nodes, &request).await;
        })
        .await
    }

    /// `global:set_lock({Resource, Requester}, Nodes, Retries)`: `nodes`
    /// `None` is this node and every visible peer, `retries` `None` is
    /// `infinity`. The lock is held by a process made for it (see
    /// [`GlobalLock`]); `None` when it could not be set.
    pub async fn set_lock(
        &self,
        resource: Term,
        requester: Term,
        nodes: Option<Vec<String>>,
        retries: Option<u32>,
    ) -> Option<GlobalLock> {
        let nodes: Vec<Arc<str>> = match nodes {
            Some(nodes) => nodes.iter().map(|n| Arc::from(n.as_str())).collect(),
            None => {
                let mut all = vec![Arc::from(self.node.name())];
                all.extend(visible(&self.node));
                all
            }
        };
        let id = tuple(vec![resource, requester]);
        let (holder, mut mailbox) = self.node.spawn_mailbox(1024);
        let set = {
            let mut caller = Caller::new(&self.node, &holder, &mut mailbox, &self.shared.state);
            caller.set_lock(&id, &nodes, retries).await
        };
        if !set {
            self.node.exit_process(&holder, atom("normal"));
            return None;
        }
        Some(GlobalLock {
            node: self.node.clone(),
            holder,
            mailbox: Some(mailbox),
            id,
            nodes,
            shared: self.shared.clone(),
        })
    }

    /// `global:sync()`: returns once global has synced with every visible
    /// peer (or they went down).
    pub async fn sync(&self) {
        let (pid, mut mailbox) = self.node.spawn_mailbox(16);
        let mut nodes = vec![Arc::from(self.node.name())];
        nodes.extend(visible(&self.node));
        let request = tuple(vec![atom("sync"), wire::node_list(&nodes)]);
        let mut caller = Caller::new(&self.node, &pid, &mut mailbox, &self.shared.state);
        caller
            .multi_call(&[Arc::from(self.node.name())], &request)
            .await;
        self.node.exit_process(&pid, atom("normal"));
    }
}

impl Node {
    /// This node's `global`, when the node is distributed.
    pub fn global(&self) -> Option<Global> {
        let shared = self.core().global.get()?.clone();
        Some(Global {
            node: self.clone(),
            shared,
        })
    }
}

/// The answers this node's `rex` and `erpc` give for `global`:
/// `resolve_it/4` (a peer resolving a clash with a name we hold),
/// `whereis_name/1` and `registered_names/0`.
pub(crate) fn eval(core: &Arc<crate::node::core::Core>, f: &str, args: &[Term]) -> Option<Term> {
    match (f, args) {
        ("resolve_it", [method, name, Term::Pid(p1), Term::Pid(p2)]) => Some(resolve::resolve_it(
            core,
            method,
            name,
            &Pid::from(p1),
            &Pid::from(p2),
        )),
        ("whereis_name", [name]) => {
            let shared = core.global.get()?;
            let answer = shared
                .state
                .lock()
                .where_alive(name, &|p| core.table.is_alive(p));
            Some(answer.map(Term::from).unwrap_or_else(|| atom("undefined")))
        }
        ("registered_names", []) => {
            let shared = core.global.get()?;
            Some(list(shared.state.lock().registered_names()))
        }
        _ => None,
    }
}
