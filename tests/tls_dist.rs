//! The distribution over TLS against real Debian `erl` nodes started with
//! `-proto_dist inet_tls -ssl_dist_optfile FILE` (OTP's `inet_tls_dist`):
//! pings both ways, messages and rpc in a mixed cluster, certificates of
//! another CA refused in both directions, plain TCP peers refused, and a
//! TLS handshake that stalls timed out like a distribution handshake, ticks
//! through an idle TLS connection, and the binary taking `-proto_dist` from
//! vm.args (and refusing other protocols). The certificates (a CA, a
//! certificate per node) are made at test time with rcgen in a temporary
//! directory. With `FLACK_ERLANG_HOME` (else SKIPPED), an ORIGINAL
//! Erlang flack node and the Rust binary chat over TLS. At the end, the
//! binary's EPMD reading `ERL_EPMD_PORT` and `ERL_EPMD_ADDRESS`.
//!
//! Every test runs on one thread, so that what the Rust node logs is
//! logged where the test's capturing subscriber is installed.

mod node_support;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use eetf::Term;
use flack::node::dist::tls::{TlsDistOptions, TlsSideOptions, Verify};
use flack::node::term::{as_atom, atom, tuple};
use flack::node::{Node, NodeConfig};
use node_support::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A scratch directory for one test's files, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(stem: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("flack-tls-dist-{}", unique(stem)));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What most tests start from: a scratch directory, a CA in it, and an
/// EPMD of their own.
struct Bed {
    scratch: Scratch,
    ca: Ca,
    epmd: TestEpmd,
}

impl Bed {
    async fn new(stem: &str) -> Self {
        let scratch = Scratch::new(stem);
        let ca = Ca::new(&scratch.0, "ca");
        let epmd = TestEpmd::start().await;
        Self { scratch, ca, epmd }
    }
}

/// A certificate authority writing PEM files into a scratch directory.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
    /// The CA's certificate: the `cacertfile` of whoever trusts it.
    cert: PathBuf,
}

/// A node's certificate and key files.
struct NodeCert {
    certfile: PathBuf,
    keyfile: PathBuf,
}

impl Ca {
    /// [`strict_options`] for a node `name` with this CA's certificate,
    /// trusting this CA.
    fn strict_options_for(&self, name: &str) -> TlsDistOptions {
        strict_options(&self.node_cert(name), &self.cert)
    }

    fn new(dir: &Path, name: &str) -> Self {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA certificate");
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, cert.pem()).expect("write CA");
        Self {
            issuer: Issuer::new(params, key),
            dir: dir.to_path_buf(),
            cert: path,
        }
    }

    /// A certificate for a node whose host is `localhost`, good for both
    /// ends of a connection.
    fn node_cert(&self, stem: &str) -> NodeCert {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, stem);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("node certificate");
        let certfile = self.dir.join(format!("{stem}.pem"));
        let keyfile = self.dir.join(format!("{stem}.key"));
        std::fs::write(&certfile, cert.pem()).expect("write cert");
        std::fs::write(&keyfile, key.serialize_pem()).expect("write key");
        NodeCert { certfile, keyfile }
    }
}

/// The options every node of these tests uses: its certificate both ways,
/// the peer's chain checked both ways, a client certificate required, the
/// server's name checked against the node's host (OTP's default with
/// `verify_peer`).
fn strict_options(cert: &NodeCert, trusted: &Path) -> TlsDistOptions {
    let side = TlsSideOptions {
        certfile: Some(cert.certfile.clone()),
        keyfile: Some(cert.keyfile.clone()),
        cacertfile: Some(trusted.to_path_buf()),
        verify: Verify::Peer,
        ..TlsSideOptions::default()
    };
    TlsDistOptions {
        server: TlsSideOptions {
            fail_if_no_peer_cert: true,
            ..side.clone()
        },
        client: side,
    }
}

