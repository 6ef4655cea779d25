//! The release as operators use it, with real processes: `rel/build-tarball.sh`
//! packs the binary under test, the tarball is extracted into two
//! directories, each is configured as the original README tells
//! (`-sname flack1` / `-sname flack2` in vm.args, an explicit gproc_dist
//! candidate list in sys.config), and `bin/flack` starts, pings, stops them
//! while websocket clients chat.

mod node_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use node_support::free_port;
use support::Client;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// This host's short name, as operators write it in node names.
fn short_host() -> String {
    let output = Command::new("hostname")
        .arg("-s")
        .output()
        .expect("hostname runs");
    String::from_utf8(output.stdout)
        .expect("a name")
        .trim()
        .to_owned()
}

/// Where the tests put tarballs and releases: cargo's scratch directory for
/// integration tests.
fn scratch() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("release-tests")
}

/// The tarball, built once per test process by the script operators use,
/// from the binary under test (`--binary`, so the tests need no release
/// build).
fn tarball() -> &'static Path {
    static TARBALL: OnceLock<PathBuf> = OnceLock::new();
    TARBALL.get_or_init(|| {
        let out = scratch().join("dist");
        let output = Command::new("sh")
            .arg("rel/build-tarball.sh")
            .args(["--binary", env!("CARGO_BIN_EXE_flack"), "--out"])
            .arg(&out)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("build-tarball.sh runs");
        assert!(
            output.status.success(),
            "build-tarball.sh failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let path = out.join(format!("flack-{VERSION}.tar.gz"));
        let printed = String::from_utf8_lossy(&output.stdout);
        assert_eq!(printed.trim(), path.display().to_string());
        path
    })
}

/// An extracted release. Dropping it kills a node the test left running
/// (and the EPMD daemon its node started) and removes the directory.
struct Release {
    root: PathBuf,
    /// A private EPMD port: the daemon a named node starts (as `erl` starts
    /// `epmd -daemon`) is this release's own, and is ended with it.
    epmd_port: u16,
}

impl Release {
    fn extract(name: &str) -> Self {
        let root = scratch().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("release directory");
        let status = Command::new("tar")
            .arg("-xzf")
            .arg(tarball())
            .current_dir(&root)
            .status()
            .expect("tar runs");
        assert!(status.success(), "tar failed");
        let epmd_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        Self { root, epmd_port }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.root.join("releases").join(VERSION).join(name)
    }

    /// Replaces `from` (which must be there) by `to` in a release file.
    fn edit(&self, name: &str, from: &str, to: &str) {
        let path = self.file(name);
        let text = std::fs::read_to_string(&path).expect("readable");
        assert!(text.contains(from), "{name} has no {from:?}: {text}");
        std::fs::write(&path, text.replacen(from, to, 1)).expect("writable");
    }

    /// `bin/flack ARGS`, run to completion.
    fn flack(&self, args: &[&str]) -> Output {
        Command::new(self.root.join("bin/flack"))
            .args(args)
            .env("FLACK_START_TIMEOUT", "30")
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .output()
            .expect("bin/flack runs")
    }

    fn pid_file(&self) -> PathBuf {
        self.root.join("var/flack.pid")
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pid_file())
            .ok()
            .and_then(|text| text.trim().parse().ok())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("log/flack.log")).unwrap_or_default()
    }

    /// `bin/flack start ARGS`, which must succeed silently.
    fn start(&self, args: &[&str]) -> u32 {
        let output = self.flack(&[&["start"], args].concat());
        assert!(
            output.status.success(),
            "start failed: {}\nlog:\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout), "");
        let pid = self.pid().expect("a pid file after start");
        assert!(alive(pid), "the started node {pid} is not running");
        pid
    }

    /// `bin/flack stop`, which must succeed, and leave no process or pid file.
    fn stop(&self) {
        let pid = self.pid().expect("a pid file before stop");
        let output = self.flack(&["stop"]);
        assert_eq!(
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stdout).as_ref()
            ),
            (Some(0), "ok\n"),
            "stop: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!self.pid_file().exists(), "pid file left after stop");
        assert!(!alive(pid), "node {pid} still running after stop");
    }

    fn ping(&self) -> (Option<i32>, String) {
        let output = self.flack(&["ping"]);
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if let Some(pid) = self.pid()
            && alive(pid)
        {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        // The EPMD daemon outlives the node, as epmd does; it runs this
        // release's binary.
        for pid in processes_running_from(&self.root) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The processes whose executable lies under `root`.
fn processes_running_from(root: &std::path::Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let exe = std::fs::read_link(entry.path().join("exe")).ok()?;
            exe.starts_with(root).then_some(pid)
        })
        .collect()
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn addr(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&addr(port), Duration::from_secs(2)).is_ok()
}

/// Two releases configured as the original README's distributed setup:
/// `-sname flack1`/`flack2`, both with the candidate list of both.
fn two_node_cluster() -> (Release, Release, String) {
    let host = short_host();
    let candidates = format!("{{gproc_dist, [flack1@{host}, flack2@{host}]}}");
    let nodes = ["flack1", "flack2"].map(|name| {
        let release = Release::extract(name);
        release.edit("vm.args", "-sname flack\n", &format!("-sname {name}\n"));
        release.edit("sys.config", "{gproc_dist, all}", &candidates);
        release
    });
    let [first, mut second] = nodes;
    // One EPMD for both, as on a host: the first node to start runs it.
    second.epmd_port = first.epmd_port;
    (first, second, host)
}

