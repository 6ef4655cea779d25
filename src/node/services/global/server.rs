//! The state of this node's `global_name_server`, as a pure state machine:
//! the name table, the lock table, and where the node-up exchange with each
//! peer stands. It is a port of OTP 25's `global.erl` (protocol version 8,
//! spoken unchanged by OTP 25 to 27): every handler here is named after the
//! function of global.erl it follows, and takes the same decisions.
//!
//! Input comes in as the messages global_name_server receives (casts,
//! calls, infos, `nodeup`/`nodedown`, a holder's `'DOWN'`); output is a list
//! of [`Action`]s for the service to carry out (send, reply, tell the
//! locker, start a resolver, connect to nodes). Which processes the table
//! refers to is reported through [`GlobalServer::take_touched`], so that the
//! service monitors exactly those: global's one monitor per name and lock
//! entry becomes one monitor per holding pid, which fires the same
//! clean-up (a pid that ends loses all its names and locks).
//!
//! `prevent_overlapping_partitions` (the kernel parameter, on by default
//! as in OTP 25) works as in global.erl: when a connection is lost, the
//! node multicasts `{lost_connection, Me, XCreation, OpId, Lost}` to the
//! nodes it knows; on such a report from a peer it passes it on once
//! (reports are told apart by node pair, the sender's creation and a
//! monotonic id, and forgotten after an hour), asks the lost node to drop
//! the connection to it (`{remove_connection, Me}`) and forgets it. With
//! the parameter off it does neither and ignores reports, but obeys
//! `remove_connection` as every OTP node does. Time comes in as an
//! argument ([`GlobalServer::info`]'s `now`), so the machine stays pure.
//!
//! What this node does not do: there are no global groups (every node is a
//! participant and none a group member, as on an OTP node without
//! `global_groups`), `connect_all` is always on, and names registered with
//! `register_name_external` are kept as ordinary names.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eetf::Term;

use super::wire::{self, Op, as_int, as_pid, int};
use crate::node::pid::Pid;
use crate::node::term::{as_atom, as_list, as_tuple, atom, list, tuple};

/// A registered global name.
#[derive(Debug, Clone, PartialEq)]
pub struct NameEntry {
    /// The holder.
    pub pid: Pid,
    /// The clash resolver given at registration.
    pub method: Term,
}

/// A set lock: `{ResourceId, LockRequesterId}` and the pids holding it.
#[derive(Debug, Clone, PartialEq)]
pub struct LockEntry {
    /// The requester id all holders share.
    pub requester: Term,
    /// The holders, newest first.
    pub holders: Vec<Pid>,
}

/// What the service must do after a step of the state machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `gen_server:cast({global_name_server, Node}, Msg)`.
    Cast {
        /// The peer.
        node: Arc<str>,
        /// The cast's message (wrapped in `'$gen_cast'` by the service).
        msg: Term,
    },
    /// `{global_name_server, Node} ! Msg` without connecting
    /// (`gns_volatile_send`, `[noconnect]`).
    Send {
        /// The peer.
        node: Arc<str>,
        /// The message.
        msg: Term,
    },
    /// `gen_server:reply(From, Reply)`.
    Reply {
        /// The caller's `From`.
        from: Term,
        /// The reply.
        reply: Term,
    },
    /// A message to this node's locker.
    Locker(LockerMsg),
    /// Start the resolver of `node`'s exchange on `names` (his names).
    Resolve {
        /// The peer.
        node: Arc<str>,
        /// Our tag of the exchange.
        tag: i64,
        /// His `{Name, Pid, Method}` list.
        names: Vec<(Term, Pid, Term)>,
    },
    /// `sync_others/1`: connect to each node, then cast `{in_sync, node(),
    /// true}` to it, or report `extra_nodedown` when it cannot be reached.
    SyncOthers(Vec<Arc<str>>),
    /// `net_kernel:async_disconnect(Node)`.
    Disconnect(Arc<str>),
}

/// What global_name_server tells its locker (global.erl's `the_locker`).
#[derive(Debug, Clone, PartialEq)]
pub enum LockerMsg {
    /// `{his_the_locker, HisTheLocker, {Vsn, _}, HisTag, MyTag}`: a peer's
    /// locker to lock with.
    HisTheLocker {
        /// His locker's pid.
        locker: Pid,
        /// His protocol version.
        vsn: i64,
        /// His tag of the exchange.
        his_tag: Term,
        /// Ours.
        my_tag: i64,
    },
    /// `{cancel, Node, Tag, Fun}`: the exchange with `node` ended; `then`
    /// is the fun (`None` is `no_fun`): casts to send before the lock goes.
    Cancel {
        /// The peer.
        node: Arc<str>,
        /// Our tag of the exchange (`undefined` when none).
        tag: Option<i64>,
        /// global's `NewNodesF`: the `new_nodes` casts.
        then: Option<Vec<(Arc<str>, Term)>>,
    },
    /// `{lock_set, Pid, Set, HisKnown[, MyTag]}` from a peer's locker.
    LockSet {
        /// His locker.
        from: Pid,
        /// Whether he set the lock.
        set: bool,
        /// Our tag, when the message carried one.
        tag: Option<Term>,
    },
    /// `{add_to_known, Nodes}`.
    AddToKnown(Vec<Arc<str>>),
    /// `{remove_from_known, Node}`.
    RemoveFromKnown(Arc<str>),
}

/// `{wait_lock, Node}`.
#[derive(Debug, Clone, PartialEq, Default)]
enum WaitLock {
    #[default]
    None,
    LockIsSet,
    Exchange(Vec<(Term, Pid, Term)>),
}

/// `{save_ops, Node}`.
#[derive(Debug, Clone, PartialEq, Default)]
enum SaveOps {
    #[default]
    None,
    Ops(Vec<Op>),
    Resolved {
        his_known: Term,
        names_ext: Term,
        his_resolved: Vec<Op>,
    },
}

