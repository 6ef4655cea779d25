//! The distribution port and EPMD against clients that mean harm, with real
//! sockets on loopback (and real `erl` peers where a peer is involved):
//! where the listeners bind, name squatting, log flooding, EPMD's limits,
//! monitor cleanup that must not stall the runtime, spawn bursts that must
//! not disconnect a healthy peer, and frame headers that must not allocate.

mod node_support;

use std::time::{Duration, Instant};

use eetf::Term;
use flack::config::cli::{Cli, Command};
use flack::config::erl_args::ErlArgs;
use flack::config::vm_args::VmArgs;
use flack::config::{ConfigFiles, Settings};
use flack::node::dist::{flags, handshake};
use flack::node::epmd::server;
use flack::node::term::{as_atom, as_tuple, atom, tuple};
use flack::node::{Node, NodeEvent};
use node_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Tests that measure the whole process (RSS), and those that make it grow,
/// run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Settings for `flack foreground` with this vm.args text.
fn settings_with_vm_args(vm_args: &str) -> Settings {
    let cli = <Cli as clap::Parser>::try_parse_from(["flack", "foreground"]).expect("cli");
    let Command::Foreground(run) = cli.command else {
        panic!("foreground")
    };
    let files = ConfigFiles {
        vm_args: Some(VmArgs::parse("vm.args", vm_args).expect("vm.args")),
        ..ConfigFiles::default()
    };
    Settings::resolve_with(&run, ErlArgs::default(), files).expect("settings")
}

/// A port free on `ip` a moment ago.
fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

