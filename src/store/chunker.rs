//! Content-defined chunking of a stream, without copying chunks out.
//!
//! The cut points are FastCDC 2020's (`fastcdc::v2020::cut`, normalization
//! level 1, min 256 KiB / avg 1 MiB / max 4 MiB), identical to what
//! `fastcdc::v2020::StreamCDC` yields — a test holds the two together.
//! `StreamCDC` keeps a 4 MiB window and, for every chunk, copies the chunk
//! out and shifts the rest of the window down (about five bytes of memory
//! traffic per byte imported); it measured at half the speed of the bare cut
//! function. Here the stream is read in 8 MiB blocks shared behind an `Arc`:
//! a [`Chunk`] is a range of a block, handed to the writer threads as is,
//! and only the unfinished tail of a block (under 4 MiB) is copied into the
//! next one. Blocks are recycled once no chunk refers to them, so a long
//! import touches a few blocks' worth of fresh memory, not the whole file.

use std::io::{self, Read};
use std::ops::Deref;
use std::sync::Arc;

use fastcdc::v2020::{Normalization, cut, select_masks};

use super::manifest::{AVG_CHUNK_LEN, MAX_CHUNK_LEN, MIN_CHUNK_LEN};

/// Bytes read from the source at a time; at least twice the largest chunk.
const BLOCK_LEN: usize = 8 << 20;
/// First block when the stream's size is unknown: small streams (logs)
/// should not pay for zeroing a full block.
const FIRST_BLOCK_LEN: usize = 1 << 20;
/// Blocks kept for reuse.
const POOL_LEN: usize = 4;
const MIN: usize = MIN_CHUNK_LEN as usize;
const AVG: usize = AVG_CHUNK_LEN as usize;
const MAX: usize = MAX_CHUNK_LEN as usize;

/// One chunk: a range of a shared block.
pub(super) struct Chunk {
    block: Arc<Vec<u8>>,
    start: usize,
    end: usize,
}

impl Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.block.get(self.start..self.end).unwrap_or_default()
    }
}

/// Yields the chunks of `source` in order.
pub(super) struct Chunker<R> {
    source: R,
    block: Arc<Vec<u8>>,
    /// Start of the next chunk in `block`.
    pos: usize,
    /// Bytes of `block` holding data.
    filled: usize,
    eof: bool,
    pool: Vec<Arc<Vec<u8>>>,
    /// Length of the next block read.
    next_len: usize,
    masks: (u64, u64),
}

impl<R: Read> Chunker<R> {
    /// A chunker for `source`, whose length, if known, is `size_hint`.
    pub(super) fn new(source: R, size_hint: Option<u64>) -> Self {
        let first = size_hint.map_or(FIRST_BLOCK_LEN, |n| {
            usize::try_from(n).unwrap_or(BLOCK_LEN).saturating_add(1)
        });
        Chunker {
            source,
            block: Arc::new(Vec::new()),
            pos: 0,
            filled: 0,
            eof: false,
            pool: Vec::new(),
            next_len: first.min(BLOCK_LEN),
            masks: select_masks(AVG, Normalization::Level1),
        }
    }

    /// Moves the unfinished tail into a free block and fills it up.
    fn refill(&mut self) -> io::Result<()> {
        let tail = self.pos..self.filled;
        let mut next = self.free_block();
        let Some(buf) = Arc::get_mut(&mut next) else {
            return Err(io::Error::other("chunker block still shared"));
        };
        let len = std::mem::replace(&mut self.next_len, BLOCK_LEN).max(tail.len() + 1);
        buf.resize(len, 0);
        let mut filled = tail.len();
        if let (Some(dst), Some(src)) = (buf.get_mut(..filled), self.block.get(tail)) {
            dst.copy_from_slice(src);
        }
        while filled < len {
            match self.source.read(buf.get_mut(filled..).unwrap_or_default()) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.filled = filled;
        self.pos = 0;
        let old = std::mem::replace(&mut self.block, next);
        if self.pool.len() < POOL_LEN && !old.is_empty() {
            self.pool.push(old);
        }
        Ok(())
    }

    /// A block no chunk refers to any more, or a new one.
    fn free_block(&mut self) -> Arc<Vec<u8>> {
        match self.pool.iter().position(|b| Arc::strong_count(b) == 1) {
            Some(i) => self.pool.swap_remove(i),
            None => Arc::new(Vec::with_capacity(BLOCK_LEN)),
        }
    }
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = io::Result<Chunk>;

    fn next(&mut self) -> Option<io::Result<Chunk>> {
        loop {
            let remaining = self.filled - self.pos;
            // A cut needs `MAX` bytes of lookahead, or the end of the stream.
            if remaining >= MAX || (self.eof && remaining > 0) {
                let window = self.block.get(self.pos..self.filled).unwrap_or_default();
                let (mask_s, mask_l) = self.masks;
                let (_, len) = cut(
                    window,
                    MIN,
                    AVG,
                    MAX,
                    mask_s,
                    mask_l,
                    mask_s << 1,
                    mask_l << 1,
                );
                let len = len.clamp(1, remaining);
                let chunk = Chunk {
                    block: Arc::clone(&self.block),
                    start: self.pos,
                    end: self.pos + len,
                };
                self.pos += len;
                return Some(Ok(chunk));
            }
            if self.eof {
                return None;
            }
            if let Err(e) = self.refill() {
                self.eof = true;
                self.filled = self.pos;
                return Some(Err(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use fastcdc::v2020::StreamCDC;

    use super::super::tests::{KIB, MIB, random_bytes};
    use super::*;

    /// A reader that returns at most `step` bytes per call.
    struct Dribble<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step).min(self.data.len());
            let (head, rest) = self.data.split_at(n);
            buf[..n].copy_from_slice(head);
            self.data = rest;
            Ok(n)
        }
    }

    fn lengths(data: &[u8], step: usize, hint: Option<u64>) -> Vec<usize> {
        let chunks: Vec<Chunk> = Chunker::new(Dribble { data, step }, hint)
            .map(Result::unwrap)
            .collect();
        let mut joined = Vec::with_capacity(data.len());
        for c in &chunks {
            joined.extend_from_slice(c);
        }
        assert!(joined == data, "chunks must concatenate to the input");
        chunks.iter().map(|c| c.len()).collect()
    }

    #[test]
    fn same_cut_points_as_stream_cdc() {
        let mut inputs = vec![Vec::new(), vec![7u8], vec![0u8; 9 * MIB + 3]];
        for len in [
            256 * KIB - 1,
            256 * KIB + 1,
            4 * MIB,
            8 * MIB + 1,
            17 * MIB + 5,
        ] {
            inputs.push(random_bytes(&format!("cdc {len}"), len));
        }
        for data in &inputs {
            let expected: Vec<usize> = StreamCDC::new(&data[..], MIN, AVG, MAX)
                .map(|c| c.unwrap().length)
                .collect();
            let len = data.len() as u64;
            assert_eq!(
                lengths(data, usize::MAX, Some(len)),
                expected,
                "{len} bytes, whole reads"
            );
            assert_eq!(
                lengths(data, 999_983, None),
                expected,
                "{len} bytes, short reads"
            );
            assert_eq!(
                lengths(data, usize::MAX, Some(len / 3)),
                expected,
                "{len} bytes, wrong size hint"
            );
        }
    }

    #[test]
    fn read_errors_surface_once() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk gone"))
            }
        }
        let mut chunker = Chunker::new(Failing, None);
        assert!(chunker.next().unwrap().is_err());
        assert!(chunker.next().is_none());
    }
}
