//! Stage data files: `codec::decode_file`, `FileReader` and
//! `parquet_row_count` on arbitrary bytes, as writers and `strata-stage
//! verify` call them on a file fetched from the stage. They must return an
//! error naming the file, never panic, and never allocate without bound
//! (libFuzzer's `-rss_limit_mb` and `-malloc_limit_mb` catch that).
//!
//! A panic inside the Parquet reader that the codec's guard contains (it
//! becomes `Corrupt`, as in production) is handled, not a finding; one that
//! reaches this target is. libfuzzer-sys's panic hook aborts on every panic,
//! caught or not, so `init` replaces it with one that only remembers the
//! message, and the target aborts, with that message, on a panic that got
//! out.
#![no_main]

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use object_store::path::Path;
use strata_stager::codec::{FileReader, decode_file, parquet_row_count};

thread_local! {
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

fuzz_target!(
    init: std::panic::set_hook(Box::new(|info| LAST_PANIC.with(|last| *last.borrow_mut() = info.to_string()))),
    |data: &[u8]| {
        if catch_unwind(AssertUnwindSafe(|| run(data))).is_err() {
            eprintln!("a panic got past the guard: {}", LAST_PANIC.with(|last| last.borrow().clone()));
            std::process::abort();
        }
    }
);

fn run(data: &[u8]) {
    let path = Path::from("streams/main/tables/public.fuzz/2026-01-01/00/00000000000000000001-0.parquet");
    let bytes = Bytes::copy_from_slice(data);
    let _ = parquet_row_count(&path, bytes.clone());
    let _ = decode_file(&path, bytes.clone());
    if let Ok(mut reader) = FileReader::open(&path, bytes, 2) {
        while let Ok(Some(_)) = reader.next_chunk() {}
    }
}
