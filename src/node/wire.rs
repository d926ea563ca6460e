//! The messages nodes exchange, and their limits.
//!
//! The swarm layer moves bytes; these are the bytes. Each message is
//! encoded with [`crate::codec`] (a version byte, then postcard) and every
//! decode has an explicit size limit, so nothing from the network can
//! allocate more than its limit or panic the node.
//!
//! - gossip `renderswarm/ledger/v1`: a [`DeltaMsg`], a change to one job;
//! - gossip `renderswarm/heartbeat/v1`: a [`Heartbeat`];
//! - request `/renderswarm/sync/1`: [`SyncRequest`] -> [`SyncReply`]:
//!   digest exchange, then full records for the jobs that differ, both ways;
//! - request `/renderswarm/chunk/1`: [`ChunkRequest`] -> [`ChunkReply`]:
//!   chunks by hash (the receiver verifies every one);
//! - request `/renderswarm/have/1`: [`Have`] -> nothing: chunks of a blob
//!   the sender is fetching that it has got, for the other fetchers.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::peers::Heartbeat;
use crate::codec::{self, CodecError};
use crate::hash::Hash;
use crate::ledger::{AlertId, AlertRecord, JobId, JobRecord};

pub const TOPIC_LEDGER: &str = "renderswarm/ledger/v1";
pub const TOPIC_HEARTBEAT: &str = "renderswarm/heartbeat/v1";
pub const PROTO_SYNC: &str = "/renderswarm/sync/1";
pub const PROTO_CHUNK: &str = "/renderswarm/chunk/1";
pub const PROTO_HAVE: &str = "/renderswarm/have/1";
/// Benchmarks only (`--test-bench-protocol`): N bytes of nothing, the
/// baseline a chunk transfer is measured against.
pub const PROTO_BENCH: &str = "/renderswarm/bench/1";
/// The most one bench reply carries.
pub const MAX_BENCH_REPLY: usize = 4 << 20;

/// A gossiped delta or heartbeat.
pub const MAX_GOSSIP: usize = 1 << 20;
/// A sync request (a digest: 64 bytes per job).
pub const MAX_SYNC_REQUEST: usize = 64 << 20;
/// A sync reply (whole records).
pub const MAX_SYNC_REPLY: usize = 256 << 20;
/// Records per sync reply or push; the rest comes in the next round.
pub const SYNC_BATCH_BYTES: usize = 32 << 20;
/// Hashes asked for in one chunk request.
pub const MAX_CHUNKS_PER_REQUEST: usize = 64;
/// A chunk request.
pub const MAX_CHUNK_REQUEST: usize = 64 * 40 + 64;
/// A chunk reply: a few chunks of at most 4 MiB, or many small manifests.
pub const MAX_CHUNK_REPLY: usize = 20 << 20;
/// Bytes of chunk data one reply carries before it stops (the rest are
/// answered as not sent, and asked for again).
pub const CHUNK_REPLY_BUDGET: usize = 16 << 20;

/// Hashes told of in one have message.
pub const MAX_HAVE_HASHES: usize = 1024;
/// A have message.
pub const MAX_HAVE: usize = MAX_HAVE_HASHES * 32 + 64;
pub const HAVE_TIMEOUT: Duration = Duration::from_secs(10);

pub const SYNC_TIMEOUT: Duration = Duration::from_secs(60);
pub const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

/// A change to one job or one alert, as gossiped.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum DeltaMsg {
    Job {
        job: JobId,
        record: JobRecord,
    },
    Alert {
        id: AlertId,
        record: AlertRecord,
    },
    /// A job's delta with the manifests of the outputs its Dones name, so
    /// a receiver checks those outputs exist without asking the renderer
    /// for each manifest. Last, so the variants above keep their tags and
    /// their bytes.
    JobWithManifests {
        job: JobId,
        record: JobRecord,
        manifests: Vec<serde_bytes::ByteBuf>,
    },
}

/// The most manifest bytes one gossiped delta carries; a Done with more
/// (thousands of frames in one task) goes without, and receivers ask for
/// its manifests instead.
pub const MAX_INLINE_MANIFESTS: usize = MAX_GOSSIP / 4;

/// A sync request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum SyncRequest {
    /// "These are the jobs and alerts I hold and their hashes."
    Digest {
        jobs: BTreeMap<JobId, Hash>,
        alerts: BTreeMap<AlertId, Hash>,
    },
    /// "Here are the records you asked for."
    Push {
        jobs: Vec<(JobId, JobRecord)>,
        alerts: Vec<(AlertId, AlertRecord)>,
    },
}

/// A sync reply.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum SyncReply {
    /// My records you lack or hold differently, and the ids of those I lack
    /// or hold differently (push me yours). `more`: the batch was cut
    /// short; sync again.
    Diff {
        jobs: Vec<(JobId, JobRecord)>,
        alerts: Vec<(AlertId, AlertRecord)>,
        want_jobs: Vec<JobId>,
        want_alerts: Vec<AlertId>,
        more: bool,
    },
    Ack,
}

