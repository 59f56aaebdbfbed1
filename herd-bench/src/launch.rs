//! Starting what the bench measures: `places-offline`, a herd of any
//! implementation (Rust, or a counterpart from `docs/`, started as
//! `tests/common/mod.rs` starts it) (written as a herd file with free ports), in a temporary
//! folder; and stopping all of it again, also on errors and panics, through
//! [`Processes`]'s `Drop`.
//!
//! Nothing here sleeps for a fixed time: every wait polls a condition until a
//! deadline and says what it was waiting for when it gives up.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::args::Impl;
use super::gclog::GcFormat;
use super::Error;

/// How long a process may take to start listening: five JVMs starting at
/// once on two cores that other builds share take seconds each.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long a process may take to stop after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(3);
/// The key the herd sends to places-offline (any key will do there).
pub const API_KEY: &str = "bench-key";

/// The repository: binaries, the CA, the asyncio herd.
pub fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Overrides where `proxy-herd` and `places-offline` are taken from (the
/// integration test points it at the binaries cargo built for the test).
pub const BIN_DIR_ENV: &str = "HERD_BENCH_BIN_DIR";

/// The folder holding the server binaries: `target/release` unless
/// [`BIN_DIR_ENV`] says otherwise.
pub fn bin_dir() -> PathBuf {
    std::env::var_os(BIN_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/release"))
}

/// One server of a herd to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    pub name: String,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub neighbours: Vec<String>,
}

/// The default herd's links (docs/spec.md §2).
pub const DEFAULT_LINKS: [(&str, &str); 6] = [
    ("Riley", "Jaquez"),
    ("Riley", "Juzang"),
    ("Jaquez", "Bernard"),
    ("Juzang", "Bernard"),
    ("Juzang", "Campbell"),
    ("Bernard", "Campbell"),
];
/// The default herd's servers, in docs/spec.md's order.
pub const DEFAULT_NAMES: [&str; 5] = ["Riley", "Jaquez", "Juzang", "Campbell", "Bernard"];

/// The default herd on the given (client, peer) ports, plus `extra` links
/// (for the flood observer). Names in `extra` that are not in the default
/// herd become servers too, in the order they first appear.
pub fn herd_specs(ports: &[(u16, u16)], extra: &[(&str, &str)]) -> Result<Vec<ServerSpec>, Error> {
    let mut names: Vec<&str> = DEFAULT_NAMES.to_vec();
    for &(a, b) in extra {
        for n in [a, b] {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    if ports.len() < names.len() {
        return Err(Error::new("not enough ports for the herd"));
    }
    let links: Vec<(&str, &str)> = DEFAULT_LINKS.iter().chain(extra).copied().collect();
    Ok(names
        .iter()
        .zip(ports)
        .map(|(&name, &(client, peer))| ServerSpec {
            name: name.to_string(),
            client: SocketAddr::from(([127, 0, 0, 1], client)),
            peer: SocketAddr::from(([127, 0, 0, 1], peer)),
            neighbours: links
                .iter()
                .filter_map(|&(a, b)| match (a == name, b == name) {
                    (true, _) => Some(b.to_string()),
                    (_, true) => Some(a.to_string()),
                    _ => None,
                })
                .collect(),
        })
        .collect())
}

/// The herd file text (docs/spec.md §2) for `servers`.
pub fn herd_file(servers: &[ServerSpec]) -> String {
    let mut s = String::from("# written by herd-bench\n");
    for srv in servers {
        let _ = writeln!(
            s,
            "{} {} peer={} {}",
            srv.name,
            srv.client,
            srv.peer,
            srv.neighbours.join(" ")
        );
    }
    s
}

/// `n` distinct free ports on 127.0.0.1: bound to port 0 all at once (so they
/// differ), then released for the servers to take.
pub fn free_ports(n: usize) -> Result<Vec<u16>, Error> {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Below the kernel's ephemeral range (32768 and up), so that no outgoing
    // connection (the load generator's, a test client's) can take a port
    // between this check and the server's bind, as one from bind(0) could;
    // and away from the default herd's 12000-12004 and the test harness's
    // 20100-29100.
    const FIRST: u32 = 13_000;
    const SPAN: u32 = 7_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    let _ = NEXT.compare_exchange(u32::MAX, seed % SPAN, Ordering::Relaxed, Ordering::Relaxed);
    // Held until all n are found, so that they differ.
    let mut held = Vec::with_capacity(n);
    for _ in 0..SPAN {
        if held.len() == n {
            break;
        }
        let port = FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
            held.push(l);
        }
    }
    if held.len() < n {
        return Err(Error::new(format!(
            "fewer than {n} free ports in {FIRST}..{}",
            FIRST + SPAN
        )));
    }
    Ok(held
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()?)
}

/// A scratch folder: removed on drop unless kept.
pub struct TempDir {
    pub path: PathBuf,
    pub keep: bool,
}

impl TempDir {
    pub fn new(keep: bool) -> Result<TempDir, Error> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let path = std::env::temp_dir().join(format!("herd-bench-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&path)
            .map_err(|e| Error::new(format!("create {}: {e}", path.display())))?;
        Ok(TempDir { path, keep })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("herd-bench: kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// What we started, stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Default)]
pub struct Processes {
    children: Vec<(String, Child)>,
}

impl Processes {
    fn push(&mut self, name: &str, child: Child) {
        self.children.push((name.to_string(), child));
    }

    /// The pid of the process started as `name`.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.children
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.id())
    }

    /// The pids of every process started.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|(_, c)| c.id()).collect()
    }

    /// Stops the process started as `name` (SIGTERM, then SIGKILL past the
    /// deadline) and forgets it.
    pub fn stop(&mut self, name: &str) {
        let Some(i) = self.children.iter().position(|(n, _)| n == name) else {
            return;
        };
        let (_, mut child) = self.children.remove(i);
        terminate(std::slice::from_mut(&mut child));
    }

    /// SIGKILL to the process started as `name` (no flush, no goodbye: a
    /// crash), waits for it, and forgets it.
    pub fn kill(&mut self, name: &str) {
        let Some(i) = self.children.iter().position(|(n, _)| n == name) else {
            return;
        };
        let (_, mut child) = self.children.remove(i);
        let _ = child.kill();
        let _ = child.wait();
    }

    /// `Err` naming the first process that has already exited.
    pub fn check_alive(&mut self, dir: &Path) -> Result<(), Error> {
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                let stderr =
                    std::fs::read_to_string(dir.join(format!("{name}.stderr"))).unwrap_or_default();
                return Err(Error::new(format!(
                    "{name} exited ({status}): {}",
                    stderr.trim()
                )));
            }
        }
        Ok(())
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        let mut children: Vec<Child> = self.children.drain(..).map(|(_, c)| c).collect();
        terminate(&mut children);
    }
}

/// SIGTERM to each (it lets servers flush their logs, kept with --keep; std
/// only sends SIGKILL, so ask kill(1)), then SIGKILL to those still running
/// at the deadline; waits for all.
fn terminate(children: &mut [Child]) {
    for child in children.iter() {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stderr(Stdio::null())
            .status();
    }
    let deadline = Instant::now() + STOP_DEADLINE;
    for child in children.iter_mut() {
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

/// Starts `places-offline` on a free port; returns its Places URL.
pub fn start_places(procs: &mut Processes, dir: &Path) -> Result<String, Error> {
    let root = repo_root();
    let bin = bin_dir().join("places-offline");
    if !bin.exists() {
        return Err(Error::new(format!(
            "{} is missing: run `cargo build --release --bin places-offline`",
            bin.display()
        )));
    }
    let mut child = Command::new(&bin)
        .args(["--listen", "127.0.0.1:0"])
        .arg("--data")
        .arg(root.join("data/places/cities1000.tsv"))
        .arg("--cert")
        .arg(root.join("data/tls/server.pem"))
        .arg("--key")
        .arg(root.join("data/tls/server.key"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("places-offline.stderr"))?)
        .spawn()
        .map_err(|e| Error::new(format!("start {}: {e}", bin.display())))?;
    let stdout = child.stdout.take();
    procs.push("places-offline", child);
    let stdout = stdout.ok_or_else(|| Error::new("places-offline: no stdout"))?;
    // Read its first line in a helper thread, so the wait has a deadline.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(START_DEADLINE)
        .map_err(|_| Error::new("places-offline did not say where it listens"))?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .ok_or_else(|| Error::new(format!("places-offline said {:?}", line.trim())))?;
    Ok(format!("https://{addr}/maps/api/place/nearbysearch/json"))
}

/// True if `program ARGS` runs and exits 0.
fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The counterpart's file, relative to the repository.
fn counterpart_file(imp: Impl) -> Option<&'static str> {
    match imp {
        Impl::Rust => None,
        Impl::Asyncio | Impl::Uvloop => Some("docs/asyncio/herd.py"),
        Impl::Node => Some("docs/node/herd.js"),
        Impl::Java => Some("docs/java/herd.sh"),
        Impl::Threads => Some("docs/threads/herd.py"),
    }
}

/// Why an implementation cannot be measured here, if it cannot: its
/// runtime or its files are missing.
pub fn unavailable(imp: Impl) -> Option<String> {
    if imp == Impl::Rust {
        let bin = bin_dir().join("proxy-herd");
        return (!bin.exists()).then(|| {
            format!(
                "{} is missing: run `cargo build --release --bin proxy-herd`",
                bin.display()
            )
        });
    }
    if let Some(file) = counterpart_file(imp) {
        let path = repo_root().join(file);
        if !path.exists() {
            return Some(format!("{file} is not in this tree yet"));
        }
    }
    let (program, args): (&str, Vec<String>) = match imp {
        Impl::Asyncio => ("python3", vec!["-c".into(), "import asyncio".into()]),
        Impl::Uvloop => ("python3", vec!["-c".into(), "import uvloop".into()]),
        Impl::Threads => ("python3", vec!["-c".into(), "import threading".into()]),
        Impl::Node => ("node", vec!["--version".into()]),
        Impl::Java => ("javac", vec!["-version".into()]),
        Impl::Rust => return None,
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if !runs(program, &args) {
        return Some(format!("`{program} {}` fails", args.join(" ")));
    }
    if imp == Impl::Java && !runs("java", &["-version"]) {
        return Some("`java -version` fails".into());
    }
    None
}

/// Work an implementation needs once before its servers start, outside any
/// listening deadline: herd.sh compiles the Java counterpart on first use
/// (`--version` compiles, prints and exits).
pub fn prepare(imp: Impl) -> Result<(), Error> {
    if imp != Impl::Java {
        return Ok(());
    }
    let out = Command::new(repo_root().join("docs/java/herd.sh"))
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::new(format!("docs/java/herd.sh --version: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "docs/java/herd.sh --version failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Where server `tag` of `imp` writes its GC account in the gc scenario,
/// and in which format; `None` for Rust, which has no collector.
pub fn gc_trace(imp: Impl, dir: &Path, tag: &str) -> Option<(GcFormat, PathBuf)> {
    match imp {
        Impl::Rust => None,
        // --trace-gc prints to stdout, which goes to this file.
        Impl::Node => Some((GcFormat::Node, dir.join(format!("{tag}.stdout")))),
        Impl::Java => Some((GcFormat::Java, dir.join(format!("{tag}.gc")))),
        // HERD_GC_LOG=1 puts the account in the herd log.
        Impl::Threads => Some((GcFormat::Python, dir.join(format!("{tag}.log")))),
        // herd.py has no switch for it: the bench's wrapper writes it.
        Impl::Asyncio | Impl::Uvloop => Some((GcFormat::Python, dir.join(format!("{tag}.gc")))),
    }
}

/// The environment variable the bench's Python wrapper writes its GC
/// account to (asyncio and uvloop herds in the gc scenario).
const GC_FILE_ENV: &str = "HERD_BENCH_GC_FILE";

/// Python run before herd.py under `-c`: `gc.callbacks` timing each
/// collection, in the format the threads herd logs with `HERD_GC_LOG=1`.
/// Line-buffered, so nothing is lost when SIGTERM ends the process.
const PY_GC_PRELUDE: &str = "import gc, os, time\n\
    _f = open(os.environ['HERD_BENCH_GC_FILE'], 'a', buffering=1)\n\
    _t = {}\n\
    def _cb(phase, info):\n\
    \x20   if phase == 'start':\n\
    \x20       _t['s'] = time.perf_counter_ns()\n\
    \x20   elif 's' in _t:\n\
    \x20       _f.write('gc: generation %d collected %d objects in %.3f ms\\n' % \
    (info['generation'], info['collected'], (time.perf_counter_ns() - _t.pop('s')) / 1e6))\n\
    gc.callbacks.append(_cb)\n";

/// Runs the script in `sys.argv[1]` as `__main__` (herd.py takes the same
/// command line as proxy-herd, so there is no flag to ask it for uvloop).
const PY_RUN: &str =
    "import runpy, sys\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n";

/// The command that runs one server of implementation `imp`; with `gc`,
/// asking its runtime to write its GC account to that file.
fn server_command(imp: Impl, gc: Option<&Path>) -> Command {
    let root = repo_root();
    match imp {
        Impl::Rust => Command::new(bin_dir().join("proxy-herd")),
        Impl::Asyncio | Impl::Uvloop => {
            let mut script = String::new();
            if imp == Impl::Uvloop {
                script.push_str("import uvloop\nuvloop.install()\n");
            }
            if gc.is_some() {
                script.push_str(PY_GC_PRELUDE);
            }
            let mut c = Command::new("python3");
            if script.is_empty() {
                c.arg(root.join("docs/asyncio/herd.py"));
            } else {
                script.push_str(PY_RUN);
                c.arg("-c")
                    .arg(script)
                    .arg(root.join("docs/asyncio/herd.py"));
            }
            if let Some(file) = gc {
                c.env(GC_FILE_ENV, file);
            }
            c
        }
        Impl::Threads => {
            let mut c = Command::new("python3");
            c.arg(root.join("docs/threads/herd.py"));
            if gc.is_some() {
                c.env("HERD_GC_LOG", "1");
            }
            c
        }
        Impl::Node => {
            let mut c = Command::new("node");
            if gc.is_some() {
                c.arg("--trace-gc");
            }
            c.arg(root.join("docs/node/herd.js"));
            c
        }
        Impl::Java => {
            let mut c = Command::new(root.join("docs/java/herd.sh"));
            if let Some(file) = gc {
                // herd.sh passes HERD_JAVA_OPTS to the JVM after its own flags.
                c.env(
                    "HERD_JAVA_OPTS",
                    format!("-Xlog:gc:file={}", file.display()),
                );
            }
            c
        }
    }
}

/// How a herd is started: which implementation, and whether its peer links
/// are mutual TLS (Rust only: the counterparts speak no TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flavour {
    pub imp: Impl,
    pub tls: bool,
}

impl Flavour {
    /// The name in the report: `rust`, `rust+tls`, `asyncio`, ...
    pub fn label(self) -> String {
        if self.tls {
            format!("{}+tls", self.imp.name())
        } else {
            self.imp.name().to_string()
        }
    }
}

/// Where a started herd's files are, for restarting one of its servers.
#[derive(Debug, Clone)]
pub struct Started {
    pub flavour: Flavour,
    pub herd_file: PathBuf,
    pub places_url: String,
    pub dir: PathBuf,
    /// The herd's certificates (`proxy-herd certs`), with TLS.
    pub tls_dir: Option<PathBuf>,
    /// Each server's HTTP port, with `--http` (Rust and asyncio only).
    pub http: Vec<(String, u16)>,
}

impl Started {
    /// The tag (and log name) of server `name`.
    pub fn tag(&self, name: &str) -> String {
        format!("{}-{name}", self.flavour.imp.name())
    }

    /// Server `name`'s log.
    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}.log", self.tag(name)))
    }
}

/// Writes the herd's certificates into `dir` with `proxy-herd certs`, as a
/// user would (a CA, and a key and certificate per server of `herd_file`).
fn make_certs(herd_file: &Path, dir: &Path) -> Result<(), Error> {
    let out = Command::new(bin_dir().join("proxy-herd"))
        .arg("certs")
        .arg(herd_file)
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::new(format!("proxy-herd certs: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "proxy-herd certs failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// How [`start_herd`] starts each server.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerFlags {
    pub trace_gc: bool,
    pub http: bool,
}

/// Starts every server in `servers` except those named in `skip` (played by
/// the bench), and waits until each one's client port accepts.
/// With `flags.trace_gc`, each server's runtime writes its GC account where
/// [`gc_trace`] says; with `flags.http`, the Rust and asyncio servers serve
/// HTTP on a free port. With `flavour.tls`, the herd's certificates are made
/// first (for the servers in `skip` too) and every server gets them.
pub fn start_herd(
    flavour: Flavour,
    servers: &[ServerSpec],
    skip: &[&str],
    places_url: &str,
    flags: ServerFlags,
    procs: &mut Processes,
    dir: &Path,
) -> Result<Started, Error> {
    let imp = flavour.imp;
    let herd = dir.join(format!("{}.herd", imp.name()));
    std::fs::write(&herd, herd_file(servers))?;
    let tls_dir = if flavour.tls {
        if imp != Impl::Rust {
            return Err(Error::new(format!("{} has no peer TLS", imp.name())));
        }
        let tls = dir.join("tls");
        make_certs(&herd, &tls)?;
        Some(tls)
    } else {
        None
    };
    // All at once, so that they differ.
    let http = if flags.http {
        let ports = free_ports(servers.len())?;
        servers.iter().map(|s| s.name.clone()).zip(ports).collect()
    } else {
        Vec::new()
    };
    let started = Started {
        flavour,
        herd_file: herd,
        places_url: places_url.to_string(),
        dir: dir.to_path_buf(),
        tls_dir,
        http,
    };
    for s in servers.iter().filter(|s| !skip.contains(&s.name.as_str())) {
        start_server(&started, &s.name, flags.trace_gc, procs)?;
    }
    // Both ports: some counterparts (Java) greet their neighbours before
    // they open the peer port, so the client port answers first.
    for s in servers.iter().filter(|s| !skip.contains(&s.name.as_str())) {
        wait_listening(s.client, procs, dir)?;
        wait_listening(s.peer, procs, dir)?;
    }
    Ok(started)
}

/// Starts server `name` of a herd (again, after [`Processes::stop`]); its
/// log is appended to. Does not wait for it to listen.
pub fn start_server(
    herd: &Started,
    name: &str,
    trace_gc: bool,
    procs: &mut Processes,
) -> Result<(), Error> {
    start_server_with(herd, name, &herd.herd_file, &[], trace_gc, procs)
}

/// [`start_server`] with a herd file of its own (the catch-up scenario
/// points a server's neighbours at counting proxies) and more arguments
/// (`--state FILE`) before the name.
pub fn start_server_with(
    herd: &Started,
    name: &str,
    herd_file: &Path,
    extra: &[std::ffi::OsString],
    trace_gc: bool,
    procs: &mut Processes,
) -> Result<(), Error> {
    let imp = herd.flavour.imp;
    let dir = &herd.dir;
    let ca = repo_root().join("data/tls/ca.pem");
    let tag = herd.tag(name);
    let gc = gc_trace(imp, dir, &tag)
        .filter(|_| trace_gc)
        .map(|(_, f)| f);
    let mut command = server_command(imp, gc.as_deref());
    command
        .arg("-c")
        .arg(herd_file)
        .arg("-l")
        .arg(herd.log(name))
        .args(["--places-url", &herd.places_url])
        .arg("--places-ca")
        .arg(&ca);
    let http = herd
        .http
        .iter()
        .find(|(n, _)| n == name)
        .map(|&(_, port)| port);
    if let (Some(port), Impl::Rust | Impl::Asyncio) = (http, imp) {
        command.arg("--http").arg(format!("127.0.0.1:{port}"));
    }
    if let Some(tls) = &herd.tls_dir {
        command
            .arg("--peer-cert")
            .arg(tls.join(format!("{name}.pem")))
            .arg("--peer-key")
            .arg(tls.join(format!("{name}.key")))
            .arg("--peer-ca")
            .arg(tls.join("ca.pem"));
    }
    let child = command
        .args(extra)
        .arg(name)
        .env("PLACES_API_KEY", API_KEY)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join(format!("{tag}.stdout")))?)
        .stderr(std::fs::File::create(dir.join(format!("{tag}.stderr")))?)
        .spawn()
        .map_err(|e| Error::new(format!("start {} {name}: {e}", imp.name())))?;
    procs.push(&tag, child);
    Ok(())
}

/// Polls a connect to `addr` until it succeeds; fails early if one of the
/// processes has died (with its stderr), or at the deadline.
pub fn wait_listening(addr: SocketAddr, procs: &mut Processes, dir: &Path) -> Result<(), Error> {
    let deadline = Instant::now() + START_DEADLINE;
    let mut pause = Duration::from_millis(2);
    while Instant::now() < deadline && !super::interrupted() {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        procs.check_alive(dir)?;
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    Err(Error::new(format!(
        "nothing listens on {addr} after {START_DEADLINE:?}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_herd_with_an_observer() {
        let ports: Vec<(u16, u16)> = (0..6).map(|i| (1000 + i, 2000 + i)).collect();
        let specs = herd_specs(&ports, &[("Campbell", "Observer")]).expect("specs");
        assert_eq!(specs.len(), 6);
        let by = |n: &str| specs.iter().find(|s| s.name == n).expect(n);
        assert_eq!(by("Riley").neighbours, ["Jaquez", "Juzang"]);
        assert_eq!(by("Juzang").neighbours, ["Riley", "Bernard", "Campbell"]);
        assert_eq!(by("Campbell").neighbours, ["Juzang", "Bernard", "Observer"]);
        assert_eq!(by("Observer").neighbours, ["Campbell"]);
        let text = herd_file(&specs);
        assert!(text.contains("Observer 127.0.0.1:1005 peer=127.0.0.1:2005 Campbell\n"));
        assert!(herd_specs(&ports[..4], &[]).is_err());
    }

    #[test]
    fn free_ports_differ_and_stay_below_the_ephemeral_range() {
        let mut p = free_ports(8).expect("ports");
        assert!(
            p.iter().all(|&port| (13_000..20_000).contains(&port)),
            "{p:?}"
        );
        p.sort_unstable();
        p.dedup();
        assert_eq!(p.len(), 8);
    }
}
