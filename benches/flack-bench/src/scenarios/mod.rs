//! What the scenarios share: the run environment (targets, setup gate,
//! timeouts, Ctrl-C), connection setup with progress accounting, running
//! many connection futures per tokio task, the per-second sampler, and the
//! server-side probes (RSS, CPU, open-file limit).

pub mod churn;
pub mod fanout;
pub mod flood;
pub mod idle;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::{Common, Target};
use crate::client::{self, ConnectCfg, Session, SetupGate, SetupTimes, StepError};
use crate::report::{Report, ServerInfo, Verdict};
use crate::stats::{Latency, LatencySummary, round1, round3};
use crate::sys::{self, NoFile};

/// Connections one loopback source address is given by default.
const CONNS_PER_SOURCE_IP: u64 = 25_000;

/// Everything a scenario needs besides its own parameters.
#[derive(Debug)]
pub struct Env {
    /// Endpoints, used round-robin.
    pub targets: Vec<Target>,
    /// Server processes to sample.
    pub server_pids: Vec<u32>,
    /// --source-ips as given (None: automatic).
    pub source_ips: Option<u32>,
    /// Pacing and concurrency of connection setups.
    pub gate: SetupGate,
    /// Per-step timeout.
    pub op_timeout: Duration,
    /// Ping period of otherwise silent connections.
    pub ping_interval: Duration,
    /// Cancelled on Ctrl-C.
    pub interrupt: CancellationToken,
    /// Random tag making user and chat names unique to this run.
    pub run_id: String,
    /// Client runtime worker threads.
    pub workers: usize,
    /// Machine CPUs.
    pub ncpu: usize,
    /// Open-file limit in force.
    pub nofile: NoFile,
    /// --label.
    pub label: Option<String>,
    /// --smoke.
    pub smoke: bool,
    /// When the run started.
    pub started: Instant,
}

impl Env {
    /// Builds the environment from the shared options.
    pub fn new(c: &Common, workers: usize, nofile: NoFile, interrupt: CancellationToken) -> Self {
        Env {
            targets: c.urls.clone(),
            server_pids: c.server_pids.clone(),
            source_ips: c.source_ips,
            gate: SetupGate::new(c.connect_rate, c.connect_concurrency),
            op_timeout: Duration::from_secs_f64(c.op_timeout.clamp(0.1, 3600.0)),
            ping_interval: Duration::from_secs_f64(c.ping_interval.clamp(0.5, 3600.0)),
            interrupt,
            run_id: format!("{:08x}", rand::random::<u32>()),
            workers,
            ncpu: sys::ncpu(),
            nofile,
            label: c.label.clone(),
            smoke: c.smoke,
            started: Instant::now(),
        }
    }

    /// Endpoint of connection `i`.
    pub fn target(&self, i: u64) -> &Target {
        &self.targets[(i % self.targets.len() as u64) as usize]
    }

    /// Number of source addresses to spread `conns` connections over.
    pub fn source_count(&self, conns: u64) -> u32 {
        self.source_ips.unwrap_or_else(|| {
            if conns <= CONNS_PER_SOURCE_IP {
                0
            } else {
                conns.div_ceil(CONNS_PER_SOURCE_IP).min(250) as u32
            }
        })
    }

    /// Connect settings with the given read buffer.
    pub fn connect_cfg(&self, read_buffer: usize) -> ConnectCfg {
        ConnectCfg {
            op_timeout: self.op_timeout,
            read_buffer,
        }
    }

    /// Fails when this process cannot open `conns` sockets.
    pub fn check_fds(&self, conns: u64) -> Result<(), String> {
        let need = conns + 64;
        if self.nofile.soft < need {
            Err(format!(
                "{conns} connections need about {need} open files but this process may open only \
                 {} (hard limit {}; raising it needs root with CAP_SYS_RESOURCE, or run several \
                 flack-bench processes)",
                self.nofile.soft, self.nofile.hard
            ))
        } else {
            Ok(())
        }
    }

