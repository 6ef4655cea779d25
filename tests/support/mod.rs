//! Shared helpers for the integration tests: a real flack node on an
//! ephemeral loopback port and a real websocket client that speaks the v1
//! protocol.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use flack::app::{RunningNode, start};
use flack::config::Settings;
use flack::config::cli::RunArgs;
use flack::config::erl_args::ErlArgs;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// How long a test waits for something that should happen promptly.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Default run arguments, on an ephemeral loopback port.
pub fn run_args() -> RunArgs {
    RunArgs {
        port: Some(0),
        bind: "127.0.0.1".parse().expect("loopback"),
        static_dir: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/static").into()),
        idle_timeout_secs: 60,
        max_frame_bytes: 64 * 1024,
        outbound_queue: 1024,
        write_timeout_secs: 10,
        shutdown_grace_secs: 5,
        max_name_bytes: None,
        max_chats_per_connection: None,
        max_message_frames: None,
        max_connections: None,
        header_read_timeout_secs: None,
        handshake_timeout_secs: None,
        allowed_origins: Vec::new(),
        config: None,
        vm_args: None,
        data_dir: None,
    }
}

/// Starts a node with `args`.
pub async fn node_with(args: RunArgs) -> RunningNode {
    let settings = Settings::resolve(&args, ErlArgs::default()).expect("valid settings");
    start(settings).await.expect("node starts")
}

/// Starts a node with the default settings.
pub async fn node() -> RunningNode {
    node_with(run_args()).await
}

/// A websocket client of the flack protocol.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub user_id: String,
}

/// What the server did after the last frame.
#[derive(Debug)]
pub enum Received {
    Record(Value),
    Close(Option<CloseFrame>),
    Ended,
}

impl Client {
    /// Connects without saying hello.
    pub async fn connect(addr: SocketAddr) -> Self {
        let url = format!("ws://{addr}/chat-server");
        let (ws, _) = connect_async(url).await.expect("websocket connects");
        Self {
            ws,
            user_id: String::new(),
        }
    }

    /// Connects without saying hello, over a socket whose kernel receive
    /// buffer is set to `bytes` before the connection is made (so the TCP
    /// window is small whatever the machine's `tcp_rmem` says): a client
    /// that stops reading then backs up into the server after a few frames.
    pub async fn connect_with_receive_buffer(addr: SocketAddr, bytes: u32) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("TCP connects");
        let url = format!("ws://{addr}/chat-server");
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .expect("websocket connects");
        Self {
            ws,
            user_id: String::new(),
        }
    }

    /// Connects, says hello and authenticates as `name`.
    pub async fn login(addr: SocketAddr, name: &str) -> Self {
        Self::authenticate(Self::connect(addr).await, name).await
    }

    /// Says hello and authenticates as `name` on a connected client.
    pub async fn authenticate(mut client: Self, name: &str) -> Self {
        client.hello().await;
        client
            .send(json!({"record": "authenticate", "user_name": name}))
            .await;
        let authenticated = client.expect("authenticated").await;
        client.user_id = authenticated["user_id"]
            .as_str()
            .expect("user_id")
            .to_owned();
        client
    }

    /// client_hello / server_hello.
    pub async fn hello(&mut self) {
        self.send(json!({"record": "client_hello", "protocol_version": "1.0"}))
            .await;
        self.expect("server_hello").await;
    }

    pub async fn send(&mut self, record: Value) {
        self.send_text(record.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("frame sent");
    }

    /// The next thing the server does, within [`PATIENCE`].
    pub async fn receive(&mut self) -> Received {
        loop {
            let next = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("the server answers in time");
            match next {
                Some(Ok(Message::Text(text))) => {
                    return Received::Record(
                        serde_json::from_str(&text).expect("server sends JSON"),
                    );
                }
                Some(Ok(Message::Close(frame))) => return Received::Close(frame),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => panic!("unexpected frame {other:?}"),
                Some(Err(_)) | None => return Received::Ended,
            }
        }
    }

    /// The next record, which must be a `record`.
    pub async fn expect(&mut self, record: &str) -> Value {
        match self.receive().await {
            Received::Record(value) => {
                assert_eq!(value["record"], record, "unexpected record {value}");
                value
            }
            other => panic!("expected {record}, got {other:?}"),
        }
    }

    /// The next record, whatever it is.
    pub async fn expect_any(&mut self) -> Value {
        match self.receive().await {
            Received::Record(value) => value,
            other => panic!("expected a record, got {other:?}"),
        }
    }

    /// Joins a chat; returns its chat_state and the own joined event.
    pub async fn join(&mut self, chat: &str) -> (Value, Value) {
        self.send(json!({"record": "join_chat", "chat_name": chat}))
            .await;
        let state = self.expect("chat_state").await;
        let joined = self.expect("joined").await;
        assert_eq!(joined["user_id"], self.user_id.as_str());
        (state, joined)
    }

    pub async fn post(&mut self, chat: &str, message: &str) {
        self.send(json!({"record": "chat_message", "chat_name": chat, "mime_type": "text/plain", "message": message}))
            .await;
    }

    /// Expects a protocol_error with this code and reason, then the close.
    pub async fn expect_protocol_error(&mut self, code: &str, reason: &str) {
        let error = self.expect("protocol_error").await;
        assert_eq!(
            error,
            json!({"record": "protocol_error", "code": code, "reason": reason})
        );
        assert_eq!(
            error
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>()),
            Some(vec![
                "record".to_owned(),
                "code".to_owned(),
                "reason".to_owned()
            ])
        );
        self.expect_close().await;
    }

    /// Expects the server to close the connection.
    pub async fn expect_close(&mut self) -> Option<CloseFrame> {
        match self.receive().await {
            Received::Close(frame) => frame,
            other => panic!("expected a close, got {other:?}"),
        }
    }
}

