//! Batch manifests (`streams/{s}/log/{seq}.json`): `Manifest::from_json`,
//! what every reader of the stage calls on a manifest it fetched — decode
//! and validate — and what a validated manifest is then used for.
//!
//! Checks: no panic; a manifest that validates writes back to JSON that
//! reads as the same manifest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_stager::keys::StreamKeys;
use strata_stager::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    // The stream and seq a reader would fetch this manifest for: its own,
    // when it names valid ones, so that validation runs to the end.
    let (stream, seq) = serde_json::from_slice::<Manifest>(data).map_or(("main".to_owned(), 1), |m| (m.stream, m.seq));
    let keys = StreamKeys::new(&stream).or_else(|_| StreamKeys::new("main")).expect("main is a valid stream name");
    let Ok(m) = Manifest::from_json(&keys, seq, data) else { return };
    for f in &m.files {
        let key = f.key().expect("a validated manifest's file keys parse");
        let _ = StreamKeys::parse_data_file_seq(&key);
    }
    let _ = m.tables();
    let again = Manifest::from_json(&keys, seq, &m.to_json()).expect("a valid manifest round-trips");
    assert_eq!(again, m);
});
