//! gproc 0.8.0's own distributed test suite (`test/gproc_dist_tests.erl`:
//! the 26 basic tests plus `t_sync_cand_dies`, `t_fail_node` and
//! `t_master_dies`) run against a cluster of three Erlang nodes and one
//! Rust flack node, in three modes:
//!
//! - `all_erlang`: the three Erlang nodes alone (the reference);
//! - `rust_follower`: the Rust node sorts last among the candidates and
//!   joins an Erlang-led cluster;
//! - `rust_leader`: the Rust node sorts first and leads before any Erlang
//!   node starts gproc, so every request of the suite is served by it.
//!
//! Nothing of gproc is part of this repository. The suite is taken from
//! the gproc source named by `FLACK_GPROC_SRC` (e.g.
//! `/work/original/src/gproc`) and compiled at test time with `-DTEST
//! +export_all`; the compiled gproc and gen_leader come from
//! `FLACK_ERLANG_HOME` (`lib/<app>/ebin`). Without both the tests print
//! `SKIPPED: ...` and pass.
//!
//! The three kill tests assume the leader is an Erlang node they can rpc
//! into. Four lines are adapted at compile time, each a no-op when the
//! leader is an Erlang node (the harness checks each matches exactly once):
//! `t_sync_cand_dies` picks the node to suspend with an extra `_ -> A`
//! clause and runs `sync()` from an Erlang node other than the suspended
//! one when the leader is not an Erlang node (so the Rust leader
//! coordinates it); `t_fail_node` takes `[A,B|_]` of the non-leader nodes;
//! `t_master_dies` kills the Rust node (instead of `application:stop(gproc)`
//! through rpc) and, since no name of its own was registered on it, expects
//! all three names to survive.
//!
//! Run: `FLACK_GPROC_SRC=/work/original/src/gproc FLACK_ERLANG_HOME=/work/original
//! cargo test --test gproc_suite -- --nocapture` (the tests take turns; each
//! mode prints one line per test). Ignored: 20 leader runs in a row, and
//! 400 setups of Erlang nodes joining a Rust-led cluster.

mod node_support;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use node_support::{TestEpmd, erl_available, free_port, unique};
use serde_json::Value;

const COOKIE: &str = "gproc_suite_cookie";

/// The 29 tests, in the suite's order.
const TESTS: [&str; 29] = [
    "t_simple_reg",
    "t_simple_reg_other",
    "t_simple_ensure",
    "t_simple_ensure_other",
    "t_simple_reg_or_locate",
    "t_simple_counter",
    "t_aggr_counter",
    "t_awaited_aggr_counter",
    "t_simple_resource_count",
    "t_awaited_resource_count",
    "t_resource_count_on_zero",
    "t_update_counters",
    "t_shared_counter",
    "t_prop",
    "t_mreg",
    "t_await_reg",
    "t_await_self",
    "t_await_reg_exists",
    "t_give_away",
    "t_sync",
    "t_monitor",
    "t_standby_monitor",
    "t_standby_monitor_unreg",
    "t_follow_monitor",
    "t_monitor_demonitor",
    "t_subscribe",
    "t_sync_cand_dies",
    "t_fail_node",
    "t_master_dies",
];

/// The adaptations of the kill tests: (text in gproc 0.8.0, replacement).
/// Each leaves the test unchanged when the leader is an Erlang node.
const ADAPTATIONS: [(&str, &str); 5] = [
    // t_sync_cand_dies: the leader may be none of A, B, C.
    ("C -> A\n", "C -> A;\n                _ -> A\n"),
    (
        "rpc:async_call(Leader, gproc_dist, sync, [])",
        "rpc:async_call(gproc_suite_driver:rpc_node(Leader, Other), gproc_dist, sync, [])",
    ),
    // t_fail_node: three nodes remain when the leader is not among them.
    ("[A,B] = Ns -- [Leader]", "[A,B|_] = Ns -- [Leader]"),
    // t_master_dies: no name was registered on a Rust leader.
    (
        "C -> {Nc, Pc}\n",
        "C -> {Nc, Pc};\n                   _ -> {?T_NAME, undefined}\n",
    ),
    (
        "rpc:call(L, application, stop, [gproc])",
        "gproc_suite_driver:stop_gproc(L)",
    ),
];

