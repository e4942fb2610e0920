//! `strata-reader --config strata.toml`: runs one stream until SIGTERM or
//! Ctrl-C, then commits the batch in hand (an open transaction is abandoned
//! and sent again by PostgreSQL) and exits 0.

fn main() -> std::process::ExitCode {
    strata_reader::cli::main()
}
