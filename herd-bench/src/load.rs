//! The load generator: many client connections driven by one `mio` event
//! loop in one thread (a thread per connection would, on two cores, measure
//! the scheduler rather than the server).
//!
//! Each connection keeps `depth` requests in flight and matches replies to
//! requests in order (the server answers a connection's lines in order), so
//! a reply's latency is its arrival minus the moment its request was queued,
//! both read from the same monotonic `Instant` clock in this process.
//!
//! Registration model: every socket is registered once for read and write;
//! mio reports edges, so each readiness event reads, and writes, until
//! `WouldBlock`, and a spurious event costs one failed read.
//!
//! What is counted: complete replies that arrive after the warm-up and
//! before the deadline. Scenario set-up (herds, targets) lives in
//! [`super::run`]; the percentiles in [`super::stats`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::procstat::{self, Sched};
use super::stats::{Samples, Summary};
use super::Error;

/// The location every bench client reports: UCLA, so WHATSAT finds places.
pub const LOCATION: &str = "+34.068930-118.445127";
/// Connecting to a loopback server takes far less; more means it is not there.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The loop wakes at least this often to check its deadline.
const TICK: Duration = Duration::from_millis(50);
/// A hard ceiling on loop turns, besides the deadline.
const MAX_TURNS: u64 = 1 << 32;
/// A reply larger than this is a broken server, not a slow one.
const MAX_REPLY: usize = 1 << 20;

/// What each connection sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// IAMATs for the connection's own client ID with increasing times,
    /// `depth` in flight; a reply is one line.
    Iamat { depth: usize },
    /// One IAMAT for the connection's own client ID, then `WHATSAT ID 10 5`
    /// one at a time; a reply is the AT line, the JSON and a blank line.
    Whatsat,
}

/// One load run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    pub connections: usize,
    pub workload: Workload,
    /// Until the end of the warm-up nothing is counted.
    pub warmup: Duration,
    /// Warm-up included.
    pub duration: Duration,
    /// Makes client IDs unique across runs against the same herd.
    pub tag: String,
    /// IAMATs per second in all, sent on a schedule (open loop); `None`
    /// refills each connection to its depth on every reply (closed loop).
    pub rate: Option<f64>,
    /// The server process whose context switches are read at the end of the
    /// warm-up and at the deadline.
    pub watch: Option<u32>,
    /// Files (logs) whose lengths are read when the window opens and at the
    /// deadline, so that what a server wrote in the window can be cut out.
    pub marks: Vec<std::path::PathBuf>,
    /// Processes (the whole herd) whose CPU time in the window is summed.
    pub cpu_of: Vec<u32>,
}

/// What one load run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    pub connections: usize,
    /// Replies counted (in the measured window).
    pub replies: u64,
    /// Of those, replies that were not answers (`? ...`, a Places error).
    pub errors: u64,
    /// The first such reply (cut short), to show what went wrong.
    pub first_error: Option<String>,
    /// Connections the server closed or reset before the end.
    pub lost: usize,
    /// The measured window (duration minus warm-up).
    pub seconds: f64,
    pub latency: Option<Summary>,
    /// The watched server's context switches in the measured window (and
    /// its threads at the end), if it was watched and readable.
    pub sched: Option<Sched>,
    /// For each of the spec's `marks`, its length at the window's start and
    /// end (0 if unreadable).
    pub marks: Vec<(u64, u64)>,
    /// The CPU time of the spec's `cpu_of` in the window, ns, if readable.
    pub cpu_ns: Option<u64>,
    /// The same for each of `cpu_of`, in its order.
    pub cpu_each_ns: Vec<Option<u64>>,
    /// iamat on a started herd: each server's CPU and peer updates in the
    /// window (filled in by the caller, who knows the names and the logs).
    pub servers: Vec<super::peercost::ServerCost>,
}

impl LoadResult {
    /// Context switches (voluntary, involuntary; all threads) per reply
    /// counted, if the server was watched.
    pub fn switches_per_reply(&self) -> Option<(f64, f64)> {
        let s = self.sched?;
        (self.replies > 0).then(|| {
            let n = self.replies as f64;
            (s.all.voluntary as f64 / n, s.all.involuntary as f64 / n)
        })
    }

    /// The CPU time of the watched processes per reply counted, in µs.
    pub fn cpu_us_per_reply(&self) -> Option<f64> {
        let ns = self.cpu_ns?;
        (self.replies > 0).then(|| ns as f64 / 1e3 / self.replies as f64)
    }

