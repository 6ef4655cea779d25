//! The processes an OTP peer talks to on connect or by habit: `net_kernel`
//! (ping), `rex` (the old `rpc` server) and `erpc`'s spawn requests, plus
//! the mesh keeper that connects us to every node our peers know.
//!
//! Nothing a peer sends runs code here: calls are answered from a fixed
//! table ([`eval`]): `erlang:node/0`, `erlang:nodes/0,1`, and an `undef`
//! error for everything else, so an `rpc:call` returns at once.
//!
//! Each runs under [`supervise`]: a panic restarts it under its name.
//!
//! `global` is not among them on purpose: see the README's "Erlang
//! distribution" section. `global_name_server` is not registered, so
//! global's `init_connect` is dropped and the node stays unknown to global.

pub mod mesh;
pub mod net_kernel;
pub mod rex;
pub mod spawn;

use eetf::Term;

use super::core::Core;
use super::term::{as_atom, as_list, as_tuple, atom, list, tuple};

/// How many restarts a service may need within [`RESTART_PERIOD`] before
/// its supervisor gives up on it (an OTP supervisor's intensity).
pub const MAX_RESTARTS: usize = 5;

/// See [`MAX_RESTARTS`].
pub const RESTART_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs a registered service process under a supervisor: `run(node, pid,
/// mailbox)` serves until the node shuts down. When it panics (a bug hit
/// by some peer's input), the process ends with `killed`, as its monitors
/// and links see it, and a fresh one is started and registered under the
/// same name after 100 ms, as a `one_for_one` supervisor with intensity
/// [`MAX_RESTARTS`] in [`RESTART_PERIOD`] would; past that the service
/// stays down and an error says so. The first process is registered before
/// this returns.
pub(crate) fn supervise<F, Fut>(
    node: &crate::node::Node,
    name: &'static str,
    capacity: usize,
    run: F,
) where
    F: Fn(crate::node::Node, crate::node::Pid, crate::node::Mailbox) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use crate::node::mailbox::TermMailbox;
    let start = move |node: &crate::node::Node| {
        let (inbox, mailbox) = TermMailbox::new(capacity);
        let pid = node.spawn(inbox);
        if node.register_name(name, &pid).is_err() {
            node.exit_process(&pid, atom("normal"));
            return None;
        }
        Some((pid, mailbox))
    };
    let Some(mut current) = start(node) else {
        return;
    };
    let node = node.clone();
    tokio::spawn(async move {
        let mut restarts = std::collections::VecDeque::new();
        loop {
            let (pid, mailbox) = current;
            let outcome = tokio::spawn(run(node.clone(), pid.clone(), mailbox)).await;
            let Err(e) = outcome else {
                node.exit_process(&pid, atom("normal"));
                return;
            };
            node.exit_process(&pid, atom("killed"));
            if !e.is_panic() || node.core().shutdown.is_cancelled() {
                return;
            }
            let now = tokio::time::Instant::now();
            restarts.retain(|at| now.duration_since(*at) < RESTART_PERIOD);
            if restarts.len() >= MAX_RESTARTS {
                tracing::error!(
                    "{name} crashed {MAX_RESTARTS} times within {RESTART_PERIOD:?}; it stays down"
                );
                return;
            }
            restarts.push_back(now);
            tracing::error!("{name} crashed; restarting it");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            match start(&node) {
                Some(next) => current = next,
                None => return,
            }
        }
    });
}

/// Starts a registered process that answers `gen_server` calls with
/// `answer(request)` until the node shuts down; other messages are dropped.
/// Its mailbox holds 1024 messages; while the queue toward a caller's node
/// has no room for answers it waits, and calls past the mailbox are shed.
/// It runs under [`supervise`].
pub(crate) fn serve_calls(
    node: &crate::node::Node,
    name: &'static str,
    answer: impl Fn(&Core, &Term) -> Term + Send + Sync + 'static,
) {
    use crate::node::mailbox::Received;
    let answer = std::sync::Arc::new(answer);
    supervise(node, name, 1024, move |node, pid, mut mailbox| {
        let answer = answer.clone();
        async move {
            let core = node.core().clone();
            let shutdown = core.shutdown.clone();
            loop {
                let received = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = mailbox.recv() => r,
                };
                let Some(Received::Message(_, msg)) = received else {
                    return;
                };
                let Some((from, request)) = gen_call(&msg) else {
                    continue;
                };
                // A flood of calls from one peer waits here, and the excess
                // is shed by the bounded mailbox, rather than its answers
                // overflowing the queue toward the peer (which would cut it
                // off).
                if let Some([Term::Pid(caller), _]) = as_tuple(from)
                    && caller.node.name != *core.name
                {
                    core.room_for_answer(&caller.node.name).await;
                }
                core.reply(&pid, from, answer(&core, request));
            }
        }
    });
}

