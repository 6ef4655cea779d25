//! The fault-injection harness: clusters of `flack foreground` processes
//! (and, with `FLACK_ERLANG_HOME`, ORIGINAL Erlang flack nodes), each on its
//! own loopback address, an nftables table of our own to cut or degrade the
//! paths between them, and websocket users whose every record is logged.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::support::Client;

pub const COOKIE: &str = "faults_cookie";

/// `net_ticktime` of every node: a peer silent for 4 to 5 s is down.
pub const TICK: u64 = 4;

/// Whether the longer variants run (`FLACK_FAULTS_LONG=1`).
pub fn long() -> bool {
    std::env::var_os("FLACK_FAULTS_LONG").is_some_and(|v| v != "0")
}

pub fn erl_available() -> bool {
    Command::new("erl")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub use crate::node_support::{TestEpmd, free_port, original_command, original_home};

/// A block of loopback addresses for one cluster, 127.B.C.1..: distinct
/// per test and per test process so parallel tests never share rules.
pub fn address_block() -> [u8; 2] {
    static N: AtomicU32 = AtomicU32::new(0);
    let b = 20 + (std::process::id() % 200) as u8;
    let c = 1 + (N.fetch_add(1, Ordering::Relaxed) % 250) as u8;
    [b, c]
}

/// An nftables table of our own, deleted when dropped (also on a panic).
pub struct Firewall {
    table: String,
}

impl Firewall {
    /// `None` (and a message) when nft is missing or not permitted.
    pub fn new() -> Option<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let table = format!(
            "flack_faults_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let script = format!(
            "add table inet {table}\n\
             add chain inet {table} out {{ type filter hook output priority 0; policy accept; }}\n"
        );
        if !nft(&script) {
            println!(
                "SKIPPED: nft cannot create a table here (install nftables and run as root, \
                 as tests/run-all.sh does)"
            );
            return None;
        }
        Some(Firewall { table })
    }

    /// Drops every packet between `a` and `b`, both ways.
    pub fn cut(&self, a: Ipv4Addr, b: Ipv4Addr) {
        let t = &self.table;
        assert!(nft(&format!(
            "add rule inet {t} out ip saddr {a} ip daddr {b} drop\n\
             add rule inet {t} out ip saddr {b} ip daddr {a} drop\n"
        )));
    }

    /// Drops `percent` % of the packets between `a` and `b` (both ways) at
    /// random, and limits each direction to `kbytes` kB/s.
    pub fn degrade(&self, a: Ipv4Addr, b: Ipv4Addr, percent: u32, kbytes: u32) {
        let t = &self.table;
        assert!(nft(&format!(
            "add rule inet {t} out ip saddr {a} ip daddr {b} numgen random mod 100 < {percent} drop\n\
             add rule inet {t} out ip saddr {b} ip daddr {a} numgen random mod 100 < {percent} drop\n\
             add rule inet {t} out ip saddr {a} ip daddr {b} limit rate over {kbytes} kbytes/second drop\n\
             add rule inet {t} out ip saddr {b} ip daddr {a} limit rate over {kbytes} kbytes/second drop\n"
        )));
    }

    /// Removes every rule.
    pub fn heal(&self) {
        assert!(nft(&format!("flush chain inet {} out\n", self.table)));
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        let _ = nft(&format!("delete table inet {}\n", self.table));
    }
}

