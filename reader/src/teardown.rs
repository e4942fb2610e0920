//! `strata-reader teardown`: removes strata from a source database, when
//! asked explicitly.
//!
//! The reader creates two objects in the source and never drops them
//! ([`crate::setup`]): the stream's logical replication slot, which holds
//! WAL back until it is dropped, and the publication, unless one exists.
//! Teardown drops those two and nothing else, under these rules:
//!
//! - **Only when confirmed.** Without `--yes` it prints what it would drop
//!   and exits 1, having dropped nothing, as `git clean` refuses without
//!   `-f`: a script that forgot the flag must not go on as if the slot were
//!   gone. `--dry-run` prints the same and exits 0.
//! - **Never under a running reader.** A streaming reader holds the slot
//!   (the error names the slot and the process); a reader between two
//!   connections does not, but holds the stream's lease in the stage.
//!   Either refuses the whole teardown: a reader that finds its slot gone
//!   creates a new one at the current WAL position, and the changes in
//!   between never reach the stage.
//! - **Only what is strata's.** The slot only if it is a pgoutput slot of
//!   this database (one of the same name elsewhere belongs to somebody
//!   else); the publication only if it carries the comment the reader
//!   writes when it creates one ([`publication_marker`]). A publication an
//!   administrator created, or one made before readers marked theirs, is
//!   kept, and the output gives the statement that drops it.
//! - **The stage is left alone.** It is the stream's history, which
//!   destinations may still replay; the output says where it is.
//! - **Idempotent.** With nothing left to drop it says so and exits 0.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use strata_common::Timestamp;
use strata_common::config::Config;
use strata_common::ident::quote_ident;
use strata_stager::Stage;
use strata_stager::keys::{StreamKeys, encode_name};
use strata_stager::lease::{Leases, is_dead_local_holder};
use tokio_postgres::error::SqlState;

use crate::setup::{SourceDb, publication_marker};

/// How far the operator has confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    /// `--yes`: drop what the plan lists.
    Yes,
    /// `--dry-run`: print the plan, drop nothing, exit 0.
    DryRun,
    /// Neither flag: print the plan, drop nothing, exit 1.
    Ask,
}

/// What teardown does with one object of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not in the database: nothing to do.
    Absent,
    /// Strata's, dropped when confirmed; `detail` says what it holds.
    Drop { detail: String },
    /// Present but not strata's to drop; `reason` says why and how to drop
    /// it by hand.
    Keep { reason: String },
}

impl Verdict {
    fn line(&self, what: &str, name: &str) -> String {
        match self {
            Verdict::Absent => format!("no {what} {name:?}: nothing to drop"),
            Verdict::Drop { detail } => format!("drop {what} {name:?} ({detail})"),
            Verdict::Keep { reason } => format!("keep {what} {name:?}: {reason}"),
        }
    }

    fn drops(&self) -> bool {
        matches!(self, Verdict::Drop { .. })
    }
}

/// Runs the command: prints the plan, and drops it when confirmed.
pub async fn teardown(config: &Config, confirm: Confirm) -> Result<ExitCode> {
    let source = config.source.as_ref().context("teardown needs the [source] section of the stream (source.url)")?;
    let (slot, publication) = (source.slot_name(), source.publication_name());
    let mut db = SourceDb::connect(source).await?;
    let database = db.database().await?;
    let slot_verdict = plan_slot(&db, &slot, &database).await?;
    check_no_reader_lease(config, &source.stream).await?;
    let publication_verdict = plan_publication(&db, &publication, &source.stream).await?;

    println!("teardown of stream {:?} in database {database:?}:", source.stream);
    println!("  {}", slot_verdict.line("replication slot", &slot));
    println!("  {}", publication_verdict.line("publication", &publication));
    println!("  keep the stage: the stream's history stays in {}", stream_location(config, &source.stream));
    if !slot_verdict.drops() && !publication_verdict.drops() {
        println!("nothing to drop");
        return Ok(ExitCode::SUCCESS);
    }
    match confirm {
        Confirm::Ask => bail!("not confirmed, nothing dropped: run `strata-reader teardown --yes` to drop what is listed above"),
        Confirm::DryRun => {
            println!("dry run: nothing dropped");
            return Ok(ExitCode::SUCCESS);
        }
        Confirm::Yes => {}
    }
    if slot_verdict.drops() {
        drop_slot(&db, &slot).await?;
        println!("dropped replication slot {slot:?}");
    }
    if publication_verdict.drops() {
        db.client().batch_execute(&format!("DROP PUBLICATION {}", quote_ident(&publication))).await.with_context(|| {
            format!("dropping publication {publication:?} (the role must own it){}", if slot_verdict.drops() { "; the slot is already dropped" } else { "" })
        })?;
        println!("dropped publication {publication:?}");
    }
    println!(
        "stream {:?} is finished: a reader started on it again refuses (a new slot could not return the changes committed since); \
         capture this database again under a new source.stream",
        source.stream
    );
    Ok(ExitCode::SUCCESS)
}

