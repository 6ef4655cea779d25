//! The idle scenario: open N connections (authenticated, each in one of R
//! rooms) at a paced rate, hold them for a while with a ping every
//! `--ping-interval` seconds, and report the server's RSS before and after
//! setup, i.e. its memory per held connection, along with the client's own.
//!
//! Connections are plain futures grouped many to a tokio task; each keeps a
//! small websocket read buffer so that the client stays cheap per
//! connection. Any connection the server drops during the run fails it.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{FutureExt, SinkExt, StreamExt};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::{Env, Sampler, ServerRss, SetupProgress, SetupSummary};
use crate::cli::{IdleArgs, secs};
use crate::client::{self, ClientMsg, ServerMsg};
use crate::report::{CpuReport, Report, Verdict};
use crate::stats::{Latency, LatencySummary, round1, round3};
use crate::sys;

/// Idle parameters as run.
#[derive(Debug, Clone, Serialize)]
pub struct IdleConfig {
    /// Connections.
    pub connections: u64,
    /// Rooms.
    pub rooms: u64,
    /// Seconds held after setup.
    pub hold_secs: f64,
    /// Seconds waited after setup before sampling RSS.
    pub settle_secs: f64,
    /// Client read buffer per connection, bytes.
    pub read_buffer: usize,
    /// Loopback source addresses used (0: kernel's choice).
    pub source_ips: u32,
    /// Setups started per second.
    pub connect_rate: f64,
    /// Setups in flight at most.
    pub connect_concurrency: usize,
    /// Seconds between pings.
    pub ping_interval_secs: f64,
}

/// Idle figures.
#[derive(Debug, Clone, Serialize)]
pub struct IdleResults {
    /// Connection setup.
    pub setup: SetupSummary,
    /// Server RSS (all --server-pid together).
    pub server_rss: ServerRss,
    /// Server RSS after the connections were closed, KiB.
    pub server_rss_after_close_kib: Option<u64>,
    /// (RSS after setup - RSS before) / connections.
    pub server_kib_per_connection: Option<f64>,
    /// Client RSS before setup, KiB.
    pub client_rss_before_kib: Option<u64>,
    /// Client RSS once all were set up, KiB.
    pub client_rss_after_setup_kib: Option<u64>,
    /// Client memory per connection, KiB.
    pub client_kib_per_connection: Option<f64>,
    /// The hold phase.
    pub hold: HoldResults,
    /// Closing all connections at the end.
    pub close: CloseResults,
}

/// Figures of the hold phase.
#[derive(Debug, Clone, Serialize)]
pub struct HoldResults {
    /// Seconds held.
    pub secs: f64,
    /// Connections closed by the server or failed after setup.
    pub dropped: u64,
    /// The first few reasons.
    pub first_drop_reasons: Vec<String>,
    /// Pings sent (whole run).
    pub pings_sent: u64,
    /// ping_reply received (whole run).
    pub ping_replies: u64,
    /// Round trip ping -> ping_reply.
    pub ping_rtt: LatencySummary,
    /// Server messages that were neither ping_reply nor expected join
    /// traffic (protocol_error and unknown records).
    pub unexpected_messages: u64,
}

/// Figures of closing.
#[derive(Debug, Clone, Serialize)]
pub struct CloseResults {
    /// Seconds until every connection was closed.
    pub secs: f64,
    /// Connections whose close handshake completed.
    pub clean: u64,
    /// Connections whose close handshake failed or timed out.
    pub unclean: u64,
    /// Group tasks that had to be aborted.
    pub aborted_groups: usize,
    /// Milliseconds a fresh connection took to connect and authenticate
    /// right after all were closed (shows whether the server stays
    /// responsive through a mass disconnect).
    pub fresh_login_after_close_ms: Option<f64>,
    /// Why that fresh connection failed, if it did.
    pub fresh_login_error: Option<String>,
}

