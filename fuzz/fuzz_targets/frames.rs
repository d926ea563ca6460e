//! The request-response frame reader (`swarm::codec`): the first code that
//! touches a peer's bytes, before any message decoder. The input is split
//! into a read pattern and a stream: the first byte picks the limit (the
//! real protocols' limits, and small ones that the fuzzer can cross) and how
//! many bytes each read returns (a peer's bytes arrive in any pieces), the
//! rest is the stream, read frame after frame until it ends or is refused.
//! A frame read must be exactly its declared length and within the limit.

#![no_main]

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::io::AsyncRead;
use libfuzzer_sys::fuzz_target;
use renderswarm::node::wire;
use renderswarm::swarm::read_frame;

/// A stream that hands out at most `step` bytes per read.
struct Trickle<'a> {
    rest: &'a [u8],
    step: usize,
}

impl AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = buf.len().min(self.step).min(self.rest.len());
        buf[..n].copy_from_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        Poll::Ready(Ok(n))
    }
}

const LIMITS: [usize; 8] = [
    0,
    1,
    16,
    300,
    wire::MAX_CHUNK_REQUEST,
    wire::MAX_CHUNK_REPLY,
    wire::MAX_SYNC_REQUEST,
    wire::MAX_SYNC_REPLY,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pattern, stream)) = data.split_first() else {
        return;
    };
    let limit = LIMITS[usize::from(pattern & 7)];
    let step = usize::from(pattern >> 3) + 1;
    let mut io = Trickle { rest: stream, step };
    let mut consumed = 0;
    futures::executor::block_on(async {
        while !io.rest.is_empty() {
            let Ok(frame) = read_frame(&mut io, limit).await else {
                break;
            };
            assert!(frame.len() <= limit);
            let declared = u32::from_be_bytes(
                stream[consumed..consumed + 4]
                    .try_into()
                    .expect("four bytes"),
            );
            assert_eq!(frame.len(), declared as usize);
            assert_eq!(frame, stream[consumed + 4..consumed + 4 + frame.len()]);
            consumed += 4 + frame.len();
        }
    });
});
