//! Process-wide counters, exported at `GET /metrics` in the Prometheus text
//! format.
//!
//! Names follow Prometheus' conventions, so that dashboards and alerts can be
//! written without a lookup table: everything starts with `flack_`, counters
//! end in `_total`, gauges name what they count in the plural
//! (`flack_connections_open`, `flack_rooms`), times are in seconds
//! (`flack_start_time_seconds`), and no counter's name minus `_total`
//! is the name of another metric. `flack_build_info{version="..."} 1`
//! carries the version as a label. [`EXPORTED`] lists every name; the
//! README's metrics table and `rel/grafana/flack-dashboard.json` are
//! checked against real scrapes by `tests/dashboard.rs`.
//!
//! Every counter is a relaxed atomic: they are bumped on the hot path (one
//! per delivered event) and read rarely, so they must cost no more than an
//! uncontended add.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Every metric name `/metrics` can export, with its type: the first part
/// from every node, the `flack_service_` part with a sample per supervised
/// service (a distributed node's `net_kernel`, `rex`, `flack_mesh`, and
/// `gproc_dist` in a cluster), the `flack_cluster_` part from nodes with
/// gproc_dist candidates.
pub const EXPORTED: &[(&str, &str)] = &[
    ("flack_build_info", "gauge"),
    ("flack_start_time_seconds", "gauge"),
    ("flack_connections_open", "gauge"),
    ("flack_connections_total", "counter"),
    ("flack_frames_in_total", "counter"),
    ("flack_frames_out_total", "counter"),
    ("flack_deliveries_total", "counter"),
    ("flack_slow_clients_dropped_total", "counter"),
    ("flack_protocol_errors_total", "counter"),
    ("flack_idle_timeouts_total", "counter"),
    ("flack_sequence_requests_total", "counter"),
    ("flack_sequenced_events_total", "counter"),
    ("flack_connections_refused_total", "counter"),
    ("flack_origins_refused_total", "counter"),
    ("flack_rooms", "gauge"),
    ("flack_members", "gauge"),
    ("flack_users", "gauge"),
    ("flack_service_up", "gauge"),
    ("flack_service_restarts_total", "counter"),
    ("flack_cluster_role", "gauge"),
    ("flack_cluster_candidates", "gauge"),
    ("flack_cluster_registry_entries", "gauge"),
];

/// Names earlier versions exported, and the names that replaced them.
pub const RENAMED: &[(&str, &str)] = &[
    ("flack_connections", "flack_connections_open"),
    (
        "flack_cluster_registry_size",
        "flack_cluster_registry_entries",
    ),
];

/// The node's counters and gauges.
#[derive(Debug)]
pub struct Metrics {
    /// When the node started (`flack_start_time_seconds`).
    pub started: SystemTime,
    /// Websocket connections currently open.
    pub connections_open: AtomicU64,
    /// Websocket connections accepted since start.
    pub connections_total: AtomicU64,
    /// Frames received from clients.
    pub frames_in: AtomicU64,
    /// Frames sent to clients (replies and events).
    pub frames_out: AtomicU64,
    /// Events queued for a member (one per member per event).
    pub deliveries: AtomicU64,
    /// Clients closed because their outbound queue was full.
    pub slow_clients_dropped: AtomicU64,
    /// Connections closed with a protocol_error.
    pub protocol_errors: AtomicU64,
    /// Connections closed for idleness.
    pub idle_timeouts: AtomicU64,
    /// Cluster: leader requests that numbered a batch of one chat's events.
    pub sequence_requests: AtomicU64,
    /// Cluster: chat events numbered by those requests.
    pub sequenced_events: AtomicU64,
    /// Websocket upgrades refused with 503: the connection limit was reached.
    pub connections_refused: AtomicU64,
    /// Websocket upgrades refused with 403: the origin is not allowed.
    pub origins_refused: AtomicU64,
}

impl Default for Metrics {
    /// All counters at zero, started now.
    fn default() -> Self {
        Self {
            started: SystemTime::now(),
            connections_open: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            slow_clients_dropped: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            idle_timeouts: AtomicU64::new(0),
            sequence_requests: AtomicU64::new(0),
            sequenced_events: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            origins_refused: AtomicU64::new(0),
        }
    }
}

