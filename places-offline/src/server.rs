//! The service's event loop (asyncio's `run_forever`): one thread, one
//! `Poll`, a slab of TLS connections, the listener, SIGINT/SIGTERM as an
//! event, and the crate's timer queue ([`proxy_herd::timers::Timers`], whose
//! payload here is [`TimerEvent`]). Each connection is a
//! `Conn`: the crate's TLS transport ([`proxy_herd::tls::TlsTransport`], which
//! holds all of rustls's plumbing and our queue of unsent plaintext) and the
//! phases of its life. Requests are parsed and answered by [`super::http`]
//! and [`super::api`]; this file only moves bytes and time.
//!
//! Registration model: every connection is registered once, for READABLE |
//! WRITABLE, and never re-registered. Readiness is edge-triggered, so every
//! handler reads, writes and accepts until `WouldBlock`, and every handler
//! tolerates a spurious event (it just finds nothing to do).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use rustls::{ServerConfig, ServerConnection};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use super::api::{Response, Service};
use super::http::{self, redact_key, Outcome, MAX_BODY, MAX_HEAD};
use super::options::FailMode;
use proxy_herd::log::Log;
use proxy_herd::timers::Timers;
use proxy_herd::tls::{TlsError, TlsTransport};

const LISTENER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);

/// Received plaintext held at most (a full request plus slack); past it we
/// stop reading and let TCP push back on the client.
const MAX_INBUF: usize = MAX_HEAD + MAX_BODY + 16 * 1024;
/// Answers queued but unsent past which we stop taking new requests from a
/// client that pipelines without reading.
const MAX_BACKLOG: usize = 1 << 20;
/// How long a closed connection may keep sending before we drop it: reading
/// until the peer's EOF avoids a reset that could destroy our last answer.
const DRAIN_TIME: Duration = Duration::from_secs(2);
/// A TLS handshake not done in this long is dropped (a stalled client
/// must not hold a slot and its buffers forever).
const HANDSHAKE_TIME: Duration = Duration::from_secs(5);
/// A connection that has sent nothing and is owed nothing for this long is
/// closed, as Google's front ends do with idle keep-alive connections.
const IDLE_TIME: Duration = Duration::from_secs(30);
/// At most this many connections at once; past it new ones are closed at
/// once (and logged), so a flood of them costs a bounded amount of memory.
const MAX_CONNS: usize = 4096;
/// After EMFILE, accepting is retried this much later (the listener is
/// edge-triggered: the waiting connection would never be announced again).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// What a timer does when it fires. Each names a connection by slab key and
/// by connection number, so a timer for a connection that has since closed
/// (its slot reused) is recognised and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerEvent {
    /// Send the connection's answers whose delay (`--latency-ms`) is over.
    Answer {
        /// Slab key.
        key: usize,
        /// Connection number.
        conn: u64,
    },
    /// Stop waiting for a closing peer's EOF and free the slot.
    DrainDeadline {
        /// Slab key.
        key: usize,
        /// Connection number.
        conn: u64,
    },
    /// Drop the connection if its TLS handshake is still not done.
    HandshakeDeadline {
        /// Slab key.
        key: usize,
        /// Connection number.
        conn: u64,
    },
    /// Close the connection if it has been idle for `IDLE_TIME` (30 s).
    IdleCheck {
        /// Slab key.
        key: usize,
        /// Connection number.
        conn: u64,
    },
    /// Accepting paused after EMFILE: try again.
    ResumeAccepting,
}

/// How answers are shaped, from the command line.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    /// Delay before each answer.
    pub latency: Duration,
    /// Failure injected into every answer.
    pub fail: Option<FailMode>,
    /// Chunked response bodies.
    pub chunked: bool,
    /// Close the connection after every answer (`--no-keep-alive`).
    pub no_keep_alive: bool,
    /// Close, unanswered, a connection that brings a second request
    /// (`--drop-reused`).
    pub drop_reused: bool,
}

