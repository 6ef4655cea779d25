//! Flack: a distributed websocket chat server that is a real member of an
//! Erlang flack cluster.
//!
//! One folder per concern:
//! - [`chat`]: the flack v1 websocket protocol (records, sessions, fan-out).
//! - [`node`]: the Erlang node runtime (pids, processes, distribution).
//! - [`cluster`]: the global registry that gproc_dist replicates, and the
//!   chat operations on it.
//! - [`http`]: the HTTP front: websocket upgrade, static files, health, metrics.
//! - [`config`]: command line, Erlang-style arguments, vm.args, sys.config,
//!   settings.
//!
//! [`app`] wires them into a running node; [`metrics`] counts what happens;
//! [`release`] is what the release's start script asks of the binary.

pub mod app;
pub mod chat;
pub mod cluster;
pub mod config;
pub mod http;
pub mod metrics;
pub mod node;
pub mod release;
