//! Bookkeeping of process monitors: a pure table, no I/O.
//!
//! Every monitor this node takes part in is here: a local process watching a
//! local or remote one (by pid or by registered name), and a remote process
//! watching one of ours. The node asks the table what to fire when a local
//! process ends ([`MonitorTable::take_target`]), when a local watcher ends
//! ([`MonitorTable::take_watcher`]), and when a connection drops
//! ([`MonitorTable::take_node`], or [`MonitorTable::detach_node`] and
//! [`MonitorTable::remove_many`] to do it in batches); sending the `'DOWN'`
//! messages and `MONITOR_P_EXIT` signals is the caller's job.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::pid::Pid;

/// A reference as a table key.
pub type Ref = eetf::Reference;

/// What a monitor watches, as the `'DOWN'` message names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Watched {
    /// By pid.
    Pid(Pid),
    /// By registered name on a node: `{Name, Node}`.
    Name {
        /// The registered name.
        name: String,
        /// The node it lives on.
        node: Arc<str>,
    },
}

impl Watched {
    /// The node the watched process lives on.
    pub fn node(&self) -> &Arc<str> {
        match self {
            Watched::Pid(p) => &p.node,
            Watched::Name { node, .. } => node,
        }
    }

    /// The term a `'DOWN'` message carries: the pid, or `{Name, Node}`.
    pub fn to_term(&self) -> eetf::Term {
        match self {
            Watched::Pid(p) => p.clone().into(),
            Watched::Name { name, node } => eetf::Term::from(eetf::Tuple::from(vec![
                eetf::Term::from(eetf::Atom::from(name.as_str())),
                eetf::Term::from(eetf::Atom::from(&**node)),
            ])),
        }
    }
}

/// One monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monitor {
    /// The monitor reference.
    pub reference: Ref,
    /// The watching process.
    pub watcher: Pid,
    /// What is watched.
    pub watched: Watched,
    /// The watched process's pid when it is local (a name resolved at
    /// monitor time); `None` for remote targets.
    pub local_target: Option<Pid>,
}

/// All monitors with at least one end on this node.
#[derive(Debug, Default)]
pub struct MonitorTable {
    by_ref: HashMap<Ref, Monitor>,
    by_target: HashMap<Pid, HashSet<Ref>>,
    by_watcher: HashMap<Pid, HashSet<Ref>>,
    by_node: HashMap<Arc<str>, HashSet<Ref>>,
}

