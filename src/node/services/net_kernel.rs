//! `net_kernel`, as far as peers use it: `net_adm:ping/1` calls
//! `{is_auth, Node}` and treats anything but `yes` as a failure (it then
//! disconnects). We answer `yes`: a peer that got this far passed the cookie
//! check. Other calls get `{error, not_supported}` so no caller hangs.

use std::sync::Arc;

use crate::node::Node;
use crate::node::mailbox::{Received, TermMailbox};
use crate::node::term::{as_atom, as_tuple, atom, tuple};

/// Starts the service and registers it as `net_kernel`.
pub fn start(node: &Node) {
    let (inbox, mut mailbox) = TermMailbox::new(1024);
    let pid = node.spawn(inbox);
    if node.register_name("net_kernel", &pid).is_err() {
        return;
    }
    let node = node.clone();
    let core: Arc<_> = node.core().clone();
    tokio::spawn(async move {
        let shutdown = core.shutdown.clone();
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = mailbox.recv() => r,
            };
            let Some(Received::Message(_, msg)) = received else {
                return;
            };
            let Some((from, request)) = super::gen_call(&msg) else {
                continue;
            };
            let reply = match as_tuple(request) {
                Some([tag, _node]) if as_atom(tag) == Some("is_auth") => atom("yes"),
                _ => tuple(vec![atom("error"), atom("not_supported")]),
            };
            core.reply(&pid, from, reply);
        }
    });
    let _ = node;
}
