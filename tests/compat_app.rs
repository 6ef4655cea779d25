//! `erlang-compat/flack_migration`, the Erlang application an operator
//! hot-loads into running ORIGINAL flack nodes during a migration (see
//! `erlang-compat/README.md`).
//!
//! Without the original (CI), on plain Debian `erl` nodes:
//! - the application compiles with `erlc -Werror`;
//! - its code swap over a STAND-IN `chat_stream` that the test defines
//!   (`erlang-compat/flack_migration/test/stand_in/`), with processes inside
//!   the stand-in's code: nobody is killed, a restore that would have to
//!   kill is refused, the stand-in's exact code comes back; a running
//!   `chat_stream` that is not the file on the code path, or lacks the
//!   original's API, is never replaced;
//! - what it reads from a table in gproc 0.8.0's layout when a node goes
//!   down, and whom it would tell (`flack_migration_checks.erl`);
//! - `bin/flack-migration load` against a running node without gproc:
//!   refused, and nothing of ours is left on the node.
//!
//! With `FLACK_ERLANG_HOME` (a build of the original, as for
//! `tests/interop_original.rs`), live: two original nodes and a Rust node
//! (the fault harness's launcher), users posting on every node while
//! `bin/flack-migration load` runs, one numbering per chat across Erlang
//! and Rust senders, a node killed (`left` once for each of its users at
//! the original node's users), then `unload` while users post, and the
//! original's 42 back with nobody disconnected.

mod node_support;
mod support;

#[path = "faults/harness.rs"]
mod harness;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::{COOKIE, Cluster, Event, Kind, User, eventually, original_home};
use node_support::{TestEpmd, erl_available, unique};

fn app_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("erlang-compat/flack_migration")
}

fn erlc(out: &Path, args: &[&str], sources: &[PathBuf]) {
    std::fs::create_dir_all(out).expect("output dir");
    let status = Command::new("erlc")
        .arg("-o")
        .arg(out)
        .args(args)
        .args(sources)
        .status()
        .expect("erlc runs");
    assert!(status.success(), "erlc {args:?} {sources:?} failed");
}

/// Compiles the application (warnings are errors), our `chat_stream`, the
/// checks and the three stand-ins into `dir`.
fn build(dir: &Path) {
    let app = app_dir();
    let mut sources: Vec<PathBuf> = std::fs::read_dir(app.join("src"))
        .expect("src dir")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "erl"))
        .collect();
    sources.push(app.join("test/flack_migration_checks.erl"));
    erlc(&dir.join("ebin"), &["-Werror"], &sources);
    let ours = as_chat_stream(dir, &app.join("replacement/flack_migration_stream.erl"));
    erlc(&dir.join("priv"), &["-Werror"], &[ours]);
    let stand_in = [as_chat_stream(
        dir,
        &app.join("test/stand_in/stand_in_stream.erl"),
    )];
    erlc(&dir.join("stand_in"), &[], &stand_in);
    erlc(&dir.join("different"), &["-DDIFFERENT"], &stand_in);
    erlc(&dir.join("no_leave"), &["-DNO_LEAVE"], &stand_in);
}