impl MonitorTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a monitor. `local_node` is this node's name: the one end that is
    /// not on it is indexed by its node for connection loss.
    pub fn add(&mut self, local_node: &str, m: Monitor) {
        let r = m.reference.clone();
        if let Some(t) = &m.local_target {
            self.by_target
                .entry(t.clone())
                .or_default()
                .insert(r.clone());
        }
        if &*m.watcher.node == local_node {
            self.by_watcher
                .entry(m.watcher.clone())
                .or_default()
                .insert(r.clone());
        } else {
            self.by_node
                .entry(m.watcher.node.clone())
                .or_default()
                .insert(r.clone());
        }
        if m.local_target.is_none() && &**m.watched.node() != local_node {
            self.by_node
                .entry(m.watched.node().clone())
                .or_default()
                .insert(r.clone());
        }
        self.by_ref.insert(r, m);
    }

    /// Removes a monitor by reference (demonitor, or fired).
    pub fn remove(&mut self, r: &Ref) -> Option<Monitor> {
        let m = self.by_ref.remove(r)?;
        let unindex = |map: &mut HashMap<_, HashSet<Ref>>, key| {
            if let Some(set) = map.get_mut(key) {
                set.remove(r);
                if set.is_empty() {
                    map.remove(key);
                }
            }
        };
        if let Some(t) = &m.local_target {
            unindex(&mut self.by_target, t);
        }
        unindex(&mut self.by_watcher, &m.watcher);
        let watcher_node = m.watcher.node.clone();
        let target_node = m.watched.node().clone();
        if let Some(set) = self.by_node.get_mut(&watcher_node) {
            set.remove(r);
            if set.is_empty() {
                self.by_node.remove(&watcher_node);
            }
        }
        if let Some(set) = self.by_node.get_mut(&target_node) {
            set.remove(r);
            if set.is_empty() {
                self.by_node.remove(&target_node);
            }
        }
        Some(m)
    }

    fn take(&mut self, refs: Option<HashSet<Ref>>) -> Vec<Monitor> {
        let mut out: Vec<Monitor> = refs
            .into_iter()
            .flatten()
            .filter_map(|r| self.remove(&r))
            .collect();
        out.sort_by(|a, b| a.reference.id.cmp(&b.reference.id));
        out
    }

    /// Removes and returns the monitors watching the local process `pid`
    /// (it ended: each watcher gets a `'DOWN'`).
    pub fn take_target(&mut self, pid: &Pid) -> Vec<Monitor> {
        let refs = self.by_target.get(pid).cloned();
        self.take(refs)
    }

    /// Removes and returns the monitors the local process `pid` held (it
    /// ended: remote targets get a `DEMONITOR_P`).
    pub fn take_watcher(&mut self, pid: &Pid) -> Vec<Monitor> {
        let refs = self.by_watcher.get(pid).cloned();
        self.take(refs)
    }

    /// Removes and returns every monitor with an end on `node` (the
    /// connection dropped: local watchers get `noconnection`).
    pub fn take_node(&mut self, node: &str) -> Vec<Monitor> {
        let refs = self.by_node.get(node).cloned();
        self.take(refs)
    }

    /// Detaches the index of every monitor with an end on `node` and returns
    /// it, in constant time: the monitors stay in the table until removed
    /// with [`MonitorTable::remove_many`], a batch at a time, so that a peer
    /// with a million monitors is cleaned up without holding the table (or
    /// a runtime thread) for the whole of it.
    pub fn detach_node(&mut self, node: &str) -> HashSet<Ref> {
        self.by_node.remove(node).unwrap_or_default()
    }

    /// Removes the monitors of `refs` that are still held, returning them in
    /// reference order.
    pub fn remove_many(&mut self, refs: impl IntoIterator<Item = Ref>) -> Vec<Monitor> {
        let mut out: Vec<Monitor> = refs.into_iter().filter_map(|r| self.remove(&r)).collect();
        out.sort_by(|a, b| a.reference.id.cmp(&b.reference.id));
        out
    }

    /// Looks a monitor up.
    pub fn get(&self, r: &Ref) -> Option<&Monitor> {
        self.by_ref.get(r)
    }

    /// How many monitors are held.
    pub fn len(&self) -> usize {
        self.by_ref.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.by_ref.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(node: &str, id: u32) -> Pid {
        Pid::new(Arc::from(node), id, 0, 1)
    }
    fn r(n: u32) -> Ref {
        eetf::Reference {
            node: eetf::Atom::from("me@h"),
            id: vec![n, 0, 0],
            creation: 1,
        }
    }

    #[test]
    fn fires_by_target_watcher_and_node() {
        let mut t = MonitorTable::new();
        let (a, b) = (pid("me@h", 1), pid("me@h", 2));
        let remote = pid("far@h", 7);
        t.add(
            "me@h",
            Monitor {
                reference: r(1),
                watcher: a.clone(),
                watched: Watched::Pid(b.clone()),
                local_target: Some(b.clone()),
            },
        );
        t.add(
            "me@h",
            Monitor {
                reference: r(2),
                watcher: remote.clone(),
                watched: Watched::Pid(b.clone()),
                local_target: Some(b.clone()),
            },
        );
        t.add(
            "me@h",
            Monitor {
                reference: r(3),
                watcher: a.clone(),
                watched: Watched::Name {
                    name: "svc".into(),
                    node: Arc::from("far@h"),
                },
                local_target: None,
            },
        );
        assert_eq!(t.len(), 3);
        let down = t.take_node("far@h");
        assert_eq!(
            down.iter().map(|m| m.reference.id[0]).collect::<Vec<_>>(),
            vec![2, 3]
        );
        let fired = t.take_target(&b);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].watcher, a);
        assert!(t.is_empty());
        assert!(t.take_watcher(&a).is_empty());
    }

    #[test]
    fn a_node_is_detached_at_once_and_removed_in_batches() {
        let mut t = MonitorTable::new();
        let far = pid("far@h", 7);
        for n in 0..10 {
            t.add(
                "me@h",
                Monitor {
                    reference: r(n),
                    watcher: far.clone(),
                    watched: Watched::Pid(pid("me@h", 1)),
                    local_target: Some(pid("me@h", 1)),
                },
            );
        }
        let refs = t.detach_node("far@h");
        assert_eq!(refs.len(), 10);
        assert!(t.detach_node("far@h").is_empty(), "detached once");
        assert_eq!(t.len(), 10, "still held until removed");
        let mut refs = refs.into_iter();
        let first = t.remove_many(refs.by_ref().take(4));
        assert_eq!(first.len(), 4);
        assert_eq!(t.len(), 6);
        assert_eq!(t.remove_many(refs).len(), 6);
        assert!(t.is_empty());
        assert!(t.take_target(&pid("me@h", 1)).is_empty(), "unindexed");
    }

    #[test]
    fn demonitor_unindexes() {
        let mut t = MonitorTable::new();
        let (a, b) = (pid("me@h", 1), pid("far@h", 2));
        t.add(
            "me@h",
            Monitor {
                reference: r(1),
                watcher: a.clone(),
                watched: Watched::Pid(b),
                local_target: None,
            },
        );
        assert!(t.remove(&r(1)).is_some());
        assert!(t.take_node("far@h").is_empty());
        assert!(t.take_watcher(&a).is_empty());
        let name = Watched::Name {
            name: "n".into(),
            node: Arc::from("x@h"),
        }
        .to_term();
        assert!(matches!(name, eetf::Term::Tuple(t) if t.elements.len() == 2));
    }
}
