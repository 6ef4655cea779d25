//! The Erlang node runtime: what makes this binary a node that OTP nodes
//! cannot tell from one of their own for everything flack needs.
//!
//! - [`identity`]: node name, host and cookie, worked out as `erl` does.
//! - [`pid`], [`process`]: process identifiers and the local process table.
//! - [`mailbox`]: a ready-made process type for services and tests.
//! - [`monitors`], [`links`]: pure bookkeeping of monitors and links.
//! - [`epmd`]: the EPMD client, and the EPMD server `flack epmd` runs.
//! - [`dist`]: flags, handshake, connections and control messages.
//! - [`services`]: `net_kernel`, `rex`, `erpc` spawn requests, the mesh,
//!   and OTP's `global` ([`services::global`], used through [`Node::global`]).
//! - [`supervisor`]: restarts those services (and gproc_dist) when their
//!   processes end, within a limit, and reports a service that stays down.
//!
//! [`Node`] is the handle the rest of flack holds: cheap to clone, started
//! with [`Node::start`], stopped with [`Node::shutdown`]. Without a node
//! name, distribution is off: no EPMD, no listener, pids of `nonode@nohost`.

pub mod dist;
pub mod epmd;
pub mod identity;
pub mod links;
pub mod mailbox;
pub mod monitors;
pub mod pid;
pub mod process;
pub mod services;
pub mod supervisor;
pub mod term;

pub(crate) mod core;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use eetf::Term;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

pub use identity::NodeName;
pub use mailbox::{Mailbox, Received, TermMailbox};
pub use monitors::Watched;
pub use pid::Pid;
pub use process::{Delivery, ExitAction, ExitKind, Inbox, NameError, ProcessTable};
pub use supervisor::{ServiceState, ServiceStatus};

use self::core::Core;
use self::dist::connection::Outgoing;

/// How to get an EPMD when none answers at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EpmdStart {
    /// Fail to start.
    Never,
    /// Run our EPMD server inside this process (tests).
    InProcess,
    /// Run `PROGRAM epmd` detached, as `erl` runs `epmd -daemon`
    /// (the default: this very binary).
    Command(PathBuf),
}

/// Everything [`Node::start`] needs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node name; `None` turns distribution off.
    pub name: Option<NodeName>,
    /// The cookie.
    pub cookie: String,
    /// Start as a hidden node (not in peers' `nodes()`).
    pub hidden: bool,
    /// `net_ticktime` (60 s in erl).
    pub net_ticktime: Duration,
    /// Bound on each handshake step and on connecting (`net_setuptime`, 7 s).
    pub setup_time: Duration,
    /// EPMD port (`ERL_EPMD_PORT`, 4369).
    pub epmd_port: u16,
    /// Address the distribution listener binds (`inet_dist_use_interface`;
    /// every interface by default, as in OTP).
    pub listen_ip: IpAddr,
    /// Distribution port, the first of the range tried
    /// (`inet_dist_listen_min`); 0 picks any free port.
    pub listen_port: u16,
    /// Last port of the range tried (`inet_dist_listen_max`); at most
    /// `listen_port` means `listen_port` only.
    pub listen_port_max: u16,
    /// Where an EPMD this node starts in-process listens
    /// (`ERL_EPMD_ADDRESS`); one started as a command inherits the variable.
    pub epmd_addresses: Vec<IpAddr>,
    /// Messages queued toward one peer before it counts as not reading.
    pub peer_queue: usize,
    /// Largest frame accepted from a peer, in bytes.
    pub max_frame: usize,
    /// What to do when no EPMD answers.
    pub start_epmd: EpmdStart,
    /// How often the mesh keeper asks peers for their nodes.
    pub mesh_interval: Duration,
    /// `-kernel prevent_overlapping_partitions`: whether `global` tells its
    /// peers of a lost connection and acts on their reports, as an Erlang
    /// node does (`true`, OTP 25's default).
    pub prevent_overlapping_partitions: bool,
    /// `-proto_dist inet_tls` with its `-ssl_dist_optfile` options: the
    /// distribution runs over TLS; plain TCP when `None`.
    pub tls: Option<dist::tls::TlsDistOptions>,
}

