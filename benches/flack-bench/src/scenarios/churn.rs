//! The churn scenario: start `--rate` cycles per second for `--duration`
//! seconds, each cycle a fresh connection that says hello, authenticates,
//! joins a room, leaves it, says goodbye and closes. Reports cycles per
//! second, the latency of each step and of whole cycles, and failures by
//! step. A cycle due while `--max-inflight` cycles are still running is
//! skipped and counted: the server (or client) did not keep up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::{Env, Sampler, ServerRss};
use crate::cli::{ChurnArgs, secs};
use crate::client::{self, SetupTimes, StepError};
use crate::report::{CpuReport, Report, Verdict};
use crate::stats::{Latency, LatencySummary, round1, round3};
use crate::sys;

/// Churn parameters as run.
#[derive(Debug, Clone, Serialize)]
pub struct ChurnConfig {
    /// Cycles started per second.
    pub rate: f64,
    /// Seconds during which cycles are started.
    pub duration_secs: f64,
    /// Rooms joined round-robin (0: a new room per cycle).
    pub rooms: u32,
    /// Cycles in flight at most.
    pub max_inflight: usize,
    /// Loopback source addresses used.
    pub source_ips: u32,
    /// Per-step timeout, seconds.
    pub op_timeout_secs: f64,
}

/// Churn figures.
#[derive(Debug, Clone, Serialize)]
pub struct ChurnResults {
    /// Cycles started.
    pub started: u64,
    /// Cycles that went through every step.
    pub completed: u64,
    /// Cycles that failed at some step.
    pub failed: u64,
    /// Cycles not started because `max_inflight` were running.
    pub skipped: u64,
    /// Cycles still running at the end and abandoned.
    pub unfinished: u64,
    /// Cycles started per second.
    pub started_per_sec: f64,
    /// Cycles completed per second of the start window.
    pub completed_per_sec: f64,
    /// Failures by step.
    pub failed_by_stage: BTreeMap<&'static str, u64>,
    /// The first few failure messages.
    pub first_errors: Vec<String>,
    /// Latency of each step of completed cycles: connect (TCP + upgrade),
    /// authenticate (hello + authenticate), join, leave, goodbye (goodbye +
    /// close).
    pub steps: BTreeMap<&'static str, LatencySummary>,
    /// Latency of whole completed cycles.
    pub cycle: LatencySummary,
    /// How late cycles started against the schedule.
    pub start_lag: LatencySummary,
    /// Most cycles in flight at once.
    pub max_inflight_seen: u64,
    /// Seconds after the start window until the last cycle ended.
    pub tail_secs: f64,
    /// Server RSS (all --server-pid together).
    pub server_rss: ServerRss,
}

#[derive(Default)]
struct Acc {
    completed: u64,
    failed: u64,
    by_stage: BTreeMap<&'static str, u64>,
    first_errors: Vec<String>,
    steps: [Latency; 5],
    cycle: Latency,
}

const STEP_NAMES: [&str; 5] = ["connect", "authenticate", "join", "leave", "goodbye"];

struct Shared {
    env: Arc<Env>,
    cfg: ChurnConfig,
    conn: client::ConnectCfg,
    acc: Mutex<Acc>,
    inflight: AtomicU64,
    max_inflight: AtomicU64,
}

async fn cycle(sh: Arc<Shared>, i: u64, _permit: OwnedSemaphorePermit) {
    let env = &sh.env;
    let user = format!("cb-{}-{i}", env.run_id);
    let chat = if sh.cfg.rooms == 0 {
        format!("cb-{}-c{i}", env.run_id)
    } else {
        format!("cb-{}-room-{}", env.run_id, i % u64::from(sh.cfg.rooms))
    };
    let target = env.target(i);
    let source = client::source_for(i, sh.cfg.source_ips, target);
    let timeout = env.op_timeout;
    let t0 = Instant::now();
    let mut times = SetupTimes::default();
    let r = async {
        let mut s = client::open_session(target, source, &sh.conn, &user, &mut times).await?;
        let t = Instant::now();
        s.join(&chat, &user, timeout).await?;
        let join = t.elapsed();
        let t = Instant::now();
        s.leave(&chat, timeout).await?;
        let leave = t.elapsed();
        let t = Instant::now();
        s.goodbye(timeout).await?;
        Ok::<_, StepError>([times.connect, times.auth, join, leave, t.elapsed()])
    }
    .await;
    let total = t0.elapsed();
    sh.inflight.fetch_sub(1, Ordering::Relaxed);
    if let Ok(mut a) = sh.acc.lock() {
        match r {
            Ok(steps) => {
                a.completed += 1;
                for (h, d) in a.steps.iter_mut().zip(steps) {
                    h.record(d);
                }
                a.cycle.record(total);
            }
            Err(e) => {
                a.failed += 1;
                *a.by_stage.entry(e.stage.name()).or_default() += 1;
                if a.first_errors.len() < 5 {
                    a.first_errors.push(e.to_string());
                }
            }
        }
    }
}

