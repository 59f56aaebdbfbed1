//! The `proxy-herd` command line (docs/spec.md §3): options and arguments in,
//! a [`Command`] or a one-line [`UsageError`] out.
//!
//! Parsing loads the herd file (through [`crate::herd::config`]) so that an
//! unknown server name is a usage error; everything else here is pure.
//! Printing, exit codes (2 for a [`UsageError`]) and starting the server
//! belong to `src/bin/proxy-herd.rs`.
//!
//! Choices where docs/spec.md is silent:
//!
//! - `--help` and `--version` win over every other argument, so
//!   `proxy-herd --help` needs no NAME; `--help` wins over `--version`.
//! - `PORT` is not checked against the other addresses of the herd: running a
//!   server on another's port (when that one is down) is a legitimate test.
//! - `--idle-timeout` takes 1..=31536000 seconds (one year), so adding it to
//!   an `Instant` can never overflow; `--max-clients` takes 1..=1000000;
//!   `--max-positions` takes 1..=1000000000 (the store numbers its entries
//!   in 32 bits, and a billion positions is already 100 GB).
//! - `--places-url` is checked by the Places client's own URL parser
//!   (`https://` only: the key travels in every request); `--places-ca` is
//!   not opened here: the Places client reads it at start-up.
//! - An option given twice is an error (getopts' rule).
//! - `--peer-cert`, `--peer-key` and `--peer-ca` go together: one or two of
//!   them is a usage error. Their files are read at start-up, not here (as
//!   `--places-ca`), by [`crate::tls::peer::PeerTls::load`].
//! - `proxy-herd certs HERDFILE DIR` is a subcommand only as the very first
//!   argument; a server named `certs` still runs as `proxy-herd -c FILE certs`.
//! - `--http ADDR` wins over the herd file's `http=ADDR` for this server; its
//!   address is checked like a herd file's (`host:port`, `[IPv6]:port`) but
//!   not against the herd's other ports (the bind says if it is taken).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use getopts::Options;

use crate::event_loop::{HttpSettings, Settings};

use crate::herd::auth::Secret;
use crate::herd::config::{Addr, HerdConfig};
use crate::herd::Limits;
use crate::log::Log;
use crate::observe::HerdView;
use crate::places::http::Endpoint;
use crate::places::PlacesSettings;
use crate::tls::peer::{PeerTls, PeerTlsFiles};

/// The Places endpoints and API type are the Places client's own; the
/// command line only names them.
pub use crate::places::http::{
    Api as PlacesApi, LEGACY_URL as LEGACY_PLACES_URL, NEW_URL as NEW_PLACES_URL,
};

/// The largest `--idle-timeout`: one year, far below what `Instant` arithmetic can hold.
pub const MAX_IDLE_TIMEOUT_SECS: u64 = 365 * 24 * 60 * 60;

/// The largest `--max-clients`.
pub const MAX_MAX_CLIENTS: usize = 1_000_000;

/// The largest `--max-positions`.
pub const MAX_MAX_POSITIONS: usize = 1_000_000_000;

