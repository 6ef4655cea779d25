//! Chat events on their way out: server-to-client text frames written
//! straight to the connection, a batch per vectored write.
//!
//! An event is encoded to JSON once and its bytes are shared by every
//! member (see [`crate::events::event`]). tungstenite's sink would copy each frame
//! into a per-connection buffer that then keeps the size of the largest
//! batch it ever held, for the life of the connection: about 3.4 KiB of an
//! idle connection's 11 KiB went there. Here each event costs a 2-10 byte
//! header of its own and a reference to the shared bytes; the headers and
//! payloads of a batch go out with `writev`, and nothing is kept between
//! batches. Server frames are never masked (RFC 6455, 5.1), so a frame is
//! just its header and its payload.
//!
//! tungstenite still writes everything else (replies, pongs, close frames);
//! the session flushes it before a batch, so frames never interleave.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;

/// The largest frame header: FIN and opcode, a 127 length marker and a
/// 64-bit length.
const MAX_HEADER: usize = 10;

/// Slices handed to one `writev` (well below Linux's `IOV_MAX` of 1024).
const MAX_SLICES: usize = 256;

/// The header of a final, unmasked text frame of `len` bytes.
fn text_header(len: usize) -> ([u8; MAX_HEADER], usize) {
    let mut header = [0u8; MAX_HEADER];
    header[0] = 0x81; // FIN, opcode 1 (text)
    let used = if len < 126 {
        header[1] = len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        header[1] = 126;
        header[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (header, used)
}

/// Writes each payload as one text frame, in order, with as few system
/// calls as the socket allows. Does not flush.
pub async fn write_text_frames<W: AsyncWrite + Unpin>(
    io: &mut W,
    payloads: &[Bytes],
) -> io::Result<()> {
    let headers: Vec<([u8; MAX_HEADER], usize)> = payloads
        .iter()
        .map(|payload| text_header(payload.len()))
        .collect();
    let mut segments: Vec<&[u8]> = Vec::with_capacity(payloads.len() * 2);
    for ((header, used), payload) in headers.iter().zip(payloads) {
        segments.push(&header[..*used]);
        segments.push(payload);
    }
    WriteSegments {
        io,
        segments,
        index: 0,
        offset: 0,
    }
    .await
}

/// The future of [`write_text_frames`]: the segments left, from
/// `segments[index][offset..]` on.
struct WriteSegments<'a, W> {
    io: &'a mut W,
    segments: Vec<&'a [u8]>,
    index: usize,
    offset: usize,
}

impl<W: AsyncWrite + Unpin> Future for WriteSegments<'_, W> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.index < this.segments.len() {
            let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(MAX_SLICES);
            slices.push(IoSlice::new(&this.segments[this.index][this.offset..]));
            slices.extend(
                this.segments[this.index + 1..]
                    .iter()
                    .take(MAX_SLICES - 1)
                    .map(|segment| IoSlice::new(segment)),
            );
            let written = match Pin::new(&mut *this.io).poll_write_vectored(cx, &slices) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the connection took no more bytes",
                    )));
                }
                Poll::Ready(Ok(written)) => written,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            };
            let mut left = written;
            while left > 0 && this.index < this.segments.len() {
                let remaining = this.segments[this.index].len() - this.offset;
                if left >= remaining {
                    left -= remaining;
                    this.index += 1;
                    this.offset = 0;
                } else {
                    this.offset += left;
                    left = 0;
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::{Frame, FrameHeader};

    /// A writer that takes at most `step` bytes per call, to exercise
    /// partial writes.
    struct Trickle {
        written: Vec<u8>,
        step: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = data.len().min(self.step);
            self.written.extend_from_slice(&data[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Parses the frames tungstenite would read from `bytes`.
    fn frames(bytes: &[u8]) -> Vec<(bool, Vec<u8>)> {
        let mut cursor = io::Cursor::new(bytes);
        let mut out = Vec::new();
        while (cursor.position() as usize) < bytes.len() {
            let (header, length) = FrameHeader::parse(&mut cursor)
                .expect("valid header")
                .expect("complete header");
            let start = cursor.position() as usize;
            let end = start + length as usize;
            let frame = Frame::from_payload(header, bytes[start..end].to_vec().into());
            out.push((frame.header().is_final, frame.payload().to_vec()));
            cursor.set_position(end as u64);
        }
        out
    }

    #[tokio::test]
    async fn every_length_class_round_trips_through_a_websocket_parser() {
        let payloads: Vec<Bytes> = [0usize, 1, 125, 126, 127, 65_535, 65_536, 70_000]
            .iter()
            .map(|&len| Bytes::from(vec![b'x'; len]))
            .collect();
        for step in [1, 7, 4096, usize::MAX] {
            let mut writer = Trickle {
                written: Vec::new(),
                step,
            };
            write_text_frames(&mut writer, &payloads)
                .await
                .expect("written");
            let parsed = frames(&writer.written);
            assert_eq!(parsed.len(), payloads.len(), "step {step}");
            for ((is_final, payload), sent) in parsed.iter().zip(&payloads) {
                assert!(is_final);
                assert_eq!(payload.as_slice(), &sent[..]);
            }
        }
    }

    #[tokio::test]
    async fn many_frames_take_several_vectored_writes() {
        let payloads: Vec<Bytes> = (0..1000)
            .map(|n| Bytes::from(format!("{{\"n\":{n}}}")))
            .collect();
        let mut writer = Trickle {
            written: Vec::new(),
            step: usize::MAX,
        };
        write_text_frames(&mut writer, &payloads)
            .await
            .expect("written");
        let parsed = frames(&writer.written);
        assert_eq!(parsed.len(), 1000);
        assert_eq!(parsed[999].1, b"{\"n\":999}");
    }
}
