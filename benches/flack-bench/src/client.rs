//! One flack client connection: TCP connect from a chosen loopback source
//! address, websocket upgrade with small buffers, and the protocol steps
//! (hello, authenticate, join, leave, goodbye) each bounded by a timeout.
//!
//! Incoming messages are decoded into [`ServerMsg`], which borrows from the
//! frame so that the per-delivery hot path does not allocate. Benchmark data
//! travels in the chat message text, formatted by [`BenchPayload`].

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::cli::Target;

/// A client websocket.
pub type Ws = WebSocketStream<TcpStream>;

/// Messages the client sends.
#[derive(Debug, Serialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum ClientMsg<'a> {
    /// Opens the conversation.
    ClientHello {
        /// Always "1.0".
        protocol_version: &'a str,
    },
    /// Declares the user's name.
    Authenticate {
        /// Any non-empty name.
        user_name: &'a str,
    },
    /// Joins (and creates) a chat.
    JoinChat {
        /// The chat.
        chat_name: &'a str,
    },
    /// Sends a message to a chat.
    ChatMessage {
        /// The chat.
        chat_name: &'a str,
        /// Always "text/plain".
        mime_type: &'a str,
        /// The text.
        message: &'a str,
    },
    /// Leaves a chat.
    LeaveChat {
        /// The chat.
        chat_name: &'a str,
    },
    /// Keeps the connection alive.
    Ping,
    /// Announces the end of the conversation.
    ClientGoodbye,
}

impl ClientMsg<'_> {
    /// Encodes as a websocket text message.
    pub fn to_ws(&self) -> Message {
        // Serializing these plain structs cannot fail.
        Message::text(serde_json::to_string(self).unwrap_or_default())
    }
}

/// A message from the server, borrowed from the frame. Only the fields the
/// benchmark reads are decoded; `user_id` is kept raw because the two
/// servers need not agree on its JSON type.
#[derive(Debug, Deserialize)]
pub struct ServerMsg<'a> {
    /// The record type, e.g. "chat_message".
    #[serde(borrow)]
    pub record: Cow<'a, str>,
    /// Chat of chat_state, joined, left and chat_message.
    #[serde(borrow, default)]
    pub chat_name: Option<Text<'a>>,
    /// User name of joined.
    #[serde(borrow, default)]
    pub user_name: Option<Text<'a>>,
    /// User id of authenticated, joined, left and chat_message.
    #[serde(borrow, default)]
    pub user_id: Option<UserId<'a>>,
    /// Text of chat_message.
    #[serde(borrow, default)]
    pub message: Option<Text<'a>>,
    /// Per-chat sequence of joined, left and chat_message.
    #[serde(default)]
    pub sequence: Option<i64>,
    /// Code of protocol_error.
    #[serde(borrow, default)]
    pub code: Option<Text<'a>>,
    /// Reason of protocol_error.
    #[serde(borrow, default)]
    pub reason: Option<Text<'a>>,
}

impl<'a> ServerMsg<'a> {
    /// Decodes a text frame.
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// A JSON string borrowed from the frame when it has no escapes (serde
/// does not borrow a `Cow` inside an `Option` by itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// A user id as the server sent it, normalized to text: the spec says
/// string, but a number is accepted too so ids compare whatever their type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserId<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for UserId<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = UserId<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(UserId(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(UserId(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(UserId(Cow::Owned(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(UserId(Cow::Owned(v.to_string())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(UserId(Cow::Owned(v.to_string())))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(UserId(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// The user id of a message as an owned string ("" when absent).
pub fn user_id_string(id: &Option<UserId<'_>>) -> String {
    id.as_ref().map(|u| u.0.to_string()).unwrap_or_default()
}

/// The benchmark data carried in a chat message text:
/// `b:<sender>:<counter>:<unix_nanos>:<padding>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchPayload {
    /// Global sender index.
    pub sender: u32,
    /// Per-sender counter, from 0.
    pub counter: u64,
    /// Send (or scheduled send) time, nanoseconds since the Unix epoch.
    pub nanos: u64,
}

impl BenchPayload {
    /// Formats into `buf` (cleared first), padded with 'x' to `len` bytes.
    pub fn format_into(&self, buf: &mut String, len: usize) {
        buf.clear();
        let _ = write!(buf, "b:{}:{}:{}:", self.sender, self.counter, self.nanos);
        while buf.len() < len {
            buf.push('x');
        }
    }

    /// Parses a message text; `None` if it is not a benchmark message.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("b:")?;
        let mut it = rest.splitn(4, ':');
        let sender = it.next()?.parse().ok()?;
        let counter = it.next()?.parse().ok()?;
        let nanos = it.next()?.parse().ok()?;
        it.next()?;
        Some(BenchPayload {
            sender,
            counter,
            nanos,
        })
    }
}

