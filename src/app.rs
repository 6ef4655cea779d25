//! Assembly of a running node: the pieces of every concern wired together,
//! started, and stopped through one shutdown path.
//!
//! `main` and the integration tests start nodes the same way, through
//! [`start`], so what the tests exercise is what operators run.
//!
//! A core service that its supervisor could not keep running (see
//! [`crate::node::supervisor`]) stops the node: `/health` answers 503 at
//! once, and after [`SERVICE_FAILURE_GRACE`] the node shuts down as on
//! SIGTERM and [`RunningNode::wait`] returns an error, so the process exits
//! non-zero and its supervisor (systemd) starts it again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::chat::connection::{ChatContext, ConnectionLimits};
use crate::cluster::directory::Directory;
use crate::cluster::gproc_dist::{ClusterStatus, GprocDist as Candidate, GprocDistConfig};
use crate::config::NodeName as ConfigName;
use crate::config::Settings;
use crate::config::sys_config::GprocDist;
use crate::http::{self, AppState, HttpLimits};
use crate::metrics::Metrics;
use crate::node::identity::NodeName;
use crate::node::{Node, NodeConfig};

/// A node that is serving.
pub struct RunningNode {
    /// The address the listener is bound to (useful with port 0).
    pub local_addr: SocketAddr,
    /// Cancel to shut the node down.
    pub shutdown: CancellationToken,
    /// Counters, for tests and the metrics endpoint.
    pub metrics: Arc<Metrics>,
    /// The Erlang node.
    pub node: Node,
    directory: Arc<Directory>,
    task: JoinHandle<std::io::Result<()>>,
    /// The services that failed for good, once the node stops for them.
    failure: Arc<parking_lot::Mutex<Option<Vec<String>>>>,
}

/// How long a node whose core service stays down keeps answering (with
/// 503 on `/health`) before it shuts down: long enough for a health check
/// or a scrape to see which service it was, short enough that its clients
/// move to a healthy node soon.
pub const SERVICE_FAILURE_GRACE: Duration = Duration::from_secs(5);

impl RunningNode {
    /// How many Rust nodes' fan-out processes this node knows.
    pub fn fanout_count(&self) -> usize {
        self.directory.fanout_count()
    }

    /// The chat directory, for tests that fill rooms without a connection
    /// per member.
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// This node's view of the gproc_dist cluster, when it is in one.
    pub fn cluster_status(&self) -> Option<ClusterStatus> {
        self.directory.cluster().map(|cluster| cluster.status())
    }

    /// Shuts down and waits until every session has closed (or the grace
    /// period is over).
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the node stops by itself (its shutdown token cancelled);
    /// an error when it stopped because a core service could not be kept
    /// running.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await??;
        if let Some(services) = self.failure.lock().take() {
            anyhow::bail!(
                "stopped because {} could not be restarted",
                services.join(", ")
            );
        }
        Ok(())
    }
}

/// Binds the listener and starts serving.
pub async fn start(settings: Settings) -> anyhow::Result<RunningNode> {
    let listener = listen(settings.listen)
        .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", settings.listen))?;
    let local_addr = listener.local_addr()?;
    let node = Node::start(node_config(&settings)?).await?;
    let node_name: Arc<str> = Arc::from(node.name());
    let metrics = Arc::new(Metrics::default());
    let shutdown = CancellationToken::new();
    let chat = Arc::new(ChatContext {
        directory: Directory::new(metrics.clone(), node.clone()),
        node: node.clone(),
        metrics: metrics.clone(),
        limits: ConnectionLimits {
            idle_timeout: settings.idle_timeout,
            max_frame_bytes: settings.max_frame_bytes,
            outbound_queue: settings.outbound_queue,
            write_timeout: settings.write_timeout,
            handshake_timeout: settings.handshake_timeout,
            max_message_frames: settings.max_message_frames,
            session: settings.session_limits,
        },
        shutdown: shutdown.clone(),
        records: Arc::default(),
    });
    if let Some(config) = cluster_config(&settings, &node)? {
        let observer: Arc<dyn crate::cluster::gproc_dist::RegistryObserver> =
            chat.directory.clone();
        let candidate = Candidate::start(node.clone(), config, observer, shutdown.clone())?;
        chat.directory.join_cluster(candidate);
        crate::cluster::fanout::start(
            &node,
            chat.directory.clone(),
            chat.records.clone(),
            shutdown.clone(),
        );
    }
    let directory = chat.directory.clone();
    let state = AppState {
        chat,
        sessions: TaskTracker::new(),
        node_name,
        http: Arc::new(HttpLimits {
            max_connections: settings.max_connections,
            header_read_timeout: settings.header_read_timeout,
            allowed_origins: settings.allowed_origins.clone(),
        }),
        websockets: Arc::default(),
    };
    let router = http::router(state.clone(), settings.static_dir.clone());
    info!(listen = %local_addr, static_dir = %settings.static_dir.display(), "flack node serving");
    let failure = Arc::default();
    stop_on_service_failure(&node, shutdown.clone(), Arc::clone(&failure));
    let grace = settings.shutdown_grace;
    let running_node = node.clone();
    let task = tokio::spawn(async move {
        let served = http::serve(listener, router, state, grace).await;
        node.shutdown().await;
        served
    });
    Ok(RunningNode {
        local_addr,
        shutdown,
        metrics,
        node: running_node,
        directory,
        task,
        failure,
    })
}

