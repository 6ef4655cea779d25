//! The HTTP front of a node: the websocket endpoint `/chat-server`, the web
//! client's static files, `GET /health` and `GET /metrics`.
//!
//! [`router`] builds the routes; [`serve`] runs them on a listener (through
//! [`server`]'s accept loop) until the shutdown token is cancelled, then
//! waits (bounded) for every websocket session to send its close frame and
//! leave its chats.
//!
//! The websocket upgrade is done here rather than by axum's extractor, so
//! that:
//!
//! - browsers' `Origin` is checked ([`origin`]; 403 when not allowed);
//! - at most [`HttpLimits::max_connections`] websockets are open at once;
//!   beyond, upgrades get 503 (`flack_connections_refused_total`) while
//!   plain requests such as `/health` and `/metrics` keep being served;
//! - the upgraded stream is read through a [`FrameGuard`], which counts
//!   frames per message;
//! - no write-buffer cap refuses a large record: a `chat_state` of a room
//!   of 100,000 members reaches its joiner (see [`websocket_config`]).

pub mod origin;
pub mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_util::task::TaskTracker;
use tower_http::services::{ServeDir, ServeFile};
use tracing::{debug, info, warn};
use tungstenite::protocol::{Role, WebSocketConfig};

use crate::chat::connection::{ChatContext, ConnectionLimits, serve as serve_connection};
use crate::chat::frames::FrameGuard;
use crate::metrics::Metrics;
use origin::AllowedOrigins;

/// Websocket buffer sizes. tungstenite's defaults (128 KiB each) would
/// dominate the memory of an idle connection; flack frames are small, and
/// buffers grow on demand for the rare large one. The read buffer is kept
/// by every connection for its whole life (a chat post is 100-300 bytes):
/// 512 instead of 1024 bytes took an idle connection from 6.2 to 5.7 KiB.
const READ_BUFFER_BYTES: usize = 512;
const WRITE_BUFFER_BYTES: usize = 8 * 1024;

/// Limits of the HTTP side of the listener.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Most websocket connections open at once; further upgrades get 503.
    pub max_connections: usize,
    /// Longest a client may take to send a request head.
    pub header_read_timeout: Duration,
    /// Who may open websockets from a browser.
    pub allowed_origins: AllowedOrigins,
}

/// Everything the HTTP handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Shared by every websocket session.
    pub chat: Arc<ChatContext>,
    /// Session tasks, so shutdown can wait for them.
    pub sessions: TaskTracker,
    /// This node's name (`nonode@nohost` without distribution).
    pub node_name: Arc<str>,
    /// Limits of the HTTP side.
    pub http: Arc<HttpLimits>,
    /// Websocket connections admitted and not yet ended (counted from the
    /// upgrade response, before the session starts, so that simultaneous
    /// upgrades cannot overshoot the limit).
    pub websockets: Arc<AtomicUsize>,
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

