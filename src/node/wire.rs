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
//!   chunks by hash (the receiver verifies every one).

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

/// Chunks sent, in the order asked; `None` for one not held (or not sent
/// because the reply was full).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChunkReply {
    #[serde(with = "chunk_bytes")]
    pub chunks: Vec<Option<Vec<u8>>>,
}

/// A chunk's bytes as one byte string rather than a sequence of numbers.
/// Postcard writes the same bytes on the wire either way (a length, then
/// the bytes), but serde then copies a chunk at once instead of visiting
/// each of its bytes, which was 6 % of all CPU in the transfer benchmark.
mod chunk_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(chunks: &[Option<Vec<u8>>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(chunks.iter().map(|c| c.as_deref().map(Bytes::new)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Option<Vec<u8>>>, D::Error> {
        let chunks: Vec<Option<ByteBuf>> = Deserialize::deserialize(d)?;
        Ok(chunks
            .into_iter()
            .map(|c| c.map(ByteBuf::into_vec))
            .collect())
    }
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    codec::encode(v)
}

pub fn decode_delta(b: &[u8]) -> Result<DeltaMsg, CodecError> {
    codec::decode(b, MAX_GOSSIP)
}

pub fn decode_heartbeat(b: &[u8]) -> Result<Heartbeat, CodecError> {
    codec::decode(b, MAX_GOSSIP)
}

pub fn decode_sync_request(b: &[u8]) -> Result<SyncRequest, CodecError> {
    codec::decode(b, MAX_SYNC_REQUEST)
}

pub fn decode_sync_reply(b: &[u8]) -> Result<SyncReply, CodecError> {
    codec::decode(b, MAX_SYNC_REPLY)
}

pub fn decode_chunk_request(b: &[u8]) -> Result<ChunkRequest, CodecError> {
    let req: ChunkRequest = codec::decode(b, MAX_CHUNK_REQUEST)?;
    if req.hashes.len() > MAX_CHUNKS_PER_REQUEST {
        return Err(CodecError::TooLarge {
            len: req.hashes.len(),
            limit: MAX_CHUNKS_PER_REQUEST,
        });
    }
    Ok(req)
}

pub fn decode_chunk_reply(b: &[u8]) -> Result<ChunkReply, CodecError> {
    codec::decode(b, MAX_CHUNK_REPLY)
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
        }
    }

    #[test]
    fn chunk_replies_keep_the_wire_format_of_a_plain_sequence() {
        // What nodes before the byte-string encoding sent and expect.
        #[derive(Serialize)]
        struct Plain {
            chunks: Vec<Option<Vec<u8>>>,
        }
        let chunks = vec![Some(vec![1, 2, 3, 250]), None, Some(Vec::new())];
        let sent = encode(&ChunkReply {
            chunks: chunks.clone(),
        });
        assert_eq!(
            sent,
            encode(&Plain {
                chunks: chunks.clone()
            })
        );
        assert_eq!(decode_chunk_reply(&sent).unwrap().chunks, chunks);
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
    }
}
