//! Test vectors from real traffic: the reference transcripts captured from a
//! cluster of original Erlang flack nodes (`shared/transcripts/`, format in
//! its README).
//!
//! These tests check the reader of those traces (`trace_support`) on all of
//! them: printed terms parse as Erlang means them, every node table index of
//! every file resolves to one node, every pid of a message is one its legend
//! names, and every message one node's gproc_dist sent another is the very
//! same term, pids and references included, in the receiver's trace.

mod trace_support;

use std::collections::BTreeSet;

use eetf::Term;
use trace_support::{Dir, Event, Peer, TraceFile};

/// The candidates every node of the capture was started with.
const CANDIDATES: [&str; 3] = ["flack1@vm", "flack2@vm", "flack3@vm"];

/// The traced nodes.
const NODES: [&str; 3] = CANDIDATES;

/// A node's gproc_dist trace.
fn gproc_dist_trace(node: &str) -> TraceFile {
    trace_support::load(&format!("{node}.gproc_dist.trace"))
}

// -------------------------------------------------------------------
// Terms.

fn atom(name: &str) -> Term {
    Term::from(eetf::Atom::from(name))
}

fn tuple(elements: Vec<Term>) -> Term {
    Term::from(eetf::Tuple::from(elements))
}

fn list(elements: Vec<Term>) -> Term {
    Term::from(eetf::List::from(elements))
}

fn int(value: i64) -> Term {
    match i32::try_from(value) {
        Ok(small) => Term::from(eetf::FixInteger::from(small)),
        Err(_) => Term::from(eetf::BigInteger::from(value)),
    }
}

// -------------------------------------------------------------------
// The tests.