/// Point-in-time figures that live elsewhere (the registry), added to the
/// export.
#[derive(Debug, Default, Clone, Copy)]
pub struct RegistryGauges {
    /// Chats with at least one member.
    pub rooms: usize,
    /// Chat memberships.
    pub members: usize,
    /// Authenticated users.
    pub users: usize,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Renders the Prometheus text exposition.
    pub fn render(&self, registry: RegistryGauges) -> String {
        let mut out = String::with_capacity(3072);
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        family(
            &mut out,
            "flack_build_info",
            "gauge",
            "The running flack's version, as a label; always 1.",
        );
        let _ = writeln!(
            out,
            "flack_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        family(
            &mut out,
            "flack_start_time_seconds",
            "gauge",
            "When the node started, in seconds since the Unix epoch.",
        );
        let started = self
            .started
            .duration_since(UNIX_EPOCH)
            .map(|since| since.as_secs_f64())
            .unwrap_or(0.0);
        let _ = writeln!(out, "flack_start_time_seconds {started:.3}");
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            family(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        };
        metric(
            "flack_connections_open",
            "gauge",
            "Websocket connections open.",
            get(&self.connections_open),
        );
        metric(
            "flack_connections_total",
            "counter",
            "Websocket connections accepted.",
            get(&self.connections_total),
        );
        metric(
            "flack_frames_in_total",
            "counter",
            "Frames received from clients.",
            get(&self.frames_in),
        );
        metric(
            "flack_frames_out_total",
            "counter",
            "Frames sent to clients.",
            get(&self.frames_out),
        );
        metric(
            "flack_deliveries_total",
            "counter",
            "Chat events queued for members.",
            get(&self.deliveries),
        );
        metric(
            "flack_slow_clients_dropped_total",
            "counter",
            "Clients closed because they did not keep up.",
            get(&self.slow_clients_dropped),
        );
        metric(
            "flack_protocol_errors_total",
            "counter",
            "Connections closed with a protocol_error.",
            get(&self.protocol_errors),
        );
        metric(
            "flack_idle_timeouts_total",
            "counter",
            "Connections closed for idleness.",
            get(&self.idle_timeouts),
        );
        metric(
            "flack_sequence_requests_total",
            "counter",
            "Leader requests that numbered a batch of one chat's events (cluster).",
            get(&self.sequence_requests),
        );
        metric(
            "flack_sequenced_events_total",
            "counter",
            "Chat events numbered by the leader, in batches (cluster).",
            get(&self.sequenced_events),
        );
        metric(
            "flack_connections_refused_total",
            "counter",
            "Websocket upgrades refused because the connection limit was reached.",
            get(&self.connections_refused),
        );
        metric(
            "flack_origins_refused_total",
            "counter",
            "Websocket upgrades refused because the Origin is not allowed.",
            get(&self.origins_refused),
        );
        metric(
            "flack_rooms",
            "gauge",
            "Chats with at least one member.",
            registry.rooms as u64,
        );
        metric(
            "flack_members",
            "gauge",
            "Chat memberships.",
            registry.members as u64,
        );
        metric(
            "flack_users",
            "gauge",
            "Authenticated users.",
            registry.users as u64,
        );
        out
    }
}

/// Writes the `# HELP` and `# TYPE` lines of a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The supervised services' section of the export: whether each is up (0
/// while it restarts and once it stays down) and how often it was
/// restarted, labelled `service="<registered name>"`.
pub fn render_services(services: &[crate::node::ServiceStatus]) -> String {
    let mut out = String::with_capacity(512);
    family(
        &mut out,
        "flack_service_up",
        "gauge",
        "Whether a supervised service (net_kernel, rex, flack_mesh, gproc_dist) is running (1) or not (0).",
    );
    for service in services {
        let up = u8::from(service.state == crate::node::ServiceState::Up);
        let _ = writeln!(out, "flack_service_up{{service=\"{}\"}} {up}", service.name);
    }
    family(
        &mut out,
        "flack_service_restarts_total",
        "counter",
        "Times a supervised service was restarted after its process ended.",
    );
    for service in services {
        let _ = writeln!(
            out,
            "flack_service_restarts_total{{service=\"{}\"}} {}",
            service.name, service.restarts
        );
    }
    out
}