impl NodeConfig {
    /// A node without distribution.
    pub fn local() -> Self {
        Self {
            name: None,
            cookie: String::new(),
            hidden: false,
            net_ticktime: Duration::from_secs(60),
            setup_time: Duration::from_secs(7),
            epmd_port: epmd::port_from_env(),
            listen_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            listen_port: 0,
            listen_port_max: 0,
            epmd_addresses: epmd::server::listen_addresses(
                std::env::var("ERL_EPMD_ADDRESS").ok().as_deref(),
            )
            .unwrap_or_else(|_| vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
            peer_queue: 65_536,
            max_frame: 64 << 20,
            start_epmd: std::env::current_exe()
                .map(EpmdStart::Command)
                .unwrap_or(EpmdStart::Never),
            mesh_interval: Duration::from_secs(10),
            prevent_overlapping_partitions: true,
            tls: None,
        }
    }

    /// A distributed node named `name` with `cookie`.
    pub fn named(name: NodeName, cookie: &str) -> Self {
        Self {
            name: Some(name),
            cookie: cookie.to_owned(),
            ..Self::local()
        }
    }
}

/// Connection events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// A peer connected.
    Up(Arc<str>),
    /// A peer's connection was lost, with the reason.
    Down(Arc<str>, String),
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Listener.
    #[error("cannot listen for distribution: {0}")]
    Listen(std::io::Error),
    /// EPMD.
    #[error(transparent)]
    Epmd(#[from] epmd::client::EpmdClientError),
    /// No EPMD and none could be started.
    #[error("no epmd answers on port {0} and none could be started")]
    NoEpmd(u16),
    /// The TLS options name files that cannot be used.
    #[error(transparent)]
    Tls(#[from] dist::tls::TlsSetupError),
}

/// The node handle: cheap to clone, shared by every part of flack.
#[derive(Clone)]
pub struct Node {
    core: Arc<Core>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.core.name)
            .finish()
    }
}

