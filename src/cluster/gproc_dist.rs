//! The `gproc_dist` process: this node's gen_leader candidate and gproc
//! global registry, the I/O shell around the pure [`Election`] and
//! [`GprocTable`].
//!
//! It is registered as `gproc_dist`, so Erlang candidates reach it exactly
//! as they reach each other. It carries out the election's effects (sends,
//! monitors, timers), serves `'$leader_call'`s and `'$leader_cast'`s as
//! leader, forwards them as follower (replying exactly once, dropping late
//! replies), applies `from_leader` broadcasts, monitors every registered pid
//! as gproc does, and defers everything but election traffic while an
//! election runs. Local chat sessions use it through [`GprocDist::call`].
//!
//! Every change to the registry that matters to chat is handed to a
//! [`RegistryObserver`] (the chat directory) before the reply that makes it
//! visible, which preserves gen_leader's broadcast-before-reply guarantee
//! locally.
//!
//! The process runs under the node's supervisor, as gproc_dist runs under
//! gproc_sup: killed, it is restarted under its name with a new pid, and
//! the new process is a new gen_leader candidate (a new incarnation, a new
//! election), as `gen_leader:start_link` makes it on an Erlang node. What
//! gproc keeps in its ets table across that restart, the registry, stays
//! here too ([`Candidate`]): once the new candidate follows a leader, this
//! node's own registrations that the leader lacks (it purged them when the
//! old candidate went down) are sent to it with `add_globals`, as gproc's
//! `surrendered` does; as leader, it serves them from the kept table. The
//! registrations owned by the old process itself (chat sequence counters)
//! are then released with `pid_is_DOWN`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use eetf::Term;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Interval, interval_at, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::election::{Dest, Effect, Election, Input, Message, NodeName};
use super::gproc::{Change, Effects, GprocTable, SyncEffect, SyncRequests};
use super::wire;
use crate::node::supervisor::{ChildSpec, Intensity, Service, supervise};
use crate::node::term::{as_atom, as_tuple, atom, tuple};
use crate::node::{Mailbox, Node, Pid, Received};

/// The registered name of the candidate process on every node.
pub const NAME: &str = "gproc_dist";

/// How the candidate runs.
#[derive(Debug, Clone)]
pub struct GprocDistConfig {
    /// `{gproc_dist, [Node...]}`: every candidate, this node included.
    pub candidates: Vec<String>,
    /// gen_leader's `heartbeat` option (5 s).
    pub heartbeat: Duration,
    /// Where the incarnation file `gproc_dist_<node>` lives (gen_leader's
    /// `vardir`).
    pub data_dir: PathBuf,
    /// How long a leader call may take (gproc uses gen:call's 5 s).
    pub call_timeout: Duration,
}

/// Receives the registry changes chat cares about, in order.
pub trait RegistryObserver: Send + Sync + 'static {
    /// Called on the gproc_dist task, before any reply that depends on them.
    fn registry_changed(&self, changes: Vec<Change>);
}

/// Why a leader call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No reply within the call timeout (an election may be running).
    #[error("the gproc leader did not answer in time")]
    Timeout,
    /// The gproc_dist process has stopped.
    #[error("gproc_dist has stopped")]
    Stopped,
}

/// This node's view of the cluster, for `flack cluster`, `/health` and
/// `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClusterStatus {
    /// `leader`, `follower` or `candidate` (an election is running).
    pub role: String,
    /// The leader's node, once known.
    pub leader: Option<String>,
    /// Every candidate, sorted.
    pub candidates: Vec<String>,
    /// Candidates believed down.
    pub down: Vec<String>,
    /// Registration objects in the global registry.
    pub registry_size: usize,
}

enum Command {
    Call {
        request: Term,
        reply: oneshot::Sender<Result<Term, CallError>>,
    },
    Cast(Term),
}

/// The handle local code holds. It stays valid across restarts of the
/// process: calls queued while it restarts are served by the next one.
#[derive(Clone)]
pub struct GprocDist {
    commands: mpsc::Sender<Command>,
    status: Arc<Mutex<ClusterStatus>>,
    call_timeout: Duration,
    pid: Arc<Mutex<Pid>>,
}

