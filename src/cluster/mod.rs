//! The cluster's shared state: the global registry gproc_dist replicates,
//! and the chat operations carried out on it.
//!
//! - [`registry`]: the flack subset of gproc's global table, pure.
//! - [`directory`]: register/join/post/leave with fan-out, on this node as
//!   the leader of a cluster of one.

pub mod directory;
pub mod registry;
