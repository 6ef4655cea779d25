//! Test vectors from real traffic: the reference transcripts captured from a
//! cluster of original Erlang flack nodes (`tests/data/transcripts/`, format in
//! its README) replayed against our pure gen_leader election
//! ([`Election`]) and gproc table ([`GprocTable`]).
//!
//! For every life of every node, what its `gproc_dist` process received is
//! fed, in mailbox order, to an `Election` and a `GprocTable` set up as that
//! node's were. gen_leader's selective receive is kept: during an election
//! only election messages are taken and everything else (calls, casts,
//! broadcasts, `'DOWN'`s, `join`, `{send_checklead}`) waits in arrival
//! order until the election is over. Everything our code then says the
//! node must send is checked, message by message and in order, against
//! what the node did send:
//!
//! - election messages (kind, election id, destination, pids, candidate
//!   lists), the monitors it asked its helper for, its candidate timer, its
//!   `{send_checklead}` to itself;
//! - as leader: the `{from_leader, Ops}` broadcast to every monitored node
//!   and the reply of each `'$leader_call'`, the broadcast of each
//!   `'$leader_cast'`, the purge of a dead candidate's registrations
//!   (`handle_DOWN`), and each `ldr` snapshot, compared as a set with our
//!   table;
//! - as follower: forwarded calls and casts, relayed replies, the table
//!   after `surrendered`, and the `'DOWN'` → `pid_is_DOWN` casts.
//!
//! The only sends tolerated beyond the trace are the three additions the
//! election module documents (join probes on the candidate timer in
//! `elec1`/`wait`, `hasLeader` to a candidate that acknowledged too late, a
//! heartbeat answering a lower candidate's `checklead` in `elec1`); any
//! other difference fails with both sides shown. The traces also check the
//! trace reader itself (every message between two nodes is the same term in
//! both files) and the chat records: `records::decode` then `encode` gives
//! back every record the websocket processes exchanged, and a received
//! record's event is byte for byte the frame the original sent its client
//! (`scenario.txt`).

mod trace_support;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use eetf::Term;
use flack::cluster::election::{Beat, Dest, Effect, Election, Input, Message, NodeName};
use flack::cluster::gproc::GprocTable;
use flack::cluster::records;
use flack::cluster::wire;
use flack::node::Pid;
use flack::node::term::{as_atom, as_list, as_tuple, atom, list, tuple};
use trace_support::{Dir, Event, Peer, TraceFile};

/// The candidates every node of the capture was started with.
const CANDIDATES: [&str; 3] = ["flack1@vm", "flack2@vm", "flack3@vm"];

/// The traced nodes.
const NODES: [&str; 3] = CANDIDATES;

/// A node's gproc_dist trace.
fn gproc_dist_trace(node: &str) -> TraceFile {
    trace_support::load(&format!("{node}.gproc_dist.trace"))
}

// -------------------------------------------------------------------
// Terms.

fn int(value: i64) -> Term {
    match i32::try_from(value) {
        Ok(small) => Term::from(eetf::FixInteger::from(small)),
        Err(_) => Term::from(eetf::BigInteger::from(value)),
    }
}

fn as_int(term: &Term) -> Option<i64> {
    match term {
        Term::FixInteger(value) => Some(i64::from(value.value)),
        _ => None,
    }
}

fn node_name(name: &str) -> NodeName {
    Arc::from(name)
}

// -------------------------------------------------------------------
// Election messages as Erlang terms.

fn dest_term(dest: &Dest) -> Term {
    match dest {
        Dest::Name(node) => tuple(vec![atom("gproc_dist"), atom(node)]),
        Dest::Pid(pid) => Term::from(pid.clone()),
    }
}

// -------------------------------------------------------------------
// What a gproc_dist process received.

#[derive(Debug, Clone)]
enum Received {
    /// An election input gen_leader takes in both of its loops.
    Election(Input),
    /// An election input gen_leader leaves queued during an election:
    /// `join` and `{send_checklead}`.
    Postponed(Input),
    /// `{'$leader_call', {From, Tag}, Request}`.
    LeaderCall {
        from: eetf::Pid,
        tag: Term,
        request: Term,
    },
    /// `{Ref, {leader, reply, Reply}}`: the leader's answer to a forwarded call.
    LeaderReply { reference: Term, reply: Term },
    /// `{'$leader_cast', Message}`.
    LeaderCast(Term),
    /// `{from_leader, Ops}`.
    FromLeader(Term),
    /// `{'DOWN', _, process, Pid, _}` of a registered pid gproc monitors.
    ProcessDown(Term),
    /// `{'$gen_call', {From, Tag}, get_leader}`.
    GetLeader { from: eetf::Pid, tag: Term },
    /// Replies to its own synchronous calls (file, code and timer servers,
    /// the monitor helper, net_kernel) and strays such as `timeout`.
    Housekeeping,
}

fn classify(me: &str, term: &Term) -> Result<Received, String> {
    if as_atom(term) == Some("timeout") {
        // A stray of net_kernel:node_info/2 (protocol notes, §3.1).
        return Ok(Received::Housekeeping);
    }
    let fields = as_tuple(term).ok_or("not a tuple")?;
    let first = fields.first().and_then(as_atom).unwrap_or_default();
    Ok(match (first, fields) {
        ("candidate_timer", [_]) => Received::Election(Input::CandidateTimer),
        ("send_checklead", [_]) => Received::Postponed(Input::SendChecklead),
        ("ldr", [_, down, node]) if as_atom(down) == Some("DOWN") => Received::Election(
            Input::Down(node_name(as_atom(node).ok_or("bad DOWN node")?)),
        ),
        ("heartbeat", [_, node]) if as_atom(node) == Some(me) => {
            Received::Election(Input::OwnHeartbeat)
        }
        ("join", _) => Received::Postponed(Input::Message(
            wire::decode(term).ok_or("a malformed join")?,
        )),
        ("$leader_call", [_, from, request]) => match as_tuple(from) {
            Some([Term::Pid(pid), tag]) => Received::LeaderCall {
                from: pid.clone(),
                tag: tag.clone(),
                request: request.clone(),
            },
            _ => return Err("a malformed '$leader_call'".into()),
        },
        ("$leader_cast", [_, message]) => Received::LeaderCast(message.clone()),
        ("from_leader", [_, ops]) => Received::FromLeader(ops.clone()),
        ("DOWN", [_, _, kind, pid @ Term::Pid(_), _]) if as_atom(kind) == Some("process") => {
            Received::ProcessDown(pid.clone())
        }
        ("$gen_call", [_, from, request]) if as_atom(request) == Some("get_leader") => {
            match as_tuple(from) {
                Some([Term::Pid(pid), tag]) => Received::GetLeader {
                    from: pid.clone(),
                    tag: tag.clone(),
                },
                _ => return Err("a malformed get_leader call".into()),
            }
        }
        ("init" | "code_server" | "mon_reply", [_, _]) => Received::Housekeeping,
        (_, [_, status, _]) if as_atom(status) == Some("get_status") => Received::Housekeeping,
        (_, [reference @ Term::Reference(_), answer]) => {
            match as_tuple(answer) {
                Some([leader, reply_atom, reply])
                    if as_atom(leader) == Some("leader")
                        && as_atom(reply_atom) == Some("reply") =>
                {
                    Received::LeaderReply {
                        reference: reference.clone(),
                        reply: reply.clone(),
                    }
                }
                // The reply to one of its own gen_server calls.
                _ => Received::Housekeeping,
            }
        }
        _ => Received::Election(Input::Message(
            wire::decode(term).ok_or("a message gproc_dist does not expect")?,
        )),
    })
}

