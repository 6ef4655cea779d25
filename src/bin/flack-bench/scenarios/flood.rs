//! The flood scenario: the fanout room set-up, but every sender sends as
//! fast as the server takes its messages, keeping at most `--window` times
//! members of its deliveries outstanding (sent but not yet received by a
//! member), which bounds the server's queues even towards slow members. The figure of interest is the delivery rate the
//! server sustains; latency and the loss, duplicate and reorder checks are
//! reported as in fanout.

use std::sync::Arc;

use super::Env;
use super::fanout::{Mode, RoomConfig, run_rooms};
use crate::cli::{FloodArgs, secs};
use crate::report::Report;

/// Resolves flood options.
pub fn flood_config(env: &Env, a: &FloodArgs) -> Result<RoomConfig, String> {
    let smoke = env.smoke;
    let rooms = a.rooms.unwrap_or(1).max(1);
    let members = a.members.unwrap_or(if smoke { 20 } else { 100 }).max(1);
    let senders = a
        .senders
        .unwrap_or(if smoke { 2 } else { 4 })
        .clamp(1, members);
    let conns = u64::from(rooms) * u64::from(members);
    Ok(RoomConfig {
        rooms,
        members,
        senders,
        mode: Mode::Flood(a.window),
        rate_per_sender: None,
        warmup_secs: secs("warmup", a.warmup.unwrap_or(if smoke { 1.0 } else { 2.0 }))?
            .as_secs_f64(),
        duration_secs: secs(
            "duration",
            a.duration.unwrap_or(if smoke { 3.0 } else { 10.0 }),
        )?
        .as_secs_f64()
        .max(0.1),
        drain_secs: secs("drain-secs", a.drain_secs)?.as_secs_f64(),
        message_bytes: a.message_bytes.min(1 << 20),
        read_buffer: a.read_buffer,
        source_ips: env.source_count(conns),
        connect_rate: a.common.connect_rate,
        connect_concurrency: a.common.connect_concurrency,
    })
}

/// Runs the flood scenario.
pub async fn run(env: Arc<Env>, a: FloodArgs) -> Result<Report, String> {
    let cfg = flood_config(&env, &a)?;
    run_rooms(env, "flood", cfg).await
}
