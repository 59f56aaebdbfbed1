//! The `flood` scenario: how long an update takes to reach the farthest
//! server. The herd is started with one extra server, `Observer`, linked
//! only to the far server, and the bench plays Observer itself over the
//! herd's own peer protocol (`docs/protocol.md`):
//!
//! - it listens on Observer's peer port (bound before the herd starts, so
//!   the far server's first dial finds it), answers the far server's
//!   `HELLO <far>` with `WELCOME Observer`, and its `PING`s with `PONG`;
//! - it dials the far server's peer port with `HELLO Observer` (expecting
//!   `WELCOME <far>`) and pings it, as a neighbour would;
//! - a client connection to the origin keeps `depth` updates in flight,
//!   each with its own client ID; every new position the far server learns
//!   it floods to Observer, so the time from queueing the IAMAT at the origin
//!   to reading its AT line from the far server is the propagation time.
//!
//! On a TLS herd (`--tls`), Observer's peer links are mutual TLS too, with
//! the certificate `proxy-herd certs` made for it, through the server's own
//! peer transport (`proxy_herd::tls::link`), so each of its two hops pays
//! what a TLS link costs.
//!
//! One `mio` loop in one thread; registration: read+write once, edges, read
//! and write until `WouldBlock`.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use proxy_herd::tls::link::PeerTransport;
use proxy_herd::tls::peer::PeerTls;
use proxy_herd::transport::Transport;

use super::load::{connect, LOCATION};
use super::stats::{Samples, Summary};
use super::Error;

/// The name the bench plays in the herd file.
pub const OBSERVER: &str = "Observer";
/// Where updates start, where they are watched, and the path between.
pub const ORIGIN: &str = "Riley";
pub const FAR: &str = "Campbell";
pub const PATH: &str = "Riley-Juzang-Campbell";
pub const HOPS: usize = 2;

const LISTENER: Token = Token(0);
const DIAL: Token = Token(1);
const ORIGIN_CLIENT: Token = Token(2);
/// Accepted peer connections take tokens from here on.
const FIRST_ACCEPTED: usize = 3;
/// Links and the first update must be through within this.
const SETUP_DEADLINE: Duration = Duration::from_secs(15);
/// After the run, updates still on their way get this long to arrive.
const GRACE: Duration = Duration::from_secs(2);
/// Observer pings its link this often (the server drops links silent 5 s).
const PING_EVERY: Duration = Duration::from_secs(1);
const TICK: Duration = Duration::from_millis(20);
const MAX_TURNS: u64 = 1 << 32;
/// At most this many updates are sent in one run (memory for send times).
const MAX_UPDATES: usize = 50_000_000;
/// A peer line longer than this is a broken peer.
const MAX_LINE: usize = 64 * 1024;

/// What the flood scenario measured.
#[derive(Debug, Clone)]
pub struct FloodResult {
    pub origin: &'static str,
    pub far: &'static str,
    pub path: &'static str,
    pub hops: usize,
    /// Updates sent in the measured window.
    pub sent: u64,
    /// Of those, seen at the far server.
    pub seen: u64,
    pub seconds: f64,
    pub latency: Option<Summary>,
}

impl FloodResult {
    /// Updates per second that reached the far server.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.seen as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// The client ID of update `seq` in this run.
fn update_id(prefix: &str, seq: usize) -> String {
    format!("{prefix}{seq}")
}

/// The update number in an AT line from a peer, if it is one of ours.
pub fn update_seq(line: &[u8], prefix: &str) -> Option<usize> {
    let mut f = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    if f.next()? != b"AT" {
        return None;
    }
    let client = f.nth(2)?;
    std::str::from_utf8(client.strip_prefix(prefix.as_bytes())?)
        .ok()?
        .parse()
        .ok()
}

/// A line-oriented connection: buffered output, input split at `\n`, over
/// plaintext or TLS.
struct LineConn {
    transport: PeerTransport,
    input: Vec<u8>,
}

impl LineConn {
    fn new(stream: TcpStream) -> LineConn {
        LineConn::over(PeerTransport::plain(Transport::new(stream)))
    }

    fn over(transport: PeerTransport) -> LineConn {
        LineConn {
            transport,
            input: Vec::new(),
        }
    }

