//! OTP's own `lib/kernel/test/global_SUITE.erl` (at the OTP version
//! installed here) run by `ct_run` twice: once with a Rust flack node
//! connected to every node of the suite, once with a plain `erl` node in
//! its place. Every selected case that passes with the Erlang node must
//! pass with the Rust node, except the known differences listed in
//! [`KNOWN_DIFFERENCES`] (each with its reason); the test prints a table
//! of both runs.
//!
//! Nothing of OTP's test tree is part of this repository. The suite is
//! taken from the file named by `FLACK_OTP_GLOBAL_SUITE` (fetch the
//! version of your OTP, e.g. `lib/kernel/test/global_SUITE.erl` at tag
//! `OTP-25.2.3`) and compiled in a temporary directory; `ct_run` comes
//! from Debian's `erlang-common-test`. Without either the test prints
//! `SKIPPED: ...` and passes.
//!
//! The suite's driver node (`ct_run`) connects to the extra node at the
//! start of every case; `global` then meshes every node the case starts
//! with it. Six adaptations are made at compile time (the harness checks each
//! text matches exactly as often as expected), none of them changing what a
//! case asserts about the suite's own nodes:
//!
//! - `suite()` drops the `ts_install_cth` hook, which lives in OTP's test
//!   tree and is not installed;
//! - `init_per_testcase` connects the driver to the extra node and waits
//!   until its `global` knows it;
//! - `init_condition` (run before and after each case: "no node
//!   connected, none known to global") and `verify_nodes` (after starting
//!   nodes: "each new node sees exactly the others") leave the extra node
//!   out of the node lists they compare;
//! - `wait_for_ready_net` adds the extra node to the nodes that must all
//!   know, and be connected to, each other: so every case that waits for a
//!   ready network checks that the extra node is meshed with all its nodes,
//!   the extra node's own `get_known` and `nodes()` answered by it.
//!
//! `kernel_test_lib.hrl` is replaced by the three macros the suite uses
//! (`?P/1,2` print, `?TC_TRY/2` runs the case).
//!
//! Cases not selected, and why:
//!
//! - partitions (`name_die`, `basic_partition`, `basic_name_partition`,
//!   `advanced_partition`, `stress_partition`, `ring`, `simple_ring`,
//!   `line`, `simple_line`, `otp_3162`, `simple_disconnect`,
//!   `simple_resolve`, `simple_resolve2`, `simple_resolve3`,
//!   `leftover_name`, `external_nodes`, `many_nodes`, `flaw1`,
//!   `lost_connection`, `lost_connection2`, `both_known_1`,
//!   `lost_unregister`): they disconnect every node from every other and
//!   reconnect only the nodes each partition lists; a node connected to
//!   all the suite's nodes would bridge the partitions (or be cut off from
//!   all of them), so with any extra node, Erlang or Rust, these cases test
//!   something else. `both_known_1` and `lost_unregister` also skip
//!   themselves under `prevent_overlapping_partitions` (OTP 25's default);
//! - `global_disconnect` asserts that nothing at all is connected at its
//!   start and that `global:disconnect()` returns exactly the suite's nodes;
//! - `global_groups_change`: global groups (the Rust node has none), nodes
//!   booted from a generated release;
//! - `register_1` starts its node with `slave:start(inet:gethostname())`,
//!   a host name other than the driver's `localhost`, so `slave` goes
//!   through `rsh` and the case times out with an Erlang node too;
//! - `ring_line`: only with `-ring_line N`.
//!
//! Run: `FLACK_OTP_GLOBAL_SUITE=/path/to/global_SUITE.erl cargo test --test
//! global_suite -- --nocapture` (two `ct_run`s of a few minutes each;
//! `FLACK_OTP_GLOBAL_CASES=names,locks` runs a subset).

mod node_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flack::node::{Node, NodeConfig, NodeName};
use node_support::{TestEpmd, erl_available, unique};

/// The cases run, in the suite's order.
const CASES: [&str; 17] = [
    "names",
    "names_hidden",
    "locks",
    "locks_hidden",
    "bad_input",
    "names_and_locks",
    "lock_die",
    "global_lost_nodes",
    "otp_1849",
    "otp_5640",
    "otp_5737",
    "connect_all_false",
    "re_register_name",
    "name_exit",
    "sync_0",
    "mass_death",
    "garbage_messages",
];