/// global.erl's process dictionary entries for one peer.
#[derive(Debug, Clone, Default)]
struct NodeSync {
    my_tag: Option<i64>,
    his_tag: Option<Term>,
    prot_vsn: Option<i64>,
    wait_lock: WaitLock,
    save_ops: SaveOps,
    pre_connect: Option<(Term, Term, Term)>,
    lock_id: Option<Term>,
}

/// A `global:sync/0,1` waiting for nodes.
#[derive(Debug, Clone)]
struct Syncer {
    from: Term,
    waiting: BTreeSet<Arc<str>>,
}

/// How a node went down, for `handle_nodedown/3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeDown {
    /// The connection was lost.
    Disconnected,
    /// Removed to prevent overlapping partitions.
    RemoveConnection,
    /// Ignored (not a global group participant).
    IgnoreNode,
}

/// How long a `lost_connection` report is remembered (global's timer on
/// each `global_lost_connections` entry: one hour).
pub const LOST_CONNECTION_MEMORY: Duration = Duration::from_secs(60 * 60);

/// Most `lost_connection` reports remembered at once. global keeps one per
/// node pair with no bound; a peer inventing node names must not grow this
/// node's memory, so past this many the oldest is forgotten (which only
/// means a repeat of it would be passed on and acted on once more).
pub const LOST_CONNECTIONS_MAX: usize = 4096;

/// The last `lost_connection` report seen for a pair of nodes (global's
/// `global_lost_connections` entry).
#[derive(Debug, Clone)]
struct LostConnection {
    /// The reporter's `XCreation` (which incarnation of it sent it).
    x_creation: Term,
    /// The reporter's monotonic operation id.
    op_id: i64,
    /// When it was seen, to forget it after [`LOST_CONNECTION_MEMORY`].
    seen: Instant,
}

/// The state of global_name_server.
#[derive(Debug)]
pub struct GlobalServer {
    me: Arc<str>,
    /// The kernel parameter `prevent_overlapping_partitions`.
    prevent_overlapping_partitions: bool,
    /// This incarnation's `XCreation` (global's `creation_extension` plus
    /// the node's creation plus 2^59): tells receivers of our reports that
    /// a restarted node's operation ids start afresh.
    x_creation: i64,
    /// The last operation id used in a report of ours
    /// (`erlang:unique_integer([monotonic])`).
    last_op_id: i64,
    /// `global_lost_connections`, by `{NodeA, NodeB}`.
    lost_connections: HashMap<(Arc<str>, Arc<str>), LostConnection>,
    locker: Option<Pid>,
    names: HashMap<Term, NameEntry>,
    pid_names: HashMap<Pid, HashSet<Term>>,
    locks: HashMap<Term, LockEntry>,
    pid_locks: HashMap<Pid, HashSet<Term>>,
    global_lock_down: bool,
    known: BTreeMap<Arc<str>, i64>,
    pending: BTreeMap<Arc<str>, i64>,
    removing: BTreeSet<Arc<str>>,
    synced: Vec<Arc<str>>,
    peers: HashMap<Arc<str>, NodeSync>,
    resolvers: HashMap<Arc<str>, i64>,
    syncers: Vec<Syncer>,
    next_tag: i64,
    touched: Vec<Pid>,
}

fn undefined() -> Term {
    atom("undefined")
}

impl GlobalServer {
    /// The state of a fresh global_name_server on node `me`.
    pub fn new(me: Arc<str>) -> Self {
        Self {
            me,
            prevent_overlapping_partitions: true,
            x_creation: 1 << 59,
            last_op_id: 0,
            lost_connections: HashMap::new(),
            locker: None,
            names: HashMap::new(),
            pid_names: HashMap::new(),
            locks: HashMap::new(),
            pid_locks: HashMap::new(),
            global_lock_down: false,
            known: BTreeMap::new(),
            pending: BTreeMap::new(),
            removing: BTreeSet::new(),
            synced: Vec::new(),
            peers: HashMap::new(),
            resolvers: HashMap::new(),
            syncers: Vec::new(),
            next_tag: 1,
            touched: Vec::new(),
        }
    }

    /// Sets `prevent_overlapping_partitions` and this incarnation's
    /// `XCreation` (a number no earlier incarnation of the node used), as
    /// global's `init/1` reads and makes them.
    pub fn with_partitions(
        mut self,
        prevent_overlapping_partitions: bool,
        x_creation: i64,
    ) -> Self {
        self.prevent_overlapping_partitions = prevent_overlapping_partitions;
        self.x_creation = x_creation;
        self
    }

    /// This node's name.
    pub fn me(&self) -> &Arc<str> {
        &self.me
    }

    /// Sets the pid of this node's locker (sent in `init_connect`).
    pub fn set_locker(&mut self, locker: Pid) {
        self.locker = Some(locker);
    }

    /// A new incarnation of the service: exchanges under way are dropped
    /// (their lockers and resolvers are gone), to be started again with
    /// [`GlobalServer::nodeup`]. Names, locks, known and synced peers stay;
    /// syncers are answered by nobody any more and are dropped.
    pub fn restart(&mut self) {
        self.pending.clear();
        self.resolvers.clear();
        self.peers.clear();
        self.syncers.clear();
    }

    // ----- queries ---------------------------------------------------------

    /// The holder of `name` (the caller checks that a local holder lives).
    pub fn whereis(&self, name: &Term) -> Option<&Pid> {
        self.names.get(name).map(|e| &e.pid)
    }

    /// Every registered name.
    pub fn registered_names(&self) -> Vec<Term> {
        self.names.keys().cloned().collect()
    }

    /// The names `pid` holds.
    pub fn names_of(&self, pid: &Pid) -> usize {
        self.pid_names.get(pid).map_or(0, HashSet::len)
    }

    /// The nodes global knows (its `get_known`).
    pub fn known_nodes(&self) -> Vec<Arc<str>> {
        self.known.keys().cloned().collect()
    }

    /// The nodes this node has synced with (`get_synced`).
    pub fn synced_nodes(&self) -> Vec<Arc<str>> {
        self.synced.clone()
    }