/// Splits `{'$gen_call', From, Request}`.
pub fn gen_call(msg: &Term) -> Option<(&Term, &Term)> {
    match as_tuple(msg)? {
        [tag, from, request] if as_atom(tag) == Some("$gen_call") => Some((from, request)),
        _ => None,
    }
}

/// The answer to `apply(M, F, Args)` on this node: `Ok(value)` for the
/// functions we serve, `Err(reason)` (an `undef` error) for the rest.
pub(crate) fn eval(core: &Core, m: &Term, f: &Term, args: &Term) -> Result<Term, Term> {
    let arity = as_list(args).map(<[Term]>::len);
    let visible = || {
        core.connected()
            .into_iter()
            .filter(|(_, v)| *v)
            .map(|(n, _)| atom(&n))
            .collect::<Vec<_>>()
    };
    match (as_atom(m), as_atom(f), arity) {
        (Some("erlang"), Some("node"), Some(0)) => Ok(atom(&core.name)),
        (Some("erlang"), Some("nodes"), Some(0)) => Ok(list(visible())),
        (Some("erlang"), Some("nodes"), Some(1)) => {
            let arg = &as_list(args).unwrap_or(&[])[0];
            let kinds: Vec<&str> = match arg {
                Term::Atom(a) => vec![a.name.as_str()],
                Term::List(l) => l.elements.iter().filter_map(as_atom).collect(),
                _ => vec![],
            };
            let mut out = Vec::new();
            for kind in kinds {
                match kind {
                    "this" => out.push(atom(&core.name)),
                    "visible" => out.extend(visible()),
                    "hidden" => out.extend(
                        core.connected()
                            .into_iter()
                            .filter(|(_, v)| !*v)
                            .map(|(n, _)| atom(&n)),
                    ),
                    "connected" | "known" => {
                        out.extend(core.connected().into_iter().map(|(n, _)| atom(&n)))
                    }
                    _ => return Err(undef(m, f, args)),
                }
            }
            Ok(list(out))
        }
        _ => Err(undef(m, f, args)),
    }
}

/// `{undef, [{M, F, Args, []}]}`, the reason `apply/3` fails with for a
/// function that does not exist.
pub fn undef(m: &Term, f: &Term, args: &Term) -> Term {
    tuple(vec![
        atom("undef"),
        list(vec![tuple(vec![
            m.clone(),
            f.clone(),
            args.clone(),
            list(vec![]),
        ])]),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{Node, NodeConfig, Received};

    async fn call(node: &Node, name: &str, request: Term) -> Option<Term> {
        let (me, mut mb) = node.spawn_mailbox(4);
        let r = node.make_ref();
        let from = tuple(vec![me.clone().into(), Term::from(r.clone())]);
        node.send_named(
            node.name(),
            name,
            tuple(vec![atom("$gen_call"), from, request]),
            Some(&me),
        );
        mb.receive(std::time::Duration::from_millis(500), |got| match got {
            Received::Message(_, m) => match as_tuple(m) {
                Some([Term::Reference(x), answer]) if **x == r => Some(answer.clone()),
                _ => None,
            },
            _ => None,
        })
        .await
    }

    #[tokio::test]
    async fn a_service_that_panics_is_restarted_within_its_intensity() {
        let node = Node::start(NodeConfig::local()).await.expect("starts");
        serve_calls(&node, "fragile", |_, request| {
            if as_atom(request) == Some("boom") {
                panic!("a bug hit by a peer's request");
            }
            request.clone()
        });
        let first = node.whereis("fragile").expect("registered at once");
        assert_eq!(call(&node, "fragile", atom("hi")).await, Some(atom("hi")));
        assert_eq!(call(&node, "fragile", atom("boom")).await, None);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let second = node.whereis("fragile").expect("restarted");
        assert_ne!(first, second);
        assert!(!node.is_alive(&first));
        assert_eq!(call(&node, "fragile", atom("hi")).await, Some(atom("hi")));
        // Past MAX_RESTARTS within RESTART_PERIOD it stays down.
        for _ in 0..MAX_RESTARTS {
            call(&node, "fragile", atom("boom")).await;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        assert_eq!(node.whereis("fragile"), None);
    }
}
