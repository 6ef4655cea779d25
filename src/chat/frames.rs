//! A count of websocket frames per client message, below the websocket
//! layer.
//!
//! tungstenite limits the *bytes* of a message (`max_message_size`), not
//! the number of frames it arrives in, and hands a message up only once its
//! last fragment is in. A client that opens a fragmented message and then
//! sends empty continuation frames (six bytes each) therefore keeps the
//! server parsing frames at full speed, forever, without one message ever
//! reaching the session: over loopback, 150 million frames in 5 s.
//!
//! [`FrameGuard`] sits between the socket and tungstenite and reads the
//! frame headers of the client's byte stream as they pass (it skips over the
//! payloads and copies nothing). A message that spans more than `limit`
//! frames, counting its fragments and the control frames sent between them,
//! makes the read fail with [`TooManyFrames`]; the connection answers with
//! FLACK-007 and closes. Browsers send every message as one frame.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The read error of a message in more frames than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a message exceeds the limit of {limit} frames")]
pub struct TooManyFrames {
    /// The limit.
    pub limit: usize,
}

impl TooManyFrames {
    /// The limit, when `error` (or what it wraps) is a [`TooManyFrames`].
    pub fn find(error: &(dyn std::error::Error + 'static)) -> Option<usize> {
        let mut source = Some(error);
        while let Some(current) = source {
            if let Some(found) = current.downcast_ref::<TooManyFrames>() {
                return Some(found.limit);
            }
            if let Some(inner) = current
                .downcast_ref::<io::Error>()
                .and_then(|error| error.get_ref())
                && let Some(found) = inner.downcast_ref::<TooManyFrames>()
            {
                return Some(found.limit);
            }
            source = current.source();
        }
        None
    }
}

/// Where the parser is in the client's stream.
#[derive(Debug, Clone, Copy)]
enum Position {
    /// Reading a frame header: `have` of `need` bytes so far (`need` grows
    /// once the second byte says how long the header is).
    Header {
        bytes: [u8; 14],
        have: usize,
        need: usize,
    },
    /// Skipping this many payload bytes.
    Payload(u64),
}

const FRESH_HEADER: Position = Position::Header {
    bytes: [0; 14],
    have: 0,
    need: 2,
};

/// Counts the frames of the message in progress in a client's byte stream.
#[derive(Debug, Clone)]
pub struct FrameCounter {
    position: Position,
    /// Frames of the fragmented message in progress; 0 between messages.
    frames: usize,
    limit: usize,
}

impl FrameCounter {
    /// A counter at the start of a websocket stream.
    pub fn new(limit: usize) -> Self {
        Self {
            position: FRESH_HEADER,
            frames: 0,
            limit: limit.max(1),
        }
    }

    /// Reads `data`, the next bytes from the client. On a frame over the
    /// limit, the error comes with how many bytes of `data` precede the end
    /// of that frame's header.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), (TooManyFrames, usize)> {
        let total = data.len();
        let mut data = data;
        while !data.is_empty() {
            match &mut self.position {
                Position::Payload(remaining) => {
                    let skip = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(data.len());
                    *remaining -= skip as u64;
                    data = &data[skip..];
                    if *remaining == 0 {
                        self.position = FRESH_HEADER;
                    }
                }
                Position::Header { bytes, have, need } => {
                    let take = (*need - *have).min(data.len());
                    bytes[*have..*have + take].copy_from_slice(&data[..take]);
                    *have += take;
                    data = &data[take..];
                    if *have < *need {
                        continue;
                    }
                    if *need == 2 {
                        let mask = if bytes[1] & 0x80 != 0 { 4 } else { 0 };
                        let extended = match bytes[1] & 0x7f {
                            126 => 2,
                            127 => 8,
                            _ => 0,
                        };
                        *need = 2 + extended + mask;
                        if *need > 2 {
                            continue;
                        }
                    }
                    let header = *bytes;
                    let length = match header[1] & 0x7f {
                        126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
                        127 => u64::from_be_bytes([
                            header[2], header[3], header[4], header[5], header[6], header[7],
                            header[8], header[9],
                        ]),
                        short => u64::from(short),
                    };
                    self.frame(header[0] & 0x80 != 0, header[0] & 0x0f)
                        .map_err(|error| (error, total - data.len()))?;
                    self.position = if length == 0 {
                        FRESH_HEADER
                    } else {
                        Position::Payload(length)
                    };
                }
            }
        }
        Ok(())
    }

