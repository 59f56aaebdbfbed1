//! The `places-offline` command line (getopts). Turning a bad command line
//! into exit status 2 happens in `main`, through [`super::Error`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// Where the committed data and TLS files are, for the defaults.
const MANIFEST_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// How to misbehave, for tests of a client's error paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Answer HTTP 500 with a short text body.
    Http500,
    /// Close the connection without answering.
    Close,
    /// Answer 200 with a body that is not JSON.
    NotJson,
}

/// The service's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// The places data file.
    pub data: PathBuf,
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// Delay before each answer.
    pub latency: Duration,
    /// Failure to inject into every answer, if any.
    pub fail: Option<FailMode>,
    /// Send bodies with `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// The request log, if any.
    pub log: Option<PathBuf>,
    /// Close the connection after every answer, with `Connection: close`.
    pub no_keep_alive: bool,
    /// Close, without answering, a kept-alive connection that brings a
    /// second request (a server whose idle timeout raced the client).
    pub drop_reused: bool,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Serve.
    Run(Options),
    /// Print this help text and exit 0.
    Help(String),
    /// Print the version and exit 0.
    Version,
}

fn spec() -> getopts::Options {
    let mut o = getopts::Options::new();
    o.optopt(
        "",
        "listen",
        "address to listen on (default 127.0.0.1:18443; port 0 picks a free one)",
        "ADDR",
    );
    o.optopt(
        "",
        "data",
        "places data file (default data/places/cities1000.tsv)",
        "FILE",
    );
    o.optopt(
        "",
        "cert",
        "certificate chain, PEM (default data/tls/server.pem)",
        "FILE",
    );
    o.optopt(
        "",
        "key",
        "private key, PEM (default data/tls/server.key)",
        "FILE",
    );
    o.optopt("", "latency-ms", "delay every answer by N ms", "N");
    o.optopt(
        "",
        "fail",
        "fail every request: http500, close or not-json",
        "MODE",
    );
    o.optflag("", "chunked", "send bodies with Transfer-Encoding: chunked");
    o.optflag(
        "",
        "no-keep-alive",
        "answer with Connection: close and close the connection after every answer",
    );
    o.optflag(
        "",
        "drop-reused",
        "when a second request comes on a kept-alive connection, close it without answering",
    );
    o.optopt(
        "",
        "log",
        "append one line per request and TLS handshake to FILE",
        "FILE",
    );
    o.optflag("h", "help", "print this help");
    o.optflag("V", "version", "print the version");
    o
}

/// Parses the arguments (without the program name); `Err` is a one-line message.
pub fn parse<I, S>(args: I) -> Result<Command, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let spec = spec();
    let m = spec.parse(args).map_err(|e| e.to_string())?;
    if m.opt_present("help") {
        let brief = "Usage: places-offline [OPTIONS]\n\n\
            An offline Google Places API (legacy Nearby Search and searchNearby) over HTTPS.";
        return Ok(Command::Help(join_lone_options(&spec.usage(brief))));
    }
    if m.opt_present("version") {
        return Ok(Command::Version);
    }
    if let Some(extra) = m.free.first() {
        return Err(format!("unexpected argument '{extra}'"));
    }
    let listen = match m.opt_str("listen") {
        Some(text) => parse_addr(&text)?,
        None => SocketAddr::from(([127, 0, 0, 1], 18443)),
    };
    let path = |name: &str, default: &str| {
        m.opt_str(name)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(MANIFEST_DIR).join(default))
    };
    let latency = match m.opt_str("latency-ms") {
        Some(text) => Duration::from_millis(
            text.parse()
                .map_err(|_| format!("--latency-ms: '{text}' is not a whole number of ms"))?,
        ),
        None => Duration::ZERO,
    };
    let fail = match m.opt_str("fail").as_deref() {
        None => None,
        Some("http500") => Some(FailMode::Http500),
        Some("close") => Some(FailMode::Close),
        Some("not-json") => Some(FailMode::NotJson),
        Some(other) => {
            return Err(format!(
                "--fail: unknown mode '{other}' (http500, close, not-json)"
            ))
        }
    };
    Ok(Command::Run(Options {
        listen,
        data: path("data", "data/places/cities1000.tsv"),
        cert: path("cert", "data/tls/server.pem"),
        key: path("key", "data/tls/server.key"),
        latency,
        fail,
        chunked: m.opt_present("chunked"),
        log: m.opt_str("log").map(PathBuf::from),
        no_keep_alive: m.opt_present("no-keep-alive"),
        drop_reused: m.opt_present("drop-reused"),
    }))
}

