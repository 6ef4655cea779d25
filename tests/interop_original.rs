//! Live interoperability with the ORIGINAL Erlang flack: a mixed cluster of
//! two original nodes and one Rust node, with users on every node in the
//! same room, first with the Rust node as a gproc_dist follower, then (after
//! the Erlang nodes are killed and restarted) as the leader, and an Erlang
//! node killed while users chat.
//!
//! The original is not part of this repository. Build it on your machine
//! (flack, gproc 0.8.0, gen_leader_revival d9689e6, cowboy 2.6.1, ranch
//! 1.7.1, cowlib 2.7.0; Debian's erlang-jiffy) and point `FLACK_ERLANG_HOME`
//! at a directory holding each application's `lib/<app>/ebin`. Without it
//! these tests say so and pass without running.

mod node_support;
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use node_support::{TestEpmd, free_port, original_command, original_home, unique};
use serde_json::{Value, json};
use support::Client;

const COOKIE: &str = "interop_cookie";

fn skip() -> bool {
    if original_home().is_some() {
        return false;
    }
    println!(
        "SKIPPED: set FLACK_ERLANG_HOME to a build of the original Erlang flack \
         (a directory with lib/<app>/ebin for flack, gproc, gen_leader, cowboy, ranch, cowlib; \
         jiffy from Debian's erlang-jiffy) to run the mixed-cluster tests"
    );
    true
}

/// A node process (original or Rust), killed with SIGKILL when dropped.
struct NodeProcess {
    child: Child,
    web: SocketAddr,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Mixed {
    epmd: TestEpmd,
    dir: PathBuf,
    names: [String; 3],
}

impl Mixed {
    async fn new() -> Self {
        let stem = unique("mix");
        // Sorted: the two Erlang nodes first, the Rust node last, so the
        // Rust node starts as a follower.
        let names = [
            format!("{stem}a@localhost"),
            format!("{stem}b@localhost"),
            format!("{stem}z@localhost"),
        ];
        let dir = std::env::temp_dir().join(format!("flack-interop-{stem}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self {
            epmd: TestEpmd::start().await,
            dir,
            names,
        }
    }

    fn sys_config(&self, node_dir: &Path, port: u16) -> PathBuf {
        let candidates = self.names.join(",");
        let path = node_dir.join("sys.config");
        std::fs::write(
            &path,
            format!(
                "[{{kernel, [{{logger_level, warning}}, {{inet_dist_use_interface, {{127,0,0,1}}}}]}},\n \
                 {{flack, [{{port, {port}}}]}},\n {{gproc, [{{gproc_dist, [{candidates}]}}]}}].\n"
            ),
        )
        .expect("sys.config");
        path
    }

    /// Starts original node `index` (0 or 1) the way its release does.
    async fn start_erlang(&self, index: usize) -> NodeProcess {
        let home = original_home().expect("FLACK_ERLANG_HOME");
        let node_dir = self.dir.join(&self.names[index]);
        std::fs::create_dir_all(&node_dir).expect("node dir");
        let port = free_port();
        let config = self.sys_config(&node_dir, port);
        let mut command = original_command(&home, &config);
        command
            .args(["-sname", &self.names[index], "-setcookie", COOKIE])
            .current_dir(&node_dir);
        self.launch(command, port).await
    }

    /// Starts the Rust node as its release would: vm.args words and a
    /// sys.config.
    async fn start_rust(&self) -> NodeProcess {
        let node_dir = self.dir.join(&self.names[2]);
        std::fs::create_dir_all(&node_dir).expect("node dir");
        let port = free_port();
        let config = self.sys_config(&node_dir, port);
        let mut command = Command::new(env!("CARGO_BIN_EXE_flack"));
        command
            .args(["foreground", "--bind", "127.0.0.1"])
            .args(["-sname", &self.names[2], "-setcookie", COOKIE])
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&node_dir);
        self.launch(command, port).await
    }

