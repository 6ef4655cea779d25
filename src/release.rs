//! What the release's start script `bin/flack` asks of the binary:
//! `flack ping` and `flack cluster`.
//!
//! relx's `ping` asks the node over Erlang distribution. This one asks the
//! node's `GET /health` on the address its settings resolve to (the same
//! vm.args, sys.config and arguments as the node), which works whether or
//! not the node is distributed, and answers as relx does: `pong` and exit
//! status 0, or `Node NAME not responding to pings.` and status 1, with the
//! reason on stderr.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use crate::config::{NodeName, Settings};

/// How long `ping` waits for the node to answer.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest health response read.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// Pings the node `settings` describe; prints the answer as relx does.
pub fn ping(settings: &Settings) -> ExitCode {
    let name = display_name(settings.node_name.as_ref());
    let addr = health_addr(settings.listen);
    match check(addr, settings.node_name.as_ref().map(NodeName::as_str)) {
        Ok(()) => {
            println!("pong");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            println!("Node {name} not responding to pings.");
            eprintln!("GET http://{addr}/health: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the cluster view of the node `settings` describe: its role, the
/// gproc_dist leader, candidates up and down, and the registry's size.
pub fn cluster(settings: &Settings) -> ExitCode {
    let addr = health_addr(settings.listen);
    let health = match get_health(addr) {
        Ok(health) => health,
        Err(reason) => {
            eprintln!("GET http://{addr}/health: {reason}");
            return ExitCode::FAILURE;
        }
    };
    let node = health.get("node").and_then(|n| n.as_str()).unwrap_or("?");
    let Some(cluster) = health.get("cluster").filter(|c| !c.is_null()) else {
        println!("node:       {node}");
        println!("cluster:    none (no gproc_dist candidates configured; a cluster of one)");
        return ExitCode::SUCCESS;
    };
    let text = |key: &str| {
        cluster
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or("-")
            .to_owned()
    };
    let list = |key: &str| -> Vec<String> {
        cluster
            .get(key)
            .and_then(|v| v.as_array())
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let down = list("down");
    let up: Vec<String> = list("candidates")
        .into_iter()
        .filter(|c| !down.contains(c))
        .collect();
    println!("node:       {node}");
    println!("role:       {}", text("role"));
    println!("leader:     {}", text("leader"));
    println!("candidates: {} up: {}", up.len(), up.join(" "));
    println!("            {} down: {}", down.len(), down.join(" "));
    println!(
        "registry:   {} registrations",
        cluster
            .get("registry_size")
            .and_then(|v| v.as_u64())
            .unwrap_or(0)
    );
    ExitCode::SUCCESS
}

/// Where to reach a node that listens on `listen`: the loopback address when
/// it listens on all addresses.
pub fn health_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// The node's full name as Erlang prints it: `flack1@host`, or
/// `nonode@nohost` for a node without a name.
fn display_name(name: Option<&NodeName>) -> String {
    let host = host_name();
    match name {
        Some(name @ NodeName::Short(_)) => name.with_host(host.split('.').next().unwrap_or(&host)),
        Some(name @ NodeName::Long(_)) => name.with_host(&host),
        None => "nonode@nohost".to_owned(),
    }
}

/// This host's name, from the kernel.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| {
            std::process::Command::new("hostname")
                .output()
                .ok()
                .and_then(|output| String::from_utf8(output.stdout).ok())
        })
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "nohost".to_owned())
}

/// Asks `GET /health`; `Ok` when the node answers `"status":"ok"` and, if it
/// reports a node name and `expected` is set, the same alive name (the part
/// before `@`).
fn check(addr: SocketAddr, expected: Option<&str>) -> Result<(), String> {
    let health = get_health(addr)?;
    if health.get("status").and_then(|s| s.as_str()) != Some("ok") {
        return Err(format!("unhealthy: {health}"));
    }
    let reported = health.get("node").and_then(|n| n.as_str()).unwrap_or("");
    let alive = |name: &str| name.split('@').next().unwrap_or(name).to_owned();
    if let Some(expected) = expected
        && reported.contains('@')
        && reported != "nonode@nohost"
        && alive(reported) != alive(expected)
    {
        return Err(format!("the node there is {reported}, not {expected}"));
    }
    Ok(())
}

fn get_health(addr: SocketAddr) -> Result<serde_json::Value, String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, PING_TIMEOUT).map_err(|error| error.to_string())?;
    stream
        .set_read_timeout(Some(PING_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(PING_TIMEOUT)))
        .map_err(|error| error.to_string())?;
    write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .map_err(|error| error.to_string())?;
    let mut response = Vec::new();
    stream
        .take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut response)
        .map_err(|error| error.to_string())?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "not an HTTP response".to_owned())?;
    let status = head
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| "not an HTTP response".to_owned())?;
    if status != "200" {
        return Err(format!("HTTP status {status}"));
    }
    serde_json::from_str(body).map_err(|error| format!("not JSON: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_erlang_prints_them() {
        assert_eq!(display_name(None), "nonode@nohost");
        assert_eq!(
            display_name(Some(&NodeName::Short("a@there".into()))),
            "a@there"
        );
        let short = display_name(Some(&NodeName::Short("flack1".into())));
        assert!(
            short.starts_with("flack1@") && !short[7..].contains('.'),
            "{short}"
        );
    }

    #[test]
    fn all_addresses_are_reached_on_loopback() {
        let any: SocketAddr = "0.0.0.0:8080".parse().expect("address");
        assert_eq!(health_addr(any), "127.0.0.1:8080".parse().expect("address"));
        let any6: SocketAddr = "[::]:8080".parse().expect("address");
        assert_eq!(health_addr(any6), "[::1]:8080".parse().expect("address"));
        let one: SocketAddr = "10.1.2.3:81".parse().expect("address");
        assert_eq!(health_addr(one), one);
    }

    #[test]
    fn nothing_listening_is_not_pong() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a port");
        // The listener is dropped: nothing listens there now.
        assert!(check(port, None).is_err());
    }
}
