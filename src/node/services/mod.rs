//! The processes an OTP peer talks to on connect or by habit: `net_kernel`
//! (ping), `rex` (the old `rpc` server) and `erpc`'s spawn requests, plus
//! the mesh keeper that connects us to every node our peers know.
//!
//! Nothing a peer sends runs code here: calls are answered from a fixed
//! table ([`eval`]): `erlang:node/0`, `erlang:nodes/0,1`, and an `undef`
//! error for everything else, so an `rpc:call` returns at once.
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

/// Starts a registered process that answers `gen_server` calls with
/// `answer(request)` until the node shuts down; other messages are dropped.
/// Its mailbox holds 1024 messages; while the queue toward a caller's node
/// has no room for answers it waits, and calls past the mailbox are shed.
/// This is all `net_kernel` and `rex` need to be for a peer.
pub(crate) fn serve_calls(
    node: &crate::node::Node,
    name: &'static str,
    answer: impl Fn(&Core, &Term) -> Term + Send + 'static,
) {
    use crate::node::mailbox::{Received, TermMailbox};
    let (inbox, mut mailbox) = TermMailbox::new(1024);
    let pid = node.spawn(inbox);
    if node.register_name(name, &pid).is_err() {
        return;
    }
    let core = node.core().clone();
    tokio::spawn(async move {
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
            // A flood of calls from one peer waits here, and the excess is
            // shed by the bounded mailbox, rather than its answers
            // overflowing the queue toward the peer (which would cut it off).
            if let Some([Term::Pid(caller), _]) = as_tuple(from)
                && caller.node.name != *core.name
            {
                core.room_for_answer(&caller.node.name).await;
            }
            core.reply(&pid, from, answer(&core, request));
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
