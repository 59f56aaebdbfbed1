//! The `catchup` scenario (issue 9, docs/protocol.md "The catch-up"): a line
//! herd [`A`] - [`B`] - [`C`] (A's and C's only neighbour is B), `--positions`
//! positions of distinct clients loaded at A with IAMATs (78-byte AT lines
//! like `AT Riley +0.000012345 client-000123 +34.068930-118.445127
//! 1764635000.123456789`), then B restarted:
//!
//! - **empty**: SIGKILL, its state file removed, started again with nothing;
//! - **state**: SIGKILL, [`CHANGES`] clients move at A meanwhile, started
//!   again on its state file.
//!
//! Every server runs with `--state` when the state case is measured (so both
//! cases see the same herd; the empty restart writes its state file as it
//! catches up). Each server has its own herd file in which its neighbours'
//! `peer=` is a [`CountingProxy`] to the real port, so every byte on a link
//! is counted, by direction.
//!
//! What is measured, from B's start (the bench's clock, taken as UTC like
//! the logs' timestamps):
//! - until the catch-ups end: B's `link from N: catch-up of ... received`
//!   line from each neighbour (and, in the state case, until C has received
//!   the changes too, which only B can bring it);
//! - the bytes B receives and sends on its links until then, against a full
//!   transfer (every AT line and its `\n`);
//! - each reply's delay at a probe client of A and one of C, which sends an
//!   IAMAT every millisecond (one in flight; a late reply is its own delay).
//!   After one new position, the probe sends an older one each time: not
//!   new, so not flooded; the probes add nothing to the links' bytes and
//!   measure the loop, not the flood;
//! - how many catch-ups ran and how many links dropped (log lines counted
//!   after the herd has been quiet for two seconds): a catch-up that repeats,
//!   or a link dropped mid catch-up, is what the issue was about;
//! - every server's RSS before and after the load, and B's after it caught
//!   up, per position.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::args::{Cases, Impl};
use super::idle::rss_kb;
use super::launch::{self, Flavour, Processes, ServerSpec, Started};
use super::load::LOCATION;
use super::procstat;
use super::relink::line_time;
use super::stats::{human_ns, Samples, Summary};
use super::Error;

/// The loaded server, the restarted one, and the far one.
pub const A: &str = "Riley";
pub const B: &str = "Jaquez";
pub const C: &str = "Juzang";
/// Clients that move at A while B is down, in the state case.
pub const CHANGES: usize = 250;
/// IAMATs written before their replies are read, while loading.
const BATCH: usize = 4096;
/// The herd counts as quiet once no catch-up line was logged for this long.
const QUIET: Duration = Duration::from_secs(2);
/// Polling period for logs and WHATSATs.
const POLL: Duration = Duration::from_millis(10);
/// How often the probes send.
const PROBE_EVERY: Duration = Duration::from_millis(1);
/// A reply later than this is a stalled server: the probe gives up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many connections per proxy (the links relink a few times).
const MAX_ACCEPTS: usize = 10_000;

/// How long to wait for something that grows with the store: a minute, and
/// 60 µs per position (two minutes at a million).
fn deadline_for(positions: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_micros(60) * positions as u32
}

/// The client ID of position `i`: 13 characters, so that every AT line is
/// 78 bytes. `client-000123` up to a million, `client1234567` above.
pub fn client_id(i: usize, positions: usize) -> String {
    if positions <= 1_000_000 {
        format!("client-{i:06}")
    } else {
        format!("client{i:07}")
    }
}

/// `SystemTime` as an IAMAT's time: seconds with nine decimals.
fn iamat_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// Seconds since midnight UTC, as [`line_time`] reads a log line.
pub fn day_seconds(t: SystemTime) -> f64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs() % 86_400) as f64 + f64::from(d.subsec_nanos()) / 1e9
}

/// Seconds from `since` to a log line's timestamp, across midnight.
fn after(since: SystemTime, line: &str) -> Option<f64> {
    Some((line_time(line)? - day_seconds(since)).rem_euclid(86_400.0))
}