/// Everything a server needs to start, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// This server's name, a server of `herd`.
    pub name: String,
    /// The client port to listen on instead of the herd file's.
    pub port: Option<u16>,
    /// The herd file given with `-c`, if any.
    pub config_path: Option<PathBuf>,
    /// The herd: loaded from `config_path`, or the built-in default.
    pub herd: HerdConfig,
    /// The log file (default `logs/NAME.log`).
    pub log_path: PathBuf,
    /// The Places endpoint.
    pub places_url: String,
    /// Which Places API `places_url` speaks.
    pub places_api: PlacesApi,
    /// Extra trusted CA certificates (PEM) for the Places connection.
    pub places_ca: Option<PathBuf>,
    /// At most this many client connections at once.
    pub max_clients: Option<usize>,
    /// A client connection idle this many seconds is closed.
    pub idle_timeout_secs: Option<u64>,
    /// Where positions are kept across restarts (`--state`).
    pub state_path: Option<PathBuf>,
    /// Keep only this many positions, the newest by the store's order
    /// (`--max-positions`); every server of a herd should be given the same.
    pub max_positions: Option<usize>,
    /// The file holding the herd's shared secret (`--herd-secret-file`).
    pub herd_secret_file: Option<PathBuf>,
    /// Peer links over mutual TLS (`--peer-cert`, `--peer-key`, `--peer-ca`).
    pub peer_tls: Option<PeerTlsFiles>,
    /// Where to serve the read-only HTTP endpoint (`--http`), if given.
    pub http: Option<Addr>,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run one server of the herd.
    Run(Box<ServerOptions>),
    /// `certs HERDFILE DIR`: write the herd's CA and certificates.
    Certs {
        /// The herd, loaded from `herd_file`.
        herd: HerdConfig,
        herd_file: PathBuf,
        /// Where the files go.
        dir: PathBuf,
    },
    /// Print this usage text (no trailing newline) and exit 0.
    Help(String),
    /// Print this version line (no trailing newline) and exit 0.
    Version(String),
}

/// A bad command line: one line, no trailing newline, naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Shorthand for building a [`UsageError`] result.
fn usage_error<T>(message: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError(message.into()))
}

/// The options `proxy-herd` accepts.
fn options() -> Options {
    let mut opts = Options::new();
    opts.optopt(
        "c",
        "config",
        "herd file (default: the built-in default herd)",
        "FILE",
    );
    opts.optopt("l", "log", "log file (default: logs/NAME.log)", "FILE");
    opts.optopt(
        "",
        "places-url",
        "Places endpoint (default: Google's, for the chosen API)",
        "URL",
    );
    opts.optopt(
        "",
        "places-api",
        "which Places API the endpoint speaks (default: legacy)",
        "legacy|new",
    );
    opts.optopt(
        "",
        "places-ca",
        "extra trusted CA certificates (PEM), added to the web PKI roots",
        "FILE",
    );
    opts.optopt(
        "",
        "max-clients",
        "accept at most N client connections at once",
        "N",
    );
    opts.optopt(
        "",
        "idle-timeout",
        "close a client connection idle for SECS seconds",
        "SECS",
    );
    opts.optopt(
        "",
        "state",
        "keep positions in FILE across restarts (appended, compacted now and then)",
        "FILE",
    );
    opts.optopt(
        "",
        "max-positions",
        "keep only the N newest positions (give every server the same N)",
        "N",
    );
    opts.optopt(
        "",
        "herd-secret-file",
        "peers must prove they know the secret in FILE (HMAC over a fresh challenge); \
         this identifies neighbours but does not protect the stream after it: use the --peer-* options for that",
        "FILE",
    );
    opts.optopt(
        "",
        "peer-cert",
        "this server's certificate (PEM): with --peer-key and --peer-ca, peer links are mutual TLS 1.3",
        "FILE",
    );
    opts.optopt(
        "",
        "peer-key",
        "the private key of --peer-cert (PEM)",
        "FILE",
    );
    opts.optopt(
        "",
        "peer-ca",
        "the herd CA (PEM): the only authority trusted for peer certificates",
        "FILE",
    );
    opts.optopt(
        "",
        "http",
        "serve /metrics, /status and the herd's live page over HTTP at ADDR \
         (default: the herd file's http=, else off)",
        "ADDR",
    );
    opts.optflag("h", "help", "print this help and exit");
    opts.optflag("V", "version", "print the version and exit");
    opts
}

