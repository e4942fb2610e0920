//! `strata-writer --config strata.toml`: runs destination workers, and is the
//! control CLI (`destination`, `replay`, `status`).
//!
//! This build validates the configuration and stops: destination workers are
//! not part of it yet. It exits with status 2 and says so rather than
//! pretending to deliver.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use strata_common::config::Config;

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config_path = match args.as_slice() {
        [flag, path] if flag == "--config" => Some(PathBuf::from(path)),
        [] => None,
        _ => bail!("usage: strata-writer --config strata.toml"),
    };
    let config = Config::load(config_path.as_deref()).context("loading configuration")?;
    bail!("configuration is valid (stage {}), but destination delivery is not available in this build yet", config.stage.url)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
