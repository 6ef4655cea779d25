//! `rex`, the `rpc` server, for peers that still use it (`rpc:block_call`,
//! and `rpc:call` from nodes older than OTP 23): `{call, M, F, A, GL}` and
//! `{block_call, M, F, A, GL}` calls are answered from [`super::eval`] with
//! the value, or `{badrpc, {'EXIT', Reason}}`, as rex would. Casts are
//! dropped.

use crate::node::Node;
use crate::node::term::{as_atom, as_tuple, atom, tuple};

/// Starts the service and registers it as `rex`.
pub fn start(node: &Node) {
    super::serve_calls(node, "rex", |core, request| match as_tuple(request) {
        Some([kind, m, f, a, _gl]) if matches!(as_atom(kind), Some("call" | "block_call")) => {
            match super::eval(core, m, f, a) {
                Ok(v) => v,
                Err(reason) => tuple(vec![atom("badrpc"), tuple(vec![atom("EXIT"), reason])]),
            }
        }
        _ => tuple(vec![atom("badrpc"), atom("notsup")]),
    });
}
