//! The chat records flack processes send each other, as Erlang terms.
//!
//! The original's websocket processes exchange three plain tuples (records
//! of `chat_stream.hrl`), with binaries for strings and an integer sequence:
//!
//! ```erlang
//! {user_joined, Chat, UserName, UserId, Timestamp, Seq}
//! {chat_message, Chat, UserId, MimeType, Message, Timestamp, Seq}
//! {user_left, Chat, UserId, Timestamp, Seq}
//! ```
//!
//! A Rust member receives what Erlang members send and the reverse, so these
//! are encoded and decoded exactly so. Decoding is strict: anything else is
//! refused (and the sender's term is logged by the caller), never guessed at.

use std::sync::Arc;

use eetf::{FixInteger, Term, Tuple};

use crate::node::term::{atom, binary};

use crate::events::event::{ChatEvent, EventKind};
use crate::events::protocol::TEXT_PLAIN;

/// Why a term is not a chat record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Not one of the three record shapes.
    #[error("not a flack chat record")]
    NotARecord,
    /// A field has the wrong type (e.g. a string where a binary belongs).
    #[error("field {0} of a {1} record has the wrong type")]
    BadField(&'static str, &'static str),
    /// A chat_message with a mime type other than text/plain.
    #[error("chat_message with mime type {0:?}")]
    MimeType(String),
}

fn integer(value: u64) -> Term {
    match i32::try_from(value) {
        Ok(small) => Term::from(FixInteger::from(small)),
        Err(_) => Term::from(eetf::BigInteger::from(value)),
    }
}

/// The Erlang record of an event.
pub fn encode(event: &ChatEvent) -> Term {
    let chat = binary(&event.chat);
    let timestamp = binary(&event.timestamp);
    let sequence = integer(event.sequence);
    let elements = match &event.kind {
        EventKind::Joined { user_name, user_id } => vec![
            atom("user_joined"),
            chat,
            binary(user_name),
            binary(user_id),
            timestamp,
            sequence,
        ],
        EventKind::Message { user_id, message } => vec![
            atom("chat_message"),
            chat,
            binary(user_id),
            binary(TEXT_PLAIN),
            binary(message),
            timestamp,
            sequence,
        ],
        EventKind::Left { user_id } => vec![
            atom("user_left"),
            chat,
            binary(user_id),
            timestamp,
            sequence,
        ],
    };
    Term::from(Tuple::from(elements))
}

/// Reads a record sent by a member on another node.
pub fn decode(term: &Term) -> Result<ChatEvent, RecordError> {
    let Term::Tuple(tuple) = term else {
        return Err(RecordError::NotARecord);
    };
    let fields = &tuple.elements;
    let tag = match fields.first() {
        Some(Term::Atom(tag)) => tag.name.as_str(),
        _ => return Err(RecordError::NotARecord),
    };
    match (tag, fields.len()) {
        ("user_joined", 6) => {
            let record = "user_joined";
            let chat = text(&fields[1], "chat", record)?;
            let user_name = text(&fields[2], "username", record)?;
            let user_id = text(&fields[3], "user_id", record)?;
            let timestamp = text(&fields[4], "timestamp", record)?;
            let sequence = sequence(&fields[5], record)?;
            Ok(ChatEvent::new(
                Arc::from(chat),
                EventKind::Joined { user_name, user_id },
                timestamp,
                sequence,
            ))
        }
        ("chat_message", 7) => {
            let record = "chat_message";
            let chat = text(&fields[1], "chat_name", record)?;
            let user_id = text(&fields[2], "user_id", record)?;
            let mime_type = text(&fields[3], "mime_type", record)?;
            if mime_type != TEXT_PLAIN {
                return Err(RecordError::MimeType(mime_type));
            }
            let message = text(&fields[4], "message", record)?;
            let timestamp = text(&fields[5], "timestamp", record)?;
            let sequence = sequence(&fields[6], record)?;
            Ok(ChatEvent::new(
                Arc::from(chat),
                EventKind::Message { user_id, message },
                timestamp,
                sequence,
            ))
        }
        ("user_left", 5) => {
            let record = "user_left";
            let chat = text(&fields[1], "chat", record)?;
            let user_id = text(&fields[2], "user_id", record)?;
            let timestamp = text(&fields[3], "timestamp", record)?;
            let sequence = sequence(&fields[4], record)?;
            Ok(ChatEvent::new(
                Arc::from(chat),
                EventKind::Left { user_id },
                timestamp,
                sequence,
            ))
        }
        _ => Err(RecordError::NotARecord),
    }
}

