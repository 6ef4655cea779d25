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
        Ok(code) => code,
        Err(error) => {
            eprintln!("flack: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<std::process::ExitCode> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("epmd") {
        return epmd(&args[2..]).map(|()| std::process::ExitCode::SUCCESS);
    }
    let (erl, rest) = ErlArgs::extract(&args[1..])?;
    let cli = Cli::parse_from(std::iter::once(args[0].clone()).chain(rest));
    match cli.command {
        Command::Foreground(run) | Command::Console(run) => {
            for flag in &erl.ignored {
                warn!(flag, "emulator flag has no effect on a Rust node; ignored");
            }
            let settings = Settings::resolve(&run, erl)?;
            for file in &settings.config_files {
                info!(file = %file.display(), "configuration read");
            }
            for warning in &settings.warnings {
                warn!("{warning}");
            }
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(serve(settings))?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Ping(run) => {
            let settings = Settings::resolve(&run, erl)?;
            Ok(flack::release::ping(&settings))
        }
        Command::Cluster(run) => {
            let settings = Settings::resolve(&run, erl)?;
            Ok(flack::release::cluster(&settings))
        }
    }
}

/// `flack epmd [-daemon] [-names] [-port N]`: our own EPMD, for machines
/// without Erlang, with `epmd`'s flags.
fn epmd(args: &[String]) -> anyhow::Result<()> {
    let mut port = flack::node::epmd::port_from_env();
    let (mut daemon, mut names) = (false, false);
    let mut words = args.iter();
    while let Some(word) = words.next() {
        match word.as_str() {
            "-daemon" => daemon = true,
            "-names" => names = true,
            "-port" => {
                let value = words
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("-port needs a value"))?;
                port = value
                    .parse()
                    .map_err(|_| anyhow::anyhow!("-port {value}: not a port number"))?;
            }
            other => {
                anyhow::bail!("flack epmd: unknown argument {other} (use -daemon, -names, -port N)")
            }
        }
    }
    let runtime = tokio::runtime::Runtime::new()?;
    if names {
        return match runtime.block_on(flack::node::epmd::server::names(port)) {
            Ok(text) => {
                print!("{text}");
                Ok(())
            }
            Err(_) => {
                eprintln!("epmd: Cannot connect to local epmd");
                std::process::exit(1);
            }
        };
    }
    if daemon {
        let exe = std::env::current_exe()?;
        return Ok(flack::node::epmd::server::spawn_daemon(&exe, port)?);
    }
    Ok(runtime.block_on(flack::node::epmd::server::run(port))?)
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
