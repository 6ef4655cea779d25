//! Command line of `flack-bench`: one subcommand per scenario, the options
//! every scenario shares, and the check that only loopback endpoints are ever
//! targeted (this workplace forbids traffic to any other address).
//!
//! Scenario sizes are `Option`s so that `--smoke` can pick small defaults
//! while explicit flags still win; each scenario's `resolve` method turns
//! them into a fully specified, validated configuration.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use tokio_tungstenite::tungstenite::http::Uri;

/// Load generator for flack websocket chat servers (the Rust one or the
/// original Erlang one), over real websockets on loopback only.
#[derive(Debug, Parser)]
#[command(
    name = "flack-bench",
    version,
    after_help = "Every run is bounded in time and stops by itself. Exit codes: 0 pass, \
                  1 a check failed (lost, duplicated or reordered messages, dropped \
                  connections, failed cycles), 2 usage or fatal error, 3 the scenario could \
                  not be set up, 4 interrupted."
)]
pub struct Cli {
    /// The scenario to run.
    #[command(subcommand)]
    pub scenario: ScenarioCmd,
}

/// The scenarios `flack-bench` can run.
#[derive(Debug, Subcommand)]
pub enum ScenarioCmd {
    /// Hold N authenticated connections, each in a room; report server RSS
    /// per connection.
    Idle(IdleArgs),
    /// R rooms of N members, S senders per room at a fixed total rate;
    /// delivery rate, end-to-end latency, lost/duplicated/reordered counts.
    Fanout(FanoutArgs),
    /// Like fanout, but senders send as fast as the server accepts (bounded
    /// by a per-sender in-flight window); the maximum delivery rate.
    Flood(FloodArgs),
    /// Connect, authenticate, join, leave and disconnect at a fixed rate of
    /// cycles per second.
    Churn(ChurnArgs),
}

/// A validated websocket endpoint on this machine.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// The URL as given on the command line.
    pub url: String,
    /// The socket address it resolves to (loopback only, no DNS lookup).
    pub addr: SocketAddr,
    /// Path and query of the upgrade request.
    #[serde(skip)]
    pub path: String,
    /// Host header of the upgrade request.
    #[serde(skip)]
    pub host_header: String,
}

/// Options shared by every scenario.
#[derive(Debug, Args, Clone)]
pub struct Common {
    /// Websocket URL of a flack node, e.g. ws://127.0.0.1:8080/chat-server.
    /// Repeat to spread clients over several nodes (round-robin). Only
    /// 127.0.0.0/8, ::1 and localhost are accepted.
    #[arg(long = "url", required = true, value_parser = parse_target)]
    pub urls: Vec<Target>,
    /// Write the JSON report to this file ("-" for standard output, the
    /// readable summary then goes to standard error).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Process id of a server node to sample (RSS from /proc/PID/status, CPU
    /// from /proc/PID/stat). Repeat for several nodes.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Small sizes and a few seconds per phase, for CI. Explicit flags win.
    #[arg(long)]
    pub smoke: bool,
    /// Client worker threads (default: number of CPUs).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Number of loopback source addresses (127.0.0.1, 127.0.0.2, ...) to
    /// bind client sockets to; one address has about 28k ephemeral ports
    /// per destination. Default: one per 25,000 connections; 0 = no bind.
    #[arg(long)]
    pub source_ips: Option<u32>,
    /// Connection setups started per second (connect, hello, authenticate,
    /// join).
    #[arg(long, default_value_t = 2000.0)]
    pub connect_rate: f64,
    /// Connection setups in flight at once.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Timeout of each protocol step (connect, hello, authenticate, join,
    /// leave, goodbye), in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub op_timeout: f64,
    /// Seconds between pings on connections that send nothing else (the
    /// server closes connections idle for 60 s).
    #[arg(long, default_value_t = 20.0)]
    pub ping_interval: f64,
    /// Free-form label copied into the report (e.g. "rust" or "erlang").
    #[arg(long)]
    pub label: Option<String>,
}

/// Options of the idle scenario.
#[derive(Debug, Args)]
pub struct IdleArgs {
    // Options every scenario shares.
    #[command(flatten)]
    pub common: Common,
    /// Connections to open and hold [default: 1000; smoke: 200].
    #[arg(long)]
    pub connections: Option<u32>,
    /// Rooms the connections are spread over [default: one per 100
    /// connections].
    #[arg(long)]
    pub rooms: Option<u32>,
    /// Seconds to hold the connections after setup [default: 30; smoke: 3].
    #[arg(long)]
    pub hold_secs: Option<f64>,
    /// Seconds to wait after setup before sampling server RSS [default: 2;
    /// smoke: 1].
    #[arg(long)]
    pub settle_secs: Option<f64>,
    /// Websocket read buffer per client connection, bytes.
    #[arg(long, default_value_t = 1024)]
    pub read_buffer: usize,
}

