//! Chunks: every byte string is tried as a chunk request (hashes a peer
//! wants from us) and as a chunk reply (chunks a peer sends us), the two
//! messages of `/renderswarm/chunk/1`, and as a tell of chunks a peer has
//! (`/renderswarm/have/1`). A reply's chunks are hashed as the
//! store verifies them and, since manifests travel as chunks, decoded as a
//! manifest too; one that decodes must re-encode to the same bytes, because
//! a blob is named by the hash of its manifest's bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use renderswarm::hash::Hash;
use renderswarm::node::wire::{self, MAX_CHUNKS_PER_REQUEST};
use renderswarm::store::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = wire::decode_chunk_request(data) {
        assert!(req.hashes.len() <= MAX_CHUNKS_PER_REQUEST);
    }
    if let Ok(have) = wire::decode_have(data) {
        assert!(have.hashes.len() <= wire::MAX_HAVE_HASHES);
    }
    if let Ok(reply) = wire::decode_chunk_reply(data) {
        for chunk in reply.chunks.iter().flatten() {
            let _ = Hash::of(chunk);
            if let Ok(m) = Manifest::decode(chunk) {
                assert_eq!(&m.encode().expect("a decoded manifest encodes"), chunk);
            }
        }
    }
});
