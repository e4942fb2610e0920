//! What every strata service binary does around its work: a multi-thread
//! runtime, a shutdown token cancelled by SIGTERM or Ctrl-C, and an exit
//! status with the error chain printed on failure.

use std::future::Future;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

/// A token cancelled on SIGTERM or Ctrl-C. Call inside the runtime.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let signals = token.clone();
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
    token
}

/// Runs `work` on a multi-thread runtime: exit 0 when it succeeds, 1 with
/// `error: …` (the whole chain) when it fails, 2 if no runtime can start.
pub fn main<F>(work: F) -> ExitCode
where
    F: Future<Output = anyhow::Result<ExitCode>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(work) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