impl GprocDist {
    /// Starts the candidate on `node`, registered as `gproc_dist` under the
    /// node's supervisor, stopped by `shutdown`.
    pub fn start(
        node: Node,
        config: GprocDistConfig,
        observer: Arc<dyn RegistryObserver>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let me: NodeName = Arc::from(node.name());
        let mut candidates: Vec<NodeName> = config
            .candidates
            .iter()
            .map(|c| Arc::from(c.as_str()))
            .collect();
        if !candidates.contains(&me) {
            anyhow::bail!(
                "this node ({me}) is not in the gproc_dist candidate list {:?}",
                config.candidates
            );
        }
        candidates.sort();
        let incarnation = next_incarnation(&config.data_dir, &me)?;
        let mut table = GprocTable::for_node(&me);
        // Monitor refs the leader hands out must be real refs of this node.
        let refs = node.clone();
        table.set_ref_maker(Arc::new(move || Term::from(refs.make_ref())));
        let (commands_tx, commands_rx) = mpsc::channel(4096);
        let status = Arc::new(Mutex::new(ClusterStatus::default()));
        // Replaced by the first process's pid before this returns.
        let pid = Arc::new(Mutex::new(Pid::new(me.clone(), 0, 0, node.creation())));
        let candidate = Candidate {
            me,
            candidates,
            data_dir: config.data_dir.clone(),
            first_incarnation: Some(incarnation),
            table,
            commands: commands_rx,
            observer,
            heartbeat: config.heartbeat,
            call_timeout: config.call_timeout,
            status: status.clone(),
            pid: pid.clone(),
            previous: None,
            shutdown: shutdown.clone(),
        };
        let spec = ChildSpec {
            name: NAME,
            mailbox: 65_536,
            intensity: Intensity::GPROC_SUP,
            shutdown,
        };
        *pid.lock() = supervise(&node, spec, candidate)?;
        Ok(Self {
            commands: commands_tx,
            status,
            call_timeout: config.call_timeout,
            pid,
        })
    }

    /// `gen_leader:leader_call(gproc_dist, Request)`: the leader's reply.
    pub async fn call(&self, request: Term) -> Result<Term, CallError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Call { request, reply })
            .await
            .map_err(|_| CallError::Stopped)?;
        match tokio::time::timeout(self.call_timeout + Duration::from_millis(500), answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(CallError::Stopped),
            Err(_) => Err(CallError::Timeout),
        }
    }

    /// `gen_leader:leader_cast(gproc_dist, Message)`.
    pub fn cast(&self, message: Term) {
        if self.commands.try_send(Command::Cast(message)).is_err() {
            warn!("gproc_dist command queue full; a cast was dropped");
        }
    }

    /// The current cluster view.
    pub fn status(&self) -> ClusterStatus {
        self.status.lock().clone()
    }

    /// The candidate's pid (a new one after each restart).
    pub fn pid(&self) -> Pid {
        self.pid.lock().clone()
    }
}

/// gen_leader's incarnation file: `<dir>/gproc_dist_<node>` holds the
/// external term format of an integer; a missing file means 0 and writes 1.
fn next_incarnation(dir: &Path, node: &str) -> anyhow::Result<i64> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{NAME}_{node}"));
    let current = match std::fs::read(&path) {
        Ok(bytes) => match Term::decode(bytes.as_slice()) {
            Ok(Term::FixInteger(value)) => i64::from(value.value),
            _ => 0,
        },
        Err(_) => 0,
    };
    let next = i32::try_from(current + 1).unwrap_or(0);
    let mut bytes = Vec::new();
    Term::from(eetf::FixInteger::from(next)).encode(&mut bytes)?;
    std::fs::write(&path, bytes)?;
    Ok(current)
}

/// What outlives each gproc_dist process: the registry (gproc's ets table)
/// and the queue local callers use, with what starts each new candidate.
struct Candidate {
    me: NodeName,
    candidates: Vec<NodeName>,
    data_dir: PathBuf,
    /// The incarnation read at start, for the first process (later ones
    /// read the file again, as gen_leader's init does).
    first_incarnation: Option<i64>,
    table: GprocTable,
    commands: mpsc::Receiver<Command>,
    observer: Arc<dyn RegistryObserver>,
    heartbeat: Duration,
    call_timeout: Duration,
    status: Arc<Mutex<ClusterStatus>>,
    /// The current process's pid, shared with the handles.
    pid: Arc<Mutex<Pid>>,
    /// The process before this one, whose registrations are released once
    /// the new one knows a leader.
    previous: Option<Pid>,
    shutdown: CancellationToken,
}

