//! Broken or hostile peers: after a correct handshake, a raw client sends
//! frames a real node never would. Each must close only that connection,
//! with a log line, while the node keeps serving its other peers. No `erl`
//! is needed: the well-behaved peer is a second Rust node.

mod node_support;

use std::time::Duration;

use flack::node::dist::{flags, handshake};
use flack::node::term::{as_atom, atom};
use flack::node::{Node, Received};
use node_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn raw_peer(node: &Node, cookie: &str) -> Result<TcpStream, handshake::HandshakeError> {
    let mut stream = TcpStream::connect(("127.0.0.1", node.port())).await?;
    let local = handshake::Local {
        name: format!("{}@localhost", unique("raw")),
        flags: flags::offered(true),
        creation: 5,
        cookie: cookie.into(),
        step_timeout: Duration::from_secs(5),
    };
    handshake::client(&mut stream, &local, false).await?;
    Ok(stream)
}

/// Whether the node closed `stream` (EOF within a few seconds).
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // ticks or other traffic
            Err(_) => return false,
        }
    }
}

async fn still_talks(a: &Node, b: &Node) {
    let (p, mut mb) = b.spawn_mailbox(4);
    assert_eq!(
        a.send(&p, atom("still_here")),
        flack::node::Delivery::Accepted
    );
    let got = mb.recv_timeout(WAIT).await;
    assert!(
        matches!(got, Some(Received::Message(_, ref t)) if as_atom(t) == Some("still_here")),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_their_connection() {
    let epmd = TestEpmd::start().await;
    let mut config = rust_config(&unique("hostile"), "c_h", epmd.port);
    config.max_frame = 1 << 20;
    let a = Node::start(config).await.expect("a starts");
    let b = Node::start(rust_config(&unique("friend"), "c_h", epmd.port))
        .await
        .expect("b starts");
    assert!(
        b.connect(a.name()).await,
        "rust nodes connect to each other"
    );
    still_talks(&b, &a).await;

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("oversized frame", (2u32 << 20).to_be_bytes().to_vec()),
        ("not pass-through", vec![0, 0, 0, 2, 68, 0]),
        ("truncated term", vec![0, 0, 0, 3, 112, 131, 104]),
        (
            "list claiming 4G elements",
            vec![0, 0, 0, 8, 112, 131, 108, 0xff, 0xff, 0xff, 0xff, 106],
        ),
        (
            "unknown control op",
            vec![0, 0, 0, 6, 112, 131, 104, 1, 97, 99],
        ),
        ("control is not a tuple", vec![0, 0, 0, 4, 112, 131, 97, 1]),
        ("truncated frame then close", vec![0, 0, 1, 0, 112, 131]),
    ];
    for (what, bytes) in cases {
        let mut s = raw_peer(&a, "c_h").await.expect("handshake");
        s.write_all(&bytes).await.expect("write");
        if what.contains("then close") {
            s.shutdown().await.ok();
        }
        assert!(closed(&mut s).await, "{what}: connection not closed");
        still_talks(&b, &a).await;
        still_talks(&a, &b).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cookie_learns_nothing() {
    let epmd = TestEpmd::start().await;
    let a = Node::start(rust_config(&unique("cookie"), "right", epmd.port))
        .await
        .expect("starts");
    match raw_peer(&a, "wrong").await {
        Err(handshake::HandshakeError::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof)
        }
        other => panic!("expected a silent close, got {other:?}"),
    }
    assert!(a.connected_nodes().is_empty());
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_name_there_is_no_distribution() {
    let node = Node::start(flack::node::NodeConfig::local())
        .await
        .expect("starts");
    assert!(!node.is_distributed());
    assert_eq!(node.name(), "nonode@nohost");
    let (p, mut mb) = node.spawn_mailbox(4);
    assert_eq!(
        node.send(&p, atom("local")),
        flack::node::Delivery::Accepted
    );
    assert!(mb.recv_timeout(WAIT).await.is_some());
    let (w, mut wb) = node.spawn_mailbox(4);
    let remote = flack::node::Pid::new(std::sync::Arc::from("x@y"), 1, 0, 1);
    node.monitor(&w, &remote);
    assert!(
        matches!(wb.recv_timeout(WAIT).await, Some(Received::Message(_, ref t)) if is_down(t, "noconnection"))
    );
}
