//! `herd-bench`: drives a herd over 127.0.0.1 and reports what it measured
//! (docs/spec.md §9). This file runs the scenarios in order and owns the
//! error type; each part lives in its own file:
//!
//! - [`args`]: the command line.
//! - [`launch`]: places-offline, herds of either implementation, temporary
//!   folders, and stopping it all (a guard with `Drop`).
//! - [`load`]: the load generator (one `mio` loop, many pipelining clients),
//!   for the iamat, whatsat and limit scenarios.
//! - [`limit`]: the bare line server that sets the iamat ceiling.
//! - [`flood`]: propagation to the farthest server, the bench playing a
//!   neighbour (`Observer`).
//! - [`idle`]: memory per idle connection, threads and RSS at 1 to 10,000.
//! - [`procstat`]: threads and context switches from `/proc/PID/task`.
//! - [`gclog`]: the runtimes' own GC accounts, for the gc scenario.
//! - [`stats`]: percentiles; [`report`]: tables and JSON; [`svg`]: the chart.

pub mod args;
pub mod catchup;
pub mod fairness;
pub mod flood;
pub mod gclog;
pub mod herdsize;
pub mod idle;
pub mod launch;
pub mod limit;
pub mod load;
pub mod peercost;
pub mod procstat;
pub mod relink;
pub mod report;
pub mod stats;
pub mod svg;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use args::{Impl, Options, Scenario};
use launch::{Flavour, Processes, TempDir};
use load::{LoadSpec, Workload};
use report::{Header, Measurement, Outcome, Report};

/// What went wrong, as one line for the user.
#[derive(Debug)]
pub struct Error(String);

impl Error {
    pub fn new(msg: impl Into<String>) -> Error {
        Error(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(e: String) -> Error {
        Error(e)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error(e.to_string())
    }
}

static INTERRUPTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Makes SIGINT and SIGTERM end every loop early, so that the guards' `Drop`
/// still stops the servers the bench started.
pub fn catch_signals() -> Result<(), Error> {
    let flag = INTERRUPTED.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(flag))?;
    }
    Ok(())
}

/// True once SIGINT or SIGTERM arrived: every loop checks this.
pub fn interrupted() -> bool {
    INTERRUPTED.get().is_some_and(|f| f.load(Ordering::Relaxed))
}

/// The warm-up not counted at the start of each measurement.
pub fn warmup(duration: Duration) -> Duration {
    (duration / 5).min(Duration::from_secs(1))
}

/// The facts of the header: date, cores, kernel, commit.
fn header(opts: &Options, setup: String) -> Header {
    let mut date = String::new();
    proxy_log_timestamp(&mut date);
    let root = launch::repo_root();
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = match git(&["rev-parse", "--short", "HEAD"]) {
        Some(c)
            if git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty()) =>
        {
            format!("{c}+dirty")
        }
        Some(c) => c,
        None => "unknown".into(),
    };
    Header {
        date,
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".into(), |k| k.trim().to_string()),
        commit,
        // The three averages only: what else runs on the cores matters.
        loadavg: std::fs::read_to_string("/proc/loadavg").map_or_else(
            |_| "unknown".into(),
            |l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        ),
        bench_build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        servers_from: std::env::var_os(launch::BIN_DIR_ENV)
            .map(|d| std::path::PathBuf::from(d).display().to_string()),
        duration_s: opts.duration.as_secs_f64(),
        warmup_s: warmup(opts.duration).as_secs_f64(),
        connections: opts.connections,
        depth: opts.depth,
        clients: opts.clients,
        idle: opts.idle,
        gc_rate: opts.gc_rate,
        setup,
    }
}

fn proxy_log_timestamp(out: &mut String) {
    proxy_herd::log::write_timestamp(out, SystemTime::now());
}

