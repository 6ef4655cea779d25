//! The client side of global's locks, as global.erl runs them in the
//! calling process: `gen_server:multi_call/3` to `global_name_server` on a
//! list of nodes (a monitor per node, so a node that goes away counts as a
//! bad node instead of blocking), `set_lock/3` with its retries and random
//! back-off, `del_lock/2`, and `trans_all_known/1`, the lock on every known
//! node that name registration takes.
//!
//! The caller is a process of this node: its pid becomes the lock holder
//! that every `global_name_server` monitors, so a lock dies with it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use eetf::Term;
use parking_lot::Mutex;

use super::server::GlobalServer;
use super::wire::the_boss;
use crate::node::Node;
use crate::node::mailbox::{Mailbox, Received};
use crate::node::pid::Pid;
use crate::node::term::{as_atom, as_tuple, atom, tuple};

/// The registered name of global's server.
pub const GNS: &str = "global_name_server";

/// A process of this node making global calls: its pid, its mailbox, and
/// where messages that are not replies go (the locker keeps `lock_set`s
/// that arrive while it waits).
pub struct Caller<'a> {
    /// The node.
    pub node: &'a Node,
    /// The calling process (the lock holder).
    pub pid: &'a Pid,
    /// Its mailbox, read for the replies.
    pub mailbox: &'a mut Mailbox,
    /// Messages that arrived during a call and are not its replies.
    pub stash: Vec<Term>,
    /// This node's global state (for `local_lock_check` and `get_known`).
    pub state: &'a Mutex<GlobalServer>,
}

impl<'a> Caller<'a> {
    /// A caller for `pid`, reading replies from its `mailbox`.
    pub fn new(
        node: &'a Node,
        pid: &'a Pid,
        mailbox: &'a mut Mailbox,
        state: &'a Mutex<GlobalServer>,
    ) -> Self {
        Self {
            node,
            pid,
            mailbox,
            stash: Vec::new(),
            state,
        }
    }
}

