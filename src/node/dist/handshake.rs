//! The distribution handshake, both directions, versions 5 and 6.
//!
//! We drive the handshake ourselves rather than through `erl_dist`'s
//! `ClientSideHandshake`, which only sends the version 6 `'N'` name (an OTP 20
//! peer, like the original flack release, needs `'n'`), never flushes its
//! `alive` answer, and never sends the complement. The message layouts follow
//! `dist_util.erl`; every message is a length and a tag: a `u16` length on
//! TCP, a `u32` inside TLS ([`Framing`]).
//!
//! The pieces: [`encode`]/[`decode`] turn messages into bytes and back (pure,
//! tested without sockets); [`client`] and the two server steps
//! ([`server_recv_name`], [`server_finish`]) run them over a stream, each
//! read bounded by a timeout (`net_setuptime`, 7 s in erl). The decision that
//! needs the node's state (is that peer already connected, are we connecting
//! to it at the same moment?) is taken by the caller between the two server
//! steps, with [`simultaneous`] giving the protocol's answer for crossed
//! attempts. A wrong cookie ends the handshake with nothing sent: the peer
//! learns only that the connection closed.
//!
//! Limits, before anything else is looked at: a handshake message is at most
//! [`MAX_MESSAGE`] bytes (the largest real one is a name message with a
//! 255-byte name), its bytes are stored as they arrive rather than
//! allocated from the announced length, and a node name longer than
//! [`MAX_NODE_NAME`] bytes (what OTP accepts: a node name is an atom) is
//! refused by closing the connection, as a BEAM fails to make the atom.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::flags;

/// Longest node name accepted, in bytes: a node name is an atom, and OTP's
/// atoms hold at most 255 characters.
pub const MAX_NODE_NAME: usize = 255;

/// Largest handshake message accepted (length prefix excluded): a version 6
/// name or challenge with a [`MAX_NODE_NAME`] name is 274 bytes.
pub const MAX_MESSAGE: usize = 512;

/// The length prefix of handshake messages: `inet_tcp_dist` opens its
/// socket with `{packet, 2}` for the handshake, `inet_tls_dist` with
/// `{packet, 4}` from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// A `u16` length (plain TCP).
    #[default]
    Tcp,
    /// A `u32` length (TLS).
    Tls,
}

/// Handshake messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// `'n'`: version 5 name (`flags` truncated to 32 bits).
    NameV5 {
        /// Capabilities.
        flags: u64,
        /// Full node name.
        name: String,
    },
    /// `'N'`: version 6 name.
    NameV6 {
        /// Capabilities.
        flags: u64,
        /// Creation.
        creation: u32,
        /// Full node name.
        name: String,
    },
    /// `'s'`: status.
    Status(String),
    /// `'n'`: version 5 challenge.
    ChallengeV5 {
        /// Capabilities.
        flags: u64,
        /// Challenge number.
        challenge: u32,
        /// Full node name.
        name: String,
    },
    /// `'N'`: version 6 challenge.
    ChallengeV6 {
        /// Capabilities.
        flags: u64,
        /// Challenge number.
        challenge: u32,
        /// Creation.
        creation: u32,
        /// Full node name.
        name: String,
    },
    /// `'c'`: complement (high flag word and creation after a `'n'` name).
    Complement {
        /// Flags bits 32..63.
        flags_high: u32,
        /// Creation.
        creation: u32,
    },
    /// `'r'`: challenge reply.
    Reply {
        /// Our own challenge for the peer.
        challenge: u32,
        /// Digest of the peer's challenge.
        digest: [u8; 16],
    },
    /// `'a'`: challenge acknowledgement.
    Ack {
        /// Digest of our challenge.
        digest: [u8; 16],
    },
}

/// What the handshake decoder is expecting (the `'n'`/`'N'` tags mean
/// different things to client and server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Server waiting for the client's name.
    Name,
    /// Client waiting for the status.
    Status,
    /// Client waiting for the challenge.
    Challenge,
    /// Server waiting for the complement or the reply.
    ComplementOrReply,
    /// Server waiting for the reply.
    Reply,
    /// Client waiting for the ack.
    Ack,
    /// Server waiting for the client's `true`/`false` after `alive`.
    AliveAnswer,
}

