//! Process-wide counters, exported at `GET /metrics` in the Prometheus text
//! format.
//!
//! Every counter is a relaxed atomic: they are bumped on the hot path (one
//! per delivered event) and read rarely, so they must cost no more than an
//! uncontended add.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// The node's counters and gauges.
#[derive(Debug, Default)]
pub struct Metrics {
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
        let mut out = String::with_capacity(2048);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP flack_{name} {help}");
            let _ = writeln!(out, "# TYPE flack_{name} {kind}");
            let _ = writeln!(out, "flack_{name} {value}");
        };
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        metric(
            "connections",
            "gauge",
            "Websocket connections open.",
            get(&self.connections_open),
        );
        metric(
            "connections_total",
            "counter",
            "Websocket connections accepted.",
            get(&self.connections_total),
        );
        metric(
            "frames_in_total",
            "counter",
            "Frames received from clients.",
            get(&self.frames_in),
        );
        metric(
            "frames_out_total",
            "counter",
            "Frames sent to clients.",
            get(&self.frames_out),
        );
        metric(
            "deliveries_total",
            "counter",
            "Chat events queued for members.",
            get(&self.deliveries),
        );
        metric(
            "slow_clients_dropped_total",
            "counter",
            "Clients closed because they did not keep up.",
            get(&self.slow_clients_dropped),
        );
        metric(
            "protocol_errors_total",
            "counter",
            "Connections closed with a protocol_error.",
            get(&self.protocol_errors),
        );
        metric(
            "idle_timeouts_total",
            "counter",
            "Connections closed for idleness.",
            get(&self.idle_timeouts),
        );
        metric(
            "sequence_requests_total",
            "counter",
            "Leader requests that numbered a batch of one chat's events (cluster).",
            get(&self.sequence_requests),
        );
        metric(
            "sequenced_events_total",
            "counter",
            "Chat events numbered by the leader, in batches (cluster).",
            get(&self.sequenced_events),
        );
        metric(
            "connections_refused_total",
            "counter",
            "Websocket upgrades refused because the connection limit was reached.",
            get(&self.connections_refused),
        );
        metric(
            "origins_refused_total",
            "counter",
            "Websocket upgrades refused because the Origin is not allowed.",
            get(&self.origins_refused),
        );
        metric(
            "rooms",
            "gauge",
            "Chats with at least one member.",
            registry.rooms as u64,
        );
        metric(
            "members",
            "gauge",
            "Chat memberships.",
            registry.members as u64,
        );
        metric(
            "users",
            "gauge",
            "Authenticated users.",
            registry.users as u64,
        );
        out
    }
}

/// The cluster section of the export: this node's role, candidates up and
/// down, and the global registry's size.
pub fn render_cluster(status: &crate::cluster::gproc_dist::ClusterStatus) -> String {
    let mut out = String::with_capacity(512);
    let role = |name: &str| u8::from(status.role == name);
    let _ = writeln!(
        out,
        "# HELP flack_cluster_role This node's gproc_dist role (1 for the current one)."
    );
    let _ = writeln!(out, "# TYPE flack_cluster_role gauge");
    for name in ["leader", "follower", "candidate"] {
        let _ = writeln!(out, "flack_cluster_role{{role=\"{name}\"}} {}", role(name));
    }
    let _ = writeln!(
        out,
        "# HELP flack_cluster_candidates gproc_dist candidates by state."
    );
    let _ = writeln!(out, "# TYPE flack_cluster_candidates gauge");
    let down = status.down.len();
    let up = status.candidates.len().saturating_sub(down);
    let _ = writeln!(out, "flack_cluster_candidates{{state=\"up\"}} {up}");
    let _ = writeln!(out, "flack_cluster_candidates{{state=\"down\"}} {down}");
    let _ = writeln!(
        out,
        "# HELP flack_cluster_registry_size Objects in the global gproc registry."
    );
    let _ = writeln!(out, "# TYPE flack_cluster_registry_size gauge");
    let _ = writeln!(out, "flack_cluster_registry_size {}", status.registry_size);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::default();
        Metrics::bump(&metrics.connections_total);
        let text = metrics.render(RegistryGauges {
            rooms: 2,
            members: 5,
            users: 3,
        });
        assert!(
            text.contains("# TYPE flack_connections_total counter\nflack_connections_total 1\n")
        );
        assert!(text.contains("flack_rooms 2\n"));
    }
}
