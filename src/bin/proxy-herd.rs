//! `proxy-herd NAME [PORT]`: one server of the herd. Parses the command line,
//! resolves the herd's addresses, and runs the event loop; every error becomes
//! an exit status here and nowhere else (2: bad usage, 1: could not start).
//! `proxy-herd certs HERDFILE DIR` writes the herd's certificates instead.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use proxy_herd::cli::{self, Command, PlacesApi};
use proxy_herd::event_loop::{EventLoop, Settings, StartError};
use proxy_herd::herd::auth::Secret;
use proxy_herd::herd::config::{Addr, HerdConfig};
use proxy_herd::log::Log;
use proxy_herd::places::http::{Api, Endpoint};
use proxy_herd::places::PlacesSettings;
use proxy_herd::tls::certs;
use proxy_herd::tls::peer::PeerTls;

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
    let Some(me) = options.herd.server(&options.name) else {
        return fail(2, &format!("{} is not a server of the herd", options.name));
    };
    let resolve = |addr: &Addr| {
        addr.to_socket_addrs()
            .ok()
            .and_then(|a| a.into_iter().next())
            .ok_or_else(|| format!("cannot resolve {addr}"))
    };
    let settings = (|| -> Result<Settings, String> {
        let mut client_addr = resolve(&me.client)?;
        if let Some(port) = options.port {
            client_addr.set_port(port);
        }
        let mut neighbours = Vec::new();
        for name in &me.neighbours {
            let spec = options
                .herd
                .server(name)
                .ok_or_else(|| format!("unknown neighbour {name}"))?;
            neighbours.push((name.clone(), vec![resolve(&spec.peer)?]));
        }
        Ok(Settings {
            name: options.name.clone(),
            client_addr,
            peer_addr: resolve(&me.peer)?,
            neighbours,
            log: Log::discard(),
            places: PlacesSettings {
                endpoint: Endpoint::parse(&options.places_url)
                    .map_err(|e| format!("bad --places-url: {e}"))?,
                api: match options.places_api {
                    PlacesApi::Legacy => Api::Legacy,
                    PlacesApi::New => Api::New,
                },
                key: std::env::var("PLACES_API_KEY")
                    .ok()
                    .filter(|k| !k.is_empty()),
                ca_file: options.places_ca.clone(),
            },
            max_clients: options.max_clients,
            idle_timeout: options
                .idle_timeout_secs
                .map(std::time::Duration::from_secs),
            state_path: options.state_path.clone(),
            secret: match &options.herd_secret_file {
                Some(path) => {
                    let bytes = std::fs::read(path).map_err(|e| {
                        format!("cannot read the herd secret file {}: {e}", path.display())
                    })?;
                    Some(Secret::new(&bytes)?)
                }
                None => None,
            },
        })
    })();
    let mut settings = match settings {
        Ok(s) => s,
        Err(e) => return fail(2, &e),
    };
    // Read and checked at start-up: a bad file is a one-line error, exit 2.
    let peer_tls = match &options.peer_tls {
        Some(files) => match PeerTls::load(files, &options.name) {
            Ok(tls) => Some(Arc::new(tls)),
            Err(e) => return fail(2, &e),
        },
        None => None,
    };
    settings.log = match Log::open(&options.log_path) {
        Ok(log) => log,
        Err(e) => {
            let path = options.log_path.display();
            return fail(1, &format!("cannot open the log {path}: {e}"));
        }
    };
    if peer_tls.is_some() {
        // The loop (src/event_loop/, being refactored) takes `peer_tls` once
        // its Settings has the field; until then, say so rather than let
        // TLS options pass for protection.
        let warning = "peer TLS is configured and its files are good, but this build's \
                       event loop does not speak TLS to peers yet: peer links are plaintext";
        eprintln!("proxy-herd: warning: {warning}");
        settings.log.event(format_args!("warning: {warning}"));
    }
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