/// Cases that pass with an Erlang node in place and are allowed to fail
/// with the Rust node, each with the reason.
const KNOWN_DIFFERENCES: [(&str, &str); 1] = [(
    "otp_5640",
    "mon_by_servers/1 rpc's erlang:process_info/2 into every node whose \
     global_name_server monitors the name's holder; the Rust node's does, \
     and its rpc runs only the calls the README lists (no code a peer sends \
     is run), so the rpc is a badrpc",
)];

/// The cookie of every node, written to `$HOME/.erlang.cookie` for
/// `ct_run` and the nodes it starts (`slave` and `peer` nodes read the
/// file, they are not given `-setcookie`).
const COOKIE: &str = "flack_global_suite";

/// How long one `ct_run` may take before the test gives up on it.
const RUN_GUARD: Duration = Duration::from_secs(30 * 60);

/// The adaptations: (text in the suite, replacement, how often it occurs).
const ADAPTATIONS: [(&str, &str, usize); 6] = [
    (
        "suite() ->\n    [{ct_hooks,[ts_install_cth]}].",
        "suite() ->\n    [].",
        1,
    ),
    (
        "    start_node_tracker(Config0),\n",
        "    start_node_tracker(Config0),\n    flack_connect_extra(),\n",
        1,
    ),
    (
        "    ?UNTIL([] =:= nodes()),",
        "    ?UNTIL([] =:= nodes() -- flack_extra_nodes()),",
        1,
    ),
    (
        "    ?UNTIL([node()] =:= get_known(node())),",
        "    ?UNTIL([node()] =:= get_known(node()) -- flack_extra_nodes()),",
        1,
    ),
    // verify_nodes/3 and rpc_disconnect_node/3.
    (
        "rpc:call(Node, erlang, nodes, [])",
        "flack_nodes_of(Node)",
        2,
    ),
    (
        "    Nodes = lists:sort(Nodes0),\n    ?P(\"wait_for_ready_net ->\"",
        "    Nodes = lists:usort(Nodes0 ++ flack_extra_nodes()),\n    ?P(\"wait_for_ready_net ->\"",
        1,
    ),
];

/// Appended to the suite: the extra node comes from `FLACK_EXTRA_NODE`.
const HELPERS: &str = r#"
flack_extra_nodes() ->
    case os:getenv("FLACK_EXTRA_NODE") of
        false -> [];
        "" -> [];
        Extra -> [list_to_atom(Extra)]
    end.

flack_nodes_of(Node) ->
    case rpc:call(Node, erlang, nodes, []) of
        Nodes when is_list(Nodes) -> Nodes -- flack_extra_nodes();
        Other -> Other
    end.

flack_connect_extra() ->
    [flack_connect_extra(Extra, 100) || Extra <- flack_extra_nodes()],
    ok.

flack_connect_extra(Extra, 0) ->
    exit({extra_node_unreachable, Extra});
flack_connect_extra(Extra, Tries) ->
    case net_kernel:connect_node(Extra) andalso lists:member(Extra, global_known()) of
        true -> ok;
        false -> timer:sleep(100), flack_connect_extra(Extra, Tries - 1)
    end.
"#;

/// What `kernel_test_lib.hrl` gives the suite, reduced to what it uses.
const KERNEL_TEST_LIB_HRL: &str = r#"-define(P(F), io:format(F ++ "~n")).
-define(P(F, A), io:format(F ++ "~n", A)).
-define(TC_TRY(Case, TC), TC()).
"#;

fn command_runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// The suite's text with the adaptations applied, or what did not match.
fn adapt(suite: &str) -> Result<String, String> {
    let mut text = suite.to_owned();
    for (from, to, count) in ADAPTATIONS {
        let found = text.matches(from).count();
        if found != count {
            return Err(format!(
                "expected {count} occurrence(s) of {from:?} in the suite, found {found} \
                 (a version of global_SUITE.erl this harness does not know)"
            ));
        }
        text = text.replace(from, to);
    }
    text.push_str(HELPERS);
    Ok(text)
}