    /// Whether some lock is set on `resource` here.
    pub fn is_lock_set(&self, resource: &Term) -> bool {
        self.locks.contains_key(resource)
    }

    /// The lock on `resource`, if set.
    pub fn lock(&self, resource: &Term) -> Option<&LockEntry> {
        self.locks.get(resource)
    }

    /// `can_set_lock/1`: whether `{Resource, Requester}` could be set here.
    pub fn can_set_lock(&self, id: &Term) -> bool {
        match as_tuple(id) {
            Some([resource, requester]) => match self.locks.get(resource) {
                Some(lock) => lock.requester == *requester,
                None => true,
            },
            _ => false,
        }
    }

    /// Whether the table refers to `pid` (as a name or lock holder): the
    /// service keeps a monitor on exactly those pids.
    pub fn refers_to(&self, pid: &Pid) -> bool {
        self.pid_names.contains_key(pid) || self.pid_locks.contains_key(pid)
    }

    /// The pids whose entries changed since the last call.
    pub fn take_touched(&mut self) -> Vec<Pid> {
        std::mem::take(&mut self.touched)
    }

    /// Every pid the table refers to (to monitor them all again after a
    /// restart).
    pub fn all_holders(&self) -> Vec<Pid> {
        let mut all: BTreeSet<Pid> = self.pid_names.keys().cloned().collect();
        all.extend(self.pid_locks.keys().cloned());
        all.into_iter().collect()
    }

    /// Our names as `{Name, Pid, Method}` (`get_names/0`).
    pub fn names_term(&self) -> Term {
        list(
            self.names
                .iter()
                .map(|(name, e)| tuple(vec![name.clone(), e.pid.clone().into(), e.method.clone()]))
                .collect(),
        )
    }

    /// Our entry for `name`: `(Pid, Method)`.
    pub fn entry(&self, name: &Term) -> Option<&NameEntry> {
        self.names.get(name)
    }

    fn node_vsn(&self, node: &str) -> i64 {
        if node == &*self.me {
            return wire::PROTOCOL_VERSION;
        }
        self.known
            .get(node)
            .or_else(|| self.pending.get(node))
            .copied()
            .unwrap_or(0)
    }

    /// `mk_known_list/2` for version 7 and later: `[{Node, Vsn}]`.
    fn known_list(&self) -> Term {
        list(
            self.known
                .iter()
                .map(|(n, v)| tuple(vec![atom(n), int(*v)]))
                .collect(),
        )
    }

    fn peer(&mut self, node: &Arc<str>) -> &mut NodeSync {
        self.peers.entry(node.clone()).or_default()
    }

    fn my_tag(&self, node: &str) -> Option<i64> {
        self.peers.get(node).and_then(|p| p.my_tag)
    }

    fn tag_matches(&self, node: &str, tag: &Term) -> bool {
        match (self.my_tag(node), as_int(tag)) {
            (Some(mine), Some(t)) => mine == t,
            (None, None) => as_atom(tag) == Some("undefined"),
            _ => false,
        }
    }

    fn his_tag_term(&self, node: &str) -> Term {
        self.peers
            .get(node)
            .and_then(|p| p.his_tag.clone())
            .unwrap_or_else(undefined)
    }

    // ----- node up and down --------------------------------------------------

    /// `{nodeup, Node, _}` for a visible peer (`handle_nodeup/2`).
    pub fn nodeup(&mut self, node: &Arc<str>, out: &mut Vec<Action>) {
        if node == &self.me || self.known.contains_key(node) || self.resolvers.contains_key(node) {
            return;
        }
        let pre_connect = self.peer(node).pre_connect.take();
        let tag = self.next_tag;
        self.next_tag += 1;
        self.peer(node).my_tag = Some(tag);
        let locker = self
            .locker
            .clone()
            .map(Term::from)
            .unwrap_or_else(undefined);
        let init = tuple(vec![
            atom("init_connect"),
            tuple(vec![int(wire::PROTOCOL_VERSION), int(tag)]),
            atom(&self.me),
            tuple(vec![
                atom("locker"),
                atom("no_longer_a_pid"),
                Term::from(eetf::Map::from(HashMap::<Term, Term>::new())),
                locker,
            ]),
        ]);
        out.push(Action::Cast {
            node: node.clone(),
            msg: init,
        });
        self.resolvers.insert(node.clone(), tag);
        // resend_pre_connect/1 casts the saved init_connect to ourselves,
        // so that it is handled after this.
        if let Some((vsn, init_msg, his_tag)) = pre_connect {
            let vsn = tuple(vec![vsn, his_tag]);
            self.init_connect_msg(&vsn, node, &init_msg, out);
        }
    }

    /// `{nodedown, Node, _}` (`handle_info` and `handle_nodedown/3`).
    pub fn nodedown(&mut self, node: &Arc<str>, out: &mut Vec<Action>) {
        if node == &self.me {
            return;
        }
        self.syncers_nodedown(node, out);
        self.handle_nodedown(node, NodeDown::Disconnected, out);
    }

    /// `{extra_nodedown, Node}`: `sync_others` could not reach `node`.
    pub fn extra_nodedown(&mut self, node: &Arc<str>, out: &mut Vec<Action>) {
        self.syncers_nodedown(node, out);
        self.handle_nodedown(node, NodeDown::Disconnected, out);
    }

    fn handle_nodedown(&mut self, node: &Arc<str>, what: NodeDown, out: &mut Vec<Action>) {
        let tag = self.my_tag(node);
        self.cancel_locker(node, tag, None, out);
        out.push(Action::Locker(LockerMsg::RemoveFromKnown(node.clone())));
        self.reset_node_state(node);
        match what {
            NodeDown::RemoveConnection => {
                self.removing.insert(node.clone());
            }
            NodeDown::IgnoreNode => {
                self.removing.remove(node);
            }
            NodeDown::Disconnected => {
                // A node we asked to go (or that asked us) is not a loss to
                // report; any other is.
                if !self.removing.remove(node) {
                    self.inform_connection_loss(node, out);
                }
            }
        }
        self.pending.remove(node);
        self.known.remove(node);
        if let Some(i) = self.synced.iter().position(|n| n == node) {
            self.synced.remove(i);
        }
    }

