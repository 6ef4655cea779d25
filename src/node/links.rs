//! Bookkeeping of links: a pure table, no I/O.
//!
//! A link is symmetric; the table keeps both directions for local pairs and
//! the local end for links across nodes. It also remembers unlinks this node
//! started toward a remote process until the peer's `UNLINK_ID_ACK` (the new
//! link protocol, mandatory from OTP 26): an exit signal that crosses the
//! unlink is dropped, as erts drops it.

use std::collections::{HashMap, HashSet};

use super::pid::Pid;

/// All links with at least one end on this node.
#[derive(Debug, Default)]
pub struct LinkTable {
    links: HashMap<Pid, HashSet<Pid>>,
    unlinking: HashMap<(Pid, Pid), u64>,
    next_unlink_id: u64,
}

impl LinkTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Links `a` and `b`. Returns false when they were already linked.
    pub fn add(&mut self, a: &Pid, b: &Pid) -> bool {
        let new = self.links.entry(a.clone()).or_default().insert(b.clone());
        self.links.entry(b.clone()).or_default().insert(a.clone());
        self.unlinking.remove(&(a.clone(), b.clone()));
        new
    }

    /// Unlinks `a` and `b`. Returns whether they were linked.
    pub fn remove(&mut self, a: &Pid, b: &Pid) -> bool {
        let mut was = false;
        for (x, y) in [(a, b), (b, a)] {
            if let Some(set) = self.links.get_mut(x) {
                was |= set.remove(y);
                if set.is_empty() {
                    self.links.remove(x);
                }
            }
        }
        was
    }

    /// Starts an unlink of local `local` from remote `remote`: removes the
    /// link and returns the id to send in `UNLINK_ID`.
    pub fn start_unlink(&mut self, local: &Pid, remote: &Pid) -> u64 {
        self.remove(local, remote);
        self.next_unlink_id += 1;
        let id = self.next_unlink_id;
        self.unlinking.insert((local.clone(), remote.clone()), id);
        id
    }

    /// The peer acknowledged unlink `id`.
    pub fn unlink_acked(&mut self, local: &Pid, remote: &Pid, id: u64) {
        if self.unlinking.get(&(local.clone(), remote.clone())) == Some(&id) {
            self.unlinking.remove(&(local.clone(), remote.clone()));
        }
    }

    /// Whether an exit signal from `remote` to `local` over a link counts:
    /// they are linked and no unlink is in flight.
    pub fn is_linked(&self, local: &Pid, remote: &Pid) -> bool {
        !self
            .unlinking
            .contains_key(&(local.clone(), remote.clone()))
            && self.links.get(local).is_some_and(|s| s.contains(remote))
    }

    /// Removes every link of `pid` (it ended) and returns its partners.
    pub fn take(&mut self, pid: &Pid) -> Vec<Pid> {
        let partners: Vec<Pid> = self.links.remove(pid).into_iter().flatten().collect();
        for p in &partners {
            if let Some(set) = self.links.get_mut(p) {
                set.remove(pid);
                if set.is_empty() {
                    self.links.remove(p);
                }
            }
        }
        self.unlinking.retain(|(a, b), _| a != pid && b != pid);
        let mut partners = partners;
        partners.sort();
        partners
    }

    /// Removes every link between a local process and a process of `node`
    /// (the connection dropped); returns `(local, remote)` pairs.
    pub fn take_node(&mut self, node: &str) -> Vec<(Pid, Pid)> {
        let remotes: Vec<Pid> = self
            .links
            .keys()
            .filter(|p| &*p.node == node)
            .cloned()
            .collect();
        let mut pairs = Vec::new();
        for remote in remotes {
            for local in self.take(&remote) {
                pairs.push((local, remote.clone()));
            }
        }
        self.unlinking.retain(|(_, b), _| &*b.node != node);
        pairs.sort();
        pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn pid(node: &str, id: u32) -> Pid {
        Pid::new(Arc::from(node), id, 0, 1)
    }

    #[test]
    fn links_are_symmetric_and_die_with_either_end() {
        let mut t = LinkTable::new();
        let (a, b, c) = (pid("me", 1), pid("me", 2), pid("far", 3));
        assert!(t.add(&a, &b));
        assert!(!t.add(&b, &a));
        t.add(&a, &c);
        assert_eq!(
            t.take(&a),
            vec![c.clone(), b.clone()]
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
        );
        assert!(!t.is_linked(&b, &a));
    }

    #[test]
    fn unlink_in_flight_masks_exits_and_node_loss_takes_pairs() {
        let mut t = LinkTable::new();
        let (a, c) = (pid("me", 1), pid("far", 3));
        t.add(&a, &c);
        assert!(t.is_linked(&a, &c));
        let id = t.start_unlink(&a, &c);
        assert!(!t.is_linked(&a, &c));
        t.unlink_acked(&a, &c, id);
        t.add(&a, &c);
        assert_eq!(t.take_node("far"), vec![(a.clone(), c.clone())]);
        assert!(!t.is_linked(&a, &c));
    }
}
