//! The gen_leader election (garret-smith/gen_leader_revival @ d9689e6, the
//! version flack pins) as a pure state machine.
//!
//! It mirrors gen_leader's `#election{}` record and its two receive loops:
//! `safe_loop` (an election is running: [`Election::in_election`]) and `loop`
//! (normal operation as leader or follower). Each incoming election message or
//! local timer is an [`Input`]; the machine answers with [`Effect`]s (messages
//! to send, monitors to set up, timers, and role changes for the registry
//! layer to act on). It never touches a socket or a clock, so any
//! interleaving can be replayed in a test, including the transcripts captured
//! from a cluster of original nodes.
//!
//! Everything here follows gen_leader's behaviour message by message, since
//! Erlang candidates wait for exact answers (a silent candidate stalls the
//! whole cluster). Two additions get this node out of stalls gen_leader
//! itself can fall into, using only messages Erlang peers already answer:
//! in `elec1` a `checklead` from a lower candidate is answered with a
//! heartbeat (the partial-partition fix of the protocol notes, §3.6); the
//! candidate timer sends `join` to the connected lower candidates in `elec1`
//! and to the awaited node in `wait`, which any node in normal operation
//! answers with the real leader; and an acknowledgement that arrives after
//! this node stopped collecting them is answered with `hasLeader` instead
//! of silence. The property test of `tests/election_props.rs` found each of
//! these stalls in gen_leader's own algorithm.

use std::sync::Arc;

use crate::node::Pid;

/// Candidate-timer ticks a node stays in `wait` for an `ldr` that does not
/// come before it starts an election of its own. gen_leader waits for ever:
/// the node it acknowledged may have restarted (its new life knows nothing
/// of the election, and a monitor set on the new life never fires for the
/// old one), or two nodes may each wait on the other. With the default 5 s
/// heartbeat this gives a slow leader 10 to 15 s to finish its round.
pub const WAIT_PATIENCE: u8 = 3;

/// A node name, `name@host`.
pub type NodeName = Arc<str>;

/// An election id `{Pos, Incarnation, NextEl}`; only ever compared whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Elid {
    /// 1-based position of the node that started the round.
    pub pos: i64,
    /// That node's incarnation.
    pub incarnation: i64,
    /// That node's election counter.
    pub round: i64,
}

/// Where to send a message: the registered `gproc_dist` of a node, or a pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// `{gproc_dist, Node}`.
    Name(NodeName),
    /// A pid learned from an earlier message.
    Pid(Pid),
}

/// The argument of a `heartbeat` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Beat {
    /// `{heartbeat, Node}`.
    Node(NodeName),
    /// `{heartbeat, Pid}` (the `elec1` answer to a `checklead`).
    Pid(Pid),
}

/// The election messages candidates exchange.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// `{join, CandPid}`.
    Join(Pid),
    /// `{hasLeader, LeaderPid, Elid, SenderPid}`.
    HasLeader {
        /// The leader.
        leader: Pid,
        /// The leader's election id.
        elid: Elid,
        /// Who answered.
        from: Pid,
    },
    /// `{isLeader, Elid, CandPid}`.
    IsLeader {
        /// The election id the candidate adopted.
        elid: Elid,
        /// The candidate.
        from: Pid,
    },
    /// `{notLeader, Elid, SenderPid}`.
    NotLeader {
        /// Echoed election id.
        elid: Elid,
        /// Who answered.
        from: Pid,
    },
    /// `{heartbeat, NodeOrPid}`.
    Heartbeat(Beat),
    /// `{halt, Elid, CandPid}`.
    Halt {
        /// The halter's election id.
        elid: Elid,
        /// The halter.
        from: Pid,
    },
    /// `{ackLeader, Elid, SenderPid}`.
    AckLeader {
        /// Echoed election id.
        elid: Elid,
        /// Who acknowledged.
        from: Pid,
    },
    /// `{ldr, Synch, Elid, Workers, Candidates, LeaderPid}`. The snapshot
    /// (`Synch`) is the registry's business and travels as a raw term.
    Ldr {
        /// `{globals, Objects}`.
        synch: eetf::Term,
        /// The leader's election id.
        elid: Elid,
        /// Worker nodes (unused by gproc_dist).
        workers: Vec<NodeName>,
        /// The leader's candidate list.
        candidates: Vec<NodeName>,
        /// The leader.
        from: Pid,
    },
    /// `{normQ, Elid, LeaderPid}`.
    NormQ {
        /// The leader's election id.
        elid: Elid,
        /// The leader.
        from: Pid,
    },
    /// `{notNorm, Elid, SenderPid}`.
    NotNorm {
        /// Echoed election id.
        elid: Elid,
        /// Who answered.
        from: Pid,
    },
    /// `{checklead, LeaderNode}`.
    Checklead(NodeName),
    /// `{election}`.
    Election,
    /// `{update_candidates, Elid, Candidates, LeaderPid}`.
    UpdateCandidates {
        /// The leader's election id.
        elid: Elid,
        /// The new candidate list.
        candidates: Vec<NodeName>,
        /// The leader.
        from: Pid,
    },
}