// -------------------------------------------------------------------
// What a gproc_dist process must send.

/// Where a message goes, as the trace header names it.
#[derive(Debug, Clone)]
enum Target {
    /// `{gproc_dist, Node}`.
    Name(String),
    /// A pid.
    Pid(eetf::Pid),
    /// A locally registered name (`to=gproc_dist`: a cast to itself).
    Local(&'static str),
    /// A local process the tracer names by its role.
    Role(&'static str),
}

fn target_of(dest: &Dest) -> Target {
    match dest {
        Dest::Name(node) => Target::Name(node.to_string()),
        Dest::Pid(pid) => Target::Pid(eetf::Pid::from(pid)),
    }
}

/// One send the replay expects.
#[derive(Debug, Clone)]
enum Expect {
    /// Exactly this term.
    Exact(Target, Term),
    /// An `ldr`: exact, except that the snapshot is compared as a set.
    Ldr(Target, Term),
    /// `{'$leader_call', {Self, Ref}, Request}` with a fresh `Ref`.
    Forward(Target, Term, Term),
    /// `timer:send_interval(5000, {candidate_timer})` (via timer_server).
    TimerStart(Term),
    /// `timer:cancel` of it.
    TimerCancel,
    /// net_kernel:node_info/2 asking a connection for its status
    /// (gen_leader's `check_candidates` on a down node that is connected).
    StatusProbe(Term),
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Exact(target, term) => write!(f, "{term} to {target:?}"),
            Expect::Ldr(target, term) => write!(f, "{term} to {target:?} (snapshot as a set)"),
            Expect::Forward(target, me, request) => {
                write!(f, "{{'$leader_call',{{{me},Ref}},{request}}} to {target:?}")
            }
            Expect::TimerStart(_) => write!(f, "timer:send_interval(5000, {{candidate_timer}})"),
            Expect::TimerCancel => write!(f, "timer:cancel of the candidate timer"),
            Expect::StatusProbe(me) => write!(f, "{{{me},get_status}} to a connection"),
        }
    }
}

impl Expect {
    fn target(&self) -> Target {
        match self {
            Expect::Exact(target, _) | Expect::Ldr(target, _) | Expect::Forward(target, _, _) => {
                target.clone()
            }
            Expect::TimerStart(_) | Expect::TimerCancel => Target::Role("timer_server"),
            // The connection's controller process, whatever the tracer calls it.
            Expect::StatusProbe(_) => Target::Role(""),
        }
    }
}

fn check_target(target: &Target, peer: &Peer) -> Result<(), String> {
    let fits = match (target, peer) {
        (
            Target::Name(node),
            Peer::Registered {
                name,
                node: Some(to),
            },
        ) => name == "gproc_dist" && to == node,
        (Target::Pid(pid), Peer::Process(process)) => process.pid == *pid,
        (Target::Local(local), Peer::Registered { name, node: None }) => name == local,
        (Target::Role(role), Peer::Process(process)) => process.is(role),
        _ => false,
    };
    if fits {
        Ok(())
    } else {
        Err(format!("sent to {peer:?}, expected {target:?}"))
    }
}

/// The objects of a `{globals, Objects}` snapshot.
fn snapshot_objects(synch: &Term) -> Result<Vec<Term>, String> {
    match as_tuple(synch) {
        Some([tag, objects]) if as_atom(tag) == Some("globals") => as_list(objects)
            .map(<[Term]>::to_vec)
            .ok_or_else(|| format!("snapshot objects are not a list: {synch}")),
        _ => Err(format!("not a {{globals, Objects}} snapshot: {synch}")),
    }
}

/// Two snapshots hold the same objects (gproc builds them in ETS order,
/// ours are sorted differently; only the set matters to a follower).
fn same_objects(ours: &Term, theirs: &Term) -> Result<(), String> {
    let mut missing = snapshot_objects(ours)?;
    let mut extra = Vec::new();
    for object in snapshot_objects(theirs)? {
        match missing.iter().position(|o| *o == object) {
            Some(at) => {
                missing.remove(at);
            }
            None => extra.push(object),
        }
    }
    if missing.is_empty() && extra.is_empty() {
        Ok(())
    } else {
        let show = |objects: &[Term]| {
            objects
                .iter()
                .map(|o| format!("\n      {o}"))
                .collect::<String>()
        };
        Err(format!(
            "snapshots differ; only in ours:{}\n    only in the trace:{}",
            show(&missing),
            show(&extra)
        ))
    }
}

fn check(expect: &Expect, event: &Event) -> Result<Option<Term>, String> {
    check_target(&expect.target(), &event.peer)?;
    let term = &event.term;
    let mismatch = |what: &Term| Err(format!("expected {what}\n    trace: {term}"));
    match expect {
        Expect::Exact(_, expected) => {
            if term == expected {
                Ok(None)
            } else {
                mismatch(expected)
            }
        }
        Expect::Ldr(_, expected) => match (as_tuple(expected), as_tuple(term)) {
            (Some(ours), Some(theirs))
                if ours.len() == 6
                    && theirs.len() == 6
                    && (0..6).all(|i| i == 1 || ours[i] == theirs[i]) =>
            {
                same_objects(&ours[1], &theirs[1])
                    .map(|()| None)
                    .map_err(|e| format!("ldr snapshot: {e}"))
            }
            _ => mismatch(expected),
        },
        Expect::Forward(_, me, request) => match as_tuple(term) {
            Some([tag, from, forwarded]) if as_atom(tag) == Some("$leader_call") => {
                match as_tuple(from) {
                    Some([pid, reference @ Term::Reference(_)])
                        if pid == me && forwarded == request =>
                    {
                        Ok(Some(reference.clone()))
                    }
                    _ => mismatch(&tuple(vec![
                        atom("$leader_call"),
                        atom("{Self,Ref}"),
                        request.clone(),
                    ])),
                }
            }
            _ => mismatch(&tuple(vec![
                atom("$leader_call"),
                atom("{Self,Ref}"),
                request.clone(),
            ])),
        },
        Expect::TimerStart(me) => {
            let send = tuple(vec![
                atom("timer"),
                atom("send"),
                list(vec![me.clone(), tuple(vec![atom("candidate_timer")])]),
            ]);
            match as_tuple(term) {
                Some([call, _, request]) if as_atom(call) == Some("$gen_call") => {
                    match as_tuple(request) {
                        Some([kind, spec]) if as_atom(kind) == Some("apply_interval") => {
                            match as_tuple(spec) {
                                Some([_, interval, owner, mfa])
                                    if as_int(interval) == Some(5000)
                                        && owner == me
                                        && *mfa == send =>
                                {
                                    Ok(None)
                                }
                                _ => mismatch(&send),
                            }
                        }
                        _ => mismatch(&send),
                    }
                }
                _ => mismatch(&send),
            }
        }
        Expect::TimerCancel => {
            let is_cancel = match as_tuple(term) {
                Some([call, _, request]) if as_atom(call) == Some("$gen_call") => {
                    let timer = match as_tuple(request) {
                        Some([kind, timer]) if as_atom(kind) == Some("cancel") => as_tuple(timer),
                        _ => None,
                    };
                    matches!(timer, Some([interval, _]) if as_atom(interval) == Some("interval"))
                }
                _ => false,
            };
            if is_cancel {
                Ok(None)
            } else {
                mismatch(&atom("timer:cancel of the candidate timer"))
            }
        }
        Expect::StatusProbe(me) => {
            let expected = tuple(vec![me.clone(), atom("get_status")]);
            if *term == expected {
                Ok(None)
            } else {
                mismatch(&expected)
            }
        }
    }
}