    /// Notes about server processes whose open-file limit is below `conns`.
    pub fn server_fd_notes(&self, conns: u64) -> Vec<String> {
        let per_server = conns.div_ceil(self.server_pids.len().max(1) as u64);
        self.server_pids
            .iter()
            .filter_map(|&p| {
                let lim = sys::proc_nofile(p)?;
                (lim < per_server + 32).then(|| {
                    format!(
                        "server pid {p} may open only {lim} files but is to hold about \
                         {per_server} connections"
                    )
                })
            })
            .collect()
    }

    /// Summed VmRSS of the server pids, KiB (None without pids).
    pub fn server_rss(&self) -> Option<u64> {
        if self.server_pids.is_empty() {
            return None;
        }
        self.server_pids
            .iter()
            .map(|&p| sys::rss_kib(p).map(|r| r.0))
            .sum()
    }

    /// Summed VmHWM (peak RSS) of the server pids, KiB.
    pub fn server_hwm(&self) -> Option<u64> {
        if self.server_pids.is_empty() {
            return None;
        }
        self.server_pids
            .iter()
            .map(|&p| sys::rss_kib(p).map(|r| r.1))
            .sum()
    }

    /// Describes the server pids.
    pub fn servers(&self) -> Vec<ServerInfo> {
        self.server_pids
            .iter()
            .map(|&pid| ServerInfo {
                pid,
                command: sys::proc_comm(pid),
                max_open_files: sys::proc_nofile(pid),
            })
            .collect()
    }

    /// A report with the common fields filled in.
    pub fn report(
        &self,
        scenario: &'static str,
        verdict: Verdict,
        config: impl Serialize,
        results: impl Serialize,
    ) -> Report {
        Report {
            tool: "flack-bench",
            version: env!("CARGO_PKG_VERSION"),
            scenario,
            label: self.label.clone(),
            started_unix_secs: sys::unix_nanos() / 1_000_000_000 - self.started.elapsed().as_secs(),
            urls: self.targets.iter().map(|t| t.url.clone()).collect(),
            servers: self.servers(),
            verdict,
            config: serde_json::to_value(config).unwrap_or(Value::Null),
            results: serde_json::to_value(results).unwrap_or(Value::Null),
            client_cpu: None,
            timeline: Vec::new(),
        }
    }

    /// Prints a progress line to standard error.
    pub fn progress(&self, msg: &str) {
        eprintln!("[{:7.1}s] {msg}", self.started.elapsed().as_secs_f64());
    }

    /// Sleeps until `at` or Ctrl-C; true if interrupted.
    pub async fn sleep_until(&self, at: tokio::time::Instant) -> bool {
        tokio::select! {
            _ = tokio::time::sleep_until(at) => false,
            _ = self.interrupt.cancelled() => true,
        }
    }
}

/// Counts of connection setups and their failures.
#[derive(Debug, Default)]
pub struct SetupProgress {
    /// Setups that reached their joined message.
    pub ready: AtomicU64,
    /// Setups that failed.
    pub failed: AtomicU64,
    inner: Mutex<SetupInner>,
}

#[derive(Debug, Default)]
struct SetupInner {
    by_stage: BTreeMap<&'static str, u64>,
    first_errors: Vec<String>,
    times: Latency,
}

/// Report form of [`SetupProgress`].
#[derive(Debug, Clone, Serialize)]
pub struct SetupSummary {
    /// Connections wanted.
    pub wanted: u64,
    /// Connections connected, authenticated and joined.
    pub ready: u64,
    /// Connections that failed during setup.
    pub failed: u64,
    /// Failures by protocol step.
    pub failed_by_stage: BTreeMap<&'static str, u64>,
    /// The first few failure messages.
    pub first_errors: Vec<String>,
    /// Wall seconds until all were ready (or setup gave up).
    pub secs: f64,
    /// Ready connections per second of setup.
    pub per_sec: f64,
    /// Time from connect to own joined message, per connection.
    pub connect_to_joined: LatencySummary,
}

