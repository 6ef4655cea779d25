//! End-to-end self-tests of the scenarios against a real flack node started
//! in-process (the same `flack::app::start` the `flack` binary uses). The
//! accounting of lost, duplicated and reordered deliveries is unit-tested in
//! `stats.rs`.

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use clap::Parser;
    use tokio_util::sync::CancellationToken;

    use crate::cli::{Cli, ScenarioCmd};
    use crate::report::{Report, Status};
    use crate::scenarios::{self, Env};

    async fn run(args: &[&str]) -> Report {
        let cli = Cli::try_parse_from(args).expect("valid arguments");
        let common = match &cli.scenario {
            ScenarioCmd::Idle(a) => &a.common,
            ScenarioCmd::Fanout(a) => &a.common,
            ScenarioCmd::Flood(a) => &a.common,
            ScenarioCmd::Churn(a) => &a.common,
        }
        .clone();
        let nofile = crate::sys::raise_nofile(4096);
        let env = Arc::new(Env::new(&common, 2, nofile, CancellationToken::new()));
        let r = match cli.scenario {
            ScenarioCmd::Idle(a) => scenarios::idle::run(env, a).await,
            ScenarioCmd::Fanout(a) => scenarios::fanout::run(env, a).await,
            ScenarioCmd::Flood(a) => scenarios::flood::run(env, a).await,
            ScenarioCmd::Churn(a) => scenarios::churn::run(env, a).await,
        };
        r.expect("scenario ran")
    }

    /// A real flack node, in-process on an ephemeral loopback port; its
    /// websocket URL. The node runs until the test's runtime ends.
    async fn start() -> String {
        use flack::config::cli::{Cli as FlackCli, Command};
        let cli =
            FlackCli::try_parse_from(["flack", "foreground", "--bind", "127.0.0.1", "--port", "0"])
                .expect("flack arguments");
        let Command::Foreground(run) = cli.command else {
            unreachable!("foreground was asked for")
        };
        let settings =
            flack::config::Settings::resolve(&run, flack::config::erl_args::ErlArgs::default())
                .expect("settings");
        let node = flack::app::start(settings)
            .await
            .expect("flack node starts");
        let url = format!("ws://{}/chat-server", node.local_addr);
        std::mem::forget(node);
        url
    }

    fn field(r: &Report, k: &str) -> u64 {
        r.results[k].as_u64().unwrap_or(u64::MAX)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fanout_passes_on_a_correct_server() {
        let url = start().await;
        let r = run(&[
            "b",
            "fanout",
            "--url",
            &url,
            "--rooms",
            "2",
            "--members",
            "5",
            "--senders",
            "2",
            "--rate",
            "200",
            "--duration",
            "1",
            "--warmup",
            "0.3",
        ])
        .await;
        assert_eq!(r.verdict.status, Status::Pass, "{}", r.summary());
        assert!(field(&r, "sent_total") > 100);
        assert_eq!(field(&r, "deliveries_total"), field(&r, "sent_total") * 5);
        assert_eq!(field(&r, "lost"), 0);
        assert!(r.results["latency"]["count"].as_u64().unwrap_or(0) > 0);
        assert_eq!(r.results["sequence"]["not_increasing"].as_u64(), Some(0));
        assert!(r.summary().contains("deliveries_per_sec"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flood_and_idle_and_churn_pass() {
        let url = start().await;
        let r = run(&[
            "b",
            "flood",
            "--url",
            &url,
            "--members",
            "6",
            "--senders",
            "2",
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--window",
            "8",
        ])
        .await;
        assert_eq!(r.verdict.status, Status::Pass, "{}", r.summary());
        assert!(field(&r, "sent_total") > 0);
        let r = run(&[
            "b",
            "idle",
            "--url",
            &url,
            "--connections",
            "50",
            "--rooms",
            "5",
            "--hold-secs",
            "1.5",
            "--settle-secs",
            "0.1",
            "--ping-interval",
            "0.5",
        ])
        .await;
        assert_eq!(r.verdict.status, Status::Pass, "{}", r.summary());
        assert_eq!(r.results["setup"]["ready"].as_u64(), Some(50));
        assert!(r.results["hold"]["ping_replies"].as_u64().unwrap_or(0) >= 50);
        assert_eq!(r.results["close"]["clean"].as_u64(), Some(50));
        let r = run(&[
            "b",
            "churn",
            "--url",
            &url,
            "--rate",
            "40",
            "--duration",
            "1",
        ])
        .await;
        assert_eq!(r.verdict.status, Status::Pass, "{}", r.summary());
        assert_eq!(field(&r, "completed"), 40);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreachable_server_is_a_setup_failure() {
        let r = run(&[
            "b",
            "fanout",
            "--url",
            "ws://127.0.0.1:1/chat-server",
            "--smoke",
        ])
        .await;
        assert_eq!(r.verdict.status, Status::SetupFailed);
        assert_eq!(r.verdict.exit_code, 3);
    }
}