/// How the Rust node takes part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Erlang,
    Follower,
    Leader,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::Erlang => "erlang",
            Mode::Follower => "follower",
            Mode::Leader => "leader",
        }
    }
}

struct Env {
    gproc_src: PathBuf,
    erlang_home: PathBuf,
}

fn env() -> Option<Env> {
    let gproc_src = PathBuf::from(std::env::var_os("FLACK_GPROC_SRC")?);
    let erlang_home = PathBuf::from(std::env::var_os("FLACK_ERLANG_HOME")?);
    let ok = gproc_src.join("test/gproc_dist_tests.erl").is_file()
        && erlang_home.join("lib/gproc/ebin").is_dir()
        && erlang_home.join("lib/gen_leader/ebin").is_dir()
        && erl_available();
    ok.then_some(Env {
        gproc_src,
        erlang_home,
    })
}

fn skip_message() {
    println!(
        "SKIPPED: set FLACK_GPROC_SRC to gproc 0.8.0's source (with test/gproc_dist_tests.erl) \
         and FLACK_ERLANG_HOME to a directory with lib/gproc/ebin and lib/gen_leader/ebin \
         (and have erl installed) to run gproc's distributed suite"
    );
}

/// The suite runs use real time (timeouts of 500 ms to 10 s inside the
/// tests); two at once on a small machine would make them flaky.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Compiles the suite (adapted), its helper module and the driver.
fn compile(env: &Env, dir: &Path) {
    let test_dir = env.gproc_src.join("test");
    let mut suite = std::fs::read_to_string(test_dir.join("gproc_dist_tests.erl"))
        .expect("gproc_dist_tests.erl");
    for (from, to) in ADAPTATIONS {
        assert_eq!(
            suite.matches(from).count(),
            1,
            "gproc_dist_tests.erl is not gproc 0.8.0's: expected `{from}` once"
        );
        suite = suite.replace(from, to);
    }
    std::fs::write(dir.join("gproc_dist_tests.erl"), suite).expect("write suite");
    let driver =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("erlang-compat/gproc_suite_driver.erl");
    let status = Command::new("erlc")
        .args(["-DTEST", "+export_all", "+nowarn_export_all", "-o"])
        .arg(dir)
        .arg("-I")
        .arg(env.gproc_src.join("include"))
        .arg(dir.join("gproc_dist_tests.erl"))
        .arg(test_dir.join("gproc_test_lib.erl"))
        .arg(&driver)
        .stdout(Stdio::null())
        .status()
        .expect("erlc runs");
    assert!(status.success(), "erlc failed");
}

/// The Rust node, `flack foreground`, killed when dropped.
struct RustNode {
    child: Child,
    web: SocketAddr,
}

impl Drop for RustNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cluster {
    dir: PathBuf,
    epmd_port: u16,
    rust_name: String,
    erlang_names: Vec<String>,
    mode: Mode,
    starts: u32,
}