/// The life of a connection, in order; each phase only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// TLS handshake under way.
    Handshaking,
    /// Taking requests.
    Open,
    /// No more input will be used (the peer sent EOF, or a request asked to
    /// close): answer the requests already received, then close.
    HalfClosed,
    /// Everything is answered; sending the last plaintext, then close_notify.
    Closing,
    /// close_notify queued; flushing the last TLS records, then shut down our write half.
    Shutdown,
    /// Write half shut; discarding input until the peer's EOF or [`DRAIN_TIME`].
    Draining,
    /// Done: the slot is freed after this batch of events.
    Closed,
}

/// An answer waiting for its time (`--latency-ms`), in request order.
#[derive(Debug)]
struct Owed {
    due: Instant,
    bytes: Vec<u8>,
    then_close: bool,
}

/// What a connection needs from the loop while it runs.
struct Context<'a> {
    service: &'a Service,
    behaviour: Behaviour,
    timers: &'a mut Timers<TimerEvent>,
    log: &'a mut Log,
}

/// One client connection: TLS transport plus HTTP/1.1 keep-alive state.
struct Conn {
    /// Connection number, for the log; also the slot's generation for timers.
    number: u64,
    key: usize,
    peer: SocketAddr,
    /// The socket with TLS on it, and the plaintext due to be sent.
    transport: TlsTransport<ServerConnection>,
    /// Received plaintext not yet parsed.
    inbuf: Vec<u8>,
    /// Answers not yet due.
    owed: VecDeque<Owed>,
    /// Requests taken on this connection so far (`--drop-reused` refuses the
    /// second).
    requests: u64,
    phase: Phase,
    /// The last readiness event on it (idle connections are closed).
    last_active: Instant,
}

impl Conn {
    fn set_phase(&mut self, to: Phase) {
        // Phases only move forward; a late, lower one is ignored.
        if (to as u8) > (self.phase as u8) {
            self.phase = to;
        }
    }

    fn connection_lost(&mut self, cx: &mut Context, what: &str, err: &dyn std::fmt::Display) {
        cx.log.event(format_args!(
            "error conn={} peer={} {what}: {err}",
            self.number, self.peer
        ));
        self.phase = Phase::Closed;
    }

    /// Drives the connection as far as it can go now: read, answer, write,
    /// and the closing steps. Called on every readiness event and timer.
    fn pump(&mut self, cx: &mut Context) {
        while matches!(
            self.phase,
            Phase::Handshaking | Phase::Open | Phase::HalfClosed
        ) {
            let got = self.read_records(cx);
            // Read after the records: the transport sends the handshake's
            // flight while it reads, so the client's answer (and requests)
            // can arrive within one read, and a delay counts from the
            // request's arrival, never from before it.
            let now = Instant::now();
            let served = self.data_received(cx, now);
            self.release_due(now);
            self.write_records(cx);
            if got == 0 && served == 0 {
                break;
            }
        }
        if self.phase == Phase::HalfClosed && self.owed.is_empty() {
            self.set_phase(Phase::Closing);
        }
        if self.phase == Phase::Closing {
            // close_notify after the last answer, then FIN (the transport's close).
            self.transport.close();
            self.set_phase(Phase::Shutdown);
        }
        if self.phase == Phase::Shutdown {
            self.write_records(cx);
            if self.transport.write_closed() && self.phase == Phase::Shutdown {
                self.set_phase(Phase::Draining);
                cx.timers.call_later(
                    Instant::now(),
                    DRAIN_TIME,
                    TimerEvent::DrainDeadline {
                        key: self.key,
                        conn: self.number,
                    },
                );
            }
        }
        if self.phase == Phase::Draining {
            self.discard_input();
        }
    }

    /// Reads TLS records until `WouldBlock` (or our buffer is full) and
    /// decrypts them into `inbuf`; returns how many plaintext bytes came.
    fn read_records(&mut self, cx: &mut Context) -> usize {
        if !matches!(
            self.phase,
            Phase::Handshaking | Phase::Open | Phase::HalfClosed
        ) {
            return 0;
        }
        let start = self.inbuf.len();
        let received = self.transport.receive(&mut self.inbuf, MAX_INBUF);
        if self.transport.take_handshake_done() {
            self.connection_made(cx);
        }
        let got = match received {
            Ok(got) => got,
            Err(TlsError::Read(e)) => {
                self.connection_lost(cx, "read", &e);
                return 0;
            }
            Err(e) => {
                self.connection_lost(cx, "tls", &e);
                return 0;
            }
        };
        if self.phase == Phase::HalfClosed {
            // Input after the last request we answer is not used.
            self.inbuf.truncate(start);
        }
        if got.closed.is_some() {
            self.eof_received();
        }
        self.inbuf.len() - start
    }