    /// Reads until `WouldBlock`; `Ok(false)` at end of file.
    fn fill(&mut self, chunk: &mut [u8]) -> io::Result<bool> {
        loop {
            match self.transport.read(chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The complete lines read so far, taken out of the buffer.
    fn lines(&mut self) -> Vec<Vec<u8>> {
        let Some(last) = self.input.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let rest = self.input.split_off(last + 1);
        let done = std::mem::replace(&mut self.input, rest);
        done.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }

    fn write(&mut self, bytes: &[u8]) {
        self.transport.write(bytes);
    }

    fn flush(&mut self) -> io::Result<()> {
        self.transport.flush().map(|_| ())
    }
}

/// Observer's peer listener, bound before the herd starts.
pub struct Observer {
    listener: TcpListener,
}

impl Observer {
    pub fn bind() -> Result<Observer, Error> {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        Ok(Observer {
            listener: TcpListener::bind(addr)?,
        })
    }

    pub fn addr(&self) -> Result<SocketAddr, Error> {
        Ok(self.listener.local_addr()?)
    }

    /// Runs the flood: `far_peer` is the far server's peer address, `origin`
    /// the origin's client address; with `tls`, Observer's peer links are TLS.
    pub fn run(
        mut self,
        far_peer: SocketAddr,
        origin: SocketAddr,
        depth: usize,
        warmup: Duration,
        duration: Duration,
        tls: Option<&PeerTls>,
    ) -> Result<FloodResult, Error> {
        let mut poll = Poll::new()?;
        poll.registry()
            .register(&mut self.listener, LISTENER, Interest::READABLE)?;
        let stream = connect(far_peer)?;
        let mut dial = match tls {
            Some(t) => LineConn::over(PeerTransport::dialled(stream, t.dial(FAR)?)),
            None => LineConn::new(stream),
        };
        poll.registry().register(
            dial.transport.stream_mut(),
            DIAL,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        dial.write(format!("HELLO {OBSERVER}\n").as_bytes());
        let mut client = LineConn::new(connect(origin)?);
        poll.registry().register(
            client.transport.stream_mut(),
            ORIGIN_CLIENT,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let mut accepted: Vec<Option<LineConn>> = Vec::new();

        let prefix = format!("hbf-{}-", std::process::id());
        let epoch_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| Error::new("the clock is before 1970"))?
            .as_nanos();
        // When each update was queued; `None` once seen (or never sent).
        let mut sent_at: Vec<Option<Instant>> = Vec::new();
        let mut in_flight = 0usize;
        let mut welcomed = false; // our dial got WELCOME <far>
        let mut linked = false; // the far server's dial got our WELCOME

        let setup_end = Instant::now() + SETUP_DEADLINE;
        // Set once the first update (a probe) has come through: the path works.
        let mut window: Option<(Instant, Instant, Instant)> = None; // (warm end, deadline, grace end)
        let mut next_ping = Instant::now() + PING_EVERY;
        let mut samples = Samples::new();
        let (mut sent, mut seen) = (0u64, 0u64);
        let mut events = Events::with_capacity(256);
        let mut chunk = vec![0u8; 64 * 1024];

        for _ in 0..MAX_TURNS {
            let now = Instant::now();
            if super::interrupted() {
                break;
            }
            match window {
                None if now > setup_end => {
                    return Err(Error::new(format!(
                        "flood: no update reached {FAR} within {SETUP_DEADLINE:?} \
                         (link from {FAR}: {linked}, link to {FAR}: {welcomed})"
                    )))
                }
                Some((_, _, grace_end)) if now > grace_end => break,
                Some((_, deadline, _)) if now > deadline && in_flight == 0 => break,
                _ => {}
            }
            if now >= next_ping {
                dial.write(b"PING\n");
                next_ping = now + PING_EVERY;
            }
            // Keep `depth` updates on their way (one probe until the path works).
            let sending = match window {
                None => linked && welcomed && sent_at.is_empty(),
                Some((_, deadline, _)) => now < deadline && in_flight < depth,
            };
            if sending {
                let want = if window.is_none() {
                    1
                } else {
                    depth - in_flight
                };
                for _ in 0..want.min(MAX_UPDATES.saturating_sub(sent_at.len())) {
                    let seq = sent_at.len();
                    let t = epoch_ns + seq as u128;
                    let line = format!(
                        "IAMAT {} {LOCATION} {}.{:09}\n",
                        update_id(&prefix, seq),
                        t / 1_000_000_000,
                        t % 1_000_000_000
                    );
                    client.write(line.as_bytes());
                    let queued = Instant::now();
                    if window.is_some_and(|(w, d, _)| queued >= w && queued < d) {
                        sent += 1;
                    }
                    sent_at.push(Some(queued));
                    in_flight += 1;
                }
            }
            for c in [&mut dial, &mut client]
                .into_iter()
                .chain(accepted.iter_mut().flatten())
            {
                c.flush()
                    .map_err(|e| Error::new(format!("flood: write: {e}")))?;
            }

            let timeout = match window {
                Some((_, deadline, _)) if now < deadline => (deadline - now).min(TICK),
                _ => TICK,
            };
            match poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => loop {
                        match self.listener.accept() {
                            Ok((mut s, _)) => {
                                let token = Token(FIRST_ACCEPTED + accepted.len());
                                poll.registry().register(
                                    &mut s,
                                    token,
                                    Interest::READABLE | Interest::WRITABLE,
                                )?;
                                accepted.push(Some(match tls {
                                    Some(t) => {
                                        LineConn::over(PeerTransport::accepted(s, t.accept()?))
                                    }
                                    None => LineConn::new(s),
                                }));
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(Error::new(format!("flood: accept: {e}"))),
                        }
                    },
                    DIAL => {
                        let open = dial.fill(&mut chunk).unwrap_or(false);
                        for line in dial.lines() {
                            if line.starts_with(b"WELCOME ") {
                                welcomed = true;
                            } else if line.starts_with(b"REFUSED") {
                                return Err(Error::new(format!(
                                    "flood: {FAR} refused Observer: {}",
                                    String::from_utf8_lossy(&line)
                                )));
                            }
                        }
                        if !open {
                            return Err(Error::new(format!("flood: {FAR} closed our link")));
                        }
                    }
                    ORIGIN_CLIENT => {
                        // The origin's AT replies: read so that its output never backs up.
                        let open = client.fill(&mut chunk).unwrap_or(false);
                        let _ = client.lines();
                        if !open {
                            return Err(Error::new(format!("flood: {ORIGIN} closed the client")));
                        }
                    }
                    Token(t) => {
                        let i = t - FIRST_ACCEPTED;
                        let Some(Some(c)) = accepted.get_mut(i) else {
                            continue;
                        };
                        let open = c.fill(&mut chunk).unwrap_or(false) && c.input.len() < MAX_LINE;
                        let now = Instant::now();
                        for line in c.lines() {
                            if line.starts_with(b"HELLO ") {
                                c.write(format!("WELCOME {OBSERVER}\n").as_bytes());
                                linked = true;
                            } else if line.as_slice() == b"PING" {
                                c.write(b"PONG\n");
                            } else if let Some(seq) = update_seq(&line, &prefix) {
                                let Some(at) = sent_at.get_mut(seq).and_then(Option::take) else {
                                    continue;
                                };
                                in_flight = in_flight.saturating_sub(1);
                                match window {
                                    None => {
                                        let warm_end = now + warmup;
                                        let deadline = now + duration.max(warmup);
                                        window = Some((warm_end, deadline, deadline + GRACE));
                                    }
                                    Some((warm_end, deadline, _))
                                        if at >= warm_end && at < deadline =>
                                    {
                                        seen += 1;
                                        samples.record(now - at);
                                    }
                                    _ => {}
                                }
                            }
                        }
                        if !open {
                            accepted[i] = None;
                        }
                    }
                }
            }
        }
        let Some((warm_end, deadline, _)) = window else {
            return Err(Error::new("flood: interrupted before it started"));
        };
        Ok(FloodResult {
            origin: ORIGIN,
            far: FAR,
            path: PATH,
            hops: HOPS,
            sent,
            seen,
            seconds: deadline.saturating_duration_since(warm_end).as_secs_f64(),
            latency: samples.summary(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_updates_are_recognised() {
        let p = "hbf-7-";
        let line = format!("AT Riley +0.000012345 {} {LOCATION} 1.5", update_id(p, 42));
        assert_eq!(update_seq(line.as_bytes(), p), Some(42));
        assert_eq!(
            update_seq(b"AT  Riley\t+0.1 hbf-7-3 +1+1 1.5\r", p),
            Some(3)
        );
        // Someone else's client, a probe from another run, not an update.
        assert_eq!(update_seq(b"AT Riley +0.1 kiwi +1+1 1.5", p), None);
        assert_eq!(update_seq(b"AT Riley +0.1 hbf-8-3 +1+1 1.5", p), None);
        assert_eq!(update_seq(b"AT Riley +0.1 hbf-7-x +1+1 1.5", p), None);
        assert_eq!(update_seq(b"PING", p), None);
        assert_eq!(update_seq(b"HELLO Campbell", p), None);
    }
}
