//! The files destination: changes written as Parquet (the stage's own row
//! format: metadata columns, then the table's) or JSON Lines (envelopes) to
//! any object_store URL — a local path, another bucket.
//!
//! ```text
//! {url}/{schema}.{table}/{YYYY-MM-DD}/{HH}/{first seq:020}[-p{file:04}-{chunk:04}]-v{version:04}.parquet|jsonl
//! ```
//!
//! - Foldered by table and by the commit time of a file's first change, so
//!   DuckDB, pyarrow or Spark read a table's folder directly; the time
//!   folders are plain (`2026-11-20/10`), as in the stage, so no Hive
//!   partition key ever shadows a user column.
//! - Roll-up: consecutive staged batches are gathered into one file per
//!   table until `roll_up_rows` rows (or 32 MiB of staged files), or until
//!   the oldest has waited `roll_up_secs` — a busy stream does not make a
//!   file per batch.
//! - Parquet without transforms: the staged files are the destination's
//!   format already, so they are not decoded. A group's files of one table
//!   are joined row group by row group, their encoded column chunks copied
//!   as they are ([`strata_stager::splice`]); a replay's first batch cut
//!   inside by its time is decoded, as are batches with transforms.
//! - File names come from the first seq of the group. A writer killed after
//!   writing a group but before moving its cursor gathers again from that
//!   same seq, so the files are overwritten, never duplicated: the group
//!   boundaries depend only on the staged batches (row counts), or end
//!   later when more was staged meanwhile, and a longer group holds the
//!   shorter one's rows.
//! - A batch too large to hold at once (a huge transaction) is never rolled
//!   up: it is written part by part, a file per chunk of a staged data file
//!   (`-p{file}-{chunk}`), so the writer holds one chunk at a time.

pub mod config;
pub mod retry;
pub mod sink;

pub use sink::FilesSink;
