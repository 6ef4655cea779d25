//! The state machine on its own: two servers go through a whole node-up
//! exchange by handing each other their actions (the lockers' and
//! resolvers' parts played by the test, as global's would play them), and
//! the name and lock tables' rules.

use super::*;
use std::time::Instant;

fn pid(node: &str, id: u32) -> Pid {
    Pid::new(Arc::from(node), id, 0, 1)
}

fn n(name: &str) -> Arc<str> {
    Arc::from(name)
}

fn call(s: &mut GlobalServer, caller: &Pid, request: Term) -> Vec<Action> {
    let mut out = Vec::new();
    let from = tuple(vec![caller.clone().into(), atom("tag")]);
    s.call(&from, caller, &request, &|_| true, &mut out);
    out
}

fn replied(out: &[Action]) -> Option<Term> {
    out.iter().find_map(|a| match a {
        Action::Reply { reply, .. } => Some(reply.clone()),
        _ => None,
    })
}

fn register(s: &mut GlobalServer, name: &str, holder: &Pid) {
    let caller = pid(&s.me().clone(), 1);
    let out = call(
        s,
        &caller,
        tuple(vec![
            atom("register"),
            atom(name),
            holder.clone().into(),
            wire::random_exit_name(),
        ]),
    );
    assert_eq!(replied(&out), Some(atom("yes")));
}

/// Delivers `actions` of `from`'s server to `to`'s, as the network and
/// the lockers would; returns what `to` did in turn. Locker messages and
/// resolver starts are collected in `side`.
fn deliver(
    from: &GlobalServer,
    to: &mut GlobalServer,
    actions: Vec<Action>,
    side: &mut Vec<Action>,
) -> Vec<Action> {
    let mut out = Vec::new();
    for action in actions {
        match action {
            Action::Cast { node, msg } if node == *to.me() => to.cast(&msg, &mut out),
            Action::Send { node, msg } if node == *to.me() => {
                to.info(&msg, &|_| true, Instant::now(), &mut out)
            }
            Action::Cast { .. } | Action::Send { .. } => {}
            other => side.push(other),
        }
    }
    let _ = from;
    out
}

/// Runs messages back and forth until neither side sends anything more.
fn settle(
    a: &mut GlobalServer,
    b: &mut GlobalServer,
    mut to_b: Vec<Action>,
    mut to_a: Vec<Action>,
    side_a: &mut Vec<Action>,
    side_b: &mut Vec<Action>,
) {
    for _ in 0..20 {
        if to_a.is_empty() && to_b.is_empty() {
            return;
        }
        let next_a = deliver(a, b, std::mem::take(&mut to_b), side_a);
        let next_b = deliver(b, a, std::mem::take(&mut to_a), side_b);
        to_a = next_a;
        to_b = next_b;
    }
    panic!("the exchange does not settle");
}