/// Sends of a gproc_dist process that are not part of the protocol: its
/// start (init arguments, code loading, the incarnation file, starting
/// timer_server, proc_lib's ack to its supervisor).
fn housekeeping(event: &Event) -> bool {
    match &event.peer {
        Peer::Registered { name, node: None } => name == "init" || name == "code_server",
        Peer::Process(process) => {
            process.is("file_server_2") || process.is("kernel_sup") || process.is("gproc_sup")
        }
        _ => false,
    }
}

/// The sends the election module documents as its own additions to
/// gen_leader; `None` for everything gen_leader itself sends.
fn documented_extra(
    input: &Input,
    was_in_election: bool,
    machine: &Election,
    dest: &Dest,
    message: &Message,
) -> Option<&'static str> {
    let pos = |node: &str| machine.candidates().iter().position(|c| &**c == node);
    match message {
        Message::Join(_) if was_in_election && matches!(input, Input::CandidateTimer) => {
            Some("join probe on the candidate timer")
        }
        Message::HasLeader { .. }
            if matches!(dest, Dest::Pid(_))
                && !matches!(
                    input,
                    Input::Message(Message::Join(_) | Message::Halt { .. })
                ) =>
        {
            Some("hasLeader to a candidate that acknowledged too late")
        }
        Message::Heartbeat(Beat::Pid(_)) => match input {
            Input::Message(Message::Checklead(node))
                if was_in_election && pos(node) < pos(&machine.self_pid().node) =>
            {
                Some("heartbeat answering a lower candidate's checklead in elec1")
            }
            _ => None,
        },
        _ => None,
    }
}

// -------------------------------------------------------------------
// The replay of one life of one node.

/// What one life's replay did (every number is a check that passed).
#[derive(Debug, Default, Clone)]
struct LifeReport {
    node: String,
    life: usize,
    incarnation: i64,
    /// Election messages from other candidates fed to the machine.
    election_messages_in: usize,
    /// `{ldr,'DOWN',Node}` from the monitor helper.
    downs_in: usize,
    /// `{candidate_timer}`, own `{heartbeat,node()}`, `{send_checklead}`.
    timers_in: usize,
    /// Of those: own heartbeats, and the one-shot timers armed for them.
    own_heartbeats_in: usize,
    own_heartbeats_armed: usize,
    /// Of those: `{send_checklead}`.
    send_checkleads_in: usize,
    /// Inputs that waited for the end of an election.
    postponed: usize,
    /// Election messages sent as the trace shows (`ldr` included).
    election_sends: usize,
    /// `ldr`s sent, each with its snapshot compared.
    ldr_sent: usize,
    /// Tolerated additions (see `documented_extra`).
    extras: Vec<String>,
    monitors: usize,
    timer_ops: usize,
    self_checkleads: usize,
    /// `send_checkleads` rounds: a helper gen_leader spawns sends them.
    checklead_rounds: usize,
    elected: usize,
    /// The leaders this node surrendered to.
    surrendered: Vec<String>,
    /// Tables compared with the leader's snapshot after `surrendered`.
    surrender_tables_checked: usize,
    calls_served: usize,
    calls_forwarded: usize,
    replies_relayed: usize,
    casts_served: usize,
    casts_forwarded: usize,
    /// `{from_leader, Ops}` rounds (one per node each).
    broadcasts: usize,
    broadcast_messages: usize,
    /// `handle_DOWN` purges run, and those that broadcast.
    purges: usize,
    purge_broadcasts: usize,
    from_leader_applied: usize,
    down_casts: usize,
    get_leader_checked: usize,
    status_probes: usize,
    /// Protocol sends of the trace, all matched.
    sends_matched: usize,
    /// Inputs still waiting for an election to end when the trace ends.
    left_postponed: usize,
    /// Forwarded calls the leader never answered.
    unanswered_calls: usize,
    final_leader: Option<String>,
    final_is_leader: bool,
    final_table: Option<Term>,
}

impl LifeReport {
    /// One line for the test output (the full report is in Debug).
    fn summary(&self) -> String {
        format!(
            "{} life {} (incarnation {}): in: {} election messages, {} DOWNs, {} timers, \
             {} postponed; matched {} sends: {} election ({} ldr), {} monitors, {} timer ops; \
             leader: {} calls, {} casts, {} broadcasts ({} purge); follower: {} calls and \
             {} casts forwarded, {} from_leader; extras: {}; ends led by {:?}",
            self.node,
            self.life + 1,
            self.incarnation,
            self.election_messages_in,
            self.downs_in,
            self.timers_in,
            self.postponed,
            self.sends_matched,
            self.election_sends,
            self.ldr_sent,
            self.monitors,
            self.timer_ops,
            self.calls_served,
            self.casts_served,
            self.broadcasts,
            self.purge_broadcasts,
            self.calls_forwarded,
            self.casts_forwarded,
            self.from_leader_applied,
            self.extras.len(),
            self.final_leader,
        )
    }
}

struct Replay<'f> {
    name: String,
    me: String,
    self_term: Term,
    machine: Election,
    table: GprocTable,
    /// Nodes this node has a connection to, as far as the trace shows.
    connected: BTreeSet<String>,
    /// What waits for the end of an election, in arrival order.
    postponed: VecDeque<(usize, Received)>,
    /// Forwarded calls: our reference → the caller's `{Pid, Tag}`.
    pending: HashMap<Term, (eetf::Pid, Term)>,
    /// The protocol sends of this life, in order.
    sends: Vec<&'f Event>,
    cursor: usize,
    /// Line of the input being handled.
    at: usize,
    report: LifeReport,
}

