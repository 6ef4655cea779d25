//! Our own EPMD, served by `flack epmd`: what `epmd` does, enough for Erlang
//! nodes and for ourselves.
//!
//! Requests are `u16` length + tag + body. `ALIVE2_REQ` registers a node for
//! as long as the registering TCP connection stays open (exactly as epmd
//! does) and answers `ALIVE2_X_RESP` with a 32-bit creation to nodes speaking
//! handshake version 6, or `ALIVE2_RESP` with a 16-bit creation (1..=3) to
//! older ones. `PORT_PLEASE2_REQ`, `NAMES_REQ`, `DUMP_REQ` and `KILL_REQ` are
//! answered and the connection closed. `KILL_REQ` stops the server only when
//! no node is registered, as epmd without `-relaxed_command_check` does.
//! The registry is a small pure type ([`Registry`]) so its rules are tested
//! without sockets.
//!
//! Limits, epmd's own where it has them ([`Limits`]): a request is at most
//! 1024 bytes (epmd's `INBUF_SIZE`) and must arrive within 10 s; a node name
//! is at most 255 bytes (`MAXSYMLEN`); at most 1024 names are registered
//! and 2048 connections served at once (the rest are closed at once, as
//! epmd past `-max_conn`). The `NAMES_REQ` text is built once per change of
//! the registry and shared by every answer, so asking for it costs no
//! memory per request.
//!
//! Where it listens: [`listen_addresses`] reads `ERL_EPMD_ADDRESS` as epmd
//! does (a comma-separated list; loopback is always added), else every
//! interface.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const ALIVE2_REQ: u8 = b'x';
const ALIVE2_RESP: u8 = b'y';
const ALIVE2_X_RESP: u8 = b'v';
const PORT_PLEASE2_REQ: u8 = b'z';
const PORT2_RESP: u8 = b'w';
const NAMES_REQ: u8 = b'n';
const DUMP_REQ: u8 = b'd';
const KILL_REQ: u8 = b'k';
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// epmd's `MAXSYMLEN`: the longest node name it registers.
pub const MAX_NAME_LEN: usize = 255;

/// What one EPMD server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest request body, in bytes (epmd's `INBUF_SIZE`, 1024).
    pub max_request: usize,
    /// Names registered at once (1024).
    pub max_nodes: usize,
    /// Connections served at once, registrations included (2048, epmd's
    /// default `-max_conn` on Linux); more are closed at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request: 1024,
            max_nodes: 1024,
            max_connections: 2048,
        }
    }
}

/// A registered node, as `ALIVE2_REQ` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Node name without host.
    pub name: String,
    /// Distribution listen port.
    pub port: u16,
    /// 77 normal, 72 hidden.
    pub node_type: u8,
    /// 0 = TCP/IPv4.
    pub protocol: u8,
    /// Highest handshake version.
    pub highest: u16,
    /// Lowest handshake version.
    pub lowest: u16,
    /// Extra bytes.
    pub extra: Vec<u8>,
    /// Creation handed out.
    pub creation: u32,
}

/// The name table: names to registrations, plus the creation counter.
#[derive(Debug)]
pub struct Registry {
    nodes: BTreeMap<String, Registration>,
    next_creation: u32,
    next_old_creation: u16,
    max_nodes: usize,
    names: Option<Arc<[u8]>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new(rand::random::<u32>())
    }
}

impl Registry {
    /// A registry whose creations start after `seed`.
    pub fn new(seed: u32) -> Self {
        Self {
            nodes: BTreeMap::new(),
            next_creation: seed,
            next_old_creation: 1,
            max_nodes: Limits::default().max_nodes,
            names: None,
        }
    }

    /// The same registry holding at most `max_nodes` names.
    pub fn with_max_nodes(mut self, max_nodes: usize) -> Self {
        self.max_nodes = max_nodes;
        self
    }

    /// Registers a node; `None` when the name is taken, longer than
    /// [`MAX_NAME_LEN`], or the registry is full. Fills in the creation.
    pub fn register(&mut self, mut node: Registration) -> Option<u32> {
        if self.nodes.contains_key(&node.name)
            || node.name.len() > MAX_NAME_LEN
            || self.nodes.len() >= self.max_nodes
        {
            return None;
        }
        self.names = None;
        let creation = if node.highest >= 6 {
            // Never 0..=3: those are what old 2-bit creations look like.
            self.next_creation = self.next_creation.wrapping_add(1).max(4);
            self.next_creation
        } else {
            let c = self.next_old_creation;
            self.next_old_creation = c % 3 + 1;
            u32::from(c)
        };
        node.creation = creation;
        self.nodes.insert(node.name.clone(), node);
        Some(creation)
    }

