//! Property tests of the gproc_dist leader logic ([`GprocTable`]): random
//! sequences of gproc 0.8.0 requests from processes on several simulated
//! follower nodes, owners dying (`pid_is_DOWN`) and follower nodes going
//! down and rejoining (`handle_DOWN`, then `surrendered` with the leader's
//! snapshot), with every `{from_leader, Ops}` broadcast applied to every
//! live follower's table.
//!
//! Checked after every step:
//! - every follower's table equals the leader's: registrations and waiters
//!   object for object, reverse entries key for key and, except where
//!   gproc 0.8.0 itself tells followers less than the leader keeps (the
//!   options of a name given away, of a `reg_or_locate` that took over
//!   waiters, of `shared` owners), option for option;
//! - every broadcast is one an Erlang follower applies without crashing
//!   (only `insert`/`delete`/`notify` ops, each item a shape gproc_dist's
//!   `insert_globals`/`delete_globals`/`do_notify` has a clause for);
//! - a node that rejoins from the snapshot holds the leader's table;
//! - a second `pid_is_DOWN` for the same pid changes nothing;
//! - aggregated counters equal the sum of their counters and resource
//!   counts the number of resources, unless an operation that gproc lets
//!   set them apart was used (`set` of the aggregate, `ensure` of a
//!   counter).
//!
//! Seeds are random on every run (proptest's default); a failure prints
//! the minimal sequence.

use std::collections::{BTreeMap, BTreeSet};

use eetf::{Pid, Term};
use flack::cluster::gproc::{GprocTable, int_of, term_cmp};
use flack::node::term::{as_atom, as_list, as_tuple, atom, int, list, tuple};
use proptest::prelude::*;

const LEADER: &str = "leader@h";
const FOLLOWERS: [&str; 3] = ["f1@h", "f2@h", "f3@h"];
/// Processes per follower node.
const PIDS: u32 = 3;
/// Names per kind.
const NAMES: i32 = 2;
const KINDS: [&str; 6] = ["n", "p", "c", "a", "r", "rc"];

fn pid(node: usize, index: u32) -> Term {
    Term::Pid(Pid::new(FOLLOWERS[node], 100 + index, 0, 1))
}

fn key(kind: &str, name: i32) -> Term {
    tuple(vec![atom(kind), atom("g"), int(name)])
}

/// One step of a run.
#[derive(Debug, Clone)]
enum Step {
    /// A `'$leader_call'` from process `(node, pid)`.
    Call { node: usize, pid: u32, request: Req },
    /// A process dies: every node casts `pid_is_DOWN`.
    Dies { node: usize, pid: u32 },
    /// A follower node goes down, then comes back with an empty table.
    NodeDown { node: usize },
    /// A `cancel_wait` cast for the latest await of a process.
    CancelWait {
        node: usize,
        pid: u32,
        kind: usize,
        name: i32,
    },
}

/// One counter of `update_counters`: name, owner, increment and an
/// optional `{Threshold, SetValue}`.
type BatchItem = (i32, (usize, u32), i32, Option<(i32, i32)>);

/// The requests, with their arguments drawn from small pools so that they
/// collide.
#[derive(Debug, Clone)]
enum Req {
    Reg {
        kind: usize,
        name: i32,
        value: i32,
        attrs: bool,
        ensure: bool,
        shared: bool,
    },
    RegOther {
        kind: usize,
        name: i32,
        other: (usize, u32),
    },
    Unreg {
        kind: usize,
        name: i32,
    },
    RegOrLocate {
        name: i32,
        value: i32,
    },
    Monitor {
        kind: usize,
        name: i32,
        how: usize,
    },
    Demonitor {
        kind: usize,
        name: i32,
        latest: bool,
    },
    SetAttributes {
        kind: usize,
        name: i32,
        value: i32,
    },
    UpdateCounter {
        kind: usize,
        name: i32,
        incr: i32,
        shared: bool,
    },
    UpdateCounters {
        items: Vec<BatchItem>,
    },
    ResetCounter {
        name: i32,
    },
    GiveAway {
        kind: usize,
        name: i32,
        to: (usize, u32),
        by_name: Option<i32>,
    },
    Mreg {
        kind: usize,
        names: Vec<(i32, i32)>,
    },
    Munreg {
        kind: usize,
        names: Vec<i32>,
    },
    Set {
        kind: usize,
        name: i32,
        value: i32,
    },
    Await {
        kind: usize,
        name: i32,
    },
}

