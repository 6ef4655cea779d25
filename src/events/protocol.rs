//! The flack v1 wire format: client records parsed from JSON text frames, and
//! server records encoded to JSON with the original's field order.
//!
//! Parsing is strict where the original was loose (see the README's
//! "Strictness" section): any key order is accepted, but every field a record
//! uses must have the right JSON type, names must be non-empty, `mime_type` must
//! be `text/plain`. Every rejection is a [`ProtocolError`] carrying the code and
//! reason the client sees, so the session never has to invent one.
//!
//! Encoding writes JSON by hand so that the field order is exactly the one the
//! original server sends (`record` first, then the fields in the order the
//! protocol README lists them), with string escaping delegated to serde_json.

use serde_json::{Map, Value};

/// The only protocol version flack speaks.
pub const PROTOCOL_VERSION: &str = "1.0";

/// The one mime type a chat message may carry.
pub const TEXT_PLAIN: &str = "text/plain";

/// A protocol error: the `code` and `reason` of a `protocol_error` record. The
/// connection is closed after it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    /// Machine-readable code, e.g. `CHAT_PROTOCOL-005`.
    pub code: &'static str,
    /// Human-readable English explanation.
    pub reason: String,
}

impl ProtocolError {
    fn new(code: &'static str, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }

    /// CHAT-001: the first frame was not a `client_hello` (or not JSON).
    pub fn hello_expected() -> Self {
        Self::new("CHAT-001", "A client_hello message was expected")
    }

    /// CHAT-002: the client asked for a version other than 1.0.
    pub fn unsupported_version(requested: &str) -> Self {
        Self::new(
            "CHAT-002",
            format!("An unsupported protocol version was requested: {requested}"),
        )
    }

    /// CHAT-003: a binary frame (flack speaks text frames only).
    pub fn unexpected_message() -> Self {
        Self::new("CHAT-003", "Unexpected message")
    }

    /// CHAT_PROTOCOL-001: not JSON, not an object, or an unknown `record`.
    pub fn unrecognized() -> Self {
        Self::new("CHAT_PROTOCOL-001", "Unrecognized message")
    }

    /// CHAT_PROTOCOL-002: anything but `authenticate` before authentication.
    pub fn authenticate_expected() -> Self {
        Self::new("CHAT_PROTOCOL-002", "Expected authenticate message")
    }

    /// CHAT_PROTOCOL-003: a second `authenticate`.
    pub fn already_authenticated() -> Self {
        Self::new("CHAT_PROTOCOL-003", "Already authenticated")
    }

    /// CHAT_PROTOCOL-004: `authenticate` without `user_name`.
    pub fn missing_user_name() -> Self {
        Self::new(
            "CHAT_PROTOCOL-004",
            "authenticate message missing user_name field",
        )
    }

    /// CHAT_PROTOCOL-005: `join_chat` without `chat_name`.
    pub fn missing_chat_name() -> Self {
        Self::new("CHAT_PROTOCOL-005", "Missing chat name")
    }

    /// CHAT_PROTOCOL-006: `join_chat` for a chat this connection is in.
    pub fn already_joined() -> Self {
        Self::new("CHAT_PROTOCOL-006", "Chat already joined")
    }

    /// CHAT_PROTOCOL-007: `chat_message` to a chat this connection is not in.
    pub fn not_joined_for_message() -> Self {
        Self::new("CHAT_PROTOCOL-007", "Chat has not been joined")
    }

    /// CHAT_PROTOCOL-008: `leave_chat` for a chat this connection is not in.
    pub fn not_joined_for_leave() -> Self {
        Self::new("CHAT_PROTOCOL-008", "Chat has not been joined")
    }

    /// FLACK-001 (new): a field has the wrong JSON type, or a required
    /// `chat_message` field is missing.
    pub fn wrong_type(field: &str) -> Self {
        Self::new("FLACK-001", format!("Field {field} must be a string"))
    }

    /// FLACK-002 (new): a name that must not be empty is empty.
    pub fn empty(field: &str) -> Self {
        Self::new("FLACK-002", format!("Field {field} must not be empty"))
    }

    /// FLACK-003 (new): a `chat_message` whose `mime_type` is not `text/plain`.
    pub fn unsupported_mime_type(found: &str) -> Self {
        Self::new(
            "FLACK-003",
            format!("Unsupported mime_type {found}: only text/plain is accepted"),
        )
    }

    /// FLACK-004 (new): a frame larger than the configured limit.
    pub fn frame_too_large(limit: usize) -> Self {
        Self::new(
            "FLACK-004",
            format!("Frame exceeds the limit of {limit} bytes"),
        )
    }

    /// FLACK-005 (new): a `user_name`, `user_id` or `chat_name` longer than
    /// the configured limit, in bytes of UTF-8.
    pub fn field_too_long(field: &str, limit: usize) -> Self {
        Self::new("FLACK-005", format!("Field {field} exceeds {limit} bytes"))
    }

    /// FLACK-006 (new): a `join_chat` beyond the number of chats one
    /// connection may be in at once.
    pub fn too_many_chats(limit: usize) -> Self {
        Self::new(
            "FLACK-006",
            format!("Too many chats joined: the limit is {limit}"),
        )
    }

    /// FLACK-007 (new): a message sent in more frames (fragments, and
    /// control frames between them) than the configured limit.
    pub fn too_many_frames(limit: usize) -> Self {
        Self::new(
            "FLACK-007",
            format!("Message exceeds the limit of {limit} frames"),
        )
    }
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.reason)
    }
}

