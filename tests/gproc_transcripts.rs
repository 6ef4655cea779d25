//! Test vectors from a real Erlang gproc_dist leader: everything the
//! leader's `gproc_dist` received (`'$leader_call'`s, `'$leader_cast'`s)
//! and sent (`from_leader` broadcasts, replies, `{gproc, ...}` messages to
//! processes) while gproc 0.8.0's own distributed suite ran its 26 basic
//! tests on three Erlang nodes (`tests/data/gproc_leader/`, how it was
//! captured is in its README). Every request kind of the suite is there:
//! names, properties, counters, aggregated and resource counters with
//! `on_zero`, shared counters, `reg_or_locate`, `mreg`/`munreg`, `await`,
//! `give_away`, the three kinds of monitors and `demonitor`, `sync`.
//!
//! The received messages are fed in order to a [`GprocTable`] and a
//! [`SyncRequests`] set up as that leader's were; what they say the leader
//! sends must be what it sent, message for message and in order: direct
//! messages, then the broadcast to every follower, then the reply.
//! References the leader made (monitor refs) are matched one to one, since
//! ours are made differently. Alongside, a follower table of ours applies
//! what the Erlang leader broadcast to one of its followers, and must hold
//! the same registrations and waiters as the leader at every step.

use std::collections::HashMap;

use eetf::Term;
use flack::cluster::gproc::{GprocTable, SyncEffect, SyncRequests};
use flack::node::term::{as_atom, as_list, as_tuple, atom, tuple};

fn load(name: &str) -> Vec<Term> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/gproc_leader")
        .join(name);
    let bytes = std::fs::read(&path).expect("capture file");
    let term = Term::decode(bytes.as_slice()).expect("ETF");
    as_list(&term).expect("a list of events").to_vec()
}

fn node_of(pid: &Term) -> Option<String> {
    match pid {
        Term::Pid(pid) => Some(pid.node.name.clone()),
        _ => None,
    }
}

/// Structural equality, with references matched one to one across the
/// whole transcript (`map`: captured → ours, `back`: ours → captured).
fn same(
    expected: &Term,
    actual: &Term,
    map: &mut HashMap<Term, Term>,
    back: &mut HashMap<Term, Term>,
) -> bool {
    match (expected, actual) {
        (Term::Reference(_), Term::Reference(_)) => match (map.get(expected), back.get(actual)) {
            (Some(mine), _) => mine == actual,
            (None, Some(_)) => false,
            (None, None) => {
                map.insert(expected.clone(), actual.clone());
                back.insert(actual.clone(), expected.clone());
                true
            }
        },
        (Term::Tuple(x), Term::Tuple(y)) => {
            x.elements.len() == y.elements.len()
                && x.elements
                    .iter()
                    .zip(&y.elements)
                    .all(|(a, b)| same(a, b, map, back))
        }
        (Term::List(x), Term::List(y)) => {
            x.elements.len() == y.elements.len()
                && x.elements
                    .iter()
                    .zip(&y.elements)
                    .all(|(a, b)| same(a, b, map, back))
        }
        (Term::ImproperList(x), Term::ImproperList(y)) => {
            x.elements.len() == y.elements.len()
                && x.elements
                    .iter()
                    .zip(&y.elements)
                    .all(|(a, b)| same(a, b, map, back))
                && same(&x.last, &y.last, map, back)
        }
        _ => expected == actual,
    }
}

/// `term` with the captured leader's references replaced by the ones ours
/// made in their place: what a process sends back (a `demonitor` ref) must
/// be ours to find.
fn translate(term: &Term, map: &HashMap<Term, Term>) -> Term {
    match term {
        Term::Reference(_) => map.get(term).cloned().unwrap_or_else(|| term.clone()),
        Term::Tuple(t) => tuple(t.elements.iter().map(|e| translate(e, map)).collect()),
        Term::List(l) => {
            flack::node::term::list(l.elements.iter().map(|e| translate(e, map)).collect())
        }
        Term::ImproperList(l) => Term::from(eetf::ImproperList {
            elements: l.elements.iter().map(|e| translate(e, map)).collect(),
            last: Box::new(translate(&l.last, map)),
        }),
        _ => term.clone(),
    }
}