/// Handshake failures.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// I/O.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A step took longer than the setup time.
    #[error("timed out waiting for {0:?}")]
    Timeout(Expect),
    /// A message we cannot parse or did not expect.
    #[error("malformed or unexpected handshake message while waiting for {0:?}")]
    Malformed(Expect),
    /// The peer's digest was wrong.
    #[error("invalid challenge {0} (wrong cookie)")]
    BadCookie(&'static str),
    /// The peer lacks flags we need.
    #[error("peer lacks required distribution flags {0:#x}")]
    MissingFlags(u64),
    /// The peer refused us with this status.
    #[error("peer answered status {0:?}")]
    Refused(String),
    /// The node decided not to go on (simultaneous connect, already up).
    #[error("connection not wanted: {0}")]
    NotWanted(&'static str),
    /// The peer asked for a dynamic name, which we do not hand out.
    #[error("dynamic node names are not supported")]
    DynamicName,
    /// A message longer than [`MAX_MESSAGE`] was announced.
    #[error("handshake message of {0} bytes exceeds the limit while waiting for {1:?}")]
    TooLong(usize, Expect),
    /// A node name longer than [`MAX_NODE_NAME`].
    #[error("node name of {0} bytes exceeds the limit of {MAX_NODE_NAME}")]
    NameTooLong(usize),
}

/// The digest `dist_util:gen_digest/2` computes: MD5 of the cookie followed by
/// the challenge in decimal.
pub fn digest(challenge: u32, cookie: &str) -> [u8; 16] {
    md5::compute(format!("{cookie}{challenge}")).0
}

/// Encodes a message with its `u16` length.
pub fn encode(msg: &Msg) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    match msg {
        Msg::NameV5 { flags, name } => {
            b.push(b'n');
            b.extend_from_slice(&5u16.to_be_bytes());
            b.extend_from_slice(&(*flags as u32).to_be_bytes());
            b.extend_from_slice(name.as_bytes());
        }
        Msg::NameV6 {
            flags,
            creation,
            name,
        } => {
            b.push(b'N');
            b.extend_from_slice(&flags.to_be_bytes());
            b.extend_from_slice(&creation.to_be_bytes());
            b.extend_from_slice(&(name.len() as u16).to_be_bytes());
            b.extend_from_slice(name.as_bytes());
        }
        Msg::Status(s) => {
            b.push(b's');
            b.extend_from_slice(s.as_bytes());
        }
        Msg::ChallengeV5 {
            flags,
            challenge,
            name,
        } => {
            b.push(b'n');
            b.extend_from_slice(&5u16.to_be_bytes());
            b.extend_from_slice(&(*flags as u32).to_be_bytes());
            b.extend_from_slice(&challenge.to_be_bytes());
            b.extend_from_slice(name.as_bytes());
        }
        Msg::ChallengeV6 {
            flags,
            challenge,
            creation,
            name,
        } => {
            b.push(b'N');
            b.extend_from_slice(&flags.to_be_bytes());
            b.extend_from_slice(&challenge.to_be_bytes());
            b.extend_from_slice(&creation.to_be_bytes());
            b.extend_from_slice(&(name.len() as u16).to_be_bytes());
            b.extend_from_slice(name.as_bytes());
        }
        Msg::Complement {
            flags_high,
            creation,
        } => {
            b.push(b'c');
            b.extend_from_slice(&flags_high.to_be_bytes());
            b.extend_from_slice(&creation.to_be_bytes());
        }
        Msg::Reply { challenge, digest } => {
            b.push(b'r');
            b.extend_from_slice(&challenge.to_be_bytes());
            b.extend_from_slice(digest);
        }
        Msg::Ack { digest } => {
            b.push(b'a');
            b.extend_from_slice(digest);
        }
    }
    let mut out = (b.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&b);
    out
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        Some((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }
    fn rest_str(&mut self) -> Option<String> {
        let s = std::str::from_utf8(self.0).ok()?.to_owned();
        self.0 = &[];
        Some(s)
    }
    fn digest(&mut self) -> Option<[u8; 16]> {
        self.take(16)?.try_into().ok()
    }
}

/// Decodes one message body (without its length) in the context `expect`.
pub fn decode(body: &[u8], expect: Expect) -> Option<Msg> {
    let (&tag, rest) = body.split_first()?;
    let mut c = Cursor(rest);
    let msg = match (expect, tag) {
        (Expect::Name, b'n') => {
            if c.u16()? != 5 {
                return None;
            }
            let flags = u64::from(c.u32()?);
            Msg::NameV5 {
                flags,
                name: c.rest_str()?,
            }
        }
        (Expect::Name, b'N') => {
            let flags = c.u64()?;
            let creation = c.u32()?;
            let len = usize::from(c.u16()?);
            let name = std::str::from_utf8(c.take(len)?).ok()?.to_owned();
            Msg::NameV6 {
                flags,
                creation,
                name,
            }
        }
        (Expect::Status | Expect::AliveAnswer, b's') => Msg::Status(c.rest_str()?),
        (Expect::Challenge, b'n') => {
            if c.u16()? != 5 {
                return None;
            }
            let flags = u64::from(c.u32()?);
            let challenge = c.u32()?;
            Msg::ChallengeV5 {
                flags,
                challenge,
                name: c.rest_str()?,
            }
        }
        (Expect::Challenge, b'N') => {
            let flags = c.u64()?;
            let challenge = c.u32()?;
            let creation = c.u32()?;
            let len = usize::from(c.u16()?);
            let name = std::str::from_utf8(c.take(len)?).ok()?.to_owned();
            Msg::ChallengeV6 {
                flags,
                challenge,
                creation,
                name,
            }
        }
        (Expect::ComplementOrReply, b'c') => Msg::Complement {
            flags_high: c.u32()?,
            creation: c.u32()?,
        },
        (Expect::ComplementOrReply | Expect::Reply, b'r') => Msg::Reply {
            challenge: c.u32()?,
            digest: c.digest()?,
        },
        (Expect::Ack, b'a') => Msg::Ack {
            digest: c.digest()?,
        },
        _ => return None,
    };
    Some(msg)
}

/// Our side of a handshake.
#[derive(Debug, Clone)]
pub struct Local {
    /// Full node name.
    pub name: String,
    /// Flags we offer.
    pub flags: u64,
    /// Our creation.
    pub creation: u32,
    /// The cookie.
    pub cookie: String,
    /// Bound on each step.
    pub step_timeout: Duration,
}

/// The peer as the handshake revealed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Full node name.
    pub name: String,
    /// Its flags (digest expanded).
    pub flags: u64,
    /// Its creation (0 when an old peer gave none).
    pub creation: u32,
}

