//! The `strata-reader` command line, in the library so that test harnesses
//! can build the same binary.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use strata_common::config::{Config, LogFormat};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "strata-reader", version, about = "Stream a PostgreSQL database's changes into a strata stage")]
struct Cli {
    /// strata.toml (its [source] section names the database).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Log format; overrides telemetry.log_format.
    #[arg(long, value_enum)]
    log_format: Option<LogFormatArg>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

async fn run(cli: Cli) -> Result<()> {
    let config = Config::load(cli.config.as_deref()).context("loading configuration")?;
    let format = match cli.log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Text) => LogFormat::Text,
        None => config.telemetry.log_format,
    };
    strata_common::telemetry::init(format, config.telemetry.log_level.as_deref());
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
        signals.cancel();
    });
    crate::run::run(&config, shutdown).await
}

/// The `strata-reader` command line: parses arguments, runs until SIGTERM
/// or Ctrl-C, and returns the exit status (0 clean stop, 1 error, 2 usage).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
