//! What a node reads from a repository before trusting anything: a
//! channel index (`ChannelIndex::parse` on any bytes, for channel `stable`
//! and package `webapp`), and, on the same input as text, a signature and
//! a public key in minisign's formats. None may panic; an accepted index
//! round-trips through `to_json`, sorts (a comparison that is not a total
//! order can make `sort_by` panic) and finds its newest release; an
//! accepted signature or key round-trips through `to_text`.
#![no_main]

use berth_core::name::compare_releases;
use berth_core::repo::ChannelIndex;
use berth_core::sign::{PublicKey, Signature};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = ChannelIndex::parse(data, "stable", "webapp") {
        let json = index.to_json();
        let back = ChannelIndex::parse(&json, "stable", "webapp")
            .unwrap_or_else(|e| panic!("to_json wrote an index that does not parse: {e}"));
        assert_eq!(back, index, "to_json does not round-trip");
        let mut sorted = index.clone();
        sorted.sort();
        let key = |r: &berth_core::repo::ReleaseEntry| (r.version.clone(), r.build);
        for pair in sorted.releases.windows(2) {
            let (a, b) = (key(&pair[0]), key(&pair[1]));
            assert!(
                compare_releases((&a.0, a.1), (&b.0, b.1)).is_le(),
                "sorted out of order: {a:?} before {b:?}"
            );
        }
        if let Some(newest) = index.newest() {
            assert!(!newest.yanked);
            assert!(index.get(&newest.version, newest.build).is_some());
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(signature) = Signature::parse(text) {
        let written = signature.to_text();
        let back = Signature::parse(&written)
            .unwrap_or_else(|e| panic!("to_text wrote a signature that does not parse: {e}"));
        assert_eq!(
            back, signature,
            "a signature does not round-trip:\n{written}"
        );
    }
    if let Ok(key) = PublicKey::parse(text) {
        let back = PublicKey::parse(&key.to_text())
            .unwrap_or_else(|e| panic!("to_text wrote a key that does not parse: {e}"));
        assert_eq!(back, key, "a public key does not round-trip");
    }
});
