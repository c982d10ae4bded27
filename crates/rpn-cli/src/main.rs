//! `rpn`: see `rpn --help` and the `rpn_cli` library docs.

use std::process::ExitCode;

fn main() -> ExitCode {
    match rpn_cli::run(std::env::args_os()) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", rpn_cli::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
