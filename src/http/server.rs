//! The listener's accept loop: HTTP/1.1 connections served by hyper, with
//! limits `axum::serve` does not offer.
//!
//! - **Header read timeout.** A client has `--header-read-timeout-secs` to
//!   send a complete request head, and a kept-alive connection is closed
//!   when no next request starts within that time. Without it, a TCP
//!   connection that never sends a byte is kept for ever, and enough of them
//!   (one per file descriptor) make the node unreachable, `/health`
//!   included.
//! - **Bounded request heads** ([`MAX_HEAD_BYTES`]).
//! - **Accept errors logged once.** When the process is out of file
//!   descriptors (`EMFILE`) every accept fails until some close; the loop
//!   backs off briefly, logs the first failure, stays quiet while the
//!   failures continue (a reminder with the count once a minute), and says
//!   when accepting works again.
//! - **Graceful shutdown.** When the token is cancelled the loop stops
//!   accepting, and every connection still speaking HTTP finishes the
//!   request in progress and closes. Upgraded connections (websockets) are
//!   not in this loop's care once upgraded: their sessions close them.
//!
//! Websocket upgrades work as with `axum::serve`: hyper hands the upgraded
//! connection to the handler's `OnUpgrade`. HTTP/2 is not served; browsers
//! speak HTTP/1.1 to a plain-text port, and a TLS proxy in front may speak
//! HTTP/2 to them.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// Largest request head (request line and headers) read from a client.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Pause after an accept error other than a connection's own failure.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How often a persisting accept error is logged again.
const ACCEPT_ERROR_REMINDER: Duration = Duration::from_secs(60);

/// Settings of the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    /// Longest a client may take to send a request head.
    pub header_read_timeout: Duration,
}

/// Accepts connections on `listener` and serves `router` on them until
/// `shutdown` is cancelled. Returns the (closed) tracker of the connections
/// still speaking HTTP, to wait for.
pub async fn run(
    listener: TcpListener,
    router: Router,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> TaskTracker {
    let connections = TaskTracker::new();
    let mut errors = AcceptErrors::default();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                errors.recovered();
                connections.spawn(serve_connection(
                    stream,
                    peer,
                    router.clone(),
                    config,
                    shutdown.clone(),
                ));
            }
            Err(error) if is_connection_error(&error) => {}
            Err(error) => {
                errors.failed(&error);
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
    connections.close();
    connections
}

/// A failure of one connection that was being accepted, not of the
/// listener: try the next one at once.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Rate-limited logging of accept errors: at most one warning a minute
/// (with the count since the last), and one line when accepting works
/// again after a warning.
#[derive(Debug, Default)]
struct AcceptErrors {
    /// Failures since the last warning.
    failures: u64,
    /// When the last warning was written.
    warned: Option<Instant>,
    /// Whether accepting has failed since the last warning or recovery line.
    failing: bool,
    /// Whether the recovery after the last warning is still to be logged.
    recovery_due: bool,
}

impl AcceptErrors {
    fn failed(&mut self, error: &io::Error) {
        self.failures += 1;
        self.failing = true;
        let now = Instant::now();
        let due = self
            .warned
            .is_none_or(|warned| now.duration_since(warned) >= ACCEPT_ERROR_REMINDER);
        if !due {
            return;
        }
        if error.raw_os_error() == Some(libc::EMFILE) {
            warn!(%error, failures = self.failures,
                "cannot accept connections: out of file descriptors (raise LimitNOFILE or lower --max-connections); retrying, next report in a minute at the earliest");
        } else {
            warn!(%error, failures = self.failures,
                "cannot accept connections; retrying, next report in a minute at the earliest");
        }
        self.warned = Some(now);
        self.failures = 0;
        self.recovery_due = true;
    }

    fn recovered(&mut self) {
        if self.failing && self.recovery_due {
            info!("accepting connections again after accept errors");
            self.recovery_due = false;
        }
        self.failing = false;
    }
}

/// Serves one TCP connection until it closes, is upgraded, or the node
/// shuts down.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    config: ServerConfig,
    shutdown: CancellationToken,
) {
    // Flack writes small frames back to back (chat_state then joined);
    // with Nagle's algorithm the second waits for the client's delayed ACK,
    // about 40 ms on Linux.
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let mut router = router.clone();
        async move {
            // The router is always ready (axum's Router::poll_ready).
            let response: Result<_, Infallible> =
                tower_service::Service::call(&mut router, request).await;
            response
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        debug!(%peer, %error, "HTTP connection ended with an error");
    }
}
