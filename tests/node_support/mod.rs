//! Shared harness of the node integration tests: an in-process EPMD on a
//! random port per test, a Rust node, real `erl` nodes running the
//! `erlang-compat/flack_compat.erl` agent, and a controller process on the
//! Rust node that drives the agents by message.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eetf::Term;
use flack::node::term::{as_atom, as_tuple, atom, tuple};
use flack::node::{EpmdStart, Mailbox, Node, NodeConfig, NodeName, Pid, Received};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Whether `erl` can be run; tests skip (with a message) when not.
pub fn erl_available() -> bool {
    Command::new("erl")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Skips the calling test when `erl` is missing.
#[macro_export]
macro_rules! require_erl {
    () => {
        if !node_support::erl_available() {
            eprintln!("SKIPPED: erl is not installed (CI installs erlang-nox)");
            return;
        }
    };
}

/// Compiles the Erlang helpers once per test binary; returns the ebin dir.
pub fn compat_ebin() -> PathBuf {
    static EBIN: OnceLock<PathBuf> = OnceLock::new();
    EBIN.get_or_init(|| {
        use std::hash::{Hash, Hasher};
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("erlang-compat/flack_compat.erl");
        let text = std::fs::read(&src).expect("erlang-compat/flack_compat.erl");
        // One directory per version of the source, shared by every test
        // process (a directory per process left one behind per run).
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut hasher);
        let dir = std::env::temp_dir().join(format!("flack-compat-{:016x}", hasher.finish()));
        if dir.join("flack_compat.beam").exists() {
            return dir;
        }
        // Compiled aside, then renamed into place whole: concurrent test
        // processes never see a half-written beam.
        let aside = std::env::temp_dir().join(format!("flack-compat-build-{}", std::process::id()));
        std::fs::create_dir_all(&aside).expect("temp dir");
        let status = Command::new("erlc")
            .arg("-o")
            .arg(&aside)
            .arg(&src)
            .status()
            .expect("erlc runs");
        assert!(status.success(), "erlc failed on {}", src.display());
        if std::fs::rename(&aside, &dir).is_err() {
            // Another process got there first with the same source.
            let _ = std::fs::remove_dir_all(&aside);
        }
        dir
    })
    .clone()
}

/// The build of the ORIGINAL Erlang flack named by `FLACK_ERLANG_HOME` (a
/// directory with `lib/<app>/ebin` for flack, gproc, gen_leader, cowboy,
/// ranch and cowlib), when it is there and `erl` can run it.
pub fn original_home() -> Option<PathBuf> {
    let home = PathBuf::from(std::env::var_os("FLACK_ERLANG_HOME")?);
    (home.join("lib").is_dir() && erl_available()).then_some(home)
}

/// What every start of an ORIGINAL flack node shares: `erl` without a
/// shell, the sys.config at `config` (the path with its `.config`), the
/// code path of every application of the build at `home`, and its
/// applications started as its release boots them. The caller adds the
/// node name, the cookie, any distribution flags and the environment.
pub fn original_command(home: &std::path::Path, config: &std::path::Path) -> Command {
    let mut command = Command::new("erl");
    command
        .args(["-noshell", "-noinput"])
        .arg("-config")
        .arg(config.with_extension(""));
    if let Ok(apps) = std::fs::read_dir(home.join("lib")) {
        for app in apps.flatten() {
            command.arg("-pa").arg(app.path().join("ebin"));
        }
    }
    command.args([
        "-eval",
        "[{ok, _} = application:ensure_all_started(A, permanent) || \
         A <- [gen_leader, gproc, jiffy, ranch, cowlib, cowboy, flack, sasl]], ok.",
    ]);
    command
}