/// Runs what `opts` asks for and returns the report (failed measurements are
/// in it, marked as such; `Err` is for failures that stop the whole run).
pub fn run(opts: &Options) -> Result<Report, Error> {
    if opts.target.is_empty() {
        run_started(opts)
    } else {
        run_target(opts)
    }
}

fn progress(what: &str) {
    eprintln!("herd-bench: {what}");
}

fn load_spec(
    opts: &Options,
    addr: SocketAddr,
    sc: Scenario,
    tag: &str,
    watch: Option<u32>,
) -> LoadSpec {
    let (connections, workload) = match sc {
        Scenario::Whatsat => (opts.clients, Workload::Whatsat),
        _ => (opts.connections, Workload::Iamat { depth: opts.depth }),
    };
    let rate = match sc {
        Scenario::Whatsat => None,
        Scenario::Gc => Some(opts.gc_rate),
        _ => opts.rate,
    };
    // A fresh JIT (Java, Node) is still compiling after the usual warm-up:
    // gc runs twice as long and counts only its second half, so the tail is
    // the steady state's.
    let (warmup, duration) = match sc {
        Scenario::Gc => (opts.duration, 2 * opts.duration),
        _ => (warmup(opts.duration), opts.duration),
    };
    LoadSpec {
        addr,
        connections,
        workload,
        warmup,
        duration,
        tag: tag.to_string(),
        rate,
        watch,
        marks: Vec::new(),
        cpu_of: Vec::new(),
    }
}

fn outcome(r: Result<Outcome, Error>) -> Outcome {
    r.unwrap_or_else(|e| Outcome::Failed(e.to_string()))
}

/// `--target`: iamat, whatsat or idle against the first address.
fn run_target(opts: &Options) -> Result<Report, Error> {
    let addr = opts
        .target
        .first()
        .copied()
        .ok_or_else(|| Error::new("no target"))?;
    let setup = format!(
        "--target {addr} (servers started elsewhere{})",
        opts.pid.map_or(String::new(), |p| format!(", pid {p}"))
    );
    let mut report = Report {
        header: header(opts, setup),
        measurements: Vec::new(),
    };
    progress(&format!("{} against {addr}", opts.scenario.name()));
    let result = match opts.scenario {
        Scenario::Idle => idle::run(addr, opts.pid, opts.idle).map(Outcome::Idle),
        Scenario::Fairness => measure_fairness(opts, addr, "target"),
        sc => load::run(&load_spec(opts, addr, sc, "target", opts.pid)).map(Outcome::Load),
    };
    report.measurements.push(Measurement {
        implementation: "target".into(),
        scenario: opts.scenario,
        outcome: outcome(result),
    });
    Ok(report)
}