impl SetupProgress {
    /// Records a successful setup that took `t`.
    pub fn ok(&self, t: Duration) {
        self.ready.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut g) = self.inner.lock() {
            g.times.record(t);
        }
    }

    /// Records a failed setup.
    pub fn fail(&self, e: &StepError) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut g) = self.inner.lock() {
            *g.by_stage.entry(e.stage.name()).or_default() += 1;
            if g.first_errors.len() < 5 {
                g.first_errors.push(e.to_string());
            }
        }
    }

    /// The report form.
    pub fn summary(&self, wanted: u64, secs: f64) -> SetupSummary {
        let ready = self.ready.load(Ordering::Relaxed);
        let g = self.inner.lock().ok();
        SetupSummary {
            wanted,
            ready,
            failed: self.failed.load(Ordering::Relaxed),
            failed_by_stage: g.as_ref().map(|g| g.by_stage.clone()).unwrap_or_default(),
            first_errors: g
                .as_ref()
                .map(|g| g.first_errors.clone())
                .unwrap_or_default(),
            secs: round3(secs),
            per_sec: round1(ready as f64 / secs.max(1e-9)),
            connect_to_joined: g.map(|g| g.times.summary()).unwrap_or_default(),
        }
    }
}

/// Who a connection is: its index (endpoint and source address are chosen
/// from it), the number of source addresses, user and chat name.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    /// Connection index.
    pub i: u64,
    /// Source addresses to spread over.
    pub n_src: u32,
    /// User name.
    pub user: &'a str,
    /// Chat to join.
    pub chat: &'a str,
}

/// Opens connection `i` for `user`, authenticates and joins `chat`, under
/// the environment's setup gate. `None` if it failed (recorded in
/// `progress`) or was cancelled.
pub async fn setup_member(
    env: &Env,
    progress: &SetupProgress,
    cfg: &ConnectCfg,
    who: Member<'_>,
    cancel: &CancellationToken,
) -> Option<Session> {
    let Member {
        i,
        n_src,
        user,
        chat,
    } = who;
    let permit = tokio::select! {
        p = env.gate.enter() => p?,
        _ = cancel.cancelled() => return None,
    };
    let target = env.target(i);
    let source = client::source_for(i, n_src, target);
    let mut times = SetupTimes::default();
    let attempt = async {
        let mut s = client::open_session(target, source, cfg, user, &mut times).await?;
        let t = Instant::now();
        s.join(chat, user, cfg.op_timeout).await?;
        times.join = t.elapsed();
        Ok::<_, StepError>(s)
    };
    let r = tokio::select! {
        r = attempt => r,
        _ = cancel.cancelled() => return None,
    };
    drop(permit);
    match r {
        Ok(s) => {
            progress.ok(times.total());
            Some(s)
        }
        Err(e) => {
            progress.fail(&e);
            None
        }
    }
}

/// How waiting for setup ended.
#[derive(Debug, Clone, Copy)]
pub struct SetupWait {
    /// Every connection is ready.
    pub all_ready: bool,
    /// Ctrl-C.
    pub interrupted: bool,
    /// Seconds spent.
    pub secs: f64,
}

/// Waits until `total` setups are ready, one failed, Ctrl-C, or the
/// setup deadline (derived from the connect rate and timeouts) passed.
pub async fn wait_setup(
    env: &Env,
    progress: &SetupProgress,
    total: u64,
    connect_rate: f64,
) -> SetupWait {
    let t0 = Instant::now();
    let paced = if connect_rate > 0.0 {
        total as f64 / connect_rate
    } else {
        0.0
    };
    let deadline = t0 + Duration::from_secs_f64(paced * 1.5 + 10.0) + env.op_timeout * 4;
    let mut last_print = t0;
    loop {
        let interrupted = tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => false,
            _ = env.interrupt.cancelled() => true,
        };
        let ready = progress.ready.load(Ordering::Relaxed);
        let failed = progress.failed.load(Ordering::Relaxed);
        let secs = t0.elapsed().as_secs_f64();
        if interrupted || ready == total || failed > 0 || Instant::now() > deadline {
            env.progress(&format!(
                "setup: {ready}/{total} ready, {failed} failed in {secs:.1}s"
            ));
            return SetupWait {
                all_ready: ready == total,
                interrupted,
                secs,
            };
        }
        if last_print.elapsed() >= Duration::from_secs(2) {
            last_print = Instant::now();
            env.progress(&format!("setup: {ready}/{total} ready"));
        }
    }
}

