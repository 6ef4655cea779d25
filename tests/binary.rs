//! The `flack` binary as operators run it: Erlang-style `-flack port N`,
//! static files, and a graceful stop on SIGTERM.

mod node_support;
mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use node_support::free_port;
use support::Client;

/// A running `flack` process, killed if the test ends early.
struct Flack(Option<Child>);

impl Flack {
    fn pid(&self) -> u32 {
        self.0.as_ref().map(Child::id).expect("running")
    }

    /// Waits for the process to exit by itself.
    fn wait(mut self) -> std::process::ExitStatus {
        let mut child = self.0.take().expect("running");
        child.wait().expect("exit status")
    }
}

impl Drop for Flack {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn start(port: u16) -> Flack {
    let child = Command::new(env!("CARGO_BIN_EXE_flack"))
        .args([
            "foreground",
            "--bind",
            "127.0.0.1",
            "-flack",
            "port",
            &port.to_string(),
        ])
        .args([
            "--static-dir",
            concat!(env!("CARGO_MANIFEST_DIR"), "/static"),
        ])
        .args(["+K", "true", "+A30"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("flack starts");
    let flack = Flack(Some(child));
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return flack;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("flack did not listen on {port}");
}

async fn get(port: u16, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    let status = response[9..12].parse().expect("status code");
    let content_type = response
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, content_type, body)
}

#[tokio::test]
async fn serves_on_the_erlang_style_port_and_stops_on_sigterm() {
    let port = free_port();
    let flack = start(port).await;

    let (status, content_type, _) = get(port, "/").await;
    assert_eq!((status, content_type.as_str()), (200, "text/html"));
    let (status, _, _) = get(port, "/no-such-file.js").await;
    assert_eq!(status, 404);
    let (status, content_type, body) = get(port, "/health").await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    assert!(body.contains(r#""status":"ok""#));
    let (status, content_type, body) = get(port, "/metrics").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain"));
    assert!(body.contains("flack_connections_open 0"));

    let addr = format!("127.0.0.1:{port}").parse().expect("address");
    let mut client = Client::login(addr, "operator").await;
    let pid = flack.pid().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let frame = client.expect_close().await;
    assert_eq!(frame.map(|f| u16::from(f.code)), Some(1001));
    let status = tokio::task::spawn_blocking(move || flack.wait())
        .await
        .expect("joined");
    assert!(status.success(), "flack exited with {status}");
}

#[tokio::test]
async fn a_bad_port_is_refused_with_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_flack"))
        .args(["foreground", "-flack", "port", "eighty"])
        .output()
        .expect("flack runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("-flack port eighty: not a port number"),
        "{stderr}"
    );
}