/// What a server learned from the name message.
#[derive(Debug, Clone)]
pub struct Hello {
    /// The connecting node.
    pub name: String,
    /// Its flags.
    pub flags: u64,
    /// Its creation, if it sent one.
    pub creation: Option<u32>,
    /// Whether it sent the version 6 name.
    pub v6: bool,
    /// The length prefix the connection uses, for the rest of the
    /// handshake.
    pub framing: Framing,
}

/// The status a server answers after the name message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Go on.
    Ok,
    /// Go on; our own attempt toward the peer is being abandoned.
    OkSimultaneous,
    /// Stop; our own attempt wins.
    Nok,
    /// Stop; not allowed.
    NotAllowed,
    /// We think we are already connected; the client decides.
    Alive,
}

impl Status {
    fn text(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::OkSimultaneous => "ok_simultaneous",
            Status::Nok => "nok",
            Status::NotAllowed => "not_allowed",
            Status::Alive => "alive",
        }
    }
}

/// The protocol's rule for crossed connection attempts, seen from the side
/// that receives a connection from `peer` while connecting to it itself: the
/// attempt of the node with the greater name survives.
pub fn simultaneous(local: &str, peer: &str) -> Status {
    if peer.as_bytes() > local.as_bytes() {
        Status::OkSimultaneous
    } else {
        Status::Nok
    }
}