/// What the machine reacts to.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A message from another candidate.
    Message(Message),
    /// The monitor of a node's `gproc_dist` fired (`{ldr,'DOWN',Node}`).
    Down(NodeName),
    /// The repeating candidate timer (`{candidate_timer}`).
    CandidateTimer,
    /// The leader's own one-shot heartbeat (`{heartbeat, node()}`).
    OwnHeartbeat,
    /// `{send_checklead}`.
    SendChecklead,
}

/// What the owner of the machine must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send an election message.
    Send(Dest, Message),
    /// Monitor `gproc_dist` on this node (by name or through this pid); when
    /// the monitor fires, feed [`Input::Down`] once. One monitor per node.
    Monitor(Dest),
    /// Start the repeating candidate timer (every heartbeat interval).
    StartCandidateTimer,
    /// Stop it.
    CancelCandidateTimer,
    /// Feed [`Input::OwnHeartbeat`] after one heartbeat interval.
    ScheduleOwnHeartbeat,
    /// Feed [`Input::SendChecklead`] now.
    CheckleadNow,
    /// Send `{checklead, me}` to these nodes now, then feed
    /// [`Input::SendChecklead`] after one heartbeat interval.
    SendCheckleads(Vec<NodeName>),
    /// This node won: send `{ldr, Synch, ...}` built from a complete
    /// snapshot to the `gproc_dist` of each node in `acks` (see
    /// [`Election::ldr`]), then enter normal operation as leader.
    Elected {
        /// Nodes that acknowledged.
        acks: Vec<NodeName>,
    },
    /// A candidate joined under this leader: send it `ldr` with a snapshot.
    Accept(Pid),
    /// Another node won: apply its snapshot (gproc's `surrendered`).
    Surrendered {
        /// The leader.
        leader: Pid,
        /// Its `{globals, Objects}`.
        synch: eetf::Term,
    },
    /// As leader: purge the registrations of a candidate node that went down
    /// and broadcast the result (gproc's `handle_DOWN`).
    NodeDown(NodeName),
    /// An election started; queue calls, casts and registry updates until
    /// the next [`Effect::Elected`] or [`Effect::Surrendered`].
    ElectionStarted,
}

/// Election progress (gen_leader's `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Stage 1: waiting for every lower candidate to be down.
    Elec1,
    /// Stage 2: halting higher candidates one at a time.
    Elec2,
    /// Acknowledged someone; waiting for its `ldr`.
    Wait,
    /// Normal operation.
    Norm,
}

/// gen_leader's `#election{}` for this node.
#[derive(Debug, Clone)]
pub struct Election {
    me: NodeName,
    self_pid: Pid,
    candidates: Vec<NodeName>,
    incarnation: i64,
    next_round: i64,
    elid: Elid,
    status: Status,
    in_election: bool,
    leader: Option<Pid>,
    leader_node: Option<NodeName>,
    previous_leader: Option<Pid>,
    down: Vec<NodeName>,
    monitored: Vec<NodeName>,
    acks: Vec<NodeName>,
    pendack: Option<NodeName>,
    candidate_timer: bool,
    /// Candidate-timer ticks spent in the current `wait` without the
    /// awaited `ldr` (see [`WAIT_PATIENCE`]).
    wait_ticks: u8,
    /// Candidates whose `ackLeader` came after this node stopped collecting
    /// acknowledgements; they wait for an `ldr` from us that will not come.
    stray_acks: Vec<Pid>,
}

impl Election {
    /// A candidate that has not started yet. `candidates` is sorted here as
    /// gen_leader does (byte order of the names, Erlang's atom order).
    pub fn new(
        me: NodeName,
        self_pid: Pid,
        mut candidates: Vec<NodeName>,
        incarnation: i64,
    ) -> Self {
        candidates.sort();
        candidates.dedup();
        Self {
            me,
            self_pid,
            candidates,
            incarnation,
            next_round: 0,
            elid: Elid {
                pos: 0,
                incarnation,
                round: 0,
            },
            status: Status::Elec1,
            in_election: true,
            leader: None,
            leader_node: None,
            previous_leader: None,
            down: Vec::new(),
            monitored: Vec::new(),
            acks: Vec::new(),
            pendack: None,
            candidate_timer: false,
            wait_ticks: 0,
            stray_acks: Vec::new(),
        }
    }