/// The nodes of every pid in `term`.
fn pid_nodes(term: &Term, out: &mut Vec<String>) {
    match term {
        Term::Pid(pid) if !out.contains(&pid.node.name) => out.push(pid.node.name.clone()),
        Term::Tuple(t) => t.elements.iter().for_each(|e| pid_nodes(e, out)),
        Term::List(l) => l.elements.iter().for_each(|e| pid_nodes(e, out)),
        _ => {}
    }
}

/// `(To, Msg)` of an `{out, To, Msg}` event.
fn out(event: &Term) -> Option<(Term, Term)> {
    match as_tuple(event)? {
        [tag, to, message] if as_atom(tag) == Some("out") => Some((to.clone(), message.clone())),
        _ => None,
    }
}

struct Replay {
    leader: String,
    followers: Vec<String>,
    table: GprocTable,
    syncs: SyncRequests,
    map: HashMap<Term, Term>,
    back: HashMap<Term, Term>,
}

impl Replay {
    fn new(events: &[Term]) -> Self {
        // The followers are the nodes broadcasts go to; the leader is the
        // node of the one candidate they never go to.
        let mut followers: Vec<String> = events
            .iter()
            .filter_map(out)
            .filter_map(|(to, _)| match as_tuple(&to) {
                Some([name, node]) if as_atom(name) == Some("gproc_dist") => {
                    as_atom(node).map(str::to_owned)
                }
                _ => None,
            })
            .collect();
        followers.sort();
        followers.dedup();
        let mut nodes = Vec::new();
        for event in events {
            pid_nodes(event, &mut nodes);
        }
        let leader = nodes
            .into_iter()
            .find(|node| !followers.contains(node) && !node.starts_with("master"))
            .expect("a process on the leader's node");
        let mut table = GprocTable::for_node(&leader);
        let node = leader.clone();
        let counter = std::sync::atomic::AtomicU32::new(0);
        table.set_ref_maker(std::sync::Arc::new(move || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Term::from(eetf::Reference {
                node: eetf::Atom::from(node.as_str()),
                id: vec![n, 99, 99],
                creation: 1,
            })
        }));
        Self {
            leader,
            followers,
            table,
            syncs: SyncRequests::new(),
            map: HashMap::new(),
            back: HashMap::new(),
        }
    }

    fn broadcast(&self, message: &Term) -> Vec<(Term, Term)> {
        self.followers
            .iter()
            .map(|node| (tuple(vec![atom("gproc_dist"), atom(node)]), message.clone()))
            .collect()
    }

    /// What our leader sends for one received message.
    fn predict(&mut self, received: &Term) -> Vec<(Term, Term)> {
        let mut sent = Vec::new();
        match as_tuple(received) {
            Some([tag, from, request]) if as_atom(tag) == Some("$leader_call") => {
                let (answer, _) = self.table.leader_call_from(request, from);
                sent.extend(answer.sends);
                if let Some(ops) = answer.broadcast {
                    sent.extend(self.broadcast(&tuple(vec![atom("from_leader"), ops])));
                }
                if let Some([pid, reference]) = as_tuple(from) {
                    let reply = tuple(vec![atom("leader"), atom("reply"), answer.reply]);
                    sent.push((pid.clone(), tuple(vec![reference.clone(), reply])));
                }
            }
            // gen_server:call(gproc_dist, sync) on the leader's node.
            Some([tag, from, request])
                if as_atom(tag) == Some("$gen_call") && as_atom(request) == Some("sync") =>
            {
                let alive = self.followers.clone();
                let effects = self.syncs.initiate(from.clone(), alive);
                self.sync_effects(effects, &mut sent);
            }
            Some([tag, message]) if as_atom(tag) == Some("$leader_cast") => {
                let fields = as_tuple(message).unwrap_or_default();
                let effects = match (fields.first().and_then(as_atom), fields.len()) {
                    (Some("initiate_sync"), 2) => {
                        let alive = self.followers.clone();
                        self.syncs.initiate(fields[1].clone(), alive)
                    }
                    (Some("sync_reply"), 3) => self
                        .syncs
                        .reply(as_atom(&fields[1]).unwrap_or_default(), &fields[2]),
                    _ => {
                        let effects = self.table.leader_cast_full(message);
                        sent.extend(effects.sends);
                        if let Some(ops) = effects.broadcast {
                            sent.extend(self.broadcast(&tuple(vec![atom("from_leader"), ops])));
                        }
                        Vec::new()
                    }
                };
                self.sync_effects(effects, &mut sent);
            }
            // handle_DOWN: syncs stop waiting for the node, its
            // registrations go, and it hears no more broadcasts.
            Some([tag, down, node])
                if as_atom(tag) == Some("ldr") && as_atom(down) == Some("DOWN") =>
            {
                let node = as_atom(node).unwrap_or_default().to_owned();
                self.followers.retain(|f| *f != node);
                let effects = self.syncs.node_down(&node);
                self.sync_effects(effects, &mut sent);
                let effects = self.table.purge_node_full(&node);
                sent.extend(effects.sends);
                if let Some(ops) = effects.broadcast {
                    sent.extend(self.broadcast(&tuple(vec![atom("from_leader"), ops])));
                }
            }
            // A candidate joins: it gets the snapshot, then broadcasts.
            Some([tag, _, pid]) if matches!(as_atom(tag), Some("isLeader" | "notNorm")) => {
                if let Some(node) = node_of(pid)
                    && !self.followers.contains(&node)
                {
                    self.followers.push(node);
                    self.followers.sort();
                }
                let ldr = tuple(vec![atom("ldr"), self.table.snapshot()]);
                sent.push((pid.clone(), ldr));
            }
            _ => panic!("unexpected received message {received}"),
        }
        sent
    }

    fn sync_effects(&self, effects: Vec<SyncEffect>, sent: &mut Vec<(Term, Term)>) {
        for effect in effects {
            match effect {
                SyncEffect::Ask { nodes, message } => {
                    for node in nodes {
                        sent.push((
                            tuple(vec![atom("gproc_dist"), atom(&node)]),
                            tuple(vec![atom("from_leader"), message.clone()]),
                        ));
                    }
                }
                SyncEffect::Complete(from) => {
                    let Some([pid, tag]) = as_tuple(&from) else {
                        continue;
                    };
                    match node_of(pid) {
                        // A local caller: gen_server:reply(From, true).
                        Some(node) if node == self.leader => {
                            // Sent to the alias of an OTP 24+ call tag.
                            let to = match tag {
                                Term::ImproperList(l)
                                    if l.elements.first().and_then(as_atom) == Some("alias") =>
                                {
                                    (*l.last).clone()
                                }
                                _ => pid.clone(),
                            };
                            sent.push((to, tuple(vec![tag.clone(), atom("true")])));
                        }
                        Some(node) => sent.push((
                            tuple(vec![atom("gproc_dist"), atom(&node)]),
                            tuple(vec![
                                atom("from_leader"),
                                tuple(vec![atom("sync_complete"), from.clone()]),
                            ]),
                        )),
                        None => {}
                    }
                }
            }
        }
    }
}

