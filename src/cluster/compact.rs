//! A compact form of the Erlang terms the replicated gproc table holds.
//!
//! Every node of a cluster keeps the whole global registry (gproc's
//! `ordered_set`, replicated by gproc_dist), so in a large cluster every
//! node holds millions of small terms. eetf's [`Term`] is made for decoding
//! and encoding: 56 bytes a node, and an owned `String` for every atom and
//! for the node name of every pid. Held as it is, each chat member cost
//! about 4.4 KiB of table on every node of the cluster.
//!
//! [`Compact`] keeps the same terms in 24-byte nodes: atoms and node names
//! are interned by an [`Atoms`] table (one `Arc<str>` per distinct name,
//! shared by every term that names it), tuples and lists are boxed slices,
//! pids are boxed, and the kinds flack and gproc rarely store (floats, big
//! integers, references, ports, funs, maps, improper lists, byte lists,
//! bit strings) keep their [`Term`] in a box. Conversion round-trips
//! exactly ([`Compact::to_term`]), and [`Compact`]'s order is Erlang's term
//! order as [`term_cmp`] defines it on the converted terms, so an ordered
//! map keyed by `Compact` iterates as the ETS `ordered_set` does.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::sync::Arc;

use eetf::Term;

use super::gproc::term_cmp;

/// An Erlang term held compactly (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compact {
    /// A small integer (`FixInteger`).
    Int(i32),
    /// An atom, interned.
    Atom(Arc<str>),
    /// A pid; its node name interned.
    Pid(Box<CompactPid>),
    /// A binary (whole bytes).
    Binary(Box<[u8]>),
    /// A tuple.
    Tuple(Box<[Compact]>),
    /// A proper list.
    List(Box<[Compact]>),
    /// Any other term, as eetf holds it.
    Other(Box<Term>),
}

/// A pid with an interned node name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactPid {
    node: Arc<str>,
    id: u32,
    serial: u32,
    creation: u32,
}

/// Interned atom and node names.
///
/// Names no stored term uses any more are dropped when the table has
/// doubled since the last sweep, so it stays within twice the names in use
/// however many distinct atoms peers send over time.
#[derive(Debug, Clone, Default)]
pub struct Atoms {
    names: HashSet<Arc<str>>,
    sweep_at: usize,
}

/// Fewest names before the first sweep.
const FIRST_SWEEP: usize = 1024;

impl Atoms {
    /// The shared copy of `name`.
    pub fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(found) = self.names.get(name) {
            return found.clone();
        }
        if self.names.len() >= self.sweep_at.max(FIRST_SWEEP) {
            // Only the table holds these: no stored term names them.
            self.names.retain(|n| Arc::strong_count(n) > 1);
            self.sweep_at = self.names.len() * 2;
        }
        let shared: Arc<str> = Arc::from(name);
        self.names.insert(shared.clone());
        shared
    }

    /// Number of names held.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no name is held.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

impl Compact {
    /// `term` to be stored: its names interned in `atoms`.
    pub fn store(term: &Term, atoms: &mut Atoms) -> Compact {
        Self::convert(term, &mut |name| atoms.intern(name))
    }

    /// `term` for a lookup: equal to the stored form, but nothing is added
    /// to the interned names (a lookup of an unknown key must not grow them).
    pub fn lookup(term: &Term) -> Compact {
        Self::convert(term, &mut |name: &str| Arc::from(name))
    }

    fn convert(term: &Term, name: &mut dyn FnMut(&str) -> Arc<str>) -> Compact {
        match term {
            Term::FixInteger(i) => Compact::Int(i.value),
            Term::Atom(a) => Compact::Atom(name(&a.name)),
            Term::Pid(p) => Compact::Pid(Box::new(CompactPid {
                node: name(&p.node.name),
                id: p.id,
                serial: p.serial,
                creation: p.creation,
            })),
            Term::Binary(b) => Compact::Binary(b.bytes.as_slice().into()),
            Term::Tuple(t) => {
                Compact::Tuple(t.elements.iter().map(|e| Self::convert(e, name)).collect())
            }
            Term::List(l) => {
                Compact::List(l.elements.iter().map(|e| Self::convert(e, name)).collect())
            }
            other => Compact::Other(Box::new(other.clone())),
        }
    }

