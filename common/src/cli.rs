//! What every strata command line shares: `--config` and `--log-format`,
//! accepted before or after any subcommand, and how they start a command.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::config::{Config, LogFormat};

/// The options of every strata command (`#[command(flatten)]` them).
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// strata.toml; without it, the defaults and STRATA_* environment overrides.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Log format; overrides telemetry.log_format.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
}

impl CommonArgs {
    /// Loads the configuration, then starts logging with its level and
    /// format (the flag's format wins).
    pub fn start(&self) -> Result<Config> {
        let config = Config::load(self.config.as_deref()).context("loading configuration")?;
        crate::telemetry::init(self.log_format.unwrap_or(config.telemetry.log_format), config.telemetry.log_level.as_deref());
        Ok(config)
    }
}
