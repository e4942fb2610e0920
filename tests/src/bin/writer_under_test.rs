//! `strata-writer`, built inside the test crate so fault tests can start,
//! kill and restart it as a process (`CARGO_BIN_EXE_strata-writer-under-test`).

fn main() -> std::process::ExitCode {
    strata_writer::cli::main()
}
