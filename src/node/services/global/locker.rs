//! global's locker (`the_locker` of global.erl): for every peer in a
//! node-up exchange it takes the lock `{global, [LockerA, LockerB]}` on
//! both clusters (first at the boss, the greatest node name, so that two
//! lockers never deadlock), tells the other locker, and holds the lock
//! until global_name_server says the exchange is over (`cancel`).
//!
//! It is a process of this node (its pid is what peers lock with and
//! monitor) whose mailbox receives the replies of its `multi_call`s and
//! the raw `{lock_set, Pid, false, Known}` a peer's locker sends to an
//! unknown partner; global_name_server's messages come over a channel.
//! The waits are global.erl's selective receives: a message that does not
//! fit the current wait stays queued, in order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use eetf::Term;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::calls::{Caller, GNS};
use super::server::{GlobalServer, LockerMsg};
use super::wire::{self, as_pid, gen_cast, locker_lock_id, the_boss};
use crate::node::Node;
use crate::node::mailbox::{Mailbox, Received};
use crate::node::pid::Pid;
use crate::node::term::{as_atom, as_tuple, atom, tuple};

/// What the locker tells global_name_server: `{lock_is_set, Node, MyTag,
/// LockId}`.
#[derive(Debug)]
pub struct LockIsSet {
    /// The peer.
    pub node: Arc<str>,
    /// Our tag of the exchange.
    pub tag: i64,
    /// The lock id.
    pub lock_id: Term,
}

/// A peer's locker to lock with (global's `#him{}`).
#[derive(Debug, Clone, PartialEq)]
struct Him {
    node: Arc<str>,
    locker: Pid,
    vsn: i64,
    my_tag: i64,
    his_tag: Term,
}

/// The locker's state (global's `#multi{}`).
pub struct Locker {
    node: Node,
    me: Pid,
    mailbox: Mailbox,
    rx: mpsc::Receiver<LockerMsg>,
    queue: VecDeque<LockerMsg>,
    state: Arc<Mutex<GlobalServer>>,
    to_server: mpsc::UnboundedSender<LockIsSet>,
    known: Vec<Arc<str>>,
    local: Vec<Him>,
    remote: Vec<Him>,
    just_synced: bool,
    stop: CancellationToken,
}

impl Locker {
    /// A locker for `node`, reading `rx` and its process's `mailbox`.
    pub fn new(
        node: Node,
        me: Pid,
        mailbox: Mailbox,
        rx: mpsc::Receiver<LockerMsg>,
        state: Arc<Mutex<GlobalServer>>,
        to_server: mpsc::UnboundedSender<LockIsSet>,
        stop: CancellationToken,
    ) -> Self {
        let known = state.lock().known_nodes();
        Self {
            node,
            me,
            mailbox,
            rx,
            queue: VecDeque::new(),
            state,
            to_server,
            known,
            local: Vec::new(),
            remote: Vec::new(),
            just_synced: false,
            stop,
        }
    }

    fn me_node(&self) -> Arc<str> {
        Arc::from(self.node.name())
    }

    /// Turns a term the locker's process received into a message for it
    /// (the raw `lock_set` of a peer's locker); the rest is dropped.
    fn from_term(msg: &Term) -> Option<LockerMsg> {
        match as_tuple(msg)? {
            [tag, pid, set, _known] if as_atom(tag) == Some("lock_set") => {
                Some(LockerMsg::LockSet {
                    from: as_pid(pid)?,
                    set: as_atom(set) == Some("true"),
                    tag: None,
                })
            }
            [tag, pid, set, _known, his] if as_atom(tag) == Some("lock_set") => {
                Some(LockerMsg::LockSet {
                    from: as_pid(pid)?,
                    set: as_atom(set) == Some("true"),
                    tag: Some(his.clone()),
                })
            }
            _ => None,
        }
    }

