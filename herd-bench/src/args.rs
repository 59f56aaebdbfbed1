//! The `herd-bench` command line: getopts in, a checked [`Options`] out.
//! Pure (no files, no sockets), so every rule here is unit-tested; what the
//! options mean at run time lives in [`super::run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// One measurement, or `compare` (all of them, for each implementation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Iamat,
    Idle,
    Flood,
    Whatsat,
    /// A steady open-loop IAMAT load (`--gc-rate`) with the runtime's GC
    /// traced: the tail a collection causes.
    Gc,
    Limit,
    /// One connection floods blank lines; a probe's IAMAT latency is measured.
    Fairness,
    /// A server restarted in a running herd: until it is linked both ways
    /// with its neighbours again (proxy-herd only).
    Relink,
    /// A line herd A - B - C loaded at A; B restarted empty and on its
    /// state file: time, bytes and client delays of the catch-ups.
    Catchup,
    /// N servers, ring plus chords: time to link, time for an update to
    /// reach all, messages per update.
    Herdsize,
    Compare,
}

impl Scenario {
    /// The name on the command line and in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Iamat => "iamat",
            Scenario::Idle => "idle",
            Scenario::Flood => "flood",
            Scenario::Whatsat => "whatsat",
            Scenario::Gc => "gc",
            Scenario::Limit => "limit",
            Scenario::Fairness => "fairness",
            Scenario::Relink => "relink",
            Scenario::Catchup => "catchup",
            Scenario::Herdsize => "herdsize",
            Scenario::Compare => "compare",
        }
    }

    fn parse(s: &str) -> Option<Scenario> {
        [
            Scenario::Iamat,
            Scenario::Idle,
            Scenario::Flood,
            Scenario::Whatsat,
            Scenario::Gc,
            Scenario::Limit,
            Scenario::Fairness,
            Scenario::Relink,
            Scenario::Catchup,
            Scenario::Herdsize,
            Scenario::Compare,
        ]
        .into_iter()
        .find(|sc| sc.name() == s)
    }
}

/// Which herd implementation is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    Rust,
    Asyncio,
    /// The asyncio herd on uvloop's event loop.
    Uvloop,
    /// `docs/node/herd.js`: Node.js, one event loop.
    Node,
    /// `docs/java/herd.sh`: Java 17, a thread per connection.
    Java,
    /// `docs/threads/herd.py`: Python, a thread per connection.
    Threads,
}

impl Impl {
    pub const ALL: [Impl; 6] = [
        Impl::Rust,
        Impl::Asyncio,
        Impl::Uvloop,
        Impl::Node,
        Impl::Java,
        Impl::Threads,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Impl::Rust => "rust",
            Impl::Asyncio => "asyncio",
            Impl::Uvloop => "uvloop",
            Impl::Node => "node",
            Impl::Java => "java",
            Impl::Threads => "threads",
        }
    }
}

/// Everything a run needs, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub scenario: Scenario,
    /// How long each measurement runs (warm-up included).
    pub duration: Duration,
    /// iamat and limit: concurrent connections.
    pub connections: usize,
    /// iamat, limit and flood: requests each connection keeps in flight.
    pub depth: usize,
    /// whatsat: concurrent clients.
    pub clients: usize,
    /// iamat: send at this many requests per second in all (open loop)
    /// instead of refilling on every reply.
    pub rate: Option<f64>,
    /// gc: the steady open-loop rate, requests per second in all.
    pub gc_rate: f64,
    /// idle: connections held open.
    pub idle: usize,
    pub impls: Vec<Impl>,
    pub json: Option<PathBuf>,
    pub svg: Option<PathBuf>,
    /// Running servers to measure instead of starting a herd.
    pub target: Vec<SocketAddr>,
    /// The pid of the first target, for its memory.
    pub pid: Option<u32>,
    /// Keep the temporary folder (herd file, logs).
    pub keep: bool,
    /// Measure a Rust herd with mutual TLS peer links beside each plaintext
    /// one (`rust+tls`).
    pub tls: bool,
    /// Start the Rust and asyncio servers with their HTTP endpoint on
    /// (`--http` on a free port), to measure what it costs.
    pub http: bool,
    /// catchup: positions loaded at A.
    pub positions: usize,
    /// catchup: which restarts to measure.
    pub cases: Cases,
    /// herdsize: servers in the herd.
    pub servers: usize,
}

/// The catchup scenario's restarts of B, in this order when both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cases {
    /// B killed and started again with nothing.
    pub empty: bool,
    /// B killed, changes sent to A, B started again on its state file.
    pub state: bool,
}

impl Cases {
    fn parse(s: &str) -> Option<Cases> {
        let mut c = Cases {
            empty: false,
            state: false,
        };
        for part in s.split(',') {
            match part {
                "empty" => c.empty = true,
                "state" => c.state = true,
                "both" => (c.empty, c.state) = (true, true),
                _ => return None,
            }
        }
        Some(c)
    }
}