/// Runs the churn scenario.
pub async fn run(env: Arc<Env>, a: ChurnArgs) -> Result<Report, String> {
    let smoke = env.smoke;
    let rate = a.rate.unwrap_or(if smoke { 20.0 } else { 100.0 });
    if !(rate.is_finite() && rate > 0.0) {
        return Err(format!("--rate must be positive, got {rate}"));
    }
    let duration = secs(
        "duration",
        a.duration.unwrap_or(if smoke { 3.0 } else { 10.0 }),
    )?;
    // Client-side TIME_WAIT may hold a port for 60 s after each cycle.
    let source_ips = env.source_count((rate * 60.0) as u64);
    let cfg = ChurnConfig {
        rate,
        duration_secs: duration.as_secs_f64(),
        rooms: a.rooms,
        max_inflight: a.max_inflight.max(1),
        source_ips,
        op_timeout_secs: env.op_timeout.as_secs_f64(),
    };
    let mut notes = Vec::new();
    if let Err(e) = env.check_fds(cfg.max_inflight as u64) {
        notes.push(e);
    }
    let sh = Arc::new(Shared {
        env: env.clone(),
        cfg: cfg.clone(),
        conn: env.connect_cfg(4096),
        acc: Mutex::new(Acc::default()),
        inflight: AtomicU64::new(0),
        max_inflight: AtomicU64::new(0),
    });
    let mut server_rss = ServerRss {
        before_kib: env.server_rss(),
        ..Default::default()
    };
    env.progress(&format!(
        "churn: {rate} cycles/s for {:.1}s",
        duration.as_secs_f64()
    ));
    let sem = Arc::new(Semaphore::new(cfg.max_inflight));
    let sh2 = sh.clone();
    let mut prev = 0u64;
    let sampler = Sampler::start(env.clone(), move |m| {
        let done = sh2.acc.lock().map(|a| a.completed + a.failed).unwrap_or(0);
        m.insert("ended".into(), (done - prev).into());
        m.insert(
            "inflight".into(),
            sh2.inflight.load(Ordering::Relaxed).into(),
        );
        prev = done;
    });
    let period = Duration::from_secs_f64(1.0 / rate);
    let t0 = tokio::time::Instant::now() + Duration::from_millis(100);
    let end = t0 + duration;
    let c0 = sys::CpuSnap::take(&env.server_pids);
    let mut tasks = JoinSet::new();
    let mut lag = Latency::new();
    let (mut started, mut skipped) = (0u64, 0u64);
    let mut interrupted = false;
    for i in 0u64.. {
        let at = t0 + period.mul_f64(i as f64);
        if at >= end {
            break;
        }
        if env.sleep_until(at).await {
            interrupted = true;
            break;
        }
        lag.record(tokio::time::Instant::now().saturating_duration_since(at));
        while tasks.try_join_next().is_some() {}
        match sem.clone().try_acquire_owned() {
            Ok(permit) => {
                let n = sh.inflight.fetch_add(1, Ordering::Relaxed) + 1;
                sh.max_inflight.fetch_max(n, Ordering::Relaxed);
                started += 1;
                tasks.spawn(cycle(sh.clone(), i, permit));
            }
            Err(_) => skipped += 1,
        }
    }
    let window = t0
        .elapsed()
        .as_secs_f64()
        .min(duration.as_secs_f64())
        .max(1e-9);
    let u = sys::cpu_between(&c0, &sys::CpuSnap::take(&env.server_pids));
    server_rss.at_end_kib = env.server_rss();
    let t_tail = Instant::now();
    let tail_deadline = tokio::time::Instant::now() + env.op_timeout * 6 + Duration::from_secs(5);
    loop {
        tokio::select! {
            r = tasks.join_next() => if r.is_none() { break },
            _ = tokio::time::sleep_until(tail_deadline) => break,
            _ = env.interrupt.cancelled() => { interrupted = true; break }
        }
    }
    let unfinished = tasks.len() as u64;
    tasks.abort_all();
    let tail_secs = t_tail.elapsed().as_secs_f64();
    server_rss.peak_kib = env.server_hwm();
    let timeline = sampler.finish().await;

    let acc = std::mem::take(&mut *sh.acc.lock().map_err(|_| "poisoned lock".to_string())?);
    let mut problems = Vec::new();
    if acc.failed > 0 {
        problems.push(format!(
            "{} cycles failed {:?}; first errors: {:?}",
            acc.failed, acc.by_stage, acc.first_errors
        ));
    }
    if unfinished > 0 {
        problems.push(format!("{unfinished} cycles did not finish in time"));
    }
    if skipped > 0 {
        notes.push(format!(
            "{skipped} cycles skipped: {} were already in flight (server too slow for the rate)",
            cfg.max_inflight
        ));
    }
    let completed_per_sec = acc.completed as f64 / window;
    if !interrupted && completed_per_sec < 0.95 * rate {
        notes.push(format!(
            "completed {completed_per_sec:.1} of the {rate} cycles/s asked for"
        ));
    }
    let steps = STEP_NAMES
        .iter()
        .zip(&acc.steps)
        .map(|(n, h)| (*n, h.summary()))
        .collect();
    let results = ChurnResults {
        started,
        completed: acc.completed,
        failed: acc.failed,
        skipped,
        unfinished,
        started_per_sec: round1(started as f64 / window),
        completed_per_sec: round1(completed_per_sec),
        failed_by_stage: acc.by_stage,
        first_errors: acc.first_errors,
        steps,
        cycle: acc.cycle.summary(),
        start_lag: lag.summary(),
        max_inflight_seen: sh.max_inflight.load(Ordering::Relaxed),
        tail_secs: round3(tail_secs),
        server_rss,
    };
    let verdict = Verdict::new(false, interrupted, problems, notes);
    let mut report = env.report("churn", verdict, cfg, results);
    report.client_cpu = Some(CpuReport::new("start window", &u, env.workers, env.ncpu));
    report.timeline = timeline;
    Ok(report)
}