    /// Starts the candidate: stage 1, then `join` to every other candidate
    /// (or straight to leadership when it is the only one).
    pub fn start(&mut self) -> Vec<Effect> {
        let mut out = vec![Effect::ElectionStarted];
        self.start_stage1(&mut out);
        if self.candidates.len() == 1 && self.candidates[0] == self.me {
            self.has_become_leader(&mut out);
        } else {
            for node in self.candidates.clone() {
                if node != self.me {
                    out.push(Effect::Send(
                        Dest::Name(node),
                        Message::Join(self.self_pid.clone()),
                    ));
                }
            }
            // A pos-1 node may already have won when it is alone.
            self.has_become_leader(&mut out);
        }
        out
    }

    /// Whether an election is running (gen_leader's `safe_loop`).
    pub fn in_election(&self) -> bool {
        self.in_election
    }

    /// Whether this node is the leader in normal operation.
    pub fn is_leader(&self) -> bool {
        !self.in_election && self.leader.as_ref() == Some(&self.self_pid)
    }

    /// The leader's pid, once known.
    pub fn leader(&self) -> Option<&Pid> {
        self.leader.as_ref()
    }

    /// The leader's node, once known.
    pub fn leader_node(&self) -> Option<&NodeName> {
        self.leader_node.as_ref()
    }

    /// The current election id.
    pub fn elid(&self) -> Elid {
        self.elid
    }

    /// Election progress.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The sorted candidate list.
    pub fn candidates(&self) -> &[NodeName] {
        &self.candidates
    }

    /// Candidates believed down.
    pub fn down(&self) -> &[NodeName] {
        &self.down
    }

    /// Nodes whose `gproc_dist` is monitored: the leader's broadcast list.
    pub fn monitored(&self) -> &[NodeName] {
        &self.monitored
    }

    /// This node's pid as a candidate.
    pub fn self_pid(&self) -> &Pid {
        &self.self_pid
    }

    /// The `ldr` message this leader sends, around a snapshot.
    pub fn ldr(&self, synch: eetf::Term) -> Message {
        Message::Ldr {
            synch,
            elid: self.elid,
            workers: Vec::new(),
            candidates: self.candidates.clone(),
            from: self.self_pid.clone(),
        }
    }

    /// Forgets `down` entries for nodes that are connected again (gen_leader's
    /// `check_candidates`, run on every `from_leader`).
    pub fn refresh_down(&mut self, connected: impl Fn(&str) -> bool) {
        self.down.retain(|node| !connected(node));
    }

    /// Whether a `{from_leader, Ops}` sent by `sender` may be applied, and if
    /// so, [`Election::refresh_down`] as gen_leader does on one. Only the
    /// current leader's broadcasts count, and only on a follower in normal
    /// operation: an Erlang `from_leader` carries no sender, but on the wire
    /// it comes as a `REG_SEND` from the leader's `gproc_dist`, so a
    /// broadcast from anyone else (or with no sender) is a forgery and must
    /// not change this node's view: before this check any connected peer
    /// could take a candidate out of the leader's down list for good.
    pub fn accept_from_leader(
        &mut self,
        sender: Option<&Pid>,
        connected: impl Fn(&str) -> bool,
    ) -> bool {
        let from_leader = !self.in_election
            && !self.is_leader()
            && sender.is_some()
            && sender == self.leader.as_ref();
        if from_leader {
            self.refresh_down(connected);
        }
        from_leader
    }

    /// Handles one input; `connected` tells whether a node's connection is up.
    pub fn handle(&mut self, input: Input, connected: impl Fn(&str) -> bool) -> Vec<Effect> {
        let mut out = Vec::new();
        if self.in_election {
            self.safe_loop(input, &connected, &mut out);
        } else {
            self.normal_loop(input, &mut out);
        }
        out
    }

    fn pos(&self, node: &str) -> usize {
        self.candidates
            .iter()
            .position(|candidate| &**candidate == node)
            .map(|index| index + 1)
            .unwrap_or(100_000)
    }

    fn lesser(&self) -> Vec<NodeName> {
        self.candidates
            .iter()
            .take_while(|node| **node != self.me)
            .cloned()
            .collect()
    }

    fn start_stage1(&mut self, out: &mut Vec<Effect>) {
        let pos = self.pos(&self.me) as i64;
        self.elid = Elid {
            pos,
            incarnation: self.incarnation,
            round: self.next_round,
        };
        self.next_round += 1;
        self.down.clear();
        self.status = Status::Elec1;
        self.in_election = true;
        if pos == 1 {
            self.start_stage2(out);
        } else {
            let lesser = self.lesser();
            self.mon_nodes(&lesser, out);
        }
    }

    fn start_stage2(&mut self, out: &mut Vec<Effect>) {
        self.status = Status::Elec2;
        self.pendack = Some(self.me.clone());
        self.acks.clear();
        self.contin_stage2(out);
    }

