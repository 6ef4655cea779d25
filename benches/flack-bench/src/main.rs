//! `flack-bench`: a load generator for flack websocket chat servers, ours
//! or the original Erlang one, over real websockets on loopback.
//!
//! Scenarios: `idle` (held connections, server memory per connection),
//! `fanout` (fixed-rate messages to rooms: delivery rate, end-to-end
//! latency, lost/duplicated/reordered counts), `flood` (maximum delivery
//! rate) and `churn` (connect-to-disconnect cycles per second). Each run is
//! bounded in time, prints a readable summary and optionally writes the same
//! figures as JSON. Exit codes: 0 pass, 1 a check failed, 2 usage or fatal
//! error, 3 the scenario could not be set up, 4 interrupted.

mod cli;
mod client;
mod report;
mod scenarios;
#[cfg(test)]
mod selftest;
mod stats;
mod sys;

use std::io::Write as _;
use std::sync::Arc;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use cli::{Cli, ScenarioCmd};
use scenarios::Env;

/// Open files wanted up front (raised as far as the hard limit allows).
const NOFILE_WANTED: u64 = 1_048_576;

fn main() {
    let cli = Cli::parse();
    let common = match &cli.scenario {
        ScenarioCmd::Idle(a) => &a.common,
        ScenarioCmd::Fanout(a) => &a.common,
        ScenarioCmd::Flood(a) => &a.common,
        ScenarioCmd::Churn(a) => &a.common,
    }
    .clone();
    let nofile = sys::raise_nofile(NOFILE_WANTED);
    let workers = common.threads.unwrap_or_else(sys::ncpu).clamp(1, 256);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fatal(&format!("cannot start the runtime: {e}")),
    };
    let interrupt = CancellationToken::new();
    let env = Arc::new(Env::new(&common, workers, nofile, interrupt.clone()));
    let result = rt.block_on(async move {
        let i2 = interrupt.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: stopping");
                i2.cancel();
            }
        });
        match cli.scenario {
            ScenarioCmd::Idle(a) => scenarios::idle::run(env, a).await,
            ScenarioCmd::Fanout(a) => scenarios::fanout::run(env, a).await,
            ScenarioCmd::Flood(a) => scenarios::flood::run(env, a).await,
            ScenarioCmd::Churn(a) => scenarios::churn::run(env, a).await,
        }
    });
    // Connections still closing must not delay the exit.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    let report = match result {
        Ok(r) => r,
        Err(e) => fatal(&e),
    };
    let summary = report.summary();
    match common.json.as_deref() {
        Some(p) if p.as_os_str() == "-" => {
            println!("{}", report.to_json());
            eprint!("{summary}");
        }
        Some(p) => {
            if let Err(e) = std::fs::write(p, report.to_json() + "\n") {
                print!("{summary}");
                fatal(&format!("cannot write {}: {e}", p.display()));
            }
            print!("{summary}");
        }
        None => print!("{summary}"),
    }
    let _ = std::io::stdout().flush();
    std::process::exit(report.verdict.exit_code);
}

fn fatal(msg: &str) -> ! {
    eprintln!("flack-bench: {msg}");
    std::process::exit(2);
}