impl Service for Candidate {
    fn serve(&mut self, node: Node, pid: Pid, mailbox: Mailbox) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let incarnation = match self.first_incarnation.take() {
                Some(incarnation) => incarnation,
                None => match next_incarnation(&self.data_dir, &self.me) {
                    Ok(incarnation) => incarnation,
                    Err(error) => {
                        warn!(%error, "gproc_dist cannot read its incarnation file");
                        return;
                    }
                },
            };
            *self.pid.lock() = pid.clone();
            let election = Election::new(
                self.me.clone(),
                pid.clone(),
                self.candidates.clone(),
                incarnation,
            );
            let actor = Actor {
                node,
                me: self.me.clone(),
                pid: pid.clone(),
                mailbox,
                commands: &mut self.commands,
                election,
                table: &mut self.table,
                syncs: SyncRequests::new(),
                observer: self.observer.clone(),
                deferred: VecDeque::new(),
                forwarded: HashMap::new(),
                node_monitors: HashMap::new(),
                pid_monitors: HashMap::new(),
                monitored_pids: HashSet::new(),
                candidate_timer: None,
                own_heartbeat: None,
                checklead: None,
                heartbeat: self.heartbeat,
                call_timeout: self.call_timeout,
                status: self.status.clone(),
                incarnation,
            };
            let previous = self.previous.replace(pid);
            actor.run(self.shutdown.clone(), previous).await;
        })
    }
}

/// Who waits for a forwarded call's reply.
enum Waiter {
    /// A process that sent `'$leader_call'`: reply to its `From`.
    Remote(Term),
    /// A local caller.
    Local(oneshot::Sender<Result<Term, CallError>>),
}

/// Deferred during an election.
enum Deferred {
    Message(Option<Pid>, Term),
    Command(Command),
}

/// One gproc_dist process: a gen_leader candidate over the kept registry.
struct Actor<'a> {
    node: Node,
    me: NodeName,
    pid: Pid,
    mailbox: Mailbox,
    commands: &'a mut mpsc::Receiver<Command>,
    election: Election,
    table: &'a mut GprocTable,
    /// As leader: `gproc_dist:sync()` requests still waiting for nodes.
    syncs: SyncRequests,
    observer: Arc<dyn RegistryObserver>,
    deferred: VecDeque<Deferred>,
    /// Follower: calls forwarded to the leader, by the ref we tagged them with.
    forwarded: HashMap<eetf::Reference, (Waiter, Instant)>,
    /// gen_leader's monitor per candidate node.
    node_monitors: HashMap<eetf::Reference, NodeName>,
    /// gproc's monitor per registered remote pid.
    pid_monitors: HashMap<eetf::Reference, Pid>,
    monitored_pids: HashSet<Pid>,
    candidate_timer: Option<Interval>,
    own_heartbeat: Option<Instant>,
    checklead: Option<Instant>,
    heartbeat: Duration,
    call_timeout: Duration,
    status: Arc<Mutex<ClusterStatus>>,
    incarnation: i64,
}

/// Deferred messages kept during one election, at most.
const MAX_DEFERRED: usize = 100_000;