/// Runs `futs` in `groups` tokio tasks, many futures per task (so that
/// 100k connections are not 100k tasks). Each handle yields its outputs.
pub fn spawn_groups<T: Send + 'static>(
    futs: Vec<BoxFuture<'static, T>>,
    groups: usize,
) -> Vec<JoinHandle<Vec<T>>> {
    let groups = groups.max(1);
    let sets: Vec<FuturesUnordered<BoxFuture<'static, T>>> =
        (0..groups).map(|_| FuturesUnordered::new()).collect();
    for (i, f) in futs.into_iter().enumerate() {
        sets[i % groups].push(f);
    }
    sets.into_iter()
        .filter(|s| !s.is_empty())
        .map(|mut set| {
            tokio::spawn(async move {
                let mut out = Vec::with_capacity(set.len());
                while let Some(x) = set.next().await {
                    out.push(x);
                }
                out
            })
        })
        .collect()
}

/// Collects the outputs of [`spawn_groups`], giving up on groups that do
/// not finish within `timeout` (they are aborted). Returns the outputs and
/// the number of groups given up on.
pub async fn join_groups<T>(
    handles: Vec<JoinHandle<Vec<T>>>,
    timeout: Duration,
) -> (Vec<T>, usize) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::new();
    let mut lost = 0;
    for mut h in handles {
        match tokio::time::timeout_at(deadline, &mut h).await {
            Ok(Ok(v)) => out.extend(v),
            Ok(Err(_)) => lost += 1,
            Err(_) => {
                h.abort();
                lost += 1;
            }
        }
    }
    (out, lost)
}

/// Number of group tasks for `conns` connections.
pub fn group_count(env: &Env, conns: u64) -> usize {
    let by_workers = env.workers * 8;
    let by_size = conns.div_ceil(2000) as usize;
    by_workers.max(by_size).min(conns.max(1) as usize)
}

/// Samples once a second until stopped: seconds since start, the fields
/// `extra` returns, client and server cores, machine busy share and server
/// RSS.
pub struct Sampler {
    stop: CancellationToken,
    handle: JoinHandle<Vec<Value>>,
}

impl Sampler {
    /// Starts sampling.
    pub fn start(
        env: Arc<Env>,
        mut extra: impl FnMut(&mut Map<String, Value>) + Send + 'static,
    ) -> Self {
        let stop = CancellationToken::new();
        let s = stop.clone();
        let handle = tokio::spawn(async move {
            let t0 = Instant::now();
            let mut prev = sys::CpuSnap::take(&env.server_pids);
            let mut out = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            // Bounded: one sample a second, at most a week of them.
            while out.len() < 7 * 86400 {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = s.cancelled() => break,
                }
                let now = sys::CpuSnap::take(&env.server_pids);
                let u = sys::cpu_between(&prev, &now);
                prev = now;
                let mut m = Map::new();
                m.insert("t".into(), Value::from(round1(t0.elapsed().as_secs_f64())));
                extra(&mut m);
                m.insert("client_cores".into(), Value::from(round3(u.client_cores)));
                m.insert(
                    "server_cores".into(),
                    u.server_cores
                        .map(round3)
                        .map(Value::from)
                        .unwrap_or(Value::Null),
                );
                m.insert(
                    "machine_busy_pct".into(),
                    u.machine_busy
                        .map(|b| Value::from(round1(b * 100.0)))
                        .unwrap_or(Value::Null),
                );
                m.insert(
                    "server_rss_mib".into(),
                    env.server_rss()
                        .map(|k| Value::from(round1(k as f64 / 1024.0)))
                        .unwrap_or(Value::Null),
                );
                out.push(Value::Object(m));
            }
            out
        });
        Sampler { stop, handle }
    }

    /// Stops and returns the samples.
    pub async fn finish(self) -> Vec<Value> {
        self.stop.cancel();
        self.handle.await.unwrap_or_default()
    }
}

/// Server RSS figures, KiB.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ServerRss {
    /// Before any benchmark connection.
    pub before_kib: Option<u64>,
    /// Once every connection was set up (and settled).
    pub after_setup_kib: Option<u64>,
    /// At the end of the measured phase.
    pub at_end_kib: Option<u64>,
    /// Peak RSS of the process lifetime (VmHWM).
    pub peak_kib: Option<u64>,
}
