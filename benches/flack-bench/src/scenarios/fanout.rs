//! The fanout scenario, and the room engine the flood scenario reuses.
//!
//! R rooms of N members each; the first S members of every room are
//! senders. In fanout mode the senders together send `--rate` messages per
//! second on a fixed schedule; in flood mode each sends as fast as the
//! server takes them, with at most `--window` of its messages in flight.
//! Every message text is `b:<sender>:<counter>:<unix_nanos>:<padding>`;
//! each member tracks, per sender of its room, which counters arrived, so
//! that lost, duplicated and reordered messages are counted exactly, and
//! records the end-to-end latency of messages sent in the measured window.
//!
//! In fanout mode the timestamp is the *scheduled* send time, so a server
//! (or client) that falls behind shows up as latency instead of silently
//! lowering the offered rate (no coordinated omission). In flood mode it is
//! the actual send time.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{SplitSink, SplitStream};
use futures::{FutureExt, SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use super::{Env, Sampler, ServerRss, SetupProgress, SetupSummary};
use crate::cli::{Common, FanoutArgs, RoomArgs, secs};
use crate::client::{self, BenchPayload, ClientMsg, ServerMsg, Ws};
use crate::report::{CpuReport, Report, Verdict};
use crate::stats::{Latency, LatencySummary, PairTracker, round1, round3};
use crate::sys::{self, unix_nanos};

/// How senders send.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// All senders together send this many messages per second.
    Rate(f64),
    /// Each sender sends as fast as possible while fewer than this many
    /// times members of its deliveries are outstanding (0: unbounded).
    Flood(u32),
}

/// Parameters of a room run.
#[derive(Debug, Clone, Serialize)]
pub struct RoomConfig {
    /// Rooms.
    pub rooms: u32,
    /// Members per room, senders included.
    pub members: u32,
    /// Senders per room.
    pub senders: u32,
    /// Sending mode.
    pub mode: Mode,
    /// Messages per second per sender (fanout mode).
    pub rate_per_sender: Option<f64>,
    /// Seconds of sending before the measured window.
    pub warmup_secs: f64,
    /// Measured seconds.
    pub duration_secs: f64,
    /// Most seconds waited for in-flight deliveries after sending stopped.
    pub drain_secs: f64,
    /// Message text length, bytes.
    pub message_bytes: usize,
    /// Client read buffer per connection, bytes.
    pub read_buffer: usize,
    /// Loopback source addresses used.
    pub source_ips: u32,
    /// Setups started per second.
    pub connect_rate: f64,
    /// Setups in flight at most.
    pub connect_concurrency: usize,
}

/// Figures of a room run.
#[derive(Debug, Clone, Serialize)]
pub struct RoomResults {
    /// Connection setup.
    pub setup: SetupSummary,
    /// Messages sent during the measured window.
    pub sent_in_window: u64,
    /// Messages per second sent during the measured window.
    pub sent_per_sec: f64,
    /// Messages sent in total (warm-up, window).
    pub sent_total: u64,
    /// Deliveries (one message arriving at one member) received during the
    /// measured window, per second.
    pub deliveries_per_sec: f64,
    /// Deliveries the window's sends called for, per second (sent per sec
    /// times members).
    pub offered_deliveries_per_sec: f64,
    /// Deliveries received in total.
    pub deliveries_total: u64,
    /// Deliveries expected in total (sent times members).
    pub deliveries_expected: u64,
    /// End-to-end latency of messages sent during the window.
    pub latency: LatencySummary,
    /// Messages that never arrived at a member.
    pub lost: u64,
    /// Messages that arrived twice at a member.
    pub duplicated: u64,
    /// Messages that arrived at a member after a later message of the same
    /// sender.
    pub reordered: u64,
    /// Messages carrying a counter their sender never sent.
    pub unknown_counter: u64,
    /// Seconds from the end of sending until every delivery arrived (or the
    /// drain limit).
    pub drain_secs: f64,
    /// Deliveries were still arriving when the drain limit ran out, so the
    /// `lost` count may include a server backlog.
    pub still_arriving_at_drain_end: bool,
    /// How late senders were against their schedule (fanout mode only).
    pub sender_lag: Option<LatencySummary>,
    /// Per message of the window, where its deliveries fell (fanout mode
    /// only): what the first and the last member saw, and the spread
    /// between them, which is the time one message takes to reach the
    /// whole room.
    pub per_message: Option<PerMessage>,
    /// Connections closed by the server or failed after setup.
    pub dropped: u64,
    /// The first few reasons.
    pub first_drop_reasons: Vec<String>,
    /// Send errors.
    pub send_errors: u64,
    /// protocol_error messages received.
    pub protocol_errors: u64,
    /// Chat messages that were not this run's benchmark messages.
    pub foreign_messages: u64,
    /// What the per-chat `sequence` field looked like.
    pub sequence: SequenceReport,
    /// Server RSS (all --server-pid together).
    pub server_rss: ServerRss,
}

