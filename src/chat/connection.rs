//! One websocket connection: the I/O loop around a [`Session`].
//!
//! The loop waits on six things at once: a frame from the client, an event
//! in the session's mailbox, the overflow flag (the client is too slow), the
//! idle deadline, the handshake deadline (a client that has not sent its
//! `client_hello` in time gets CHAT-001), and node shutdown. Frames go
//! through the pure session, whose [`Step`] is then carried out against the
//! [`Directory`] and the socket. Events are written in batches: everything already queued goes
//! out with one flush.
//!
//! However the loop ends, the session leaves its chats and its process ends,
//! so no registration outlives its connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, Utf8Bytes};

use super::frames::{FrameGuard, TooManyFrames};
use super::outbound;
use super::session::{Phase, Session, SessionLimits, Step};
use crate::cluster::directory::{Directory, DirectoryError};
use crate::cluster::records::DecodeCache;
use crate::events::event::{ChatEvent, EventKind};
use crate::events::mailbox::{Mailbox, MailboxSender, mailbox};
use crate::events::protocol::{ProtocolError, encode};
use crate::metrics::Metrics;
use crate::node::{Delivery, Inbox, Node, Pid};

/// Close code for a client that could not keep up with its chats (4000-4999
/// is the range RFC 6455 leaves to applications).
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;

/// A client's websocket: the upgraded HTTP connection, read through a
/// [`FrameGuard`].
pub type ChatSocket = WebSocketStream<FrameGuard<TokioIo<Upgraded>>>;

/// How long closing waits for the client's side of the close handshake.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Most events written before a flush.
const WRITE_BATCH: usize = 64;

/// What every connection shares.
pub struct ChatContext {
    /// The chat directory.
    pub directory: Arc<Directory>,
    /// The Erlang node (sessions are its processes).
    pub node: Node,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Connection limits.
    pub limits: ConnectionLimits,
    /// Cancelled when the node shuts down.
    pub shutdown: CancellationToken,
    /// Records from other nodes, decoded once for all local members.
    pub records: Arc<DecodeCache>,
}

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A connection with no frame from the client for this long is closed.
    pub idle_timeout: Duration,
    /// Largest frame accepted from a client, in bytes.
    pub max_frame_bytes: usize,
    /// Events that may wait for a client before it counts as too slow.
    pub outbound_queue: usize,
    /// Longest a single write to a client may take.
    pub write_timeout: Duration,
    /// Longest a client may take to send its `client_hello`.
    pub handshake_timeout: Duration,
    /// Most frames one client message may arrive in.
    pub max_message_frames: usize,
    /// Longest names and most chats.
    pub session: SessionLimits,
}

/// Why a connection ended, for the log line.
enum Ending {
    Goodbye,
    ProtocolError(ProtocolError),
    ClientClosed,
    ClientVanished(String),
    Idle,
    SlowConsumer,
    Shutdown,
    Killed,
    Unavailable(String),
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Goodbye => write!(f, "client_goodbye"),
            Self::ProtocolError(error) => write!(f, "protocol_error {error}"),
            Self::ClientClosed => write!(f, "client closed"),
            Self::ClientVanished(error) => write!(f, "client vanished: {error}"),
            Self::Idle => write!(f, "idle timeout"),
            Self::SlowConsumer => write!(f, "slow consumer"),
            Self::Shutdown => write!(f, "node shutdown"),
            Self::Killed => write!(f, "process ended by an exit signal"),
            Self::Unavailable(error) => write!(f, "{error}"),
        }
    }
}

/// The session's inbox as the node sees it: chat records sent by members on
/// other nodes (`{user_joined, ...}` and the rest) join the same bounded
/// queue as local events; anything else is logged and dropped, as the
/// original's session logs an unhandled message.
struct SessionInbox {
    route: MailboxSender,
    metrics: Arc<Metrics>,
    records: Arc<DecodeCache>,
}