impl Cluster {
    /// Starts the Rust node and waits until it answers on its web port.
    /// Right after the previous one was killed, EPMD may still hold the
    /// name for a moment (the node then exits: "name already in use"):
    /// start again.
    fn start_rust_up(&mut self) -> RustNode {
        for _ in 0..50 {
            let mut node = self.start_rust();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if matches!(node.child.try_wait(), Ok(Some(_))) {
                    break;
                }
                if std::net::TcpStream::connect_timeout(&node.web, Duration::from_millis(200))
                    .is_ok()
                {
                    return node;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the Rust node does not start");
    }

    fn start_rust(&mut self) -> RustNode {
        self.starts += 1;
        let node_dir = self.dir.join("rust");
        std::fs::create_dir_all(&node_dir).expect("node dir");
        let port = free_port();
        let mut candidates: Vec<String> = self.erlang_names.clone();
        candidates.push(self.rust_name.clone());
        let config = node_dir.join("sys.config");
        std::fs::write(
            &config,
            format!(
                "[{{flack, [{{port, {port}}}]}},\n {{gproc, [{{gproc_dist, [{}]}}]}}].\n",
                candidates.join(",")
            ),
        )
        .expect("sys.config");
        let log = std::fs::File::create(node_dir.join(format!("rust-{}.log", self.starts)))
            .expect("log file");
        // FLACK_BIN: a copy of the binary, so long runs survive rebuilds.
        let binary = std::env::var_os("FLACK_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_flack")));
        let child = Command::new(binary)
            .args(["foreground", "--bind", "127.0.0.1"])
            .args(["-sname", &self.rust_name, "-setcookie", COOKIE])
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&node_dir)
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("RUST_LOG", "flack=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("flack starts");
        RustNode {
            child,
            web: format!("127.0.0.1:{port}").parse().expect("address"),
        }
    }
}

/// The Rust node's cluster view, from `/health`.
fn cluster_view(web: SocketAddr) -> Value {
    use std::io::Read;
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&web, Duration::from_secs(1)) else {
        return Value::Null;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return Value::Null;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or("");
    serde_json::from_str::<Value>(body)
        .map(|health| health["cluster"].clone())
        .unwrap_or(Value::Null)
}

/// Waits until the Rust node is `role` under `leader` (any leader when
/// `None`) with no candidate down (for a follower; a lone leader sees the
/// others down).
fn wait_role(web: SocketAddr, role: &str, leader: Option<&str>) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut view = Value::Null;
    while Instant::now() < deadline {
        view = cluster_view(web);
        let up = role == "leader" || view["down"].as_array().is_some_and(Vec::is_empty);
        let leads = leader.is_none_or(|leader| view["leader"] == leader);
        if view["role"] == role && leads && up {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "the Rust node did not become {role} under {leader:?}: {view}"
    ))
}

/// One test's outcome.
#[derive(Debug, Clone)]
struct Outcome {
    test: String,
    passed: bool,
    millis: u64,
    detail: String,
}