    fn contin_stage2(&mut self, out: &mut Vec<Effect>) {
        let pendack = self.pendack.clone().unwrap_or_else(|| self.me.clone());
        let pos = self.pos(&pendack);
        if pos < self.candidates.len() {
            let next = self.candidates[pos].clone();
            self.mon_nodes(std::slice::from_ref(&next), out);
            out.push(Effect::Send(
                Dest::Name(next.clone()),
                Message::Halt {
                    elid: self.elid,
                    from: self.self_pid.clone(),
                },
            ));
            self.pendack = Some(next);
        } else {
            self.previous_leader = self.leader.take();
            self.leader = Some(self.self_pid.clone());
            self.leader_node = Some(self.me.clone());
            self.status = Status::Norm;
        }
    }

    /// gen_leader's `halting`: adopt the candidate that halted or queried us.
    fn halting(&mut self, elid: Elid, from: &Pid, out: &mut Vec<Effect>) {
        self.mon_pid(from, out);
        self.elid = elid;
        self.status = Status::Wait;
        self.wait_ticks = 0;
        self.ensure_candidate_timer(out);
        self.leader_node = Some(from.node.clone());
        self.down.retain(|node| *node != from.node);
    }

    /// Heartbeat and monitor each node (not this one); starts the
    /// candidate timer on first use.
    fn mon_nodes(&mut self, nodes: &[NodeName], out: &mut Vec<Effect>) {
        self.ensure_candidate_timer(out);
        for node in nodes {
            if *node == self.me {
                continue;
            }
            out.push(Effect::Send(
                Dest::Name(node.clone()),
                Message::Heartbeat(Beat::Node(self.me.clone())),
            ));
            if !self.monitored.contains(node) {
                self.monitored.push(node.clone());
                out.push(Effect::Monitor(Dest::Name(node.clone())));
            }
        }
    }

    fn mon_pid(&mut self, pid: &Pid, out: &mut Vec<Effect>) {
        if !self.monitored.contains(&pid.node) {
            self.monitored.push(pid.node.clone());
            out.push(Effect::Monitor(Dest::Pid(pid.clone())));
        }
    }

    /// Starts the candidate timer unless it runs. A node in `wait` needs it
    /// too: it is what ends a wait for an `ldr` that never comes.
    fn ensure_candidate_timer(&mut self, out: &mut Vec<Effect>) {
        if !self.candidate_timer {
            self.candidate_timer = true;
            out.push(Effect::StartCandidateTimer);
        }
    }

    fn cancel_candidate_timer(&mut self, out: &mut Vec<Effect>) {
        if self.candidate_timer {
            self.candidate_timer = false;
            out.push(Effect::CancelCandidateTimer);
        }
    }

    /// gen_leader's `hasBecomeLeader`: when stage 2 completed, announce it.
    fn has_become_leader(&mut self, out: &mut Vec<Effect>) {
        if !(self.status == Status::Norm && self.leader.as_ref() == Some(&self.self_pid)) {
            return;
        }
        self.in_election = false;
        out.push(Effect::Elected {
            acks: self.acks.clone(),
        });
        self.redirect_stray_acks(out);
        out.push(Effect::ScheduleOwnHeartbeat);
        out.push(Effect::CheckleadNow);
        if let Some(previous) = self.previous_leader.clone()
            && self.down.contains(&previous.node)
        {
            out.push(Effect::NodeDown(previous.node.clone()));
        }
    }

