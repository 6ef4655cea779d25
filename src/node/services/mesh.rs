//! Keeps the mesh full: an Erlang peer that connects to us expects us to be
//! reachable by every node it knows. OTP's `global` meshes the cluster
//! (this node takes part, see [`super::global`]), but not when a peer runs
//! without it or a node-up exchange is cut short; so on every `nodeup` and
//! then every `interval`, we also ask each visible peer's `rex` for
//! `erlang:nodes()` and connect to the nodes we are not connected to yet.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use eetf::Term;

use crate::node::mailbox::Received;
use crate::node::term::{as_atom, as_list, as_tuple, atom, list, tuple};
use crate::node::{Node, NodeEvent};

/// Starts the mesh keeper, registered as `flack_mesh`, under the node's
/// supervisor.
pub fn start(node: &Node, interval: Duration) {
    super::start_service(
        node,
        "flack_mesh",
        1024,
        move |node, pid, mut mailbox| async move {
            let mut events = node.subscribe();
            let shutdown = node.core().shutdown.clone();
            let mut timer = tokio::time::interval(interval);
            let mut pending: HashMap<eetf::Reference, Arc<str>> = HashMap::new();
            loop {
                let ask: Vec<Arc<str>> = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = timer.tick() => node.core().connected().into_iter().filter(|(_, v)| *v).map(|(n, _)| n).collect(),
                    e = events.recv() => match e {
                        Ok(NodeEvent::Up(n)) => vec![n],
                        Ok(_) => vec![],
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => vec![],
                        Err(_) => return,
                    },
                    r = mailbox.recv() => {
                        let Some(Received::Message(_, msg)) = r else { return };
                        if let Some([Term::Reference(r), nodes]) = as_tuple(&msg).map(|t| t.to_vec()).as_deref()
                            && pending.remove(r).is_some()
                        {
                            for n in as_list(nodes).unwrap_or(&[]) {
                                if let Some(name) = as_atom(n)
                                    && name != node.name()
                                    && node.core().peer_flags(name).is_none()
                                {
                                    tracing::debug!("mesh: connecting to {name}");
                                    node.core().connect(&Arc::from(name));
                                }
                            }
                        }
                        vec![]
                    }
                };
                if pending.len() > 1024 {
                    pending.clear();
                }
                for peer in ask {
                    let tag = node.make_ref();
                    pending.insert(tag.clone(), peer.clone());
                    let from = tuple(vec![pid.clone().into(), Term::from(tag)]);
                    let request = tuple(vec![
                        atom("call"),
                        atom("erlang"),
                        atom("nodes"),
                        list(vec![]),
                        pid.clone().into(),
                    ]);
                    let call = tuple(vec![atom("$gen_call"), from, request]);
                    node.core().send_named(Some(&pid), &peer, "rex", call);
                }
            }
        },
    );
}