    /// Removes a registration if it is still the one with `creation`.
    pub fn unregister(&mut self, name: &str, creation: u32) {
        if self.nodes.get(name).is_some_and(|n| n.creation == creation) {
            self.nodes.remove(name);
            self.names = None;
        }
    }

    /// Looks a node up.
    pub fn get(&self, name: &str) -> Option<&Registration> {
        self.nodes.get(name)
    }

    /// Whether no node is registered.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The `NAMES_REQ` text: `name N at port P\n` per node.
    pub fn names_text(&self) -> String {
        self.nodes
            .values()
            .map(|n| format!("name {} at port {}\n", n.name, n.port))
            .collect()
    }

    /// [`Registry::names_text`] as bytes, built once per change and shared.
    pub fn names_shared(&mut self) -> Arc<[u8]> {
        if let Some(names) = &self.names {
            return names.clone();
        }
        let names: Arc<[u8]> = Arc::from(self.names_text().into_bytes());
        self.names = Some(names.clone());
        names
    }

    /// How many names are registered.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The `DUMP_REQ` text, in epmd's layout.
    pub fn dump_text(&self) -> String {
        self.nodes
            .values()
            .map(|n| format!("active name     <{}> at port {}, fd = 0\n", n.name, n.port))
            .collect()
    }
}

/// Parses an `ALIVE2_REQ` body (after the tag).
pub fn parse_alive2(body: &[u8]) -> Option<Registration> {
    let u16_at = |i: usize| body.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let port = u16_at(0)?;
    let node_type = *body.get(2)?;
    let protocol = *body.get(3)?;
    let highest = u16_at(4)?;
    let lowest = u16_at(6)?;
    let nlen = usize::from(u16_at(8)?);
    if nlen > MAX_NAME_LEN {
        return None;
    }
    let name = std::str::from_utf8(body.get(10..10 + nlen)?)
        .ok()?
        .to_owned();
    let elen = usize::from(u16_at(10 + nlen)?);
    let extra = body.get(12 + nlen..12 + nlen + elen)?.to_vec();
    if name.is_empty() {
        return None;
    }
    Some(Registration {
        name,
        port,
        node_type,
        protocol,
        highest,
        lowest,
        extra,
        creation: 0,
    })
}

/// Serves EPMD on `listener`, within the default [`Limits`], until
/// `shutdown` is cancelled or a `KILL_REQ` is accepted.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    serve_many(vec![listener], shutdown, Limits::default()).await
}