    fn safe_loop(
        &mut self,
        input: Input,
        connected: &impl Fn(&str) -> bool,
        out: &mut Vec<Effect>,
    ) {
        match input {
            Input::Message(message) => match message {
                // Dropped, not deferred, during an election.
                Message::UpdateCandidates { .. } => {}
                Message::Halt { elid, from } => {
                    self.halting(elid, &from, out);
                    out.push(Effect::Send(
                        Dest::Pid(from),
                        Message::AckLeader {
                            elid,
                            from: self.self_pid.clone(),
                        },
                    ));
                }
                Message::HasLeader { leader, elid, .. } => {
                    self.mon_pid(&leader, out);
                    if self.status == Status::Elec2 && !self.acks.is_empty() {
                        for node in &self.acks {
                            out.push(Effect::Send(
                                Dest::Name(node.clone()),
                                Message::HasLeader {
                                    leader: leader.clone(),
                                    elid,
                                    from: self.self_pid.clone(),
                                },
                            ));
                        }
                    }
                    self.elid = elid;
                    self.status = Status::Wait;
                    self.wait_ticks = 0;
                    self.ensure_candidate_timer(out);
                    self.leader_node = Some(leader.node.clone());
                    self.down.retain(|node| *node != leader.node);
                    self.acks.clear();
                    out.push(Effect::Send(
                        Dest::Pid(leader),
                        Message::IsLeader {
                            elid,
                            from: self.self_pid.clone(),
                        },
                    ));
                }
                Message::IsLeader { elid, from } => {
                    out.push(Effect::Send(
                        Dest::Pid(from),
                        Message::NotLeader {
                            elid,
                            from: self.self_pid.clone(),
                        },
                    ));
                }
                Message::NotLeader { elid, .. } => {
                    if self.status == Status::Wait && self.elid == elid {
                        self.start_stage1(out);
                    }
                }
                Message::AckLeader { elid, from } => {
                    if self.status == Status::Elec2
                        && self.elid == elid
                        && self.pendack.as_ref() == Some(&from.node)
                    {
                        self.acks.insert(0, from.node.clone());
                        self.contin_stage2(out);
                    } else if !self.stray_acks.contains(&from) {
                        self.stray_acks.push(from);
                    }
                    self.has_become_leader(out);
                }
                Message::Ldr {
                    synch,
                    elid,
                    candidates,
                    from,
                    ..
                } => {
                    if self.status == Status::Wait && self.elid == elid {
                        self.cancel_candidate_timer(out);
                        self.mon_pid(&from, out);
                        self.previous_leader = self.leader.take();
                        self.leader = Some(from.clone());
                        self.leader_node = Some(from.node.clone());
                        let mut candidates = candidates;
                        if !candidates.is_empty() {
                            // gen_leader adopts the leader's list as given.
                            candidates.dedup();
                            self.candidates = candidates;
                        }
                        self.status = Status::Norm;
                        self.in_election = false;
                        self.redirect_stray_acks(out);
                        out.push(Effect::Surrendered {
                            leader: from,
                            synch,
                        });
                    }
                }
                Message::NormQ { elid, from } => {
                    if self.status == Status::Elec1
                        || (self.status == Status::Wait && self.elid == elid)
                    {
                        self.halting(elid, &from, out);
                        out.push(Effect::Send(
                            Dest::Pid(from),
                            Message::NotNorm {
                                elid,
                                from: self.self_pid.clone(),
                            },
                        ));
                    }
                }
                Message::Checklead(node) => {
                    // gen_leader answers a higher candidate's checklead in
                    // elec1 with a heartbeat; answering lower ones too (the
                    // leader that re-established a lost link) ends the
                    // partial-partition stall.
                    if self.status == Status::Elec1
                        && self.candidates.contains(&node)
                        && node != self.me
                    {
                        out.push(Effect::Send(
                            Dest::Name(node),
                            Message::Heartbeat(Beat::Pid(self.self_pid.clone())),
                        ));
                    }
                }
                // Queued by the owner in gen_leader (join) or ignored here.
                Message::Join(_)
                | Message::NotNorm { .. }
                | Message::Election
                | Message::Heartbeat(_) => {}
            },
            Input::CandidateTimer => {
                match self.status {
                    Status::Elec1 => self.probe_lower_candidates(connected, out),
                    Status::Wait if self.wait_ticks + 1 >= WAIT_PATIENCE => {
                        // The awaited leader is gone or stuck: elect anew
                        // (halts and heartbeats every peer answers).
                        self.wait_ticks = 0;
                        self.start_stage1(out);
                        self.has_become_leader(out);
                        return;
                    }
                    Status::Wait => {
                        self.wait_ticks += 1;
                        self.probe_awaited_node(connected, out);
                    }
                    Status::Elec2 | Status::Norm => {}
                }
                if self.down.is_empty() {
                    // gen_leader stops the timer here; the probes above need
                    // it while stage 1 or a wait can still stall.
                    if self.status == Status::Elec2 {
                        self.cancel_candidate_timer(out);
                    }
                } else {
                    for node in &self.down {
                        if !connected(node) {
                            out.push(Effect::Send(
                                Dest::Name(node.clone()),
                                Message::Heartbeat(Beat::Node(self.me.clone())),
                            ));
                        }
                    }
                }
            }
            Input::Down(node) => self.down_in_election(node, out),
            // Deferred by gen_leader until the election ends; they carry no
            // state, so dropping them here is equivalent.
            Input::OwnHeartbeat | Input::SendChecklead => {}
        }
    }

    fn down_in_election(&mut self, node: NodeName, out: &mut Vec<Effect>) {
        self.monitored.retain(|monitored| *monitored != node);
        if !self.candidates.contains(&node) {
            return;
        }
        self.down.insert(0, node.clone());
        let waiting_on_it = self.status == Status::Wait && self.leader_node.as_ref() == Some(&node);
        if self.pos(&node) < self.pos(&self.me) {
            let lesser = self.lesser();
            let all_lesser_down = lesser.iter().all(|lower| self.down.contains(lower));
            if waiting_on_it {
                self.start_stage1(out);
            } else if self.status == Status::Elec1 && all_lesser_down {
                self.down = lesser;
                self.start_stage2(out);
            }
        } else if self.status == Status::Elec2 && self.pendack.as_ref() == Some(&node) {
            self.contin_stage2(out);
        } else if waiting_on_it {
            self.start_stage1(out);
        }
        self.has_become_leader(out);
    }