/// catchup's default size, the first figure.
pub const DEFAULT_POSITIONS: usize = 100_000;
/// herdsize's default, the size of the default herd.
pub const DEFAULT_SERVERS: usize = 5;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Run(Options),
    Help(String),
}

/// The gc scenario's rate: below the slowest counterpart's peak on two
/// shared cores, so that the tail is the server's pauses, not its queue.
pub const DEFAULT_GC_RATE: f64 = 1000.0;

fn spec() -> getopts::Options {
    let mut o = getopts::Options::new();
    o.optopt(
        "d",
        "duration",
        "seconds per measurement, warm-up included (default 5)",
        "SECS",
    );
    o.optopt(
        "c",
        "connections",
        "iamat/limit: concurrent connections (default 64)",
        "N",
    );
    o.optopt(
        "",
        "depth",
        "iamat/limit/flood: requests in flight per connection (default 8)",
        "N",
    );
    o.optopt(
        "",
        "rate",
        "iamat: send N requests/s in all, on a schedule (still at most --depth in flight \
         per connection), to measure latency below the peak",
        "N",
    );
    o.optopt(
        "",
        "gc-rate",
        "gc: the steady open-loop IAMAT rate, requests/s in all (default 1000)",
        "N",
    );
    o.optopt(
        "",
        "clients",
        "whatsat: concurrent clients (default 16)",
        "N",
    );
    o.optopt(
        "",
        "idle",
        "idle: connections held open (default 10000; threads and RSS are read at 1, 100, 1000 \
         and 10000 on the way)",
        "N",
    );
    o.optopt(
        "",
        "impl",
        "rust, asyncio, uvloop, node, java, threads, a list of them, or all (default: all for \
         compare, else rust); all skips, loudly, those whose runtime or files are missing",
        "IMPL",
    );
    o.optopt("", "json", "also write the results as JSON to FILE", "FILE");
    o.optopt(
        "",
        "svg",
        "compare: also write the chart to FILE (docs/bench.svg is the committed one)",
        "FILE",
    );
    o.optopt(
        "",
        "target",
        "measure running servers instead of starting a herd (iamat, whatsat, idle: the first)",
        "ADDR[,ADDR...]",
    );
    o.optopt(
        "",
        "pid",
        "with --target: the first server's pid, for idle's memory",
        "PID",
    );
    o.optflag("", "keep", "keep the temporary folder (herd file, logs)");
    o.optflag(
        "",
        "tls",
        "also measure each scenario on a Rust herd whose peer links are mutual TLS \
         (rust+tls, beside rust; certificates made with `proxy-herd certs`), and report what TLS adds",
    );
    o.optflag(
        "",
        "http",
        "start the rust and asyncio servers with --http on a free port (their HTTP endpoint \
         on, nobody scraping), to measure what it costs",
    );
    o.optopt(
        "",
        "positions",
        "catchup: positions (distinct client IDs) loaded at A (default 100000)",
        "N",
    );
    o.optopt(
        "",
        "cases",
        "catchup: empty, state, or both (default both; the state case needs --state, \
         which only proxy-herd has)",
        "LIST",
    );
    o.optopt(
        "",
        "servers",
        "herdsize: servers in the herd, ring plus chords (default 5)",
        "N",
    );
    o.optflag("h", "help", "print this help");
    o
}

/// The `--help` text.
pub fn usage() -> String {
    let brief = "Usage: herd-bench [SCENARIO] [OPTIONS]\n\n\
        Drives a proxy-herd over 127.0.0.1 and prints a table (and JSON).\n\
        SCENARIO: iamat (default), idle, flood, whatsat, gc, limit, fairness, relink, catchup,\n\
        herdsize, compare.\n\
        catchup: a line herd Riley - Jaquez - Juzang, --positions loaded at Riley;\n\
        Jaquez killed and restarted empty, then on its state file after 250 changes;\n\
        time to converge, bytes on the links (counting proxies), probe clients' delays.\n\
        herdsize: --servers servers, each linked to i+-1 and i+-round(N/4); time until\n\
        linked, time for an update to reach every server, messages per update.\n\
        relink: Campbell restarted 7 times in a running herd, each time until it is\n\
        linked both ways with both neighbours (from its own log; proxy-herd only).\n\
        fairness: one connection floods blank lines while a probe sends one\n\
        IAMAT at a time; the probe's latency is what the flood costs others.\n\
        Without --target, starts the herd itself (release builds) with\n\
        places-offline, in a temporary folder, and stops it at the end.";
    spec().usage(brief)
}

