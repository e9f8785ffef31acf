//! `Manifest::parse` on any UTF-8 text. It must never panic, and whatever
//! it accepts must survive a round trip: `to_toml` parses back to an equal
//! manifest, and writing that one gives the same bytes (the agent keeps
//! the re-serialized manifest in every release and `agent verify` reads it).
#![no_main]

use berth_core::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(manifest) = Manifest::parse(text) else {
        return;
    };
    let written = manifest.to_toml();
    let back = match Manifest::parse(&written) {
        Ok(back) => back,
        Err(e) => panic!("to_toml wrote a manifest that does not parse: {e}\n{written}"),
    };
    assert_eq!(back, manifest, "to_toml does not round-trip:\n{written}");
    assert_eq!(back.to_toml(), written, "to_toml is not stable");
});