/// The incarnation gen_leader used: it writes the next one to
/// `./gproc_dist_<node>` (1 on a first start), so it is that value - 1.
fn incarnation(events: &[&Event], self_pid: &eetf::Pid, me: &str) -> i64 {
    let file = format!("./gproc_dist_{me}");
    let written: Vec<i64> = events
        .iter()
        .filter(|e| e.dir == Dir::Send && e.process.pid == *self_pid)
        .filter_map(|e| match as_tuple(&e.term) {
            Some([call, _, request]) if as_atom(call) == Some("$gen_call") => {
                match as_tuple(request) {
                    Some([write, Term::ByteList(path), Term::Binary(bytes)])
                        if as_atom(write) == Some("write_file")
                            && path.bytes == file.as_bytes() =>
                    {
                        let value = Term::decode(bytes.bytes.as_slice())
                            .unwrap_or_else(|error| panic!("line {}: {error}", e.line));
                        Some(as_int(&value).expect("an integer incarnation") - 1)
                    }
                    _ => None,
                }
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        written.len(),
        1,
        "{me}: one write of the incarnation file per life, found {written:?}"
    );
    written[0]
}

impl<'f> Replay<'f> {
    fn fail(&self, what: String) -> ! {
        panic!("{} (input at line {}): {what}", self.name, self.at)
    }

    /// Matches the next sends of the trace against `items` (in any order
    /// among themselves: a broadcast's fan-out order is gen_leader's
    /// monitor list order, which nothing depends on). Returns the
    /// references captured from forwarded calls.
    fn expect(&mut self, items: Vec<Expect>, why: &str) -> Vec<Term> {
        let count = items.len();
        let end = self.cursor + count;
        if end > self.sends.len() {
            let ours: Vec<String> = items.iter().map(|item| format!("  {item}")).collect();
            self.fail(format!(
                "{why}: our code sends\n{}\n  but the trace has no more sends",
                ours.join("\n")
            ));
        }
        let window = &self.sends[self.cursor..end];
        let mut used = vec![false; count];
        let mut captured = Vec::new();
        for item in &items {
            let mut tried = Vec::new();
            let found = window.iter().enumerate().find_map(|(index, event)| {
                if used[index] {
                    return None;
                }
                match check(item, event) {
                    Ok(capture) => Some((index, capture)),
                    Err(error) => {
                        tried.push(format!("  line {}: {error}", event.line));
                        None
                    }
                }
            });
            match found {
                Some((index, capture)) => {
                    used[index] = true;
                    captured.extend(capture);
                }
                None => self.fail(format!(
                    "{why}: our code sends {item}\n  the trace sends instead:\n{}",
                    tried.join("\n")
                )),
            }
        }
        self.cursor = end;
        self.report.sends_matched += count;
        captured
    }

    fn expect_one(&mut self, item: Expect, why: &str) -> Vec<Term> {
        self.expect(vec![item], why)
    }

    /// Follows the node's connections: a message from a node means it is
    /// connected, a `noconnection` DOWN that it is not.
    fn observe_links(&mut self, event: &Event) {
        if event.dir != Dir::Recv {
            return;
        }
        if let Some([tag, _, _, object, reason]) = as_tuple(&event.term)
            && as_atom(tag) == Some("DOWN")
        {
            let node = match object {
                Term::Pid(pid) => Some(pid.node.name.clone()),
                other => match as_tuple(other) {
                    Some([_, node]) => as_atom(node).map(String::from),
                    _ => None,
                },
            };
            if let Some(node) = node
                && node != self.me
            {
                if as_atom(reason) == Some("noconnection") {
                    self.connected.remove(&node);
                } else {
                    self.connected.insert(node);
                }
            }
            return;
        }
        if let Some(node) = event.peer.node()
            && node != self.me
        {
            self.connected.insert(node.to_string());
        }
    }

    fn receive(&mut self, line: usize, received: Received) {
        let waits = self.machine.in_election()
            && !matches!(received, Received::Election(_) | Received::Housekeeping);
        if waits {
            self.postponed.push_back((line, received));
            self.report.postponed += 1;
            return;
        }
        self.at = line;
        self.take(received);
        while !self.machine.in_election() {
            let Some((line, received)) = self.postponed.pop_front() else {
                break;
            };
            self.at = line;
            self.take(received);
        }
    }

    fn take(&mut self, received: Received) {
        match received {
            Received::Election(input) | Received::Postponed(input) => self.election(input),
            Received::LeaderCall { from, tag, request } => self.leader_call(from, tag, request),
            Received::LeaderReply { reference, reply } => {
                let Some((from, tag)) = self.pending.remove(&reference) else {
                    self.fail(format!(
                        "a leader reply with an unknown reference {reference} \
                         (an Erlang follower crashes on it)"
                    ));
                };
                let answer = tuple(vec![atom("leader"), atom("reply"), reply]);
                self.expect_one(
                    Expect::Exact(Target::Pid(from), tuple(vec![tag, answer])),
                    "relaying the leader's reply to the caller",
                );
                self.report.replies_relayed += 1;
            }
            Received::LeaderCast(message) => {
                if self.machine.is_leader() {
                    let (ops, _) = self.table.leader_cast(&message);
                    self.report.casts_served += 1;
                    if let Some(ops) = ops {
                        self.broadcast(ops, &format!("broadcast of the cast {message}"));
                    }
                } else {
                    let leader = self.leader_pid();
                    self.expect_one(
                        Expect::Exact(
                            Target::Pid(leader),
                            tuple(vec![atom("$leader_cast"), message]),
                        ),
                        "forwarding a cast to the leader",
                    );
                    self.report.casts_forwarded += 1;
                }
            }
            Received::FromLeader(ops) => {
                if self.machine.is_leader() {
                    self.fail(format!("the leader received a broadcast {ops}"));
                }
                // gen_leader's check_candidates asks net_kernel about every
                // down candidate; a connected one is asked for its status.
                let connected = self.connected.clone();
                let probes: Vec<Expect> = self
                    .machine
                    .down()
                    .iter()
                    .filter(|node| connected.contains(&***node))
                    .map(|_| Expect::StatusProbe(self.self_term.clone()))
                    .collect();
                self.report.status_probes += probes.len();
                for probe in probes {
                    self.expect_one(probe, "check_candidates on a broadcast");
                }
                self.machine.refresh_down(|node| connected.contains(node));
                self.table.apply(&ops);
                self.report.from_leader_applied += 1;
            }
            Received::ProcessDown(pid) => {
                let cast = tuple(vec![
                    atom("$leader_cast"),
                    tuple(vec![atom("pid_is_DOWN"), pid]),
                ]);
                self.expect_one(
                    Expect::Exact(Target::Local("gproc_dist"), cast),
                    "gproc_dist casting pid_is_DOWN for a dead registered pid",
                );
                self.report.down_casts += 1;
            }
            Received::GetLeader { from, tag } => {
                let Some(node) = self.machine.leader_node().cloned() else {
                    self.fail("get_leader answered, but our machine knows no leader".into());
                };
                self.expect_one(
                    Expect::Exact(Target::Pid(from), tuple(vec![tag, atom(&node)])),
                    "get_leader: the node's leader",
                );
                self.report.get_leader_checked += 1;
            }
            Received::Housekeeping => {}
        }
    }

    fn leader_pid(&self) -> eetf::Pid {
        match self.machine.leader() {
            Some(leader) if !self.machine.in_election() => eetf::Pid::from(leader),
            _ => self.fail("a follower without a leader forwards a request".into()),
        }
    }

    fn leader_call(&mut self, from: eetf::Pid, tag: Term, request: Term) {
        if self.machine.is_leader() {
            let (reply, _) = self.table.leader_call(&request);
            if let Some(ops) = reply.broadcast {
                self.broadcast(ops, &format!("broadcast of the call {request}"));
            }
            let answer = tuple(vec![atom("leader"), atom("reply"), reply.reply]);
            self.expect_one(
                Expect::Exact(Target::Pid(from), tuple(vec![tag, answer])),
                &format!("the leader's reply to {request}"),
            );
            self.report.calls_served += 1;
        } else {
            let leader = self.leader_pid();
            let captured = self.expect_one(
                Expect::Forward(Target::Pid(leader), self.self_term.clone(), request),
                "forwarding a call to the leader",
            );
            let [reference] = captured.as_slice() else {
                self.fail("no reference captured from a forwarded call".into());
            };
            self.pending.insert(reference.clone(), (from, tag));
            self.report.calls_forwarded += 1;
        }
    }

    /// `{from_leader, Ops}` to every node the leader monitors.
    fn broadcast(&mut self, ops: Term, why: &str) {
        let message = tuple(vec![atom("from_leader"), ops]);
        let items: Vec<Expect> = self
            .machine
            .monitored()
            .iter()
            .map(|node| Expect::Exact(Target::Name(node.to_string()), message.clone()))
            .collect();
        self.report.broadcasts += 1;
        self.report.broadcast_messages += items.len();
        self.expect(items, why);
    }

    fn election(&mut self, input: Input) {
        match &input {
            Input::Message(_) => self.report.election_messages_in += 1,
            Input::Down(_) => self.report.downs_in += 1,
            Input::CandidateTimer => self.report.timers_in += 1,
            Input::OwnHeartbeat => {
                self.report.timers_in += 1;
                self.report.own_heartbeats_in += 1;
            }
            Input::SendChecklead => {
                self.report.timers_in += 1;
                self.report.send_checkleads_in += 1;
            }
        }
        let was_in_election = self.machine.in_election();
        let connected = self.connected.clone();
        let effects = self
            .machine
            .handle(input.clone(), |node| connected.contains(node));
        self.apply(Some(&input), was_in_election, effects);
        if let Input::Message(Message::Ldr { from, .. }) = &input
            && !self.machine.in_election()
            && self.machine.leader() != Some(from)
            && !self.machine.is_leader()
        {
            self.fail(format!(
                "a follower after ldr from {from} follows someone else"
            ));
        }
    }

    fn apply(&mut self, input: Option<&Input>, was_in_election: bool, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Send(dest, message) => {
                    if let Some(input) = input
                        && let Some(why) =
                            documented_extra(input, was_in_election, &self.machine, &dest, &message)
                    {
                        self.report
                            .extras
                            .push(format!("line {}: {why}: {message:?} to {dest:?}", self.at));
                        continue;
                    }
                    self.expect_one(
                        Expect::Exact(target_of(&dest), wire::encode(&message)),
                        &format!("election message {message:?}"),
                    );
                    self.report.election_sends += 1;
                }
                Effect::Monitor(dest) => {
                    let request = tuple(vec![
                        self.self_term.clone(),
                        tuple(vec![atom("monitor"), dest_term(&dest)]),
                    ]);
                    self.expect_one(
                        Expect::Exact(Target::Role("gen_leader monitor proc"), request),
                        &format!("monitor of {dest:?}"),
                    );
                    self.report.monitors += 1;
                }
                Effect::StartCandidateTimer => {
                    self.expect_one(
                        Expect::TimerStart(self.self_term.clone()),
                        "starting the candidate timer",
                    );
                    self.report.timer_ops += 1;
                }
                Effect::CancelCandidateTimer => {
                    self.expect_one(Expect::TimerCancel, "cancelling the candidate timer");
                    self.report.timer_ops += 1;
                }
                // timer:send_after/3 on a local pid is erlang:send_after:
                // nothing is sent until it fires (checked by count).
                Effect::ScheduleOwnHeartbeat => self.report.own_heartbeats_armed += 1,
                Effect::CheckleadNow => {
                    self.expect_one(
                        Expect::Exact(
                            Target::Name(self.me.clone()),
                            tuple(vec![atom("send_checklead")]),
                        ),
                        "{send_checklead} to itself",
                    );
                    self.report.self_checkleads += 1;
                }
                // A process gen_leader spawns sends these, not gproc_dist.
                Effect::SendCheckleads(_) => self.report.checklead_rounds += 1,
                Effect::Elected { acks } => {
                    if !self.machine.is_leader() {
                        self.fail("Elected, but the machine is not leader".into());
                    }
                    self.report.elected += 1;
                    for node in acks {
                        self.send_ldr(Target::Name(node.to_string()), "ldr to an acknowledger");
                    }
                }
                Effect::Accept(pid) => {
                    self.send_ldr(
                        Target::Pid(eetf::Pid::from(&pid)),
                        "ldr to a joining candidate",
                    );
                }
                Effect::Surrendered { leader, synch } => self.surrendered(leader, synch),
                Effect::NodeDown(node) => {
                    let (ops, _) = self.table.purge_node(&node);
                    self.report.purges += 1;
                    if let Some(ops) = ops {
                        self.report.purge_broadcasts += 1;
                        self.broadcast(ops, &format!("handle_DOWN({node}) purge"));
                    }
                }
                Effect::ElectionStarted => {}
            }
        }
    }

    fn send_ldr(&mut self, target: Target, why: &str) {
        let ldr = wire::encode(&self.machine.ldr(self.table.snapshot()));
        self.expect_one(Expect::Ldr(target, ldr), why);
        self.report.election_sends += 1;
        self.report.ldr_sent += 1;
    }

    fn surrendered(&mut self, leader: Pid, synch: Term) {
        if self.machine.in_election()
            || self.machine.is_leader()
            || self.machine.leader() != Some(&leader)
        {
            self.fail(format!(
                "surrendered to {leader}, but the machine disagrees"
            ));
        }
        let (_, reconciliation) = self.table.surrender(&synch, &self.me);
        let casts: Vec<Term> = [reconciliation.add_globals, reconciliation.remove_globals]
            .into_iter()
            .flatten()
            .collect();
        if casts.is_empty() {
            // Nothing of ours was missing or extra: the table is the
            // leader's snapshot.
            if let Err(error) = same_objects(&self.table.snapshot(), &synch) {
                self.fail(format!("after surrendered: {error}"));
            }
            self.report.surrender_tables_checked += 1;
        }
        for cast in casts {
            self.expect_one(
                Expect::Exact(
                    Target::Local("gproc_dist"),
                    tuple(vec![atom("$leader_cast"), cast]),
                ),
                "surrendered's reconciliation cast",
            );
        }
        self.report.surrendered.push(leader.node.to_string());
    }
}

