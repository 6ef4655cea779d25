//! One connection per peer: setting it up (our attempt, or the peer's) and
//! running it (a reader task, a writer task, ticks).
//!
//! Over TLS (`-proto_dist inet_tls`) the TLS handshake comes first, on the
//! TCP connection, bounded by the setup time as a whole (OTP gives
//! `ssl:handshake` and `ssl:connect` `net_kernel:connecttime()`); a failed
//! one is logged like a failed distribution handshake, within the same
//! per-source budget. Everything after it (handshake, framing, limits,
//! ticks) runs on the [`DistStream`] unchanged.
//!
//! Framing after the handshake: a `u32` length, then either nothing (a tick)
//! or the pass-through tag 112, a control term and an optional payload term.
//! We never offer the atom cache or fragments, so peers send nothing else. A
//! frame larger than [`super::super::NodeConfig::max_frame`], a truncated or
//! malformed one, or an unknown control message closes that connection with a
//! log line; the node and its other connections go on.
//!
//! A frame is stored as its bytes arrive: a header announcing a large frame
//! allocates nothing by itself. A request that makes the node answer the
//! peer (a spawn request, a link or monitor of a process that is gone, an
//! unlink, an exit) is taken only while the queue toward the peer has room
//! for answers; otherwise the reader waits and TCP holds the peer's further
//! requests back, so a burst of requests slows the peer down instead of
//! overflowing its queue and disconnecting it.
//!
//! Ticks: every `net_ticktime / 4` the writer sends a zero-length frame if it
//! sent nothing since the last check, and counts the checks in a row in which
//! nothing was read; at four, the peer is declared down (`net_tick_timeout`),
//! as net_kernel's ticker does.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use eetf::Term;
use erl_dist::message::Message;
use erl_dist::term::{Atom, FixInteger, PidOrAtom};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::flags;
use super::handshake::{self, HandshakeError, Local, Status};
use super::log_limit::{Verdict, shown};
use super::transport::DistStream;
use crate::node::core::{Core, SlotState};
use crate::node::epmd::client;
use crate::node::monitors::{Ref, Watched};
use crate::node::pid::Pid;

/// What the node queues toward a peer. Encoded by the writer, which knows
/// the flags the handshake settled (SEND vs SEND_SENDER, UNLINK vs UNLINK_ID).
#[derive(Debug)]
pub enum Outgoing {
    /// A message to a pid.
    Send {
        /// Sender, when there is one.
        from: Option<Pid>,
        /// Receiver.
        to: Pid,
        /// The message.
        msg: Term,
    },
    /// A message to a registered name.
    RegSend {
        /// Sender.
        from: Pid,
        /// Name on the peer.
        name: String,
        /// The message.
        msg: Term,
    },
    /// A message to a process alias (falls back to the pid on peers without
    /// `ALIAS`).
    AliasSend {
        /// Sender.
        from: Pid,
        /// The alias.
        alias: Ref,
        /// The aliased process.
        fallback: Pid,
        /// The message.
        msg: Term,
    },
    /// `LINK`.
    Link {
        /// Local end.
        from: Pid,
        /// Remote end.
        to: Pid,
    },
    /// `UNLINK_ID` (or `UNLINK` to old peers).
    Unlink {
        /// Unlink id.
        id: u64,
        /// Local end.
        from: Pid,
        /// Remote end.
        to: Pid,
    },
    /// `UNLINK_ID_ACK`.
    UnlinkAck {
        /// The id the peer sent.
        id: Term,
        /// Local end.
        from: Pid,
        /// Remote end.
        to: Pid,
    },
    /// `EXIT`: a linked process ended.
    Exit {
        /// The ended process.
        from: Pid,
        /// Its linked partner.
        to: Pid,
        /// Why.
        reason: Term,
    },
    /// `EXIT2`: `exit(To, Reason)`.
    Exit2 {
        /// Sender.
        from: Pid,
        /// Target.
        to: Pid,
        /// Why.
        reason: Term,
    },
    /// `MONITOR_P`.
    Monitor {
        /// Watcher.
        from: Pid,
        /// Watched.
        to: Watched,
        /// Monitor reference.
        reference: Ref,
    },
    /// `DEMONITOR_P`.
    Demonitor {
        /// Watcher.
        from: Pid,
        /// Watched.
        to: Watched,
        /// Monitor reference.
        reference: Ref,
    },
    /// `MONITOR_P_EXIT`.
    MonitorExit {
        /// The ended process as the monitor named it.
        watched: Watched,
        /// Watcher.
        to: Pid,
        /// Monitor reference.
        reference: Ref,
        /// Why.
        reason: Term,
    },
    /// `SPAWN_REPLY`.
    SpawnReply {
        /// Request id.
        req_id: Ref,
        /// Requesting process.
        to: Pid,
        /// 1 = link made, 2 = monitor made.
        flags: i32,
        /// The new pid, or an error atom.
        result: Term,
    },
}

