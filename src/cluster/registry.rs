//! The global registry flack keeps in gproc, as a pure data structure.
//!
//! The original stores two kinds of global gproc entries, and so do we:
//! - a unique name `{n,g,Pid}` per authenticated connection, carrying the
//!   attributes `[{username, U}, {user_id, Id}]`;
//! - a property `{p,g,Chat}` per chat membership, one per member pid.
//!
//! On a single node this table is the leader's table; in a cluster it is the
//! mirror every node keeps of the leader's. Either way it answers the same
//! questions (who is in this chat, what is this pid's name) and applies the
//! same changes, so the code paths never fork when the cluster arrives.
//!
//! Each chat also carries its event sequence: the registry is the one place
//! that sees every membership change of a chat in order, so it is where the
//! sequence is assigned. Members are kept in the order they registered, and
//! every member carries a route (`R`) telling the owner how to reach it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::node::Pid;

/// The attributes of a `{n,g,Pid}` user registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAttrs {
    /// `username` attribute.
    pub user_name: Arc<str>,
    /// `user_id` attribute.
    pub user_id: Arc<str>,
}

/// What `ensure_reg` of a user name did (gproc's reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// The name was new: gproc replies `new`.
    New,
    /// The name existed for this pid and its attributes were updated: `updated`.
    Updated,
}

/// Why a registry change was refused (gproc replies `badarg`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The pid already holds `{p,g,Chat}`.
    #[error("{pid} is already a member of {chat}")]
    AlreadyMember {
        /// The chat.
        chat: Arc<str>,
        /// The member.
        pid: Pid,
    },
    /// The pid does not hold `{p,g,Chat}`.
    #[error("{pid} is not a member of {chat}")]
    NotMember {
        /// The chat.
        chat: Arc<str>,
        /// The pid.
        pid: Pid,
    },
}

/// A member of a chat and how to reach it.
#[derive(Debug, Clone)]
pub struct Member<R> {
    /// The member's pid (a websocket session on some node).
    pub pid: Pid,
    /// How the owner of the registry delivers to this member.
    pub route: R,
}

/// One chat: its members in registration order and its event sequence.
#[derive(Debug)]
pub struct Chat<R> {
    name: Arc<str>,
    members: Vec<Member<R>>,
    sequence: u64,
    /// Each member's registration stamp: who registered before whom, and
    /// whether a pid is a member, without a scan of the member list.
    stamps: HashMap<Pid, u64>,
    next_stamp: u64,
}

impl<R> Chat<R> {
    /// The chat's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Members in registration order.
    pub fn members(&self) -> &[Member<R>] {
        &self.members
    }

    /// The sequence number of the chat's latest event (0 before any).
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Takes the next sequence number for an event of this chat.
    pub fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    /// Whether `pid` is a member.
    pub fn contains(&self, pid: &Pid) -> bool {
        self.stamps.contains_key(pid)
    }

    fn new(name: Arc<str>) -> Self {
        Self {
            name,
            members: Vec::new(),
            sequence: 0,
            stamps: HashMap::new(),
            next_stamp: 0,
        }
    }

    fn push(&mut self, member: Member<R>) {
        self.stamps.insert(member.pid.clone(), self.next_stamp);
        self.next_stamp += 1;
        self.members.push(member);
    }

    fn remove(&mut self, pid: &Pid) -> bool {
        if self.stamps.remove(pid).is_none() {
            return false;
        }
        self.members.retain(|member| &member.pid != pid);
        true
    }
}

/// The result of a join: everything the joiner and the members need, taken
/// atomically with the registration.
#[derive(Debug)]
pub struct Joined<'a, R> {
    /// Members registered before the joiner, with their attributes: the
    /// joiner's `chat_state`.
    pub before: Vec<(Pid, UserAttrs)>,
    /// The chat after the join (the joiner is its last member).
    pub chat: &'a mut Chat<R>,
}

/// The flack subset of gproc's global table.
#[derive(Debug)]
pub struct Registry<R> {
    users: HashMap<Pid, UserAttrs>,
    /// Reverse index of `users`: the pids registered with each user_id.
    user_pids: HashMap<Arc<str>, Vec<Pid>>,
    chats: HashMap<Arc<str>, Chat<R>>,
    /// Reverse index: the chats each pid is in, to purge a pid that ends.
    memberships: HashMap<Pid, Vec<Arc<str>>>,
}

