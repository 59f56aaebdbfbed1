//! The `idle` scenario: hold N idle client connections open to one server,
//! read its resident memory (`VmRSS` in `/proc/PID/status`) before and after,
//! and check that it still answers an IAMAT while they are open. On the way
//! it stops at 1, 100, 1,000 and 10,000 connections ([`STEPS`]) to read the
//! server's threads and RSS: a thread per connection shows there.
//!
//! The bench needs one descriptor per connection. It cannot raise its own
//! `RLIMIT_NOFILE` without `libc`, so it reads the soft limit from
//! `/proc/self/limits`, uses what it allows, and says how to raise it
//! (`ulimit -n`); a herd the bench starts inherits the same limit.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::load::LOCATION;
use super::procstat;
use super::Error;

/// Descriptors kept back for everything else the bench has open.
const FD_RESERVE: usize = 64;
/// One connect on loopback takes microseconds; this bounds a stuck server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole set of connects may take no longer than this.
const OPEN_DEADLINE: Duration = Duration::from_secs(60);

/// What the idle scenario measured.
#[derive(Debug, Clone)]
pub struct IdleResult {
    pub requested: usize,
    pub opened: usize,
    /// Why fewer were opened than asked, if so.
    pub note: Option<String>,
    pub rss_before_kb: Option<u64>,
    pub rss_after_kb: Option<u64>,
    /// The IAMAT answered with all of them open, and how long it took.
    pub check: Result<Duration, String>,
    /// Threads and RSS as the connections were opened: at each of
    /// [`STEPS`] up to the number asked for, and at that number.
    pub steps: Vec<IdleStep>,
}

/// The server at one number of idle connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleStep {
    pub connections: usize,
    pub threads: Option<u64>,
    pub rss_kb: Option<u64>,
}

/// Where the idle scenario stops to read threads and RSS.
pub const STEPS: [usize; 4] = [1, 100, 1_000, 10_000];

/// The steps for `requested` connections: those of [`STEPS`] below it, and
/// `requested` itself.
pub fn steps_for(requested: usize) -> Vec<usize> {
    let mut v: Vec<usize> = STEPS.into_iter().filter(|&n| n < requested).collect();
    v.push(requested);
    v
}

impl IdleResult {
    /// Bytes of resident memory per idle connection, if memory was read.
    pub fn bytes_per_conn(&self) -> Option<f64> {
        let (b, a) = (self.rss_before_kb?, self.rss_after_kb?);
        (self.opened > 0).then(|| (a.saturating_sub(b) * 1024) as f64 / self.opened as f64)
    }
}

/// The `VmRSS` figure, in kB, of a `/proc/PID/status` text.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The soft "Max open files" limit of a `/proc/PID/limits` text (`None`:
/// unlimited or unreadable).
pub fn parse_nofile_soft(limits: &str) -> Option<usize> {
    let rest = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The resident memory of process `pid`, in kB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    parse_vm_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// How many idle connections the descriptor limit allows, and a note if it
/// is fewer than asked.
pub fn allowed_connections(requested: usize) -> (usize, Option<String>) {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| parse_nofile_soft(&t));
    match soft {
        Some(soft) if soft < requested + FD_RESERVE => {
            let n = soft.saturating_sub(FD_RESERVE);
            (
                n,
                Some(format!(
                    "open-file limit {soft} allows {n} of {requested} idle connections; \
                     raise it with `ulimit -n {}` before running herd-bench",
                    requested + FD_RESERVE
                )),
            )
        }
        _ => (requested, None),
    }
}

/// A client connection that asks IAMATs one at a time and waits for each AT.
pub struct Probe {
    reader: BufReader<TcpStream>,
}

impl Probe {
    pub fn connect(addr: SocketAddr) -> Result<Probe, String> {
        let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        Ok(Probe {
            reader: BufReader::new(s),
        })
    }

    /// Sends an IAMAT for `id` (time: now) and waits for its AT line.
    pub fn ask(&mut self, id: &str) -> Result<Duration, String> {
        let start = Instant::now();
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| e.to_string())?;
        let line = format!(
            "IAMAT {id} {LOCATION} {}.{:09}\n",
            t.as_secs(),
            t.subsec_nanos()
        );
        self.reader
            .get_mut()
            .write_all(line.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut reply = Vec::new();
        // A reply line is short; the bound keeps a broken server from feeding us forever.
        (&mut self.reader)
            .take(64 * 1024)
            .read_until(b'\n', &mut reply)
            .map_err(|e| e.to_string())?;
        let reply = String::from_utf8_lossy(&reply);
        if reply.starts_with("AT ") && reply.contains(id) {
            Ok(start.elapsed())
        } else {
            Err(format!("answered {:?}", reply.trim_end()))
        }
    }
}

/// Sends one IAMAT on a fresh connection and waits for its AT line.
pub fn check_iamat(addr: SocketAddr, id: &str) -> Result<Duration, String> {
    Probe::connect(addr)?.ask(id)
}