/// The keys of a record, in wire order.
pub fn keys(value: &Value) -> Vec<String> {
    value
        .as_object()
        .map(|object| object.keys().cloned().collect())
        .unwrap_or_default()
}

/// Every client sends `join_chat` for `chat` at once, then reads its
/// `chat_state` and the `joined` events until it knows `total` members.
/// Returns each client with how many times it learned of each user_id.
pub async fn join_all_at_once(
    clients: Vec<Client>,
    chat: &str,
    total: usize,
) -> Vec<(Client, std::collections::HashMap<String, usize>)> {
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let chat = chat.to_owned();
            tokio::spawn(async move {
                client
                    .send(json!({"record": "join_chat", "chat_name": chat}))
                    .await;
                let mut known = std::collections::HashMap::<String, usize>::new();
                let state = client.expect("chat_state").await;
                for user in state["users"].as_array().expect("users") {
                    *known
                        .entry(user["user_id"].as_str().expect("id").to_owned())
                        .or_default() += 1;
                }
                while known.len() < total {
                    let joined = client.expect("joined").await;
                    *known
                        .entry(joined["user_id"].as_str().expect("id").to_owned())
                        .or_default() += 1;
                }
                (client, known)
            })
        })
        .collect();
    let mut finished = Vec::new();
    for task in tasks {
        finished.push(task.await.expect("joiner finished"));
    }
    finished
}

/// Each client learned exactly the users in `ids`, each once, and has
/// nothing else pending (a ping is answered next).
pub async fn assert_each_learned_once(
    finished: &mut [(Client, std::collections::HashMap<String, usize>)],
    ids: &std::collections::HashSet<String>,
) {
    for (client, known) in finished.iter_mut() {
        let learned: std::collections::HashSet<String> = known.keys().cloned().collect();
        assert_eq!(&learned, ids);
        let twice: Vec<_> = known.iter().filter(|(_, count)| **count > 1).collect();
        assert!(twice.is_empty(), "learned more than once: {twice:?}");
        client.send(json!({"record": "ping"})).await;
        client.expect("ping_reply").await;
    }
}