/// Which node stands in as the extra one.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Extra {
    Erlang,
    Rust,
}

/// One `ct_run`: each case's result line (`ok`, `failed: ...`, ...), and
/// for the Rust run the suite's nodes the Rust node was connected to.
struct Run {
    results: BTreeMap<String, String>,
    seen: BTreeSet<String>,
}

/// `ok`, or `ok: Comment` for a case that returned `{comment, Comment}`.
fn passed(result: Option<&String>) -> bool {
    result.is_some_and(|r| r == "ok" || r.starts_with("ok:"))
}

/// The case that started `node`: the suite names its nodes
/// `Name_Case__YYYY_MM_DD__HH_MM_SS`, and `sync_0` starts its nodes
/// without the case in its Config (`Name_undefined__...`). The longest
/// case name that ends the stem wins (`names_and_locks` over `locks`).
fn case_of<'a>(node: &str, cases: &[&'a str]) -> Option<&'a str> {
    let stem = node.split("__").next()?;
    if stem.ends_with("_undefined") {
        return cases.iter().copied().find(|c| *c == "sync_0");
    }
    cases
        .iter()
        .copied()
        .filter(|c| stem.ends_with(&format!("_{c}")))
        .max_by_key(|c| c.len())
}

/// Finds `suite.log` under `dir` (ct_run's log tree).
fn find_suite_log(dir: &Path) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_suite_log(&path) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == "suite.log") {
            return Some(path);
        }
    }
    None
}

/// `=case global_SUITE:NAME` followed by `=result ...`, per case.
fn parse_suite_log(text: &str) -> BTreeMap<String, String> {
    let mut results = BTreeMap::new();
    let mut case: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("=case") {
            let name = rest.trim();
            case = Some(name.rsplit(':').next().unwrap_or(name).to_owned());
        } else if let Some(rest) = line.strip_prefix("=result")
            && let Some(name) = case.take()
        {
            results.insert(name, rest.trim().to_owned());
        }
    }
    results
}

/// This run's directory: the adapted suite, `$HOME` with the cookie, logs.
fn run_dir() -> PathBuf {
    std::env::temp_dir().join(format!("flack-global-suite-{}", std::process::id()))
}

/// Runs the selected `cases` with `ct_run` against the compiled suite in
/// `dir`, the extra node named `extra` (already up).
async fn ct_run(
    dir: &Path,
    epmd_port: u16,
    extra: &str,
    cases: &[&str],
    label: &str,
) -> BTreeMap<String, String> {
    let logdir = dir.join(format!("logs-{label}"));
    std::fs::create_dir_all(&logdir).expect("log dir");
    let output =
        std::fs::File::create(dir.join(format!("ct_run-{label}.out"))).expect("output file");
    let mut command = tokio::process::Command::new("ct_run");
    command
        .env("HOME", dir.join("home"))
        .env("ERL_EPMD_PORT", epmd_port.to_string())
        .env("FLACK_EXTRA_NODE", extra)
        .current_dir(dir)
        .args(["-noshell", "-sname"])
        .arg(format!("{}@localhost", unique("gsdriver")))
        .arg("-pa")
        .arg(dir)
        .args(["-no_auto_compile", "-dir"])
        .arg(dir)
        .args(["-suite", "global_SUITE", "-case"])
        .args(cases)
        .arg("-logdir")
        .arg(&logdir)
        .stdin(Stdio::null())
        .stdout(output.try_clone().expect("output file"))
        .stderr(output)
        .kill_on_drop(true);
    let mut child = command.spawn().expect("ct_run starts");
    let status = tokio::time::timeout(RUN_GUARD, child.wait())
        .await
        .unwrap_or_else(|_| panic!("ct_run ({label}) still running after {RUN_GUARD:?}"))
        .expect("ct_run waited for");
    let log = find_suite_log(&logdir).unwrap_or_else(|| {
        panic!(
            "ct_run ({label}, {status}) left no suite.log; its output is in {}",
            dir.join(format!("ct_run-{label}.out")).display()
        )
    });
    parse_suite_log(&std::fs::read_to_string(&log).expect("suite.log"))
}