#[test]
fn a_whole_node_up_exchange_merges_names_and_syncs_both_sides() {
    let (na, nb) = (n("a@h"), n("b@h"));
    let mut a = GlobalServer::new(na.clone());
    let mut b = GlobalServer::new(nb.clone());
    let (la, lb) = (pid("a@h", 10), pid("b@h", 20));
    a.set_locker(la.clone());
    b.set_locker(lb.clone());
    let (ha, hb) = (pid("a@h", 30), pid("b@h", 40));
    register(&mut a, "on_a", &ha);
    register(&mut b, "on_b", &hb);
    // A sync on a waits for b.
    let waiter = pid("a@h", 50);
    let mut out = Vec::new();
    a.call(
        &tuple(vec![waiter.clone().into(), atom("sync_tag")]),
        &waiter,
        &tuple(vec![atom("sync"), list(vec![atom("b@h")])]),
        &|_| true,
        &mut out,
    );
    assert!(out.is_empty(), "sync waits");

    // nodeup on both sides: init_connect both ways, then the acks.
    let (mut side_a, mut side_b) = (Vec::new(), Vec::new());
    let mut up_a = Vec::new();
    a.nodeup(&nb, &mut up_a);
    let mut up_b = Vec::new();
    b.nodeup(&na, &mut up_b);
    settle(&mut a, &mut b, up_a, up_b, &mut side_a, &mut side_b);
    let his_locker = |side: &[Action]| {
        side.iter()
            .find_map(|x| match x {
                Action::Locker(LockerMsg::HisTheLocker { locker, my_tag, .. }) => {
                    Some((locker.clone(), *my_tag))
                }
                _ => None,
            })
            .expect("the locker learns its partner")
    };
    let (b_locker, a_tag) = his_locker(&side_a);
    let (a_locker, b_tag) = his_locker(&side_b);
    assert_eq!(
        (b_locker.clone(), a_locker.clone()),
        (lb.clone(), la.clone())
    );

    // The lockers set {global, [La, Lb]} on both nodes and say so.
    let lock_id = wire::locker_lock_id(&la, &lb);
    for s in [&mut a, &mut b] {
        for locker in [&la, &lb] {
            let out = call(s, locker, tuple(vec![atom("set_lock"), lock_id.clone()]));
            assert_eq!(
                replied(&out),
                Some(atom("true")),
                "both lockers share the lock"
            );
        }
    }
    let mut to_b = Vec::new();
    a.lock_is_set(&nb, a_tag, lock_id.clone(), &mut to_b);
    let mut to_a = Vec::new();
    b.lock_is_set(&na, b_tag, lock_id.clone(), &mut to_a);
    settle(&mut a, &mut b, to_b, to_a, &mut side_a, &mut side_b);

    // Each side's resolver gets the other's names; no clash here.
    let resolve = |side: &[Action]| {
        side.iter()
            .find_map(|x| match x {
                Action::Resolve { tag, names, .. } => Some((*tag, names.clone())),
                _ => None,
            })
            .expect("a resolver starts once lock and names are in")
    };
    let (tag_a, names_from_b) = resolve(&side_a);
    let (tag_b, names_from_a) = resolve(&side_b);
    assert_eq!(names_from_b.len(), 1);
    assert_eq!(names_from_a[0].1, ha);
    let inserts = |names: Vec<(Term, Pid, Term)>| {
        names
            .into_iter()
            .map(|(name, pid, method)| Op::Insert { name, pid, method })
            .collect::<Vec<_>>()
    };
    let mut to_b = Vec::new();
    a.exchange_ops(&nb, tag_a, inserts(names_from_b), vec![], &mut to_b);
    let mut to_a = Vec::new();
    b.exchange_ops(&na, tag_b, inserts(names_from_a), vec![], &mut to_a);
    let sync_replied = to_b
        .iter()
        .any(|x| matches!(x, Action::Reply { reply, .. } if *reply == atom("ok")));
    settle(&mut a, &mut b, to_b, to_a, &mut side_a, &mut side_b);

    for s in [&a, &b] {
        assert_eq!(s.whereis(&atom("on_a")), Some(&ha), "on {}", s.me());
        assert_eq!(s.whereis(&atom("on_b")), Some(&hb), "on {}", s.me());
    }
    assert_eq!(a.synced_nodes(), vec![nb.clone()]);
    assert_eq!(b.synced_nodes(), vec![na.clone()]);
    assert_eq!(a.known_nodes(), vec![nb.clone()]);
    assert_eq!(b.known_nodes(), vec![na.clone()]);
    assert!(
        sync_replied
            || side_a
                .iter()
                .any(|x| matches!(x, Action::Reply { reply, .. } if *reply == atom("ok"))),
        "the waiting sync is answered"
    );
    // The exchange ends with the lockers told to let go.
    for (side, peer, tag) in [(&side_a, &nb, a_tag), (&side_b, &na, b_tag)] {
        assert!(side.iter().any(|x| matches!(x,
            Action::Locker(LockerMsg::Cancel { node, tag: Some(t), then: Some(_) }) if node == peer && *t == tag)));
    }
}

#[test]
fn an_init_connect_before_the_nodeup_waits_for_it() {
    let mut a = GlobalServer::new(n("a@h"));
    a.set_locker(pid("a@h", 10));
    let init = tuple(vec![
        atom("init_connect"),
        tuple(vec![int(8), int(77)]),
        atom("b@h"),
        tuple(vec![
            atom("locker"),
            atom("no_longer_a_pid"),
            list(vec![]),
            pid("b@h", 20).into(),
        ]),
    ]);
    let mut out = Vec::new();
    a.cast(&init, &mut out);
    assert!(out.is_empty(), "kept as pre_connect");
    a.nodeup(&n("b@h"), &mut out);
    assert!(out.iter().any(
        |x| matches!(x, Action::Cast { msg, .. } if msg.to_string().contains("init_connect"))
    ));
    assert!(out.iter().any(|x| matches!(x, Action::Locker(LockerMsg::HisTheLocker { his_tag, .. }) if *his_tag == int(77))));
    assert!(out.iter().any(
        |x| matches!(x, Action::Send { msg, .. } if msg.to_string().contains("init_connect_ack"))
    ));
}