/// Protocol step at which a connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// TCP connect.
    Connect,
    /// Websocket upgrade.
    Upgrade,
    /// client_hello -> server_hello.
    Hello,
    /// authenticate -> authenticated.
    Authenticate,
    /// join_chat -> chat_state + own joined.
    Join,
    /// leave_chat -> own left.
    Leave,
    /// client_goodbye -> server_goodbye.
    Goodbye,
    /// Websocket close.
    Close,
}

impl Stage {
    /// Name as used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Upgrade => "upgrade",
            Stage::Hello => "hello",
            Stage::Authenticate => "authenticate",
            Stage::Join => "join",
            Stage::Leave => "leave",
            Stage::Goodbye => "goodbye",
            Stage::Close => "close",
        }
    }
}

/// A failed protocol step.
#[derive(Debug, Clone)]
pub struct StepError {
    /// Where it failed.
    pub stage: Stage,
    /// What happened.
    pub detail: String,
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.stage.name(), self.detail)
    }
}

fn err(stage: Stage, detail: impl Into<String>) -> StepError {
    StepError {
        stage,
        detail: detail.into(),
    }
}

/// Picks the source address of connection `i`: 127.0.0.1, 127.0.0.2, ...
/// round-robin over `n` addresses; `None` (kernel's choice) when `n` is 0 or
/// the target is not IPv4.
pub fn source_for(i: u64, n: u32, target: &Target) -> Option<IpAddr> {
    if n == 0 || !target.addr.is_ipv4() {
        return None;
    }
    let k = (i % u64::from(n)) as u32 + 1;
    let [_, b, c, d] = k.to_be_bytes();
    Some(IpAddr::V4(Ipv4Addr::new(127, b, c, d)))
}

/// Settings for opening connections.
#[derive(Debug, Clone)]
pub struct ConnectCfg {
    /// Timeout of each step.
    pub op_timeout: Duration,
    /// Websocket read buffer in bytes.
    pub read_buffer: usize,
}

/// Opens a websocket to `target`, bound to `source` if given.
pub async fn connect(
    target: &Target,
    source: Option<IpAddr>,
    cfg: &ConnectCfg,
) -> Result<Ws, StepError> {
    let sock = if target.addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| err(Stage::Connect, format!("socket: {e}")))?;
    if let Some(src) = source {
        // Defer the port choice to connect() so that each source address
        // offers its whole ephemeral range per destination.
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads `one` for the given length; the fd is live.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        sock.bind(SocketAddr::new(src, 0))
            .map_err(|e| err(Stage::Connect, format!("bind {src}: {e}")))?;
    }
    let stream = tokio::time::timeout(cfg.op_timeout, sock.connect(target.addr))
        .await
        .map_err(|_| err(Stage::Connect, "timeout"))?
        .map_err(|e| err(Stage::Connect, e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let ws_cfg = WebSocketConfig::default()
        .read_buffer_size(cfg.read_buffer.max(64))
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20)
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let mut stream = stream;
    let tail = tokio::time::timeout(cfg.op_timeout, upgrade(&mut stream, target))
        .await
        .map_err(|_| err(Stage::Upgrade, "timeout"))??;
    Ok(WebSocketStream::from_partially_read(stream, tail, Role::Client, Some(ws_cfg)).await)
}

/// Largest upgrade response accepted.
const MAX_UPGRADE_RESPONSE: usize = 16 * 1024;

/// Performs the websocket upgrade (RFC 6455 section 4.1) and returns the
/// bytes read past the response. Done here rather than by tungstenite's
/// handshake because that one hands its 4 KiB read buffer on to the
/// connection, whatever read buffer size is configured; held 100k times,
/// that is 400 MiB of client memory.
async fn upgrade(stream: &mut TcpStream, target: &Target) -> Result<Vec<u8>, StepError> {
    let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n",
        target.path, target.host_header
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| err(Stage::Upgrade, format!("send request: {e}")))?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let end = loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| err(Stage::Upgrade, format!("read response: {e}")))?;
        if n == 0 {
            return Err(err(Stage::Upgrade, "connection closed during upgrade"));
        }
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            break from + p + 4;
        }
        if buf.len() > MAX_UPGRADE_RESPONSE {
            return Err(err(Stage::Upgrade, "upgrade response too long"));
        }
    };
    let head = std::str::from_utf8(&buf[..end])
        .map_err(|_| err(Stage::Upgrade, "upgrade response is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("101") {
        return Err(err(Stage::Upgrade, format!("server answered {status:?}")));
    }
    let accept = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|(_, v)| v.trim());
    let want = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    if accept != Some(want.as_str()) {
        return Err(err(Stage::Upgrade, "bad Sec-WebSocket-Accept"));
    }
    Ok(buf[end..].to_vec())
}

