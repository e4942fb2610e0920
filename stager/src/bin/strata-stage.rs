//! `strata-stage`: inspect and maintain a stage (`ls`, `show`, `verify`,
//! `gc`, `files`, `streams`); see [`strata_stager::cli`].

fn main() -> std::process::ExitCode {
    strata_stager::cli::main()
}