/// Chunks wanted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChunkRequest {
    pub hashes: Vec<Hash>,
}

/// Chunks the sender has got of a blob it is fetching (and serves).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Have {
    pub hashes: Vec<Hash>,
}

/// Chunks sent, in the order asked; `None` for one not held (or not sent
/// because the reply was full). Borrowed from the message it was decoded
/// from: a received chunk is verified and written from the reply itself,
/// never copied out of it first. A source writes its replies with
/// [`ChunkReplyWriter`] instead, which reads each chunk into place.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChunkReply<'a> {
    #[serde(borrow, with = "chunk_bytes")]
    pub chunks: Vec<Option<&'a [u8]>>,
}

/// A chunk's bytes as one byte string rather than a sequence of numbers.
/// Postcard writes the same bytes on the wire either way (a length, then
/// the bytes), but serde then copies a chunk at once instead of visiting
/// each of its bytes, which was 6 % of all CPU in the transfer benchmark,
/// and decoding can borrow it.
mod chunk_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::Bytes;

    pub fn serialize<S: Serializer>(chunks: &[Option<&[u8]>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(chunks.iter().map(|c| c.map(Bytes::new)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<Option<&'de [u8]>>, D::Error> {
        Deserialize::deserialize(d)
    }
}

/// A [`ChunkReply`] written straight into its message: the encoding of
/// `encode(&ChunkReply { .. })`, byte for byte, with each chunk's bytes
/// appended in place by the caller (read from the store into the reply),
/// so a served chunk is not copied once more into the message.
pub struct ChunkReplyWriter {
    buf: Vec<u8>,
}

impl ChunkReplyWriter {
    /// A reply to a request for `count` chunks, with room for `capacity`
    /// bytes of them.
    pub fn new(count: usize, capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity + 16 + 6 * count);
        buf.push(codec::VERSION);
        push_varint(&mut buf, count);
        ChunkReplyWriter { buf }
    }

    /// The next chunk is not sent.
    pub fn none(&mut self) {
        self.buf.push(0);
    }

    /// The next chunk is `len` bytes that `fill` appends to the buffer it
    /// is given; if `fill` fails, the chunk is sent as not held instead.
    pub fn chunk<E>(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mark = self.buf.len();
        self.buf.push(1);
        push_varint(&mut self.buf, len);
        let body = self.buf.len();
        match fill(&mut self.buf) {
            Ok(()) if self.buf.len() - body == len => Ok(()),
            Ok(()) => {
                // A caller bug, not a peer's: never send a malformed reply.
                debug_assert!(
                    false,
                    "a chunk of {len} bytes was filled with {}",
                    self.buf.len() - body
                );
                self.buf.truncate(mark);
                self.none();
                Ok(())
            }
            Err(e) => {
                self.buf.truncate(mark);
                self.none();
                Err(e)
            }
        }
    }

    /// The encoded message.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Postcard's length prefix: 7 bits a byte, least significant first.
fn push_varint(buf: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        buf.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    codec::encode(v)
}

pub fn decode_delta(b: &[u8]) -> Result<DeltaMsg, CodecError> {
    codec::decode(b, MAX_GOSSIP)
}

/// A heartbeat of another version reads too, so a studio can upgrade its
/// nodes one at a time without each seeing the others dead: fields a later
/// version added at the end are ignored, and fields added since sleep are
/// read as absent from an earlier node's (see `peers::absent_is_none`).
/// This holds from the version that added sleep on: nodes before it refuse
/// any heartbeat longer than theirs, and gossipsub then stops relaying
/// between the two (a mixed swarm of those sees each other dead).
pub fn decode_heartbeat(b: &[u8]) -> Result<Heartbeat, CodecError> {
    codec::decode_front(b, MAX_GOSSIP)
}

pub fn decode_sync_request(b: &[u8]) -> Result<SyncRequest, CodecError> {
    codec::decode(b, MAX_SYNC_REQUEST)
}

pub fn decode_sync_reply(b: &[u8]) -> Result<SyncReply, CodecError> {
    codec::decode(b, MAX_SYNC_REPLY)
}

pub fn decode_chunk_request(b: &[u8]) -> Result<ChunkRequest, CodecError> {
    let req: ChunkRequest = codec::decode(b, MAX_CHUNK_REQUEST)?;
    at_most(req.hashes.len(), MAX_CHUNKS_PER_REQUEST)?;
    Ok(req)
}

pub fn decode_have(b: &[u8]) -> Result<Have, CodecError> {
    let have: Have = codec::decode(b, MAX_HAVE)?;
    at_most(have.hashes.len(), MAX_HAVE_HASHES)?;
    Ok(have)
}

/// A message's list of `len` hashes is refused past `limit`.
fn at_most(len: usize, limit: usize) -> Result<(), CodecError> {
    if len > limit {
        return Err(CodecError::TooLarge { len, limit });
    }
    Ok(())
}

pub fn decode_chunk_reply(b: &[u8]) -> Result<ChunkReply<'_>, CodecError> {
    codec::decode_borrowed(b, MAX_CHUNK_REPLY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_never_decodes_into_a_message() {
        let mut seed = 1u64;
        for len in [0usize, 1, 2, 7, 64, 1000] {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 33) as u8
                })
                .collect();
            // Any outcome but a panic is fine; most must be errors.
            let _ = decode_delta(&bytes);
            let _ = decode_heartbeat(&bytes);
            let _ = decode_sync_request(&bytes);
            let _ = decode_sync_reply(&bytes);
            let _ = decode_chunk_request(&bytes);
            let _ = decode_chunk_reply(&bytes);
            let _ = decode_have(&bytes);
        }
    }

    #[test]
    fn chunk_replies_keep_the_wire_format_of_a_plain_sequence() {
        // What nodes before the byte-string encoding sent and expect.
        #[derive(Serialize)]
        struct Plain {
            chunks: Vec<Option<Vec<u8>>>,
        }
        let chunks: Vec<Option<Vec<u8>>> = vec![Some(vec![1, 2, 3, 250]), None, Some(Vec::new())];
        let borrowed: Vec<Option<&[u8]>> = chunks.iter().map(Option::as_deref).collect();
        let sent = encode(&ChunkReply {
            chunks: borrowed.clone(),
        });
        assert_eq!(decode_chunk_reply(&sent).unwrap().chunks, borrowed);
        assert_eq!(sent, encode(&Plain { chunks }));
    }

    #[test]
    fn a_written_reply_is_the_encoded_reply() {
        // Lengths either side of each varint byte boundary.
        let sizes = [0usize, 1, 127, 128, 16_383, 16_384, (1 << 21) + 5];
        let chunks: Vec<Option<Vec<u8>>> = sizes
            .iter()
            .flat_map(|&n| [Some((0..n).map(|i| i as u8).collect()), None])
            .collect();
        let mut w = ChunkReplyWriter::new(chunks.len() + 1, 0);
        for c in &chunks {
            match c {
                Some(c) => w
                    .chunk(c.len(), |buf| {
                        buf.extend_from_slice(c);
                        Ok::<(), ()>(())
                    })
                    .unwrap(),
                None => w.none(),
            }
        }
        // A chunk that cannot be read goes out as not held.
        assert_eq!(
            w.chunk(10, |buf| {
                buf.extend_from_slice(b"half");
                Err("unreadable")
            }),
            Err("unreadable")
        );
        let written = w.finish();
        let mut expected: Vec<Option<&[u8]>> = chunks.iter().map(Option::as_deref).collect();
        expected.push(None);
        assert!(
            written
                == encode(&ChunkReply {
                    chunks: expected.clone()
                }),
            "the writer must produce the encoder's bytes"
        );
        assert_eq!(decode_chunk_reply(&written).unwrap().chunks, expected);
    }

    #[test]
    fn job_deltas_keep_their_bytes_and_manifests_ride_along() {
        // The message as it was before manifests rode along.
        #[derive(Serialize)]
        enum Before {
            Job { job: JobId, record: JobRecord },
        }
        let frames = crate::ledger::FrameRange {
            start: 1,
            end: 4,
            step: 1,
        };
        let record = JobRecord::new(crate::ledger::types::tests::spec(frames, 1));
        let job = crate::ledger::job_id(&record.spec);
        let now = encode(&DeltaMsg::Job {
            job,
            record: record.clone(),
        });
        assert_eq!(
            now,
            encode(&Before::Job {
                job,
                record: record.clone()
            })
        );
        let manifests = vec![serde_bytes::ByteBuf::from(vec![1, 2, 3])];
        let with = encode(&DeltaMsg::JobWithManifests {
            job,
            record: record.clone(),
            manifests: manifests.clone(),
        });
        match decode_delta(&with).unwrap() {
            DeltaMsg::JobWithManifests {
                job: j,
                record: r,
                manifests: m,
            } => assert_eq!((j, r, m), (job, record, manifests)),
            other => panic!("decoded as {other:?}"),
        }
    }

    #[test]
    fn oversized_messages_are_refused_before_decoding() {
        let big = vec![crate::codec::VERSION; MAX_GOSSIP + 1];
        assert!(matches!(
            decode_delta(&big),
            Err(CodecError::TooLarge { .. })
        ));
        let many = ChunkRequest {
            hashes: vec![Hash::default(); MAX_CHUNKS_PER_REQUEST + 1],
        };
        assert!(decode_chunk_request(&encode(&many)).is_err());
        let told = Have {
            hashes: vec![Hash::default(); MAX_HAVE_HASHES],
        };
        assert_eq!(
            decode_have(&encode(&told)).unwrap().hashes.len(),
            MAX_HAVE_HASHES
        );
        let too_many = Have {
            hashes: vec![Hash::default(); MAX_HAVE_HASHES + 1],
        };
        assert!(decode_have(&encode(&too_many)).is_err());
    }
}