fn proc_strategy() -> impl Strategy<Value = (usize, u32)> {
    (0..FOLLOWERS.len(), 0..PIDS)
}

fn req_strategy() -> impl Strategy<Value = Req> {
    let kind = 0..KINDS.len();
    let name = 0..NAMES;
    prop_oneof![
        4 => (kind.clone(), name.clone(), -3..5i32, any::<bool>(), any::<bool>(), prop::bool::weighted(0.1))
            .prop_map(|(kind, name, value, attrs, ensure, shared)| Req::Reg { kind, name, value, attrs, ensure, shared }),
        1 => (kind.clone(), name.clone(), proc_strategy()).prop_map(|(kind, name, other)| Req::RegOther { kind, name, other }),
        2 => (kind.clone(), name.clone()).prop_map(|(kind, name)| Req::Unreg { kind, name }),
        1 => (name.clone(), 0..3i32).prop_map(|(name, value)| Req::RegOrLocate { name, value }),
        2 => (0..4usize, name.clone(), 0..3usize).prop_map(|(kind, name, how)| Req::Monitor { kind, name, how }),
        1 => (0..4usize, name.clone(), any::<bool>()).prop_map(|(kind, name, latest)| Req::Demonitor { kind, name, latest }),
        1 => (kind.clone(), name.clone(), 0..3i32).prop_map(|(kind, name, value)| Req::SetAttributes { kind, name, value }),
        2 => (0..3usize, name.clone(), -2..4i32, prop::bool::weighted(0.2))
            .prop_map(|(kind, name, incr, shared)| Req::UpdateCounter { kind, name, incr, shared }),
        1 => prop::collection::vec((name.clone(), proc_strategy(), -2..3i32, prop::option::of((0..4i32, -1..2i32))), 1..3)
            .prop_map(|items| Req::UpdateCounters { items }),
        1 => name.clone().prop_map(|name| Req::ResetCounter { name }),
        1 => (kind.clone(), name.clone(), proc_strategy(), prop::option::of(name.clone()))
            .prop_map(|(kind, name, to, by_name)| Req::GiveAway { kind, name, to, by_name }),
        1 => (0..2usize, prop::collection::vec((name.clone(), 0..3i32), 1..3)).prop_map(|(kind, names)| Req::Mreg { kind, names }),
        1 => (kind.clone(), prop::collection::vec(name.clone(), 1..3)).prop_map(|(kind, names)| Req::Munreg { kind, names }),
        1 => (kind.clone(), name.clone(), -2..4i32).prop_map(|(kind, name, value)| Req::Set { kind, name, value }),
        2 => (0..4usize, name.clone()).prop_map(|(kind, name)| Req::Await { kind, name }),
    ]
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => (proc_strategy(), req_strategy()).prop_map(|((node, pid), request)| Step::Call { node, pid, request }),
        2 => proc_strategy().prop_map(|(node, pid)| Step::Dies { node, pid }),
        1 => (0..FOLLOWERS.len()).prop_map(|node| Step::NodeDown { node }),
        1 => (proc_strategy(), 0..4usize, 0..NAMES)
            .prop_map(|((node, pid), kind, name)| Step::CancelWait { node, pid, kind, name }),
    ]
}

/// The simulated cluster.
struct Cluster {
    leader: GprocTable,
    followers: Vec<GprocTable>,
    /// Monitor refs handed out, by (monitoring process, key).
    refs: BTreeMap<(String, String), Vec<Term>>,
    /// Await refs, by (process, key).
    awaits: BTreeMap<(String, String), Term>,
    /// Reverse entries whose options gproc does not broadcast in full.
    partial: BTreeSet<String>,
    /// Whether aggregates and resource counts must equal their sums.
    sums_exact: bool,
    next_ref: u32,
}

