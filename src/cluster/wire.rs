//! gen_leader's election messages as Erlang terms, both ways.
//!
//! Decoding is total: a term that is not one of the catalogue's shapes is
//! `None` (the caller logs and drops it), so a malformed message from a
//! peer can never crash the candidate or be half-understood.

use std::sync::Arc;

use eetf::Term;

use super::election::{Beat, Elid, Message, NodeName};
use crate::node::Pid;
use crate::node::term::{as_atom, as_list, as_tuple, atom, list, tuple};

fn integer(term: &Term) -> Option<i64> {
    match term {
        Term::FixInteger(value) => Some(i64::from(value.value)),
        Term::BigInteger(value) => i64::try_from(&value.value).ok(),
        _ => None,
    }
}

fn int_term(value: i64) -> Term {
    match i32::try_from(value) {
        Ok(small) => Term::from(eetf::FixInteger::from(small)),
        Err(_) => Term::from(eetf::BigInteger::from(value)),
    }
}

fn pid(term: &Term) -> Option<Pid> {
    match term {
        Term::Pid(pid) => Some(Pid::from(pid)),
        _ => None,
    }
}

fn node_name(term: &Term) -> Option<NodeName> {
    as_atom(term).map(Arc::from)
}

fn node_list(term: &Term) -> Option<Vec<NodeName>> {
    as_list(term)?.iter().map(node_name).collect()
}

/// `{Pos, Incarnation, NextEl}`.
pub fn decode_elid(term: &Term) -> Option<Elid> {
    match as_tuple(term)? {
        [pos, incarnation, round] => Some(Elid {
            pos: integer(pos)?,
            incarnation: integer(incarnation)?,
            round: integer(round)?,
        }),
        _ => None,
    }
}

/// The term of an election id.
pub fn encode_elid(elid: Elid) -> Term {
    tuple(vec![
        int_term(elid.pos),
        int_term(elid.incarnation),
        int_term(elid.round),
    ])
}

/// Reads an election message; `None` for anything else.
pub fn decode(term: &Term) -> Option<Message> {
    let fields = as_tuple(term)?;
    let tag = as_atom(fields.first()?)?;
    let message = match (tag, &fields[1..]) {
        ("join", [from]) => Message::Join(pid(from)?),
        ("hasLeader", [leader, elid, from]) => Message::HasLeader {
            leader: pid(leader)?,
            elid: decode_elid(elid)?,
            from: pid(from)?,
        },
        ("isLeader", [elid, from]) => Message::IsLeader {
            elid: decode_elid(elid)?,
            from: pid(from)?,
        },
        ("notLeader", [elid, from]) => Message::NotLeader {
            elid: decode_elid(elid)?,
            from: pid(from)?,
        },
        ("heartbeat", [beat]) => Message::Heartbeat(match beat {
            Term::Pid(_) => Beat::Pid(pid(beat)?),
            _ => Beat::Node(node_name(beat)?),
        }),
        ("halt", [elid, from]) => Message::Halt {
            elid: decode_elid(elid)?,
            from: pid(from)?,
        },
        ("ackLeader", [elid, from]) => Message::AckLeader {
            elid: decode_elid(elid)?,
            from: pid(from)?,
        },
        ("ldr", [synch, elid, workers, candidates, from]) => Message::Ldr {
            synch: synch.clone(),
            elid: decode_elid(elid)?,
            workers: node_list(workers)?,
            candidates: node_list(candidates)?,
            from: pid(from)?,
        },
        ("normQ", [elid, from]) => Message::NormQ {
            elid: decode_elid(elid)?,
            from: pid(from)?,
        },
        ("notNorm", [elid, from]) => Message::NotNorm {
            elid: decode_elid(elid)?,
            from: pid(from)?,
        },
        ("checklead", [node]) => Message::Checklead(node_name(node)?),
        ("election", []) => Message::Election,
        ("update_candidates", [elid, candidates, from]) => Message::UpdateCandidates {
            elid: decode_elid(elid)?,
            candidates: node_list(candidates)?,
            from: pid(from)?,
        },
        _ => return None,
    };
    Some(message)
}

fn nodes(names: &[NodeName]) -> Term {
    list(names.iter().map(|name| atom(name)).collect())
}