    /// `inform_connection_loss/2`: with `prevent_overlapping_partitions`,
    /// tell every node we know (synced or pending) but `node` that we lost
    /// it.
    fn inform_connection_loss(&mut self, node: &Arc<str>, out: &mut Vec<Action>) {
        if !self.prevent_overlapping_partitions {
            return;
        }
        self.last_op_id += 1;
        let msg = tuple(vec![
            atom("lost_connection"),
            atom(&self.me),
            int(self.x_creation),
            int(self.last_op_id),
            atom(node),
        ]);
        self.volatile_multicast(&msg, node, out);
    }

    /// `gns_volatile_multicast(Msg, IgnoreNode, 7, true, S)`: `msg` to
    /// global_name_server on every known or pending node of protocol
    /// version 7 or later but `ignore`, without connecting.
    fn volatile_multicast(&self, msg: &Term, ignore: &str, out: &mut Vec<Action>) {
        let to: BTreeSet<&Arc<str>> = self
            .known
            .iter()
            .chain(self.pending.iter())
            .filter(|(n, v)| ***n != *ignore && **v >= 7)
            .map(|(n, _)| n)
            .collect();
        for node in to {
            out.push(Action::Send {
                node: node.clone(),
                msg: msg.clone(),
            });
        }
    }

    /// `handle_info({lost_connection, NodeA, XCreationA, OpIdA, NodeB})`
    /// with `prevent_overlapping_partitions` on: `node_a` lost `node_b`.
    /// A report not seen before is passed on, and the one of the pair that
    /// is not us is asked to drop its connection to us and forgotten.
    fn lost_connection(&mut self, msg: &Term, now: Instant, out: &mut Vec<Action>) {
        let Some([_, node_a, x_creation, op_id, node_b]) = as_tuple(msg) else {
            return;
        };
        let (Some(node_a), Some(node_b), Some(op_id)) =
            (as_atom(node_a), as_atom(node_b), as_int(op_id))
        else {
            return;
        };
        let (node_a, node_b): (Arc<str>, Arc<str>) = (Arc::from(node_a), Arc::from(node_b));
        let key = (node_a.clone(), node_b.clone());
        if let Some(seen) = self.lost_connections.get(&key)
            && now.saturating_duration_since(seen.seen) < LOST_CONNECTION_MEMORY
            && seen.x_creation == *x_creation
            && op_id <= seen.op_id
        {
            return;
        }
        self.volatile_multicast(msg, &node_a, out);
        self.remember_lost_connection(
            key,
            LostConnection {
                x_creation: x_creation.clone(),
                op_id,
                seen: now,
            },
        );
        let remove = if *self.me == *node_b { node_a } else { node_b };
        if !(self.known.contains_key(&remove) || self.pending.contains_key(&remove)) {
            return;
        }
        if self.node_vsn(&remove) < 7 {
            // The service logs the disconnect.
            out.push(Action::Disconnect(remove.clone()));
        } else {
            tracing::warn!(
                "'global' at node {} requested disconnect from node {remove} in order to prevent overlapping partitions",
                self.me
            );
            out.push(Action::Send {
                node: remove.clone(),
                msg: tuple(vec![atom("remove_connection"), atom(&self.me)]),
            });
        }
        self.handle_nodedown(&remove, NodeDown::RemoveConnection, out);
    }

    /// Saves a report, forgetting those older than an hour (global's
    /// timers) and, past [`LOST_CONNECTIONS_MAX`], the oldest.
    fn remember_lost_connection(&mut self, key: (Arc<str>, Arc<str>), seen: LostConnection) {
        if self.lost_connections.len() >= LOST_CONNECTIONS_MAX {
            let now = seen.seen;
            self.lost_connections
                .retain(|_, l| now.saturating_duration_since(l.seen) < LOST_CONNECTION_MEMORY);
            while self.lost_connections.len() >= LOST_CONNECTIONS_MAX {
                let Some(oldest) = self
                    .lost_connections
                    .iter()
                    .min_by_key(|(_, l)| l.seen)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                self.lost_connections.remove(&oldest);
            }
        }
        self.lost_connections.insert(key, seen);
    }

    fn reset_node_state(&mut self, node: &Arc<str>) {
        self.peers.remove(node);
    }

    /// `cancel_locker/4`.
    fn cancel_locker(
        &mut self,
        node: &Arc<str>,
        tag: Option<i64>,
        then: Option<Vec<(Arc<str>, Term)>>,
        out: &mut Vec<Action>,
    ) {
        out.push(Action::Locker(LockerMsg::Cancel {
            node: node.clone(),
            tag,
            then,
        }));
        self.send_cancel_connect(node, tag, out);
        if tag.is_some() && self.resolvers.get(node) == tag.as_ref() {
            // exit(Resolver, kill): its result will not match a tag any more.
            self.resolvers.remove(node);
        }
    }

    fn send_cancel_connect(&mut self, node: &Arc<str>, tag: Option<i64>, out: &mut Vec<Action>) {
        match self.pending.get(node) {
            Some(v) if *v >= 8 => {}
            _ => return,
        }
        if self.my_tag(node) != tag {
            return;
        }
        let his = self.his_tag_term(node);
        out.push(Action::Send {
            node: node.clone(),
            msg: tuple(vec![atom("cancel_connect"), atom(&self.me), his]),
        });
    }

    fn restart_connect(&mut self, node: &Arc<str>, tag: Option<i64>, out: &mut Vec<Action>) {
        self.cancel_locker(node, tag, None, out);
        self.reset_node_state(node);
        self.pending.remove(node);
        if tag.is_some() {
            self.nodeup(node, out);
        }
    }

    // ----- casts -------------------------------------------------------------