/// Sends one client message.
pub async fn send(ws: &mut Ws, msg: &ClientMsg<'_>, stage: Stage) -> Result<(), StepError> {
    ws.send(msg.to_ws())
        .await
        .map_err(|e| err(stage, format!("send: {e}")))
}

/// Reads messages until `want` returns `Some`, within `timeout`. Other
/// messages are skipped; protocol_error and a closed connection fail.
pub async fn recv_until<T>(
    ws: &mut Ws,
    stage: Stage,
    timeout: Duration,
    mut want: impl FnMut(&ServerMsg<'_>) -> Option<T>,
) -> Result<T, StepError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| err(stage, "timeout"))?;
        match next {
            None => return Err(err(stage, "connection closed by server")),
            Some(Err(e)) => return Err(err(stage, e.to_string())),
            Some(Ok(Message::Text(t))) => {
                let m = ServerMsg::parse(t.as_str())
                    .map_err(|e| err(stage, format!("bad JSON from server: {e}")))?;
                if m.record == "protocol_error" {
                    return Err(err(
                        stage,
                        format!(
                            "protocol_error {}: {}",
                            m.code.as_deref().unwrap_or("?"),
                            m.reason.as_deref().unwrap_or("?")
                        ),
                    ));
                }
                if let Some(v) = want(&m) {
                    return Ok(v);
                }
            }
            Some(Ok(Message::Close(f))) => {
                return Err(err(stage, format!("server closed the websocket: {f:?}")));
            }
            Some(Ok(_)) => {}
        }
    }
}

/// An authenticated connection.
pub struct Session {
    /// The websocket.
    pub ws: Ws,
    /// The id the server gave this user.
    pub user_id: String,
}

/// Shared limits on connection setup: a start rate and a concurrency cap.
#[derive(Debug)]
pub struct SetupGate {
    pacer: crate::stats::Pacer,
    permits: Arc<Semaphore>,
}

impl SetupGate {
    /// `rate` setups started per second (non-positive: unpaced), at most
    /// `concurrency` at once.
    pub fn new(rate: f64, concurrency: usize) -> Self {
        SetupGate {
            pacer: crate::stats::Pacer::new(rate),
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    /// Waits for a start slot and a concurrency permit.
    pub async fn enter(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.pacer.wait().await;
        self.permits.clone().acquire_owned().await.ok()
    }
}

/// Time each setup step took.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetupTimes {
    /// connect + upgrade.
    pub connect: Duration,
    /// hello + authenticate.
    pub auth: Duration,
    /// join.
    pub join: Duration,
}

impl SetupTimes {
    /// Total time from connect to own joined.
    pub fn total(&self) -> Duration {
        self.connect + self.auth + self.join
    }
}

/// Connects, says hello and authenticates as `user_name`.
pub async fn open_session(
    target: &Target,
    source: Option<IpAddr>,
    cfg: &ConnectCfg,
    user_name: &str,
    times: &mut SetupTimes,
) -> Result<Session, StepError> {
    let t0 = Instant::now();
    let mut ws = connect(target, source, cfg).await?;
    let t1 = Instant::now();
    times.connect = t1 - t0;
    send(
        &mut ws,
        &ClientMsg::ClientHello {
            protocol_version: "1.0",
        },
        Stage::Hello,
    )
    .await?;
    recv_until(&mut ws, Stage::Hello, cfg.op_timeout, |m| {
        (m.record == "server_hello").then_some(())
    })
    .await?;
    send(
        &mut ws,
        &ClientMsg::Authenticate { user_name },
        Stage::Authenticate,
    )
    .await?;
    let user_id = recv_until(&mut ws, Stage::Authenticate, cfg.op_timeout, |m| {
        (m.record == "authenticated").then(|| user_id_string(&m.user_id))
    })
    .await?;
    times.auth = t1.elapsed();
    Ok(Session { ws, user_id })
}

impl Session {
    /// Joins `chat`: waits for chat_state and then for the joined message
    /// about this user.
    pub async fn join(
        &mut self,
        chat: &str,
        user_name: &str,
        timeout: Duration,
    ) -> Result<(), StepError> {
        send(
            &mut self.ws,
            &ClientMsg::JoinChat { chat_name: chat },
            Stage::Join,
        )
        .await?;
        let mut have_state = false;
        recv_until(&mut self.ws, Stage::Join, timeout, |m| {
            if m.chat_name.as_deref() != Some(chat) {
                return None;
            }
            match &*m.record {
                "chat_state" => {
                    have_state = true;
                    None
                }
                "joined" if have_state && m.user_name.as_deref() == Some(user_name) => Some(()),
                _ => None,
            }
        })
        .await
    }