/// Serves one registry on every listener in `listeners` (the addresses of
/// `ERL_EPMD_ADDRESS`), within `limits`.
pub async fn serve_many(
    listeners: Vec<TcpListener>,
    shutdown: CancellationToken,
    limits: Limits,
) -> std::io::Result<()> {
    let registry = Arc::new(Mutex::new(
        Registry::default().with_max_nodes(limits.max_nodes),
    ));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut tasks = tokio::task::JoinSet::new();
    for listener in listeners {
        let port = listener.local_addr()?.port();
        let (registry, slots, shutdown) = (registry.clone(), slots.clone(), shutdown.clone());
        tasks.spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            tracing::warn!("epmd: accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                // Past the limit the connection is closed at once.
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    drop(stream);
                    continue;
                };
                let (registry, shutdown) = (registry.clone(), shutdown.clone());
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, registry, port, shutdown, limits).await {
                        tracing::debug!("epmd: connection ended: {e}");
                    }
                    drop(slot);
                });
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn handle(
    mut stream: TcpStream,
    registry: Arc<Mutex<Registry>>,
    port: u16,
    shutdown: CancellationToken,
    limits: Limits,
) -> std::io::Result<()> {
    let request = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let len = usize::from(stream.read_u16().await?);
        if len > limits.max_request {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("request of {len} bytes exceeds {}", limits.max_request),
            ));
        }
        let mut buf = Vec::with_capacity(len);
        let got = (&mut stream).take(len as u64).read_to_end(&mut buf).await?;
        if got < len {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok::<_, std::io::Error>(buf)
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request timeout"))??;
    let Some((&tag, body)) = request.split_first() else {
        return Ok(());
    };
    match tag {
        ALIVE2_REQ => {
            let Some(node) = parse_alive2(body) else {
                // A name too long or a garbled request: refused, as epmd.
                let resp = if body.get(4..6).is_some_and(|v| v < &[0, 6][..]) {
                    vec![ALIVE2_RESP, 1, 0, 0]
                } else {
                    vec![ALIVE2_X_RESP, 1, 0, 0, 0, 0]
                };
                stream.write_all(&resp).await?;
                return Ok(());
            };
            let old = node.highest < 6;
            let name = node.name.clone();
            let created = registry.lock().register(node);
            let mut reply = vec![if old { ALIVE2_RESP } else { ALIVE2_X_RESP }];
            reply.push(u8::from(created.is_none()));
            let creation = created.unwrap_or(0);
            if old {
                reply.extend_from_slice(&(creation as u16).to_be_bytes());
            } else {
                reply.extend_from_slice(&creation.to_be_bytes());
            }
            stream.write_all(&reply).await?;
            let Some(creation) = created else {
                return Ok(());
            };
            tracing::debug!("epmd: registered {name} (creation {creation})");
            // The registration lives as long as this connection.
            let mut sink = [0u8; 64];
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    read = stream.read(&mut sink) => match read {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    },
                }
            }
            registry.lock().unregister(&name, creation);
            tracing::debug!("epmd: unregistered {name}");
        }
        PORT_PLEASE2_REQ => {
            let name = String::from_utf8_lossy(body).into_owned();
            let found = registry.lock().get(&name).cloned();
            let mut reply = vec![PORT2_RESP];
            match found {
                None => reply.push(1),
                Some(n) => {
                    reply.push(0);
                    reply.extend_from_slice(&n.port.to_be_bytes());
                    reply.push(n.node_type);
                    reply.push(n.protocol);
                    reply.extend_from_slice(&n.highest.to_be_bytes());
                    reply.extend_from_slice(&n.lowest.to_be_bytes());
                    reply.extend_from_slice(&(n.name.len() as u16).to_be_bytes());
                    reply.extend_from_slice(n.name.as_bytes());
                    reply.extend_from_slice(&(n.extra.len() as u16).to_be_bytes());
                    reply.extend_from_slice(&n.extra);
                }
            }
            stream.write_all(&reply).await?;
        }
        NAMES_REQ | DUMP_REQ => {
            let text: Arc<[u8]> = {
                let mut r = registry.lock();
                if tag == NAMES_REQ {
                    r.names_shared()
                } else {
                    Arc::from(r.dump_text().into_bytes())
                }
            };
            stream.write_all(&u32::from(port).to_be_bytes()).await?;
            stream.write_all(&text).await?;
        }
        KILL_REQ => {
            let empty = registry.lock().is_empty();
            stream.write_all(if empty { b"OK" } else { b"NO" }).await?;
            if empty {
                shutdown.cancel();
            }
        }
        other => tracing::debug!("epmd: unknown request tag {other}"),
    }
    stream.shutdown().await.ok();
    Ok(())
}

/// The addresses epmd listens on: those of `ERL_EPMD_ADDRESS` (a
/// comma-separated list, spaces allowed) with the loopback address added
/// when missing, as epmd does; every interface (`0.0.0.0`) when it is unset
/// or empty. An address that does not parse is an error naming it.
pub fn listen_addresses(env: Option<&str>) -> Result<Vec<IpAddr>, String> {
    let Some(list) = env.map(str::trim).filter(|l| !l.is_empty()) else {
        return Ok(vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]);
    };
    let mut out = Vec::new();
    for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let ip: IpAddr = word
            .parse()
            .map_err(|_| format!("ERL_EPMD_ADDRESS: {word:?} is not an IP address"))?;
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    if !out.iter().any(|ip| *ip == loopback || ip.is_unspecified()) {
        out.push(loopback);
    }
    Ok(out)
}

/// Binds `port` on each of `addresses`.
pub async fn bind_all(addresses: &[IpAddr], port: u16) -> std::io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::new();
    for ip in addresses {
        listeners.push(TcpListener::bind(SocketAddr::new(*ip, port)).await?);
    }
    Ok(listeners)
}

