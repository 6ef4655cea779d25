//! The fan-out process: how a Rust node receives one chat event for many of
//! its members from another Rust node.
//!
//! The original sends a record to every member pid, so a room of a thousand
//! members costs a thousand distribution messages per event. Between Rust
//! nodes, the sender instead sends one message to this process (registered
//! locally as `flack_fanout` and globally as `{n,g,{flack_fanout, Node}}`,
//! whose value is the fan-out version; that is how senders find it and know
//! what it takes):
//!
//! - version 2, `{flack_fanout, [Record, ...]}`: a batch of one chat's
//!   events, in sequence order, for every session of this node in that chat
//!   (from the moment its join goes to the leader until its `left` is out;
//!   the directory keeps them). The sender neither encodes nor lists the
//!   members.
//! - version 1, `{flack_fanout, Record, [Pid, ...]}`: one event for the
//!   listed sessions, as nodes without a version send it.
//!
//! Each record is decoded once and the same event queued for every session.
//! Erlang members still get their records pid to pid.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::directory::Directory;
use super::records::DecodeCache;
use crate::node::supervisor::{ChildSpec, Intensity, Stateless, supervise};
use crate::node::term::{as_atom, as_list, as_tuple};
use crate::node::{Mailbox, Node, Pid, Received};

/// The local registered name.
pub const NAME: &str = "flack_fanout";

/// Starts the process under the node's supervisor and keeps each of its
/// incarnations registered in the cluster: a peer that kills it (an exit
/// signal) gets a fresh one, as `net_kernel` or `gproc_dist` would, and
/// the cluster name moves to it once gproc has released the old pid's.
pub fn start(
    node: &Node,
    directory: Arc<Directory>,
    records: Arc<DecodeCache>,
    shutdown: CancellationToken,
) {
    let spec = ChildSpec {
        name: NAME,
        mailbox: 4096,
        intensity: Intensity::NODE_SERVICE,
        shutdown: shutdown.clone(),
    };
    let incarnation = move |node: Node, pid: Pid, mailbox: Mailbox| {
        register_in_cluster(node, directory.clone(), pid, shutdown.clone());
        serve(
            mailbox,
            directory.clone(),
            records.clone(),
            shutdown.clone(),
        )
    };
    if let Err(error) = supervise(node, spec, Stateless(incarnation)) {
        warn!(%error, "fan-out process not started");
    }
}

/// Registers `pid` as this node's `{n,g,{flack_fanout, Node}}`, retrying
/// while the cluster is still electing or still holds a previous
/// incarnation's registration. An incarnation that ends first stops
/// trying: its pid must not take the name from the next one.
fn register_in_cluster(node: Node, directory: Arc<Directory>, pid: Pid, stop: CancellationToken) {
    tokio::spawn(async move {
        while !stop.is_cancelled() && node.is_alive(&pid) {
            match directory.register_fanout(&pid).await {
                Ok(()) => return,
                Err(error) => debug!(%error, "fan-out registration will be retried"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// One incarnation: delivers each batch it receives until the node stops
/// or the process is ended.
async fn serve(
    mut mailbox: Mailbox,
    directory: Arc<Directory>,
    records: Arc<DecodeCache>,
    shutdown: CancellationToken,
) {
    loop {
        let received = tokio::select! {
            () = shutdown.cancelled() => return,
            received = mailbox.recv() => received,
        };
        let Some(Received::Message(_, message)) = received else {
            return;
        };
        match as_tuple(&message) {
            Some([tag, batch]) if as_atom(tag) == Some(NAME) => {
                let Some(batch) = as_list(batch) else {
                    debug!(%message, "fan-out ignored a malformed batch");
                    continue;
                };
                for record in batch {
                    match records.decode(record) {
                        Ok(event) => directory.deliver_to_chat(&event),
                        Err(error) => debug!(%error, "fan-out ignored a malformed record"),
                    }
                }
            }
            Some([tag, record, members]) if as_atom(tag) == Some(NAME) => {
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
            _ => debug!(%message, "fan-out ignored an unknown message"),
        }
    }
}
