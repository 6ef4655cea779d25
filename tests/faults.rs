//! Fault injection: `kill -9` under load, restarts with and without the
//! incarnation file, network partitions, a paused node, a lossy and
//! throttled path, and a soak with churn, on clusters of `flack foreground`
//! processes (and, with `FLACK_ERLANG_HOME`, ORIGINAL Erlang flack nodes in
//! the mix), each node on its own loopback address (`127.B.C.k`, `-name
//! fK@127.B.C.k`, `inet_dist_use_interface` and the outgoing connections'
//! source bound to it), with `net_ticktime` 4.
//!
//! Every scenario runs websocket users on every node, all in one room, each
//! posting a numbered message every 100 ms, and checks per user exactly what
//! arrived (see [`harness::account`] for the rule of what must arrive):
//! nothing twice, each sender's messages in order, every acknowledged
//! message of a surviving user at every surviving member outside the fault
//! windows; a `left` for every user of a dead node at every surviving member
//! of a Rust node; after the dust settles one leader followed by all, the
//! same registry size everywhere and a chat_state on every node listing
//! every connected user exactly once.
//!
//! Partitions and the slow path use nftables (a table of our own, removed
//! when the test ends, also on failure); without `nft` (or root) they say
//! SKIPPED and pass. `FLACK_FAULTS_LONG=1` runs longer holds and soak.

mod node_support;
mod support;

#[path = "faults/harness.rs"]
mod harness;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use harness::{
    Cluster, Firewall, Kind, TICK, User, account, check_chat_states, eventually, log_errors, long,
    original_home, rss_kb,
};

const ROOM: &str = "faults";
const EVERY: Duration = Duration::from_millis(100);
const SETTLE: Duration = Duration::from_secs(40);

fn skip_original() -> bool {
    if original_home().is_some() && harness::erl_available() {
        return false;
    }
    println!(
        "SKIPPED: set FLACK_ERLANG_HOME to a build of the original Erlang flack to run \
         the mixed-cluster fault scenarios"
    );
    true
}

/// `per_node` users on node `i`, joined and posting.
async fn users_on(cluster: &Cluster, i: usize, per_node: usize, tag: &str) -> Vec<User> {
    let mut users = Vec::new();
    for u in 0..per_node {
        let user = User::join(
            cluster.slots[i].web,
            i,
            &format!("{tag}n{i}u{u}"),
            ROOM,
            EVERY,
        )
        .await;
        user.post(true);
        users.push(user);
    }
    users
}

/// Waits until every surviving member on a Rust node has heard `left` for
/// every user of `dead` (users on Erlang nodes hear nothing: the original
/// removes a dead node's users silently). Returns the time from `since`
/// until the last of those `left`s.
async fn lefts_heard(
    cluster: &Cluster,
    users: &[User],
    dead: &[usize],
    since: Instant,
) -> Duration {
    let alive: Vec<usize> = (0..cluster.slots.len())
        .filter(|i| !dead.contains(i))
        .collect();
    lefts_heard_by(cluster, users, dead, &alive, since).await
}

/// Like [`lefts_heard`], for the members on the nodes `listening` only.
async fn lefts_heard_by(
    cluster: &Cluster,
    users: &[User],
    dead: &[usize],
    listening: &[usize],
    since: Instant,
) -> Duration {
    let gone: HashSet<String> = users
        .iter()
        .filter(|u| {
            dead.contains(&u.node)
                && u.joined_at < since
                && u.closed().is_none_or(|closed| closed >= since)
        })
        .map(|u| u.id.clone())
        .collect();
    let listeners: Vec<&User> = users
        .iter()
        .filter(|u| {
            listening.contains(&u.node)
                && u.joined_at < since
                && u.closed().is_none()
                && cluster.slots[u.node].kind == Kind::Rust
        })
        .collect();
    let heard = |u: &User| -> Option<Instant> {
        let lefts = u.lefts();
        let mut last = since;
        for id in &gone {
            let t = lefts.iter().find(|(t, l)| l == id && *t >= since)?.0;
            last = last.max(t);
        }
        Some(last)
    };
    let took = eventually(Duration::from_secs(30), || {
        listeners.iter().all(|u| heard(u).is_some())
    })
    .await;
    if took.is_none() {
        let missing: Vec<(String, Vec<String>)> = listeners
            .iter()
            .map(|u| {
                let lefts = u.lefts();
                let unheard = gone
                    .iter()
                    .filter(|id| !lefts.iter().any(|(t, l)| l == *id && *t >= since))
                    .map(|id| name_of(users, id))
                    .collect();
                (u.name.clone(), unheard)
            })
            .filter(|(_, unheard): &(String, Vec<String>)| !unheard.is_empty())
            .collect();
        panic!(
            "not every surviving member heard `left` for the users of node(s) {dead:?}: {missing:?}"
        );
    }
    // Members on original nodes: what they heard (the original says
    // nothing when a node dies).
    let erlang: Vec<&User> = users
        .iter()
        .filter(|u| {
            listening.contains(&u.node)
                && u.joined_at < since
                && u.closed().is_none()
                && cluster.slots[u.node].kind == Kind::Original
        })
        .collect();
    if !erlang.is_empty() {
        let heard_lefts: usize = erlang
            .iter()
            .map(|u| {
                u.lefts()
                    .iter()
                    .filter(|(t, id)| *t >= since && gone.contains(id))
                    .count()
            })
            .sum();
        println!(
            "  members on original nodes heard {heard_lefts} of {} `left`s for the users of {dead:?}",
            erlang.len() * gone.len()
        );
    }
    listeners
        .iter()
        .filter_map(|u| heard(u))
        .max()
        .map_or(Duration::ZERO, |t| t - since)
}