fn pid_or_atom(w: &Watched) -> PidOrAtom {
    match w {
        Watched::Pid(p) => PidOrAtom::Pid(p.into()),
        Watched::Name { name, .. } => PidOrAtom::Atom(Atom::from(name.as_str())),
    }
}

impl Outgoing {
    /// The wire message for a connection with `negotiated` flags.
    pub fn into_message(self, negotiated: u64) -> Message {
        match self {
            Outgoing::Send {
                from: Some(from),
                to,
                msg,
            } if negotiated & flags::SEND_SENDER != 0 => {
                Message::send_sender((&from).into(), (&to).into(), msg)
            }
            Outgoing::Send { to, msg, .. } => Message::send((&to).into(), msg),
            Outgoing::RegSend { from, name, msg } => {
                Message::reg_send((&from).into(), Atom::from(name.as_str()), msg)
            }
            Outgoing::AliasSend {
                from, alias, msg, ..
            } if negotiated & flags::ALIAS != 0 => Message::alias_send((&from).into(), alias, msg),
            Outgoing::AliasSend { fallback, msg, .. } => Message::send((&fallback).into(), msg),
            Outgoing::Link { from, to } => Message::link((&from).into(), (&to).into()),
            Outgoing::Unlink { id, from, to } if negotiated & flags::UNLINK_ID != 0 => {
                let id = Term::from(FixInteger::from((id % i32::MAX as u64) as i32));
                Message::unlink_id(id, (&from).into(), (&to).into())
            }
            Outgoing::Unlink { from, to, .. } => Message::unlink((&from).into(), (&to).into()),
            Outgoing::UnlinkAck { id, from, to } => {
                Message::unlink_id_ack(id, (&from).into(), (&to).into())
            }
            Outgoing::Exit { from, to, reason } => {
                Message::exit((&from).into(), (&to).into(), reason)
            }
            Outgoing::Exit2 { from, to, reason } => {
                Message::exit2((&from).into(), (&to).into(), reason)
            }
            Outgoing::Monitor {
                from,
                to,
                reference,
            } => Message::monitor_p((&from).into(), pid_or_atom(&to), reference),
            Outgoing::Demonitor {
                from,
                to,
                reference,
            } => Message::demonitor_p((&from).into(), pid_or_atom(&to), reference),
            Outgoing::MonitorExit {
                watched,
                to,
                reference,
                reason,
            } => Message::monitor_p_exit(pid_or_atom(&watched), (&to).into(), reference, reason),
            Outgoing::SpawnReply {
                req_id,
                to,
                flags,
                result,
            } => {
                let result = match result {
                    Term::Pid(p) => PidOrAtom::Pid(p),
                    Term::Atom(a) => PidOrAtom::Atom(a),
                    _ => PidOrAtom::Atom(Atom::from("badarg")),
                };
                Message::spawn_reply(req_id, (&to).into(), FixInteger::from(flags), result)
            }
        }
    }
}

/// Why a connection ended, for the log and for `nodedown`.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The peer closed the connection.
    #[error("connection closed")]
    Closed,
    /// Socket error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Frame larger than allowed.
    #[error("frame of {0} bytes exceeds the limit")]
    Oversized(usize),
    /// Something other than a pass-through frame.
    #[error("unexpected frame type {0}")]
    FrameType(u8),
    /// A term that failed the bounds check.
    #[error("malformed term: {0}")]
    Guard(#[from] super::guard::GuardError),
    /// A control message we could not decode or do not know.
    #[error("bad control message: {0}")]
    Control(String),
    /// Nothing read for net_ticktime.
    #[error("net_tick_timeout")]
    TickTimeout,
    /// The queue toward the peer did not drain for net_ticktime while its
    /// requests waited for room for their answers.
    #[error("peer does not read the answers to its requests")]
    NotReading,
}

