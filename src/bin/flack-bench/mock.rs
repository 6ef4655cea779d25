//! Test support: a minimal in-process flack server (the v1 protocol, one
//! node) so that every scenario can be run end to end by `cargo test`
//! without a real server, plus fault injection (dropped and duplicated
//! deliveries) to check that the benchmark's own checks notice them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc};
use tokio_tungstenite::tungstenite::Message;

/// Faults the mock injects into chat_message deliveries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Drop every n-th delivery.
    pub drop_every: Option<u64>,
    /// Send every n-th delivery twice.
    pub dup_every: Option<u64>,
}

struct Member {
    conn: u64,
    user_name: String,
    user_id: String,
    tx: mpsc::Sender<String>,
}

#[derive(Default)]
struct Chat {
    members: Vec<Member>,
    seq: i64,
}

struct State {
    chats: Mutex<HashMap<String, Chat>>,
    deliveries: AtomicU64,
    faults: Faults,
}

/// Starts the mock on an ephemeral loopback port; returns its URL.
pub async fn start(faults: Faults) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let state = Arc::new(State {
        chats: Mutex::new(HashMap::new()),
        deliveries: AtomicU64::new(0),
        faults,
    });
    tokio::spawn(async move {
        let mut next = 0u64;
        while let Ok((tcp, _)) = listener.accept().await {
            next += 1;
            let _ = tcp.set_nodelay(true);
            tokio::spawn(conn(state.clone(), tcp, next));
        }
    });
    format!("ws://{addr}/chat-server")
}

fn stamp(v: &mut Value, seq: i64) {
    v["timestamp"] = json!("2026-01-01T00:00:00Z");
    v["sequence"] = json!(seq);
}