/// A record sent by a client after its `client_hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientRecord {
    /// `authenticate`: `user_id` is `None` when absent or empty.
    Authenticate {
        /// Display name, non-empty.
        user_name: Option<String>,
        /// A user_id from an earlier session, to keep the same identity.
        user_id: Option<String>,
    },
    /// `join_chat`.
    JoinChat {
        /// The chat to join; `None` when the field is absent.
        chat_name: Option<String>,
    },
    /// `chat_message` (client-sent `user_id`, `timestamp`, `sequence` are ignored).
    ChatMessage {
        /// The chat to post to.
        chat_name: String,
        /// The text of the message.
        message: String,
    },
    /// `leave_chat`.
    LeaveChat {
        /// The chat to leave.
        chat_name: String,
    },
    /// `ping`.
    Ping,
    /// `client_goodbye`.
    ClientGoodbye,
}

/// Parses the first frame of a conversation, which must be a `client_hello`
/// asking for version 1.0.
pub fn parse_client_hello(text: &str) -> Result<(), ProtocolError> {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(text) else {
        return Err(ProtocolError::hello_expected());
    };
    if fields.get("record").and_then(Value::as_str) != Some("client_hello") {
        return Err(ProtocolError::hello_expected());
    }
    match fields.get("protocol_version") {
        Some(Value::String(version)) if version == PROTOCOL_VERSION => Ok(()),
        Some(Value::String(version)) => Err(ProtocolError::unsupported_version(version)),
        // The original crashed on a non-string version; we name what was sent.
        Some(other) => Err(ProtocolError::unsupported_version(&other.to_string())),
        None => Err(ProtocolError::hello_expected()),
    }
}

/// Parses a frame sent after the `client_hello`.
pub fn parse_client_record(text: &str) -> Result<ClientRecord, ProtocolError> {
    let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(text) else {
        return Err(ProtocolError::unrecognized());
    };
    let record = match fields.remove("record") {
        Some(Value::String(record)) => record,
        _ => return Err(ProtocolError::unrecognized()),
    };
    match record.as_str() {
        "authenticate" => {
            let user_name = optional_string(&mut fields, "user_name")?;
            if user_name.as_deref() == Some("") {
                return Err(ProtocolError::empty("user_name"));
            }
            let user_id = optional_string(&mut fields, "user_id")?.filter(|id| !id.is_empty());
            Ok(ClientRecord::Authenticate { user_name, user_id })
        }
        "join_chat" => {
            let chat_name = optional_string(&mut fields, "chat_name")?;
            if chat_name.as_deref() == Some("") {
                return Err(ProtocolError::empty("chat_name"));
            }
            Ok(ClientRecord::JoinChat { chat_name })
        }
        "chat_message" => {
            let chat_name = required_name(&mut fields, "chat_name")?;
            let mime_type = optional_string(&mut fields, "mime_type")?;
            match mime_type.as_deref() {
                Some(TEXT_PLAIN) => {}
                Some(other) => return Err(ProtocolError::unsupported_mime_type(other)),
                None => return Err(ProtocolError::unsupported_mime_type("(missing)")),
            }
            let message = optional_string(&mut fields, "message")?
                .ok_or_else(|| ProtocolError::wrong_type("message"))?;
            Ok(ClientRecord::ChatMessage { chat_name, message })
        }
        "leave_chat" => Ok(ClientRecord::LeaveChat {
            chat_name: required_name(&mut fields, "chat_name")?,
        }),
        "ping" => Ok(ClientRecord::Ping),
        "client_goodbye" => Ok(ClientRecord::ClientGoodbye),
        _ => Err(ProtocolError::unrecognized()),
    }
}

/// A string field that may be absent (or JSON null); any other type is an error.
fn optional_string(
    fields: &mut Map<String, Value>,
    field: &str,
) -> Result<Option<String>, ProtocolError> {
    match fields.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => Ok(Some(value)),
        Some(_) => Err(ProtocolError::wrong_type(field)),
    }
}