impl Cluster {
    fn new() -> Self {
        Self {
            leader: GprocTable::for_node(LEADER),
            followers: FOLLOWERS.iter().map(|n| GprocTable::for_node(n)).collect(),
            refs: BTreeMap::new(),
            awaits: BTreeMap::new(),
            partial: BTreeSet::new(),
            sums_exact: true,
            next_ref: 0,
        }
    }

    fn call_from(&mut self, node: usize) -> Term {
        self.next_ref += 1;
        let reference = Term::from(eetf::Reference {
            node: eetf::Atom::from(FOLLOWERS[node]),
            id: vec![self.next_ref, 7, 7],
            creation: 1,
        });
        // The follower's gen_leader forwards with its own pid and a ref.
        tuple(vec![
            Term::Pid(Pid::new(FOLLOWERS[node], 1, 0, 1)),
            reference,
        ])
    }

    fn broadcast(&mut self, ops: &Term) -> Result<(), TestCaseError> {
        check_erlang_follower_accepts(ops)?;
        for follower in &mut self.followers {
            follower.apply_full(ops);
        }
        Ok(())
    }

    fn run(&mut self, step: &Step) -> Result<(), TestCaseError> {
        match step {
            Step::Call {
                node,
                pid: index,
                request,
            } => {
                let me = pid(*node, *index);
                let Some(request) = self.request(*node, &me, request) else {
                    return Ok(());
                };
                let from = self.call_from(*node);
                let (answer, _) = self.leader.leader_call_from(&request, &from);
                self.learn(&me, &request, &answer.reply, &from);
                if let Some(ops) = &answer.broadcast {
                    self.broadcast(ops)?;
                }
            }
            Step::Dies { node, pid: index } => {
                let me = pid(*node, *index);
                let effects = self
                    .leader
                    .leader_cast_full(&tuple(vec![atom("pid_is_DOWN"), me.clone()]));
                if let Some(ops) = &effects.broadcast {
                    self.broadcast(ops)?;
                }
                // A second cast (every node monitors every pid) changes
                // nothing. It may broadcast again: gproc leaves a dead
                // waiter's reverse entry behind, and purges it anew.
                let before = self.leader.objects();
                let again = self
                    .leader
                    .leader_cast_full(&tuple(vec![atom("pid_is_DOWN"), me]));
                prop_assert_eq!(
                    &before,
                    &self.leader.objects(),
                    "a second pid_is_DOWN changed the table"
                );
                if let Some(ops) = &again.broadcast {
                    self.broadcast(ops)?;
                }
            }
            Step::NodeDown { node } => {
                let mut up: std::collections::HashSet<String> =
                    FOLLOWERS.iter().map(|n| n.to_string()).collect();
                up.remove(FOLLOWERS[*node]);
                up.insert(LEADER.to_owned());
                self.leader.set_up_nodes(Some(up));
                let effects = self.leader.purge_node_full(FOLLOWERS[*node]);
                self.leader.set_up_nodes(None);
                if let Some(ops) = &effects.broadcast {
                    check_erlang_follower_accepts(ops)?;
                    for (i, follower) in self.followers.iter_mut().enumerate() {
                        if i != *node {
                            follower.apply_full(ops);
                        }
                    }
                }
                // Restarted: an empty table, then the leader's snapshot.
                let mut fresh = GprocTable::for_node(FOLLOWERS[*node]);
                let (_, reconciliation) =
                    fresh.surrender(&self.leader.snapshot(), FOLLOWERS[*node]);
                prop_assert!(
                    reconciliation.add_globals.is_none(),
                    "a fresh node has nothing to add"
                );
                prop_assert_eq!(
                    view(&fresh, &self.partial),
                    view(&self.leader, &self.partial)
                );
                self.followers[*node] = fresh;
            }
            Step::CancelWait {
                node,
                pid: index,
                kind,
                name,
            } => {
                let me = pid(*node, *index);
                let k = key(KINDS[*kind], *name);
                let Some(reference) = self.awaits.get(&(format!("{me}"), format!("{k}"))).cloned()
                else {
                    return Ok(());
                };
                let effects = self.leader.leader_cast_full(&tuple(vec![
                    atom("cancel_wait"),
                    me,
                    k,
                    reference,
                ]));
                if let Some(ops) = &effects.broadcast {
                    self.broadcast(ops)?;
                }
            }
        }
        for (i, follower) in self.followers.iter().enumerate() {
            prop_assert_eq!(
                view(follower, &self.partial),
                view(&self.leader, &self.partial),
                "follower {} differs from the leader after {:?}",
                FOLLOWERS[i],
                step
            );
        }
        if self.sums_exact {
            check_sums(&self.leader)?;
        }
        // The registration count kept on the side.
        for table in std::iter::once(&self.leader).chain(&self.followers) {
            let counted = table
                .objects()
                .iter()
                .filter(|o| as_tuple(o).is_some_and(|f| f.len() == 3))
                .count();
            prop_assert_eq!(table.len(), counted);
        }
        Ok(())
    }