/// The term of an election message.
pub fn encode(message: &Message) -> Term {
    let p = |pid: &Pid| Term::from(pid.clone());
    match message {
        Message::Join(from) => tuple(vec![atom("join"), p(from)]),
        Message::HasLeader { leader, elid, from } => tuple(vec![
            atom("hasLeader"),
            p(leader),
            encode_elid(*elid),
            p(from),
        ]),
        Message::IsLeader { elid, from } => {
            tuple(vec![atom("isLeader"), encode_elid(*elid), p(from)])
        }
        Message::NotLeader { elid, from } => {
            tuple(vec![atom("notLeader"), encode_elid(*elid), p(from)])
        }
        Message::Heartbeat(Beat::Node(node)) => tuple(vec![atom("heartbeat"), atom(node)]),
        Message::Heartbeat(Beat::Pid(pid)) => tuple(vec![atom("heartbeat"), p(pid)]),
        Message::Halt { elid, from } => tuple(vec![atom("halt"), encode_elid(*elid), p(from)]),
        Message::AckLeader { elid, from } => {
            tuple(vec![atom("ackLeader"), encode_elid(*elid), p(from)])
        }
        Message::Ldr {
            synch,
            elid,
            workers,
            candidates,
            from,
        } => tuple(vec![
            atom("ldr"),
            synch.clone(),
            encode_elid(*elid),
            nodes(workers),
            nodes(candidates),
            p(from),
        ]),
        Message::NormQ { elid, from } => tuple(vec![atom("normQ"), encode_elid(*elid), p(from)]),
        Message::NotNorm { elid, from } => {
            tuple(vec![atom("notNorm"), encode_elid(*elid), p(from)])
        }
        Message::Checklead(node) => tuple(vec![atom("checklead"), atom(node)]),
        Message::Election => tuple(vec![atom("election")]),
        Message::UpdateCandidates {
            elid,
            candidates,
            from,
        } => tuple(vec![
            atom("update_candidates"),
            encode_elid(*elid),
            nodes(candidates),
            p(from),
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_pid(node: &str) -> Pid {
        Pid::new(Arc::from(node), 93, 0, 1_764_300_000)
    }

    #[test]
    fn every_message_round_trips() {
        let elid = Elid {
            pos: 2,
            incarnation: 0,
            round: 1,
        };
        let a = sample_pid("flack1@vm");
        let b = sample_pid("flack2@vm");
        let candidates: Vec<NodeName> = vec![Arc::from("flack1@vm"), Arc::from("flack2@vm")];
        let messages = vec![
            Message::Join(a.clone()),
            Message::HasLeader {
                leader: a.clone(),
                elid,
                from: b.clone(),
            },
            Message::IsLeader {
                elid,
                from: a.clone(),
            },
            Message::NotLeader {
                elid,
                from: a.clone(),
            },
            Message::Heartbeat(Beat::Node(Arc::from("flack3@vm"))),
            Message::Heartbeat(Beat::Pid(b.clone())),
            Message::Halt {
                elid,
                from: a.clone(),
            },
            Message::AckLeader {
                elid,
                from: a.clone(),
            },
            Message::Ldr {
                synch: tuple(vec![atom("globals"), list(vec![])]),
                elid,
                workers: vec![],
                candidates: candidates.clone(),
                from: a.clone(),
            },
            Message::NormQ {
                elid,
                from: a.clone(),
            },
            Message::NotNorm {
                elid,
                from: a.clone(),
            },
            Message::Checklead(Arc::from("flack2@vm")),
            Message::Election,
            Message::UpdateCandidates {
                elid,
                candidates,
                from: b,
            },
        ];
        for message in messages {
            let term = encode(&message);
            let mut bytes = Vec::new();
            term.encode(&mut bytes).expect("encodes");
            let back = Term::decode(bytes.as_slice()).expect("decodes");
            assert_eq!(decode(&back), Some(message));
        }
    }

    #[test]
    fn malformed_messages_are_not_understood() {
        for term in [
            atom("join"),
            tuple(vec![atom("join"), atom("not_a_pid")]),
            tuple(vec![
                atom("halt"),
                tuple(vec![int_term(1)]),
                Term::from(sample_pid("a@b")),
            ]),
            tuple(vec![atom("workerAlive"), atom("x"), atom("y")]),
        ] {
            assert_eq!(decode(&term), None, "{term}");
        }
    }
}