/// `source` under the name of the module it stands for: a copy in its own
/// folder of `dir`, named `chat_stream.erl` with its `-module` line
/// rewritten, as bin/flack-migration builds ours.
fn as_chat_stream(dir: &Path, source: &Path) -> PathBuf {
    let text = std::fs::read_to_string(source).expect("readable source");
    let module = source.file_stem().and_then(|s| s.to_str()).expect("a name");
    let line = format!("-module({module}).");
    assert!(text.contains(&line), "{} has no {line}", source.display());
    let folder = dir.join(format!("src-{module}"));
    std::fs::create_dir_all(&folder).expect("source folder");
    let copy = folder.join("chat_stream.erl");
    std::fs::write(&copy, text.replacen(&line, "-module(chat_stream).", 1)).expect("writable");
    copy
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(stem: &str) -> Self {
        let dir = std::env::temp_dir().join(unique(stem));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_code_swap_never_kills_and_restores_the_exact_original() {
    if !erl_available() {
        println!("SKIPPED: erl/erlc not found (install erlang-nox)");
        return;
    }
    let scratch = Scratch::new("fmchecks");
    build(&scratch.0);
    let dir = |name: &str| scratch.0.join(name).display().to_string();
    let eval = format!(
        "flack_migration_checks:run([\"{}\", \"{}\", \"{}\", \"{}\"]).",
        scratch.0.join("priv/chat_stream.beam").display(),
        dir("stand_in"),
        dir("different"),
        dir("no_leave")
    );
    let out = Command::new("erl")
        .args(["-noshell", "-noinput", "-pa"])
        .arg(scratch.0.join("ebin"))
        .args(["-eval", &eval])
        .stdin(Stdio::null())
        .output()
        .expect("erl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}{}", String::from_utf8_lossy(&out.stderr));
    for check in [
        "swap",
        "refuse_other_running_code",
        "refuse_missing_api",
        "lost_members",
    ] {
        assert!(
            text.lines().any(|line| line == format!("ok {check}")),
            "check {check} did not pass:\n{text}"
        );
    }
    assert!(out.status.success(), "{text}");
}

/// Runs `bin/flack-migration COMMAND NODE...` from a hidden node named
/// `ctl`, against an EPMD on `epmd_port`.
async fn flack_migration(
    command: &str,
    nodes: &[&str],
    ctl: &str,
    epmd_port: u16,
) -> (bool, String) {
    let out = tokio::process::Command::new(app_dir().join("bin/flack-migration"))
        .arg(command)
        .args(nodes)
        .env("FLACK_CTL_NODE", ctl)
        .env("FLACK_COOKIE", COOKIE)
        .env("ERL_EPMD_PORT", epmd_port.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("bin/flack-migration runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("flack-migration {command}: {text}");
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_into_a_node_without_gproc_is_refused_and_leaves_nothing() {
    if !erl_available() {
        println!("SKIPPED: erl/erlc not found (install erlang-nox)");
        return;
    }
    let scratch = Scratch::new("fmplain");
    build(&scratch.0);
    let epmd = TestEpmd::start().await;
    let name = unique("plain");
    // A plain node with the stand-in chat_stream loaded, as a flack node
    // has its own; no gproc.
    let mut node = Command::new("erl")
        .args([
            "-noshell",
            "-noinput",
            "-sname",
            &name,
            "-setcookie",
            COOKIE,
        ])
        .arg("-pa")
        .arg(scratch.0.join("stand_in"))
        .args([
            "-eval",
            "{module, chat_stream} = code:ensure_loaded(chat_stream).",
        ])
        .env("ERL_EPMD_PORT", epmd.port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("erl starts");
    let node_name = format!("{name}@{}", short_host());
    let ctl = unique("ctl");
    let mut status = String::new();
    for _ in 0..20 {
        let (ok, text) = flack_migration("status", &[&node_name], &ctl, epmd.port).await;
        if ok && text.contains("stand_in/chat_stream.beam") {
            status = text;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        status.contains("{running,false}"),
        "the plain node answers: {status}"
    );

    let (ok, text) = flack_migration("load", &[&node_name], &ctl, epmd.port).await;
    assert!(!ok, "loading without gproc must fail: {text}");
    assert!(text.contains("start_failed"), "{text}");
    let (ok, text) = flack_migration("status", &[&node_name], &ctl, epmd.port).await;
    assert!(ok, "{text}");
    assert!(
        text.contains("{running,false}")
            && text.contains("stand_in/chat_stream.beam")
            && text.contains("{modules_loaded,[]}"),
        "the node is as it was: {text}"
    );
    let _ = node.kill();
    let _ = node.wait();
}

fn short_host() -> String {
    let out = Command::new("hostname")
        .arg("-s")
        .output()
        .expect("hostname");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

// ---------------------------------------------------------------------
// Live, with the ORIGINAL (FLACK_ERLANG_HOME).

fn skip_original() -> bool {
    if original_home().is_some() && erl_available() {
        return false;
    }
    println!(
        "SKIPPED: set FLACK_ERLANG_HOME to a build of the original Erlang flack \
         (lib/<app>/ebin for flack, gproc, gen_leader, cowboy, ranch, cowlib) to load \
         flack_migration into live original nodes"
    );
    true
}

/// Every message `user` received: (sender, n, sequence), in order.
fn messages(user: &User) -> Vec<(String, u64, u64)> {
    user.log
        .lock()
        .events
        .iter()
        .filter_map(|(_, event)| match event {
            Event::Message { from, n, sequence } => Some((from.clone(), *n, *sequence)),
            _ => None,
        })
        .collect()
}

fn sent(user: &User) -> u64 {
    user.sent_count()
}

/// Waits until every user has received every message every poster sent.
async fn all_delivered(users: &[&User], posters: &[&User]) {
    let missing = |user: &User| -> usize {
        let got: HashSet<(String, u64)> = messages(user)
            .into_iter()
            .map(|(from, n, _)| (from, n))
            .collect();
        posters
            .iter()
            .map(|poster| {
                (1..=sent(poster))
                    .filter(|n| !got.contains(&(poster.id.clone(), *n)))
                    .count()
            })
            .sum()
    };
    let done = eventually(Duration::from_secs(20), || {
        users.iter().all(|user| missing(user) == 0)
    })
    .await;
    assert!(
        done.is_some(),
        "not everything was delivered: missing {:?}",
        users
            .iter()
            .map(|user| (user.name.clone(), missing(user)))
            .collect::<Vec<_>>()
    );
}

/// Each message (sender, n) reached every user exactly once, and carries
/// the same sequence number everywhere. Returns its sequence by message.
fn exactly_once(users: &[&User], posters: &[&User]) -> HashMap<(String, u64), u64> {
    let mut sequence_of: HashMap<(String, u64), u64> = HashMap::new();
    for user in users {
        let got = messages(user);
        let mut seen = HashSet::new();
        for (from, n, sequence) in &got {
            assert!(
                seen.insert((from.clone(), *n)),
                "{} got message {n} of {from} twice",
                user.name
            );
            let first = *sequence_of.entry((from.clone(), *n)).or_insert(*sequence);
            assert_eq!(
                first, *sequence,
                "message {n} of {from} has two sequence numbers"
            );
        }
        for poster in posters {
            for n in 1..=sent(poster) {
                assert!(
                    seen.contains(&(poster.id.clone(), n)),
                    "{} never got message {n} of {}",
                    user.name,
                    poster.name
                );
            }
        }
    }
    sequence_of
}

fn assert_connected(users: &[&User]) {
    for user in users {
        assert!(user.closed().is_none(), "{} was disconnected", user.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_nodes_with_flack_migration_under_an_original_leader() {
    if skip_original() {
        return;
    }
    // alice's node leads: it purges the lost node's users itself.
    migration_scenario([Kind::Original, Kind::Original, Kind::Rust], [0, 1, 2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_nodes_with_flack_migration_under_a_rust_leader() {
    if skip_original() {
        return;
    }
    migration_scenario([Kind::Rust, Kind::Original, Kind::Original], [2, 1, 0]).await;
}

/// The live scenario on a cluster of `kinds` (node 0 leads): alice on
/// original node `at[0]`, carol and dave on original node `at[1]` (killed
/// later), bob on the Rust node `at[2]`.
async fn migration_scenario(kinds: [Kind; 3], at: [usize; 3]) {
    let [erlang_a, erlang_b, rust] = at;
    let mut cluster = Cluster::start(&kinds).await;
    let (leader, _) = cluster.settled(Duration::from_secs(60)).await;
    assert_eq!(leader, cluster.names[0], "the first node leads");
    let ctl = format!("{}@127.0.0.1", unique("ctl"));
    let epmd = cluster.epmd.port;
    let every = Duration::from_millis(40);
    let room = "migration";
    let webs: Vec<std::net::SocketAddr> = cluster.slots.iter().map(|slot| slot.web).collect();
    let web = |i: usize| webs[i];
    let alice = User::join(web(erlang_a), erlang_a, "alice", room, every).await;
    let carol = User::join(web(erlang_b), erlang_b, "carol", room, every).await;
    let dave = User::join(web(erlang_b), erlang_b, "dave", room, every).await;
    let bob = User::join(web(rust), rust, "bob", room, every).await;
    let everyone = [&alice, &carol, &dave, &bob];

    // Before: the original numbers everything its nodes send 42.
    for poster in [&alice, &carol, &bob] {
        poster.post(true);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    for poster in [&alice, &carol, &bob] {
        poster.post(false);
    }
    all_delivered(&everyone, &[&alice, &carol, &bob]).await;
    for (from, n, sequence) in messages(&bob) {
        if from != bob.id {
            assert_eq!(sequence, 42, "before loading, message {n} of {from}");
        }
    }

    // Load into both original nodes while alice, carol and bob post.
    for poster in [&alice, &carol, &bob] {
        poster.post(true);
    }
    let names = cluster.names.clone();
    let nodes = [names[erlang_a].as_str(), names[erlang_b].as_str()];
    let (ok, text) = flack_migration("load", &nodes, &ctl, epmd).await;
    assert!(ok, "load: {text}");
    assert_eq!(
        text.matches("{installed,true}").count(),
        2,
        "installed on both: {text}"
    );
    // What each had sent before the load finished may still be numbered
    // either way; what they send from here on is numbered by the cluster.
    let after_load: HashMap<String, u64> = [&alice, &carol, &bob]
        .iter()
        .map(|p| (p.id.clone(), sent(p)))
        .collect();
    tokio::time::sleep(Duration::from_millis(600)).await;
    for poster in [&alice, &carol, &bob] {
        poster.post(false);
    }
    all_delivered(&everyone, &[&alice, &carol, &bob]).await;
    assert_connected(&everyone);
    let sequence_of = exactly_once(&everyone, &[&alice, &carol, &bob]);
    let numbered: Vec<(&(String, u64), &u64)> = sequence_of
        .iter()
        .filter(|((from, n), _)| *n > after_load[from])
        .collect();
    assert!(numbered.len() >= 15, "enough posts after the load");
    let distinct: HashSet<u64> = numbered.iter().map(|(_, s)| **s).collect();
    assert_eq!(
        distinct.len(),
        numbered.len(),
        "one number per message across Erlang and Rust senders: {numbered:?}"
    );
    for poster in [&alice, &carol, &bob] {
        let mut own: Vec<(u64, u64)> = numbered
            .iter()
            .filter(|((from, _), _)| *from == poster.id)
            .map(|((_, n), s)| (*n, **s))
            .collect();
        own.sort_unstable();
        assert!(
            own.windows(2).all(|w| w[0].1 < w[1].1),
            "{}'s numbers increase: {own:?}",
            poster.name
        );
    }

    // One sender at a time: every user sees one strictly increasing
    // sequence across the Erlang and Rust senders.
    let mark: HashMap<&str, usize> = everyone
        .iter()
        .map(|u| (u.name.as_str(), messages(u).len()))
        .collect();
    for _round in 0..2 {
        for poster in [&alice, &bob, &carol, &dave] {
            poster.post(true);
            tokio::time::sleep(Duration::from_millis(150)).await;
            poster.post(false);
            all_delivered(&everyone, &[&alice, &carol, &dave, &bob]).await;
        }
    }
    let mut last_sequence = 0;
    for user in everyone {
        let got = messages(user);
        let sequences: Vec<u64> = got[mark[user.name.as_str()]..]
            .iter()
            .map(|(_, _, s)| *s)
            .collect();
        assert!(sequences.len() >= 8, "{}: {sequences:?}", user.name);
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]),
            "{} sees one increasing sequence: {sequences:?}",
            user.name
        );
        last_sequence = last_sequence.max(*sequences.last().unwrap_or(&0));
    }
    assert!(!sequence_of.values().all(|s| *s == 42));

    // A new chat opened on an original node: flack_migration registers its
    // counter, and the Rust node numbers from it too.
    let mut gil = support::Client::login(web(erlang_a), "gil").await;
    let mut hal = support::Client::login(web(rust), "hal").await;
    let (_, gil_joined) = gil.join("fresh").await;
    assert_eq!(gil_joined["sequence"], 1, "a new chat starts at 1");
    let (_, hal_joined) = hal.join("fresh").await;
    assert_eq!(hal_joined["sequence"], 2);
    assert_eq!(gil.expect("joined").await["sequence"], 2);
    for (turn, expected) in [(0, 3), (1, 4), (0, 5)] {
        let text = format!("turn {expected}");
        if turn == 0 {
            gil.post("fresh", &text).await;
        } else {
            hal.post("fresh", &text).await;
        }
        for client in [&mut gil, &mut hal] {
            let message = client.expect("chat_message").await;
            assert_eq!(message["message"], text.as_str());
            assert_eq!(message["sequence"], expected, "{message}");
        }
    }
    let (ok, text) = flack_migration("status", &nodes[..1], &ctl, epmd).await;
    assert!(ok && text.contains("{counters_owned,1}"), "{text}");
    drop((gil, hal));

    // A user joins on an original node: its `joined` is numbered after
    // everything before it (seen by a raw client, which shows sequences).
    let mut erin = support::Client::login(web(erlang_a), "erin").await;
    let (_, erin_joined) = erin.join(room).await;
    let joined_sequence = erin_joined["sequence"].as_u64().expect("sequence");
    assert!(
        joined_sequence > last_sequence,
        "joined {joined_sequence} after {last_sequence}"
    );

    // A session on the second original node is killed without a goodbye
    // (its node stays up): nobody in the original would tell the chat; the
    // first original node's flack_migration sees the process end while it
    // is still registered in the room, and tells alice and erin once.
    let ivy = User::join(web(erlang_b), erlang_b, "ivy", room, every).await;
    let ivy_id = ivy.id.clone();
    // The watch's view of remote members refreshes every second
    // (refresh_ms): ivy must be in it before her session goes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed = cluster
        .rpc(
            erlang_b,
            &format!(
                "[exit(P, kill) || P <- gproc:lookup_pids({{p,g,<<\"{room}\">>}}), \
                 node(P) =:= node(), \
                 proplists:get_value(user_id, gproc:get_attributes({{n,g,P}}, P)) \
                 =:= <<\"{ivy_id}\">>]"
            ),
        )
        .await;
    assert_eq!(killed, "[true]", "ivy's session is killed");
    let ivy_left = |user: &User| {
        user.lefts()
            .into_iter()
            .filter(|(_, id)| *id == ivy_id)
            .count()
    };
    let told = eventually(Duration::from_secs(20), || ivy_left(&alice) >= 1).await;
    assert!(told.is_some(), "alice hears that ivy left");
    let mut erin_ivy = Vec::new();
    while erin_ivy.is_empty() {
        let record = erin.expect_any().await;
        if record["record"] == "left" {
            erin_ivy.push(record);
        }
    }
    assert_eq!(erin_ivy[0]["user_id"], ivy_id.as_str());
    assert!(erin_ivy[0]["sequence"].as_u64() > Some(joined_sequence));
    drop(ivy);

    // The second original node dies with carol and dave: alice and erin
    // (on the first original node) hear that they left, once
    // each; bob hears it from his Rust node.
    let lost: HashSet<String> = [carol.id.clone(), dave.id.clone()].into();
    drop(carol);
    drop(dave);
    cluster.kill(erlang_b);
    let heard = |user: &User| {
        user.lefts()
            .into_iter()
            .filter(|(_, id)| lost.contains(id))
            .count()
    };
    let told = eventually(Duration::from_secs(30), || {
        heard(&alice) >= 2 && heard(&bob) >= 2
    })
    .await;
    assert!(
        told.is_some(),
        "alice heard {} and bob {} of 2 lefts",
        heard(&alice),
        heard(&bob)
    );
    let mut erin_lefts = Vec::new();
    while erin_lefts.len() < 2 {
        let record = erin.expect_any().await;
        if record["record"] == "left" {
            erin_lefts.push(record);
        }
    }
    for left in &erin_lefts {
        let sequence = left["sequence"].as_u64().expect("sequence");
        assert!(sequence > joined_sequence, "left numbered after: {left}");
        assert!(lost.contains(left["user_id"].as_str().unwrap_or("")));
    }
    assert!(erin_lefts[0]["sequence"].as_u64() < erin_lefts[1]["sequence"].as_u64());
    // Nothing more arrives for them (a second `left` would by now).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(heard(&alice), 2, "alice: {:?}", alice.lefts());
    assert_eq!(ivy_left(&alice), 1, "alice: {:?}", alice.lefts());
    println!(
        "bob (on the Rust node) heard ivy leave {} time(s)",
        ivy_left(&bob)
    );
    assert!(ivy_left(&bob) <= 1, "bob: {:?}", bob.lefts());
    assert_eq!(heard(&bob), 2, "bob: {:?}", bob.lefts());
    let survivors = [&alice, &bob];
    assert_connected(&survivors);

    // Unload from the surviving original node while alice and bob post.
    let before_unload: HashMap<String, u64> =
        survivors.iter().map(|p| (p.id.clone(), sent(p))).collect();
    for poster in survivors {
        poster.post(true);
    }
    let (ok, text) = flack_migration("unload", &nodes[..1], &ctl, epmd).await;
    assert!(ok, "unload: {text}");
    let after_unload: HashMap<String, u64> =
        survivors.iter().map(|p| (p.id.clone(), sent(p))).collect();
    tokio::time::sleep(Duration::from_millis(600)).await;
    for poster in survivors {
        poster.post(false);
    }
    all_delivered(&survivors, &survivors).await;
    assert_connected(&survivors);
    let sequence_of = exactly_once(&survivors, &survivors);
    // The original's behaviour is back: alice's messages say 42 again.
    let alice_after: Vec<u64> = sequence_of
        .iter()
        .filter(|((from, n), _)| *from == alice.id && *n > after_unload[&alice.id])
        .map(|(_, s)| *s)
        .collect();
    assert!(!alice_after.is_empty());
    assert!(
        alice_after.iter().all(|s| *s == 42),
        "after unloading: {alice_after:?}"
    );
    assert!(sent(&alice) > before_unload[&alice.id]);
    let (ok, text) = flack_migration("status", &nodes[..1], &ctl, epmd).await;
    assert!(ok, "{text}");
    assert!(
        text.contains("{running,false}")
            && text.contains("lib/flack/ebin/chat_stream.beam")
            && text.contains("{modules_loaded,[]}"),
        "the original node is as it was: {text}"
    );
    let started = Instant::now();
    let erin_alive = erin.expect_any().await;
    assert!(
        started.elapsed() < support::PATIENCE,
        "erin is still connected: {erin_alive}"
    );
}