/// Replays one life of a node's gproc_dist trace.
fn replay_life(file: &TraceFile, life: usize) -> LifeReport {
    let events: Vec<&Event> = file.life(life).collect();
    let me = file.node.clone();
    let name = format!("{me} life {}", life + 1);
    let process = events
        .iter()
        .find(|e| e.process.is(" gproc_dist"))
        .map(|e| e.process.pid.clone())
        .unwrap_or_else(|| panic!("{name}: no gproc_dist process"));
    let incarnation = incarnation(&events, &process, &me);
    let sends: Vec<&Event> = events
        .iter()
        .copied()
        .filter(|e| e.dir == Dir::Send && e.process.pid == process && !housekeeping(e))
        .collect();
    let self_pid = Pid::from(&process);
    let machine = Election::new(
        node_name(&me),
        self_pid.clone(),
        CANDIDATES.iter().map(|c| node_name(c)).collect(),
        incarnation,
    );
    let mut replay = Replay {
        name: name.clone(),
        me: me.clone(),
        self_term: Term::from(self_pid),
        machine,
        table: GprocTable::new(),
        connected: BTreeSet::new(),
        postponed: VecDeque::new(),
        pending: HashMap::new(),
        sends,
        cursor: 0,
        at: events.first().map_or(0, |e| e.line),
        report: LifeReport {
            node: me.clone(),
            life,
            incarnation,
            ..LifeReport::default()
        },
    };
    let effects = replay.machine.start();
    replay.apply(None, true, effects);
    for event in &events {
        replay.observe_links(event);
        if event.dir == Dir::Recv && event.process.pid == process {
            let received = classify(&me, &event.term).unwrap_or_else(|error| {
                panic!("{name}: line {}: {error}: {}", event.line, event.raw)
            });
            replay.receive(event.line, received);
        }
    }
    if replay.cursor != replay.sends.len() {
        let rest: Vec<String> = replay.sends[replay.cursor..]
            .iter()
            .map(|e| format!("  line {}: {}", e.line, e.term))
            .collect();
        panic!(
            "{name}: the trace sends more than our code does:\n{}",
            rest.join("\n")
        );
    }
    let mut report = replay.report;
    report.left_postponed = replay.postponed.len();
    report.unanswered_calls = replay.pending.len();
    report.final_leader = replay.machine.leader_node().map(|n| n.to_string());
    report.final_is_leader = replay.machine.is_leader();
    report.final_table = Some(replay.table.snapshot());
    report
}