async fn refused(addr: (&str, u16)) -> bool {
    matches!(
        TcpStream::connect(addr).await,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

// ---------------------------------------------------------------------------
// Item 6: where the listeners bind.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dist_listener_binds_inet_dist_use_interface_and_port_range() {
    let epmd = TestEpmd::start().await;
    // The test holds 127.0.0.1:PORT itself: a node that bound the wildcard
    // address could not start, and no other process can answer there.
    let held = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let port = held.local_addr().expect("addr").port();
    let settings = settings_with_vm_args(&format!(
        "-kernel inet_dist_use_interface {{127,0,0,2}}\n-kernel inet_dist_listen_min {port}\n"
    ));
    let mut config = rust_config(&unique("iface"), "c_if", epmd.port);
    settings.apply_dist(&mut config);
    config.epmd_port = epmd.port;
    let node = Node::start(config)
        .await
        .expect("starts beside a listener on 127.0.0.1 at the same port");
    assert_eq!(node.port(), port, "a range of one port is that port");
    drop(held);
    assert!(
        refused(("127.0.0.1", port)).await,
        "the dist port answers on 127.0.0.1"
    );
    TcpStream::connect(("127.0.0.2", port))
        .await
        .expect("reachable on the configured interface");
    node.shutdown().await;

    // min..max with the first port taken: the next one is used.
    let taken = std::net::TcpListener::bind(("127.0.0.2", 0)).expect("bind");
    let first = taken.local_addr().expect("addr").port();
    let settings = settings_with_vm_args(&format!(
        "-kernel inet_dist_use_interface {{127,0,0,2}} inet_dist_listen_min {first} inet_dist_listen_max {}\n",
        first + 1
    ));
    let mut config = rust_config(&unique("range"), "c_if", epmd.port);
    settings.apply_dist(&mut config);
    config.epmd_port = epmd.port;
    match Node::start(config).await {
        Ok(node) => {
            assert_eq!(node.port(), first + 1);
            node.shutdown().await;
        }
        // The one other port of the range was taken by someone else too.
        Err(e) => assert!(e.to_string().contains("in use"), "{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_epmd_listens_on_erl_epmd_address_and_loopback() {
    let port = free_port("127.0.0.3");
    let addresses = server::listen_addresses(Some("127.0.0.3")).expect("addresses");
    let listeners = server::bind_all(&addresses, port).await.expect("binds");
    let cancel = CancellationToken::new();
    tokio::spawn(server::serve_many(
        listeners,
        cancel.clone(),
        server::Limits::default(),
    ));
    TcpStream::connect(("127.0.0.3", port))
        .await
        .expect("on ERL_EPMD_ADDRESS");
    TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("loopback is always added");
    assert!(refused(("127.0.0.4", port)).await, "not on other addresses");
    cancel.cancel();
}

// ---------------------------------------------------------------------------
// Item 7: a stranger holding a real peer's name.

/// Sends a name message claiming `name` and reads the status; the
/// connection is then held without ever answering the challenge.
async fn squat(node: &Node, name: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(("127.0.0.1", node.port()))
        .await
        .expect("connect");
    let hello = handshake::encode(&handshake::Msg::NameV6 {
        flags: flags::offered(true),
        creation: 1,
        name: name.to_owned(),
    });
    s.write_all(&hello).await.expect("write");
    let len = s.read_u16().await.expect("status length");
    let mut status = vec![0; usize::from(len)];
    s.read_exact(&mut status).await.expect("status");
    (s, String::from_utf8_lossy(&status[1..]).into_owned())
}

/// Waits for `{agent_up, Pid, Node, Up}` from `erl_node`; returns `Up`.
async fn agent_up_flag(ctl: &mut Ctl, erl_node: &str, within: Duration) -> Option<bool> {
    ctl.mailbox
        .receive(within, |r| match r {
            flack::node::Received::Message(_, m) => match as_tuple(m) {
                Some([tag, _, Term::Atom(n), up])
                    if as_atom(tag) == Some("agent_up") && n.name == erl_node =>
                {
                    Some(as_atom(up) == Some("true"))
                }
                _ => None,
            },
            _ => None,
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_squatter_does_not_keep_the_real_peer_out() {
    require_erl!();
    let epmd = TestEpmd::start().await;
    // Names chosen so that the real peer's name is the greater: net_kernel's
    // rule lets its attempt take over the squatter's pending one at once.
    let node = Node::start(rust_config(&unique("msq"), "c_sq", epmd.port))
        .await
        .expect("starts");
    let mut ctl = Ctl::new(&node);
    let erl_name = unique("zsq");
    let erl_full = format!("{erl_name}@localhost");
    let (_squatter, status) = squat(&node, &erl_full).await;
    assert_eq!(status, "ok", "the squatter's attempt is pending");
    let started = Instant::now();
    let _erl = Erl::start(&erl_name, "c_sq", epmd.port, node.name(), &[]);
    let up = agent_up_flag(&mut ctl, &erl_full, Duration::from_secs(30)).await;
    assert_eq!(
        up,
        Some(true),
        "erl's first connect_node failed while a squatter held its name"
    );
    // erl's own start-up is most of this; the squatter added nothing.
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "{:?}",
        started.elapsed()
    );
    let pong = ctl
        .cmd(&erl_full, tuple(vec![atom("ping"), atom(node.name())]))
        .await;
    assert_eq!(as_atom(&pong), Some("pong"));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_squatter_holding_a_lower_name_expires_within_the_setup_time() {
    require_erl!();
    let epmd = TestEpmd::start().await;
    // The real peer's name is the lower: it hears `nok` (net_kernel's rule)
    // until the squatter's handshake times out, one setup time at most.
    let mut config = rust_config(&unique("msq"), "c_sq2", epmd.port);
    config.setup_time = Duration::from_secs(3);
    let node = Node::start(config).await.expect("starts");
    let mut ctl = Ctl::new(&node);
    let erl_name = unique("asq");
    let erl_full = format!("{erl_name}@localhost");
    let (mut squatter, status) = squat(&node, &erl_full).await;
    assert_eq!(status, "ok");
    let squatted = Instant::now();
    // The squatter is cut off one setup time after it claimed the name,
    // however it dribbles: here it never sends another byte.
    let mut buf = [0u8; 512];
    let closed_after = loop {
        match tokio::time::timeout(Duration::from_secs(10), squatter.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break squatted.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("squatter still connected after 10 s"),
        }
    };
    assert!(closed_after < Duration::from_secs(4), "{closed_after:?}");
    let _erl = Erl::start(
        &erl_name,
        "c_sq2",
        epmd.port,
        node.name(),
        &["-kernel", "net_setuptime", "3"],
    );
    assert!(
        agent_up_flag(&mut ctl, &erl_full, Duration::from_secs(30))
            .await
            .is_some(),
        "erl never reached the node"
    );
    let pong = ctl
        .cmd(&erl_full, tuple(vec![atom("ping"), atom(node.name())]))
        .await;
    assert_eq!(as_atom(&pong), Some("pong"));
    node.shutdown().await;
}

// ---------------------------------------------------------------------------
// Item 8: wrong cookies and long names do not flood the log.

// One thread: everything the node logs is logged on the test's thread, where
// the capturing subscriber is installed.
#[tokio::test(flavor = "current_thread")]
async fn a_thousand_failed_handshakes_log_a_bounded_amount() {
    let (buffer, _guard) = capture_logs();
    let epmd = TestEpmd::start().await;
    let node = Node::start(rust_config(&unique("logs"), "right", epmd.port))
        .await
        .expect("starts");
    let port = node.port();
    let mut bad_cookie = 0;
    for i in 0..1000 {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let long = i % 2 == 1;
        let name = if long {
            format!("{}@localhost", "x".repeat(65_000))
        } else {
            format!("{}{i}@localhost", "w".repeat(200))
        };
        let local = handshake::Local {
            name,
            flags: flags::offered(true),
            creation: 5,
            cookie: "wrong".into(),
            step_timeout: Duration::from_secs(5),
        };
        let result = handshake::client(&mut s, &local, false).await;
        assert!(result.is_err(), "a wrong cookie got in");
        if !long {
            bad_cookie += 1;
        }
    }
    assert_eq!(bad_cookie, 500);
    assert!(node.connected_nodes().is_empty());
    node.shutdown().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = buffer.text();
    let logged = text.as_bytes();
    eprintln!(
        "1000 failed handshakes logged {} bytes in {} lines",
        logged.len(),
        text.lines().count()
    );
    assert!(
        logged.len() < 16 * 1024,
        "{} bytes logged; first lines:\n{}",
        logged.len(),
        text.lines()
            .take(3)
            .map(|l| &l[..l.len().min(300)])
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        text.lines().all(|l| l.len() < 512),
        "a log line longer than 512 bytes"
    );
}

// ---------------------------------------------------------------------------
// Item 9: our EPMD applies epmd's limits.

fn alive2(name: &[u8]) -> Vec<u8> {
    let mut body = vec![b'x', 0x0f, 0xa0, 77, 0, 0, 6, 0, 5];
    body.extend_from_slice(&(name.len() as u16).to_be_bytes());
    body.extend_from_slice(name);
    body.extend_from_slice(&[0, 0]);
    let mut req = (body.len() as u16).to_be_bytes().to_vec();
    req.extend_from_slice(&body);
    req
}

/// Registers `name`; `Some(stream)` (which holds the registration) when
/// accepted.
async fn register(port: u16, name: &[u8]) -> Option<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(&alive2(name)).await.ok()?;
    let mut resp = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut resp))
        .await
        .ok()?
        .ok()?;
    (resp == [b'v', 0]).then_some(s)
}

async fn names_reply(port: u16) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(&[0, 1, b'n']).await.expect("write");
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await.expect("read");
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_epmd_applies_epmds_limits() {
    let epmd = TestEpmd::start().await;
    // Names: 255 bytes is epmd's limit.
    assert!(
        register(epmd.port, &[b'a'; 256]).await.is_none(),
        "256-byte name"
    );
    let mut held = vec![
        register(epmd.port, &[b'a'; 255])
            .await
            .expect("255-byte name"),
    ];
    // A request longer than epmd's 1024-byte buffer is cut off at once,
    // before its bytes arrive.
    let mut s = TcpStream::connect(("127.0.0.1", epmd.port))
        .await
        .expect("connect");
    s.write_all(&[0xff, 0xff, b'x']).await.expect("write");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a 64 KB request is still being read: {read:?}"
    );
    // Registrations are bounded: 1024 names at most.
    let mut refused = 0;
    for i in 0..1100 {
        let mut name = format!("n{i}x").into_bytes();
        name.resize(255, b'y');
        match register(epmd.port, &name).await {
            Some(s) => held.push(s),
            None => refused += 1,
        }
    }
    assert_eq!(held.len(), 1024, "registrations held");
    assert_eq!(refused, 1100 + 1 - 1024);
    // So NAMES_REQ answers at most 1024 lines of a 255-byte name.
    let reply = names_reply(epmd.port).await;
    assert!(reply.len() <= 4 + 1024 * (255 + 30), "{}", reply.len());
    drop(held);
}

// ---------------------------------------------------------------------------
// Item 13: frame headers do not allocate.

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

async fn raw_peer(node: &Node, cookie: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", node.port()))
        .await
        .expect("connect");
    let local = handshake::Local {
        name: format!("{}@localhost", unique("raw")),
        flags: flags::offered(true),
        creation: 5,
        cookie: cookie.into(),
        step_timeout: Duration::from_secs(5),
    };
    handshake::client(&mut stream, &local, false)
        .await
        .expect("handshake");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_headers_announcing_64_mb_allocate_nothing() {
    let _serial = SERIAL.lock().await;
    let epmd = TestEpmd::start().await;
    let node = Node::start(rust_config(&unique("frames"), "c_fr", epmd.port))
        .await
        .expect("starts");
    let mut peers = Vec::new();
    for _ in 0..8 {
        peers.push(raw_peer(&node, "c_fr").await);
    }
    let before = rss_kb();
    for p in &mut peers {
        // 64 MB announced (the default limit), one byte sent.
        p.write_all(&[0x04, 0, 0, 0, 112]).await.expect("write");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let grown_mb = rss_kb().saturating_sub(before) / 1024;
    eprintln!("8 peers announcing 64 MB frames: RSS grew {grown_mb} MB");
    assert!(grown_mb < 64, "RSS grew {grown_mb} MB");
    assert_eq!(
        node.connected_nodes().len(),
        8,
        "the peers are still connected"
    );
    drop(peers);
    node.shutdown().await;
}

// ---------------------------------------------------------------------------
// Item 11: cleaning up a departed peer's monitors does not stall the runtime.

#[tokio::test(flavor = "current_thread")]
async fn cleaning_up_200k_monitors_does_not_stall_the_runtime() {
    require_erl!();
    let _serial = SERIAL.lock().await;
    let (_epmd, node, mut ctl, mut erl) = rust_and_erl("mons", "c_mons").await;
    let (target, _tb) = node.spawn_mailbox(4);
    const N: usize = 200_000;
    let ok = ctl
        .cmd(
            &erl.name,
            tuple(vec![
                atom("monitor_many"),
                target.clone().into(),
                Term::from(eetf::FixInteger::from(N as i32)),
            ]),
        )
        .await;
    assert_eq!(as_atom(&ok), Some("ok"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while node.monitor_count() < N {
        assert!(
            Instant::now() < deadline,
            "{} monitors",
            node.monitor_count()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A ticker on the (single) runtime thread, as a websocket's task would be.
    let stop = CancellationToken::new();
    let ticker = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            let mut last = Instant::now();
            while !stop.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(5)).await;
                worst = worst.max(last.elapsed());
                last = Instant::now();
            }
            worst
        })
    };
    let mut events = node.subscribe();
    erl.kill();
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Ok(NodeEvent::Down(n, _))) if *n == *erl.name => break,
            Ok(Ok(_)) => continue,
            other => panic!("no nodedown: {other:?}"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while node.monitor_count() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} monitors left",
            node.monitor_count()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    let worst = ticker.await.expect("ticker");
    eprintln!("{N} monitors cleaned up; the runtime's worst stall was {worst:?}");
    assert!(worst < Duration::from_millis(250), "stalled {worst:?}");
    node.shutdown().await;
}

// ---------------------------------------------------------------------------
// Item 12: a burst of spawn requests does not disconnect a peer that reads.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawn_burst_does_not_disconnect_a_reading_peer() {
    require_erl!();
    // Its queues would show in another test's measure of the process's RSS.
    let _serial = SERIAL.lock().await;
    let epmd = TestEpmd::start().await;
    let mut config = rust_config(&unique("rburst"), "c_burst", epmd.port);
    // A small queue toward each peer makes the burst exceed it many times.
    config.peer_queue = 1024;
    let node = Node::start(config).await.expect("starts");
    let mut ctl = Ctl::new(&node);
    let erl = Erl::start(&unique("eburst"), "c_burst", epmd.port, node.name(), &[]);
    ctl.agent_up(&erl.name).await;
    let mut events = node.subscribe();
    const N: i32 = 20_000;
    let counts = ctl
        .cmd(
            &erl.name,
            tuple(vec![
                atom("spawn_burst"),
                atom(node.name()),
                Term::from(eetf::FixInteger::from(N)),
            ]),
        )
        .await;
    while let Ok(e) = events.try_recv() {
        assert!(!matches!(e, NodeEvent::Down(..)), "peer dropped: {e:?}");
    }
    let n = Term::from(eetf::FixInteger::from(N));
    assert_eq!(counts, tuple(vec![n.clone(), n]), "replies and DOWNs");
    assert_eq!(node.connected_nodes(), vec![erl.name.clone()]);
    node.shutdown().await;
}