    /// Good replies per second.
    pub fn throughput(&self) -> f64 {
        if self.seconds > 0.0 {
            self.replies.saturating_sub(self.errors) as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// How a reply is framed, by what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One line.
    Line,
    /// An AT line then lines up to a blank one; any other first line alone.
    UntilBlank,
}

/// The length of the first complete reply in `buf`, and whether it was an
/// answer: an AT line (and, for WHATSAT, Places JSON with status `OK` or
/// `ZERO_RESULTS`) rather than `? ...` or a Places error; `None` until the
/// reply is complete.
pub fn take_reply(buf: &[u8], framing: Framing) -> Option<(usize, bool)> {
    let first = buf.iter().position(|&b| b == b'\n')? + 1;
    let ok = buf.starts_with(b"AT ");
    if framing == Framing::Line || !ok {
        return Some((first, ok));
    }
    // The JSON has no empty lines (the server squeezes them), so the first
    // "\n\n" after the AT line ends the reply.
    let end = first - 1 + buf[first - 1..].windows(2).position(|w| w == b"\n\n")? + 2;
    // A Places error keeps the reply's shape; only a real answer counts.
    let json = &buf[first..end];
    let answered = [
        &b"\"status\" : \"OK\""[..],
        b"\"status\" : \"ZERO_RESULTS\"",
    ]
    .iter()
    .any(|status| json.windows(status.len()).any(|w| w == *status));
    Some((end, answered))
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    /// Whatsat: our own IAMAT is out; its reply is not counted.
    Greeting,
    Running,
    /// Closed by the server, or broken: no more traffic.
    Lost,
}

struct Client {
    stream: TcpStream,
    id: String,
    phase: Phase,
    /// The next IAMAT's time, in nanoseconds since the epoch: increasing per
    /// connection, so every IAMAT is a new position the server floods.
    next_time_ns: u128,
    out: Vec<u8>,
    written: usize,
    input: Vec<u8>,
    /// When each request in flight was queued, oldest first.
    in_flight: VecDeque<Instant>,
}

impl Client {
    fn framing(&self, workload: Workload) -> Framing {
        match (workload, &self.phase) {
            (Workload::Whatsat, Phase::Running) => Framing::UntilBlank,
            _ => Framing::Line,
        }
    }

    fn queue_iamat(&mut self) {
        let t = self.next_time_ns;
        self.next_time_ns += 1;
        let line = format!(
            "IAMAT {} {LOCATION} {}.{:09}\n",
            self.id,
            t / 1_000_000_000,
            t % 1_000_000_000
        );
        self.out.extend_from_slice(line.as_bytes());
        self.in_flight.push_back(Instant::now());
    }

    /// Tops the requests in flight up to what the workload wants.
    fn refill(&mut self, workload: Workload) {
        match (workload, &self.phase) {
            (Workload::Iamat { depth }, Phase::Running) => {
                while self.in_flight.len() < depth {
                    self.queue_iamat();
                }
            }
            (Workload::Whatsat, Phase::Greeting) if self.in_flight.is_empty() => self.queue_iamat(),
            (Workload::Whatsat, Phase::Running) if self.in_flight.is_empty() => {
                self.out
                    .extend_from_slice(format!("WHATSAT {} 10 5\n", self.id).as_bytes());
                self.in_flight.push_back(Instant::now());
            }
            _ => {}
        }
    }

    /// Writes until done or `WouldBlock`.
    fn flush(&mut self) -> io::Result<()> {
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        }
        Ok(())
    }

    /// Reads until `WouldBlock`; `Ok(false)` at end of file.
    fn fill(&mut self, chunk: &mut [u8]) -> io::Result<bool> {
        loop {
            match self.stream.read(chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// How long the WHATSAT before a whatsat measurement may take.
pub const WARM_DEADLINE: Duration = Duration::from_secs(30);

/// Asks one WHATSAT (after its IAMAT) on a fresh connection and waits for
/// the answer, up to `deadline`. A whatsat measurement calls this first: a
/// fresh server's first Places connection (the TLS handshake; a cold JVM's
/// took longer than a 3 s measurement on this machine) is set-up, not
/// throughput.
pub fn warm_places(addr: SocketAddr, deadline: Duration) -> Result<(), Error> {
    let mut s = StdStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| Error::new(format!("connect {addr}: {e}")))?;
    let start = Instant::now();
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::new("the clock is before 1970"))?;
    let id = format!("hb-{}-warm", std::process::id());
    let ask = format!(
        "IAMAT {id} {LOCATION} {}.{:09}\nWHATSAT {id} 10 5\n",
        t.as_secs(),
        t.subsec_nanos()
    );
    s.write_all(ask.as_bytes())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some((at, _)) = take_reply(&buf, Framing::Line) {
            if let Some((_, ok)) = take_reply(&buf[at..], Framing::UntilBlank) {
                return if ok {
                    Ok(())
                } else {
                    Err(Error::new("the first WHATSAT was not answered with places"))
                };
            }
        }
        let left = deadline.saturating_sub(start.elapsed());
        if left.is_zero() || buf.len() > MAX_REPLY || super::interrupted() {
            return Err(Error::new(format!("no WHATSAT answer within {deadline:?}")));
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut chunk) {
            Ok(0) => return Err(Error::new("closed before the WHATSAT answer")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::new(format!("waiting for the first WHATSAT: {e}"))),
        }
    }
}

/// Opens a non-blocking client connection (blocking connect: on loopback it
/// is immediate, and it keeps set-up simple).
pub fn connect(addr: SocketAddr) -> Result<TcpStream, Error> {
    let s = StdStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| Error::new(format!("connect {addr}: {e}")))?;
    // Replies are batched by us; Nagle would only hold requests back.
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    Ok(TcpStream::from_std(s))
}

/// Runs one load to its deadline (or an interrupt) and returns what it saw.
pub fn run(spec: &LoadSpec) -> Result<LoadResult, Error> {
    let mut poll = Poll::new()?;
    let epoch_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::new("the clock is before 1970"))?
        .as_nanos();
    let mut clients = Vec::with_capacity(spec.connections);
    for i in 0..spec.connections {
        let mut stream = connect(spec.addr)?;
        poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        clients.push(Client {
            stream,
            id: format!("hb-{}-{}-{i}", std::process::id(), spec.tag),
            phase: match spec.workload {
                Workload::Iamat { .. } => Phase::Running,
                Workload::Whatsat => Phase::Greeting,
            },
            next_time_ns: epoch_ns,
            out: Vec::with_capacity(4096),
            written: 0,
            input: Vec::with_capacity(4096),
            in_flight: VecDeque::new(),
        });
    }