/// The same options as an `-ssl_dist_optfile` for erl.
fn write_optfile(dir: &Path, stem: &str, cert: &NodeCert, trusted: &Path) -> PathBuf {
    let side = format!(
        "{{certfile, {:?}}}, {{keyfile, {:?}}}, {{cacertfile, {:?}}}, {{verify, verify_peer}}",
        cert.certfile.display().to_string(),
        cert.keyfile.display().to_string(),
        trusted.display().to_string()
    );
    let text = format!(
        "[{{server, [{side}, {{fail_if_no_peer_cert, true}}]}},\n {{client, [{side}]}}].\n"
    );
    let path = dir.join(format!("{stem}.conf"));
    std::fs::write(&path, text).expect("write optfile");
    path
}

/// A Rust node with TLS options.
async fn tls_node(stem: &str, epmd: &TestEpmd, options: TlsDistOptions) -> Node {
    let mut config: NodeConfig = rust_config(&unique(stem), "tls_cookie", epmd.port);
    config.tls = Some(options);
    config.setup_time = Duration::from_secs(3);
    Node::start(config).await.expect("TLS node starts")
}

/// `erl` with `-proto_dist inet_tls -ssl_dist_optfile optfile` (plain TCP
/// when `None`), its agent reporting to `rust_node`.
fn erl(stem: &str, epmd: &TestEpmd, rust_node: &str, optfile: Option<&Path>) -> Erl {
    let optfile = optfile.map(|path| path.display().to_string());
    let mut extra = vec!["-kernel", "net_setuptime", "3"];
    if let Some(path) = &optfile {
        extra.extend([
            "-proto_dist",
            "inet_tls",
            "-ssl_dist_optfile",
            path.as_str(),
        ]);
    }
    Erl::start(&unique(stem), "tls_cookie", epmd.port, rust_node, &extra)
}

/// A node that never answers on `name` in our EPMD: the Rust node's
/// attempt to connect to an erl node whose name is `name`.
fn nobody() -> String {
    format!("{}@localhost", unique("nobody"))
}

