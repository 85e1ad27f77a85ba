//! Length-prefixed frames on a byte stream.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame either side accepts, prefix excluded. Checked against the
/// prefix before a single byte of the body is allocated or read. Big enough
/// for a batch of a few thousand tasks; files never travel in frames.
pub const FRAME_BYTES_MAX: usize = 4 * 1024 * 1024;

/// What a connection's reader asks of the socket at once. Unbuffered, a
/// frame cost three reads (first byte, rest of the prefix, body) and a
/// fourth that found nothing; through this buffer a small frame, or several
/// queued back to back, come in one read. Bodies larger than it are read
/// straight into their own buffer.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection between frames.
    #[error("connection closed")]
    Closed,
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("empty frame")]
    Empty,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot encode a frame: {0}")]
    Encode(String),
}

/// Reads one frame's body. `max` is normally [`FRAME_BYTES_MAX`].
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut prefix = [0u8; 4];
    // Distinguish a clean close between frames from a cut inside one.
    let first = reader.read(&mut prefix[..1]).await?;
    if first == 0 {
        return Err(FrameError::Closed);
    }
    reader.read_exact(&mut prefix[1..]).await?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut body = Vec::with_capacity(len);
    read_to_len(reader, &mut body, len).await?;
    Ok(body)
}

/// Writes one frame (prefix and body in one write).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    body: &[u8],
) -> Result<(), FrameError> {
    if body.len() > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge {
            len: body.len(),
            max: FRAME_BYTES_MAX,
        });
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    writer.write_all(&out).await?;
    Ok(())
}

/// Appends `message` to `out` as one frame, for writers that batch frames:
/// its length prefix, then the message encoded in place after it (a blob
/// chunk is copied once, into the frame). On an error `out` is as it was.
pub fn append_frame<T: serde::Serialize + ?Sized>(
    message: &T,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let encoded = crate::codec::encode_append(message, out);
    let len = out.len() - start - 4;
    match encoded {
        Ok(()) if len <= FRAME_BYTES_MAX => {
            out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
            Ok(())
        }
        Ok(()) => {
            out.truncate(start);
            Err(FrameError::TooLarge {
                len,
                max: FRAME_BYTES_MAX,
            })
        }
        Err(e) => {
            out.truncate(start);
            Err(FrameError::Encode(e.to_string()))
        }
    }
}

/// Reads from `reader` into `body`'s spare capacity (never over zeros
/// written first: zeroing a 1 MiB blob chunk cost a pass over it) until it
/// holds `len` bytes; an error if the stream ends before.
pub async fn read_to_len<R: AsyncRead + Unpin>(
    reader: &mut R,
    body: &mut Vec<u8>,
    len: usize,
) -> std::io::Result<()> {
    while body.len() < len {
        let mut rest = (&mut *reader).take((len - body.len()) as u64);
        if rest.read_buf(body).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_limits() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello").await.unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r, 16).await.unwrap(), b"hello");
        assert!(matches!(
            read_frame(&mut r, 16).await,
            Err(FrameError::Closed)
        ));

        // A huge prefix is refused before reading (or allocating) a body.
        let huge = (u32::MAX).to_be_bytes();
        let mut r = &huge[..];
        assert!(matches!(
            read_frame(&mut r, FRAME_BYTES_MAX).await,
            Err(FrameError::TooLarge { .. })
        ));

        // A frame cut short is an i/o error, not a clean close.
        let mut cut = Vec::new();
        write_frame(&mut cut, b"hello").await.unwrap();
        cut.truncate(6);
        let mut r = &cut[..];
        assert!(matches!(
            read_frame(&mut r, 16).await,
            Err(FrameError::Io(_))
        ));
    }

    #[tokio::test]
    async fn appended_frames_read_back_and_one_too_large_leaves_nothing() {
        let mut out = Vec::new();
        append_frame("first", &mut out).unwrap();
        let kept = out.len();
        let huge = vec![7u8; FRAME_BYTES_MAX];
        assert!(matches!(
            append_frame(&huge, &mut out),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(out.len(), kept, "nothing of the refused frame stays");
        append_frame("second", &mut out).unwrap();
        let mut r = &out[..];
        for want in ["first", "second"] {
            let body = read_frame(&mut r, FRAME_BYTES_MAX).await.unwrap();
            assert_eq!(crate::codec::decode_message::<String>(&body).unwrap(), want);
        }
    }
}