/// Parses the arguments (without the program name); `Err` is a one-line message.
pub fn parse<I, S>(args: I) -> Result<Command, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let m = spec().parse(args).map_err(|e| e.to_string())?;
    if m.opt_present("help") {
        return Ok(Command::Help(usage()));
    }
    let scenario = match m.free.as_slice() {
        [] => Scenario::Iamat,
        [s] => Scenario::parse(s).ok_or_else(|| format!("unknown scenario {s:?}"))?,
        [_, extra, ..] => return Err(format!("unexpected argument {extra:?}")),
    };
    let secs: f64 = number(&m, "duration", 5.0)?;
    if !(0.1..=3600.0).contains(&secs) {
        return Err("--duration must be between 0.1 and 3600 seconds".into());
    }
    let connections = bounded(&m, "connections", 64, 1, 10_000)?;
    let depth = bounded(&m, "depth", 8, 1, 1024)?;
    let clients = bounded(&m, "clients", 16, 1, 10_000)?;
    let rate = match m.opt_str("rate") {
        None => None,
        Some(_) => {
            let r: f64 = number(&m, "rate", 0.0)?;
            if !(1.0..=10_000_000.0).contains(&r) {
                return Err("--rate must be between 1 and 10000000 requests per second".into());
            }
            Some(r)
        }
    };
    let gc_rate: f64 = number(&m, "gc-rate", DEFAULT_GC_RATE)?;
    if !(1.0..=10_000_000.0).contains(&gc_rate) {
        return Err("--gc-rate must be between 1 and 10000000 requests per second".into());
    }
    let idle = bounded(&m, "idle", 10_000, 1, 1_000_000)?;
    let impls = match m.opt_str("impl").as_deref() {
        None if scenario == Scenario::Compare => Impl::ALL.to_vec(),
        None => vec![Impl::Rust],
        Some("all") => Impl::ALL.to_vec(),
        Some(list) => list
            .split(',')
            .map(|s| {
                Impl::ALL
                    .into_iter()
                    .find(|i| i.name() == s)
                    .ok_or_else(|| format!("unknown implementation {s:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let target = match m.opt_str("target") {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|a| {
                let addr: SocketAddr = a
                    .parse()
                    .map_err(|_| format!("--target: bad address {a:?} (want IP:PORT)"))?;
                // Traffic stays on this machine.
                if !addr.ip().is_loopback() {
                    return Err(format!("--target: {a} is not a loopback address"));
                }
                Ok(addr)
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    if !target.is_empty()
        && !matches!(
            scenario,
            Scenario::Iamat | Scenario::Whatsat | Scenario::Idle
        )
    {
        return Err(format!(
            "--target works with iamat, whatsat and idle, not {}",
            scenario.name()
        ));
    }
    let pid = match m.opt_str("pid") {
        None => None,
        Some(p) => Some(p.parse().map_err(|_| format!("--pid: bad pid {p:?}"))?),
    };
    if pid.is_some() && target.is_empty() {
        return Err("--pid goes with --target".into());
    }
    let tls = m.opt_present("tls");
    if tls && !target.is_empty() {
        return Err("--tls starts its own herds: not with --target".into());
    }
    if tls && !impls.contains(&Impl::Rust) {
        return Err("--tls measures proxy-herd: --impl must include rust".into());
    }
    let positions = bounded(&m, "positions", DEFAULT_POSITIONS, 1, 10_000_000)?;
    let cases = match m.opt_str("cases") {
        None => Cases {
            empty: true,
            state: true,
        },
        Some(s) => Cases::parse(&s)
            .ok_or_else(|| format!("--cases: want empty, state or both, not {s:?}"))?,
    };
    let servers = bounded(&m, "servers", DEFAULT_SERVERS, 2, 200)?;
    if tls && matches!(scenario, Scenario::Catchup | Scenario::Herdsize) {
        return Err(format!("--tls is not measured by {}", scenario.name()));
    }
    // Only where asked: a run must not overwrite the committed docs/bench.svg.
    let svg = m.opt_str("svg").map(PathBuf::from);
    Ok(Command::Run(Options {
        scenario,
        duration: Duration::from_secs_f64(secs),
        connections,
        depth,
        clients,
        rate,
        gc_rate,
        idle,
        impls,
        json: m.opt_str("json").map(PathBuf::from),
        svg,
        target,
        pid,
        keep: m.opt_present("keep"),
        tls,
        http: m.opt_present("http"),
        positions,
        cases,
        servers,
    }))
}

fn number<T: std::str::FromStr>(m: &getopts::Matches, name: &str, default: T) -> Result<T, String> {
    match m.opt_str(name) {
        None => Ok(default),
        Some(s) => s.parse().map_err(|_| format!("--{name}: bad number {s:?}")),
    }
}

fn bounded(
    m: &getopts::Matches,
    name: &str,
    default: usize,
    min: usize,
    max: usize,
) -> Result<usize, String> {
    let n = number(m, name, default)?;
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(format!("--{name} must be between {min} and {max}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Options {
        match parse(args) {
            Ok(Command::Run(o)) => o,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let o = run(&[]);
        assert_eq!(o.scenario, Scenario::Iamat);
        assert_eq!(o.duration, Duration::from_secs(5));
        assert_eq!(
            (o.connections, o.depth, o.clients, o.idle),
            (64, 8, 16, 10_000)
        );
        assert_eq!(o.impls, vec![Impl::Rust]);
        assert!(o.target.is_empty() && o.json.is_none() && o.svg.is_none() && !o.keep);
    }

    #[test]
    fn compare_defaults_to_all_impls_and_writes_a_chart_only_where_asked() {
        let o = run(&["compare"]);
        assert_eq!(o.impls, Impl::ALL.to_vec());
        assert_eq!(o.svg, None);
        let o = run(&["compare", "--impl", "rust", "--svg", "x.svg"]);
        assert_eq!(o.impls, vec![Impl::Rust]);
        assert_eq!(o.svg, Some(PathBuf::from("x.svg")));
    }

    #[test]
    fn options_are_read() {
        let o = run(&[
            "iamat",
            "--duration",
            "1.5",
            "-c",
            "4",
            "--depth",
            "2",
            "--impl",
            "rust,asyncio,node,java,threads",
            "--json",
            "out.json",
            "--keep",
        ]);
        assert_eq!(o.duration, Duration::from_millis(1500));
        assert_eq!((o.connections, o.depth), (4, 2));
        assert_eq!(
            o.impls,
            vec![
                Impl::Rust,
                Impl::Asyncio,
                Impl::Node,
                Impl::Java,
                Impl::Threads
            ]
        );
        assert_eq!(o.json, Some(PathBuf::from("out.json")));
        assert!(o.keep);
    }

    #[test]
    fn rate_is_read() {
        assert_eq!(run(&[]).rate, None);
        assert_eq!(run(&["iamat", "--rate", "58000"]).rate, Some(58000.0));
        assert_eq!(run(&[]).gc_rate, DEFAULT_GC_RATE);
        assert_eq!(run(&["gc", "--gc-rate", "500"]).gc_rate, 500.0);
    }

    #[test]
    fn http_is_off_unless_asked() {
        assert!(!run(&[]).http);
        assert!(run(&["iamat", "--http"]).http);
    }

    #[test]
    fn target_and_pid() {
        let o = run(&[
            "idle",
            "--target",
            "127.0.0.1:12000,[::1]:12001",
            "--pid",
            "42",
        ]);
        assert_eq!(o.target.len(), 2);
        assert_eq!(o.pid, Some(42));
    }

    #[test]
    fn bad_command_lines_are_refused() {
        for args in [
            &["nosuch"][..],
            &["iamat", "extra"],
            &["--duration", "0"],
            &["--duration", "x"],
            &["--connections", "0"],
            &["--depth", "100000"],
            &["--impl", "go"],
            &["--gc-rate", "0"],
            &["--target", "10.0.0.1:80"],
            &["--target", "localhost"],
            &["flood", "--target", "127.0.0.1:1"],
            &["--pid", "1"],
            &["--rate", "0"],
            &["--rate", "fast"],
            &["--bogus"],
        ] {
            assert!(parse(args).is_err(), "{args:?} accepted");
        }
    }

    #[test]
    fn catchup_and_herdsize_options() {
        let o = run(&["catchup"]);
        assert_eq!(o.scenario, Scenario::Catchup);
        assert_eq!(o.positions, DEFAULT_POSITIONS);
        assert!(o.cases.empty && o.cases.state);
        let o = run(&["catchup", "--positions", "2000000", "--cases", "empty"]);
        assert_eq!(o.positions, 2_000_000);
        assert!(o.cases.empty && !o.cases.state);
        let o = run(&["catchup", "--cases", "state,empty"]);
        assert!(o.cases.empty && o.cases.state);
        let o = run(&["herdsize", "--servers", "50"]);
        assert_eq!((o.scenario, o.servers), (Scenario::Herdsize, 50));
        assert_eq!(run(&[]).servers, DEFAULT_SERVERS);
        for args in [
            &["catchup", "--positions", "0"][..],
            &["catchup", "--positions", "many"],
            &["catchup", "--cases", "full"],
            &["catchup", "--cases", ""],
            &["catchup", "--tls"],
            &["herdsize", "--servers", "1"],
            &["herdsize", "--servers", "1000"],
        ] {
            assert!(parse(args).is_err(), "{args:?} accepted");
        }
    }

    #[test]
    fn help() {
        assert!(matches!(parse(["--help"]), Ok(Command::Help(t)) if t.contains("--duration")));
    }
}