#[test]
fn a_wrong_ack_restarts_the_exchange() {
    let mut a = GlobalServer::new(n("a@h"));
    a.set_locker(pid("a@h", 10));
    let mut out = Vec::new();
    a.nodeup(&n("b@h"), &mut out);
    out.clear();
    let ack = tuple(vec![
        atom("init_connect_ack"),
        atom("b@h"),
        int(999),
        int(5),
    ]);
    a.info(&ack, &|_| true, Instant::now(), &mut out);
    assert!(out.iter().any(
        |x| matches!(x, Action::Send { msg, .. } if msg.to_string().contains("cancel_connect"))
    ));
    assert!(
        out.iter().any(
            |x| matches!(x, Action::Cast { msg, .. } if msg.to_string().contains("init_connect"))
        ),
        "a new init_connect with a new tag"
    );
}

#[test]
fn locks_are_shared_by_one_requester_and_go_with_their_holders() {
    let mut s = GlobalServer::new(n("a@h"));
    let (p1, p2, p3) = (pid("a@h", 1), pid("b@h", 2), pid("c@h", 3));
    let id = |req: &str| tuple(vec![atom("res"), atom(req)]);
    let set = |s: &mut GlobalServer, p: &Pid, req: &str| {
        replied(&call(s, p, tuple(vec![atom("set_lock"), id(req)])))
    };
    assert_eq!(set(&mut s, &p1, "x"), Some(atom("true")));
    assert_eq!(set(&mut s, &p2, "x"), Some(atom("true")), "same requester");
    assert_eq!(
        set(&mut s, &p3, "y"),
        Some(atom("false")),
        "another requester"
    );
    assert!(s.refers_to(&p1) && s.refers_to(&p2) && !s.refers_to(&p3));
    call(&mut s, &p1, tuple(vec![atom("del_lock"), id("x")]));
    assert_eq!(
        set(&mut s, &p3, "y"),
        Some(atom("false")),
        "p2 still holds it"
    );
    s.process_down(&p2);
    assert!(!s.refers_to(&p2));
    assert_eq!(
        set(&mut s, &p3, "y"),
        Some(atom("true")),
        "free once its holders are gone"
    );
    assert!(!s.can_set_lock(&id("x")));
}

#[test]
fn names_follow_globals_rules() {
    let mut s = GlobalServer::new(n("a@h"));
    let holder = pid("b@h", 5);
    register(&mut s, "x", &holder);
    assert_eq!(s.whereis(&atom("x")), Some(&holder));
    assert_eq!(s.names_of(&holder), 1);
    // A local holder that is not alive is not found.
    let local = pid("a@h", 6);
    register(&mut s, "y", &local);
    assert_eq!(s.where_alive(&atom("y"), &|_| false), None);
    // A registration while another process holds the global lock is
    // undone (lock_still_set/3), as global does.
    let registrar = pid("c@h", 7);
    let other = pid("c@h", 8);
    call(
        &mut s,
        &other,
        tuple(vec![
            atom("set_lock"),
            tuple(vec![atom("global"), other.clone().into()]),
        ]),
    );
    call(
        &mut s,
        &registrar,
        tuple(vec![
            atom("register"),
            atom("z"),
            holder.clone().into(),
            wire::random_exit_name(),
        ]),
    );
    assert_eq!(s.whereis(&atom("z")), None);
    // The holder's death takes all its names.
    s.process_down(&holder);
    assert_eq!(s.whereis(&atom("x")), None);
    assert!(!s.refers_to(&holder));
    // A global lock lost with its holder makes global refuse exchanges'
    // inserts until a lock is released normally (global_lock_down).
    s.process_down(&other);
    let out = call(
        &mut s,
        &pid("d@h", 9),
        tuple(vec![
            atom("register"),
            atom("w"),
            holder.clone().into(),
            wire::random_exit_name(),
        ]),
    );
    assert_eq!(replied(&out), Some(atom("yes")));
    assert_eq!(s.whereis(&atom("w")), None);
}

