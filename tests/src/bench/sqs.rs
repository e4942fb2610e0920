//! `sqs`: strata-writer (its own process) delivering a staged backlog into
//! an SQS queue of the emulator, against one `SendMessage` per change.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use strata_common::config::Config;
use strata_stager::Stage;
use strata_stager::log::StreamLog;
use strata_writer::spec::StartPosition;

use super::{Args, record, today, wait_staged_rows};
use crate::pg::{PgCluster, connect};
use crate::reader::{RunningReader, config_text, wait_for_slot};
use crate::writer::wait_caught_up;

/// The hidden `sqs-writer CONFIG` mode: strata-writer's service, run by
/// `sqs` as a child process so that its AWS settings come from its own
/// environment, as in production.
pub async fn sqs_writer(config: &std::path::Path) -> Result<()> {
    let cfg = Config::load(Some(config))?;
    strata_writer::run::run(&cfg, strata_common::service::shutdown_on_signals()).await
}

/// `sqs`: strata-writer into SQS against one `SendMessage` per change.
pub async fn run(args: &Args) -> Result<()> {
    use crate::emulator::Emulator;
    use crate::sqs::{Sqs, writer_env};
    use strata_writer::destinations::sqs::config::SqsSpec;
    use strata_writer::spec::DestinationKind;

    let cluster = PgCluster::start()?;
    let src_url = cluster.fresh_database().await?;
    let src = connect(&src_url).await?;
    src.batch_execute("CREATE TABLE orders (id bigint PRIMARY KEY, customer int, status text, amount numeric(10,2), at timestamptz)").await?;
    let dir = tempfile::tempdir()?;
    let stage_dir = dir.path().join("stage");
    let cfg = Config::from_toml("bench", &config_text(&src_url, &stage_dir, ""), &[])?;
    let reader = RunningReader::start(cfg);
    wait_for_slot(&src, "strata_main").await?;
    let inserts = args.changes - args.changes / 4;
    eprintln!("workload: {inserts} inserts, then {} updates, in 1,000-row transactions", args.changes - inserts);
    let mut lo = 1;
    while lo <= inserts {
        let hi = (lo + 999).min(inserts);
        src.batch_execute(&format!("INSERT INTO orders SELECT g, g % 5000, 'new', (g % 100000) / 100.0, now() FROM generate_series({lo}, {hi}) g")).await?;
        lo = hi + 1;
    }
    let mut lo = 1;
    while lo <= args.changes - inserts {
        let hi = (lo + 999).min(args.changes - inserts);
        src.batch_execute(&format!("UPDATE orders SET status = 'paid' WHERE id BETWEEN {lo} AND {hi}")).await?;
        lo = hi + 1;
    }
    let stage = Stage::local(&stage_dir)?;
    wait_staged_rows(&stage, args.changes, Duration::from_secs(600)).await?;
    reader.stop().await?;
    let staged = crate::reader::staged_changes(&stage, "main").await?;
    let batches = StreamLog::new(&stage, "main")?.head(None).await?.unwrap_or(0);
    eprintln!("staged {} changes in {batches} batches", staged.len());

    let emulator = Emulator::start().await?;
    let sqs = Sqs::new(&emulator).await;
    let strata_queue = sqs.create_queue("bench-strata", None).await?;
    let baseline_queue = sqs.create_queue("bench-baseline", None).await?;

    // strata: the writer service delivering the backlog.
    let mut q = SqsSpec::new(strata_queue.clone());
    q.region = Some("us-east-1".to_owned());
    q.endpoint = Some(emulator.endpoint());
    strata_writer::control::add(&stage, &crate::writer::spec_of("bench", StartPosition::Earliest, DestinationKind::Sqs(q.clone()))).await?;
    let config_path = dir.path().join("writer.toml");
    std::fs::write(&config_path, config_text(&src_url, &stage_dir, ""))?;
    let t0 = Instant::now();
    let mut writer = std::process::Command::new(std::env::current_exe()?)
        .arg("sqs-writer")
        .arg(&config_path)
        .envs(writer_env(&emulator))
        .env("RUST_LOG", "warn")
        .spawn()
        .context("starting the writer")?;
    wait_caught_up(&stage, "bench").await;
    let strata_secs = t0.elapsed().as_secs_f64();
    let _ = std::process::Command::new("kill").arg("-TERM").arg(writer.id().to_string()).status();
    writer.wait()?;

    // Baseline: the same envelopes, one SendMessage each, one at a time.
    let bodies = envelopes(&stage, &staged, batches).await?;
    let t0 = Instant::now();
    for body in bodies {
        sqs.client.send_message().queue_url(&baseline_queue).message_body(body).send().await.context("baseline SendMessage")?;
    }
    let baseline_secs = t0.elapsed().as_secs_f64();

    let strata_stats = sqs.stats("bench-strata").await?;
    let baseline_stats = sqs.stats("bench-baseline").await?;
    let n = staged.len() as u64;
    if strata_stats["entries"] < n || baseline_stats["single_sends"] != n {
        bail!("not every change reached its queue: strata {strata_stats:?}, baseline {baseline_stats:?} of {n}");
    }
    for url in [&strata_queue, &baseline_queue] {
        let held = queue_length(&sqs, url).await?;
        if held < n {
            bail!("queue {url} holds {held} messages of {n}");
        }
    }
    let strata_rate = n as f64 / strata_secs;
    let baseline_rate = n as f64 / baseline_secs;
    let line = format!(
        "| {} | SQS delivery | {n} changes, {batches} batches, standard queue, emulator | strata {strata_secs:.1} s ({strata_rate:.0}/s; {} SendMessageBatch calls, batch {} × {} in flight) | one SendMessage per change {baseline_secs:.1} s ({baseline_rate:.0}/s) | **{:.2}×** |",
        today(),
        strata_stats["calls"],
        q.batch_size,
        q.in_flight,
        strata_rate / baseline_rate
    );
    record(args.record.as_ref(), "SQS delivery", &line)
}

/// The change envelope of every staged change, as the SQS destination sends it.
async fn envelopes(stage: &Stage, staged: &[(u64, u32, strata_common::Change)], batches: u64) -> Result<Vec<String>> {
    let mut schemas = std::collections::HashMap::new();
    let log = StreamLog::new(stage, "main")?;
    let mut staged_at = std::collections::HashMap::new();
    for seq in 1..=batches {
        staged_at.insert(seq, log.read(seq).await?.created_at);
    }
    let mut bodies = Vec::with_capacity(staged.len());
    for (seq, version, change) in staged {
        let schema = match schemas.get(&(change.table.clone(), *version)) {
            Some(s) => std::sync::Arc::clone(s),
            None => {
                let s = std::sync::Arc::new(log.read_schema(&change.table, *version).await?);
                schemas.insert((change.table.clone(), *version), s.clone());
                s
            }
        };
        let at = *staged_at.get(seq).context("a staged change of a batch past the head")?;
        bodies.push(strata_writer::envelope::envelope("main", &schema, change, at).to_string());
    }
    Ok(bodies)
}

/// Messages a queue holds (approximately, as SQS counts).
async fn queue_length(sqs: &crate::sqs::Sqs, url: &str) -> Result<u64> {
    let attrs =
        sqs.client.get_queue_attributes().queue_url(url).attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages).send().await?;
    Ok(attrs.attributes().and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)).and_then(|v| v.parse().ok()).unwrap_or(0))
}
