//! `rpn`: see `rpn --help` and the `rpn_cli` library docs (exit status: 0 success, 2 usage
//! error, 1 any other error).

use std::process::ExitCode;

fn main() -> ExitCode {
    // Training and batched inference free and re-allocate the same large buffers every step:
    // keep them in the process (see `rpn::retain_freed_memory`).
    rpn::retain_freed_memory();
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr();
    ExitCode::from(rpn_cli::main_with(std::env::args_os(), &mut stdout, &mut stderr))
}