/// `flack epmd`: binds `port` on the addresses of `ERL_EPMD_ADDRESS` (every
/// interface when unset) and serves until killed (`KILL_REQ` with no node
/// registered) or the process ends.
pub async fn run(port: u16) -> std::io::Result<()> {
    let env = std::env::var("ERL_EPMD_ADDRESS").ok();
    let addresses = listen_addresses(env.as_deref())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let listeners = bind_all(&addresses, port).await?;
    serve_many(listeners, CancellationToken::new(), Limits::default()).await
}

/// `flack epmd -daemon`: starts `exe epmd` detached (own process group, no
/// stdio) with `ERL_EPMD_PORT=port`, as `erl` starts `epmd -daemon`, and
/// returns at once. `exe` is normally `std::env::current_exe()`.
pub fn spawn_daemon(exe: &std::path::Path, port: u16) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    Command::new(exe)
        .arg("epmd")
        .env("ERL_EPMD_PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(drop)
}

/// `flack epmd -names`: the text `epmd -names` prints, or an error when no
/// EPMD answers on `127.0.0.1:port` (epmd then prints
/// `epmd: Cannot connect to local epmd` and exits 1).
pub async fn names(port: u16) -> std::io::Result<String> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
    stream.write_all(&[0, 1, NAMES_REQ]).await?;
    let epmd_port = stream.read_u32().await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(format!(
        "epmd: up and running on port {epmd_port} with data:\n{text}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, highest: u16) -> Registration {
        Registration {
            name: name.into(),
            port: 4000,
            node_type: 77,
            protocol: 0,
            highest,
            lowest: 5,
            extra: vec![],
            creation: 0,
        }
    }

    #[test]
    fn a_name_is_held_until_unregistered_by_its_owner() {
        let mut r = Registry::new(100);
        let c = r.register(node("a", 6)).expect("free");
        assert!(c > 3);
        assert_eq!(r.register(node("a", 6)), None);
        r.unregister("a", c + 1);
        assert!(r.get("a").is_some());
        r.unregister("a", c);
        assert!(r.is_empty());
        let old = r.register(node("old", 5)).expect("free");
        assert!((1..=3).contains(&old));
        assert_eq!(r.names_text(), "name old at port 4000\n");
    }

    #[test]
    fn epmd_limits_hold() {
        assert_eq!(
            Limits::default(),
            Limits {
                max_request: 1024,
                max_nodes: 1024,
                max_connections: 2048
            }
        );
        let mut r = Registry::new(1).with_max_nodes(2);
        assert!(r.register(node(&"n".repeat(MAX_NAME_LEN + 1), 6)).is_none());
        assert!(r.register(node(&"n".repeat(MAX_NAME_LEN), 6)).is_some());
        assert!(r.register(node("b", 6)).is_some());
        assert!(r.register(node("c", 6)).is_none(), "full");
        let shared = r.names_shared();
        assert!(Arc::ptr_eq(&shared, &r.names_shared()), "built once");
        assert_eq!(&*shared, r.names_text().as_bytes());
    }

    #[test]
    fn erl_epmd_address_as_epmd_reads_it() {
        let ips = |s: &[&str]| {
            s.iter()
                .map(|a| a.parse().expect("ip"))
                .collect::<Vec<IpAddr>>()
        };
        assert_eq!(listen_addresses(None), Ok(ips(&["0.0.0.0"])));
        assert_eq!(listen_addresses(Some(" ")), Ok(ips(&["0.0.0.0"])));
        assert_eq!(
            listen_addresses(Some("10.1.2.3, 10.1.2.4")),
            Ok(ips(&["10.1.2.3", "10.1.2.4", "127.0.0.1"]))
        );
        assert_eq!(
            listen_addresses(Some("127.0.0.2")),
            Ok(ips(&["127.0.0.2", "127.0.0.1"]))
        );
        assert!(listen_addresses(Some("localhost")).is_err());
    }

    #[test]
    fn parses_alive2() {
        let mut body = vec![0x0f, 0xa0, 77, 0, 0, 6, 0, 5, 0, 3];
        body.extend_from_slice(b"abc");
        body.extend_from_slice(&[0, 0]);
        let n = parse_alive2(&body).expect("valid");
        assert_eq!(
            (n.name.as_str(), n.port, n.highest, n.lowest),
            ("abc", 4000, 6, 5)
        );
        assert!(parse_alive2(&body[..8]).is_none());
    }
}
