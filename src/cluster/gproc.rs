//! gproc's global table as gproc_dist replicates it (gproc 0.8.0), pure.
//!
//! The objects are kept in the shapes the Erlang nodes exchange, because
//! they travel as they are in snapshots (`{globals, Objects}`) and in
//! `{from_leader, Ops}` broadcasts:
//!
//! - registrations `{{Key, T}, Owner, Value}` where `Key = {Type, g, Name}`
//!   and `T` is the atom `n` (unique names) or the owner pid (properties,
//!   counters);
//! - reverse entries `{{Pid, Key}, Opts}`, where `Opts` holds
//!   `{attrs, [{username, U}, {user_id, Id}]}` for flack's users.
//!
//! As leader, [`GprocTable::leader_call`] and [`GprocTable::leader_cast`]
//! answer every request exactly as gproc_dist's `handle_leader_call` /
//! `handle_leader_cast` would for the registration kinds flack and ordinary
//! gproc users need (`n`, `p`, `c`), and `badarg` for anything else, never a
//! crash. Each returns the broadcast to send before the reply. As follower,
//! [`GprocTable::apply`] runs `from_leader` ops and [`GprocTable::surrender`]
//! reconciles with a new leader's snapshot, producing correctly shaped
//! `add_globals`/`remove_globals` casts (gproc 0.8.0's own are malformed).
//!
//! Every change that matters to chat (a user's name, a chat membership) is
//! reported as a [`Change`], so the chat directory can keep its delivery
//! index in step.

use std::collections::HashMap;

use eetf::Term;

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

/// What a leader call produced: the reply and, when the table changed or
/// gproc_dist would broadcast anyway, the ops to broadcast first.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderReply {
    /// Sent back inside `{leader, reply, Reply}`.
    pub reply: Term,
    /// `{from_leader, Ops}` to every node before the reply, if any.
    pub broadcast: Option<Term>,
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

/// The replicated table.
#[derive(Debug, Default, Clone)]
pub struct GprocTable {
    /// `{Key, T}` → `(Owner, Value)`.
    regs: HashMap<(Term, Term), (Term, Term)>,
    /// `(Pid, Key)` → `Opts`.
    reverse: HashMap<(Term, Term), Term>,
    /// Other 2-tuples whose key is `{{_,_,_},_}` (gproc `await` waiters).
    waiters: HashMap<Term, Term>,
}

fn badarg() -> LeaderReply {
    LeaderReply {
        reply: atom("badarg"),
        broadcast: None,
    }
}

fn is_atom(term: &Term, name: &str) -> bool {
    matches!(term, Term::Atom(atom) if atom.name == name)
}

