//! gproc's global table as gproc_dist replicates it (gproc 0.8.0), pure.
//!
//! The table is kept the way gproc keeps it: an ordered set of tuples keyed
//! by their first element, in Erlang term order, holding exactly the global
//! objects gproc's ETS table holds:
//!
//! - registrations `{{Key, T}, Owner, Value}` where `Key = {Type, g, Name}`
//!   and `T` is the type atom for unique kinds (`n`, `a`, `rc`) or the
//!   owner (`p`, `c`, `r`); the owner is a pid or `shared`;
//! - reverse entries `{{Owner, Key}, Opts}`: `{attrs, [...]}` (flack keeps
//!   `username`/`user_id` there), `{monitor, [{Pid, Ref, Type}]}`,
//!   `{initial, V}` for counters;
//! - waiters `{{Key, T}, [{Pid, Ref} | {Pid, Ref, follow}]}` left by `await`
//!   and follow monitors of names nobody holds yet.
//!
//! Objects travel as they are in snapshots (`{globals, Objects}`) and in
//! `{from_leader, Ops}` broadcasts, so keeping gproc's shapes lets every op
//! be written as gproc_dist writes it.
//!
//! As leader, [`GprocTable::leader_call_from`] and
//! [`GprocTable::leader_cast_full`] answer every request gproc_dist 0.8.0's
//! followers send (`reg`/`reg_other`, `unreg`/`unreg_other`, `reg_or_locate`,
//! `monitor`, `demonitor`, `set_attributes`, `update_counter`,
//! `update_counters`, `reset_counter`, `give_away`, `mreg`, `munreg`, `set`,
//! `await`; casts `pid_is_DOWN`, `add_globals`, `remove_globals`,
//! `cancel_wait`, `cancel_wait_or_monitor`) with gproc's replies, table
//! effects, broadcasts and direct messages (`{gproc, Ref, registered, ...}`
//! to waiters, `{gproc, unreg, Ref, K}` to monitors, failover), including
//! aggregated (`a`) and resource (`rc`) counters kept in step with their
//! counters and resources, and `on_zero` actions. [`GprocTable::purge_node`]
//! is `handle_DOWN`.
//!
//! Where gproc 0.8.0 would crash its own leader or its followers, or leave
//! followers with a table other than the leader's, this table does what
//! keeps every node alive and equal (the property test of
//! `tests/gproc_props.rs` found most of these):
//!
//! - a malformed request (bad op, owner, attributes, key; `reg_or_locate`
//!   with a fun to spawn) is answered `badarg` and changes nothing;
//! - `cancel_wait` deletes are sent as `{delete, L}`, not `{delete, L, []}`
//!   (which gproc's own followers crash on);
//! - an aggregate or resource count starts from its counters only when the
//!   registration succeeds (gproc's `maybe_scan` also overwrites a holder's
//!   object when the name is taken, at the leader only);
//! - `update_counters`, `munreg` of counters/resources and `set` of a
//!   counter are all or nothing (gproc leaves a failed batch half done at
//!   the leader, unbroadcast); `munreg` removes the caller's own keys only
//!   and broadcasts the aggregate it moved; `unreg` of a name another
//!   process holds is refused (gproc deletes it at the leader only);
//! - a purge broadcasts one, final, object per aggregate or resource count
//!   (gproc lists every intermediate value, newest first, so followers end
//!   with the oldest);
//! - a process is never its own standby when it dies; an owner that
//!   demonitors its own name keeps its reverse entry; ending a wait or a
//!   follow monitor keeps the reverse entry of a process that holds the key;
//! - snapshots carry the waiters too (gproc's `globs()` leaves them out, so
//!   a node that joins never tells them).
//!
//! As follower, [`GprocTable::apply_full`] runs `from_leader` ops (insert,
//! delete, notify) and [`GprocTable::surrender`] reconciles with a new
//! leader's snapshot, producing correctly shaped `add_globals` /
//! `remove_globals` casts (gproc 0.8.0's own are malformed). It delivers
//! every `notify` event to this node's processes (gproc's `do_notify` stops
//! after the first it finds).
//!
//! Every change that matters to chat (a user's name, a chat membership, a
//! counter, a name) is reported as a [`Change`], so the chat directory can
//! keep its delivery index in step.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use eetf::Term;

use super::compact::{Atoms, Compact};
use crate::node::term::{atom, list, tuple};

/// A change to flack's view of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `{n,g,Pid}` exists, with these attributes (new or updated).
    User {
        /// The user's session pid.
        pid: eetf::Pid,
        /// `username`.
        user_name: String,
        /// `user_id`.
        user_id: String,
    },
    /// `{n,g,Pid}` is gone.
    UserGone(eetf::Pid),
    /// `{p,g,Chat}` registered for the pid.
    Joined {
        /// The chat.
        chat: String,
        /// The member.
        pid: eetf::Pid,
    },
    /// `{p,g,Chat}` unregistered for the pid.
    Left {
        /// The chat.
        chat: String,
        /// The former member.
        pid: eetf::Pid,
    },
    /// A counter `{c,g,Name}` owned by `owner` has this value.
    Counter {
        /// The counter's name.
        name: Term,
        /// Its owner.
        owner: eetf::Pid,
        /// Its value.
        value: i64,
    },
    /// A unique name `{n,g,Name}` other than a user's is held by `owner`
    /// (`None`: the name is gone).
    Name {
        /// The name.
        name: Term,
        /// Its holder.
        owner: Option<eetf::Pid>,
        /// The registration's value (`None` when the name is gone).
        value: Option<Term>,
    },
    /// The counter `{c,g,Name}` of `owner` is gone.
    CounterGone {
        /// The counter's name.
        name: Term,
        /// Its former owner.
        owner: eetf::Pid,
    },
}

/// A message to send to a process: `(Pid, Message)`.
pub type Outgoing = (Term, Term);

/// What a leader call produced: the reply, the ops to broadcast first, and
/// messages gproc sends straight to processes (waiters, monitors).
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderReply {
    /// Sent back inside `{leader, reply, Reply}`.
    pub reply: Term,
    /// `{from_leader, Ops}` to every node before the reply, if any.
    pub broadcast: Option<Term>,
    /// Messages to processes, sent before the broadcast (gproc sends them
    /// from inside the callback, before gen_leader broadcasts).
    pub sends: Vec<Outgoing>,
}

/// What a cast, a node purge or a follower's op list produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Effects {
    /// Ops to broadcast as `{from_leader, Ops}` (leader only).
    pub broadcast: Option<Term>,
    /// Changes for the chat layer.
    pub changes: Vec<Change>,
    /// Messages to processes.
    pub sends: Vec<Outgoing>,
}

/// What a follower must tell the leader after surrendering.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reconciliation {
    /// `{add_globals, Objects}`: this node's registrations the leader lacks.
    pub add_globals: Option<Term>,
    /// `{remove_globals, [{{Key,T},Pid}]}`: the leader's registrations of
    /// this node's pids that this node does not have.
    pub remove_globals: Option<Term>,
}

/// Makes the references the leader hands out (`monitor` refs).
pub type RefMaker = Arc<dyn Fn() -> Term + Send + Sync>;

/// A stored object as eetf holds it: its key and the rest of its elements.
fn rebuild(key: &Compact, rest: &[Compact]) -> Term {
    let mut elements = Vec::with_capacity(rest.len() + 1);
    elements.push(key.to_term());
    elements.extend(rest.iter().map(Compact::to_term));
    tuple(elements)
}

/// [`rebuild`] when the key is at hand as a term.
fn rebuild_with(key: &Term, rest: &[Compact]) -> Term {
    let mut elements = Vec::with_capacity(rest.len() + 1);
    elements.push(key.clone());
    elements.extend(rest.iter().map(Compact::to_term));
    tuple(elements)
}

/// Erlang's term order: number < atom < reference < fun < port < pid <
/// tuple < map < list < bitstring; tuples by size, then element by element;
/// lists element by element. Terms that Erlang holds equal but that differ
/// (`1` and `1.0`) are told apart afterwards, so this stays a total order
/// consistent with `==` on `Term`.
pub fn term_cmp(a: &Term, b: &Term) -> Ordering {
    fn rank(t: &Term) -> u8 {
        match t {
            Term::FixInteger(_) | Term::BigInteger(_) | Term::Float(_) => 0,
            Term::Atom(_) => 1,
            Term::Reference(_) => 2,
            Term::ExternalFun(_) | Term::InternalFun(_) => 3,
            Term::Port(_) => 4,
            Term::Pid(_) => 5,
            Term::Tuple(_) => 6,
            Term::Map(_) => 7,
            Term::List(_) | Term::ByteList(_) | Term::ImproperList(_) => 8,
            Term::Binary(_) | Term::BitBinary(_) => 9,
        }
    }
    fn number(t: &Term) -> f64 {
        match t {
            Term::FixInteger(i) => f64::from(i.value),
            Term::BigInteger(i) => i.value.to_string().parse().unwrap_or(0.0),
            Term::Float(f) => f.value,
            _ => 0.0,
        }
    }
    fn items(t: &Term) -> (Vec<Term>, Option<&Term>) {
        match t {
            Term::List(l) => (l.elements.clone(), None),
            Term::ByteList(b) => (
                b.bytes
                    .iter()
                    .map(|&x| Term::from(eetf::FixInteger::from(i32::from(x))))
                    .collect(),
                None,
            ),
            Term::ImproperList(l) => (l.elements.clone(), Some(&*l.last)),
            _ => (Vec::new(), None),
        }
    }
    let by_rank = rank(a).cmp(&rank(b));
    if by_rank != Ordering::Equal {
        return by_rank;
    }
    let order =
        match (a, b) {
            (Term::Atom(x), Term::Atom(y)) => x.name.as_bytes().cmp(y.name.as_bytes()),
            (Term::Tuple(x), Term::Tuple(y)) => {
                x.elements.len().cmp(&y.elements.len()).then_with(|| {
                    x.elements
                        .iter()
                        .zip(&y.elements)
                        .map(|(p, q)| term_cmp(p, q))
                        .find(|o| *o != Ordering::Equal)
                        .unwrap_or(Ordering::Equal)
                })
            }
            (Term::Pid(x), Term::Pid(y)) => (x.node.name.as_str(), x.id, x.serial, x.creation)
                .cmp(&(y.node.name.as_str(), y.id, y.serial, y.creation)),
            (Term::Reference(x), Term::Reference(y)) => (x.node.name.as_str(), &x.id, x.creation)
                .cmp(&(y.node.name.as_str(), &y.id, y.creation)),
            (Term::Port(x), Term::Port(y)) => {
                (x.node.name.as_str(), x.id).cmp(&(y.node.name.as_str(), y.id))
            }
            (Term::Binary(x), Term::Binary(y)) => x.bytes.cmp(&y.bytes),
            (Term::FixInteger(x), Term::FixInteger(y)) => x.value.cmp(&y.value),
            _ if rank(a) == 0 => number(a).partial_cmp(&number(b)).unwrap_or(Ordering::Equal),
            _ if rank(a) == 8 => {
                let ((xs, xt), (ys, yt)) = (items(a), items(b));
                xs.iter()
                    .zip(&ys)
                    .map(|(p, q)| term_cmp(p, q))
                    .find(|o| *o != Ordering::Equal)
                    .unwrap_or_else(|| match (xs.len().cmp(&ys.len()), xt, yt) {
                        (Ordering::Equal, Some(p), Some(q)) => term_cmp(p, q),
                        (Ordering::Equal, Some(_), None) => Ordering::Greater,
                        (Ordering::Equal, None, Some(_)) => Ordering::Less,
                        (by_len, _, _) => by_len,
                    })
            }
            _ => Ordering::Equal,
        };
    if order != Ordering::Equal || a == b {
        return order;
    }
    // Equal for Erlang (or not ordered above) but different terms: any
    // fixed tie-break keeps the map's order total.
    format!("{a:?}").cmp(&format!("{b:?}"))
}

fn badarg() -> LeaderReply {
    LeaderReply {
        reply: atom("badarg"),
        broadcast: None,
        sends: Vec::new(),
    }
}

fn reply(reply: Term, ops: Option<Vec<Term>>) -> Option<LeaderReply> {
    Some(LeaderReply {
        reply,
        broadcast: ops.map(list),
        sends: Vec::new(),
    })
}

fn is_atom(term: &Term, name: &str) -> bool {
    matches!(term, Term::Atom(atom) if atom.name == name)
}

fn name_of(term: &Term) -> Option<&str> {
    match term {
        Term::Atom(atom) => Some(atom.name.as_str()),
        _ => None,
    }
}

fn fields(term: &Term) -> &[Term] {
    match term {
        Term::Tuple(tuple) => &tuple.elements,
        _ => &[],
    }
}

/// `{Type, g, Name}` → `(Type, Name)`.
fn global_key(key: &Term) -> Option<(&str, &Term)> {
    match fields(key) {
        [Term::Atom(kind), scope, name] if is_atom(scope, "g") => Some((kind.name.as_str(), name)),
        _ => None,
    }
}

/// `{Type, Scope, Name}` with atoms for type and scope.
fn any_key(key: &Term) -> Option<(&str, &str, &Term)> {
    match fields(key) {
        [Term::Atom(kind), Term::Atom(scope), name] => {
            Some((kind.name.as_str(), scope.name.as_str(), name))
        }
        _ => None,
    }
}

fn as_pid(term: &Term) -> Option<&eetf::Pid> {
    match term {
        Term::Pid(pid) => Some(pid),
        _ => None,
    }
}

/// A pid or the atom `shared`: what may own a registration.
fn is_owner(term: &Term) -> bool {
    as_pid(term).is_some() || is_atom(term, "shared")
}

fn unique_kind(kind: &str) -> bool {
    matches!(kind, "n" | "a" | "rc")
}

