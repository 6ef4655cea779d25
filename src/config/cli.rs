//! The `flack` command line.
//!
//! GNU-style options are parsed by clap; Erlang-style words (`-flack port
//! 8081`, `-sname flack1`, `-setcookie c`) are taken out first by
//! [`super::erl_args`], so the release's habits work on the command line too.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Flack: a distributed websocket chat server.
#[derive(Debug, Parser)]
#[command(name = "flack", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node in the foreground, logging to stderr.
    Foreground(RunArgs),
    /// Run a node in the foreground (the release's `console`; same as foreground).
    Console(RunArgs),
    /// Ask the node these options describe whether it is serving (its `GET
    /// /health`): prints `pong` and exits 0, or says it is not responding and
    /// exits 1. The release's `bin/flack ping` runs this.
    Ping(RunArgs),
    /// Show the cluster as the node these options describe sees it: its role
    /// (leader, follower, candidate), the gproc_dist leader, the candidates
    /// up and down, and the size of the global registry.
    Cluster(RunArgs),
}

/// Options of a running node. Erlang-style `-flack port N` works as well as `--port N`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Port of the HTTP and websocket listener [default: 8080, or `-flack port N`].
    #[arg(long)]
    pub port: Option<u16>,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// Directory of the web client [default: `static` next to the release, else `./static`].
    #[arg(long)]
    pub static_dir: Option<PathBuf>,
    /// Seconds without a frame from a client before its connection is closed.
    #[arg(long, default_value_t = 60)]
    pub idle_timeout_secs: u64,
    /// Largest frame accepted from a client, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,
    /// Events that may wait for one client before it is closed as too slow.
    #[arg(long, default_value_t = 1024)]
    pub outbound_queue: usize,
    /// Seconds a single write to a client may take before it is closed as too slow.
    #[arg(long, default_value_t = 10)]
    pub write_timeout_secs: u64,
    /// Seconds given to open connections to close on shutdown.
    #[arg(long, default_value_t = 5)]
    pub shutdown_grace_secs: u64,
    /// Longest user_name, user_id and chat_name a client may send, in bytes
    /// (FLACK-005 beyond) [default: 256, or `{flack, [{max_name_bytes, N}]}`].
    #[arg(long)]
    pub max_name_bytes: Option<usize>,
    /// Most chats one connection may be in at once (FLACK-006 beyond)
    /// [default: 100, or `{flack, [{max_chats_per_connection, N}]}`].
    #[arg(long)]
    pub max_chats_per_connection: Option<usize>,
    /// Most websocket frames one client message may be sent in: its
    /// fragments and the control frames between them (FLACK-007 beyond)
    /// [default: 128, or `{flack, [{max_message_frames, N}]}`].
    #[arg(long)]
    pub max_message_frames: Option<usize>,
    /// Most websocket connections open at once; further upgrades get HTTP
    /// 503 while /health and /metrics keep answering [default: the open-file
    /// limit minus a reserve of a tenth, at least 64; or `{flack,
    /// [{max_connections, N}]}`].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Seconds a client has to send a complete HTTP request head (also the
    /// longest a kept-alive HTTP connection waits for its next request)
    /// [default: 10, or `{flack, [{header_read_timeout_secs, N}]}`].
    #[arg(long)]
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds a websocket client has to send its client_hello after the
    /// upgrade [default: 10, or `{flack, [{handshake_timeout_secs, N}]}`].
    #[arg(long)]
    pub handshake_timeout_secs: Option<u64>,
    /// Origins allowed to open websockets, comma-separated
    /// (`https://chat.example.com,https://www.example.com`), or `*` for any
    /// [default: the request's own host, or `{flack, [{allowed_origins,
    /// [...]}]}`; requests without Origin are always allowed].
    #[arg(long, value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// The sys.config to read [default: `releases/<version>/sys.config` of the release, if present].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The vm.args to read [default: `releases/<version>/vm.args` of the release, if present].
    #[arg(long, value_name = "PATH")]
    pub vm_args: Option<PathBuf>,
    /// Where node state lives (gen_leader's incarnation file) [default: `var/` of the release, else `.`].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}
