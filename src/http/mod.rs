//! The HTTP front of a node: the websocket endpoint `/chat-server`, the web
//! client's static files, `GET /health` and `GET /metrics`.
//!
//! [`router`] builds the routes; [`serve`] runs them on a listener until the
//! shutdown token is cancelled, then waits (bounded) for every websocket
//! session to send its close frame and leave its chats.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tower_http::services::{ServeDir, ServeFile};
use tracing::{info, warn};

use crate::chat::connection::{ChatContext, serve as serve_connection};

/// Websocket buffer sizes. tungstenite's defaults (128 KiB each) would
/// dominate the memory of an idle connection; flack frames are small, and
/// buffers grow on demand for the rare large one.
const READ_BUFFER_BYTES: usize = 2 * 1024;
const WRITE_BUFFER_BYTES: usize = 8 * 1024;
/// Most bytes queued in a connection's write buffer before the client counts
/// as too slow (the event queue in front of it is bounded too).
const MAX_WRITE_BUFFER_BYTES: usize = 1024 * 1024;

/// Everything the HTTP handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Shared by every websocket session.
    pub chat: Arc<ChatContext>,
    /// Session tasks, so shutdown can wait for them.
    pub sessions: TaskTracker,
    /// This node's name (`nonode@nohost` without distribution).
    pub node_name: Arc<str>,
}

/// The node's routes. `static_dir` holds the web client; `/` serves its
/// `flack.html`.
pub fn router(state: AppState, static_dir: PathBuf) -> Router {
    let index = ServeFile::new(static_dir.join("flack.html"));
    let files = ServeDir::new(static_dir).append_index_html_on_directories(false);
    Router::new()
        .route("/chat-server", get(upgrade))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route_service("/", index)
        .fallback_service(files)
        .with_state(state)
}

async fn upgrade(
    upgrade: WebSocketUpgrade,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(state): State<AppState>,
) -> Response {
    let limits = state.chat.limits;
    let context = state.chat.clone();
    let sessions = state.sessions.clone();
    upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES)
        // The websocket layer reads frames up to a hard limit; the session
        // refuses those over the configured limit with FLACK-004. Reading a
        // moderately oversized frame whole lets that refusal and the close
        // reach the client cleanly instead of being cut off by a TCP reset.
        .max_message_size(hard_frame_limit(limits.max_frame_bytes))
        .max_frame_size(hard_frame_limit(limits.max_frame_bytes))
        .on_upgrade(move |socket| {
            sessions.track_future(serve_connection(socket, peer.to_string(), context))
        })
}

/// The most a single frame may make the websocket layer buffer.
fn hard_frame_limit(max_frame_bytes: usize) -> usize {
    max_frame_bytes
        .saturating_mul(4)
        .max(max_frame_bytes + 64 * 1024)
}

async fn health(State(state): State<AppState>) -> Response {
    let gauges = state.chat.directory.gauges();
    let connections = state
        .chat
        .metrics
        .connections_open
        .load(std::sync::atomic::Ordering::Relaxed);
    let cluster = state
        .chat
        .directory
        .cluster()
        .map(|cluster| cluster.status());
    Json(json!({
        "status": "ok",
        "node": &*state.node_name,
        "cluster": cluster,
        "version": env!("CARGO_PKG_VERSION"),
        "connections": connections,
        "rooms": gauges.rooms,
        "members": gauges.members,
        "users": gauges.users,
    }))
    .into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut body = state.chat.metrics.render(state.chat.directory.gauges());
    if let Some(cluster) = state.chat.directory.cluster() {
        body.push_str(&crate::metrics::render_cluster(&cluster.status()));
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Serves `router` on `listener` until `state.chat.shutdown` is cancelled,
/// then gives sessions up to `grace` to close.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    state: AppState,
    grace: Duration,
) -> std::io::Result<()> {
    let shutdown = state.chat.shutdown.clone();
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    // Flack writes small frames back to back (chat_state then joined);
    // with Nagle's algorithm the second waits for the client's delayed ACK,
    // about 40 ms on Linux.
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    axum::serve(listener, service)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    state.sessions.close();
    let open = state.sessions.len();
    if open > 0 {
        info!(sessions = open, "waiting for websocket sessions to close");
    }
    if tokio::time::timeout(grace, state.sessions.wait())
        .await
        .is_err()
    {
        warn!(
            sessions = state.sessions.len(),
            "sessions still open after the grace period"
        );
    }
    Ok(())
}