/// getopts gives descriptions a column 24 wide; an option exactly that wide
/// (`--no-keep-alive`) is left alone on its line with a trailing space and its
/// description below. Put the description back beside it.
fn join_lone_options(usage: &str) -> String {
    const COLUMN: usize = 24;
    let indent = " ".repeat(COLUMN);
    let mut out = String::with_capacity(usage.len());
    let mut lines = usage.split('\n').peekable();
    while let Some(line) = lines.next() {
        out.push_str(line);
        let lone =
            line.len() == COLUMN && line.ends_with(' ') && line.trim_start().starts_with('-');
        match lines.peek() {
            Some(next) if lone && next.starts_with(&indent) => {
                out.push_str(&next[COLUMN..]);
                lines.next();
            }
            _ => {}
        }
        if lines.peek().is_some() {
            out.push('\n');
        }
    }
    out
}

/// `IP:PORT`, `[IPv6]:PORT`, or a host name such as `localhost:PORT`.
fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("--listen: '{text}' is not an address (HOST:PORT)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Options, String> {
        match parse(args)? {
            Command::Run(o) => Ok(o),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_point_at_the_committed_files() {
        let o = run(&[]).unwrap();
        assert_eq!(o.listen, "127.0.0.1:18443".parse().unwrap());
        assert!(o.data.ends_with("data/places/cities1000.tsv"));
        assert!(o.cert.ends_with("data/tls/server.pem"));
        assert_eq!(o.latency, Duration::ZERO);
        assert_eq!(o.fail, None);
        assert!(!o.chunked);
        assert!(!o.no_keep_alive);
        assert!(!o.drop_reused);
    }

    #[test]
    fn parses_every_option() {
        let o = run(&[
            "--listen",
            "127.0.0.1:0",
            "--latency-ms",
            "25",
            "--fail",
            "not-json",
            "--chunked",
            "--log",
            "x.log",
            "--no-keep-alive",
            "--drop-reused",
        ])
        .unwrap();
        assert_eq!(o.listen.port(), 0);
        assert_eq!(o.latency, Duration::from_millis(25));
        assert_eq!(o.fail, Some(FailMode::NotJson));
        assert!(o.chunked);
        assert_eq!(o.log, Some(PathBuf::from("x.log")));
        assert!(o.no_keep_alive);
        assert!(o.drop_reused);
        assert!(run(&["--drop-reused"]).is_ok_and(|o| o.drop_reused && !o.no_keep_alive));
    }

    #[test]
    fn help_lists_the_connection_options() {
        let Ok(Command::Help(text)) = parse(["--help"]) else {
            panic!("no help");
        };
        let line = text.lines().find(|l| l.contains("--no-keep-alive"));
        assert!(
            line.is_some_and(|l| l.contains("Connection: close")),
            "{text}"
        );
        assert!(text.lines().all(|l| !l.ends_with(' ')), "{text}");
        assert!(text.contains("--drop-reused"), "{text}");
    }

    #[test]
    fn rejects_bad_options() {
        assert!(run(&["--fail", "boom"]).is_err());
        assert!(run(&["--latency-ms", "-3"]).is_err());
        assert!(run(&["--listen", "nowhere"]).is_err());
        assert!(run(&["--bogus"]).is_err());
        assert!(run(&["extra"]).is_err());
        assert!(
            run(&["--no-keep-alive=yes"]).is_err(),
            "a flag takes no value"
        );
        assert!(matches!(parse(["--help"]), Ok(Command::Help(_))));
    }
}
