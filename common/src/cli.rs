//! What every strata command line shares: `--config` (or `STRATA_CONFIG`)
//! and `--log-format`, accepted before or after any subcommand, and how
//! they start a command.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::config::{Config, LogFormat};

/// The options of every strata command (`#[command(flatten)]` them).
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// strata.toml; without it, the defaults and STRATA_* environment overrides.
    #[arg(long, global = true, env = "STRATA_CONFIG")]
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

    /// What the configuration came from, for messages.
    pub fn origin(&self) -> String {
        self.config.as_deref().map_or_else(|| "(defaults and environment)".to_owned(), |p| p.display().to_string())
    }

    /// Refuses to go on with the default stage (`./strata-stage`) when
    /// nothing named one: no config file, no `STRATA_STAGE__URL`, and no
    /// `--stage` (`stage_flag`). A command run in the wrong directory would
    /// otherwise create an empty stage there and report on it.
    pub fn require_stage(&self, stage_flag: bool) -> Result<()> {
        let env = std::env::var_os(STAGE_URL_VAR).is_some_and(|v| !v.is_empty());
        if self.config.is_some() || env || stage_flag {
            return Ok(());
        }
        let here = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_else(|_| ".".to_owned());
        anyhow::bail!(
            "no stage named: pass --config strata.toml (or set STRATA_CONFIG), or set {STAGE_URL_VAR}{}; \
             refusing to use the default {} in {here}",
            if stage_flag { "" } else { ", or --stage URL where the command has it" },
            crate::config::DEFAULT_STAGE_URL
        )
    }
}

/// The environment override that names the stage without a config file.
const STAGE_URL_VAR: &str = "STRATA_STAGE__URL";