impl Node {
    /// Starts the node: with a name, listens, makes sure EPMD runs,
    /// registers, and starts `net_kernel`, `rex`, the mesh keeper and
    /// `global_name_server`.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let Some(name) = config.name.clone() else {
            let core = Arc::new(Core::new(Arc::from(pid::NO_NODE), 0, String::new(), config));
            return Ok(Node { core });
        };
        // Certificates and keys first: a node that cannot speak TLS to its
        // peers must not register with EPMD as if it could.
        let tls = config
            .tls
            .as_ref()
            .map(dist::tls::DistTls::load)
            .transpose()?;
        let listener = listen(&config).await.map_err(NodeError::Listen)?;
        let port = listener.local_addr().map_err(NodeError::Listen)?.port();
        let epmd_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, config.epmd_port));
        if !epmd::client::is_running(epmd_addr).await {
            ensure_epmd(&config).await?;
        }
        let registration =
            epmd::client::register(epmd_addr, &name.alive, port, config.hidden).await?;
        let mut core = Core::new(
            Arc::from(name.full().as_str()),
            registration.creation,
            config.cookie.clone(),
            config,
        );
        core.tls = tls;
        let core = Arc::new(core);
        *core.registration.lock() = Some(registration);
        *core.listen_port.lock() = port;
        let node = Node { core: core.clone() };
        let (system, _) = TermMailbox::new(1);
        *core.system.lock() = Some(node.spawn(system));
        services::net_kernel::start(&node);
        services::rex::start(&node);
        services::mesh::start(&node, node.core.config.mesh_interval);
        services::global::start(&node);
        tokio::spawn(dist::connection::accept_loop(core.clone(), listener));
        tracing::info!(
            "node {} up on port {port} (creation {}, distribution over {})",
            core.name,
            core.creation,
            if core.tls.is_some() { "TLS" } else { "TCP" }
        );
        Ok(node)
    }

    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// `node()`.
    pub fn name(&self) -> &str {
        &self.core.name
    }

    /// The creation EPMD gave this incarnation (0 without distribution).
    pub fn creation(&self) -> u32 {
        self.core.creation
    }

    /// The distribution listen port (0 without distribution).
    pub fn port(&self) -> u16 {
        *self.core.listen_port.lock()
    }

    /// Whether distribution is on.
    pub fn is_distributed(&self) -> bool {
        self.core.distributed()
    }

    /// The supervised services (`net_kernel`, `rex`, `flack_mesh`,
    /// `global_name_server`, `gproc_dist`) and how each stands.
    pub fn services(&self) -> Vec<ServiceStatus> {
        self.core.services.statuses()
    }

    /// The supervised services that ended more often than their restart
    /// limit allows and stay down.
    pub fn failed_services(&self) -> Vec<String> {
        self.core.services.failed_names()
    }

    /// Waits until a supervised service has failed for good; returns the
    /// names of those that have.
    pub async fn service_failure(&self) -> Vec<String> {
        self.core.services.failed().await
    }

    /// Starts a process: a fresh pid of this node for `inbox`.
    pub fn spawn(&self, inbox: Arc<dyn Inbox>) -> Pid {
        self.core.table.spawn(inbox)
    }

    /// Starts a [`TermMailbox`] process holding up to `capacity` messages.
    pub fn spawn_mailbox(&self, capacity: usize) -> (Pid, Mailbox) {
        let (inbox, mailbox) = TermMailbox::new(capacity);
        (self.spawn(inbox), mailbox)
    }

    /// `register(Name, Pid)`.
    pub fn register_name(&self, name: &str, pid: &Pid) -> Result<(), NameError> {
        self.core.table.register_name(name, pid)
    }

    /// `whereis(Name)`.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.core.table.whereis(name)
    }

    /// Whether `pid` is a live local process.
    pub fn is_alive(&self, pid: &Pid) -> bool {
        self.core.table.is_alive(pid)
    }

    /// `To ! Msg` with no sending process. Remote sends connect on demand;
    /// `Full` means the peer was not reading and has been disconnected.
    pub fn send(&self, to: &Pid, msg: Term) -> Delivery {
        self.core.send(None, to, msg)
    }

    /// `To ! Msg` from `from`.
    pub fn send_from(&self, from: &Pid, to: &Pid, msg: Term) -> Delivery {
        self.core.send(Some(from), to, msg)
    }

    /// Like [`Node::send_from`], but waits for room toward a slow peer
    /// instead of disconnecting it (busy_dist_port behaviour).
    pub async fn send_wait(&self, from: Option<&Pid>, to: &Pid, msg: Term) -> Delivery {
        if self.core.is_local_node(&to.node) {
            return self.core.send(from, to, msg);
        }
        self.core
            .route_wait(
                &to.node.clone(),
                Outgoing::Send {
                    from: from.cloned(),
                    to: to.clone(),
                    msg,
                },
            )
            .await
    }

    /// `{Name, Node} ! Msg` (our own node name delivers locally).
    pub fn send_named(&self, node: &str, name: &str, msg: Term, from: Option<&Pid>) -> Delivery {
        self.core.send_named(from, &Arc::from(node), name, msg)
    }

    /// Replies to a `gen:call` `From` term (`{Pid, Tag}`), using the
    /// caller's alias when it gave one.
    pub fn reply(&self, me: &Pid, from: &Term, reply: Term) {
        self.core.reply(me, from, reply)
    }

    /// `erlang:monitor(process, Target)` by local `watcher`. The `'DOWN'`
    /// arrives in the watcher's inbox; at once with `noproc` when the target
    /// does not exist, with `noconnection` when its node is lost.
    pub fn monitor(&self, watcher: &Pid, target: &Pid) -> eetf::Reference {
        self.core.monitor(watcher, Watched::Pid(target.clone()))
    }

    /// `erlang:monitor(process, {Name, Node})`.
    pub fn monitor_name(&self, watcher: &Pid, name: &str, node: &str) -> eetf::Reference {
        self.core.monitor(
            watcher,
            Watched::Name {
                name: name.to_owned(),
                node: Arc::from(node),
            },
        )
    }

    /// `erlang:demonitor(Ref)`.
    pub fn demonitor(&self, reference: &eetf::Reference) {
        self.core.demonitor(reference)
    }

    /// `link(B)` from local `a`.
    pub fn link(&self, a: &Pid, b: &Pid) {
        self.core.link(a, b)
    }

    /// `unlink(B)` from local `a`.
    pub fn unlink(&self, a: &Pid, b: &Pid) {
        self.core.unlink(a, b)
    }

    /// Ends local process `pid` with `reason`: it leaves the table, its
    /// monitors fire and its links propagate, here and on peers.
    pub fn exit_process(&self, pid: &Pid, reason: Term) {
        self.core.exit_process(pid, reason)
    }

    /// `exit(To, Reason)` sent by `from`.
    pub fn exit(&self, from: &Pid, to: &Pid, reason: Term) {
        if self.core.is_local_node(&to.node) {
            self.core.signal_exit(to, from, &reason, ExitKind::Exit2);
        } else {
            self.core.route(
                &to.node.clone(),
                Outgoing::Exit2 {
                    from: from.clone(),
                    to: to.clone(),
                    reason,
                },
            );
        }
    }

    /// Makes `alias` a reference that delivers to `pid` (`alias/0`).
    pub fn alias(&self, pid: &Pid) -> eetf::Reference {
        let r = self.core.make_ref();
        self.core.aliases.lock().insert(r.clone(), pid.clone());
        r
    }

    /// Deactivates an alias.
    pub fn unalias(&self, alias: &eetf::Reference) {
        self.core.aliases.lock().remove(alias);
    }

    /// How many monitors with an end on this node are held (local and
    /// remote watchers together).
    pub fn monitor_count(&self) -> usize {
        self.core.monitors.lock().len()
    }

    /// Node up/down events.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.core.events.subscribe()
    }

    /// `nodes()`: visible connected peers.
    pub fn connected_nodes(&self) -> Vec<String> {
        self.core
            .connected()
            .into_iter()
            .filter(|(_, v)| *v)
            .map(|(n, _)| n.to_string())
            .collect()
    }

    /// `nodes(hidden)`.
    pub fn hidden_nodes(&self) -> Vec<String> {
        self.core
            .connected()
            .into_iter()
            .filter(|(_, v)| !*v)
            .map(|(n, _)| n.to_string())
            .collect()
    }

    /// `net_kernel:connect_node/1`: connects (if needed) and waits up to the
    /// setup time for the outcome.
    pub async fn connect(&self, node: &str) -> bool {
        let name: Arc<str> = Arc::from(node);
        if self.core.peer_flags(node).is_some() {
            return true;
        }
        let mut events = self.subscribe();
        if !self.core.connect(&name) {
            return false;
        }
        let deadline = tokio::time::Instant::now() + self.core.config.setup_time * 2;
        loop {
            if self.core.peer_flags(node).is_some() {
                return true;
            }
            if !self.core.peers.lock().contains_key(node) {
                return false;
            }
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Err(_) => return self.core.peer_flags(node).is_some(),
                Ok(Err(broadcast::error::RecvError::Closed)) => return false,
                Ok(_) => {}
            }
        }
    }

    /// `erlang:disconnect_node/1`.
    pub fn disconnect(&self, node: &str) -> bool {
        self.core.disconnect(&Arc::from(node))
    }

    /// `make_ref()`: unique on this node incarnation.
    pub fn make_ref(&self) -> eetf::Reference {
        self.core.make_ref()
    }

    /// Stops the node: drops every connection (peers see `nodedown`),
    /// unregisters from EPMD, stops accepting.
    pub async fn shutdown(&self) {
        let peers: Vec<(Arc<str>, u64)> = self
            .core
            .peers
            .lock()
            .iter()
            .map(|(n, s)| (n.clone(), s.id))
            .collect();
        for (node, id) in peers {
            self.core.connection_lost(&node, id, "shutdown");
        }
        self.core.shutdown.cancel();
        self.core.registration.lock().take();
        // Let the writers close their sockets.
        tokio::task::yield_now().await;
    }
}

