//! OTP's `global` with the Rust node as a member, against real `erl`
//! nodes (Debian's OTP): `global:sync()` returns everywhere, names
//! registered on either side are seen on the other, `global:trans/2` and
//! locks exclude holders across Erlang and Rust, names go with their
//! holder or its node, a lock holder killed with `kill -9` leaves no stuck
//! lock, and a clash between two clusters that join is resolved as OTP
//! resolves it.
//!
//! The Erlang side runs expressions through the test agent's `eval`
//! command (`erlang-compat/flack_compat.erl`).

mod node_support;

use std::time::Duration;

use eetf::Term;
use flack::node::term::{as_atom, as_tuple, atom, tuple};
use flack::node::{Node, Pid, Received};
use node_support::*;

/// How long an Erlang command may take before the test gives up on it:
/// generous, since a hung `global:sync()` is what these tests look for.
const GUARD: Duration = Duration::from_secs(40);

/// Runs `text` (an Erlang expression sequence) on `erl_node`'s agent.
async fn eval(ctl: &mut Ctl, erl_node: &str, text: &str) -> Term {
    cmd_within(
        ctl,
        erl_node,
        tuple(vec![atom("eval"), Term::from(eetf::ByteList::from(text))]),
        GUARD,
    )
    .await
}

async fn cmd_within(ctl: &mut Ctl, erl_node: &str, cmd: Term, within: Duration) -> Term {
    let r = ctl.node.make_ref();
    let msg = tuple(vec![
        atom("cmd"),
        ctl.pid.clone().into(),
        Term::from(r.clone()),
        cmd.clone(),
    ]);
    ctl.node.send_named(erl_node, "agent", msg, Some(&ctl.pid));
    ctl.mailbox
        .receive(within, |got| match got {
            Received::Message(_, m) => match as_tuple(m) {
                Some([Term::Reference(got), result]) if **got == r => Some(result.clone()),
                _ => None,
            },
            _ => None,
        })
        .await
        .unwrap_or_else(|| panic!("no answer from {erl_node} to {cmd} within {within:?}"))
}

/// `global:sync()` on `erl_node`, guarded: `ok`, or `timeout` after 30 s.
async fn erl_sync(ctl: &mut Ctl, erl_node: &str) -> String {
    let t = eval(
        ctl,
        erl_node,
        "Self = self(), P = spawn(fun() -> R = global:sync(), Self ! {synced, self(), R} end), \
         receive {synced, P, R} -> R after 30000 -> exit(P, kill), timeout end.",
    )
    .await;
    as_atom(&t)
        .map(str::to_owned)
        .unwrap_or_else(|| t.to_string())
}

/// A cluster: an EPMD, a Rust node with its controller, and `n` erl nodes
/// (each connected to the Rust node by its agent).
async fn cluster(stem: &str, n: usize) -> (TestEpmd, Node, Ctl, Vec<Erl>) {
    let cookie = format!("c_{stem}");
    let epmd = TestEpmd::start().await;
    let node = Node::start(rust_config(
        &unique(&format!("r{stem}")),
        &cookie,
        epmd.port,
    ))
    .await
    .expect("node starts");
    let mut ctl = Ctl::new(&node);
    let mut erls = Vec::new();
    for _ in 0..n {
        let erl = Erl::start(
            &unique(&format!("e{stem}")),
            &cookie,
            epmd.port,
            node.name(),
            &[],
        );
        ctl.agent_up(&erl.name).await;
        erls.push(erl);
    }
    (epmd, node, ctl, erls)
}

/// [`cluster`] of two Erlang nodes, synced on both, which `global` has
/// connected to each other through the Rust node.
async fn meshed_cluster(stem: &str) -> (TestEpmd, Node, Ctl, Vec<Erl>) {
    let (epmd, node, mut ctl, erls) = cluster(stem, 2).await;
    for erl in &erls {
        assert_eq!(erl_sync(&mut ctl, &erl.name).await, "ok");
    }
    let (a, b) = (&erls[0].name, &erls[1].name);
    eventually("global meshes the Erlang nodes", async || {
        eval(&mut ctl, a, "nodes().")
            .await
            .to_string()
            .contains(b.as_str())
    })
    .await;
    (epmd, node, ctl, erls)
}