    /// A `'$gen_cast'` to global_name_server (its `handle_cast/2`).
    pub fn cast(&mut self, msg: &Term, out: &mut Vec<Action>) {
        let Some(items) = as_tuple(msg) else { return };
        let Some(kind) = items.first().and_then(as_atom) else {
            return;
        };
        match (kind, &items[1..]) {
            ("init_connect", [vsn, node, init_msg]) => {
                if let Some(node) = as_atom(node).map(Arc::from) {
                    self.init_connect_msg(vsn, &node, init_msg, out);
                }
            }
            ("exchange", [node, names, _ext, tag]) => {
                let Some(node) = as_atom(node).map(Arc::<str>::from) else {
                    return;
                };
                if self.tag_matches(&node, tag) {
                    let names = wire::parse_name_list(names);
                    self.exchange(&node, names, out);
                } else {
                    self.cancel_locker(&node, as_int(tag), None, out);
                }
            }
            ("resolved", [node, his_resolved, his_known, _unused, names_ext, tag]) => {
                let Some(node) = as_atom(node).map(Arc::<str>::from) else {
                    return;
                };
                if !self.tag_matches(&node, tag) {
                    self.cancel_locker(&node, as_int(tag), None, out);
                    return;
                }
                let his_resolved = wire::parse_ops(his_resolved);
                match std::mem::take(&mut self.peer(&node).save_ops) {
                    SaveOps::Ops(ops) => {
                        self.peer(&node).save_ops = SaveOps::Ops(ops);
                        self.resolved(&node, his_resolved, his_known, names_ext, out);
                    }
                    SaveOps::None => {
                        self.peer(&node).save_ops = SaveOps::Resolved {
                            his_known: his_known.clone(),
                            names_ext: names_ext.clone(),
                            his_resolved,
                        };
                    }
                    // A second `resolved` (global would crash): ignored.
                    saved @ SaveOps::Resolved { .. } => self.peer(&node).save_ops = saved,
                }
            }
            ("new_nodes", [node, ops, names_ext, nodes, extra]) => {
                let Some(node) = as_atom(node).map(Arc::<str>::from) else {
                    return;
                };
                self.new_nodes(&node, &wire::parse_ops(ops), names_ext, nodes, extra, out);
            }
            ("in_sync", [node, _is_known]) => {
                let Some(node) = as_atom(node).map(Arc::<str>::from) else {
                    return;
                };
                self.syncers_synced(&node, out);
                if !self.synced.contains(&node) {
                    self.synced.insert(0, node.clone());
                }
                self.pending.remove(&node);
                let tag = self.my_tag(&node);
                self.cancel_locker(&node, tag, None, out);
                self.reset_node_state(&node);
            }
            ("lock_set", [pid, set, _his_known, tag]) => {
                let Some(from) = as_pid(pid) else { return };
                if self.tag_matches(&from.node, tag) {
                    out.push(Action::Locker(LockerMsg::LockSet {
                        from,
                        set: as_atom(set) == Some("true"),
                        tag: Some(tag.clone()),
                    }));
                }
            }
            ("lock_set", [pid, set, _his_known]) => {
                let Some(from) = as_pid(pid) else { return };
                out.push(Action::Locker(LockerMsg::LockSet {
                    from,
                    set: as_atom(set) == Some("true"),
                    tag: None,
                }));
            }
            // async_del_name, async_del_lock: no-ops in global; the rest is
            // unexpected and logged by global.
            _ => {}
        }
    }

    /// `handle_cast({init_connect, Vsn, Node, InitMsg})`.
    fn init_connect_msg(
        &mut self,
        vsn: &Term,
        node: &Arc<str>,
        init_msg: &Term,
        out: &mut Vec<Action>,
    ) {
        let Some(items) = as_tuple(vsn) else { return };
        let (Some(his_vsn), Some(his_tag)) = (items.first().and_then(as_int), items.get(1)) else {
            return;
        };
        let vsn = his_vsn.min(wire::PROTOCOL_VERSION);
        self.init_connect(vsn, node, init_msg, his_tag.clone(), his_vsn, out);
    }

    fn init_connect(
        &mut self,
        vsn: i64,
        node: &Arc<str>,
        init_msg: &Term,
        his_tag: Term,
        his_vsn: i64,
        out: &mut Vec<Action>,
    ) {
        if node == &self.me {
            return;
        }
        if self.pending.contains_key(node) {
            if his_vsn < 8 {
                out.push(Action::Disconnect(node.clone()));
                return;
            }
            out.push(Action::Send {
                node: node.clone(),
                msg: tuple(vec![
                    atom("cancel_connect"),
                    atom(&self.me),
                    his_tag.clone(),
                ]),
            });
            let old = self.my_tag(node);
            self.restart_connect(node, old, out);
        }
        self.peer(node).prot_vsn = Some(vsn);
        self.peer(node).his_tag = Some(his_tag.clone());
        match self.resolvers.get(node).copied() {
            Some(my_tag) => {
                let his_locker = match as_tuple(init_msg) {
                    Some([_, _, _, locker]) => as_pid(locker),
                    _ => None,
                };
                if let Some(locker) = his_locker {
                    out.push(Action::Locker(LockerMsg::HisTheLocker {
                        locker,
                        vsn,
                        his_tag: his_tag.clone(),
                        my_tag,
                    }));
                }
                if his_vsn >= 8 {
                    out.push(Action::Send {
                        node: node.clone(),
                        msg: tuple(vec![
                            atom("init_connect_ack"),
                            atom(&self.me),
                            his_tag,
                            int(my_tag),
                        ]),
                    });
                }
                self.pending.insert(node.clone(), his_vsn);
            }
            None => {
                self.peer(node).pre_connect = Some((int(vsn), init_msg.clone(), his_tag));
            }
        }
    }

