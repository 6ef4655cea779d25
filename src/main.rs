//! The `flack` binary: parses the command line and runs a node until SIGTERM
//! or SIGINT.

use clap::Parser;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use flack::config::Settings;
use flack::config::cli::{Cli, Command};
use flack::config::erl_args::ErlArgs;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FLACK_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("flack: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (erl, rest) = ErlArgs::extract(&args[1..])?;
    let cli = Cli::parse_from(std::iter::once(args[0].clone()).chain(rest));
    match cli.command {
        Command::Foreground(run) | Command::Console(run) => {
            for flag in &erl.ignored {
                warn!(flag, "emulator flag has no effect on a Rust node; ignored");
            }
            let settings = Settings::resolve(&run, erl)?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(serve(settings))
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let node = flack::app::start(settings).await?;
    let shutdown = node.shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutdown requested");
        shutdown.cancel();
    });
    node.wait().await?;
    info!("flack node stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