    /// The TLS handshake is complete (asyncio's `connection_made` for TLS).
    fn connection_made(&mut self, cx: &mut Context) {
        self.set_phase(Phase::Open);
        let version = self.transport.version();
        let suite = self.transport.cipher_suite();
        cx.log.event(format_args!(
            "tls conn={} peer={} handshake done {version} {suite}",
            self.number, self.peer
        ));
    }

    /// The peer will send nothing more: answer what is buffered, then close.
    fn eof_received(&mut self) {
        match self.phase {
            Phase::Handshaking => self.phase = Phase::Closed,
            _ => self.set_phase(Phase::HalfClosed),
        }
    }

    /// Answers the complete requests in `inbuf`; returns how many.
    fn data_received(&mut self, cx: &mut Context, now: Instant) -> usize {
        let mut served = 0;
        while matches!(self.phase, Phase::Open | Phase::HalfClosed)
            && self.transport.backlog() < MAX_BACKLOG
            && self.owed.len() < 64
        {
            let s = match http::serve_one(&self.inbuf, cx.service) {
                Outcome::Partial => break,
                Outcome::Served(s) => s,
            };
            self.inbuf.drain(..s.used.min(self.inbuf.len()));
            if cx.behaviour.drop_reused && self.requests > 0 {
                // As a server whose idle timeout fired just as the client
                // reused the connection: no byte of an answer, only
                // close_notify and FIN once the earlier answers are out.
                cx.log.event(format_args!(
                    "drop conn={} peer={} dropped a reused connection: request {} {} {}",
                    self.number,
                    self.peer,
                    self.requests + 1,
                    s.method,
                    redact_key(&s.target),
                ));
                self.set_phase(Phase::HalfClosed);
                break;
            }
            self.requests += 1;
            served += 1;
            let keep_alive = s.keep_alive && !cx.behaviour.no_keep_alive;
            let (bytes, then_close, status) = match cx.behaviour.fail {
                // Bad HTTP is answered as such, whatever failure is injected.
                _ if s.method == "-" => {
                    let status = s.response.status.to_string();
                    (self.frame(cx, &s.response, false, false), true, status)
                }
                Some(FailMode::Close) => (Vec::new(), true, "-".to_string()),
                Some(FailMode::Http500) => {
                    let r = Response::text(500, "Internal Server Error");
                    (
                        self.frame(cx, &r, keep_alive, false),
                        !keep_alive,
                        "500".into(),
                    )
                }
                Some(FailMode::NotJson) => {
                    let mut r =
                        Response::text(200, "<html><body>Temporarily unavailable</body></html>");
                    r.content_type = "text/html; charset=UTF-8";
                    (
                        self.frame(cx, &r, keep_alive, false),
                        !keep_alive,
                        "200".into(),
                    )
                }
                None => {
                    let bytes = self.frame(cx, &s.response, keep_alive, s.head_only);
                    (bytes, !keep_alive, s.response.status.to_string())
                }
            };
            let f = s.response.facts;
            let location = f
                .location
                .map_or("-".to_string(), |(lat, lng)| format!("{lat},{lng}"));
            let radius = f.radius_m.map_or("-".to_string(), |r| r.to_string());
            let results = if cx.behaviour.fail.is_some() && s.method != "-" {
                0
            } else {
                f.results
            };
            let fail = match cx.behaviour.fail {
                Some(mode) if s.method != "-" => format!(" fail={mode:?}"),
                _ => String::new(),
            };
            cx.log.event(format_args!(
                "request conn={} {} {} location={location} radius_m={radius} status={status} results={results}{fail}",
                self.number,
                s.method,
                redact_key(&s.target),
            ));
            let due = now + cx.behaviour.latency;
            self.owed.push_back(Owed {
                due,
                bytes,
                then_close,
            });
            if !cx.behaviour.latency.is_zero() {
                // The same instant as the answer's `due`, so the pump this
                // timer causes finds it due. Answers leave in request order
                // because `owed` is a FIFO released from the front; the timer
                // only says when to look.
                cx.timers.call_at(
                    due,
                    TimerEvent::Answer {
                        key: self.key,
                        conn: self.number,
                    },
                );
            }
            if then_close {
                self.set_phase(Phase::HalfClosed);
                self.inbuf.clear();
            }
        }
        if self.phase == Phase::HalfClosed {
            // What is left can never become a whole request.
            self.inbuf.clear();
        }
        served
    }