    /// `{lock_is_set, Node, MyTag, LockId}` from our locker.
    pub fn lock_is_set(&mut self, node: &Arc<str>, tag: i64, lock_id: Term, out: &mut Vec<Action>) {
        if self.my_tag(node) != Some(tag) {
            self.cancel_locker(node, Some(tag), None, out);
            return;
        }
        let his = self.his_tag_term(node);
        out.push(Action::Cast {
            node: node.clone(),
            msg: tuple(vec![
                atom("exchange"),
                atom(&self.me),
                self.names_term(),
                list(vec![]),
                his,
            ]),
        });
        self.peer(node).lock_id = Some(lock_id);
        match std::mem::take(&mut self.peer(node).wait_lock) {
            WaitLock::Exchange(names) => self.resolve(node, names, out),
            _ => self.peer(node).wait_lock = WaitLock::LockIsSet,
        }
    }

    /// `exchange/3`.
    fn exchange(&mut self, node: &Arc<str>, names: Vec<(Term, Pid, Term)>, out: &mut Vec<Action>) {
        match std::mem::take(&mut self.peer(node).wait_lock) {
            WaitLock::LockIsSet => self.resolve(node, names, out),
            _ => self.peer(node).wait_lock = WaitLock::Exchange(names),
        }
    }

    fn resolve(&mut self, node: &Arc<str>, names: Vec<(Term, Pid, Term)>, out: &mut Vec<Action>) {
        if let Some(tag) = self.resolvers.get(node).copied() {
            out.push(Action::Resolve {
                node: node.clone(),
                tag,
                names,
            });
        }
    }

    /// `{exchange_ops, Node, MyTag, Ops, Resolved}` from our resolver.
    pub fn exchange_ops(
        &mut self,
        node: &Arc<str>,
        tag: i64,
        ops: Vec<Op>,
        resolved: Vec<Op>,
        out: &mut Vec<Action>,
    ) {
        if self.my_tag(node) != Some(tag) {
            self.cancel_locker(node, Some(tag), None, out);
            return;
        }
        let his = self.his_tag_term(node);
        out.push(Action::Cast {
            node: node.clone(),
            msg: tuple(vec![
                atom("resolved"),
                atom(&self.me),
                wire::ops_term(&resolved),
                self.known_list(),
                atom("unused"),
                list(vec![]),
                his,
            ]),
        });
        if let SaveOps::Resolved {
            his_known,
            names_ext,
            his_resolved,
        } = std::mem::replace(&mut self.peer(node).save_ops, SaveOps::Ops(ops))
        {
            self.resolved(node, his_resolved, &his_known, &names_ext, out);
        }
    }

    /// `resolved/5`: both halves of the exchange with `node` are in.
    fn resolved(
        &mut self,
        node: &Arc<str>,
        his_resolved: Vec<Op>,
        his_known: &Term,
        _names_ext: &Term,
        out: &mut Vec<Action>,
    ) {
        let mut ops = match std::mem::take(&mut self.peer(node).save_ops) {
            SaveOps::Ops(ops) => ops,
            _ => Vec::new(),
        };
        ops.extend(his_resolved);
        let known_before = self.known.clone();
        let mut new_nodes = vec![(node.clone(), None)];
        new_nodes.extend(wire::parse_node_vsns(his_known));
        let new_nodes: Vec<(Arc<str>, i64)> = new_nodes
            .into_iter()
            .map(|(n, v)| {
                let v = match v {
                    Some(v) if v != 0 => v,
                    _ => self.node_vsn(&n),
                };
                (n, v)
            })
            .collect();
        let his_known_nodes = wire::parse_nodes(his_known);
        out.push(Action::SyncOthers(his_known_nodes.clone()));
        let peer = self.peers.get(node).cloned().unwrap_or_default();
        let extra = tuple_list_extra(peer.prot_vsn, peer.lock_id.clone());
        self.do_ops(&ops, Inserter::Node, &extra);
        self.syncers_synced(node, out);
        for cancel in &his_known_nodes {
            let tag = self.my_tag(cancel);
            self.pending.remove(cancel);
            self.cancel_locker(cancel, tag, None, out);
            self.reset_node_state(cancel);
        }
        let msg = tuple(vec![
            atom("new_nodes"),
            atom(&self.me),
            wire::ops_term(&ops),
            list(vec![]),
            list(
                new_nodes
                    .iter()
                    .map(|(n, v)| tuple(vec![atom(n), int(*v)]))
                    .collect(),
            ),
            extra.clone(),
        ]);
        let old_msg = tuple(vec![
            atom("new_nodes"),
            atom(&self.me),
            wire::ops_term(&ops),
            list(vec![]),
            list(new_nodes.iter().map(|(n, _)| atom(n)).collect()),
            extra,
        ]);
        let casts: Vec<(Arc<str>, Term)> = known_before
            .iter()
            .map(|(n, v)| {
                (
                    n.clone(),
                    if *v >= 7 {
                        msg.clone()
                    } else {
                        old_msg.clone()
                    },
                )
            })
            .collect();
        let tag = self.my_tag(node);
        self.pending.remove(node);
        self.cancel_locker(node, tag, Some(casts), out);
        self.reset_node_state(node);
        let added = self.add_to_known(&new_nodes);
        out.push(Action::Locker(LockerMsg::AddToKnown(added)));
        self.synced.insert(0, node.clone());
    }

    /// `new_nodes/6`: a peer synced with new nodes and tells us.
    fn new_nodes(
        &mut self,
        _conn_node: &Arc<str>,
        ops: &[Op],
        _names_ext: &Term,
        nodes: &Term,
        extra: &Term,
        out: &mut Vec<Action>,
    ) {
        let nodes: Vec<(Arc<str>, i64)> = wire::parse_node_vsns(nodes)
            .into_iter()
            .map(|(n, v)| (n, v.unwrap_or(0)))
            .collect();
        let added = self.add_to_known(&nodes);
        out.push(Action::SyncOthers(added.clone()));
        self.do_ops(ops, Inserter::Node, extra);
        out.push(Action::Locker(LockerMsg::AddToKnown(added)));
    }

