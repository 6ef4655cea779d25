//! The processes an OTP peer talks to on connect or by habit: `net_kernel`
//! (ping), `rex` (the old `rpc` server) and `erpc`'s spawn requests, plus
//! the mesh keeper that connects us to every node our peers know.
//!
//! Nothing a peer sends runs code here: calls are answered from a fixed
//! table ([`eval`]): `erlang:node/0`, `erlang:nodes/0,1`,
//! `erlang:whereis/1` (what an operator asks first about a service),
//! `global:resolve_it/4` (global's clash resolution runs it on the node of
//! the name's holder), `global:whereis_name/1`, `global:registered_names/0`,
//! and
//! an `undef` error for everything else, so an `rpc:call` returns at once.
//!
//! Each runs under the node's [`super::supervisor`]: when its process
//! ends (killed by a peer, or a panic), a new one is registered under its
//! name, within the restart limit [`Intensity::NODE_SERVICE`].
//!
//! [`global`] is OTP's `global` (`global_name_server` and its locker):
//! its own module, since it is a protocol of its own.

pub mod global;
pub mod mesh;
pub mod net_kernel;
pub mod rex;
pub mod spawn;

use eetf::Term;

use super::core::Core;
use super::supervisor::{ChildSpec, Intensity, Stateless, supervise};
use super::term::{as_atom, as_list, as_tuple, atom, list, tuple};

/// Supervises a node service registered as `name`: a stateless one, with
/// a mailbox of `capacity`, stopped with the node. A name already taken
/// (by the embedding code) leaves the service unstarted, with a warning.
pub(crate) fn start_service<F, Fut>(
    node: &crate::node::Node,
    name: &'static str,
    capacity: usize,
    run: F,
) where
    F: FnMut(crate::node::Node, crate::node::Pid, crate::node::Mailbox) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let spec = ChildSpec {
        name,
        mailbox: capacity,
        intensity: Intensity::NODE_SERVICE,
        shutdown: node.core().shutdown.clone(),
    };
    if let Err(error) = supervise(node, spec, Stateless(run)) {
        tracing::warn!(%error, "{name} not started");
    }
}

/// Starts a registered process that answers `gen_server` calls with
/// `answer(request)` until the node shuts down; other messages are dropped.
/// Its mailbox holds 1024 messages; while the queue toward a caller's node
/// has no room for answers it waits, and calls past the mailbox are shed.
/// It runs under the node's supervisor ([`start_service`]).
pub(crate) fn serve_calls(
    node: &crate::node::Node,
    name: &'static str,
    answer: impl Fn(&std::sync::Arc<Core>, &Term) -> Term + Send + Sync + 'static,
) {
    use crate::node::mailbox::Received;
    let answer = std::sync::Arc::new(answer);
    start_service(node, name, 1024, move |node, pid, mut mailbox| {
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
pub(crate) fn eval(
    core: &std::sync::Arc<Core>,
    m: &Term,
    f: &Term,
    args: &Term,
) -> Result<Term, Term> {
    let arity = as_list(args).map(<[Term]>::len);
    let visible = || {
        core.connected()
            .into_iter()
            .filter(|(_, v)| *v)
            .map(|(n, _)| atom(&n))
            .collect::<Vec<_>>()
    };
    if as_atom(m) == Some("global")
        && let (Some(f), Some(args)) = (as_atom(f), as_list(args))
        && let Some(answer) = global::eval(core, f, args)
    {
        return Ok(answer);
    }
    match (as_atom(m), as_atom(f), arity) {
        (Some("erlang"), Some("node"), Some(0)) => Ok(atom(&core.name)),
        (Some("erlang"), Some("nodes"), Some(0)) => Ok(list(visible())),
        (Some("erlang"), Some("whereis"), Some(1)) => {
            let name = as_list(args).and_then(|args| as_atom(&args[0]));
            match name {
                Some(name) => Ok(core
                    .table
                    .whereis(name)
                    .map(Term::from)
                    .unwrap_or_else(|| atom("undefined"))),
                None => Err(undef(m, f, args)),
            }
        }
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
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let second = node.whereis("fragile").expect("restarted");
        assert_ne!(first, second);
        assert!(!node.is_alive(&first));
        assert_eq!(call(&node, "fragile", atom("hi")).await, Some(atom("hi")));
        // Past the intensity within its period it stays down, and says so.
        for _ in 0..Intensity::NODE_SERVICE.max_restarts {
            call(&node, "fragile", atom("boom")).await;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(node.whereis("fragile"), None);
        assert_eq!(node.failed_services(), vec!["fragile".to_owned()]);
    }

    #[tokio::test]
    async fn a_killed_service_is_restarted_under_its_name_with_a_new_pid() {
        let node = Node::start(NodeConfig::local()).await.expect("starts");
        serve_calls(&node, "echo", |_, request| request.clone());
        let (killer, _mailbox) = node.spawn_mailbox(1);
        let mut pids = vec![node.whereis("echo").expect("registered")];
        for round in 1..=Intensity::NODE_SERVICE.max_restarts {
            node.exit(&killer, pids.last().expect("a pid"), atom("kill"));
            let mut next = None;
            for _ in 0..100 {
                next = node.whereis("echo").filter(|pid| !pids.contains(pid));
                if next.is_some() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            pids.push(next.unwrap_or_else(|| panic!("not restarted after kill {round}")));
            assert_eq!(call(&node, "echo", atom("hi")).await, Some(atom("hi")));
        }
        let status = node.services();
        assert_eq!(status.len(), 1);
        assert_eq!(
            status[0].restarts,
            Intensity::NODE_SERVICE.max_restarts as u64
        );
        assert_eq!(status[0].state, crate::node::supervisor::ServiceState::Up);
        // One more within the period is one too many.
        node.exit(&killer, pids.last().expect("a pid"), atom("kill"));
        let failed =
            tokio::time::timeout(std::time::Duration::from_secs(5), node.service_failure())
                .await
                .expect("reported");
        assert_eq!(failed, vec!["echo".to_owned()]);
        assert_eq!(node.whereis("echo"), None);
    }
}
