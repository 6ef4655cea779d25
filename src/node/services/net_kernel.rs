//! `net_kernel`, as far as peers use it: `net_adm:ping/1` calls
//! `{is_auth, Node}` and treats anything but `yes` as a failure (it then
//! disconnects). We answer `yes`: a peer that got this far passed the cookie
//! check. Other calls get `{error, not_supported}` so no caller hangs.

use crate::node::Node;
use crate::node::term::{as_atom, as_tuple, atom, tuple};

/// Starts the service and registers it as `net_kernel`.
pub fn start(node: &Node) {
    super::serve_calls(node, "net_kernel", |_, request| match as_tuple(request) {
        Some([tag, _node]) if as_atom(tag) == Some("is_auth") => atom("yes"),
        _ => tuple(vec![atom("error"), atom("not_supported")]),
    });
}