/// Two clients in `room` exchange a message. Each call uses a room of its
/// own: the clients of an earlier call leave when they are dropped, and
/// their `left` events may still be on their way.
async fn chat(first: std::net::SocketAddr, second: std::net::SocketAddr, room: &str) {
    let mut alice = Client::login(first, "alice").await;
    alice.join(room).await;
    let mut bob = Client::login(second, "bob").await;
    let (state, _) = bob.join(room).await;
    assert!(
        state.to_string().contains(&alice.user_id),
        "bob's chat_state lacks alice: {state}"
    );
    let joined = alice.expect("joined").await;
    assert_eq!(joined["user_id"], bob.user_id.as_str());
    bob.post(room, "I like cats").await;
    let sender = bob.user_id.clone();
    for client in [&mut alice, &mut bob] {
        let message = client.expect("chat_message").await;
        assert_eq!(message["message"], "I like cats");
        assert_eq!(message["user_id"], sender.as_str());
    }
}

#[tokio::test]
async fn two_nodes_start_ping_chat_and_stop() {
    let (flack1, flack2, host) = two_node_cluster();
    let (port1, port2) = (free_port(), free_port());
    let pid1 = flack1.start(&["-flack", "port", &port1.to_string()]);
    let pid2 = flack2.start(&["-flack", "port", &port2.to_string()]);
    assert_ne!(pid1, pid2);

    for node in [&flack1, &flack2] {
        assert_eq!(node.ping(), (Some(0), "pong\n".to_owned()));
        let pid = node.flack(&["pid"]);
        assert_eq!(
            String::from_utf8_lossy(&pid.stdout).trim(),
            node.pid().expect("pid file").to_string()
        );
        let log = node.log();
        assert!(
            log.contains("sys.config") && log.contains("vm.args"),
            "the node did not read its configuration files:\n{log}"
        );
    }

    chat(addr(port1), addr(port1), "on-flack1").await;
    chat(addr(port2), addr(port2), "on-flack2").await;
    // The two nodes form one gproc_dist cluster: a room spans both.
    chat(addr(port1), addr(port2), "across").await;
    let view = flack2.flack(&["cluster"]);
    let view = String::from_utf8_lossy(&view.stdout).into_owned();
    assert!(
        view.contains(&format!("leader:     flack1@{host}")),
        "{view}"
    );
    assert!(view.contains("candidates: 2 up"), "{view}");

    flack1.stop();
    flack2.stop();
    for (node, name) in [(&flack1, "flack1"), (&flack2, "flack2")] {
        assert_eq!(
            node.ping(),
            (
                Some(1),
                format!("Node {name}@{host} not responding to pings.\n")
            )
        );
        let pid = node.flack(&["pid"]);
        assert_eq!(pid.status.code(), Some(1));
    }
    assert!(!listening(port1) && !listening(port2));
}

#[test]
fn a_second_start_says_already_running_and_overrides_follow_precedence() {
    let release = Release::extract("precedence");
    let (sys_port, port, other_port) = (free_port(), free_port(), free_port());
    release.edit(
        "sys.config",
        "{flack, []}",
        &format!("{{flack, [{{port, {sys_port}}}]}}"),
    );

    // -flack port on the command line wins over sys.config.
    let pid = release.start(&["-flack", "port", &port.to_string()]);
    assert!(listening(port));
    assert!(!listening(sys_port));

    let again = release.flack(&["start", "-flack", "port", &other_port.to_string()]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        format!("Node is already running! (pid {pid})\n")
    );
    assert_eq!(release.pid(), Some(pid));
    assert!(!listening(other_port));
    // ping still finds the running node: the refused start changed nothing.
    assert_eq!(release.ping(), (Some(0), "pong\n".to_owned()));
    release.stop();

    // Without the override, sys.config's port.
    release.start(&[]);
    assert!(listening(sys_port));
    assert_eq!(release.ping(), (Some(0), "pong\n".to_owned()));
    release.stop();
}

#[test]
fn a_failed_start_reports_the_reason() {
    let release = Release::extract("broken");
    release.edit("sys.config", "{flack, []}", "{flack, [{port, \"8080\"}]}");
    let output = release.flack(&["start"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("flack failed to start")
            && stderr.contains("sys.config:2:21: flack port: not a port number"),
        "{stderr}"
    );
    assert!(!release.pid_file().exists());
}

#[test]
fn commands_on_a_stopped_node_fail() {
    let release = Release::extract("stopped");
    for command in ["stop", "pid"] {
        let output = release.flack(&[command]);
        assert_eq!(output.status.code(), Some(1), "{command}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "Node is not running!\n"
        );
    }
    let port = free_port().to_string();
    let ping = release.flack(&["ping", "-flack", "port", &port]);
    assert_eq!(ping.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&ping.stdout),
        format!("Node flack@{} not responding to pings.\n", short_host())
    );
    let output = release.flack(&["frobnicate"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).starts_with("Usage: flack {start|stop|"));
}