impl<R> Default for Registry<R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R> Registry<R> {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            users: HashMap::new(),
            user_pids: HashMap::new(),
            chats: HashMap::new(),
            memberships: HashMap::new(),
        }
    }

    /// `gproc:ensure_reg({n,g,Pid}, undefined, [{username,U},{user_id,Id}])`.
    pub fn ensure_user(&mut self, pid: Pid, attrs: UserAttrs) -> Registered {
        let user_id = attrs.user_id.clone();
        let registered = match self.users.insert(pid.clone(), attrs) {
            Some(previous) => {
                self.forget_user_pid(&previous.user_id, &pid);
                Registered::Updated
            }
            None => Registered::New,
        };
        self.user_pids.entry(user_id).or_default().push(pid);
        registered
    }

    /// Removes one `pid` of `user_id` from the reverse index.
    fn forget_user_pid(&mut self, user_id: &Arc<str>, pid: &Pid) {
        if let Some(pids) = self.user_pids.get_mut(user_id) {
            if let Some(at) = pids.iter().position(|other| other == pid) {
                pids.swap_remove(at);
            }
            if pids.is_empty() {
                self.user_pids.remove(user_id);
            }
        }
    }

    /// Whether some pid registered with `user_id` joined `chat` before
    /// `member` did (so `member`'s chat_state listed it).
    pub fn registered_before(&self, chat: &str, user_id: &str, member: &Pid) -> bool {
        let Some(entry) = self.chats.get(chat) else {
            return false;
        };
        let Some(mine) = entry.stamps.get(member) else {
            return false;
        };
        self.user_pids.get(user_id).is_some_and(|pids| {
            pids.iter()
                .any(|pid| entry.stamps.get(pid).is_some_and(|stamp| stamp < mine))
        })
    }

    /// `gproc:get_attributes({n,g,Pid}, Pid)`.
    pub fn user(&self, pid: &Pid) -> Option<&UserAttrs> {
        self.users.get(pid)
    }

    /// `gproc:reg({p,g,Chat})` for `pid`, answered with the members that were
    /// there before it. Registering first and reading the members in the same
    /// step is what makes simultaneous joiners each learn every other exactly
    /// once (the original read the members before registering).
    pub fn join(&mut self, chat: &str, pid: Pid, route: R) -> Result<Joined<'_, R>, RegistryError> {
        let (name, chat) = match self.chats.get_key_value(chat) {
            Some((name, _)) => {
                let name = name.clone();
                let entry = self.chats.get_mut(&name).expect("key was just found");
                (name, entry)
            }
            None => {
                let name: Arc<str> = Arc::from(chat);
                let entry = self
                    .chats
                    .entry(name.clone())
                    .or_insert_with(|| Chat::new(name.clone()));
                (name, entry)
            }
        };
        if chat.contains(&pid) {
            return Err(RegistryError::AlreadyMember { chat: name, pid });
        }
        let before = chat
            .members
            .iter()
            .filter_map(|member| {
                self.users
                    .get(&member.pid)
                    .map(|attrs| (member.pid.clone(), attrs.clone()))
            })
            .collect();
        self.memberships.entry(pid.clone()).or_default().push(name);
        chat.push(Member { pid, route });
        Ok(Joined { before, chat })
    }

    /// `gproc:unreg({p,g,Chat})` for `pid`. Returns the chat, the leaver
    /// already removed, so its remaining members can be told. An emptied
    /// chat stays until [`Registry::drop_if_empty`]: its sequence must
    /// outlive the event that announces the departure.
    pub fn leave(&mut self, chat: &str, pid: &Pid) -> Result<&mut Chat<R>, RegistryError> {
        let not_member = || RegistryError::NotMember {
            chat: Arc::from(chat),
            pid: pid.clone(),
        };
        let entry = self.chats.get_mut(chat).ok_or_else(not_member)?;
        if !entry.remove(pid) {
            return Err(not_member());
        }
        if let Some(chats) = self.memberships.get_mut(pid) {
            chats.retain(|name| &**name != chat);
            if chats.is_empty() {
                self.memberships.remove(pid);
            }
        }
        Ok(entry)
    }

    /// Forgets a chat that has no members left.
    pub fn drop_if_empty(&mut self, chat: &str) {
        if self
            .chats
            .get(chat)
            .is_some_and(|entry| entry.members.is_empty())
        {
            self.chats.remove(chat);
        }
    }

    /// A chat, if it has ever had a member since it was last dropped.
    pub fn chat(&self, chat: &str) -> Option<&Chat<R>> {
        self.chats.get(chat)
    }

    /// A chat, mutably (to take a sequence number and deliver under the
    /// caller's lock).
    pub fn chat_mut(&mut self, chat: &str) -> Option<&mut Chat<R>> {
        self.chats.get_mut(chat)
    }

    /// The chats `pid` is a member of.
    pub fn chats_of(&self, pid: &Pid) -> &[Arc<str>] {
        self.memberships
            .get(pid)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Removes every registration of a pid that ended (gproc's
    /// `pid_is_DOWN`): its user name and its memberships. Returns its
    /// attributes and the chats it was still in.
    pub fn remove_process(&mut self, pid: &Pid) -> (Option<UserAttrs>, Vec<Arc<str>>) {
        let attrs = self.users.remove(pid);
        if let Some(attrs) = &attrs {
            self.forget_user_pid(&attrs.user_id, pid);
        }
        let chats = self.memberships.remove(pid).unwrap_or_default();
        for chat in &chats {
            if let Some(entry) = self.chats.get_mut(chat) {
                entry.remove(pid);
            }
        }
        (attrs, chats)
    }

    /// Number of registered users (`{n,g,Pid}` entries).
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Number of chats with at least one member.
    pub fn chat_count(&self) -> usize {
        self.chats
            .values()
            .filter(|chat| !chat.members.is_empty())
            .count()
    }

    /// Number of memberships (`{p,g,Chat}` entries).
    pub fn membership_count(&self) -> usize {
        self.memberships.values().map(Vec::len).sum()
    }
}

/// Remote members whose registration vanished while they were in chats
/// (their node died, was cut off, or a merge dropped them for a while), so
/// this node told its members they left. When a merged registry brings one
/// back into a chat, its members here are told it joined again; until
/// then, the nodes of a chat's lost members are where its events may still
/// have to go (see [`LostMembers::nodes_of`]).
///
/// Bounded: an entry is forgotten when it is back in all its chats, when
/// its node registered everything it still has ([`LostMembers::forget_node`]),
/// after `memory` (a node that never comes back), or, the oldest first,
/// past `capacity` entries. Each of these costs O(1) per entry: a node
/// with 17,000 users dying must not cost a scan of all entries per user.
#[derive(Debug)]
pub struct LostMembers<T> {
    by_pid: HashMap<Pid, LostMember<T>>,
    /// When each entry was (last) lost, oldest first. An entry whose time
    /// no longer matches `by_pid` is stale and skipped.
    order: VecDeque<(T, Pid)>,
    /// Per chat, the nodes of its lost members, with how many there.
    nodes: HashMap<Arc<str>, HashMap<Arc<str>, usize>>,
    memory: std::time::Duration,
    capacity: usize,
}

/// One lost member: its attributes, the chats it was lost from, and when.
#[derive(Debug)]
struct LostMember<T> {
    attrs: UserAttrs,
    chats: Vec<Arc<str>>,
    at: T,
}

impl<T> LostMembers<T>
where
    T: Copy + Ord + std::ops::Sub<Output = std::time::Duration>,
{
    /// Remembers lost members for `memory`, at most `capacity` of them.
    pub fn new(memory: std::time::Duration, capacity: usize) -> Self {
        Self {
            by_pid: HashMap::new(),
            order: VecDeque::new(),
            nodes: HashMap::new(),
            memory,
            capacity: capacity.max(1),
        }
    }

    /// `pid` vanished from `chats` at `now`; its members were told `left`.
    pub fn lost(&mut self, pid: Pid, attrs: UserAttrs, chats: Vec<Arc<str>>, now: T) {
        self.forget_old(now);
        if !self.by_pid.contains_key(&pid) {
            while self.by_pid.len() >= self.capacity {
                let Some((at, oldest)) = self.order.pop_front() else {
                    break;
                };
                self.remove_if_lost_at(&oldest, at);
            }
        }
        self.order.push_back((now, pid.clone()));
        if self.order.len() > 2 * self.capacity + 16 {
            let by_pid = &self.by_pid;
            self.order
                .retain(|(at, pid)| by_pid.get(pid).is_some_and(|lost| lost.at == *at));
        }
        let node = pid.node.clone();
        let entry = self.by_pid.entry(pid).or_insert(LostMember {
            attrs,
            chats: Vec::new(),
            at: now,
        });
        entry.at = now;
        for chat in chats {
            if !entry.chats.contains(&chat) {
                *self
                    .nodes
                    .entry(chat.clone())
                    .or_default()
                    .entry(node.clone())
                    .or_default() += 1;
                entry.chats.push(chat);
            }
        }
    }

    /// `pid` is a member of `chat` again: its attributes if it was lost
    /// from it (its members here must hear `joined`), once.
    pub fn rejoined(&mut self, chat: &str, pid: &Pid) -> Option<UserAttrs> {
        let lost = self.by_pid.get_mut(pid)?;
        let at = lost.chats.iter().position(|known| &**known == chat)?;
        let chat = lost.chats.swap_remove(at);
        let attrs = lost.attrs.clone();
        if lost.chats.is_empty() {
            self.by_pid.remove(pid);
        }
        Self::unindex(&mut self.nodes, &chat, &pid.node);
        Some(attrs)
    }

    /// The nodes with members lost from `chat` that may still be there.
    pub fn nodes_of(&self, chat: &str) -> Vec<Arc<str>> {
        self.nodes
            .get(chat)
            .map(|nodes| nodes.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// `node` registered again everything it still has (a merge is over,
    /// or it restarted): its members still lost are gone for good.
    pub fn forget_node(&mut self, node: &str) {
        let pids: Vec<Pid> = self
            .by_pid
            .keys()
            .filter(|pid| &*pid.node == node)
            .cloned()
            .collect();
        for pid in pids {
            self.remove(&pid);
        }
    }

    /// Number of lost members remembered.
    pub fn len(&self) -> usize {
        self.by_pid.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_pid.is_empty()
    }

    fn remove(&mut self, pid: &Pid) {
        if let Some(lost) = self.by_pid.remove(pid) {
            for chat in &lost.chats {
                Self::unindex(&mut self.nodes, chat, &pid.node);
            }
        }
    }

    fn unindex(nodes: &mut HashMap<Arc<str>, HashMap<Arc<str>, usize>>, chat: &str, node: &str) {
        let Some(of_chat) = nodes.get_mut(chat) else {
            return;
        };
        if let Some(count) = of_chat.get_mut(node) {
            *count -= 1;
            if *count == 0 {
                of_chat.remove(node);
            }
        }
        if of_chat.is_empty() {
            nodes.remove(chat);
        }
    }

    fn forget_old(&mut self, now: T) {
        while let Some((at, _)) = self.order.front() {
            if now < *at || now - *at < self.memory {
                break;
            }
            if let Some((at, pid)) = self.order.pop_front() {
                self.remove_if_lost_at(&pid, at);
            }
        }
    }

    /// Forgets `pid` if `at` is when it was last lost (an older queue
    /// entry of a member lost again is stale).
    fn remove_if_lost_at(&mut self, pid: &Pid, at: T) {
        if self.by_pid.get(pid).is_some_and(|lost| lost.at == at) {
            self.remove(pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(id: u32) -> Pid {
        Pid::new(Arc::from("rust@localhost"), id, 0, 1)
    }

    fn attrs(name: &str) -> UserAttrs {
        UserAttrs {
            user_name: Arc::from(name),
            user_id: Arc::from(format!("{name}-id").as_str()),
        }
    }

    #[test]
    fn ensure_user_is_new_then_updated() {
        let mut registry = Registry::<()>::new();
        assert_eq!(registry.ensure_user(pid(1), attrs("a")), Registered::New);
        assert_eq!(
            registry.ensure_user(pid(1), attrs("b")),
            Registered::Updated
        );
        assert_eq!(registry.user(&pid(1)), Some(&attrs("b")));
    }

    #[test]
    fn registered_before_follows_registration_order_and_user_ids() {
        let mut registry: Registry<()> = Registry::new();
        for id in 1..=3 {
            registry.ensure_user(pid(id), attrs(&format!("u{id}")));
        }
        registry.join("room", pid(1), ()).expect("join");
        registry.join("room", pid(2), ()).expect("join");
        registry.join("room", pid(3), ()).expect("join");
        assert!(registry.registered_before("room", "u1-id", &pid(2)));
        assert!(!registry.registered_before("room", "u3-id", &pid(2)));
        assert!(!registry.registered_before("room", "u2-id", &pid(2)));
        assert!(!registry.registered_before("elsewhere", "u1-id", &pid(2)));
        // A re-registration under another user_id moves the pid in the index.
        registry.ensure_user(pid(1), attrs("renamed"));
        assert!(!registry.registered_before("room", "u1-id", &pid(2)));
        assert!(registry.registered_before("room", "renamed-id", &pid(2)));
        // A leaver no longer counts; a process that ends leaves no trace.
        registry.leave("room", &pid(1)).expect("member");
        assert!(!registry.registered_before("room", "renamed-id", &pid(2)));
        registry.remove_process(&pid(1));
        assert!(!registry.user_pids.contains_key("renamed-id"));
    }

    #[test]
    fn join_reports_the_members_before_in_registration_order() {
        let mut registry = Registry::<()>::new();
        for (id, name) in [(3, "c"), (1, "a"), (2, "b")] {
            registry.ensure_user(pid(id), attrs(name));
        }
        registry.join("room", pid(3), ()).expect("first join");
        registry.join("room", pid(1), ()).expect("second join");
        let joined = registry.join("room", pid(2), ()).expect("third join");
        let names: Vec<_> = joined
            .before
            .iter()
            .map(|(_, attrs)| attrs.user_name.to_string())
            .collect();
        assert_eq!(names, ["c", "a"]);
        assert_eq!(joined.chat.members().len(), 3);
        assert!(matches!(
            registry.join("room", pid(2), ()),
            Err(RegistryError::AlreadyMember { .. })
        ));
        assert_eq!(registry.membership_count(), 3);
    }

    #[test]
    fn sequences_are_per_chat_and_survive_until_the_chat_empties() {
        let mut registry = Registry::<()>::new();
        registry
            .join("a", pid(1), ())
            .expect("join a")
            .chat
            .next_sequence();
        let chat = registry.join("b", pid(1), ()).expect("join b").chat;
        assert_eq!(chat.next_sequence(), 1);
        let chat = registry.chat_mut("a").expect("a exists");
        assert_eq!(chat.next_sequence(), 2);
        let chat = registry.leave("a", &pid(1)).expect("member");
        assert_eq!(chat.next_sequence(), 3);
        registry.drop_if_empty("a");
        assert!(registry.chat("a").is_none());
        assert!(matches!(
            registry.leave("a", &pid(1)),
            Err(RegistryError::NotMember { .. })
        ));
    }

    #[test]
    fn removing_a_process_purges_every_registration() {
        let mut registry = Registry::<()>::new();
        registry.ensure_user(pid(1), attrs("a"));
        registry.ensure_user(pid(2), attrs("b"));
        registry.join("x", pid(1), ()).expect("join");
        registry.join("y", pid(1), ()).expect("join");
        registry.join("x", pid(2), ()).expect("join");
        let (removed, chats) = registry.remove_process(&pid(1));
        assert_eq!(removed, Some(attrs("a")));
        assert_eq!(chats.len(), 2);
        assert_eq!(registry.chat("x").map(|chat| chat.members().len()), Some(1));
        assert_eq!(registry.chats_of(&pid(1)), &[] as &[Arc<str>]);
        assert_eq!(registry.user_count(), 1);
        assert_eq!(registry.chat_count(), 1);
    }

    #[test]
    fn lost_members_are_announced_again_once_per_chat() {
        use std::time::{Duration, Instant};
        let now = Instant::now();
        let mut lost = LostMembers::new(Duration::from_secs(60), 100);
        let chats: Vec<Arc<str>> = vec![Arc::from("x"), Arc::from("y")];
        lost.lost(pid(1), attrs("ann"), chats, now);
        assert_eq!(lost.rejoined("x", &pid(2)), None, "never lost");
        assert_eq!(lost.rejoined("x", &pid(1)), Some(attrs("ann")));
        assert_eq!(lost.rejoined("x", &pid(1)), None, "once");
        assert_eq!(lost.len(), 1);
        assert_eq!(lost.rejoined("y", &pid(1)), Some(attrs("ann")));
        assert!(lost.is_empty(), "back in every chat: forgotten");
        assert!(lost.nodes_of("x").is_empty() && lost.nodes_of("y").is_empty());
    }

    #[test]
    fn the_nodes_of_lost_members_are_known_per_chat_until_they_are_back() {
        use std::time::{Duration, Instant};
        let now = Instant::now();
        let mut lost = LostMembers::new(Duration::from_secs(60), 100);
        let on = |node: &str, id| Pid::new(Arc::from(node), id, 0, 1);
        lost.lost(on("b@h", 1), attrs("a"), vec![Arc::from("x")], now);
        lost.lost(
            on("b@h", 2),
            attrs("b"),
            vec![Arc::from("x"), Arc::from("y")],
            now,
        );
        lost.lost(on("c@h", 3), attrs("c"), vec![Arc::from("y")], now);
        assert_eq!(lost.nodes_of("x"), vec![Arc::from("b@h")]);
        let mut y = lost.nodes_of("y");
        y.sort();
        assert_eq!(y, vec![Arc::from("b@h"), Arc::from("c@h")]);
        lost.rejoined("x", &on("b@h", 1));
        assert_eq!(lost.nodes_of("x"), vec![Arc::from("b@h")], "one still lost");
        // b registered again all it has: the rest of its members are gone.
        lost.forget_node("b@h");
        assert!(lost.nodes_of("x").is_empty());
        assert_eq!(lost.nodes_of("y"), vec![Arc::from("c@h")]);
        assert_eq!(lost.rejoined("y", &on("b@h", 2)), None);
        assert_eq!(lost.len(), 1);
    }

    /// A member lost again counts from its latest loss: past capacity the
    /// member lost longest ago goes, not the one lost first.
    #[test]
    fn a_member_lost_again_is_the_newest() {
        use std::time::{Duration, Instant};
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        let mut lost = LostMembers::new(Duration::from_secs(60), 2);
        lost.lost(pid(1), attrs("a"), vec![Arc::from("x")], at(0));
        lost.lost(pid(2), attrs("b"), vec![Arc::from("x")], at(1));
        lost.lost(pid(1), attrs("a"), vec![Arc::from("y")], at(2));
        lost.lost(pid(3), attrs("c"), vec![Arc::from("x")], at(3));
        assert_eq!(lost.len(), 2);
        assert_eq!(lost.rejoined("x", &pid(2)), None, "b was lost longest ago");
        assert!(lost.rejoined("y", &pid(1)).is_some());
        // Memory counts from the latest loss too.
        let mut lost = LostMembers::new(Duration::from_secs(60), 10);
        lost.lost(pid(1), attrs("a"), vec![Arc::from("x")], at(0));
        lost.lost(pid(1), attrs("a"), vec![Arc::from("y")], at(30));
        lost.lost(pid(2), attrs("b"), vec![Arc::from("x")], at(61));
        assert_eq!(lost.len(), 2, "a is remembered 61 s after its first loss");
        lost.lost(pid(3), attrs("c"), vec![Arc::from("x")], at(91));
        assert_eq!(
            lost.rejoined("x", &pid(1)),
            None,
            "and forgotten 61 s after its last"
        );
        // Many losses and returns keep the queue bounded.
        let mut many = LostMembers::new(Duration::from_secs(60), 100);
        for id in 0..10_000 {
            many.lost(pid(id), attrs("m"), vec![Arc::from("x")], at(0));
            many.rejoined("x", &pid(id));
        }
        assert!(many.is_empty());
        assert!(many.order.len() <= 2 * 100 + 16, "{}", many.order.len());
    }

    #[test]
    fn lost_members_are_forgotten_after_a_while_and_past_capacity() {
        use std::time::{Duration, Instant};
        let start = Instant::now();
        let mut lost = LostMembers::new(Duration::from_secs(60), 2);
        lost.lost(pid(1), attrs("a"), vec![Arc::from("x")], start);
        lost.lost(
            pid(2),
            attrs("b"),
            vec![Arc::from("x")],
            start + Duration::from_secs(1),
        );
        // Past capacity: the oldest goes.
        lost.lost(
            pid(3),
            attrs("c"),
            vec![Arc::from("x")],
            start + Duration::from_secs(2),
        );
        assert_eq!(lost.len(), 2);
        assert_eq!(lost.rejoined("x", &pid(1)), None);
        // Past its memory: forgotten at the next loss.
        lost.lost(
            pid(4),
            attrs("d"),
            vec![Arc::from("x")],
            start + Duration::from_secs(61),
        );
        assert_eq!(lost.rejoined("x", &pid(2)), None);
        assert_eq!(lost.rejoined("x", &pid(3)), Some(attrs("c")));
    }
}