fn replay_all() -> Vec<LifeReport> {
    let mut reports = Vec::new();
    for node in NODES {
        let file = gproc_dist_trace(node);
        for life in 0..file.lives() {
            reports.push(replay_life(&file, life));
        }
    }
    for report in &reports {
        eprintln!("{}", report.summary());
    }
    reports
}

fn report_of<'r>(reports: &'r [LifeReport], node: &str, life: usize) -> &'r LifeReport {
    reports
        .iter()
        .find(|r| r.node == node && r.life == life)
        .unwrap_or_else(|| panic!("no replay of {node} life {}", life + 1))
}

// -------------------------------------------------------------------
// The tests.

#[test]
fn printed_terms_parse_as_erlang_means_them() {
    let parse = |text: &str| {
        trace_support::parse_term(text, "flack1@vm").unwrap_or_else(|e| panic!("{text}: {e}"))
    };
    let pid =
        |node: &str, id: u32| Term::from(eetf::Pid::new(node, id, 0, trace_support::CREATION));
    assert_eq!(parse("ok"), atom("ok"));
    assert_eq!(parse("flack2@vm"), atom("flack2@vm"));
    assert_eq!(parse("'$leader_call'"), atom("$leader_call"));
    assert_eq!(parse(r"'a\'b'"), atom("a'b"));
    assert_eq!(parse("-576460751878"), int(-576_460_751_878));
    assert_eq!(parse("42"), int(42));
    assert_eq!(
        parse("1.5e3"),
        Term::from(eetf::Float::try_from(1500.0).expect("finite"))
    );
    assert_eq!(parse("16#ff"), int(255));
    assert_eq!(parse("<<>>"), Term::from(eetf::Binary::from(Vec::new())));
    assert_eq!(
        parse("<<131,97,1>>"),
        Term::from(eetf::Binary::from(vec![131, 97, 1]))
    );
    assert_eq!(
        parse(r#"<<"a \"q\"\n">>"#),
        Term::from(eetf::Binary::from(b"a \"q\"\n".to_vec()))
    );
    assert_eq!(
        parse("<<\"h\\303\\251\">>"),
        Term::from(eetf::Binary::from("hé".as_bytes().to_vec()))
    );
    assert_eq!(
        parse("<<\"hé\"/utf8>>"),
        Term::from(eetf::Binary::from("hé".as_bytes().to_vec()))
    );
    assert_eq!(
        parse("<<\"abc\"\n   \"def\">>"),
        Term::from(eetf::Binary::from(b"abcdef".to_vec()))
    );
    assert_eq!(parse("\"vm\""), Term::from(eetf::ByteList::from("vm")));
    assert_eq!(parse("\"\""), list(vec![]));
    assert_eq!(parse("[119,1]"), list(vec![int(119), int(1)]));
    assert_eq!(parse("{}"), tuple(vec![]));
    assert_eq!(
        parse("{a , [b|c]}"),
        tuple(vec![
            atom("a"),
            Term::from(eetf::ImproperList::from((vec![atom("b")], atom("c"))))
        ])
    );
    assert_eq!(parse("[a|[b]]"), list(vec![atom("a"), atom("b")]));
    assert_eq!(parse("<0.93.0>"), pid("flack1@vm", 93));
    // A remote index stays unresolved until a file resolves it.
    assert!(matches!(parse("<6816.93.0>"), Term::Pid(p) if p.node.name != "flack1@vm"));
    assert_eq!(
        parse("#Ref<0.3023836788.1972633602.223041>"),
        Term::from(eetf::Reference {
            node: eetf::Atom::from("flack1@vm"),
            id: vec![223_041, 1_972_633_602, 3_023_836_788],
            creation: trace_support::CREATION,
        })
    );
    assert_eq!(
        parse("#Port<0.28>"),
        Term::from(eetf::Port {
            node: eetf::Atom::from("flack1@vm"),
            id: 28,
            creation: trace_support::CREATION,
        })
    );
    let map = parse("#{id => timer_server,\n   modules => [timer]}");
    let Term::Map(map) = map else {
        panic!("not a map")
    };
    assert_eq!(map.map.get(&atom("id")), Some(&atom("timer_server")));
    assert_eq!(
        trace_support::parse_term("#Fun<erl_eval.6.1>", "n@h"),
        Err(trace_support::ParseError::Fun)
    );
    for bad in ["{a,", "[a|b,c]", "<1.2>", "'open", "<<300>>", "{a} b"] {
        assert!(
            trace_support::parse_term(bad, "n@h").is_err(),
            "{bad} must not parse"
        );
    }
}

/// Every pid in a term.
fn pids_in(term: &Term, found: &mut Vec<eetf::Pid>) {
    match term {
        Term::Pid(pid) => found.push(pid.clone()),
        Term::List(list) => list.elements.iter().for_each(|t| pids_in(t, found)),
        Term::ImproperList(list) => {
            list.elements.iter().for_each(|t| pids_in(t, found));
            pids_in(&list.last, found);
        }
        Term::Tuple(tuple) => tuple.elements.iter().for_each(|t| pids_in(t, found)),
        Term::Map(map) => map.map.iter().for_each(|(k, v)| {
            pids_in(k, found);
            pids_in(v, found);
        }),
        _ => {}
    }
}

#[test]
fn trace_files_parse_with_every_node_index_resolved() {
    let mut total = 0;
    // (file, lives, events, events left out for holding a fun)
    for (name, lives, events, funs) in [
        ("flack1@vm.gproc_dist.trace", 2, 175, 0),
        ("flack2@vm.gproc_dist.trace", 1, 155, 0),
        ("flack3@vm.gproc_dist.trace", 1, 117, 0),
        ("flack1@vm.ws.trace", 1, 72, 0),
        ("flack2@vm.ws.trace", 1, 65, 0),
        ("flack3@vm.ws.trace", 1, 43, 0),
        // global's {cancel, Node, Tag, #Fun<global.14.112854349>}, sent and received.
        ("flack2@vm.sys.trace", 1, 98, 2),
    ] {
        let file = trace_support::load(name);
        assert_eq!(file.lives(), lives, "{name}: lives");
        assert_eq!(file.events.len(), events, "{name}: events parsed");
        assert_eq!(
            file.skipped.len(),
            funs,
            "{name}: skipped {:?}",
            file.skipped
        );
        total += file.events.len();
        for indices in &file.node_indices {
            for (index, node) in indices {
                assert_ne!(*node, file.node, "{name}: index {index} is the node itself");
                assert!(
                    CANDIDATES.contains(&node.as_str()),
                    "{name}: {index} → {node}"
                );
            }
        }
        // Resolved, every pid of a message is one its legend names.
        for event in &file.events {
            let mut pids = Vec::new();
            pids_in(&event.term, &mut pids);
            for pid in pids {
                assert!(
                    event.legend.iter().any(|named| named.pid == pid),
                    "{name} line {}: {pid} is not in the legend of {}",
                    event.line,
                    event.raw
                );
            }
        }
    }
    assert_eq!(total, 725, "events in all traces");
    let expected = |pairs: &[(u32, &str)]| -> Vec<(u32, String)> {
        pairs.iter().map(|(i, n)| (*i, n.to_string())).collect()
    };
    let flack1 = gproc_dist_trace("flack1@vm");
    for life in 0..2 {
        assert_eq!(
            flack1.node_indices[life]
                .clone()
                .into_iter()
                .collect::<Vec<_>>(),
            expected(&[(6816, "flack2@vm"), (6817, "flack3@vm")]),
            "flack1 life {}",
            life + 1
        );
    }
    // Each life begins at its "node started" marker.
    let starts: Vec<&trace_support::Marker> = flack1
        .markers
        .iter()
        .filter(|m| m.text.starts_with("node started (tracer armed)"))
        .collect();
    assert_eq!(starts.len(), 2, "flack1 was started twice");
    for (life, marker) in starts.iter().enumerate() {
        let first = flack1.life(life).next().expect("events in every life");
        assert!(
            first.line > marker.line && first.micros() >= marker.micros(),
            "flack1 life {} starts at line {}",
            life + 1,
            marker.line
        );
    }
    let flack2 = gproc_dist_trace("flack2@vm");
    assert_eq!(
        flack2.node_indices[0]
            .clone()
            .into_iter()
            .collect::<Vec<_>>(),
        expected(&[(6815, "flack1@vm"), (6817, "flack3@vm")])
    );
    let flack3 = gproc_dist_trace("flack3@vm");
    assert_eq!(
        flack3.node_indices[0]
            .clone()
            .into_iter()
            .collect::<Vec<_>>(),
        expected(&[(6815, "flack1@vm"), (6816, "flack2@vm")])
    );
}

/// How far apart two VMs' trace clocks may be (each VM corrects its own
/// time; a broadcast was observed arriving 0.35 ms "before" it was sent).
const CLOCK_SKEW_MICROS: i64 = 5_000;

/// Every message one gproc_dist sent another is, after index resolution,
/// the very term the receiver's trace shows (pids and references included),
/// unless the receiver was not running then.
#[test]
fn messages_between_nodes_are_the_same_term_in_both_traces() {
    let files: Vec<TraceFile> = NODES.iter().map(|n| gproc_dist_trace(n)).collect();
    let by_node = |node: &str| files.iter().find(|f| f.node == node);
    // When each node's gproc_dist was running: first to last event of a life.
    let running = |file: &TraceFile, at: i64| {
        (0..file.lives()).find(|&life| {
            let first = file.life(life).next().map(Event::micros);
            let last = file.life(life).last().map(Event::micros);
            matches!((first, last), (Some(first), Some(last))
                if first - CLOCK_SKEW_MICROS <= at && at <= last + CLOCK_SKEW_MICROS)
        })
    };
    let mut matched: BTreeSet<(String, usize)> = BTreeSet::new();
    let mut delivered = 0;
    let mut lost = Vec::new();
    for file in &files {
        let sends = file
            .events
            .iter()
            .filter(|e| e.dir == Dir::Send && e.process.is(" gproc_dist"));
        for send in sends {
            let to = match &send.peer {
                Peer::Registered {
                    name,
                    node: Some(node),
                } if name == "gproc_dist" => node.clone(),
                Peer::Process(process) if process.is(" gproc_dist") => {
                    process.pid.node.name.clone()
                }
                _ => continue,
            };
            if to == file.node {
                continue;
            }
            let receiver = by_node(&to).unwrap_or_else(|| panic!("no trace of {to}"));
            let Some(life) = running(receiver, send.micros()) else {
                lost.push(format!(
                    "{} line {} → {to}: {}",
                    file.name, send.line, send.term
                ));
                continue;
            };
            let found = receiver.life(life).find(|recv| {
                recv.dir == Dir::Recv
                    && recv.process.is(" gproc_dist")
                    && recv.micros() >= send.micros() - CLOCK_SKEW_MICROS
                    && recv.term == send.term
                    && !matched.contains(&(to.clone(), recv.line))
            });
            match found {
                Some(recv) => {
                    matched.insert((to.clone(), recv.line));
                    delivered += 1;
                }
                None => panic!(
                    "{} line {}: {} sent to {to} (running) never arrives there",
                    file.node, send.line, send.term
                ),
            }
        }
    }
    // And every message that names another gproc_dist as its sender was sent.
    for file in &files {
        let receipts = file
            .events
            .iter()
            .filter(|e| e.dir == Dir::Recv && e.process.is(" gproc_dist"));
        for recv in receipts {
            // Election messages name their sender's gproc_dist, heartbeats
            // its node.
            let names_a_sender = match &recv.peer {
                Peer::Process(process) => process.is(" gproc_dist"),
                Peer::Node(_) => true,
                _ => false,
            };
            let from_other = names_a_sender && recv.peer.node() != Some(file.node.as_str());
            assert!(
                !from_other || matched.contains(&(file.node.clone(), recv.line)),
                "{} line {}: {} arrived but no trace sent it",
                file.node,
                recv.line,
                recv.term
            );
        }
    }
    eprintln!(
        "delivered {delivered}; lost (receiver not running):\n{}",
        lost.join("\n")
    );
    assert_eq!(delivered, 98, "messages between gproc_dist processes");
    // flack1's boot messages to flack2/flack3 and flack2's join to flack3
    // before those started; flack2's and flack3's heartbeats to the killed
    // flack1.
    assert_eq!(lost.len(), 10, "{lost:#?}");
}

#[test]
fn election_replay_matches_every_nodes_election_sends() {
    let reports = replay_all();
    assert_eq!(
        reports.len(),
        4,
        "flack1 has two lives, flack2 and flack3 one each"
    );
    // (node, life, incarnation, election messages in, DOWNs in, timers in,
    //  election messages sent, monitors, timer start/cancel)
    for (node, life, incarnation, messages, downs, timers, sends, monitors, timer_ops) in [
        ("flack1@vm", 0, 0, 9, 2, 4, 16, 4, 2),
        ("flack1@vm", 1, 1, 6, 0, 0, 7, 1, 2),
        ("flack2@vm", 0, 0, 14, 2, 8, 15, 4, 4),
        ("flack3@vm", 0, 0, 10, 2, 0, 11, 3, 4),
    ] {
        let report = report_of(&reports, node, life);
        let who = format!("{node} life {}", life + 1);
        assert_eq!(report.incarnation, incarnation, "{who}: incarnation");
        assert_eq!(
            report.election_messages_in, messages,
            "{who}: election messages replayed"
        );
        assert_eq!(report.downs_in, downs, "{who}: {{ldr,'DOWN',_}} replayed");
        assert_eq!(
            report.timers_in, timers,
            "{who}: own timer messages replayed"
        );
        assert_eq!(
            report.election_sends, sends,
            "{who}: election messages matched"
        );
        assert_eq!(report.monitors, monitors, "{who}: monitors matched");
        assert_eq!(
            report.timer_ops, timer_ops,
            "{who}: candidate timer starts/cancels"
        );
        // The transcript never needs the machine's additions.
        assert_eq!(report.extras, Vec::<String>::new(), "{who}: extra sends");
        assert_eq!(report.left_postponed, 0, "{who}: stuck in an election");
        // The timers our machine arms are the ones that fired: each own
        // heartbeat was armed once; each {send_checklead} was sent by the
        // node to itself or by the helper of a checklead round, and every
        // round's helper sent one back (no life ends within 5 s of a round).
        assert_eq!(
            report.own_heartbeats_in, report.own_heartbeats_armed,
            "{who}: own heartbeats"
        );
        assert_eq!(
            report.send_checkleads_in,
            report.self_checkleads + report.checklead_rounds,
            "{who}: {{send_checklead}} messages"
        );
    }
    // Roles, as get_leader answered on each node and as the scenario says.
    let flack1 = report_of(&reports, "flack1@vm", 0);
    assert!(flack1.final_is_leader && flack1.elected == 1 && flack1.surrendered.is_empty());
    let flack1_again = report_of(&reports, "flack1@vm", 1);
    assert_eq!(flack1_again.surrendered, ["flack2@vm"]);
    assert!(
        !flack1_again.final_is_leader,
        "leadership does not move back to flack1"
    );
    assert_eq!(flack1_again.final_leader.as_deref(), Some("flack2@vm"));
    let flack2 = report_of(&reports, "flack2@vm", 0);
    assert_eq!(flack2.surrendered, ["flack1@vm"]);
    assert!(flack2.final_is_leader && flack2.elected == 1);
    let flack3 = report_of(&reports, "flack3@vm", 0);
    assert_eq!(flack3.surrendered, ["flack1@vm", "flack2@vm"]);
    assert_eq!(flack3.final_leader.as_deref(), Some("flack2@vm"));
    let answered: usize = reports.iter().map(|r| r.get_leader_checked).sum();
    assert_eq!(
        answered, 7,
        "get_leader answers checked against the machine"
    );
}

#[test]
fn registry_replay_matches_leader_broadcasts_and_replies() {
    let reports = replay_all();
    // (node, life, calls served, calls forwarded, replies relayed,
    //  casts served, casts forwarded, broadcasts, from_leader applied,
    //  'DOWN' casts)
    for (node, life, served, forwarded, relayed, casts, casts_fwd, rounds, applied, downs) in [
        ("flack1@vm", 0, 8, 0, 0, 3, 0, 9, 0, 1),
        ("flack1@vm", 1, 0, 3, 3, 0, 2, 0, 7, 2),
        ("flack2@vm", 0, 5, 3, 3, 10, 1, 8, 9, 5),
        ("flack3@vm", 0, 0, 3, 3, 0, 5, 0, 17, 5),
    ] {
        let report = report_of(&reports, node, life);
        let who = format!("{node} life {}", life + 1);
        assert_eq!(report.calls_served, served, "{who}: leader calls served");
        assert_eq!(report.calls_forwarded, forwarded, "{who}: calls forwarded");
        assert_eq!(report.replies_relayed, relayed, "{who}: replies relayed");
        assert_eq!(report.casts_served, casts, "{who}: casts served as leader");
        assert_eq!(report.casts_forwarded, casts_fwd, "{who}: casts forwarded");
        assert_eq!(report.broadcasts, rounds, "{who}: broadcast rounds");
        assert_eq!(
            report.from_leader_applied, applied,
            "{who}: from_leader applied"
        );
        assert_eq!(report.down_casts, downs, "{who}: pid_is_DOWN casts");
        assert_eq!(
            report.unanswered_calls, 0,
            "{who}: forwarded calls unanswered"
        );
    }
    // handle_DOWN after flack1's kill: flack2 purged carol's n and p right
    // after winning.
    let flack2 = report_of(&reports, "flack2@vm", 0);
    assert_eq!((flack2.purges, flack2.purge_broadcasts), (1, 1));
    // Everyone ends with the same (empty) registry.
    for report in &reports[1..] {
        assert_eq!(
            report.final_table,
            Some(tuple(vec![atom("globals"), list(vec![])])),
            "{} life {}",
            report.node,
            report.life + 1
        );
    }
}

#[test]
fn ldr_snapshots_equal_our_tables() {
    let reports = replay_all();
    let sent: Vec<(String, usize, usize)> = reports
        .iter()
        .map(|r| (r.node.clone(), r.life, r.ldr_sent))
        .collect();
    assert_eq!(
        sent,
        [
            ("flack1@vm".to_string(), 0, 5),
            ("flack1@vm".to_string(), 1, 0),
            ("flack2@vm".to_string(), 0, 4),
            ("flack3@vm".to_string(), 0, 0),
        ],
        "ldr snapshots compared with the sender's table"
    );
    let surrendered: usize = reports.iter().map(|r| r.surrender_tables_checked).sum();
    assert_eq!(
        surrendered, 4,
        "tables compared with the snapshot after surrendered"
    );
}

/// The JSON frames the original nodes sent their websocket clients
/// (`scenario.txt`: `<time> <user> << op=1 <json>`).
fn frames_sent_to_clients() -> Vec<String> {
    let path = trace_support::transcripts_dir().join("scenario.txt");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    text.lines()
        .filter_map(|line| {
            line.split_once(" << op=1 ")
                .map(|(_, json)| json.to_string())
        })
        .collect()
}

/// Every chat record the websocket processes exchanged decodes and encodes
/// back to the same term, and each one a process received becomes exactly
/// the frame the original sent its client (byte for byte), but for the one
/// that reached a process whose client had already said goodbye.
#[test]
fn chat_records_in_the_websocket_traces_round_trip() {
    let frames = frames_sent_to_clients();
    assert!(
        frames.len() > 20,
        "frames read from scenario.txt: {}",
        frames.len()
    );
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut delivered = 0;
    let mut not_forwarded = Vec::new();
    for node in NODES {
        let file = trace_support::load(&format!("{node}.ws.trace"));
        for event in &file.events {
            let Some(kind) = as_tuple(&event.term)
                .and_then(|f| f.first())
                .and_then(as_atom)
            else {
                continue;
            };
            if !matches!(kind, "user_joined" | "chat_message" | "user_left") {
                continue;
            }
            let decoded = records::decode(&event.term).unwrap_or_else(|error| {
                panic!("{} line {}: {error}: {}", file.name, event.line, event.raw)
            });
            assert_eq!(
                records::encode(&decoded),
                event.term,
                "{} line {}: re-encoded record",
                file.name,
                event.line
            );
            *counts.entry(kind.to_string()).or_default() += 1;
            if event.dir == Dir::Recv {
                if frames.iter().any(|frame| frame == decoded.json.as_str()) {
                    delivered += 1;
                } else {
                    not_forwarded.push((file.name.clone(), decoded.json.as_str().to_string()));
                }
            }
        }
    }
    eprintln!("{counts:?}; {delivered} received and turned into client frames");
    assert_eq!(counts.get("user_joined"), Some(&18), "user_joined records");
    assert_eq!(
        counts.get("chat_message"),
        Some(&14),
        "chat_message records"
    );
    assert_eq!(counts.get("user_left"), Some(&16), "user_left records");
    assert_eq!(delivered, 23, "received records that became client frames");
    // dave's own user_left: his process sends it to the room, itself
    // included, while closing after client_goodbye; the original answers
    // server_goodbye and closes without forwarding it.
    let dave = "eea3693b0ba5d8b06aaba2f9b54bae7b";
    assert_eq!(
        not_forwarded,
        [(
            "flack1@vm.ws.trace".to_string(),
            format!(
                "{{\"record\":\"left\",\"chat_name\":\"foobar\",\"user_id\":\"{dave}\",\
                 \"timestamp\":\"2026-11-28T04:46:41Z\",\"sequence\":42}}"
            )
        )],
        "received records no client was sent"
    );
}