async fn conn(st: Arc<State>, tcp: tokio::net::TcpStream, id: u64) {
    let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<String>(100_000);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(Message::text(m)).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let user_id = format!("u{id}");
    let mut user_name = String::new();
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(t) = msg else {
            if matches!(msg, Message::Close(_)) {
                break;
            }
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
            break;
        };
        let chat = v["chat_name"].as_str().unwrap_or_default().to_string();
        let reply = |m: Value| tx.send(m.to_string());
        match v["record"].as_str().unwrap_or_default() {
            "client_hello" => {
                let _ = reply(json!({"record": "server_hello", "protocol_version": "1.0"})).await;
            }
            "authenticate" => {
                user_name = v["user_name"].as_str().unwrap_or_default().to_string();
                let _ = reply(json!({"record": "authenticated", "user_id": user_id})).await;
            }
            "ping" => {
                let _ = reply(json!({"record": "ping_reply"})).await;
            }
            "client_goodbye" => {
                let _ = reply(json!({"record": "server_goodbye"})).await;
            }
            "join_chat" => {
                let mut chats = st.chats.lock().await;
                let c = chats.entry(chat.clone()).or_default();
                let users: Vec<Value> = c
                    .members
                    .iter()
                    .map(|m| json!({"user_name": m.user_name, "user_id": m.user_id}))
                    .collect();
                let _ = tx
                    .send(
                        json!({"record": "chat_state", "chat_name": chat, "users": users})
                            .to_string(),
                    )
                    .await;
                c.members.push(Member {
                    conn: id,
                    user_name: user_name.clone(),
                    user_id: user_id.clone(),
                    tx: tx.clone(),
                });
                c.seq += 1;
                let mut ev = json!({"record": "joined", "chat_name": chat,
                    "user_name": user_name, "user_id": user_id});
                stamp(&mut ev, c.seq);
                let ev = ev.to_string();
                for m in &c.members {
                    let _ = m.tx.send(ev.clone()).await;
                }
            }
            "leave_chat" => {
                let mut chats = st.chats.lock().await;
                if let Some(c) = chats.get_mut(&chat) {
                    c.seq += 1;
                    let mut ev = json!({"record": "left", "chat_name": chat, "user_id": user_id});
                    stamp(&mut ev, c.seq);
                    let ev = ev.to_string();
                    for m in &c.members {
                        let _ = m.tx.send(ev.clone()).await;
                    }
                    c.members.retain(|m| m.conn != id);
                }
            }
            "chat_message" => {
                let mut chats = st.chats.lock().await;
                if let Some(c) = chats.get_mut(&chat) {
                    c.seq += 1;
                    let mut ev = json!({"record": "chat_message", "chat_name": chat,
                        "user_id": user_id, "mime_type": "text/plain", "message": v["message"]});
                    stamp(&mut ev, c.seq);
                    let ev = ev.to_string();
                    for m in &c.members {
                        let n = st.deliveries.fetch_add(1, Ordering::Relaxed) + 1;
                        if st.faults.drop_every.is_some_and(|k| n.is_multiple_of(k)) {
                            continue;
                        }
                        let _ = m.tx.send(ev.clone()).await;
                        if st.faults.dup_every.is_some_and(|k| n.is_multiple_of(k)) {
                            let _ = m.tx.send(ev.clone()).await;
                        }
                    }
                }
            }
            _ => break,
        }
    }
    let mut chats = st.chats.lock().await;
    for c in chats.values_mut() {
        c.members.retain(|m| m.conn != id);
    }
    drop(chats);
    drop(tx);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use clap::Parser;
    use tokio_util::sync::CancellationToken;

    use super::{Faults, start};
    use crate::cli::{Cli, ScenarioCmd};
    use crate::report::{Report, Status};
    use crate::scenarios::{self, Env};

    async fn run(args: &[&str]) -> Report {
        let cli = Cli::try_parse_from(args).expect("valid arguments");
        let common = match &cli.scenario {
            ScenarioCmd::Idle(a) => &a.common,
            ScenarioCmd::Fanout(a) => &a.common,
            ScenarioCmd::Flood(a) => &a.common,
            ScenarioCmd::Churn(a) => &a.common,
        }
        .clone();
        let nofile = crate::sys::raise_nofile(4096);
        let env = Arc::new(Env::new(&common, 2, nofile, CancellationToken::new()));
        let r = match cli.scenario {
            ScenarioCmd::Idle(a) => scenarios::idle::run(env, a).await,
            ScenarioCmd::Fanout(a) => scenarios::fanout::run(env, a).await,
            ScenarioCmd::Flood(a) => scenarios::flood::run(env, a).await,
            ScenarioCmd::Churn(a) => scenarios::churn::run(env, a).await,
        };
        r.expect("scenario ran")
    }

    fn field(r: &Report, k: &str) -> u64 {
        r.results[k].as_u64().unwrap_or(u64::MAX)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fanout_passes_on_a_correct_server() {
        let url = start(Faults::default()).await;
        let r = run(&[
            "b",
            "fanout",
            "--url",
            &url,
            "--rooms",
            "2",
            "--members",
            "5",
            "--senders",
            "2",
            "--rate",
            "200",
            "--duration",
            "1",
            "--warmup",
            "0.3",
        ])
        .await;
        assert_eq!(r.verdict.status, Status::Pass, "{}", r.summary());
        assert!(field(&r, "sent_total") > 100);
        assert_eq!(field(&r, "deliveries_total"), field(&r, "sent_total") * 5);
        assert_eq!(field(&r, "lost"), 0);
        assert!(r.results["latency"]["count"].as_u64().unwrap_or(0) > 0);
        assert_eq!(r.results["sequence"]["not_increasing"].as_u64(), Some(0));
        assert!(r.summary().contains("deliveries_per_sec"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fanout_counts_lost_and_duplicated() {
        let url = start(Faults {
            drop_every: Some(50),
            dup_every: Some(70),
        })
        .await;
        let r = run(&[
            "b",
            "fanout",
            "--url",
            &url,
            "--members",
            "4",
            "--senders",
            "1",
            "--rate",
            "200",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--drain-secs",
            "1",
        ])
        .await;
        assert_eq!(r.verdict.status, Status::Fail);
        assert_eq!(r.verdict.exit_code, 1);
        let expected = field(&r, "sent_total") * 4;
        let lost = field(&r, "lost");
        let dup = field(&r, "duplicated");
        assert!(lost > 0 && dup > 0, "{}", r.summary());
        // Every delivery the mock made is accounted for.
        assert_eq!(field(&r, "deliveries_total"), expected - lost + dup);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flood_and_idle_and_churn_pass() {
        let url = start(Faults::default()).await;
        let r = run(&[
            "b",
            "flood",
            "--url",
            &url,
            "--members",
            "6",
            "--senders",
            "2",
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--window",
            "8",
        ])
        .await;
        assert_eq!(r.verdict.status, Status::Pass, "{}", r.summary());
        assert!(field(&r, "sent_total") > 0);
        let r = run(&[
            "b",
            "idle",
            "--url",
            &url,
            "--connections",
            "50",
            "--rooms",
            "5",
            "--hold-secs",
            "1.5",
            "--settle-secs",
            "0.1",
            "--ping-interval",
            "0.5",
        ])
        .await;
        assert_eq!(r.verdict.status, Status::Pass, "{}", r.summary());
        assert_eq!(r.results["setup"]["ready"].as_u64(), Some(50));
        assert!(r.results["hold"]["ping_replies"].as_u64().unwrap_or(0) >= 50);
        assert_eq!(r.results["close"]["clean"].as_u64(), Some(50));
        let r = run(&[
            "b",
            "churn",
            "--url",
            &url,
            "--rate",
            "40",
            "--duration",
            "1",
        ])
        .await;
        assert_eq!(r.verdict.status, Status::Pass, "{}", r.summary());
        assert_eq!(field(&r, "completed"), 40);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreachable_server_is_a_setup_failure() {
        let r = run(&[
            "b",
            "fanout",
            "--url",
            "ws://127.0.0.1:1/chat-server",
            "--smoke",
        ])
        .await;
        assert_eq!(r.verdict.status, Status::SetupFailed);
        assert_eq!(r.verdict.exit_code, 3);
    }
}