    fn normal_loop(&mut self, input: Input, out: &mut Vec<Effect>) {
        let leader = self.leader.clone().unwrap_or_else(|| self.self_pid.clone());
        let is_leader = leader == self.self_pid;
        match input {
            Input::Message(message) => match message {
                Message::Join(from) | Message::Halt { from, .. } => {
                    out.push(Effect::Send(
                        Dest::Pid(from),
                        Message::HasLeader {
                            leader,
                            elid: self.elid,
                            from: self.self_pid.clone(),
                        },
                    ));
                }
                Message::UpdateCandidates {
                    elid, candidates, ..
                } => {
                    if self.elid == elid {
                        self.candidates = candidates;
                    }
                }
                Message::IsLeader { elid, from } => {
                    if is_leader {
                        if !self.candidates.contains(&from.node) {
                            let mut updated = self.candidates.clone();
                            updated.push(from.node.clone());
                            for node in &self.candidates {
                                if *node != self.me && !self.down.contains(node) {
                                    out.push(Effect::Send(
                                        Dest::Name(node.clone()),
                                        Message::UpdateCandidates {
                                            elid: self.elid,
                                            candidates: updated.clone(),
                                            from: self.self_pid.clone(),
                                        },
                                    ));
                                }
                            }
                            self.candidates = updated;
                        }
                        self.down.retain(|node| *node != from.node);
                        self.mon_pid(&from, out);
                        out.push(Effect::Accept(from));
                    } else {
                        out.push(Effect::Send(
                            Dest::Pid(from),
                            Message::NotLeader {
                                elid,
                                from: self.self_pid.clone(),
                            },
                        ));
                    }
                }
                Message::NotNorm { elid, from } => {
                    if is_leader && self.elid == elid {
                        self.down.retain(|node| *node != from.node);
                        self.mon_pid(&from, out);
                        out.push(Effect::Accept(from));
                    }
                }
                Message::Election => {
                    // gen_leader's leader starts stage 1 without a word to
                    // its followers; they keep answering `halt` with
                    // `hasLeader` naming it, the halter's `isLeader` gets
                    // `notLeader`, and the lowest candidate restarts its
                    // election for ever (seen after a 1|1|1 heal, and in
                    // the partition property test). A leader that gives up
                    // its lead tells every candidate, as on a `checklead`.
                    if is_leader {
                        self.send_election_to_candidates(out);
                    }
                    out.push(Effect::ElectionStarted);
                    self.start_stage1(out);
                    self.has_become_leader(out);
                }
                Message::Checklead(node) => {
                    if self.leader_node.as_ref() != Some(&node) && is_leader {
                        self.send_election_to_candidates(out);
                        out.push(Effect::ElectionStarted);
                        self.start_stage1(out);
                        self.has_become_leader(out);
                    }
                }
                Message::Heartbeat(beat) => {
                    if is_leader {
                        self.send_norm_queries(out);
                        self.query_electing_candidate(&beat, out);
                    }
                }
                Message::AckLeader { from, .. } => {
                    // gen_leader ignores it; the acknowledging candidate then
                    // waits for ever. Point it at the leader instead.
                    self.stray_acks.push(from);
                    self.redirect_stray_acks(out);
                }
                Message::HasLeader { .. }
                | Message::NotLeader { .. }
                | Message::Ldr { .. }
                | Message::NormQ { .. } => {}
            },
            Input::OwnHeartbeat => {
                if is_leader {
                    self.send_norm_queries(out);
                }
            }
            Input::SendChecklead => {
                if is_leader && !self.down.is_empty() {
                    out.push(Effect::SendCheckleads(self.down.clone()));
                }
            }
            Input::CandidateTimer => {
                if self.down.is_empty() || (!is_leader && self.leader_node.is_some()) {
                    self.cancel_candidate_timer(out);
                }
            }
            Input::Down(node) => {
                self.monitored.retain(|monitored| *monitored != node);
                if !self.candidates.contains(&node) {
                    return;
                }
                self.down.insert(0, node.clone());
                if self.leader_node.as_ref() == Some(&node) {
                    out.push(Effect::ElectionStarted);
                    self.start_stage1(out);
                    self.has_become_leader(out);
                } else if is_leader {
                    out.push(Effect::NodeDown(node));
                    out.push(Effect::CheckleadNow);
                }
            }
        }
    }

