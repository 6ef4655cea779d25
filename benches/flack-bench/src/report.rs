//! The run report: one serializable structure written as JSON and printed
//! as a readable summary. The summary is rendered from the very JSON value
//! that is written, so both always carry the same figures.

use serde::Serialize;
use serde_json::Value;

use crate::sys::CpuUse;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Ran to the end and every check held.
    Pass,
    /// Ran, but a check failed (lost, duplicated or reordered messages,
    /// dropped connections, failed cycles).
    Fail,
    /// The scenario could not be set up (connections or joins failed).
    SetupFailed,
    /// Stopped early by Ctrl-C.
    Interrupted,
}

impl Status {
    /// The process exit code for this status.
    pub fn exit_code(self) -> i32 {
        match self {
            Status::Pass => 0,
            Status::Fail => 1,
            Status::SetupFailed => 3,
            Status::Interrupted => 4,
        }
    }
}

/// Outcome and the reasons for it.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// How the run ended.
    pub status: Status,
    /// Exit code of the process.
    pub exit_code: i32,
    /// Why the run did not pass (empty when it did).
    pub problems: Vec<String>,
    /// Things worth knowing that do not fail the run.
    pub notes: Vec<String>,
}

impl Verdict {
    /// Builds a verdict: `setup_failed` wins over `interrupted`, which wins
    /// over problems.
    pub fn new(
        setup_failed: bool,
        interrupted: bool,
        problems: Vec<String>,
        notes: Vec<String>,
    ) -> Self {
        let status = if setup_failed {
            Status::SetupFailed
        } else if interrupted {
            Status::Interrupted
        } else if problems.is_empty() {
            Status::Pass
        } else {
            Status::Fail
        };
        Verdict {
            status,
            exit_code: status.exit_code(),
            problems,
            notes,
        }
    }
}

/// Client CPU use during the measured phase, and whether the client (or
/// the whole machine) was the limit.
#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    /// Which phase the figures cover.
    pub phase: String,
    /// Wall seconds of that phase.
    pub wall_secs: f64,
    /// CPU seconds the client used in it.
    pub client_cpu_secs: f64,
    /// Average client cores in use.
    pub client_cores_used: f64,
    /// Client runtime worker threads.
    pub client_worker_threads: usize,
    /// CPUs of the machine.
    pub machine_cpus: usize,
    /// Busy share of all CPUs, percent (all processes).
    pub machine_busy_pct: Option<f64>,
    /// Average cores used by the given server pids.
    pub server_cores_used: Option<f64>,
    /// Average cores used by every other process (machine busy minus client
    /// and servers; includes the servers when no --server-pid was given).
    pub other_cores_used: Option<f64>,
    /// The client used at least 90% of its worker threads' capacity.
    pub client_saturated: bool,
    /// The machine was at least 95% busy (client and server compete).
    pub machine_saturated: bool,
    /// One-line reading of the above.
    pub assessment: String,
}

impl CpuReport {
    /// Interprets a CPU reading.
    pub fn new(phase: &str, u: &CpuUse, workers: usize, ncpu: usize) -> Self {
        use crate::stats::round3;
        let capacity = workers.min(ncpu).max(1) as f64;
        let client_saturated = u.client_cores >= 0.9 * capacity;
        let machine_saturated = u.machine_busy.is_some_and(|b| b >= 0.95);
        let cores = round3(u.client_cores);
        let busy_cores = u.machine_busy.map(|b| b * ncpu as f64);
        let other = busy_cores
            .map(|b| round3((b - u.client_cores - u.server_cores.unwrap_or(0.0)).max(0.0)));
        let server = u
            .server_cores
            .map(|s| round3(s).to_string())
            .unwrap_or_else(|| "? (no --server-pid)".into());
        let other_txt = other.map(|o| o.to_string()).unwrap_or_else(|| "?".into());
        let assessment = if client_saturated {
            format!(
                "CLIENT SATURATED: the client used {cores} of its {capacity} usable cores; \
                 the figures are limited by the client, not by the server"
            )
        } else if machine_saturated {
            format!(
                "MACHINE SATURATED: all {ncpu} CPUs busy (client {cores} cores, server {server}, \
                 other processes {other_txt}); the figures are CPU-bound, not the server's alone"
            )
        } else {
            format!("client not saturated: it used {cores} of {capacity} usable cores")
        };
        CpuReport {
            phase: phase.to_string(),
            wall_secs: round3(u.wall_secs),
            client_cpu_secs: round3(u.client_cpu_secs),
            client_cores_used: cores,
            client_worker_threads: workers,
            machine_cpus: ncpu,
            machine_busy_pct: u.machine_busy.map(|b| crate::stats::round1(b * 100.0)),
            server_cores_used: u.server_cores.map(round3),
            other_cores_used: other,
            client_saturated,
            machine_saturated,
            assessment,
        }
    }
}

/// A server process named with --server-pid.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    /// Its pid.
    pub pid: u32,
    /// Its command name (e.g. flack or beam.smp).
    pub command: Option<String>,
    /// Its soft open-file limit.
    pub max_open_files: Option<u64>,
}