#[tokio::test(flavor = "current_thread")]
async fn erl_and_rust_ping_each_other_over_tls() {
    require_erl!();
    let (_logs, _guard) = capture_logs();
    let Bed { scratch, ca, epmd } = Bed::new("ping").await;
    let node = tls_node("rping", &epmd, ca.strict_options_for("rust")).await;
    let mut ctl = Ctl::new(&node);

    // erl connects: its agent reports over the TLS connection it opened.
    let optfile = write_optfile(&scratch.0, "erl1", &ca.node_cert("erl1"), &ca.cert);
    let erl1 = erl("etls", &epmd, node.name(), Some(&optfile));
    ctl.agent_up(&erl1.name).await;
    let pong = ctl
        .cmd(&erl1.name, tuple(vec![atom("ping"), atom(node.name())]))
        .await;
    assert_eq!(as_atom(&pong), Some("pong"));

    // The Rust node connects to an erl node that has not connected to it.
    let optfile = write_optfile(&scratch.0, "erl2", &ca.node_cert("erl2"), &ca.cert);
    let erl2 = erl("etls", &epmd, &nobody(), Some(&optfile));
    let mut connected = false;
    for _ in 0..100 {
        if node.connect(&erl2.name).await {
            connected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        connected,
        "the Rust node never got through to {}",
        erl2.name
    );
    let pong = ctl
        .cmd(&erl2.name, tuple(vec![atom("ping"), atom(node.name())]))
        .await;
    assert_eq!(
        as_atom(&pong),
        Some("pong"),
        "erl2 answers over our connection"
    );
    let proto = ctl
        .cmd(
            &erl2.name,
            tuple(vec![
                atom("rpc"),
                atom(&erl2.name),
                atom("net_kernel"),
                atom("nodes_info"),
                Term::from(eetf::List::nil()),
            ]),
        )
        .await;
    assert!(
        format!("{proto}").contains("tls"),
        "erl2 sees a TLS connection: {proto}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_mixed_tls_cluster_exchanges_messages_and_rpc() {
    require_erl!();
    let (_logs, _guard) = capture_logs();
    let Bed { scratch, ca, epmd } = Bed::new("mesh").await;
    let node = tls_node("rmesh", &epmd, ca.strict_options_for("rust")).await;
    let mut ctl = Ctl::new(&node);
    let optfile1 = write_optfile(&scratch.0, "erl1", &ca.node_cert("erl1"), &ca.cert);
    let optfile2 = write_optfile(&scratch.0, "erl2", &ca.node_cert("erl2"), &ca.cert);
    let erl1 = erl("emesh", &epmd, node.name(), Some(&optfile1));
    let erl2 = erl("emesh", &epmd, node.name(), Some(&optfile2));
    let agent1 = ctl.agent_up(&erl1.name).await;
    ctl.agent_up(&erl2.name).await;

    // Rust -> erl: a message to the agent comes back as {agent_got, Msg}.
    let payload = tuple(vec![
        atom("hello"),
        Term::from(eetf::Binary::from(vec![7u8; 70_000])),
    ]);
    node.send_from(&ctl.pid, &agent1, payload.clone());
    let got = ctl.got(WAIT, |m| *m == payload).await;
    assert!(
        got.is_some(),
        "the 70 kB message went to erl1 and back over TLS"
    );

    // erl -> Rust: rpc to the Rust node's rex.
    let answer = ctl
        .cmd(
            &erl1.name,
            tuple(vec![
                atom("rpc"),
                atom(node.name()),
                atom("erlang"),
                atom("node"),
                Term::from(eetf::List::nil()),
            ]),
        )
        .await;
    assert_eq!(as_atom(&answer), Some(node.name()));

    // erl -> erl over TLS, and every node sees the whole cluster.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let nodes = ctl.cmd(&erl1.name, atom("nodes")).await;
        let text = format!("{nodes}");
        if text.contains(&erl2.name) && text.contains(node.name()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "erl1 never saw the whole cluster: {text}"
        );
        // The Rust node meshes its peers; ask erl1 to reach erl2 too.
        ctl.cmd(&erl1.name, tuple(vec![atom("ping"), atom(&erl2.name)]))
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut seen = node.connected_nodes();
    seen.sort();
    let mut expected = vec![erl1.name.clone(), erl2.name.clone()];
    expected.sort();
    assert_eq!(seen, expected);
    node.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_certificate_of_another_ca_is_refused_both_ways() {
    require_erl!();
    let (logs, _guard) = capture_logs();
    let scratch = Scratch::new("wrongca");
    let ca = Ca::new(&scratch.0, "ca");
    let stranger_ca = Ca::new(&scratch.0, "stranger");
    let epmd = TestEpmd::start().await;
    // Both trust `ca`; the Rust node's own certificate is the stranger's.
    let node = tls_node(
        "rwrong",
        &epmd,
        strict_options(&stranger_ca.node_cert("rust"), &ca.cert),
    )
    .await;
    let optfile = write_optfile(&scratch.0, "erl", &ca.node_cert("erl"), &ca.cert);

    // erl connects (its agent tries at start) and refuses our certificate.
    let erl_node = erl("ewrong", &epmd, node.name(), Some(&optfile));
    let line = logs
        .wait_for(
            &["refused a TLS distribution connection from 127.0.0.1"],
            WAIT,
        )
        .await;
    let line = line.unwrap_or_else(|| panic!("no log line; logged:\n{}", logs.text()));
    assert!(line.contains("alert"), "erl said why: {line}");
    eprintln!("logged: {line}");

    // We connect, and erl refuses our certificate as a client's.
    let line = connect_until_logged(&node, &erl_node.name, &logs, &["TLS handshake with"]).await;
    assert!(line.contains("alert"), "{line}");
    eprintln!("logged: {line}");
    assert!(node.connected_nodes().is_empty());
    node.shutdown().await;
    drop(erl_node);

    // Now the erl node's certificate is the stranger's: we refuse it.
    let (logs, _guard) = capture_logs();
    let node = tls_node(
        "rwrong",
        &epmd,
        strict_options(&ca.node_cert("rust2"), &ca.cert),
    )
    .await;
    let optfile = write_optfile(
        &scratch.0,
        "erl_stranger",
        &stranger_ca.node_cert("erl_stranger"),
        &ca.cert,
    );
    let erl_node = erl("ewrong", &epmd, node.name(), Some(&optfile));
    let line = logs
        .wait_for(
            &[
                "refused a TLS distribution connection from 127.0.0.1",
                "invalid peer certificate",
            ],
            WAIT,
        )
        .await;
    let line = line.unwrap_or_else(|| panic!("no log line; logged:\n{}", logs.text()));
    assert!(line.contains("UnknownIssuer"), "{line}");
    eprintln!("logged: {line}");
    let line = connect_until_logged(
        &node,
        &erl_node.name,
        &logs,
        &["TLS handshake with", "invalid peer certificate"],
    )
    .await;
    assert!(line.contains("UnknownIssuer"), "{line}");
    eprintln!("logged: {line}");
    assert!(node.connected_nodes().is_empty());
    node.shutdown().await;
}

/// Tries to connect to `peer` until a line with `parts` is logged; no
/// attempt may succeed.
async fn connect_until_logged(node: &Node, peer: &str, logs: &LogBuffer, parts: &[&str]) -> String {
    for _ in 0..100 {
        assert!(!node.connect(peer).await, "connected to {peer}");
        if let Some(line) = logs.wait_for(parts, Duration::from_millis(100)).await {
            return line;
        }
    }
    panic!("no line with {parts:?}; logged:\n{}", logs.text())
}

#[tokio::test(flavor = "current_thread")]
async fn a_plain_tcp_peer_is_refused_by_a_tls_node() {
    require_erl!();
    let (logs, _guard) = capture_logs();
    let Bed {
        scratch: _scratch,
        ca,
        epmd,
    } = Bed::new("plain").await;
    let node = tls_node("rplain", &epmd, ca.strict_options_for("rust")).await;
    // A plain erl's name message is not a TLS hello.
    let plain = erl("eplain", &epmd, node.name(), None);
    let line = logs
        .wait_for(
            &["refused a TLS distribution connection from 127.0.0.1"],
            WAIT,
        )
        .await;
    let line = line.unwrap_or_else(|| panic!("no log line; logged:\n{}", logs.text()));
    eprintln!("logged: {line}");
    assert!(line.contains("does not speak TLS"), "{line}");
    // Our TLS hello is not a name message to it.
    let line = connect_until_logged(&node, &plain.name, &logs, &["TLS handshake with"]).await;
    eprintln!("logged: {line}");
    // It closes on our hello, or waits for the rest of what it took for a
    // name message until one side's setup time runs out.
    assert!(
        line.contains("WARN")
            && (line.contains("does the peer speak TLS") || line.contains("does it speak TLS")),
        "{line}"
    );
    assert!(node.connected_nodes().is_empty());
    node.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_stalled_tls_handshake_is_timed_out_like_a_distribution_handshake() {
    let (logs, _guard) = capture_logs();
    let Bed {
        scratch: _scratch,
        ca,
        epmd,
    } = Bed::new("stall").await;
    let mut options = ca.strict_options_for("rust");
    options.server.fail_if_no_peer_cert = false;
    let mut config = rust_config(&unique("rstall"), "tls_cookie", epmd.port);
    config.tls = Some(options);
    config.setup_time = Duration::from_secs(1);
    let node = Node::start(config).await.expect("starts");

    // A client that connects and never says a word is closed.
    let mut silent = TcpStream::connect(("127.0.0.1", node.port()))
        .await
        .expect("connect");
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(30), silent.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the silent client was not closed: {read:?}"
    );
    let line = logs
        .wait_for(&["no TLS handshake within"], WAIT)
        .await
        .unwrap_or_else(|| panic!("no log line; logged:\n{}", logs.text()));
    eprintln!("logged: {line}");

    // A server that accepts and never answers our hello: the attempt ends.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let alive = unique("mute");
    let epmd_addr = std::net::SocketAddr::from(([127, 0, 0, 1], epmd.port));
    let _registration = flack::node::epmd::client::register(epmd_addr, &alive, port, false)
        .await
        .expect("registers");
    let connected = tokio::time::timeout(
        Duration::from_secs(30),
        node.connect(&format!("{alive}@localhost")),
    )
    .await;
    assert_eq!(connected.ok(), Some(false), "the attempt did not end");
    let line = logs
        .wait_for(&["TLS handshake with", "timed out"], WAIT)
        .await
        .unwrap_or_else(|| panic!("no log line; logged:\n{}", logs.text()));
    eprintln!("logged: {line}");
    held.abort();
    node.shutdown().await;
}

/// A `flack` process, killed when dropped.
struct Flack(std::process::Child);

impl Drop for Flack {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_binary_takes_proto_dist_and_the_optfile_from_vm_args() {
    require_erl!();
    let (_logs, _guard) = capture_logs();
    let Bed { scratch, ca, epmd } = Bed::new("binary").await;
    let node = tls_node("rbin", &epmd, ca.strict_options_for("rust")).await;
    let mut ctl = Ctl::new(&node);
    let optfile = write_optfile(&scratch.0, "erl", &ca.node_cert("erl"), &ca.cert);
    let erl_node = erl("ebin", &epmd, node.name(), Some(&optfile));
    ctl.agent_up(&erl_node.name).await;

    // The binary, configured as a release would be: vm.args names the
    // protocol and the optfile (the same format erl reads).
    let bin_optfile = write_optfile(&scratch.0, "bin", &ca.node_cert("bin"), &ca.cert);
    let bin_name = format!("{}@localhost", unique("fbin"));
    let vm_args = scratch.0.join("vm.args");
    std::fs::write(
        &vm_args,
        format!(
            "-sname {bin_name}\n-setcookie tls_cookie\n-proto_dist inet_tls\n-ssl_dist_optfile {}\n-kernel inet_dist_use_interface {{127,0,0,1}}\n",
            bin_optfile.display()
        ),
    )
    .expect("vm.args");
    let binary = Flack(
        std::process::Command::new(env!("CARGO_BIN_EXE_flack"))
            .env("ERL_EPMD_PORT", epmd.port.to_string())
            .args(["foreground", "--bind", "127.0.0.1", "--port"])
            .arg(free_port().to_string())
            .arg("--vm-args")
            .arg(&vm_args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("flack starts"),
    );
    let ping = tuple(vec![atom("ping"), atom(&bin_name)]);
    let mut pong = None;
    for _ in 0..100 {
        let answer = ctl.cmd(&erl_node.name, ping.clone()).await;
        if as_atom(&answer) == Some("pong") {
            pong = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(pong.is_some(), "erl never reached the binary over TLS");
    drop(binary);
    node.shutdown().await;
}

#[test]
fn another_proto_dist_stops_the_binary_at_start() {
    for proto in ["inet6_tcp", "my_dist"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_flack"))
            .args(["foreground", "-sname", "never", "-proto_dist", proto])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("flack runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "started with -proto_dist {proto}");
        assert!(
            stderr.contains(&format!(
                "-proto_dist {proto}: this node implements inet_tcp (the default) and inet_tls only"
            )),
            "{stderr}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn ticks_keep_an_idle_tls_connection_up() {
    require_erl!();
    let (_logs, _guard) = capture_logs();
    let Bed { scratch, ca, epmd } = Bed::new("ticks").await;
    let mut config = rust_config(&unique("rticks"), "tls_cookie", epmd.port);
    config.tls = Some(ca.strict_options_for("rust"));
    config.net_ticktime = Duration::from_secs(4);
    let node = Node::start(config).await.expect("starts");
    let mut events = node.subscribe();
    let mut ctl = Ctl::new(&node);
    let optfile = write_optfile(&scratch.0, "erl", &ca.node_cert("erl"), &ca.cert);
    let optfile = optfile.display().to_string();
    let erl_node = Erl::start(
        &unique("eticks"),
        "tls_cookie",
        epmd.port,
        node.name(),
        &[
            "-kernel",
            "net_ticktime",
            "4",
            "-proto_dist",
            "inet_tls",
            "-ssl_dist_optfile",
            optfile.as_str(),
        ],
    );
    ctl.agent_up(&erl_node.name).await;
    // Nothing but ticks for two and a half tick times: a tick held in a
    // TLS buffer would make either side declare the other down.
    tokio::time::sleep(Duration::from_secs(10)).await;
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event, flack::node::NodeEvent::Down(..)),
            "the idle TLS connection went down: {event:?}"
        );
    }
    assert_eq!(node.connected_nodes(), std::slice::from_ref(&erl_node.name));
    let pong = ctl
        .cmd(&erl_node.name, tuple(vec![atom("ping"), atom(node.name())]))
        .await;
    assert_eq!(as_atom(&pong), Some("pong"));
    node.shutdown().await;
}

/// A process killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Rust binary's `/health` `cluster` object, or null.
async fn cluster_view(web: std::net::SocketAddr) -> serde_json::Value {
    use tokio::io::AsyncWriteExt;
    let Ok(mut stream) = TcpStream::connect(web).await else {
        return serde_json::Value::Null;
    };
    let request = "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).await.is_err() {
        return serde_json::Value::Null;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    response
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(body).ok())
        .map(|health| health["cluster"].clone())
        .unwrap_or(serde_json::Value::Null)
}

async fn next_record(client: &mut support::Client, record: &str) -> serde_json::Value {
    loop {
        let value = client.expect_any().await;
        if value["record"] == record {
            return value;
        }
    }
}

/// An ORIGINAL Erlang flack node and a Rust node, both over TLS, in one
/// gproc_dist cluster: users on each see each other join and chat. Needs
/// the original's build in `FLACK_ERLANG_HOME` (see tests/interop_original.rs).
#[tokio::test(flavor = "current_thread")]
async fn original_and_rust_nodes_chat_over_tls() {
    require_erl!();
    let Some(home) = original_home() else {
        eprintln!(
            "SKIPPED: set FLACK_ERLANG_HOME to a build of the original Erlang flack to run a mixed TLS cluster"
        );
        return;
    };
    let Bed { scratch, ca, epmd } = Bed::new("original").await;
    let stem = unique("otls");
    let names = [format!("{stem}a@localhost"), format!("{stem}z@localhost")];
    let candidates = names.join(",");
    let sys_config = |node: &str, port: u16| {
        let dir = scratch.0.join(node);
        std::fs::create_dir_all(&dir).expect("node dir");
        let path = dir.join("sys.config");
        std::fs::write(
            &path,
            format!(
                "[{{kernel, [{{logger_level, warning}}, {{inet_dist_use_interface, {{127,0,0,1}}}}]}},\n \
                 {{flack, [{{port, {port}}}]}},\n {{gproc, [{{gproc_dist, [{candidates}]}}]}}].\n"
            ),
        )
        .expect("sys.config");
        (dir, path)
    };

    let erlang_web = free_port();
    let (erlang_dir, config) = sys_config("erlang", erlang_web);
    let optfile = write_optfile(&scratch.0, "erlang", &ca.node_cert("erlang"), &ca.cert);
    let mut command = original_command(&home, &config);
    command
        .args(["-sname", &names[0], "-setcookie", "tls_cookie"])
        .args(["-proto_dist", "inet_tls", "-ssl_dist_optfile"])
        .arg(&optfile);
    let _erlang = Killed(
        command
            .current_dir(&erlang_dir)
            .env("ERL_EPMD_PORT", epmd.port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the original starts"),
    );

    let rust_web = free_port();
    let (rust_dir, config) = sys_config("rust", rust_web);
    let optfile = write_optfile(&scratch.0, "rust", &ca.node_cert("rust"), &ca.cert);
    let _rust = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_flack"))
            .args(["foreground", "--bind", "127.0.0.1"])
            .args(["-sname", &names[1], "-setcookie", "tls_cookie"])
            .args(["-proto_dist", "inet_tls", "-ssl_dist_optfile"])
            .arg(&optfile)
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&rust_dir)
            .env("ERL_EPMD_PORT", epmd.port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the Rust node starts"),
    );

    let rust_addr = std::net::SocketAddr::from(([127, 0, 0, 1], rust_web));
    let erlang_addr = std::net::SocketAddr::from(([127, 0, 0, 1], erlang_web));
    let mut view = serde_json::Value::Null;
    for _ in 0..300 {
        view = cluster_view(rust_addr).await;
        let leader = view["leader"].as_str().unwrap_or("");
        if names.iter().any(|name| name == leader)
            && view["down"].as_array().is_some_and(Vec::is_empty)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Either may lead (the first up leads, and stays leader).
    assert!(
        view["down"].as_array().is_some_and(Vec::is_empty) && view["leader"].is_string(),
        "never one cluster: {view}"
    );
    for _ in 0..300 {
        if TcpStream::connect(erlang_addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut alice = support::Client::login(erlang_addr, "alice").await;
    let mut bob = support::Client::login(rust_addr, "bob").await;
    alice.join("tls-room").await;
    // alice's user and membership reach the Rust node's copy of the
    // registry over the TLS connection (its own fan-out registration is
    // the one other object).
    for _ in 0..300 {
        view = cluster_view(rust_addr).await;
        if view["registry_size"].as_u64().is_some_and(|size| size >= 3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        view["registry_size"].as_u64().is_some_and(|size| size >= 3),
        "the Rust node never saw alice: {view}"
    );
    let (state, bob_joined) = bob.join("tls-room").await;
    assert_eq!(
        state["users"][0]["user_id"],
        alice.user_id.as_str(),
        "the Rust joiner sees the Erlang member: {state}"
    );
    assert_eq!(next_record(&mut alice, "joined").await, bob_joined);
    for (sender, text) in [(0, "from the original"), (1, "from rust")] {
        let sender_id = [&alice, &bob][sender].user_id.clone();
        [&mut alice, &mut bob][sender].post("tls-room", text).await;
        for client in [&mut alice, &mut bob] {
            let message = next_record(client, "chat_message").await;
            assert_eq!(message["message"], text);
            assert_eq!(message["user_id"], sender_id.as_str());
        }
    }
}

// ---------------------------------------------------------------------------
// The environment of issue 15's distribution settings, read by the binary
// itself (the settings read from vm.args and sys.config are tested in
// src/config and tests/hardening_dist.rs).

#[tokio::test(flavor = "current_thread")]
async fn the_binarys_epmd_reads_erl_epmd_port_and_erl_epmd_address() {
    let port = free_port();
    let epmd = Flack(
        std::process::Command::new(env!("CARGO_BIN_EXE_flack"))
            .arg("epmd")
            .env("ERL_EPMD_PORT", port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.3")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("flack epmd starts"),
    );
    let mut listening = false;
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.3", port)).await.is_ok() {
            listening = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        listening,
        "no EPMD on 127.0.0.3:{port} (ERL_EPMD_PORT, ERL_EPMD_ADDRESS)"
    );
    TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("loopback is always added, as epmd does");
    let elsewhere = TcpStream::connect(("127.0.0.4", port)).await;
    assert!(
        matches!(&elsewhere, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "listening beyond ERL_EPMD_ADDRESS: {elsewhere:?}"
    );
    drop(epmd);
}