/// `{Type, g, Name}` → `(Type, Name)`.
fn global_key(key: &Term) -> Option<(&str, &Term)> {
    match key {
        Term::Tuple(tuple) if tuple.elements.len() == 3 => {
            match (&tuple.elements[0], &tuple.elements[1]) {
                (Term::Atom(kind), Term::Atom(scope)) if scope.name == "g" => {
                    Some((kind.name.as_str(), &tuple.elements[2]))
                }
                _ => None,
            }
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

/// The order gproc's ordered_set table keeps keys in, as far as flack's keys
/// go: by type first (`n` < `p`, as Erlang orders atoms), so a user's name
/// `{n,g,Pid}` comes before its chat memberships in every purge, as in the
/// original's broadcasts. Ties fall back to the printed form.
fn key_order(a: &Term, b: &Term) -> std::cmp::Ordering {
    let kind = |key: &Term| {
        global_key(key)
            .map(|(kind, _)| kind.to_owned())
            .unwrap_or_default()
    };
    kind(a)
        .cmp(&kind(b))
        .then_with(|| format!("{a}").cmp(&format!("{b}")))
}

/// gproc's `ets_key`: unique kinds are keyed by their type atom, the rest by
/// the owner.
fn ets_key(kind: &str, key: &Term, owner: &Term) -> (Term, Term) {
    if matches!(kind, "n" | "a" | "rc") {
        (key.clone(), atom(kind))
    } else {
        (key.clone(), owner.clone())
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
    elements(term).is_some_and(|items| {
        items
            .iter()
            .all(|item| matches!(item, Term::Tuple(t) if t.elements.len() == 2))
    })
}

/// The value stored under `key` in a `[{K, V}]` list.
fn keyfind<'a>(items: &'a [Term], key: &str) -> Option<&'a Term> {
    items.iter().find_map(|item| match item {
        Term::Tuple(pair) if pair.elements.len() == 2 && is_atom(&pair.elements[0], key) => {
            Some(&pair.elements[1])
        }
        _ => None,
    })
}

/// `lists:keystore/4` on a pair list: replace the pair with the same key, or
/// append.
fn keystore(items: &mut Vec<Term>, pair: Term) {
    let key = match &pair {
        Term::Tuple(tuple) if tuple.elements.len() == 2 => tuple.elements[0].clone(),
        _ => return,
    };
    match items.iter_mut().find(
        |item| matches!(item, Term::Tuple(t) if t.elements.len() == 2 && t.elements[0] == key),
    ) {
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

impl GprocTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of registration objects.
    pub fn len(&self) -> usize {
        self.regs.len()
    }

    /// Whether there are no registrations.
    pub fn is_empty(&self) -> bool {
        self.regs.is_empty()
    }

    /// Every pid that owns a registration (gproc monitors each of them on
    /// every node).
    pub fn owners(&self) -> Vec<eetf::Pid> {
        let mut owners: Vec<eetf::Pid> = self
            .regs
            .values()
            .filter_map(|(owner, _)| as_pid(owner).cloned())
            .collect();
        owners.sort_by(|a, b| {
            (a.node.name.as_str(), a.id, a.serial).cmp(&(b.node.name.as_str(), b.id, b.serial))
        });
        owners.dedup();
        owners
    }

    /// The registration `{Key, T}`: `(Owner, Value)`.
    pub fn lookup(&self, key: &Term, t: &Term) -> Option<&(Term, Term)> {
        self.regs.get(&(key.clone(), t.clone()))
    }

    /// The reverse entry's options for `(Pid, Key)`.
    pub fn opts(&self, pid: &Term, key: &Term) -> Option<&Term> {
        self.reverse.get(&(pid.clone(), key.clone()))
    }

    /// Every registration owned by a pid of `node`, as `{Key, Pid}`
    /// (gproc_dist's `handle_DOWN` selection).
    fn globals_of_node(&self, node: &str) -> Vec<(Term, Term)> {
        let mut found: Vec<(Term, Term)> = self
            .regs
            .iter()
            .filter_map(|((key, _), (owner, _))| match as_pid(owner) {
                Some(pid) if pid.node.name == node => Some((key.clone(), owner.clone())),
                _ => None,
            })
            .collect();
        found.sort_by(|a, b| key_order(&a.0, &b.0));
        found
    }

    // ---------------------------------------------------------------
    // Changes reported to the chat layer.

    fn user_change(&self, pid: &Term, key: &Term) -> Option<Change> {
        let (kind, name) = global_key(key)?;
        if kind != "n" || name != pid {
            return None;
        }
        let pid = as_pid(pid)?;
        let opts = self.reverse.get(&(Term::Pid(pid.clone()), key.clone()))?;
        let attrs = elements(keyfind(elements(opts)?, "attrs")?)?;
        Some(Change::User {
            pid: pid.clone(),
            user_name: text(keyfind(attrs, "username")?)?,
            user_id: text(keyfind(attrs, "user_id")?)?,
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
            Some(Term::FixInteger(value)) => Change::Counter {
                name: name.clone(),
                owner,
                value: i64::from(value.value),
            },
            Some(_) => return None,
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
    // Primitive edits (what ETS does on every node).

    fn insert_object(&mut self, object: &Term, changes: &mut Vec<Change>) -> bool {
        let Term::Tuple(tuple) = object else {
            return false;
        };
        match tuple.elements.as_slice() {
            [Term::Tuple(k), owner, value] if k.elements.len() == 2 => {
                let key = k.elements[0].clone();
                let t = k.elements[1].clone();
                if global_key(&key).is_none() {
                    return false;
                }
                let previous = self
                    .regs
                    .insert((key.clone(), t), (owner.clone(), value.clone()));
                if as_pid(owner).is_some() {
                    self.reverse
                        .entry((owner.clone(), key.clone()))
                        .or_insert_with(|| list(Vec::new()));
                }
                if previous.is_none() {
                    changes.extend(Self::membership_change(&key, owner, true));
                }
                changes.extend(Self::counter_change(&key, owner, Some(value)));
                changes.extend(Self::name_change(&key, owner, Some(value)));
                changes.extend(self.user_change(owner, &key));
                true
            }
            [Term::Tuple(k), waiters]
                if k.elements.len() == 2 && global_key(&k.elements[0]).is_some() =>
            {
                self.waiters
                    .insert(tuple.elements[0].clone(), waiters.clone());
                true
            }
            [Term::Tuple(k), opts] if k.elements.len() == 2 && as_pid(&k.elements[0]).is_some() => {
                if elements(opts).is_none() {
                    return false;
                }
                let pid = k.elements[0].clone();
                let key = k.elements[1].clone();
                self.reverse
                    .insert((pid.clone(), key.clone()), opts.clone());
                changes.extend(self.user_change(&pid, &key));
                true
            }
            _ => false,
        }
    }

    /// gproc_dist's `remove_entry`: drop the registration `Key` held by
    /// `owner` (and its reverse entry). Returns the `{K, Pid, unreg}`
    /// notification for unique kinds.
    fn remove_entry(
        &mut self,
        key: &Term,
        owner: &Term,
        changes: &mut Vec<Change>,
    ) -> Option<Term> {
        let (kind, _) = global_key(key)?;
        let slot = ets_key(kind, key, owner);
        match self.regs.get(&slot) {
            Some((holder, _)) if holder == owner => {
                self.regs.remove(&slot);
                self.reverse.remove(&(owner.clone(), key.clone()));
                changes.extend(Self::membership_change(key, owner, false));
                changes.extend(Self::counter_change(key, owner, None));
                changes.extend(Self::name_change(key, owner, None));
                if kind == "n"
                    && let Some(pid) = as_pid(owner)
                    && global_key(key).is_some_and(|(_, name)| name == owner)
                {
                    changes.push(Change::UserGone(pid.clone()));
                }
                matches!(kind, "n" | "a")
                    .then(|| tuple(vec![key.clone(), owner.clone(), atom("unreg")]))
            }
            Some(_) => {
                self.reverse.remove(&(owner.clone(), key.clone()));
                None
            }
            None => {
                self.waiters.remove(&tuple(vec![slot.0, slot.1]));
                None
            }
        }
    }

    // ---------------------------------------------------------------
    // Follower side.

    /// Applies `{from_leader, Ops}` (the `Ops` part). `{sync, _}` and
    /// `{sync_complete, _}` are not lists and are left to the caller.
    /// The owners of the objects a `from_leader` broadcast inserts (the
    /// `Pid` of each `{{Key, T}, Pid, Value}`): the pids a follower may
    /// have to start monitoring after applying it, found without a scan of
    /// the whole table.
    pub fn inserted_owners(ops: &Term) -> Vec<eetf::Pid> {
        let mut owners = Vec::new();
        for op in elements(ops).unwrap_or_default() {
            let Term::Tuple(op) = op else { continue };
            let [Term::Atom(kind), items] = op.elements.as_slice() else {
                continue;
            };
            if kind.name != "insert" {
                continue;
            }
            for object in elements(items).unwrap_or_default() {
                if let Term::Tuple(object) = object
                    && let [_, Term::Pid(owner), _] = object.elements.as_slice()
                    && !owners.contains(owner)
                {
                    owners.push(owner.clone());
                }
            }
        }
        owners
    }

    pub fn apply(&mut self, ops: &Term) -> Vec<Change> {
        let mut changes = Vec::new();
        let Some(ops) = elements(ops) else {
            return changes;
        };
        for op in ops {
            let Term::Tuple(op) = op else { continue };
            let [Term::Atom(kind), items] = op.elements.as_slice() else {
                continue;
            };
            let Some(items) = elements(items) else {
                continue;
            };
            match kind.name.as_str() {
                "insert" => {
                    for object in items {
                        self.insert_object(object, &mut changes);
                    }
                }
                "delete" => {
                    for item in items {
                        self.delete_global(item, &mut changes);
                    }
                }
                // Notifications go to gproc monitors, which flack does not use.
                _ => {}
            }
        }
        changes
    }

    /// gproc_dist's `delete_globals` for one item.
    fn delete_global(&mut self, item: &Term, changes: &mut Vec<Change>) {
        let Term::Tuple(pair) = item else { return };
        let [first, second] = pair.elements.as_slice() else {
            return;
        };
        if global_key(first).is_some() {
            // {Key, PidOrAtom}
            self.remove_entry(first, second, changes);
        } else if let Term::Tuple(inner) = first
            && inner.elements.len() == 2
            && global_key(&inner.elements[0]).is_some()
        {
            // {{Key, T}, Pid}
            self.remove_entry(&inner.elements[0], second, changes);
        } else {
            // {Pid, Key}: a reverse entry only.
            self.reverse.remove(&(first.clone(), second.clone()));
        }
    }

    /// `surrendered`: adopt a new leader's snapshot, keeping this node's own
    /// registrations (they are more correct here than at the leader), and
    /// say what the leader must add or remove.
    pub fn surrender(&mut self, synch: &Term, local_node: &str) -> (Vec<Change>, Reconciliation) {
        let mut changes = Vec::new();
        let is_local = |term: &Term| as_pid(term).is_some_and(|pid| pid.node.name == local_node);
        let mine: Vec<((Term, Term), (Term, Term))> = self
            .regs
            .iter()
            .filter(|(_, (owner, _))| is_local(owner))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        // Drop every remote registration and reverse entry.
        let remote: Vec<(Term, Term)> = self
            .regs
            .iter()
            .filter(|(_, (owner, _))| !is_local(owner))
            .map(|(key, _)| key.clone())
            .collect();
        for key in remote {
            if let Some((owner, _)) = self.regs.remove(&key) {
                changes.extend(Self::membership_change(&key.0, &owner, false));
                changes.extend(Self::counter_change(&key.0, &owner, None));
                changes.extend(Self::name_change(&key.0, &owner, None));
                if let (Some(pid), Some(("n", name))) = (as_pid(&owner), global_key(&key.0))
                    && *name == owner
                {
                    changes.push(Change::UserGone(pid.clone()));
                }
            }
        }
        self.reverse
            .retain(|(pid, _), _| as_pid(pid).is_none_or(|pid| pid.node.name == local_node));
        // Apply the snapshot; collect the leader's view of my registrations.
        let mut leaders_mine: Vec<(Term, Term)> = Vec::new();
        let objects = match synch {
            Term::Tuple(t) if t.elements.len() == 2 && is_atom(&t.elements[0], "globals") => {
                elements(&t.elements[1])
                    .map(<[Term]>::to_vec)
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        };
        for object in &objects {
            if let Term::Tuple(t) = object
                && t.elements.len() == 3
                && is_local(&t.elements[1])
            {
                if let Term::Tuple(k) = &t.elements[0]
                    && k.elements.len() == 2
                {
                    leaders_mine.push((k.elements[0].clone(), k.elements[1].clone()));
                }
                continue;
            }
            self.insert_object(object, &mut changes);
        }
        // Mine that the leader lacks: add_globals, in the broadcast shape.
        let mut missing = Vec::new();
        for ((key, t), (owner, value)) in &mine {
            if !leaders_mine.contains(&(key.clone(), t.clone())) {
                missing.push(tuple(vec![
                    tuple(vec![key.clone(), t.clone()]),
                    owner.clone(),
                    value.clone(),
                ]));
                if let Some(opts) = self.reverse.get(&(owner.clone(), key.clone())) {
                    missing.push(tuple(vec![
                        tuple(vec![owner.clone(), key.clone()]),
                        opts.clone(),
                    ]));
                }
            }
        }
        // The leader's registrations of my pids that I do not have.
        let extra: Vec<Term> = leaders_mine
            .iter()
            .filter(|(key, t)| !self.regs.contains_key(&(key.clone(), t.clone())))
            .filter_map(|(key, t)| {
                objects.iter().find_map(|object| match object {
                    Term::Tuple(o)
                        if o.elements.len() == 3
                            && o.elements[0] == tuple(vec![key.clone(), t.clone()]) =>
                    {
                        Some(tuple(vec![o.elements[0].clone(), o.elements[1].clone()]))
                    }
                    _ => None,
                })
            })
            .collect();
        let reconciliation = Reconciliation {
            add_globals: (!missing.is_empty())
                .then(|| tuple(vec![atom("add_globals"), list(missing)])),
            remove_globals: (!extra.is_empty())
                .then(|| tuple(vec![atom("remove_globals"), list(extra)])),
        };
        (changes, reconciliation)
    }

    // ---------------------------------------------------------------
    // Leader side.

    /// The complete snapshot `{globals, Registrations ++ ReverseEntries}`
    /// sent in `ldr`. It must be complete: an Erlang follower holding a
    /// registration the snapshot lacks crashes in gproc 0.8.0.
    pub fn snapshot(&self) -> Term {
        let mut regs: Vec<Term> = self
            .regs
            .iter()
            .map(|((key, t), (owner, value))| {
                tuple(vec![
                    tuple(vec![key.clone(), t.clone()]),
                    owner.clone(),
                    value.clone(),
                ])
            })
            .collect();
        let mut reverse: Vec<Term> = self
            .reverse
            .iter()
            .filter(|((_, key), _)| global_key(key).is_some())
            .map(|((pid, key), opts)| {
                tuple(vec![tuple(vec![pid.clone(), key.clone()]), opts.clone()])
            })
            .collect();
        // Deterministic order, for tests and for diffing snapshots by eye.
        regs.sort_by_key(|term| format!("{term}"));
        reverse.sort_by_key(|term| format!("{term}"));
        regs.extend(reverse);
        tuple(vec![atom("globals"), list(regs)])
    }

    /// `handle_leader_call(Request, ...)`: mutate, then say what to broadcast
    /// and what to reply.
    pub fn leader_call(&mut self, request: &Term) -> (LeaderReply, Vec<Change>) {
        let mut changes = Vec::new();
        let reply = self
            .leader_call_inner(request, &mut changes)
            .unwrap_or_else(badarg);
        (reply, changes)
    }

    fn leader_call_inner(
        &mut self,
        request: &Term,
        changes: &mut Vec<Change>,
    ) -> Option<LeaderReply> {
        let Term::Tuple(request) = request else {
            return None;
        };
        let fields = request.elements.as_slice();
        let Term::Atom(verb) = fields.first()? else {
            return None;
        };
        match (verb.name.as_str(), fields.len()) {
            ("reg" | "reg_other", 6) => self.reg(
                &fields[1], &fields[2], &fields[3], &fields[4], &fields[5], changes,
            ),
            ("unreg" | "unreg_other", 3) => self.unreg(&fields[1], &fields[2], changes),
            ("update_counter", 4) => {
                self.update_counter(&fields[1], &fields[2], &fields[3], changes)
            }
            ("set_attributes", 4) => {
                self.set_attributes(&fields[1], &fields[2], &fields[3], changes)
            }
            _ => None,
        }
    }

    fn reg(
        &mut self,
        key: &Term,
        value: &Term,
        owner: &Term,
        attrs: &Term,
        op: &Term,
        changes: &mut Vec<Change>,
    ) -> Option<LeaderReply> {
        let (kind, _) = global_key(key)?;
        // a, r, rc (aggregates and resources) and shared owners are not
        // served by this leader: badarg, as gproc answers a bad request.
        if !matches!(kind, "n" | "p" | "c") || as_pid(owner).is_none() || !is_pair_list(attrs) {
            return None;
        }
        let ensure = is_atom(op, "ensure");
        if !ensure && !is_atom(op, "reg") {
            return None;
        }
        let slot = ets_key(kind, key, owner);
        match self.regs.get(&slot) {
            None => {
                self.regs.insert(slot, (owner.clone(), value.clone()));
                changes.extend(Self::membership_change(key, owner, true));
                changes.extend(Self::counter_change(key, owner, Some(value)));
                changes.extend(Self::name_change(key, owner, Some(value)));
                let initial = if kind == "c" {
                    list(vec![tuple(vec![atom("initial"), value.clone()])])
                } else {
                    list(Vec::new())
                };
                self.reverse
                    .entry((owner.clone(), key.clone()))
                    .or_insert(initial);
                self.merge_attrs(key, owner, attrs);
                changes.extend(self.user_change(owner, key));
                Some(LeaderReply {
                    reply: atom(if ensure { "new" } else { "true" }),
                    broadcast: Some(self.insert_ops(key, owner, value, kind)),
                })
            }
            Some((holder, _)) if ensure && holder == owner => {
                let slot = ets_key(kind, key, owner);
                self.regs.insert(slot, (owner.clone(), value.clone()));
                self.merge_attrs(key, owner, attrs);
                changes.extend(self.user_change(owner, key));
                Some(LeaderReply {
                    reply: atom("updated"),
                    broadcast: Some(self.insert_ops(key, owner, value, kind)),
                })
            }
            Some(_) if ensure => Some(LeaderReply {
                reply: atom("badarg"),
                broadcast: Some(list(Vec::new())),
            }),
            Some(_) => None,
        }
    }

    /// `insert_attr`: merge `[{K, V}]` into the reverse entry's `attrs`.
    fn merge_attrs(&mut self, key: &Term, owner: &Term, attrs: &Term) {
        let Some(new_attrs) = elements(attrs) else {
            return;
        };
        if new_attrs.is_empty() {
            return;
        }
        let Some(opts) = self.reverse.get_mut(&(owner.clone(), key.clone())) else {
            return;
        };
        let mut opt_items = elements(opts).map(<[Term]>::to_vec).unwrap_or_default();
        let mut current = keyfind(&opt_items, "attrs")
            .and_then(elements)
            .map(<[Term]>::to_vec)
            .unwrap_or_default();
        for pair in new_attrs {
            keystore(&mut current, pair.clone());
        }
        keystore(&mut opt_items, tuple(vec![atom("attrs"), list(current)]));
        *opts = list(opt_items);
    }

    /// `[{insert, [Registration, ReverseEntry]}]`, as gproc_dist's
    /// `mk_broadcast_insert_vals` builds it.
    fn insert_ops(&self, key: &Term, owner: &Term, value: &Term, kind: &str) -> Term {
        let (k, t) = ets_key(kind, key, owner);
        let mut objects = vec![tuple(vec![tuple(vec![k, t]), owner.clone(), value.clone()])];
        if let Some(opts) = self.reverse.get(&(owner.clone(), key.clone())) {
            objects.push(tuple(vec![
                tuple(vec![owner.clone(), key.clone()]),
                opts.clone(),
            ]));
        }
        list(vec![tuple(vec![atom("insert"), list(objects)])])
    }

    fn unreg(
        &mut self,
        key: &Term,
        owner: &Term,
        changes: &mut Vec<Change>,
    ) -> Option<LeaderReply> {
        let (kind, _) = global_key(key)?;
        let slot = ets_key(kind, key, owner);
        if !self.regs.contains_key(&slot) {
            return None;
        }
        self.remove_entry(key, owner, changes);
        let delete = tuple(vec![
            atom("delete"),
            list(vec![
                tuple(vec![key.clone(), owner.clone()]),
                tuple(vec![owner.clone(), key.clone()]),
            ]),
        ]);
        let ops = if kind == "c" || kind == "r" {
            list(vec![delete])
        } else {
            let notify = tuple(vec![
                atom("notify"),
                list(vec![tuple(vec![key.clone(), owner.clone(), atom("unreg")])]),
            ]);
            list(vec![notify, delete])
        };
        Some(LeaderReply {
            reply: atom("true"),
            broadcast: Some(ops),
        })
    }

    fn update_counter(
        &mut self,
        key: &Term,
        increment: &Term,
        owner: &Term,
        changes: &mut Vec<Change>,
    ) -> Option<LeaderReply> {
        let (kind, _) = global_key(key)?;
        let Term::FixInteger(increment) = increment else {
            return None;
        };
        if !matches!(kind, "c" | "n") {
            return None;
        }
        let slot = ets_key(kind, key, owner);
        let (holder, value) = self.regs.get_mut(&slot)?;
        let Term::FixInteger(current) = value else {
            return None;
        };
        let updated = current.value.checked_add(increment.value)?;
        *value = Term::from(eetf::FixInteger::from(updated));
        changes.extend(Self::counter_change(key, holder, Some(value)));
        let object = tuple(vec![
            tuple(vec![slot.0, slot.1]),
            holder.clone(),
            value.clone(),
        ]);
        Some(LeaderReply {
            reply: value.clone(),
            broadcast: Some(list(vec![tuple(vec![atom("insert"), list(vec![object])])])),
        })
    }

    fn set_attributes(
        &mut self,
        key: &Term,
        attrs: &Term,
        owner: &Term,
        changes: &mut Vec<Change>,
    ) -> Option<LeaderReply> {
        global_key(key)?;
        if !is_pair_list(attrs) || !self.reverse.contains_key(&(owner.clone(), key.clone())) {
            return None;
        }
        self.merge_attrs(key, owner, attrs);
        changes.extend(self.user_change(owner, key));
        let opts = self.reverse.get(&(owner.clone(), key.clone()))?.clone();
        let object = tuple(vec![tuple(vec![owner.clone(), key.clone()]), opts]);
        Some(LeaderReply {
            reply: atom("true"),
            broadcast: Some(list(vec![tuple(vec![atom("insert"), list(vec![object])])])),
        })
    }

    /// `handle_leader_cast(Msg, ...)`: the ops to broadcast, if any.
    pub fn leader_cast(&mut self, message: &Term) -> (Option<Term>, Vec<Change>) {
        let mut changes = Vec::new();
        let Term::Tuple(message) = message else {
            return (None, changes);
        };
        let ops = match message.elements.as_slice() {
            [Term::Atom(verb), pid] if verb.name == "pid_is_DOWN" => {
                let mut globals: Vec<(Term, Term)> = self
                    .reverse
                    .keys()
                    .filter(|(owner, key)| owner == pid && global_key(key).is_some())
                    .map(|(owner, key)| (key.clone(), owner.clone()))
                    .collect();
                globals.sort_by(|a, b| key_order(&a.0, &b.0));
                self.process_globals(globals, &mut changes)
            }
            [Term::Atom(verb), objects] if verb.name == "add_globals" => {
                let objects = elements(objects).map(<[Term]>::to_vec).unwrap_or_default();
                let mut inserted = Vec::new();
                for object in objects {
                    if self.insert_object(&object, &mut changes) {
                        inserted.push(object);
                    }
                }
                (!inserted.is_empty())
                    .then(|| list(vec![tuple(vec![atom("insert"), list(inserted)])]))
            }
            [Term::Atom(verb), globals] if verb.name == "remove_globals" => {
                for item in elements(globals).unwrap_or_default() {
                    self.delete_global(item, &mut changes);
                }
                None
            }
            _ => None,
        };
        (ops, changes)
    }

    /// Purges every registration of a candidate node that went down
    /// (gproc_dist's `handle_DOWN`).
    pub fn purge_node(&mut self, node: &str) -> (Option<Term>, Vec<Change>) {
        let mut changes = Vec::new();
        let globals = self.globals_of_node(node);
        (self.process_globals(globals, &mut changes), changes)
    }

    /// gproc_dist's `process_globals` for `n` and `p`/`c`: remove each, and
    /// broadcast `[{notify, ...}, {delete, [{Key, Pid}]}]`.
    fn process_globals(
        &mut self,
        globals: Vec<(Term, Term)>,
        changes: &mut Vec<Change>,
    ) -> Option<Term> {
        if globals.is_empty() {
            return None;
        }
        let mut notifications = Vec::new();
        for (key, owner) in &globals {
            if let Some(notify) = self.remove_entry(key, owner, changes) {
                notifications.push(notify);
            }
        }
        let mut ops = Vec::new();
        if !notifications.is_empty() {
            ops.push(tuple(vec![atom("notify"), list(notifications)]));
        }
        let deletes = globals
            .into_iter()
            .map(|(key, owner)| tuple(vec![key, owner]))
            .collect();
        ops.push(tuple(vec![atom("delete"), list(deletes)]));
        Some(list(ops))
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
            tuple(vec![atom("await"), user_key(&p), p.clone()]),
            tuple(vec![
                atom("reg"),
                tuple(vec![atom("a"), atom("g"), bin("x")]),
                atom("undefined"),
                p.clone(),
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
}