/// Starts herds (and places-offline) and measures them.
fn run_started(opts: &Options) -> Result<Report, Error> {
    let scenarios: Vec<Scenario> = match opts.scenario {
        Scenario::Compare => vec![
            Scenario::Iamat,
            Scenario::Whatsat,
            Scenario::Flood,
            Scenario::Idle,
            Scenario::Gc,
        ],
        Scenario::Limit => Vec::new(),
        sc => vec![sc],
    };
    let setup = if scenarios.is_empty() {
        "the bench's own bare line server only".to_string()
    } else if opts.scenario == Scenario::Catchup {
        format!(
            "a line herd {} - {} - {} ({}'s neighbours dialled through counting proxies), \
             {} positions loaded at {}; places-offline",
            catchup::A,
            catchup::B,
            catchup::C,
            catchup::B,
            opts.positions,
            catchup::A
        )
    } else if opts.scenario == Scenario::Herdsize {
        format!(
            "{} servers, ring plus chords (i+-1, i+-{}); places-offline",
            opts.servers,
            herdsize::chord(opts.servers)
        )
    } else {
        format!(
            "the default herd (5 servers) started per implementation and scenario, load at {}; \
             places-offline; flood adds an Observer linked to {} only",
            flood::ORIGIN,
            flood::FAR
        )
    };
    let mut report = Report {
        header: header(opts, setup),
        measurements: Vec::new(),
    };
    let dir = TempDir::new(opts.keep)?;
    // Declared after `dir`, so dropped (stopped) before the folder goes.
    let mut services = Processes::default();
    let places_url = if scenarios.is_empty() {
        String::new()
    } else {
        progress("starting places-offline");
        launch::start_places(&mut services, &dir.path)?
    };
    for &imp in &opts.impls {
        let why_not =
            launch::unavailable(imp).or_else(|| launch::prepare(imp).err().map(|e| e.to_string()));
        if let Some(why) = &why_not {
            progress(&format!("SKIPPED {}: {why}", imp.name()));
        }
        // With --tls, each Rust scenario on a plaintext herd, then at once
        // on a TLS one, so that both see the same load from the machine.
        let flavours: Vec<Flavour> = [false, true]
            .into_iter()
            .filter(|&tls| !tls || (opts.tls && imp == Impl::Rust))
            .map(|tls| Flavour { imp, tls })
            .collect();
        for &sc in &scenarios {
            for &flavour in &flavours {
                if interrupted() {
                    return Err(Error::new("interrupted"));
                }
                let label = flavour.label();
                let result = match &why_not {
                    Some(why) => Outcome::Skipped(why.clone()),
                    None if matches!(sc, Scenario::Relink | Scenario::Herdsize)
                        && imp != Impl::Rust =>
                    {
                        Outcome::Skipped(format!("{} reads proxy-herd's own log lines", sc.name()))
                    }
                    None => {
                        progress(&format!("{label} {}", sc.name()));
                        outcome(measure(opts, flavour, sc, &places_url, &dir.path))
                    }
                };
                report.measurements.push(Measurement {
                    implementation: label,
                    scenario: sc,
                    outcome: result,
                });
            }
        }
    }
    if matches!(opts.scenario, Scenario::Limit | Scenario::Compare) && !interrupted() {
        progress("limit (bare line server in the bench)");
        report.measurements.push(Measurement {
            implementation: "limit".into(),
            scenario: Scenario::Limit,
            outcome: outcome(measure_limit(opts)),
        });
    }
    Ok(report)
}