/// A plain `erl` node standing in as the extra node; killed when dropped.
struct ErlExtra(std::process::Child);

impl Drop for ErlExtra {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn run_with(extra: Extra, dir: &Path, cases: &[&str]) -> Run {
    let epmd = TestEpmd::start().await;
    match extra {
        Extra::Erlang => {
            let name = format!("{}@localhost", unique("gserl"));
            let child = Command::new("erl")
                .env("HOME", dir.join("home"))
                .env("ERL_EPMD_PORT", epmd.port.to_string())
                .args(["-noshell", "-noinput", "-sname", &name])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("erl starts");
            let _erl = ErlExtra(child);
            // The driver retries its connection for 10 s while erl boots.
            let results = ct_run(dir, epmd.port, &name, cases, "erlang").await;
            Run {
                results,
                seen: BTreeSet::new(),
            }
        }
        Extra::Rust => {
            let mut config = NodeConfig::named(
                NodeName::short(&format!("{}@localhost", unique("gsrust"))).expect("name"),
                COOKIE,
            );
            config.epmd_port = epmd.port;
            config.listen_ip = "127.0.0.1".parse().expect("ip");
            config.start_epmd = flack::node::EpmdStart::Never;
            let node = Node::start(config).await.expect("the Rust node starts");
            // Which of the suite's nodes the Rust node was connected to:
            // every node-up event, so a node that lives for a moment (as
            // lock_die's does) is counted too.
            let seen = Arc::new(parking_lot::Mutex::new(BTreeSet::new()));
            let done = Arc::new(AtomicBool::new(false));
            let watcher = {
                let mut events = node.subscribe();
                let (seen, done) = (seen.clone(), done.clone());
                tokio::spawn(async move {
                    while !done.load(Ordering::Relaxed) {
                        match tokio::time::timeout(Duration::from_millis(200), events.recv()).await
                        {
                            Ok(Ok(flack::node::NodeEvent::Up(peer))) => {
                                seen.lock().insert(peer.to_string());
                            }
                            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => break,
                            _ => {}
                        }
                    }
                })
            };
            let results = ct_run(dir, epmd.port, node.name(), cases, "rust").await;
            done.store(true, Ordering::Relaxed);
            let _ = watcher.await;
            node.shutdown().await;
            let seen = seen.lock().clone();
            Run { results, seen }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otp_global_suite_passes_with_a_rust_node_as_with_an_erlang_node() {
    let Some(suite_path) = std::env::var_os("FLACK_OTP_GLOBAL_SUITE").map(PathBuf::from) else {
        eprintln!(
            "SKIPPED: FLACK_OTP_GLOBAL_SUITE is not set (the path of OTP's \
             lib/kernel/test/global_SUITE.erl for the installed OTP; see README, Tests)"
        );
        return;
    };
    if !erl_available() {
        eprintln!("SKIPPED: erl is not installed (CI installs erlang-nox)");
        return;
    }
    if !command_runs("ct_run", "-help") {
        eprintln!("SKIPPED: ct_run is not installed (Debian: erlang-common-test)");
        return;
    }
    let suite = std::fs::read_to_string(&suite_path)
        .unwrap_or_else(|e| panic!("FLACK_OTP_GLOBAL_SUITE={}: {e}", suite_path.display()));
    let adapted = adapt(&suite).unwrap_or_else(|e| panic!("{}: {e}", suite_path.display()));

    let cases: Vec<&str> = match std::env::var("FLACK_OTP_GLOBAL_CASES") {
        Ok(list) if !list.trim().is_empty() => {
            let wanted: Vec<String> = list.split(',').map(|c| c.trim().to_owned()).collect();
            for w in &wanted {
                assert!(
                    CASES.contains(&w.as_str()),
                    "{w} is not one of the selected cases {CASES:?}"
                );
            }
            CASES
                .iter()
                .copied()
                .filter(|c| wanted.iter().any(|w| w == c))
                .collect()
        }
        _ => CASES.to_vec(),
    };

    // Everything outside the checkout, in a directory of this run.
    let dir = run_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("home")).expect("temp dir");
    let cookie = dir.join("home/.erlang.cookie");
    std::fs::write(&cookie, COOKIE).expect("cookie file");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400))
            .expect("cookie mode");
    }
    std::fs::write(dir.join("global_SUITE.erl"), adapted).expect("suite");
    std::fs::write(dir.join("kernel_test_lib.hrl"), KERNEL_TEST_LIB_HRL).expect("hrl");
    let erlc = Command::new("erlc")
        .arg("-o")
        .arg(&dir)
        .arg(dir.join("global_SUITE.erl"))
        .current_dir(&dir)
        .output()
        .expect("erlc runs");
    assert!(
        erlc.status.success(),
        "erlc failed on the adapted suite: {}",
        String::from_utf8_lossy(&erlc.stdout)
    );

