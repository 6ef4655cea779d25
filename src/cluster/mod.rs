//! The cluster's shared state: the global registry gproc_dist replicates,
//! and the chat operations carried out on it.
//!
//! - [`registry`]: the flack subset of gproc's global table, pure.
//! - [`directory`]: register/join/post/leave with fan-out, on this node as
//!   the leader of a cluster of one.
//! - [`election`]: the gen_leader election, pure.
//! - [`records`]: the chat records members exchange, as Erlang terms.

pub mod directory;
pub mod election;
pub mod records;
pub mod registry;
