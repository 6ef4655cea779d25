//! Distribution benchmark: messages per second and round-trip latency over
//! one connection, Rust to Erlang and Erlang to Rust, against Erlang to
//! Erlang on the same machine.
//!
//! `cargo bench --bench node_dist` (needs `erl`; N and payload through
//! `FLACK_BENCH_N`, default 200000 messages of a 100-byte binary).

#[path = "../tests/node_support/mod.rs"]
mod node_support;

use std::time::{Duration, Instant};

use eetf::{Binary, FixInteger, Term};
use flack::node::term::{as_atom, as_tuple, atom, tuple};
use flack::node::{Node, Pid, Received};
use node_support::*;

fn int(n: usize) -> Term {
    Term::from(FixInteger::from(n as i32))
}

fn micros(t: &Term) -> f64 {
    match t {
        Term::FixInteger(i) => f64::from(i.value),
        Term::BigInteger(b) => b.value.to_string().parse().unwrap_or(f64::NAN),
        other => panic!("not a duration: {other}"),
    }
}

fn pid_of(t: Term) -> Pid {
    match t {
        Term::Pid(p) => Pid::from(&p),
        other => panic!("not a pid: {other}"),
    }
}

/// Sends a command without waiting for its answer; returns the reference.
fn cmd_async(ctl: &Ctl, erl: &str, cmd: Term) -> eetf::Reference {
    let r = ctl.node.make_ref();
    let msg = tuple(vec![
        atom("cmd"),
        ctl.pid.clone().into(),
        Term::from(r.clone()),
        cmd,
    ]);
    ctl.node.send_named(erl, "agent", msg, Some(&ctl.pid));
    r
}

async fn answer(ctl: &mut Ctl, r: &eetf::Reference) -> Term {
    ctl.mailbox
        .receive(Duration::from_secs(300), |got| match got {
            Received::Message(_, m) => match as_tuple(m) {
                Some([Term::Reference(x), v]) if **x == *r => Some(v.clone()),
                _ => None,
            },
            _ => None,
        })
        .await
        .expect("answer")
}

fn report(what: &str, n: usize, us: f64) {
    println!(
        "{what:<28} {n:>8} msgs  {:>10.0} msg/s  ({:.2} s)",
        n as f64 / (us / 1e6),
        us / 1e6
    );
}

fn report_rtt(what: &str, n: usize, us: f64) {
    println!(
        "{what:<28} {n:>8} round trips  {:>8.1} µs mean RTT",
        us / n as f64
    );
}

fn main() {
    if !erl_available() {
        println!("SKIPPED: erl is not installed");
        return;
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` does not, and
    // then this is a smoke run that only shows the paths work.
    let measuring = std::env::args().any(|arg| arg == "--bench");
    let n: usize = std::env::var("FLACK_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if measuring { 200_000 } else { 2_000 });
    let rtt_n = (n / 20).max(1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let epmd = TestEpmd::start().await;
        let node = Node::start(rust_config(&unique("rbench"), "c_bench", epmd.port))
            .await
            .expect("node");
        let mut ctl = Ctl::new(&node);
        let e1 = Erl::start(&unique("ebench"), "c_bench", epmd.port, node.name(), &[]);
        let e2 = Erl::start(&unique("ebench"), "c_bench", epmd.port, node.name(), &[]);
        ctl.agent_up(&e1.name).await;
        ctl.agent_up(&e2.name).await;
        let payload = Term::from(Binary::from(vec![7u8; 100]));
        let agent1 = pid_of(
            ctl.cmd(&e1.name, tuple(vec![atom("whereis"), atom("agent")]))
                .await,
        );
        println!("one connection, 100-byte binary payload, N = {n}");

        // Rust -> Erlang.
        let r = cmd_async(&ctl, &e1.name, tuple(vec![atom("bench_recv"), int(n)]));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t0 = Instant::now();
        let msg = tuple(vec![atom("bench"), payload.clone()]);
        for _ in 0..n {
            node.send_wait(Some(&ctl.pid), &agent1, msg.clone()).await;
        }
        let erl_us = micros(&answer(&mut ctl, &r).await);
        let us = t0.elapsed().as_micros() as f64;
        report("rust -> erlang", n, us.max(erl_us));

        // Erlang -> Rust.
        let (sink, mut sink_mb) = node.spawn_mailbox(1 << 16);
        let counter = tokio::spawn(async move {
            let mut got = 0;
            while got < n {
                match sink_mb.recv().await {
                    Some(Received::Message(..)) => got += 1,
                    _ => break,
                }
            }
            Instant::now()
        });
        let t0 = Instant::now();
        let r = cmd_async(
            &ctl,
            &e1.name,
            tuple(vec![
                atom("bench_send"),
                sink.clone().into(),
                int(n),
                payload.clone(),
            ]),
        );
        let done = counter.await.expect("counter");
        answer(&mut ctl, &r).await;
        report("erlang -> rust", n, (done - t0).as_micros() as f64);

        // Erlang -> Erlang, same machine.
        let r = cmd_async(&ctl, &e2.name, tuple(vec![atom("bench_recv"), int(n)]));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let agent2 = tuple(vec![atom("agent"), atom(&e2.name)]);
        ctl.cmd(
            &e1.name,
            tuple(vec![atom("bench_send"), agent2, int(n), payload.clone()]),
        )
        .await;
        report("erlang -> erlang", n, micros(&answer(&mut ctl, &r).await));

        // Latency: Erlang pings a Rust echo process; Rust pings an Erlang one.
        let (echo, mut echo_mb) = node.spawn_mailbox(1024);
        let echo_node = node.clone();
        let echo_pid = echo.clone();
        tokio::spawn(async move {
            while let Some(Received::Message(_, m)) = echo_mb.recv().await {
                if let Some([tag, Term::Pid(from), i]) = as_tuple(&m)
                    && as_atom(tag) == Some("ping")
                {
                    echo_node.send_from(
                        &echo_pid,
                        &Pid::from(from),
                        tuple(vec![atom("pong"), i.clone()]),
                    );
                }
            }
        });
        let us = micros(
            &ctl.cmd(
                &e1.name,
                tuple(vec![atom("bench_rtt"), echo.into(), int(rtt_n)]),
            )
            .await,
        );
        report_rtt("erlang -> rust -> erlang", rtt_n, us);

        let erl_echo = pid_of(
            ctl.cmd(&e1.name, tuple(vec![atom("spawn_echo_on"), atom(&e1.name)]))
                .await,
        );
        let (me, mut mb) = node.spawn_mailbox(1024);
        let t0 = Instant::now();
        for i in 0..rtt_n {
            node.send_from(
                &me,
                &erl_echo,
                tuple(vec![atom("ping"), me.clone().into(), int(i)]),
            );
            mb.recv().await.expect("pong");
        }
        report_rtt(
            "rust -> erlang -> rust",
            rtt_n,
            t0.elapsed().as_micros() as f64,
        );

        let e2_echo = pid_of(
            ctl.cmd(&e1.name, tuple(vec![atom("spawn_echo_on"), atom(&e2.name)]))
                .await,
        );
        let us = micros(
            &ctl.cmd(
                &e1.name,
                tuple(vec![atom("bench_rtt"), e2_echo.into(), int(rtt_n)]),
            )
            .await,
        );
        report_rtt("erlang -> erlang -> erlang", rtt_n, us);
        node.shutdown().await;
    });
}