    /// The request term, noting the operations that make followers hold
    /// less than the leader or that set aggregates apart from their sums.
    fn request(&mut self, node: usize, me: &Term, request: &Req) -> Option<Term> {
        Some(match request {
            Req::Reg {
                kind,
                name,
                value,
                attrs,
                ensure,
                shared,
            } => {
                let k = key(KINDS[*kind], *name);
                // gproc_dist:reg_shared/3 always asks for `reg`, never
                // `ensure`.
                let shared = *shared && !*ensure;
                let owner = if shared { atom("shared") } else { me.clone() };
                if shared {
                    self.partial
                        .insert(format!("{}", tuple(vec![atom("shared"), k.clone()])));
                }
                if *ensure && matches!(KINDS[*kind], "c") {
                    self.sums_exact = false;
                }
                let attrs = if *attrs {
                    list(vec![tuple(vec![atom("username"), int(*value)])])
                } else {
                    list(vec![])
                };
                let value = if matches!(KINDS[*kind], "a" | "rc") {
                    atom("undefined")
                } else {
                    int(*value)
                };
                let op = atom(if *ensure { "ensure" } else { "reg" });
                tuple(vec![atom("reg"), k, value, owner, attrs, op])
            }
            Req::RegOther { kind, name, other } => {
                let k = key(KINDS[*kind], *name);
                tuple(vec![
                    atom("reg_other"),
                    k,
                    atom("undefined"),
                    pid(other.0, other.1),
                    list(vec![]),
                    atom("reg"),
                ])
            }
            Req::Unreg { kind, name } => {
                tuple(vec![atom("unreg"), key(KINDS[*kind], *name), me.clone()])
            }
            Req::RegOrLocate { name, value } => {
                let k = key("n", *name);
                self.partial
                    .insert(format!("{}", tuple(vec![me.clone(), k.clone()])));
                tuple(vec![atom("reg_or_locate"), k, int(*value), me.clone()])
            }
            Req::Monitor { kind, name, how } => {
                let how = ["info", "follow", "standby"][*how];
                tuple(vec![
                    atom("monitor"),
                    key(KINDS[*kind], *name),
                    me.clone(),
                    atom(how),
                ])
            }
            Req::Demonitor { kind, name, latest } => {
                let k = key(KINDS[*kind], *name);
                let known = self
                    .refs
                    .get(&(format!("{me}"), format!("{k}")))
                    .and_then(|refs| refs.last().cloned());
                let reference = match (known, latest) {
                    (Some(reference), true) => reference,
                    _ => self.call_from(node),
                };
                tuple(vec![atom("demonitor"), k, me.clone(), reference])
            }
            Req::SetAttributes { kind, name, value } => tuple(vec![
                atom("set_attributes"),
                key(KINDS[*kind], *name),
                list(vec![tuple(vec![atom("user_id"), int(*value)])]),
                me.clone(),
            ]),
            Req::UpdateCounter {
                kind,
                name,
                incr,
                shared,
            } => {
                let kind = ["c", "n", "a"][*kind];
                let owner = match (kind, shared) {
                    ("n", _) => atom("n"),
                    (_, true) => atom("shared"),
                    _ => me.clone(),
                };
                tuple(vec![
                    atom("update_counter"),
                    key(kind, *name),
                    int(*incr),
                    owner,
                ])
            }
            Req::UpdateCounters { items } => {
                let items = items
                    .iter()
                    .map(|(name, (n, p), incr, bound)| {
                        let op = match bound {
                            Some((threshold, set)) => {
                                tuple(vec![int(*incr), int(*threshold), int(*set)])
                            }
                            None => int(*incr),
                        };
                        tuple(vec![key("c", *name), pid(*n, *p), op])
                    })
                    .collect();
                tuple(vec![atom("update_counters"), list(items)])
            }
            Req::ResetCounter { name } => {
                tuple(vec![atom("reset_counter"), key("c", *name), me.clone()])
            }
            Req::GiveAway {
                kind,
                name,
                to,
                by_name,
            } => {
                let k = key(KINDS[*kind], *name);
                let to = match by_name {
                    Some(other) => key("n", *other),
                    None => pid(to.0, to.1),
                };
                tuple(vec![atom("give_away"), k, to, me.clone()])
            }
            Req::Mreg { kind, names } => {
                let pairs = names
                    .iter()
                    .map(|(n, v)| tuple(vec![int(*n), int(*v)]))
                    .collect();
                tuple(vec![
                    atom("mreg"),
                    atom(["n", "p"][*kind]),
                    atom("g"),
                    list(pairs),
                    me.clone(),
                ])
            }
            Req::Munreg { kind, names } => {
                let names = names.iter().map(|n| int(*n)).collect();
                tuple(vec![
                    atom("munreg"),
                    atom(KINDS[*kind]),
                    atom("g"),
                    list(names),
                    me.clone(),
                ])
            }
            Req::Set { kind, name, value } => {
                // gproc's `set` of an rc broadcasts an object under the
                // wrong key (followers then differ); not drawn.
                if matches!(KINDS[*kind], "rc") {
                    return None;
                }
                if matches!(KINDS[*kind], "a") {
                    self.sums_exact = false;
                }
                tuple(vec![
                    atom("set"),
                    key(KINDS[*kind], *name),
                    int(*value),
                    me.clone(),
                ])
            }
            Req::Await { kind, name } => {
                tuple(vec![atom("await"), key(KINDS[*kind], *name), me.clone()])
            }
        })
    }

