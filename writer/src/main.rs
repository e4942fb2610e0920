//! `strata-writer --config strata.toml`: runs destination workers until
//! SIGTERM; `strata-writer destination …`, `status`: the control CLI.

fn main() -> std::process::ExitCode {
    strata_writer::cli::main()
}
