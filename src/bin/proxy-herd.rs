//! `proxy-herd NAME [PORT]`: one server of the herd. Parses the command line,
//! resolves the herd's addresses, and runs the event loop; every error becomes
//! an exit status here and nowhere else (2: bad usage, 1: could not start).

use std::process::ExitCode;

use proxy_herd::cli::{self, Command, PlacesApi};
use proxy_herd::event_loop::{EventLoop, HttpSettings, Settings, StartError};
use proxy_herd::herd::auth::Secret;
use proxy_herd::herd::config::Addr;
use proxy_herd::log::Log;
use proxy_herd::observe::HerdView;
use proxy_herd::places::http::{Api, Endpoint};
use proxy_herd::places::PlacesSettings;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match cli::parse_args(&args) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help(text) | Command::Version(text)) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
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
            // --http wins over the herd file's http=; neither: no endpoint.
            http: match options.http.as_ref().or(me.http.as_ref()) {
                Some(addr) => Some(HttpSettings {
                    addr: resolve(addr)?,
                    herd: HerdView::of(&options.herd),
                }),
                None => None,
            },
        })
    })();
    let mut settings = match settings {
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

fn fail(status: u8, message: &str) -> ExitCode {
    eprintln!("proxy-herd: {message}");
    ExitCode::from(status)
}
