//! What an incoming control message does to the node: the dispatch from
//! `erl_dist`'s decoded [`Message`] to the node's signal semantics in
//! [`Core`]. Messages to pids of another incarnation or of no live process
//! vanish, as in Erlang; an operation we do not handle at all ends the
//! connection (the decoder already refuses unknown operation numbers).

use std::sync::Arc;

use eetf::Term;
use erl_dist::message::Message;
use erl_dist::term::PidOrAtom;

use super::connection::Outgoing;
use crate::node::core::Core;
use crate::node::pid::Pid;
use crate::node::process::ExitKind;
use crate::node::services;
use crate::node::term::atom;

fn proc_term(p: PidOrAtom) -> Term {
    match p {
        PidOrAtom::Pid(p) => Term::Pid(p),
        PidOrAtom::Atom(a) => Term::Atom(a),
    }
}

fn deliver(core: &Arc<Core>, from: Option<&Pid>, to: &eetf::Pid, msg: Term) {
    let to = Pid::from(to);
    if core.is_local_node(&to.node) {
        core.table.send(&to, from, msg);
    }
}

fn link_exit(core: &Arc<Core>, from: eetf::Pid, to: eetf::Pid, reason: Term) {
    let (from, to) = (Pid::from(&from), Pid::from(&to));
    let linked = core.links.lock().is_linked(&to, &from);
    if linked {
        core.links.lock().remove(&to, &from);
        core.signal_exit(&to, &from, &reason, ExitKind::Link);
    }
}

/// Applies one control message received from `peer`.
pub(crate) fn dispatch(
    core: &Arc<Core>,
    peer: &Arc<str>,
    negotiated: u64,
    msg: Message,
) -> Result<(), String> {
    let _ = negotiated;
    match msg {
        Message::Tick => {}
        Message::Send(m) => deliver(core, None, &m.to_pid, m.message),
        Message::SendTt(m) => deliver(core, None, &m.to_pid, m.message),
        Message::SendSender(m) => {
            deliver(core, Some(&Pid::from(&m.from_pid)), &m.to_pid, m.message)
        }
        Message::SendSenderTt(m) => {
            deliver(core, Some(&Pid::from(&m.from_pid)), &m.to_pid, m.message)
        }
        Message::RegSend(m) => {
            core.table
                .send_named(&m.to_name.name, Some(&Pid::from(&m.from_pid)), m.message);
        }
        Message::RegSendTt(m) => {
            core.table
                .send_named(&m.to_name.name, Some(&Pid::from(&m.from_pid)), m.message);
        }
        Message::AliasSend(m) => {
            let target = core.aliases.lock().get(&m.alias).cloned();
            if let Some(pid) = target {
                core.table
                    .send(&pid, Some(&Pid::from(&m.from_pid)), m.message);
            }
        }
        Message::AliasSendTt(m) => {
            let target = core.aliases.lock().get(&m.alias).cloned();
            if let Some(pid) = target {
                core.table
                    .send(&pid, Some(&Pid::from(&m.from_pid)), m.message);
            }
        }
        Message::Link(m) => {
            let (from, to) = (Pid::from(&m.from_pid), Pid::from(&m.to_pid));
            if core.table.is_alive(&to) {
                core.links.lock().add(&to, &from);
            } else {
                core.route(
                    peer,
                    Outgoing::Exit {
                        from: to,
                        to: from,
                        reason: atom("noproc"),
                    },
                );
            }
        }
        Message::Unlink(m) => {
            core.links
                .lock()
                .remove(&Pid::from(&m.to_pid), &Pid::from(&m.from_pid));
        }
        Message::UnlinkId(m) => {
            let (from, to) = (Pid::from(&m.from_pid), Pid::from(&m.to_pid));
            core.links.lock().remove(&to, &from);
            core.route(
                peer,
                Outgoing::UnlinkAck {
                    id: m.id,
                    from: to,
                    to: from,
                },
            );
        }
        Message::UnlinkIdAck(m) => {
            if let Term::FixInteger(i) = m.id {
                core.links.lock().unlink_acked(
                    &Pid::from(&m.to_pid),
                    &Pid::from(&m.from_pid),
                    i.value as u64,
                );
            }
        }
        Message::Exit(m) => link_exit(core, m.from_pid, m.to_pid, m.reason),
        Message::ExitTt(m) => link_exit(core, m.from_pid, m.to_pid, m.reason),
        Message::PayloadExit(m) => link_exit(core, m.from_pid, m.to_pid, m.reason),
        Message::PayloadExitTt(m) => link_exit(core, m.from_pid, m.to_pid, m.reason),
        Message::Exit2(m) => core.signal_exit(
            &Pid::from(&m.to_pid),
            &Pid::from(&m.from_pid),
            &m.reason,
            ExitKind::Exit2,
        ),
        Message::Exit2Tt(m) => core.signal_exit(
            &Pid::from(&m.to_pid),
            &Pid::from(&m.from_pid),
            &m.reason,
            ExitKind::Exit2,
        ),
        Message::PayloadExit2(m) => core.signal_exit(
            &Pid::from(&m.to_pid),
            &Pid::from(&m.from_pid),
            &m.reason,
            ExitKind::Exit2,
        ),
        Message::PayloadExit2Tt(m) => core.signal_exit(
            &Pid::from(&m.to_pid),
            &Pid::from(&m.from_pid),
            &m.reason,
            ExitKind::Exit2,
        ),
        Message::MonitorP(m) => {
            core.remote_monitor(Pid::from(&m.from_pid), &proc_term(m.to_proc), m.reference)
        }
        Message::DemonitorP(m) => {
            core.monitors.lock().remove(&m.reference);
        }
        Message::MonitorPExit(m) => core.remote_down(&m.reference, m.reason),
        Message::PayloadMonitorPExit(m) => core.remote_down(&m.reference, m.reason),
        Message::SpawnRequest(m) => services::spawn::request(
            core, peer, m.req_id, m.from_pid, m.mfa, m.opt_list, m.arg_list,
        ),
        Message::SpawnRequestTt(m) => services::spawn::request(
            core, peer, m.req_id, m.from_pid, m.mfa, m.opt_list, m.arg_list,
        ),
        Message::SpawnReply(_) | Message::SpawnReplyTt(_) => {
            tracing::debug!("{peer} sent a SPAWN_REPLY we never asked for; ignored");
        }
        Message::GroupLeader(_) | Message::NodeLink(_) => {}
    }
    Ok(())
}