/// `GET /chat-server`: checks the request, the origin and the connection
/// limit, answers 101 and starts the session on the upgraded connection.
async fn upgrade(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(state): State<AppState>,
    mut request: Request,
) -> Response {
    let headers = request.headers();
    let key = match websocket_key(request.method(), headers) {
        Ok(key) => key,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let origin = headers
        .get(header::ORIGIN)
        .map(|value| value.to_str().unwrap_or("?"));
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok());
    if !state.http.allowed_origins.allows(origin, host) {
        Metrics::bump(&state.chat.metrics.origins_refused);
        debug!(%peer, origin = origin.unwrap_or("-"), "websocket refused: origin not allowed");
        return (StatusCode::FORBIDDEN, "Origin not allowed\n").into_response();
    }
    let Some(slot) = Slot::take(&state.websockets, state.http.max_connections) else {
        Metrics::bump(&state.chat.metrics.connections_refused);
        debug!(%peer, "websocket refused: connection limit reached");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            "Too many connections\n",
        )
            .into_response();
    };
    let Some(on_upgrade) = request.extensions_mut().remove::<OnUpgrade>() else {
        return (StatusCode::UPGRADE_REQUIRED, "Connection not upgradable\n").into_response();
    };
    let context = state.chat.clone();
    let limits = context.limits;
    let session = async move {
        let _slot = slot;
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                debug!(%peer, %error, "websocket upgrade failed");
                return;
            }
        };
        let stream = FrameGuard::new(TokioIo::new(upgraded), limits.max_message_frames);
        let socket =
            WebSocketStream::from_raw_socket(stream, Role::Server, Some(websocket_config(&limits)))
                .await;
        serve_connection(socket, peer.to_string(), context).await;
    };
    tokio::spawn(state.sessions.track_future(session));
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    response_headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        response_headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// The `Sec-WebSocket-Key` of a valid websocket upgrade request, or why the
/// request is not one.
fn websocket_key<'a>(
    method: &Method,
    headers: &'a HeaderMap,
) -> Result<&'a HeaderValue, &'static str> {
    if method != Method::GET {
        return Err("A websocket upgrade is a GET\n");
    }
    let has = |name: HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|value| {
                value
                    .split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    if !has(header::CONNECTION, "upgrade") {
        return Err("Connection header did not include 'upgrade'\n");
    }
    if !has(header::UPGRADE, "websocket") {
        return Err("`Upgrade` header did not include 'websocket'\n");
    }
    if !has(header::SEC_WEBSOCKET_VERSION, "13") {
        return Err("`Sec-WebSocket-Version` header did not include '13'\n");
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or("`Sec-WebSocket-Key` header missing\n")
}

/// One admitted websocket connection; dropping it frees its place.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// A place among `max`, if one is free.
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| Self(open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The websocket settings of a session.
///
/// There is no cap on the write buffer (`max_write_buffer_size`): such a cap
/// refuses any single record larger than itself, and a `chat_state` grows
/// with its room (about 95 bytes a member with ordinary names: a 1 MiB cap
/// shut out every joiner of a room of 11,000). What a connection holds
/// stays bounded without it:
///
/// - events wait in the session's mailbox, at most `--outbound-queue` of
///   them, each bounded by `--max-frame-bytes` and `--max-name-bytes`;
/// - tokio-tungstenite's sink writes through once its buffer passes
///   `WRITE_BUFFER_BYTES`, and after a write that would block it accepts no
///   further record until the buffer is flushed, so the buffer holds at
///   most `WRITE_BUFFER_BYTES` plus one record;
/// - a client that does not take a write within `--write-timeout-secs` is
///   closed as a slow consumer.
pub fn websocket_config(limits: &ConnectionLimits) -> WebSocketConfig {
    // The websocket layer reads frames up to a hard limit; the session
    // refuses those over the configured limit with FLACK-004. Reading a
    // moderately oversized frame whole lets that refusal and the close
    // reach the client cleanly instead of being cut off by a TCP reset.
    let hard = hard_frame_limit(limits.max_frame_bytes);
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(usize::MAX)
        .max_message_size(Some(hard))
        .max_frame_size(Some(hard))
}

/// The most a single frame may make the websocket layer buffer.
fn hard_frame_limit(max_frame_bytes: usize) -> usize {
    max_frame_bytes
        .saturating_mul(4)
        .max(max_frame_bytes + 64 * 1024)
}

/// `GET /health`: 200 with `"status":"ok"` while every supervised service
/// runs (or is being restarted); 503 with `"status":"failed"` and the
/// services in `failed_services` once one stays down (the node then stops,
/// see [`crate::app::SERVICE_FAILURE_GRACE`]).
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
    let services = state.chat.node.services();
    let failed: Vec<&str> = services
        .iter()
        .filter(|service| service.state == crate::node::ServiceState::Failed)
        .map(|service| service.name.as_str())
        .collect();
    let (code, status) = if failed.is_empty() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "failed")
    };
    let body = Json(json!({
        "status": status,
        "node": &*state.node_name,
        "cluster": cluster,
        "version": env!("CARGO_PKG_VERSION"),
        "connections": connections,
        "rooms": gauges.rooms,
        "members": gauges.members,
        "users": gauges.users,
        "services": services,
        "failed_services": failed,
    }));
    (code, body).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut body = state.chat.metrics.render(state.chat.directory.gauges());
    body.push_str(&crate::metrics::render_services(
        &state.chat.node.services(),
    ));
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
    let connections = server::run(
        listener,
        router,
        server::ServerConfig {
            header_read_timeout: state.http.header_read_timeout,
        },
        shutdown,
    )
    .await;
    state.sessions.close();
    let open = state.sessions.len();
    if open > 0 {
        info!(sessions = open, "waiting for websocket sessions to close");
    }
    let waited = async {
        state.sessions.wait().await;
        connections.wait().await;
    };
    if tokio::time::timeout(grace, waited).await.is_err() {
        warn!(
            sessions = state.sessions.len(),
            http_connections = connections.len(),
            "connections still open after the grace period"
        );
    }
    Ok(())
}
