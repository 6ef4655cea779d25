//! Operating-system facts the benchmark needs: the open-file limit (raised at
//! start), the client's own CPU time (getrusage), machine-wide CPU use
//! (/proc/stat), and a server process's RSS and CPU time (/proc/PID/status,
//! /proc/PID/stat). Everything here is Linux-specific and degrades to `None`
//! where /proc is not readable.

use std::time::{Duration, Instant};

/// Outcome of raising RLIMIT_NOFILE.
#[derive(Debug, Clone, Copy)]
pub struct NoFile {
    /// Soft limit in force after the attempt.
    pub soft: u64,
    /// Hard limit (a process without CAP_SYS_RESOURCE cannot exceed it).
    pub hard: u64,
}

/// Raises the soft open-file limit to `wanted` (or as high as allowed),
/// trying the hard limit too when it is lower. Returns the limits in force.
pub fn raise_nofile(wanted: u64) -> NoFile {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return NoFile { soft: 0, hard: 0 };
        }
        if lim.rlim_max < wanted {
            let try_hard = libc::rlimit {
                rlim_cur: wanted,
                rlim_max: wanted,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &try_hard) == 0 {
                return NoFile {
                    soft: wanted,
                    hard: wanted,
                };
            }
        }
        let target = libc::rlimit {
            rlim_cur: lim.rlim_max.max(lim.rlim_cur),
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &target) == 0 {
            lim.rlim_cur = target.rlim_cur;
        }
        NoFile {
            soft: lim.rlim_cur,
            hard: lim.rlim_max,
        }
    }
}

/// CPU seconds (user + system) this process has used so far.
pub fn self_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
            return Duration::ZERO;
        }
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
}

/// Number of CPUs this process may run on.
pub fn ncpu() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Machine-wide CPU counters from the first line of /proc/stat, in ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineTicks {
    busy: u64,
    total: u64,
}

/// Reads /proc/stat.
pub fn machine_ticks() -> Option<MachineTicks> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().next()?;
    let vals: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    if vals.len() < 5 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let total: u64 = vals.iter().take(8).sum();
    let idle = vals[3] + vals[4];
    Some(MachineTicks {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// VmRSS and VmHWM of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        s.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:").unwrap_or(0)))
}

/// Own VmRSS in KiB.
pub fn self_rss_kib() -> Option<u64> {
    rss_kib(std::process::id()).map(|(r, _)| r)
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat.
pub fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the command: state(3) ... utime(14) stime(15).
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clk_tck())
}

/// The soft "Max open files" limit of a process, from /proc/PID/limits.
pub fn proc_nofile(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = s.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Command name of a process (for the report), from /proc/PID/comm.
pub fn proc_comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// A point-in-time reading of CPU counters: the client's, the machine's, and
/// the given server processes'.
#[derive(Debug, Clone)]
pub struct CpuSnap {
    at: Instant,
    client: Duration,
    machine: Option<MachineTicks>,
    servers: Vec<Option<f64>>,
}

impl CpuSnap {
    /// Takes a reading now.
    pub fn take(server_pids: &[u32]) -> Self {
        CpuSnap {
            at: Instant::now(),
            client: self_cpu(),
            machine: machine_ticks(),
            servers: server_pids.iter().map(|&p| proc_cpu_secs(p)).collect(),
        }
    }
}

/// CPU use between two readings, in cores (CPU seconds per wall second).
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    /// Wall seconds between the readings.
    pub wall_secs: f64,
    /// Client CPU seconds.
    pub client_cpu_secs: f64,
    /// Client cores in use on average.
    pub client_cores: f64,
    /// Fraction of the whole machine busy (all processes), 0..1.
    pub machine_busy: Option<f64>,
    /// Server cores in use on average, all given pids together.
    pub server_cores: Option<f64>,
}

/// Computes the CPU use between `a` and `b`.
pub fn cpu_between(a: &CpuSnap, b: &CpuSnap) -> CpuUse {
    let wall = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
    let client = b.client.saturating_sub(a.client).as_secs_f64();
    let machine_busy = match (a.machine, b.machine) {
        (Some(x), Some(y)) if y.total > x.total => {
            Some((y.busy.saturating_sub(x.busy)) as f64 / (y.total - x.total) as f64)
        }
        _ => None,
    };
    let server_cores = if a.servers.is_empty() {
        None
    } else {
        let mut sum = 0.0;
        for (x, y) in a.servers.iter().zip(&b.servers) {
            match (x, y) {
                (Some(x), Some(y)) => sum += (y - x).max(0.0),
                _ => return cpu_partial(wall, client, machine_busy),
            }
        }
        Some(sum / wall)
    };
    CpuUse {
        wall_secs: wall,
        client_cpu_secs: client,
        client_cores: client / wall,
        machine_busy,
        server_cores,
    }
}

fn cpu_partial(wall: f64, client: f64, machine_busy: Option<f64>) -> CpuUse {
    CpuUse {
        wall_secs: wall,
        client_cpu_secs: client,
        client_cores: client / wall,
        machine_busy,
        server_cores: None,
    }
}

/// Current time as nanoseconds since the Unix epoch (the clock the message
/// timestamps use; sender and receiver are the same process).
pub fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
