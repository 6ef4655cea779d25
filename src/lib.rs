//! Flack: a distributed websocket chat server that is a real member of an
//! Erlang flack cluster.
//!
//! One folder per concern; along the request path each builds only on
//! those listed after it:
//! - [`http`]: the HTTP front: websocket upgrade, static files, health, metrics.
//! - [`chat`]: the flack v1 websocket sessions and their connections.
//! - [`cluster`]: the global registry that gproc_dist replicates, and the
//!   chat operations on it.
//! - [`events`]: what both of those hand to a session: the v1 records, chat
//!   events, and the bounded mailboxes.
//! - [`node`]: the Erlang node runtime (pids, processes, distribution).
//!
//! Beside them: [`config`] (command line, Erlang-style arguments, vm.args,
//! sys.config) resolves the settings of every part; [`app`] wires the parts
//! into a running node; [`metrics`] holds the counters every part bumps and
//! renders them with the cluster's status; [`release`] is what the
//! release's start script asks of the binary.

pub mod app;
pub mod chat;
pub mod cluster;
pub mod config;
pub mod events;
pub mod http;
pub mod metrics;
pub mod node;
pub mod release;