    let erlang = run_with(Extra::Erlang, &dir, &cases).await;
    let rust = run_with(Extra::Rust, &dir, &cases).await;

    // How many of each case's own nodes the Rust node was connected to.
    let peers_seen = |case: &str| {
        rust.seen
            .iter()
            .filter(|n| case_of(n, &cases) == Some(case))
            .count()
    };
    println!(
        "\nOTP global_SUITE ({}), {} cases:",
        suite_path.display(),
        cases.len()
    );
    println!(
        "{:<20} {:<8} {:<8} {:>12}  note",
        "case", "erlang", "rust", "rust peers"
    );
    let short = |r: Option<&String>| match r {
        None => "missing".to_owned(),
        Some(r) => r.split([':', ',']).next().unwrap_or(r).to_owned(),
    };
    let mut regressions = Vec::new();
    for case in &cases {
        let (e, r) = (erlang.results.get(*case), rust.results.get(*case));
        let known = KNOWN_DIFFERENCES.iter().find(|(c, _)| c == case);
        let note = match (passed(e), passed(r), known) {
            (true, false, Some(_)) => "known difference (see KNOWN_DIFFERENCES)".to_owned(),
            (true, false, None) => {
                regressions.push(format!(
                    "{case}: erlang ok, rust {}",
                    r.map_or("missing", |r| r.as_str())
                ));
                "REGRESSION".to_owned()
            }
            (_, true, Some(_)) => "listed as a known difference, but passes".to_owned(),
            (false, _, _) => "fails with the Erlang node too".to_owned(),
            _ => String::new(),
        };
        println!(
            "{:<20} {:<8} {:<8} {:>12}  {note}",
            case,
            short(e),
            short(r),
            peers_seen(case)
        );
    }
    for (case, result) in rust
        .results
        .iter()
        .filter(|(c, r)| cases.contains(&c.as_str()) && !passed(Some(r)))
    {
        println!("  rust {case}: {result}");
    }
    println!("(ct logs in {}, kept if this test fails)", dir.display());

    // The harness itself ran: every case has a result in both runs, the
    // reference run passed cases, and the Rust node was in the cases' mesh.
    for case in &cases {
        assert!(
            erlang.results.contains_key(*case),
            "no result for {case} with the Erlang node"
        );
        assert!(
            rust.results.contains_key(*case),
            "no result for {case} with the Rust node"
        );
    }
    assert!(
        cases.iter().any(|c| passed(erlang.results.get(*c))),
        "no case passed with the Erlang node: the harness is broken (logs in {})",
        dir.display()
    );
    for case in cases.iter().filter(|c| passed(rust.results.get(**c))) {
        // These start no node the Rust node would be meshed with
        // (connect_all_false's node runs with -connect_all false), or, as
        // lock_die, stop their nodes without waiting for global to mesh
        // them (the Rust node met lock_die's nodes in one run of three).
        let starts_nodes = ![
            "bad_input",
            "otp_5737",
            "re_register_name",
            "connect_all_false",
            "lock_die",
        ]
        .contains(case);
        assert!(
            !starts_nodes || peers_seen(case) > 0,
            "{case} passed, but the Rust node was never connected to one of its nodes"
        );
    }
    assert!(
        regressions.is_empty(),
        "cases that pass with an Erlang node in place fail with the Rust node: {regressions:#?} (logs in {})",
        dir.display()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