#[test]
fn sync_answers_at_once_or_when_the_nodes_are_synced_or_down() {
    let mut s = GlobalServer::new(n("a@h"));
    let me = pid("a@h", 1);
    let from = tuple(vec![me.clone().into(), atom("t")]);
    let mut out = Vec::new();
    s.call(
        &from,
        &me,
        &tuple(vec![atom("sync"), list(vec![atom("a@h")])]),
        &|_| true,
        &mut out,
    );
    assert_eq!(replied(&out), Some(atom("ok")), "nothing to wait for");
    out.clear();
    s.call(
        &from,
        &me,
        &tuple(vec![atom("sync"), list(vec![atom("b@h"), atom("c@h")])]),
        &|n| n != "c@h",
        &mut out,
    );
    assert!(out.is_empty(), "waits for b (c is not connected)");
    s.nodedown(&n("b@h"), &mut out);
    assert_eq!(replied(&out), Some(atom("ok")));
}

#[test]
fn a_remove_connection_from_a_known_node_disconnects_it() {
    for prevent in [true, false] {
        let mut s = GlobalServer::new(n("a@h")).with_partitions(prevent, 1 << 59);
        s.add_to_known(&[(n("b@h"), 8), (n("c@h"), 8)]);
        let mut out = Vec::new();
        s.info(
            &tuple(vec![atom("remove_connection"), atom("b@h")]),
            &|_| true,
            Instant::now(),
            &mut out,
        );
        assert!(out.contains(&Action::Disconnect(n("b@h"))));
        assert_eq!(s.known_nodes(), vec![n("c@h")]);
        out.clear();
        s.info(
            &tuple(vec![atom("remove_connection"), atom("x@h")]),
            &|_| true,
            Instant::now(),
            &mut out,
        );
        assert!(out.is_empty(), "an unknown node is left alone");
        // The nodedown that follows is no loss to report.
        s.nodedown(&n("b@h"), &mut out);
        assert!(sends(&out).is_empty(), "{out:?}");
    }
}

fn lost(a: &str, x_creation: i64, op_id: i64, b: &str) -> Term {
    tuple(vec![
        atom("lost_connection"),
        atom(a),
        int(x_creation),
        int(op_id),
        atom(b),
    ])
}