    /// Leaves `chat`: waits for the left message about this user.
    pub async fn leave(&mut self, chat: &str, timeout: Duration) -> Result<(), StepError> {
        send(
            &mut self.ws,
            &ClientMsg::LeaveChat { chat_name: chat },
            Stage::Leave,
        )
        .await?;
        let me = self.user_id.as_str();
        recv_until(&mut self.ws, Stage::Leave, timeout, |m| {
            (m.record == "left"
                && m.chat_name.as_deref() == Some(chat)
                && m.user_id.as_ref().map(|u| &*u.0) == Some(me))
            .then_some(())
        })
        .await
    }

    /// Says goodbye, waits for server_goodbye, then closes the websocket.
    pub async fn goodbye(mut self, timeout: Duration) -> Result<(), StepError> {
        send(&mut self.ws, &ClientMsg::ClientGoodbye, Stage::Goodbye).await?;
        recv_until(&mut self.ws, Stage::Goodbye, timeout, |m| {
            (m.record == "server_goodbye").then_some(())
        })
        .await?;
        close(self.ws, timeout).await
    }
}

/// Closes a websocket: sends a close frame (if still possible) and reads
/// until the server ends the connection, within `timeout`.
pub async fn close(mut ws: Ws, timeout: Duration) -> Result<(), StepError> {
    let done = tokio::time::timeout(timeout, async {
        // The server may already have closed after server_goodbye.
        let _ = ws.close(None).await;
        while let Some(m) = ws.next().await {
            if m.is_err() {
                break;
            }
        }
    })
    .await;
    done.map_err(|_| err(Stage::Close, "timeout waiting for the server to close"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_roundtrip() {
        let p = BenchPayload {
            sender: 7,
            counter: 123,
            nanos: 1_700_000_000_123_456_789,
        };
        let mut s = String::new();
        p.format_into(&mut s, 64);
        assert_eq!(s.len(), 64);
        assert_eq!(BenchPayload::parse(&s), Some(p));
        p.format_into(&mut s, 0);
        assert_eq!(BenchPayload::parse(&s), Some(p));
        assert_eq!(BenchPayload::parse("hello"), None);
        assert_eq!(BenchPayload::parse("b:1:2"), None);
    }

    #[test]
    fn client_messages() {
        assert_eq!(
            serde_json::to_string(&ClientMsg::Ping).expect("json"),
            r#"{"record":"ping"}"#
        );
        assert_eq!(
            serde_json::to_string(&ClientMsg::ClientHello {
                protocol_version: "1.0"
            })
            .expect("json"),
            r#"{"record":"client_hello","protocol_version":"1.0"}"#
        );
    }

    #[test]
    fn server_message_borrowed() {
        let t = r#"{"record":"chat_message","chat_name":"c","user_id":"u1","mime_type":"text/plain","message":"b:1:2:3:","timestamp":"2024-01-01T00:00:00Z","sequence":42}"#;
        let m = ServerMsg::parse(t).expect("parse");
        assert_eq!(m.record, "chat_message");
        assert!(matches!(m.message, Some(Text(Cow::Borrowed(_)))));
        assert!(matches!(m.chat_name, Some(Text(Cow::Borrowed(_)))));
        let e = ServerMsg::parse(r#"{"record":"x","message":"a\"b"}"#).expect("parse");
        assert_eq!(e.message.as_deref(), Some("a\"b"));
        assert_eq!(m.sequence, Some(42));
        assert_eq!(user_id_string(&m.user_id), "u1");
        let n = ServerMsg::parse(r#"{"record":"authenticated","user_id":17}"#).expect("parse");
        assert_eq!(user_id_string(&n.user_id), "17");
    }

    #[test]
    fn sources() {
        let t = crate::cli::parse_target("ws://127.0.0.1:1/x").expect("t");
        assert_eq!(source_for(0, 0, &t), None);
        assert_eq!(source_for(0, 3, &t), Some("127.0.0.1".parse().expect("ip")));
        assert_eq!(source_for(4, 3, &t), Some("127.0.0.2".parse().expect("ip")));
        assert_eq!(
            source_for(299, 300, &t),
            Some("127.0.1.44".parse().expect("ip"))
        );
    }
}
