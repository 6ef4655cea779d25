//! The Rust node against real `erl` nodes (OTP from the system; CI installs
//! `erlang-nox`). Every test has its own EPMD (ours, in-process, on a free
//! port that `erl` finds through `ERL_EPMD_PORT`), its own cookie and node
//! names, and kills its `erl` processes when it ends.

mod node_support;

use std::time::{Duration, Instant};

use eetf::Term;
use flack::node::dist::{flags, handshake};
use flack::node::term::{as_atom, as_list, as_tuple, atom, list, tuple};
use flack::node::{Node, NodeEvent, Pid, Received};
use node_support::*;

fn names(t: &Term) -> Vec<String> {
    as_list(t)
        .unwrap_or(&[])
        .iter()
        .filter_map(as_atom)
        .map(str::to_owned)
        .collect()
}

async fn recv_msg(mb: &mut flack::node::Mailbox, pick: impl Fn(&Term) -> bool) -> Option<Term> {
    mb.receive(WAIT, |r| match r {
        Received::Message(_, m) if pick(m) => Some(m.clone()),
        _ => None,
    })
    .await
}

/// Rust's net_adm:ping: `{is_auth, Node}` to `{net_kernel, Peer}`.
async fn ping(node: &Node, peer: &str) -> bool {
    let (me, mut mb) = node.spawn_mailbox(16);
    let r = node.make_ref();
    let from = tuple(vec![me.clone().into(), Term::from(r.clone())]);
    let call = tuple(vec![
        atom("$gen_call"),
        from,
        tuple(vec![atom("is_auth"), atom(node.name())]),
    ]);
    node.send_named(peer, "net_kernel", call, Some(&me));
    let got = mb
        .receive(WAIT, |m| match m {
            Received::Message(_, t) => match as_tuple(t) {
                Some([Term::Reference(x), ans]) if **x == r => Some(as_atom(ans) == Some("yes")),
                _ => None,
            },
            _ => None,
        })
        .await;
    node.exit_process(&me, atom("normal"));
    got == Some(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_both_ways_and_visible() {
    require_erl!();
    let (_epmd, node, mut ctl, erl) = rust_and_erl("ping", "c_ping").await;
    let pong = ctl
        .cmd(&erl.name, tuple(vec![atom("ping"), atom(node.name())]))
        .await;
    assert_eq!(as_atom(&pong), Some("pong"));
    assert!(ping(&node, &erl.name).await, "is_auth answered yes");
    assert_eq!(
        names(&ctl.cmd(&erl.name, atom("nodes")).await),
        vec![node.name().to_owned()]
    );
    assert_eq!(node.connected_nodes(), vec![erl.name.clone()]);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_by_pid_and_name_both_ways() {
    require_erl!();
    let (_epmd, node, mut ctl, erl) = rust_and_erl("msg", "c_msg").await;
    let (p, mut mb) = node.spawn_mailbox(16);
    node.register_name("rproc", &p).expect("free");
    // Erlang -> Rust pid, Erlang -> Rust registered name.
    ctl.cmd(
        &erl.name,
        tuple(vec![atom("send"), p.clone().into(), atom("to_pid")]),
    )
    .await;
    let by_name = tuple(vec![atom("rproc"), atom(node.name())]);
    ctl.cmd(
        &erl.name,
        tuple(vec![atom("send"), by_name, atom("to_name")]),
    )
    .await;
    assert!(
        recv_msg(&mut mb, |m| as_atom(m) == Some("to_pid"))
            .await
            .is_some()
    );
    assert!(
        recv_msg(&mut mb, |m| as_atom(m) == Some("to_name"))
            .await
            .is_some()
    );
    // Rust -> Erlang pid and name (the agent forwards what it gets).
    let agent = match ctl
        .cmd(&erl.name, tuple(vec![atom("whereis"), atom("agent")]))
        .await
    {
        Term::Pid(p) => Pid::from(&p),
        other => panic!("no agent pid: {other}"),
    };
    node.send_from(&p, &agent, atom("rust_to_pid"));
    node.send_named(&erl.name, "agent", atom("rust_to_name"), Some(&p));
    assert!(
        ctl.got(WAIT, |m| as_atom(m) == Some("rust_to_pid"))
            .await
            .is_some()
    );
    assert!(
        ctl.got(WAIT, |m| as_atom(m) == Some("rust_to_name"))
            .await
            .is_some()
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_calls_are_answered_promptly() {
    require_erl!();
    let (_epmd, node, mut ctl, erl) = rust_and_erl("rpc", "c_rpc").await;
    let me = atom(node.name());
    let call = |m: &str, f: &str, a: Vec<Term>| {
        tuple(vec![atom("rpc"), me.clone(), atom(m), atom(f), list(a)])
    };
    assert_eq!(
        as_atom(&ctl.cmd(&erl.name, call("erlang", "node", vec![])).await),
        Some(node.name())
    );
    assert_eq!(
        names(&ctl.cmd(&erl.name, call("erlang", "nodes", vec![])).await),
        vec![erl.name.clone()]
    );
    let bad = ctl
        .cmd(&erl.name, call("os", "cmd", vec![list(vec![])]))
        .await;
    match as_tuple(&bad) {
        Some([tag, _]) => assert_eq!(as_atom(tag), Some("badrpc"), "{bad}"),
        _ => panic!("expected badrpc, got {bad}"),
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_both_ways_normal_noproc_noconnection() {
    require_erl!();
    let (_epmd, node, mut ctl, mut erl) = rust_and_erl("mon", "c_mon").await;
    // Erlang monitors a Rust pid that ends normally.
    let (p, _mb) = node.spawn_mailbox(4);
    ctl.cmd(&erl.name, tuple(vec![atom("monitor"), p.clone().into()]))
        .await;
    node.exit_process(&p, atom("normal"));
    assert!(
        ctl.got(WAIT, |m| is_down(m, "normal")).await.is_some(),
        "erl saw DOWN normal"
    );
    // ... a Rust pid that no longer exists, and a name nobody holds.
    ctl.cmd(&erl.name, tuple(vec![atom("monitor"), p.clone().into()]))
        .await;
    assert!(
        ctl.got(WAIT, |m| is_down(m, "noproc")).await.is_some(),
        "erl saw DOWN noproc (pid)"
    );
    let nosuch = tuple(vec![atom("nosuch"), atom(node.name())]);
    ctl.cmd(&erl.name, tuple(vec![atom("monitor"), nosuch]))
        .await;
    assert!(
        ctl.got(WAIT, |m| is_down(m, "noproc")).await.is_some(),
        "erl saw DOWN noproc (name)"
    );
    // ... a Rust registered name that ends with a reason.
    let (q, _qb) = node.spawn_mailbox(4);
    node.register_name("rq", &q).expect("free");
    ctl.cmd(
        &erl.name,
        tuple(vec![
            atom("monitor"),
            tuple(vec![atom("rq"), atom(node.name())]),
        ]),
    )
    .await;
    node.exit_process(&q, atom("shutdown"));
    assert!(
        ctl.got(WAIT, |m| is_down(m, "shutdown")).await.is_some(),
        "erl saw DOWN by name"
    );

    // Rust monitors Erlang processes.
    let (w, mut wb) = node.spawn_mailbox(16);
    let waiter = match ctl
        .cmd(&erl.name, tuple(vec![atom("spawn_waiter"), atom("false")]))
        .await
    {
        Term::Pid(p) => Pid::from(&p),
        other => panic!("{other}"),
    };
    node.monitor(&w, &waiter);
    node.send(&waiter, tuple(vec![atom("stop"), atom("normal")]));
    assert!(
        recv_msg(&mut wb, |m| is_down(m, "normal")).await.is_some(),
        "rust saw DOWN normal"
    );
    node.monitor(&w, &waiter);
    assert!(
        recv_msg(&mut wb, |m| is_down(m, "noproc")).await.is_some(),
        "rust saw DOWN noproc"
    );
    node.monitor_name(&w, "nosuch", &erl.name);
    assert!(
        recv_msg(&mut wb, |m| is_down(m, "noproc")).await.is_some(),
        "rust saw DOWN noproc (name)"
    );

    // noconnection: Erlang's monitor of a Rust pid when we disconnect...
    let (r, _rb) = node.spawn_mailbox(4);
    ctl.cmd(&erl.name, tuple(vec![atom("monitor"), r.clone().into()]))
        .await;
    assert!(node.disconnect(&erl.name));
    assert!(
        ctl.got(WAIT, |m| is_down(m, "noconnection"))
            .await
            .is_some(),
        "erl saw DOWN noconnection"
    );
    // ... and ours of an Erlang name when erl is killed.
    node.monitor_name(&w, "agent", &erl.name);
    tokio::time::sleep(Duration::from_millis(300)).await;
    erl.kill();
    assert!(
        recv_msg(&mut wb, |m| is_down(m, "noconnection"))
            .await
            .is_some(),
        "rust saw DOWN noconnection"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_propagate_exits_both_ways() {
    require_erl!();
    let (_epmd, node, mut ctl, erl) = rust_and_erl("lnk", "c_lnk").await;
    // Erlang (trapping) linked to a Rust process that crashes.
    let (p, _pb) = node.spawn_mailbox(4);
    ctl.cmd(&erl.name, tuple(vec![atom("link"), p.clone().into()]))
        .await;
    node.exit_process(&p, atom("boom"));
    assert!(
        ctl.got(WAIT, |m| is_exit(m, "boom")).await.is_some(),
        "erl got EXIT boom"
    );
    // Unlinked (UNLINK_ID) before the exit: nothing arrives.
    let (u, _ub) = node.spawn_mailbox(4);
    ctl.cmd(&erl.name, tuple(vec![atom("link"), u.clone().into()]))
        .await;
    ctl.cmd(&erl.name, tuple(vec![atom("unlink"), u.clone().into()]))
        .await;
    node.exit_process(&u, atom("after_unlink"));
    assert!(
        ctl.got(Duration::from_secs(1), |m| is_exit(m, "after_unlink"))
            .await
            .is_none()
    );

    // Rust (trapping) linked to an Erlang process that crashes.
    let (t, mut tb) = node.spawn_mailbox(16);
    tb.inbox().set_trap_exit(true);
    let spawn_waiter = tuple(vec![atom("spawn_waiter"), atom("false")]);
    let w1 = match ctl.cmd(&erl.name, spawn_waiter.clone()).await {
        Term::Pid(p) => Pid::from(&p),
        other => panic!("{other}"),
    };
    node.link(&t, &w1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    node.send(&w1, tuple(vec![atom("stop"), atom("crash")]));
    assert!(
        recv_msg(&mut tb, |m| is_exit(m, "crash")).await.is_some(),
        "rust got EXIT crash"
    );
    // A Rust process that does not trap exits dies with its Erlang partner.
    let (d, mut db) = node.spawn_mailbox(16);
    let w2 = match ctl.cmd(&erl.name, spawn_waiter).await {
        Term::Pid(p) => Pid::from(&p),
        other => panic!("{other}"),
    };
    node.link(&d, &w2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    node.send(&w2, tuple(vec![atom("stop"), atom("crash2")]));
    let ended = db
        .receive(WAIT, |r| {
            matches!(r, Received::Terminated(t) if as_atom(t) == Some("crash2")).then_some(())
        })
        .await;
    assert!(ended.is_some(), "linked rust process ended");
    assert!(!node.is_alive(&d));
    // And an Erlang process linked to the Rust process dies with it.
    let (v, _vb) = node.spawn_mailbox(4);
    let w3 = match ctl
        .cmd(
            &erl.name,
            tuple(vec![atom("spawn_waiter_linked_to"), v.clone().into()]),
        )
        .await
    {
        Term::Pid(p) => Pid::from(&p),
        other => panic!("{other}"),
    };
    let (m, mut mb) = node.spawn_mailbox(4);
    node.monitor(&m, &w3);
    node.exit_process(&v, atom("rust_crash"));
    assert!(
        recv_msg(&mut mb, |t| is_down(t, "rust_crash"))
            .await
            .is_some(),
        "erl partner died with our reason"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_erl_is_nodedown_and_silent_erl_times_out() {
    require_erl!();
    let epmd = TestEpmd::start().await;
    let mut config = rust_config(&unique("rtick"), "c_tick", epmd.port);
    config.net_ticktime = Duration::from_secs(4);
    let node = Node::start(config).await.expect("starts");
    let mut ctl = Ctl::new(&node);
    let mut events = node.subscribe();
    let tick = ["-kernel", "net_ticktime", "4"];
    let mut a = Erl::start(&unique("etick"), "c_tick", epmd.port, node.name(), &tick);
    let b = Erl::start(&unique("etick"), "c_tick", epmd.port, node.name(), &tick);
    ctl.agent_up(&a.name).await;
    ctl.agent_up(&b.name).await;
    // Idle for two tick times: ticks keep both links up.
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(node.connected_nodes().len(), 2, "idle links survive");
    // kill -9: the socket closes, nodedown at once.
    a.kill();
    // The closed socket is the cause, not a missed tick: no timing needed.
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Ok(NodeEvent::Down(n, reason))) if *n == *a.name => {
                assert!(!reason.contains("tick"), "killed erl seen as {reason}");
                break;
            }
            Ok(Ok(_)) => continue,
            other => panic!("no nodedown for killed erl: {other:?}"),
        }
    }
    // SIGSTOP: the socket stays open, silence is noticed by the tick rule
    // (the reason says so); the generous bound only keeps a broken tick from
    // hanging the test.
    b.signal("STOP");
    loop {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Ok(NodeEvent::Down(n, reason))) if *n == *b.name => {
                assert!(reason.contains("tick"), "{reason}");
                break;
            }
            Ok(Ok(_)) => continue,
            other => panic!("silent erl not detected: {other:?}"),
        }
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_mesh_agrees_and_survives_a_restart() {
    require_erl!();
    let epmd = TestEpmd::start().await;
    let node = Node::start(rust_config(&unique("rmesh"), "c_mesh", epmd.port))
        .await
        .expect("starts");
    let mut ctl = Ctl::new(&node);
    let mut events = node.subscribe();
    let a = Erl::start(&unique("emesha"), "c_mesh", epmd.port, node.name(), &[]);
    ctl.agent_up(&a.name).await;
    // b is started knowing only a: the Rust node learns of b from a.
    let b_name = unique("emeshb");
    let b = Erl::start(&b_name, "c_mesh", epmd.port, "nobody@nohost", &[]);
    let b_full = b.name.clone();
    let connect_b = tuple(vec![atom("connect"), atom(&b_full)]);
    let mut connected = false;
    for _ in 0..50 {
        if as_atom(&ctl.cmd(&a.name, connect_b.clone()).await) == Some("true") {
            connected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(connected, "a reached b");
    let all = |me: &str| {
        let mut v = vec![a.name.clone(), b_full.clone(), node.name().to_owned()];
        v.retain(|n| n != me);
        v.sort();
        v
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.connected_nodes() != all(node.name()) {
        assert!(
            Instant::now() < deadline,
            "rust node never meshed with b: {:?}",
            node.connected_nodes()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(names(&ctl.cmd(&a.name, atom("nodes")).await), all(&a.name));
    // b's agent reports to nobody; ask b through a's view: b's nodes().
    let b_nodes = tuple(vec![
        atom("rpc"),
        atom(&b_full),
        atom("erlang"),
        atom("nodes"),
        list(vec![]),
    ]);
    let mut seen = names(&ctl.cmd(&a.name, b_nodes.clone()).await);
    seen.sort();
    assert_eq!(seen, all(&b_full));
    // Restart b: nobody else is disconnected.
    drop(b);
    let b2 = Erl::start(&b_name, "c_mesh", epmd.port, node.name(), &[]);
    ctl.agent_up(&b2.name).await;
    let connect_a = tuple(vec![atom("connect"), atom(&a.name)]);
    assert_eq!(as_atom(&ctl.cmd(&b2.name, connect_a).await), Some("true"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    while let Ok(e) = events.try_recv() {
        if let NodeEvent::Down(n, reason) = e {
            assert_eq!(*n, *b_full, "only b went down, not {n} ({reason})");
        }
    }
    assert_eq!(node.connected_nodes(), all(node.name()));
    assert_eq!(names(&ctl.cmd(&a.name, atom("nodes")).await), all(&a.name));
    assert_eq!(
        names(&ctl.cmd(&b2.name, atom("nodes")).await),
        all(&b2.name)
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cookie_is_refused_both_ways() {
    require_erl!();
    let epmd = TestEpmd::start().await;
    let node = Node::start(rust_config(&unique("rcookie"), "right", epmd.port))
        .await
        .expect("starts");
    let _ctl = Ctl::new(&node);
    let erl = Erl::start(&unique("ecookie"), "wrong", epmd.port, node.name(), &[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        node.connected_nodes().is_empty(),
        "erl with a wrong cookie got in"
    );
    assert!(
        !node.connect(&erl.name).await,
        "we got into erl with a wrong cookie"
    );
    assert!(node.connected_nodes().is_empty());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_epmd_serves_erl_and_the_digest_bit_is_26() {
    require_erl!();
    let (epmd, node, _ctl, erl) = rust_and_erl("epmd", "c_epmd").await;
    let text = flack::node::epmd::server::names(epmd.port)
        .await
        .expect("epmd answers");
    let alive = erl.name.split('@').next().expect("alive");
    assert!(
        text.starts_with(&format!(
            "epmd: up and running on port {} with data:\n",
            epmd.port
        )),
        "{text}"
    );
    assert!(text.contains(&format!("name {alive} at port ")), "{text}");
    // Offer the digest instead of the eleven explicit flags: OTP accepts bit 26,
    // and refuses bit 36 (the value erl_dist and the protocol document give).
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], epmd.port));
    let entry = flack::node::epmd::client::lookup(addr, alive)
        .await
        .expect("epmd")
        .expect("registered");
    let base = flags::offered(false) & !flags::MANDATORY_25 | flags::HANDSHAKE_23;
    for (digest, accepted) in [
        (flags::MANDATORY_25_DIGEST, true),
        (flags::MANDATORY_25_DIGEST_AS_DOCUMENTED, false),
    ] {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", entry.port))
            .await
            .expect("connect");
        let local = handshake::Local {
            name: format!("{}@localhost", unique("digest")),
            flags: (base & !flags::MANDATORY_25_DIGEST) | digest,
            creation: 77,
            cookie: "c_epmd".into(),
            step_timeout: Duration::from_secs(5),
        };
        let result = handshake::client(&mut stream, &local, false).await;
        assert_eq!(result.is_ok(), accepted, "digest {digest:#x}: {result:?}");
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_stays_intact_between_erlang_nodes() {
    require_erl!();
    // With prevent_overlapping_partitions off on the Rust node: on (the
    // default), it drops both sides of the cut as an Erlang node in its
    // place does (tests/global_partitions.rs).
    let epmd = TestEpmd::start().await;
    let mut config = rust_config(&unique("rglob"), "c_glob", epmd.port);
    config.prevent_overlapping_partitions = false;
    let node = Node::start(config).await.expect("node starts");
    let mut ctl = Ctl::new(&node);
    let a = Erl::start(&unique("eglob"), "c_glob", epmd.port, node.name(), &[]);
    ctl.agent_up(&a.name).await;
    let b = Erl::start(&unique("eglob"), "c_glob", epmd.port, node.name(), &[]);
    ctl.agent_up(&b.name).await;
    assert_eq!(
        as_atom(
            &ctl.cmd(&a.name, tuple(vec![atom("connect"), atom(&b.name)]))
                .await
        ),
        Some("true")
    );
    // The Rust node runs global (tests/global.rs has the rest): global:sync()
    // on an Erlang node returns, and a disconnect between the Erlang nodes
    // makes no one disconnect anyone else.
    let sync = ctl
        .cmd(
            &a.name,
            tuple(vec![
                atom("global_sync"),
                Term::from(eetf::FixInteger::from(10_000)),
            ]),
        )
        .await;
    assert_eq!(as_atom(&sync), Some("ok"));
    // Every exchange over (global would mesh a and b again if one still
    // ran when they are disconnected).
    let sync = ctl
        .cmd(
            &b.name,
            tuple(vec![
                atom("global_sync"),
                Term::from(eetf::FixInteger::from(10_000)),
            ]),
        )
        .await;
    assert_eq!(as_atom(&sync), Some("ok"));
    let global = node.global().expect("global runs");
    tokio::time::timeout(WAIT, global.sync())
        .await
        .expect("the Rust node syncs");
    assert!(
        ctl.cmd(&a.name, tuple(vec![atom("disconnect"), atom(&b.name)]))
            .await
            == atom("true")
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        names(&ctl.cmd(&b.name, atom("nodes")).await),
        vec![node.name().to_owned()]
    );
    assert_eq!(node.connected_nodes().len(), 2, "no cascade of disconnects");
    node.shutdown().await;
}