/// The whole report of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// "flack-bench".
    pub tool: &'static str,
    /// Version of this binary.
    pub version: &'static str,
    /// Scenario name.
    pub scenario: &'static str,
    /// The --label given, if any.
    pub label: Option<String>,
    /// Start time, seconds since the Unix epoch.
    pub started_unix_secs: u64,
    /// Target URLs.
    pub urls: Vec<String>,
    /// Servers sampled.
    pub servers: Vec<ServerInfo>,
    /// Outcome.
    pub verdict: Verdict,
    /// Scenario parameters as run.
    pub config: Value,
    /// Scenario figures.
    pub results: Value,
    /// Client CPU use and saturation.
    pub client_cpu: Option<CpuReport>,
    /// Per-second samples.
    pub timeline: Vec<Value>,
}

impl Report {
    /// The JSON text (pretty-printed).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The readable summary, rendered from the JSON value.
    pub fn summary(&self) -> String {
        let v = serde_json::to_value(self).unwrap_or(Value::Null);
        let mut out = String::new();
        let status = match self.verdict.status {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::SetupFailed => "SETUP FAILED",
            Status::Interrupted => "INTERRUPTED",
        };
        let label = self
            .label
            .as_deref()
            .map(|l| format!(" [{l}]"))
            .unwrap_or_default();
        out.push_str(&format!(
            "== flack-bench {}{label}: {} (exit {}) ==\n",
            self.scenario, status, self.verdict.exit_code
        ));
        if let Value::Object(map) = &v {
            for (k, val) in map {
                if matches!(k.as_str(), "tool" | "scenario" | "label") {
                    continue;
                }
                render(&mut out, k, val, 0);
            }
        }
        out.push_str(&format!("== result: {status} ==\n"));
        out
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some("-".into()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn flat(map: &serde_json::Map<String, Value>) -> Option<String> {
    if map.len() > 8 {
        return None;
    }
    let parts: Option<Vec<String>> = map
        .iter()
        .map(|(k, v)| scalar(v).map(|s| format!("{k} {s}")))
        .collect();
    parts.map(|p| p.join(", "))
}

fn render(out: &mut String, key: &str, v: &Value, depth: usize) {
    let pad = "  ".repeat(depth);
    if let Some(s) = scalar(v) {
        out.push_str(&format!("{pad}{key}: {s}\n"));
        return;
    }
    match v {
        Value::Object(map) => {
            if map.is_empty() {
                return;
            }
            if let Some(line) = flat(map) {
                out.push_str(&format!("{pad}{key}: {line}\n"));
            } else {
                out.push_str(&format!("{pad}{key}:\n"));
                for (k, val) in map {
                    render(out, k, val, depth + 1);
                }
            }
        }
        Value::Array(items) => {
            if items.is_empty() {
                out.push_str(&format!("{pad}{key}: (none)\n"));
                return;
            }
            if let Some(list) = items.iter().map(scalar).collect::<Option<Vec<_>>>() {
                if list.iter().map(|s| s.len() + 2).sum::<usize>() < 100 {
                    out.push_str(&format!("{pad}{key}: {}\n", list.join(", ")));
                } else {
                    out.push_str(&format!("{pad}{key}:\n"));
                    for s in list {
                        out.push_str(&format!("{pad}  - {s}\n"));
                    }
                }
                return;
            }
            if let Some(table) = table(items, &pad) {
                out.push_str(&format!("{pad}{key}:\n{table}"));
                return;
            }
            out.push_str(&format!("{pad}{key}:\n"));
            for (i, item) in items.iter().enumerate() {
                render(out, &format!("[{i}]"), item, depth + 1);
            }
        }
        _ => {}
    }
}

/// Renders an array of flat objects with the same keys as a table.
fn table(items: &[Value], pad: &str) -> Option<String> {
    let first = items.first()?.as_object()?;
    let keys: Vec<&String> = first.keys().collect();
    let mut rows = vec![keys.iter().map(|k| k.to_string()).collect::<Vec<_>>()];
    for it in items {
        let o = it.as_object()?;
        if o.len() != keys.len() {
            return None;
        }
        let row: Option<Vec<String>> = keys.iter().map(|k| o.get(*k).and_then(scalar)).collect();
        rows.push(row?);
    }
    let widths: Vec<usize> = (0..keys.len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        out.push_str(pad);
        out.push_str("  ");
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_has_json_figures() {
        let r = Report {
            tool: "flack-bench",
            version: "0",
            scenario: "fanout",
            label: None,
            started_unix_secs: 1,
            urls: vec!["ws://127.0.0.1:1/chat-server".into()],
            servers: vec![],
            verdict: Verdict::new(false, false, vec!["lost 3".into()], vec![]),
            config: serde_json::json!({"rooms": 2}),
            results: serde_json::json!({"deliveries_per_sec": 1234.5,
                "latency": {"p50_ms": 0.25, "p99_ms": 1.5}}),
            client_cpu: None,
            timeline: vec![
                serde_json::json!({"t": 1, "deliveries": 10}),
                serde_json::json!({"t": 2, "deliveries": 20}),
            ],
        };
        let s = r.summary();
        assert!(s.contains("FAIL (exit 1)"));
        assert!(s.contains("deliveries_per_sec: 1234.5"));
        assert!(s.contains("p50_ms 0.25, p99_ms 1.5"));
        assert!(s.contains("lost 3"));
        assert!(s.contains("deliveries"));
        assert_eq!(r.verdict.exit_code, 1);
        assert!(r.to_json().contains("\"deliveries_per_sec\": 1234.5"));
    }
}