impl Caller<'_> {
    /// `gen_server:multi_call(Nodes, global_name_server, Request)`: the
    /// replies, and the nodes that did not answer (their server is not
    /// there, or the connection went down).
    pub async fn multi_call(
        &mut self,
        nodes: &[Arc<str>],
        request: &Term,
    ) -> (Vec<(Arc<str>, Term)>, Vec<Arc<str>>) {
        let tag = self.node.make_ref();
        let mut waiting: HashMap<Arc<str>, eetf::Reference> = HashMap::new();
        for n in nodes {
            if waiting.contains_key(n) {
                continue;
            }
            let monitor = self.node.monitor_name(self.pid, GNS, n);
            waiting.insert(n.clone(), monitor);
            let from = tuple(vec![
                self.pid.clone().into(),
                tuple(vec![Term::from(tag.clone()), atom(n)]),
            ]);
            let call = tuple(vec![atom("$gen_call"), from, request.clone()]);
            self.node.send_named(n, GNS, call, Some(self.pid));
        }
        let mut replies = Vec::new();
        let mut bad = Vec::new();
        while !waiting.is_empty() {
            let Some(Received::Message(_, msg)) = self.mailbox.recv().await else {
                // The caller ended: nobody is left to answer to.
                bad.extend(waiting.into_keys());
                break;
            };
            match as_tuple(&msg) {
                Some([reply_tag, reply]) => match as_tuple(reply_tag) {
                    Some([Term::Reference(t), n]) if **t == tag => {
                        if let Some(n) = as_atom(n)
                            && let Some(monitor) = waiting.remove(n)
                        {
                            self.node.demonitor(&monitor);
                            replies.push((Arc::from(n), reply.clone()));
                        }
                    }
                    _ => self.stash.push(msg),
                },
                Some([down, Term::Reference(r), _, _, _]) if as_atom(down) == Some("DOWN") => {
                    let gone = waiting
                        .iter()
                        .find(|(_, m)| **m == **r)
                        .map(|(n, _)| n.clone());
                    match gone {
                        Some(n) => {
                            waiting.remove(&n);
                            bad.push(n);
                        }
                        None => self.stash.push(msg),
                    }
                }
                _ => self.stash.push(msg),
            }
        }
        (replies, bad)
    }

    /// `set_lock_on_nodes/2`.
    pub async fn set_lock_on_nodes(&mut self, id: &Term, nodes: &[Arc<str>]) -> bool {
        if nodes.is_empty() {
            return true;
        }
        let me = self.node.name();
        if nodes.len() > 1
            && nodes.iter().any(|n| &**n == me)
            && !self.state.lock().can_set_lock(id)
        {
            return false;
        }
        let (replies, _) = self
            .multi_call(nodes, &tuple(vec![atom("set_lock"), id.clone()]))
            .await;
        let refused = replies.iter().any(|(_, r)| as_atom(r) != Some("true"));
        if !refused {
            return true;
        }
        if replies.len() > 1 {
            let granted: Vec<Arc<str>> = replies
                .iter()
                .filter(|(_, r)| as_atom(r) == Some("true"))
                .map(|(n, _)| n.clone())
                .collect();
            self.del_lock(id, &granted).await;
        }
        false
    }

    /// `global:set_lock(Id, Nodes, Retries)`; `None` retries is `infinity`.
    pub async fn set_lock(&mut self, id: &Term, nodes: &[Arc<str>], retries: Option<u32>) -> bool {
        let mut retries = retries;
        let mut times = 1;
        loop {
            if self.set_lock_on_nodes(id, nodes).await {
                return true;
            }
            match retries {
                Some(0) => return false,
                Some(n) => retries = Some(n - 1),
                None => {}
            }
            random_sleep(times).await;
            times += 1;
        }
    }

    /// `global:del_lock(Id, Nodes)`.
    pub async fn del_lock(&mut self, id: &Term, nodes: &[Arc<str>]) {
        if !nodes.is_empty() {
            self.multi_call(nodes, &tuple(vec![atom("del_lock"), id.clone()]))
                .await;
        }
    }

    /// `delete_global_lock/2`: everywhere but the boss, then the boss.
    pub async fn delete_global_lock(&mut self, id: &Term, nodes: &[Arc<str>]) {
        let boss = the_boss(nodes);
        let others: Vec<Arc<str>> = nodes
            .iter()
            .filter(|n| Some(*n) != boss.as_ref())
            .cloned()
            .collect();
        self.del_lock(id, &others).await;
        if let Some(boss) = boss {
            self.del_lock(id, &[boss]).await;
        }
    }

    /// `set_lock_known/2`: the lock `{global, Me}` on this node and every
    /// node global knows, taken at the boss first; returns those nodes.
    pub async fn set_lock_known(&mut self, id: &Term) -> Vec<Arc<str>> {
        let mut times = 0;
        loop {
            let known = self.state.lock().known_nodes();
            let mut nodes = vec![Arc::<str>::from(self.node.name())];
            nodes.extend(known.iter().cloned());
            let boss = the_boss(&nodes).into_iter().collect::<Vec<_>>();
            if self.set_lock_on_nodes(id, &boss).await {
                if self.set_lock_on_nodes(id, &nodes).await
                    && self
                        .state
                        .lock()
                        .known_nodes()
                        .iter()
                        .all(|n| known.contains(n))
                {
                    return nodes;
                }
                self.del_lock(id, &boss).await;
            }
            random_sleep(times).await;
            times += 1;
        }
    }
}

/// `random_sleep/1`: up to 125 ms after the first failure, doubling to
/// 8 s after the fifth.
pub async fn random_sleep(times: u32) {
    let max_ms: u64 = if times > 5 {
        8000
    } else {
        (1u64 << times) * 1000 / 8
    };
    let ms = rand::random_range(1..=max_ms.max(1));
    tokio::time::sleep(Duration::from_millis(ms)).await;
}