/// One scenario against a fresh herd of `imp`, so that no scenario inherits
/// another's heap (which would hide idle connections' memory) or backlog.
fn measure(
    opts: &Options,
    flavour: Flavour,
    sc: Scenario,
    places_url: &str,
    root: &Path,
) -> Result<Outcome, Error> {
    let imp = flavour.imp;
    let dir = root.join(format!("{}-{}", flavour.label(), sc.name()));
    std::fs::create_dir_all(&dir)?;
    let n = launch::DEFAULT_NAMES.len() + 1;
    let flat = launch::free_ports(2 * n)?;
    let mut ports: Vec<(u16, u16)> = flat.chunks(2).map(|p| (p[0], p[1])).collect();
    let mut procs = Processes::default();
    if sc == Scenario::Flood {
        let observer = flood::Observer::bind()?;
        // Observer is the last server of the herd: its peer port is the one
        // the bench already listens on.
        if let Some(last) = ports.last_mut() {
            last.1 = observer.addr()?.port();
        }
        let specs = launch::herd_specs(&ports, &[(flood::FAR, flood::OBSERVER)])?;
        let started = launch::start_herd(
            flavour,
            &specs,
            &[flood::OBSERVER],
            places_url,
            launch::ServerFlags {
                trace_gc: false,
                http: opts.http,
            },
            &mut procs,
            &dir,
        )?;
        // Observer speaks TLS with the certificate made for it.
        let tls = match &started.tls_dir {
            Some(d) => {
                let files = proxy_herd::tls::peer::PeerTlsFiles {
                    cert: d.join(format!("{}.pem", flood::OBSERVER)),
                    key: d.join(format!("{}.key", flood::OBSERVER)),
                    ca: d.join("ca.pem"),
                };
                Some(proxy_herd::tls::peer::PeerTls::load(
                    &files,
                    flood::OBSERVER,
                )?)
            }
            None => None,
        };
        let addr_of = |name: &str| {
            specs
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| Error::new(format!("{name} not in the herd")))
        };
        let far_peer = addr_of(flood::FAR)?.peer;
        let origin = addr_of(flood::ORIGIN)?.client;
        return observer
            .run(
                far_peer,
                origin,
                opts.depth,
                warmup(opts.duration),
                opts.duration,
                tls.as_ref(),
            )
            .map(Outcome::Flood);
    }
    match sc {
        Scenario::Catchup => {
            return catchup::run(imp, opts.positions, opts.cases, places_url, &dir)
                .map(|r| Outcome::Catchup(Box::new(r)))
        }
        Scenario::Herdsize => {
            return herdsize::run(flavour, opts.servers, places_url, &dir).map(Outcome::Herdsize)
        }
        _ => {}
    }
    let specs = launch::herd_specs(&ports, &[])?;
    let flags = launch::ServerFlags {
        trace_gc: sc == Scenario::Gc,
        http: opts.http,
    };
    let started = launch::start_herd(flavour, &specs, &[], places_url, flags, &mut procs, &dir)?;
    if sc == Scenario::Relink {
        return relink::run(&started, &specs, &mut procs).map(Outcome::Relink);
    }
    let target = specs.first().ok_or_else(|| Error::new("empty herd"))?;
    let tag = format!("{}-{}", imp.name(), sc.name());
    let server_tag = format!("{}-{}", imp.name(), target.name);
    let pid = procs.pid(&server_tag);
    match sc {
        Scenario::Idle => {
            let (result, held) = idle::run_holding(target.client, pid, opts.idle)?;
            // The herd stops first, then the connections close.
            drop(procs);
            drop(held);
            Ok(Outcome::Idle(result))
        }
        Scenario::Fairness => measure_fairness(opts, target.client, &tag),
        Scenario::Gc => {
            let trace = launch::gc_trace(imp, &dir, &server_tag);
            let mut spec = load_spec(opts, target.client, sc, &tag, pid);
            spec.marks
                .extend(trace.iter().map(|(_, file)| file.clone()));
            let load = load::run(&spec)?;
            // Every runtime here writes its account line by line as it goes
            // (checked: Node's --trace-gc, -Xlog, line-buffered Python), so
            // the bytes written in the window are the window's collections.
            let gc = trace.map(|(format, file)| {
                let text = std::fs::read(&file).unwrap_or_default();
                let (from, to) = load.marks.first().copied().unwrap_or((0, 0));
                let window = text
                    .get(from as usize..(to as usize).min(text.len()))
                    .unwrap_or_default();
                gclog::account(format, &String::from_utf8_lossy(window))
            });
            Ok(Outcome::Gc(report::GcResult { load, gc }))
        }
        _ => {
            if sc == Scenario::Whatsat {
                if let Err(e) = load::warm_places(target.client, load::WARM_DEADLINE) {
                    progress(&format!("{} whatsat: {e} (measuring anyway)", imp.name()));
                }
            }
            let mut spec = load_spec(opts, target.client, sc, &tag, pid);
            // The whole herd's CPU: an IAMAT at Riley is flooded on by all.
            spec.cpu_of = procs.pids();
            if sc == Scenario::Iamat {
                // Each server's CPU and log, in the herd's order, for the
                // cost of a peer message.
                let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
                spec.cpu_of = names
                    .iter()
                    .filter_map(|n| procs.pid(&started.tag(n)))
                    .collect();
                spec.marks = names.iter().map(|n| started.log(n)).collect();
                let mut load = load::run(&spec)?;
                if spec.cpu_of.len() == names.len() {
                    load.servers = server_costs(&names, &load, &spec.marks);
                }
                return Ok(Outcome::Load(load));
            }
            load::run(&spec).map(Outcome::Load)
        }
    }
}

