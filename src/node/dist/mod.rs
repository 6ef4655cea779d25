//! Erlang distribution proper: [`flags`] offered and required, the
//! [`handshake`], the bounds check of incoming terms ([`guard`]), the
//! per-peer [`connection`] tasks over a [`transport`] (plain TCP, or
//! [`tls`] as OTP's `inet_tls_dist`), the dispatch of [`control`]
//! messages, and the limits on what a failed handshake may log
//! ([`log_limit`]).

pub mod connection;
pub mod control;
pub mod flags;
pub mod guard;
pub mod handshake;
pub mod log_limit;
pub mod tls;
pub mod transport;
