//! `strata-stage`, built inside the test crate so tests can run it as a
//! process, as an operator does (`CARGO_BIN_EXE_strata-stage-under-test`).

fn main() -> std::process::ExitCode {
    strata_stager::cli::main()
}