/// The full `--help` text, without a trailing newline.
fn help_text(opts: &Options) -> String {
    let brief = "Usage: proxy-herd [OPTIONS] NAME [PORT]\n       \
                 proxy-herd certs HERDFILE DIR\n\n\
                 Run server NAME of an application-server herd. PORT, when given,\n\
                 overrides its client port (its neighbours still dial the peer\n\
                 address in the herd file).\n\n\
                 certs writes a new herd CA (DIR/ca.pem, for --peer-ca) and, for each\n\
                 server of HERDFILE, DIR/NAME.pem and DIR/NAME.key (for --peer-cert and\n\
                 --peer-key), each certificate for the DNS name NAME. The CA key is not\n\
                 kept; existing files are never overwritten.";
    format!(
        "{}\n\nPeer TLS: a neighbour's certificate must chain to --peer-ca and carry its\n\
         herd name (the name the herd file gives a neighbour we dial, the name\n\
         its HELLO claims when it dials us).\n\n\
         Environment:\n    PLACES_API_KEY      the Google Places API key (never logged)\n\n\
         Signals:\n    SIGINT, SIGTERM, SIGQUIT  stop, with the log flushed (exit status 0)\n    \
         SIGHUP              reopen the log file (for logrotate: docs/logging.md)\n    \
         SIGUSR1, SIGUSR2    logged, nothing else\n\n\
         The contract (protocol, herd file, logs, limits): docs/spec.md",
        opts.usage(brief).trim_end()
    )
}

/// Parses a whole number in `min..=max` for `option`; digits only.
fn parse_number<T>(option: &str, text: &str, min: T, max: T) -> Result<T, UsageError>
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
{
    let bad = || {
        UsageError(format!(
            "{option}: expected a whole number from {min} to {max}, got {text:?}"
        ))
    };
    // FromStr would also take a leading '+'.
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    match text.parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(bad()),
    }
}

/// An option's value, rejected when given but empty (`-l ''`).
fn non_empty(option: &str, value: Option<String>) -> Result<Option<String>, UsageError> {
    match value {
        Some(v) if v.is_empty() => usage_error(format!("{option}: empty value")),
        other => Ok(other),
    }
}

/// Parses the command line, without `argv[0]`.
pub fn parse_args(args: &[String]) -> Result<Command, UsageError> {
    if args.first().map(String::as_str) == Some("certs") {
        return parse_certs(&args[1..]);
    }
    let opts = options();
    let matches = opts
        .parse(args)
        .map_err(|fail| UsageError(format!("{fail} (see --help)")))?;
    if matches.opt_present("help") {
        return Ok(Command::Help(help_text(&opts)));
    }
    if matches.opt_present("version") {
        return Ok(Command::Version(format!(
            "proxy-herd {}",
            env!("CARGO_PKG_VERSION")
        )));
    }

    let places_api = match matches.opt_str("places-api").as_deref() {
        None | Some("legacy") => PlacesApi::Legacy,
        Some("new") => PlacesApi::New,
        Some(other) => {
            return usage_error(format!(
                "--places-api: expected 'legacy' or 'new', got {other:?}"
            ))
        }
    };
    // The Places client's own parser decides what a URL may be, so the
    // command line refuses exactly what the client could not use.
    let places_url = match non_empty("--places-url", matches.opt_str("places-url"))? {
        Some(url) => match Endpoint::parse(&url) {
            Ok(_) => url,
            Err(why) => return usage_error(format!("--places-url: {why}")),
        },
        None => places_api.default_url().to_string(),
    };
    let places_ca = non_empty("--places-ca", matches.opt_str("places-ca"))?.map(PathBuf::from);
    let config_path = non_empty("--config", matches.opt_str("config"))?.map(PathBuf::from);
    let log_path = non_empty("--log", matches.opt_str("log"))?.map(PathBuf::from);
    let max_clients = matches
        .opt_str("max-clients")
        .map(|n| parse_number("--max-clients", &n, 1, MAX_MAX_CLIENTS))
        .transpose()?;
    let idle_timeout_secs = matches
        .opt_str("idle-timeout")
        .map(|n| parse_number("--idle-timeout", &n, 1, MAX_IDLE_TIMEOUT_SECS))
        .transpose()?;

    let state_path = non_empty("--state", matches.opt_str("state"))?.map(PathBuf::from);
    let max_positions = matches
        .opt_str("max-positions")
        .map(|n| parse_number("--max-positions", &n, 1, MAX_MAX_POSITIONS))
        .transpose()?;
    let herd_secret_file =
        non_empty("--herd-secret-file", matches.opt_str("herd-secret-file"))?.map(PathBuf::from);

    let peer_tls = peer_tls_files(
        non_empty("--peer-cert", matches.opt_str("peer-cert"))?,
        non_empty("--peer-key", matches.opt_str("peer-key"))?,
        non_empty("--peer-ca", matches.opt_str("peer-ca"))?,
    )?;

    let http = non_empty("--http", matches.opt_str("http"))?
        .map(|text| {
            text.parse::<Addr>()
                .map_err(|why| UsageError(format!("--http: {why}")))
        })
        .transpose()?;

    let (name, port) = match matches.free.as_slice() {
        [] => return usage_error("missing server NAME (see --help)"),
        [name] => (name.clone(), None),
        [name, port] => (name.clone(), Some(parse_port(port)?)),
        [_, _, extra, ..] => {
            return usage_error(format!(
                "too many arguments: unexpected {extra:?} after NAME and PORT"
            ))
        }
    };

    let herd = match &config_path {
        Some(path) => HerdConfig::load(path).map_err(|e| UsageError(e.to_string()))?,
        None => HerdConfig::default_herd(),
    };
    if herd.server(&name).is_none() {
        let source = match &config_path {
            Some(path) => format!("the herd file {}", path.display()),
            None => "the default herd".to_string(),
        };
        return usage_error(format!(
            "unknown server {name:?}: {source} has {}",
            herd.names().join(", ")
        ));
    }

    let log_path = log_path.unwrap_or_else(|| PathBuf::from("logs").join(format!("{name}.log")));
    Ok(Command::Run(Box::new(ServerOptions {
        name,
        port,
        config_path,
        herd,
        log_path,
        places_url,
        places_api,
        places_ca,
        max_clients,
        idle_timeout_secs,
        state_path,
        max_positions,
        herd_secret_file,
        peer_tls,
        http,
    })))
}