/// The cluster section of the export: this node's role, candidates up and
/// down, and the global registry's size.
pub fn render_cluster(status: &crate::cluster::gproc_dist::ClusterStatus) -> String {
    let mut out = String::with_capacity(768);
    let role = |name: &str| u8::from(status.role == name);
    family(
        &mut out,
        "flack_cluster_role",
        "gauge",
        "This node's gproc_dist role (1 for the current one).",
    );
    for name in ["leader", "follower", "candidate"] {
        let _ = writeln!(out, "flack_cluster_role{{role=\"{name}\"}} {}", role(name));
    }
    family(
        &mut out,
        "flack_cluster_candidates",
        "gauge",
        "gproc_dist candidates by state, as this node sees them.",
    );
    let down = status.down.len();
    let up = status.candidates.len().saturating_sub(down);
    let _ = writeln!(out, "flack_cluster_candidates{{state=\"up\"}} {up}");
    let _ = writeln!(out, "flack_cluster_candidates{{state=\"down\"}} {down}");
    family(
        &mut out,
        "flack_cluster_registry_entries",
        "gauge",
        "Registration objects in the global gproc registry.",
    );
    let _ = writeln!(
        out,
        "flack_cluster_registry_entries {}",
        status.registry_size
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::gproc_dist::ClusterStatus;

    fn scrape() -> String {
        let metrics = Metrics::default();
        Metrics::bump(&metrics.connections_total);
        let mut text = metrics.render(RegistryGauges {
            rooms: 2,
            members: 5,
            users: 3,
        });
        text.push_str(&render_services(&[
            crate::node::ServiceStatus {
                name: "rex".into(),
                state: crate::node::ServiceState::Up,
                restarts: 2,
            },
            crate::node::ServiceStatus {
                name: "gproc_dist".into(),
                state: crate::node::ServiceState::Failed,
                restarts: 15,
            },
        ]));
        text.push_str(&render_cluster(&ClusterStatus {
            role: "follower".into(),
            leader: Some("a@h".into()),
            candidates: vec!["a@h".into(), "b@h".into(), "c@h".into()],
            down: vec!["c@h".into()],
            registry_size: 7,
        }));
        text
    }

    /// The `# TYPE` lines of an exposition: (name, type).
    fn families(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split_once(' '))
            .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
            .collect()
    }

    #[test]
    fn renders_prometheus_text() {
        let text = scrape();
        assert!(
            text.contains("# TYPE flack_connections_total counter\nflack_connections_total 1\n")
        );
        assert!(text.contains("flack_rooms 2\n"));
        assert!(text.contains(&format!(
            "flack_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(text.contains("flack_cluster_role{role=\"follower\"} 1\n"));
        assert!(text.contains("flack_service_up{service=\"rex\"} 1\n"));
        assert!(text.contains("flack_service_up{service=\"gproc_dist\"} 0\n"));
        assert!(text.contains("flack_service_restarts_total{service=\"gproc_dist\"} 15\n"));
        assert!(text.contains("flack_cluster_candidates{state=\"up\"} 2\n"));
        assert!(text.contains("flack_cluster_candidates{state=\"down\"} 1\n"));
        assert!(text.contains("flack_cluster_registry_entries 7\n"));
        let started: f64 = text
            .lines()
            .find_map(|line| line.strip_prefix("flack_start_time_seconds "))
            .and_then(|value| value.parse().ok())
            .expect("a start time");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        assert!((now - started).abs() < 60.0, "{started} vs {now}");
    }

    #[test]
    fn exports_exactly_the_listed_names() {
        let exported: Vec<(String, String)> = EXPORTED
            .iter()
            .map(|(name, kind)| ((*name).to_owned(), (*kind).to_owned()))
            .collect();
        assert_eq!(families(&scrape()), exported);
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        let names: Vec<&str> = EXPORTED.iter().map(|(name, _)| *name).collect();
        for (name, kind) in EXPORTED {
            assert!(name.starts_with("flack_"), "{name}: no flack_ prefix");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}: not snake_case"
            );
            match *kind {
                "counter" => {
                    assert!(name.ends_with("_total"), "{name}: a counter without _total");
                    // A counter's family name (without _total) must not be
                    // another metric's name (OpenMetrics treats them as one).
                    let base = name.trim_end_matches("_total");
                    assert!(!names.contains(&base), "{name} clashes with {base}");
                }
                "gauge" => assert!(!name.ends_with("_total"), "{name}: a gauge with _total"),
                other => panic!("{name}: unexpected type {other}"),
            }
            for word in name.split('_') {
                assert!(
                    ![
                        "ms",
                        "millis",
                        "milliseconds",
                        "us",
                        "microseconds",
                        "minutes",
                        "hours",
                        "kb",
                        "mb",
                        "kilobytes",
                        "megabytes"
                    ]
                    .contains(&word),
                    "{name}: not in base units (seconds, bytes)"
                );
            }
        }
        for (old, new) in RENAMED {
            assert!(!names.contains(old), "{old} is still exported");
            assert!(names.contains(new), "{new} is not exported");
        }
    }
}
