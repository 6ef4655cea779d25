//! The flack v1 protocol, end to end: real websocket clients against a real
//! node on an ephemeral loopback port.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use futures::SinkExt;
use serde_json::{Value, json};
use support::{
    Client, Received, assert_each_learned_once, join_all_at_once, keys, node, node_with, run_args,
};
use tokio_tungstenite::tungstenite::Message;

fn is_timestamp(value: &Value) -> bool {
    let Some(text) = value.as_str() else {
        return false;
    };
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%SZ").is_ok() && text.len() == 20
}

#[tokio::test]
async fn every_record_of_a_conversation() {
    let node = node().await;
    let addr = node.local_addr;

    let mut alice = Client::connect(addr).await;
    alice
        .send(json!({"record": "client_hello", "protocol_version": "1.0"}))
        .await;
    let hello = alice.expect("server_hello").await;
    assert_eq!(
        hello,
        json!({"record": "server_hello", "protocol_version": "1.0"})
    );
    alice
        .send(json!({"record": "authenticate", "user_name": "alice", "user_id": "alice-id-0001"}))
        .await;
    let authenticated = alice.expect("authenticated").await;
    assert_eq!(
        authenticated,
        json!({"record": "authenticated", "user_id": "alice-id-0001"})
    );
    alice.user_id = "alice-id-0001".into();

    let (state, joined) = alice.join("foobar").await;
    assert_eq!(
        state,
        json!({"record": "chat_state", "chat_name": "foobar", "users": []})
    );
    assert_eq!(
        keys(&joined),
        [
            "record",
            "chat_name",
            "user_name",
            "user_id",
            "timestamp",
            "sequence"
        ]
    );
    assert_eq!(joined["user_name"], "alice");
    assert!(is_timestamp(&joined["timestamp"]), "{joined}");

    let mut bob = Client::login(addr, "bob").await;
    assert_eq!(bob.user_id.len(), 32);
    assert!(
        bob.user_id
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    let (state, bob_joined) = bob.join("foobar").await;
    assert_eq!(
        state["users"],
        json!([{"record": "chat_user", "user_name": "alice", "user_id": "alice-id-0001"}])
    );
    assert_eq!(keys(&state["users"][0]), ["record", "user_name", "user_id"]);
    assert_eq!(alice.expect("joined").await, bob_joined);

    // Client-sent user_id, timestamp and sequence are ignored.
    bob.send(
        json!({"record": "chat_message", "chat_name": "foobar", "mime_type": "text/plain",
        "message": "hello from bob", "user_id": "forged", "timestamp": "x", "sequence": 1000}),
    )
    .await;
    let at_bob = bob.expect("chat_message").await;
    let at_alice = alice.expect("chat_message").await;
    assert_eq!(at_bob, at_alice);
    assert_eq!(
        keys(&at_bob),
        [
            "record",
            "chat_name",
            "user_id",
            "mime_type",
            "message",
            "timestamp",
            "sequence"
        ]
    );
    assert_eq!(at_bob["user_id"], bob.user_id.as_str());
    assert_eq!(at_bob["mime_type"], "text/plain");
    assert_eq!(at_bob["message"], "hello from bob");
    assert!(is_timestamp(&at_bob["timestamp"]));

    alice.send(json!({"record": "ping"})).await;
    assert_eq!(
        alice.expect("ping_reply").await,
        json!({"record": "ping_reply"})
    );

    alice
        .send(json!({"record": "leave_chat", "chat_name": "foobar"}))
        .await;
    let left = alice.expect("left").await;
    assert_eq!(
        keys(&left),
        ["record", "chat_name", "user_id", "timestamp", "sequence"]
    );
    assert_eq!(left["user_id"], "alice-id-0001");
    assert_eq!(bob.expect("left").await, left);

    // Sequences strictly increase per chat: joined(a), joined(b), message, left.
    let sequences: Vec<u64> = [&joined, &bob_joined, &at_bob, &left]
        .iter()
        .map(|record| record["sequence"].as_u64().expect("integer sequence"))
        .collect();
    assert!(
        sequences.windows(2).all(|pair| pair[0] < pair[1]),
        "{sequences:?}"
    );

    bob.send(json!({"record": "client_goodbye"})).await;
    assert_eq!(
        bob.expect("server_goodbye").await,
        json!({"record": "server_goodbye"})
    );
    bob.expect_close().await;
    node.stop().await.expect("clean stop");
}

#[tokio::test]
async fn every_protocol_error_has_the_original_code_and_reason() {
    let node = node().await;
    let addr = node.local_addr;

    let first_frames: &[(&str, &str, &str)] = &[
        (
            "not json",
            "CHAT-001",
            "A client_hello message was expected",
        ),
        (
            r#"{"record":"authenticate","user_name":"x"}"#,
            "CHAT-001",
            "A client_hello message was expected",
        ),
        (
            r#"{"record":"client_hello","protocol_version":"2.0"}"#,
            "CHAT-002",
            "An unsupported protocol version was requested: 2.0",
        ),
        (
            r#"{"record":"client_hello","protocol_version":1}"#,
            "CHAT-002",
            "An unsupported protocol version was requested: 1",
        ),
    ];
    for (frame, code, reason) in first_frames {
        let mut client = Client::connect(addr).await;
        client.send_text((*frame).to_owned()).await;
        client.expect_protocol_error(code, reason).await;
    }

    let mut client = Client::connect(addr).await;
    client
        .ws
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .expect("sent");
    client
        .expect_protocol_error("CHAT-003", "Unexpected message")
        .await;

    let before_auth: &[(&str, &str, &str)] = &[
        ("{", "CHAT_PROTOCOL-001", "Unrecognized message"),
        (
            r#"{"record":"dance"}"#,
            "CHAT_PROTOCOL-001",
            "Unrecognized message",
        ),
        (
            r#"{"record":"ping"}"#,
            "CHAT_PROTOCOL-002",
            "Expected authenticate message",
        ),
        (
            r#"{"record":"join_chat","chat_name":"c"}"#,
            "CHAT_PROTOCOL-002",
            "Expected authenticate message",
        ),
        (
            r#"{"record":"authenticate"}"#,
            "CHAT_PROTOCOL-004",
            "authenticate message missing user_name field",
        ),
        (
            r#"{"record":"authenticate","user_name":""}"#,
            "FLACK-002",
            "Field user_name must not be empty",
        ),
        (
            r#"{"record":"authenticate","user_name":["x"]}"#,
            "FLACK-001",
            "Field user_name must be a string",
        ),
    ];
    for (frame, code, reason) in before_auth {
        let mut client = Client::connect(addr).await;
        client.hello().await;
        client.send_text((*frame).to_owned()).await;
        client.expect_protocol_error(code, reason).await;
    }

    let chatting: &[(&str, &str, &str)] = &[
        (
            r#"{"record":"authenticate","user_name":"again"}"#,
            "CHAT_PROTOCOL-003",
            "Already authenticated",
        ),
        (
            r#"{"record":"join_chat"}"#,
            "CHAT_PROTOCOL-005",
            "Missing chat name",
        ),
        (
            r#"{"record":"join_chat","chat_name":"joined"}"#,
            "CHAT_PROTOCOL-006",
            "Chat already joined",
        ),
        (
            r#"{"record":"chat_message","chat_name":"other","mime_type":"text/plain","message":"m"}"#,
            "CHAT_PROTOCOL-007",
            "Chat has not been joined",
        ),
        (
            r#"{"record":"leave_chat","chat_name":"other"}"#,
            "CHAT_PROTOCOL-008",
            "Chat has not been joined",
        ),
        (
            r#"{"record":"join_chat","chat_name":""}"#,
            "FLACK-002",
            "Field chat_name must not be empty",
        ),
        (
            r#"{"record":"join_chat","chat_name":5}"#,
            "FLACK-001",
            "Field chat_name must be a string",
        ),
        (
            r#"{"record":"chat_message","chat_name":"joined","message":"m"}"#,
            "FLACK-003",
            "Unsupported mime_type (missing): only text/plain is accepted",
        ),
        (
            r#"{"record":"chat_message","chat_name":"joined","mime_type":"text/html","message":"m"}"#,
            "FLACK-003",
            "Unsupported mime_type text/html: only text/plain is accepted",
        ),
        (
            r#"{"record":"chat_message","chat_name":"joined","mime_type":"text/plain"}"#,
            "FLACK-001",
            "Field message must be a string",
        ),
    ];
    for (frame, code, reason) in chatting {
        let mut client = Client::login(addr, "erring").await;
        client.join("joined").await;
        client.send_text((*frame).to_owned()).await;
        client.expect_protocol_error(code, reason).await;
    }
    node.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_frame_over_the_limit_is_refused_and_others_keep_chatting() {
    let mut args = run_args();
    args.max_frame_bytes = 1024;
    let node = node_with(args).await;
    let mut watcher = Client::login(node.local_addr, "watcher").await;
    watcher.join("room").await;
    let mut big = Client::login(node.local_addr, "big").await;
    big.join("room").await;
    watcher.expect("joined").await;

    big.post("room", &"x".repeat(2000)).await;
    big.expect_protocol_error("FLACK-004", "Frame exceeds the limit of 1024 bytes")
        .await;
    let left = watcher.expect("left").await;
    assert_eq!(left["user_id"], big.user_id.as_str());
    watcher.post("room", "still here").await;
    assert_eq!(
        watcher.expect("chat_message").await["message"],
        "still here"
    );
    node.stop().await.expect("clean stop");
}

#[tokio::test]
async fn simultaneous_joiners_each_learn_every_member_exactly_once() {
    const CLIENTS: usize = 300;
    let node = node().await;
    let addr = node.local_addr;
    let mut clients = Vec::new();
    for index in 0..CLIENTS {
        clients.push(Client::login(addr, &format!("user{index}")).await);
    }
    let ids: HashSet<String> = clients
        .iter()
        .map(|client| client.user_id.clone())
        .collect();

    // Everyone sends join_chat at once, then reads until it knows everyone.
    let mut finished = join_all_at_once(clients, "crowd", CLIENTS).await;
    assert_each_learned_once(&mut finished, &ids).await;
    node.stop().await.expect("clean stop");
}

#[tokio::test]
async fn fan_out_keeps_each_senders_order() {
    const SENDERS: usize = 4;
    const MESSAGES: usize = 200;
    let node = node().await;
    let addr = node.local_addr;
    let mut members = Vec::new();
    for index in 0..SENDERS + 2 {
        let mut client = Client::login(addr, &format!("m{index}")).await;
        client.join("fan").await;
        members.push(client);
    }
    // Drain the joins of later members.
    for (index, member) in members.iter_mut().enumerate() {
        for _ in index + 1..SENDERS + 2 {
            member.expect("joined").await;
        }
    }
    let senders: Vec<String> = members[..SENDERS]
        .iter()
        .map(|m| m.user_id.clone())
        .collect();
    let posters: Vec<Client> = members.drain(..SENDERS).collect();
    let posting: Vec<_> = posters
        .into_iter()
        .enumerate()
        .map(|(index, mut poster)| {
            tokio::spawn(async move {
                for n in 0..MESSAGES {
                    poster.post("fan", &format!("{index}:{n}")).await;
                }
                poster
            })
        })
        .collect();
    let mut returned = Vec::new();
    for task in posting {
        returned.push(task.await.expect("poster"));
    }
    for member in returned.iter_mut().chain(members.iter_mut()) {
        let mut next = [0usize; SENDERS];
        let mut last_sequence = 0;
        for _ in 0..SENDERS * MESSAGES {
            let message = member.expect("chat_message").await;
            let text = message["message"].as_str().expect("text");
            let (sender, n) = text.split_once(':').expect("index:n");
            let (sender, n): (usize, usize) =
                (sender.parse().expect("sender"), n.parse().expect("n"));
            assert_eq!(message["user_id"], senders[sender].as_str());
            assert_eq!(n, next[sender], "sender {sender} out of order");
            next[sender] += 1;
            let sequence = message["sequence"].as_u64().expect("sequence");
            assert!(sequence > last_sequence);
            last_sequence = sequence;
        }
    }
    node.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_vanished_client_leaves_its_chats() {
    let node = node().await;
    let mut stay = Client::login(node.local_addr, "stay").await;
    stay.join("a").await;
    stay.join("b").await;
    let mut gone = Client::login(node.local_addr, "gone").await;
    gone.join("a").await;
    gone.join("b").await;
    stay.expect("joined").await;
    stay.expect("joined").await;
    let gone_id = gone.user_id.clone();
    drop(gone); // TCP drop, no goodbye, no close frame
    let mut chats = HashSet::new();
    for _ in 0..2 {
        let left = stay.expect("left").await;
        assert_eq!(left["user_id"], gone_id.as_str());
        chats.insert(left["chat_name"].as_str().expect("chat").to_owned());
    }
    assert_eq!(chats, HashSet::from(["a".to_owned(), "b".to_owned()]));
    node.stop().await.expect("clean stop");
}

#[tokio::test]
async fn idle_connections_close_and_pinging_ones_stay() {
    let mut args = run_args();
    args.idle_timeout_secs = 2;
    let node = node_with(args).await;
    let mut idle = Client::login(node.local_addr, "idle").await;
    let mut busy = Client::login(node.local_addr, "busy").await;
    let started = tokio::time::Instant::now();
    // The pinger stays well inside the timeout (a ping every 200 ms against
    // 2 s), so a busy machine does not make it look idle.
    let pinger = tokio::spawn(async move {
        while started.elapsed() < Duration::from_secs(5) {
            busy.send(json!({"record": "ping"})).await;
            busy.expect("ping_reply").await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        busy
    });
    let close = idle.expect_close().await;
    // Never before the timeout (the lower bound is the rule, not speed).
    assert!(started.elapsed() >= Duration::from_millis(1900));
    assert_eq!(close.map(|frame| u16::from(frame.code)), Some(1000));
    let mut busy = pinger.await.expect("pinger");
    busy.send(json!({"record": "ping"})).await;
    busy.expect("ping_reply").await;
    node.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_slow_reader_is_dropped_while_others_keep_receiving() {
    let mut args = run_args();
    args.outbound_queue = 8;
    args.write_timeout_secs = 2;
    let node = node_with(args).await;
    let addr = node.local_addr;
    // The slow client's kernel receive buffer is small, so what it does not
    // read backs up into the server after a few frames whatever this
    // machine's socket buffer sizes are.
    let slow = Client::connect_with_receive_buffer(addr, 4096).await;
    let mut slow = Client::authenticate(slow, "slow").await;
    slow.join("firehose").await;
    let mut reader = Client::login(addr, "reader").await;
    reader.join("firehose").await;
    let mut sender = Client::login(addr, "sender").await;
    sender.join("firehose").await;
    reader.expect("joined").await;

    // The slow client stops reading. The sender posts large messages until
    // it hears that the slow client left, within a bound in count and time;
    // it reads its own copy of each message before the next, so only the
    // slow client falls behind.
    const MAX_MESSAGES: usize = 2_000;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let payload = "y".repeat(60 * 1024 - 200);
    let reading = tokio::spawn(async move {
        let mut got = 0usize;
        loop {
            match reader.receive().await {
                Received::Record(record) if record["record"] == "chat_message" => {
                    if record["message"] == "done" {
                        return (reader, got);
                    }
                    got += 1;
                }
                Received::Record(_) => {}
                other => panic!("reader lost its connection: {other:?}"),
            }
        }
    });
    let mut sent = 0;
    let mut slow_left = false;
    while !slow_left {
        assert!(
            sent < MAX_MESSAGES && tokio::time::Instant::now() < deadline,
            "the slow client was never dropped ({sent} messages sent)"
        );
        sender.post("firehose", &payload).await;
        sent += 1;
        loop {
            let record = sender.expect_any().await;
            if record["record"] == "chat_message" {
                break;
            }
            assert_eq!(record["record"], "left");
            assert_eq!(record["user_id"], slow.user_id.as_str());
            slow_left = true;
        }
    }
    // Everyone else got every message, the ones after the drop included.
    sender.post("firehose", "done").await;
    let (_reader, got) = reading.await.expect("reader got every message");
    assert_eq!(got, sent, "the reader missed messages");
    assert_eq!(
        node.metrics
            .slow_clients_dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // The slow client finds its connection closed when it reads again.
    let mut saw_close = false;
    loop {
        match slow.receive().await {
            Received::Record(_) => continue,
            Received::Close(frame) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(4008));
                saw_close = true;
                break;
            }
            Received::Ended => break,
        }
    }
    let _ = saw_close; // a full socket may not have room left for the close frame
    node.stop().await.expect("clean stop");
}

#[tokio::test]
async fn shutdown_sends_going_away_to_every_client() {
    let node = node().await;
    let mut a = Client::login(node.local_addr, "a").await;
    let mut b = Client::connect(node.local_addr).await;
    let stopping = tokio::spawn(node.stop());
    for client in [&mut a, &mut b] {
        let frame = client.expect_close().await;
        assert_eq!(frame.map(|f| u16::from(f.code)), Some(1001));
    }
    stopping.await.expect("joined").expect("clean stop");
}