/// The last record decoded on this node. The original sends one copy of a
/// record to every member pid, so a node with many members of one chat
/// receives the same term many times in a row: with this cache it is
/// decoded and JSON-encoded once, and every local member shares the result.
#[derive(Debug, Default)]
pub struct DecodeCache {
    last: parking_lot::Mutex<Option<(Term, Arc<ChatEvent>)>>,
}

impl DecodeCache {
    /// Decodes `term`, or returns the event of an equal term decoded just
    /// before.
    pub fn decode(&self, term: &Term) -> Result<Arc<ChatEvent>, RecordError> {
        if let Some((cached, event)) = &*self.last.lock()
            && cached == term
        {
            return Ok(event.clone());
        }
        let event = Arc::new(decode(term)?);
        *self.last.lock() = Some((term.clone(), event.clone()));
        Ok(event)
    }
}

/// A UTF-8 binary field.
fn text(term: &Term, field: &'static str, record: &'static str) -> Result<String, RecordError> {
    match term {
        Term::Binary(binary) => String::from_utf8(binary.bytes.clone())
            .map_err(|_| RecordError::BadField(field, record)),
        _ => Err(RecordError::BadField(field, record)),
    }
}

/// A non-negative integer sequence (the original always sends 42).
fn sequence(term: &Term, record: &'static str) -> Result<u64, RecordError> {
    match term {
        Term::FixInteger(value) => {
            u64::try_from(value.value).map_err(|_| RecordError::BadField("sequence", record))
        }
        Term::BigInteger(value) => {
            u64::try_from(&value.value).map_err(|_| RecordError::BadField("sequence", record))
        }
        _ => Err(RecordError::BadField("sequence", record)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(kind: EventKind) {
        let event = ChatEvent::new(Arc::from("foobar"), kind, "2026-11-28T04:45:57Z".into(), 42);
        let term = encode(&event);
        let back = decode(&term).expect("decodes");
        assert_eq!(back.kind, event.kind);
        assert_eq!(back.json, event.json);
        // And through the external term format, as it crosses the wire.
        let mut bytes = Vec::new();
        term.encode(&mut bytes).expect("encodes");
        let wire = Term::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(decode(&wire).expect("record").json, event.json);
    }

    #[test]
    fn records_round_trip() {
        roundtrip(EventKind::Joined {
            user_name: "bob".into(),
            user_id: "8b0d4d420469cda204dd8ce42eeb151f".into(),
        });
        roundtrip(EventKind::Message {
            user_id: "alice-id-0001".into(),
            message: "hi from alice é".into(),
        });
        roundtrip(EventKind::Left {
            user_id: "alice-id-0001".into(),
        });
    }

    #[test]
    fn the_originals_record_shape() {
        let event = ChatEvent::new(
            Arc::from("foobar"),
            EventKind::Left {
                user_id: "alice-id-0001".into(),
            },
            "2026-11-28T04:46:06Z".into(),
            42,
        );
        // {user_left,<<"foobar">>,<<"alice-id-0001">>,<<"2026-11-28T04:46:06Z">>,42}
        let expected = Term::from(Tuple::from(vec![
            atom("user_left"),
            binary("foobar"),
            binary("alice-id-0001"),
            binary("2026-11-28T04:46:06Z"),
            Term::from(FixInteger::from(42)),
        ]));
        assert_eq!(encode(&event), expected);
    }

    #[test]
    fn a_record_sent_to_many_members_is_decoded_once() {
        let event = ChatEvent::new(
            Arc::from("c"),
            EventKind::Message {
                user_id: "u".into(),
                message: "m".into(),
            },
            "t".into(),
            1,
        );
        let term = encode(&event);
        let cache = DecodeCache::default();
        let first = cache.decode(&term).expect("record");
        let second = cache.decode(&term.clone()).expect("record");
        assert!(Arc::ptr_eq(&first, &second));
        let other = encode(&ChatEvent::new(
            Arc::from("c"),
            EventKind::Left {
                user_id: "u".into(),
            },
            "t".into(),
            2,
        ));
        assert!(!Arc::ptr_eq(&first, &cache.decode(&other).expect("record")));
    }

    #[test]
    fn other_terms_are_refused() {
        assert_eq!(decode(&atom("hello")).err(), Some(RecordError::NotARecord));
        let wrong = Term::from(Tuple::from(vec![
            atom("user_left"),
            Term::from(eetf::ByteList::from("c")),
            binary("u"),
            binary("t"),
            integer(1),
        ]));
        assert_eq!(
            decode(&wrong).err(),
            Some(RecordError::BadField("chat", "user_left"))
        );
        let negative = Term::from(Tuple::from(vec![
            atom("user_left"),
            binary("c"),
            binary("u"),
            binary("t"),
            Term::from(FixInteger::from(-1)),
        ]));
        assert!(decode(&negative).is_err());
    }
}