    /// One frame header with its FIN bit and opcode.
    fn frame(&mut self, fin: bool, opcode: u8) -> Result<(), TooManyFrames> {
        let in_message = self.frames > 0;
        match opcode {
            // Text or binary: a message starts (tungstenite refuses one
            // inside another).
            1 | 2 => self.frames = usize::from(!fin),
            // Continuation.
            0 if in_message => {
                self.frames += 1;
                self.check()?;
                if fin {
                    self.frames = 0;
                }
            }
            // Control frames between fragments count toward the message.
            8..=10 if in_message => self.frames += 1,
            _ => {}
        }
        self.check()
    }

    fn check(&self) -> Result<(), TooManyFrames> {
        if self.frames > self.limit {
            Err(TooManyFrames { limit: self.limit })
        } else {
            Ok(())
        }
    }
}

/// A client stream whose reads fail with [`TooManyFrames`] once a message
/// spans too many frames; writes pass through.
#[derive(Debug)]
pub struct FrameGuard<S> {
    inner: S,
    counter: FrameCounter,
    tripped: Option<TooManyFrames>,
}

impl<S> FrameGuard<S> {
    /// Guards `inner`, whose next byte is the start of a websocket frame.
    pub fn new(inner: S, limit: usize) -> Self {
        Self {
            inner,
            counter: FrameCounter::new(limit),
            tripped: None,
        }
    }
}

impl<S: AsyncRead + Unpin> FrameGuard<S> {
    /// Whether a message has gone over the limit (reads fail from then on).
    pub fn tripped(&self) -> bool {
        self.tripped.is_some()
    }

    /// Reads and drops what the client sends, for up to `linger` or until
    /// it closes: after refusing a client that is still sending, so that
    /// closing the socket with unread input does not reset the connection
    /// before the client has read the refusal.
    pub async fn discard_input(&mut self, linger: std::time::Duration) {
        use tokio::io::AsyncReadExt;
        let mut scratch = [0u8; 4096];
        let drain = async {
            while let Ok(read) = self.inner.read(&mut scratch).await {
                if read == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(linger, drain).await;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(error) = this.tripped {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, error)));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        if let Err((error, consumed)) = this.counter.feed(&buf.filled()[before..]) {
            // What came before the frame over the limit is read as usual;
            // the next read fails.
            buf.set_filled(before + consumed);
            this.tripped = Some(error);
            if consumed == 0 {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, error)));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FrameGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&[1, 2, 3, 4]);
        out.extend(
            payload
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ [1, 2, 3, 4][i % 4]),
        );
        out
    }

    #[test]
    fn single_frame_messages_never_count() {
        let mut counter = FrameCounter::new(2);
        let mut stream = Vec::new();
        for size in [0, 5, 125, 126, 70_000] {
            stream.extend(frame(true, 1, &vec![b'x'; size]));
            stream.extend(frame(true, 9, b""));
        }
        // Byte by byte and all at once alike.
        for byte in &stream {
            counter.feed(std::slice::from_ref(byte)).expect("fine");
        }
        FrameCounter::new(2).feed(&stream).expect("fine");
    }

    #[test]
    fn fragments_beyond_the_limit_trip() {
        let mut stream = frame(false, 1, b"{");
        stream.extend(frame(false, 0, b""));
        stream.extend(frame(false, 9, b""));
        stream.extend(frame(true, 0, b"}"));
        // Four frames: within a limit of 4, over a limit of 3.
        FrameCounter::new(4).feed(&stream).expect("fine");
        // Tripped by the fourth frame's header: the final continuation,
        // whose header ends one byte short of the stream's end.
        assert_eq!(
            FrameCounter::new(3).feed(&stream),
            Err((TooManyFrames { limit: 3 }, stream.len() - 1))
        );
        // The count starts again with the next message.
        let mut counter = FrameCounter::new(4);
        counter.feed(&stream).expect("fine");
        counter.feed(&stream).expect("fine");
    }

    #[test]
    fn an_endless_message_of_empty_continuations_trips() {
        let mut counter = FrameCounter::new(128);
        counter.feed(&frame(false, 1, b"{")).expect("fine");
        let empty = frame(false, 0, b"");
        let tripped = (0..1000).position(|_| counter.feed(&empty).is_err());
        assert_eq!(tripped, Some(127));
    }

    #[test]
    fn the_error_is_found_inside_io_errors() {
        let io = io::Error::new(io::ErrorKind::InvalidData, TooManyFrames { limit: 9 });
        let ws = tungstenite::Error::Io(io);
        assert_eq!(TooManyFrames::find(&ws), Some(9));
        let other = tungstenite::Error::Io(io::Error::other("x"));
        assert_eq!(TooManyFrames::find(&other), None);
    }
}