    /// `add_to_known/2`: returns the nodes that are new.
    fn add_to_known(&mut self, nodes: &[(Arc<str>, i64)]) -> Vec<Arc<str>> {
        let mut added = Vec::new();
        for (n, v) in nodes {
            if n == &self.me {
                continue;
            }
            match self.known.get(n) {
                None => {
                    added.insert(0, n.clone());
                    self.known.insert(n.clone(), *v);
                }
                Some(old) if *old >= 0 => {}
                Some(_) => {
                    self.known.insert(n.clone(), *v);
                }
            }
        }
        added
    }

    // ----- infos -------------------------------------------------------------

    /// A plain message to global_name_server (its `handle_info/2`), other
    /// than node events and `'DOWN'`s; `now` dates `lost_connection`
    /// reports.
    pub fn info(
        &mut self,
        msg: &Term,
        alive: &dyn Fn(&Pid) -> bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(items) = as_tuple(msg) else { return };
        let Some(kind) = items.first().and_then(as_atom) else {
            return;
        };
        match (kind, &items[1..]) {
            ("init_connect_ack", [node, his_my_tag, his_his_tag]) => {
                let Some(node) = as_atom(node).map(Arc::<str>::from) else {
                    return;
                };
                let mine = self.my_tag(&node);
                let my_his = self.his_tag_term(&node);
                if !(self.tag_matches(&node, his_my_tag) && my_his == *his_his_tag) {
                    out.push(Action::Send {
                        node: node.clone(),
                        msg: tuple(vec![
                            atom("cancel_connect"),
                            atom(&self.me),
                            his_his_tag.clone(),
                        ]),
                    });
                    self.restart_connect(&node, mine, out);
                }
            }
            ("cancel_connect", [node, tag]) => {
                let Some(node) = as_atom(node).map(Arc::<str>::from) else {
                    return;
                };
                if self.tag_matches(&node, tag) {
                    let mine = self.my_tag(&node);
                    self.cancel_locker(&node, mine, None, out);
                    self.reset_node_state(&node);
                    self.pending.remove(&node);
                    self.restart_connect(&node, mine, out);
                }
            }
            ("remove_connection", [node]) => {
                let Some(node) = as_atom(node).map(Arc::<str>::from) else {
                    return;
                };
                if self.known.contains_key(&node) || self.pending.contains_key(&node) {
                    out.push(Action::Disconnect(node.clone()));
                    self.handle_nodedown(&node, NodeDown::RemoveConnection, out);
                }
            }
            ("whereis", [name, from]) => {
                let reply = self
                    .where_alive(name, alive)
                    .map(Term::from)
                    .unwrap_or_else(undefined);
                out.push(Action::Reply {
                    from: from.clone(),
                    reply,
                });
            }
            ("prepare_shutdown", [Term::Pid(from), reference]) => {
                out.push(Action::Reply {
                    from: tuple(vec![Term::Pid(from.clone()), reference.clone()]),
                    reply: atom("ok"),
                });
            }
            ("lost_connection", [_, _, _, _]) if self.prevent_overlapping_partitions => {
                self.lost_connection(msg, now, out);
            }
            // lost_connection with prevent_overlapping_partitions off:
            // ignored, as global does.
            _ => {}
        }
    }

    /// `where/1`: the holder of `name`, `None` for a local holder that died.
    pub fn where_alive(&self, name: &Term, alive: &dyn Fn(&Pid) -> bool) -> Option<Pid> {
        let pid = self.whereis(name)?;
        if *pid.node == *self.me && !alive(pid) {
            return None;
        }
        Some(pid.clone())
    }

    // ----- calls -------------------------------------------------------------

    /// A `'$gen_call'` to global_name_server from `caller` (its
    /// `handle_call/3`). `connected` says whether a node is connected now
    /// (for `sync`: global's syncer gets a `nodedown` for the others).
    pub fn call(
        &mut self,
        from: &Term,
        caller: &Pid,
        request: &Term,
        connected: &dyn Fn(&str) -> bool,
        out: &mut Vec<Action>,
    ) {
        let reply = |out: &mut Vec<Action>, reply: Term| {
            out.push(Action::Reply {
                from: from.clone(),
                reply,
            })
        };
        if let Some(kind) = as_atom(request) {
            match kind {
                // OTP answers `mk_known_list(0, S)`: plain node names, not
                // the `{Node, Vsn}` pairs of the node-up exchange.
                "get_known" => {
                    let known: Vec<Arc<str>> = self.known.keys().cloned().collect();
                    reply(out, wire::node_list(&known))
                }
                "get_synced" => reply(out, wire::node_list(&self.synced)),
                "get_protocol_version" => reply(out, int(wire::PROTOCOL_VERSION)),
                "get_names_ext" => reply(out, list(vec![])),
                _ => {}
            }
            return;
        }
        let Some(items) = as_tuple(request) else {
            return;
        };
        let Some(kind) = items.first().and_then(as_atom) else {
            return;
        };
        match (kind, &items[1..]) {
            ("register", [name, pid, method]) | ("register_ext", [name, pid, method, _]) => {
                if let Some(pid) = as_pid(pid) {
                    self.ins_name(name, &pid, method, Inserter::Pid(caller), &list(vec![]));
                }
                reply(out, atom("yes"));
            }
            ("unregister", [name]) => {
                self.delete_global_name(name);
                reply(out, atom("ok"));
            }
            ("set_lock", [id]) => {
                let ok = self.handle_set_lock(id, caller);
                reply(out, atom(if ok { "true" } else { "false" }));
            }
            ("del_lock", [id]) => {
                self.handle_del_lock(id, caller);
                reply(out, atom("true"));
            }
            ("sync", [nodes]) => {
                let waiting: BTreeSet<Arc<str>> = wire::parse_nodes(nodes)
                    .into_iter()
                    .filter(|n| n != &self.me && !self.synced.contains(n) && connected(n))
                    .collect();
                if waiting.is_empty() {
                    reply(out, atom("ok"));
                } else {
                    self.syncers.push(Syncer {
                        from: from.clone(),
                        waiting,
                    });
                }
            }
            _ => {}
        }
    }