    fn frame(&self, cx: &Context, r: &Response, keep_alive: bool, head_only: bool) -> Vec<u8> {
        http::frame(r, keep_alive, cx.behaviour.chunked, head_only)
    }

    /// Moves the answers whose time has come to the output queue, in order.
    fn release_due(&mut self, now: Instant) {
        if release_due(&mut self.owed, self.transport.out_buf(), now) {
            self.set_phase(Phase::HalfClosed);
        }
    }

    /// Hands queued plaintext to rustls and TLS records to the socket, until
    /// both are empty or the socket says `WouldBlock`.
    fn write_records(&mut self, cx: &mut Context) {
        if let Err(e) = self.transport.flush() {
            self.connection_lost(cx, "write", &e);
        }
    }

    /// Reads and drops input after our close, until EOF.
    fn discard_input(&mut self) {
        if self.transport.discard_input() {
            self.phase = Phase::Closed;
        }
    }
}

/// Moves answers from the front of `owed` to `outq` while they are due, so
/// they leave in request order even if a later one were due sooner. Returns
/// true when one of them closes the connection (what follows it is dropped).
fn release_due(owed: &mut VecDeque<Owed>, outq: &mut Vec<u8>, now: Instant) -> bool {
    while owed.front().is_some_and(|o| o.due <= now) {
        let Some(answer) = owed.pop_front() else {
            break;
        };
        outq.extend_from_slice(&answer.bytes);
        if answer.then_close {
            owed.clear();
            return true;
        }
    }
    false
}

/// Why the loop could not start or stopped.
#[derive(Debug)]
pub enum ServeError {
    /// The listening address could not be bound (in use, not local...).
    Bind(SocketAddr, io::Error),
    /// Poll, signal or other start-up failure.
    Io(io::Error),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Bind(addr, e) if e.kind() == io::ErrorKind::AddrInUse => {
                write!(f, "cannot listen on {addr}: address already in use")
            }
            ServeError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            ServeError::Io(e) => write!(f, "event loop: {e}"),
        }
    }
}

impl std::error::Error for ServeError {}

impl From<io::Error> for ServeError {
    fn from(e: io::Error) -> Self {
        ServeError::Io(e)
    }
}

/// The event loop and everything it owns.
pub struct EventLoop {
    poll: Poll,
    listener: TcpListener,
    signals: Signals,
    conns: Slab<Conn>,
    timers: Timers<TimerEvent>,
    tls_config: Arc<ServerConfig>,
    service: Service,
    behaviour: Behaviour,
    log: Log,
    next_number: u64,
    /// Slab keys of connections that reached `Closed` in this batch.
    closed: Vec<usize>,
    /// Accepting is paused after EMFILE until a timer resumes it.
    accept_paused: bool,
}

