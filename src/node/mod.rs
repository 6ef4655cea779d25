//! The Erlang node runtime: what makes this binary a node that OTP nodes
//! cannot tell from one of their own for everything flack needs.
//!
//! - [`pid`]: process identifiers, ours and peers'.
//! - [`process`]: the local process table (pids, inboxes, registered names).
//!
//! Distribution (EPMD, the handshake, connections, monitors and links across
//! nodes) builds on these.

pub mod pid;
pub mod process;

pub use pid::Pid;
pub use process::{Delivery, Inbox, ProcessTable};