    /// Remembers refs handed out and reverse entries broadcast in part.
    fn learn(&mut self, me: &Term, request: &Term, reply: &Term, from: &Term) {
        let fields = as_tuple(request).unwrap_or_default();
        match fields.first().and_then(as_atom) {
            Some("monitor") if matches!(reply, Term::Reference(_)) => {
                self.refs
                    .entry((format!("{me}"), format!("{}", fields[1])))
                    .or_default()
                    .push(reply.clone());
            }
            Some("await") => {
                if let Some([_, reference]) = as_tuple(from) {
                    self.awaits.insert(
                        (format!("{me}"), format!("{}", fields[1])),
                        reference.clone(),
                    );
                }
            }
            Some("give_away") => {
                if let Term::Pid(_) = reply {
                    self.partial
                        .insert(format!("{}", tuple(vec![reply.clone(), fields[1].clone()])));
                }
            }
            _ => {}
        }
    }
}

/// What must be equal on every node: objects printed, with the options of
/// the reverse entries in `partial` left out.
fn view(table: &GprocTable, partial: &BTreeSet<String>) -> Vec<String> {
    table
        .objects()
        .iter()
        .map(|object| match as_tuple(object) {
            Some([k, _]) if partial.contains(&format!("{k}")) => format!("{{{k},_}}"),
            _ => format!("{object}"),
        })
        .collect()
}