/// Waits until `check` holds, up to `GUARD`.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + GUARD;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pid_of(t: &Term) -> Option<Pid> {
    match t {
        Term::Pid(p) => Some(Pid::from(p)),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_returns_on_every_erlang_node_and_names_cross_both_ways() {
    require_erl!();
    let (_epmd, node, mut ctl, erls) = cluster("gsync", 2).await;
    let global = node.global().expect("a distributed node runs global");
    for erl in &erls {
        assert_eq!(
            erl_sync(&mut ctl, &erl.name).await,
            "ok",
            "global:sync() on {}",
            erl.name
        );
    }
    tokio::time::timeout(GUARD, global.sync())
        .await
        .expect("the Rust node's sync returns");
    // global meshed the Erlang nodes through the Rust node, and knows all.
    let (a, b) = (&erls[0].name, &erls[1].name);
    eventually("global meshes the Erlang nodes", async || {
        eval(&mut ctl, a, "lists:sort(nodes()).")
            .await
            .to_string()
            .contains(b.as_str())
    })
    .await;
    eventually("the Rust node knows both Erlang nodes", async || {
        let mut k = global.known_nodes();
        k.sort();
        k == vec![a.clone(), b.clone()]
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    })
    .await;

    // Erlang -> Rust: a name registered on a is seen here.
    let holder = eval(
        &mut ctl,
        a,
        "P = spawn(fun() -> receive stop -> ok end end), yes = global:register_name(from_erl, P), P.",
    )
    .await;
    let holder = pid_of(&holder).expect("a pid");
    assert_eq!(global.whereis_name(&atom("from_erl")), Some(holder.clone()));

    // Rust -> Erlang: a Rust process's name is seen on both erl nodes,
    // also by a whereis_name rpc'd from one Erlang node to the other.
    let (mine, mut mailbox) = node.spawn_mailbox(8);
    assert!(global.register_name(atom("from_rust"), &mine).await);
    assert!(
        !global.register_name(atom("from_erl"), &mine).await,
        "taken"
    );
    for erl in &erls {
        let seen = eval(&mut ctl, &erl.name, "global:whereis_name(from_rust).").await;
        assert_eq!(pid_of(&seen), Some(mine.clone()), "on {}", erl.name);
    }
    let via_rpc = eval(
        &mut ctl,
        a,
        &format!("rpc:call('{b}', global, whereis_name, [from_rust])."),
    )
    .await;
    assert_eq!(pid_of(&via_rpc), Some(mine.clone()));
    let on_rust = eval(
        &mut ctl,
        a,
        &format!(
            "rpc:call('{}', global, whereis_name, [from_erl]).",
            node.name()
        ),
    )
    .await;
    assert_eq!(pid_of(&on_rust), Some(holder.clone()));
    // A message through the global name reaches the Rust process.
    eval(&mut ctl, b, "global:send(from_rust, hello_global), ok.").await;
    let got = mailbox
        .receive(GUARD, |r| match r {
            Received::Message(_, m) if as_atom(m) == Some("hello_global") => Some(()),
            _ => None,
        })
        .await;
    assert!(
        got.is_some(),
        "global:send/2 on erl reaches the Rust holder"
    );

    // Unregistration from either side reaches the other.
    global.unregister_name(atom("from_rust")).await;
    for erl in &erls {
        let seen = eval(&mut ctl, &erl.name, "global:whereis_name(from_rust).").await;
        assert_eq!(as_atom(&seen), Some("undefined"));
    }
    eval(&mut ctl, b, "global:unregister_name(from_erl).").await;
    assert_eq!(global.whereis_name(&atom("from_erl")), None);

    // The holder's death takes its name away everywhere.
    let (short_lived, _mb) = node.spawn_mailbox(8);
    assert!(
        global
            .register_name(atom("short_lived"), &short_lived)
            .await
    );
    node.exit_process(&short_lived, atom("normal"));
    for erl in &erls {
        eventually("the name of an ended Rust process goes", async || {
            as_atom(&eval(&mut ctl, &erl.name, "global:whereis_name(short_lived).").await)
                == Some("undefined")
        })
        .await;
    }
    // Every Erlang node still syncs, and no one was disconnected.
    for erl in &erls {
        assert_eq!(erl_sync(&mut ctl, &erl.name).await, "ok");
    }
    assert_eq!(node.connected_nodes().len(), 2);
    node.shutdown().await;
}

/// `{P, true}` from an Erlang process that took `Id` with `global:set_lock`
/// and holds it until sent `release`.
fn erl_lock_holder(id: &str) -> String {
    format!(
        "Self = self(), Id = {id}, \
         P = spawn(fun() -> R = global:set_lock(Id, [node() | nodes()], 0), Self ! {{locked, self(), R}}, \
                  receive release -> global:del_lock(Id), Self ! {{released, self()}} end end), \
         receive {{locked, P, R}} -> {{P, R}} after 30000 -> timeout end."
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_exclude_holders_across_erlang_and_rust() {
    require_erl!();
    let (_epmd, node, mut ctl, erls) = meshed_cluster("glock").await;
    let global = node.global().expect("global");
    let (a, b) = (erls[0].name.clone(), erls[1].name.clone());

    // A lock held through the Rust API blocks trans and set_lock on erl.
    let held = global
        .set_lock(atom("res"), atom("rust_side"), None, Some(0))
        .await
        .expect("a free lock is set");
    for erl in [&a, &b] {
        let t = eval(
            &mut ctl,
            erl,
            "global:trans({res, erl_side}, fun() -> ran end, [node() | nodes()], 0).",
        )
        .await;
        assert_eq!(
            as_atom(&t),
            Some("aborted"),
            "trans on {erl} while Rust holds the lock"
        );
    }
    // The same requester shares the lock, as in global.
    let t = eval(
        &mut ctl,
        &a,
        "global:trans({res, rust_side}, fun() -> ran end, [node() | nodes()], 0).",
    )
    .await;
    assert_eq!(as_atom(&t), Some("ran"));
    held.release().await;
    let t = eval(
        &mut ctl,
        &a,
        "global:trans({res, erl_side}, fun() -> ran end, [node() | nodes()], 0).",
    )
    .await;
    assert_eq!(
        as_atom(&t),
        Some("ran"),
        "trans runs once the Rust lock is released"
    );

    // A lock held on erl blocks the Rust side until it is released.
    let holder = eval(&mut ctl, &a, &erl_lock_holder("{res2, erl_side}")).await;
    let holder_pid = match as_tuple(&holder) {
        Some([Term::Pid(p), r]) if as_atom(r) == Some("true") => Pid::from(p),
        _ => panic!("erl took the lock: {holder}"),
    };
    assert!(
        global
            .set_lock(atom("res2"), atom("rust_side"), None, Some(0))
            .await
            .is_none(),
        "the Rust side cannot take a lock erl holds"
    );
    let waiter = {
        let global = global.clone();
        tokio::spawn(async move {
            global
                .set_lock(atom("res2"), atom("rust_side"), None, None)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "a Rust set_lock with retries waits for erl's holder"
    );
    node.send(&holder_pid, atom("release"));
    let got = tokio::time::timeout(GUARD, waiter)
        .await
        .expect("set once released")
        .expect("task");
    let got = got.expect("the lock is set after erl's release");
    // The Rust holder's death (here: killed from erl) releases it everywhere.
    let rust_holder = got.holder().clone();
    let t = eval(
        &mut ctl,
        &b,
        &format!("exit({}, kill), ok.", erl_pid(&rust_holder)),
    )
    .await;
    assert_eq!(as_atom(&t), Some("ok"));
    for erl in [&a, &b] {
        eventually("a killed Rust holder's lock goes", async || {
            as_atom(
                &eval(
                    &mut ctl,
                    erl,
                    "global:trans({res2, erl_side}, fun() -> ran end, [node() | nodes()], 0).",
                )
                .await,
            ) == Some("ran")
        })
        .await;
    }
    drop(got);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_while_holding_a_lock_leaves_no_stuck_lock() {
    require_erl!();
    let (_epmd, node, mut ctl, mut erls) = meshed_cluster("gkill").await;
    let global = node.global().expect("global");
    let (a, b) = (erls[0].name.clone(), erls[1].name.clone());
    let holder = eval(&mut ctl, &b, &erl_lock_holder("{res3, on_b}")).await;
    assert!(
        holder.to_string().contains("true"),
        "b took the lock: {holder}"
    );
    assert!(
        global
            .set_lock(atom("res3"), atom("rust_side"), None, Some(0))
            .await
            .is_none()
    );
    erls[1].kill();
    let lock = tokio::time::timeout(
        GUARD,
        global.set_lock(atom("res3"), atom("rust_side"), None, None),
    )
    .await
    .expect("the lock of a killed node's holder goes")
    .expect("set");
    lock.release().await;
    let t = eval(
        &mut ctl,
        &a,
        "global:trans({res3, on_a}, fun() -> ran end, [node() | nodes()], 0).",
    )
    .await;
    assert_eq!(as_atom(&t), Some("ran"));
    assert_eq!(erl_sync(&mut ctl, &a).await, "ok");
    assert_eq!(node.connected_nodes(), vec![a.clone()]);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_nodes_exit_takes_its_names_away_everywhere() {
    require_erl!();
    let (_epmd, node, mut ctl, erls) = cluster("gexit", 1).await;
    let a = erls[0].name.clone();
    // A second Rust node, whose names the Erlang node must drop when it goes.
    let other = Node::start(rust_config(&unique("rgexitb"), "c_gexit", _epmd.port))
        .await
        .expect("second node");
    assert!(other.connect(&a).await);
    let g = other.global().expect("global");
    assert_eq!(erl_sync(&mut ctl, &a).await, "ok");
    tokio::time::timeout(GUARD, g.sync()).await.expect("sync");
    let (p, _mb) = other.spawn_mailbox(8);
    assert!(g.register_name(atom("leaving"), &p).await);
    let seen = eval(&mut ctl, &a, "global:whereis_name(leaving).").await;
    assert_eq!(pid_of(&seen), Some(p.clone()));
    eventually("the first Rust node learns the name", async || {
        node.global().and_then(|g| g.whereis_name(&atom("leaving"))) == Some(p.clone())
    })
    .await;
    other.shutdown().await;
    eventually("the name goes on erl", async || {
        as_atom(&eval(&mut ctl, &a, "global:whereis_name(leaving).").await) == Some("undefined")
    })
    .await;
    eventually("the name goes on the other Rust node", async || {
        node.global()
            .and_then(|g| g.whereis_name(&atom("leaving")))
            .is_none()
    })
    .await;
    assert_eq!(erl_sync(&mut ctl, &a).await, "ok");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clash_between_two_clusters_is_resolved_as_otp_resolves_it() {
    require_erl!();
    // Cluster 1: Rust node r1 and erl a ("e..."); cluster 2: Rust node r2
    // and erl z ("z..."). Each registers two names the other also holds.
    let epmd = TestEpmd::start().await;
    let cookie = "c_gclash";
    let r1 = Node::start(rust_config(&unique("rgclash"), cookie, epmd.port))
        .await
        .expect("r1");
    let r2 = Node::start(rust_config(&unique("rgclash"), cookie, epmd.port))
        .await
        .expect("r2");
    let mut ctl1 = Ctl::new(&r1);
    let mut ctl2 = Ctl::new(&r2);
    let a = Erl::start(&unique("egclash"), cookie, epmd.port, r1.name(), &[]);
    ctl1.agent_up(&a.name).await;
    let z = Erl::start(&unique("zgclash"), cookie, epmd.port, r2.name(), &[]);
    ctl2.agent_up(&z.name).await;
    assert_eq!(erl_sync(&mut ctl1, &a.name).await, "ok");
    assert_eq!(erl_sync(&mut ctl2, &z.name).await, "ok");
    let (g1, g2) = (r1.global().expect("g1"), r2.global().expect("g2"));
    let spawn_waiter = "P = spawn(fun() -> receive stop -> ok end end), ";
    // `one`: held by r1 (Rust) and by z (Erlang): r1's name sorts first,
    // so random_exit_name keeps r1's holder and kills z's.
    let (one_rust, _mb1) = r1.spawn_mailbox(8);
    assert!(g1.register_name(atom("one"), &one_rust).await);
    let one_erl = pid_of(
        &eval(
            &mut ctl2,
            &z.name,
            &format!("{spawn_waiter} yes = global:register_name(one, P), P."),
        )
        .await,
    )
    .expect("pid");
    // `two`: held by a (Erlang) and by r2 (Rust): a's name sorts first, so
    // r2's holder is killed.
    let two_erl = pid_of(
        &eval(
            &mut ctl1,
            &a.name,
            &format!("{spawn_waiter} yes = global:register_name(two, P), P."),
        )
        .await,
    )
    .expect("pid");
    let (two_rust, _mb2) = r2.spawn_mailbox(8);
    assert!(g2.register_name(atom("two"), &two_rust).await);
    assert!(
        r1.connected_nodes() == vec![a.name.clone()]
            && r2.connected_nodes() == vec![z.name.clone()]
    );

    // The clusters join.
    let joined = eval(
        &mut ctl1,
        &a.name,
        &format!("net_kernel:connect_node('{}').", z.name),
    )
    .await;
    assert_eq!(as_atom(&joined), Some("true"));
    for (ctl, erl) in [(&mut ctl1, &a.name), (&mut ctl2, &z.name)] {
        eventually("the four nodes are one cluster", async || {
            eval(ctl, erl, "length(nodes()).").await.to_string() == "3"
        })
        .await;
        assert_eq!(erl_sync(ctl, erl).await, "ok");
    }
    tokio::time::timeout(GUARD, g1.sync()).await.expect("sync");
    tokio::time::timeout(GUARD, g2.sync()).await.expect("sync");
    eventually("z's holder of `one` was killed", async || {
        as_atom(
            &eval(
                &mut ctl2,
                &z.name,
                &format!("is_process_alive({}).", erl_pid(&one_erl)),
            )
            .await,
        ) == Some("false")
    })
    .await;
    eventually("r2's holder of `two` was killed", async || {
        !r2.is_alive(&two_rust)
    })
    .await;
    assert!(r1.is_alive(&one_rust), "r1's holder of `one` lives");
    let two_alive = eval(
        &mut ctl1,
        &a.name,
        &format!("is_process_alive({}).", erl_pid(&two_erl)),
    )
    .await;
    assert_eq!(
        as_atom(&two_alive),
        Some("true"),
        "a's holder of `two` lives"
    );
    // Every node agrees on the winners.
    for g in [&g1, &g2] {
        eventually("the Rust nodes agree", async || {
            g.whereis_name(&atom("one")) == Some(one_rust.clone())
                && g.whereis_name(&atom("two")) == Some(two_erl.clone())
        })
        .await;
    }
    for (ctl, erl) in [(&mut ctl1, &a.name), (&mut ctl2, &z.name)] {
        let one = eval(ctl, erl, "global:whereis_name(one).").await;
        let two = eval(ctl, erl, "global:whereis_name(two).").await;
        assert_eq!(
            (pid_of(&one), pid_of(&two)),
            (Some(one_rust.clone()), Some(two_erl.clone())),
            "on {erl}"
        );
    }
    assert_eq!(r1.connected_nodes().len(), 3, "no one was disconnected");
    r1.shutdown().await;
    r2.shutdown().await;
}

/// An expression that makes `pid` on its own node (`c:pid/3` needs the
/// node to be the local one; a remote pid goes through term_to_binary).
fn erl_pid(pid: &Pid) -> String {
    let bytes = {
        let mut buf = Vec::new();
        Term::from(eetf::Pid::from(pid))
            .encode(&mut buf)
            .expect("encodes");
        buf
    };
    format!(
        "binary_to_term(<<{}>>)",
        bytes
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(",")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_global_name_server_is_restarted_with_its_names_and_locks() {
    require_erl!();
    let (_epmd, node, mut ctl, erls) = cluster("grestart", 1).await;
    let a = erls[0].name.clone();
    let global = node.global().expect("global");
    assert_eq!(erl_sync(&mut ctl, &a).await, "ok");
    let (p, _mb) = node.spawn_mailbox(8);
    assert!(global.register_name(atom("kept"), &p).await);
    let old = node.whereis("global_name_server").expect("registered");
    let t = eval(&mut ctl, &a, &format!("exit({}, kill).", erl_pid(&old))).await;
    assert_eq!(as_atom(&t), Some("true"));
    eventually("global_name_server is restarted", async || {
        node.whereis("global_name_server")
            .is_some_and(|new| new != old)
    })
    .await;
    // The names stay, registration works both ways, sync returns.
    assert_eq!(global.whereis_name(&atom("kept")), Some(p.clone()));
    let theirs = pid_of(
        &eval(
            &mut ctl,
            &a,
            "P = spawn(fun() -> receive stop -> ok end end), yes = global:register_name(after_restart, P), P.",
        )
        .await,
    )
    .expect("pid");
    assert_eq!(global.whereis_name(&atom("after_restart")), Some(theirs));
    let (q, _mbq) = node.spawn_mailbox(8);
    assert!(global.register_name(atom("mine_after_restart"), &q).await);
    let seen = eval(&mut ctl, &a, "global:whereis_name(mine_after_restart).").await;
    assert_eq!(pid_of(&seen), Some(q));
    // The name of a holder that ends after the restart still goes (the new
    // incarnation monitors the holders again).
    node.exit_process(&p, atom("normal"));
    eventually("kept goes with its holder", async || {
        as_atom(&eval(&mut ctl, &a, "global:whereis_name(kept).").await) == Some("undefined")
    })
    .await;
    eventually("kept leaves the Rust node's table", async || {
        !global.registered_names().contains(&atom("kept"))
    })
    .await;
    assert_eq!(erl_sync(&mut ctl, &a).await, "ok");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_nodes_alone_sync_and_share_names_and_locks() {
    // No erl here: both ends of every exchange are Rust, so the Rust
    // locker must start the locking itself.
    let epmd = TestEpmd::start().await;
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(
            Node::start(rust_config(&unique("rgonly"), "c_gonly", epmd.port))
                .await
                .expect("node"),
        );
    }
    for other in &nodes[1..] {
        assert!(nodes[0].connect(other.name()).await);
    }
    let globals: Vec<_> = nodes.iter().map(|n| n.global().expect("global")).collect();
    for g in &globals {
        tokio::time::timeout(GUARD, g.sync())
            .await
            .expect("sync returns");
    }
    eventually("global meshes the three", async || {
        nodes.iter().all(|n| n.connected_nodes().len() == 2)
    })
    .await;
    let (p, _mb) = nodes[2].spawn_mailbox(8);
    assert!(globals[2].register_name(atom("only_rust"), &p).await);
    for g in &globals {
        assert_eq!(g.whereis_name(&atom("only_rust")), Some(p.clone()));
    }
    let lock = globals[0]
        .set_lock(atom("r"), atom("one"), None, Some(0))
        .await
        .expect("set");
    assert!(
        globals[1]
            .set_lock(atom("r"), atom("two"), None, Some(0))
            .await
            .is_none()
    );
    lock.release().await;
    let lock = globals[1]
        .set_lock(atom("r"), atom("two"), None, Some(0))
        .await
        .expect("free again");
    drop(lock);
    nodes[2].shutdown().await;
    eventually("the name goes with its node", async || {
        globals[0].whereis_name(&atom("only_rust")).is_none()
    })
    .await;
    for n in &nodes[..2] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_disconnect_the_nodes_exchange_again_and_sync() {
    require_erl!();
    let (_epmd, node, mut ctl, erls) = cluster("gdisc", 2).await;
    let global = node.global().expect("global");
    let (a, b) = (erls[0].name.clone(), erls[1].name.clone());
    for erl in [&a, &b] {
        assert_eq!(erl_sync(&mut ctl, erl).await, "ok");
    }
    let (mine, _mb) = node.spawn_mailbox(8);
    assert!(global.register_name(atom("rust_name"), &mine).await);
    let theirs = pid_of(
        &eval(
            &mut ctl,
            &a,
            "P = spawn(fun() -> receive stop -> ok end end), yes = global:register_name(erl_name, P), P.",
        )
        .await,
    )
    .expect("pid");
    // a drops the Rust node. With prevent_overlapping_partitions (on by
    // default in OTP 25, and on the Rust node) a tells b, and b asks the
    // Rust node to disconnect it too: the Rust node obeys, as an Erlang
    // node would; the Rust node tells b too, and b asks a to go.
    let t = eval(
        &mut ctl,
        &a,
        &format!("erlang:disconnect_node('{}').", node.name()),
    )
    .await;
    assert_eq!(as_atom(&t), Some("true"));
    eventually("a's names leave the Rust node with a", async || {
        global.whereis_name(&atom("erl_name")).is_none()
    })
    .await;
    // Connected again, every node exchanges again and syncs. A connection
    // made before b has acted on the reports is cut again (as between
    // Erlang nodes), so the Rust node connects until it holds.
    let theirs_seen = theirs.clone();
    eventually("the nodes reconnect, sync and see the names", async || {
        if !(node.connect(&a).await && node.connect(&b).await) {
            return false;
        }
        for erl in [&a, &b] {
            if erl_sync(&mut ctl, erl).await != "ok" {
                return false;
            }
            let seen = eval(&mut ctl, erl, "global:whereis_name(rust_name).").await;
            if pid_of(&seen) != Some(mine.clone()) {
                return false;
            }
        }
        global.whereis_name(&atom("erl_name")) == Some(theirs_seen.clone())
    })
    .await;
    tokio::time::timeout(GUARD, global.sync())
        .await
        .expect("sync");
    assert_eq!(global.whereis_name(&atom("erl_name")), Some(theirs));
    node.shutdown().await;
}