impl EventLoop {
    /// Binds the listener and registers it and the signals.
    pub fn bind(
        addr: SocketAddr,
        tls_config: Arc<ServerConfig>,
        service: Service,
        behaviour: Behaviour,
        log: Log,
    ) -> Result<EventLoop, ServeError> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(addr).map_err(|e| ServeError::Bind(addr, e))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        Ok(EventLoop {
            poll,
            listener,
            signals,
            conns: Slab::new(),
            timers: Timers::default(),
            tls_config,
            service,
            behaviour,
            log,
            next_number: 0,
            closed: Vec::new(),
            accept_paused: false,
        })
    }

    /// The address actually bound (the port when 0 was asked for).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Writes one line to the request log at once (start-up lines, before
    /// the loop's per-turn flush takes over).
    pub fn log_event(&mut self, args: std::fmt::Arguments) {
        self.log.event(args);
        self.log.flush();
    }

    /// Runs until SIGINT or SIGTERM (asyncio's `run_forever`); only a failure
    /// of `poll` itself ends it with an error.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self.timers.time_until_next(Instant::now());
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let mut stop = false;
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_connections(),
                    SIGNALS => stop |= self.signals.pending().next().is_some(),
                    Token(key) => {
                        if let Some(conn) = self.conns.get_mut(key) {
                            conn.last_active = Instant::now();
                        }
                        self.pump(key)
                    }
                }
            }
            self.run_expired_timers();
            self.reap_closed();
            if stop {
                self.log.event(format_args!("stopping on signal"));
                self.log.flush();
                return Ok(());
            }
            self.log.flush();
        }
    }

    /// Accepts until `WouldBlock` (asyncio's `create_server` callback).
    fn accept_connections(&mut self) {
        if self.accept_paused {
            return;
        }
        loop {
            let (mut sock, peer) = match self.listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12)) => {
                    // Out of descriptors (or memory): the connection waits in
                    // the backlog and no new edge will say so; retry from
                    // the timer queue, not a spin.
                    self.log.event(format_args!(
                        "accept paused for {} ms: {e}",
                        ACCEPT_RETRY.as_millis()
                    ));
                    self.accept_paused = true;
                    self.timers.call_later(
                        Instant::now(),
                        ACCEPT_RETRY,
                        TimerEvent::ResumeAccepting,
                    );
                    return;
                }
                Err(e) => {
                    // ECONNABORTED and the like concern one connection only.
                    self.log.event(format_args!("error accept: {e}"));
                    continue;
                }
            };
            if self.conns.len() >= MAX_CONNS {
                self.log.event(format_args!(
                    "refused {peer}: {MAX_CONNS} connections already open"
                ));
                continue;
            }
            let tls = match ServerConnection::new(Arc::clone(&self.tls_config)) {
                Ok(tls) => tls,
                Err(e) => {
                    self.log.event(format_args!("error tls setup: {e}"));
                    continue;
                }
            };
            // Answers go out whole; Nagle would only delay them.
            let _ = sock.set_nodelay(true);
            self.next_number += 1;
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if let Err(e) = self.poll.registry().register(
                &mut sock,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                self.log.event(format_args!("error register: {e}"));
                continue;
            }
            let now = Instant::now();
            entry.insert(Conn {
                number: self.next_number,
                key,
                peer,
                transport: TlsTransport::new(sock, tls),
                inbuf: Vec::new(),
                owed: VecDeque::new(),
                requests: 0,
                phase: Phase::Handshaking,
                last_active: now,
            });
            let conn = self.next_number;
            self.timers.call_later(
                now,
                HANDSHAKE_TIME,
                TimerEvent::HandshakeDeadline { key, conn },
            );
            self.timers
                .call_later(now, IDLE_TIME, TimerEvent::IdleCheck { key, conn });
        }
    }

    fn pump(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return; // an event for a slot already freed
        };
        let mut cx = Context {
            service: &self.service,
            behaviour: self.behaviour,
            timers: &mut self.timers,
            log: &mut self.log,
        };
        conn.pump(&mut cx);
        if conn.phase == Phase::Closed {
            self.closed.push(key);
        }
    }

    fn run_expired_timers(&mut self) {
        let now = Instant::now();
        while let Some(event) = self.timers.pop_expired(now) {
            let (key, number) = match event {
                TimerEvent::Answer { key, conn }
                | TimerEvent::DrainDeadline { key, conn }
                | TimerEvent::HandshakeDeadline { key, conn }
                | TimerEvent::IdleCheck { key, conn } => (key, conn),
                TimerEvent::ResumeAccepting => {
                    self.accept_paused = false;
                    self.accept_connections();
                    continue;
                }
            };
            // A timer for a connection whose slot now holds another is stale.
            if self.conns.get(key).is_none_or(|c| c.number != number) {
                continue;
            }
            match event {
                TimerEvent::Answer { .. } => self.pump(key),
                TimerEvent::DrainDeadline { .. } => self.drop_conn(key, None),
                TimerEvent::HandshakeDeadline { .. } => {
                    if self
                        .conns
                        .get(key)
                        .is_some_and(|c| c.phase == Phase::Handshaking)
                    {
                        self.drop_conn(key, Some("TLS handshake not done in time"));
                    }
                }
                TimerEvent::IdleCheck { .. } => self.idle_check(key, now),
                TimerEvent::ResumeAccepting => {}
            }
        }
    }

    /// Frees a connection's slot at the end of the batch, logging why.
    fn drop_conn(&mut self, key: usize, why: Option<&str>) {
        if let Some(conn) = self.conns.get_mut(key) {
            if let Some(why) = why {
                self.log
                    .event(format_args!("conn={} closed: {why}", conn.number));
            }
            conn.phase = Phase::Closed;
            self.closed.push(key);
        }
    }

    /// Closes a connection idle for [`IDLE_TIME`] that is owed nothing, or
    /// looks again when it could next be.
    fn idle_check(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let quiet = now.duration_since(conn.last_active);
        if quiet >= IDLE_TIME && conn.owed.is_empty() {
            self.drop_conn(key, Some("idle too long"));
        } else {
            let conn = conn.number;
            let wait = IDLE_TIME
                .saturating_sub(quiet)
                .max(Duration::from_millis(10));
            self.timers
                .call_later(now, wait, TimerEvent::IdleCheck { key, conn });
        }
    }

    fn reap_closed(&mut self) {
        for key in std::mem::take(&mut self.closed) {
            // A key may be listed twice; only a Closed occupant is removed.
            if self
                .conns
                .get(key)
                .is_some_and(|c| c.phase == Phase::Closed)
            {
                let mut conn = self.conns.remove(key);
                let _ = self.poll.registry().deregister(conn.transport.stream_mut());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owed(due: Instant, text: &str, then_close: bool) -> Owed {
        Owed {
            due,
            bytes: text.as_bytes().to_vec(),
            then_close,
        }
    }

    /// Pipelined requests read in one pump share one `due`, so their Answer
    /// timers tie. The crate's queue hands ties back in the order they were
    /// scheduled (its ids increase), after earlier deadlines and before
    /// later ones; the service only needs the first of them to pump.
    #[test]
    fn tied_answer_timers_fire_in_request_order() {
        let t0 = Instant::now();
        let due = t0 + Duration::from_millis(150);
        let mut timers = Timers::default();
        let later = TimerEvent::DrainDeadline { key: 9, conn: 9 };
        timers.call_at(due + Duration::from_millis(1), later);
        let tied = [
            TimerEvent::Answer { key: 3, conn: 7 },
            TimerEvent::Answer { key: 1, conn: 5 },
            TimerEvent::DrainDeadline { key: 3, conn: 7 },
            TimerEvent::Answer { key: 3, conn: 7 },
        ];
        for event in tied {
            timers.call_at(due, event);
        }
        let first = TimerEvent::Answer { key: 0, conn: 1 };
        timers.call_later(t0, Duration::from_millis(100), first);
        assert_eq!(
            timers.pop_expired(due - Duration::from_millis(1)),
            Some(first)
        );
        let popped: Vec<_> = std::iter::from_fn(|| timers.pop_expired(due)).collect();
        assert_eq!(popped, tied);
        assert_eq!(
            timers.pop_expired(due + Duration::from_millis(1)),
            Some(later)
        );
        assert!(timers.is_empty());
    }

    #[test]
    fn answers_leave_in_request_order_and_stop_at_a_close() {
        let t0 = Instant::now();
        let due = t0 + Duration::from_millis(150);
        let mut queue: VecDeque<Owed> = [
            owed(due, "a", false),
            owed(due, "b", false),
            owed(due + Duration::from_millis(5), "c", false),
            // Due sooner than "c", but must not overtake it.
            owed(due, "d", true),
            owed(due, "e", false),
        ]
        .into();
        let mut out = Vec::new();
        assert!(!release_due(&mut queue, &mut out, t0));
        assert!(out.is_empty());
        assert!(!release_due(&mut queue, &mut out, due));
        assert_eq!(out, b"ab");
        assert!(release_due(
            &mut queue,
            &mut out,
            due + Duration::from_millis(5)
        ));
        assert_eq!(out, b"abcd");
        assert!(queue.is_empty(), "nothing is sent after a closing answer");
    }
}