/// The slot's verdict; an active slot refuses the whole teardown.
async fn plan_slot(db: &SourceDb, name: &str, database: &str) -> Result<Verdict> {
    let row = db
        .client()
        .query_opt(
            "SELECT plugin::text, database::text, active_pid, restart_lsn::text, \
                    CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)) END \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&name],
        )
        .await
        .with_context(|| format!("looking up replication slot {name:?}"))?;
    let Some(row) = row else { return Ok(Verdict::Absent) };
    let (plugin, slot_db, active_pid): (Option<String>, Option<String>, Option<i32>) = (row.get(0), row.get(1), row.get(2));
    let (restart_lsn, retained): (Option<String>, Option<String>) = (row.get(3), row.get(4));
    if plugin.as_deref() != Some("pgoutput") || slot_db.as_deref() != Some(database) {
        return Ok(Verdict::Keep {
            reason: format!(
                "it is a {} slot of {}, not this stream's (pgoutput in {database:?})",
                plugin.as_deref().unwrap_or("physical"),
                slot_db.map_or_else(|| "no database".to_owned(), |d| format!("database {d:?}"))
            ),
        });
    }
    if let Some(pid) = active_pid {
        bail!(
            "replication slot {name:?} is active: process {pid} on the server holds it (a running strata-reader streams from it); \
             stop the reader, then run teardown again. Nothing dropped"
        );
    }
    let restart = restart_lsn.unwrap_or_else(|| "none".to_owned());
    Ok(Verdict::Drop { detail: format!("pgoutput, restart_lsn {restart}, holding {} of WAL", retained.as_deref().unwrap_or("an unknown amount")) })
}

/// The publication's verdict: dropped only if the reader created it for
/// this stream.
async fn plan_publication(db: &SourceDb, name: &str, stream: &str) -> Result<Verdict> {
    let row = db
        .client()
        .query_opt(
            "SELECT obj_description(p.oid, 'pg_publication'), (SELECT count(*) FROM pg_publication_tables t WHERE t.pubname = p.pubname) \
             FROM pg_publication p WHERE p.pubname = $1",
            &[&name],
        )
        .await
        .with_context(|| format!("looking up publication {name:?}"))?;
    let Some(row) = row else { return Ok(Verdict::Absent) };
    let (comment, tables): (Option<String>, i64) = (row.get(0), row.get(1));
    if comment.as_deref() == Some(publication_marker(stream).as_str()) {
        return Ok(Verdict::Drop { detail: format!("created by strata-reader for this stream, {tables} table{}", if tables == 1 { "" } else { "s" }) });
    }
    Ok(Verdict::Keep {
        reason: format!(
            "strata-reader did not create it for stream {stream:?} (its comment is not the reader's marker): \
             an administrator's, another stream's, or made before readers marked theirs; if nothing else uses it: DROP PUBLICATION {}",
            quote_ident(name)
        ),
    })
}

/// Refuses while a reader holds the stream's lease: one between two
/// connections holds no slot, but would create both objects again.
async fn check_no_reader_lease(config: &Config, stream: &str) -> Result<()> {
    let url = &config.stage.url;
    Stage::check_url(url, &config.stage.options).with_context(|| format!("stage.url {url}"))?;
    // The URL is valid, so opening fails only where a local stage directory
    // does not exist (as `strata-writer validate` reads it): no lease there.
    let Ok(stage) = Stage::open_existing(url, &config.stage.options) else { return Ok(()) };
    let key = StreamKeys::new(stream)?.reader();
    let lease = Leases::new(&stage, key.clone()).read().await.with_context(|| format!("reading the reader lease {key} in stage {url}"))?;
    if let Some(l) = lease.map(|l| l.value)
        && !l.holder.is_empty()
        && !l.is_expired(Timestamp::now())
        && !is_dead_local_holder(&l)
    {
        bail!(
            "a reader of stream {stream:?} holds its lease ({} in stage {url}: {}, until {}); \
             stop it and keep it stopped, then run teardown again. Nothing dropped",
            key,
            l.holder,
            l.expires_at
        );
    }
    Ok(())
}

async fn drop_slot(db: &SourceDb, name: &str) -> Result<()> {
    match db.client().execute("SELECT pg_drop_replication_slot($1)", &[&name]).await {
        Ok(_) => Ok(()),
        // A reader took the slot between the check and the drop.
        Err(e) if e.code() == Some(&SqlState::OBJECT_IN_USE) => {
            let why = e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_owned());
            bail!("replication slot {name:?} became active while tearing down ({why}); stop the reader, then run teardown again. Nothing dropped")
        }
        Err(e) => Err(e).with_context(|| format!("dropping replication slot {name:?} (the role needs REPLICATION)")),
    }
}

/// Where the stream's history is, for the operator.
fn stream_location(config: &Config, stream: &str) -> String {
    format!("{}/streams/{}/", config.stage.url.trim_end_matches('/'), encode_name(stream))
}