    /// The term as eetf holds it.
    pub fn to_term(&self) -> Term {
        match self {
            Compact::Int(i) => Term::from(eetf::FixInteger::from(*i)),
            Compact::Atom(a) => Term::from(eetf::Atom::from(&**a)),
            Compact::Pid(p) => Term::from(eetf::Pid::new(&*p.node, p.id, p.serial, p.creation)),
            Compact::Binary(b) => Term::from(eetf::Binary::from(b.to_vec())),
            Compact::Tuple(items) => Term::from(eetf::Tuple::from(
                items.iter().map(Compact::to_term).collect::<Vec<_>>(),
            )),
            Compact::List(items) => Term::from(eetf::List::from(
                items.iter().map(Compact::to_term).collect::<Vec<_>>(),
            )),
            Compact::Other(term) => (**term).clone(),
        }
    }

    /// The elements of a tuple (empty for anything else).
    pub fn fields(&self) -> &[Compact] {
        match self {
            Compact::Tuple(items) => items,
            _ => &[],
        }
    }

    /// The node name of a pid.
    pub fn pid_node(&self) -> Option<&str> {
        match self {
            Compact::Pid(p) => Some(&p.node),
            _ => None,
        }
    }

    /// Rank in Erlang's term order, for the kinds held natively.
    fn native_rank(&self) -> Option<u8> {
        match self {
            Compact::Int(_) => Some(0),
            Compact::Atom(_) => Some(1),
            Compact::Pid(_) => Some(5),
            Compact::Tuple(_) => Some(6),
            Compact::List(_) => Some(8),
            Compact::Binary(_) => Some(9),
            Compact::Other(_) => None,
        }
    }
}

fn by_elements(xs: &[Compact], ys: &[Compact]) -> Ordering {
    xs.iter()
        .zip(ys)
        .map(|(x, y)| x.cmp(y))
        .find(|o| *o != Ordering::Equal)
        .unwrap_or(Ordering::Equal)
}

impl Ord for Compact {
    /// Erlang's term order, exactly as [`term_cmp`] orders the converted
    /// terms: the kinds held natively are compared here, anything else
    /// (and a native kind against a boxed one of the same rank, such as an
    /// integer against a float) through [`term_cmp`].
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.native_rank(), other.native_rank()) {
            (Some(a), Some(b)) if a != b => return a.cmp(&b),
            (Some(_), Some(_)) => {}
            _ => return term_cmp(&self.to_term(), &other.to_term()),
        }
        match (self, other) {
            (Compact::Int(a), Compact::Int(b)) => a.cmp(b),
            (Compact::Atom(a), Compact::Atom(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Compact::Pid(a), Compact::Pid(b)) => {
                (&*a.node, a.id, a.serial, a.creation).cmp(&(&*b.node, b.id, b.serial, b.creation))
            }
            (Compact::Binary(a), Compact::Binary(b)) => a.cmp(b),
            (Compact::Tuple(a), Compact::Tuple(b)) => {
                a.len().cmp(&b.len()).then_with(|| by_elements(a, b))
            }
            (Compact::List(a), Compact::List(b)) => {
                by_elements(a, b).then_with(|| a.len().cmp(&b.len()))
            }
            _ => term_cmp(&self.to_term(), &other.to_term()),
        }
    }
}

impl PartialOrd for Compact {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::term::{atom, list, tuple};
    use proptest::prelude::*;

    fn int(i: i32) -> Term {
        Term::from(eetf::FixInteger::from(i))
    }

