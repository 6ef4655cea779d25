//! The terms of OTP's `global` protocol (version 8, OTP 25-27), as pure
//! helpers: tags, the `{insert, {Name, Pid, Method}}` / `{delete, Name}`
//! operations of a node-up exchange, known-node lists, and Erlang's term
//! order where global depends on it (the order of pids in a locker's lock
//! id, the order of node names that decides which side resolves a clash).

use std::cmp::Ordering;
use std::sync::Arc;

use eetf::Term;

use crate::node::pid::Pid;
use crate::node::term::{as_atom, as_list, as_tuple, atom, list, tuple};

/// The protocol version this node speaks (`get_protocol_version`).
pub const PROTOCOL_VERSION: i64 = 8;

/// An integer term, small when it fits (as Erlang encodes it, so that a
/// tag sent and echoed back compares equal).
pub fn int(value: i64) -> Term {
    match i32::try_from(value) {
        Ok(v) => Term::from(eetf::FixInteger::from(v)),
        Err(_) => Term::from(eetf::BigInteger::from(value)),
    }
}

/// The value of an integer term that fits an `i64`.
pub fn as_int(t: &Term) -> Option<i64> {
    match t {
        Term::FixInteger(i) => Some(i64::from(i.value)),
        Term::BigInteger(b) => i64::try_from(&b.value).ok(),
        _ => None,
    }
}

/// The pid in `t`.
pub fn as_pid(t: &Term) -> Option<Pid> {
    match t {
        Term::Pid(p) => Some(Pid::from(p)),
        _ => None,
    }
}

/// Erlang's order of two pids (what `lists:sort/1` uses): serial, then
/// number, then node name, then creation. Checked against OTP 25's
/// `erts` with pids built by `binary_to_term/1`.
pub fn pid_order(a: &Pid, b: &Pid) -> Ordering {
    (a.serial, a.id, &*a.node, a.creation).cmp(&(b.serial, b.id, &*b.node, b.creation))
}

/// The lock a node-up exchange takes: `{global, lists:sort([Mine, His])}`
/// (global's `locker_lock_id/2`), the same term on both sides.
pub fn locker_lock_id(mine: &Pid, his: &Pid) -> Term {
    let (first, second) = if pid_order(mine, his) == Ordering::Greater {
        (his, mine)
    } else {
        (mine, his)
    };
    tuple(vec![
        atom("global"),
        list(vec![first.clone().into(), second.clone().into()]),
    ])
}

/// `the_boss/1`: the greatest node name of `nodes`, which every member of
/// a cluster agrees on, so that lockers take their locks there first.
pub fn the_boss<'a>(nodes: impl IntoIterator<Item = &'a Arc<str>>) -> Option<Arc<str>> {
    nodes.into_iter().max().cloned()
}

/// A list of node atoms.
pub fn node_list(nodes: &[Arc<str>]) -> Term {
    list(nodes.iter().map(|n| atom(n)).collect())
}

/// The nodes of a known list: atoms or `{Node, Vsn}` (global's
/// `node_list/1`).
pub fn parse_nodes(t: &Term) -> Vec<Arc<str>> {
    as_list(t)
        .unwrap_or(&[])
        .iter()
        .filter_map(|e| match e {
            Term::Atom(a) => Some(Arc::from(a.name.as_str())),
            Term::Tuple(_) => as_tuple(e)
                .and_then(|t| t.first())
                .and_then(as_atom)
                .map(Arc::from),
            _ => None,
        })
        .collect()
}

/// A known list as `{Node, Vsn}` pairs, with `None` for a plain atom (an
/// unknown version, which the receiver looks up itself).
pub fn parse_node_vsns(t: &Term) -> Vec<(Arc<str>, Option<i64>)> {
    as_list(t)
        .unwrap_or(&[])
        .iter()
        .filter_map(|e| match e {
            Term::Atom(a) => Some((Arc::from(a.name.as_str()), None)),
            _ => match as_tuple(e)? {
                [n, v] => Some((Arc::from(as_atom(n)?), as_int(v))),
                _ => None,
            },
        })
        .collect()
}

/// One operation of a name exchange.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `{insert, {Name, Pid, Method}}`.
    Insert {
        /// The global name.
        name: Term,
        /// Its holder.
        pid: Pid,
        /// The clash resolver (`fun global:random_exit_name/3`, ...).
        method: Term,
    },
    /// `{delete, Name}`.
    Delete(Term),
}