async fn read_msg<S: AsyncRead + Unpin>(
    s: &mut S,
    expect: Expect,
    t: Duration,
    framing: Framing,
) -> Result<Msg, HandshakeError> {
    let body = tokio::time::timeout(t, async {
        let len = match framing {
            Framing::Tcp => usize::from(s.read_u16().await?),
            Framing::Tls => usize::try_from(s.read_u32().await?).unwrap_or(usize::MAX),
        };
        if len > MAX_MESSAGE {
            return Err(HandshakeError::TooLong(len, expect));
        }
        // Stored as the bytes arrive: an announced length costs nothing.
        let mut body = Vec::new();
        let got = (&mut *s).take(len as u64).read_to_end(&mut body).await?;
        if got < len {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        Ok(body)
    })
    .await
    .map_err(|_| HandshakeError::Timeout(expect))??;
    decode(&body, expect).ok_or(HandshakeError::Malformed(expect))
}

async fn write_msg<S: AsyncWrite + Unpin>(
    s: &mut S,
    msg: &Msg,
    t: Duration,
    framing: Framing,
) -> Result<(), HandshakeError> {
    let mut bytes = encode(msg);
    if framing == Framing::Tls {
        // The same body behind a u32 length: two more zero bytes in front.
        bytes.splice(0..0, [0, 0]);
    }
    tokio::time::timeout(t, async {
        s.write_all(&bytes).await?;
        s.flush().await
    })
    .await
    .map_err(|_| HandshakeError::Timeout(Expect::Status))??;
    Ok(())
}

/// Runs the client side over plain TCP: we connected to the peer. `v5`
/// sends the old name message (for peers whose EPMD entry says version 5).
pub async fn client<S>(s: &mut S, local: &Local, v5: bool) -> Result<PeerInfo, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    client_framed(s, local, v5, Framing::Tcp).await
}

/// [`client`] with the length prefix of the connection's kind.
pub async fn client_framed<S>(
    s: &mut S,
    local: &Local,
    v5: bool,
    framing: Framing,
) -> Result<PeerInfo, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let t = local.step_timeout;
    let name = if v5 {
        Msg::NameV5 {
            flags: local.flags,
            name: local.name.clone(),
        }
    } else {
        Msg::NameV6 {
            flags: local.flags,
            creation: local.creation,
            name: local.name.clone(),
        }
    };
    write_msg(s, &name, t, framing).await?;
    let Msg::Status(status) = read_msg(s, Expect::Status, t, framing).await? else {
        return Err(HandshakeError::Malformed(Expect::Status));
    };
    match status.as_str() {
        "ok" | "ok_simultaneous" => {}
        "alive" => {
            // We only connect when we hold no connection to the peer, so the
            // one it remembers is stale: tell it to drop that one.
            write_msg(s, &Msg::Status("true".into()), t, framing).await?;
        }
        other => return Err(HandshakeError::Refused(other.to_owned())),
    }
    let (peer, their_challenge) = match read_msg(s, Expect::Challenge, t, framing).await? {
        Msg::ChallengeV6 {
            flags,
            challenge,
            creation,
            name,
        } => {
            if v5 {
                // A new node answered our old name: complete our flags.
                let complement = Msg::Complement {
                    flags_high: (local.flags >> 32) as u32,
                    creation: local.creation,
                };
                write_msg(s, &complement, t, framing).await?;
            }
            (
                PeerInfo {
                    name,
                    flags: flags::expand(flags),
                    creation,
                },
                challenge,
            )
        }
        Msg::ChallengeV5 {
            flags,
            challenge,
            name,
        } => (
            PeerInfo {
                name,
                flags: flags::expand(flags),
                creation: 0,
            },
            challenge,
        ),
        _ => return Err(HandshakeError::Malformed(Expect::Challenge)),
    };
    if peer.name.len() > MAX_NODE_NAME {
        return Err(HandshakeError::NameTooLong(peer.name.len()));
    }
    let missing = flags::missing(peer.flags);
    if missing != 0 {
        return Err(HandshakeError::MissingFlags(missing));
    }
    let ours: u32 = rand::random();
    let reply = Msg::Reply {
        challenge: ours,
        digest: digest(their_challenge, &local.cookie),
    };
    write_msg(s, &reply, t, framing).await?;
    let Msg::Ack { digest: got } = read_msg(s, Expect::Ack, t, framing).await? else {
        return Err(HandshakeError::Malformed(Expect::Ack));
    };
    if got != digest(ours, &local.cookie) {
        return Err(HandshakeError::BadCookie("ack"));
    }
    Ok(peer)
}

