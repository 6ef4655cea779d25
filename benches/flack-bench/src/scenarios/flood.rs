//! The flood scenario: the fanout room set-up, but every sender sends as
//! fast as the server takes its messages, keeping at most `--window` times
//! members of its deliveries outstanding (sent but not yet received by a
//! member), which bounds the server's queues even towards slow members. The figure of interest is the delivery rate the
//! server sustains; latency and the loss, duplicate and reorder checks are
//! reported as in fanout.

use std::sync::Arc;

use super::Env;
use super::fanout::{Mode, RoomConfig, room_config, run_rooms};
use crate::cli::FloodArgs;
use crate::report::Report;

/// Resolves flood options.
pub fn flood_config(env: &Env, a: &FloodArgs) -> Result<RoomConfig, String> {
    room_config(
        env,
        &a.room,
        &a.common,
        4,
        Mode::Flood(a.window),
        a.drain_secs,
    )
}

/// Runs the flood scenario.
pub async fn run(env: Arc<Env>, a: FloodArgs) -> Result<Report, String> {
    let cfg = flood_config(&env, &a)?;
    run_rooms(env, "flood", cfg).await
}
