//! Micro-benchmarks of the hot paths: parsing a client frame, encoding an
//! event once for a room, and encoding and decoding the Erlang records the
//! cluster exchanges.
//!
//! `cargo bench --bench hot_paths` measures (about a second per case);
//! under `cargo test --all-targets` it runs each case a few times only, to
//! show the paths work. Figures are nanoseconds per operation, the median of
//! several timed batches.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flack::cluster::records;
use flack::events::event::{ChatEvent, EventKind};
use flack::events::protocol::parse_client_record;

/// Runs `op` in batches for about `budget`; prints and returns the median
/// nanoseconds per call.
fn measure(name: &str, budget: Duration, mut op: impl FnMut()) -> f64 {
    // Size a batch to take about a millisecond.
    let mut batch = 1u64;
    loop {
        let start = Instant::now();
        for _ in 0..batch {
            op();
        }
        if start.elapsed() >= Duration::from_millis(1) || batch >= 1 << 24 {
            break;
        }
        batch *= 2;
    }
    let mut samples = Vec::new();
    let deadline = Instant::now() + budget;
    while samples.len() < 5 || (Instant::now() < deadline && samples.len() < 1000) {
        let start = Instant::now();
        for _ in 0..batch {
            op();
        }
        samples.push(start.elapsed().as_nanos() as f64 / batch as f64);
        if budget.is_zero() && samples.len() >= 5 {
            break;
        }
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let median = samples[samples.len() / 2];
    println!("{name:<48} {median:>10.1} ns/op");
    median
}

fn main() {
    let measuring = std::env::args().any(|arg| arg == "--bench");
    let budget = if measuring {
        Duration::from_secs(1)
    } else {
        Duration::ZERO
    };

    let frame = r#"{"record":"chat_message","chat_name":"lobby","mime_type":"text/plain","message":"hello, everyone in the lobby: how are you today?"}"#;
    measure("parse a chat_message frame", budget, || {
        black_box(parse_client_record(black_box(frame)).ok());
    });

    let chat: Arc<str> = Arc::from("lobby");
    let message = "hello, everyone in the lobby: how are you today?".to_owned();
    measure("encode one chat_message event (JSON, once)", budget, || {
        let event = ChatEvent::new(
            chat.clone(),
            EventKind::Message {
                user_id: "8b0d4d420469cda204dd8ce42eeb151f".into(),
                message: message.clone(),
            },
            "2026-11-28T04:45:59Z".into(),
            42,
        );
        black_box(event);
    });

    let event = Arc::new(ChatEvent::new(
        chat.clone(),
        EventKind::Message {
            user_id: "8b0d4d420469cda204dd8ce42eeb151f".into(),
            message,
        },
        "2026-11-28T04:45:59Z".into(),
        42,
    ));
    // Fan-out shares the encoded bytes: per member it is a reference count.
    measure("share an event with 1000 members", budget, || {
        for _ in 0..1000 {
            black_box(event.json.clone());
        }
    });

    measure("encode a chat_message record (Erlang term)", budget, || {
        black_box(records::encode(black_box(&event)));
    });
    let term = records::encode(&event);
    let mut wire = Vec::new();
    term.encode(&mut wire).expect("encodes");
    measure("encode a chat_message record to ETF bytes", budget, || {
        let mut out = Vec::with_capacity(256);
        black_box(&term).encode(&mut out).expect("encodes");
        black_box(out);
    });
    measure(
        "decode a chat_message record from ETF bytes",
        budget,
        || {
            let term = eetf::Term::decode(black_box(wire.as_slice())).expect("decodes");
            black_box(records::decode(&term).ok());
        },
    );
}