/// A chat name that must be present and non-empty.
fn required_name(fields: &mut Map<String, Value>, field: &str) -> Result<String, ProtocolError> {
    match optional_string(fields, field)? {
        None => Err(ProtocolError::wrong_type(field)),
        Some(name) if name.is_empty() => Err(ProtocolError::empty(field)),
        Some(name) => Ok(name),
    }
}

/// A member listed in a `chat_state` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatUser {
    /// The member's display name.
    pub user_name: String,
    /// The member's user_id.
    pub user_id: String,
}

/// Builders for every record the server sends, as JSON text.
pub mod encode {
    use super::{ChatUser, ProtocolError};

    /// Appends `value` as a JSON string literal.
    fn push_str(out: &mut String, value: &str) {
        // serde_json never fails to serialize a &str into a String.
        out.push_str(&serde_json::to_string(value).unwrap_or_else(|_| "\"\"".to_owned()));
    }

    fn record(name: &str, capacity: usize) -> String {
        let mut out = String::with_capacity(capacity + 32);
        out.push_str("{\"record\":\"");
        out.push_str(name);
        out.push('"');
        out
    }

    fn field(out: &mut String, name: &str, value: &str) {
        out.push_str(",\"");
        out.push_str(name);
        out.push_str("\":");
        push_str(out, value);
    }

    fn field_int(out: &mut String, name: &str, value: u64) {
        out.push_str(",\"");
        out.push_str(name);
        out.push_str("\":");
        out.push_str(&value.to_string());
    }

    /// `server_hello`.
    pub fn server_hello() -> String {
        format!(
            "{{\"record\":\"server_hello\",\"protocol_version\":\"{}\"}}",
            super::PROTOCOL_VERSION
        )
    }

    /// `protocol_error`.
    pub fn protocol_error(error: &ProtocolError) -> String {
        let mut out = record("protocol_error", error.reason.len() + 32);
        field(&mut out, "code", error.code);
        field(&mut out, "reason", &error.reason);
        out.push('}');
        out
    }

    /// `authenticated`.
    pub fn authenticated(user_id: &str) -> String {
        let mut out = record("authenticated", user_id.len());
        field(&mut out, "user_id", user_id);
        out.push('}');
        out
    }

    /// `chat_state`, listing members already in the chat.
    pub fn chat_state(chat_name: &str, users: &[ChatUser]) -> String {
        let mut out = record("chat_state", chat_name.len() + users.len() * 80);
        field(&mut out, "chat_name", chat_name);
        out.push_str(",\"users\":[");
        for (index, user) in users.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            out.push_str("{\"record\":\"chat_user\"");
            field(&mut out, "user_name", &user.user_name);
            field(&mut out, "user_id", &user.user_id);
            out.push('}');
        }
        out.push_str("]}");
        out
    }

    /// `joined`.
    pub fn joined(
        chat_name: &str,
        user_name: &str,
        user_id: &str,
        timestamp: &str,
        sequence: u64,
    ) -> String {
        let mut out = record(
            "joined",
            chat_name.len() + user_name.len() + user_id.len() + 64,
        );
        field(&mut out, "chat_name", chat_name);
        field(&mut out, "user_name", user_name);
        field(&mut out, "user_id", user_id);
        field(&mut out, "timestamp", timestamp);
        field_int(&mut out, "sequence", sequence);
        out.push('}');
        out
    }

    /// `chat_message` as delivered to members.
    pub fn chat_message(
        chat_name: &str,
        user_id: &str,
        mime_type: &str,
        message: &str,
        timestamp: &str,
        sequence: u64,
    ) -> String {
        let mut out = record(
            "chat_message",
            chat_name.len() + user_id.len() + message.len() + 96,
        );
        field(&mut out, "chat_name", chat_name);
        field(&mut out, "user_id", user_id);
        field(&mut out, "mime_type", mime_type);
        field(&mut out, "message", message);
        field(&mut out, "timestamp", timestamp);
        field_int(&mut out, "sequence", sequence);
        out.push('}');
        out
    }

    /// `left`.
    pub fn left(chat_name: &str, user_id: &str, timestamp: &str, sequence: u64) -> String {
        let mut out = record("left", chat_name.len() + user_id.len() + 64);
        field(&mut out, "chat_name", chat_name);
        field(&mut out, "user_id", user_id);
        field(&mut out, "timestamp", timestamp);
        field_int(&mut out, "sequence", sequence);
        out.push('}');
        out
    }

    /// `ping_reply`.
    pub fn ping_reply() -> String {
        "{\"record\":\"ping_reply\"}".to_owned()
    }

    /// `server_goodbye`.
    pub fn server_goodbye() -> String {
        "{\"record\":\"server_goodbye\"}".to_owned()
    }
}

