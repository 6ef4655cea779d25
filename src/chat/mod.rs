//! The flack v1 chat protocol over websockets.
//!
//! - [`protocol`]: client records in, server records out (JSON).
//! - [`session`]: the pure conversation state machine.
//! - [`event`]: chat events, encoded once and shared by every member.
//! - [`mailbox`]: a session's bounded outbound queue.
//! - [`outbound`]: events written to the socket a batch per vectored write.
//! - [`frames`]: the count of frames per client message, under the websocket layer.
//! - [`connection`]: the I/O loop of one websocket connection.

pub mod connection;
pub mod event;
pub mod frames;
pub mod mailbox;
pub mod outbound;
pub mod protocol;
pub mod session;
