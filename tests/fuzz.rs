//! Fuzzing on stable Rust, in the test command: what a stranger or a peer
//! can send is fed, as random bytes and as random mutations of a committed
//! corpus of real inputs, to the code that first reads it:
//!
//! - the distribution frame path: the guard ([`check_frame`]) and then
//!   erl_dist's decoder, exactly as a connection reads a frame;
//! - the distribution handshake decoder, in every state of the handshake;
//! - the websocket message path: raw bytes from a client through the frame
//!   counter ([`FrameGuard`]), tungstenite's server side, and the session.
//!
//! Nothing may panic, and whatever the guard accepts must decode. The
//! corpus lives in `tests/data/fuzz/<target>/` (one input per file); it is
//! written from real messages by `FLACK_FUZZ_WRITE_CORPUS=1 cargo test
//! --test fuzz write_corpus -- --ignored`. Each target runs a bounded number
//! of cases from a fresh random seed, printed so that a failure can be
//! replayed (`FLACK_FUZZ_SEED=N`); `PROPTEST_CASES=N` runs longer.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use eetf::{Atom, FixInteger, Pid as EtfPid, Term, Tuple};
use erl_dist::message::Message;
use flack::chat::frames::FrameGuard;
use flack::chat::session::{Session, SessionLimits};
use flack::node::dist::guard::check_frame;
use flack::node::dist::handshake::{self, Expect, Msg};
use futures::StreamExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// Cases per target in the test command.
const CASES: u32 = 3000;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz")
        .join(target)
}

/// The committed inputs of a target; an empty corpus is a broken checkout.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(target);
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("the fuzz corpus {} is missing: {error}", dir.display()))
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path()).ok())
        .collect();
    inputs.sort();
    assert!(
        !inputs.is_empty(),
        "the fuzz corpus {} is empty",
        dir.display()
    );
    inputs
}

fn runner(target: &str) -> TestRunner {
    let seed = std::env::var("FLACK_FUZZ_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("fuzz {target}: seed {seed} (replay with FLACK_FUZZ_SEED={seed})");
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() {
        Config::default().cases
    } else {
        CASES
    };
    TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    })
}

/// One edit of a corpus input.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Set(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Duplicate(usize, usize),
}

fn apply(input: &mut Vec<u8>, edit: &Edit) {
    let len = input.len();
    let at = |i: usize| if len == 0 { 0 } else { i % len };
    match edit {
        Edit::Flip(i, bit) if len > 0 => input[at(*i)] ^= 1 << (bit % 8),
        Edit::Set(i, value) if len > 0 => input[at(*i)] = *value,
        Edit::Truncate(i) => input.truncate(at(*i)),
        Edit::Insert(i, bytes) => {
            let i = if len == 0 { 0 } else { i % (len + 1) };
            input.splice(i..i, bytes.iter().copied());
        }
        Edit::Remove(i, n) if len > 0 => {
            let start = at(*i);
            let end = (start + n % 16).min(len);
            input.drain(start..end);
        }
        Edit::Duplicate(i, n) if len > 0 => {
            let start = at(*i);
            let end = (start + 1 + n % 32).min(len);
            let copy = input[start..end].to_vec();
            input.splice(end..end, copy);
        }
        _ => {}
    }
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, n)| Edit::Remove(i, n)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, n)| Edit::Duplicate(i, n)),
    ]
}

/// Random bytes, or a corpus input with a few random edits.
fn inputs(corpus: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let mutated = (
        prop::sample::select(corpus),
        prop::collection::vec(edit(), 0..6),
    )
        .prop_map(|(mut input, edits)| {
            for edit in &edits {
                apply(&mut input, edit);
            }
            input
        });
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..512),
        4 => mutated,
    ]
}

fn run(target: &str, check: impl Fn(&[u8])) {
    let corpus = corpus(target);
    let mut runner = runner(target);
    let result = runner.run(&inputs(corpus), |input| {
        check(&input);
        Ok(())
    });
    if let Err(failure) = result {
        panic!("fuzz {target}: {failure}");
    }
}

