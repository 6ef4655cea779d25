//! `SPAWN_REQUEST`, which `erpc` (and so `rpc:call` on OTP 23+) sends. We
//! run no code: the "spawned" process gets a real pid, is linked and
//! monitored as requested, and ends at once. For `erpc:execute_call/4` its
//! exit reason carries the answer of [`super::eval`] in erpc's format
//! (`{Ref, return, Value}`, or `{Ref, error, undef, Stack}` which the caller
//! turns into `{badrpc, {'EXIT', {undef, ...}}}`); any other function ends
//! with `undef`.

use std::sync::Arc;

use eetf::{List, Term};
use erl_dist::term::Mfa;

use crate::node::core::Core;
use crate::node::dist::connection::Outgoing;
use crate::node::monitors::{Monitor, Ref, Watched};
use crate::node::pid::Pid;
use crate::node::process::{Delivery, Inbox};
use crate::node::term::{as_atom, atom, tuple};

struct Ephemeral;

impl Inbox for Ephemeral {
    fn deliver_term(&self, _from: Option<&Pid>, _message: Term) -> Delivery {
        Delivery::Accepted
    }
}

/// Handles a spawn request from `peer`.
pub(crate) fn request(
    core: &Arc<Core>,
    peer: &Arc<str>,
    req_id: Ref,
    from: eetf::Pid,
    mfa: Mfa,
    opts: List,
    args: List,
) {
    let from = Pid::from(&from);
    let mut link = false;
    let mut monitor = false;
    for o in &opts.elements {
        match as_atom(o) {
            Some("link") => link = true,
            Some("monitor") => monitor = true,
            _ => {}
        }
    }
    let pid = core.table.spawn(Arc::new(Ephemeral));
    let flags = i32::from(link) | (i32::from(monitor) << 1);
    core.route(
        peer,
        Outgoing::SpawnReply {
            req_id: req_id.clone(),
            to: from.clone(),
            flags,
            result: pid.clone().into(),
        },
    );
    if link {
        core.links.lock().add(&pid, &from);
    }
    if monitor {
        let m = Monitor {
            reference: req_id,
            watcher: from,
            watched: Watched::Pid(pid.clone()),
            local_target: Some(pid.clone()),
        };
        core.monitors.lock().add(&core.name, m);
    }
    let module = Term::from(mfa.module.clone());
    let function = Term::from(mfa.function.clone());
    let reason = match (
        mfa.module.name.as_str(),
        mfa.function.name.as_str(),
        args.elements.as_slice(),
    ) {
        ("erpc", "execute_call", [r, m, f, a]) => match super::eval(core, m, f, a) {
            Ok(v) => tuple(vec![r.clone(), atom("return"), v]),
            Err(reason) => {
                let stack = match &reason {
                    Term::Tuple(t) if t.elements.len() == 2 => t.elements[1].clone(),
                    _ => Term::from(List::nil()),
                };
                tuple(vec![r.clone(), atom("error"), atom("undef"), stack])
            }
        },
        ("erpc", "execute_cast", _) => atom("normal"),
        _ => super::undef(&module, &function, &Term::from(args)),
    };
    core.exit_process(&pid, reason);
}