/// A TCP proxy to `target` that counts the bytes going each way, one
/// connection after another (a link that drops dials again).
pub struct CountingProxy {
    pub port: u16,
    /// Bytes from the dialer to the target.
    up: Arc<AtomicU64>,
    /// Bytes from the target back to the dialer.
    down: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl CountingProxy {
    pub fn start(target: SocketAddr) -> Result<CountingProxy, Error> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let (u, d, s) = (up.clone(), down.clone(), stop.clone());
        std::thread::spawn(move || {
            for _ in 0..MAX_ACCEPTS {
                let Ok((client, _)) = listener.accept() else {
                    return;
                };
                if s.load(Ordering::Relaxed) {
                    return;
                }
                // The target may be down (B killed): the dialer sees a close
                // and backs off, as it would without the proxy.
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
                    continue;
                };
                // Small messages (TREE, HASHES) must not wait for Nagle.
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                pipe(&client, &server, u.clone());
                pipe(&server, &client, d.clone());
            }
        });
        Ok(CountingProxy {
            port,
            up,
            down,
            stop,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// (up, down) so far.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.up.load(Ordering::Relaxed),
            self.down.load(Ordering::Relaxed),
        )
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept; the pipes end with their connections.
        let _ = TcpStream::connect(self.addr());
    }
}

/// Copies `from` to `to`, counting, until either side closes.
fn pipe(from: &TcpStream, to: &TcpStream, counter: Arc<AtomicU64>) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
        let _ = to.shutdown(Shutdown::Write);
        let _ = from.shutdown(Shutdown::Read);
    });
}

/// The proxies of the line herd, one per link direction (the dialer first).
struct Links {
    ab: CountingProxy,
    ba: CountingProxy,
    bc: CountingProxy,
    cb: CountingProxy,
}

impl Links {
    /// Bytes B has received on its links with A and with C so far.
    fn to_b_by_side(&self) -> (u64, u64) {
        (
            self.ab.bytes().0 + self.ba.bytes().1,
            self.cb.bytes().0 + self.bc.bytes().1,
        )
    }

    /// Bytes B has received and sent on all its links so far.
    fn at_b(&self) -> (u64, u64) {
        let (ab_up, ab_down) = self.ab.bytes();
        let (cb_up, cb_down) = self.cb.bytes();
        let (ba_up, ba_down) = self.ba.bytes();
        let (bc_up, bc_down) = self.bc.bytes();
        (
            ab_up + cb_up + ba_down + bc_down,
            ab_down + cb_down + ba_up + bc_up,
        )
    }
}

/// The herd file for server `me`: every server at its real addresses,
/// except that the neighbours `me` dials are reached through `via`.
fn herd_file_for(specs: &[ServerSpec], via: &[(&str, SocketAddr)]) -> String {
    let redirected: Vec<ServerSpec> = specs
        .iter()
        .map(|s| {
            let mut s = s.clone();
            if let Some((_, addr)) = via.iter().find(|(n, _)| *n == s.name) {
                s.peer = *addr;
            }
            s
        })
        .collect();
    launch::herd_file(&redirected)
}

/// The line herd on the given (client, peer) ports.
pub fn line_specs(ports: &[(u16, u16)]) -> Result<Vec<ServerSpec>, Error> {
    let names = [A, B, C];
    if ports.len() < names.len() {
        return Err(Error::new("not enough ports for the herd"));
    }
    let neighbours = |n: &str| -> Vec<String> {
        match n {
            B => vec![A.into(), C.into()],
            _ => vec![B.into()],
        }
    };
    Ok(names
        .iter()
        .zip(ports)
        .map(|(&name, &(client, peer))| ServerSpec {
            name: name.into(),
            client: SocketAddr::from(([127, 0, 0, 1], client)),
            peer: SocketAddr::from(([127, 0, 0, 1], peer)),
            neighbours: neighbours(name),
        })
        .collect())
}

/// The end of a log, read on as it grows (the loaded servers' logs hold
/// millions of lines; only what came after `from` is read).
pub struct LogTail {
    path: PathBuf,
    offset: u64,
    /// Complete lines read so far.
    pub text: String,
    partial: Vec<u8>,
}

impl LogTail {
    /// From the log's beginning (a log the run just created).
    pub fn from_start(path: &Path) -> LogTail {
        LogTail {
            path: path.to_path_buf(),
            offset: 0,
            text: String::new(),
            partial: Vec::new(),
        }
    }

    /// From the log's current end on.
    pub fn from_end(path: &Path) -> LogTail {
        LogTail {
            path: path.to_path_buf(),
            offset: std::fs::metadata(path).map_or(0, |m| m.len()),
            text: String::new(),
            partial: Vec::new(),
        }
    }

    /// Reads what was appended; the new complete lines' text.
    pub fn poll(&mut self) -> &str {
        let start = self.text.len();
        let Ok(mut f) = File::open(&self.path) else {
            return "";
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return "";
        }
        let mut bytes = Vec::new();
        if let Ok(n) = f.read_to_end(&mut bytes) {
            self.offset += n as u64;
        }
        self.partial.extend_from_slice(&bytes);
        if let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') {
            let lines: Vec<u8> = self.partial.drain(..=end).collect();
            self.text.push_str(&String::from_utf8_lossy(&lines));
        }
        &self.text[start..]
    }
}

