//! The EPMD client side of this node, on `erl_dist`'s EPMD client: register
//! our name (ALIVE2) and keep the registration for the node's life, look a
//! peer's distribution port up (PORT_PLEASE2), and make sure an EPMD is
//! running at start, starting one as `erl` does when none answers.

use std::net::SocketAddr;
use std::time::Duration;

use erl_dist::epmd::{EpmdClient, NodeEntry, NodeType};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

/// How long any single EPMD exchange may take.
pub const EPMD_TIMEOUT: Duration = Duration::from_secs(5);

/// EPMD client errors.
#[derive(Debug, thiserror::Error)]
pub enum EpmdClientError {
    /// No EPMD answered.
    #[error("cannot connect to epmd at {0}: {1}")]
    Connect(String, std::io::Error),
    /// EPMD refused or garbled the request.
    #[error("epmd: {0}")]
    Protocol(String),
    /// The name is already registered.
    #[error("the name {0} is already in use on this host")]
    NameTaken(String),
    /// EPMD did not answer in time.
    #[error("epmd did not answer within {0:?}")]
    Timeout(Duration),
}

/// A live EPMD registration. Dropping it (or the node shutting down) closes
/// the connection, which is what unregisters the name.
#[derive(Debug)]
pub struct Registration {
    /// The creation EPMD gave us.
    pub creation: u32,
    _connection: Compat<TcpStream>,
}

async fn connect(epmd: SocketAddr) -> Result<Compat<TcpStream>, EpmdClientError> {
    let stream = tokio::time::timeout(EPMD_TIMEOUT, TcpStream::connect(epmd))
        .await
        .map_err(|_| EpmdClientError::Timeout(EPMD_TIMEOUT))?
        .map_err(|e| EpmdClientError::Connect(epmd.to_string(), e))?;
    Ok(stream.compat())
}

/// Registers `alive` (the name without host) listening on `port`.
pub async fn register(
    epmd: SocketAddr,
    alive: &str,
    port: u16,
    hidden: bool,
) -> Result<Registration, EpmdClientError> {
    let connection = connect(epmd).await?;
    let mut entry = if hidden {
        NodeEntry::new_hidden(alive, port)
    } else {
        NodeEntry::new(alive, port)
    };
    // We speak the version 5 handshake too, so nodes older than OTP 23 (the
    // original flack release ran OTP 20) can reach us.
    entry.lowest_version = 5;
    entry.highest_version = 6;
    debug_assert!(matches!(
        entry.node_type,
        NodeType::Normal | NodeType::Hidden
    ));
    let result = tokio::time::timeout(EPMD_TIMEOUT, EpmdClient::new(connection).register(entry))
        .await
        .map_err(|_| EpmdClientError::Timeout(EPMD_TIMEOUT))?;
    match result {
        Ok((connection, creation)) => Ok(Registration {
            creation: creation.get(),
            _connection: connection,
        }),
        Err(erl_dist::epmd::EpmdError::RegisterNodeError { .. }) => {
            Err(EpmdClientError::NameTaken(alive.to_owned()))
        }
        Err(e) => Err(EpmdClientError::Protocol(e.to_string())),
    }
}

/// A peer's distribution port and handshake versions, or `None` when EPMD on
/// its host does not know the name.
pub async fn lookup(epmd: SocketAddr, alive: &str) -> Result<Option<NodeEntry>, EpmdClientError> {
    let connection = connect(epmd).await?;
    tokio::time::timeout(EPMD_TIMEOUT, EpmdClient::new(connection).get_node(alive))
        .await
        .map_err(|_| EpmdClientError::Timeout(EPMD_TIMEOUT))?
        .map_err(|e| EpmdClientError::Protocol(e.to_string()))
}

/// Whether an EPMD answers at `epmd`.
pub async fn is_running(epmd: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(EPMD_TIMEOUT, TcpStream::connect(epmd)).await,
        Ok(Ok(_))
    )
}

/// Waits up to `within` for an EPMD to answer at `epmd`.
pub async fn wait_running(epmd: SocketAddr, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if is_running(epmd).await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