struct Shared {
    env: Arc<Env>,
    cancel: CancellationToken,
    progress: SetupProgress,
    cfg: client::ConnectCfg,
    rooms: u64,
    n_src: u32,
    pings: AtomicU64,
    pongs: AtomicU64,
    dropped: AtomicU64,
    unexpected: AtomicU64,
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

/// How one connection ended.
enum End {
    SetupFailed,
    Dropped,
    Closed { clean: bool },
}

async fn member(sh: Arc<Shared>, rtt: Arc<Mutex<Latency>>, i: u64) -> End {
    let env = &sh.env;
    let user = format!("ib-{}-{i}", env.run_id);
    let chat = format!("ib-{}-room-{}", env.run_id, i % sh.rooms);
    // Boxed so that the large setup state is freed once setup is done.
    let setup = Box::pin(super::setup_member(
        env,
        &sh.progress,
        &sh.cfg,
        super::Member {
            i,
            n_src: sh.n_src,
            user: &user,
            chat: &chat,
        },
        &sh.cancel,
    ))
    .await;
    drop((user, chat));
    let Some(session) = setup else {
        return End::SetupFailed;
    };
    let mut ws = session.ws;
    let interval = env.ping_interval;
    let jitter = interval.mul_f64(rand::random::<f64>());
    let mut next_ping = tokio::time::Instant::now() + jitter;
    let mut ping_at: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            _ = sh.cancel.cancelled() => break,
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => match ServerMsg::parse(t.as_str()) {
                    Ok(m) if m.record == "ping_reply" => {
                        sh.pongs.fetch_add(1, Ordering::Relaxed);
                        if let (Some(at), Ok(mut h)) = (ping_at.take(), rtt.lock()) {
                            h.record(at.elapsed());
                        }
                    }
                    Ok(m) if matches!(&*m.record, "joined" | "left" | "chat_state") => {}
                    _ => {
                        sh.unexpected.fetch_add(1, Ordering::Relaxed);
                    }
                },
                Some(Ok(Message::Close(f))) => {
                    sh.drop_conn(format!("server closed the websocket: {f:?}"));
                    return End::Dropped;
                }
                None => {
                    sh.drop_conn("connection closed by the server".into());
                    return End::Dropped;
                }
                Some(Err(e)) => {
                    sh.drop_conn(e.to_string());
                    return End::Dropped;
                }
                Some(Ok(_)) => {}
            },
            _ = tokio::time::sleep_until(next_ping) => {
                next_ping += interval;
                if let Err(e) = ws.send(ClientMsg::Ping.to_ws()).await {
                    sh.drop_conn(format!("ping: {e}"));
                    return End::Dropped;
                }
                sh.pings.fetch_add(1, Ordering::Relaxed);
                ping_at = Some(Instant::now());
            }
        }
    }
    // Boxed: the close state would otherwise enlarge every held future.
    let clean = Box::pin(client::close(ws, env.op_timeout)).await.is_ok();
    End::Closed { clean }
}