/// Per-message delivery figures (fanout mode): each histogram holds one
/// value per message sent in the measured window.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PerMessage {
    /// Messages tracked.
    pub messages: u64,
    /// Latency of the message's first delivery.
    pub first_member: LatencySummary,
    /// Latency of the message's last delivery.
    pub last_member: LatencySummary,
    /// From the first delivery to the last.
    pub first_to_last: LatencySummary,
}

/// Most messages whose delivery times one group keeps (fanout mode; the
/// measured window of a steady run holds far fewer).
const MAX_TRACKED_MESSAGES: usize = 100_000;

/// Where one message's deliveries fell at one group's members.
#[derive(Debug, Clone, Copy)]
struct Arrivals {
    scheduled_ns: u64,
    first_ns: u64,
    last_ns: u64,
}

/// Observations of the server's per-chat sequence numbers.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SequenceReport {
    /// Sequenced events (joined, left, chat_message) seen by members.
    pub events: u64,
    /// Events whose sequence was not above the previous one in that chat at
    /// that member.
    pub not_increasing: u64,
    /// Smallest sequence seen.
    pub min: Option<i64>,
    /// Largest sequence seen.
    pub max: Option<i64>,
    /// Plain reading (e.g. "constant 42", "strictly increasing").
    pub reading: String,
}

/// Start time and window bounds, fixed once every member is ready.
#[derive(Debug, Clone, Copy)]
struct Plan {
    t0: tokio::time::Instant,
    t0_ns: u64,
    warm_end_ns: u64,
    end_ns: u64,
    end: tokio::time::Instant,
}

impl Plan {
    fn in_window(&self, ns: u64) -> bool {
        ns >= self.warm_end_ns && ns < self.end_ns
    }
}

struct Shared {
    env: Arc<Env>,
    cfg: RoomConfig,
    cancel: CancellationToken,
    progress: SetupProgress,
    conn: client::ConnectCfg,
    plan: watch::Receiver<Option<Plan>>,
    /// Messages sent so far, per global sender.
    sent: Vec<AtomicU64>,
    /// Flood window bookkeeping per global sender (empty in rate mode).
    flow: Vec<Flow>,
    sent_in_window: AtomicU64,
    senders_done: AtomicU64,
    send_errors: AtomicU64,
    dropped: AtomicU64,
    drop_reasons: Mutex<Vec<String>>,
}

impl Shared {
    fn drop_conn(&self, why: String) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut v) = self.drop_reasons.lock()
            && v.len() < 5
        {
            v.push(why);
        }
    }
}

/// State shared by the members of one group task.
#[derive(Default)]
struct Group {
    latency: Mutex<Latency>,
    /// Per (sender, counter) of the window (fanout mode only).
    arrivals: Mutex<HashMap<(u32, u64), Arrivals>>,
    lag: Mutex<Latency>,
    delivered: AtomicU64,
    delivered_in_window: AtomicU64,
}

/// What one member reports at the end.
#[derive(Default)]
struct Tally {
    setup_ok: bool,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    beyond: u64,
    gap_overflow: bool,
    protocol_errors: u64,
    foreign: u64,
    seq: SequenceReport,
}

/// Deliveries of one sender's messages so far, all members together
/// (flood window).
#[derive(Default)]
struct Flow {
    delivered: AtomicU64,
    notify: Notify,
}

/// Receiver side of one member.
struct Receiver<'a> {
    sh: &'a Shared,
    grp: &'a Group,
    plan: Plan,
    chat: &'a str,
    sender_base: u32,
    trackers: Vec<PairTracker>,
    last_seq: Option<i64>,
    tally: Tally,
}

