//! Clusters of Rust flack nodes on 127.0.0.1: the gen_leader election among
//! them, and chat across them through the replicated gproc registry.
//!
//! Every node is a full `flack` node started the way `main` starts one
//! (`flack::app::start`), with its own name, its own data directory, a
//! shared cookie and a test EPMD of our own.

mod node_support;
mod support;

use std::collections::HashSet;
use std::time::Duration;

use flack::app::{RunningNode, start};
use flack::config::erl_args::ErlArgs;
use flack::config::sys_config::GprocDist;
use flack::config::{NodeName, Settings};
use node_support::{TestEpmd, unique};
use serde_json::Value;
use support::{Client, assert_each_learned_once, join_all_at_once, run_args};

struct Cluster {
    _epmd: TestEpmd,
    names: Vec<String>,
    nodes: Vec<Option<RunningNode>>,
    /// Nodes run as separate `flack` processes, so they can be killed.
    processes: Vec<Option<Process>>,
    dirs: Vec<tempdir::Dir>,
    epmd_port: u16,
}

mod tempdir {
    /// A directory removed when dropped.
    pub struct Dir(pub std::path::PathBuf);

    impl Dir {
        pub fn new(stem: &str) -> Self {
            let path = std::env::temp_dir().join(stem);
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("temp dir");
            Dir(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Cluster {
    async fn start(count: usize) -> Self {
        let epmd = TestEpmd::start().await;
        let stem = unique("c");
        let names: Vec<String> = (1..=count)
            .map(|i| format!("{stem}n{i}@localhost"))
            .collect();
        let dirs = names
            .iter()
            .map(|name| tempdir::Dir::new(&format!("flack-test-{name}")))
            .collect();
        let mut cluster = Cluster {
            epmd_port: epmd.port,
            _epmd: epmd,
            names,
            nodes: (0..count).map(|_| None).collect(),
            processes: (0..count).map(|_| None).collect(),
            dirs,
        };
        for index in 0..count {
            cluster.boot(index).await;
        }
        cluster
    }

    async fn boot(&mut self, index: usize) {
        let mut settings = Settings::resolve(&run_args(), ErlArgs::default()).expect("settings");
        settings.node_name = Some(NodeName::Short(self.names[index].clone()));
        settings.cookie = Some("cluster-test-cookie".into());
        settings.epmd_port = self.epmd_port;
        settings.gproc_dist = GprocDist::Candidates {
            nodes: self.names.clone(),
            opts: Vec::new(),
        };
        settings.data_dir = self.dirs[index].0.clone();
        self.nodes[index] = Some(start(settings).await.expect("node starts"));
    }

    /// Runs node `index` as a `flack foreground` process configured the
    /// way a release is: vm.args-style words and a sys.config file.
    async fn spawn_process(&mut self, index: usize) -> std::net::SocketAddr {
        let dir = &self.dirs[index].0;
        let candidates = self.names.join(",");
        let sys_config = dir.join("sys.config");
        std::fs::write(
            &sys_config,
            format!("[{{gproc, [{{gproc_dist, [{candidates}]}}]}}].\n"),
        )
        .expect("sys.config");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("free port");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_flack"))
            .args([
                "foreground",
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .args([
                "-sname",
                &self.names[index],
                "-setcookie",
                "cluster-test-cookie",
            ])
            .arg("--config")
            .arg(&sys_config)
            .arg("--data-dir")
            .arg(dir)
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("flack starts");
        self.processes[index] = Some(Process(child));
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return addr;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("node {index} did not start");
    }

    /// `kill -9` of a node run as a process.
    fn kill(&mut self, index: usize) {
        drop(self.processes[index].take());
    }

    fn node(&self, index: usize) -> &RunningNode {
        self.nodes[index].as_ref().expect("node is running")
    }

    async fn stop(&mut self, index: usize) {
        if let Some(node) = self.nodes[index].take() {
            node.stop().await.expect("clean stop");
        }
    }

    /// Waits until every running node follows the same leader.
    async fn settled(&self) -> String {
        self.settled_with(0).await
    }

    /// Like [`Cluster::settled`], and the in-process nodes see `candidates`
    /// candidates up (0: any).
    async fn settled_with(&self, up: usize) -> String {
        for _ in 0..300 {
            let statuses: Vec<_> = self
                .nodes
                .iter()
                .flatten()
                .filter_map(RunningNode::cluster_status)
                .collect();
            let leaders: HashSet<Option<String>> = statuses
                .iter()
                .map(|status| status.leader.clone())
                .collect();
            let roles: Vec<&str> = statuses.iter().map(|status| status.role.as_str()).collect();
            let all_up = up == 0
                || statuses
                    .iter()
                    .all(|status| status.candidates.len() - status.down.len() >= up);
            if leaders.len() == 1
                && all_up
                && !roles.contains(&"candidate")
                && roles.iter().filter(|role| **role == "leader").count() == 1
                && let Some(Some(leader)) = leaders.into_iter().next()
            {
                return leader;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let statuses: Vec<_> = self
            .nodes
            .iter()
            .flatten()
            .filter_map(RunningNode::cluster_status)
            .collect();
        panic!("the cluster did not settle: {statuses:?}");
    }
}

/// A `flack` child process, killed (SIGKILL) when dropped.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads records until one with this `record` arrives (others are kept out
/// of the way), within the client's patience.
async fn next(client: &mut Client, record: &str) -> Value {
    loop {
        let value = client.expect_any().await;
        if value["record"] == record {
            return value;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_rust_nodes_elect_one_leader_and_share_rooms() {
    let mut cluster = Cluster::start(2).await;
    cluster.names.push(format!(
        "{}n3@localhost",
        cluster.names[0].trim_end_matches("n1@localhost")
    ));
    cluster.dirs.push(tempdir::Dir::new(&format!(
        "flack-test-{}",
        cluster.names[2]
    )));
    cluster.nodes.push(None);
    cluster.processes.push(None);
    // The in-process nodes learn the third candidate from their config at
    // start; restart them with the full list.
    for index in 0..2 {
        cluster.stop(index).await;
        cluster.boot(index).await;
    }
    let third = cluster.spawn_process(2).await;
    let leader = cluster.settled_with(3).await;
    assert_eq!(leader, cluster.names[0], "the first candidate leads");

    // `flack cluster` shows the node's view.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_flack"))
        .args([
            "cluster",
            "--bind",
            "127.0.0.1",
            "--port",
            &third.port().to_string(),
        ])
        .output()
        .expect("flack cluster runs");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(text.contains("role:       follower"), "{text}");
    assert!(
        text.contains(&format!("leader:     {}", cluster.names[0])),
        "{text}"
    );
    assert!(text.contains("candidates: 3 up"), "{text}");

    // Every Rust node registers its fan-out process; once known, events
    // reach a node's members in one message per node.
    for _ in 0..100 {
        if (0..2).all(|index| cluster.node(index).fanout_count() == 3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        (0..2).all(|index| cluster.node(index).fanout_count() == 3),
        "fan-out processes not all known"
    );

    let mut alice = Client::login(cluster.node(0).local_addr, "alice").await;
    let mut bob = Client::login(cluster.node(1).local_addr, "bob").await;
    let mut carol = Client::login(third, "carol").await;

    let (state, _) = alice.join("foobar").await;
    assert_eq!(state["users"], serde_json::json!([]));
    let (state, bob_joined) = bob.join("foobar").await;
    assert_eq!(state["users"][0]["user_name"], "alice");
    assert_eq!(next(&mut alice, "joined").await["user_name"], "bob");
    let (state, _) = carol.join("foobar").await;
    let names: Vec<&str> = state["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["user_name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(next(&mut alice, "joined").await["user_name"], "carol");
    assert_eq!(next(&mut bob, "joined").await["user_name"], "carol");

    bob.post("foobar", "hello from bob").await;
    let mut sequences = Vec::new();
    for client in [&mut alice, &mut bob, &mut carol] {
        let message = next(client, "chat_message").await;
        assert_eq!(message["message"], "hello from bob");
        assert_eq!(message["user_id"], bob_joined["user_id"]);
        sequences.push(message["sequence"].as_u64().expect("sequence"));
    }
    assert!(
        sequences.windows(2).all(|pair| pair[0] == pair[1]),
        "{sequences:?}"
    );
    assert!(sequences[0] > bob_joined["sequence"].as_u64().expect("sequence"));

    carol.post("foobar", "and carol").await;
    for client in [&mut alice, &mut bob, &mut carol] {
        let message = next(client, "chat_message").await;
        assert_eq!(message["message"], "and carol");
        assert!(message["sequence"].as_u64().expect("sequence") > sequences[0]);
    }

    alice
        .send(serde_json::json!({"record": "leave_chat", "chat_name": "foobar"}))
        .await;
    let left = next(&mut alice, "left").await;
    for client in [&mut bob, &mut carol] {
        assert_eq!(next(client, "left").await["user_id"], left["user_id"]);
    }

    // A node vanishes with a member in the room (its distribution drops, no
    // user_left is ever sent): the others still hear that the member left.
    let carol_id = carol.user_id.clone();
    cluster.kill(2);
    let alice_left_sequence = left["sequence"].as_u64().expect("sequence");
    let left = next(&mut bob, "left").await;
    assert_eq!(left["user_id"], carol_id.as_str());
    assert_eq!(left["chat_name"], "foobar");
    assert!(left["sequence"].as_u64().expect("sequence") > alice_left_sequence);

    drop((alice, bob, carol));
    for index in 0..2 {
        cluster.stop(index).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_dies_and_the_next_candidate_takes_over_then_keeps_it() {
    let mut cluster = Cluster::start(3).await;
    assert_eq!(cluster.settled().await, cluster.names[0]);
    cluster.stop(0).await;
    assert_eq!(
        cluster.settled().await,
        cluster.names[1],
        "the next candidate leads"
    );

    // Registrations still work under the new leader.
    let mut dave = Client::login(cluster.node(2).local_addr, "dave").await;
    dave.join("after").await;

    // The first candidate comes back with a new incarnation and follows.
    cluster.boot(0).await;
    assert_eq!(
        cluster.settled().await,
        cluster.names[1],
        "leadership is sticky"
    );
    let mut erin = Client::login(cluster.node(0).local_addr, "erin").await;
    let (state, _) = erin.join("after").await;
    assert_eq!(state["users"][0]["user_name"], "dave");
    assert_eq!(next(&mut dave, "joined").await["user_name"], "erin");
    drop((dave, erin));
    for index in 0..3 {
        cluster.stop(index).await;
    }
}

/// Users join one room at once on three nodes. Registering first and then
/// reading the members makes every joiner learn every other member, from
/// its chat_state or a later joined, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_joiners_on_three_nodes_learn_every_member_exactly_once() {
    const PER_NODE: usize = 20;
    let mut cluster = Cluster::start(3).await;
    cluster.settled().await;
    let mut clients = Vec::new();
    for index in 0..3 {
        for n in 0..PER_NODE {
            clients.push(
                Client::login(cluster.node(index).local_addr, &format!("u{index}-{n}")).await,
            );
        }
    }
    let total = clients.len();
    let ids: HashSet<String> = clients
        .iter()
        .map(|client| client.user_id.clone())
        .collect();
    let mut finished = join_all_at_once(clients, "crowd", total).await;
    assert_each_learned_once(&mut finished, &ids).await;
    drop(finished);
    for index in 0..3 {
        cluster.stop(index).await;
    }
}

/// A chat that empties leaves nothing behind in the global registry: not
/// its members, and not its sequence counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_chat_leaves_no_registration_behind() {
    let mut cluster = Cluster::start(2).await;
    cluster.settled().await;
    let size = |cluster: &Cluster| {
        cluster
            .node(0)
            .cluster_status()
            .map(|status| status.registry_size)
    };
    // Wait for the fan-out names, then take the baseline.
    for _ in 0..100 {
        if cluster.node(0).fanout_count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let baseline = size(&cluster);
    let mut ann = Client::login(cluster.node(0).local_addr, "ann").await;
    let mut ben = Client::login(cluster.node(1).local_addr, "ben").await;
    ann.join("passing").await;
    ben.join("passing").await;
    ann.post("passing", "hello").await;
    next(&mut ben, "chat_message").await;
    for client in [&mut ann, &mut ben] {
        client
            .send(serde_json::json!({"record": "client_goodbye"}))
            .await;
        next(client, "server_goodbye").await;
    }
    drop((ann, ben));
    let mut now = size(&cluster);
    for _ in 0..100 {
        if now == baseline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        now = size(&cluster);
    }
    assert_eq!(now, baseline, "registrations left behind");
    for index in 0..2 {
        cluster.stop(index).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_from_both_nodes_arrive_once_in_order_with_cluster_wide_sequences() {
    // Posts queued on each node while its previous batch is numbered share
    // one leader call; this checks that what members see still holds: every
    // message exactly once, each sender's in order, one sequence number per
    // message cluster-wide, and increasing numbers from each node.
    const PER_SENDER: usize = 150;
    let cluster = Cluster::start(2).await;
    cluster.settled_with(2).await;
    let mut members = Vec::new();
    for (index, name) in [
        (0, "a1"),
        (0, "a2"),
        (0, "a3"),
        (1, "b1"),
        (1, "b2"),
        (1, "b3"),
    ] {
        let mut client = Client::login(cluster.node(index).local_addr, name).await;
        client.join("burst").await;
        members.push((index, client));
    }
    let ids: Vec<(usize, String)> = members
        .iter()
        .map(|(index, client)| (*index, client.user_id.clone()))
        .collect();
    // Two senders per node post back to back, without reading in between.
    let senders = [0usize, 1, 3, 4];
    for &sender in &senders {
        let client = &mut members[sender].1;
        for n in 0..PER_SENDER {
            client.post("burst", &format!("{n}")).await;
        }
    }
    let expected = senders.len() * PER_SENDER;
    let mut sequence_of: std::collections::HashMap<(String, usize), u64> = Default::default();
    for (_, client) in &mut members {
        let mut last_n: std::collections::HashMap<String, usize> = Default::default();
        let mut last_sequence_from: std::collections::HashMap<usize, u64> = Default::default();
        let mut seen = HashSet::new();
        while seen.len() < expected {
            let message = next(client, "chat_message").await;
            let from = message["user_id"].as_str().expect("user_id").to_owned();
            let n: usize = message["message"]
                .as_str()
                .and_then(|text| text.parse().ok())
                .expect("numbered message");
            let sequence = message["sequence"].as_u64().expect("sequence");
            assert!(
                seen.insert((from.clone(), n)),
                "{from} #{n} delivered twice"
            );
            if let Some(previous) = last_n.insert(from.clone(), n) {
                assert!(n > previous, "{from}: #{n} after #{previous}");
            }
            let origin = ids
                .iter()
                .find(|(_, id)| *id == from)
                .map(|(index, _)| *index)
                .expect("a member sent it");
            if let Some(previous) = last_sequence_from.insert(origin, sequence) {
                assert!(
                    sequence > previous,
                    "node {origin}'s events out of sequence: {sequence} after {previous}"
                );
            }
            let first = *sequence_of.entry((from.clone(), n)).or_insert(sequence);
            assert_eq!(first, sequence, "{from} #{n} numbered twice");
        }
    }
    let distinct: HashSet<u64> = sequence_of.values().copied().collect();
    assert_eq!(
        distinct.len(),
        expected,
        "a sequence number was given twice"
    );
}