/// The figures of a `catch-up of N positions received (M new, ...` line:
/// (N, M).
pub fn received_counts(line: &str) -> Option<(u64, u64)> {
    let rest = line.split("catch-up of ").nth(1)?;
    let (n, rest) = rest.split_once(" positions received (")?;
    let m = rest.split(' ').next()?;
    Some((n.parse().ok()?, m.parse().ok()?))
}

/// The catch-up lines `server` logged for what it received from `from`,
/// whole ones only (the counterparts log one `cut short by the close` when
/// a link drops mid catch-up).
fn received_from<'a>(log: &'a str, from: &str) -> Vec<&'a str> {
    let needle = format!(" link from {from}: catch-up of ");
    log.lines()
        .filter(|l| {
            l.contains(&needle) && l.contains(" positions received (") && !l.contains("cut short")
        })
        .collect()
}

/// Log lines counted after a restart, by what they say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineCounts {
    /// `catch-up of ... sent` and `... received` lines.
    pub catchups: usize,
    /// A dialled link leaving Up (`Up => Backoff`).
    pub drops: usize,
}

/// Counts [`LineCounts`] in a log's text.
pub fn count_lines(log: &str) -> LineCounts {
    let mut c = LineCounts::default();
    for l in log.lines() {
        if l.contains(": catch-up of ") {
            c.catchups += 1;
        }
        if l.contains(": Up => ") {
            c.drops += 1;
        }
    }
    c
}

/// A client that sends one IAMAT every [`PROBE_EVERY`], one in flight, and
/// records each reply's delay.
struct Probe {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(Samples, u64)>,
}

impl Probe {
    fn start(addr: SocketAddr, id: String) -> Result<Probe, Error> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // One new position first (not timed), then always a second older
        // than it: never new, so never flooded, and the links' bytes stay
        // the catch-up's. (Repeating the first would not do: the reply's
        // time difference grows, and at equal client times the greater AT
        // line wins, so each repeat would be new and flooded.)
        let now = SystemTime::now();
        let first = format!("IAMAT {id} {LOCATION} {}\n", iamat_time(now));
        let line = format!(
            "IAMAT {id} {LOCATION} {}\n",
            iamat_time(now - Duration::from_secs(1))
        );
        let handle = std::thread::spawn(move || {
            let mut samples = Samples::new();
            let mut errors = 0u64;
            let Ok(read_half) = stream.try_clone() else {
                return (samples, 1);
            };
            let mut replies = BufReader::new(read_half);
            let mut writer = &stream;
            let mut reply = String::new();
            let greeted = writer.write_all(first.as_bytes()).is_ok()
                && replies.read_line(&mut reply).is_ok_and(|n| n > 0)
                && reply.starts_with("AT ");
            if !greeted {
                return (samples, 1);
            }
            let mut next = Instant::now();
            // Bounded: at most an hour of probing.
            for _ in 0..3_600_000u32 {
                if flag.load(Ordering::Relaxed) || super::interrupted() {
                    break;
                }
                let sent = Instant::now();
                if writer.write_all(line.as_bytes()).is_err() {
                    errors += 1;
                    break;
                }
                let mut reply = String::new();
                match replies.read_line(&mut reply) {
                    Ok(n) if n > 0 && reply.starts_with("AT ") => samples.record(sent.elapsed()),
                    _ => {
                        errors += 1;
                        break;
                    }
                }
                next += PROBE_EVERY;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
            (samples, errors)
        });
        Ok(Probe { stop, handle })
    }

    fn finish(self) -> (Option<Summary>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.join() {
            Ok((s, e)) => (s.summary(), e),
            Err(_) => (None, 1),
        }
    }
}

/// Sends IAMATs for clients `ids` to `addr` in batches, times now; returns
/// the AT lines answered (with their `\n`), in order.
fn send_iamats(
    addr: SocketAddr,
    ids: impl Iterator<Item = String>,
    timeout: Duration,
) -> Result<Vec<String>, Error> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(timeout))?;
    let mut replies = BufReader::new(stream.try_clone()?);
    let mut writer = &stream;
    let mut answered = Vec::new();
    let ids: Vec<String> = ids.collect();
    for batch in ids.chunks(BATCH) {
        if super::interrupted() {
            return Err(Error::new("interrupted"));
        }
        let mut out = String::with_capacity(batch.len() * 72);
        for id in batch {
            out.push_str(&format!(
                "IAMAT {id} {LOCATION} {}\n",
                iamat_time(SystemTime::now())
            ));
        }
        writer.write_all(out.as_bytes())?;
        for id in batch {
            let mut line = String::new();
            replies
                .read_line(&mut line)
                .map_err(|e| Error::new(format!("IAMAT {id}: no reply: {e}")))?;
            if !line.starts_with("AT ") || !line.ends_with('\n') {
                return Err(Error::new(format!(
                    "IAMAT {id}: answered {:?}",
                    line.trim()
                )));
            }
            answered.push(line);
        }
    }
    Ok(answered)
}