impl Inbox for SessionInbox {
    fn deliver_term(&self, from: Option<&Pid>, message: eetf::Term) -> Delivery {
        match self.records.decode(&message) {
            Ok(event) => {
                let delivery = self.route.deliver(&event);
                if delivery == Delivery::Accepted {
                    Metrics::bump(&self.metrics.deliveries);
                }
                delivery
            }
            Err(error) => {
                debug!(?from, %error, "session ignored a message that is not a chat record");
                Delivery::Accepted
            }
        }
    }

    fn terminated(&self, _reason: &eetf::Term) {
        self.route.control().flag_terminated();
    }
}

/// Runs one connection to its end.
pub async fn serve(socket: ChatSocket, peer: String, context: Arc<ChatContext>) {
    let metrics = &context.metrics;
    Metrics::bump(&metrics.connections_total);
    metrics
        .connections_open
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (route, mailbox) = mailbox(context.limits.outbound_queue);
    let inbox = Arc::new(SessionInbox {
        route: route.clone(),
        metrics: context.metrics.clone(),
        records: context.records.clone(),
    });
    let pid = context.node.spawn(inbox);
    info!(%peer, %pid, "connection opened");

    let mut connection = Connection {
        socket,
        session: Session::with_limits(context.limits.session),
        pid: pid.clone(),
        route,
        context: context.clone(),
        posting: None,
        left_chats: false,
    };
    let ending = connection.run(mailbox).await;

    // Boxed, like the rarely taken branches of `run`: an idle session's
    // task is as large as the largest state its future may reach, and an
    // idle connection should cost what it holds, not what it might await.
    if !connection.left_chats {
        Box::pin(context.directory.session_ended(&pid)).await;
    }
    context
        .node
        .exit_process(&pid, eetf::Term::from(eetf::Atom::from("normal")));
    metrics
        .connections_open
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    let user = connection
        .session
        .identity()
        .map(|identity| identity.user_id.clone());
    info!(%peer, %pid, user = user.as_deref().unwrap_or("-"), reason = %ending, "connection closed");
}

struct Connection {
    socket: ChatSocket,
    session: Session,
    pid: Pid,
    route: MailboxSender,
    context: Arc<ChatContext>,
    /// A post still being sent to members on other nodes. While it is,
    /// the client's next frames wait (backpressure on its input) but the
    /// session keeps delivering its own mailbox, so a busy poster is never
    /// mistaken for a slow reader.
    posting: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// The session already left its chats (a slow consumer does before
    /// its close), so ending it must not do it again: in a cluster that
    /// would be a second `pid_is_DOWN` to the leader for nothing.
    left_chats: bool,
}