/// All three peer TLS files, or none.
fn peer_tls_files(
    cert: Option<String>,
    key: Option<String>,
    ca: Option<String>,
) -> Result<Option<PeerTlsFiles>, UsageError> {
    match (cert, key, ca) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), Some(ca)) => Ok(Some(PeerTlsFiles {
            cert: cert.into(),
            key: key.into(),
            ca: ca.into(),
        })),
        (cert, key, ca) => {
            let missing: Vec<&str> = [
                (cert.is_none(), "--peer-cert"),
                (key.is_none(), "--peer-key"),
                (ca.is_none(), "--peer-ca"),
            ]
            .into_iter()
            .filter_map(|(absent, name)| absent.then_some(name))
            .collect();
            usage_error(format!(
                "--peer-cert, --peer-key and --peer-ca go together: {} missing",
                missing.join(" and ")
            ))
        }
    }
}

/// `certs HERDFILE DIR` (after the word `certs`).
fn parse_certs(args: &[String]) -> Result<Command, UsageError> {
    match args {
        [flag] if flag == "-h" || flag == "--help" => Ok(Command::Help(help_text(&options()))),
        [herd_file, dir] if !herd_file.is_empty() && !dir.is_empty() => {
            let herd_file = PathBuf::from(herd_file);
            let herd = HerdConfig::load(&herd_file).map_err(|e| UsageError(e.to_string()))?;
            Ok(Command::Certs {
                herd,
                herd_file,
                dir: PathBuf::from(dir),
            })
        }
        _ => usage_error("usage: proxy-herd certs HERDFILE DIR (see --help)"),
    }
}

/// Parses the PORT argument: 1..=65535, digits only.
fn parse_port(text: &str) -> Result<u16, UsageError> {
    parse_number("PORT", text, 1u16, u16::MAX).map_err(|_| {
        UsageError(format!(
            "bad PORT {text:?}: expected a number from 1 to 65535"
        ))
    })
}

