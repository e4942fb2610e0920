//! Destinations as code: `declare::parse` on a destinations file, then
//! `declare::apply` with `--dry-run` on an empty stage — what `strata-writer
//! destination apply -f FILE --dry-run` runs: every declared spec built and
//! validated (names, stream, start, schedule, transforms, destination kind
//! and URL), nothing written.
//!
//! Inputs that reference `${file:…}` are skipped (see the config target).
//! Checks: no panic; a file that parses exports back to TOML that parses.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use strata_stager::Stage;
use strata_writer::declare::{apply, parse};

struct Empty {
    _dir: std::path::PathBuf,
    stage: Stage,
    runtime: tokio::runtime::Runtime,
}

static EMPTY: LazyLock<Empty> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("strata-fuzz-destinations-{}", std::process::id()));
    let stage = Stage::local(&dir).expect("a local stage in the temp dir");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    Empty { _dir: dir, stage, runtime }
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if text.contains("file:") {
        return;
    }
    let Ok(file) = parse("fuzz.toml", text) else { return };
    let exported = toml::to_string_pretty(&file).expect("a parsed file serializes");
    parse("exported.toml", &exported).unwrap_or_else(|e| panic!("{exported}\ndoes not parse back: {e:#}"));
    let e = &*EMPTY;
    let _ = e.runtime.block_on(apply(&e.stage, &file, false, true));
});