impl Op {
    /// The wire form.
    pub fn to_term(&self) -> Term {
        match self {
            Op::Insert { name, pid, method } => tuple(vec![
                atom("insert"),
                tuple(vec![name.clone(), pid.clone().into(), method.clone()]),
            ]),
            Op::Delete(name) => tuple(vec![atom("delete"), name.clone()]),
        }
    }

    /// Parses one operation; `None` for anything else.
    pub fn from_term(t: &Term) -> Option<Op> {
        match as_tuple(t)? {
            [tag, inner] if as_atom(tag) == Some("insert") => match as_tuple(inner)? {
                [name, pid, method] => Some(Op::Insert {
                    name: name.clone(),
                    pid: as_pid(pid)?,
                    method: method.clone(),
                }),
                _ => None,
            },
            [tag, name] if as_atom(tag) == Some("delete") => Some(Op::Delete(name.clone())),
            _ => None,
        }
    }
}

/// Parses a list of operations, skipping what is not one.
pub fn parse_ops(t: &Term) -> Vec<Op> {
    as_list(t)
        .unwrap_or(&[])
        .iter()
        .filter_map(Op::from_term)
        .collect()
}

/// A list of operations.
pub fn ops_term(ops: &[Op]) -> Term {
    list(ops.iter().map(Op::to_term).collect())
}

/// `{Name, Pid, Method}` triples of an `exchange` message.
pub fn parse_name_list(t: &Term) -> Vec<(Term, Pid, Term)> {
    as_list(t)
        .unwrap_or(&[])
        .iter()
        .filter_map(|e| match as_tuple(e)? {
            [name, pid, method] => Some((name.clone(), as_pid(pid)?, method.clone())),
            _ => None,
        })
        .collect()
}

/// `fun global:random_exit_name/3`, the resolver `register_name/2` uses.
pub fn random_exit_name() -> Term {
    Term::from(eetf::ExternalFun {
        module: eetf::Atom::from("global"),
        function: eetf::Atom::from("random_exit_name"),
        arity: 3,
    })
}

/// `{'$gen_cast', Msg}`.
pub fn gen_cast(msg: Term) -> Term {
    tuple(vec![atom("$gen_cast"), msg])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(node: &str, id: u32, serial: u32, creation: u32) -> Pid {
        Pid::new(Arc::from(node), id, serial, creation)
    }

    #[test]
    fn pids_sort_as_erts_sorts_them() {
        // The same comparisons, made by OTP 25 on pids from binary_to_term:
        // [A < B, C < A, D < A, E < C, E < D, D < C] = [false,true,false,true,true,false]
        let a = pid("a@h", 5, 0, 1);
        let b = pid("b@h", 3, 0, 1);
        let c = pid("a@h", 3, 0, 2);
        let d = pid("a@h", 3, 1, 1);
        let e = pid("a@h", 3, 0, 1);
        let lt = |x: &Pid, y: &Pid| pid_order(x, y) == Ordering::Less;
        assert_eq!(
            [
                lt(&a, &b),
                lt(&c, &a),
                lt(&d, &a),
                lt(&e, &c),
                lt(&e, &d),
                lt(&d, &c)
            ],
            [false, true, false, true, true, false]
        );
        assert!(lt(&pid("a@h", 3, 0, 5), &pid("b@h", 3, 0, 1)));
    }

    #[test]
    fn both_sides_compute_the_same_locker_lock_id() {
        let mine = pid("r@h", 120, 0, 9);
        let his = pid("e@h", 80, 0, 3);
        assert_eq!(locker_lock_id(&mine, &his), locker_lock_id(&his, &mine));
        let Some([_, l]) = as_tuple(&locker_lock_id(&mine, &his))
            .map(<[Term]>::to_vec)
            .as_deref()
            .map(|s| [s[0].clone(), s[1].clone()])
        else {
            panic!("a pair")
        };
        assert_eq!(as_list(&l).map(|l| l[0].clone()), Some(his.into()));
    }

    #[test]
    fn ops_and_tags_round_trip() {
        let ops = vec![
            Op::Insert {
                name: atom("n"),
                pid: pid("a@h", 1, 0, 1),
                method: random_exit_name(),
            },
            Op::Delete(atom("m")),
        ];
        assert_eq!(parse_ops(&ops_term(&ops)), ops);
        assert_eq!(
            as_int(&int(-576_460_752_303_423_000)),
            Some(-576_460_752_303_423_000)
        );
        assert!(matches!(int(7), Term::FixInteger(_)));
        assert_eq!(
            parse_node_vsns(&list(vec![atom("a@h"), tuple(vec![atom("b@h"), int(8)])])),
            vec![(Arc::from("a@h"), None), (Arc::from("b@h"), Some(8))]
        );
    }
}