/// Runs the idle scenario.
pub async fn run(env: Arc<Env>, a: IdleArgs) -> Result<Report, String> {
    let smoke = env.smoke;
    let conns = u64::from(a.connections.unwrap_or(if smoke { 200 } else { 1000 })).max(1);
    let rooms = a
        .rooms
        .map(u64::from)
        .unwrap_or_else(|| conns.div_ceil(100))
        .clamp(1, conns);
    let hold = secs(
        "hold-secs",
        a.hold_secs.unwrap_or(if smoke { 3.0 } else { 30.0 }),
    )?;
    let settle = secs(
        "settle-secs",
        a.settle_secs.unwrap_or(if smoke { 1.0 } else { 2.0 }),
    )?;
    let n_src = env.source_count(conns);
    let config = IdleConfig {
        connections: conns,
        rooms,
        hold_secs: hold.as_secs_f64(),
        settle_secs: settle.as_secs_f64(),
        read_buffer: a.read_buffer,
        source_ips: n_src,
        connect_rate: a.common.connect_rate,
        connect_concurrency: a.common.connect_concurrency,
        ping_interval_secs: env.ping_interval.as_secs_f64(),
    };
    let mut notes = env.server_fd_notes(conns);
    if env.server_pids.is_empty() {
        notes.push("no --server-pid given: server RSS per connection not measured".into());
    }
    if let Err(e) = env.check_fds(conns) {
        let v = Verdict::new(true, false, vec![e], notes);
        return Ok(env.report("idle", v, config, serde_json::json!({})));
    }

    let rss_before = env.server_rss();
    if let (Some(rss), Some(hwm)) = (rss_before, env.server_hwm())
        && hwm > rss + rss / 10 + 1024
    {
        notes.push(format!(
            "the server's peak RSS ({hwm} KiB) is above its RSS before this run ({rss} KiB): \
             memory its allocator kept from earlier load gets reused, so KiB per connection \
             is understated; measure on a freshly started server"
        ));
    }
    let client_before = sys::self_rss_kib();
    let sh = Arc::new(Shared {
        env: env.clone(),
        cancel: CancellationToken::new(),
        progress: SetupProgress::default(),
        cfg: env.connect_cfg(a.read_buffer),
        rooms,
        n_src,
        pings: AtomicU64::new(0),
        pongs: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        unexpected: AtomicU64::new(0),
        drop_reasons: Mutex::new(Vec::new()),
    });
    let groups = super::group_count(&env, conns);
    let rtts: Vec<Arc<Mutex<Latency>>> = (0..groups)
        .map(|_| Arc::new(Mutex::new(Latency::new())))
        .collect();
    env.progress(&format!(
        "idle: opening {conns} connections in {rooms} rooms ({groups} tasks, {n_src} source IPs)"
    ));
    let futs: Vec<BoxFuture<'static, End>> = (0..conns)
        .map(|i| member(sh.clone(), rtts[(i % groups as u64) as usize].clone(), i).boxed())
        .collect();
    let handles = super::spawn_groups(futs, groups);

    let sw = super::wait_setup(&env, &sh.progress, conns, a.common.connect_rate).await;
    let setup = sh.progress.summary(conns, sw.secs);
    let mut problems = Vec::new();
    let mut server_rss = ServerRss {
        before_kib: rss_before,
        ..Default::default()
    };
    let mut client_after = None;
    let mut hold_secs = 0.0;
    let mut cpu = None;
    let mut interrupted = sw.interrupted;
    let mut sampler = None;
    if sw.all_ready {
        interrupted |= env.sleep_until(tokio::time::Instant::now() + settle).await;
        server_rss.after_setup_kib = env.server_rss();
        client_after = sys::self_rss_kib();
        env.progress(&format!(
            "idle: {conns} connections held; server RSS {:?} KiB -> {:?} KiB",
            rss_before, server_rss.after_setup_kib
        ));
        let s2 = sh.clone();
        sampler = Some(Sampler::start(env.clone(), move |m| {
            m.insert("dropped".into(), s2.dropped.load(Ordering::Relaxed).into());
            m.insert("pings".into(), s2.pings.load(Ordering::Relaxed).into());
            m.insert(
                "ping_replies".into(),
                s2.pongs.load(Ordering::Relaxed).into(),
            );
        }));
        let c0 = sys::CpuSnap::take(&env.server_pids);
        let t0 = Instant::now();
        if !interrupted {
            interrupted = env.sleep_until(tokio::time::Instant::now() + hold).await;
        }
        hold_secs = t0.elapsed().as_secs_f64();
        let u = sys::cpu_between(&c0, &sys::CpuSnap::take(&env.server_pids));
        cpu = Some(CpuReport::new("hold", &u, env.workers, env.ncpu));
        server_rss.at_end_kib = env.server_rss();
    } else if !sw.interrupted {
        problems.push(format!(
            "setup failed: {} of {conns} connections ready, {} failed {:?}; first errors: {:?}",
            setup.ready, setup.failed, setup.failed_by_stage, setup.first_errors
        ));
    }
    server_rss.peak_kib = env.server_hwm();

    env.progress("idle: closing connections");
    sh.cancel.cancel();
    let t_close = Instant::now();
    let (ends, aborted_groups) =
        super::join_groups(handles, env.op_timeout + Duration::from_secs(30)).await;
    let close_secs = t_close.elapsed().as_secs_f64();
    let clean = ends
        .iter()
        .filter(|e| matches!(e, End::Closed { clean: true }))
        .count() as u64;
    let unclean = ends
        .iter()
        .filter(|e| matches!(e, End::Closed { clean: false }))
        .count() as u64;
    let timeline = match sampler {
        Some(s) => s.finish().await,
        None => Vec::new(),
    };
    // One fresh login: does the server still answer after the mass close?
    let t_probe = Instant::now();
    let probe = {
        let mut times = client::SetupTimes::default();
        let user = format!("ib-{}-probe", env.run_id);
        match client::open_session(env.target(0), None, &sh.cfg, &user, &mut times).await {
            Ok(s) => {
                let _ = Box::pin(client::close(s.ws, env.op_timeout)).await;
                Ok(t_probe.elapsed().as_secs_f64() * 1000.0)
            }
            Err(e) => Err(e.to_string()),
        }
    };
    if let Err(e) = &probe {
        notes.push(format!(
            "SERVER UNRESPONSIVE after the connections closed: a fresh login failed ({e})"
        ));
    }
    let after_close = if env.server_pids.is_empty() {
        None
    } else {
        tokio::time::sleep(Duration::from_secs(1)).await;
        env.server_rss()
    };

    let mut rtt = Latency::new();
    for r in &rtts {
        if let Ok(h) = r.lock() {
            rtt.merge(&h);
        }
    }
    let ready = setup.ready.max(1) as f64;
    let per_conn = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some(round1((b as f64 - a as f64) / ready)),
        _ => None,
    };
    let server_per_conn = per_conn(server_rss.before_kib, server_rss.after_setup_kib);
    if sw.all_ready && server_per_conn.is_some_and(|k| k < 1.0) {
        notes.push(
            "the server's RSS hardly grew with the connections: it probably reused memory kept \
             from earlier load, so KiB per connection is understated; measure on a freshly \
             started server"
                .into(),
        );
    }
    let dropped = sh.dropped.load(Ordering::Relaxed);
    let first_drop_reasons = sh
        .drop_reasons
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    if sw.all_ready && dropped > 0 {
        problems.push(format!(
            "{dropped} connections dropped after setup; first reasons: {first_drop_reasons:?}"
        ));
    }
    let unexpected = sh.unexpected.load(Ordering::Relaxed);
    if unexpected > 0 {
        notes.push(format!("{unexpected} unexpected server messages"));
    }
    let results = IdleResults {
        server_kib_per_connection: server_per_conn,
        client_kib_per_connection: per_conn(client_before, client_after),
        setup,
        server_rss,
        server_rss_after_close_kib: after_close,
        client_rss_before_kib: client_before,
        client_rss_after_setup_kib: client_after,
        hold: HoldResults {
            secs: round3(hold_secs),
            dropped,
            first_drop_reasons,
            pings_sent: sh.pings.load(Ordering::Relaxed),
            ping_replies: sh.pongs.load(Ordering::Relaxed),
            ping_rtt: rtt.summary(),
            unexpected_messages: unexpected,
        },
        close: CloseResults {
            secs: round3(close_secs),
            clean,
            unclean,
            aborted_groups,
            fresh_login_after_close_ms: probe.as_ref().ok().map(|ms| round3(*ms)),
            fresh_login_error: probe.err(),
        },
    };
    let verdict = Verdict::new(
        !sw.all_ready && !sw.interrupted,
        interrupted,
        problems,
        notes,
    );
    let mut report = env.report("idle", verdict, config, results);
    report.client_cpu = cpu;
    report.timeline = timeline;
    Ok(report)
}