    /// A candidate's `{heartbeat, Node}` reaching a leader means that
    /// candidate is in an election: typically a follower that got a late
    /// `{election}` (several leaders met after a partition and each told
    /// every candidate) after it had already surrendered to this leader.
    /// gen_leader sends `normQ` only to candidates it counts as down, so
    /// such a follower waited in stage 1 until its candidate timer probed
    /// (5 s after a 2|1 heal). A `normQ` brings it back at once: it answers
    /// `notNorm` and gets the leader's `ldr`. The first candidate is left
    /// out, as in [`Self::send_norm_queries`]: it never waits in stage 1.
    fn query_electing_candidate(&self, beat: &Beat, out: &mut Vec<Effect>) {
        let Beat::Node(node) = beat else {
            return;
        };
        if *node != self.me
            && !self.down.contains(node)
            && self.candidates.contains(node)
            && self.candidates.first() != Some(node)
        {
            out.push(Effect::Send(
                Dest::Name(node.clone()),
                Message::NormQ {
                    elid: self.elid,
                    from: self.self_pid.clone(),
                },
            ));
        }
    }

    /// `{election}` to every other candidate: a leader that starts an
    /// election must not leave followers attached to it.
    fn send_election_to_candidates(&self, out: &mut Vec<Effect>) {
        for candidate in &self.candidates {
            if *candidate != self.me {
                out.push(Effect::Send(
                    Dest::Name(candidate.clone()),
                    Message::Election,
                ));
            }
        }
    }

    /// Stage 1 waits for every lower candidate to be down, but a lower
    /// candidate that is up and already serving a leader never answers a
    /// heartbeat unless it happens to count us as down. gen_leader can stall
    /// there for good (a candidate that acknowledged two halters, or lost a
    /// link while keeping others). A `join` is answered by any node in normal
    /// operation with `hasLeader`, which leads to `isLeader` and the
    /// leader's `ldr`; nodes in an election answer it after theirs. So on
    /// every candidate timer in `elec1`, each connected lower candidate gets
    /// a `join`.
    fn probe_lower_candidates(&self, connected: &impl Fn(&str) -> bool, out: &mut Vec<Effect>) {
        for node in self.lesser() {
            if connected(&node) && !self.down.contains(&node) {
                out.push(Effect::Send(
                    Dest::Name(node),
                    Message::Join(self.self_pid.clone()),
                ));
            }
        }
    }

    /// Tells candidates that acknowledged us too late who leads.
    fn redirect_stray_acks(&mut self, out: &mut Vec<Effect>) {
        let Some(leader) = self.leader.clone() else {
            return;
        };
        for acker in std::mem::take(&mut self.stray_acks) {
            if acker.node == self.me || self.acks.contains(&acker.node) && leader == self.self_pid {
                continue;
            }
            out.push(Effect::Send(
                Dest::Pid(acker),
                Message::HasLeader {
                    leader: leader.clone(),
                    elid: self.elid,
                    from: self.self_pid.clone(),
                },
            ));
        }
    }

    /// In `wait`, the node we acknowledged may have surrendered to another
    /// leader before our acknowledgement reached it; it then never sends
    /// the `ldr` we wait for. A `join` makes it answer with the real leader.
    fn probe_awaited_node(&self, connected: &impl Fn(&str) -> bool, out: &mut Vec<Effect>) {
        if let Some(node) = &self.leader_node
            && *node != self.me
            && connected(node)
        {
            out.push(Effect::Send(
                Dest::Name(node.clone()),
                Message::Join(self.self_pid.clone()),
            ));
        }
    }