    let start = Instant::now();
    let warm_end = start + spec.warmup.min(spec.duration);
    let deadline = start + spec.duration;
    let mut samples = Samples::new();
    let (mut replies, mut errors) = (0u64, 0u64);
    let mut first_error = None;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut events = Events::with_capacity(1024);

    // Open loop: IAMATs leave on a schedule, round-robin over the
    // connections, and latency below the peak can be measured.
    let pace = match (spec.rate, spec.workload) {
        (Some(rate), Workload::Iamat { depth }) => Some((rate, depth)),
        _ => None,
    };
    let (mut scheduled, mut next_client) = (0u64, 0usize);
    // Read once the warm-up ends: the window the replies are counted in.
    let mut sched_start: Option<Sched> = None;
    let file_len = |p: &std::path::PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut marks_start: Option<Vec<u64>> = None;
    let mut cpu_start: Option<u64> = None;
    let mut cpu_each_start: Vec<Option<u64>> = Vec::new();
    for c in clients.iter_mut() {
        if pace.is_none() {
            c.refill(spec.workload);
        }
        if c.flush().is_err() {
            c.phase = Phase::Lost;
        }
    }
    for _ in 0..MAX_TURNS {
        let now = Instant::now();
        if now >= deadline || super::interrupted() {
            break;
        }
        if now >= warm_end && marks_start.is_none() {
            sched_start = spec.watch.and_then(procstat::sched);
            marks_start = Some(spec.marks.iter().map(file_len).collect());
            cpu_start = cpu_of(&spec.cpu_of);
            cpu_each_start = spec.cpu_of.iter().map(|&p| procstat::cpu_ns(p)).collect();
        }
        let tick = if pace.is_some() {
            Duration::from_millis(1)
        } else {
            TICK
        };
        match poll.poll(&mut events, Some((deadline - now).min(tick))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        for event in events.iter() {
            let Some(c) = clients.get_mut(event.token().0) else {
                continue;
            };
            if c.phase == Phase::Lost {
                continue;
            }
            // A read error ends the connection like end of file does.
            let open = c.fill(&mut chunk).unwrap_or(false);
            let now = Instant::now();
            let mut used = 0;
            while let Some((len, ok)) = take_reply(&c.input[used..], c.framing(spec.workload)) {
                used += len;
                let Some(sent) = c.in_flight.pop_front() else {
                    // A reply nobody asked for: the server is confused.
                    c.phase = Phase::Lost;
                    break;
                };
                if c.phase == Phase::Greeting {
                    c.phase = Phase::Running;
                } else if now >= warm_end && now < deadline {
                    replies += 1;
                    if ok {
                        samples.record(now - sent);
                    } else {
                        errors += 1;
                        if first_error.is_none() {
                            let text = String::from_utf8_lossy(&c.input[used - len..used]);
                            first_error = Some(text.chars().take(300).collect());
                        }
                    }
                }
            }
            c.input.drain(..used);
            if !open || c.input.len() > MAX_REPLY || c.phase == Phase::Lost {
                c.phase = Phase::Lost;
                continue;
            }
            if pace.is_none() {
                c.refill(spec.workload);
            }
            if c.flush().is_err() {
                c.phase = Phase::Lost;
            }
        }
        if let Some((rate, depth)) = pace {
            let due = (start.elapsed().as_secs_f64() * rate) as u64;
            // Requests the depth cap cannot take now are skipped, not owed:
            // a backlog would measure the queue, not the server.
            let mut misses = 0;
            while scheduled < due && misses < clients.len() {
                let i = next_client % clients.len();
                next_client += 1;
                let c = &mut clients[i];
                if c.phase == Phase::Running && c.in_flight.len() < depth {
                    c.queue_iamat();
                    if c.flush().is_err() {
                        c.phase = Phase::Lost;
                    }
                    scheduled += 1;
                    misses = 0;
                } else {
                    misses += 1;
                }
            }
            scheduled = scheduled.max(due);
        }
    }
    let sched_end = spec.watch.and_then(procstat::sched);
    let cpu_end = cpu_of(&spec.cpu_of);
    let cpu_each_ns = spec
        .cpu_of
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let start = cpu_each_start.get(i).copied().flatten()?;
            Some(procstat::cpu_ns(p)?.saturating_sub(start))
        })
        .collect();
    let marks = spec
        .marks
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let start = marks_start.as_ref().and_then(|m| m.get(i)).copied();
            (start.unwrap_or(0), file_len(p))
        })
        .collect();
    let lost = clients.iter().filter(|c| c.phase == Phase::Lost).count();
    Ok(LoadResult {
        sched: sched_start.zip(sched_end).map(|(a, b)| b.since(a)),
        cpu_ns: cpu_start.zip(cpu_end).map(|(a, b)| b.saturating_sub(a)),
        cpu_each_ns,
        servers: Vec::new(),
        marks,
        connections: spec.connections,
        replies,
        errors,
        first_error,
        lost,
        seconds: deadline.saturating_duration_since(warm_end).as_secs_f64(),
        latency: samples.summary(),
    })
}

