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
use flack::node::term::{as_atom, as_list, as_tuple, atom, tuple};
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
    let (mine, _mailbox) = node.spawn_mailbox(8);
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