    /// Runs a node process against this test's EPMD and waits until its
    /// web port answers.
    async fn launch(&self, mut command: Command, port: u16) -> NodeProcess {
        let child = command
            .env("ERL_EPMD_PORT", self.epmd.port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the node starts");
        let node = NodeProcess {
            child,
            web: format!("127.0.0.1:{port}").parse().expect("address"),
        };
        wait_listening(node.web).await;
        node
    }
}

impl Drop for Mixed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn wait_listening(addr: SocketAddr) {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nothing listens on {addr}");
}

/// The Rust node's view of the cluster, from `/health`.
async fn cluster_view(rust: &NodeProcess) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(rust.web).await else {
        return Value::Null;
    };
    let request = "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).await.is_err() {
        return Value::Null;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or("");
    serde_json::from_str::<Value>(body)
        .map(|health| health["cluster"].clone())
        .unwrap_or(Value::Null)
}

/// Waits until the Rust node has `role` under `leader` (and, with
/// `all_up`, believes no candidate down).
async fn wait_role(rust: &NodeProcess, role: &str, leader: &str, all_up: bool) {
    let mut view = Value::Null;
    for _ in 0..300 {
        view = cluster_view(rust).await;
        let up = !all_up || view["down"].as_array().is_some_and(Vec::is_empty);
        if view["role"] == role && view["leader"] == leader && up {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the Rust node did not become {role} under {leader}: {view}");
}

async fn next(client: &mut Client, record: &str) -> Value {
    loop {
        let value = client.expect_any().await;
        if value["record"] == record {
            return value;
        }
    }
}

fn is_timestamp(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|text| text.len() == 20 && text.ends_with('Z'))
}

/// alice on the first original node, bob on the Rust node, carol on the
/// second original node: every record checked at every client.
async fn chat_across(
    room: &str,
    erlang_a: SocketAddr,
    rust: SocketAddr,
    erlang_b: SocketAddr,
) -> [Client; 3] {
    let mut alice = Client::login(erlang_a, "alice").await;
    let mut bob = Client::login(rust, "bob").await;
    let mut carol = Client::login(erlang_b, "carol").await;

    let (state, _) = alice.join(room).await;
    assert_eq!(state["users"], json!([]));
    let (state, bob_joined) = bob.join(room).await;
    assert_eq!(
        state["users"],
        json!([{"record": "chat_user", "user_name": "alice", "user_id": alice.user_id}])
    );
    assert!(is_timestamp(&bob_joined["timestamp"]));
    assert_eq!(
        next(&mut alice, "joined").await,
        bob_joined,
        "an Erlang member sees the Rust joiner"
    );
    let (state, carol_joined) = carol.join(room).await;
    let mut names: Vec<&str> = state["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|user| user["user_name"].as_str().unwrap_or(""))
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["alice", "bob"],
        "an Erlang joiner sees the Rust member: {state}"
    );
    for client in [&mut alice, &mut bob] {
        assert_eq!(
            next(client, "joined").await["user_id"],
            carol_joined["user_id"]
        );
    }

    for (index, text) in ["from alice", "from bob", "from carol"]
        .into_iter()
        .enumerate()
    {
        let sender_id = [&alice, &bob, &carol][index].user_id.clone();
        [&mut alice, &mut bob, &mut carol][index]
            .post(room, text)
            .await;
        for client in [&mut alice, &mut bob, &mut carol] {
            let message = next(client, "chat_message").await;
            assert_eq!(message["message"], text);
            assert_eq!(message["user_id"], sender_id.as_str());
            assert_eq!(message["mime_type"], "text/plain");
            assert!(is_timestamp(&message["timestamp"]));
        }
    }

    bob.send(json!({"record": "leave_chat", "chat_name": room}))
        .await;
    let left = next(&mut bob, "left").await;
    for client in [&mut alice, &mut carol] {
        assert_eq!(
            next(client, "left").await,
            left,
            "Erlang members see the Rust member leave"
        );
    }
    let (_, rejoined) = bob.join(room).await;
    for client in [&mut alice, &mut carol] {
        assert_eq!(next(client, "joined").await["user_id"], rejoined["user_id"]);
    }
    [alice, bob, carol]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_node_follows_then_leads_a_cluster_of_original_nodes() {
    if skip() {
        return;
    }
    let mixed = Mixed::new().await;
    let mut erlang_a = mixed.start_erlang(0).await;
    let mut erlang_b = mixed.start_erlang(1).await;
    let rust = mixed.start_rust().await;

    // Follower: the first original node leads.
    wait_role(&rust, "follower", &mixed.names[0], true).await;
    let clients = chat_across("mixed", erlang_a.web, rust.web, erlang_b.web).await;
    drop(clients);

    // Kill both original nodes: the Rust node is alone and leads.
    drop(erlang_a);
    drop(erlang_b);
    wait_role(&rust, "leader", &mixed.names[2], false).await;
    // They come back and follow the Rust leader (leadership is sticky).
    erlang_a = mixed.start_erlang(0).await;
    erlang_b = mixed.start_erlang(1).await;
    wait_role(&rust, "leader", &mixed.names[2], true).await;
    let [mut alice, mut bob, carol] =
        chat_across("led-by-rust", erlang_a.web, rust.web, erlang_b.web).await;

    // An original node is killed while its user is in the room: the Rust
    // member hears that carol left (the original would say nothing).
    let carol_id = carol.user_id.clone();
    drop(erlang_b);
    let left = next(&mut bob, "left").await;
    assert_eq!(left["user_id"], carol_id.as_str());
    // The survivors keep chatting.
    alice.post("led-by-rust", "still here").await;
    for client in [&mut alice, &mut bob] {
        assert_eq!(next(client, "chat_message").await["message"], "still here");
    }
    // The killed node comes back while they chat; its new user joins them.
    let erlang_b = mixed.start_erlang(1).await;
    wait_role(&rust, "leader", &mixed.names[2], true).await;
    let mut dave = Client::login(erlang_b.web, "dave").await;
    let (state, _) = dave.join("led-by-rust").await;
    let mut names: Vec<&str> = state["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|user| user["user_name"].as_str().unwrap_or(""))
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["alice", "bob"],
        "carol's registrations were purged with her node: {state}"
    );
    for client in [&mut alice, &mut bob] {
        assert_eq!(next(client, "joined").await["user_name"], "dave");
    }
    bob.post("led-by-rust", "welcome back").await;
    for client in [&mut alice, &mut bob, &mut dave] {
        assert_eq!(
            next(client, "chat_message").await["message"],
            "welcome back"
        );
    }
    drop((alice, bob, carol, dave, erlang_a, erlang_b, rust));
}
