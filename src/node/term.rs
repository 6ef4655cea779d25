//! Small helpers for building and taking apart Erlang terms with `eetf`.

use eetf::{Atom, FixInteger, List, Term, Tuple};

/// An atom term.
pub fn atom(name: &str) -> Term {
    Term::from(Atom::from(name))
}

/// A tuple term.
pub fn tuple(elements: Vec<Term>) -> Term {
    Term::from(Tuple::from(elements))
}

/// A proper list term.
pub fn list(elements: Vec<Term>) -> Term {
    Term::from(List::from(elements))
}

/// A small integer term.
pub fn int(value: i32) -> Term {
    Term::from(FixInteger::from(value))
}

/// The atom's name, if `t` is an atom.
pub fn as_atom(t: &Term) -> Option<&str> {
    match t {
        Term::Atom(a) => Some(a.name.as_str()),
        _ => None,
    }
}

/// The elements, if `t` is a tuple.
pub fn as_tuple(t: &Term) -> Option<&[Term]> {
    match t {
        Term::Tuple(tu) => Some(&tu.elements),
        _ => None,
    }
}

/// The elements, if `t` is a proper list (`[]` included).
pub fn as_list(t: &Term) -> Option<&[Term]> {
    match t {
        Term::List(l) => Some(&l.elements),
        Term::ByteList(_) => None,
        _ => None,
    }
}

/// Whether `t` is the atom `normal`.
pub fn is_normal(t: &Term) -> bool {
    as_atom(t) == Some("normal")
}