    /// The next message not yet looked at, waiting up to `timeout`
    /// (`None`: for ever). `None` on timeout; `Err` when the locker must
    /// stop.
    async fn next(&mut self, timeout: Option<Duration>) -> Result<Option<LockerMsg>, ()> {
        let sleep = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return Err(()),
                m = self.rx.recv() => return m.map(Some).ok_or(()),
                r = self.mailbox.recv() => match r {
                    Some(Received::Message(_, t)) => {
                        if let Some(m) = Self::from_term(&t) {
                            return Ok(Some(m));
                        }
                    }
                    _ => return Err(()),
                },
                _ = &mut sleep => return Ok(None),
            }
        }
    }

    /// A selective receive: the first queued or arriving message for which
    /// `pick` says `Take` or `Drop`; the others stay queued.
    async fn receive(&mut self, mut pick: impl FnMut(&LockerMsg) -> Pick) -> Result<LockerMsg, ()> {
        let mut i = 0;
        while i < self.queue.len() {
            match pick(&self.queue[i]) {
                Pick::Take => return self.queue.remove(i).ok_or(()),
                Pick::Drop => {
                    self.queue.remove(i);
                }
                Pick::Keep => i += 1,
            }
        }
        loop {
            let Some(m) = self.next(None).await? else {
                continue;
            };
            match pick(&m) {
                Pick::Take => return Ok(m),
                Pick::Drop => {}
                Pick::Keep if self.queue.len() >= super::LOCKER_QUEUE => {
                    tracing::warn!(
                        "global: the locker's queue is full; a message to it is dropped"
                    );
                }
                Pick::Keep => self.queue.push_back(m),
            }
        }
    }

    /// Moves what arrived during a call into the queue.
    fn absorb(&mut self, stash: Vec<Term>) {
        for t in stash {
            if let Some(m) = Self::from_term(&t) {
                self.queue.push_back(m);
            }
        }
    }

    /// Runs `f` with a [`Caller`] on the locker's process.
    async fn with_caller<T>(&mut self, f: impl AsyncFnOnce(&mut Caller<'_>) -> T) -> T {
        let state = self.state.clone();
        let mut caller = Caller::new(&self.node, &self.me, &mut self.mailbox, &state);
        let out = f(&mut caller).await;
        let stash = std::mem::take(&mut caller.stash);
        self.absorb(stash);
        out
    }

    /// `update_locker_known/1`: takes every queued `add_to_known` and
    /// `remove_from_known`.
    fn update_known(&mut self) {
        while let Ok(m) = self.rx.try_recv() {
            self.queue.push_back(m);
        }
        let mut rest = VecDeque::new();
        while let Some(m) = self.queue.pop_front() {
            match m {
                LockerMsg::AddToKnown(nodes) => self.add_known(nodes),
                LockerMsg::RemoveFromKnown(n) => self.known.retain(|k| k != &n),
                other => rest.push_back(other),
            }
        }
        self.queue = rest;
    }

    fn add_known(&mut self, nodes: Vec<Arc<str>>) {
        let mut known = nodes;
        known.append(&mut self.known);
        self.known = known;
    }

    fn boss(&self) -> Option<Arc<str>> {
        let mut all = self.known.clone();
        all.push(self.me_node());
        the_boss(&all)
    }

    /// Runs the locker until the service stops.
    pub async fn run(mut self) {
        let _ = self.run_loop().await;
    }

    async fn run_loop(&mut self) -> Result<(), ()> {
        loop {
            // `loop_the_locker/1`: a message at once, else wait as long as
            // global waits before trying a peer itself.
            let msg = match self.queue.pop_front() {
                Some(m) => Some(m),
                None => {
                    let timeout = if self.local.is_empty() && self.remote.is_empty() {
                        None
                    } else if self.just_synced {
                        Some(Duration::ZERO)
                    } else if self.known.is_empty() {
                        Some(Duration::from_millis(200))
                    } else {
                        Some(Duration::from_millis(
                            (1000 + 100 * self.known.len() as u64).min(3000),
                        ))
                    };
                    self.just_synced = false;
                    self.next(timeout).await?
                }
            };
            match msg {
                Some(m) => self.message(m).await?,
                None => {
                    if !self.state.lock().is_lock_set(&atom("global")) {
                        self.select_node().await?;
                    }
                }
            }
        }
    }

    /// `the_locker_message/2`.
    async fn message(&mut self, msg: LockerMsg) -> Result<(), ()> {
        match msg {
            LockerMsg::HisTheLocker {
                locker,
                vsn,
                his_tag,
                my_tag,
            } => {
                let him = Him {
                    node: locker.node.clone(),
                    locker,
                    vsn,
                    my_tag,
                    his_tag,
                };
                if is_same_host(&him.node, self.node.name()) {
                    self.local.insert(0, him);
                } else {
                    self.remote.insert(0, him);
                }
            }
            LockerMsg::Cancel { tag: None, .. } => {}
            LockerMsg::Cancel {
                node,
                tag: Some(tag),
                then: None,
            } => self.remove_node(&node, tag),
            // A cancel with a fun outside a wait: global logs it as
            // unexpected; the fun does not run.
            LockerMsg::Cancel { .. } => {}
            LockerMsg::LockSet { set: false, .. } => {}
            LockerMsg::LockSet {
                from,
                set: true,
                tag,
            } => {
                let found = self.find(&from.node).cloned();
                let tag_ok = match (&found, &tag) {
                    (Some(him), Some(t)) => wire::as_int(t) == Some(him.my_tag),
                    (Some(_), None) => true,
                    _ => false,
                };
                match found {
                    Some(him) if tag_ok => {
                        let lock_id = locker_lock_id(&self.me, &from);
                        let set = self.lock_nodes_safely(&lock_id, &[]).await;
                        self.send_lock_set(set, &from, him.vsn, &him.his_tag);
                        if set {
                            let mut known = vec![self.me_node()];
                            known.extend(self.known.iter().cloned());
                            let _ = self.to_server.send(LockIsSet {
                                node: him.node.clone(),
                                tag: him.my_tag,
                                lock_id: lock_id.clone(),
                            });
                            self.wait_cancel_lock(&him.node, &lock_id, him.my_tag, &known)
                                .await?;
                            self.just_synced = true;
                            self.remove_node(&him.node, him.my_tag);
                        } else {
                            self.just_synced = false;
                        }
                    }
                    _ => {
                        let known = self.known_term();
                        // `send_lock_set(S, false, Pid, 5, 0)`: straight to
                        // his locker.
                        self.node.send_from(
                            &self.me,
                            &from,
                            tuple(vec![
                                atom("lock_set"),
                                self.me.clone().into(),
                                atom("false"),
                                known,
                            ]),
                        );
                    }
                }
            }
            LockerMsg::AddToKnown(nodes) => self.add_known(nodes),
            LockerMsg::RemoveFromKnown(n) => self.known.retain(|k| k != &n),
        }
        Ok(())
    }

    fn known_term(&self) -> Term {
        wire::node_list(&self.known)
    }

    fn find(&self, node: &str) -> Option<&Him> {
        self.local
            .iter()
            .chain(self.remote.iter())
            .find(|h| &*h.node == node)
    }

    fn remove_node(&mut self, node: &str, tag: i64) {
        for list in [&mut self.local, &mut self.remote] {
            if let Some(i) = list
                .iter()
                .position(|h| &*h.node == node && h.my_tag == tag)
            {
                list.remove(i);
            }
        }
    }

    /// `send_lock_set/5`.
    fn send_lock_set(&self, set: bool, his_locker: &Pid, vsn: i64, his_tag: &Term) {
        let known = self.known_term();
        let flag = atom(if set { "true" } else { "false" });
        let msg = if vsn < 8 {
            tuple(vec![atom("lock_set"), self.me.clone().into(), flag, known])
        } else {
            tuple(vec![
                atom("lock_set"),
                self.me.clone().into(),
                flag,
                known,
                his_tag.clone(),
            ])
        };
        self.node
            .send_named(&his_locker.node, GNS, gen_cast(msg), Some(&self.me));
    }

    /// `select_node/1`: try to lock with one of the peers waiting.
    async fn select_node(&mut self) -> Result<(), ()> {
        let use_remote = self.local.is_empty();
        let known = self.known.clone();
        let list = if use_remote {
            &mut self.remote
        } else {
            &mut self.local
        };
        list.retain(|h| !known.contains(&h.node));
        if list.is_empty() {
            return Ok(());
        }
        let pick = rand::random_range(0..list.len());
        let him = list[pick].clone();
        let lock_id = locker_lock_id(&self.me, &him.locker);
        if !self
            .lock_nodes_safely(&lock_id, std::slice::from_ref(&him.node))
            .await
        {
            return Ok(());
        }
        let mut known1 = vec![self.me_node(), him.node.clone()];
        known1.extend(self.known.iter().cloned());
        self.send_lock_set(true, &him.locker, him.vsn, &him.his_tag);
        self.lock_is_set(&him, &known1, &lock_id).await
    }

    /// `lock_is_set/5`: wait for his answer, then for the end of the
    /// exchange.
    async fn lock_is_set(
        &mut self,
        him: &Him,
        known1: &[Arc<str>],
        lock_id: &Term,
    ) -> Result<(), ()> {
        let node = him.node.clone();
        let my_tag = him.my_tag;
        let msg = self
            .receive(|m| match m {
                LockerMsg::LockSet { from, tag, .. } if from.node == node => match tag {
                    None => Pick::Take,
                    Some(t) if wire::as_int(t) == Some(my_tag) => Pick::Take,
                    Some(_) => Pick::Drop,
                },
                LockerMsg::Cancel {
                    node: n,
                    tag: Some(t),
                    ..
                } if *n == node && *t == my_tag => Pick::Take,
                _ => Pick::Keep,
            })
            .await?;
        match msg {
            LockerMsg::LockSet { set: true, .. } => {
                let _ = self.to_server.send(LockIsSet {
                    node: node.clone(),
                    tag: my_tag,
                    lock_id: lock_id.clone(),
                });
                self.wait_cancel_lock(&node, lock_id, my_tag, known1)
                    .await?;
                self.just_synced = true;
                self.local.retain(|h| h != him);
                self.remote.retain(|h| h != him);
            }
            LockerMsg::Cancel { then, .. } => {
                self.run_fun(then);
                self.with_caller(async |c| c.delete_global_lock(lock_id, known1).await)
                    .await;
                self.remove_node(&node, my_tag);
            }
            _ => {
                self.with_caller(async |c| c.delete_global_lock(lock_id, known1).await)
                    .await;
            }
        }
        Ok(())
    }

    /// `wait_cancel_lock/6`: hold the lock until the exchange with `node`
    /// is over.
    async fn wait_cancel_lock(
        &mut self,
        node: &Arc<str>,
        lock_id: &Term,
        my_tag: i64,
        known: &[Arc<str>],
    ) -> Result<(), ()> {
        let msg = self
            .receive(|m| match m {
                LockerMsg::Cancel {
                    node: n,
                    tag: Some(t),
                    ..
                } if n == node && *t == my_tag => Pick::Take,
                _ => Pick::Keep,
            })
            .await?;
        if let LockerMsg::Cancel { then, .. } = msg {
            self.run_fun(then);
        }
        self.with_caller(async |c| c.delete_global_lock(lock_id, known).await)
            .await;
        Ok(())
    }

    /// The fun of a `cancel`: the `new_nodes` casts.
    fn run_fun(&self, then: Option<Vec<(Arc<str>, Term)>>) {
        for (node, msg) in then.unwrap_or_default() {
            self.node
                .send_named(&node, GNS, gen_cast(msg), Some(&self.me));
        }
    }

    /// `lock_nodes_safely/3`: the lock at the boss first, then here and at
    /// `extra`, then on every known node.
    async fn lock_nodes_safely(&mut self, lock_id: &Term, extra: &[Arc<str>]) -> bool {
        let me = self.me_node();
        let first: Vec<Arc<str>> = self
            .boss()
            .into_iter()
            .filter(|n| &**n != "nonode@nohost")
            .collect();
        if !(first == [me.clone()] || self.state.lock().can_set_lock(lock_id)) {
            return false;
        }
        if !self
            .with_caller(async |c| c.set_lock(lock_id, &first, Some(0)).await)
            .await
        {
            return false;
        }
        self.update_known();
        let mut second = vec![me.clone()];
        second.extend(extra.iter().cloned());
        second.retain(|n| !first.contains(n));
        if !self
            .with_caller(async |c| c.set_lock(lock_id, &second, Some(0)).await)
            .await
        {
            self.with_caller(async |c| c.del_lock(lock_id, &first).await)
                .await;
            return false;
        }
        let rest: Vec<Arc<str>> = self
            .known
            .iter()
            .filter(|n| !first.contains(n))
            .cloned()
            .collect();
        if !self
            .with_caller(async |c| c.set_lock(lock_id, &rest, Some(0)).await)
            .await
        {
            let mut so_far = first.clone();
            so_far.extend(second);
            self.with_caller(async |c| c.del_lock(lock_id, &so_far).await)
                .await;
            return false;
        }
        true
    }
}

/// What a selective receive does with a message.
enum Pick {
    Take,
    Drop,
    Keep,
}

/// `is_node_local/1`: the same host part (global prefers such peers).
fn is_same_host(node: &str, me: &str) -> bool {
    node.split_once('@').map(|(_, h)| h) == me.split_once('@').map(|(_, h)| h)
}
