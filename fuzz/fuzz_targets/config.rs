//! `strata.toml`: `Config::from_toml`, the pure part of `Config::load`
//! that `strata-reader`, `strata-writer` and `strata-stage` run at start,
//! with `${VAR}` expansion and `STRATA_<SECTION>__<KEY>` overrides.
//!
//! Input: the TOML text, then optionally a NUL byte and the environment as
//! `NAME=value` lines. Inputs that reference `${file:…}` are skipped: that
//! reads a file the operator names, which is no input to fuzz (and
//! `/dev/stdin` would block).
//! Checks: no panic; a config that loads prints (Debug, secrets redacted).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_common::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else { return };
    if input.contains("file:") {
        return;
    }
    let (text, env) = input.split_once('\0').unwrap_or((input, ""));
    let env: Vec<(String, String)> = env.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    if let Ok(config) = Config::from_toml("fuzz.toml", text, &env) {
        let _ = format!("{config:?}");
        assert!(config.problems().is_empty(), "a loaded config has no problems");
    }
});