/// Waits (up to 10 s) until every connected user on a Rust node lists
/// exactly the connected users (of `users`; probes are left out) from its
/// chat_state and the `joined` and `left` records after it, nobody twice;
/// returns the users whose lists still differ, with how.
async fn member_lists(
    cluster: &Cluster,
    users: &[User],
    connected: &HashMap<String, String>,
) -> Vec<String> {
    let ours: HashSet<&str> = users.iter().map(|u| u.id.as_str()).collect();
    let wanted: HashSet<&str> = connected.keys().map(String::as_str).collect();
    let differences = || -> Vec<String> {
        users
            .iter()
            .filter(|u| u.closed().is_none() && cluster.slots[u.node].kind == Kind::Rust)
            .filter_map(|u| {
                let (members, twice) = u.member_list();
                let members: HashSet<&str> = members
                    .iter()
                    .map(String::as_str)
                    .filter(|id| ours.contains(id))
                    .collect();
                let twice: Vec<String> = twice
                    .iter()
                    .filter(|id| ours.contains(id.as_str()))
                    .map(|id| name_of(users, id))
                    .collect();
                let missing: Vec<String> = wanted
                    .difference(&members)
                    .map(|id| name_of(users, id))
                    .collect();
                let extra: Vec<String> = members
                    .difference(&wanted)
                    .map(|id| name_of(users, id))
                    .collect();
                (!missing.is_empty() || !extra.is_empty() || !twice.is_empty()).then(|| {
                    format!(
                        "{}: missing {missing:?}, extra {extra:?}, joined twice {twice:?}",
                        u.name
                    )
                })
            })
            .collect()
    };
    eventually(Duration::from_secs(10), || differences().is_empty()).await;
    differences()
}

/// The users still connected: user_id → name.
fn connected(users: &[User]) -> HashMap<String, String> {
    users
        .iter()
        .filter(|u| u.closed().is_none())
        .map(|u| (u.id.clone(), u.name.clone()))
        .collect()
}

fn name_of(users: &[User], id: &str) -> String {
    users
        .iter()
        .find(|u| u.id == id)
        .map_or_else(|| id.to_owned(), |u| u.name.clone())
}

/// With original (Erlang) nodes in the cluster, `global` on them is whole
/// after a fault: `global:sync()` returns and nobody was disconnected
/// (the Rust nodes run `global` too; see `Cluster::global_problems`).
async fn assert_global_whole(cluster: &Cluster, what: &str) {
    if !cluster.slots.iter().any(|slot| slot.kind == Kind::Original) {
        return;
    }
    let problems = cluster.global_problems().await;
    assert!(problems.is_empty(), "{what}: global: {problems:#?}");
    println!("{what}: global:sync() returned ok on every original node, which lists every node");
}