fn nft(script: &str) -> bool {
    use std::io::Write;
    let Ok(mut child) = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    else {
        return false;
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(script.as_bytes());
    }
    child.wait_with_output().is_ok_and(|out| {
        if !out.status.success() {
            eprintln!("nft: {}", String::from_utf8_lossy(&out.stderr));
        }
        out.status.success()
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Rust,
    Original,
}

/// One node of the cluster; its process is killed (SIGKILL) when dropped.
pub struct Slot {
    pub kind: Kind,
    pub name: String,
    pub ip: Ipv4Addr,
    pub web: SocketAddr,
    pub dir: PathBuf,
    pub child: Option<Child>,
    pub stopped: bool,
}

impl Slot {
    pub fn log(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    /// Started and not exited (a zombie not yet reaped counts as exited).
    pub fn alive(&self) -> bool {
        self.child.as_ref().is_some_and(|child| {
            std::fs::read_to_string(format!("/proc/{}/stat", child.id()))
                .ok()
                .and_then(|stat| {
                    let (_, rest) = stat.rsplit_once(')')?;
                    rest.split_whitespace()
                        .next()
                        .map(|state| state != "Z" && state != "X")
                })
                .unwrap_or(false)
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.stopped {
                let _ = signal(&child, "CONT");
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(child: &Child, sig: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .is_ok_and(|s| s.success())
}

pub struct Cluster {
    pub slots: Vec<Slot>,
    pub epmd: TestEpmd,
    pub root: PathBuf,
    pub names: Vec<String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.slots.clear();
        if std::thread::panicking() || std::env::var_os("FLACK_FAULTS_KEEP").is_some() {
            eprintln!("node logs kept in {}", self.root.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

impl Cluster {
    /// Starts nodes of these kinds, node `i` named `f{i}@127.B.C.{i+1}`:
    /// node 0 sorts first and leads the first election.
    pub async fn start(kinds: &[Kind]) -> Self {
        let [b, c] = address_block();
        // On every address, so `name@127.a.b.c` lookups reach it.
        let epmd = TestEpmd::start_on("0.0.0.0").await;
        let root = std::env::temp_dir().join(format!(
            "flack-faults-{}-{b}-{c}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("scratch dir");
        let names: Vec<String> = (0..kinds.len())
            .map(|i| format!("f{i}@127.{b}.{c}.{}", i + 1))
            .collect();
        let mut web_ports = HashSet::new();
        let slots = kinds
            .iter()
            .enumerate()
            .map(|(i, kind)| {
                let dir = root.join(format!("n{i}"));
                std::fs::create_dir_all(&dir).expect("node dir");
                Slot {
                    kind: *kind,
                    name: names[i].clone(),
                    ip: Ipv4Addr::new(127, b, c, i as u8 + 1),
                    web: SocketAddr::from(([127, 0, 0, 1], web_port(&mut web_ports))),
                    dir,
                    child: None,
                    stopped: false,
                }
            })
            .collect();
        let mut cluster = Cluster {
            slots,
            epmd,
            root,
            names,
        };
        for i in 0..kinds.len() {
            cluster.boot(i).await;
        }
        cluster
    }

    fn sys_config(&self, i: usize) -> PathBuf {
        let slot = &self.slots[i];
        let [a, b, c, d] = slot.ip.octets();
        let candidates: Vec<String> = self.names.iter().map(|n| format!("'{n}'")).collect();
        let path = slot.dir.join("sys.config");
        std::fs::write(
            &path,
            format!(
                "[{{kernel, [{{logger_level, warning}}, {{net_ticktime, {TICK}}},\n\
                 {{inet_dist_use_interface, {{{a},{b},{c},{d}}}}},\n\
                 {{inet_dist_connect_options, [{{ip, {{{a},{b},{c},{d}}}}}]}}]}},\n \
                 {{flack, [{{port, {}}}]}},\n {{gproc, [{{gproc_dist, [{}]}}]}}].\n",
                slot.web.port(),
                candidates.join(",")
            ),
        )
        .expect("sys.config");
        path
    }

    /// Starts node `i` (again) and waits for its web port.
    pub async fn boot(&mut self, i: usize) {
        assert!(self.slots[i].child.is_none(), "node {i} is running");
        let config = self.sys_config(i);
        let slot = &self.slots[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(slot.log())
            .expect("log file");
        let mut command = match slot.kind {
            Kind::Rust => {
                let mut command = Command::new(env!("CARGO_BIN_EXE_flack"));
                command
                    .args(["foreground", "--bind", "127.0.0.1"])
                    .args(["-name", &slot.name, "-setcookie", COOKIE])
                    .arg("--config")
                    .arg(&config)
                    .arg("--data-dir")
                    .arg(&slot.dir)
                    .env(
                        "FLACK_LOG",
                        std::env::var("FLACK_FAULTS_LOG").unwrap_or_else(|_| "info".into()),
                    );
                command
            }
            Kind::Original => {
                let home = original_home().expect("FLACK_ERLANG_HOME");
                let mut command = original_command(&home, &config);
                command
                    .args(["-name", &slot.name, "-setcookie", COOKIE])
                    .args(["+K", "true", "+A30"]);
                command
            }
        };
        let child = command
            .current_dir(&slot.dir)
            .env("ERL_EPMD_PORT", self.epmd.port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("the node starts");
        let web = slot.web;
        self.slots[i].child = Some(child);
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(web).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("node {i} did not start");
    }

    /// `kill -9`.
    pub fn kill(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        if let Some(mut child) = slot.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        slot.stopped = false;
    }

    /// Nodes whose process exited by itself since the last look (the
    /// ORIGINAL halts its VM when gproc_dist crashes too often).
    pub fn reap(&mut self) -> Vec<usize> {
        let mut exited = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(child) = slot.child.as_mut()
                && matches!(child.try_wait(), Ok(Some(_)))
            {
                slot.child = None;
                exited.push(i);
            }
        }
        exited
    }

    /// Whether a node's process exited and is not reaped yet.
    pub fn reap_pending(&self) -> bool {
        self.slots
            .iter()
            .any(|slot| slot.child.is_some() && !slot.alive())
    }

    /// Deletes node `i`'s incarnation file (`gproc_dist_<node>`).
    pub fn forget_incarnation(&self, i: usize) {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.slots[i].dir)
            .expect("node dir")
            .flatten()
        {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with("gproc_dist_")
            {
                std::fs::remove_file(entry.path()).expect("remove incarnation");
                removed += 1;
            }
        }
        assert_eq!(removed, 1, "one incarnation file in node {i}'s directory");
    }

    pub fn pause(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        assert!(signal(slot.child.as_ref().expect("running"), "STOP"));
        slot.stopped = true;
    }

    pub fn resume(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        assert!(signal(slot.child.as_ref().expect("running"), "CONT"));
        slot.stopped = false;
    }

    /// Nodes running and not paused.
    pub fn alive(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|i| self.slots[*i].alive() && !self.slots[*i].stopped)
            .collect()
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.slots[i].child.as_ref().map(Child::id)
    }

    /// The cluster as node `i` sees it: its role, its leader, the
    /// candidates it believes down and its registry's size.
    pub async fn view(&self, i: usize) -> View {
        match self.slots[i].kind {
            Kind::Rust => rust_view(self.slots[i].web).await,
            Kind::Original => self.erlang_view(i).await,
        }
    }

    /// Runs `expr` on node `i` by rpc from a hidden `erl` (original nodes).
    pub async fn rpc(&self, i: usize, expr: &str) -> String {
        self.rpc_within(i, expr, Duration::from_secs(3)).await
    }

    /// What is wrong with `global` on the running original nodes: on each,
    /// `global:sync()` must return `ok` (within 30 s: a Rust node that
    /// did not take part in global's exchanges would make it wait for
    /// ever), and `nodes()` must list every other running node (nobody
    /// disconnected by `prevent_overlapping_partitions`, on by default in
    /// OTP 25). Empty when all is well.
    pub async fn global_problems(&self) -> Vec<String> {
        let alive = self.alive();
        let mut problems = Vec::new();
        for &i in &alive {
            if self.slots[i].kind != Kind::Original {
                continue;
            }
            let out = self
                .rpc_within(
                    i,
                    "{global:sync(), lists:sort(nodes())}",
                    Duration::from_secs(30),
                )
                .await;
            if !out.starts_with("{ok,") {
                problems.push(format!("{}: global:sync() gave {out}", self.names[i]));
                continue;
            }
            for &j in &alive {
                if j != i && !out.contains(&format!("'{}'", self.names[j])) {
                    problems.push(format!(
                        "{} does not list {}: {out}",
                        self.names[i], self.names[j]
                    ));
                }
            }
        }
        problems
    }

    /// [`Cluster::rpc`] with the rpc's own timeout.
    pub async fn rpc_within(&self, i: usize, expr: &str, within: Duration) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let probe = format!(
            "probe{}x{}@127.0.0.1",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let code = format!(
            "R = rpc:call('{}', erlang, apply, [fun() -> {expr} end, []], {}), \
             io:format(\"~0p~n\", [R]), halt().",
            self.slots[i].name,
            within.as_millis()
        );
        let out = tokio::process::Command::new("erl")
            // The cluster's tick: with the default of 60 s the probe ticks
            // every 15 s, and a node of the cluster (4 s) would drop it
            // during any call longer than that (`{badrpc,nodedown}`).
            .args(["-noshell", "-hidden", "-name", &probe, "-setcookie", COOKIE])
            .args(["-kernel", "net_ticktime", &TICK.to_string()])
            .args(["-eval", &code])
            .env("ERL_EPMD_PORT", self.epmd.port.to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(within + Duration::from_secs(12), out).await {
            Ok(Ok(out)) => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            _ => "timeout".to_owned(),
        }
    }

    async fn erlang_view(&self, i: usize) -> View {
        let me = &self.slots[i].name;
        let out = self
            .rpc(
                i,
                "L = try gproc_dist:get_leader() catch _:_ -> none end, \
                 G = length(ets:select(gproc, [{{{{'_',g,'_'},'_'},'_','_'}, [], [true]}])), \
                 {L, G}",
            )
            .await;
        // {'f0@127.1.2.1',12}
        let inner = out.trim_start_matches('{').trim_end_matches('}');
        let Some((leader, size)) = inner.rsplit_once(',') else {
            return View::default();
        };
        let leader = leader.trim_matches('\'').to_owned();
        if leader == "none" || leader.contains("badrpc") {
            return View::default();
        }
        View {
            role: if &leader == me { "leader" } else { "follower" }.to_owned(),
            leader: Some(leader),
            down: None,
            registry_size: size.parse().ok(),
        }
    }

    /// Waits until every running node has one leader, exactly one of them
    /// leads, and each Rust node believes exactly the dead nodes down and,
    /// with `same_size`, all report the same registry size. Returns the
    /// leader and how long it took.
    pub async fn settled(&self, within: Duration) -> (String, Duration) {
        match self.try_settled(within).await {
            Ok(settled) => settled,
            Err(views) => panic!("the cluster did not settle within {within:?}: {views}"),
        }
    }

    /// [`Cluster::settled`], or the last views when it did not settle.
    pub async fn try_settled(&self, within: Duration) -> Result<(String, Duration), String> {
        let started = Instant::now();
        let alive = self.alive();
        let dead: HashSet<&str> = (0..self.slots.len())
            .filter(|i| !alive.contains(i))
            .map(|i| self.names[i].as_str())
            .collect();
        let mut views = Vec::new();
        while started.elapsed() < within {
            views.clear();
            for &i in &alive {
                views.push((i, self.view(i).await));
            }
            let leaders: HashSet<Option<&String>> =
                views.iter().map(|(_, v)| v.leader.as_ref()).collect();
            let leading = views.iter().filter(|(_, v)| v.role == "leader").count();
            // gen_leader's followers monitor the leader only: the leader
            // knows exactly who is down, a follower at most that.
            let downs_right = views.iter().all(|(_, v)| match &v.down {
                None => true,
                Some(down) => {
                    let down: HashSet<&str> = down.iter().map(String::as_str).collect();
                    if v.role == "leader" {
                        down == dead
                    } else {
                        down.is_subset(&dead)
                    }
                }
            });
            let sizes: HashSet<Option<usize>> =
                views.iter().map(|(_, v)| v.registry_size).collect();
            if leaders.len() == 1
                && leading == 1
                && downs_right
                && sizes.len() == 1
                && let Some(Some(leader)) = leaders.into_iter().next()
            {
                return Ok((leader.clone(), started.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!("{views:?}"))
    }
}

#[derive(Debug, Default, Clone)]
pub struct View {
    pub role: String,
    pub leader: Option<String>,
    /// Rust nodes only.
    pub down: Option<Vec<String>>,
    pub registry_size: Option<usize>,
}

pub async fn rust_view(web: SocketAddr) -> View {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(web).await.ok()?;
        let request = "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let (_, body) = response.split_once("\r\n\r\n")?;
        serde_json::from_str::<Value>(body).ok()
    };
    let Ok(Some(health)) = tokio::time::timeout(Duration::from_secs(2), fetch).await else {
        return View::default();
    };
    let cluster = &health["cluster"];
    View {
        role: cluster["role"].as_str().unwrap_or("").to_owned(),
        leader: cluster["leader"].as_str().map(str::to_owned),
        down: cluster["down"].as_array().map(|down| {
            down.iter()
                .filter_map(|d| d.as_str().map(str::to_owned))
                .collect()
        }),
        registry_size: cluster["registry_size"].as_u64().map(|n| n as usize),
    }
}

/// What a user's client received, in order.
#[derive(Debug, Clone)]
pub enum Event {
    Message { from: String, n: u64, sequence: u64 },
    Joined(String),
    Left(String),
    State(Vec<String>),
    Other(Value),
}

#[derive(Debug, Default)]
pub struct Log {
    pub events: Vec<(Instant, Event)>,
    /// Numbered messages this user posted, with when.
    pub sent: Vec<(u64, Instant)>,
    /// When the connection ended, if it did.
    pub closed: Option<Instant>,
}

/// A user on node `node`, in one room, posting a numbered message every
/// `every` while `posting` is set, recording everything it receives.
pub struct User {
    pub name: String,
    pub id: String,
    pub node: usize,
    pub joined_at: Instant,
    pub log: Arc<Mutex<Log>>,
    pub posting: Arc<AtomicBool>,
    cancel: CancellationToken,
}

impl Drop for User {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl User {
    pub async fn join(
        web: SocketAddr,
        node: usize,
        name: &str,
        room: &str,
        every: Duration,
    ) -> User {
        let mut client = Client::login(web, name).await;
        let log = Arc::new(Mutex::new(Log::default()));
        client
            .send(json!({"record": "join_chat", "chat_name": room}))
            .await;
        // Records until our own `joined`, logged like the rest.
        loop {
            let value = client.expect_any().await;
            let own = value["record"] == "joined" && value["user_id"] == client.user_id.as_str();
            log.lock().events.push((Instant::now(), parse(&value)));
            if own {
                break;
            }
        }
        let joined_at = Instant::now();
        let posting = Arc::new(AtomicBool::new(false));
        let cancel = CancellationToken::new();
        let (mut sink, mut stream) = client.ws.split();
        let room = room.to_owned();
        {
            let log = log.clone();
            let posting = posting.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tick.tick() => {}
                    }
                    if !posting.load(Ordering::Relaxed) {
                        continue;
                    }
                    n += 1;
                    log.lock().sent.push((n, Instant::now()));
                    let record = json!({"record": "chat_message", "chat_name": room,
                        "mime_type": "text/plain", "message": n.to_string()});
                    if sink
                        .send(Message::Text(record.to_string().into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                let _ = sink.close().await;
            });
        }
        {
            let log = log.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                loop {
                    let next = tokio::select! {
                        _ = cancel.cancelled() => break,
                        next = stream.next() => next,
                    };
                    match next {
                        Some(Ok(Message::Text(text))) => {
                            let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                            log.lock().events.push((Instant::now(), parse(&value)));
                        }
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                            log.lock().closed = Some(Instant::now());
                            cancel.cancel();
                            break;
                        }
                        Some(Ok(_)) => {}
                    }
                }
            });
        }
        User {
            name: name.to_owned(),
            id: client.user_id,
            node,
            joined_at,
            log,
            posting,
            cancel,
        }
    }

    pub fn post(&self, on: bool) {
        self.posting.store(on, Ordering::Relaxed);
    }

    /// Disconnects (the TCP connection is closed).
    pub fn disconnect(&self) {
        self.cancel.cancel();
    }

    pub fn closed(&self) -> Option<Instant> {
        self.log.lock().closed
    }

    /// The numbered messages this user saw come back to itself (acknowledged).
    pub fn acked(&self) -> HashSet<u64> {
        self.log
            .lock()
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Message { from, n, .. } if *from == self.id => Some(*n),
                _ => None,
            })
            .collect()
    }

    pub fn sent_count(&self) -> u64 {
        self.log.lock().sent.len() as u64
    }

    /// The members this user knows of, as its `chat_state` and the
    /// `joined` and `left` records after it build them, and the user_ids it
    /// was told joined while it already listed them.
    pub fn member_list(&self) -> (HashSet<String>, Vec<String>) {
        let log = self.log.lock();
        let mut members = HashSet::new();
        let mut twice = Vec::new();
        for (_, event) in &log.events {
            match event {
                Event::State(ids) => {
                    members = ids.iter().filter(|id| !id.is_empty()).cloned().collect();
                }
                Event::Joined(id) => {
                    let new = members.insert(id.clone());
                    if !new {
                        twice.push(id.clone());
                    }
                }
                Event::Left(id) => {
                    members.remove(id);
                }
                _ => {}
            }
        }
        (members, twice)
    }

    pub fn lefts(&self) -> Vec<(Instant, String)> {
        self.log
            .lock()
            .events
            .iter()
            .filter_map(|(t, e)| match e {
                Event::Left(id) => Some((*t, id.clone())),
                _ => None,
            })
            .collect()
    }
}

fn parse(value: &Value) -> Event {
    let id = |v: &Value| v["user_id"].as_str().unwrap_or("").to_owned();
    match value["record"].as_str() {
        Some("chat_message") => Event::Message {
            from: id(value),
            n: value["message"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0),
            sequence: value["sequence"].as_u64().unwrap_or(0),
        },
        Some("joined") => Event::Joined(id(value)),
        Some("left") => Event::Left(id(value)),
        Some("chat_state") => Event::State(
            value["users"]
                .as_array()
                .map(|users| users.iter().map(id).collect())
                .unwrap_or_default(),
        ),
        _ => Event::Other(value.clone()),
    }
}

/// How long after posting both ends of a message must stay connected for
/// its delivery to be owed.
pub const GRACE: Duration = Duration::from_secs(2);

/// The exact accounting of one scenario.
#[derive(Debug, Default)]
pub struct Accounting {
    /// Messages posted by users still connected [`GRACE`] later.
    pub posted: u64,
    /// Of those, the ones that came back to their sender.
    pub acked: u64,
    /// Deliveries the rules required.
    pub required: u64,
    /// Required deliveries that never happened: (receiver, sender, n).
    pub lost: Vec<(String, String, u64)>,
    /// A (sender, n) received more than once: (receiver, sender, n).
    pub duplicated: Vec<(String, String, u64)>,
    /// A sender's message received after a later one of the same sender.
    pub out_of_order: Vec<(String, String, u64, u64)>,
    /// Messages posted by survivors that never came back to them.
    pub unacked: Vec<(String, u64)>,
    /// Deliveries that were not required (during a fault window).
    pub excused: u64,
}

impl Accounting {
    pub fn assert_clean(&self, what: &str) {
        println!(
            "{what}: posted {}, acked {}, required deliveries {}, lost {}, duplicated {}, \
             out of order {}, never acked {}, excused deliveries {}",
            self.posted,
            self.acked,
            self.required,
            self.lost.len(),
            self.duplicated.len(),
            self.out_of_order.len(),
            self.unacked.len(),
            self.excused
        );
        assert!(
            self.duplicated.is_empty(),
            "{what}: duplicated {:?}",
            self.duplicated
        );
        assert!(
            self.out_of_order.is_empty(),
            "{what}: out of order {:?}",
            self.out_of_order
        );
        assert!(
            self.lost.is_empty(),
            "{what}: lost {} of them, first {:?}",
            self.lost.len(),
            &self.lost[..self.lost.len().min(10)]
        );
    }
}

/// Checks every user's log. Every receiver: no (sender, n) twice, each
/// sender's numbers increasing. A delivery of message n of sender s to
/// receiver r is required when s saw n come back (acknowledged), n was
/// posted after r's own `joined`, both s and r were still connected
/// [`GRACE`] after n was posted (a user whose node dies owes and is owed
/// nothing of its last moments), and `required(s's node, r's node, posted
/// at)` holds (scenarios excuse the pairs of nodes cut apart during a fault
/// window). A message a connected sender never saw come back is counted as
/// never acknowledged.
pub fn account(users: &[&User], required: impl Fn(usize, usize, Instant) -> bool) -> Accounting {
    let connected_after = |u: &User, at: Instant| u.closed().is_none_or(|c| c > at + GRACE);
    let mut acc = Accounting::default();
    let mut received: HashMap<&str, HashMap<(String, u64), usize>> = HashMap::new();
    for receiver in users {
        let log = receiver.log.lock();
        let mut counts: HashMap<(String, u64), usize> = HashMap::new();
        let mut last: HashMap<String, u64> = HashMap::new();
        for (_, event) in &log.events {
            if let Event::Message { from, n, .. } = event {
                let count = counts.entry((from.clone(), *n)).or_default();
                *count += 1;
                if *count == 2 {
                    acc.duplicated
                        .push((receiver.name.clone(), from.clone(), *n));
                }
                if let Some(previous) = last.insert(from.clone(), *n)
                    && *n <= previous
                    && *count == 1
                {
                    acc.out_of_order
                        .push((receiver.name.clone(), from.clone(), previous, *n));
                }
            }
        }
        received.insert(receiver.name.as_str(), counts);
    }
    for sender in users {
        let acked = sender.acked();
        let sent = sender.log.lock().sent.clone();
        for (n, at) in sent {
            if !connected_after(sender, at) {
                continue;
            }
            acc.posted += 1;
            if !acked.contains(&n) {
                acc.unacked.push((sender.name.clone(), n));
                continue;
            }
            acc.acked += 1;
            for receiver in users {
                let got = received[receiver.name.as_str()].contains_key(&(sender.id.clone(), n));
                if at > receiver.joined_at
                    && connected_after(receiver, at)
                    && required(sender.node, receiver.node, at)
                {
                    acc.required += 1;
                    if !got {
                        acc.lost
                            .push((receiver.name.clone(), sender.name.clone(), n));
                    }
                } else if got {
                    acc.excused += 1;
                }
            }
        }
    }
    acc
}

/// Joins a fresh user on each running node (`probe{i}`) and checks the
/// chat_state it gets: every user listed once, and exactly `expected`
/// (user_ids). Returns nothing; panics with the difference.
pub async fn check_chat_states(cluster: &Cluster, room: &str, expected: &HashMap<String, String>) {
    let name = |id: &String| expected.get(id).cloned().unwrap_or_else(|| id.clone());
    let mut wrong = Vec::new();
    for i in cluster.alive() {
        let mut probe = Client::login(cluster.slots[i].web, &format!("probe{i}")).await;
        probe
            .send(json!({"record": "join_chat", "chat_name": room}))
            .await;
        // Messages of the room may come between the chat_state and the own
        // `joined` (the probe is registered before it reads the members).
        let mut state = Value::Null;
        loop {
            let value = probe.expect_any().await;
            if value["record"] == "chat_state" {
                state = value;
            } else if value["record"] == "joined" && value["user_id"] == probe.user_id.as_str() {
                break;
            }
        }
        assert!(state["users"].is_array(), "node {i}: no chat_state");
        let ids: Vec<String> = state["users"]
            .as_array()
            .expect("users")
            .iter()
            .map(|u| u["user_id"].as_str().unwrap_or("").to_owned())
            .filter(|id| !id.is_empty())
            .collect();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for id in &ids {
            *counts.entry(id.as_str()).or_default() += 1;
        }
        let twice: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
        assert!(
            twice.is_empty(),
            "node {i}: listed twice in chat_state: {twice:?}"
        );
        // Earlier probes that left are not members any more.
        let listed: HashSet<String> = ids
            .into_iter()
            .filter(|id| !id.starts_with("probe"))
            .collect();
        let wanted: HashSet<String> = expected.keys().cloned().collect();
        let missing: Vec<_> = wanted.difference(&listed).map(name).collect();
        let extra: Vec<_> = listed.difference(&wanted).map(name).collect();
        if !missing.is_empty() || !extra.is_empty() {
            let view = cluster.view(i).await;
            wrong.push(format!(
                "node {i} ({view:?}): chat_state missing {missing:?}, extra {extra:?}"
            ));
        }
        probe
            .send(json!({"record": "leave_chat", "chat_name": room}))
            .await;
        loop {
            let value = probe.expect_any().await;
            if value["record"] == "left" && value["user_id"] == probe.user_id.as_str() {
                break;
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Lines of a node's log that report an error (Rust: ` ERROR `; Erlang:
/// `=ERROR REPORT`, `crash`).
pub fn log_errors(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|line| {
            line.contains(" ERROR ") || line.contains("=ERROR REPORT") || line.contains("=CRASH")
        })
        .map(str::to_owned)
        .collect()
}

/// Events a node numbered itself for want of an answer from the cluster
/// (its "no sequence from the cluster" warnings, each with the number of
/// events of its batch), over every node's log.
pub fn locally_numbered(cluster: &Cluster) -> u64 {
    cluster
        .slots
        .iter()
        .map(|slot| {
            std::fs::read_to_string(slot.log())
                .unwrap_or_default()
                .lines()
                .filter(|line| line.contains("no sequence from the cluster"))
                .map(|line| {
                    line.split_whitespace()
                        .find_map(|field| field.strip_prefix("events="))
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(1)
                })
                .sum::<u64>()
        })
        .sum()
}

/// Distinct messages that arrived with the same sequence number (in the
/// one room every user is in), over every user's log: how many numbers were
/// handed out twice.
pub fn repeated_sequences(users: &[&User]) -> usize {
    repeated_sequences_posted(users, |_| true)
}

/// [`repeated_sequences`] among the messages posted when `counted` holds.
pub fn repeated_sequences_posted(users: &[&User], counted: impl Fn(Instant) -> bool) -> usize {
    let posted: HashMap<(String, u64), Instant> = users
        .iter()
        .flat_map(|user| {
            let sent = user.log.lock().sent.clone();
            sent.into_iter()
                .map(|(n, at)| ((user.id.clone(), n), at))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut by_sequence: HashMap<u64, HashSet<(String, u64)>> = HashMap::new();
    for user in users {
        for (_, event) in &user.log.lock().events {
            if let Event::Message { from, n, sequence } = event
                && posted
                    .get(&(from.clone(), *n))
                    .is_some_and(|at| counted(*at))
            {
                by_sequence
                    .entry(*sequence)
                    .or_default()
                    .insert((from.clone(), *n));
            }
        }
    }
    by_sequence
        .values()
        .filter(|messages| messages.len() > 1)
        .count()
}

/// Resident set size of a process, in kB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Polls `check` every 100 ms for up to `within`; returns how long it took.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        if check() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// A web port for a node, outside the kernel's ephemeral range: a node
/// restarted mid-test binds its port again, and an ephemeral port (what
/// `free_port` hands out) can meanwhile be the local end of some outgoing
/// connection (a test client's, a node's distribution link); an original
/// node then died at boot with `eaddrinuse`. Distinct within a cluster.
pub fn web_port(taken: &mut HashSet<u16>) -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = 10_000u16.min(ephemeral_low.saturating_sub(1_000));
    for _ in 0..if low < ephemeral_low { 1_000 } else { 0 } {
        let port = rand::random_range(low..ephemeral_low);
        if !taken.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.insert(port);
            return port;
        }
    }
    let port = free_port();
    taken.insert(port);
    port
}
