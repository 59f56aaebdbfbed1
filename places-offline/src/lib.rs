//! The offline Places service (`places-offline`, docs/spec.md §7): Google's
//! Places API (legacy Nearby Search and `places:searchNearby`) over HTTPS on
//! loopback, answering from the GeoNames gazetteer in `data/places/`, with
//! options to inject latency and failures.
//!
//! - [`options`]: the command line.
//! - [`places`]: loading the data file; [`index`]: the spatial grid.
//! - [`api`]: requests to answers, Google's JSON shapes (pure).
//! - [`http`]: HTTP/1.1 request parsing and response framing (pure).
//! - [`server`]: the mio event loop and the TLS connections; its timers are
//!   the crate's [`proxy_herd::timers::Timers`].
//! - [`tls`]: the certificate and key. The request log is the crate's
//!   [`proxy_herd::log::Log`]; what goes into a line is decided in [`server`].
//!
//! The herd's own Places *client* is elsewhere, in `proxy_herd::places`.

pub mod api;
pub mod http;
pub mod index;
pub mod options;
pub mod places;
pub mod server;
pub mod tls;

use std::fmt;
use std::io::Write;

pub use options::{Command, FailMode, Options};

/// Why the service did not run; [`Error::exit_code`] maps it for `main`.
#[derive(Debug)]
pub enum Error {
    /// A bad command line, data file, certificate or key (exit 2).
    Config(String),
    /// The listener could not be bound, or the loop failed (exit 1).
    Runtime(String),
}

impl Error {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => 2,
            Error::Runtime(_) => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(m) | Error::Runtime(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

/// Loads everything, binds, prints `listening on IP:PORT`, and serves until
/// SIGINT or SIGTERM.
pub fn run(opts: Options) -> Result<(), Error> {
    let tls_config = tls::server_config(&opts.cert, &opts.key).map_err(Error::Config)?;
    let places = places::Places::load(&opts.data).map_err(|e| Error::Config(e.to_string()))?;
    let service = api::Service::new(places);
    let log = match &opts.log {
        Some(path) => proxy_herd::log::Log::open(path)
            .map_err(|e| Error::Config(format!("cannot open log {}: {e}", path.display())))?,
        None => proxy_herd::log::Log::discard(),
    };
    let behaviour = server::Behaviour {
        latency: opts.latency,
        fail: opts.fail,
        chunked: opts.chunked,
        no_keep_alive: opts.no_keep_alive,
        drop_reused: opts.drop_reused,
    };
    let count = service.len();
    let mut event_loop = server::EventLoop::bind(opts.listen, tls_config, service, behaviour, log)
        .map_err(|e| Error::Runtime(e.to_string()))?;
    let addr = event_loop
        .local_addr()
        .map_err(|e| Error::Runtime(format!("local address: {e}")))?;
    event_loop.log_event(format_args!("listening on {addr} with {count} places"));
    // Tests and scripts wait for exactly this line.
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "listening on {addr}");
    let _ = stdout.flush();
    event_loop
        .run()
        .map_err(|e| Error::Runtime(format!("event loop: {e}")))
}
