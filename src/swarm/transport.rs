//! The transport: TCP (nodelay) -> byte counting -> (pnet) -> Noise -> Yamux.
//!
//! Built by hand rather than with `SwarmBuilder::with_tcp` because two things
//! must sit between TCP and Noise: a counter of the bytes that really cross
//! the wire, and, when the swarm has a key, the pnet pre-shared-key layer, so
//! that a node without the key cannot even complete the Noise handshake.
//! QUIC is left out on purpose: pnet cannot protect it, and on a LAN
//! TCP+Yamux is as fast.

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
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::{PeerId, noise, tcp, yamux};

use super::SwarmError;
use super::stats::{Stats, add};

/// How long dialling plus the whole handshake (pnet, Noise, Yamux) may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the boxed transport every connection of this node goes through.
pub(super) fn build(
    keypair: &Keypair,
    psk: Option<[u8; 32]>,
    stats: Arc<Stats>,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, SwarmError> {
    let counted = tcp::tokio::Transport::new(tcp::Config::new().nodelay(true))
        .map(move |stream, _| CountingStream::new(stream, stats.clone()));
    let noise = noise::Config::new(keypair).map_err(SwarmError::Noise)?;
    let yamux = yamux::Config::default();
    let transport = match psk {
        Some(key) => {
            let pnet = PnetConfig::new(PreSharedKey::new(key));
            counted
                .and_then(move |socket, _| pnet.handshake(socket))
                .upgrade(Version::V1)
                .authenticate(noise)
                .multiplex(yamux)
                .timeout(HANDSHAKE_TIMEOUT)
                .boxed()
        }
        None => counted
            .upgrade(Version::V1)
            .authenticate(noise)
            .multiplex(yamux)
            .timeout(HANDSHAKE_TIMEOUT)
            .boxed(),
    };
    Ok(transport)
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
