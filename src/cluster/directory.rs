//! The chat directory: the original's `chat_stream` operations (register a
//! user, join, post, leave) carried out on the global registry, with fan-out
//! to the members.
//!
//! It runs in one of two modes, with the same registry shapes and the same
//! delivery index underneath:
//!
//! - **Single node** (no gproc_dist candidates configured): this node is the
//!   leader of a cluster of one. Each change is applied to the local
//!   [`Registry`] and its event delivered in the same critical section;
//!   taking the sequence number and queueing the event for every member under
//!   one lock is what makes `sequence` strictly increasing in the order every
//!   member receives it, and makes a joiner's `chat_state` and the `joined`
//!   events it later receives add up to every member exactly once.
//! - **Cluster** (a [`GprocDist`] candidate runs): writes are gproc leader
//!   calls, exactly the ones the original's `chat_stream` makes, and the
//!   registry is the replicated one; the gproc_dist process feeds every
//!   change into the delivery index before the reply that makes it visible.
//!   Events reach members on Erlang nodes as the original's records, pid to
//!   pid, and each other Rust node as one message per batch for all its
//!   members. Sequence numbers come from a gproc counter per chat
//!   (`{c,g,{flack_seq, Chat}}`), which the leader (Erlang or Rust)
//!   increments atomically: the events this node queues for a chat while its
//!   previous request is in flight are numbered together by one
//!   `update_counter` (see [`super::sequencer`]). A counter can be
//!   registered once per owner, so every node follows every registration
//!   of a chat's counter, increments the lowest owner's, never below the
//!   highest number it has seen; the node that empties a chat releases
//!   every registration of its counter.
//!
//! Members on other nodes whose registration vanishes (their node died or
//! was cut off, or a merge dropped them) are announced to this node's
//! members with `left`; when a merged registry brings them back, with
//! `joined` (see [`LostMembers`]). Until then a chat's events also go to
//! the fan-out of every connected Rust node such members were on: after a
//! partition heals or a paused leader returns, the winning leader's
//! snapshot lacks other nodes' members until each has registered them
//! again, and they must not miss what is sent meanwhile.
//!
//! Delivery never waits: a local member whose queue is full is flagged and
//! closed by its own session (see [`crate::events::mailbox`]).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use eetf::Term;
use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::gproc::Change;
use super::gproc_dist::{GprocDist, RegistryObserver};
use super::records;
use super::registry::{Chat, LostMembers, Registered, Registry, RegistryError, UserAttrs};
use super::sequencer::{ChatCounter, Plan, Sink, Streams};
use crate::events::event::{ChatEvent, EventKind};
use crate::events::mailbox::MailboxSender;
use crate::events::protocol::{ChatUser, timestamp_now};
use crate::metrics::{Metrics, RegistryGauges};
use crate::node::term::{as_atom, atom, binary, list, tuple};
use crate::node::{Delivery, Node, Pid};

/// How a member is reached.
#[derive(Debug, Clone)]
pub enum Route {
    /// A session on this node: its queue.
    Local(MailboxSender),
    /// A process on another node: a distribution send.
    Remote(Pid),
}

/// Why a directory operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// The registry refused (gproc's `badarg`).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The cluster did not answer (no leader, or an election is stuck).
    #[error("the cluster registry is unavailable: {0}")]
    Unavailable(String),
}

/// The owner of a registration of a chat's counter, ordered so that every
/// node chooses the same registration (see [`ChatCounter`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct CounterOwner(eetf::Pid);

impl Ord for CounterOwner {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Borrowed, not cloned: compared on every choice of a chat's counter.
        fn key(pid: &eetf::Pid) -> (&str, u32, u32, u32) {
            (pid.node.name.as_str(), pid.id, pid.serial, pid.creation)
        }
        key(&self.0).cmp(&key(&other.0))
    }
}