/// gproc_dist's `ets_key`: unique kinds are keyed by their type atom, the
/// rest by the owner.
fn ets_key(key: &Term, owner: &Term) -> Term {
    match any_key(key) {
        Some((kind, _, _)) if unique_kind(kind) => tuple(vec![key.clone(), atom(kind)]),
        _ => tuple(vec![key.clone(), owner.clone()]),
    }
}

/// The elements of a proper list, or `None`.
fn elements(term: &Term) -> Option<&[Term]> {
    match term {
        Term::List(list) => Some(&list.elements),
        _ => None,
    }
}

/// A list of `{Key, Value}` pairs (gproc's attribute lists).
fn is_pair_list(term: &Term) -> bool {
    elements(term).is_some_and(|items| items.iter().all(|item| fields(item).len() == 2))
}

/// The value stored under `key` in a `[{K, V}]` list (`lists:keyfind`).
fn keyfind<'a>(items: &'a [Term], key: &Term) -> Option<&'a Term> {
    items.iter().find_map(|item| match fields(item) {
        [k, v] if k == key => Some(v),
        _ => None,
    })
}

/// `lists:keystore/4` on a pair list: replace the pair with the same key, or
/// append.
fn keystore(items: &mut Vec<Term>, pair: Term) {
    let [key, _] = fields(&pair) else {
        return;
    };
    let key = key.clone();
    match items
        .iter_mut()
        .find(|item| matches!(fields(item), [k, _] if *k == key))
    {
        Some(slot) => *slot = pair,
        None => items.push(pair),
    }
}

fn text(term: &Term) -> Option<String> {
    match term {
        Term::Binary(binary) => String::from_utf8(binary.bytes.clone()).ok(),
        Term::ByteList(bytes) => String::from_utf8(bytes.bytes.clone()).ok(),
        _ => None,
    }
}

/// An Erlang integer as `i64`.
pub fn int_of(term: &Term) -> Option<i64> {
    match term {
        Term::FixInteger(i) => Some(i64::from(i.value)),
        Term::BigInteger(i) => i.value.to_string().parse().ok(),
        _ => None,
    }
}

/// An `i64` as the smallest Erlang integer term that holds it.
pub fn int_term(value: i64) -> Term {
    match i32::try_from(value) {
        Ok(small) => Term::from(eetf::FixInteger::from(small)),
        Err(_) => Term::from(eetf::BigInteger::from(value)),
    }
}

/// `ets:update_counter`'s `{Pos, Incr, Threshold, SetValue}`.
fn bounded_add(current: i64, incr: i64, threshold: i64, set: i64) -> Option<i64> {
    let sum = current.checked_add(incr)?;
    Some(
        if (incr >= 0 && sum > threshold) || (incr < 0 && sum < threshold) {
            set
        } else {
            sum
        },
    )
}

/// The node of a pid.
fn node_of(term: &Term) -> Option<&str> {
    as_pid(term).map(|pid| pid.node.name.as_str())
}

/// `gproc_lib:monitors(Opts)`: the `monitor` list.
fn monitors(opts: &[Term]) -> Vec<Term> {
    keyfind(opts, &atom("monitor"))
        .and_then(elements)
        .map(<[Term]>::to_vec)
        .unwrap_or_default()
}

/// `gproc_lib:add_monitor/4`: prepend `{Pid, Ref, Type}`.
fn add_monitor(opts: &[Term], pid: &Term, reference: &Term, kind: &Term) -> Vec<Term> {
    let entry = tuple(vec![pid.clone(), reference.clone(), kind.clone()]);
    let mut out = opts.to_vec();
    match out
        .iter_mut()
        .find(|item| matches!(fields(item), [k, _] if is_atom(k, "monitor")))
    {
        Some(slot) => {
            let mut mons = monitors(opts);
            mons.insert(0, entry);
            *slot = tuple(vec![atom("monitor"), list(mons)]);
        }
        None => out.push(tuple(vec![atom("monitor"), list(vec![entry])])),
    }
    out
}

/// `gproc_lib:remove_monitor/3`: drop the monitor `(Pid, Ref)`.
fn remove_monitor(opts: &[Term], pid: &Term, reference: &Term) -> Vec<Term> {
    opts.iter()
        .map(|item| match fields(item) {
            [k, mons] if is_atom(k, "monitor") => {
                let kept = elements(mons)
                    .unwrap_or_default()
                    .iter()
                    .filter(|m| !matches!(fields(m), [p, r, ..] if p == pid && r == reference))
                    .cloned()
                    .collect();
                tuple(vec![atom("monitor"), list(kept)])
            }
            _ => item.clone(),
        })
        .collect()
}

/// `gproc_lib:standbys/1`: standby monitors, oldest first.
fn standbys(opts: &[Term]) -> Vec<Term> {
    let mut found: Vec<Term> = monitors(opts)
        .into_iter()
        .filter(|m| matches!(fields(m), [_, _, kind] if is_atom(kind, "standby")))
        .collect();
    found.reverse();
    found
}

/// Increments for `update_counters`: an integer or `{Incr, Threshold, Set}`.
fn counter_op(current: i64, op: &Term) -> Option<i64> {
    match (int_of(op), fields(op)) {
        (Some(incr), _) => current.checked_add(incr),
        (None, [incr, threshold, set]) => {
            bounded_add(current, int_of(incr)?, int_of(threshold)?, int_of(set)?)
        }
        _ => None,
    }
}

/// The replicated table, with what the current operation produced.
#[derive(Clone, Default)]
pub struct GprocTable {
    /// gproc's ETS table, global objects only: each object's first element
    /// (its key, in Erlang's term order as in an `ordered_set`) and the
    /// rest of it, held compactly (every node holds the whole cluster's
    /// registry; see [`super::compact`]).
    ets: BTreeMap<Compact, Box<[Compact]>>,
    /// The atom and node names the table's terms share.
    atoms: Atoms,
    /// How many of them are registrations (3-tuples): the status page asks
    /// after every message.
    registrations: usize,
    /// This node (`node()`): which processes are local for notifications.
    node: String,
    /// Nodes up (`[node()|nodes()]`) for standby failover; `None`: all.
    up: Option<HashSet<String>>,
    /// Makes monitor references; `None`: a counter.
    refs: Option<RefMaker>,
    next_ref: u32,
    /// Gathered while an operation runs, then handed out.
    changes: Vec<Change>,
    sends: Vec<Outgoing>,
    /// Ops for deletions the leader learns of from `on_zero` actions
    /// (gproc's `{gproc_unreg, Objs}` to itself), broadcast after the rest.
    extra_ops: Vec<Term>,
}

impl std::fmt::Debug for GprocTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GprocTable")
            .field("node", &self.node)
            .field("objects", &self.ets.len())
            .finish()
    }
}

impl GprocTable {
    /// An empty table of a node without local processes (tests).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty table of node `node`.
    pub fn for_node(node: &str) -> Self {
        Self {
            node: node.to_owned(),
            ..Self::default()
        }
    }

    /// Where monitor references come from (the node's `make_ref`).
    pub fn set_ref_maker(&mut self, refs: RefMaker) {
        self.refs = Some(refs);
    }

    /// The nodes currently up (this one included), for standby failover;
    /// `None` counts every node as up.
    pub fn set_up_nodes(&mut self, up: Option<HashSet<String>>) {
        self.up = up;
    }

    /// Number of registration objects.
    pub fn len(&self) -> usize {
        self.registrations
    }

    /// Whether there are no registrations.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every object, in table order (for tests and diagnostics).
    pub fn objects(&self) -> Vec<Term> {
        self.all_objects().collect()
    }