/// The AT line `addr` holds for `id` (WHATSAT's first line), if any.
fn known_at(addr: SocketAddr, id: &str) -> Result<Option<String>, Error> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    (&stream).write_all(format!("WHATSAT {id} 1 1\n").as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    if !first.starts_with("AT ") {
        return Ok(None);
    }
    // The Places part, up to its blank line (bounded: a few KB).
    for _ in 0..10_000 {
        let mut l = String::new();
        if reader.read_line(&mut l)? == 0 || l == "\n" {
            break;
        }
    }
    Ok(Some(first))
}

/// Polls until `addr` holds `at` for `id`.
fn wait_known(addr: SocketAddr, id: &str, at: &str, deadline: Duration) -> Result<(), Error> {
    let end = Instant::now() + deadline;
    while Instant::now() < end && !super::interrupted() {
        if known_at(addr, id)?.as_deref() == Some(at) {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
    Err(Error::new(format!(
        "{addr} did not hold {} within {deadline:?}",
        at.trim()
    )))
}

/// Which restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Empty,
    State,
}

impl Case {
    pub fn name(self) -> &'static str {
        match self {
            Case::Empty => "empty",
            Case::State => "state",
        }
    }
}

/// What one restart of B measured.
#[derive(Debug, Clone)]
pub struct Restart {
    pub case: Case,
    /// From B's start to its client port answering.
    pub listening_s: f64,
    /// From B's start to the end of the catch-ups it waits for (both
    /// neighbours' to B; in the state case C's from B too); `None` if they
    /// did not end within the deadline.
    pub converged_s: Option<f64>,
    /// B's `catch-up of ... received` lines, as logged.
    pub received: Vec<String>,
    /// The positions new to B in those lines, summed.
    pub new_at_b: u64,
    /// Bytes B received and sent on its links until the catch-ups ended.
    pub bytes_to_b: u64,
    pub bytes_from_b: u64,
    /// Of `bytes_to_b`, what came on the links with A and with C.
    pub to_b_via: (u64, u64),
    /// The same once the herd was quiet.
    pub quiet_to_b: u64,
    pub quiet_from_b: u64,
    /// A full transfer: every AT line and its `\n`.
    pub full_bytes: u64,
    /// Per server (A, B, C): catch-up lines and link drops from B's kill
    /// on (the kill itself drops A's and C's links to B once), counted once
    /// the herd was quiet.
    pub lines: Vec<(String, LineCounts)>,
    /// The probes' reply delays at A and C while B caught up.
    pub probe_a: Option<Summary>,
    pub probe_c: Option<Summary>,
    /// Probe replies that failed (a reset, a timeout).
    pub probe_errors: u64,
    /// A's and C's share of the window on a CPU and waiting for one (run
    /// queue), in %: a late reply with a long wait is the scheduler's.
    pub cpu_a: Option<(f64, f64)>,
    pub cpu_c: Option<(f64, f64)>,
    /// B's RSS once caught up.
    pub b_rss_kb: Option<u64>,
    /// WHATSAT at B and C afterwards gives A's line for the first, last and
    /// changed clients.
    pub agree: bool,
}

impl Restart {
    /// Bytes B received, as a share of a full transfer, in %.
    pub fn received_percent(&self) -> f64 {
        if self.full_bytes == 0 {
            return 0.0;
        }
        100.0 * self.bytes_to_b as f64 / self.full_bytes as f64
    }
}

/// What the catchup scenario measured.
#[derive(Debug, Clone)]
pub struct CatchupResult {
    pub positions: usize,
    /// Whether the servers ran with `--state`.
    pub state_files: bool,
    /// From the first IAMAT to C holding the last position.
    pub load_s: f64,
    /// A full transfer: every AT line and its `\n`.
    pub full_bytes: u64,
    /// RSS in kB of A, B and C before and after the load.
    pub rss_before_kb: Vec<Option<u64>>,
    pub rss_after_kb: Vec<Option<u64>>,
    pub restarts: Vec<Restart>,
    /// A case asked for but not run, and why.
    pub skipped: Vec<String>,
}