/// Stops the load, lets it drain, and accounts for it with `required`.
async fn finish(
    what: &str,
    cluster: &Cluster,
    users: &[User],
    required: impl Fn(usize, usize, Instant) -> bool,
) {
    for user in users {
        user.post(false);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all: Vec<&User> = users.iter().collect();
    let accounting = account(&all, required);
    accounting.assert_clean(what);
    println!(
        "{what}: sequence numbers: {} events numbered locally (all nodes), {} numbers \
         carried by two different messages",
        harness::locally_numbered(cluster),
        harness::repeated_sequences(&all)
    );
    let expected = connected(users);
    check_chat_states(cluster, ROOM, &expected).await;
    let (leader, _) = cluster.settled(SETTLE).await;
    println!(
        "{what}: chat_state on every node lists the {} connected users once; leader {leader}",
        expected.len()
    );
}

/// Scenario 1: kill -9 of a follower, of the leader, of two nodes at once,
/// under steady traffic; each comes back (with its incarnation file, and
/// without) while traffic goes on.
async fn kills_and_restarts(kinds: &[Kind], label: &str) {
    let mut cluster = Cluster::start(kinds).await;
    let (leader, took) = cluster.settled(SETTLE).await;
    println!("{label}: first election settled in {took:?}, leader {leader}");
    let mut users = Vec::new();
    for i in 0..kinds.len() {
        users.extend(users_on(&cluster, i, 3, "a").await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let leader_index = |cluster: &Cluster, leader: &str| {
        cluster
            .names
            .iter()
            .position(|n| n == leader)
            .expect("leader is a candidate")
    };
    let mut round = 0;
    for (what, keep_incarnation) in [
        ("a follower", true),
        ("the leader", false),
        ("two nodes at once", true),
    ] {
        round += 1;
        let (leader, _) = cluster.settled(SETTLE).await;
        let l = leader_index(&cluster, &leader);
        let victims: Vec<usize> = match what {
            "a follower" => vec![(l + 2) % kinds.len()],
            "the leader" => vec![l],
            _ => vec![l, (l + 1) % kinds.len()],
        };
        let killed_at = Instant::now();
        for &v in &victims {
            cluster.kill(v);
        }
        let heard = lefts_heard(&cluster, &users, &victims, killed_at).await;
        let (new_leader, settled) = cluster.settled(SETTLE).await;
        println!(
            "{label}: killed {what} {victims:?}: every surviving Rust member heard `left` for \
             its users after {heard:?}; settled under {new_leader} after {:?}",
            killed_at.elapsed().max(settled)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let restarted_at = Instant::now();
        for &v in &victims {
            if !keep_incarnation {
                cluster.forget_incarnation(v);
            }
            cluster.boot(v).await;
        }
        let (after, _) = cluster.settled(SETTLE).await;
        println!(
            "{label}: restarted {victims:?} ({} incarnation file): back under {after} after {:?}",
            if keep_incarnation {
                "with its"
            } else {
                "without its"
            },
            restarted_at.elapsed()
        );
        assert_global_whole(&cluster, &format!("{label}: restarted {victims:?}")).await;
        for &v in &victims {
            users.extend(users_on(&cluster, v, 2, &format!("r{round}")).await);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    finish(label, &cluster, &users, |_, _, _| true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_cluster_kills_and_restarts_under_load() {
    kills_and_restarts(&[Kind::Rust, Kind::Rust, Kind::Rust], "rust kills").await;
}

/// Waits for the cluster to settle after `since` (a heal or a resume),
/// watching for ORIGINAL nodes that halt meanwhile: an original node that
/// has to surrender to the merged leader crashes (gproc 0.8.0's
/// surrendered_1 fails with function_clause in mk_broadcast_insert_vals on
/// its own `n` registrations) until its supervisor gives up and the VM
/// halts. Its users lose their connection; it is started again, as an
/// operator (or systemd) would, with three new users. Returns the leader,
/// the time from `since`, and the nodes that halted.
async fn settle_reaping(
    cluster: &mut Cluster,
    users: &mut Vec<User>,
    since: Instant,
    label: &str,
    tag: &str,
) -> (String, Duration, Vec<usize>) {
    let mut crashed = Vec::new();
    let mut last_views = String::new();
    while since.elapsed() < SETTLE {
        let exited = cluster.reap();
        for &i in &exited {
            assert_eq!(cluster.slots[i].kind, Kind::Original, "a Rust node exited");
            println!(
                "{label}: ORIGINAL node {i} halted ({:?} after the heal or resume); \
                 its users were disconnected; restarting it",
                since.elapsed()
            );
            cluster.boot(i).await;
            users.extend(users_on(cluster, i, 3, &format!("{tag}{i}")).await);
        }
        crashed.extend(exited);
        let settled = cluster.try_settled(Duration::from_secs(2)).await;
        if let Err(views) = &settled {
            last_views = views.clone();
        }
        if let Ok((leader, _)) = settled {
            let took = since.elapsed();
            // Give a surrendering original node time to fail.
            tokio::time::sleep(Duration::from_secs(3)).await;
            if cluster.reap_pending() {
                continue;
            }
            return (leader, took, crashed);
        }
    }
    panic!(
        "{label}: the cluster did not settle after {:?}: {last_views}",
        since.elapsed()
    );
}

/// A fault window: from, to, and the pairs of nodes cut apart in it.
type Window = (Instant, Instant, Vec<(usize, usize)>);

/// Scenario 2: partitions of a 3-node cluster, 2|1 (the leader on the
/// majority side), 2|1 (the leader alone), 1|1|1, each held past the tick
/// timeout and healed.
async fn partitions(kinds: &[Kind], label: &str) {
    let Some(firewall) = Firewall::new() else {
        return;
    };
    let hold = Duration::from_secs(if long() { 8 * TICK } else { 3 * TICK });
    let mut cluster = Cluster::start(kinds).await;
    let (leader, _) = cluster.settled(SETTLE).await;
    println!("{label}: leader {leader}");
    let mut users = Vec::new();
    for i in 0..kinds.len() {
        users.extend(users_on(&cluster, i, 3, "a").await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // (from, to, node pairs cut apart) of every fault window.
    let mut windows: Vec<Window> = Vec::new();
    for (what, sides) in [
        (
            "2|1, the leader's side the larger",
            vec![vec![0, 1], vec![2]],
        ),
        ("2|1, the leader alone", vec![vec![0], vec![1, 2]]),
        ("1|1|1", vec![vec![0], vec![1], vec![2]]),
    ] {
        let (leader, _) = cluster.settled(SETTLE).await;
        let mut pairs = Vec::new();
        for (a, side) in sides.iter().enumerate() {
            for other in &sides[a + 1..] {
                for &x in side {
                    for &y in other {
                        pairs.push((x, y));
                    }
                }
            }
        }
        let cut_at = Instant::now();
        for &(x, y) in &pairs {
            firewall.cut(cluster.slots[x].ip, cluster.slots[y].ip);
        }
        let mut heard = Vec::new();
        for side in &sides {
            let others: Vec<usize> = (0..kinds.len()).filter(|i| !side.contains(i)).collect();
            heard.push(lefts_heard_by(&cluster, &users, &others, side, cut_at).await);
        }
        tokio::time::sleep(hold.saturating_sub(cut_at.elapsed())).await;
        let mut views = Vec::new();
        for i in 0..kinds.len() {
            let view = cluster.view(i).await;
            views.push(format!("{i}: {} of {:?}", view.role, view.leader));
        }
        println!(
            "{label}: {what} (leader was {leader}): each side heard `left` for the other \
             side's users after {heard:?}; during the split: {views:?}"
        );
        let healed_at = Instant::now();
        firewall.heal();
        let (after, took, _) = settle_reaping(
            &mut cluster,
            &mut users,
            healed_at,
            label,
            &format!("c{}", windows.len()),
        )
        .await;
        let settled_at = Instant::now();
        println!(
            "{label}: {what} healed: one leader ({after}), followed by all, same registry size, \
             after {took:?}"
        );
        assert_global_whole(&cluster, &format!("{label}: {what} healed")).await;
        let connected = connected(&users);
        if !kinds.contains(&Kind::Original) {
            assert_eq!(connected.len(), users.len(), "nobody lost the connection");
        }
        check_chat_states(&cluster, ROOM, &connected).await;
        // Members told `left` for the other side's users during the split
        // are told `joined` for them once the registries merge, and nobody
        // twice: every member's list is the connected users again (members
        // on original nodes are told neither).
        let wrong = member_lists(&cluster, &users, &connected).await;
        println!(
            "{label}: {what}: member lists (chat_state, joined, left) after the heal that \
             differ from the connected users: {} {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(3)]
        );
        if !kinds.contains(&Kind::Original) {
            assert!(
                wrong.is_empty(),
                "{label}: {what}: member lists: {wrong:#?}"
            );
        }
        // What the members were told about the other side once healed.
        let rejoined: usize = users
            .iter()
            .map(|u| {
                u.log
                    .lock()
                    .events
                    .iter()
                    .filter(|(t, e)| *t >= healed_at && matches!(e, harness::Event::Joined(_)))
                    .count()
            })
            .sum();
        println!(
            "{label}: {what}: `joined` records received after the heal, all users together: \
             {rejoined} (probes included)"
        );
        windows.push((
            cut_at - Duration::from_secs(1),
            settled_at + GRACE_AFTER_HEAL,
            pairs,
        ));
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    finish(label, &cluster, &users, |s, r, at| {
        !windows.iter().any(|(from, to, pairs)| {
            at >= *from && at <= *to && (pairs.contains(&(s, r)) || pairs.contains(&(r, s)))
        })
    })
    .await;
    // Outside the splits (and the settling after each heal) the cluster is
    // connected: one counter, no number handed out twice.
    let all: Vec<&User> = users.iter().collect();
    let repeated = harness::repeated_sequences_posted(&all, |at| {
        !windows.iter().any(|(from, to, _)| at >= *from && at <= *to)
    });
    println!(
        "{label}: numbers carried by two different messages posted while the cluster was \
         connected: {repeated}"
    );
    if !kinds.contains(&Kind::Original) {
        assert_eq!(
            repeated, 0,
            "{label}: sequence numbers repeated outside the splits"
        );
    }
    drop(firewall);
}

/// Messages posted this long after a healed cluster settled must reach
/// everyone again.
const GRACE_AFTER_HEAL: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_cluster_partitions_heal() {
    partitions(&[Kind::Rust, Kind::Rust, Kind::Rust], "rust partitions").await;
}

/// Scenario 3: a node paused (SIGSTOP) for longer than the tick timeout,
/// then resumed: first a follower, then the leader.
async fn pauses(kinds: &[Kind], label: &str) {
    let hold = Duration::from_secs(if long() { 8 * TICK } else { 3 * TICK });
    let mut cluster = Cluster::start(kinds).await;
    cluster.settled(SETTLE).await;
    let mut users = Vec::new();
    for i in 0..kinds.len() {
        users.extend(users_on(&cluster, i, 3, "a").await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut windows: Vec<(Instant, Instant, usize)> = Vec::new();
    let mut merge_gaps: Vec<(Instant, Instant)> = Vec::new();
    for what in ["a follower", "the leader"] {
        let (leader, _) = cluster.settled(SETTLE).await;
        let l = cluster
            .names
            .iter()
            .position(|n| *n == leader)
            .expect("leader");
        let victim = if what == "the leader" {
            l
        } else {
            (l + 2) % kinds.len()
        };
        let paused_at = Instant::now();
        cluster.pause(victim);
        let heard = lefts_heard(&cluster, &users, &[victim], paused_at).await;
        let (moved_on, took) = cluster.settled(SETTLE).await;
        println!(
            "{label}: paused {what} ({victim}): the others heard `left` for its users after \
             {heard:?}, settled under {moved_on} after {:?}",
            paused_at.elapsed().saturating_sub(took).max(heard)
        );
        tokio::time::sleep(hold.saturating_sub(paused_at.elapsed())).await;
        let resumed_at = Instant::now();
        cluster.resume(victim);
        let (after, took, crashed) = settle_reaping(
            &mut cluster,
            &mut users,
            resumed_at,
            label,
            &format!("p{}", windows.len()),
        )
        .await;
        let view = cluster.view(victim).await;
        println!(
            "{label}: resumed {victim} after {:?}: settled under {after} after {took:?}; it is \
             {} of {:?}",
            resumed_at - paused_at,
            view.role,
            view.leader
        );
        if what == "a follower" && crashed.is_empty() {
            assert_eq!(after, moved_on, "the paused node follows the leader");
            assert_ne!(
                view.role, "leader",
                "the paused node comes back as a follower"
            );
        }
        // A paused leader resumes believing it leads; meeting the leader
        // elected without it makes gen_leader elect again, and the first
        // candidate of the list wins (as after a partition heals).
        let connected = connected(&users);
        check_chat_states(&cluster, ROOM, &connected).await;
        windows.push((
            paused_at - Duration::from_secs(1),
            Instant::now() + GRACE_AFTER_HEAL,
            victim,
        ));
        if what == "the leader" {
            // The merge dropped the healthy nodes' users for a while: their
            // members were told `left` (and `joined` once they were back).
            let healthy: HashSet<&str> = users
                .iter()
                .filter(|u| u.node != victim && u.closed().is_none())
                .map(|u| u.id.as_str())
                .collect();
            let dropped: usize = users
                .iter()
                .filter(|u| u.node != victim)
                .map(|u| {
                    u.lefts()
                        .iter()
                        .filter(|(t, id)| *t >= resumed_at && healthy.contains(id.as_str()))
                        .count()
                })
                .sum();
            println!(
                "{label}: `left` records for users of nodes that were never paused, received \
                 by their members on those nodes while the resumed leader took over (the merge \
                 dropped them for a while): {dropped}"
            );
            // Known issue: when the resumed leader wins the merge, the
            // followers take its snapshot, which lacks the users it purged
            // while paused (theirs included) until each follower's
            // add_globals is broadcast back; a message between two healthy
            // nodes posted in that gap can miss the other node's members.
            // Counted and reported, not required (README, Operating a mixed
            // cluster).
            merge_gaps.push((
                resumed_at - Duration::from_secs(1),
                Instant::now() + GRACE_AFTER_HEAL,
            ));
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let excused = |s: usize, r: usize, at: Instant| {
        windows
            .iter()
            .any(|(from, to, v)| at >= *from && at <= *to && s != r && (s == *v || r == *v))
    };
    // Stop and drain first: an account taken while messages fly counts
    // the newest ones as missed.
    for user in &users {
        user.post(false);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all: Vec<&User> = users.iter().collect();
    let strict = account(&all, |s, r, at| !excused(s, r, at));
    println!(
        "{label}: deliveries missed during the merge after the paused leader resumed, \
         other than across nodes to or from its users (within a node, or between the \
         others): {} {:?}",
        strict.lost.len(),
        &strict.lost[..strict.lost.len().min(6)]
    );
    finish(label, &cluster, &users, |s, r, at| {
        !excused(s, r, at) && !merge_gaps.iter().any(|(from, to)| at >= *from && at <= *to)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_cluster_paused_node_comes_back_as_follower() {
    pauses(&[Kind::Rust, Kind::Rust, Kind::Rust], "rust pauses").await;
}

/// Latencies (post to receipt) of the deliveries from senders on `from`
/// to receivers on `to` of messages posted in `window`: (p50, p99, max).
fn latencies(
    users: &[User],
    from: usize,
    to: usize,
    window: (Instant, Instant),
) -> (Duration, Duration, Duration) {
    let mut all = Vec::new();
    for sender in users.iter().filter(|u| u.node == from) {
        let sent: std::collections::HashMap<u64, Instant> =
            sender.log.lock().sent.iter().copied().collect();
        for receiver in users.iter().filter(|u| u.node == to && u.id != sender.id) {
            for (t, event) in &receiver.log.lock().events {
                if let harness::Event::Message { from, n, .. } = event
                    && *from == sender.id
                    && let Some(at) = sent.get(n)
                    && *at >= window.0
                    && *at <= window.1
                {
                    all.push(*t - *at);
                }
            }
        }
    }
    all.sort();
    if all.is_empty() {
        return Default::default();
    }
    let at = |q: f64| all[((all.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99), all[all.len() - 1])
}

/// Scenario 4: a slow, lossy path between two nodes (nftables: random loss
/// and a rate limit; this sandbox's kernel has no netem), below the tick
/// timeout: deliveries slow down, none is lost or duplicated, nobody is
/// declared down.
async fn slow_path(kinds: &[Kind], label: &str, loss: u32, kbytes: u32) {
    let Some(firewall) = Firewall::new() else {
        return;
    };
    let hold = Duration::from_secs(if long() { 60 } else { 15 });
    let cluster = Cluster::start(kinds).await;
    cluster.settled(SETTLE).await;
    let mut users = Vec::new();
    for i in 0..kinds.len() {
        users.extend(users_on(&cluster, i, 3, "a").await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = (Instant::now() - Duration::from_secs(2), Instant::now());
    let from = Instant::now();
    firewall.degrade(cluster.slots[0].ip, cluster.slots[1].ip, loss, kbytes);
    let mut views_down = 0;
    while from.elapsed() < hold {
        for i in 0..kinds.len() {
            if cluster.slots[i].kind == Kind::Rust
                && cluster.view(i).await.down.is_some_and(|d| !d.is_empty())
            {
                views_down += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let window = (from, Instant::now() - Duration::from_secs(1));
    firewall.heal();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let lefts: usize = users.iter().map(|u| u.lefts().len()).sum();
    println!(
        "{label}: {loss}% loss and {kbytes} kB/s between nodes 0 and 1 for {hold:?}: \
         latency 0->1 (p50, p99, max) {:?} (before: {:?}), 0->2 {:?}, 1->0 {:?}; \
         a node seen down {views_down} times; `left`s {lefts}",
        latencies(&users, 0, 1, window),
        latencies(&users, 0, 1, before),
        latencies(&users, 0, 2, window),
        latencies(&users, 1, 0, window),
    );
    assert_eq!(
        views_down, 0,
        "a node was declared down below the tick timeout"
    );
    assert_eq!(lefts, 0, "a member was said to leave");
    finish(label, &cluster, &users, |_, _, _| true).await;
    drop(firewall);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_cluster_slow_lossy_path() {
    slow_path(
        &[Kind::Rust, Kind::Rust, Kind::Rust],
        "rust slow path",
        5,
        64,
    )
    .await;
}

/// A user that connects, joins `room`, posts three messages, sees them,
/// leaves and says goodbye.
async fn churn_once(web: std::net::SocketAddr, name: String, room: String) {
    let (name, room) = (name.as_str(), room.as_str());
    use serde_json::json;
    let mut client = support::Client::login(web, name).await;
    client
        .send(json!({"record": "join_chat", "chat_name": room}))
        .await;
    loop {
        let value = client.expect_any().await;
        if value["record"] == "joined" && value["user_id"] == client.user_id.as_str() {
            break;
        }
    }
    for n in 0..3 {
        client.post(room, &format!("churn {n}")).await;
    }
    let mut seen = 0;
    while seen < 3 {
        let value = client.expect_any().await;
        if value["record"] == "chat_message" && value["user_id"] == client.user_id.as_str() {
            seen += 1;
        }
    }
    client
        .send(json!({"record": "leave_chat", "chat_name": room}))
        .await;
    loop {
        let value = client.expect_any().await;
        if value["record"] == "left" && value["user_id"] == client.user_id.as_str() {
            break;
        }
    }
    client.send(json!({"record": "client_goodbye"})).await;
    loop {
        let value = client.expect_any().await;
        if value["record"] == "server_goodbye" {
            break;
        }
    }
}

/// Scenario 5: a soak of a 3-node Rust cluster: steady traffic, churn
/// (connect, join, post, leave, disconnect) and node restarts; RSS of
/// every node flat after warm-up, the registry back to its baseline once
/// everyone left, no error in any node's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_cluster_soak_with_churn_and_a_restart() {
    soak(&[Kind::Rust, Kind::Rust, Kind::Rust], "rust soak").await;
}

/// The soak's length: `FLACK_FAULTS_SOAK_SECS`, else 60 s (300 s with
/// `FLACK_FAULTS_LONG`).
fn soak_duration() -> Duration {
    Duration::from_secs(
        std::env::var("FLACK_FAULTS_SOAK_SECS")
            .ok()
            .and_then(|secs| secs.parse().ok())
            .unwrap_or(if long() { 300 } else { 60 }),
    )
}

/// When the soak restarts a node: every `FLACK_FAULTS_SOAK_RESTART_EVERY`
/// seconds if set, else once, at two fifths of the run;
/// `FLACK_FAULTS_SOAK_RESTART=0` leaves restarts out (to tell their
/// effects from the churn's). Nodes 1 and 2 take turns; node 0 (the
/// leader) runs throughout, so its RSS covers the whole run.
fn soak_restarts(duration: Duration) -> Vec<(Duration, usize)> {
    if std::env::var("FLACK_FAULTS_SOAK_RESTART").is_ok_and(|v| v == "0") {
        return Vec::new();
    }
    let every = std::env::var("FLACK_FAULTS_SOAK_RESTART_EVERY")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .map(Duration::from_secs);
    match every {
        Some(every) if !every.is_zero() => (1..)
            .map(|k| every * k)
            .take_while(|at| *at + Duration::from_secs(20) < duration)
            .zip([2, 1].into_iter().cycle())
            .collect(),
        _ => vec![(duration * 2 / 5, 2)],
    }
}

async fn soak(kinds: &[Kind], label: &str) {
    let duration = soak_duration();
    let restarts = soak_restarts(duration);
    let mut cluster = Cluster::start(kinds).await;
    cluster.settled(SETTLE).await;
    // The fan-out names of every node are the baseline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, _) = cluster.settled(SETTLE).await;
    let baseline = cluster.view(0).await.registry_size.expect("registry size");
    let mut users = Vec::new();
    for i in 0..kinds.len() {
        users.extend(users_on(&cluster, i, 2, "s").await);
    }
    let started = Instant::now();
    let stop = tokio_util::sync::CancellationToken::new();
    let churned = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut churners = Vec::new();
    for worker in 0..3usize {
        let webs: Vec<_> = cluster.slots.iter().map(|s| s.web).collect();
        let stop = stop.clone();
        let churned = churned.clone();
        churners.push(tokio::spawn(async move {
            let mut k = worker;
            while !stop.is_cancelled() {
                let node = k % 3;
                if tokio::net::TcpStream::connect(webs[node]).await.is_err() {
                    // A node restarting.
                    k += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                // A node restarts mid-soak: a churner that meets it down
                // tries again.
                let attempt = tokio::spawn(churn_once(
                    webs[node],
                    format!("c{worker}x{k}"),
                    format!("churn{}", k % 2),
                ));
                if attempt.await.is_ok() {
                    churned.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                k += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    // RSS samples of each life of each node: a restart starts a new life.
    let mut lives: Vec<Vec<Vec<(Duration, u64)>>> = vec![vec![Vec::new()]; kinds.len()];
    let mut pending = restarts.iter().peekable();
    let mut round = 0;
    while started.elapsed() < duration {
        for (i, node_lives) in lives.iter_mut().enumerate() {
            if let (Some(kb), Some(life)) = (cluster.pid(i).and_then(rss_kb), node_lives.last_mut())
            {
                life.push((started.elapsed(), kb));
            }
        }
        if let Some(&(_, victim)) = pending.next_if(|(at, _)| started.elapsed() >= *at) {
            round += 1;
            cluster.kill(victim);
            lives[victim].push(Vec::new());
            tokio::time::sleep(Duration::from_millis(500)).await;
            cluster.boot(victim).await;
            let (leader, took) = cluster.settled(SETTLE).await;
            println!(
                "{label}: restarted node {victim} at {:?}: settled under {leader} in {took:?}",
                started.elapsed()
            );
            users.extend(users_on(&cluster, victim, 2, &format!("t{round}")).await);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    stop.cancel();
    for churner in churners {
        let _ = churner.await;
    }
    finish(label, &cluster, &users, |_, _, _| true).await;
    println!(
        "{label}: {} churn sessions (connect, join, 3 posts, leave, goodbye) and {round} \
         restarts in {duration:?}",
        churned.load(std::sync::atomic::Ordering::Relaxed)
    );
    // RSS of each Rust node's life: after warm-up (the first third of its
    // samples) it stays within 25 % + 4 MB of the warm value. The curve is
    // printed a sample a minute (and the last one).
    for (i, node_lives) in lives.iter().enumerate() {
        for (life, samples) in node_lives.iter().enumerate() {
            if samples.len() < 3 {
                continue;
            }
            let curve: Vec<String> = samples
                .iter()
                .enumerate()
                .filter(|(k, _)| k % 30 == 0 || *k == samples.len() - 1)
                .map(|(_, (at, kb))| format!("{}s {kb}", at.as_secs()))
                .collect();
            let warm = samples[samples.len() / 3].1;
            let peak = samples[samples.len() / 3..]
                .iter()
                .map(|(_, kb)| *kb)
                .max()
                .unwrap_or(warm);
            let last = samples.last().map_or(warm, |(_, kb)| *kb);
            println!(
                "{label}: node {i} ({:?}) life {life}: RSS warm {warm} kB, peak after {peak} kB, \
                 last {last} kB; curve (s kB): {}",
                cluster.slots[i].kind,
                curve.join(", ")
            );
            if cluster.slots[i].kind == Kind::Rust {
                assert!(
                    peak <= warm + warm / 4 + 4096,
                    "node {i}: RSS grew from {warm} kB to {peak} kB after warm-up: {samples:?}"
                );
            }
        }
    }
    drop(users);
    // Every user's registrations are gone: no room lists anyone, on any
    // node, and the nodes agree on the registry's size.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..kinds.len() {
        for room in [ROOM, "churn0", "churn1"] {
            let mut probe = support::Client::login(cluster.slots[i].web, "leftover").await;
            probe
                .send(serde_json::json!({"record": "join_chat", "chat_name": room}))
                .await;
            let state = probe.expect("chat_state").await;
            assert_eq!(
                state["users"],
                serde_json::json!([]),
                "node {i}: left behind in {room}"
            );
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, _) = cluster.settled(SETTLE).await;
    let size = cluster.view(0).await.registry_size.expect("registry size");
    // Every counter goes with its chat: each node that empties a chat
    // releases every registration of its counter it knows of.
    println!(
        "{label}: registry {size} objects on every node after everyone left (baseline \
         {baseline}): {} left behind",
        size - baseline
    );
    assert_eq!(size, baseline, "registry not back to its baseline");
    let local_numbers = harness::locally_numbered(&cluster);
    println!(
        "{label}: events numbered locally for want of the cluster counter \
         (\"no sequence from the cluster\" warnings, all nodes): {local_numbers}"
    );
    for slot in &cluster.slots {
        let errors = log_errors(&slot.log());
        if slot.kind == Kind::Original {
            // The original's own race under churn: `chat_stream:join/3`
            // lists a chat's members, then asks gproc for each one's
            // attributes; a member that left in between makes it crash
            // with `badarg` and close the joiner's socket (1011). Most of
            // the members seen leaving so were the original node's own
            // users: the race is in its code, whoever the others are.
            println!(
                "{label}: {}: {} error reports in the original's log",
                slot.name,
                errors.len()
            );
            continue;
        }
        assert!(
            errors.is_empty(),
            "{}: errors in the log: {errors:?}",
            slot.name
        );
    }
}

// ---------------------------------------------------------------------
// With ORIGINAL Erlang flack nodes in the mix (FLACK_ERLANG_HOME).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_erlang_leader_kills_and_restarts_under_load() {
    if skip_original() {
        return;
    }
    kills_and_restarts(
        &[Kind::Original, Kind::Rust, Kind::Rust],
        "mixed (Erlang leads) kills",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_rust_leader_kills_and_restarts_under_load() {
    if skip_original() {
        return;
    }
    kills_and_restarts(
        &[Kind::Rust, Kind::Original, Kind::Rust],
        "mixed (Rust leads) kills",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_erlang_leader_partitions_heal() {
    if skip_original() {
        return;
    }
    partitions(
        &[Kind::Original, Kind::Rust, Kind::Rust],
        "mixed (Erlang leads) partitions",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_rust_leader_partitions_heal() {
    if skip_original() {
        return;
    }
    partitions(
        &[Kind::Rust, Kind::Rust, Kind::Original],
        "mixed (Rust leads) partitions",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_erlang_leader_paused_nodes() {
    if skip_original() {
        return;
    }
    pauses(
        &[Kind::Original, Kind::Rust, Kind::Rust],
        "mixed (Erlang leads) pauses",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_slow_lossy_path_between_erlang_and_rust() {
    if skip_original() {
        return;
    }
    slow_path(
        &[Kind::Original, Kind::Rust, Kind::Rust],
        "mixed slow path",
        5,
        64,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_rust_leader_paused_erlang_follower() {
    if skip_original() {
        return;
    }
    // Node 2, the paused follower, is the original; then the Rust leader.
    pauses(
        &[Kind::Rust, Kind::Rust, Kind::Original],
        "mixed (Rust leads, original paused) pauses",
    )
    .await;
}

/// Scenario 5 with an ORIGINAL node in the cluster (a Rust leader, an
/// original follower and a Rust follower; the restarts take turns between
/// the followers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_soak_with_churn_and_restarts() {
    if skip_original() {
        return;
    }
    soak(&[Kind::Rust, Kind::Original, Kind::Rust], "mixed soak").await;
}