impl Receiver<'_> {
    fn on_text(&mut self, text: &str) {
        let Ok(m) = ServerMsg::parse(text) else {
            self.tally.foreign += 1;
            return;
        };
        if m.chat_name.as_deref() == Some(self.chat)
            && let Some(seq) = m.sequence
        {
            {
                let s = &mut self.tally.seq;
                s.events += 1;
                if self.last_seq.is_some_and(|l| seq <= l) {
                    s.not_increasing += 1;
                }
                s.min = Some(s.min.map_or(seq, |x| x.min(seq)));
                s.max = Some(s.max.map_or(seq, |x| x.max(seq)));
                self.last_seq = Some(seq);
            }
        }
        match &*m.record {
            "chat_message" => {
                let payload = m.message.as_deref().and_then(BenchPayload::parse);
                let (Some(p), true) = (payload, m.chat_name.as_deref() == Some(self.chat)) else {
                    self.tally.foreign += 1;
                    return;
                };
                let Some(local) = p.sender.checked_sub(self.sender_base) else {
                    self.tally.foreign += 1;
                    return;
                };
                let Some(tr) = self.trackers.get_mut(local as usize) else {
                    self.tally.foreign += 1;
                    return;
                };
                tr.on_receive(p.counter);
                let now = unix_nanos();
                if self.plan.in_window(p.nanos)
                    && let Ok(mut h) = self.grp.latency.lock()
                {
                    h.record_us(now.saturating_sub(p.nanos) / 1000);
                }
                if matches!(self.sh.cfg.mode, Mode::Rate(_))
                    && self.plan.in_window(p.nanos)
                    && let Ok(mut arrivals) = self.grp.arrivals.lock()
                {
                    let tracked = arrivals.len();
                    match arrivals.get_mut(&(p.sender, p.counter)) {
                        Some(a) => {
                            a.first_ns = a.first_ns.min(now);
                            a.last_ns = a.last_ns.max(now);
                        }
                        None if tracked < MAX_TRACKED_MESSAGES => {
                            arrivals.insert(
                                (p.sender, p.counter),
                                Arrivals {
                                    scheduled_ns: p.nanos,
                                    first_ns: now,
                                    last_ns: now,
                                },
                            );
                        }
                        None => {}
                    }
                }
                self.grp.delivered.fetch_add(1, Ordering::Relaxed);
                if self.plan.in_window(now) {
                    self.grp.delivered_in_window.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(f) = self.sh.flow.get(p.sender as usize) {
                    f.delivered.fetch_add(1, Ordering::Release);
                    f.notify.notify_one();
                }
            }
            "protocol_error" => {
                self.tally.protocol_errors += 1;
                self.sh.drop_conn(format!(
                    "protocol_error {}: {}",
                    m.code.as_deref().unwrap_or("?"),
                    m.reason.as_deref().unwrap_or("?")
                ));
            }
            _ => {}
        }
    }

    /// Reads until cancelled or the connection ends.
    async fn run(&mut self, mut rx: SplitStream<Ws>) -> SplitStream<Ws> {
        // Registered once: re-creating it per message showed in profiles.
        let cancelled = self.sh.cancel.cancelled();
        tokio::pin!(cancelled);
        loop {
            tokio::select! {
                biased;
                _ = &mut cancelled => break,
                m = rx.next() => match m {
                    Some(Ok(Message::Text(t))) => self.on_text(t.as_str()),
                    Some(Ok(Message::Close(f))) => {
                        self.sh.drop_conn(format!("server closed the websocket: {f:?}"));
                        break;
                    }
                    None => {
                        self.sh.drop_conn("connection closed by the server".into());
                        break;
                    }
                    Some(Err(e)) => {
                        self.sh.drop_conn(e.to_string());
                        break;
                    }
                    Some(Ok(_)) => {}
                }
            }
        }
        rx
    }

    fn finish(mut self) -> Tally {
        for (i, tr) in self.trackers.iter().enumerate() {
            let g = self.sender_base as usize + i;
            let sent = self.sh.sent[g].load(Ordering::Acquire);
            self.tally.lost += tr.lost(sent);
            self.tally.duplicated += tr.duplicated;
            self.tally.reordered += tr.reordered;
            self.tally.beyond += tr.beyond(sent);
            self.tally.gap_overflow |= tr.overflowed();
        }
        self.tally.setup_ok = true;
        self.tally
    }
}