/// Connections opened between two probe round trips: below asyncio's
/// default listen backlog (100), so the accept queue never overflows (a
/// dropped SYN costs a 1 s retransmission).
const BATCH: usize = 64;

/// Opens the idle connections to `addr`, measures `pid`'s memory around
/// them, checks an IAMAT, then closes them all.
pub fn run(addr: SocketAddr, pid: Option<u32>, requested: usize) -> Result<IdleResult, Error> {
    run_holding(addr, pid, requested).map(|(r, _held)| r)
}

/// The connections [`run_holding`] leaves open.
pub struct Held(pub Vec<TcpStream>);

/// [`run`], handing the connections back still open: a caller that stops
/// the server before dropping them spares a thread-per-connection server
/// (and the cores) the storm of 10,000 threads woken at once to close
/// (docs/threads/README.md, "the GIL convoy").
pub fn run_holding(
    addr: SocketAddr,
    pid: Option<u32>,
    requested: usize,
) -> Result<(IdleResult, Held), Error> {
    let (allowed, mut note) = allowed_connections(requested);
    if let Some(n) = &note {
        eprintln!("herd-bench: {n}");
    }
    let check_id = format!("hb-{}-idle", std::process::id());
    // A first exchange so that memory the server allocates on its first
    // client (buffers, the store) is not charged to the idle connections.
    // The probe stays open (one connection more, not counted) to pace the
    // connects: its round trip after each batch lets the server catch up.
    let mut probe = Probe::connect(addr).map_err(|e| Error::new(format!("{addr}: {e}")))?;
    probe
        .ask(&check_id)
        .map_err(|e| Error::new(format!("{addr}: {e}")))?;
    let rss_before_kb = pid.and_then(rss_kb);
    let mut conns = Vec::with_capacity(allowed);
    let mut steps = Vec::new();
    let mut pending = steps_for(allowed).into_iter().peekable();
    let deadline = Instant::now() + OPEN_DEADLINE;
    for i in 0..allowed {
        if Instant::now() > deadline || super::interrupted() {
            note.get_or_insert_with(|| "stopped opening connections at the deadline".into());
            break;
        }
        if i % BATCH == BATCH - 1 {
            if let Err(e) = probe.ask(&check_id) {
                note = Some(format!("no answer after {} connections: {e}", conns.len()));
                break;
            }
        }
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => conns.push(s),
            Err(e) => {
                note = Some(format!(
                    "connect failed after {} connections: {e}",
                    conns.len()
                ));
                break;
            }
        }
        if pending.peek() == Some(&conns.len()) {
            pending.next();
            // Answered on a connection opened after the others, the check
            // means every one of them is accepted (and, in a threaded
            // server, has its thread) before the reading.
            if let Err(e) = check_iamat(addr, &check_id) {
                note = Some(format!("no answer at {} connections: {e}", conns.len()));
                break;
            }
            let sched = pid.and_then(procstat::sched);
            steps.push(IdleStep {
                connections: conns.len(),
                threads: sched.map(|s| s.threads),
                rss_kb: pid.and_then(rss_kb),
            });
        }
    }
    // The server accepts in order: once it answers a connection opened after
    // all the idle ones, it has accepted every one of them.
    let check = check_iamat(addr, &check_id);
    let rss_after_kb = pid.and_then(rss_kb);
    let opened = conns.len();
    conns.push(probe.reader.into_inner());
    Ok((
        IdleResult {
            requested,
            opened,
            note,
            rss_before_kb,
            rss_after_kb,
            check,
            steps,
        },
        Held(conns),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss() {
        let status = "Name:\tproxy-herd\nVmPeak:\t  9000 kB\nVmRSS:\t    4242 kB\nThreads: 1\n";
        assert_eq!(parse_vm_rss(status), Some(4242));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert_eq!(parse_vm_rss("VmRSS: lots kB\n"), None);
    }

    #[test]
    fn reads_the_soft_nofile_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             95000                95000                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_nofile_soft(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_nofile_soft(unlimited), None);
    }

    #[test]
    fn memory_per_connection() {
        let r = IdleResult {
            requested: 10,
            opened: 4,
            note: None,
            rss_before_kb: Some(100),
            rss_after_kb: Some(104),
            check: Ok(Duration::ZERO),
            steps: Vec::new(),
        };
        assert_eq!(r.bytes_per_conn(), Some(1024.0));
        let unread = IdleResult {
            rss_after_kb: None,
            ..r
        };
        assert_eq!(unread.bytes_per_conn(), None);
    }

    #[test]
    fn steps_stop_at_the_number_asked() {
        assert_eq!(steps_for(10_000), vec![1, 100, 1_000, 10_000]);
        assert_eq!(steps_for(500), vec![1, 100, 500]);
        assert_eq!(steps_for(1), vec![1]);
        assert_eq!(steps_for(20_000), vec![1, 100, 1_000, 10_000, 20_000]);
    }

    #[test]
    fn own_memory_is_readable() {
        assert!(rss_kb(std::process::id()).is_some_and(|kb| kb > 0));
    }
}
