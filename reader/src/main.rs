//! `strata-reader --config strata.toml`: runs one stream (snapshot, then
//! change capture) into the stage.
//!
//! This build validates the configuration and stops: the replication
//! pipeline is not part of it yet. It exits with status 2 and says so rather
//! than pretending to capture.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use strata_common::config::Config;

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config_path = match args.as_slice() {
        [flag, path] if flag == "--config" => Some(PathBuf::from(path)),
        [] => None,
        _ => bail!("usage: strata-reader --config strata.toml"),
    };
    let config = Config::load(config_path.as_deref()).context("loading configuration")?;
    let source = config.source.context("the reader needs a [source] section with the database url")?;
    bail!(
        "configuration is valid (stream {:?}, source {}), but change capture is not available in this build yet",
        source.stream,
        source.url
    )
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