/// Binds the distribution listener: `listen_ip`, the first free port of
/// `listen_port..=listen_port_max` (inet_tcp_dist's `do_listen`).
async fn listen(config: &NodeConfig) -> std::io::Result<TcpListener> {
    let last = config.listen_port_max.max(config.listen_port);
    let mut port = config.listen_port;
    loop {
        match TcpListener::bind(SocketAddr::new(config.listen_ip, port)).await {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && port < last => port += 1,
            Err(e) => return Err(e),
        }
    }
}

async fn ensure_epmd(config: &NodeConfig) -> Result<(), NodeError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, config.epmd_port));
    match &config.start_epmd {
        EpmdStart::Never => return Err(NodeError::NoEpmd(config.epmd_port)),
        EpmdStart::InProcess => {
            let listeners = epmd::server::bind_all(&config.epmd_addresses, config.epmd_port)
                .await
                .map_err(|_| NodeError::NoEpmd(config.epmd_port))?;
            tokio::spawn(epmd::server::serve_many(
                listeners,
                tokio_util::sync::CancellationToken::new(),
                epmd::server::Limits::default(),
            ));
        }
        EpmdStart::Command(program) => {
            epmd::server::spawn_daemon(program, config.epmd_port)
                .map_err(|_| NodeError::NoEpmd(config.epmd_port))?;
        }
    }
    if epmd::client::wait_running(addr, Duration::from_secs(5)).await {
        Ok(())
    } else {
        Err(NodeError::NoEpmd(config.epmd_port))
    }
}
