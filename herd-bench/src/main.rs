//! `herd-bench`: parses the command line and maps errors to exit codes; the
//! benchmark itself is the `herd_bench` library beside it.

use std::process::ExitCode;

use herd_bench as bench;
use herd_bench::args::Command;

fn main() -> ExitCode {
    let opts = match bench::args::parse(std::env::args_os().skip(1)) {
        Ok(Command::Run(opts)) => opts,
        Ok(Command::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("herd-bench: {message} (try --help)");
            return ExitCode::from(2);
        }
    };
    match bench::main_with(&opts) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("herd-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
