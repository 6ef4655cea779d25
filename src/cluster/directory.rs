//! The chat directory: the original's `chat_stream` operations (register a
//! user, join, post, leave) carried out on the global registry, with fan-out
//! to the members.
//!
//! On a single node this node is the leader of a cluster of one, so the
//! directory applies each change to its own [`Registry`] and delivers the
//! resulting event in the same critical section. Taking the sequence number
//! and queueing the event for every member under one lock is what makes the
//! per-chat `sequence` strictly increasing in the order every member
//! receives it, and what makes a joiner's `chat_state` and the `joined`
//! events it later receives add up to every member exactly once.
//!
//! Delivery never waits: a member whose queue is full is flagged and closed
//! by its own session (see [`crate::chat::mailbox`]).

use std::sync::Arc;

use parking_lot::Mutex;

use super::registry::{Chat, Registered, Registry, RegistryError, UserAttrs};
use crate::chat::event::{ChatEvent, EventKind};
use crate::chat::mailbox::MailboxSender;
use crate::chat::protocol::{ChatUser, timestamp_now};
use crate::metrics::{Metrics, RegistryGauges};
use crate::node::{Delivery, Pid};

/// The shared chat directory of this node.
pub struct Directory {
    registry: Mutex<Registry<MailboxSender>>,
    metrics: Arc<Metrics>,
}

