//! The Postgres destination: exactly-once delivery into PostgreSQL tables.
//!
//! Each batch is one destination transaction that locks the destination's
//! row in `strata.cursors`, skips the batch if that row says it is already
//! applied, applies the changes, and moves the row to the batch's seq. The
//! data and the position commit together, so a crash at any point leaves
//! either both or neither.
//!
//! Mirror mode keeps the same tables with the same rows. Per table and
//! batch the changes are compacted per key — the last change of a key wins
//! — then applied in bulk: deletes through one COPY'd temp table, upserts
//! through another, grouped by which columns are unchanged-TOAST so those
//! are never overwritten. A TRUNCATE applies in order between changes.
//! Tables without a usable key (no primary key, or REPLICA IDENTITY FULL)
//! are applied change by change, matching rows on their full old image.
//!
//! History mode appends every change to a table of the same name, after six
//! metadata columns (`_strata_op`, `_strata_lsn`, `_strata_ord`,
//! `_strata_xid`, `_strata_commit_ts`, `_strata_unchanged`) whose
//! `(_strata_lsn, _strata_ord)` primary key stores each change once: a
//! replay that re-delivers changes the table holds keeps the stored ones.
//!
//! A replay (`--from T`) onto a mirror re-applies the changes from T on:
//! upserts and deletes by key are idempotent, so a table with a key ends
//! equal to the source. A table without a key is applied by matching whole
//! rows and cannot tell a re-delivered insert from a new one, so the reset
//! records the seq the destination held (`strata.cursors.held_until`), and
//! such tables skip re-delivered batches up to it — rows and columns alike,
//! since they hold those changes already. A rebuild (`--as-of`) empties the
//! tables and clears the mark.

pub mod config;
mod copy;
mod mirror;
pub mod retry;
pub mod sink;

pub use sink::PostgresSink;