/// Each server's CPU, peer updates and log growth in an iamat window, from
/// the window's CPU figures and the log lengths at its edges.
fn server_costs(
    names: &[&str],
    load: &load::LoadResult,
    logs: &[std::path::PathBuf],
) -> Vec<peercost::ServerCost> {
    // More than this in one window is not a log worth counting in memory.
    const MAX_WINDOW: u64 = 1 << 30;
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (from, to) = load.marks.get(i).copied().unwrap_or((0, 0));
            let text = logs
                .get(i)
                .and_then(|p| peercost::window(p, from, to, MAX_WINDOW).ok())
                .unwrap_or_default();
            let (peer_updates, log_lines) = peercost::count(&text);
            peercost::ServerCost {
                name: name.to_string(),
                cpu_ns: load.cpu_each_ns.get(i).copied().flatten(),
                peer_updates,
                log_lines,
                log_bytes: to.saturating_sub(from),
            }
        })
        .collect()
}

/// The fairness scenario: a probe (one connection, one IAMAT at a time)
/// while another connection floods blank lines; the probe's latency is
/// what one flooding client costs everyone else.
fn measure_fairness(opts: &Options, addr: SocketAddr, tag: &str) -> Result<Outcome, Error> {
    let flooder = fairness::Flooder::start(addr, opts.duration + Duration::from_secs(5))?;
    let mut spec = load_spec(opts, addr, Scenario::Iamat, tag, None);
    spec.connections = 1;
    spec.workload = Workload::Iamat { depth: 1 };
    spec.rate = None;
    let result = load::run(&spec);
    let flooded = flooder.stop();
    progress(&format!(
        "fairness: the flooder sent {} MB meanwhile",
        flooded / 1_000_000
    ));
    result.map(Outcome::Load)
}

/// The iamat load against the bench's own bare line server.
fn measure_limit(opts: &Options) -> Result<Outcome, Error> {
    let tag = "limit";
    let id_len = format!("hb-{}-{tag}-{}", std::process::id(), opts.connections - 1).len();
    let server = limit::start(limit::fixed_reply(id_len))?;
    let result = load::run(&load_spec(opts, server.addr, Scenario::Iamat, tag, None));
    drop(server);
    result.map(Outcome::Load)
}

/// Writes `text` to `path`, creating its folder.
pub fn write_file(path: &Path, text: &str) -> Result<(), Error> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::new(format!("create {}: {e}", dir.display())))?;
    }
    std::fs::write(path, text).map_err(|e| Error::new(format!("write {}: {e}", path.display())))
}

/// The whole program after argument parsing: run, print, write files.
/// Returns the exit status: 0, or 1 when a measurement failed.
pub fn main_with(opts: &Options) -> Result<i32, Error> {
    catch_signals()?;
    let report = run(opts)?;
    if interrupted() {
        // A cut-short window would print misleading figures.
        return Err(Error::new(
            "interrupted: the servers are stopped, nothing reported",
        ));
    }
    print!("{}", report.text());
    if let Some(path) = &opts.json {
        let text = serde_json::to_string_pretty(&report.json())
            .map_err(|e| Error::new(format!("JSON: {e}")))?;
        write_file(path, &(text + "\n"))?;
        progress(&format!("wrote {}", path.display()));
    }
    if let Some(path) = &opts.svg {
        let h = &report.header;
        let title = format!(
            "proxy-herd herd-bench, {} (nproc {}, {}, commit {})",
            h.date.get(..10).unwrap_or(&h.date),
            h.nproc,
            h.kernel,
            h.commit
        );
        let svg = svg::chart(&title, &report.implementations(), &report.metrics());
        write_file(path, &svg)?;
        progress(&format!("wrote {}", path.display()));
    }
    let failed = report
        .measurements
        .iter()
        .any(|m| matches!(m.outcome, Outcome::Failed(_)));
    Ok(if failed { 1 } else { 0 })
}