/// The `(node, msg)` of every `Send` in `out`.
fn sends(out: &[Action]) -> Vec<(Arc<str>, Term)> {
    out.iter()
        .filter_map(|a| match a {
            Action::Send { node, msg } => Some((node.clone(), msg.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_lost_connection_is_reported_to_every_other_known_node() {
    let x = (1 << 59) + (7 << 32) + 3;
    let mut s = GlobalServer::new(n("a@h")).with_partitions(true, x);
    s.add_to_known(&[(n("b@h"), 8), (n("c@h"), 8), (n("old@h"), 6)]);
    s.pending.insert(n("p@h"), 8);
    let mut out = Vec::new();
    s.nodedown(&n("b@h"), &mut out);
    let first = sends(&out);
    let to: Vec<&str> = first.iter().map(|(n, _)| &**n).collect();
    assert_eq!(to, vec!["c@h", "p@h"], "not b, not an old version");
    let Some([tag, from, xc, op, lost_node]) = as_tuple(&first[0].1) else {
        panic!("{first:?}")
    };
    assert_eq!(
        (as_atom(tag), as_atom(from), as_int(xc), as_atom(lost_node)),
        (Some("lost_connection"), Some("a@h"), Some(x), Some("b@h"))
    );
    // A second loss gets a later operation id.
    out.clear();
    s.nodedown(&n("c@h"), &mut out);
    let second = sends(&out);
    let Some([_, _, _, op2, _]) = as_tuple(&second[0].1) else {
        panic!("{out:?}")
    };
    assert!(as_int(op2) > as_int(op));
    // Off: nothing is told.
    let mut off = GlobalServer::new(n("a@h")).with_partitions(false, x);
    off.add_to_known(&[(n("b@h"), 8), (n("c@h"), 8)]);
    out.clear();
    off.nodedown(&n("b@h"), &mut out);
    assert!(sends(&out).is_empty());
}

#[test]
fn a_report_is_passed_on_once_and_the_lost_node_asked_to_go() {
    let now = Instant::now();
    let mut s = GlobalServer::new(n("c@h")).with_partitions(true, 1 << 59);
    s.add_to_known(&[(n("a@h"), 8), (n("b@h"), 8), (n("d@h"), 8)]);
    let report = lost("a@h", 5, 10, "b@h");
    let mut out = Vec::new();
    s.info(&report, &|_| true, now, &mut out);
    let sent = sends(&out);
    assert!(
        sent.contains(&(n("b@h"), report.clone())),
        "passed on: {sent:?}"
    );
    assert!(sent.contains(&(n("d@h"), report.clone())));
    assert!(!sent.iter().any(|(n, _)| &**n == "a@h"), "not back to a");
    assert!(sent.contains(&(
        n("b@h"),
        tuple(vec![atom("remove_connection"), atom("c@h")])
    )));
    assert!(
        !out.contains(&Action::Disconnect(n("b@h"))),
        "b drops the connection, we do not"
    );
    assert_eq!(s.known_nodes(), vec![n("a@h"), n("d@h")]);
    // b's nodedown is no new loss.
    out.clear();
    s.nodedown(&n("b@h"), &mut out);
    assert!(sends(&out).is_empty(), "{out:?}");
    // The same report, or an older one, is not acted on again.
    for again in [report.clone(), lost("a@h", 5, 9, "b@h")] {
        out.clear();
        s.info(&again, &|_| true, now, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }
    // A later one, or one from a's next incarnation, is passed on.
    for newer in [lost("a@h", 5, 11, "b@h"), lost("a@h", 6, 1, "b@h")] {
        out.clear();
        s.info(&newer, &|_| true, now, &mut out);
        assert!(sends(&out).contains(&(n("d@h"), newer.clone())), "{out:?}");
    }
    // After an hour the report is forgotten.
    out.clear();
    let later = now + LOST_CONNECTION_MEMORY + Duration::from_secs(1);
    s.info(&lost("a@h", 6, 1, "b@h"), &|_| true, later, &mut out);
    assert!(!out.is_empty());
}

#[test]
fn a_report_of_our_own_loss_asks_the_reporter_to_go() {
    let mut s = GlobalServer::new(n("b@h")).with_partitions(true, 1 << 59);
    s.add_to_known(&[(n("a@h"), 8), (n("c@h"), 8)]);
    let mut out = Vec::new();
    s.info(
        &lost("a@h", 5, 1, "b@h"),
        &|_| true,
        Instant::now(),
        &mut out,
    );
    assert!(sends(&out).contains(&(
        n("a@h"),
        tuple(vec![atom("remove_connection"), atom("b@h")])
    )));
    assert_eq!(s.known_nodes(), vec![n("c@h")]);
    // A report about nodes we do not know is only passed on.
    out.clear();
    s.info(
        &lost("x@h", 5, 1, "y@h"),
        &|_| true,
        Instant::now(),
        &mut out,
    );
    assert_eq!(sends(&out).len(), 1, "to c only: {out:?}");
    assert_eq!(s.known_nodes(), vec![n("c@h")]);
}

#[test]
fn reports_are_ignored_with_the_option_off_and_bad_ones_always() {
    let mut off = GlobalServer::new(n("c@h")).with_partitions(false, 1 << 59);
    off.add_to_known(&[(n("a@h"), 8), (n("b@h"), 8)]);
    let mut out = Vec::new();
    off.info(
        &lost("a@h", 5, 1, "b@h"),
        &|_| true,
        Instant::now(),
        &mut out,
    );
    assert!(out.is_empty());
    assert_eq!(off.known_nodes().len(), 2);
    let mut on = GlobalServer::new(n("c@h")).with_partitions(true, 1 << 59);
    on.add_to_known(&[(n("a@h"), 8), (n("b@h"), 8)]);
    let bad = tuple(vec![
        atom("lost_connection"),
        atom("a@h"),
        int(5),
        atom("not_an_id"),
        atom("b@h"),
    ]);
    on.info(&bad, &|_| true, Instant::now(), &mut out);
    assert!(out.is_empty());
    assert_eq!(on.known_nodes().len(), 2);
}

#[test]
fn remembered_reports_are_bounded() {
    let now = Instant::now();
    let mut s = GlobalServer::new(n("c@h")).with_partitions(true, 1 << 59);
    let mut out = Vec::new();
    for i in 0..LOST_CONNECTIONS_MAX + 10 {
        let a = format!("a{i}@h");
        s.info(&lost(&a, 1, 1, "b@h"), &|_| true, now, &mut out);
    }
    assert!(s.lost_connections.len() <= LOST_CONNECTIONS_MAX);
}

#[test]
fn get_known_answers_node_names_as_otp_does() {
    // global_SUITE's get_known/1 compares the answer with node names.
    let mut s = GlobalServer::new(n("a@h"));
    s.add_to_known(&[(n("b@h"), 8)]);
    let out = call(&mut s, &pid("a@h", 1), atom("get_known"));
    assert_eq!(replied(&out), Some(list(vec![atom("b@h")])));
}
