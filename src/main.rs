//! The `moat` command: parse, build, run; map errors to exit codes.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match moat::run_command_line(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("moat: {err}");
            ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(1))
        }
    }
}
