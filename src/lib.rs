//! Flack: a distributed websocket chat server that is a real member of an
//! Erlang flack cluster.
//!
//! One folder per concern:
//! - [`chat`]: the flack v1 websocket protocol (records, sessions, fan-out).
//! - [`node`]: the Erlang node runtime (pids, processes, distribution).
//! - [`cluster`]: the global registry that gproc_dist replicates, and the
//!   gen_leader election that decides who serves it.
//! - [`http`]: the HTTP front: websocket upgrade, static files, health, metrics.
//! - [`config`]: command line, `vm.args` and `sys.config`.

pub mod node;
