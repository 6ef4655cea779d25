//! The cluster's shared state: the global registry gproc_dist replicates,
//! and the chat operations carried out on it.
//!
//! - [`registry`]: the flack subset of gproc's global table, pure.
//! - [`directory`]: register/join/post/leave with fan-out, on this node as
//!   the leader of a cluster of one.
//! - [`election`]: the gen_leader election, pure.
//! - [`gproc`]: gproc's replicated global table and gproc_dist's leader logic, pure.
//! - [`compact`]: the compact form of the terms that table holds.
//! - [`wire`]: election messages as Erlang terms.
//! - [`gproc_dist`]: the candidate process that runs them on the node.
//! - [`sequencer`]: per-chat event streams, numbered a batch at a time.
//! - [`fanout`]: one message per batch of a chat's events for a Rust node.
//! - [`records`]: the chat records members exchange, as Erlang terms.

pub mod compact;
pub mod directory;
pub mod election;
pub mod fanout;
pub mod gproc;
pub mod gproc_dist;
pub mod records;
pub mod registry;
pub mod sequencer;
pub mod wire;
