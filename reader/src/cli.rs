//! The `strata-reader` command line, in the library so that test harnesses
//! can build the same binary.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use strata_common::config::{Config, LogFormat};

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

async fn run(cli: Cli) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref()).context("loading configuration")?;
    let format = match cli.log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Text) => LogFormat::Text,
        None => config.telemetry.log_format,
    };
    strata_common::telemetry::init(format, config.telemetry.log_level.as_deref());
    let shutdown = strata_common::service::shutdown_on_signals();
    crate::run::run(&config, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// The `strata-reader` command line: parses arguments, runs until SIGTERM
/// or Ctrl-C, and returns the exit status (0 clean stop, 1 error, 2 usage).
pub fn main() -> ExitCode {
    strata_common::service::main(run(Cli::parse()))
}