    /// `normQ` to every down candidate except the first in the list (the
    /// leader never sends it to the first candidate).
    fn send_norm_queries(&self, out: &mut Vec<Effect>) {
        let first = self.candidates.first();
        for node in &self.down {
            if Some(node) != first {
                out.push(Effect::Send(
                    Dest::Name(node.clone()),
                    Message::NormQ {
                        elid: self.elid,
                        from: self.self_pid.clone(),
                    },
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(node: &str, id: u32) -> Pid {
        Pid::new(Arc::from(node), id, 0, 1)
    }

    fn names(nodes: &[&str]) -> Vec<NodeName> {
        nodes.iter().map(|n| Arc::from(*n)).collect()
    }

    /// `b@h`, one of three candidates, started, and `a@h`'s pid and the
    /// elid of the election `a@h` runs.
    fn b_with_a_electing() -> (Election, Pid, Elid) {
        let mut b = Election::new(
            Arc::from("b@h"),
            pid("b@h", 1),
            names(&["a@h", "b@h", "c@h"]),
            1,
        );
        b.start();
        let elid = Elid {
            pos: 1,
            incarnation: 1,
            round: 0,
        };
        (b, pid("a@h", 1), elid)
    }

    /// The `ldr` with which `leader` makes a waiting candidate its follower.
    fn ldr_from(leader: Pid, elid: Elid) -> Message {
        Message::Ldr {
            synch: eetf::Term::from(eetf::List::nil()),
            elid,
            workers: Vec::new(),
            candidates: names(&["a@h", "b@h", "c@h"]),
            from: leader,
        }
    }

    /// `a@h` alone of three candidates: it leads with `b@h` and `c@h` down.
    fn leader_with_two_down() -> Election {
        let mut e = Election::new(
            Arc::from("a@h"),
            pid("a@h", 1),
            names(&["a@h", "b@h", "c@h"]),
            1,
        );
        e.start();
        e.handle(Input::Down(Arc::from("b@h")), |_| false);
        e.handle(Input::Down(Arc::from("c@h")), |_| false);
        assert!(e.is_leader(), "{:?}", e.status());
        assert_eq!(e.down().len(), 2, "{:?}", e.down());
        e
    }

    /// A leader told `{election}` (another leader met it after a partition)
    /// passes it on: its followers must not keep naming it leader while it
    /// is in the election, or every `halt` they answer sends the halter to
    /// a node that answers `notLeader`, and the election restarts for ever.
    #[test]
    fn a_leader_told_to_elect_tells_every_other_candidate() {
        let mut e = leader_with_two_down();
        let out = e.handle(Input::Message(Message::Election), |_| true);
        assert!(e.in_election(), "{:?}", e.status());
        let told: Vec<&str> = out
            .iter()
            .filter_map(|effect| match effect {
                Effect::Send(Dest::Name(node), Message::Election) => Some(&**node),
                _ => None,
            })
            .collect();
        assert_eq!(told, ["b@h", "c@h"], "{out:?}");

        // A follower told the same starts its own election and tells nobody.
        let (mut f, leader, elid) = b_with_a_electing();
        f.handle(
            Input::Message(Message::Halt {
                elid,
                from: leader.clone(),
            }),
            |_| true,
        );
        f.handle(Input::Message(ldr_from(leader, elid)), |_| true);
        assert!(!f.in_election() && !f.is_leader(), "{:?}", f.status());
        let out = f.handle(Input::Message(Message::Election), |_| true);
        assert!(f.in_election());
        assert!(
            !out.iter()
                .any(|effect| matches!(effect, Effect::Send(_, Message::Election))),
            "{out:?}"
        );
    }

    /// A heartbeat from a candidate the leader counts as up means it is in
    /// an election (a late `{election}`): a `normQ` brings it back.
    #[test]
    fn a_leader_queries_an_up_candidate_that_heartbeats() {
        let mut e = Election::new(
            Arc::from("b@h"),
            pid("b@h", 1),
            names(&["a@h", "b@h", "c@h"]),
            1,
        );
        e.start();
        e.handle(Input::Down(Arc::from("a@h")), |_| false);
        let elid = e.elid();
        e.handle(
            Input::Message(Message::AckLeader {
                elid,
                from: pid("c@h", 1),
            }),
            |_| true,
        );
        assert!(e.is_leader(), "{:?}", e.status());
        let queried = |out: &[Effect]| -> Vec<String> {
            out.iter()
                .filter_map(|effect| match effect {
                    Effect::Send(Dest::Name(node), Message::NormQ { .. }) => Some(node.to_string()),
                    _ => None,
                })
                .collect()
        };
        let out = e.handle(
            Input::Message(Message::Heartbeat(Beat::Node(Arc::from("c@h")))),
            |_| true,
        );
        assert_eq!(queried(&out), ["c@h"], "{out:?}");
        // Not the first candidate (it never waits in stage 1), not itself,
        // and not a candidate already queried as down.
        let out = e.handle(
            Input::Message(Message::Heartbeat(Beat::Node(Arc::from("a@h")))),
            |_| true,
        );
        assert!(queried(&out).is_empty(), "{out:?}");
    }

    #[test]
    fn a_from_leader_from_anyone_but_the_leader_changes_nothing() {
        let mut e = leader_with_two_down();
        // b@h connects and sends {from_leader, garbage}: the leader is us.
        for sender in [Some(pid("b@h", 9)), None, Some(pid("a@h", 1))] {
            assert!(!e.accept_from_leader(sender.as_ref(), |_| true));
            assert_eq!(e.down(), &names(&["c@h", "b@h"])[..], "{sender:?}");
        }

        // A follower takes broadcasts from its leader only.
        let (mut f, leader, elid) = b_with_a_electing();
        f.handle(
            Input::Message(Message::HasLeader {
                leader: leader.clone(),
                elid,
                from: leader.clone(),
            }),
            |_| true,
        );
        f.handle(Input::Down(Arc::from("c@h")), |_| false);
        f.handle(Input::Message(ldr_from(leader.clone(), elid)), |_| true);
        assert!(!f.in_election(), "{:?}", f.status());
        assert_eq!(f.leader(), Some(&leader));
        let down_before = f.down().to_vec();
        assert_eq!(down_before, names(&["c@h"]));
        assert!(!f.accept_from_leader(Some(&pid("c@h", 3)), |_| true));
        assert!(!f.accept_from_leader(None, |_| true));
        assert_eq!(f.down(), &down_before[..], "a stranger changed the view");
        assert!(f.accept_from_leader(Some(&leader), |_| true));
        assert!(f.down().is_empty(), "the leader's broadcast refreshes it");
    }
}