/// Shuts the node down [`SERVICE_FAILURE_GRACE`] after a supervised
/// service failed for good, noting which in `failure`.
fn stop_on_service_failure(
    node: &Node,
    shutdown: CancellationToken,
    failure: Arc<parking_lot::Mutex<Option<Vec<String>>>>,
) {
    let node = node.clone();
    tokio::spawn(async move {
        let services = tokio::select! {
            () = shutdown.cancelled() => return,
            services = node.service_failure() => services,
        };
        error!(
            services = ?services,
            "a core service stays down; the node stops in {SERVICE_FAILURE_GRACE:?} and exits non-zero"
        );
        *failure.lock() = Some(services);
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(SERVICE_FAILURE_GRACE) => shutdown.cancel(),
        }
    });
}

/// Connections the kernel queues for the listener before flack accepts
/// them. The default of 128 overflows when thousands of clients reconnect
/// at once (after a node restart), and every overflow costs a client a SYN
/// retry of a second or more.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The Erlang node this flack node is: named by `-sname`/`-name` (else no
/// distribution), with `-setcookie` or `~/.erlang.cookie`, `-hidden`, and
/// `net_ticktime`.
fn node_config(settings: &Settings) -> anyhow::Result<NodeConfig> {
    let name = match &settings.node_name {
        None => return Ok(NodeConfig::local()),
        Some(ConfigName::Short(spec)) => NodeName::short(spec)?,
        Some(ConfigName::Long(spec)) => NodeName::long(spec)?,
    };
    let cookie = match &settings.cookie {
        Some(cookie) => cookie.clone(),
        None => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
            crate::node::identity::cookie_from_file(
                &std::path::Path::new(&home).join(".erlang.cookie"),
            )?
        }
    };
    let mut config = NodeConfig::named(name, &cookie);
    config.hidden = settings.hidden;
    config.net_ticktime = settings.net_ticktime;
    settings.apply_dist(&mut config);
    Ok(config)
}

/// The gproc_dist candidate, when sys.config names candidates. `all` is
/// read as the original does at start: this node and the nodes it is
/// connected to, which at start is only itself.
fn cluster_config(settings: &Settings, node: &Node) -> anyhow::Result<Option<GprocDistConfig>> {
    let candidates = match &settings.gproc_dist {
        GprocDist::Off => return Ok(None),
        GprocDist::All => vec![node.name().to_owned()],
        GprocDist::Candidates { nodes, .. } => nodes.clone(),
    };
    if !node.is_distributed() {
        if candidates.len() > 1 {
            anyhow::bail!(
                "gproc_dist names candidates {candidates:?} but the node has no name (-sname or -name)"
            );
        }
        return Ok(None);
    }
    Ok(Some(GprocDistConfig {
        candidates,
        heartbeat: Duration::from_secs(5),
        data_dir: settings.data_dir.clone(),
        call_timeout: Duration::from_secs(5),
    }))
}