/// First server step over plain TCP: read the connecting node's name.
pub async fn server_recv_name<S>(s: &mut S, local: &Local) -> Result<Hello, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    server_recv_name_framed(s, local, Framing::Tcp).await
}

/// [`server_recv_name`] with the length prefix of the connection's kind;
/// [`server_finish`] goes on with the same one.
pub async fn server_recv_name_framed<S>(
    s: &mut S,
    local: &Local,
    framing: Framing,
) -> Result<Hello, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hello = match read_msg(s, Expect::Name, local.step_timeout, framing).await? {
        Msg::NameV5 { flags, name } => Hello {
            name,
            flags: flags::expand(flags),
            creation: None,
            v6: false,
            framing,
        },
        Msg::NameV6 {
            flags,
            creation,
            name,
        } => Hello {
            name,
            flags: flags::expand(flags),
            creation: Some(creation),
            v6: true,
            framing,
        },
        _ => return Err(HandshakeError::Malformed(Expect::Name)),
    };
    if hello.name.len() > MAX_NODE_NAME {
        // A BEAM cannot make the atom and drops the connection; so do we.
        return Err(HandshakeError::NameTooLong(hello.name.len()));
    }
    if hello.flags & flags::NAME_ME != 0 {
        write_msg(
            s,
            &Msg::Status(Status::NotAllowed.text().into()),
            local.step_timeout,
            framing,
        )
        .await?;
        return Err(HandshakeError::DynamicName);
    }
    let missing = flags::missing(hello.flags);
    if missing != 0 {
        // As dist_util's check_dflags: tell the peer it is not allowed.
        write_msg(
            s,
            &Msg::Status(Status::NotAllowed.text().into()),
            local.step_timeout,
            framing,
        )
        .await?;
        return Err(HandshakeError::MissingFlags(missing));
    }
    Ok(hello)
}

/// Second server step: send `status`, then challenge, check the reply and
/// acknowledge. With [`Status::Alive`] the client's answer decides; the
/// caller must drop its old connection when this returns `Ok`.
///
/// The whole step, not each message, is bounded by the setup time (as
/// `dist_util`'s timer, reset once the node has marked the attempt
/// pending): a client that holds a name it claimed without ever proving
/// the cookie keeps it for at most that long.
pub async fn server_finish<S>(
    s: &mut S,
    local: &Local,
    hello: Hello,
    status: Status,
) -> Result<PeerInfo, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::time::timeout(
        local.step_timeout,
        server_finish_steps(s, local, hello, status),
    )
    .await
    .map_err(|_| HandshakeError::Timeout(Expect::Reply))?
}

