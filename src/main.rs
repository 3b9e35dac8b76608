//! The `remixd` binary: everything is in the library; see [`remixd::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    remixd::cli::main()
}