impl Connection {
    async fn run(&mut self, mut mailbox: Mailbox) -> Ending {
        let limits = self.context.limits;
        let shutdown = self.context.shutdown.clone();
        let control = mailbox.control.clone();
        // The signals and the one deadline timer are made once, not per
        // turn of the loop: in a 1000-member room every event wakes every
        // member, and re-registering three waiters and a timer on each wake
        // was a visible share of the fan-out's cost.
        let shutdown_signal = shutdown.cancelled();
        let overflow_signal = control.wait_overflow();
        let terminated_signal = control.wait_terminated();
        tokio::pin!(shutdown_signal, overflow_signal, terminated_signal);
        let hello_deadline = Instant::now() + limits.handshake_timeout;
        // The idle deadline moves with every frame; the timer is only moved
        // when it fires early (below).
        let mut last_frame = Instant::now();
        let timer = sleep_until(hello_deadline.min(last_frame + limits.idle_timeout));
        tokio::pin!(timer);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown_signal => {
                    Box::pin(self.close(CloseCode::Away, "server shutting down")).await;
                    return Ending::Shutdown;
                }
                () = &mut overflow_signal => {
                    return Box::pin(self.drop_slow_consumer()).await;
                }
                () = &mut terminated_signal => {
                    Box::pin(self.close(CloseCode::Error, "session process ended")).await;
                    return Ending::Killed;
                }
                () = poll_posting(&mut self.posting), if self.posting.is_some() => {
                    self.posting = None;
                }
                frame = self.socket.next(), if self.posting.is_none() => {
                    last_frame = Instant::now();
                    // Boxed: handling a frame may await the directory (the
                    // cluster's leader calls), a large state to carry idle.
                    if let Some(ending) = Box::pin(self.on_frame(frame)).await {
                        return ending;
                    }
                }
                Some(event) = mailbox.events.recv() => {
                    if self.already_known(&event) {
                        continue;
                    }
                    // Boxed: the pinned signals above live across this
                    // await, and inline the write's state would add to
                    // every idle session's task (one allocation per batch
                    // is cheap next to the write itself).
                    let write = Box::pin(self.write_events(
                        event.json.clone(),
                        &mut mailbox,
                        overflow_signal.as_mut(),
                    ));
                    if let Err(ending) = write.await {
                        return ending;
                    }
                }
                () = &mut timer => {
                    let now = Instant::now();
                    let in_hello = self.session.phase() == Phase::Hello;
                    if in_hello && now >= hello_deadline {
                        debug!(pid = %self.pid, "no client_hello before the handshake deadline");
                        return Box::pin(self.fail(crate::events::protocol::ProtocolError::hello_expected()))
                            .await
                            .unwrap_or(Ending::Idle);
                    }
                    let idle_deadline = last_frame + limits.idle_timeout;
                    if now >= idle_deadline {
                        Metrics::bump(&self.context.metrics.idle_timeouts);
                        Box::pin(self.close(CloseCode::Normal, "idle timeout")).await;
                        return Ending::Idle;
                    }
                    // Fired early: a frame came since it was set.
                    let next = if in_hello { hello_deadline.min(idle_deadline) } else { idle_deadline };
                    timer.as_mut().reset(next);
                }
            }
        }
    }

    /// Handles one read from the socket; `Some` ends the connection.
    async fn on_frame(
        &mut self,
        frame: Option<Result<Message, tungstenite::Error>>,
    ) -> Option<Ending> {
        let step = match frame {
            None => return Some(Ending::ClientClosed),
            Some(Err(error)) => {
                if matches!(error, tungstenite::Error::Capacity(_)) {
                    Metrics::bump(&self.context.metrics.frames_in);
                    self.session
                        .on_oversized(self.context.limits.max_frame_bytes)
                } else if let Some(limit) = TooManyFrames::find(&error) {
                    Metrics::bump(&self.context.metrics.frames_in);
                    self.session.on_too_many_frames(limit)
                } else {
                    return Some(Ending::ClientVanished(error.to_string()));
                }
            }
            Some(Ok(message)) => {
                Metrics::bump(&self.context.metrics.frames_in);
                match message {
                    Message::Text(text) if text.len() > self.context.limits.max_frame_bytes => self
                        .session
                        .on_oversized(self.context.limits.max_frame_bytes),
                    Message::Binary(data) if data.len() > self.context.limits.max_frame_bytes => {
                        self.session
                            .on_oversized(self.context.limits.max_frame_bytes)
                    }
                    Message::Text(text) => self.session.on_text(text.as_str()),
                    Message::Binary(_) => self.session.on_binary(),
                    // Control frames: tungstenite answers pings itself.
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return None,
                    Message::Close(_) => return Some(Ending::ClientClosed),
                }
            }
        };
        self.carry_out(step).await
    }

    /// Carries out what the session decided.
    async fn carry_out(&mut self, step: Step) -> Option<Ending> {
        let directory = self.context.directory.clone();
        let reply = match step {
            Step::Reply(text) => text,
            Step::Authenticate(identity) => {
                match directory
                    .register_user(
                        &self.pid,
                        &self.route,
                        &identity.user_name,
                        &identity.user_id,
                    )
                    .await
                {
                    Ok(_) => encode::authenticated(&identity.user_id),
                    Err(error) => return Some(self.unavailable(error).await),
                }
            }
            Step::Join { chat } => match directory.join(&chat, &self.pid, self.route.clone()).await
            {
                Ok(members) => encode::chat_state(&chat, &members),
                // The session tracks its chats, so the registry agrees; if it
                // ever did not, the client sees the same error as a re-join.
                Err(DirectoryError::Registry(_)) => {
                    return self.fail(ProtocolError::already_joined()).await;
                }
                Err(error) => return Some(self.unavailable(error).await),
            },
            Step::Post { chat, message } => {
                if let Some(identity) = self.session.identity() {
                    let user_id = identity.user_id.clone();
                    if directory.cluster().is_none() {
                        // A single node queues the event for every member
                        // at once; nothing to wait for.
                        directory.post(&chat, &self.pid, &user_id, message).await;
                        return None;
                    }
                    let pid = self.pid.clone();
                    self.posting = Some(Box::pin(async move {
                        directory.post(&chat, &pid, &user_id, message).await;
                    }));
                }
                return None;
            }
            Step::Leave { chat } => {
                if let Some(identity) = self.session.identity() {
                    let user_id = identity.user_id.clone();
                    let _ = directory.leave(&chat, &self.pid, &user_id).await;
                }
                return None;
            }
            Step::Goodbye { chats } => {
                if let Some(identity) = self.session.identity() {
                    let user_id = identity.user_id.clone();
                    for chat in chats {
                        let _ = directory.leave(&chat, &self.pid, &user_id).await;
                    }
                }
                let _ = self.send_text(encode::server_goodbye()).await;
                self.close_bare().await;
                return Some(Ending::Goodbye);
            }
            Step::Fail(error) => return self.fail(error).await,
        };
        self.send_text(reply).await.err()
    }

    /// The cluster registry did not answer: the original's connection
    /// process would crash on the gproc timeout; this one closes with 1011.
    async fn unavailable(&mut self, error: DirectoryError) -> Ending {
        warn!(pid = %self.pid, %error, "closing a connection: the registry is unavailable");
        self.close(CloseCode::Error, "registry unavailable").await;
        Ending::Unavailable(error.to_string())
    }

    async fn fail(&mut self, error: ProtocolError) -> Option<Ending> {
        Metrics::bump(&self.context.metrics.protocol_errors);
        debug!(pid = %self.pid, %error, "protocol error");
        let _ = self.send_text(encode::protocol_error(&error)).await;
        self.close_bare().await;
        Some(Ending::ProtocolError(error))
    }

    async fn send_text(&mut self, text: String) -> Result<(), Ending> {
        let allowance = write_allowance(self.context.limits.write_timeout, text.len());
        let write = async {
            self.socket.flush().await?;
            let io = self.socket.get_mut();
            outbound::write_text_frames(io, &[Bytes::from(text)]).await?;
            io.flush().await?;
            Ok::<(), tungstenite::Error>(())
        };
        match timeout(allowance, write).await {
            Ok(Ok(())) => {
                Metrics::bump(&self.context.metrics.frames_out);
                Ok(())
            }
            Ok(Err(error)) => Err(Ending::ClientVanished(error.to_string())),
            // Boxed: closing is rare, and inline it would make every
            // write's (and so every idle session's) state larger.
            Err(_) => Err(Box::pin(self.drop_slow_consumer()).await),
        }
    }

    /// In a cluster, a member on another node may announce its join to
    /// everyone, as the original does, including members that registered
    /// after it and so already list it in their chat_state. Such a `joined`
    /// is dropped here, when the session is past its own join, so each
    /// member is learned exactly once.
    fn already_known(&self, event: &ChatEvent) -> bool {
        match &event.kind {
            EventKind::Joined { user_id, .. } if self.context.directory.cluster().is_some() => self
                .context
                .directory
                .known_from_chat_state(&event.chat, user_id, &self.pid),
            _ => false,
        }
    }

    /// Writes `first` and whatever else is already queued, then flushes once.
    /// A client that stops reading blocks the write; its queue can fill
    /// meanwhile, and `overflow` ends the write as soon as it does rather
    /// than after the write timeout (the queue's bound, not the clock,
    /// decides when a slow client goes).
    async fn write_events(
        &mut self,
        first: Utf8Bytes,
        mailbox: &mut Mailbox,
        overflow: Pin<&mut impl Future<Output = ()>>,
    ) -> Result<(), Ending> {
        let limits = self.context.limits;
        let metrics = self.context.metrics.clone();
        let batch = async {
            let mut payloads: Vec<Bytes> = Vec::with_capacity(8);
            payloads.push(first.into());
            while payloads.len() < WRITE_BATCH {
                match mailbox.events.try_recv() {
                    Ok(event) if self.already_known(&event) => {}
                    Ok(event) => payloads.push(event.json.clone().into()),
                    Err(_) => break,
                }
            }
            // Whatever tungstenite still holds (a pong) goes out first, so
            // frames never interleave; then the batch, without a copy.
            self.socket.flush().await?;
            let io = self.socket.get_mut();
            outbound::write_text_frames(io, &payloads).await?;
            io.flush().await?;
            Ok::<u64, tungstenite::Error>(payloads.len() as u64)
        };
        let outcome = tokio::select! {
            biased;
            written = timeout(limits.write_timeout, batch) => Some(written),
            () = overflow => None,
        };
        match outcome {
            Some(Ok(Ok(written))) => {
                Metrics::add(&metrics.frames_out, written);
                Ok(())
            }
            Some(Ok(Err(error))) => Err(Ending::ClientVanished(error.to_string())),
            Some(Err(_)) | None => Err(Box::pin(self.drop_slow_consumer()).await),
        }
    }

    async fn drop_slow_consumer(&mut self) -> Ending {
        Metrics::bump(&self.context.metrics.slow_clients_dropped);
        // Leave every chat before the close handshake: a client that does
        // not read holds the close frame's write and the linger for up to
        // two seconds, during which its members would not hear `left` and
        // its full queue would keep being offered events.
        Box::pin(self.context.directory.session_ended(&self.pid)).await;
        self.left_chats = true;
        self.close(
            CloseCode::from(CLOSE_SLOW_CONSUMER),
            "slow consumer: outbound queue full",
        )
        .await;
        Ending::SlowConsumer
    }

    /// Sends an empty close frame, as the original (cowboy's `close`) does
    /// after `server_goodbye` and after a `protocol_error`.
    async fn close_bare(&mut self) {
        let _ = timeout(CLOSE_LINGER, self.socket.send(Message::Close(None))).await;
        self.linger().await;
    }

    /// After our close frame, reads until the client closes too (bounded):
    /// closing a socket with unread input makes the kernel send a reset,
    /// which can destroy the last frames before the client reads them.
    async fn linger(&mut self) {
        let drain = async {
            while let Some(Ok(message)) = self.socket.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        };
        let _ = timeout(CLOSE_LINGER, drain).await;
        let guard = self.socket.get_mut();
        if guard.tripped() {
            guard.discard_input(CLOSE_LINGER).await;
        }
    }

    /// Sends a close frame, giving up quickly on a client that does not read.
    async fn close(&mut self, code: CloseCode, reason: &'static str) {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        let _ = timeout(CLOSE_LINGER, self.socket.send(Message::Close(Some(frame)))).await;
        self.linger().await;
    }
}

/// How long one reply of `bytes` may take to write: `write_timeout` for
/// each MiB begun, so that a large `chat_state` (10 MB for a room of
/// 100,000) reaches a client that reads at 100 KiB/s or more.
fn write_allowance(write_timeout: Duration, bytes: usize) -> Duration {
    let mebibytes = u32::try_from(bytes.div_ceil(1 << 20).max(1)).unwrap_or(u32::MAX);
    write_timeout.saturating_mul(mebibytes)
}

/// Drives the post in progress, if any, to completion.
async fn poll_posting(posting: &mut Option<Pin<Box<dyn Future<Output = ()> + Send>>>) {
    match posting {
        Some(post) => post.await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_replies_get_time_in_proportion() {
        let second = Duration::from_secs(1);
        assert_eq!(write_allowance(second, 0), second);
        assert_eq!(write_allowance(second, 1 << 20), second);
        assert_eq!(write_allowance(second, (1 << 20) + 1), 2 * second);
        assert_eq!(write_allowance(second, 34_000_000), 33 * second);
    }
}
