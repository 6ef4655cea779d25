//! Assembly of a running node: the pieces of every concern wired together,
//! started, and stopped through one shutdown path.
//!
//! `main` and the integration tests start nodes the same way, through
//! [`start`], so what the tests exercise is what operators run.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::chat::connection::{ChatContext, ConnectionLimits};
use crate::cluster::directory::Directory;
use crate::config::Settings;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::node::ProcessTable;
use crate::node::pid::NO_NODE;

/// A node that is serving.
pub struct RunningNode {
    /// The address the listener is bound to (useful with port 0).
    pub local_addr: SocketAddr,
    /// Cancel to shut the node down.
    pub shutdown: CancellationToken,
    /// Counters, for tests and the metrics endpoint.
    pub metrics: Arc<Metrics>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningNode {
    /// Shuts down and waits until every session has closed (or the grace
    /// period is over).
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the node stops by itself (its shutdown token cancelled).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await??;
        Ok(())
    }
}

/// Binds the listener and starts serving.
pub async fn start(settings: Settings) -> anyhow::Result<RunningNode> {
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", settings.listen))?;
    let local_addr = listener.local_addr()?;
    let node_name: Arc<str> = Arc::from(NO_NODE);
    let metrics = Arc::new(Metrics::default());
    let shutdown = CancellationToken::new();
    let chat = Arc::new(ChatContext {
        directory: Arc::new(Directory::new(metrics.clone())),
        processes: Arc::new(ProcessTable::new(node_name.clone(), 0)),
        metrics: metrics.clone(),
        limits: ConnectionLimits {
            idle_timeout: settings.idle_timeout,
            max_frame_bytes: settings.max_frame_bytes,
            outbound_queue: settings.outbound_queue,
            write_timeout: settings.write_timeout,
        },
        shutdown: shutdown.clone(),
    });
    let state = AppState {
        chat,
        sessions: TaskTracker::new(),
        node_name,
    };
    let router = http::router(state.clone(), settings.static_dir.clone());
    info!(listen = %local_addr, static_dir = %settings.static_dir.display(), "flack node serving");
    let grace = settings.shutdown_grace;
    let task = tokio::spawn(http::serve(listener, router, state, grace));
    Ok(RunningNode {
        local_addr,
        shutdown,
        metrics,
        task,
    })
}
