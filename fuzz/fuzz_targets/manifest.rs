//! Manifests: `Manifest::decode` on any bytes, as a fetcher does with a
//! manifest chunk from a peer. One that decodes must pass its own
//! validation, re-encode to exactly the bytes it came from (a blob is named
//! by the hash of those bytes, so two encodings of one manifest would be two
//! blobs) and report a size that adds up.

#![no_main]

use libfuzzer_sys::fuzz_target;
use renderswarm::store::Manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Manifest::decode(data) else {
        return;
    };
    m.validate().expect("a decoded manifest is valid");
    let bytes = m.encode().expect("a decoded manifest encodes");
    assert_eq!(bytes, data, "a manifest has one encoding");
    assert_eq!(Manifest::decode(&bytes).as_ref(), Ok(&m));
    let _ = m.content_size();
});