impl Actor<'_> {
    /// Runs the candidate until `shutdown` or an exit signal ends it.
    /// `previous` is the process this one replaces, if any.
    async fn run(mut self, shutdown: CancellationToken, previous: Option<Pid>) {
        info!(node = %self.me, incarnation = self.incarnation, candidates = ?self.election.candidates(), "gproc_dist candidate starting");
        let effects = self.election.start();
        self.carry_out(effects);
        // A restarted candidate is in an election: say so at once, not
        // with the view of the process it replaces.
        self.publish_status();
        if let Some(previous) = previous {
            // gproc's pid_is_DOWN for the process that died: what it owned
            // goes (deferred, like any request, until a leader is known).
            self.on_command(Command::Cast(tuple(vec![
                atom("pid_is_DOWN"),
                Term::from(previous),
            ])));
        }
        let mut expiry = tokio::time::interval(Duration::from_millis(250));
        loop {
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                () = shutdown.cancelled() => break,
                received = self.mailbox.recv() => match received {
                    Some(Received::Message(from, term)) => self.on_message(from, term),
                    Some(Received::Terminated(reason)) => {
                        warn!(%reason, "gproc_dist was ended by an exit signal");
                        break;
                    }
                    None => break,
                },
                Some(command) = self.commands.recv() => self.on_command(command),
                _ = tick(&mut self.candidate_timer) => self.feed(Input::CandidateTimer),
                () = sleep_until(self.own_heartbeat.unwrap_or(far)), if self.own_heartbeat.is_some() => {
                    self.own_heartbeat = None;
                    self.feed(Input::OwnHeartbeat);
                }
                () = sleep_until(self.checklead.unwrap_or(far)), if self.checklead.is_some() => {
                    self.checklead = None;
                    self.feed(Input::SendChecklead);
                }
                _ = expiry.tick() => {
                    self.expire_calls();
                    self.refresh_follower_down();
                }
            }
            self.publish_status();
        }
        for (_, (waiter, _)) in self.forwarded.drain() {
            if let Waiter::Local(reply) = waiter {
                let _ = reply.send(Err(CallError::Stopped));
            }
        }
    }

    fn publish_status(&self) {
        let role = if self.election.in_election() {
            "candidate"
        } else if self.election.is_leader() {
            "leader"
        } else {
            "follower"
        };
        let status = ClusterStatus {
            role: role.to_owned(),
            leader: (!self.election.in_election())
                .then(|| self.election.leader_node().map(|node| node.to_string()))
                .flatten(),
            candidates: self
                .election
                .candidates()
                .iter()
                .map(|c| c.to_string())
                .collect(),
            down: self.election.down().iter().map(|c| c.to_string()).collect(),
            registry_size: self.table.len(),
        };
        *self.status.lock() = status;
    }

    /// A follower monitors only its leader: it hears of candidates going
    /// down (from its own monitors during an election) but never of one
    /// coming back unless a `from_leader` arrives, which is when gen_leader
    /// looks. Without registry traffic a follower kept a candidate that
    /// started after it in `down` (its status said so for good); looking at
    /// the connections every tick keeps the view true.
    fn refresh_follower_down(&mut self) {
        if !self.election.in_election()
            && !self.election.is_leader()
            && !self.election.down().is_empty()
        {
            let connected = self.connected();
            self.election.refresh_down(connected);
        }
    }

    fn connected(&self) -> impl Fn(&str) -> bool + use<> {
        let up: HashSet<String> = self
            .node
            .connected_nodes()
            .into_iter()
            .chain(self.node.hidden_nodes())
            .collect();
        let me = self.me.to_string();
        move |node: &str| node == me || up.contains(node)
    }

    fn feed(&mut self, input: Input) {
        let connected = self.connected();
        let effects = self.election.handle(input, connected);
        self.carry_out(effects);
    }

    // -----------------------------------------------------------------
    // Incoming.

    fn on_message(&mut self, from: Option<Pid>, term: Term) {
        if let Some(message) = wire::decode(&term) {
            // Join is answered after an election, like gen_leader does.
            if self.election.in_election() && matches!(message, Message::Join(_)) {
                self.defer(Deferred::Message(from, term));
                return;
            }
            self.feed(Input::Message(message));
            return;
        }
        if let Some((reference, reason)) = down_message(&term)
            && let Some(node) = self.node_monitors.remove(&reference)
        {
            debug!(%node, %reason, "candidate down");
            self.feed(Input::Down(node));
            return;
        }
        if self.election.in_election() {
            self.defer(Deferred::Message(from, term));
            return;
        }
        self.handle_normal(from, term);
    }

    fn on_command(&mut self, command: Command) {
        if self.election.in_election() {
            self.defer(Deferred::Command(command));
            return;
        }
        match command {
            Command::Call { request, reply } => self.local_call(request, reply),
            Command::Cast(message) => self.cast(message),
        }
    }

    fn defer(&mut self, item: Deferred) {
        if self.deferred.len() >= MAX_DEFERRED {
            warn!("gproc_dist: too many messages deferred during an election; dropping the oldest");
            self.deferred.pop_front();
        }
        self.deferred.push_back(item);
    }

    fn replay_deferred(&mut self) {
        while !self.election.in_election() {
            let Some(item) = self.deferred.pop_front() else {
                break;
            };
            match item {
                Deferred::Message(from, term) => self.on_message(from, term),
                Deferred::Command(command) => self.on_command(command),
            }
        }
    }

    /// A message in normal operation (gen_leader's `handle_msg`).
    fn handle_normal(&mut self, from: Option<Pid>, term: Term) {
        let Some(fields) = as_tuple(&term) else {
            debug!(%term, "gproc_dist ignored a message");
            return;
        };
        match (fields.first().and_then(as_atom), fields.len()) {
            (Some("$leader_call"), 3) => self.remote_call(&fields[1], &fields[2]),
            (Some("$leader_cast"), 2) => self.cast(fields[1].clone()),
            (Some("from_leader"), 2) => self.apply_broadcast(from.as_ref(), &fields[1]),
            (Some("$gen_call"), 3) => self.gen_call(&fields[1], &fields[2]),
            (Some("DOWN"), 5) => self.pid_down(&term),
            _ => {
                if let Some((Term::Reference(reference), reply)) = leader_reply(fields) {
                    self.leader_reply(&reference, reply);
                } else {
                    debug!(%term, "gproc_dist ignored a message");
                }
            }
        }
    }

    // -----------------------------------------------------------------
    // Calls and casts.

    fn local_call(&mut self, request: Term, reply: oneshot::Sender<Result<Term, CallError>>) {
        if self.election.is_leader() {
            let from = tuple(vec![
                Term::from(self.pid.clone()),
                Term::from(self.node.make_ref()),
            ]);
            let answer = self.serve_call(&request, &from);
            let _ = reply.send(Ok(answer));
        } else if let Some(leader) = self.election.leader().cloned() {
            self.forward_call(&leader, request, Waiter::Local(reply));
        } else {
            let _ = reply.send(Err(CallError::Timeout));
        }
    }

    fn remote_call(&mut self, from: &Term, request: &Term) {
        if self.election.is_leader() {
            let answer = self.serve_call(request, from);
            self.node.reply(&self.pid, from, leader_reply_term(answer));
        } else if let Some(leader) = self.election.leader().cloned() {
            self.forward_call(&leader, request.clone(), Waiter::Remote(from.clone()));
        }
    }

    /// As leader: mutate, broadcast, then return the reply (the caller
    /// replies after this returns, so the broadcast goes first).
    fn serve_call(&mut self, request: &Term, from: &Term) -> Term {
        self.refresh_up_nodes();
        let (answer, changes) = self.table.leader_call_from(request, from);
        self.notice(changes);
        // gproc sends these from inside the callback, before gen_leader
        // broadcasts and replies.
        self.deliver(answer.sends);
        if let Some(ops) = &answer.broadcast {
            self.watch_pids_in(ops);
            self.broadcast(ops.clone());
        }
        answer.reply
    }

    /// Messages gproc sends straight to processes (waiters, monitors).
    fn deliver(&self, sends: Vec<(Term, Term)>) {
        for (to, message) in sends {
            if let Term::Pid(pid) = &to {
                self.node.send_from(&self.pid, &Pid::from(pid), message);
            }
        }
    }

    /// Standby failover skips standbys on nodes that are down
    /// (`[node()|nodes()]` in gproc).
    fn refresh_up_nodes(&mut self) {
        let up: HashSet<String> = self
            .node
            .connected_nodes()
            .into_iter()
            .chain(self.node.hidden_nodes())
            .chain(std::iter::once(self.me.to_string()))
            .collect();
        self.table.set_up_nodes(Some(up));
    }

    /// Carries out what a cast or a purge produced, as leader.
    fn leader_effects(&mut self, effects: Effects) {
        self.notice(effects.changes);
        self.deliver(effects.sends);
        if let Some(ops) = effects.broadcast {
            self.watch_pids_in(&ops);
            self.broadcast(ops);
        }
    }

    fn forward_call(&mut self, leader: &Pid, request: Term, waiter: Waiter) {
        let reference = self.node.make_ref();
        let from = tuple(vec![
            Term::from(self.pid.clone()),
            Term::from(reference.clone()),
        ]);
        let message = tuple(vec![atom("$leader_call"), from, request]);
        self.node.send_from(&self.pid, leader, message);
        self.forwarded
            .insert(reference, (waiter, Instant::now() + self.call_timeout));
    }

    /// `{Ref, {leader, reply, Reply}}` from the leader.
    fn leader_reply(&mut self, reference: &eetf::Reference, reply: Term) {
        // An unknown ref crashes an Erlang follower; here it is a late
        // reply to a call that already timed out, and is dropped.
        match self.forwarded.remove(reference) {
            Some((Waiter::Local(sender), _)) => {
                let _ = sender.send(Ok(reply));
            }
            Some((Waiter::Remote(from), _)) => {
                self.node.reply(&self.pid, &from, leader_reply_term(reply))
            }
            None => debug!("dropped a late leader reply"),
        }
    }

    fn expire_calls(&mut self) {
        let now = Instant::now();
        let expired: Vec<eetf::Reference> = self
            .forwarded
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(reference, _)| reference.clone())
            .collect();
        for reference in expired {
            if let Some((Waiter::Local(sender), _)) = self.forwarded.remove(&reference) {
                let _ = sender.send(Err(CallError::Timeout));
            }
        }
    }

    fn cast(&mut self, message: Term) {
        if self.election.is_leader() {
            if self.sync_cast(&message) {
                return;
            }
            self.refresh_up_nodes();
            let effects = self.table.leader_cast_full(&message);
            self.leader_effects(effects);
        } else if let Some(leader) = self.election.leader().cloned() {
            self.node.send_from(
                &self.pid,
                &leader,
                tuple(vec![atom("$leader_cast"), message]),
            );
        }
    }

    fn apply_broadcast(&mut self, from: Option<&Pid>, ops: &Term) {
        let connected = self.connected();
        if !self.election.accept_from_leader(from, connected) {
            debug!("gproc_dist ignored a from_leader not sent by the leader");
            return;
        }
        if let Some([tag, caller]) = as_tuple(ops) {
            match as_atom(tag) {
                // Everything broadcast before this has been applied: say so.
                Some("sync") => {
                    let reply = tuple(vec![atom("sync_reply"), atom(&self.me), caller.clone()]);
                    self.cast(reply);
                    return;
                }
                Some("sync_complete") => {
                    if self.is_local_from(caller) {
                        self.node.reply(&self.pid, caller, atom("true"));
                    } else {
                        self.syncs.forget(caller);
                    }
                    return;
                }
                _ => {}
            }
        }
        let effects = self.table.apply_full(ops);
        // Only what this broadcast inserted can be a new owner: a scan of
        // every owner per broadcast made each sequence request cost the
        // whole registry, and a follower of a busy leader fell behind.
        let owners = GprocTable::inserted_owners(ops);
        self.watch_pids(owners.iter().map(Pid::from));
        self.notice(effects.changes);
        self.deliver(effects.sends);
    }

    fn gen_call(&mut self, from: &Term, request: &Term) {
        let reply = match as_atom(request) {
            Some("get_leader") => self
                .election
                .leader_node()
                .map(|node| atom(node))
                .unwrap_or_else(|| atom("undefined")),
            // gen_server:call(gproc_dist, sync): answered later, once
            // every node has caught up.
            Some("sync") => {
                self.initiate_sync(from.clone());
                return;
            }
            Some("get_candidates") => tuple(vec![
                atom("ok"),
                crate::node::term::list(
                    self.election.candidates().iter().map(|c| atom(c)).collect(),
                ),
            ]),
            _ => atom("badarg"),
        };
        self.node.reply(&self.pid, from, reply);
    }

    // -----------------------------------------------------------------
    // gproc_dist:sync(): the leader asks every live node to answer once it
    // has applied all earlier broadcasts, and tells the caller when all
    // have answered or died.

    /// `initiate_sync(From)`: served here as leader, else handed to the
    /// leader as `{initiate_sync, From}` (completion comes back to this node
    /// as `{sync_complete, From}` because `From` is a local caller).
    fn initiate_sync(&mut self, from: Term) {
        if self.election.is_leader() {
            let alive = self.alive_others();
            let effects = self.syncs.initiate(from, alive);
            self.sync_effects(effects);
        } else if let Some(leader) = self.election.leader().cloned() {
            let cast = tuple(vec![atom("initiate_sync"), from]);
            self.node
                .send_from(&self.pid, &leader, tuple(vec![atom("$leader_cast"), cast]));
        }
    }

    /// The leader's sync casts; `false` when `message` is not one.
    fn sync_cast(&mut self, message: &Term) -> bool {
        let effects = match as_tuple(message) {
            Some([tag, from]) if as_atom(tag) == Some("initiate_sync") => {
                let alive = self.alive_others();
                self.syncs.initiate(from.clone(), alive)
            }
            Some([tag, node, from]) if as_atom(tag) == Some("sync_reply") => {
                let Some(node) = as_atom(node) else {
                    return true;
                };
                self.syncs.reply(node, from)
            }
            _ => return false,
        };
        self.sync_effects(effects);
        true
    }

    /// gen_leader's `alive(E) -- [node()]`: candidates not believed down.
    fn alive_others(&self) -> Vec<String> {
        let down = self.election.down();
        self.election
            .candidates()
            .iter()
            .filter(|node| **node != self.me && !down.contains(node))
            .map(|node| node.to_string())
            .collect()
    }

    fn sync_effects(&mut self, effects: Vec<SyncEffect>) {
        for effect in effects {
            match effect {
                SyncEffect::Ask { nodes, message } => {
                    let message = tuple(vec![atom("from_leader"), message]);
                    for node in nodes {
                        self.node
                            .send_named(&node, NAME, message.clone(), Some(&self.pid));
                    }
                }
                SyncEffect::Complete(from) => {
                    if self.is_local_from(&from) {
                        self.node.reply(&self.pid, &from, atom("true"));
                    } else if let Some(node) = from_node(&from) {
                        let message = tuple(vec![
                            atom("from_leader"),
                            tuple(vec![atom("sync_complete"), from]),
                        ]);
                        self.node.send_named(&node, NAME, message, Some(&self.pid));
                    }
                }
            }
        }
    }

    /// Whether a gen_server `From` (`{Pid, Tag}`) is a process of this node.
    fn is_local_from(&self, from: &Term) -> bool {
        from_node(from).is_some_and(|node| *node == *self.me)
    }

    // -----------------------------------------------------------------
    // Registered pids: every node monitors every one, as gproc does.

    fn watch_registered_pids(&mut self) {
        let owners = self.table.owners();
        self.watch_pids(owners.iter().map(Pid::from));
    }

    /// Monitors each of `pids` on another node not monitored yet.
    fn watch_pids(&mut self, pids: impl Iterator<Item = Pid>) {
        for pid in pids {
            if pid.node == self.me || self.monitored_pids.contains(&pid) {
                continue;
            }
            let reference = self.node.monitor(&self.pid, &pid);
            self.monitored_pids.insert(pid.clone());
            self.pid_monitors.insert(reference, pid);
        }
    }

    /// gproc's `ensure_monitor` for the pids a leader op just inserted
    /// (owners and reverse entries), without scanning the whole table.
    fn watch_pids_in(&mut self, ops: &Term) {
        let owners = GprocTable::inserted_owners(ops);
        self.watch_pids(owners.iter().map(Pid::from));
    }

    /// A monitored registered pid is down: tell the leader (gproc's
    /// `pid_is_DOWN`), unless this follower merely lost its connection to
    /// the pid's node. `noconnection` says nothing about the process: after
    /// a partition or a pause of this node, the pids of every node it lost
    /// sight of are alive, and a `pid_is_DOWN` for each would make the
    /// leader delete their registrations cluster-wide. The leader learns of
    /// a node that really went away itself (its own nodedown purges it);
    /// the pid is monitored again at the next snapshot or broadcast.
    fn pid_down(&mut self, term: &Term) {
        let Some((reference, reason)) = down_message(term) else {
            return;
        };
        if let Some(pid) = self.pid_monitors.remove(&reference) {
            self.monitored_pids.remove(&pid);
            if as_atom(&reason) == Some("noconnection") && !self.election.is_leader() {
                debug!(%pid, "lost sight of a registered pid's node; not reported as down");
                return;
            }
            self.cast(tuple(vec![atom("pid_is_DOWN"), Term::from(pid)]));
        }
    }

    fn notice(&self, changes: Vec<Change>) {
        if !changes.is_empty() {
            self.observer.registry_changed(changes);
        }
    }

    /// `{from_leader, Ops}` to every monitored candidate but this one.
    fn broadcast(&self, ops: Term) {
        let message = tuple(vec![atom("from_leader"), ops]);
        for node in self.election.monitored() {
            if *node != self.me {
                self.node
                    .send_named(node, NAME, message.clone(), Some(&self.pid));
            }
        }
    }

    // -----------------------------------------------------------------
    // Election effects.

    fn carry_out(&mut self, effects: Vec<Effect>) {
        let mut pending: VecDeque<Effect> = effects.into();
        while let Some(effect) = pending.pop_front() {
            match effect {
                Effect::Send(dest, message) => self.send(&dest, &message),
                Effect::Monitor(dest) => {
                    let (reference, node) = match &dest {
                        Dest::Name(node) => {
                            (self.node.monitor_name(&self.pid, NAME, node), node.clone())
                        }
                        Dest::Pid(pid) => (self.node.monitor(&self.pid, pid), pid.node.clone()),
                    };
                    self.node_monitors.insert(reference, node);
                }
                Effect::StartCandidateTimer => {
                    let start = Instant::now() + self.heartbeat;
                    self.candidate_timer = Some(interval_at(start, self.heartbeat));
                }
                Effect::CancelCandidateTimer => self.candidate_timer = None,
                Effect::ScheduleOwnHeartbeat => {
                    self.own_heartbeat = Some(Instant::now() + self.heartbeat)
                }
                Effect::CheckleadNow => {
                    let connected = self.connected();
                    pending.extend(self.election.handle(Input::SendChecklead, connected));
                }
                Effect::SendCheckleads(nodes) => {
                    let message = Message::Checklead(self.me.clone());
                    for node in nodes {
                        self.send(&Dest::Name(node), &message);
                    }
                    self.checklead = Some(Instant::now() + self.heartbeat);
                }
                Effect::Elected { acks } => {
                    info!(node = %self.me, elid = ?self.election.elid(), "elected gproc_dist leader");
                    self.watch_registered_pids();
                    let ldr = self.election.ldr(self.table.snapshot());
                    for node in acks {
                        self.send(&Dest::Name(node), &ldr);
                    }
                    self.replay_deferred();
                }
                Effect::Accept(pid) => {
                    let ldr = self.election.ldr(self.table.snapshot());
                    self.send(&Dest::Pid(pid), &ldr);
                }
                Effect::Surrendered { leader, synch } => {
                    info!(node = %self.me, leader = %leader.node, "following gproc_dist leader");
                    let (changes, reconciliation) = self.table.surrender(&synch, &self.me);
                    self.watch_registered_pids();
                    self.notice(changes);
                    for cast in [reconciliation.add_globals, reconciliation.remove_globals]
                        .into_iter()
                        .flatten()
                    {
                        self.node.send_from(
                            &self.pid,
                            &leader,
                            tuple(vec![atom("$leader_cast"), cast]),
                        );
                    }
                    self.replay_deferred();
                }
                Effect::NodeDown(node) => {
                    // handle_DOWN: a sync never waits on a dead node.
                    let effects = self.syncs.node_down(&node);
                    self.sync_effects(effects);
                    self.refresh_up_nodes();
                    let effects = self.table.purge_node_full(&node);
                    self.leader_effects(effects);
                }
                Effect::ElectionStarted => debug!(node = %self.me, "election started"),
            }
        }
    }

    fn send(&self, dest: &Dest, message: &Message) {
        let term = wire::encode(message);
        match dest {
            Dest::Name(node) => {
                self.node.send_named(node, NAME, term, Some(&self.pid));
            }
            Dest::Pid(pid) => {
                self.node.send_from(&self.pid, pid, term);
            }
        }
    }
}