#[test]
fn printed_terms_parse_as_erlang_means_them() {
    let parse = |text: &str| {
        trace_support::parse_term(text, "flack1@vm").unwrap_or_else(|e| panic!("{text}: {e}"))
    };
    let pid =
        |node: &str, id: u32| Term::from(eetf::Pid::new(node, id, 0, trace_support::CREATION));
    assert_eq!(parse("ok"), atom("ok"));
    assert_eq!(parse("flack2@vm"), atom("flack2@vm"));
    assert_eq!(parse("'$leader_call'"), atom("$leader_call"));
    assert_eq!(parse(r"'a\'b'"), atom("a'b"));
    assert_eq!(parse("-576460751878"), int(-576_460_751_878));
    assert_eq!(parse("42"), int(42));
    assert_eq!(
        parse("1.5e3"),
        Term::from(eetf::Float::try_from(1500.0).expect("finite"))
    );
    assert_eq!(parse("16#ff"), int(255));
    assert_eq!(parse("<<>>"), Term::from(eetf::Binary::from(Vec::new())));
    assert_eq!(
        parse("<<131,97,1>>"),
        Term::from(eetf::Binary::from(vec![131, 97, 1]))
    );
    assert_eq!(
        parse(r#"<<"a \"q\"\n">>"#),
        Term::from(eetf::Binary::from(b"a \"q\"\n".to_vec()))
    );
    assert_eq!(
        parse("<<\"h\\303\\251\">>"),
        Term::from(eetf::Binary::from("hé".as_bytes().to_vec()))
    );
    assert_eq!(
        parse("<<\"hé\"/utf8>>"),
        Term::from(eetf::Binary::from("hé".as_bytes().to_vec()))
    );
    assert_eq!(
        parse("<<\"abc\"\n   \"def\">>"),
        Term::from(eetf::Binary::from(b"abcdef".to_vec()))
    );
    assert_eq!(parse("\"vm\""), Term::from(eetf::ByteList::from("vm")));
    assert_eq!(parse("\"\""), list(vec![]));
    assert_eq!(parse("[119,1]"), list(vec![int(119), int(1)]));
    assert_eq!(parse("{}"), tuple(vec![]));
    assert_eq!(
        parse("{a , [b|c]}"),
        tuple(vec![
            atom("a"),
            Term::from(eetf::ImproperList::from((vec![atom("b")], atom("c"))))
        ])
    );
    assert_eq!(parse("[a|[b]]"), list(vec![atom("a"), atom("b")]));
    assert_eq!(parse("<0.93.0>"), pid("flack1@vm", 93));
    // A remote index stays unresolved until a file resolves it.
    assert!(matches!(parse("<6816.93.0>"), Term::Pid(p) if p.node.name != "flack1@vm"));
    assert_eq!(
        parse("#Ref<0.3023836788.1972633602.223041>"),
        Term::from(eetf::Reference {
            node: eetf::Atom::from("flack1@vm"),
            id: vec![223_041, 1_972_633_602, 3_023_836_788],
            creation: trace_support::CREATION,
        })
    );
    assert_eq!(
        parse("#Port<0.28>"),
        Term::from(eetf::Port {
            node: eetf::Atom::from("flack1@vm"),
            id: 28,
            creation: trace_support::CREATION,
        })
    );
    let map = parse("#{id => timer_server,\n   modules => [timer]}");
    let Term::Map(map) = map else {
        panic!("not a map")
    };
    assert_eq!(map.map.get(&atom("id")), Some(&atom("timer_server")));
    assert_eq!(
        trace_support::parse_term("#Fun<erl_eval.6.1>", "n@h"),
        Err(trace_support::ParseError::Fun)
    );
    for bad in ["{a,", "[a|b,c]", "<1.2>", "'open", "<<300>>", "{a} b"] {
        assert!(
            trace_support::parse_term(bad, "n@h").is_err(),
            "{bad} must not parse"
        );
    }
}

/// Every pid in a term.
fn pids_in(term: &Term, found: &mut Vec<eetf::Pid>) {
    match term {
        Term::Pid(pid) => found.push(pid.clone()),
        Term::List(list) => list.elements.iter().for_each(|t| pids_in(t, found)),
        Term::ImproperList(list) => {
            list.elements.iter().for_each(|t| pids_in(t, found));
            pids_in(&list.last, found);
        }
        Term::Tuple(tuple) => tuple.elements.iter().for_each(|t| pids_in(t, found)),
        Term::Map(map) => map.map.iter().for_each(|(k, v)| {
            pids_in(k, found);
            pids_in(v, found);
        }),
        _ => {}
    }
}

#[test]
fn trace_files_parse_with_every_node_index_resolved() {
    let mut total = 0;
    // (file, lives, events, events left out for holding a fun)
    for (name, lives, events, funs) in [
        ("flack1@vm.gproc_dist.trace", 2, 175, 0),
        ("flack2@vm.gproc_dist.trace", 1, 155, 0),
        ("flack3@vm.gproc_dist.trace", 1, 117, 0),
        ("flack1@vm.ws.trace", 1, 72, 0),
        ("flack2@vm.ws.trace", 1, 65, 0),
        ("flack3@vm.ws.trace", 1, 43, 0),
        // global's {cancel, Node, Tag, #Fun<global.14.112854349>}, sent and received.
        ("flack2@vm.sys.trace", 1, 98, 2),
    ] {
        let file = trace_support::load(name);
        assert_eq!(file.lives(), lives, "{name}: lives");
        assert_eq!(file.events.len(), events, "{name}: events parsed");
        assert_eq!(
            file.skipped.len(),
            funs,
            "{name}: skipped {:?}",
            file.skipped
        );
        total += file.events.len();
        for indices in &file.node_indices {
            for (index, node) in indices {
                assert_ne!(*node, file.node, "{name}: index {index} is the node itself");
                assert!(
                    CANDIDATES.contains(&node.as_str()),
                    "{name}: {index} → {node}"
                );
            }
        }
        // Resolved, every pid of a message is one its legend names.
        for event in &file.events {
            let mut pids = Vec::new();
            pids_in(&event.term, &mut pids);
            for pid in pids {
                assert!(
                    event.legend.iter().any(|named| named.pid == pid),
                    "{name} line {}: {pid} is not in the legend of {}",
                    event.line,
                    event.raw
                );
            }
        }
    }
    assert_eq!(total, 725, "events in all traces");
    let expected = |pairs: &[(u32, &str)]| -> Vec<(u32, String)> {
        pairs.iter().map(|(i, n)| (*i, n.to_string())).collect()
    };
    let flack1 = gproc_dist_trace("flack1@vm");
    for life in 0..2 {
        assert_eq!(
            flack1.node_indices[life]
                .clone()
                .into_iter()
                .collect::<Vec<_>>(),
            expected(&[(6816, "flack2@vm"), (6817, "flack3@vm")]),
            "flack1 life {}",
            life + 1
        );
    }
    // Each life begins at its "node started" marker.
    let starts: Vec<&trace_support::Marker> = flack1
        .markers
        .iter()
        .filter(|m| m.text.starts_with("node started (tracer armed)"))
        .collect();
    assert_eq!(starts.len(), 2, "flack1 was started twice");
    for (life, marker) in starts.iter().enumerate() {
        let first = flack1.life(life).next().expect("events in every life");
        assert!(
            first.line > marker.line && first.micros() >= marker.micros(),
            "flack1 life {} starts at line {}",
            life + 1,
            marker.line
        );
    }
    let flack2 = gproc_dist_trace("flack2@vm");
    assert_eq!(
        flack2.node_indices[0]
            .clone()
            .into_iter()
            .collect::<Vec<_>>(),
        expected(&[(6815, "flack1@vm"), (6817, "flack3@vm")])
    );
    let flack3 = gproc_dist_trace("flack3@vm");
    assert_eq!(
        flack3.node_indices[0]
            .clone()
            .into_iter()
            .collect::<Vec<_>>(),
        expected(&[(6815, "flack1@vm"), (6816, "flack2@vm")])
    );
}

/// How far apart two VMs' trace clocks may be (each VM corrects its own
/// time; a broadcast was observed arriving 0.35 ms "before" it was sent).
const CLOCK_SKEW_MICROS: i64 = 5_000;

/// Every message one gproc_dist sent another is, after index resolution,
/// the very term the receiver's trace shows (pids and references included),
/// unless the receiver was not running then.
#[test]
fn messages_between_nodes_are_the_same_term_in_both_traces() {
    let files: Vec<TraceFile> = NODES.iter().map(|n| gproc_dist_trace(n)).collect();
    let by_node = |node: &str| files.iter().find(|f| f.node == node);
    // When each node's gproc_dist was running: first to last event of a life.
    let running = |file: &TraceFile, at: i64| {
        (0..file.lives()).find(|&life| {
            let first = file.life(life).next().map(Event::micros);
            let last = file.life(life).last().map(Event::micros);
            matches!((first, last), (Some(first), Some(last))
                if first - CLOCK_SKEW_MICROS <= at && at <= last + CLOCK_SKEW_MICROS)
        })
    };
    let mut matched: BTreeSet<(String, usize)> = BTreeSet::new();
    let mut delivered = 0;
    let mut lost = Vec::new();
    for file in &files {
        let sends = file
            .events
            .iter()
            .filter(|e| e.dir == Dir::Send && e.process.is(" gproc_dist"));
        for send in sends {
            let to = match &send.peer {
                Peer::Registered {
                    name,
                    node: Some(node),
                } if name == "gproc_dist" => node.clone(),
                Peer::Process(process) if process.is(" gproc_dist") => {
                    process.pid.node.name.clone()
                }
                _ => continue,
            };
            if to == file.node {
                continue;
            }
            let receiver = by_node(&to).unwrap_or_else(|| panic!("no trace of {to}"));
            let Some(life) = running(receiver, send.micros()) else {
                lost.push(format!(
                    "{} line {} → {to}: {}",
                    file.name, send.line, send.term
                ));
                continue;
            };
            let found = receiver.life(life).find(|recv| {
                recv.dir == Dir::Recv
                    && recv.process.is(" gproc_dist")
                    && recv.micros() >= send.micros() - CLOCK_SKEW_MICROS
                    && recv.term == send.term
                    && !matched.contains(&(to.clone(), recv.line))
            });
            match found {
                Some(recv) => {
                    matched.insert((to.clone(), recv.line));
                    delivered += 1;
                }
                None => panic!(
                    "{} line {}: {} sent to {to} (running) never arrives there",
                    file.node, send.line, send.term
                ),
            }
        }
    }
    // And every message that names another gproc_dist as its sender was sent.
    for file in &files {
        let receipts = file
            .events
            .iter()
            .filter(|e| e.dir == Dir::Recv && e.process.is(" gproc_dist"));
        for recv in receipts {
            // Election messages name their sender's gproc_dist, heartbeats
            // its node.
            let names_a_sender = match &recv.peer {
                Peer::Process(process) => process.is(" gproc_dist"),
                Peer::Node(_) => true,
                _ => false,
            };
            let from_other = names_a_sender && recv.peer.node() != Some(file.node.as_str());
            assert!(
                !from_other || matched.contains(&(file.node.clone(), recv.line)),
                "{} line {}: {} arrived but no trace sent it",
                file.node,
                recv.line,
                recv.term
            );
        }
    }
    eprintln!(
        "delivered {delivered}; lost (receiver not running):\n{}",
        lost.join("\n")
    );
    assert_eq!(delivered, 98, "messages between gproc_dist processes");
    // flack1's boot messages to flack2/flack3 and flack2's join to flack3
    // before those started; flack2's and flack3's heartbeats to the killed
    // flack1.
    assert_eq!(lost.len(), 10, "{lost:#?}");
}