impl Directory {
    /// A directory with an empty registry.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            registry: Mutex::new(Registry::new()),
            metrics,
        }
    }

    /// `chat_stream:register_user/2`: the user's `{n,g,Pid}` with attributes.
    pub fn register_user(&self, pid: &Pid, user_name: &str, user_id: &str) -> Registered {
        let attrs = UserAttrs {
            user_name: Arc::from(user_name),
            user_id: Arc::from(user_id),
        };
        self.registry.lock().ensure_user(pid.clone(), attrs)
    }

    /// `chat_stream:join/3`: registers the membership, announces `joined`
    /// to every member (the joiner included) and returns the members that
    /// were there before, for the joiner's `chat_state`.
    pub fn join(
        &self,
        chat: &str,
        pid: &Pid,
        route: MailboxSender,
    ) -> Result<Vec<ChatUser>, RegistryError> {
        let mut registry = self.registry.lock();
        let attrs = registry.user(pid).cloned();
        let joined = registry.join(chat, pid.clone(), route)?;
        let before = joined
            .before
            .into_iter()
            .map(|(_, attrs)| ChatUser {
                user_name: attrs.user_name.to_string(),
                user_id: attrs.user_id.to_string(),
            })
            .collect();
        if let Some(attrs) = attrs {
            let kind = EventKind::Joined {
                user_name: attrs.user_name.to_string(),
                user_id: attrs.user_id.to_string(),
            };
            self.announce(joined.chat, kind);
        }
        Ok(before)
    }

    /// `chat_stream:post/1`: a message to every member, the sender included.
    pub fn post(&self, chat: &str, user_id: &str, message: String) {
        let mut registry = self.registry.lock();
        if let Some(chat) = registry.chat_mut(chat) {
            let kind = EventKind::Message {
                user_id: user_id.to_owned(),
                message,
            };
            self.announce(chat, kind);
        }
    }

    /// `chat_stream:leave/2`: `left` to every member, the leaver included,
    /// then the membership is gone.
    pub fn leave(&self, chat: &str, pid: &Pid, user_id: &str) -> Result<(), RegistryError> {
        let mut registry = self.registry.lock();
        let leaver = registry
            .chat(chat)
            .and_then(|entry| entry.members().iter().find(|member| &member.pid == pid))
            .map(|member| member.route.clone());
        let entry = registry.leave(chat, pid)?;
        let event = self.announce(
            entry,
            EventKind::Left {
                user_id: user_id.to_owned(),
            },
        );
        if let Some(route) = leaver {
            self.count(route.deliver(&event));
        }
        registry.drop_if_empty(chat);
        Ok(())
    }

    /// A session ended (goodbye, error, close or drop): every chat it was
    /// still in hears `left`, and its user registration is removed, as
    /// gproc does when a registered process dies.
    pub fn session_ended(&self, pid: &Pid) {
        let mut registry = self.registry.lock();
        let (attrs, chats) = registry.remove_process(pid);
        let Some(attrs) = attrs else { return };
        for chat in chats {
            if let Some(entry) = registry.chat_mut(&chat) {
                let kind = EventKind::Left {
                    user_id: attrs.user_id.to_string(),
                };
                self.announce(entry, kind);
            }
            registry.drop_if_empty(&chat);
        }
    }

    /// Figures for `/metrics` and `/health`.
    pub fn gauges(&self) -> RegistryGauges {
        let registry = self.registry.lock();
        RegistryGauges {
            rooms: registry.chat_count(),
            members: registry.membership_count(),
            users: registry.user_count(),
        }
    }

    /// Makes the chat's next event and queues it for every member.
    fn announce(&self, chat: &mut Chat<MailboxSender>, kind: EventKind) -> Arc<ChatEvent> {
        let sequence = chat.next_sequence();
        let event = Arc::new(ChatEvent::new(
            chat.name().clone(),
            kind,
            timestamp_now(),
            sequence,
        ));
        for member in chat.members() {
            self.count(member.route.deliver(&event));
        }
        event
    }

    fn count(&self, delivery: Delivery) {
        if delivery == Delivery::Accepted {
            Metrics::bump(&self.metrics.deliveries);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::mailbox::{Mailbox, mailbox};

    fn pid(id: u32) -> Pid {
        Pid::new(Arc::from("nonode@nohost"), id, 0, 0)
    }

    fn drain(mailbox: &mut Mailbox) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(event) = mailbox.events.try_recv() {
            out.push(event.json.to_string());
        }
        out
    }

    #[test]
    fn join_post_leave_reach_every_member_in_sequence() {
        let directory = Directory::new(Arc::new(Metrics::default()));
        let (a_route, mut a_box) = mailbox(16);
        let (b_route, mut b_box) = mailbox(16);
        directory.register_user(&pid(1), "ann", "a-id");
        directory.register_user(&pid(2), "bob", "b-id");
        assert!(
            directory
                .join("room", &pid(1), a_route)
                .expect("join")
                .is_empty()
        );
        let before = directory.join("room", &pid(2), b_route).expect("join");
        assert_eq!(
            before,
            vec![ChatUser {
                user_name: "ann".into(),
                user_id: "a-id".into()
            }]
        );
        directory.post("room", "b-id", "hi".into());
        directory.leave("room", &pid(1), "a-id").expect("member");
        let a_events = drain(&mut a_box);
        let b_events = drain(&mut b_box);
        assert_eq!(a_events.len(), 4, "{a_events:?}");
        assert!(
            a_events[3].contains(r#""record":"left""#) && a_events[3].contains(r#""sequence":4"#)
        );
        assert_eq!(b_events.len(), 3, "{b_events:?}");
        assert!(
            b_events[0].contains(r#""user_name":"bob""#) && b_events[0].contains(r#""sequence":2"#)
        );
        assert!(b_events[2].contains(r#""sequence":4"#));
    }

    #[test]
    fn an_ended_session_leaves_all_its_chats() {
        let directory = Directory::new(Arc::new(Metrics::default()));
        let (a_route, mut a_box) = mailbox(16);
        let (b_route, _b_box) = mailbox(16);
        directory.register_user(&pid(1), "ann", "a-id");
        directory.register_user(&pid(2), "bob", "b-id");
        directory.join("x", &pid(1), a_route.clone()).expect("join");
        directory.join("x", &pid(2), b_route.clone()).expect("join");
        directory.join("y", &pid(2), b_route).expect("join");
        drain(&mut a_box);
        directory.session_ended(&pid(2));
        let events = drain(&mut a_box);
        assert_eq!(events.len(), 1);
        assert!(events[0].contains(r#""record":"left","chat_name":"x","user_id":"b-id""#));
        let gauges = directory.gauges();
        assert_eq!((gauges.rooms, gauges.members, gauges.users), (1, 1, 1));
    }
}
