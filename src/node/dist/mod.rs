//! Erlang distribution proper: [`flags`] offered and required, the
//! [`handshake`], the bounds check of incoming terms ([`guard`]), the
//! per-peer [`connection`] tasks, and the dispatch of [`control`] messages.

pub mod connection;
pub mod control;
pub mod flags;
pub mod guard;
pub mod handshake;
