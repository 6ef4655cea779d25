//! Name clashes: global's resolver (`exchange_names/4`), which compares a
//! peer's names with ours once both sides hold the exchange lock, and
//! `global:resolve_it/4`, which runs a clash's resolver on the node of the
//! name's current holder (peers `rpc:call` it on us when one of our
//! processes holds a clashing name).
//!
//! Resolvers are Erlang funs. This node runs the three global exports,
//! `random_exit_name/3` (the default: the holder on the greater node is
//! killed), `random_notify_name/3` and `notify_all_name/3`; any other fun
//! cannot run here and resolves as one that crashed would (`{'EXIT', _}`:
//! global then unregisters the name on both sides).

use std::sync::Arc;
use std::time::Duration;

use eetf::Term;
use parking_lot::Mutex;

use super::server::GlobalServer;
use super::wire::{Op, as_pid};
use crate::node::Node;
use crate::node::core::Core;
use crate::node::dist::connection::Outgoing;
use crate::node::mailbox::Received;
use crate::node::pid::Pid;
use crate::node::process::ExitKind;
use crate::node::term::{as_atom, as_tuple, atom, list, tuple};

/// `exchange_names/4`: what to insert here (`ops`) and what the peer must
/// apply (`resolved`) after comparing his `names` with ours.
pub async fn exchange_names(
    node: &Node,
    state: &Mutex<GlobalServer>,
    peer: &str,
    names: Vec<(Term, Pid, Term)>,
) -> (Vec<Op>, Vec<Op>) {
    let mut ops = Vec::new();
    let mut resolved = Vec::new();
    for (name, pid, method) in names {
        let ours = state.lock().entry(&name).cloned();
        let insert_his = Op::Insert {
            name: name.clone(),
            pid: pid.clone(),
            method: method.clone(),
        };
        match ours {
            Some(ours) if ours.pid == pid => {}
            Some(ours) if node.name() < peer => {
                match resolve_at_holder(node, &ours.method, &name, &pid, &ours.pid).await {
                    Ok(winner) if as_pid(&winner).as_ref() == Some(&pid) => ops.push(insert_his),
                    Ok(winner) if as_pid(&winner).as_ref() == Some(&ours.pid) => {
                        resolved.push(Op::Insert {
                            name,
                            pid: ours.pid,
                            method: ours.method,
                        })
                    }
                    Ok(other) => {
                        if as_atom(&other) != Some("none") {
                            tracing::info!(
                                "global: resolve method for conflicting name {name} returned {other}"
                            );
                        }
                        ops.push(Op::Delete(name.clone()));
                        resolved.push(Op::Delete(name));
                    }
                    Err(badrpc) => {
                        tracing::info!(
                            "global: badrpc {badrpc} received when conflicting name {name} was found"
                        );
                        ops.push(insert_his);
                    }
                }
            }
            Some(_) => {}
            None => ops.push(insert_his),
        }
    }
    (ops, resolved)
}

/// `rpc:call(node(Pid2), global, resolve_it, [Method, Name, Pid, Pid2])`:
/// here when we hold `ours`, else through the holder node's `rex`.
async fn resolve_at_holder(
    node: &Node,
    method: &Term,
    name: &Term,
    his: &Pid,
    ours: &Pid,
) -> Result<Term, Term> {
    if *ours.node == *node.name() {
        return Ok(resolve_it(node.core(), method, name, his, ours));
    }
    let (me, mut mailbox) = node.spawn_mailbox(16);
    let holder = ours.node.clone();
    let monitor = node.monitor_name(&me, "rex", &holder);
    let tag = node.make_ref();
    let request = tuple(vec![
        atom("call"),
        atom("global"),
        atom("resolve_it"),
        list(vec![
            method.clone(),
            name.clone(),
            his.clone().into(),
            ours.clone().into(),
        ]),
        me.clone().into(),
    ]);
    let from = tuple(vec![me.clone().into(), Term::from(tag.clone())]);
    node.send_named(
        &holder,
        "rex",
        tuple(vec![atom("$gen_call"), from, request]),
        Some(&me),
    );
    let answer = mailbox
        .receive(Duration::from_secs(60), |r| match r {
            Received::Message(_, m) => match as_tuple(m) {
                Some([Term::Reference(t), reply]) if **t == tag => Some(Ok(reply.clone())),
                Some([down, Term::Reference(r), _, _, reason])
                    if as_atom(down) == Some("DOWN") && **r == monitor =>
                {
                    Some(Err(tuple(vec![atom("nodedown"), reason.clone()])))
                }
                _ => None,
            },
            _ => None,
        })
        .await
        .unwrap_or_else(|| Err(atom("timeout")));
    node.demonitor(&monitor);
    node.exit_process(&me, atom("normal"));
    match answer {
        Ok(reply) => match as_tuple(&reply) {
            Some([tag, reason]) if as_atom(tag) == Some("badrpc") => Err(reason.clone()),
            _ => Ok(reply),
        },
        Err(e) => Err(e),
    }
}

/// `global:resolve_it(Method, Name, Pid1, Pid2)` on this node: the
/// winner, `none`, or `{'EXIT', Reason}` for a resolver that cannot run.
pub(crate) fn resolve_it(
    core: &Arc<Core>,
    method: &Term,
    name: &Term,
    pid1: &Pid,
    pid2: &Pid,
) -> Term {
    let export = match method {
        Term::ExternalFun(f) if f.module.name == "global" && f.arity == 3 => {
            Some(f.function.name.as_str())
        }
        _ => None,
    };
    // minmax/2: by node name.
    let (min, max) = if pid1.node < pid2.node {
        (pid1, pid2)
    } else {
        (pid2, pid1)
    };
    let me = core.system_pid();
    match export {
        Some("random_exit_name") => {
            tracing::info!("global: Name conflict terminating {{{name}, {max}}}");
            kill(core, &me, max);
            min.clone().into()
        }
        Some("random_notify_name") => {
            core.send(
                Some(&me),
                max,
                tuple(vec![atom("global_name_conflict"), name.clone()]),
            );
            min.clone().into()
        }
        Some("notify_all_name") => {
            core.send(
                Some(&me),
                pid1,
                tuple(vec![
                    atom("global_name_conflict"),
                    name.clone(),
                    pid2.clone().into(),
                ]),
            );
            core.send(
                Some(&me),
                pid2,
                tuple(vec![
                    atom("global_name_conflict"),
                    name.clone(),
                    pid1.clone().into(),
                ]),
            );
            atom("none")
        }
        _ => tuple(vec![
            atom("EXIT"),
            tuple(vec![atom("badfun"), method.clone()]),
        ]),
    }
}

/// `exit(Pid, kill)`.
fn kill(core: &Arc<Core>, from: &Pid, pid: &Pid) {
    if core.is_local_node(&pid.node) {
        core.signal_exit(pid, from, &atom("kill"), ExitKind::Exit2);
    } else {
        core.route(
            &pid.node.clone(),
            Outgoing::Exit2 {
                from: from.clone(),
                to: pid.clone(),
                reason: atom("kill"),
            },
        );
    }
}