async fn server_finish_steps<S>(
    s: &mut S,
    local: &Local,
    hello: Hello,
    status: Status,
) -> Result<PeerInfo, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let t = local.step_timeout;
    let framing = hello.framing;
    write_msg(s, &Msg::Status(status.text().into()), t, framing).await?;
    match status {
        Status::Ok | Status::OkSimultaneous => {}
        Status::Nok => return Err(HandshakeError::NotWanted("simultaneous connect, ours wins")),
        Status::NotAllowed => return Err(HandshakeError::NotWanted("not allowed")),
        Status::Alive => match read_msg(s, Expect::AliveAnswer, t, framing).await? {
            Msg::Status(answer) if answer == "true" => {}
            _ => return Err(HandshakeError::NotWanted("peer keeps its old connection")),
        },
    }
    let ours: u32 = rand::random();
    let v6_challenge = hello.v6 || hello.flags & flags::HANDSHAKE_23 != 0;
    let challenge = if v6_challenge {
        Msg::ChallengeV6 {
            flags: local.flags,
            challenge: ours,
            creation: local.creation,
            name: local.name.clone(),
        }
    } else {
        Msg::ChallengeV5 {
            flags: local.flags,
            challenge: ours,
            name: local.name.clone(),
        }
    };
    write_msg(s, &challenge, t, framing).await?;
    let mut peer = PeerInfo {
        name: hello.name,
        flags: hello.flags,
        creation: hello.creation.unwrap_or(0),
    };
    let expect = if v6_challenge && !hello.v6 {
        Expect::ComplementOrReply
    } else {
        Expect::Reply
    };
    let mut msg = read_msg(s, expect, t, framing).await?;
    if let Msg::Complement {
        flags_high,
        creation,
    } = msg
    {
        peer.flags = flags::expand(peer.flags | (u64::from(flags_high) << 32));
        peer.creation = creation;
        msg = read_msg(s, Expect::Reply, t, framing).await?;
    }
    let Msg::Reply {
        challenge: theirs,
        digest: got,
    } = msg
    else {
        return Err(HandshakeError::Malformed(Expect::Reply));
    };
    if got != digest(ours, &local.cookie) {
        // dist_util closes without a word; so do we.
        return Err(HandshakeError::BadCookie("reply"));
    }
    write_msg(
        s,
        &Msg::Ack {
            digest: digest(theirs, &local.cookie),
        },
        t,
        framing,
    )
    .await?;
    Ok(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let cases = [
            (
                Msg::NameV5 {
                    flags: 0x7fff,
                    name: "a@h".into(),
                },
                Expect::Name,
            ),
            (
                Msg::NameV6 {
                    flags: 1 << 34 | 7,
                    creation: 9,
                    name: "a@h".into(),
                },
                Expect::Name,
            ),
            (Msg::Status("ok_simultaneous".into()), Expect::Status),
            (
                Msg::ChallengeV5 {
                    flags: 4,
                    challenge: 77,
                    name: "b@h".into(),
                },
                Expect::Challenge,
            ),
            (
                Msg::ChallengeV6 {
                    flags: 1 << 33,
                    challenge: 1,
                    creation: 2,
                    name: "b@h".into(),
                },
                Expect::Challenge,
            ),
            (
                Msg::Complement {
                    flags_high: 4,
                    creation: 5,
                },
                Expect::ComplementOrReply,
            ),
            (
                Msg::Reply {
                    challenge: 3,
                    digest: [7; 16],
                },
                Expect::Reply,
            ),
            (Msg::Ack { digest: [1; 16] }, Expect::Ack),
        ];
        for (msg, expect) in cases {
            let bytes = encode(&msg);
            assert_eq!(
                usize::from(u16::from_be_bytes([bytes[0], bytes[1]])),
                bytes.len() - 2
            );
            assert_eq!(decode(&bytes[2..], expect), Some(msg));
        }
        assert_eq!(decode(b"a", Expect::Ack), None);
        assert_eq!(decode(b"x", Expect::Name), None);
    }

    #[test]
    fn digest_matches_dist_util() {
        // erlang:md5("cookie" ++ integer_to_list(4294967295)).
        let d = digest(u32::MAX, "cookie");
        assert_eq!(d, md5::compute("cookie4294967295").0);
    }

    #[test]
    fn greater_name_wins_crossed_attempts() {
        assert_eq!(simultaneous("a@h", "b@h"), Status::OkSimultaneous);
        assert_eq!(simultaneous("b@h", "a@h"), Status::Nok);
    }

    #[tokio::test]
    async fn both_sides_agree_and_a_wrong_cookie_is_refused() {
        let local = |name: &str, cookie: &str| Local {
            name: name.into(),
            flags: flags::offered(true),
            creation: 42,
            cookie: cookie.into(),
            step_timeout: Duration::from_secs(2),
        };
        for (v5, cookie_b, ok) in [(false, "c", true), (true, "c", true), (false, "x", false)] {
            let (mut a, mut b) = tokio::io::duplex(4096);
            let la = local("a@h", "c");
            let lb = local("b@h", cookie_b);
            let server = tokio::spawn(async move {
                let hello = server_recv_name(&mut b, &lb).await?;
                server_finish(&mut b, &lb, hello, Status::Ok).await
            });
            let client = client(&mut a, &la, v5).await;
            let server = server.await.expect("task");
            assert_eq!(client.is_ok(), ok, "client v5={v5}");
            assert_eq!(server.is_ok(), ok, "server v5={v5}");
            if ok {
                assert_eq!(client.expect("ok").name, "b@h");
                let peer = server.expect("ok");
                assert_eq!((peer.name.as_str(), peer.creation), ("a@h", 42));
                assert_ne!(peer.flags & flags::V4_NC, 0);
            }
        }
    }
}