/// Our handshake parameters.
pub(crate) fn local(core: &Core) -> Local {
    Local {
        name: core.name.to_string(),
        flags: flags::offered(!core.config.hidden),
        creation: core.creation,
        cookie: core.cookie.clone(),
        step_timeout: core.config.setup_time,
    }
}

/// Connects to `addr` from `source` when the distribution listener is bound
/// to one address (`inet_dist_use_interface`), so the peer and every
/// firewall between see the node's own address as the source, as OTP does
/// when `inet_dist_connect_options` holds `{ip, Address}`. We take the
/// listener's address for it: a node then uses one address for all of its
/// distribution traffic. An unspecified listener address (every interface),
/// or one of the other IP family than the peer's, leaves the choice to the
/// kernel, as before.
async fn connect_from(source: IpAddr, addr: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    if source.is_unspecified() || source.is_ipv4() != addr.is_ipv4() {
        return TcpStream::connect(addr).await;
    }
    let socket = if source.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(std::net::SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

/// Our attempt to connect to `node` for slot `id`.
pub(crate) async fn connect(core: Arc<Core>, node: Arc<str>, id: u64, cancel: CancellationToken) {
    let attempt = async {
        let (alive, host) = node
            .split_once('@')
            .ok_or_else(|| "bad node name".to_owned())?;
        let epmd_addr = tokio::net::lookup_host((host, core.config.epmd_port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .find(|a| a.is_ipv4())
            .ok_or_else(|| format!("no address for {host}"))?;
        let entry = client::lookup(epmd_addr, alive)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{alive} is not registered with epmd on {host}"))?;
        let addr = std::net::SocketAddr::new(epmd_addr.ip(), entry.port);
        let connecting = connect_from(core.config.listen_ip, addr);
        let tcp = tokio::time::timeout(core.config.setup_time, connecting)
            .await
            .map_err(|_| "connect timeout".to_owned())?
            .map_err(|e| format!("connect {addr}: {e}"))?;
        tcp.set_nodelay(true).ok();
        let mut stream = match &core.tls {
            None => DistStream::Tcp(tcp),
            Some(tls) => {
                let handshake = tls.connect(tcp, host, addr.ip());
                let tls_stream = tokio::time::timeout(core.config.setup_time, handshake)
                    .await
                    .map_err(|_| format!("TLS handshake with {addr} timed out (no TLS answer: does the peer speak TLS?)"))?
                    .map_err(|e| {
                        format!("TLS handshake with {addr} failed: {e}{}", tls_hint(&e))
                    })?;
                DistStream::Tls(Box::new(tls_stream.into()))
            }
        };
        let v5 = entry.highest_version < 6;
        let framing = stream.framing();
        match handshake::client_framed(&mut stream, &local(&core), v5, framing).await {
            Ok(peer) => Ok((stream, peer)),
            Err(HandshakeError::Refused(status)) if status == "nok" => Err("nok".to_owned()),
            Err(e) => Err(format!("handshake: {e}")),
        }
    };
    let result = tokio::select! {
        _ = cancel.cancelled() => return,
        r = attempt => r,
    };
    match result {
        Ok((stream, peer)) => {
            if peer.name != *node {
                tracing::warn!(
                    "connected to {node} but it calls itself {}",
                    shown(&peer.name)
                );
                core.connection_lost(&node, id, "wrong_name");
                return;
            }
            start(core, node, id, stream, peer.flags);
        }
        Err(reason) if reason == "nok" => {
            // The peer's own attempt toward us wins; it will arrive as an
            // accepted connection and take this slot. Give it the setup time.
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(core.config.setup_time) => {
                    let still_ours = matches!(
                        core.peers.lock().get(&node).map(|s| (s.id, matches!(s.state, SlotState::Connecting(_)))),
                        Some((sid, true)) if sid == id
                    );
                    if still_ours {
                        core.connection_lost(&node, id, "simultaneous connect not completed");
                    }
                }
            }
        }
        Err(reason) => {
            // A peer that is down is routine; one that refuses our
            // certificate, or whose certificate we refuse, needs an operator.
            if reason.starts_with("TLS handshake") {
                tracing::warn!("cannot connect to {node}: {reason}");
            } else {
                tracing::info!("cannot connect to {node}: {reason}");
            }
            core.connection_lost(&node, id, &reason);
        }
    }
}

/// Accepts peers' connections until shutdown.
pub(crate) async fn accept_loop(core: Arc<Core>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = core.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, addr)) => {
                stream.set_nodelay(true).ok();
                let core = core.clone();
                tokio::spawn(async move { accept_one(core, stream, addr.ip()).await });
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What the node decided about an incoming name (net_kernel's
/// `accept_pending` answers).
enum Decision {
    /// `ok` or `ok_simultaneous`: go on as the owner of slot `id`, until
    /// `cancel` says another attempt took the slot over.
    Proceed(u64, Status, CancellationToken),
    /// `up_pending`: answer `alive`; the client decides.
    Replace,
    /// `nok_pending` or `not_allowed`: send the status and stop.
    Refuse(Status),
    /// `already_pending`: an `alive` exchange for this peer is running;
    /// close without a word, as dist_util does.
    Close,
}

/// Logs a failed handshake from `source`, within the per-source budget.
fn log_failure(core: &Core, source: IpAddr, line: std::fmt::Arguments<'_>, error: bool) {
    let verdict = core
        .handshake_log
        .lock()
        .check(Some(source), std::time::Instant::now());
    let Verdict::Log { suppressed } = verdict else {
        return;
    };
    let more = if suppressed > 0 {
        format!(" ({suppressed} more failed attempts from {source} were not logged)")
    } else {
        String::new()
    };
    if error {
        tracing::error!("{line}{more}");
    } else {
        tracing::warn!("{line}{more}");
    }
}

/// What a failed TLS handshake most likely means, when its error alone
/// does not say: a peer that speaks plain TCP distribution.
fn tls_hint(error: &std::io::Error) -> &'static str {
    let not_tls = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| {
            matches!(
                e,
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
            )
        });
    if not_tls {
        " (the peer does not speak TLS: is it started with -proto_dist inet_tls?)"
    } else if matches!(
        error.kind(),
        std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
    ) {
        // A plain TCP peer reads our hello as a name message it cannot
        // make sense of and closes, with or without the bytes read.
        " (the peer closed the connection without a TLS alert: does it speak TLS?)"
    } else {
        ""
    }
}

/// The TLS handshake on an accepted connection, when the distribution runs
/// over TLS; `None` (logged) when it fails or stalls past the setup time.
async fn accept_transport(core: &Core, tcp: TcpStream, source: IpAddr) -> Option<DistStream> {
    let Some(tls) = &core.tls else {
        return Some(DistStream::Tcp(tcp));
    };
    match tokio::time::timeout(core.config.setup_time, tls.accept(tcp)).await {
        Ok(Ok(stream)) => Some(DistStream::Tls(Box::new(stream.into()))),
        Ok(Err(e)) => {
            log_failure(
                core,
                source,
                format_args!(
                    "refused a TLS distribution connection from {source}: {e}{}",
                    tls_hint(&e)
                ),
                false,
            );
            None
        }
        Err(_) => {
            log_failure(
                core,
                source,
                format_args!(
                    "refused a TLS distribution connection from {source}: no TLS handshake within {:?}",
                    core.config.setup_time
                ),
                false,
            );
            None
        }
    }
}

async fn accept_one(core: Arc<Core>, tcp: TcpStream, source: IpAddr) {
    let Some(mut stream) = accept_transport(&core, tcp, source).await else {
        return;
    };
    let me = local(&core);
    let framing = stream.framing();
    let hello = match handshake::server_recv_name_framed(&mut stream, &me, framing).await {
        Ok(h) => h,
        Err(e) => {
            log_failure(
                &core,
                source,
                format_args!("refused a connection attempt from {source}: {e}"),
                false,
            );
            return;
        }
    };
    let node: Arc<str> = Arc::from(hello.name.as_str());
    if !hello.name.contains('@') || hello.name == *core.name {
        let _ = handshake::server_finish(&mut stream, &me, hello, Status::NotAllowed).await;
        return;
    }
    let decision = {
        let mut peers = core.peers.lock();
        match peers.get_mut(&node) {
            None => {
                let id = core.next_slot_id();
                let cancel = core.shutdown.child_token();
                let (tx, rx) = mpsc::channel(core.config.peer_queue);
                peers.insert(
                    node.clone(),
                    crate::node::core::PeerSlot {
                        id,
                        tx,
                        rx: Some(rx),
                        state: SlotState::Accepting(cancel.clone()),
                        replacing: false,
                    },
                );
                Decision::Proceed(id, Status::Ok, cancel)
            }
            Some(slot) => match &slot.state {
                SlotState::Up { .. } if slot.replacing => Decision::Close,
                SlotState::Up { .. } => {
                    slot.replacing = true;
                    Decision::Replace
                }
                // A pending attempt, ours or another accepted one: net_kernel
                // lets the attempt of the greater node name win. When that is
                // the peer, this attempt takes the slot over (under a new id,
                // so the old owner's end cannot touch it) and the old attempt
                // is stopped; else the peer hears `nok`.
                SlotState::Connecting(old) | SlotState::Accepting(old) => {
                    match handshake::simultaneous(&core.name, &node) {
                        Status::OkSimultaneous => {
                            old.cancel();
                            let cancel = core.shutdown.child_token();
                            slot.state = SlotState::Accepting(cancel.clone());
                            slot.id = core.next_slot_id();
                            Decision::Proceed(slot.id, Status::OkSimultaneous, cancel)
                        }
                        other => Decision::Refuse(other),
                    }
                }
            },
        }
    };
    let (status, owner) = match decision {
        Decision::Proceed(id, status, cancel) => (status, Some((id, cancel))),
        Decision::Replace => (Status::Alive, None),
        Decision::Refuse(s) => (s, None),
        Decision::Close => return,
    };
    let result = match &owner {
        Some((_, cancel)) => tokio::select! {
            _ = cancel.cancelled() => Err(HandshakeError::NotWanted("taken over by another attempt")),
            r = handshake::server_finish(&mut stream, &me, hello, status) => r,
        },
        None => handshake::server_finish(&mut stream, &me, hello, status).await,
    };
    if status == Status::Alive
        && let Some(slot) = core.peers.lock().get_mut(&node)
    {
        slot.replacing = false;
    }
    match (result, owner) {
        (Ok(peer), Some((id, _))) => start(core, node, id, stream, peer.flags),
        (Ok(peer), None) => {
            // `alive` answered `true`: the peer restarted or lost our old
            // connection before we noticed. Drop the old one, use this one.
            let old = core.peers.lock().get(&node).map(|s| s.id);
            if let Some(old) = old {
                core.connection_lost(&node, old, "replaced by a new connection");
            }
            let id = core.next_slot_id();
            let (tx, rx) = mpsc::channel(core.config.peer_queue);
            {
                let mut peers = core.peers.lock();
                if peers.contains_key(&node) {
                    return;
                }
                peers.insert(
                    node.clone(),
                    crate::node::core::PeerSlot {
                        id,
                        tx,
                        rx: Some(rx),
                        state: SlotState::Accepting(core.shutdown.child_token()),
                        replacing: false,
                    },
                );
            }
            start(core, node, id, stream, peer.flags);
        }
        (Err(e), owner) => {
            match &e {
                HandshakeError::BadCookie(_) => log_failure(
                    &core,
                    source,
                    format_args!(
                        "** Connection attempt from node {} ({source}) rejected. Invalid challenge reply. **",
                        shown(&node)
                    ),
                    true,
                ),
                HandshakeError::NotWanted(_) => {
                    tracing::debug!("connection from {} not taken: {e}", shown(&node))
                }
                _ => log_failure(
                    &core,
                    source,
                    format_args!("handshake with {} ({source}) failed: {e}", shown(&node)),
                    false,
                ),
            }
            if let Some((id, _)) = owner {
                core.connection_lost(&node, id, "handshake failed");
            }
        }
    }
}

/// A handshake succeeded: claim the slot and run the connection.
fn start(core: Arc<Core>, node: Arc<str>, id: u64, stream: DistStream, peer_flags: u64) {
    let negotiated = flags::negotiated(flags::offered(!core.config.hidden), peer_flags)
        | (peer_flags & flags::PUBLISHED);
    let cancel = core.shutdown.child_token();
    let Some(rx) = core.claim(&node, id, negotiated, cancel.clone()) else {
        return;
    };
    match stream {
        // TCP splits into owned halves without a lock between them.
        DistStream::Tcp(tcp) => {
            let (read_half, write_half) = tcp.into_split();
            run(
                core, node, id, negotiated, rx, cancel, read_half, write_half,
            );
        }
        DistStream::Tls(tls) => {
            let (read_half, write_half) = tokio::io::split(*tls);
            run(
                core, node, id, negotiated, rx, cancel, read_half, write_half,
            );
        }
    }
}

/// Runs a connection that has been claimed: a reader task and a writer
/// task over the two halves of its stream.
#[allow(clippy::too_many_arguments)]
fn run<R, W>(
    core: Arc<Core>,
    node: Arc<str>,
    id: u64,
    negotiated: u64,
    rx: mpsc::Receiver<Outgoing>,
    cancel: CancellationToken,
    read_half: R,
    write_half: W,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let reads = Arc::new(AtomicU64::new(0));
    let reader_core = core.clone();
    let reader_node = node.clone();
    let reader_cancel = cancel.clone();
    let reader_reads = reads.clone();
    tokio::spawn(async move {
        let result = tokio::select! {
            _ = reader_cancel.cancelled() => Ok(()),
            r = read_loop(&reader_core, &reader_node, id, negotiated, read_half, &reader_reads) => r,
        };
        if let Err(e) = result {
            match e {
                ConnectionError::Closed => {}
                ref other => tracing::warn!("closing connection to {reader_node}: {other}"),
            }
            let reason = match e {
                ConnectionError::Closed => "connection_closed".to_owned(),
                other => other.to_string(),
            };
            reader_cancel.cancel();
            reader_core.connection_lost(&reader_node, id, &reason);
        }
    });
    tokio::spawn(async move {
        let result = write_loop(&core, negotiated, write_half, rx, &reads, &cancel).await;
        if let Err(e) = result {
            if !matches!(e, ConnectionError::TickTimeout) {
                tracing::warn!("closing connection to {node}: {e}");
            } else {
                tracing::warn!("{node} has been silent for net_ticktime: net_tick_timeout");
            }
            cancel.cancel();
            core.connection_lost(&node, id, &e.to_string());
        }
    });
}

/// What the reader sets aside for a frame before its bytes arrive.
const FIRST_READ: usize = 64 * 1024;

/// Whether a control message can make this node queue something toward
/// the peer that sent it (a reply, an exit, a `'DOWN'`).
fn may_answer(msg: &Message) -> bool {
    !matches!(
        msg,
        Message::Tick
            | Message::Send(_)
            | Message::SendTt(_)
            | Message::SendSender(_)
            | Message::SendSenderTt(_)
            | Message::RegSend(_)
            | Message::RegSendTt(_)
            | Message::AliasSend(_)
            | Message::AliasSendTt(_)
            | Message::DemonitorP(_)
            | Message::MonitorPExit(_)
            | Message::PayloadMonitorPExit(_)
            | Message::Unlink(_)
            | Message::UnlinkIdAck(_)
            | Message::SpawnReply(_)
            | Message::SpawnReplyTt(_)
            | Message::GroupLeader(_)
            | Message::NodeLink(_)
    )
}

/// Waits until the queue toward the peer has more than `keep_free` free
/// places. The reader waits here, so the peer's requests wait in its socket
/// (TCP pushes back on it) instead of their answers overflowing the queue,
/// which would disconnect a peer that reads normally. A peer whose queue
/// does not drain for `limit` is not reading.
async fn room_for_answers(
    tx: &mpsc::WeakSender<Outgoing>,
    keep_free: usize,
    limit: Duration,
) -> Result<(), ConnectionError> {
    let started = tokio::time::Instant::now();
    loop {
        let Some(tx) = tx.upgrade() else {
            return Err(ConnectionError::Closed);
        };
        if tx.capacity() > keep_free {
            return Ok(());
        }
        drop(tx);
        if started.elapsed() >= limit {
            return Err(ConnectionError::NotReading);
        }
        // Polled, as Core::route_wait: a waiter queued on the channel would
        // take freed places ahead of the messages that cannot wait.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    core: &Arc<Core>,
    node: &Arc<str>,
    id: u64,
    negotiated: u64,
    read_half: R,
    reads: &AtomicU64,
) -> Result<(), ConnectionError> {
    let mut reader = BufReader::with_capacity(64 * 1024, read_half);
    let mut buf = Vec::new();
    let tx = core
        .peers
        .lock()
        .get(node)
        .filter(|s| s.id == id)
        .map(|s| s.tx.downgrade())
        .ok_or(ConnectionError::Closed)?;
    // Answers stop at an eighth of the queue free: bulk sends that can wait
    // stop at a quarter (Core::route_wait), and what is left is for the
    // messages that cannot wait (Core::route).
    let keep_free = (core.config.peer_queue / 8).max(4);
    loop {
        let len = match reader.read_u32().await {
            Ok(n) => n as usize,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(ConnectionError::Closed);
            }
            Err(e) => return Err(e.into()),
        };
        reads.fetch_add(1, Ordering::Relaxed);
        if len == 0 {
            continue;
        }
        if len > core.config.max_frame {
            return Err(ConnectionError::Oversized(len));
        }
        // The frame is stored as its bytes arrive: a header announcing
        // megabytes costs nothing until the megabytes come.
        buf.clear();
        buf.reserve(len.min(FIRST_READ));
        let got = (&mut reader).take(len as u64).read_to_end(&mut buf).await?;
        if got < len {
            return Err(ConnectionError::Closed);
        }
        reads.fetch_add(1, Ordering::Relaxed);
        if buf[0] != 112 {
            return Err(ConnectionError::FrameType(buf[0]));
        }
        super::guard::check_frame(&buf[1..])?;
        let msg = Message::read_from(&mut &buf[1..])
            .map_err(|e| ConnectionError::Control(e.to_string()))?;
        if may_answer(&msg) {
            room_for_answers(&tx, keep_free, core.config.net_ticktime).await?;
        }
        super::control::dispatch(core, node, negotiated, msg).map_err(ConnectionError::Control)?;
        if buf.capacity() > 1 << 20 {
            buf = Vec::new();
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    core: &Arc<Core>,
    negotiated: u64,
    write_half: W,
    mut rx: mpsc::Receiver<Outgoing>,
    reads: &AtomicU64,
    cancel: &CancellationToken,
) -> Result<(), ConnectionError> {
    let mut writer = write_half;
    let tick_every = core.config.net_ticktime / 4;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + tick_every, tick_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut wrote = false;
    let mut last_reads = reads.load(Ordering::Relaxed);
    let mut silent_checks = 0u32;
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = writer.shutdown().await;
                return Ok(());
            }
            _ = ticker.tick() => {
                let now_reads = reads.load(Ordering::Relaxed);
                if now_reads == last_reads {
                    silent_checks += 1;
                    if silent_checks >= 4 {
                        return Err(ConnectionError::TickTimeout);
                    }
                } else {
                    silent_checks = 0;
                    last_reads = now_reads;
                }
                if !wrote {
                    writer.write_all(&[0, 0, 0, 0]).await?;
                    // TLS holds written bytes in its record buffer until
                    // flushed; on TCP this does nothing.
                    writer.flush().await?;
                }
                wrote = false;
            }
            next = rx.recv() => {
                let Some(first) = next else { return Ok(()) };
                out.clear();
                encode(&mut out, first, negotiated)?;
                while out.len() < 256 * 1024 {
                    match rx.try_recv() {
                        Ok(more) => encode(&mut out, more, negotiated)?,
                        Err(_) => break,
                    }
                }
                writer.write_all(&out).await?;
                writer.flush().await?;
                wrote = true;
                if out.capacity() > 4 << 20 {
                    out = Vec::with_capacity(64 * 1024);
                }
            }
        }
    }
}

fn encode(out: &mut Vec<u8>, msg: Outgoing, negotiated: u64) -> Result<(), ConnectionError> {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, 112]);
    msg.into_message(negotiated)
        .write_into(out)
        .map_err(|e| ConnectionError::Control(format!("cannot encode: {e}")))?;
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}
