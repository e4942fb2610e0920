//! `strata-bench`: benchmarks measured as ratios against a reference in the
//! same run, on this machine. The benchmarks are in
//! [`strata_tests::bench`], which says what each measures.

use anyhow::{Context, Result};
use strata_tests::bench;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut raw = std::env::args().skip(1);
    if raw.next().as_deref() == Some("sqs-writer") {
        let config = raw.next().context("sqs-writer CONFIG")?;
        return bench::sqs::sqs_writer(std::path::Path::new(&config)).await;
    }
    let mut raw = std::env::args().skip(1);
    if raw.next().as_deref() == Some("chaos") {
        return strata_tests::chaos::bench_main(raw).await;
    }
    let mut raw = std::env::args().skip(1);
    if raw.next().as_deref() == Some("many-writers") {
        return strata_tests::many_writers::bench_main(raw).await;
    }
    bench::run(&bench::Args::parse(std::env::args().skip(1))?).await
}
