//! What every strata service binary does around its work: a multi-thread
//! runtime, a shutdown token cancelled by SIGTERM or Ctrl-C, and an exit
//! status with the error chain printed on failure; and, for the writer, a
//! bounded number of allocator arenas ([`limit_arenas`]).

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

/// The malloc arenas the writer uses unless `MALLOC_ARENA_MAX` (or the
/// `glibc.malloc.arena_max` tunable) says otherwise.
///
/// glibc gives each thread that allocates an arena of its own, up to 8 per
/// core, and an arena keeps memory its thread freed. The writer decodes
/// and writes files on tokio's blocking pool, whose threads come and go, so
/// with wide rows most of its resident memory was arenas, not live data: a
/// 64 MiB heap peak at 193-238 MiB RSS. Two arenas brought that run to 168
/// MiB (with 16 MiB batches too, a 10 GiB backlog's writer went from 293 to
/// 157 MiB), for some lock contention: catch-up took 5 % longer in paired
/// runs against 16 arenas. The reader, whose memory stays within bounds
/// without it, is not limited: capture took 20 % longer with two arenas
/// (`bench/RESULTS.md`, Large backlog).
pub const WRITER_ARENAS: i32 = 2;

/// Holds glibc's malloc to `arenas` arenas, unless the environment already
/// sets the limit, in which case glibc has applied that one. Call first
/// thing in `main`, before any thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn limit_arenas(arenas: i32) {
    let set_by_env = std::env::var_os("MALLOC_ARENA_MAX").is_some() || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.arena_max"));
    if !set_by_env {
        // SAFETY: mallopt takes two integers and changes only malloc's
        // parameters; it is called before the runtime starts any thread.
        // It returns 0 if it refused the value, and then malloc keeps its
        // default: nothing to do about that but carry on.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_arenas(_arenas: i32) {}
