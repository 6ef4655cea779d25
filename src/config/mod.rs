//! Configuration: the command line, Erlang-style arguments (`vm.args` and the
//! release's `-App Key Value` overrides), and the settings they resolve to.

pub mod cli;
pub mod erl_args;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use cli::RunArgs;
use erl_args::ErlArgs;

/// The port the original flack listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 8080;

/// Everything a running node needs to know, resolved from every source.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the HTTP and websocket listener binds.
    pub listen: SocketAddr,
    /// The web client's directory.
    pub static_dir: PathBuf,
    /// Idle timeout of a websocket connection.
    pub idle_timeout: Duration,
    /// Largest client frame accepted.
    pub max_frame_bytes: usize,
    /// Outbound event queue per connection.
    pub outbound_queue: usize,
    /// Longest single write to a client.
    pub write_timeout: Duration,
    /// Time given to sessions to close at shutdown.
    pub shutdown_grace: Duration,
    /// Erlang-style arguments (node name, cookie, application environment).
    pub erl: ErlArgs,
}

impl Settings {
    /// Resolves settings: `--flags` win over `-flack key value`, which wins
    /// over defaults.
    pub fn resolve(run: &RunArgs, erl: ErlArgs) -> anyhow::Result<Self> {
        let port = match (run.port, erl.app_value("flack", "port")) {
            (Some(port), _) => port,
            (None, Some(text)) => text
                .parse::<u16>()
                .with_context(|| format!("-flack port {text}: not a port number"))?,
            (None, None) => DEFAULT_PORT,
        };
        if run.max_frame_bytes < 256 {
            bail!(
                "--max-frame-bytes {} is too small (at least 256)",
                run.max_frame_bytes
            );
        }
        if run.idle_timeout_secs == 0 {
            bail!("--idle-timeout-secs must be at least 1");
        }
        Ok(Self {
            listen: SocketAddr::new(run.bind, port),
            static_dir: run.static_dir.clone().unwrap_or_else(default_static_dir),
            idle_timeout: Duration::from_secs(run.idle_timeout_secs),
            max_frame_bytes: run.max_frame_bytes,
            outbound_queue: run.outbound_queue.max(1),
            write_timeout: Duration::from_secs(run.write_timeout_secs.max(1)),
            shutdown_grace: Duration::from_secs(run.shutdown_grace_secs),
            erl,
        })
    }

    /// The listen address.
    pub fn bind(&self) -> IpAddr {
        self.listen.ip()
    }
}

/// `static/` of the release the binary runs from (`<root>/bin/flack` or
/// `<root>/target/*/flack`), else `./static`.
fn default_static_dir() -> PathBuf {
    let beside_release = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .skip(1)
            .take(3)
            .map(|dir| dir.join("static"))
            .find(|dir| dir.join("flack.html").is_file())
    });
    beside_release.unwrap_or_else(|| Path::new("static").to_path_buf())
}