    fn bin(b: &[u8]) -> Term {
        Term::from(eetf::Binary::from(b.to_vec()))
    }

    fn pid(node: &str, id: u32) -> Term {
        Term::from(eetf::Pid::new(node, id, 0, 3))
    }

    /// Terms of every kind the table may hold, nested.
    fn any_term() -> impl Strategy<Value = Term> {
        let leaf = prop_oneof![
            (-3i32..3).prop_map(int),
            prop::sample::select(vec!["a", "b", "n", "g", "flack_seq", ""]).prop_map(atom),
            (prop::sample::select(vec!["x@h", "y@h"]), 0u32..3).prop_map(|(n, i)| pid(n, i)),
            prop::collection::vec(0u8..3, 0..3).prop_map(|b| bin(&b)),
            (-2.0f64..2.0).prop_map(|f| Term::from(eetf::Float::try_from(f.round()).unwrap())),
            prop::collection::vec(1u8..3, 1..3).prop_map(|b| Term::from(eetf::ByteList::from(b))),
            (0u32..2).prop_map(|i| Term::from(eetf::Reference::from(("x@h", vec![i])))),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(tuple),
                prop::collection::vec(inner.clone(), 0..4).prop_map(list),
                (prop::collection::vec(inner.clone(), 1..3), inner)
                    .prop_map(|(e, last)| { Term::from(eetf::ImproperList::from((e, last))) }),
            ]
        })
    }

    proptest! {
        #[test]
        fn converts_back_exactly(term in any_term()) {
            let mut atoms = Atoms::default();
            prop_assert_eq!(Compact::store(&term, &mut atoms).to_term(), term.clone());
            prop_assert_eq!(Compact::lookup(&term).to_term(), term);
        }

        #[test]
        fn orders_as_erlang_orders_terms(a in any_term(), b in any_term()) {
            let mut atoms = Atoms::default();
            let (x, y) = (Compact::store(&a, &mut atoms), Compact::lookup(&b));
            prop_assert_eq!(x.cmp(&y), term_cmp(&a, &b));
            prop_assert_eq!(x == y, a == b);
        }
    }

    #[test]
    fn integers_sort_before_atoms_before_pids_before_tuples() {
        let terms = [
            tuple(vec![atom("a")]),
            pid("x@h", 1),
            atom("z"),
            int(7),
            list(vec![]),
            bin(b""),
        ];
        let mut sorted: Vec<Compact> = terms.iter().map(Compact::lookup).collect();
        sorted.sort();
        let kinds: Vec<u8> = sorted.iter().filter_map(Compact::native_rank).collect();
        assert_eq!(kinds, vec![0, 1, 5, 6, 8, 9]);
    }

    #[test]
    fn stored_terms_share_their_names() {
        let mut atoms = Atoms::default();
        let a = Compact::store(
            &tuple(vec![atom("n"), atom("g"), pid("x@h", 1)]),
            &mut atoms,
        );
        let b = Compact::store(
            &tuple(vec![atom("n"), atom("g"), pid("x@h", 2)]),
            &mut atoms,
        );
        assert_eq!(atoms.len(), 3);
        let (Compact::Atom(x), Compact::Atom(y)) = (&a.fields()[0], &b.fields()[0]) else {
            panic!("atoms expected");
        };
        assert!(Arc::ptr_eq(x, y));
    }

    #[test]
    fn names_no_term_uses_are_swept() {
        let mut atoms = Atoms::default();
        let kept = Compact::store(&atom("kept"), &mut atoms);
        for i in 0..10 * FIRST_SWEEP {
            drop(Compact::store(&atom(&format!("gone{i}")), &mut atoms));
        }
        assert!(atoms.len() <= 2 * FIRST_SWEEP, "{} names held", atoms.len());
        assert_eq!(Compact::store(&atom("kept"), &mut atoms), kept);
        assert!(matches!(kept, Compact::Atom(ref a) if Arc::strong_count(a) >= 2));
    }
}
