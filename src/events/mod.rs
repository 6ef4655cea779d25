//! What flows to a chat session, whoever produced it: the vocabulary that
//! the websocket sessions ([`crate::chat`]) and the cluster's directory and
//! fan-out ([`crate::cluster`]) share. It depends on neither, so both build
//! on it and no dependency climbs back up.
//!
//! - [`protocol`]: the flack v1 records: client records in, server records
//!   out (JSON).
//! - [`event`]: chat events, encoded once and shared by every member.
//! - [`mailbox`]: a session's bounded queue of events, and the handle
//!   producers fill it through.

pub mod event;
pub mod mailbox;
pub mod protocol;