// ---------------------------------------------------------------------
// The distribution frame path.

/// What a connection does with the bytes of one frame after its type byte.
fn read_frame(body: &[u8]) {
    if check_frame(body).is_ok() {
        // The guard's promise: a frame it passes is well formed enough for
        // the decoder, which may still refuse it, but never panics.
        let _ = Message::read_from(&mut &body[..]);
    }
}

#[test]
fn distribution_frames() {
    run("dist_frame", read_frame);
}

// ---------------------------------------------------------------------
// The distribution handshake.

const EXPECTS: [Expect; 6] = [
    Expect::Name,
    Expect::Status,
    Expect::Challenge,
    Expect::ComplementOrReply,
    Expect::Reply,
    Expect::Ack,
];

#[test]
fn handshake_messages() {
    run("handshake", |body| {
        for expect in EXPECTS {
            if let Some(message) = handshake::decode(body, expect) {
                // What decodes re-encodes to something that decodes the same.
                let again = handshake::encode(&message);
                assert_eq!(
                    handshake::decode(&again[2..], expect).as_ref(),
                    Some(&message),
                    "{expect:?}: {body:?}"
                );
            }
        }
    });
}

// ---------------------------------------------------------------------
// The websocket message path.

/// A client connection that delivers `input` and then ends; what the
/// server writes is discarded.
struct Replay {
    input: Vec<u8>,
    at: usize,
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = buf.remaining().min(self.input.len() - self.at);
        let at = self.at;
        buf.put_slice(&self.input[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Reads every message a client's bytes make and hands each to a session,
/// as a connection does, until the stream or the session ends.
async fn websocket_session(input: Vec<u8>) {
    let stream = FrameGuard::new(Replay { input, at: 0 }, 128);
    let config = WebSocketConfig::default()
        .max_message_size(Some(256 * 1024))
        .max_frame_size(Some(256 * 1024));
    let mut socket = WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await;
    let mut session = Session::with_limits(SessionLimits::default());
    while let Some(Ok(message)) = socket.next().await {
        let step = match message {
            WsMessage::Text(text) => session.on_text(text.as_str()),
            WsMessage::Binary(_) => session.on_binary(),
            WsMessage::Close(_) => break,
            _ => continue,
        };
        if matches!(step, flack::chat::session::Step::Fail(_)) {
            break;
        }
    }
}

#[test]
fn websocket_client_bytes() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    run("websocket", |input| {
        runtime.block_on(websocket_session(input.to_vec()));
    });
}

// ---------------------------------------------------------------------
// The corpus, from real inputs.

fn pid(node: &str, id: u32) -> EtfPid {
    EtfPid::new(node.to_owned(), id, 0, 1_764_300_000)
}

fn frame(message: Message) -> Vec<u8> {
    // The frame after its length and its 112 type byte: the control
    // message and the payload, each with its 131 version byte.
    let mut bytes = Vec::new();
    message.write_into(&mut bytes).expect("encodes");
    bytes
}

fn chat_record() -> Term {
    Term::from(Tuple::from(vec![
        Term::from(Atom::from("chat_message")),
        Term::from(eetf::Binary::from(b"foobar".to_vec())),
        Term::from(eetf::Binary::from(
            b"0123456789abcdef0123456789abcdef".to_vec(),
        )),
        Term::from(eetf::Binary::from(b"text/plain".to_vec())),
        Term::from(eetf::Binary::from(b"hello".to_vec())),
        Term::from(eetf::Binary::from(b"2026-11-29T15:00:00Z".to_vec())),
        Term::from(FixInteger::from(42)),
    ]))
}

fn client_frame(text: &str) -> Vec<u8> {
    // A masked client text frame (mask 0x01020304).
    let mask = [1u8, 2, 3, 4];
    let payload: Vec<u8> = text
        .bytes()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    let mut out = vec![0x81];
    if payload.len() < 126 {
        out.push(0x80 | payload.len() as u8);
    } else {
        out.push(0x80 | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend_from_slice(&payload);
    out
}

#[test]
#[ignore]
fn write_corpus() {
    if std::env::var_os("FLACK_FUZZ_WRITE_CORPUS").is_none() {
        return;
    }
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join(name), bytes).expect("corpus file");
    };
    let (a, b) = (pid("flack1@vm", 93), pid("rust@vm", 7));
    let frames = [
        ("send", Message::send(b.clone(), chat_record())),
        (
            "reg_send",
            Message::reg_send(
                a.clone(),
                Atom::from("gproc_dist"),
                Term::from(Tuple::from(vec![
                    Term::from(Atom::from("$leader_call")),
                    Term::from(Atom::from("get_leader")),
                ])),
            ),
        ),
        ("link", Message::link(a.clone(), b.clone())),
        (
            "exit",
            Message::exit(a.clone(), b.clone(), Term::from(Atom::from("normal"))),
        ),
    ];
    for (name, message) in frames {
        write("dist_frame", name, &frame(message));
    }
    let handshakes = [
        (
            "name_v6",
            Msg::NameV6 {
                flags: 0x0d_07df_7fbd,
                creation: 1_764_300_000,
                name: "flack1@vm".into(),
            },
        ),
        ("status_ok", Msg::Status("ok".into())),
        (
            "challenge_v6",
            Msg::ChallengeV6 {
                flags: 0x0d_07df_7fbd,
                challenge: 0x1234_5678,
                creation: 1_764_300_001,
                name: "rust@vm".into(),
            },
        ),
    ];
    for (name, message) in handshakes {
        let bytes = handshake::encode(&message);
        write("handshake", name, &bytes[2..]);
    }
    let conversation = [
        r#"{"record":"client_hello","protocol_version":"1.0"}"#,
        r#"{"record":"authenticate","user_name":"alice"}"#,
        r#"{"record":"join_chat","chat_name":"foobar"}"#,
        r#"{"record":"chat_message","chat_name":"foobar","mime_type":"text/plain","message":"hi"}"#,
        r#"{"record":"leave_chat","chat_name":"foobar"}"#,
        r#"{"record":"client_goodbye"}"#,
    ];
    let mut all = Vec::new();
    for (i, text) in conversation.iter().enumerate() {
        let bytes = client_frame(text);
        write("websocket", &format!("frame_{i}"), &bytes);
        all.extend_from_slice(&bytes);
    }
    write("websocket", "conversation", &all);
}

/// The corpus is what it claims to be: real inputs that the code under test
/// accepts, so that its mutations reach past the first check.
#[test]
fn the_corpus_is_accepted_input() {
    for body in corpus("dist_frame") {
        check_frame(&body).expect("the guard passes a real frame");
        Message::read_from(&mut &body[..]).expect("a real frame decodes");
    }
    for body in corpus("handshake") {
        assert!(
            EXPECTS
                .iter()
                .any(|expect| handshake::decode(&body, *expect).is_some()),
            "a real handshake message decodes: {body:?}"
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let conversation = std::fs::read(corpus_dir("websocket").join("conversation"))
        .expect("the conversation input");
    let steps = runtime.block_on(async {
        let stream = FrameGuard::new(
            Replay {
                input: conversation,
                at: 0,
            },
            128,
        );
        let mut socket = WebSocketStream::from_raw_socket(stream, Role::Server, None).await;
        let mut session = Session::with_limits(SessionLimits::default());
        let mut steps = Vec::new();
        while let Some(Ok(WsMessage::Text(text))) = socket.next().await {
            steps.push(format!("{:?}", session.on_text(text.as_str())));
        }
        steps
    });
    assert_eq!(steps.len(), 6, "{steps:?}");
    assert!(steps[5].starts_with("Goodbye"), "{steps:?}");
}