/// Runs the driver over `groups` and collects the results.
fn run_driver(env: &Env, mode: Mode, groups: &[&str], epmd_port: u16) -> Vec<Outcome> {
    let stem = unique("gs");
    let dir = std::env::temp_dir().join(format!("flack-gproc-suite-{stem}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    compile(env, &dir);
    let rust_name = match mode {
        // Sorts before n1..., n2..., n3...: the Rust node is position 1.
        Mode::Leader | Mode::Erlang => format!("a{stem}@localhost"),
        // Sorts after them.
        Mode::Follower => format!("z{stem}@localhost"),
    };
    let erlang_names: Vec<String> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| format!("{n}{stem}@localhost"))
        .collect();
    let mut cluster = Cluster {
        dir: dir.clone(),
        epmd_port,
        rust_name: rust_name.clone(),
        erlang_names: erlang_names.clone(),
        mode,
        starts: 0,
    };
    let mut master = Command::new("erl");
    master
        .args(["-sname", &format!("master{stem}@localhost")])
        .args(["-setcookie", COOKIE, "-noshell"])
        .arg("-pa")
        .arg(&dir)
        .arg("-pa")
        .arg(env.erlang_home.join("lib/gproc/ebin"))
        .arg("-pa")
        .arg(env.erlang_home.join("lib/gen_leader/ebin"))
        .args(["-kernel", "logger_level", "error"])
        .arg("-eval")
        .arg(format!(
            "gproc_suite_driver:main([\"{}\", \"{stem}\", \"{}\", \"{}\"]).",
            mode.arg(),
            rust_name,
            groups.join(",")
        ))
        .current_dir(&dir)
        .env("ERL_EPMD_PORT", epmd_port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = master.spawn().expect("erl starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut log = std::fs::File::create(dir.join("driver.log")).expect("driver log");
    let mut rust: Option<RustNode> = None;
    let mut outcomes = Vec::new();
    // FLACK_GPROC_RACE=<ms>: in leader mode, start the Erlang nodes up to
    // that long after the Rust node answers, without waiting for it to lead.
    let race: Option<u64> = std::env::var("FLACK_GPROC_RACE")
        .ok()
        .and_then(|ms| ms.parse().ok());
    for line in stdout.lines() {
        let Ok(line) = line else { break };
        let _ = writeln!(log, "{line}");
        if line == "@@start_rust" {
            let node = cluster.start_rust_up();
            let ready = match (cluster.mode, race) {
                // The Erlang nodes start while the Rust node may still be
                // electing itself.
                (Mode::Leader, Some(max)) => {
                    std::thread::sleep(Duration::from_millis(rand::random::<u64>() % max.max(1)));
                    Ok(())
                }
                (Mode::Leader, None) => wait_role(node.web, "leader", Some(&rust_name)),
                _ => wait_role(node.web, "follower", None),
            };
            if let Err(error) = ready {
                println!("{error}");
            }
            rust = Some(node);
            let _ = stdin.write_all(b"go\n");
        } else if line == "@@kill_rust" {
            rust = None;
            let _ = stdin.write_all(b"go\n");
        } else if let Some(rest) = line.strip_prefix("@@result ") {
            let mut words = rest.splitn(4, ' ');
            let test = words.next().unwrap_or("?").to_owned();
            let passed = words.next() == Some("ok");
            let millis = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
            let detail = words.next().unwrap_or("").to_owned();
            println!(
                "  [{}] {test:<26} {:>6} ms {}",
                mode.arg(),
                millis,
                if passed {
                    "ok".to_owned()
                } else {
                    format!("FAIL {detail}")
                }
            );
            outcomes.push(Outcome {
                test,
                passed,
                millis,
                detail,
            });
        } else if let Some(info) = line.strip_prefix("@@info ") {
            println!(
                "  [{}] {}",
                mode.arg(),
                info.chars().take(300).collect::<String>()
            );
        } else if line.starts_with("@@error") {
            println!("  [{}] driver error: {line}", mode.arg());
        } else if line == "@@done" {
            break;
        }
    }
    drop(rust);
    let _ = child.kill();
    let _ = child.wait();
    if outcomes.iter().all(|o| o.passed) {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("  logs kept in {}", dir.display());
    }
    outcomes
}

/// The groups of the suite's `foreach`.
const GROUPS: [&str; 4] = ["basic", "t_sync_cand_dies", "t_fail_node", "t_master_dies"];

async fn suite(mode: Mode) -> Vec<Outcome> {
    let env = env().expect("checked");
    let epmd = TestEpmd::start().await;
    let port = epmd.port;
    let outcomes = tokio::task::spawn_blocking(move || run_driver(&env, mode, &GROUPS, port))
        .await
        .expect("driver thread");
    drop(epmd);
    let passed = outcomes.iter().filter(|o| o.passed).count();
    println!(
        "gproc_dist_tests [{}]: {passed}/{} passed",
        mode.arg(),
        TESTS.len()
    );
    outcomes
}

fn assert_all_passed(mode: Mode, outcomes: &[Outcome]) {
    let failed: Vec<String> = TESTS
        .iter()
        .filter(|test| !outcomes.iter().any(|o| o.test == **test && o.passed))
        .map(|test| {
            let detail = outcomes
                .iter()
                .find(|o| o.test == *test)
                .map_or("not run", |o| o.detail.as_str());
            format!("{test}: {detail}")
        })
        .collect();
    assert!(
        failed.is_empty(),
        "[{}] {}/{} passed; failed or not run: {failed:?}",
        mode.arg(),
        TESTS.len() - failed.len(),
        TESTS.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gproc_suite_all_erlang() {
    let Some(_) = env() else {
        return skip_message();
    };
    let _turn = TURN.lock().await;
    let outcomes = suite(Mode::Erlang).await;
    assert_all_passed(Mode::Erlang, &outcomes);
}

#[tokio::test(flavor = "multi_thread")]
async fn gproc_suite_rust_follower() {
    let Some(_) = env() else {
        return skip_message();
    };
    let _turn = TURN.lock().await;
    let outcomes = suite(Mode::Follower).await;
    assert_all_passed(Mode::Follower, &outcomes);
}

#[tokio::test(flavor = "multi_thread")]
async fn gproc_suite_rust_leader() {
    let Some(_) = env() else {
        return skip_message();
    };
    let _turn = TURN.lock().await;
    let outcomes = suite(Mode::Leader).await;
    assert_all_passed(Mode::Leader, &outcomes);
}

/// The leader mode 20 times in a row; prints a summary per run.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "long: 20 full suite runs"]
async fn gproc_suite_rust_leader_20_times() {
    let Some(_) = env() else {
        return skip_message();
    };
    let _turn = TURN.lock().await;
    let mut failures = Vec::new();
    for run in 1..=20 {
        let outcomes = suite(Mode::Leader).await;
        let failed: Vec<String> = TESTS
            .iter()
            .filter(|test| !outcomes.iter().any(|o| o.test == **test && o.passed))
            .map(|test| test.to_string())
            .collect();
        println!("run {run}: {}/29", 29 - failed.len());
        if !failed.is_empty() {
            failures.push((run, failed));
        }
    }
    assert!(failures.is_empty(), "failing runs: {failures:?}");
}

/// Any mode and groups, from the environment: `FLACK_GPROC_MODE`
/// (`erlang`, `follower`, `leader`) and `FLACK_GPROC_GROUPS` (a comma list
/// of `basic`, `t_sync_cand_dies`, `t_fail_node`, `t_master_dies`, `join`;
/// repeat a group to run it again), e.g. to chase a rare failure.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "driven by FLACK_GPROC_MODE and FLACK_GPROC_GROUPS"]
async fn gproc_suite_custom() {
    let Some(env) = env() else {
        return skip_message();
    };
    let mode = match std::env::var("FLACK_GPROC_MODE").as_deref() {
        Ok("erlang") => Mode::Erlang,
        Ok("follower") => Mode::Follower,
        _ => Mode::Leader,
    };
    let groups = std::env::var("FLACK_GPROC_GROUPS").unwrap_or_else(|_| GROUPS.join(","));
    let _turn = TURN.lock().await;
    let epmd = TestEpmd::start().await;
    let port = epmd.port;
    let outcomes = tokio::task::spawn_blocking(move || {
        let groups: Vec<&str> = groups.split(',').collect();
        run_driver(&env, mode, &groups, port)
    })
    .await
    .expect("driver thread");
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.passed).collect();
    println!("{} results, {} failed", outcomes.len(), failed.len());
    assert!(failed.is_empty(), "failed: {failed:?}");
}

/// 400 setups of three Erlang nodes joining a Rust-led cluster: each must
/// see the Rust node as leader on every node (get_leader answers within
/// 20 s).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "long: 400 cluster setups"]
async fn erlang_nodes_join_a_rust_leader_400_times() {
    let Some(env) = env() else {
        return skip_message();
    };
    let _turn = TURN.lock().await;
    let setups: usize = std::env::var("FLACK_JOIN_SETUPS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(400);
    let epmd = TestEpmd::start().await;
    let port = epmd.port;
    let outcomes = tokio::task::spawn_blocking(move || {
        let groups = vec!["join"; setups];
        run_driver(&env, Mode::Leader, &groups, port)
    })
    .await
    .expect("driver thread");
    let stalled: Vec<&Outcome> = outcomes.iter().filter(|o| !o.passed).collect();
    let slowest = outcomes.iter().map(|o| o.millis).max().unwrap_or(0);
    println!(
        "join setups: {} run, {} stalled, slowest {slowest} ms",
        outcomes.len(),
        stalled.len()
    );
    assert_eq!(outcomes.len(), setups, "every setup ran");
    assert!(stalled.is_empty(), "stalled joins: {stalled:?}");
}