/// Everything the node logs, captured (the subscriber is the test thread's:
/// a node whose tasks run on other threads logs elsewhere).
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Waits until a line containing every one of `parts` was logged.
    pub async fn wait_for(&self, parts: &[&str], within: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let found = self
                .text()
                .lines()
                .find(|line| parts.iter().all(|part| line.contains(part)))
                .map(str::to_owned);
            if found.is_some() || tokio::time::Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn capture_logs() -> (LogBuffer, tracing::subscriber::DefaultGuard) {
    let buffer = LogBuffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (buffer, tracing::subscriber::set_default(subscriber))
}

/// A unique node-name stem for a test.
pub fn unique(stem: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{stem}{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// An EPMD of our own on a free port, alive for the test.
pub struct TestEpmd {
    pub port: u16,
    cancel: CancellationToken,
}

impl TestEpmd {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1").await
    }

    /// An EPMD on a free port of `address` ("0.0.0.0": every address).
    pub async fn start_on(address: &str) -> Self {
        let listener = TcpListener::bind((address, 0)).await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let cancel = CancellationToken::new();
        tokio::spawn(flack::node::epmd::server::serve(listener, cancel.clone()));
        TestEpmd { port, cancel }
    }
}

impl Drop for TestEpmd {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Config for a Rust test node `name@localhost`.
pub fn rust_config(name: &str, cookie: &str, epmd_port: u16) -> NodeConfig {
    let mut config = NodeConfig::named(
        NodeName::short(&format!("{name}@localhost")).expect("name"),
        cookie,
    );
    config.epmd_port = epmd_port;
    config.listen_ip = "127.0.0.1".parse().expect("ip");
    config.start_epmd = EpmdStart::Never;
    config.mesh_interval = Duration::from_secs(2);
    config
}

/// A real `erl` node, killed when dropped.
pub struct Erl {
    pub name: String,
    pub child: Child,
}

impl Erl {
    /// Starts `erl -sname NAME@localhost -setcookie COOKIE` running the
    /// agent that reports to `rust_node`.
    pub fn start(name: &str, cookie: &str, epmd_port: u16, rust_node: &str, extra: &[&str]) -> Erl {
        let ebin = compat_ebin();
        let full = format!("{name}@localhost");
        let child = Command::new("erl")
            .env("ERL_EPMD_PORT", epmd_port.to_string())
            .args([
                "-noshell",
                "-noinput",
                "-sname",
                &full,
                "-setcookie",
                cookie,
                "-pa",
            ])
            .arg(&ebin)
            .args(extra)
            .args(["-run", "flack_compat", "agent", rust_node])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("erl starts");
        Erl { name: full, child }
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP / SIGCONT.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Erl {
    fn drop(&mut self) {
        self.signal("CONT");
        self.kill();
    }
}

/// The test controller: a process registered as `test_ctl` on the Rust node.
pub struct Ctl {
    pub node: Node,
    pub pid: Pid,
    pub mailbox: Mailbox,
}

pub const WAIT: Duration = Duration::from_secs(15);

impl Ctl {
    pub fn new(node: &Node) -> Ctl {
        let (pid, mailbox) = node.spawn_mailbox(100_000);
        node.register_name("test_ctl", &pid).expect("name free");
        Ctl {
            node: node.clone(),
            pid,
            mailbox,
        }
    }

    /// Waits for `{agent_up, Pid, Node, true}` from the agent on `erl_node`.
    pub async fn agent_up(&mut self, erl_node: &str) -> Pid {
        let erl_node = erl_node.to_owned();
        self.mailbox
            .receive(Duration::from_secs(30), |r| match r {
                Received::Message(_, m) => match as_tuple(m) {
                    Some([tag, Term::Pid(p), Term::Atom(n), _])
                        if as_atom(tag) == Some("agent_up") && n.name == erl_node =>
                    {
                        Some(Pid::from(p))
                    }
                    _ => None,
                },
                _ => None,
            })
            .await
            .unwrap_or_else(|| panic!("agent on {erl_node} did not come up"))
    }

    /// Runs an agent command on `erl_node`, returns its result.
    pub async fn cmd(&mut self, erl_node: &str, cmd: Term) -> Term {
        let r = self.node.make_ref();
        let msg = tuple(vec![
            atom("cmd"),
            self.pid.clone().into(),
            Term::from(r.clone()),
            cmd.clone(),
        ]);
        self.node
            .send_named(erl_node, "agent", msg, Some(&self.pid));
        self.mailbox
            .receive(WAIT, |got| match got {
                Received::Message(_, m) => match as_tuple(m) {
                    Some([Term::Reference(got), result]) if **got == r => Some(result.clone()),
                    _ => None,
                },
                _ => None,
            })
            .await
            .unwrap_or_else(|| panic!("no answer from {erl_node} to {cmd}"))
    }

    /// Waits for `{agent_got, Msg}` with `pick(Msg)` true.
    pub async fn got(&mut self, within: Duration, pick: impl Fn(&Term) -> bool) -> Option<Term> {
        self.mailbox
            .receive(within, |r| match r {
                Received::Message(_, m) => match as_tuple(m) {
                    Some([tag, inner]) if as_atom(tag) == Some("agent_got") && pick(inner) => {
                        Some(inner.clone())
                    }
                    _ => None,
                },
                _ => None,
            })
            .await
    }
}

/// `{'DOWN', _, process, _, Reason}` with that reason?
pub fn is_down(t: &Term, reason: &str) -> bool {
    matches!(as_tuple(t), Some([tag, _, _, _, r]) if as_atom(tag) == Some("DOWN") && as_atom(r) == Some(reason))
}

/// `{'EXIT', _, Reason}` with that reason?
pub fn is_exit(t: &Term, reason: &str) -> bool {
    matches!(as_tuple(t), Some([tag, _, r]) if as_atom(tag) == Some("EXIT") && as_atom(r) == Some(reason))
}

/// Starts an EPMD, a Rust node named after `stem`, its controller and one
/// erl node running the agent; waits until the agent reports.
pub async fn rust_and_erl(stem: &str, cookie: &str) -> (TestEpmd, Node, Ctl, Erl) {
    let epmd = TestEpmd::start().await;
    let node = Node::start(rust_config(&unique(&format!("r{stem}")), cookie, epmd.port))
        .await
        .expect("node starts");
    let mut ctl = Ctl::new(&node);
    let erl = Erl::start(
        &unique(&format!("e{stem}")),
        cookie,
        epmd.port,
        node.name(),
        &[],
    );
    ctl.agent_up(&erl.name).await;
    (epmd, node, ctl, erl)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}