/// Every op is one gproc_dist's `from_leader/3` has a clause for, and every
/// item one its `insert_globals`/`delete_globals`/`do_notify` accepts:
/// anything else crashes an Erlang follower.
fn check_erlang_follower_accepts(ops: &Term) -> Result<(), TestCaseError> {
    let ops = as_list(ops).ok_or_else(|| TestCaseError::fail(format!("ops not a list: {ops}")))?;
    for op in ops {
        let Some([kind, items]) = as_tuple(op) else {
            return Err(TestCaseError::fail(format!("op not a pair: {op}")));
        };
        let items =
            as_list(items).ok_or_else(|| TestCaseError::fail(format!("items not a list: {op}")))?;
        for item in items {
            let ok = match as_atom(kind) {
                Some("insert") => true, // insert_globals skips what it does not know
                Some("delete") => match as_tuple(item) {
                    Some([k, t]) if is_global_key(k) => matches!(t, Term::Pid(_) | Term::Atom(_)),
                    Some([kt, p]) if matches!(as_tuple(kt), Some([k, t]) if is_global_key(k) && matches!(t, Term::Pid(_) | Term::Atom(_))) =>
                    {
                        matches!(p, Term::Pid(_))
                    }
                    Some([p, _]) => matches!(p, Term::Pid(_)) || as_atom(p) == Some("shared"),
                    _ => false,
                },
                Some("notify") => {
                    matches!(as_tuple(item), Some([Term::Pid(_), _]) | Some([_, _, _]))
                }
                _ => false,
            };
            if !ok {
                return Err(TestCaseError::fail(format!(
                    "an Erlang follower would crash on {item} in {op}"
                )));
            }
        }
    }
    Ok(())
}

fn is_global_key(term: &Term) -> bool {
    matches!(as_tuple(term), Some([Term::Atom(_), g, _]) if as_atom(g) == Some("g"))
}

/// Aggregates equal the sum of their counters; resource counts the number
/// of resources.
fn check_sums(table: &GprocTable) -> Result<(), TestCaseError> {
    let objects = table.objects();
    for name in 0..NAMES {
        let sum_of = |kind: &str| -> Vec<i64> {
            objects
                .iter()
                .filter_map(|o| match as_tuple(o) {
                    Some([kt, _, v]) if matches!(as_tuple(kt), Some([k, _]) if *k == key(kind, name)) => int_of(v).or(Some(0)),
                    _ => None,
                })
                .collect()
        };
        let aggregate = table.lookup(&key("a", name), &atom("a"));
        if let Some((_, value)) = aggregate
            && let Some(value) = int_of(&value)
        {
            let counters: i64 = sum_of("c").iter().sum();
            prop_assert_eq!(value, counters, "aggregate {} against its counters", name);
        }
        if let Some((_, value)) = table.lookup(&key("rc", name), &atom("rc"))
            && let Some(value) = int_of(&value)
        {
            let resources = i64::try_from(sum_of("r").len()).unwrap_or(0);
            prop_assert_eq!(
                value,
                resources,
                "resource count {} against its resources",
                name
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn followers_hold_what_the_leader_holds(steps in prop::collection::vec(step_strategy(), 1..60)) {
        let mut cluster = Cluster::new();
        for step in &steps {
            cluster.run(step)?;
        }
    }
}

/// The table orders keys as Erlang does (an ordered_set), which decides the
/// order of every purge's broadcast.
#[test]
fn keys_sort_in_erlang_term_order() {
    let pid = pid(0, 1);
    let mut terms = vec![
        list(vec![int(1)]),
        tuple(vec![atom("a"), atom("g"), int(1)]),
        pid.clone(),
        atom("zz"),
        int(3),
        tuple(vec![int(1)]),
        list(vec![]),
        tuple(vec![atom("n"), atom("g"), int(0)]),
        atom("a"),
        flack::node::term::binary("x"),
    ];
    terms.sort_by(term_cmp);
    let printed: Vec<String> = terms.iter().map(|t| format!("{t}")).collect();
    assert_eq!(
        printed,
        vec![
            "3".to_owned(),
            "'a'".to_owned(),
            "'zz'".to_owned(),
            format!("{pid}"),
            "{1}".to_owned(),
            "{'a','g',1}".to_owned(),
            "{'n','g',0}".to_owned(),
            "[]".to_owned(),
            "[1]".to_owned(),
            "<<120>>".to_owned(),
        ]
    );
}
