//! The transport: TCP (nodelay) -> byte counting -> Noise -> Yamux.
//!
//! Built by hand rather than with `SwarmBuilder::with_tcp` because a counter
//! of the bytes that really cross the wire must sit between TCP and Noise.
//!
//! A swarm key keeps outsiders out through Noise's *prologue*: both sides mix
//! a value derived from the key into the handshake hash, and every
//! handshake message after the first is authenticated with that hash, so a
//! node without the same key cannot complete the handshake (and cannot
//! forge a message that passes: the value is 256 bits it does not have).
//! libp2p's pnet layer did the same job by wrapping TCP in a second cipher,
//! a software XSalsa20 that cost ~30 % of the machine in a 1 GiB transfer
//! on top of Noise's own ChaCha20-Poly1305 (BENCHMARKS.md); after the
//! handshake, Noise alone already encrypts and authenticates every byte.
//! What pnet hid and the prologue does not: an outsider that dials a node
//! sees libp2p's protocol negotiation in the clear and can learn the node's
//! peer id, which mDNS announces on the LAN anyway.
//! QUIC is left out: on a LAN TCP+Yamux is as fast, and one transport is
//! one set of timeouts to get right.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::io::{AsyncRead, AsyncWrite, IoSlice};
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, Transport};
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::{PeerId, noise, tcp, yamux};

use super::SwarmError;
use super::stats::{Stats, add};

/// How long dialling plus the whole handshake (Noise, Yamux) may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the boxed transport every connection of this node goes through.
pub(super) fn build(
    keypair: &Keypair,
    psk: Option<[u8; 32]>,
    stats: Arc<Stats>,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, SwarmError> {
    let counted = tcp::tokio::Transport::new(tcp::Config::new().nodelay(true))
        .map(move |stream, _| CountingStream::new(stream, stats.clone()));
    let noise = noise::Config::new(keypair)
        .map_err(SwarmError::Noise)?
        .with_prologue(prologue(psk.as_ref()));
    Ok(counted
        .upgrade(Version::V1)
        .authenticate(noise)
        .multiplex(yamux::Config::default())
        .timeout(HANDSHAKE_TIMEOUT)
        .boxed())
}

/// The Noise prologue for a swarm key: empty without one (libp2p's default,
/// so keyless nodes talk to any keyless libp2p node), else a value derived
/// from the key, never the key itself.
fn prologue(psk: Option<&[u8; 32]>) -> Vec<u8> {
    match psk {
        Some(key) => {
            blake3::derive_key("renderswarm 2026-12 swarm key noise prologue", key).to_vec()
        }
        None => Vec::new(),
    }
}

/// A stream that adds every byte it reads or writes to the node's [`Stats`].
pub(super) struct CountingStream<S> {
    inner: S,
    stats: Arc<Stats>,
}

impl<S> CountingStream<S> {
    pub(super) fn new(inner: S, stats: Arc<Stats>) -> Self {
        Self { inner, stats }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CountingStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = &result {
            add(&this.stats.bytes_in, *n);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountingStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &result {
            add(&this.stats.bytes_out, *n);
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &result {
            add(&this.stats.bytes_out, *n);
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::{AsyncReadExt, AsyncWriteExt, Cursor};

    #[test]
    fn a_swarm_key_becomes_a_prologue_that_is_not_the_key() {
        assert!(prologue(None).is_empty());
        let a = prologue(Some(&[7; 32]));
        assert_eq!(a.len(), 32);
        assert_ne!(a, vec![7u8; 32]);
        assert_eq!(a, prologue(Some(&[7; 32])));
        assert_ne!(a, prologue(Some(&[8; 32])));
    }

    #[tokio::test]
    async fn counting_stream_counts_both_directions() {
        let stats = Arc::new(Stats::default());
        let mut stream = CountingStream::new(Cursor::new(vec![7u8; 10]), stats.clone());
        let mut buf = [0u8; 4];
        stream
            .read_exact(&mut buf)
            .await
            .expect("read 4 of 10 bytes");
        stream.write_all(b"hello").await.expect("write to a cursor");
        let s = stats.snapshot();
        assert_eq!(s.bytes_in, 4);
        assert_eq!(s.bytes_out, 5);
    }
}