/// Puts each run of consecutive `from_leader` messages in destination
/// order: gen_leader sends a broadcast to its monitored nodes in the order
/// they joined.
fn normalise(mut sent: Vec<(Term, Term)>) -> Vec<(Term, Term)> {
    let is_bcast = |(to, _): &(Term, Term)| matches!(as_tuple(to), Some([n, _]) if as_atom(n) == Some("gproc_dist"));
    let mut i = 0;
    while i < sent.len() {
        if is_bcast(&sent[i]) {
            let start = i;
            while i < sent.len() && is_bcast(&sent[i]) && sent[i].1 == sent[start].1 {
                i += 1;
            }
            sent[start..i].sort_by_key(|(to, _)| format!("{to}"));
        } else {
            i += 1;
        }
    }
    sent
}

/// Replays a capture; returns how many received messages were checked.
///
/// A `receive` trace event is made when a message enters the mailbox, not
/// when it is handled, so sends of one message's handling can come after
/// later arrivals. gen_leader handles these messages in arrival order, one
/// at a time, so the sends are the handlings' sends one after another:
/// each prediction is checked against the next sends of the capture.
fn replay(name: &str) -> usize {
    let events = load(name);
    let mut replay = Replay::new(&events);
    let received: Vec<Term> = events
        .iter()
        .filter_map(|event| match as_tuple(event) {
            Some([tag, message]) if as_atom(tag) == Some("in") => Some(message.clone()),
            _ => None,
        })
        .collect();
    let sent: Vec<(Term, Term)> = events.iter().filter_map(out).collect();
    let mut cursor = 0;
    // A follower (ours) applying what the Erlang leader broadcast to the
    // first follower node; it must hold the leader's registrations.
    let watched = replay.followers.first().cloned().unwrap_or_default();
    let mut mirror = GprocTable::for_node(&watched);
    for (index, message) in received.iter().enumerate() {
        let message = translate(message, &replay.map);
        let predicted = normalise(replay.predict(&message));
        let end = (cursor + predicted.len()).min(sent.len());
        let captured = normalise(sent[cursor..end].to_vec());
        let agree = predicted.len() == captured.len()
            && predicted
                .iter()
                .zip(&captured)
                .all(|((to_p, m_p), (to_c, m_c))| {
                    // Of an `ldr`, only the snapshot is ours to make: the
                    // election id, candidates and pid are gen_leader's.
                    let m_c = match as_tuple(m_c) {
                        Some([tag, synch, ..]) if as_atom(tag) == Some("ldr") => {
                            tuple(vec![tag.clone(), synch.clone()])
                        }
                        _ => m_c.clone(),
                    };
                    to_p == to_c && same(&m_c, m_p, &mut replay.map, &mut replay.back)
                });
        let show = |list: &[(Term, Term)]| {
            list.iter()
                .map(|(to, m)| format!("    {to} ! {m}"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert!(
            agree,
            "received message {index} ({message}):\n  the leader sent next:\n{}\n  ours would send:\n{}",
            show(&sent[cursor..(cursor + predicted.len().max(1)).min(sent.len())]),
            show(&predicted),
        );
        for (to, message) in &captured {
            if let (Some([_, node]), Some([tag, ops])) = (as_tuple(to), as_tuple(message))
                && as_atom(node) == Some(watched.as_str())
                && as_atom(tag) == Some("from_leader")
                && as_list(ops).is_some()
            {
                mirror.apply_full(&translate(ops, &replay.map));
            }
        }
        if name == "basic.etf" {
            assert_eq!(
                registrations(&mirror),
                registrations(&replay.table),
                "the follower differs after received message {index} ({message})"
            );
        }
        cursor = end;
    }
    assert_eq!(cursor, sent.len(), "the leader sent more than we would");
    received.len()
}

/// Registrations and waiters: what every node of a gproc cluster holds
/// alike (gproc itself leaves some reverse entries' options to the leader).
fn registrations(table: &GprocTable) -> Vec<String> {
    table
        .objects()
        .iter()
        .filter(|o| match as_tuple(o) {
            Some([_, _, _]) => true,
            Some([k, _]) => {
                !matches!(as_tuple(k), Some([Term::Pid(_), _]))
                    && !matches!(as_tuple(k), Some([p, _]) if as_atom(p) == Some("shared"))
            }
            _ => false,
        })
        .map(|o| format!("{o}"))
        .collect()
}

#[test]
fn the_leader_answers_gprocs_own_suite_as_an_erlang_leader_did() {
    let checked = replay("basic.etf");
    assert!(checked > 100, "only {checked} messages replayed");
}

/// A candidate's gproc_dist dies while a local `sync()` waits on it: the
/// sync completes on the DOWN.
#[test]
fn a_sync_completes_when_a_candidate_dies() {
    assert!(replay("t_sync_cand_dies.etf") >= 2);
}

/// gproc stops on a follower: its registrations are purged (handle_DOWN);
/// it comes back and gets the snapshot, as the Erlang leader sent it.
#[test]
fn a_follower_that_stops_is_purged_and_rejoins_from_the_snapshot() {
    assert!(replay("t_fail_node.etf") >= 5);
}
