//! Chat stream events (`joined`, `chat_message`, `left`) as they travel from
//! the member that caused them to every member of the chat.
//!
//! An event is encoded to JSON once, when it is made; every member's writer
//! then shares the same bytes ([`Utf8Bytes`] clones are reference counts).
//! The typed fields stay alongside so the cluster layer can turn the event
//! into the Erlang record the original nodes exchange.

use std::sync::Arc;

use tungstenite::Utf8Bytes;

use super::protocol::{TEXT_PLAIN, encode};

/// What happened in a chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A member joined: `{user_joined, Chat, UserName, UserId, Timestamp, Seq}`.
    Joined {
        /// The joiner's display name.
        user_name: String,
        /// The joiner's user_id.
        user_id: String,
    },
    /// A message was posted:
    /// `{chat_message, Chat, UserId, MimeType, Message, Timestamp, Seq}`.
    Message {
        /// The sender's user_id.
        user_id: String,
        /// The text.
        message: String,
    },
    /// A member left: `{user_left, Chat, UserId, Timestamp, Seq}`.
    Left {
        /// The leaver's user_id.
        user_id: String,
    },
}

/// One event of one chat, with its JSON encoding made once.
#[derive(Debug)]
pub struct ChatEvent {
    /// The chat the event belongs to.
    pub chat: Arc<str>,
    /// What happened.
    pub kind: EventKind,
    /// RFC 3339 UTC time, second precision.
    pub timestamp: String,
    /// Position in the chat's stream.
    pub sequence: u64,
    /// The server record sent to websocket clients.
    pub json: Utf8Bytes,
}

impl ChatEvent {
    /// Makes an event and encodes its server record.
    pub fn new(chat: Arc<str>, kind: EventKind, timestamp: String, sequence: u64) -> Self {
        let json = match &kind {
            EventKind::Joined { user_name, user_id } => {
                encode::joined(&chat, user_name, user_id, &timestamp, sequence)
            }
            EventKind::Message { user_id, message } => {
                encode::chat_message(&chat, user_id, TEXT_PLAIN, message, &timestamp, sequence)
            }
            EventKind::Left { user_id } => encode::left(&chat, user_id, &timestamp, sequence),
        };
        Self {
            chat,
            kind,
            timestamp,
            sequence,
            json: Utf8Bytes::from(json),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_once_with_the_wire_field_order() {
        let event = ChatEvent::new(
            Arc::from("foobar"),
            EventKind::Left {
                user_id: "alice-id-0001".into(),
            },
            "2026-11-28T04:46:06Z".into(),
            7,
        );
        assert_eq!(
            event.json.as_str(),
            r#"{"record":"left","chat_name":"foobar","user_id":"alice-id-0001","timestamp":"2026-11-28T04:46:06Z","sequence":7}"#
        );
    }
}
