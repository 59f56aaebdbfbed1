//! `places-offline`: the offline Places service. Parses the command line and
//! maps errors to exit codes; the service is the `places_offline` library beside it.

use std::process::ExitCode;

use places_offline as offline;
use places_offline::Command;

fn main() -> ExitCode {
    let command = match offline::options::parse(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("places-offline: {message} (try --help)");
            return ExitCode::from(2);
        }
    };
    let opts = match command {
        Command::Help(text) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("places-offline {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::Run(opts) => opts,
    };
    match offline::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("places-offline: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