impl CatchupResult {
    /// B's RSS after the load per position, in bytes: (whole, growth).
    pub fn b_bytes_per_position(&self) -> Option<(f64, f64)> {
        let after = (*self.rss_after_kb.get(1)?)? as f64 * 1024.0;
        let before = (*self.rss_before_kb.get(1)?)? as f64 * 1024.0;
        let n = self.positions as f64;
        Some((after / n, (after - before) / n))
    }

    /// The report's rows, one per restart.
    pub fn rows(&self, imp: &str) -> Vec<Vec<String>> {
        let ms = |s: Option<f64>| s.map_or("not converged".into(), |s| format!("{:.3} s", s));
        let lat = |l: &Option<Summary>| {
            l.map_or("-".into(), |l| {
                format!(
                    "{}/{}/{}",
                    human_ns(l.p50),
                    human_ns(l.p99),
                    human_ns(l.max)
                )
            })
        };
        self.restarts
            .iter()
            .map(|r| {
                let lines: Vec<String> = r
                    .lines
                    .iter()
                    .map(|(n, c)| format!("{n} {}/{}", c.catchups, c.drops))
                    .collect();
                vec![
                    imp.to_string(),
                    self.positions.to_string(),
                    r.case.name().to_string(),
                    ms(r.converged_s),
                    format!("{} ({}+{})", r.bytes_to_b, r.to_b_via.0, r.to_b_via.1),
                    format!("{:.3}%", r.received_percent()),
                    format!("{}", r.bytes_from_b),
                    lat(&r.probe_a),
                    lat(&r.probe_c),
                    [r.cpu_a, r.cpu_c]
                        .map(|c| c.map_or("-".into(), |(run, wait)| format!("{run:.0}/{wait:.0}")))
                        .join(" "),
                    lines.join(", "),
                    if r.agree { "yes" } else { "NO" }.into(),
                ]
            })
            .collect()
    }

