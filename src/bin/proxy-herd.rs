//! `proxy-herd NAME [PORT]`: one server of the herd. Parses the command line,
//! builds the settings, opens the log and runs the event loop; every error
//! becomes an exit status here and nowhere else (2: bad usage, 1: could not
//! start). `proxy-herd certs HERDFILE DIR` writes the herd's certificates
//! instead.

use std::path::Path;
use std::process::ExitCode;

use proxy_herd::cli::{self, Command};
use proxy_herd::event_loop::{EventLoop, StartError};
use proxy_herd::herd::config::HerdConfig;
use proxy_herd::log::Log;
use proxy_herd::tls::certs;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match cli::parse_args(&args) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help(text) | Command::Version(text)) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Certs {
            herd,
            herd_file,
            dir,
        }) => return write_certs(&herd, &herd_file, &dir),
        Err(e) => return fail(2, &e.to_string()),
    };
    let mut settings = match cli::server_settings(&options) {
        Ok(s) => s,
        Err(e) => return fail(2, &e),
    };
    settings.log = match Log::open(&options.log_path) {
        Ok(log) => log,
        Err(e) => {
            let path = options.log_path.display();
            return fail(1, &format!("cannot open the log {path}: {e}"));
        }
    };
    let mut event_loop = match EventLoop::new(settings) {
        Ok(l) => l,
        Err(e @ StartError::Config(_)) => return fail(2, &e.to_string()),
        Err(e) => return fail(1, &e.to_string()),
    };
    match event_loop.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &format!("the event loop failed: {e}")),
    }
}

/// `proxy-herd certs HERDFILE DIR`.
fn write_certs(herd: &HerdConfig, herd_file: &Path, dir: &Path) -> ExitCode {
    match certs::write_herd(herd, dir) {
        Ok(files) => {
            println!(
                "a new herd CA and certificates for the {} servers of {}:",
                herd.names().len(),
                herd_file.display()
            );
            for file in files {
                println!("    {}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &e),
    }
}

fn fail(status: u8, message: &str) -> ExitCode {
    eprintln!("proxy-herd: {message}");
    ExitCode::from(status)
}