/// Sends pings until cancelled (members that do not send).
async fn pinger(sh: &Shared, tx: &mut SplitSink<Ws, Message>) {
    let interval = sh.env.ping_interval;
    let mut next = tokio::time::Instant::now() + interval.mul_f64(rand::random::<f64>());
    loop {
        tokio::select! {
            _ = sh.cancel.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        next += interval;
        if tx.send(ClientMsg::Ping.to_ws()).await.is_err() {
            sh.send_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
}

/// Sends one benchmark message; false on error or cancellation.
async fn send_bench(
    sh: &Shared,
    tx: &mut SplitSink<Ws, Message>,
    chat: &str,
    buf: &mut String,
    p: BenchPayload,
    cancelled: Pin<&mut WaitForCancellationFuture<'_>>,
) -> bool {
    p.format_into(buf, sh.cfg.message_bytes);
    let msg = ClientMsg::ChatMessage {
        chat_name: chat,
        mime_type: "text/plain",
        message: buf,
    }
    .to_ws();
    tokio::select! {
        r = tx.send(msg) => match r {
            Ok(()) => true,
            Err(_) => {
                sh.send_errors.fetch_add(1, Ordering::Relaxed);
                false
            }
        },
        _ = cancelled => false,
    }
}

/// The sending side of sender `g` until the end of the plan.
async fn sender(
    sh: &Shared,
    grp: &Group,
    plan: Plan,
    g: u32,
    chat: &str,
    tx: &mut SplitSink<Ws, Message>,
) {
    let mut buf = String::with_capacity(sh.cfg.message_bytes + 64);
    let cancelled = sh.cancel.cancelled();
    tokio::pin!(cancelled);
    let mut counter = 0u64;
    let mut in_window = 0u64;
    match sh.cfg.mode {
        Mode::Rate(_) => {
            let rate = sh.cfg.rate_per_sender.unwrap_or(1.0);
            let period = 1e9 / rate;
            let total_senders = sh.sent.len() as f64;
            let offset = period * f64::from(g) / total_senders;
            let ping = sh.env.ping_interval;
            let mut last_write = tokio::time::Instant::now();
            loop {
                let due_ns = (offset + counter as f64 * period) as u64;
                let due = plan.t0 + Duration::from_nanos(due_ns);
                if due >= plan.end {
                    break;
                }
                // Long gaps between messages still need pings.
                while due > last_write + ping {
                    tokio::select! {
                        _ = &mut cancelled => return,
                        _ = tokio::time::sleep_until(last_write + ping) => {}
                    }
                    if tx.send(ClientMsg::Ping.to_ws()).await.is_err() {
                        sh.send_errors.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    last_write = tokio::time::Instant::now();
                }
                tokio::select! {
                    _ = &mut cancelled => return,
                    _ = tokio::time::sleep_until(due) => {}
                }
                let now = tokio::time::Instant::now();
                if let Ok(mut h) = grp.lag.lock() {
                    h.record(now.saturating_duration_since(due));
                }
                let nanos = plan.t0_ns + due_ns;
                let p = BenchPayload {
                    sender: g,
                    counter,
                    nanos,
                };
                if !send_bench(sh, tx, chat, &mut buf, p, cancelled.as_mut()).await {
                    break;
                }
                counter += 1;
                sh.sent[g as usize].store(counter, Ordering::Release);
                if plan.in_window(nanos) {
                    in_window += 1;
                }
                last_write = now;
            }
        }
        Mode::Flood(window) => {
            tokio::select! {
                _ = &mut cancelled => return,
                _ = tokio::time::sleep_until(plan.t0) => {}
            }
            let members = u64::from(sh.cfg.members);
            let limit = u64::from(window) * members;
            let flow = &sh.flow[g as usize];
            while tokio::time::Instant::now() < plan.end {
                // Undelivered deliveries of this sender's messages, over
                // all members: bounds what the server has to queue.
                while window > 0
                    && (counter * members).saturating_sub(flow.delivered.load(Ordering::Acquire))
                        >= limit
                {
                    tokio::select! {
                        _ = &mut cancelled => return,
                        _ = flow.notify.notified() => {}
                        _ = tokio::time::sleep_until(plan.end) => break,
                    }
                }
                if tokio::time::Instant::now() >= plan.end {
                    break;
                }
                let nanos = unix_nanos();
                let p = BenchPayload {
                    sender: g,
                    counter,
                    nanos,
                };
                if !send_bench(sh, tx, chat, &mut buf, p, cancelled.as_mut()).await {
                    break;
                }
                counter += 1;
                sh.sent[g as usize].store(counter, Ordering::Release);
                if plan.in_window(nanos) {
                    in_window += 1;
                }
            }
        }
    }
    sh.sent_in_window.fetch_add(in_window, Ordering::Relaxed);
}

/// One member: set up, wait for the plan, then receive (and send, for
/// senders) until cancelled.
async fn member(sh: Arc<Shared>, grp: Arc<Group>, room: u32, idx: u32) -> Tally {
    let env = &sh.env;
    let cfg = &sh.cfg;
    let global = u64::from(room) * u64::from(cfg.members) + u64::from(idx);
    let user = format!("fb-{}-r{room}-m{idx}", env.run_id);
    let chat = format!("fb-{}-room-{room}", env.run_id);
    let setup = Box::pin(super::setup_member(
        env,
        &sh.progress,
        &sh.conn,
        super::Member {
            i: global,
            n_src: cfg.source_ips,
            user: &user,
            chat: &chat,
        },
        &sh.cancel,
    ))
    .await;
    let Some(session) = setup else {
        return Tally::default();
    };
    let mut plan_rx = sh.plan.clone();
    let mut ws = session.ws;
    // A large setup can take minutes: members joined early ping while they
    // wait for the plan, or the server closes them as idle (60 s). The
    // replies are read, and passed over, with the run's messages.
    let mut next_ping = tokio::time::Instant::now() + sh.env.ping_interval;
    let plan = loop {
        let ping_due = tokio::select! {
            p = plan_rx.wait_for(|p| p.is_some()) => match p.ok().and_then(|p| *p) {
                Some(p) => break p,
                None => return Tally::default(),
            },
            _ = sh.cancel.cancelled() => return Tally::default(),
            _ = tokio::time::sleep_until(next_ping) => true,
        };
        if ping_due {
            next_ping += sh.env.ping_interval;
            if ws.send(ClientMsg::Ping.to_ws()).await.is_err() {
                sh.send_errors.fetch_add(1, Ordering::Relaxed);
                return Tally::default();
            }
        }
    };
    let sender_base = room * cfg.senders;
    let own_sender = (idx < cfg.senders).then_some(sender_base + idx);
    let (mut tx, rx) = ws.split();
    let mut recv = Receiver {
        sh: &sh,
        grp: &grp,
        plan,
        chat: &chat,
        sender_base,
        trackers: vec![PairTracker::default(); cfg.senders as usize],
        last_seq: None,
        tally: Tally::default(),
    };
    let send_side = async {
        if let Some(g) = own_sender {
            sender(&sh, &grp, plan, g, &chat, &mut tx).await;
            sh.senders_done.fetch_add(1, Ordering::Release);
        }
        pinger(&sh, &mut tx).await;
    };
    let (rx, ()) = tokio::join!(recv.run(rx), send_side);
    let tally = recv.finish();
    // Close politely; a failure here does not matter any more.
    if let Ok(ws) = rx.reunite(tx) {
        let _ = client::close(ws, Duration::from_secs(2)).await;
    }
    tally
}

/// Resolves the room set-up fanout and flood share; `senders` is the
/// scenario's default number of senders per room outside smoke runs.
pub fn room_config(
    env: &Env,
    room: &RoomArgs,
    common: &Common,
    senders: u32,
    mode: Mode,
    drain_secs: f64,
) -> Result<RoomConfig, String> {
    let smoke = env.smoke;
    let rooms = room.rooms.unwrap_or(1).max(1);
    let members = room.members.unwrap_or(if smoke { 20 } else { 100 }).max(1);
    let senders = room
        .senders
        .unwrap_or(if smoke { 2 } else { senders })
        .clamp(1, members);
    let rate_per_sender = match mode {
        Mode::Rate(rate) => Some(round3(rate / f64::from(rooms * senders))),
        Mode::Flood(_) => None,
    };
    let conns = u64::from(rooms) * u64::from(members);
    Ok(RoomConfig {
        rooms,
        members,
        senders,
        mode,
        rate_per_sender,
        warmup_secs: secs(
            "warmup",
            room.warmup.unwrap_or(if smoke { 1.0 } else { 2.0 }),
        )?
        .as_secs_f64(),
        duration_secs: secs(
            "duration",
            room.duration.unwrap_or(if smoke { 3.0 } else { 10.0 }),
        )?
        .as_secs_f64()
        .max(0.1),
        drain_secs: secs("drain-secs", drain_secs)?.as_secs_f64(),
        message_bytes: room.message_bytes.min(1 << 20),
        read_buffer: room.read_buffer,
        source_ips: env.source_count(conns),
        connect_rate: common.connect_rate,
        connect_concurrency: common.connect_concurrency,
    })
}

/// Resolves fanout options.
pub fn fanout_config(env: &Env, a: &FanoutArgs) -> Result<RoomConfig, String> {
    let rate = a.rate.unwrap_or(if env.smoke { 50.0 } else { 100.0 });
    if !(rate.is_finite() && rate > 0.0) {
        return Err(format!("--rate must be positive, got {rate}"));
    }
    room_config(env, &a.room, &a.common, 1, Mode::Rate(rate), a.drain_secs)
}

/// Runs a room scenario (fanout or flood) with resolved parameters.
pub async fn run_rooms(
    env: Arc<Env>,
    scenario: &'static str,
    cfg: RoomConfig,
) -> Result<Report, String> {
    let conns = u64::from(cfg.rooms) * u64::from(cfg.members);
    let total_senders = cfg.rooms * cfg.senders;
    let mut notes = env.server_fd_notes(conns);
    if let Err(e) = env.check_fds(conns) {
        let v = Verdict::new(true, false, vec![e], notes);
        return Ok(env.report(scenario, v, cfg, serde_json::json!({})));
    }
    let (plan_tx, plan_rx) = watch::channel(None);
    let sh = Arc::new(Shared {
        env: env.clone(),
        conn: env.connect_cfg(cfg.read_buffer),
        cfg: cfg.clone(),
        cancel: CancellationToken::new(),
        progress: SetupProgress::default(),
        plan: plan_rx,
        sent: (0..total_senders).map(|_| AtomicU64::new(0)).collect(),
        flow: match cfg.mode {
            Mode::Flood(w) if w > 0 => (0..total_senders).map(|_| Flow::default()).collect(),
            _ => Vec::new(),
        },
        sent_in_window: AtomicU64::new(0),
        senders_done: AtomicU64::new(0),
        send_errors: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        drop_reasons: Mutex::new(Vec::new()),
    });
    let mut server_rss = ServerRss {
        before_kib: env.server_rss(),
        ..Default::default()
    };
    let ngroups = super::group_count(&env, conns);
    let groups: Vec<Arc<Group>> = (0..ngroups).map(|_| Arc::new(Group::default())).collect();
    env.progress(&format!(
        "{scenario}: {} rooms x {} members ({} senders each), {ngroups} tasks",
        cfg.rooms, cfg.members, cfg.senders
    ));
    let mut futs: Vec<BoxFuture<'static, Tally>> = Vec::with_capacity(conns as usize);
    // Interleave rooms so that each group task holds members of every room.
    for idx in 0..cfg.members {
        for room in 0..cfg.rooms {
            let g = groups[futs.len() % ngroups].clone();
            futs.push(member(sh.clone(), g, room, idx).boxed());
        }
    }
    let handles = super::spawn_groups(futs, ngroups);
    let sw = super::wait_setup(&env, &sh.progress, conns, cfg.connect_rate).await;
    let setup = sh.progress.summary(conns, sw.secs);
    let mut problems = Vec::new();
    let mut interrupted = sw.interrupted;
    let mut cpu = None;
    let mut drain_secs = 0.0;
    let mut still_arriving = false;
    let mut timeline = Vec::new();
    let delivered =
        |gs: &[Arc<Group>]| -> u64 { gs.iter().map(|g| g.delivered.load(Ordering::Relaxed)).sum() };
    let mut expected = 0u64;
    if sw.all_ready {
        server_rss.after_setup_kib = env.server_rss();
        let lead = Duration::from_millis(200);
        let t0 = tokio::time::Instant::now() + lead;
        let t0_ns = unix_nanos() + lead.as_nanos() as u64;
        let warm = Duration::from_secs_f64(cfg.warmup_secs);
        let dur = Duration::from_secs_f64(cfg.duration_secs);
        let plan = Plan {
            t0,
            t0_ns,
            warm_end_ns: t0_ns + warm.as_nanos() as u64,
            end_ns: t0_ns + (warm + dur).as_nanos() as u64,
            end: t0 + warm + dur,
        };
        let _ = plan_tx.send(Some(plan));
        env.progress(&format!(
            "{scenario}: sending for {:.1}s warm-up + {:.1}s measured",
            cfg.warmup_secs, cfg.duration_secs
        ));
        let gs = groups.clone();
        let sh2 = sh.clone();
        let mut prev = (0u64, 0u64);
        let sampler = Sampler::start(env.clone(), move |m| {
            let d: u64 = gs.iter().map(|g| g.delivered.load(Ordering::Relaxed)).sum();
            let s: u64 = sh2.sent.iter().map(|x| x.load(Ordering::Relaxed)).sum();
            m.insert("sent".into(), (s - prev.0).into());
            m.insert("delivered".into(), (d - prev.1).into());
            prev = (s, d);
        });
        interrupted |= env.sleep_until(t0 + warm).await;
        let c0 = sys::CpuSnap::take(&env.server_pids);
        if !interrupted {
            interrupted |= env.sleep_until(plan.end).await;
        }
        let u = sys::cpu_between(&c0, &sys::CpuSnap::take(&env.server_pids));
        cpu = Some(CpuReport::new("measured window", &u, env.workers, env.ncpu));
        server_rss.at_end_kib = env.server_rss();
        // Drain: wait for senders to stop, then for every delivery.
        let t_end = Instant::now();
        let drain_deadline =
            tokio::time::Instant::now() + Duration::from_secs_f64(cfg.drain_secs) + env.op_timeout;
        while sh.senders_done.load(Ordering::Acquire) < u64::from(total_senders)
            && !interrupted
            && tokio::time::Instant::now() < drain_deadline
        {
            interrupted |= env
                .sleep_until(tokio::time::Instant::now() + Duration::from_millis(10))
                .await;
        }
        let drain_deadline = tokio::time::Instant::now() + Duration::from_secs_f64(cfg.drain_secs);
        let sent_by_room = |r: u32| -> u64 {
            (r * cfg.senders..(r + 1) * cfg.senders)
                .map(|g| sh.sent[g as usize].load(Ordering::Acquire))
                .sum()
        };
        expected = (0..cfg.rooms)
            .map(|r| sent_by_room(r) * u64::from(cfg.members))
            .sum();
        let mut last = (delivered(&groups), Instant::now());
        while last.0 < expected
            && !interrupted
            && tokio::time::Instant::now() < drain_deadline
            && sh.dropped.load(Ordering::Relaxed) == 0
        {
            interrupted |= env
                .sleep_until(tokio::time::Instant::now() + Duration::from_millis(10))
                .await;
            let d = delivered(&groups);
            if d != last.0 {
                last = (d, Instant::now());
            }
        }
        still_arriving = last.0 < expected && last.1.elapsed() < Duration::from_secs(1);
        drain_secs = t_end.elapsed().as_secs_f64();
        timeline = sampler.finish().await;
    } else if !sw.interrupted {
        problems.push(format!(
            "setup failed: {} of {conns} members ready, {} failed {:?}; first errors: {:?}",
            setup.ready, setup.failed, setup.failed_by_stage, setup.first_errors
        ));
    }
    server_rss.peak_kib = env.server_hwm();
    sh.cancel.cancel();
    let (tallies, aborted) = super::join_groups(handles, Duration::from_secs(30)).await;
    if aborted > 0 {
        notes.push(format!(
            "{aborted} group tasks did not stop and were aborted"
        ));
    }

    let mut latency = Latency::new();
    let mut lag = Latency::new();
    let mut in_window = 0;
    let mut arrivals: HashMap<(u32, u64), Arrivals> = HashMap::new();
    for g in &groups {
        if let Ok(h) = g.latency.lock() {
            latency.merge(&h);
        }
        if let Ok(group_arrivals) = g.arrivals.lock() {
            for (key, a) in group_arrivals.iter() {
                arrivals
                    .entry(*key)
                    .and_modify(|all| {
                        all.first_ns = all.first_ns.min(a.first_ns);
                        all.last_ns = all.last_ns.max(a.last_ns);
                    })
                    .or_insert(*a);
            }
        }
        if let Ok(h) = g.lag.lock() {
            lag.merge(&h);
        }
        in_window += g.delivered_in_window.load(Ordering::Relaxed);
    }
    let mut t = Tally::default();
    let mut seq = SequenceReport::default();
    for x in tallies.iter().filter(|x| x.setup_ok) {
        t.lost += x.lost;
        t.duplicated += x.duplicated;
        t.reordered += x.reordered;
        t.beyond += x.beyond;
        t.gap_overflow |= x.gap_overflow;
        t.protocol_errors += x.protocol_errors;
        t.foreign += x.foreign;
        seq.events += x.seq.events;
        seq.not_increasing += x.seq.not_increasing;
        seq.min = match (seq.min, x.seq.min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        seq.max = match (seq.max, x.seq.max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    seq.reading = match (seq.min, seq.max) {
        (None, _) | (_, None) => "no sequenced events".into(),
        (Some(a), Some(b)) if a == b => format!("constant {a}"),
        _ if seq.not_increasing == 0 => "strictly increasing per chat".into(),
        _ => format!("{} events not increasing", seq.not_increasing),
    };
    let dur = cfg.duration_secs;
    let sent_in_window = sh.sent_in_window.load(Ordering::Relaxed);
    let sent_total: u64 = sh.sent.iter().map(|x| x.load(Ordering::Relaxed)).sum();
    let dropped = sh.dropped.load(Ordering::Relaxed);
    let first_drop_reasons = sh
        .drop_reasons
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    if sw.all_ready {
        let lost_what = if still_arriving {
            "not delivered when the drain limit ran out (deliveries were still arriving: \
             a server backlog, raise --drain-secs to tell it from loss)"
        } else {
            "lost"
        };
        for (n, what) in [
            (t.lost, lost_what),
            (t.duplicated, "duplicated"),
            (t.reordered, "reordered (per sender)"),
            (t.beyond, "with a counter never sent"),
        ] {
            if n > 0 {
                problems.push(format!("{n} messages {what}"));
            }
        }
        if dropped > 0 {
            problems.push(format!(
                "{dropped} connections dropped; first reasons: {first_drop_reasons:?}"
            ));
        }
        if sent_total == 0 {
            problems.push("no message was sent".into());
        }
    }
    if t.gap_overflow {
        notes.push("gap bookkeeping overflowed: lost/reordered counts are approximate".into());
    }
    if let Mode::Rate(rate) = cfg.mode {
        let achieved = sent_in_window as f64 / dur;
        if sw.all_ready && achieved < 0.95 * rate {
            notes.push(format!(
                "senders reached {achieved:.1} of {rate} messages/s: the client or the server's \
                 backpressure held them back"
            ));
        }
        let lag_p99 = lag.summary().p99_ms;
        if sw.all_ready && lag_p99 > 10.0 {
            notes.push(format!(
                "senders woke up late (p99 {lag_p99} ms behind schedule): the client did not get \
                 the CPU in time, and latencies include that delay"
            ));
        }
    }
    let send_errors = sh.send_errors.load(Ordering::Relaxed);
    let results = RoomResults {
        setup,
        sent_in_window,
        sent_per_sec: round1(sent_in_window as f64 / dur),
        sent_total,
        deliveries_per_sec: round1(in_window as f64 / dur),
        offered_deliveries_per_sec: round1(sent_in_window as f64 * f64::from(cfg.members) / dur),
        deliveries_total: delivered(&groups),
        deliveries_expected: expected,
        latency: latency.summary(),
        lost: t.lost,
        duplicated: t.duplicated,
        reordered: t.reordered,
        unknown_counter: t.beyond,
        drain_secs: round3(drain_secs),
        still_arriving_at_drain_end: still_arriving,
        sender_lag: matches!(cfg.mode, Mode::Rate(_)).then(|| lag.summary()),
        per_message: matches!(cfg.mode, Mode::Rate(_)).then(|| per_message(&arrivals)),
        dropped,
        first_drop_reasons,
        send_errors,
        protocol_errors: t.protocol_errors,
        foreign_messages: t.foreign,
        sequence: seq,
        server_rss,
    };
    let verdict = Verdict::new(
        !sw.all_ready && !sw.interrupted,
        interrupted,
        problems,
        notes,
    );
    let mut report = env.report(scenario, verdict, cfg, results);
    report.client_cpu = cpu;
    report.timeline = timeline;
    Ok(report)
}

/// Summarises where each message's deliveries fell.
fn per_message(arrivals: &HashMap<(u32, u64), Arrivals>) -> PerMessage {
    let (mut first, mut last, mut spread) = (Latency::new(), Latency::new(), Latency::new());
    for a in arrivals.values() {
        first.record_us(a.first_ns.saturating_sub(a.scheduled_ns) / 1000);
        last.record_us(a.last_ns.saturating_sub(a.scheduled_ns) / 1000);
        spread.record_us(a.last_ns.saturating_sub(a.first_ns) / 1000);
    }
    PerMessage {
        messages: arrivals.len() as u64,
        first_member: first.summary(),
        last_member: last.summary(),
        first_to_last: spread.summary(),
    }
}

/// Runs the fanout scenario.
pub async fn run(env: Arc<Env>, a: FanoutArgs) -> Result<Report, String> {
    let cfg = fanout_config(&env, &a)?;
    run_rooms(env, "fanout", cfg).await
}