impl PartialOrd for CounterOwner {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

type Counter = ChatCounter<CounterOwner>;

/// How many times a chat's numbers are asked of the cluster before this
/// node numbers a batch itself: a refusal (a registration that just went
/// away) is retried at once, a timeout is not.
const SEQUENCE_ATTEMPTS: usize = 4;

/// Events one chat's stream may hold on this node; also the largest batch
/// numbered by one leader call.
const STREAM_CAPACITY: usize = 128;

/// How long a chat's stream waits for events before it retires.
const STREAM_IDLE: Duration = Duration::from_secs(5);

/// How long a remote member that vanished is remembered, so that its chats
/// here hear `joined` when a partition heals and it is back: longer than a
/// partition is expected to last.
const LOST_MEMORY: Duration = Duration::from_secs(15 * 60);

/// At most this many vanished members are remembered (the oldest go first).
const LOST_CAPACITY: usize = 100_000;

/// Chats whose numbers one `update_counters` request may reserve.
const RESERVATIONS_PER_REQUEST: usize = 512;

/// A chat stream's request for sequence numbers, waiting to be sent to the
/// leader together with other chats' (see [`Directory::reserve_together`]).
struct Reservation {
    chat: Arc<str>,
    count: u64,
    /// Told the last number reserved.
    reply: oneshot::Sender<u64>,
}

/// The version of the fan-out protocol this node speaks, registered as the
/// value of its `{n,g,{flack_fanout, Node}}`. Version 2 takes
/// `{flack_fanout, [Record]}`, a chat's events for all of the receiving
/// node's members; nodes that registered no version take only
/// `{flack_fanout, Record, [Pid]}`.
pub const FANOUT_VERSION: i32 = 2;

/// A session of this node in a chat, with the queue that reaches it.
type LocalMember = (Pid, MailboxSender);

/// Another Rust node's fan-out process.
#[derive(Debug, Clone)]
struct Fanout {
    pid: Pid,
    /// Whether it takes a chat's events without a member list (version 2).
    by_chat: bool,
}

/// Who hears an event.
#[derive(Debug)]
enum Audience {
    /// Every member in the cluster, and `extra` (a leaver's own route).
    Everyone { extra: Option<Route> },
    /// This node's members only: every node tells its own members that a
    /// member on a dead node left.
    Local,
}

/// An event waiting in its chat's stream for its sequence number.
#[derive(Debug)]
pub struct Pending {
    sender: Pid,
    kind: EventKind,
    audience: Audience,
    /// Told once the event has been sent.
    done: Option<oneshot::Sender<()>>,
}

/// The shared chat directory of this node.
pub struct Directory {
    /// This directory, for tasks it starts itself.
    this: Weak<Directory>,
    registry: Mutex<Registry<Route>>,
    metrics: Arc<Metrics>,
    node: Node,
    cluster: OnceLock<GprocDist>,
    /// Queues of this node's sessions, for the index to route to them.
    routes: Mutex<HashMap<Pid, MailboxSender>>,
    counters: Mutex<HashMap<Arc<str>, Counter>>,
    /// Remote members this node's members were told had left because their
    /// registration vanished (see [`Directory::member_lost`]).
    lost: Mutex<LostMembers<Instant>>,
    /// Tickets of the tasks that announce registry changes (`left` for a
    /// lost member, `joined` when it is back): taken in the order of the
    /// changes, and the ticket whose turn it is.
    announcements_taken: std::sync::atomic::AtomicU64,
    announcements_turn: tokio::sync::watch::Sender<u64>,
    /// The fan-out process of every Rust node in the cluster, by node
    /// (`{n,g,{flack_fanout, Node}}` in the registry).
    fanouts: Mutex<HashMap<Arc<str>, Fanout>>,
    /// Fan-outs whose registration went away, by node: where members lost
    /// in a merge are still reached (see [`Directory::lost_member_fanouts`]).
    former_fanouts: Mutex<HashMap<Arc<str>, Fanout>>,
    /// Cluster: each chat's stream of events from this node.
    streams: Arc<Streams<Pending>>,
    /// Cluster: this node's sessions in each chat, from the moment their
    /// join goes to the leader until their `left` is out. Events for a chat
    /// go to these, not to the local members the replicated registry lists:
    /// a registration may precede an event at the leader while its reply is
    /// still on the way here, and after a partition heals the new leader's
    /// snapshot lacks this node's own members until they are registered
    /// again; neither may cost a local member an event.
    joining: Mutex<HashMap<Arc<str>, Vec<LocalMember>>>,
    /// Cluster: where chat streams queue their requests for numbers, so
    /// that one leader call serves every chat that is waiting.
    reservations: OnceLock<mpsc::Sender<Reservation>>,
}

fn sequence_name(chat: &str) -> Term {
    tuple(vec![atom("flack_seq"), binary(chat)])
}

fn sequence_key(chat: &str) -> Term {
    tuple(vec![atom("c"), atom("g"), sequence_name(chat)])
}

/// The reply to `update_counters`, `[{Key, Pid, Value}]`, as the last
/// value of each chat's `{c,g,{flack_seq, Chat}}`; empty for anything else
/// (`badarg`).
fn counter_values(reply: &Term) -> HashMap<String, u64> {
    let mut values = HashMap::new();
    let Term::List(items) = reply else {
        return values;
    };
    for item in &items.elements {
        let Some([key, _, Term::FixInteger(value)]) = crate::node::term::as_tuple(item) else {
            continue;
        };
        let Some([_, _, name]) = crate::node::term::as_tuple(key) else {
            continue;
        };
        let Some([tag, Term::Binary(chat)]) = crate::node::term::as_tuple(name) else {
            continue;
        };
        if as_atom(tag) != Some("flack_seq") {
            continue;
        }
        if let (Ok(chat), Ok(value)) = (
            String::from_utf8(chat.bytes.clone()),
            u64::try_from(value.value),
        ) {
            values.insert(chat, value);
        }
    }
    values
}

fn chat_key(chat: &str) -> Term {
    tuple(vec![atom("p"), atom("g"), binary(chat)])
}

impl Directory {
    /// A directory with an empty registry; single-node until
    /// [`Directory::join_cluster`].
    pub fn new(metrics: Arc<Metrics>, node: Node) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            this: this.clone(),
            registry: Mutex::new(Registry::new()),
            metrics,
            node,
            cluster: OnceLock::new(),
            routes: Mutex::new(HashMap::new()),
            counters: Mutex::new(HashMap::new()),
            lost: Mutex::new(LostMembers::new(LOST_MEMORY, LOST_CAPACITY)),
            announcements_taken: std::sync::atomic::AtomicU64::new(0),
            announcements_turn: tokio::sync::watch::Sender::new(0),
            fanouts: Mutex::new(HashMap::new()),
            former_fanouts: Mutex::new(HashMap::new()),
            streams: Streams::new(STREAM_CAPACITY, STREAM_IDLE),
            joining: Mutex::new(HashMap::new()),
            reservations: OnceLock::new(),
        })
    }

    /// Switches to cluster mode: from now on writes go through `gproc`.
    pub fn join_cluster(&self, gproc: GprocDist) {
        let _ = self.cluster.set(gproc);
        let (queue, requests) = mpsc::channel(RESERVATIONS_PER_REQUEST * 4);
        if self.reservations.set(queue).is_ok() {
            tokio::spawn(Self::reserve_together(self.this.clone(), requests));
        }
    }

    /// Serves chat streams' requests for numbers a batch at a time: what
    /// queues while a leader call is in flight goes out in the next one.
    /// Chats whose counter has a known owner are served by one
    /// `update_counters` (gproc_dist's batch of counter updates, one
    /// broadcast for all); a chat without one, or a batch the leader
    /// refuses, goes through [`Directory::reserve_sequences`] chat by chat,
    /// each in a task of its own so that no chat waits for another's.
    async fn reserve_together(this: Weak<Self>, mut requests: mpsc::Receiver<Reservation>) {
        let mut batch = Vec::with_capacity(RESERVATIONS_PER_REQUEST);
        while let Some(first) = requests.recv().await {
            batch.push(first);
            while batch.len() < RESERVATIONS_PER_REQUEST {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            let Some(directory) = this.upgrade() else {
                return;
            };
            directory.reserve_batch(&mut batch).await;
            batch.clear();
        }
    }

    async fn reserve_batch(self: &Arc<Self>, batch: &mut Vec<Reservation>) {
        let mut together = Vec::new();
        {
            let counters = self.counters.lock();
            for request in batch.drain(..) {
                let plan = counters
                    .get(&request.chat)
                    .map(|counter| counter.plan(request.count));
                match plan {
                    Some(Plan::Increment { owner, by }) if i32::try_from(by).is_ok() => {
                        together.push((request, owner, by))
                    }
                    _ => self.reserve_alone(request),
                }
            }
        }
        if together.len() < 2 {
            for (request, _, _) in together {
                self.reserve_alone(request);
            }
            return;
        }
        let mut increments = Vec::with_capacity(together.len());
        for (request, owner, by) in &together {
            let Ok(increment) = i32::try_from(*by) else {
                continue;
            };
            increments.push(tuple(vec![
                sequence_key(&request.chat),
                Term::Pid(owner.0.clone()),
                Term::from(eetf::FixInteger::from(increment)),
            ]));
        }
        let request = tuple(vec![atom("update_counters"), list(increments)]);
        let values = match self.call(request).await {
            Ok(reply) => counter_values(&reply),
            Err(_) => {
                // No leader answer: waiting for another per chat would only
                // hold every chat back longer.
                for (request, _, _) in together {
                    let last = self.reserve_locally(&request.chat, request.count);
                    let _ = request.reply.send(last);
                }
                return;
            }
        };
        let mut numbered = 0;
        for (request, owner, _) in together {
            match values.get(&*request.chat) {
                Some(&last) => {
                    numbered += request.count;
                    if let Some(counter) = self.counters.lock().get_mut(&request.chat) {
                        counter.issued(&owner, last);
                    }
                    let _ = request.reply.send(last);
                }
                // Refused as a whole (an owner gone, a leader without
                // update_counters): one chat at a time.
                None => self.reserve_alone(request),
            }
        }
        if numbered > 0 {
            Metrics::bump(&self.metrics.sequence_requests);
            Metrics::add(&self.metrics.sequenced_events, numbered);
        }
    }

    /// Reserves one chat's numbers with its own leader calls, in a task.
    fn reserve_alone(self: &Arc<Self>, request: Reservation) {
        let this = self.clone();
        tokio::spawn(async move {
            let last = this.reserve_sequences(&request.chat, request.count).await;
            let _ = request.reply.send(last);
        });
    }

    /// The cluster candidate, in cluster mode.
    pub fn cluster(&self) -> Option<&GprocDist> {
        self.cluster.get()
    }

    async fn call(&self, request: Term) -> Result<Term, DirectoryError> {
        let cluster = self
            .cluster
            .get()
            .ok_or_else(|| DirectoryError::Unavailable("not in a cluster".into()))?;
        cluster
            .call(request)
            .await
            .map_err(|error| DirectoryError::Unavailable(error.to_string()))
    }

    /// `chat_stream:register_user/2`: the user's `{n,g,Pid}` with attributes.
    pub async fn register_user(
        &self,
        pid: &Pid,
        route: &MailboxSender,
        user_name: &str,
        user_id: &str,
    ) -> Result<Registered, DirectoryError> {
        if self.cluster.get().is_none() {
            let attrs = UserAttrs {
                user_name: Arc::from(user_name),
                user_id: Arc::from(user_id),
            };
            return Ok(self.registry.lock().ensure_user(pid.clone(), attrs));
        }
        self.routes.lock().insert(pid.clone(), route.clone());
        let me = Term::from(pid.clone());
        let attrs = list(vec![
            tuple(vec![atom("username"), binary(user_name)]),
            tuple(vec![atom("user_id"), binary(user_id)]),
        ]);
        let request = tuple(vec![
            atom("reg"),
            tuple(vec![atom("n"), atom("g"), me.clone()]),
            atom("undefined"),
            me,
            attrs,
            atom("ensure"),
        ]);
        match as_atom(&self.call(request).await?) {
            Some("new") => Ok(Registered::New),
            Some("updated") => Ok(Registered::Updated),
            _ => Err(DirectoryError::Unavailable(
                "the leader refused the user registration".into(),
            )),
        }
    }

    /// `chat_stream:join/3`: registers the membership, announces `joined`
    /// to every member (the joiner included) and returns the members that
    /// were there before, for the joiner's `chat_state`.
    pub async fn join(
        &self,
        chat: &str,
        pid: &Pid,
        route: MailboxSender,
    ) -> Result<Vec<ChatUser>, DirectoryError> {
        if self.cluster.get().is_none() {
            return self.join_local(chat, pid, route);
        }
        let me = Term::from(pid.clone());
        let request = tuple(vec![
            atom("reg"),
            chat_key(chat),
            atom("undefined"),
            me,
            list(vec![]),
            atom("reg"),
        ]);
        let registered = {
            let joining = JoiningGuard::new(self, chat, pid, &route);
            let registered = self.call(request).await?;
            if as_atom(&registered) == Some("true") {
                joining.keep();
            }
            registered
        };
        if as_atom(&registered) != Some("true") {
            return Err(RegistryError::AlreadyMember {
                chat: Arc::from(chat),
                pid: pid.clone(),
            }
            .into());
        }
        // The registration is in the index now (applied before the reply).
        // Register first, then read: everyone registered before us is in
        // our chat_state, everyone after reads us in theirs.
        let (before, attrs) = {
            let registry = self.registry.lock();
            let attrs = registry.user(pid).cloned();
            let before = registry
                .chat(chat)
                .map(|entry| {
                    entry
                        .members()
                        .iter()
                        .take_while(|member| &member.pid != pid)
                        .filter_map(|member| registry.user(&member.pid))
                        .map(|attrs| ChatUser {
                            user_name: attrs.user_name.to_string(),
                            user_id: attrs.user_id.to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            (before, attrs)
        };
        if let Some(attrs) = attrs {
            let kind = EventKind::Joined {
                user_name: attrs.user_name.to_string(),
                user_id: attrs.user_id.to_string(),
            };
            let audience = Audience::Everyone { extra: None };
            self.announce_cluster(chat, pid, kind, audience, false)
                .await;
        }
        Ok(before)
    }

    fn join_local(
        &self,
        chat: &str,
        pid: &Pid,
        route: MailboxSender,
    ) -> Result<Vec<ChatUser>, DirectoryError> {
        let mut registry = self.registry.lock();
        let attrs = registry.user(pid).cloned();
        let joined = registry.join(chat, pid.clone(), Route::Local(route))?;
        let before = joined
            .before
            .into_iter()
            .map(|(_, attrs)| ChatUser {
                user_name: attrs.user_name.to_string(),
                user_id: attrs.user_id.to_string(),
            })
            .collect();
        if let Some(attrs) = attrs {
            let kind = EventKind::Joined {
                user_name: attrs.user_name.to_string(),
                user_id: attrs.user_id.to_string(),
            };
            self.announce_local(joined.chat, kind, None);
        }
        Ok(before)
    }

    /// `chat_stream:post/1`: a message to every member, the sender included.
    pub async fn post(&self, chat: &str, pid: &Pid, user_id: &str, message: String) {
        let kind = EventKind::Message {
            user_id: user_id.to_owned(),
            message,
        };
        if self.cluster.get().is_some() {
            let audience = Audience::Everyone { extra: None };
            self.announce_cluster(chat, pid, kind, audience, false)
                .await;
            return;
        }
        let mut registry = self.registry.lock();
        if let Some(chat) = registry.chat_mut(chat) {
            self.announce_local(chat, kind, None);
        }
    }

    /// `chat_stream:leave/2`: `left` to every member, the leaver included,
    /// then the membership is gone.
    pub async fn leave(&self, chat: &str, pid: &Pid, user_id: &str) -> Result<(), DirectoryError> {
        let kind = EventKind::Left {
            user_id: user_id.to_owned(),
        };
        if self.cluster.get().is_some() {
            // Wait until the `left` (and everything this node queued before
            // it) is out: until then the leaver is still a member and gets
            // its own earlier messages.
            let audience = Audience::Everyone { extra: None };
            self.announce_cluster(chat, pid, kind, audience, true).await;
            self.forget_local_member(chat, pid);
            let request = tuple(vec![atom("unreg"), chat_key(chat), Term::from(pid.clone())]);
            self.call(request).await?;
            self.release_sequence_if_empty(chat).await;
            return Ok(());
        }
        let mut registry = self.registry.lock();
        let leaver = registry
            .chat(chat)
            .and_then(|entry| entry.members().iter().find(|member| &member.pid == pid))
            .map(|member| member.route.clone());
        let entry = registry.leave(chat, pid)?;
        self.announce_local(entry, kind, leaver);
        registry.drop_if_empty(chat);
        Ok(())
    }

    /// A session ended (goodbye, error, close or drop): every chat it was
    /// still in hears `left`, and its user registration is removed, as
    /// gproc does when a registered process dies.
    pub async fn session_ended(&self, pid: &Pid) {
        if self.cluster.get().is_some() {
            let (chats, user_id) = {
                let registry = self.registry.lock();
                let user_id = registry.user(pid).map(|attrs| attrs.user_id.to_string());
                (registry.chats_of(pid).to_vec(), user_id)
            };
            if let Some(user_id) = user_id {
                for chat in chats {
                    if let Err(error) = self.leave(&chat, pid, &user_id).await {
                        warn!(%pid, %chat, %error, "leaving a chat at session end failed");
                    }
                }
            }
            self.routes.lock().remove(pid);
            self.joining.lock().retain(|_, pids| {
                pids.retain(|(member, _)| member != pid);
                !pids.is_empty()
            });
            if let Some(cluster) = self.cluster.get() {
                cluster.cast(tuple(vec![atom("pid_is_DOWN"), Term::from(pid.clone())]));
            }
            return;
        }
        let mut registry = self.registry.lock();
        let (attrs, chats) = registry.remove_process(pid);
        let Some(attrs) = attrs else { return };
        for chat in chats {
            if let Some(entry) = registry.chat_mut(&chat) {
                let kind = EventKind::Left {
                    user_id: attrs.user_id.to_string(),
                };
                self.announce_local(entry, kind, None);
            }
            registry.drop_if_empty(&chat);
        }
    }

    /// Figures for `/metrics` and `/health`.
    pub fn gauges(&self) -> RegistryGauges {
        let registry = self.registry.lock();
        RegistryGauges {
            rooms: registry.chat_count(),
            members: registry.membership_count(),
            users: registry.user_count(),
        }
    }

    /// Single node: the chat's next event, queued for every member (and for
    /// `extra`, a leaver no longer in the list).
    fn announce_local(&self, chat: &mut Chat<Route>, kind: EventKind, extra: Option<Route>) {
        let sequence = chat.next_sequence();
        let event = Arc::new(ChatEvent::new(
            chat.name().clone(),
            kind,
            timestamp_now(),
            sequence,
        ));
        for member in chat.members() {
            self.deliver(&member.route, &event, None, None);
        }
        if let Some(route) = extra {
            self.deliver(&route, &event, None, None);
        }
    }

    /// Cluster: queues the event on its chat's stream, which numbers it and
    /// sends it to its audience (see [`Directory::emit`]); with `wait`,
    /// returns once it has been sent.
    async fn announce_cluster(
        &self,
        chat: &str,
        sender: &Pid,
        kind: EventKind,
        audience: Audience,
        wait: bool,
    ) {
        let Some(this) = self.this.upgrade() else {
            return;
        };
        let (done, sent) = if wait {
            let (done, sent) = oneshot::channel();
            (Some(done), Some(sent))
        } else {
            (None, None)
        };
        let pending = Pending {
            sender: sender.clone(),
            kind,
            audience,
            done,
        };
        self.streams.submit(&this, &Arc::from(chat), pending).await;
        if let Some(sent) = sent {
            let _ = sent.await;
        }
    }

    /// Queues `event` for this node's sessions that hear its chat: its
    /// local members in the replicated registry, and local sessions whose
    /// join is at the leader. Returns how many there were.
    fn deliver_locally(&self, event: &Arc<ChatEvent>) -> usize {
        // Delivery never blocks, so it runs under the lock: no copy of the
        // member list and no route lookup per member and event.
        let joining = self.joining.lock();
        let Some(members) = joining.get(&*event.chat) else {
            return 0;
        };
        let mut accepted = 0;
        for (_, queue) in members {
            if queue.deliver(event) == Delivery::Accepted {
                accepted += 1;
            }
        }
        Metrics::add(&self.metrics.deliveries, accepted);
        members.len()
    }

    /// Whether a chat has members (or joiners) on this node.
    fn has_local_members(&self, chat: &str) -> bool {
        self.joining.lock().contains_key(chat)
    }

    /// A local session is out of `chat` (its `left` has been sent).
    fn forget_local_member(&self, chat: &str, pid: &Pid) {
        let mut joining = self.joining.lock();
        if let Some(pids) = joining.get_mut(chat) {
            pids.retain(|(member, _)| member != pid);
            if pids.is_empty() {
                joining.remove(chat);
            }
        }
    }

    /// Sends a numbered batch of one chat's events: to this node's members
    /// directly, to each other Rust node as one message for the whole batch
    /// (version 2 fan-out), and pid to pid to members on Erlang nodes.
    async fn emit(&self, chat: &Arc<str>, first: u64, batch: &mut Vec<Pending>) {
        // Per node, in sequence order: the batch's records for its fan-out.
        // (fan-out, records, offset of the last event added).
        let mut by_node: HashMap<Arc<str>, (Pid, Vec<Term>, usize)> = HashMap::new();
        let mut sender = None;
        let mut dones = Vec::new();
        let lost_fanouts = self.lost_member_fanouts(chat);
        for (offset, pending) in batch.drain(..).enumerate() {
            let event = Arc::new(ChatEvent::new(
                chat.clone(),
                pending.kind,
                timestamp_now(),
                first + offset as u64,
            ));
            self.deliver_locally(&event);
            dones.extend(pending.done);
            let Audience::Everyone { extra } = pending.audience else {
                continue;
            };
            if let Some(route) = &extra {
                self.deliver(route, &event, None, None);
            }
            let record = records::encode(&event);
            // Members on nodes without a version 2 fan-out: listed per event.
            let mut listed: HashMap<Arc<str>, (Pid, Vec<Term>)> = HashMap::new();
            let mut singles: Vec<Pid> = Vec::new();
            {
                for (node, fanout) in &lost_fanouts {
                    let (_, records, last) = by_node
                        .entry(node.clone())
                        .or_insert_with(|| (fanout.clone(), Vec::new(), usize::MAX));
                    if *last != offset {
                        records.push(record.clone());
                        *last = offset;
                    }
                }
                let registry = self.registry.lock();
                let fanouts = self.fanouts.lock();
                let members = registry
                    .chat(chat)
                    .map(|entry| entry.members())
                    .unwrap_or_default();
                for member in members {
                    let Route::Remote(pid) = &member.route else {
                        continue;
                    };
                    match fanouts.get(&pid.node) {
                        Some(fanout) if fanout.by_chat => {
                            let (_, records, last) = by_node
                                .entry(pid.node.clone())
                                .or_insert_with(|| (fanout.pid.clone(), Vec::new(), usize::MAX));
                            // Once per event, however many members it has there.
                            if *last != offset {
                                records.push(record.clone());
                                *last = offset;
                            }
                        }
                        Some(fanout) => listed
                            .entry(pid.node.clone())
                            .or_insert_with(|| (fanout.pid.clone(), Vec::new()))
                            .1
                            .push(Term::from(pid.clone())),
                        None => singles.push(pid.clone()),
                    }
                }
            }
            // Toward another node the sender waits for room, as an Erlang
            // process is suspended on a busy distribution port: a burst
            // must slow the chat down, never drop a delivery or cost the
            // connection.
            for (_, (fanout, members)) in listed {
                let message = tuple(vec![atom("flack_fanout"), record.clone(), list(members)]);
                self.node
                    .send_wait(Some(&pending.sender), &fanout, message)
                    .await;
            }
            for pid in singles {
                self.node
                    .send_wait(Some(&pending.sender), &pid, record.clone())
                    .await;
            }
            sender.get_or_insert(pending.sender);
        }
        for (_, (fanout, records, _)) in by_node {
            let message = tuple(vec![atom("flack_fanout"), list(records)]);
            self.node.send_wait(sender.as_ref(), &fanout, message).await;
        }
        for done in dones {
            let _ = done.send(());
        }
    }

    fn deliver(
        &self,
        route: &Route,
        event: &Arc<ChatEvent>,
        record: Option<&Term>,
        sender: Option<&Pid>,
    ) {
        let delivery = match route {
            Route::Local(queue) => queue.deliver(event),
            Route::Remote(pid) => {
                let record = record.cloned().unwrap_or_else(|| records::encode(event));
                match sender {
                    Some(from) => self.node.send_from(from, pid, record),
                    None => self.node.send(pid, record),
                }
            }
        };
        if delivery == Delivery::Accepted {
            Metrics::bump(&self.metrics.deliveries);
        }
    }

    /// Reserves `count` consecutive sequence numbers of `chat` and returns
    /// the last: the gproc counter `{c,g,{flack_seq, Chat}}`, incremented
    /// at the leader. Every node increments the same registration of it,
    /// the lowest owner's, and never below the highest number it has seen
    /// (see [`ChatCounter`]). The counter is registered by the first node
    /// that needs it (owned by its gproc_dist process); if its owner's node
    /// goes away, the next batch registers it again above the last value
    /// this node saw. A registration that went away in the meantime (the
    /// leader answers `badarg`) is retried at once with what the broadcasts
    /// said since; only when the cluster does not answer are the numbers
    /// taken here.
    async fn reserve_sequences(&self, chat: &str, count: u64) -> u64 {
        let count = count.max(1);
        Metrics::bump(&self.metrics.sequence_requests);
        Metrics::add(&self.metrics.sequenced_events, count);
        let Some(cluster) = self.cluster.get() else {
            return self.reserve_locally(chat, count);
        };
        let mine = CounterOwner(eetf::Pid::from(&cluster.pid()));
        for _ in 0..SEQUENCE_ATTEMPTS {
            let plan = self
                .counters
                .lock()
                .get(chat)
                .map_or(Plan::Register { initial: count }, |counter| {
                    counter.plan(count)
                });
            match plan {
                Plan::Increment { owner, by } => {
                    let Ok(by) = i32::try_from(by) else { break };
                    let request = tuple(vec![
                        atom("update_counter"),
                        sequence_key(chat),
                        Term::from(eetf::FixInteger::from(by)),
                        Term::Pid(owner.0.clone()),
                    ]);
                    match self.call(request).await {
                        Ok(Term::FixInteger(value)) if value.value > 0 => {
                            let value = value.value as u64;
                            if let Some(counter) = self.counters.lock().get_mut(chat) {
                                counter.issued(&owner, value);
                            }
                            return value;
                        }
                        // Gone at the leader (its broadcast is applied
                        // here by now, but forget it in any case).
                        Ok(_) => {
                            if let Some(counter) = self.counters.lock().get_mut(chat) {
                                counter.unregistered(&owner);
                            }
                        }
                        Err(_) => break,
                    }
                }
                Plan::Register { initial } => {
                    let Ok(value) = i32::try_from(initial) else {
                        break;
                    };
                    let request = tuple(vec![
                        atom("reg"),
                        sequence_key(chat),
                        Term::from(eetf::FixInteger::from(value)),
                        Term::from(cluster.pid().clone()),
                        list(vec![]),
                        atom("reg"),
                    ]);
                    match self.call(request).await {
                        Ok(reply) if as_atom(&reply) == Some("true") => {
                            // Its broadcast, applied before the reply, made
                            // it known here.
                            return initial;
                        }
                        // This node's own registration is there already
                        // (one this node did not hear of): learn its value
                        // and increment it.
                        Ok(_) => {
                            let request = tuple(vec![
                                atom("update_counter"),
                                sequence_key(chat),
                                Term::from(eetf::FixInteger::from(0)),
                                Term::Pid(mine.0.clone()),
                            ]);
                            match self.call(request).await {
                                Ok(Term::FixInteger(value)) if value.value >= 0 => {
                                    self.counters
                                        .lock()
                                        .entry(Arc::from(chat))
                                        .or_default()
                                        .registered(mine.clone(), value.value as u64);
                                }
                                Ok(_) => {}
                                Err(_) => break,
                            }
                        }
                        Err(_) => break,
                    }
                }
            }
        }
        self.reserve_locally(chat, count)
    }

    /// No answer from the cluster: the chat's next numbers are taken here,
    /// above every number this node has seen, rather than hold the messages
    /// back. Numbers can then repeat across nodes (never within one node's
    /// stream of a chat); counted in the log.
    fn reserve_locally(&self, chat: &str, count: u64) -> u64 {
        let last = self
            .counters
            .lock()
            .entry(Arc::from(chat))
            .or_default()
            .reserve_locally(count);
        warn!(%chat, events = count, sequence = last, "no sequence from the cluster; using local ones");
        last
    }

    /// Whether a `joined` for `user_id` in `chat`, arriving for local
    /// member `member`, announces someone registered before that member:
    /// then the member already listed it in its chat_state, and the event
    /// would make it known twice.
    pub fn known_from_chat_state(&self, chat: &str, user_id: &str, member: &Pid) -> bool {
        self.registry
            .lock()
            .registered_before(chat, user_id, member)
    }

    fn route_for(&self, pid: &Pid) -> Route {
        match self.routes.lock().get(pid) {
            Some(queue) => Route::Local(queue.clone()),
            None => Route::Remote(pid.clone()),
        }
    }

    /// Follows the fan-out registrations; returns the node whose fan-out
    /// was just registered, if one was.
    fn track_fanout(
        &self,
        name: &Term,
        owner: Option<eetf::Pid>,
        value: Option<&Term>,
    ) -> Option<Arc<str>> {
        let [tag, node] = crate::node::term::as_tuple(name)? else {
            return None;
        };
        let (Some("flack_fanout"), Some(node)) = (as_atom(tag), as_atom(node)) else {
            return None;
        };
        let node: Arc<str> = Arc::from(node);
        let mut fanouts = self.fanouts.lock();
        match owner {
            Some(pid) => {
                let by_chat = matches!(value, Some(Term::FixInteger(version)) if version.value >= FANOUT_VERSION);
                let fanout = Fanout {
                    pid: Pid::from(&pid),
                    by_chat,
                };
                fanouts.insert(node.clone(), fanout);
                self.former_fanouts.lock().remove(&node);
                Some(node)
            }
            None => {
                // Kept aside: a merge drops a node's registrations for a
                // while although its members are still there.
                if let Some(fanout) = fanouts.remove(&node) {
                    self.former_fanouts.lock().insert(node, fanout);
                }
                None
            }
        }
    }

    /// Where the events of `chat` must also go: the fan-out of every
    /// connected Rust node with members that vanished from this node's
    /// registry (a merge drops another node's members until that node has
    /// registered them again, and they must not miss what is sent
    /// meanwhile). The receiving node delivers to its own members in the
    /// chat only, so this costs nothing but the message when none is left.
    fn lost_member_fanouts(&self, chat: &str) -> Vec<(Arc<str>, Pid)> {
        let nodes = self.lost.lock().nodes_of(chat);
        if nodes.is_empty() {
            return Vec::new();
        }
        let connected: std::collections::HashSet<String> =
            self.node.connected_nodes().into_iter().collect();
        let fanouts = self.fanouts.lock();
        let former = self.former_fanouts.lock();
        nodes
            .into_iter()
            .filter(|node| connected.contains(&**node))
            .filter_map(|node| {
                let fanout = fanouts.get(&node).or_else(|| former.get(&node))?;
                fanout.by_chat.then(|| (node, fanout.pid.clone()))
            })
            .collect()
    }

    /// How many nodes' fan-out processes this node knows (its own included).
    pub fn fanout_count(&self) -> usize {
        self.fanouts.lock().len()
    }

    /// Queues an event received from another node for a local session.
    pub fn deliver_to_session(&self, pid: &Pid, event: &Arc<ChatEvent>) {
        let queue = self.routes.lock().get(pid).cloned();
        if let Some(queue) = queue {
            self.deliver(&Route::Local(queue), event, None, None);
        }
    }

    /// Queues an event another node sent for all of this node's members of
    /// its chat (version 2 fan-out).
    pub fn deliver_to_chat(&self, event: &Arc<ChatEvent>) {
        self.deliver_locally(event);
    }

    /// Registers this node's fan-out process cluster-wide, so other Rust
    /// nodes send it one message per event for all its members instead of
    /// one per member.
    pub async fn register_fanout(&self, fanout: &Pid) -> Result<(), DirectoryError> {
        let name = tuple(vec![atom("flack_fanout"), atom(self.node.name())]);
        let request = tuple(vec![
            atom("reg"),
            tuple(vec![atom("n"), atom("g"), name]),
            Term::from(eetf::FixInteger::from(FANOUT_VERSION)),
            Term::from(fanout.clone()),
            list(vec![]),
            atom("ensure"),
        ]);
        match as_atom(&self.call(request).await?) {
            Some("new" | "updated") => Ok(()),
            _ => Err(DirectoryError::Unavailable(
                "the leader refused the fan-out registration".into(),
            )),
        }
    }

    /// The last member left a chat: its sequence counter goes too, so the
    /// global registry does not keep one counter for every chat ever used.
    /// A chat that fills again starts a new stream of sequence numbers.
    async fn release_sequence_if_empty(&self, chat: &str) {
        let empty = self
            .registry
            .lock()
            .chat(chat)
            .is_none_or(|entry| entry.members().is_empty());
        if !empty {
            return;
        }
        // Every registration, not only the chosen one: a duplicate not yet
        // taken back would outlive the chat.
        let owners: Vec<CounterOwner> = self
            .counters
            .lock()
            .get(chat)
            .map(|counter| counter.owners().cloned().collect())
            .unwrap_or_default();
        for owner in owners {
            let request = tuple(vec![atom("unreg"), sequence_key(chat), Term::Pid(owner.0)]);
            // badarg (already gone) is fine; a chat that refills meanwhile
            // registers a counter again above the last number seen.
            let _ = self.call(request).await;
        }
    }

    /// Follows the registrations of chats' counters: `value` is `Some` when
    /// `owner`'s counter is there with that value, `None` when it is gone.
    fn track_counter(&self, name: &Term, owner: eetf::Pid, value: Option<i64>) {
        let Term::Tuple(parts) = name else { return };
        let [tag, Term::Binary(chat)] = parts.elements.as_slice() else {
            return;
        };
        if as_atom(tag) != Some("flack_seq") {
            return;
        }
        let Ok(chat) = std::str::from_utf8(&chat.bytes) else {
            return;
        };
        let chat_empty = self
            .registry
            .lock()
            .chat(chat)
            .is_none_or(|entry| entry.members().is_empty());
        let owner = CounterOwner(owner);
        let mut counters = self.counters.lock();
        let counter = counters.entry(Arc::from(chat)).or_default();
        match value {
            Some(value) => counter.registered(owner, u64::try_from(value).unwrap_or(0)),
            None => counter.unregistered(&owner),
        }
        if counter.is_unregistered() && chat_empty {
            // Gone with its chat: forget it, so this map stays as small as
            // the set of chats in use.
            counters.remove(chat);
        }
        // A second registration of the counter stays until the chat
        // empties: every node increments the chosen one. Taking this
        // node's duplicate back at once (an unreg while the cluster merges)
        // was seen to leave two candidates stuck in an election under load.
    }
}

impl RegistryObserver for Directory {
    fn registry_changed(&self, changes: Vec<Change>) {
        // A purge may delete a user's memberships before or after its name;
        // take the chats of every user that goes away before applying any.
        let gone: HashMap<Pid, Vec<Arc<str>>> = {
            let registry = self.registry.lock();
            changes
                .iter()
                .filter_map(|change| match change {
                    Change::UserGone(pid) => {
                        let pid = Pid::from(pid);
                        let chats = registry.chats_of(&pid).to_vec();
                        Some((pid, chats))
                    }
                    _ => None,
                })
                .collect()
        };
        // What this node's members must hear about remote members that
        // vanished or came back, in order; a member that vanishes and comes
        // back within one batch (a surrender re-applying the leader's
        // snapshot) is not announced at all.
        let mut announcements: Vec<Option<(Arc<str>, Pid, EventKind)>> = Vec::new();
        let mut pending_lefts: HashMap<(Arc<str>, Pid), usize> = HashMap::new();
        let mut refreshed: Vec<Arc<str>> = Vec::new();
        for change in changes {
            match change {
                Change::User {
                    pid,
                    user_name,
                    user_id,
                } => {
                    let attrs = UserAttrs {
                        user_name: Arc::from(user_name.as_str()),
                        user_id: Arc::from(user_id.as_str()),
                    };
                    self.registry.lock().ensure_user(Pid::from(&pid), attrs);
                }
                Change::UserGone(pid) => {
                    let pid = Pid::from(&pid);
                    let chats = gone.get(&pid).cloned().unwrap_or_default();
                    if let Some((attrs, chats)) = self.member_lost(&pid, chats) {
                        for chat in chats {
                            pending_lefts.insert((chat.clone(), pid.clone()), announcements.len());
                            let kind = EventKind::Left {
                                user_id: attrs.user_id.to_string(),
                            };
                            announcements.push(Some((chat, pid.clone(), kind)));
                        }
                    }
                }
                Change::Joined { chat, pid } => {
                    let pid = Pid::from(&pid);
                    let route = self.route_for(&pid);
                    let remote = matches!(route, Route::Remote(_));
                    let joined = self.registry.lock().join(&chat, pid.clone(), route).is_ok();
                    let back = if joined && remote {
                        self.lost.lock().rejoined(&chat, &pid)
                    } else {
                        None
                    };
                    if let Some(attrs) = back {
                        let chat: Arc<str> = Arc::from(chat.as_str());
                        match pending_lefts.remove(&(chat.clone(), pid.clone())) {
                            Some(at) => announcements[at] = None,
                            None => {
                                let kind = EventKind::Joined {
                                    user_name: attrs.user_name.to_string(),
                                    user_id: attrs.user_id.to_string(),
                                };
                                announcements.push(Some((chat, pid, kind)));
                            }
                        }
                    }
                }
                Change::Left { chat, pid } => {
                    let mut registry = self.registry.lock();
                    let _ = registry.leave(&chat, &Pid::from(&pid));
                    registry.drop_if_empty(&chat);
                }
                Change::Counter { name, owner, value } => {
                    self.track_counter(&name, owner, Some(value))
                }
                Change::CounterGone { name, owner } => self.track_counter(&name, owner, None),
                Change::Name { name, owner, value } => {
                    refreshed.extend(self.track_fanout(&name, owner, value.as_ref()));
                }
            }
        }
        // A node whose fan-out was registered (again) in this batch has
        // registered all it has: its members still missing are gone.
        if !refreshed.is_empty() {
            let mut lost = self.lost.lock();
            for node in refreshed {
                lost.forget_node(&node);
            }
        }
        let announcements: Vec<_> = announcements.into_iter().flatten().collect();
        if announcements.is_empty() {
            return;
        }
        let Some(this) = self.this.upgrade() else {
            return;
        };
        // Numbering is a leader call, which must not be awaited on the
        // gproc_dist task that is telling us about the change. The task
        // queues its events only after those of every batch before it (a
        // member's `left` must not come after its `joined`).
        let ticket = self
            .announcements_taken
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::spawn(async move {
            let mut turn = this.announcements_turn.subscribe();
            let _ = turn.wait_for(|serving| *serving == ticket).await;
            // The next batch's turn comes however this task ends.
            let _next = NextTurn(&this.announcements_turn);
            for (chat, sender, kind) in announcements {
                if !this.has_local_members(&chat) {
                    continue;
                }
                this.announce_cluster(&chat, &sender, kind, Audience::Local, false)
                    .await;
            }
        });
    }
}

impl Directory {
    /// A user's registration vanished. When a remote member's node dies,
    /// nobody sends `user_left` for it (the original removes such members
    /// silently); its chats still held it, so this node tells its own
    /// members that it left: returns its attributes and those chats, and
    /// remembers it, so that its members hear `joined` if a merged registry
    /// brings it back (see [`LostMembers`]).
    fn member_lost(&self, pid: &Pid, chats: Vec<Arc<str>>) -> Option<(UserAttrs, Vec<Arc<str>>)> {
        let (attrs, _) = self.registry.lock().remove_process(pid);
        let (Some(attrs), false) = (attrs, chats.is_empty()) else {
            return None;
        };
        if self.routes.lock().contains_key(pid) {
            return None; // our own session: it announces its own departure
        }
        self.lost
            .lock()
            .lost(pid.clone(), attrs.clone(), chats.clone(), Instant::now());
        Some((attrs, chats))
    }
}

impl Sink<Pending> for Directory {
    fn reserve<'a>(&'a self, chat: &'a Arc<str>, count: u64) -> BoxFuture<'a, u64> {
        async move {
            if let Some(queue) = self.reservations.get() {
                let (reply, last) = oneshot::channel();
                let request = Reservation {
                    chat: chat.clone(),
                    count,
                    reply,
                };
                if queue.send(request).await.is_ok()
                    && let Ok(last) = last.await
                {
                    return last;
                }
            }
            self.reserve_sequences(chat, count).await
        }
        .boxed()
    }

    fn emit<'a>(
        &'a self,
        chat: &'a Arc<str>,
        first: u64,
        batch: &'a mut Vec<Pending>,
    ) -> BoxFuture<'a, ()> {
        Directory::emit(self, chat, first, batch).boxed()
    }
}

/// Gives the turn to the next batch of announcements when dropped.
struct NextTurn<'a>(&'a tokio::sync::watch::Sender<u64>);

impl Drop for NextTurn<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|serving| *serving += 1);
    }
}