/// The CPU time of all of `pids` so far; `None` if there are none or one
/// cannot be read.
fn cpu_of(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| procstat::cpu_ns(p)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_replies() {
        assert_eq!(
            take_reply(b"AT R +0.1 a b c\nAT", Framing::Line),
            Some((16, true))
        );
        assert_eq!(take_reply(b"? IAMAT x\n", Framing::Line), Some((10, false)));
        assert_eq!(take_reply(b"AT R +0.1 a", Framing::Line), None);
        assert_eq!(take_reply(b"", Framing::Line), None);
    }

    #[test]
    fn whatsat_replies_end_at_the_blank_line() {
        let reply = b"AT R +0.1 a b c\n{\n   \"results\" : [],\n   \"status\" : \"OK\"\n}\n\n";
        let mut buf = reply.to_vec();
        buf.extend_from_slice(b"AT next");
        assert_eq!(
            take_reply(&buf, Framing::UntilBlank),
            Some((reply.len(), true))
        );
        for cut in 0..reply.len() {
            assert_eq!(
                take_reply(&reply[..cut], Framing::UntilBlank),
                None,
                "{cut}"
            );
        }
        let failed = b"AT R +0.1 a b c\n{\n   \"status\" : \"UNKNOWN_ERROR\"\n}\n\n";
        assert_eq!(
            take_reply(failed, Framing::UntilBlank),
            Some((failed.len(), false))
        );
        // An error is one line, whatever was asked.
        assert_eq!(
            take_reply(b"? WHATSAT a 10 5\nAT", Framing::UntilBlank),
            Some((17, false))
        );
    }
}