/// What the event loop needs, built from the command line: the herd's
/// addresses resolved, the Places settings (the key from `PLACES_API_KEY`),
/// the herd secret read. The log is opened by `main` (its failure is exit
/// status 1, not a usage error); `settings.log` discards until then.
pub fn server_settings(options: &ServerOptions) -> Result<Settings, String> {
    let me = options
        .herd
        .server(&options.name)
        .ok_or_else(|| format!("{} is not a server of the herd", options.name))?;
    let resolve = |addr: &Addr| {
        addr.to_socket_addrs()
            .ok()
            .and_then(|a| a.into_iter().next())
            .ok_or_else(|| format!("cannot resolve {addr}"))
    };
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
    let secret = match &options.herd_secret_file {
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| format!("cannot read the herd secret file {}: {e}", path.display()))?;
            Some(Secret::new(&bytes)?)
        }
        None => None,
    };
    // Read and checked at start-up: a bad file is a one-line error, exit 2.
    let peer_tls = match &options.peer_tls {
        Some(files) => Some(PeerTls::load(files, &options.name)?),
        None => None,
    };
    Ok(Settings {
        name: options.name.clone(),
        client_addr,
        peer_addr: resolve(&me.peer)?,
        neighbours,
        log: Log::discard(),
        places: PlacesSettings {
            endpoint: Endpoint::parse(&options.places_url)
                .map_err(|e| format!("bad --places-url: {e}"))?,
            api: options.places_api,
            key: std::env::var("PLACES_API_KEY")
                .ok()
                .filter(|k| !k.is_empty()),
            ca_file: options.places_ca.clone(),
        },
        limits: Limits {
            max_clients: options.max_clients,
            idle_timeout: options.idle_timeout_secs.map(Duration::from_secs),
            max_positions: options.max_positions,
        },
        state_path: options.state_path.clone(),
        secret,
        peer_tls,
        // --http wins over the herd file's http=; neither: no endpoint.
        http: match options.http.as_ref().or(me.http.as_ref()) {
            Some(addr) => Some(HttpSettings {
                addr: resolve(addr)?,
                herd: HerdView::of(&options.herd),
            }),
            None => None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn run(list: &[&str]) -> ServerOptions {
        match parse_args(&args(list)) {
            Ok(Command::Run(options)) => *options,
            other => panic!("{list:?} gave {other:?}"),
        }
    }

    /// Asserts that `list` is a usage error whose text contains `needle`.
    fn fails(list: &[&str], needle: &str) {
        let err = parse_args(&args(list)).unwrap_err();
        assert!(err.0.contains(needle), "{list:?}: {err:?} lacks {needle:?}");
        assert!(!err.0.contains('\n'), "{list:?}: {err:?} is not one line");
    }

    fn shipped(file: &str) -> String {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs/herds")
            .join(file)
            .display()
            .to_string()
    }

    #[test]
    fn defaults() {
        let options = run(&["Riley"]);
        assert_eq!(options.name, "Riley");
        assert_eq!(options.port, None);
        assert_eq!(options.config_path, None);
        assert_eq!(options.herd, HerdConfig::default_herd());
        assert_eq!(options.log_path, PathBuf::from("logs/Riley.log"));
        assert_eq!(options.places_url, LEGACY_PLACES_URL);
        assert_eq!(options.places_api, PlacesApi::Legacy);
        assert_eq!(options.places_ca, None);
        assert_eq!(options.max_clients, None);
        assert_eq!(options.idle_timeout_secs, None);
    }

    #[test]
    fn port_override() {
        assert_eq!(run(&["Riley", "12345"]).port, Some(12345));
        assert_eq!(run(&["Riley", "1"]).port, Some(1));
        assert_eq!(run(&["Riley", "65535"]).port, Some(65535));
    }

    #[test]
    fn every_option() {
        let goloman = shipped("goloman.herd");
        let options = run(&[
            "-c",
            &goloman,
            "--log=/tmp/w.log",
            "--places-api",
            "new",
            "--places-url",
            "https://127.0.0.1:18443/v1/places:searchNearby",
            "--places-ca",
            "data/tls/ca.pem",
            "--max-clients",
            "100",
            "--idle-timeout",
            "30",
            "Welsh",
            "15000",
        ]);
        assert_eq!(options.name, "Welsh");
        assert_eq!(options.port, Some(15000));
        assert_eq!(options.config_path, Some(PathBuf::from(&goloman)));
        assert_eq!(
            options.herd.server("Welsh").unwrap().neighbours,
            ["Holiday"]
        );
        assert_eq!(options.log_path, PathBuf::from("/tmp/w.log"));
        assert_eq!(options.places_api, PlacesApi::New);
        assert_eq!(
            options.places_url,
            "https://127.0.0.1:18443/v1/places:searchNearby"
        );
        assert_eq!(options.places_ca, Some(PathBuf::from("data/tls/ca.pem")));
        assert_eq!(options.max_clients, Some(100));
        assert_eq!(options.idle_timeout_secs, Some(30));
    }

    #[test]
    fn short_options_and_options_after_arguments() {
        let goloman = shipped("goloman.herd");
        let options = run(&["Hands", "-l", "h.log", "-c", &goloman]);
        assert_eq!(options.name, "Hands");
        assert_eq!(options.log_path, PathBuf::from("h.log"));
    }

    #[test]
    fn places_api_new_changes_the_default_url() {
        let options = run(&["--places-api", "new", "Riley"]);
        assert_eq!(options.places_api, PlacesApi::New);
        assert_eq!(options.places_url, NEW_PLACES_URL);
        let options = run(&["--places-api=legacy", "Riley"]);
        assert_eq!(options.places_url, LEGACY_PLACES_URL);
    }

    #[test]
    fn help() {
        for flag in ["-h", "--help"] {
            match parse_args(&args(&[flag])).unwrap() {
                Command::Help(text) => {
                    assert!(text.starts_with("Usage: proxy-herd [OPTIONS] NAME [PORT]"));
                    assert!(!text.contains("\n\n\n"));
                    for option in [
                        "--config",
                        "--log",
                        "--places-url",
                        "--places-api",
                        "--places-ca",
                        "--max-clients",
                        "--idle-timeout",
                        "--version",
                        "--peer-cert",
                        "--peer-key",
                        "--peer-ca",
                        "--http",
                        "proxy-herd certs HERDFILE DIR",
                        "PLACES_API_KEY",
                        "SIGHUP",
                    ] {
                        assert!(text.contains(option), "help lacks {option}");
                    }
                    assert!(!text.ends_with('\n'));
                }
                other => panic!("{other:?}"),
            }
        }
        // Help wins over a bad argument and over --version.
        assert!(matches!(
            parse_args(&args(&["Nobody", "0", "--help", "-V"])),
            Ok(Command::Help(_))
        ));
    }

    #[test]
    fn version() {
        for flag in ["-V", "--version"] {
            assert_eq!(
                parse_args(&args(&[flag])),
                Ok(Command::Version(format!(
                    "proxy-herd {}",
                    env!("CARGO_PKG_VERSION")
                )))
            );
        }
    }

    #[test]
    fn unknown_option() {
        fails(&["--bogus", "Riley"], "bogus");
        fails(&["-x", "Riley"], "'x'");
    }

    #[test]
    fn option_missing_its_value() {
        fails(&["Riley", "-c"], "c");
        fails(&["Riley", "--max-clients"], "max-clients");
    }

    #[test]
    fn option_given_twice() {
        fails(&["-l", "a", "-l", "b", "Riley"], "more than once");
    }

    #[test]
    fn empty_option_values() {
        fails(&["-l", "", "Riley"], "--log: empty value");
        fails(&["-c", "", "Riley"], "--config: empty value");
        fails(&["--places-ca=", "Riley"], "--places-ca: empty value");
        fails(&["--places-url=", "Riley"], "--places-url: empty value");
    }

    #[test]
    fn missing_name() {
        fails(&[], "missing server NAME");
        fails(&["-l", "x.log"], "missing server NAME");
    }

    #[test]
    fn too_many_arguments() {
        fails(&["Riley", "12000", "extra"], "too many arguments");
    }

    #[test]
    fn bad_ports() {
        for bad in ["0", "65536", "99999999999", "+80", "http", "", " 80", "1.5"] {
            fails(&["Riley", bad], "bad PORT");
        }
        // getopts reads a negative number as a short option.
        fails(&["Riley", "-1"], "'1'");
    }

    #[test]
    fn unknown_server() {
        fails(
            &["Nobody"],
            "unknown server \"Nobody\": the default herd has Riley, Jaquez, Juzang, Campbell, Bernard",
        );
        fails(&["riley"], "unknown server \"riley\"");
        fails(
            &["-c", &shipped("goloman.herd"), "Riley"],
            "goloman.herd has Goloman, Hands, Holiday, Welsh, Wilkes",
        );
    }

    #[test]
    fn unknown_server_is_quoted_onto_one_line() {
        fails(&["Ril\ney"], "unknown server \"Ril\\ney\"");
    }

    #[test]
    fn bad_places_api() {
        fails(
            &["--places-api", "v2", "Riley"],
            "--places-api: expected 'legacy' or 'new', got \"v2\"",
        );
        fails(&["--places-api", "", "Riley"], "--places-api");
    }

    #[test]
    fn bad_places_url() {
        fails(
            &["--places-url", "ftp://x", "Riley"],
            "--places-url: bad Places URL \"ftp://x\": only https:// is supported",
        );
        fails(
            &["--places-url", "http://127.0.0.1:1/x", "Riley"],
            "only https:// is supported",
        );
    }

    #[test]
    fn bad_numbers() {
        for bad in ["0", "-", "x", "+5", "1e3", "", "18446744073709551616"] {
            fails(
                &["--max-clients", bad, "Riley"],
                "--max-clients: expected a whole number",
            );
            fails(
                &["--idle-timeout", bad, "Riley"],
                "--idle-timeout: expected a whole number",
            );
        }
        for bad in ["0", "x", "1000000001"] {
            fails(&["--max-positions", bad, "Riley"], "--max-positions");
        }
        assert_eq!(
            run(&["--max-positions", "200000", "Riley"]).max_positions,
            Some(200_000)
        );
        assert_eq!(run(&["Riley"]).max_positions, None);
        fails(&["--max-clients", "1000001", "Riley"], "--max-clients");
        fails(&["--idle-timeout", "31536001", "Riley"], "--idle-timeout");
        assert_eq!(run(&["--max-clients", "1", "Riley"]).max_clients, Some(1));
        assert_eq!(
            run(&["--idle-timeout", "31536000", "Riley"]).idle_timeout_secs,
            Some(MAX_IDLE_TIMEOUT_SECS)
        );
    }

    #[test]
    fn missing_herd_file() {
        let err = parse_args(&args(&["-c", "/nonexistent/x.herd", "Riley"])).unwrap_err();
        assert!(
            err.0
                .starts_with("/nonexistent/x.herd: cannot read the herd file"),
            "{err}"
        );
    }

    #[test]
    fn bad_herd_file_gives_the_config_error() {
        let dir = std::env::temp_dir().join(format!("proxy-herd-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.herd");
        std::fs::write(&path, "A 127.0.0.1:1000 B\n").unwrap();
        let path = path.display().to_string();
        let err = parse_args(&args(&["-c", &path, "A"])).unwrap_err();
        assert_eq!(
            err.0,
            format!("{path}:1: A lists unknown neighbour B (no server of that name in this file)")
        );
    }

    #[test]
    fn peer_tls_options_go_together() {
        let options = run(&[
            "--peer-cert",
            "r.pem",
            "--peer-key=r.key",
            "--peer-ca",
            "ca.pem",
            "Riley",
        ]);
        assert_eq!(
            options.peer_tls,
            Some(PeerTlsFiles {
                cert: "r.pem".into(),
                key: "r.key".into(),
                ca: "ca.pem".into(),
            })
        );
        assert_eq!(run(&["Riley"]).peer_tls, None);
        fails(
            &["--peer-cert", "r.pem", "Riley"],
            "--peer-cert, --peer-key and --peer-ca go together: --peer-key and --peer-ca missing",
        );
        fails(
            &["--peer-cert", "r.pem", "--peer-ca", "ca.pem", "Riley"],
            "go together: --peer-key missing",
        );
        fails(
            &["--peer-key", "k", "--peer-ca", "c", "Riley"],
            "--peer-cert missing",
        );
        fails(
            &["--peer-ca", "c", "Riley"],
            "--peer-cert and --peer-key missing",
        );
        fails(
            &["--peer-cert=", "--peer-key", "k", "--peer-ca", "c", "Riley"],
            "--peer-cert: empty value",
        );
    }

    #[test]
    fn certs_subcommand() {
        let default = shipped("default.herd");
        match parse_args(&args(&["certs", &default, "out/tls"])) {
            Ok(Command::Certs {
                herd,
                herd_file,
                dir,
            }) => {
                assert_eq!(herd.names().len(), 5);
                assert_eq!(herd_file, PathBuf::from(&default));
                assert_eq!(dir, PathBuf::from("out/tls"));
            }
            other => panic!("{other:?}"),
        }
        fails(&["certs"], "usage: proxy-herd certs HERDFILE DIR");
        fails(&["certs", &default], "usage: proxy-herd certs HERDFILE DIR");
        fails(&["certs", &default, "d", "x"], "usage: proxy-herd certs");
        fails(&["certs", &default, ""], "usage: proxy-herd certs");
        fails(
            &["certs", "/nonexistent/x.herd", "d"],
            "/nonexistent/x.herd: cannot read the herd file",
        );
        assert!(matches!(
            parse_args(&args(&["certs", "--help"])),
            Ok(Command::Help(_))
        ));
        // Only as the first argument: elsewhere `certs` is a server's name.
        fails(&["-l", "x.log", "certs"], "unknown server \"certs\"");
    }

    #[test]
    fn http_address() {
        assert_eq!(run(&["Riley"]).http, None);
        let options = run(&["--http", "127.0.0.1:32000", "Riley"]);
        assert_eq!(
            options.http.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:32000")
        );
        let options = run(&["--http=[::1]:8080", "Riley"]);
        assert_eq!(
            options.http.map(|a| a.to_string()).as_deref(),
            Some("[::1]:8080")
        );
        fails(&["--http", "127.0.0.1", "Riley"], "--http: bad address");
        fails(&["--http", "localhost:0", "Riley"], "--http: bad address");
        fails(&["--http=", "Riley"], "--http: empty value");
    }

    #[test]
    fn http_settings_the_option_wins_over_the_herd_file() {
        let http_of = |options: &ServerOptions| {
            server_settings(options)
                .unwrap()
                .http
                .map(|h| h.addr.to_string())
        };
        // The default herd has no http=: off unless --http is given.
        assert_eq!(http_of(&run(&["Riley"])), None);
        let with = run(&["--http", "127.0.0.1:4000", "Riley"]);
        assert_eq!(http_of(&with).as_deref(), Some("127.0.0.1:4000"));
        let dir = std::env::temp_dir().join(format!("cli-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("h.herd");
        std::fs::write(
            &file,
            "A 127.0.0.1:1000 http=127.0.0.1:3000 B\nB 127.0.0.1:1001 A\n",
        )
        .unwrap();
        let file = file.to_str().unwrap();
        assert_eq!(
            http_of(&run(&["-c", file, "A"])).as_deref(),
            Some("127.0.0.1:3000")
        );
        assert_eq!(http_of(&run(&["-c", file, "B"])), None);
        let both = run(&["-c", file, "--http", "127.0.0.1:5000", "A"]);
        let settings = server_settings(&both).unwrap();
        let http = settings.http.unwrap();
        assert_eq!(http.addr.to_string(), "127.0.0.1:5000");
        assert_eq!(http.herd.servers.len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn usage_error_display() {
        assert_eq!(UsageError("oops".to_string()).to_string(), "oops");
    }
}
