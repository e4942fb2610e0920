//! `replay`: a staged backlog delivered again, from the earliest batch, into
//! a new files destination (Parquet on local disk), against the rate at
//! which strata-reader staged it.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use strata_stager::Stage;
use strata_writer::destinations::files::config::{FileFormat, FilesSpec};
use strata_writer::spec::{DestinationKind, StartPosition};

use super::{Args, Backlog, catchup_workload, peak_rss_mib, record, today, wait_delivered};
use crate::writer::spec_of;

pub async fn run(args: &Args) -> Result<()> {
    let rows = args.changes / 2;
    let changes = 2 * rows;
    let backlog = Backlog::new().await?;
    catchup_workload(&backlog.src, rows).await?;
    let (capture_secs, reader_mib) = backlog.stage_all(changes).await?;
    let batches = backlog.batches().await?;
    eprintln!("staged {changes} changes in {batches} batches in {capture_secs:.1} s");

    let files_dir = backlog.dir.path().join("files");
    // Nothing more will be staged, so a group of batches is written as soon
    // as no further batch is there: the default (wait up to 60 s after the
    // first batch was staged for more to join) would time the wait.
    let files = FilesSpec { roll_up_secs: 0, ..FilesSpec::new(format!("file://{}", files_dir.display()), FileFormat::Parquet) };
    strata_writer::control::add(&backlog.stage, &spec_of("files", StartPosition::Earliest, DestinationKind::Files(files)))
        .await
        .context("adding the files destination")?;
    let t0 = Instant::now();
    let writer = backlog.spawn("strata-writer-under-test")?;
    wait_delivered(&backlog.stage, "files", changes, Duration::from_secs(3600)).await?;
    let replay_secs = t0.elapsed().as_secs_f64();
    let writer_mib = peak_rss_mib(&writer)?;
    writer.terminate().context("stopping the writer")?;

    let (file_count, held) = count_changes(&files_dir).await?;
    if held != changes {
        bail!("the files destination holds {held} changes of {changes}");
    }
    let (replay_rate, capture_rate) = (changes as f64 / replay_secs, changes as f64 / capture_secs);
    let line = format!(
        "| {} | replay into files | {changes} changes (inserts then updates, 10,000-row transactions), {batches} batches | strata-writer to Parquet files {replay_secs:.1} s ({replay_rate:.0}/s; {file_count} files; peak RSS {writer_mib} MiB) | strata-reader staging the backlog {capture_secs:.1} s ({capture_rate:.0}/s; peak RSS {reader_mib} MiB) | **{:.2}×** |",
        today(),
        replay_rate / capture_rate
    );
    record(args.record.as_ref(), "replay into files", &line)
}

/// Decodes every Parquet file under `dir` (the files destination writes
/// the stage's own row format, one change per row) and returns (files,
/// changes); fails if a change, by LSN and ordinal, is in two files.
async fn count_changes(dir: &Path) -> Result<(u64, u64)> {
    let store = Stage::local(dir).with_context(|| format!("opening {}", dir.display()))?;
    let mut seen = HashSet::new();
    let mut files = 0;
    for object in store.list(&object_store::path::Path::from("")).await.with_context(|| format!("listing {}", dir.display()))? {
        if object.location.extension() != Some("parquet") {
            continue;
        }
        let bytes = store.get(&object.location).await.with_context(|| format!("reading {}", object.location))?;
        let file = strata_stager::codec::decode_file(&object.location, bytes).with_context(|| format!("decoding {}", object.location))?;
        for c in &file.changes {
            if !seen.insert((c.lsn, c.ord)) {
                bail!("change {}/{} is written twice (again in {})", c.lsn, c.ord, object.location);
            }
        }
        files += 1;
    }
    Ok((files, seen.len() as u64))
}
