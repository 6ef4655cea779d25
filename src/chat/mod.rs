//! The flack v1 chat protocol over websockets, on the records, events and
//! mailboxes of [`crate::events`].
//!
//! - [`session`]: the pure conversation state machine.
//! - [`outbound`]: events written to the socket a batch per vectored write.
//! - [`frames`]: the count of frames per client message, under the websocket layer.
//! - [`connection`]: the I/O loop of one websocket connection.

pub mod connection;
pub mod frames;
pub mod outbound;
pub mod session;
