//! EPMD, the Erlang port mapper: the [`client`] this node uses to register and
//! to find its peers, and the [`server`] that `flack epmd` runs when no EPMD
//! answers, which Erlang nodes can use as they use `epmd`.

pub mod client;
pub mod server;

/// The port EPMD listens on: `ERL_EPMD_PORT` when set, else 4369.
pub fn port_from_env() -> u16 {
    std::env::var("ERL_EPMD_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(4369)
}
