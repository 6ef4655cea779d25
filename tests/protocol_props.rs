//! Property tests: whatever a client sends, the parser and the session
//! answer with a step or a protocol error, never a panic.

use flack::chat::session::{Phase, Session, Step};
use flack::events::protocol::{parse_client_hello, parse_client_record};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Arbitrary JSON values, nested a little.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Objects shaped like client records: a known or unknown `record` and
/// known field names with arbitrary values.
fn record_like() -> impl Strategy<Value = String> {
    let record = prop_oneof![
        Just(json!("client_hello")),
        Just(json!("authenticate")),
        Just(json!("join_chat")),
        Just(json!("chat_message")),
        Just(json!("leave_chat")),
        Just(json!("ping")),
        Just(json!("client_goodbye")),
        json_value(),
    ];
    let field = prop_oneof![
        Just("user_name".to_owned()),
        Just("user_id".to_owned()),
        Just("chat_name".to_owned()),
        Just("mime_type".to_owned()),
        Just("message".to_owned()),
        Just("protocol_version".to_owned()),
        ".{0,6}",
    ];
    (record, prop::collection::vec((field, json_value()), 0..5)).prop_map(|(record, fields)| {
        let mut object = Map::new();
        object.insert("record".into(), record);
        for (key, value) in fields {
            object.insert(key, value);
        }
        Value::Object(object).to_string()
    })
}

fn drive(session: &mut Session, frames: &[String]) {
    for frame in frames {
        let step = session.on_text(frame);
        if let Step::Fail(error) = &step {
            assert!(!error.code.is_empty() && !error.reason.is_empty());
            assert_eq!(session.phase(), Phase::Closed);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,200}") {
        let _ = parse_client_hello(&text);
        let _ = parse_client_record(&text);
        let mut session = Session::new();
        session.on_text(&text);
    }

    #[test]
    fn arbitrary_bytes_as_lossy_text_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_client_record(&text);
    }

    #[test]
    fn record_shaped_conversations_never_panic(frames in prop::collection::vec(record_like(), 1..12)) {
        let mut fresh = Session::new();
        drive(&mut fresh, &frames);
        let mut authenticated = Session::new();
        authenticated.on_text(r#"{"record":"client_hello","protocol_version":"1.0"}"#);
        authenticated.on_text(r#"{"record":"authenticate","user_name":"p"}"#);
        drive(&mut authenticated, &frames);
    }
}