    fn syncers_synced(&mut self, node: &Arc<str>, out: &mut Vec<Action>) {
        self.syncers_nodedown(node, out);
    }

    fn syncers_nodedown(&mut self, node: &Arc<str>, out: &mut Vec<Action>) {
        self.syncers.retain_mut(|s| {
            s.waiting.remove(node);
            if s.waiting.is_empty() {
                out.push(Action::Reply {
                    from: s.from.clone(),
                    reply: atom("ok"),
                });
                false
            } else {
                true
            }
        });
    }

    // ----- names -------------------------------------------------------------

    /// `ins_name/6`: `from` is the registering pid (a call) or the node an
    /// exchange came from, with its `ExtraInfo`.
    fn ins_name(
        &mut self,
        name: &Term,
        pid: &Pid,
        method: &Term,
        from: Inserter<'_>,
        extra: &Term,
    ) {
        self.delete_global_name(name);
        self.names.insert(
            name.clone(),
            NameEntry {
                pid: pid.clone(),
                method: method.clone(),
            },
        );
        self.pid_names
            .entry(pid.clone())
            .or_default()
            .insert(name.clone());
        self.touched.push(pid.clone());
        if !self.lock_still_set(from, extra) {
            self.delete_global_name(name);
        }
    }

    fn lock_still_set(&self, from: Inserter<'_>, extra: &Term) -> bool {
        match (self.locks.get(&atom("global")), from) {
            (Some(lock), Inserter::Pid(pid)) => lock.holders.contains(pid),
            (Some(lock), Inserter::Node) => {
                match extra_info(extra, "lock").as_ref().and_then(as_tuple) {
                    Some([_, id]) => lock.requester == *id,
                    _ => false,
                }
            }
            (None, _) => !self.global_lock_down,
        }
    }

    /// `delete_global_name2/2`.
    fn delete_global_name(&mut self, name: &Term) {
        if let Some(entry) = self.names.remove(name) {
            if let Some(set) = self.pid_names.get_mut(&entry.pid) {
                set.remove(name);
                if set.is_empty() {
                    self.pid_names.remove(&entry.pid);
                }
            }
            self.touched.push(entry.pid);
        }
    }

    /// `do_ops/5`.
    fn do_ops(&mut self, ops: &[Op], from: Inserter<'_>, extra: &Term) {
        for op in ops {
            if let Op::Insert { name, pid, method } = op {
                self.ins_name(name, pid, method, from, extra);
            }
        }
        for op in ops {
            if let Op::Delete(name) = op {
                self.delete_global_name(name);
            }
        }
    }

    // ----- locks -------------------------------------------------------------

    /// `handle_set_lock/3`.
    fn handle_set_lock(&mut self, id: &Term, pid: &Pid) -> bool {
        let Some([resource, requester]) = as_tuple(id).and_then(|t| <&[Term; 2]>::try_from(t).ok())
        else {
            return false;
        };
        match self.locks.get_mut(resource) {
            Some(lock) if lock.requester == *requester => {
                if !lock.holders.contains(pid) {
                    lock.holders.insert(0, pid.clone());
                }
            }
            Some(_) => return false,
            None => {
                self.locks.insert(
                    resource.clone(),
                    LockEntry {
                        requester: requester.clone(),
                        holders: vec![pid.clone()],
                    },
                );
            }
        }
        self.pid_locks
            .entry(pid.clone())
            .or_default()
            .insert(resource.clone());
        self.touched.push(pid.clone());
        true
    }

    /// `handle_del_lock/3`.
    fn handle_del_lock(&mut self, id: &Term, pid: &Pid) {
        let Some([resource, requester]) = as_tuple(id).and_then(|t| <&[Term; 2]>::try_from(t).ok())
        else {
            return;
        };
        if self
            .locks
            .get(resource)
            .is_some_and(|l| l.requester == *requester)
        {
            self.remove_lock(resource, pid, false);
        }
    }

    /// `remove_lock/6`.
    fn remove_lock(&mut self, resource: &Term, pid: &Pid, down: bool) {
        let Some(lock) = self.locks.get_mut(resource) else {
            return;
        };
        lock.holders.retain(|h| h != pid);
        if lock.holders.is_empty() {
            self.locks.remove(resource);
            if as_atom(resource) == Some("global") {
                self.global_lock_down = down;
            }
        }
        if let Some(set) = self.pid_locks.get_mut(pid) {
            set.remove(resource);
            if set.is_empty() {
                self.pid_locks.remove(pid);
            }
        }
        self.touched.push(pid.clone());
    }

    /// The monitored `pid` ended (or its node went down): its locks and
    /// names go (global's `'DOWN'` clause).
    pub fn process_down(&mut self, pid: &Pid) {
        let resources: Vec<Term> = self
            .pid_locks
            .get(pid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for resource in resources {
            self.remove_lock(&resource, pid, true);
        }
        let names: Vec<Term> = self
            .pid_names
            .get(pid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for name in names {
            self.delete_global_name(&name);
        }
    }
}

/// Who inserts a name: a registering process, or an exchange with a node.
#[derive(Debug, Clone, Copy)]
enum Inserter<'a> {
    Pid(&'a Pid),
    Node,
}

/// `[{vsn, Vsn}, {lock, LockId}]`.
fn tuple_list_extra(vsn: Option<i64>, lock: Option<Term>) -> Term {
    list(vec![
        tuple(vec![atom("vsn"), vsn.map(int).unwrap_or_else(undefined)]),
        tuple(vec![atom("lock"), lock.unwrap_or_else(undefined)]),
    ])
}

/// `extra_info/2`.
fn extra_info(extra: &Term, key: &str) -> Option<Term> {
    as_list(extra)?.iter().find_map(|e| match as_tuple(e)? {
        [k, v] if as_atom(k) == Some(key) => Some(v.clone()),
        _ => None,
    })
}

#[cfg(test)]
mod tests;