/// The current UTC time as the protocol's RFC 3339 timestamp,
/// `YYYY-MM-DDTHH:MM:SSZ` (second precision, as the original).
pub fn timestamp_now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_accepts_any_key_order() {
        assert_eq!(
            parse_client_hello(r#"{"protocol_version":"1.0","record":"client_hello"}"#),
            Ok(())
        );
    }

    #[test]
    fn hello_errors_match_the_original() {
        assert_eq!(
            parse_client_hello("not json"),
            Err(ProtocolError::hello_expected())
        );
        assert_eq!(
            parse_client_hello(r#"{"foo":"bar"}"#),
            Err(ProtocolError::hello_expected())
        );
        let error =
            parse_client_hello(r#"{"record":"client_hello","protocol_version":"42"}"#).unwrap_err();
        assert_eq!(error.code, "CHAT-002");
        assert_eq!(
            error.reason,
            "An unsupported protocol version was requested: 42"
        );
        let error =
            parse_client_hello(r#"{"record":"client_hello","protocol_version":1.0}"#).unwrap_err();
        assert_eq!(
            error.reason,
            "An unsupported protocol version was requested: 1.0"
        );
    }

    #[test]
    fn authenticate_fields() {
        assert_eq!(
            parse_client_record(r#"{"user_id":"","record":"authenticate","user_name":"ann"}"#),
            Ok(ClientRecord::Authenticate {
                user_name: Some("ann".into()),
                user_id: None
            })
        );
        assert_eq!(
            parse_client_record(r#"{"record":"authenticate","user_name":""}"#)
                .unwrap_err()
                .code,
            "FLACK-002"
        );
        assert_eq!(
            parse_client_record(r#"{"record":"authenticate","user_name":7}"#)
                .unwrap_err()
                .code,
            "FLACK-001"
        );
    }

    #[test]
    fn chat_message_requires_text_plain() {
        let missing =
            parse_client_record(r#"{"record":"chat_message","chat_name":"c","message":"m"}"#);
        assert_eq!(missing.unwrap_err().code, "FLACK-003");
        let html = parse_client_record(
            r#"{"record":"chat_message","chat_name":"c","mime_type":"text/html","message":"m"}"#,
        );
        assert_eq!(html.unwrap_err().code, "FLACK-003");
        let ok = parse_client_record(
            r#"{"record":"chat_message","chat_name":"c","mime_type":"text/plain","message":"m","sequence":9,"user_id":"x"}"#,
        );
        assert_eq!(
            ok,
            Ok(ClientRecord::ChatMessage {
                chat_name: "c".into(),
                message: "m".into()
            })
        );
    }

    #[test]
    fn unknown_records_are_unrecognized() {
        for text in [
            "[]",
            "\"x\"",
            "{}",
            r#"{"record":5}"#,
            r#"{"record":"dance"}"#,
            "{",
        ] {
            assert_eq!(
                parse_client_record(text),
                Err(ProtocolError::unrecognized()),
                "{text}"
            );
        }
    }

    #[test]
    fn encoded_records_keep_the_original_field_order() {
        assert_eq!(
            encode::server_hello(),
            r#"{"record":"server_hello","protocol_version":"1.0"}"#
        );
        assert_eq!(
            encode::joined("foobar", "bob", "8b0d", "2026-11-28T04:45:57Z", 3),
            r#"{"record":"joined","chat_name":"foobar","user_name":"bob","user_id":"8b0d","timestamp":"2026-11-28T04:45:57Z","sequence":3}"#
        );
        assert_eq!(
            encode::chat_state(
                "foobar",
                &[ChatUser {
                    user_name: "alice".into(),
                    user_id: "alice-id-0001".into()
                }]
            ),
            r#"{"record":"chat_state","chat_name":"foobar","users":[{"record":"chat_user","user_name":"alice","user_id":"alice-id-0001"}]}"#
        );
        assert_eq!(
            encode::chat_message("c", "u", "text/plain", "say \"hi\" <b>", "t", 1),
            r#"{"record":"chat_message","chat_name":"c","user_id":"u","mime_type":"text/plain","message":"say \"hi\" <b>","timestamp":"t","sequence":1}"#
        );
        let error = encode::protocol_error(&ProtocolError::missing_chat_name());
        assert_eq!(
            error,
            r#"{"record":"protocol_error","code":"CHAT_PROTOCOL-005","reason":"Missing chat name"}"#
        );
    }

    #[test]
    fn timestamps_have_second_precision() {
        let now = timestamp_now();
        assert_eq!(now.len(), 20);
        assert!(now.ends_with('Z'));
        assert_eq!(&now[10..11], "T");
    }
}
