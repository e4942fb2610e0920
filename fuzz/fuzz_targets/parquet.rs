//! Stage data files: `codec::decode_file`, `FileReader` and
//! `parquet_row_count` on arbitrary bytes, as writers and `strata-stage
//! verify` call them on a file fetched from the stage. They must return an
//! error naming the file, never panic, and never allocate without bound
//! (libFuzzer's `-rss_limit_mb` and `-malloc_limit_mb` catch that).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use object_store::path::Path;
use strata_stager::codec::{FileReader, decode_file, parquet_row_count};

fuzz_target!(|data: &[u8]| {
    let path = Path::from("streams/main/tables/public.fuzz/2026-01-01/00/00000000000000000001-0.parquet");
    let bytes = Bytes::copy_from_slice(data);
    let _ = parquet_row_count(&path, bytes.clone());
    let _ = decode_file(&path, bytes.clone());
    if let Ok(mut reader) = FileReader::open(&path, bytes, 2) {
        while let Ok(Some(_)) = reader.next_chunk() {}
    }
});