    pub fn json(&self) -> Value {
        let lat = |l: &Option<Summary>| match l {
            Some(l) => {
                json!({"count": l.count, "p50": l.p50, "p99": l.p99, "p999": l.p999, "max": l.max})
            }
            None => Value::Null,
        };
        json!({
            "status": "ok",
            "positions": self.positions,
            "state_files": self.state_files,
            "load_s": self.load_s,
            "full_transfer_bytes": self.full_bytes,
            "rss_before_kb": self.rss_before_kb,
            "rss_after_kb": self.rss_after_kb,
            "b_bytes_per_position": self.b_bytes_per_position().map(|b| b.0),
            "b_growth_per_position": self.b_bytes_per_position().map(|b| b.1),
            "skipped": self.skipped,
            "restarts": self.restarts.iter().map(|r| json!({
                "case": r.case.name(),
                "listening_s": r.listening_s,
                "converged_s": r.converged_s,
                "received_lines": r.received,
                "new_at_b": r.new_at_b,
                "bytes_to_b": r.bytes_to_b,
                "bytes_from_b": r.bytes_from_b,
                "bytes_to_b_from_a_side": r.to_b_via.0,
                "bytes_to_b_from_c_side": r.to_b_via.1,
                "bytes_to_b_when_quiet": r.quiet_to_b,
                "bytes_from_b_when_quiet": r.quiet_from_b,
                "received_percent_of_full": r.received_percent(),
                "catchup_lines": r.lines.iter().map(|(n, c)| json!({"server": n, "catchups": c.catchups, "link_drops": c.drops})).collect::<Vec<_>>(),
                "probe_a_ns": lat(&r.probe_a),
                "probe_c_ns": lat(&r.probe_c),
                "probe_errors": r.probe_errors,
                "b_rss_kb": r.b_rss_kb,
                "a_cpu_and_runqueue_percent": r.cpu_a.map(|c| [c.0, c.1]),
                "c_cpu_and_runqueue_percent": r.cpu_c.map(|c| [c.0, c.1]),
                "agree": r.agree,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The running line herd.
struct Herd {
    started: Started,
    specs: Vec<ServerSpec>,
    /// Each server's own herd file.
    files: Vec<PathBuf>,
    state: bool,
    links: Links,
}

impl Herd {
    fn spec(&self, name: &str) -> &ServerSpec {
        // The three names are always there (line_specs).
        &self.specs[[A, B, C].iter().position(|n| *n == name).unwrap_or(0)]
    }

    fn state_file(&self, name: &str) -> PathBuf {
        self.started.dir.join(format!("{name}.state"))
    }

    fn start(&self, name: &str, procs: &mut Processes) -> Result<(), Error> {
        let i = [A, B, C].iter().position(|n| *n == name).unwrap_or(0);
        let extra: Vec<OsString> = if self.state {
            vec!["--state".into(), self.state_file(name).into()]
        } else {
            Vec::new()
        };
        launch::start_server_with(&self.started, name, &self.files[i], &extra, false, procs)
    }
}

/// Runs the scenario on a fresh line herd of `imp` in `dir`.
pub fn run(
    imp: Impl,
    positions: usize,
    cases: Cases,
    places_url: &str,
    dir: &Path,
) -> Result<CatchupResult, Error> {
    let mut skipped = Vec::new();
    let state_case = cases.state && imp == Impl::Rust;
    if cases.state && !state_case {
        skipped.push(format!(
            "state: {} has no --state (the Rust server's only)",
            imp.name()
        ));
    }
    let flat = launch::free_ports(6)?;
    let ports: Vec<(u16, u16)> = flat.chunks(2).map(|p| (p[0], p[1])).collect();
    let specs = line_specs(&ports)?;
    let (a, b, c) = (&specs[0], &specs[1], &specs[2]);
    let links = Links {
        ab: CountingProxy::start(b.peer)?,
        ba: CountingProxy::start(a.peer)?,
        bc: CountingProxy::start(c.peer)?,
        cb: CountingProxy::start(b.peer)?,
    };
    let texts = [
        herd_file_for(&specs, &[(B, links.ab.addr())]),
        herd_file_for(&specs, &[(A, links.ba.addr()), (C, links.bc.addr())]),
        herd_file_for(&specs, &[(B, links.cb.addr())]),
    ];
    let mut files = Vec::new();
    for (name, text) in [A, B, C].iter().zip(&texts) {
        let f = dir.join(format!("{}-{name}.herd", imp.name()));
        std::fs::write(&f, text)?;
        files.push(f);
    }
    let started = Started {
        flavour: Flavour { imp, tls: false },
        herd_file: files[0].clone(),
        places_url: places_url.to_string(),
        dir: dir.to_path_buf(),
        tls_dir: None,
        http: Vec::new(),
    };
    let herd = Herd {
        started,
        specs: specs.clone(),
        files,
        state: state_case,
        links,
    };
    // Declared after the proxies (in `herd`): stopped first.
    let mut procs = Processes::default();
    for name in [A, B, C] {
        herd.start(name, &mut procs)?;
    }
    for s in &specs {
        launch::wait_listening(s.client, &mut procs, dir)?;
        launch::wait_listening(s.peer, &mut procs, dir)?;
    }
    let pid = |procs: &Processes, name: &str| procs.pid(&herd.started.tag(name));
    let rss = |procs: &Processes| -> Vec<Option<u64>> {
        [A, B, C]
            .iter()
            .map(|n| pid(procs, n).and_then(rss_kb))
            .collect()
    };
    let rss_before_kb = rss(&procs);
    let deadline = deadline_for(positions);
    super::progress(&format!("catchup: loading {positions} positions at {A}"));
    let t = Instant::now();
    let lines = send_iamats(
        a.client,
        (0..positions).map(|i| client_id(i, positions)),
        deadline,
    )?;
    let full_bytes: u64 = lines.iter().map(|l| l.len() as u64).sum();
    let last_id = client_id(positions - 1, positions);
    let last_at = lines.last().cloned().unwrap_or_default();
    wait_known(c.client, &last_id, &last_at, deadline)?;
    let load_s = t.elapsed().as_secs_f64();
    super::progress(&format!(
        "catchup: loaded in {load_s:.1} s ({full_bytes} bytes of AT lines)"
    ));
    let rss_after_kb = rss(&procs);
    let mut result = CatchupResult {
        positions,
        state_files: state_case,
        load_s,
        full_bytes,
        rss_before_kb,
        rss_after_kb,
        restarts: Vec::new(),
        skipped,
    };
    // What A holds for the clients checked at the end.
    let mut expected: Vec<(String, String)> = vec![
        (client_id(0, positions), lines[0].clone()),
        (last_id.clone(), last_at.clone()),
    ];
    drop(lines);
    let order = [(cases.empty, Case::Empty), (state_case, Case::State)];
    for (_, case) in order.into_iter().filter(|(on, _)| *on) {
        super::progress(&format!("catchup: {} restart of {B}", case.name()));
        let r = restart(
            &herd,
            case,
            positions,
            &mut expected,
            &mut procs,
            full_bytes,
        )?;
        result.restarts.push(r);
    }
    Ok(result)
}

/// One restart of B, measured.
fn restart(
    herd: &Herd,
    case: Case,
    positions: usize,
    expected: &mut Vec<(String, String)>,
    procs: &mut Processes,
    full_bytes: u64,
) -> Result<Restart, Error> {
    let (a, b, c) = (
        herd.spec(A).clone(),
        herd.spec(B).clone(),
        herd.spec(C).clone(),
    );
    let deadline = deadline_for(positions);
    // From before the kill: the neighbours' links to B drop once with it.
    let mut tails: Vec<LogTail> = [A, B, C]
        .iter()
        .map(|n| LogTail::from_end(&herd.started.log(n)))
        .collect();
    procs.kill(&herd.started.tag(B));
    if case == Case::Empty {
        let _ = std::fs::remove_file(herd.state_file(B));
    }
    let tag = format!("{}-{}", case.name(), std::process::id());
    // Changes to clients that exist (a small run has fewer than CHANGES).
    let changes = CHANGES.min(positions);
    if case == Case::State {
        let moved = send_iamats(
            a.client,
            (0..changes).map(|i| client_id(i, positions)),
            deadline,
        )?;
        for (i, line) in moved.into_iter().enumerate() {
            let id = client_id(i, positions);
            match expected.iter_mut().find(|(e, _)| *e == id) {
                Some(e) => e.1 = line,
                None if i + 1 == changes => expected.push((id, line)),
                None => {}
            }
        }
    }
    let probe_a = Probe::start(a.client, format!("probe-a-{tag}"))?;
    let probe_c = Probe::start(c.client, format!("probe-c-{tag}"))?;
    let base = herd.links.at_b();
    let side_base = herd.links.to_b_by_side();
    let pid_of = |procs: &Processes, n: &str| procs.pid(&herd.started.tag(n));
    let sched =
        |procs: &Processes| [A, C].map(|n| pid_of(procs, n).and_then(procstat::run_and_wait_ns));
    let sched_base = sched(procs);
    let t0 = SystemTime::now();
    let started = Instant::now();
    herd.start(B, procs)?;
    launch::wait_listening(b.client, procs, &herd.started.dir)?;
    let listening_s = started.elapsed().as_secs_f64();
    // Until B has a catch-up from each neighbour (and, on a state restart,
    // C has received the changes from B).
    let mut converged_s = None;
    let mut at_end = base;
    let mut side_end = side_base;
    while started.elapsed() < deadline && !super::interrupted() {
        for t in tails.iter_mut() {
            t.poll();
        }
        let b_log = &tails[1].text;
        let (from_a, from_c) = (received_from(b_log, A), received_from(b_log, C));
        let c_new: u64 = received_from(&tails[2].text, B)
            .iter()
            .filter_map(|l| received_counts(l))
            .map(|(_, m)| m)
            .sum();
        let c_done = case == Case::Empty || c_new >= changes as u64;
        if !from_a.is_empty() && !from_c.is_empty() && c_done {
            at_end = herd.links.at_b();
            side_end = herd.links.to_b_by_side();
            let mut ends: Vec<&str> = vec![from_a[0], from_c[0]];
            if case == Case::State {
                // The line of C's that brought the last of the changes.
                let mut sum = 0;
                for l in received_from(&tails[2].text, B) {
                    sum += received_counts(l).map_or(0, |(_, m)| m);
                    if sum >= changes as u64 {
                        ends.push(l);
                        break;
                    }
                }
            }
            converged_s = ends.iter().filter_map(|l| after(t0, l)).reduce(f64::max);
            break;
        }
        if let Err(e) = procs.check_alive(&herd.started.dir) {
            let _ = probe_a.finish();
            let _ = probe_c.finish();
            return Err(e);
        }
        std::thread::sleep(POLL);
    }
    let window = started.elapsed().as_secs_f64();
    let sched_end = sched(procs);
    let share = |i: usize| {
        let ((r0, w0), (r1, w1)) = (sched_base[i]?, sched_end[i]?);
        let pct = |d: u64| 100.0 * d as f64 / 1e9 / window.max(1e-9);
        Some((pct(r1.saturating_sub(r0)), pct(w1.saturating_sub(w0))))
    };
    let (pa, ea) = probe_a.finish();
    let (pc, ec) = probe_c.finish();
    if converged_s.is_none() {
        at_end = herd.links.at_b();
        side_end = herd.links.to_b_by_side();
        super::progress(&format!(
            "catchup: {} restart did not converge within {deadline:?}",
            case.name()
        ));
    }
    // Then until nothing more happens, to count the catch-ups that ran.
    let quiet_end = Instant::now() + deadline;
    let mut last_count = usize::MAX;
    let mut since = Instant::now();
    while Instant::now() < quiet_end && !super::interrupted() {
        let n: usize = tails
            .iter_mut()
            .map(|t| {
                t.poll();
                count_lines(&t.text).catchups
            })
            .sum();
        if n != last_count {
            last_count = n;
            since = Instant::now();
        } else if since.elapsed() >= QUIET {
            break;
        }
        std::thread::sleep(POLL);
    }
    let quiet = herd.links.at_b();
    let b_log = tails[1].text.clone();
    let received: Vec<String> = b_log
        .lines()
        .filter(|l| l.contains(" positions received ("))
        .map(|l| l.to_string())
        .collect();
    let new_at_b = received
        .iter()
        .filter_map(|l| received_counts(l))
        .map(|(_, m)| m)
        .sum();
    let lines = [A, B, C]
        .iter()
        .zip(&tails)
        .map(|(n, t)| (n.to_string(), count_lines(&t.text)))
        .collect();
    let mut agree = true;
    for (id, at) in expected.iter() {
        for s in [&b, &c] {
            if known_at(s.client, id)?.as_deref() != Some(at.as_str()) {
                agree = false;
            }
        }
    }
    Ok(Restart {
        case,
        listening_s,
        converged_s,
        received,
        new_at_b,
        bytes_to_b: at_end.0 - base.0,
        bytes_from_b: at_end.1 - base.1,
        to_b_via: (side_end.0 - side_base.0, side_end.1 - side_base.1),
        quiet_to_b: quiet.0 - base.0,
        quiet_from_b: quiet.1 - base.1,
        full_bytes,
        lines,
        probe_a: pa,
        probe_c: pc,
        probe_errors: ea + ec,
        cpu_a: share(0),
        cpu_c: share(1),
        b_rss_kb: procs.pid(&herd.started.tag(B)).and_then(rss_kb),
        agree,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_make_78_byte_lines() {
        let line = |id: &str| format!("AT Riley +0.263873386 {id} {LOCATION} 1621464827.959498503");
        assert_eq!(line(&client_id(123, 100_000)).len(), 78);
        assert_eq!(client_id(123, 100_000), "client-000123");
        assert_eq!(client_id(999_999, 1_000_000), "client-999999");
        assert_eq!(line(&client_id(1_999_999, 2_000_000)).len(), 78);
        assert_ne!(client_id(5, 2_000_000), client_id(6, 2_000_000));
    }

    #[test]
    fn summary_lines_are_read() {
        let l = "2026-12-02T00:13:31.029666Z link from Riley: catch-up of 250 positions received \
                 (249 new, 28027 bytes, 41.5 ms; 671 nodes answered, 91204 bytes of hashes sent)";
        assert_eq!(received_counts(l), Some((250, 249)));
        assert_eq!(received_from(l, "Riley"), vec![l]);
        assert!(received_from(l, "Juzang").is_empty());
        let cut = "2026-12-02T00:55:32.159697Z link from Juzang: catch-up of 84992 positions \
                   received (84992 new, 6714368 bytes, 6328.3 ms; cut short by the close)";
        assert!(
            received_from(cut, "Juzang").is_empty(),
            "not a whole catch-up"
        );
        let sent =
            "2026-12-02T00:13:31.029666Z link Jaquez: catch-up of 250 positions sent (1 bytes)";
        assert_eq!(received_counts(sent), None);
        let drop = "2026-12-02T00:13:32.000000Z link Jaquez: Up => Backoff (closed)";
        let counts = count_lines(&format!("{l}\n{sent}\n{drop}\n"));
        assert_eq!(
            counts,
            LineCounts {
                catchups: 2,
                drops: 1
            }
        );
    }

    #[test]
    fn each_server_dials_its_neighbours_through_their_proxies() {
        let ports: Vec<(u16, u16)> = (0..3).map(|i| (1000 + i, 2000 + i)).collect();
        let specs = line_specs(&ports).unwrap();
        assert_eq!(specs[1].neighbours, [A, C]);
        assert_eq!(specs[0].neighbours, [B]);
        let proxy: SocketAddr = "127.0.0.1:3001".parse().unwrap();
        let text = herd_file_for(&specs, &[(B, proxy)]);
        assert!(text.contains("Jaquez 127.0.0.1:1001 peer=127.0.0.1:3001 Riley Juzang\n"));
        assert!(text.contains("Riley 127.0.0.1:1000 peer=127.0.0.1:2000 Jaquez\n"));
    }

    #[test]
    fn times_are_read_against_the_logs() {
        let t = UNIX_EPOCH + Duration::from_secs_f64(86_400.0 * 20_000.0 + 3_600.5);
        assert!((day_seconds(t) - 3_600.5).abs() < 1e-6);
        let l = "2024-10-04T01:00:01.750000Z link from Riley: up";
        assert!((after(t, l).unwrap() - 1.25).abs() < 1e-6);
        assert_eq!(
            iamat_time(UNIX_EPOCH + Duration::from_nanos(1_500_000_001)),
            "1.500000001"
        );
    }
}
