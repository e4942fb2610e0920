//! Per-destination transforms (the `transforms` of a destination spec):
//! read as the spec reads them (`serde_json`), validated, and prepared
//! (the hash key resolved from the environment), as a worker does before
//! it delivers.
//!
//! Inputs that reference `${file:…}` are skipped (see the config target).
//! Checks: no panic; transforms that read write back to the same JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_writer::transform::Transforms;

fuzz_target!(|data: &[u8]| {
    if data.windows(5).any(|w| w == b"file:") {
        return;
    }
    let Ok(t) = serde_json::from_slice::<Transforms>(data) else { return };
    let json = serde_json::to_vec(&t).expect("transforms serialize");
    let again: Transforms = serde_json::from_slice(&json).expect("transforms read back");
    assert_eq!(again, t);
    if t.validate().is_ok() {
        let _ = t.prepare();
    }
});
