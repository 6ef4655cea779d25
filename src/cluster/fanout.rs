//! The fan-out process: how a Rust node receives one chat event for many of
//! its members from another Rust node.
//!
//! The original sends a record to every member pid, so a room of a thousand
//! members costs a thousand distribution messages per event. Between Rust
//! nodes, the sender instead sends `{flack_fanout, Record, [Pid, ...]}` once
//! to this process (registered locally as `flack_fanout` and globally as
//! `{n,g,{flack_fanout, Node}}`, which is how senders find it); it decodes
//! the record once and queues the same event for each listed local session.
//! Erlang members still get their records pid to pid.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::directory::Directory;
use super::records::DecodeCache;
use crate::node::term::{as_atom, as_list, as_tuple};
use crate::node::{Node, Pid, Received, TermMailbox};

/// The local registered name.
pub const NAME: &str = "flack_fanout";

/// Starts the process and keeps it registered in the cluster.
pub fn start(
    node: &Node,
    directory: Arc<Directory>,
    records: Arc<DecodeCache>,
    shutdown: CancellationToken,
) {
    let (inbox, mut mailbox) = TermMailbox::new(4096);
    let pid = node.spawn(inbox);
    if let Err(error) = node.register_name(NAME, &pid) {
        warn!(%error, "fan-out process not started");
        return;
    }
    let registrar = directory.clone();
    let own = pid.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        // The cluster may still be electing; retry until the name is ours.
        while !stop.is_cancelled() {
            match registrar.register_fanout(&own).await {
                Ok(()) => return,
                Err(error) => debug!(%error, "fan-out registration will be retried"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    tokio::spawn(async move {
        loop {
            let received = tokio::select! {
                () = shutdown.cancelled() => return,
                received = mailbox.recv() => received,
            };
            let Some(Received::Message(_, message)) = received else {
                return;
            };
            let Some([tag, record, members]) = as_tuple(&message) else {
                continue;
            };
            if as_atom(tag) != Some(NAME) {
                continue;
            }
            let (Ok(event), Some(members)) = (records.decode(record), as_list(members)) else {
                debug!(%message, "fan-out ignored a malformed batch");
                continue;
            };
            for member in members {
                if let eetf::Term::Pid(member) = member {
                    directory.deliver_to_session(&Pid::from(member), &event);
                }
            }
        }
    });
}
