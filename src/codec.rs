//! The one binary encoding of the farm: a version byte, then postcard.
//!
//! Ledger records on disk, deltas and sync messages on the wire all go
//! through here, so every decode has a size limit and a version check, and
//! none can allocate more than its input allows (postcard reads lengths from
//! the input itself, and serde caps what a length prefix may pre-allocate).
//! Not bincode: RUSTSEC-2025-0141 marks it unmaintained.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The format version written today.
pub const VERSION: u8 = 1;

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("message is empty")]
    Empty,
    #[error("message of {len} bytes exceeds the limit of {limit}")]
    TooLarge { len: usize, limit: usize },
    #[error("unknown format version {0} (this node reads version {VERSION}); upgrade this node")]
    Version(u8),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
}

/// Encode `value` with the version byte in front.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let out = vec![VERSION];
    // Serialising into a Vec cannot fail for our types (no maps with
    // non-serialisable keys, no unbounded recursion).
    postcard::to_extend(value, out).unwrap_or_else(|_| vec![VERSION])
}

/// Decode bytes written by [`encode`], refusing more than `limit` bytes,
/// another version, or trailing garbage.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, CodecError> {
    decode_borrowed(bytes, limit)
}

/// [`decode`] that reads the value at the front and ignores what follows:
/// for a message whose later versions add fields at its end, so that a
/// node reads a newer node's message (its new fields unread).
pub fn decode_front<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, CodecError> {
    let body = checked_body(bytes, limit)?;
    let (value, _later_fields) =
        postcard::take_from_bytes(body).map_err(|e| CodecError::Malformed(e.to_string()))?;
    Ok(value)
}

/// The body after the version byte, if the size and the version are right.
fn checked_body(bytes: &[u8], limit: usize) -> Result<&[u8], CodecError> {
    if bytes.len() > limit {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != VERSION {
        return Err(CodecError::Version(version));
    }
    Ok(body)
}

/// [`decode`] into a value that may borrow from `bytes` (byte strings are
/// not copied out).
pub fn decode_borrowed<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    limit: usize,
) -> Result<T, CodecError> {
    let body = checked_body(bytes, limit)?;
    let (value, rest) =
        postcard::take_from_bytes(body).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::Trailing(rest.len()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let v = vec![1u32, 2, 3];
        let bytes = encode(&v);
        assert_eq!(decode::<Vec<u32>>(&bytes, 100).unwrap(), v);
        assert_eq!(
            decode::<Vec<u32>>(&bytes, 2),
            Err(CodecError::TooLarge {
                len: bytes.len(),
                limit: 2
            })
        );
        assert_eq!(decode::<Vec<u32>>(&[], 10), Err(CodecError::Empty));
        assert_eq!(decode::<Vec<u32>>(&[9, 0], 10), Err(CodecError::Version(9)));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(decode::<Vec<u32>>(&long, 100), Err(CodecError::Trailing(1)));
        assert!(matches!(
            decode::<Vec<u32>>(&[VERSION, 200], 10),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn forged_length_prefix_does_not_allocate_it() {
        // A Vec<u64> claiming 2^60 elements in 12 bytes must fail, not abort.
        let mut bytes = vec![VERSION];
        bytes.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(decode::<Vec<u64>>(&bytes, 100).is_err());
    }
}
