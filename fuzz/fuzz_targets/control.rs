//! Control objects in the stage, each read as `Stage::get_json` reads it
//! (`serde_json::from_slice` into the object's type) and then checked as
//! its reader checks it: destination specs (`validate`, as the writer's
//! `control::read`), cursors, leases and the statuses they carry, replay
//! and backfill requests, snapshot state, retention and the control signal.
//!
//! Every input is tried as every object, so seeds are the objects as
//! stored. Checks: no panic; an object that reads writes back to JSON that
//! reads as the same object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use strata_common::Timestamp;
use strata_stager::control::{BackfillRequest, ReaderStatus, ReplayRequest, SnapshotState, WorkerStatus, lease_status};
use strata_stager::cursor::Cursor;
use strata_stager::lease::{Lease, is_dead_local_holder};
use strata_stager::log::Retention;
use strata_stager::signal::Signal;
use strata_writer::spec::DestinationSpec;

/// What `Stage::get_json` does with an object's bytes.
fn read<T: DeserializeOwned>(data: &[u8]) -> Option<T> {
    serde_json::from_slice(data).ok()
}

/// Writing an object back (as `put_json_if` does) and reading it again
/// gives the same JSON.
fn round_trips<T: Serialize + DeserializeOwned>(value: &T) {
    let json = serde_json::to_vec_pretty(value).expect("control objects serialize");
    let again: T = serde_json::from_slice(&json).unwrap_or_else(|e| panic!("{} does not read back: {e}", String::from_utf8_lossy(&json)));
    assert_eq!(serde_json::to_value(&again).expect("serializes"), serde_json::to_value(value).expect("serializes"));
}

fuzz_target!(|data: &[u8]| {
    if let Some(spec) = read::<DestinationSpec>(data) {
        if spec.validate().is_ok() {
            let _ = spec.describe();
        }
        round_trips(&spec);
    }
    if let Some(cursor) = read::<Cursor>(data) {
        round_trips(&cursor);
    }
    if let Some(lease) = read::<Lease>(data) {
        let _ = lease.is_expired(Timestamp(0));
        let _ = is_dead_local_holder(&lease);
        let _ = lease_status::<ReaderStatus>(&lease);
        let _ = lease_status::<WorkerStatus>(&lease);
        round_trips(&lease);
    }
    if let Some(replay) = read::<ReplayRequest>(data) {
        let _ = replay.validate();
        round_trips(&replay);
    }
    if let Some(backfill) = read::<BackfillRequest>(data) {
        round_trips(&backfill);
    }
    if let Some(snapshot) = read::<SnapshotState>(data) {
        round_trips(&snapshot);
    }
    if let Some(retention) = read::<Retention>(data) {
        round_trips(&retention);
    }
    if let Some(signal) = read::<Signal>(data) {
        round_trips(&signal);
    }
});