/// Lists a local session as a member of a chat while its join is at the
/// leader, and after it if the join succeeds (see
/// [`Directory::deliver_locally`]).
struct JoiningGuard<'a> {
    directory: &'a Directory,
    chat: Arc<str>,
    pid: Pid,
    /// The join succeeded: the session stays listed after the guard.
    kept: bool,
}

impl<'a> JoiningGuard<'a> {
    fn new(directory: &'a Directory, chat: &str, pid: &Pid, route: &MailboxSender) -> Self {
        let chat: Arc<str> = Arc::from(chat);
        directory
            .joining
            .lock()
            .entry(chat.clone())
            .or_default()
            .push((pid.clone(), route.clone()));
        Self {
            directory,
            chat,
            pid: pid.clone(),
            kept: false,
        }
    }

    /// Keeps the session listed as a member of the chat.
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for JoiningGuard<'_> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let mut joining = self.directory.joining.lock();
        if let Some(pids) = joining.get_mut(&self.chat) {
            pids.retain(|(pid, _)| pid != &self.pid);
            if pids.is_empty() {
                joining.remove(&self.chat);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::mailbox::{Mailbox, mailbox};
    use crate::node::NodeConfig;

    fn pid(id: u32) -> Pid {
        Pid::new(Arc::from("nonode@nohost"), id, 0, 0)
    }

    fn drain(mailbox: &mut Mailbox) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(event) = mailbox.events.try_recv() {
            out.push(event.json.to_string());
        }
        out
    }

    async fn directory() -> Arc<Directory> {
        let node = Node::start(NodeConfig::local()).await.expect("local node");
        Directory::new(Arc::new(Metrics::default()), node)
    }

    #[tokio::test]
    async fn join_post_leave_reach_every_member_in_sequence() {
        let directory = directory().await;
        let (a_route, mut a_box) = mailbox(16);
        let (b_route, mut b_box) = mailbox(16);
        directory
            .register_user(&pid(1), &a_route, "ann", "a-id")
            .await
            .expect("registered");
        directory
            .register_user(&pid(2), &b_route, "bob", "b-id")
            .await
            .expect("registered");
        assert!(
            directory
                .join("room", &pid(1), a_route)
                .await
                .expect("join")
                .is_empty()
        );
        let before = directory
            .join("room", &pid(2), b_route)
            .await
            .expect("join");
        assert_eq!(
            before,
            vec![ChatUser {
                user_name: "ann".into(),
                user_id: "a-id".into()
            }]
        );
        directory.post("room", &pid(2), "b-id", "hi".into()).await;
        directory
            .leave("room", &pid(1), "a-id")
            .await
            .expect("member");
        let a_events = drain(&mut a_box);
        let b_events = drain(&mut b_box);
        assert_eq!(a_events.len(), 4, "{a_events:?}");
        assert!(
            a_events[3].contains(r#""record":"left""#) && a_events[3].contains(r#""sequence":4"#)
        );
        assert_eq!(b_events.len(), 3, "{b_events:?}");
        assert!(
            b_events[0].contains(r#""user_name":"bob""#) && b_events[0].contains(r#""sequence":2"#)
        );
        assert!(b_events[2].contains(r#""sequence":4"#));
    }

    #[tokio::test]
    async fn an_ended_session_leaves_all_its_chats() {
        let directory = directory().await;
        let (a_route, mut a_box) = mailbox(16);
        let (b_route, _b_box) = mailbox(16);
        directory
            .register_user(&pid(1), &a_route, "ann", "a-id")
            .await
            .expect("registered");
        directory
            .register_user(&pid(2), &b_route, "bob", "b-id")
            .await
            .expect("registered");
        directory
            .join("x", &pid(1), a_route.clone())
            .await
            .expect("join");
        directory
            .join("x", &pid(2), b_route.clone())
            .await
            .expect("join");
        directory.join("y", &pid(2), b_route).await.expect("join");
        drain(&mut a_box);
        directory.session_ended(&pid(2)).await;
        let events = drain(&mut a_box);
        assert_eq!(events.len(), 1);
        assert!(events[0].contains(r#""record":"left","chat_name":"x","user_id":"b-id""#));
        let gauges = directory.gauges();
        assert_eq!((gauges.rooms, gauges.members, gauges.users), (1, 1, 1));
    }

    /// A remote member's registration vanishes (its node was cut off) and
    /// comes back when the registries merge: this node's members hear
    /// `left`, then `joined`; vanishing and coming back within one batch (a
    /// surrender re-applying the leader's snapshot) is not announced.
    #[tokio::test]
    async fn members_hear_joined_for_a_lost_member_that_is_back() {
        let directory = directory().await;
        let (route, mut inbox) = mailbox(16);
        directory.routes.lock().insert(pid(1), route.clone());
        directory
            .joining
            .lock()
            .insert(Arc::from("room"), vec![(pid(1), route)]);
        let remote = eetf::Pid::new("b@h".to_owned(), 7, 0, 1);
        let user = || Change::User {
            pid: remote.clone(),
            user_name: "bob".into(),
            user_id: "b-id".into(),
        };
        let joined = || Change::Joined {
            chat: "room".into(),
            pid: remote.clone(),
        };
        let settle = || async {
            for _ in 0..50 {
                tokio::task::yield_now().await;
            }
        };
        // An ordinary join elsewhere: announced by its own node, not here.
        directory.registry_changed(vec![user(), joined()]);
        settle().await;
        assert!(drain(&mut inbox).is_empty());
        directory.registry_changed(vec![Change::UserGone(remote.clone())]);
        settle().await;
        let events = drain(&mut inbox);
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(events[0].contains(r#""record":"left""#) && events[0].contains("b-id"));
        directory.registry_changed(vec![user(), joined()]);
        settle().await;
        let events = drain(&mut inbox);
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(events[0].contains(r#""record":"joined""#) && events[0].contains("bob"));
        // Gone and back in one batch: nothing to tell.
        directory.registry_changed(vec![Change::UserGone(remote.clone()), user(), joined()]);
        settle().await;
        assert!(drain(&mut inbox).is_empty());
        assert!(directory.lost.lock().is_empty());
    }
}