    /// Every object, in table order, as eetf terms.
    fn all_objects(&self) -> impl Iterator<Item = Term> + '_ {
        self.ets.iter().map(|(key, rest)| rebuild(key, rest))
    }

    /// Every pid that owns a registration or has a reverse entry (gproc
    /// monitors each of them on every node).
    pub fn owners(&self) -> Vec<eetf::Pid> {
        let mut owners: Vec<eetf::Pid> = Vec::new();
        for (key, rest) in &self.ets {
            let found = match &rest[..] {
                [owner, _] => Some(owner),
                [_] => key.fields().first(),
                _ => None,
            };
            if let Some(Term::Pid(pid)) = found
                .filter(|f| f.pid_node().is_some())
                .map(Compact::to_term)
            {
                owners.push(pid);
            }
        }
        owners.sort_by(|a, b| {
            (a.node.name.as_str(), a.id, a.serial).cmp(&(b.node.name.as_str(), b.id, b.serial))
        });
        owners.dedup();
        owners
    }

    /// The registration `{Key, T}`: `(Owner, Value)`.
    pub fn lookup(&self, key: &Term, t: &Term) -> Option<(Term, Term)> {
        match fields(&self.get(&tuple(vec![key.clone(), t.clone()]))?) {
            [_, owner, value] => Some((owner.clone(), value.clone())),
            _ => None,
        }
    }

    /// The reverse entry's options for `(Pid, Key)`.
    pub fn opts(&self, pid: &Term, key: &Term) -> Option<Term> {
        match fields(&self.get(&tuple(vec![pid.clone(), key.clone()]))?) {
            [_, opts] => Some(opts.clone()),
            _ => None,
        }
    }

    // ---------------------------------------------------------------
    // ETS primitives. Every write goes through `put`/`del`, which report
    // the changes chat cares about.

    /// `ets:lookup/2`: the object whose first element is `key`.
    fn get(&self, key: &Term) -> Option<Term> {
        let (key, rest) = self.ets.get_key_value(&Compact::lookup(key))?;
        Some(rebuild(key, rest))
    }

    fn has(&self, key: &Term) -> bool {
        self.ets.contains_key(&Compact::lookup(key))
    }

    /// `ets:insert/2` of one object.
    fn put(&mut self, object: Term) {
        let [key, rest @ ..] = fields(&object) else {
            return;
        };
        let stored_key = Compact::store(key, &mut self.atoms);
        let stored_rest = rest
            .iter()
            .map(|term| Compact::store(term, &mut self.atoms))
            .collect();
        let previous = self
            .ets
            .insert(stored_key, stored_rest)
            .map(|rest| rebuild_with(key, &rest));
        let was = previous.as_ref().is_some_and(|p| fields(p).len() == 3);
        match (was, fields(&object).len() == 3) {
            (false, true) => self.registrations += 1,
            (true, false) => self.registrations -= 1,
            _ => {}
        }
        self.note_insert(previous.as_ref(), &object);
    }

    /// `ets:insert_new/2` of one object.
    fn put_new(&mut self, object: Term) -> bool {
        match fields(&object).first() {
            Some(key) if !self.has(key) => {
                self.put(object);
                true
            }
            _ => false,
        }
    }

    /// `ets:insert_new/2` of several objects: all or none.
    fn put_new_all(&mut self, objects: Vec<Term>) -> bool {
        if objects
            .iter()
            .any(|o| fields(o).first().is_none_or(|key| self.has(key)))
        {
            return false;
        }
        for object in objects {
            self.put(object);
        }
        true
    }

    /// `ets:delete/2`.
    fn del(&mut self, key: &Term) {
        if let Some((key, rest)) = self.ets.remove_entry(&Compact::lookup(key)) {
            let previous = rebuild(&key, &rest);
            if fields(&previous).len() == 3 {
                self.registrations -= 1;
            }
            self.note_delete(&previous);
        }
    }

    /// The value (3rd element) of a registration, if an integer.
    fn counter_value(&self, key: &Term) -> Option<i64> {
        match fields(&self.get(key)?) {
            [_, _, value] => int_of(value),
            _ => None,
        }
    }

    /// Sets the value (3rd element) of a registration; returns the object.
    fn set_third(&mut self, key: &Term, value: Term) -> Option<Term> {
        let current = self.get(key)?;
        let [k, owner, _] = fields(&current) else {
            return None;
        };
        let object = tuple(vec![k.clone(), owner.clone(), value]);
        self.put(object.clone());
        Some(object)
    }

    fn note_insert(&mut self, previous: Option<&Term>, object: &Term) {
        match fields(object) {
            [k, owner, value] => {
                let Some(key) = fields(k).first().cloned() else {
                    return;
                };
                let was_registration = previous.is_some_and(|p| fields(p).len() == 3);
                if !was_registration {
                    self.changes
                        .extend(Self::membership_change(&key, owner, true));
                }
                self.changes
                    .extend(Self::counter_change(&key, owner, Some(value)));
                self.changes
                    .extend(Self::name_change(&key, owner, Some(value)));
                let user = self.user_change(owner, &key);
                self.changes.extend(user);
            }
            [k, _] => {
                if let [pid, key] = fields(k) {
                    let user = self.user_change(pid, key);
                    self.changes.extend(user);
                }
            }
            _ => {}
        }
    }

    fn note_delete(&mut self, previous: &Term) {
        let [k, owner, _] = fields(previous) else {
            return;
        };
        let Some(key) = fields(k).first() else {
            return;
        };
        self.changes
            .extend(Self::membership_change(key, owner, false));
        self.changes.extend(Self::counter_change(key, owner, None));
        self.changes.extend(Self::name_change(key, owner, None));
        if let (Some(pid), Some(("n", name))) = (as_pid(owner), global_key(key))
            && name == owner
        {
            self.changes.push(Change::UserGone(pid.clone()));
        }
    }

    // ---------------------------------------------------------------
    // Changes reported to the chat layer.

    fn user_change(&self, pid: &Term, key: &Term) -> Option<Change> {
        let (kind, name) = global_key(key)?;
        if kind != "n" || name != pid {
            return None;
        }
        let pid = as_pid(pid)?;
        let opts = self.opts(&Term::Pid(pid.clone()), key)?;
        let attrs = elements(keyfind(elements(&opts)?, &atom("attrs"))?)?;
        Some(Change::User {
            pid: pid.clone(),
            user_name: text(keyfind(attrs, &atom("username"))?)?,
            user_id: text(keyfind(attrs, &atom("user_id"))?)?,
        })
    }

    /// A unique name that is not a user's `{n,g,Pid}`.
    fn name_change(key: &Term, owner: &Term, value: Option<&Term>) -> Option<Change> {
        let (kind, name) = global_key(key)?;
        if kind != "n" || name == owner {
            return None;
        }
        Some(Change::Name {
            name: name.clone(),
            owner: value.and_then(|_| as_pid(owner).cloned()),
            value: value.cloned(),
        })
    }

    fn counter_change(key: &Term, owner: &Term, value: Option<&Term>) -> Option<Change> {
        let (kind, name) = global_key(key)?;
        if kind != "c" {
            return None;
        }
        let owner = as_pid(owner)?.clone();
        Some(match value {
            Some(value) => Change::Counter {
                name: name.clone(),
                owner,
                value: int_of(value)?,
            },
            None => Change::CounterGone {
                name: name.clone(),
                owner,
            },
        })
    }

    fn membership_change(key: &Term, owner: &Term, joined: bool) -> Option<Change> {
        let (kind, name) = global_key(key)?;
        if kind != "p" {
            return None;
        }
        let chat = match name {
            Term::Binary(binary) => String::from_utf8(binary.bytes.clone()).ok()?,
            _ => return None,
        };
        let pid = as_pid(owner)?.clone();
        Some(if joined {
            Change::Joined { chat, pid }
        } else {
            Change::Left { chat, pid }
        })
    }

    // ---------------------------------------------------------------
    // gproc_lib, global scope.

    fn send(&mut self, to: &Term, message: Term) {
        self.sends.push((to.clone(), message));
    }

    fn is_local(&self, pid: &Term) -> bool {
        node_of(pid).is_some_and(|node| node == self.node)
    }

    fn make_ref(&mut self) -> Term {
        if let Some(refs) = &self.refs {
            return refs();
        }
        self.next_ref += 1;
        Term::from(eetf::Reference {
            node: eetf::Atom::from(if self.node.is_empty() {
                "nonode@nohost"
            } else {
                self.node.as_str()
            }),
            id: vec![self.next_ref, 0, 0],
            creation: 0,
        })
    }

    /// Whether `pid` holds the registration `key`: its reverse entry then
    /// belongs to the registration, not to a wait or a monitor, and stays
    /// when the wait ends. gproc drops it anyway, at the leader only (the
    /// follower that later joins from a snapshot makes one up again).
    fn holds(&self, pid: &Term, key: &Term) -> bool {
        matches!(self.get(&ets_key(key, pid)).as_ref().map(fields), Some([_, holder, _]) if holder == pid)
    }

    /// `get_opts(Pid, K)`: the reverse entry's options, `[]` when missing.
    fn get_opts(&self, pid: &Term, key: &Term) -> Vec<Term> {
        self.opts(pid, key)
            .as_ref()
            .and_then(elements)
            .map(<[Term]>::to_vec)
            .unwrap_or_default()
    }

    /// `gproc_lib:notify(Event, Key, Opts)`: monitors of a global key hear
    /// from the node they live on; here, only this node's.
    fn notify_local(&mut self, event: &Term, key: &Term, opts: &[Term]) {
        if matches!(event, Term::List(l) if l.elements.is_empty()) {
            return;
        }
        for monitor in monitors(opts) {
            // `{Pid, Ref}` monitors always hear; `{Pid, Ref, Type}` ones only
            // on the node they live on.
            let (pid, reference) = match fields(&monitor) {
                [pid, reference] => (pid, reference),
                [pid, reference, _] if self.is_local(pid) => (pid, reference),
                _ => continue,
            };
            let message = tuple(vec![
                atom("gproc"),
                event.clone(),
                reference.clone(),
                key.clone(),
            ]);
            self.send(pid, message);
        }
    }

    /// `notify_waiters`: straight to every waiter, wherever it runs.
    fn notify_waiters(
        &mut self,
        waiters: &[Term],
        key: &Term,
        pid: &Term,
        value: &Term,
        event: &Term,
    ) {
        for waiter in waiters {
            match fields(waiter) {
                [p, reference] => {
                    let message = tuple(vec![
                        atom("gproc"),
                        reference.clone(),
                        atom("registered"),
                        tuple(vec![key.clone(), pid.clone(), value.clone()]),
                    ]);
                    self.send(p, message);
                }
                [p, reference, kind] if is_atom(kind, "follow") => {
                    let message = tuple(vec![
                        atom("gproc"),
                        event.clone(),
                        reference.clone(),
                        key.clone(),
                    ]);
                    self.send(p, message);
                }
                _ => {}
            }
        }
    }

    /// gproc_lib's `update_aggr_counter(C, N, Val)`: `{{a,g,N},a}` moves by
    /// `Val`, if it exists and holds an integer.
    fn bump_aggregate(&mut self, name: &Term, by: i64) {
        let key = tuple(vec![
            tuple(vec![atom("a"), atom("g"), name.clone()]),
            atom("a"),
        ]);
        if let Some(value) = self.counter_value(&key).and_then(|v| v.checked_add(by)) {
            self.set_third(&key, int_term(value));
        }
    }

    /// gproc_dist's `update_aggr_counter(Key, Incr)`: the aggregate's new
    /// object, to broadcast (`[]` when there is none, or for `n`).
    fn aggregate_update(&mut self, key: &Term, by: i64) -> Vec<Term> {
        let Some(("c", name)) = global_key(key) else {
            return Vec::new();
        };
        let aggregate = tuple(vec![
            tuple(vec![atom("a"), atom("g"), name.clone()]),
            atom("a"),
        ]);
        match self
            .counter_value(&aggregate)
            .and_then(|v| v.checked_add(by))
        {
            Some(value) => self
                .set_third(&aggregate, int_term(value))
                .into_iter()
                .collect(),
            None => Vec::new(),
        }
    }

    /// `update_resource_count(C, N, Val)`, with the `on_zero` actions.
    fn bump_resource_count(&mut self, name: &Term, by: i64) {
        let rc = tuple(vec![atom("rc"), atom("g"), name.clone()]);
        let key = tuple(vec![rc.clone(), atom("rc")]);
        let Some(value) = self.counter_value(&key).and_then(|v| v.checked_add(by)) else {
            return;
        };
        let Some(object) = self.set_third(&key, int_term(value)) else {
            return;
        };
        if value == 0
            && let [_, owner, _] = fields(&object)
        {
            let owner = owner.clone();
            self.on_zero(&rc, name, &owner);
        }
    }

    /// `resource_count_zero`: run the `on_zero` attribute's actions.
    fn on_zero(&mut self, rc: &Term, name: &Term, owner: &Term) {
        let opts = self.get_opts(owner, rc);
        let Some(attrs) = keyfind(&opts, &atom("attrs")).and_then(elements) else {
            return;
        };
        let Some(actions) = keyfind(attrs, &atom("on_zero")).and_then(elements) else {
            return;
        };
        let event = tuple(vec![
            atom("gproc"),
            atom("resource_on_zero"),
            atom("g"),
            name.clone(),
            owner.clone(),
        ]);
        for action in actions {
            match fields(action) {
                // gproc:send/2 and gproc:bcast/2 of a global key reach the
                // same processes: every holder of the key.
                [verb, to] if is_atom(verb, "send") || is_atom(verb, "bcast") => {
                    for pid in self.pids_of(to) {
                        self.send(&pid, event.clone());
                    }
                }
                [verb, kind, n] if is_atom(verb, "unreg_shared") => {
                    let key = tuple(vec![kind.clone(), atom("g"), n.clone()]);
                    let reg = tuple(vec![key.clone(), atom("shared")]);
                    if self.has(&reg) {
                        let objs = self.remove_reg(&key, &atom("shared"), &atom("unreg"));
                        // The leader sends itself {gproc_unreg, Objs} and
                        // broadcasts their deletion.
                        self.extra_ops.push(tuple(vec![atom("delete"), list(objs)]));
                    }
                }
                _ if is_atom(action, "publish") => {
                    // gproc_ps:publish(g, gproc_resource_on_zero, {g, N, Pid}).
                    let topic = tuple(vec![
                        atom("p"),
                        atom("g"),
                        tuple(vec![atom("gproc_ps_event"), atom("gproc_resource_on_zero")]),
                    ]);
                    let message = tuple(vec![
                        atom("gproc_ps_event"),
                        atom("gproc_resource_on_zero"),
                        tuple(vec![atom("g"), name.clone(), owner.clone()]),
                    ]);
                    for pid in self.pids_of(&topic) {
                        self.send(&pid, message.clone());
                    }
                }
                _ => {}
            }
        }
    }

    /// `gproc:lookup_pids/1` of a global key.
    fn pids_of(&self, key: &Term) -> Vec<Term> {
        let Some((kind, "g", _)) = any_key(key) else {
            return Vec::new();
        };
        if unique_kind(kind) {
            return match self.get(&ets_key(key, &atom("_"))).as_ref().map(fields) {
                Some([_, owner, _]) if as_pid(owner).is_some() => vec![owner.clone()],
                _ => Vec::new(),
            };
        }
        self.keyed_by(key)
            .filter_map(|(_, rest)| match rest {
                [owner, _] if owner.pid_node().is_some() => Some(owner.to_term()),
                _ => None,
            })
            .collect()
    }

    /// `gproc_lib:insert_reg/5` for the global scope: `true` when `Key` is
    /// now held by `Pid`.
    fn insert_reg(&mut self, key: &Term, value: &Term, pid: &Term, event: &Term) -> bool {
        let Some((kind, name)) = global_key(key) else {
            return false;
        };
        let name = name.clone();
        if unique_kind(kind) {
            let reg = tuple(vec![
                tuple(vec![key.clone(), atom(kind)]),
                pid.clone(),
                value.clone(),
            ]);
            let done = if self.put_new(reg) {
                self.put_new(tuple(vec![
                    tuple(vec![pid.clone(), key.clone()]),
                    list(vec![]),
                ]));
                true
            } else {
                self.maybe_waiters(key, pid, value, kind, event)
            };
            // maybe_scan: an aggregate starts from the counters it sums, a
            // resource count from the resources. gproc also does this when
            // the name was taken (overwriting the holder's object without
            // telling anyone); here only the registration that succeeded.
            if done {
                let initial = match kind {
                    "a" => Some(self.sum_counters(&name)),
                    "rc" => Some(self.count_resources(&name)),
                    _ => None,
                };
                if let Some(initial) = initial {
                    let reg = tuple(vec![
                        tuple(vec![key.clone(), atom(kind)]),
                        pid.clone(),
                        int_term(initial),
                    ]);
                    self.put(reg);
                }
            }
            return done;
        }
        let reverse =
            |opts: Vec<Term>| tuple(vec![tuple(vec![pid.clone(), key.clone()]), list(opts)]);
        let reg = tuple(vec![
            tuple(vec![key.clone(), pid.clone()]),
            pid.clone(),
            value.clone(),
        ]);
        match kind {
            "p" if is_atom(pid, "shared") => self.put_new_all(vec![reg, reverse(vec![])]),
            "c" | "r" if is_owner(pid) => {
                let initial = tuple(vec![atom("initial"), value.clone()]);
                if !self.put_new_all(vec![reg, reverse(vec![initial])]) {
                    return false;
                }
                if kind == "c" {
                    if let Some(by) = int_of(value) {
                        self.bump_aggregate(&name, by);
                    }
                } else {
                    self.bump_resource_count(&name, 1);
                }
                true
            }
            _ if as_pid(pid).is_some() => self.put_new_all(vec![reg, reverse(vec![])]),
            _ => false,
        }
    }

    /// `maybe_waiters`: a name nobody held but somebody awaited.
    fn maybe_waiters(
        &mut self,
        key: &Term,
        pid: &Term,
        value: &Term,
        kind: &str,
        event: &Term,
    ) -> bool {
        let slot = tuple(vec![key.clone(), atom(kind)]);
        let waiters = match self.get(&slot).as_ref().map(fields) {
            Some([_, waiters]) => match elements(waiters) {
                Some(waiters) => waiters.to_vec(),
                None => return false,
            },
            _ => return false,
        };
        let followers: Vec<Term> = waiters
            .iter()
            .filter(|w| matches!(fields(w), [_, _, k] if is_atom(k, "follow")))
            .cloned()
            .collect();
        let opts = if followers.is_empty() {
            vec![]
        } else {
            vec![tuple(vec![atom("monitor"), list(followers)])]
        };
        self.put(tuple(vec![slot, pid.clone(), value.clone()]));
        self.put(tuple(vec![
            tuple(vec![pid.clone(), key.clone()]),
            list(opts),
        ]));
        self.notify_waiters(&waiters, key, pid, value, event);
        true
    }

    /// `scan_existing_counters`: the sum of every `{c,g,Name}`.
    fn sum_counters(&self, name: &Term) -> i64 {
        let key = tuple(vec![atom("c"), atom("g"), name.clone()]);
        self.registrations_of(&key)
            .filter_map(|object| match fields(&object) {
                [_, _, value] => int_of(value),
                _ => None,
            })
            .sum()
    }

    /// `scan_existing_resources`: how many `{r,g,Name}` there are.
    fn count_resources(&self, name: &Term) -> i64 {
        let key = tuple(vec![atom("r"), atom("g"), name.clone()]);
        i64::try_from(self.registrations_of(&key).count()).unwrap_or(i64::MAX)
    }

    /// The registrations `{{Key, _}, _, _}` of a non-unique key.
    fn registrations_of<'a>(&'a self, key: &Term) -> impl Iterator<Item = Term> + 'a {
        self.keyed_by(key)
            .filter(|(_, rest)| rest.len() == 2)
            .map(|(k, rest)| rebuild(k, rest))
    }

    /// The stored objects whose key is a pair `{First, _}`, in table order,
    /// as (key, rest of the object).
    fn keyed_by<'a>(
        &'a self,
        first: &Term,
    ) -> impl Iterator<Item = (&'a Compact, &'a [Compact])> + 'a {
        // Pairs sort by their first element, then the second; no key's
        // second element is a number, the lowest kind of term.
        let start = Compact::lookup(&tuple(vec![first.clone(), int_term(i64::MIN)]));
        let first = start.fields()[0].clone();
        self.ets
            .range(start..)
            .take_while(move |(k, _)| k.fields().len() == 2 && k.fields().first() == Some(&first))
            .map(|(k, rest)| (k, &rest[..]))
    }

    /// `gproc_lib:insert_attr/4`: merge `Attrs` into the reverse entry's
    /// `attrs`; the new options, or `None` without a reverse entry.
    fn insert_attr(&mut self, key: &Term, attrs: &[Term], pid: &Term) -> Option<Vec<Term>> {
        let reverse = tuple(vec![pid.clone(), key.clone()]);
        let mut opts = match self.get(&reverse).as_ref().map(fields) {
            Some([_, opts]) => elements(opts)?.to_vec(),
            _ => return None,
        };
        let mut current = keyfind(&opts, &atom("attrs"))
            .and_then(elements)
            .map(<[Term]>::to_vec)
            .unwrap_or_default();
        for pair in attrs {
            keystore(&mut current, pair.clone());
        }
        keystore(&mut opts, tuple(vec![atom("attrs"), list(current)]));
        self.put(tuple(vec![reverse, list(opts.clone())]));
        Some(opts)
    }

    /// `gproc_lib:do_set_value/3`.
    fn do_set_value(&mut self, key: &Term, value: &Term, pid: &Term) -> bool {
        let Some((kind, _, _)) = any_key(key) else {
            return false;
        };
        let t = if is_atom(pid, "shared") {
            atom("shared")
        } else if unique_kind(kind) {
            atom(kind)
        } else {
            pid.clone()
        };
        let slot = tuple(vec![key.clone(), t]);
        match self.get(&slot).as_ref().map(fields) {
            Some([_, holder, _]) if holder == pid => {
                self.put(tuple(vec![slot, pid.clone(), value.clone()]));
                true
            }
            _ => false,
        }
    }

    /// `gproc_lib:remove_reg/3`: `[Reg, Rev]`, the keys removed.
    fn remove_reg(&mut self, key: &Term, pid: &Term, event: &Term) -> Vec<Term> {
        let opts = self.get_opts(pid, key);
        self.remove_reg_with(key, pid, event, &opts)
    }

    /// `gproc_lib:remove_reg/4`.
    fn remove_reg_with(
        &mut self,
        key: &Term,
        pid: &Term,
        event: &Term,
        opts: &[Term],
    ) -> Vec<Term> {
        let reg = match global_key(key) {
            Some(("c", name)) => {
                let name = name.clone();
                let slot = tuple(vec![key.clone(), pid.clone()]);
                let value = self.counter_value(&slot).unwrap_or(0);
                self.del(&slot);
                self.bump_aggregate(&name, -value);
                slot
            }
            Some(("r", name)) => {
                let name = name.clone();
                let slot = tuple(vec![key.clone(), pid.clone()]);
                self.del(&slot);
                self.bump_resource_count(&name, -1);
                slot
            }
            _ => {
                let slot = ets_key(key, pid);
                self.del(&slot);
                slot
            }
        };
        // remove_reverse_mapping: monitors hear, the reverse entry goes.
        let rev = tuple(vec![pid.clone(), key.clone()]);
        self.notify_local(event, key, opts);
        self.del(&rev);
        vec![reg, rev]
    }

    // ---------------------------------------------------------------
    // gproc_dist's own helpers.

    /// gproc_dist's `remove_entry(Key, Pid, Event)`: the notifications for
    /// unique kinds.
    fn remove_entry(&mut self, key: &Term, pid: &Term, event: &Term) -> Vec<Term> {
        let slot = ets_key(key, pid);
        match self
            .get(&slot)
            .as_ref()
            .map(|o| fields(o).to_vec())
            .as_deref()
        {
            Some([_, holder, _])
                if (as_pid(holder).is_some() && holder == pid) || name_of(pid).is_some() =>
            {
                self.del(&slot);
                let opts = self.get_opts(pid, key);
                self.remove_rev_entry(&opts, pid, key, event)
            }
            Some([_, _, _]) => {
                self.del(&tuple(vec![pid.clone(), key.clone()]));
                Vec::new()
            }
            Some([_, _]) => {
                self.del(&slot);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// `remove_rev_entry`: drop `{Pid, K}`; names and aggregates say so.
    fn remove_rev_entry(
        &mut self,
        opts: &[Term],
        pid: &Term,
        key: &Term,
        event: &Term,
    ) -> Vec<Term> {
        let rev = tuple(vec![pid.clone(), key.clone()]);
        if let Some(("n" | "a", _)) = global_key(key) {
            self.notify_local(event, key, opts);
            self.del(&rev);
            vec![tuple(vec![key.clone(), pid.clone(), event.clone()])]
        } else {
            self.del(&rev);
            Vec::new()
        }
    }

    /// `mk_broadcast_insert_vals([{K, Pid, Value}])`.
    fn insert_vals(&self, key: &Term, pid: &Term, value: &Term) -> Vec<Term> {
        let Some((kind, name)) = global_key(key) else {
            return Vec::new();
        };
        let rev = || self.get(&tuple(vec![pid.clone(), key.clone()]));
        let reg = |t: Term| {
            tuple(vec![
                tuple(vec![key.clone(), t]),
                pid.clone(),
                value.clone(),
            ])
        };
        let companion = |kind: &str| {
            self.get(&tuple(vec![
                tuple(vec![atom(kind), atom("g"), name.clone()]),
                atom(kind),
            ]))
        };
        let mut out = Vec::new();
        match kind {
            "a" | "rc" => out.extend(self.get(&tuple(vec![key.clone(), atom(kind)]))),
            "c" => {
                out.push(reg(pid.clone()));
                out.extend(companion("a"));
            }
            "r" => {
                out.push(reg(pid.clone()));
                out.extend(companion("rc"));
            }
            "n" => out.push(reg(atom("n"))),
            _ => out.push(reg(pid.clone())),
        }
        out.extend(rev());
        out
    }

    /// `process_globals(Globals)`: remove each `{Key, Pid}` (or hand a name
    /// to its first standby on a live node), keep aggregates and resource
    /// counts right, and say what to broadcast.
    fn process_globals(&mut self, globals: Vec<(Term, Term)>) -> Vec<Term> {
        let mut modified: Vec<Term> = Vec::new();
        let mut notifications: Vec<Term> = Vec::new();
        for (key, pid) in &globals {
            let Some((kind, _, name)) = any_key(key) else {
                continue;
            };
            let name = name.clone();
            if unique_kind(kind) {
                let rev = tuple(vec![pid.clone(), key.clone()]);
                if let Some([_, Term::List(opts)]) = self.get(&rev).as_ref().map(fields) {
                    let opts = opts.elements.clone();
                    self.maybe_failover(key, pid, &opts, &mut modified, &mut notifications);
                }
                continue;
            }
            match kind {
                "c" => {
                    let slot = tuple(vec![key.clone(), pid.clone()]);
                    if let Some(value) = self.counter_value(&slot) {
                        let updated = self.aggregate_update(key, -value);
                        prepend_latest(&mut modified, updated);
                    }
                }
                "r" => {
                    let rc = tuple(vec![
                        tuple(vec![atom("rc"), atom("g"), name.clone()]),
                        atom("rc"),
                    ]);
                    if self.has(&rc) {
                        self.bump_resource_count(&name, -1);
                        let updated = self.get(&rc).into_iter().collect();
                        prepend_latest(&mut modified, updated);
                    }
                }
                _ => {}
            }
            let mut notes = self.remove_entry(key, pid, &atom("unreg"));
            notes.append(&mut notifications);
            notifications = notes;
        }
        let mut ops = Vec::new();
        if !modified.is_empty() {
            ops.push(tuple(vec![atom("insert"), list(modified)]));
        }
        if !notifications.is_empty() {
            ops.push(tuple(vec![atom("notify"), list(notifications)]));
        }
        if !globals.is_empty() {
            let deletes = globals
                .into_iter()
                .map(|(key, pid)| tuple(vec![key, pid]))
                .collect();
            ops.push(tuple(vec![atom("delete"), list(deletes)]));
        }
        ops
    }

    fn maybe_failover(
        &mut self,
        key: &Term,
        pid: &Term,
        opts: &[Term],
        modified: &mut Vec<Term>,
        notifications: &mut Vec<Term>,
    ) {
        let up = self.up.clone();
        // A process that stands by for its own name is not a standby when
        // it dies: gproc hands the name back to it, then its broadcast's
        // delete removes it from every follower but not from the leader.
        let standby = standbys(opts).into_iter().find(|m| {
            let candidate = fields(m).first();
            candidate != Some(pid)
                && candidate.and_then(node_of).is_some_and(|node| {
                    up.as_ref().is_none_or(|up| up.contains(node)) || node == self.node
                })
        });
        let Some(standby) = standby else {
            let mut notes = self.remove_entry(key, pid, &atom("unreg"));
            notes.append(notifications);
            *notifications = notes;
            return;
        };
        let [to, reference, _] = fields(&standby) else {
            return;
        };
        let Some((kind, _)) = global_key(key) else {
            return;
        };
        let slot = tuple(vec![key.clone(), atom(kind)]);
        let value = match self.get(&slot).as_ref().map(fields) {
            Some([_, _, value]) => value.clone(),
            _ => atom("undefined"),
        };
        let event = tuple(vec![atom("failover"), to.clone()]);
        let mut notes = self.remove_rev_entry(opts, pid, key, &event);
        let opts1 = remove_monitor(opts, to, reference);
        let new_reg = tuple(vec![slot, to.clone(), value]);
        let new_rev = tuple(vec![tuple(vec![to.clone(), key.clone()]), list(opts1)]);
        self.put(new_reg.clone());
        self.put(new_rev.clone());
        prepend_latest(modified, vec![new_reg, new_rev]);
        notes.append(notifications);
        *notifications = notes;
    }

    /// `insert_globals(Globals)` of a follower (and of the leader for
    /// `add_globals`): the reverse entries inserted, newest first.
    fn insert_globals(&mut self, globals: &[Term]) -> Vec<Term> {
        let mut reverse = Vec::new();
        for object in globals {
            match fields(object) {
                [k, pid, _] if matches!(fields(k), [key, _] if any_key(key).is_some()) => {
                    let key = fields(k)[0].clone();
                    self.put(object.clone());
                    self.put_new(tuple(vec![tuple(vec![pid.clone(), key]), list(vec![])]));
                }
                [k, _] if matches!(fields(k), [key, _] if any_key(key).is_some()) => {
                    self.put(object.clone());
                }
                [k, Term::List(_)] if matches!(fields(k), [p, _] if as_pid(p).is_some()) => {
                    self.put(object.clone());
                    reverse.insert(0, object.clone());
                }
                _ => {}
            }
        }
        reverse
    }

    /// `delete_globals(Globals)`; shapes gproc would crash on are skipped.
    fn delete_globals(&mut self, globals: &[Term]) {
        for item in globals {
            let [first, second] = fields(item) else {
                continue;
            };
            if global_key(first).is_some()
                && (name_of(second).is_some() || as_pid(second).is_some())
            {
                self.remove_entry(first, second, &list(vec![]));
            } else if let [key, t] = fields(first)
                && global_key(key).is_some()
                && as_pid(second).is_some()
                && (name_of(t).is_some() || as_pid(t).is_some())
            {
                self.remove_entry(key, second, &list(vec![]));
            } else if as_pid(first).is_some() || is_atom(first, "shared") {
                self.del(item);
            }
        }
    }

    /// `do_notify(Events)` on a follower: `{Pid, Msg}` for local pids, and
    /// `{Key, Pid, Event}` to the monitors of this node. gproc 0.8.0 stops
    /// at the first `{Key, Pid, Event}` it finds a reverse entry for (a
    /// missing recursive call); every event is delivered here.
    fn do_notify(&mut self, events: &[Term]) {
        for event in events {
            match fields(event) {
                [pid, message] if as_pid(pid).is_some() && self.is_local(pid) => {
                    self.send(pid, message.clone());
                }
                [pid, _] if as_pid(pid).is_some() => {}
                [key, pid, what] => {
                    if let Some(Term::List(opts)) = self.opts(pid, key) {
                        let opts = opts.elements.clone();
                        self.notify_local(what, key, &opts);
                    }
                }
                _ => {}
            }
        }
    }

    fn take(&mut self) -> (Vec<Change>, Vec<Outgoing>) {
        (
            std::mem::take(&mut self.changes),
            std::mem::take(&mut self.sends),
        )
    }
}

impl GprocTable {
    // ---------------------------------------------------------------
    // Follower side.

    /// The pids a `from_leader` broadcast inserts objects for (the owner of
    /// each `{{Key, T}, Pid, Value}`, the pid of each reverse entry
    /// `{{Pid, Key}, Opts}`), each once: the pids a follower may have to
    /// start monitoring after applying it (gproc's `insert_globals`
    /// monitors both), found without a scan of the whole table.
    pub fn inserted_owners(ops: &Term) -> Vec<eetf::Pid> {
        let mut owners: Vec<eetf::Pid> = Vec::new();
        for op in elements(ops).unwrap_or_default() {
            let [kind, items] = fields(op) else { continue };
            if !is_atom(kind, "insert") {
                continue;
            }
            for object in elements(items).unwrap_or_default() {
                let found = match fields(object) {
                    [_, owner, _] => as_pid(owner),
                    [key, _] => fields(key).first().and_then(as_pid),
                    _ => None,
                };
                if let Some(pid) = found
                    && !owners.contains(pid)
                {
                    owners.push(pid.clone());
                }
            }
        }
        owners
    }

    /// Applies `{from_leader, Ops}` (the `Ops` part) and reports the
    /// changes. `{sync, _}` and `{sync_complete, _}` are not lists and are
    /// left to the caller.
    pub fn apply(&mut self, ops: &Term) -> Vec<Change> {
        self.apply_full(ops).changes
    }

    /// [`GprocTable::apply`], also returning the notifications for this
    /// node's processes (`notify` ops).
    pub fn apply_full(&mut self, ops: &Term) -> Effects {
        if let Some(ops) = elements(ops) {
            for op in ops {
                // `{delete, L, []}` is what gproc 0.8.0's cancel_wait sends
                // (and its followers crash on); taken as delete.
                if let [kind, items, ..] = fields(op) {
                    let Some(items) = elements(items) else {
                        continue;
                    };
                    match name_of(kind) {
                        Some("insert") => {
                            self.insert_globals(items);
                        }
                        Some("delete") => self.delete_globals(items),
                        Some("notify") => self.do_notify(items),
                        _ => {}
                    }
                }
            }
        }
        let (changes, sends) = self.take();
        Effects {
            broadcast: None,
            changes,
            sends,
        }
    }

    /// `surrendered`: adopt a new leader's snapshot, keeping this node's own
    /// registrations (they are more correct here than at the leader), and
    /// say what the leader must add or remove.
    pub fn surrender(&mut self, synch: &Term, local_node: &str) -> (Vec<Change>, Reconciliation) {
        let is_local = |term: &Term| node_of(term).is_some_and(|node| node == local_node);
        // My registrations, as {{Key, T}, Pid, Value}.
        let mine: Vec<Term> = self
            .all_objects()
            .filter(|o| matches!(fields(o), [k, owner, _] if global_key(fields(k).first().unwrap_or(k)).is_some() && is_local(owner)))
            .collect();
        // Drop every remote registration and reverse entry.
        let remote: Vec<Term> = self
            .all_objects()
            .filter(|o| match fields(o) {
                [_, owner, _] => !is_local(owner),
                [k, _] => matches!(fields(k), [p, key] if as_pid(p).is_some() && !is_local(p) && global_key(key).is_some()),
                _ => false,
            })
            .filter_map(|o| fields(&o).first().cloned())
            .collect();
        for key in remote {
            self.del(&key);
        }
        // Apply the snapshot; collect the leader's view of my registrations.
        let objects = match fields(synch) {
            [tag, objects] if is_atom(tag, "globals") => {
                elements(objects).map(<[Term]>::to_vec).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        let mut leaders_mine: Vec<Term> = Vec::new();
        for object in &objects {
            match fields(object) {
                [k, owner, _] if is_local(owner) => {
                    leaders_mine.push(object.clone());
                    let _ = k;
                }
                [k, owner, _] => {
                    self.put(object.clone());
                    if let Some(key) = fields(k).first() {
                        self.put_new(tuple(vec![
                            tuple(vec![owner.clone(), key.clone()]),
                            list(vec![]),
                        ]));
                    }
                }
                [_, _] => self.put(object.clone()),
                _ => {}
            }
        }
        // Mine that the leader lacks: add_globals, in the broadcast shape.
        let mut missing = Vec::new();
        for object in &mine {
            let [k, owner, _] = fields(object) else {
                continue;
            };
            if leaders_mine.iter().any(|l| fields(l).first() == Some(k)) {
                continue;
            }
            missing.push(object.clone());
            if let Some(key) = fields(k).first()
                && let Some(rev) = self.get(&tuple(vec![owner.clone(), key.clone()]))
            {
                missing.push(rev.clone());
            }
        }
        // The leader's registrations of my pids that I do not have.
        let extra: Vec<Term> = leaders_mine
            .iter()
            .filter_map(|object| match fields(object) {
                [k, owner, _] if !mine.iter().any(|m| fields(m).first() == Some(k)) => {
                    Some(tuple(vec![k.clone(), owner.clone()]))
                }
                _ => None,
            })
            .collect();
        let reconciliation = Reconciliation {
            add_globals: (!missing.is_empty())
                .then(|| tuple(vec![atom("add_globals"), list(missing)])),
            remove_globals: (!extra.is_empty())
                .then(|| tuple(vec![atom("remove_globals"), list(extra)])),
        };
        let (changes, _) = self.take();
        (changes, reconciliation)
    }

    // ---------------------------------------------------------------
    // Leader side.

    /// The complete snapshot `{globals, Registrations ++ ReverseEntries ++
    /// Waiters}` sent in `ldr`. It must be complete: an Erlang follower
    /// holding a registration the snapshot lacks crashes in gproc 0.8.0.
    /// gproc_dist's own `globs()` leaves the waiters out, so a node that
    /// joins an Erlang leader knows nobody awaits a name and, should it
    /// lead later, never tells them; they are sent here (gproc's
    /// `surrendered` stores any `{{_, _}, _}` object it is given), so a
    /// joining node holds exactly what the leader holds.
    pub fn snapshot(&self) -> Term {
        let is_reg = |o: &&Term| matches!(fields(o), [k, _, _] if matches!(fields(k), [key, _] if global_key(key).is_some()));
        let is_rev = |o: &&Term| matches!(fields(o), [k, _] if matches!(fields(k), [_, key] if global_key(key).is_some()));
        let is_waiters = |o: &&Term| matches!(fields(o), [k, Term::List(_)] if matches!(fields(k), [key, t] if global_key(key).is_some() && name_of(t).is_some()));
        let all: Vec<Term> = self.all_objects().collect();
        let regs = all.iter().filter(is_reg);
        let reverse = all.iter().filter(is_rev);
        let waiters = all.iter().filter(is_waiters);
        let objects = regs.chain(reverse).chain(waiters).cloned().collect();
        tuple(vec![atom("globals"), list(objects)])
    }

    /// `handle_leader_call(Request, ...)` for a local caller.
    pub fn leader_call(&mut self, request: &Term) -> (LeaderReply, Vec<Change>) {
        let reference = self.make_ref();
        let from = tuple(vec![atom("undefined"), reference]);
        self.leader_call_from(request, &from)
    }

    /// `handle_leader_call(Request, From, ...)`: mutate, then say what to
    /// send, broadcast and reply. `From` is the `{Pid, Ref}` the call came
    /// with (`await` answers with its `Ref`).
    pub fn leader_call_from(&mut self, request: &Term, from: &Term) -> (LeaderReply, Vec<Change>) {
        let answer = self.serve_call(request, from);
        let extra = std::mem::take(&mut self.extra_ops);
        let mut answer = answer.unwrap_or_else(badarg);
        if !extra.is_empty() {
            let mut ops = answer
                .broadcast
                .as_ref()
                .and_then(elements)
                .map(<[Term]>::to_vec)
                .unwrap_or_default();
            ops.extend(extra);
            answer.broadcast = Some(list(ops));
        }
        let (changes, sends) = self.take();
        answer.sends = sends;
        (answer, changes)
    }

    fn serve_call(&mut self, request: &Term, from: &Term) -> Option<LeaderReply> {
        let f = fields(request);
        match (f.first().and_then(name_of)?, f.len()) {
            ("reg" | "reg_other", 6) => self.reg(&f[1], &f[2], &f[3], &f[4], &f[5]),
            ("monitor", 4) => self.monitor(&f[1], &f[2], &f[3]),
            ("demonitor", 4) => self.demonitor(&f[1], &f[2], &f[3]),
            ("set_attributes", 4) => {
                global_key(&f[1])?;
                let attrs = elements(&f[2]).filter(|_| is_pair_list(&f[2]))?.to_vec();
                let opts = self.insert_attr(&f[1], &attrs, &f[3])?;
                let object = tuple(vec![tuple(vec![f[3].clone(), f[1].clone()]), list(opts)]);
                reply(
                    atom("true"),
                    Some(vec![tuple(vec![atom("insert"), list(vec![object])])]),
                )
            }
            ("reg_or_locate", 4) => self.reg_or_locate(&f[1], &f[2], &f[3]),
            ("update_counter", 4) => self.update_counter(&f[1], &f[2], &f[3]),
            ("update_counters", 2) => self.update_counters(&f[1]),
            ("reset_counter", 3) => self.reset_counter(&f[1], &f[2]),
            ("unreg" | "unreg_other", 3) => self.unreg(&f[1], &f[2]),
            ("give_away", 4) => self.give_away(&f[1], &f[2], &f[3]),
            ("mreg", 5) if is_atom(&f[2], "g") => self.mreg(&f[1], &f[3], &f[4]),
            ("munreg", 5) if is_atom(&f[2], "g") => self.munreg(&f[1], &f[3], &f[4]),
            ("set", 4) => self.set(&f[1], &f[2], &f[3]),
            ("await", 3) => self.await_key(&f[1], &f[2], from),
            _ => None,
        }
    }

    fn reg(
        &mut self,
        key: &Term,
        value: &Term,
        pid: &Term,
        attrs: &Term,
        op: &Term,
    ) -> Option<LeaderReply> {
        global_key(key)?;
        // What gproc would crash on (bad op, owner or attributes) is a
        // badarg here, before anything changes.
        let ensure = is_atom(op, "ensure");
        if !(ensure || is_atom(op, "reg")) || !is_owner(pid) || !is_pair_list(attrs) {
            return None;
        }
        let attrs = elements(attrs)?.to_vec();
        if self.insert_reg(key, value, pid, &atom("registered")) {
            if !attrs.is_empty() {
                self.insert_attr(key, &attrs, pid);
            }
            let vals = self.insert_vals(key, pid, value);
            let answer = atom(if ensure { "new" } else { "true" });
            return reply(answer, Some(vec![tuple(vec![atom("insert"), list(vals)])]));
        }
        if !ensure {
            return None;
        }
        match self.get(&ets_key(key, pid)).as_ref().map(fields) {
            Some([_, holder, _]) if holder == pid => {
                self.do_set_value(key, value, pid);
                self.insert_attr(key, &attrs, pid);
                let vals = self.insert_vals(key, pid, value);
                reply(
                    atom("updated"),
                    Some(vec![tuple(vec![atom("insert"), list(vals)])]),
                )
            }
            _ => reply(atom("badarg"), Some(Vec::new())),
        }
    }

    fn monitor(&mut self, key: &Term, mpid: &Term, kind: &Term) -> Option<LeaderReply> {
        let Some((t @ ("n" | "a"), _)) = global_key(key) else {
            return None;
        };
        if as_pid(mpid).is_none()
            || !["info", "follow", "standby"]
                .iter()
                .any(|k| is_atom(kind, k))
        {
            return None;
        }
        let slot = tuple(vec![key.clone(), atom(t)]);
        let existing = self.get(&slot);
        let reference = self.make_ref();
        if let Some([_, pid, _]) = existing.as_ref().map(fields) {
            let opts = add_monitor(&self.get_opts(pid, key), mpid, &reference, kind);
            let object = tuple(vec![tuple(vec![pid.clone(), key.clone()]), list(opts)]);
            self.put(object.clone());
            return reply(
                reference,
                Some(vec![tuple(vec![atom("insert"), list(vec![object])])]),
            );
        }
        let waiters = existing.as_ref().and_then(|o| match fields(o) {
            [_, waiters] => elements(waiters).map(<[Term]>::to_vec),
            _ => None,
        });
        match name_of(kind) {
            Some("standby") => {
                // Nobody holds it: the standby takes it at once.
                let event = tuple(vec![atom("failover"), mpid.clone()]);
                let messages = match &waiters {
                    Some(waiters) => {
                        self.insert_reg(key, &atom("undefined"), mpid, &atom("registered"));
                        self.tell_waiters(waiters, key, mpid, &atom("undefined"), &event)
                    }
                    None => {
                        self.insert_reg(key, &atom("undefined"), mpid, &atom("registered"));
                        Vec::new()
                    }
                };
                let object = tuple(vec![slot, mpid.clone(), atom("undefined")]);
                let rev = tuple(vec![tuple(vec![mpid.clone(), key.clone()]), list(vec![])]);
                self.put(object.clone());
                self.put(rev.clone());
                self.send(
                    mpid,
                    tuple(vec![atom("gproc"), event, reference.clone(), key.clone()]),
                );
                reply(
                    reference,
                    Some(vec![
                        tuple(vec![atom("insert"), list(vec![object, rev])]),
                        tuple(vec![atom("notify"), list(messages)]),
                    ]),
                )
            }
            Some("follow") => {
                // add_follow_to_waiters: it hears `registered` later.
                let mut all = vec![tuple(vec![mpid.clone(), reference.clone(), atom("follow")])];
                all.extend(waiters.unwrap_or_default());
                let object = tuple(vec![slot, list(all)]);
                self.put(object.clone());
                let rev_key = tuple(vec![mpid.clone(), key.clone()]);
                let rev = match self.get(&rev_key) {
                    Some(rev) => rev.clone(),
                    None => {
                        let rev = tuple(vec![rev_key, list(vec![])]);
                        self.put(rev.clone());
                        rev
                    }
                };
                let message = tuple(vec![
                    atom("gproc"),
                    atom("unreg"),
                    reference.clone(),
                    key.clone(),
                ]);
                let mut ops = vec![tuple(vec![atom("insert"), list(vec![object, rev])])];
                if self.is_local(mpid) {
                    self.send(mpid, message);
                } else {
                    ops.push(tuple(vec![
                        atom("notify"),
                        list(vec![tuple(vec![mpid.clone(), message])]),
                    ]));
                }
                reply(reference, Some(ops))
            }
            _ => {
                self.send(
                    mpid,
                    tuple(vec![
                        atom("gproc"),
                        atom("unreg"),
                        reference.clone(),
                        key.clone(),
                    ]),
                );
                reply(reference, None)
            }
        }
    }

    /// `tell_waiters`: `{Pid, Msg}` notifications for waiters elsewhere,
    /// sent straight to the ones on this node.
    fn tell_waiters(
        &mut self,
        waiters: &[Term],
        key: &Term,
        pid: &Term,
        value: &Term,
        event: &Term,
    ) -> Vec<Term> {
        let mut out = Vec::new();
        for waiter in waiters {
            let (p, message) = match fields(waiter) {
                [p, r] => (
                    p,
                    tuple(vec![
                        atom("gproc"),
                        r.clone(),
                        atom("registered"),
                        tuple(vec![key.clone(), pid.clone(), value.clone()]),
                    ]),
                ),
                [p, r, _] => (
                    p,
                    tuple(vec![atom("gproc"), event.clone(), r.clone(), key.clone()]),
                ),
                _ => continue,
            };
            if self.is_local(p) {
                self.send(p, message);
            } else {
                out.push(tuple(vec![p.clone(), message]));
            }
        }
        out
    }

    fn demonitor(&mut self, key: &Term, mpid: &Term, reference: &Term) -> Option<LeaderReply> {
        let (t, _, _) = any_key(key)?;
        global_key(key)?;
        let slot = tuple(vec![key.clone(), atom(t)]);
        let rev = tuple(vec![mpid.clone(), key.clone()]);
        let existing = self.get(&slot);
        match existing.as_ref().map(fields) {
            Some([_, pid, _]) => {
                // gproc 0.8.0 calls gproc_lib:remove_monitors/3 with
                // (Opts, MPid, Ref), which finds nothing and leaves the
                // owner's options empty; the same happens here, so every
                // node holds the same table.
                let object = tuple(vec![tuple(vec![pid.clone(), key.clone()]), list(vec![])]);
                // In the order of the broadcast (delete, then insert), so an
                // owner demonitoring its own name keeps its reverse entry
                // here as on every follower (gproc deletes it last, at the
                // leader only).
                self.del(&rev);
                self.put(object.clone());
                reply(
                    atom("ok"),
                    Some(vec![
                        tuple(vec![atom("delete"), list(vec![rev])]),
                        tuple(vec![atom("insert"), list(vec![object])]),
                    ]),
                )
            }
            Some([_, waiters]) => {
                let kept: Vec<Term> = elements(waiters)
                    .unwrap_or_default()
                    .iter()
                    .filter(|w| !matches!(fields(w), [p, r, _] if p == mpid && r == reference))
                    .cloned()
                    .collect();
                let drop_rev =
                    !kept.iter().any(|w| fields(w).first() == Some(mpid)) && !self.holds(mpid, key);
                if kept.is_empty() {
                    let mut gone = Vec::new();
                    if drop_rev {
                        self.del(&rev);
                        gone.push(rev);
                    }
                    self.del(&slot);
                    gone.push(slot);
                    return reply(
                        atom("ok"),
                        Some(vec![tuple(vec![atom("delete"), list(gone)])]),
                    );
                }
                let object = tuple(vec![slot, list(kept.clone())]);
                self.put(object.clone());
                let mut ops = Vec::new();
                if drop_rev {
                    self.del(&rev);
                    ops.push(tuple(vec![atom("delete"), list(vec![rev])]));
                }
                ops.push(tuple(vec![atom("insert"), list(vec![object])]));
                reply(atom("ok"), Some(ops))
            }
            _ => reply(atom("ok"), None),
        }
    }

    fn reg_or_locate(&mut self, key: &Term, value: &Term, pid: &Term) -> Option<LeaderReply> {
        let Some(("n", _)) = global_key(key) else {
            return None;
        };
        let slot = tuple(vec![key.clone(), atom("n")]);
        if let Some([_, other, other_value]) = self.get(&slot).as_ref().map(fields) {
            return reply(tuple(vec![other.clone(), other_value.clone()]), None);
        }
        // A fun to spawn on the caller's node needs a remote spawn this
        // leader does not make: badarg (flack never asks for one).
        as_pid(pid)?;
        if !self.insert_reg(key, value, pid, &atom("registered")) {
            return None;
        }
        let object = tuple(vec![slot, pid.clone(), value.clone()]);
        reply(
            tuple(vec![pid.clone(), value.clone()]),
            Some(vec![tuple(vec![atom("insert"), list(vec![object])])]),
        )
    }

    fn update_counter(&mut self, key: &Term, incr: &Term, pid: &Term) -> Option<LeaderReply> {
        let (kind @ ("c" | "n"), _) = global_key(key)? else {
            return None;
        };
        let incr = int_of(incr)?;
        let slot = tuple(vec![key.clone(), pid.clone()]);
        let new = self.counter_value(&slot)?.checked_add(incr)?;
        let object = self.set_third(&slot, int_term(new))?;
        let real = fields(&object).get(1).cloned()?;
        let mut vals = vec![tuple(vec![slot, real, int_term(new)])];
        if kind == "c" {
            vals.extend(self.aggregate_update(key, incr));
        }
        reply(
            int_term(new),
            Some(vec![tuple(vec![atom("insert"), list(vals)])]),
        )
    }

    /// `batch_update_counters`: all or nothing here (gproc leaves the
    /// counters before a bad one updated, but broadcasts none of them).
    fn update_counters(&mut self, batch: &Term) -> Option<LeaderReply> {
        let items = elements(batch)?;
        // Check every step first, on a scratch copy of the values.
        let mut scratch: Vec<(Term, i64)> = Vec::new();
        for item in items {
            let [key, pid, op] = fields(item) else {
                return None;
            };
            let Some(("c", _)) = global_key(key) else {
                return None;
            };
            let slot = tuple(vec![key.clone(), pid.clone()]);
            let current = match scratch.iter().rev().find(|(s, _)| *s == slot) {
                Some((_, value)) => *value,
                None => self.counter_value(&slot)?,
            };
            if elements(op).is_some() {
                // The list form's reply shape is broken in gproc 0.8.0.
                return None;
            }
            scratch.push((slot, counter_op(current, op)?));
        }
        let mut replies = Vec::new();
        let mut updates: Vec<Term> = Vec::new();
        for item in items {
            let [key, pid, op] = fields(item) else {
                continue;
            };
            let slot = tuple(vec![key.clone(), pid.clone()]);
            let Some(previous) = self.counter_value(&slot) else {
                continue;
            };
            let Some(new) = counter_op(previous, op) else {
                continue;
            };
            let Some(counter) = self.set_third(&slot, int_term(new)) else {
                continue;
            };
            let aggregate = self.aggregate_update(key, new - previous);
            add_object(&mut updates, counter);
            for a in aggregate {
                add_object(&mut updates, a);
            }
            replies.push(tuple(vec![key.clone(), pid.clone(), int_term(new)]));
        }
        reply(
            list(replies),
            Some(vec![tuple(vec![atom("insert"), list(updates)])]),
        )
    }

    fn reset_counter(&mut self, key: &Term, pid: &Term) -> Option<LeaderReply> {
        let Some(("c", _)) = global_key(key) else {
            return None;
        };
        let slot = tuple(vec![key.clone(), pid.clone()]);
        let current = self.counter_value(&slot)?;
        let rev = tuple(vec![pid.clone(), key.clone()]);
        let initial = match self.get(&rev).as_ref().map(fields) {
            Some([_, Term::List(opts)]) => match keyfind(&opts.elements, &atom("initial")) {
                Some(value) => int_of(value)?,
                None => 0,
            },
            Some([_, r]) if is_atom(r, "r") => 0,
            _ => return None,
        };
        let incr = initial.checked_sub(current)?;
        let object = self.set_third(&slot, int_term(initial))?;
        let mut vals = vec![object];
        vals.extend(self.aggregate_update(key, incr));
        reply(
            tuple(vec![int_term(current), int_term(initial)]),
            Some(vec![tuple(vec![atom("insert"), list(vals)])]),
        )
    }

    fn unreg(&mut self, key: &Term, pid: &Term) -> Option<LeaderReply> {
        let (kind, name) = global_key(key)?;
        let name = name.clone();
        let slot = ets_key(key, pid);
        match self.get(&slot).as_ref().map(fields) {
            None => return None,
            // gproc 0.8.0 deletes a name held by another process at the
            // leader only: its broadcast `{delete, [{K, Pid}]}` leaves the
            // holder's registration on every follower. Refused here, as
            // gproc refuses it for local names.
            Some([_, holder, _]) if holder != pid => return None,
            Some(_) => {}
        }
        self.remove_reg(key, pid, &atom("unreg"));
        let delete = tuple(vec![
            atom("delete"),
            list(vec![
                tuple(vec![key.clone(), pid.clone()]),
                tuple(vec![pid.clone(), key.clone()]),
            ]),
        ]);
        let companion = match kind {
            "c" => Some("a"),
            "r" => Some("rc"),
            _ => None,
        };
        let ops = match companion {
            Some(c) => {
                let mut ops = vec![delete];
                let ckey = tuple(vec![tuple(vec![atom(c), atom("g"), name]), atom(c)]);
                if let Some(object) = self.get(&ckey) {
                    ops.push(tuple(vec![atom("insert"), list(vec![object.clone()])]));
                }
                ops
            }
            None => vec![
                tuple(vec![
                    atom("notify"),
                    list(vec![tuple(vec![key.clone(), pid.clone(), atom("unreg")])]),
                ]),
                delete,
            ],
        };
        reply(atom("true"), Some(ops))
    }

    fn give_away(&mut self, key: &Term, to: &Term, pid: &Term) -> Option<LeaderReply> {
        let Some((t @ ("a" | "n" | "rc"), _)) = global_key(key) else {
            return None;
        };
        let slot = tuple(vec![key.clone(), atom(t)]);
        let value = match self.get(&slot).as_ref().map(fields) {
            Some([_, holder, value]) if holder == pid => value.clone(),
            _ => return None,
        };
        // pid_to_give_away_to: a pid, or the holder of a name/aggregate.
        let target = if as_pid(to).is_some() {
            Some(to.clone())
        } else {
            match global_key(to) {
                Some((k @ ("n" | "a"), _)) => {
                    match self
                        .get(&tuple(vec![to.clone(), atom(k)]))
                        .as_ref()
                        .map(fields)
                    {
                        Some([_, holder, _]) => Some(holder.clone()),
                        _ => None,
                    }
                }
                _ => return None,
            }
        };
        let opts = self.get_opts(pid, key);
        let rev = tuple(vec![pid.clone(), key.clone()]);
        match target {
            Some(target) if target == *pid => reply(pid.clone(), None),
            Some(target) => {
                let object = tuple(vec![slot, target.clone(), value]);
                self.put(object.clone());
                self.put(tuple(vec![
                    tuple(vec![target.clone(), key.clone()]),
                    list(opts.clone()),
                ]));
                self.del(&rev);
                let event = tuple(vec![atom("migrated"), target.clone()]);
                self.notify_local(&event, key, &opts);
                reply(
                    target,
                    Some(vec![
                        tuple(vec![atom("insert"), list(vec![object])]),
                        tuple(vec![
                            atom("notify"),
                            list(vec![tuple(vec![key.clone(), pid.clone(), event])]),
                        ]),
                        tuple(vec![
                            atom("delete"),
                            list(vec![tuple(vec![key.clone(), pid.clone()]), rev]),
                        ]),
                    ]),
                )
            }
            None => {
                self.del(&slot);
                self.del(&rev);
                self.notify_local(&atom("unreg"), key, &opts);
                reply(
                    atom("undefined"),
                    Some(vec![
                        tuple(vec![
                            atom("notify"),
                            list(vec![tuple(vec![key.clone(), pid.clone(), atom("unreg")])]),
                        ]),
                        tuple(vec![
                            atom("delete"),
                            list(vec![tuple(vec![key.clone(), pid.clone()]), rev]),
                        ]),
                    ]),
                )
            }
        }
    }

    /// `gproc_lib:insert_many/4` for `p` and `n` (gproc 0.8.0 cannot make
    /// `r` objects here and answers badarg).
    fn mreg(&mut self, kind: &Term, pairs: &Term, pid: &Term) -> Option<LeaderReply> {
        let t = name_of(kind).filter(|t| matches!(*t, "p" | "n"))?;
        as_pid(pid)?;
        let mut objects = Vec::new();
        for pair in elements(pairs)? {
            let [k, v] = fields(pair) else {
                return None;
            };
            let key = tuple(vec![atom(t), atom("g"), k.clone()]);
            let second = if t == "n" { atom("n") } else { pid.clone() };
            objects.push(tuple(vec![
                tuple(vec![key, second]),
                pid.clone(),
                v.clone(),
            ]));
        }
        let key_of = |o: &Term| {
            fields(o)
                .first()
                .cloned()
                .unwrap_or_else(|| atom("undefined"))
        };
        // A registration in the way: badarg; waiters in the way: taken over.
        if objects
            .iter()
            .any(|o| self.get(&key_of(o)).is_some_and(|e| fields(&e).len() == 3))
        {
            return None;
        }
        for object in &objects {
            let k = key_of(object);
            let waiters = match self.get(&k).as_ref().map(fields) {
                Some([_, waiters]) => elements(waiters).map(<[Term]>::to_vec),
                _ => None,
            };
            self.put(object.clone());
            let [_, _, value] = fields(object) else {
                continue;
            };
            let id = fields(&k)
                .first()
                .cloned()
                .unwrap_or_else(|| atom("undefined"));
            self.put(tuple(vec![
                tuple(vec![pid.clone(), id.clone()]),
                list(vec![]),
            ]));
            if let Some(waiters) = waiters {
                let value = value.clone();
                self.notify_waiters(&waiters, &id, pid, &value, &atom("registered"));
            }
        }
        reply(
            atom("true"),
            Some(vec![tuple(vec![atom("insert"), list(objects)])]),
        )
    }

    /// `gproc_lib:remove_many/4`: the caller's keys go, and (as in gproc)
    /// their monitors are not told.
    fn munreg(&mut self, kind: &Term, keys: &Term, pid: &Term) -> Option<LeaderReply> {
        let t = name_of(kind)?;
        let keys = elements(keys)?;
        let full: Vec<Term> = keys
            .iter()
            .map(|k| tuple(vec![atom(t), atom("g"), k.clone()]))
            .collect();
        // gproc fails half-way on a counter or resource that is not there
        // (or no longer, named twice); check first.
        let twice = full.iter().enumerate().any(|(i, k)| full[..i].contains(k));
        if matches!(t, "c" | "r")
            && (twice
                || full
                    .iter()
                    .any(|k| !self.has(&tuple(vec![k.clone(), pid.clone()]))))
        {
            return None;
        }
        let mut objs = Vec::new();
        for key in &full {
            // gproc removes a unique key whoever holds it, and leaves the
            // holder's reverse entry behind on every node, where it later
            // shadows the holder's next registration of the name on the
            // followers only. Only the caller's own keys go here.
            if let Some(Term::Tuple(found)) = self.get(&ets_key(key, pid))
                && let [_, holder, _] = found.elements.as_slice()
                && holder != pid
            {
                continue;
            }
            let opts = self.get_opts(pid, key);
            objs.extend(self.remove_reg_with(key, pid, &atom("unreg"), &opts));
        }
        if objs.is_empty() {
            return reply(atom("true"), None);
        }
        let mut ops = vec![tuple(vec![atom("delete"), list(objs)])];
        // gproc moves the aggregate (or resource count) of the counters (or
        // resources) it removes, but broadcasts only the deletes; followers
        // get the new value too, as `unreg` sends it.
        let companion = match t {
            "c" => Some("a"),
            "r" => Some("rc"),
            _ => None,
        };
        if let Some(c) = companion {
            let mut moved = Vec::new();
            for k in keys {
                let ckey = tuple(vec![tuple(vec![atom(c), atom("g"), k.clone()]), atom(c)]);
                if let Some(object) = self.get(&ckey)
                    && !moved.contains(&object)
                {
                    moved.push(object);
                }
            }
            if !moved.is_empty() {
                ops.push(tuple(vec![atom("insert"), list(moved)]));
            }
        }
        reply(atom("true"), Some(ops))
    }

    fn set(&mut self, key: &Term, value: &Term, pid: &Term) -> Option<LeaderReply> {
        let (t, name) = global_key(key)?;
        let name = name.clone();
        match t {
            "a" => {
                int_of(value)?;
                if !self.do_set_value(key, value, pid) {
                    return None;
                }
                let object = tuple(vec![
                    tuple(vec![key.clone(), atom("a")]),
                    pid.clone(),
                    value.clone(),
                ]);
                reply(
                    atom("true"),
                    Some(vec![tuple(vec![atom("insert"), list(vec![object])])]),
                )
            }
            "c" => {
                let slot = tuple(vec![key.clone(), pid.clone()]);
                let old = self.counter_value(&slot)?;
                let new = int_of(value)?;
                let object = tuple(vec![slot, pid.clone(), value.clone()]);
                self.put(object.clone());
                self.bump_aggregate(&name, new.checked_sub(old)?);
                let mut vals = vec![object];
                let aggregate = tuple(vec![tuple(vec![atom("a"), atom("g"), name]), atom("a")]);
                vals.extend(self.get(&aggregate));
                reply(
                    atom("true"),
                    Some(vec![tuple(vec![atom("insert"), list(vals)])]),
                )
            }
            _ => {
                if !self.do_set_value(key, value, pid) {
                    return None;
                }
                let second = if t == "n" { atom("n") } else { pid.clone() };
                let object = tuple(vec![
                    tuple(vec![key.clone(), second]),
                    pid.clone(),
                    value.clone(),
                ]);
                reply(
                    atom("true"),
                    Some(vec![tuple(vec![atom("insert"), list(vec![object])])]),
                )
            }
        }
    }

    /// `gproc_lib:await/3`: the registration now, or a waiter entry and the
    /// `{gproc, Ref, registered, ...}` message later.
    fn await_key(&mut self, key: &Term, waiter: &Term, from: &Term) -> Option<LeaderReply> {
        let (t, "g", _) = any_key(key)? else {
            return None;
        };
        let [_, reference] = fields(from) else {
            return None;
        };
        let slot = tuple(vec![key.clone(), atom(t)]);
        let rev = tuple(vec![tuple(vec![waiter.clone(), key.clone()]), list(vec![])]);
        let entry = tuple(vec![waiter.clone(), reference.clone()]);
        let waiters = match self.get(&slot).as_ref().map(fields) {
            Some([_, pid, value]) => {
                let found = tuple(vec![key.clone(), pid.clone(), value.clone()]);
                return reply(tuple(vec![reference.clone(), found]), None);
            }
            Some([_, waiters]) => {
                let mut all = vec![entry];
                all.extend(elements(waiters).unwrap_or_default().iter().cloned());
                all
            }
            _ => vec![entry],
        };
        let w = tuple(vec![slot, list(waiters)]);
        self.put(w.clone());
        self.put(rev.clone());
        reply(
            reference.clone(),
            Some(vec![tuple(vec![atom("insert"), list(vec![w, rev])])]),
        )
    }

    /// `handle_leader_cast(Msg, ...)`: the ops to broadcast, if any.
    pub fn leader_cast(&mut self, message: &Term) -> (Option<Term>, Vec<Change>) {
        let effects = self.leader_cast_full(message);
        (effects.broadcast, effects.changes)
    }

    /// [`GprocTable::leader_cast`] with the messages to processes.
    /// `initiate_sync` and `sync_reply` are [`SyncRequests`]' business;
    /// unknown casts (which crash an Erlang leader) are ignored.
    pub fn leader_cast_full(&mut self, message: &Term) -> Effects {
        let f = fields(message);
        let ops = match (f.first().and_then(name_of), f.len()) {
            (Some("pid_is_DOWN"), 2) => {
                let pid = &f[1];
                let globals = self.reverse_keys_of(pid);
                let ops = self.process_globals(globals);
                (!ops.is_empty()).then(|| list(ops))
            }
            (Some("add_globals"), 2) => {
                let objects = elements(&f[1]).map(<[Term]>::to_vec).unwrap_or_default();
                let mut update = self.insert_globals(&objects);
                update.extend(objects);
                Some(list(vec![tuple(vec![atom("insert"), list(update)])]))
            }
            (Some("remove_globals"), 2) => {
                let globals = elements(&f[1]).map(<[Term]>::to_vec).unwrap_or_default();
                self.delete_globals(&globals);
                None
            }
            (Some("cancel_wait"), 4) => self.cancel_wait(&f[1], &f[2], Some(&f[3])),
            (Some("cancel_wait_or_monitor"), 3) => self.cancel_wait(&f[1], &f[2], None),
            _ => None,
        };
        let extra = std::mem::take(&mut self.extra_ops);
        let ops = match (ops, extra.is_empty()) {
            (ops, true) => ops,
            (ops, false) => {
                let mut all = ops
                    .as_ref()
                    .and_then(elements)
                    .map(<[Term]>::to_vec)
                    .unwrap_or_default();
                all.extend(extra);
                Some(list(all))
            }
        };
        let (changes, sends) = self.take();
        Effects {
            broadcast: ops,
            changes,
            sends,
        }
    }

    /// The `{Key, Pid}` of every global reverse entry of `pid`, in table
    /// order (pid_is_DOWN's selection).
    fn reverse_keys_of(&self, pid: &Term) -> Vec<(Term, Term)> {
        self.keyed_by(pid)
            .filter_map(|(k, rest)| match (k.fields(), rest.len()) {
                ([_, key], 1) => {
                    let key = key.to_term();
                    global_key(&key).is_some().then(|| (key, pid.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// `cancel_wait` (`reference` given) and `cancel_wait_or_monitor`.
    fn cancel_wait(&mut self, pid: &Term, key: &Term, reference: Option<&Term>) -> Option<Term> {
        let (t, _, _) = any_key(key)?;
        let slot = tuple(vec![key.clone(), atom(t)]);
        let waiters = match self.get(&slot).as_ref().map(fields) {
            Some([_, waiters]) => elements(waiters)?.to_vec(),
            // A registration: cancel_wait has nothing to do, and
            // cancel_wait_or_monitor's remove_monitors looks under
            // `monitors`, which gproc never writes: nothing either.
            Some([_, _, _]) => return Some(list(vec![])),
            _ => return reference.map(|_| list(vec![])),
        };
        let rev = tuple(vec![pid.clone(), key.clone()]);
        let kept: Vec<Term> = waiters
            .into_iter()
            .filter(|w| match (fields(w), reference) {
                ([p, ..], None) => p != pid,
                ([p, r, ..], Some(reference)) => !(p == pid && r == reference),
                _ => true,
            })
            .collect();
        // gproc writes these deletes as `{delete, L, []}`, which its own
        // followers crash on; the well-formed `{delete, L}` does the same.
        let drop_rev =
            !kept.iter().any(|w| fields(w).first() == Some(pid)) && !self.holds(pid, key);
        if kept.is_empty() {
            self.del(&slot);
            let mut gone = vec![slot];
            if drop_rev {
                self.del(&rev);
                gone.push(rev);
            }
            return Some(list(vec![tuple(vec![atom("delete"), list(gone)])]));
        }
        let object = tuple(vec![slot, list(kept.clone())]);
        self.put(object.clone());
        let mut ops = vec![tuple(vec![atom("insert"), list(vec![object])])];
        if drop_rev {
            self.del(&rev);
            ops.push(tuple(vec![atom("delete"), list(vec![rev])]));
        }
        Some(list(ops))
    }

    /// Purges every registration of a candidate node that went down
    /// (gproc_dist's `handle_DOWN`).
    pub fn purge_node(&mut self, node: &str) -> (Option<Term>, Vec<Change>) {
        let effects = self.purge_node_full(node);
        (effects.broadcast, effects.changes)
    }

    /// [`GprocTable::purge_node`] with the messages to processes.
    pub fn purge_node_full(&mut self, node: &str) -> Effects {
        let globals: Vec<(Term, Term)> = self
            .ets
            .iter()
            // Only registrations ({{Key, T}, Owner, Value}) of that node.
            .filter(|(_, rest)| matches!(&rest[..], [owner, _] if owner.pid_node() == Some(node)))
            .map(|(key, rest)| rebuild(key, rest))
            .filter_map(|o| match fields(&o) {
                [k, owner, _] if node_of(owner) == Some(node) => {
                    let key = fields(k).first()?;
                    global_key(key).map(|_| (key.clone(), owner.clone()))
                }
                _ => None,
            })
            .collect();
        let ops = self.process_globals(globals);
        let (changes, sends) = self.take();
        Effects {
            broadcast: (!ops.is_empty()).then(|| list(ops)),
            changes,
            sends,
        }
    }
}

/// Puts `newer` in front of `objects`, dropping older versions of the same
/// objects. gproc 0.8.0 keeps them all, newest first, so followers that
/// insert in list order end with the oldest value of an aggregate or a
/// resource count two of whose counters died together.
fn prepend_latest(objects: &mut Vec<Term>, newer: Vec<Term>) {
    objects.retain(|o| !newer.iter().any(|n| fields(n).first() == fields(o).first()));
    objects.splice(0..0, newer);
}

/// `add_object`: replace the object with the same key and owner, or append.
fn add_object(objects: &mut Vec<Term>, object: Term) {
    let same = |o: &Term| fields(o).get(..2) == fields(&object).get(..2);
    match objects.iter_mut().find(|o| same(o)) {
        Some(slot) => *slot = object,
        None => objects.push(object),
    }
}

/// What the leader must do for a `gproc_dist:sync()` request.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncEffect {
    /// Send `{from_leader, {sync, From}}` to `{gproc_dist, Node}` for each
    /// of these nodes: each answers with a `sync_reply` cast once it has
    /// applied every broadcast sent before.
    Ask {
        /// The nodes to ask.
        nodes: Vec<String>,
        /// `{sync, From}`.
        message: Term,
    },
    /// Every node asked has answered or died: the caller `From` gets `true`,
    /// directly when it is local, else through `{from_leader,
    /// {sync_complete, From}}` to its node's `gproc_dist`.
    Complete(Term),
}

/// The leader's `sync_requests`: for each `gproc_dist:sync()` caller (its
/// gen_server `From`), the nodes that have not answered yet.
///
/// gproc_dist keeps these in its callback state; a request completes when
/// the last node answers `{sync_reply, Node, From}` or goes down
/// (`handle_DOWN`'s `check_sync_requests`), so a sync never waits on a dead
/// node.
#[derive(Debug, Default, Clone)]
pub struct SyncRequests {
    pending: Vec<(Term, Vec<String>)>,
}

impl SyncRequests {
    /// No requests.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests still waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no request waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// `initiate_sync(From)` at the leader; `alive` is gen_leader's
    /// `alive(E) -- [node()]`.
    pub fn initiate(&mut self, from: Term, alive: Vec<String>) -> Vec<SyncEffect> {
        if alive.is_empty() {
            // Alone: trivially in sync.
            return vec![SyncEffect::Complete(from)];
        }
        let message = tuple(vec![atom("sync"), from.clone()]);
        // Newest first, as gproc_dist prepends.
        self.pending.insert(0, (from, alive.clone()));
        vec![SyncEffect::Ask {
            nodes: alive,
            message,
        }]
    }

    /// `{sync_reply, Node, From}`. Unknown requests are ignored, as
    /// gproc_dist does (a reply to a leader that died meanwhile).
    pub fn reply(&mut self, node: &str, from: &Term) -> Vec<SyncEffect> {
        let Some(index) = self.pending.iter().position(|(f, _)| f == from) else {
            return Vec::new();
        };
        let nodes = &mut self.pending[index].1;
        // lists:delete/2: only the first occurrence.
        if let Some(at) = nodes.iter().position(|n| n == node) {
            nodes.remove(at);
        }
        if nodes.is_empty() {
            let (from, _) = self.pending.remove(index);
            vec![SyncEffect::Complete(from)]
        } else {
            Vec::new()
        }
    }

    /// A candidate went down: it will never answer, so it stops counting
    /// (`check_sync_requests`).
    pub fn node_down(&mut self, node: &str) -> Vec<SyncEffect> {
        let mut out = Vec::new();
        self.pending.retain_mut(|(from, nodes)| {
            nodes.retain(|n| n != node);
            if nodes.is_empty() {
                out.push(SyncEffect::Complete(from.clone()));
                false
            } else {
                true
            }
        });
        out
    }

    /// `{sync_complete, From}` seen by a follower for a request it does not
    /// own: gproc_dist drops any trace of it.
    pub fn forget(&mut self, from: &Term) {
        self.pending.retain(|(f, _)| f != from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eetf::{Binary, Pid};

    fn pid(node: &str, id: u32) -> Term {
        Term::Pid(Pid::new(node, id, 0, 1))
    }

    fn bin(text: &str) -> Term {
        Term::from(Binary::from(text.as_bytes()))
    }

    fn user_key(owner: &Term) -> Term {
        tuple(vec![atom("n"), atom("g"), owner.clone()])
    }

    fn chat_key(chat: &str) -> Term {
        tuple(vec![atom("p"), atom("g"), bin(chat)])
    }

    fn attrs(name: &str, id: &str) -> Term {
        list(vec![
            tuple(vec![atom("username"), bin(name)]),
            tuple(vec![atom("user_id"), bin(id)]),
        ])
    }

    fn ensure_reg(owner: &Term, name: &str, id: &str) -> Term {
        tuple(vec![
            atom("reg"),
            user_key(owner),
            atom("undefined"),
            owner.clone(),
            attrs(name, id),
            atom("ensure"),
        ])
    }

    fn reg_chat(owner: &Term, chat: &str) -> Term {
        tuple(vec![
            atom("reg"),
            chat_key(chat),
            atom("undefined"),
            owner.clone(),
            list(vec![]),
            atom("reg"),
        ])
    }

    /// The transcript's shape: `[{insert,[{{{n,g,P},n},P,undefined},
    /// {{P,{n,g,P}},[{attrs,[{username,<<"alice">>},{user_id,<<"id1">>}]}]}]}]`.
    #[test]
    fn ensure_reg_replies_new_then_updated_and_broadcasts_the_reverse_entry_with_attrs() {
        let mut table = GprocTable::new();
        let alice = pid("flack2@vm", 374);
        let (reply, changes) = table.leader_call(&ensure_reg(&alice, "alice", "id1"));
        assert_eq!(reply.reply, atom("new"));
        let expected = list(vec![tuple(vec![
            atom("insert"),
            list(vec![
                tuple(vec![
                    tuple(vec![user_key(&alice), atom("n")]),
                    alice.clone(),
                    atom("undefined"),
                ]),
                tuple(vec![
                    tuple(vec![alice.clone(), user_key(&alice)]),
                    list(vec![tuple(vec![atom("attrs"), attrs("alice", "id1")])]),
                ]),
            ]),
        ])]);
        assert_eq!(reply.broadcast, Some(expected));
        assert_eq!(
            changes,
            vec![Change::User {
                pid: as_pid(&alice).cloned().expect("pid"),
                user_name: "alice".into(),
                user_id: "id1".into()
            }]
        );
        let (again, _) = table.leader_call(&ensure_reg(&alice, "alice2", "id1"));
        assert_eq!(again.reply, atom("updated"));
    }

    #[test]
    fn chat_reg_and_unreg_match_gproc() {
        let mut table = GprocTable::new();
        let p = pid("rust@localhost", 200);
        let (reply, changes) = table.leader_call(&reg_chat(&p, "chat"));
        assert_eq!(reply.reply, atom("true"));
        assert!(matches!(&changes[..], [Change::Joined { chat, .. }] if chat == "chat"));
        // A second reg of the same property: badarg, no broadcast.
        let (again, _) = table.leader_call(&reg_chat(&p, "chat"));
        assert_eq!(again, badarg());
        let unreg = tuple(vec![atom("unreg"), chat_key("chat"), p.clone()]);
        let (reply, changes) = table.leader_call(&unreg);
        assert_eq!(reply.reply, atom("true"));
        assert_eq!(
            reply.broadcast,
            Some(list(vec![
                tuple(vec![
                    atom("notify"),
                    list(vec![tuple(vec![
                        chat_key("chat"),
                        p.clone(),
                        atom("unreg")
                    ])])
                ]),
                tuple(vec![
                    atom("delete"),
                    list(vec![
                        tuple(vec![chat_key("chat"), p.clone()]),
                        tuple(vec![p.clone(), chat_key("chat")])
                    ]),
                ]),
            ]))
        );
        assert!(matches!(&changes[..], [Change::Left { .. }]));
        assert_eq!(table.leader_call(&unreg).0, badarg());
    }

    #[test]
    fn unknown_and_malformed_requests_get_badarg() {
        let mut table = GprocTable::new();
        let p = pid("n1@h", 1);
        for request in [
            atom("nonsense"),
            tuple(vec![
                atom("reg"),
                chat_key("c"),
                atom("undefined"),
                p.clone(),
                atom("not_a_list"),
                atom("reg"),
            ]),
            tuple(vec![
                atom("reg"),
                chat_key("c"),
                atom("undefined"),
                p.clone(),
                list(vec![]),
                atom("other"),
            ]),
            // await of something that is not a key.
            tuple(vec![atom("await"), atom("nokey"), p.clone()]),
            // A local key at the global leader.
            tuple(vec![
                atom("reg"),
                tuple(vec![atom("a"), atom("l"), bin("x")]),
                atom("undefined"),
                p.clone(),
                list(vec![]),
                atom("reg"),
            ]),
            // An owner that is neither a pid nor `shared`.
            tuple(vec![
                atom("reg"),
                chat_key("c"),
                atom("undefined"),
                atom("nobody"),
                list(vec![]),
                atom("reg"),
            ]),
        ] {
            assert_eq!(table.leader_call(&request).0, badarg(), "{request}");
        }
        assert!(table.is_empty());
    }

    #[test]
    fn a_broadcast_names_the_owners_it_inserts() {
        let mut leader = GprocTable::new();
        let p = pid("flack3@vm", 380);
        let q = pid("flack2@vm", 77);
        let mut seen = Vec::new();
        for request in [
            ensure_reg(&p, "bob", "b1"),
            reg_chat(&p, "foobar"),
            reg_chat(&q, "foobar"),
        ] {
            let (reply, _) = leader.leader_call(&request);
            seen.extend(GprocTable::inserted_owners(
                &reply.broadcast.expect("broadcast"),
            ));
        }
        let expected: Vec<eetf::Pid> = [&p, &p, &q]
            .iter()
            .map(|term| as_pid(term).cloned().expect("pid"))
            .collect();
        assert_eq!(seen, expected);
        // A delete inserts nothing.
        let (ops, _) = leader.leader_cast(&tuple(vec![atom("pid_is_DOWN"), p.clone()]));
        assert!(GprocTable::inserted_owners(&ops.expect("a broadcast")).is_empty());
    }

    #[test]
    fn a_follower_mirrors_the_leaders_broadcasts() {
        let mut leader = GprocTable::new();
        let mut follower = GprocTable::new();
        let p = pid("flack3@vm", 380);
        for request in [ensure_reg(&p, "bob", "b1"), reg_chat(&p, "foobar")] {
            let (reply, _) = leader.leader_call(&request);
            follower.apply(&reply.broadcast.expect("broadcast"));
        }
        assert_eq!(follower.snapshot(), leader.snapshot());
        // pid_is_DOWN at the leader: notify for n, delete both.
        let (ops, changes) = leader.leader_cast(&tuple(vec![atom("pid_is_DOWN"), p.clone()]));
        let ops = ops.expect("a broadcast");
        assert!(changes.contains(&Change::UserGone(as_pid(&p).cloned().expect("pid"))));
        let changes = follower.apply(&ops);
        assert!(
            changes
                .iter()
                .any(|c| matches!(c, Change::Left { chat, .. } if chat == "foobar"))
        );
        assert!(follower.is_empty());
        // A second cast finds nothing and broadcasts nothing.
        assert_eq!(
            leader.leader_cast(&tuple(vec![atom("pid_is_DOWN"), p])).0,
            None
        );
    }

    #[test]
    fn a_dead_nodes_registrations_are_purged() {
        let mut table = GprocTable::new();
        let gone = pid("flack1@vm", 398);
        let stays = pid("flack2@vm", 374);
        for request in [
            ensure_reg(&gone, "carol", "c"),
            reg_chat(&gone, "foobar"),
            ensure_reg(&stays, "alice", "a"),
        ] {
            table.leader_call(&request);
        }
        let (ops, _) = table.purge_node("flack1@vm");
        let ops = ops.expect("broadcast");
        let text = format!("{ops}");
        assert!(text.contains("notify") && text.contains("delete"), "{text}");
        assert_eq!(table.len(), 1);
        assert_eq!(table.purge_node("flack1@vm").0, None);
    }

    #[test]
    fn counters_serve_a_cluster_wide_sequence() {
        let mut table = GprocTable::new();
        let owner = pid("rust@h", 9);
        let key = tuple(vec![
            atom("c"),
            atom("g"),
            tuple(vec![atom("flack_seq"), bin("room")]),
        ]);
        let reg = tuple(vec![
            atom("reg"),
            key.clone(),
            Term::from(eetf::FixInteger::from(10)),
            owner.clone(),
            list(vec![]),
            atom("reg"),
        ]);
        assert_eq!(table.leader_call(&reg).0.reply, atom("true"));
        let bump = tuple(vec![
            atom("update_counter"),
            key,
            Term::from(eetf::FixInteger::from(1)),
            owner,
        ]);
        assert_eq!(
            table.leader_call(&bump).0.reply,
            Term::from(eetf::FixInteger::from(11))
        );
        assert_eq!(
            table.leader_call(&bump).0.reply,
            Term::from(eetf::FixInteger::from(12))
        );
    }

    #[test]
    fn surrender_keeps_local_registrations_and_reconciles() {
        let mut leader = GprocTable::new();
        let mut me = GprocTable::new();
        let mine = pid("rust@h", 5);
        let theirs = pid("n1@h", 7);
        // The leader knows a pid of mine that I no longer have, and one of its own.
        let (stale, _) = leader.leader_call(&reg_chat(&mine, "old"));
        assert!(stale.broadcast.is_some());
        leader.leader_call(&ensure_reg(&theirs, "t", "t1"));
        // I have a registration the leader lacks.
        let (reply, _) = GprocTable::new().leader_call(&ensure_reg(&mine, "m", "m1"));
        me.apply(&reply.broadcast.expect("ops"));
        let (changes, reconciliation) = me.surrender(&leader.snapshot(), "rust@h");
        assert!(
            changes
                .iter()
                .any(|c| matches!(c, Change::User { user_name, .. } if user_name == "t"))
        );
        let add = format!("{}", reconciliation.add_globals.expect("add_globals"));
        assert!(
            add.starts_with("{'add_globals'") || add.starts_with("{add_globals"),
            "{add}"
        );
        let remove = reconciliation.remove_globals.expect("remove_globals");
        let (_, _) = leader.leader_cast(&remove);
        assert!(leader.lookup(&chat_key("old"), &mine).is_none());
        // My own registration survived; the leader's other one arrived.
        assert!(me.lookup(&user_key(&mine), &atom("n")).is_some());
        assert!(me.lookup(&user_key(&theirs), &atom("n")).is_some());
    }

    #[test]
    fn sync_completes_when_every_node_answered_or_died() {
        let mut syncs = SyncRequests::new();
        let from = tuple(vec![pid("n2@h", 40), atom("tag")]);
        let nodes = vec!["n1@h".to_owned(), "n2@h".to_owned(), "n3@h".to_owned()];
        let effects = syncs.initiate(from.clone(), nodes.clone());
        assert_eq!(
            effects,
            vec![SyncEffect::Ask {
                nodes,
                message: tuple(vec![atom("sync"), from.clone()]),
            }]
        );
        assert!(syncs.reply("n1@h", &from).is_empty());
        // A reply for an unknown request changes nothing.
        assert!(syncs.reply("n3@h", &atom("other")).is_empty());
        assert!(syncs.node_down("n3@h").is_empty());
        assert_eq!(
            syncs.reply("n2@h", &from),
            vec![SyncEffect::Complete(from.clone())]
        );
        assert!(syncs.is_empty());
        // Alone: complete at once.
        assert_eq!(
            syncs.initiate(from.clone(), Vec::new()),
            vec![SyncEffect::Complete(from.clone())]
        );
        // A node that dies completes the requests that only waited on it.
        syncs.initiate(from.clone(), vec!["n1@h".to_owned()]);
        assert_eq!(syncs.node_down("n1@h"), vec![SyncEffect::Complete(from)]);
    }
}
