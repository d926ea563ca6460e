//! The request-response codec: raw bytes, length-prefixed, limits enforced
//! before the body is read.
//!
//! The network layer moves bytes only; the node encodes and decodes its own
//! messages. Each message on a stream is a big-endian `u32` length followed
//! by that many bytes. The length is checked against the protocol's limit
//! *before* anything is allocated or read, so a peer announcing 4 GiB costs
//! us four bytes; within the limit the buffer starts at 1 MiB at most and
//! doubles only as bytes actually arrive, never to a larger declared size
//! up front. Writing refuses a
//! message over our own limit too, so we never send what a peer with the same
//! configuration would refuse.

use std::io;

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;

/// Byte limits of one request-response protocol.
#[derive(Debug, Clone, Copy)]
pub(super) struct RawCodec {
    pub(super) max_request: usize,
    pub(super) max_response: usize,
}

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(
        &mut self,
        protocol: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_limited(io, self.max_request, protocol, "request").await
    }

    async fn read_response<T>(
        &mut self,
        protocol: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_limited(io, self.max_response, protocol, "response").await
    }

    async fn write_request<T>(
        &mut self,
        protocol: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_limited(io, &req, self.max_request, protocol, "request").await
    }

    async fn write_response<T>(
        &mut self,
        protocol: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_limited(io, &res, self.max_response, protocol, "response").await
    }
}

/// What a message's buffer starts at: the whole message if it is smaller, so
/// that a chunk reply (two chunks of ~1 MiB) is read without regrowing; a
/// peer that declares more and sends nothing costs at most this per stream.
const FIRST_GRANT: usize = 1 << 20;

/// Reads one length-prefixed message of at most `limit` bytes.
async fn read_limited<T>(
    io: &mut T,
    limit: usize,
    protocol: &StreamProtocol,
    what: &str,
) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut prefix = [0u8; 4];
    io.read_exact(&mut prefix).await?;
    let declared = u32::from_be_bytes(prefix);
    let len = usize::try_from(declared).unwrap_or(usize::MAX);
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{protocol} {what} of {declared} bytes exceeds the limit of {limit} bytes"),
        ));
    }
    // Zeroed once and never regrown from nothing: futures' `read_to_end`
    // starts at 32 bytes, doubles, and zero-fills all it adds, much of the
    // 6 % memmove and 3 % memset in a profile of the transfer benchmark.
    let mut body = vec![0; len.min(FIRST_GRANT)];
    let mut filled = 0;
    while filled < len {
        if filled == body.len() {
            // More has arrived than granted so far: double, up to the length.
            body.resize(len.min(2 * body.len()), 0);
        }
        let n = io.read(&mut body[filled..]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{protocol} {what} announced {declared} bytes but the stream ended after {filled}"
                ),
            ));
        }
        filled += n;
    }
    Ok(body)
}

/// Reads one length-prefixed message of at most `limit` bytes, exactly as a
/// request or response of a real protocol is read. Public (hidden) for the
/// frame fuzz target, which drives it from a byte slice.
#[doc(hidden)]
pub async fn read_frame<T>(io: &mut T, limit: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    const PROTO: StreamProtocol = StreamProtocol::new("/renderswarm/fuzz/1");
    read_limited(io, limit, &PROTO, "frame").await
}

/// Writes one length-prefixed message, refusing one over `limit`.
async fn write_limited<T>(
    io: &mut T,
    data: &[u8],
    limit: usize,
    protocol: &StreamProtocol,
    what: &str,
) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    let too_large = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{protocol} {what} of {} bytes exceeds the limit of {limit} bytes",
                data.len()
            ),
        )
    };
    if data.len() > limit {
        return Err(too_large());
    }
    let len = u32::try_from(data.len()).map_err(|_| too_large())?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(data).await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;
    use request_response::Codec;

    const PROTO: StreamProtocol = StreamProtocol::new("/test/raw/1");

    fn codec() -> RawCodec {
        RawCodec {
            max_request: 8,
            max_response: 16,
        }
    }

    #[tokio::test]
    async fn round_trips_within_the_limit() {
        let mut wire = Cursor::new(Vec::new());
        codec()
            .write_request(&PROTO, &mut wire, b"12345678".to_vec())
            .await
            .expect("8 bytes fit a limit of 8");
        wire.set_position(0);
        let got = codec()
            .read_request(&PROTO, &mut wire)
            .await
            .expect("read back");
        assert_eq!(got, b"12345678");
    }

    #[tokio::test]
    async fn refuses_an_oversized_declared_length_before_reading() {
        // Declares 4 GiB - 1 but carries nothing: must fail on the prefix alone.
        let mut wire = Cursor::new(u32::MAX.to_be_bytes().to_vec());
        let err = codec()
            .read_response(&PROTO, &mut wire)
            .await
            .expect_err("over the limit");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("exceeds the limit of 16"), "{err}");
    }

    #[tokio::test]
    async fn refuses_to_write_over_the_limit() {
        let mut wire = Cursor::new(Vec::new());
        let err = codec()
            .write_request(&PROTO, &mut wire, vec![0; 9])
            .await
            .expect_err("9 > 8");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(wire.get_ref().is_empty(), "nothing may be written");
    }

    #[tokio::test]
    async fn a_message_larger_than_the_first_grant_arrives_whole() {
        let body: Vec<u8> = (0..FIRST_GRANT * 3 + 7).map(|i| (i % 251) as u8).collect();
        let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(b"next message");
        let mut wire = Cursor::new(bytes);
        let got = read_limited(&mut wire, body.len(), &PROTO, "response")
            .await
            .expect("within the limit");
        assert!(got == body, "the body must arrive unchanged");
        let mut rest = Vec::new();
        wire.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"next message", "nothing past the body is read");

        let mut short = ((FIRST_GRANT * 2) as u32).to_be_bytes().to_vec();
        short.extend_from_slice(&body[..FIRST_GRANT + 1]);
        let err = read_limited(&mut Cursor::new(short), FIRST_GRANT * 2, &PROTO, "response")
            .await
            .expect_err("truncated");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(
            err.to_string()
                .contains(&format!("after {}", FIRST_GRANT + 1)),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_truncated_body_is_an_error() {
        let mut bytes = 5u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(b"abc");
        let mut wire = Cursor::new(bytes);
        let err = codec()
            .read_request(&PROTO, &mut wire)
            .await
            .expect_err("truncated");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