/// The room set-up and traffic shape fanout and flood share.
#[derive(Debug, Clone, Args)]
pub struct RoomArgs {
    /// Rooms [default: 1].
    #[arg(long)]
    pub rooms: Option<u32>,
    /// Members per room, senders included [default: 100; smoke: 20].
    #[arg(long)]
    pub members: Option<u32>,
    /// Senders per room [default: fanout 1, flood 4; smoke: 2].
    #[arg(long)]
    pub senders: Option<u32>,
    /// Measured seconds [default: 10; smoke: 3].
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds of sending before measuring [default: 2; smoke: 1].
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Length of the message text in bytes (padded; at least the header).
    #[arg(long, default_value_t = 64)]
    pub message_bytes: usize,
    /// Websocket read buffer per client connection, bytes (tungstenite
    /// zeroes it before every read, so bigger is not cheaper).
    #[arg(long, default_value_t = 2048)]
    pub read_buffer: usize,
}

/// Options of the fanout scenario.
#[derive(Debug, Args)]
pub struct FanoutArgs {
    // Options every scenario shares.
    #[command(flatten)]
    pub common: Common,
    // The room set-up.
    #[command(flatten)]
    pub room: RoomArgs,
    /// Messages per second, all senders together [default: 100; smoke: 50].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds to wait after the last send for deliveries still in flight.
    #[arg(long, default_value_t = 5.0)]
    pub drain_secs: f64,
}

/// Options of the flood scenario.
#[derive(Debug, Args)]
pub struct FloodArgs {
    // Options every scenario shares.
    #[command(flatten)]
    pub common: Common,
    // The room set-up.
    #[command(flatten)]
    pub room: RoomArgs,
    /// Messages a sender may have in flight: it waits while its undelivered
    /// deliveries (all members together) reach window x members. Bounds the
    /// server's queues; 0 = no window, only TCP backpressure.
    #[arg(long, default_value_t = 64)]
    pub window: u32,
    /// Seconds to wait after the last send for deliveries still in flight.
    #[arg(long, default_value_t = 10.0)]
    pub drain_secs: f64,
}

/// Options of the churn scenario.
#[derive(Debug, Args)]
pub struct ChurnArgs {
    // Options every scenario shares.
    #[command(flatten)]
    pub common: Common,
    /// Cycles (connect, authenticate, join, leave, disconnect) started per
    /// second [default: 100; smoke: 20].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds during which cycles are started [default: 10; smoke: 3].
    #[arg(long)]
    pub duration: Option<f64>,
    /// Rooms the cycles join, round-robin; 0 = a new room for every cycle.
    #[arg(long, default_value_t = 10)]
    pub rooms: u32,
    /// Cycles in flight at most; a cycle due while this many are running is
    /// skipped and counted.
    #[arg(long, default_value_t = 1000)]
    pub max_inflight: usize,
}

/// Parses and checks a `--url`: scheme ws, host on loopback, no DNS.
pub fn parse_target(s: &str) -> Result<Target, String> {
    let uri: Uri = s.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("ws") => {}
        Some(other) => return Err(format!("scheme {other:?} not supported, use ws://")),
        None => return Err("missing scheme, use ws://HOST:PORT/chat-server".into()),
    }
    let host = uri.host().ok_or("missing host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse().map_err(|_| {
            format!("host {host:?} refused: only 127.0.0.0/8, ::1 and localhost are allowed")
        })?
    };
    if !ip.is_loopback() {
        return Err(format!(
            "host {ip} refused: only loopback addresses (127.0.0.0/8, ::1) may be targeted"
        ));
    }
    let port = uri.port_u16().unwrap_or(80);
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/")
        .to_string();
    let host_header = match uri.port_u16() {
        Some(p) => format!("{}:{p}", uri.host().unwrap_or(host)),
        None => uri.host().unwrap_or(host).to_string(),
    };
    Ok(Target {
        url: s.to_string(),
        addr: SocketAddr::new(ip, port),
        path,
        host_header,
    })
}

/// Converts a positive, finite number of seconds into a [`Duration`].
pub fn secs(name: &str, v: f64) -> Result<Duration, String> {
    if v.is_finite() && (0.0..=7.0 * 86400.0).contains(&v) {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!(
            "--{name} must be between 0 and 604800 seconds, got {v}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        assert!(parse_target("ws://127.0.0.1:8080/chat-server").is_ok());
        assert!(parse_target("ws://127.1.2.3:1/x").is_ok());
        assert!(parse_target("ws://localhost:8080/chat-server").is_ok());
        assert!(parse_target("ws://[::1]:8080/chat-server").is_ok());
        assert!(parse_target("ws://10.0.0.1:8080/chat-server").is_err());
        assert!(parse_target("ws://example.com/chat-server").is_err());
        assert!(parse_target("ws://[::2]:8080/").is_err());
        assert!(parse_target("wss://127.0.0.1/").is_err());
        assert!(parse_target("http://127.0.0.1/").is_err());
        let t = parse_target("ws://[::1]:9/c").expect("valid");
        assert_eq!(t.addr, "[::1]:9".parse().expect("addr"));
        assert_eq!(t.path, "/c");
        assert_eq!(t.host_header, "[::1]:9");
        let t = parse_target("ws://localhost:8080").expect("valid");
        assert_eq!(
            (t.path.as_str(), t.host_header.as_str()),
            ("/", "localhost:8080")
        );
    }
}