async fn tick(timer: &mut Option<Interval>) -> Instant {
    match timer {
        Some(timer) => timer.tick().await,
        None => std::future::pending().await,
    }
}

/// The node of the pid in a gen_server `From` (`{Pid, Tag}`).
fn from_node(from: &Term) -> Option<String> {
    match as_tuple(from)? {
        [Term::Pid(pid), _] => Some(pid.node.name.clone()),
        _ => None,
    }
}

/// `{'DOWN', Ref, process, Object, Reason}` → `(Ref, Reason)`.
fn down_message(term: &Term) -> Option<(eetf::Reference, Term)> {
    match as_tuple(term)? {
        [tag, Term::Reference(reference), kind, _, reason]
            if as_atom(tag) == Some("DOWN") && as_atom(kind) == Some("process") =>
        {
            Some(((**reference).clone(), reason.clone()))
        }
        _ => None,
    }
}

/// `{Ref, {leader, reply, Reply}}` → `(Ref, Reply)`.
fn leader_reply(fields: &[Term]) -> Option<(Term, Term)> {
    match fields {
        [reference @ Term::Reference(_), body] => match as_tuple(body)? {
            [leader, reply_tag, reply]
                if as_atom(leader) == Some("leader") && as_atom(reply_tag) == Some("reply") =>
            {
                Some((reference.clone(), reply.clone()))
            }
            _ => None,
        },
        _ => None,
    }
}

fn leader_reply_term(reply: Term) -> Term {
    tuple(vec![atom("leader"), atom("reply"), reply])
}
