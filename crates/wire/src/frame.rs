//! Length-prefixed postcard frames.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Upper bound on one frame; a larger length prefix is treated as a corrupt stream. Snapshots
/// travel in one frame, so this also bounds the snapshot size.
pub const MAX_FRAME_BYTES: u32 = 256 << 20;

/// Identifies the protocol on the first frame, so a stray client is rejected at once.
const MAGIC: u32 = 0x4453_594e; // "DSYN"
const VERSION: u16 = 1;

/// The first frame of every connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    magic: u32,
    version: u16,
    /// The sending node's id.
    pub from: u64,
}

impl Hello {
    /// A hello from node `from`.
    pub fn new(from: u64) -> Self {
        Hello {
            magic: MAGIC,
            version: VERSION,
            from,
        }
    }

    /// Checks magic and version.
    ///
    /// # Errors
    /// [`WireError::Handshake`] when the peer speaks another protocol or version.
    pub fn validate(&self) -> Result<(), WireError> {
        if self.magic != MAGIC {
            return Err(WireError::Handshake("bad magic".into()));
        }
        if self.version != VERSION {
            return Err(WireError::Handshake(format!(
                "unsupported version {}",
                self.version
            )));
        }
        Ok(())
    }
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The length prefix exceeds [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes exceeds the limit")]
    FrameTooLarge(u64),
    /// The payload is not a valid encoding of the expected type.
    #[error("undecodable frame: {0}")]
    Decode(#[from] postcard::Error),
    /// The connection did not open with a valid [`Hello`].
    #[error("handshake failed: {0}")]
    Handshake(String),
}

/// Encodes `value` and appends it as one frame to `out` (no IO).
///
/// # Errors
/// [`WireError::Decode`] if serialization fails; [`WireError::FrameTooLarge`] past the limit.
pub fn encode_frame<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), WireError> {
    // Encode on the side so that a failure leaves `out` exactly as it was: the frames batched
    // before this one must still go out intact.
    let payload = postcard::to_allocvec(value)?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&len| len <= MAX_FRAME_BYTES)
        .ok_or(WireError::FrameTooLarge(payload.len() as u64))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// Writes one frame (without flushing a buffered writer).
///
/// # Errors
/// Socket errors and oversized values.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    writer: &mut W,
    value: &T,
) -> Result<(), WireError> {
    let mut buffer = Vec::new();
    encode_frame(value, &mut buffer)?;
    writer.write_all(&buffer).await?;
    Ok(())
}

/// Reads one frame. `Ok(None)` on a clean end of stream between frames.
///
/// # Errors
/// A stream cut mid-frame ([`WireError::Io`] with `UnexpectedEof`), an oversized length prefix,
/// or an undecodable payload.
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(
    reader: &mut R,
    buffer: &mut Vec<u8>,
) -> Result<Option<T>, WireError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error.into()),
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME_BYTES {
        return Err(WireError::FrameTooLarge(u64::from(len)));
    }
    buffer.clear();
    buffer.resize(len as usize, 0);
    reader.read_exact(buffer).await?;
    Ok(Some(postcard::from_bytes(buffer)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_clean_eof_is_none() {
        // Proves encode/decode symmetry and that EOF between frames is not an error.
        let mut bytes = Vec::new();
        encode_frame(&Hello::new(3), &mut bytes).unwrap();
        encode_frame(&vec![1u64, 2, 3], &mut bytes).unwrap();
        let mut reader = bytes.as_slice();
        let mut buffer = Vec::new();
        let hello: Hello = read_frame(&mut reader, &mut buffer).await.unwrap().unwrap();
        hello.validate().unwrap();
        assert_eq!(hello.from, 3);
        let numbers: Vec<u64> = read_frame(&mut reader, &mut buffer).await.unwrap().unwrap();
        assert_eq!(numbers, vec![1, 2, 3]);
        let end: Option<Hello> = read_frame(&mut reader, &mut buffer).await.unwrap();
        assert!(end.is_none());
    }

    #[tokio::test]
    async fn a_frame_cut_midway_is_an_error_not_a_hang_or_panic() {
        // Proves a peer vanishing mid-message surfaces as an error the caller can drop.
        let mut bytes = Vec::new();
        encode_frame(&vec![7u8; 100], &mut bytes).unwrap();
        for cut in 1..bytes.len() {
            let mut reader = &bytes[..cut];
            let mut buffer = Vec::new();
            let result: Result<Option<Vec<u8>>, _> = read_frame(&mut reader, &mut buffer).await;
            if cut < 4 {
                // Cut inside the length prefix: indistinguishable from a clean close.
                assert!(matches!(result, Ok(None) | Err(_)));
            } else {
                assert!(result.is_err(), "cut at {cut} accepted");
            }
        }
    }

    #[tokio::test]
    async fn oversized_length_prefix_is_rejected_without_allocating() {
        // Proves a garbage length cannot make the receiver allocate gigabytes.
        let bytes = u32::MAX.to_le_bytes();
        let mut reader = &bytes[..];
        let mut buffer = Vec::new();
        let result: Result<Option<Vec<u8>>, _> = read_frame(&mut reader, &mut buffer).await;
        assert!(matches!(result, Err(WireError::FrameTooLarge(_))));
        assert!(buffer.capacity() < 1024);
    }

    #[test]
    fn wrong_magic_fails_the_handshake() {
        // Proves a foreign protocol is refused at the first frame.
        let mut hello = Hello::new(1);
        hello.magic = 0;
        assert!(hello.validate().is_err());
    }
}
