//! The event loop: asyncio's `loop.run_forever`, written out.
//!
//! One thread, one `mio::Poll`, one `Slab` of connections (clients, peer links
//! both ways, HTTPS connections to Places), and one timer queue. [`EventLoop::run`]
//! turns in fixed phases:
//!
//! 1. sleep in `poll` until a socket is ready or the nearest timer is due
//!    (not at all when a connection still has input from the last turn);
//! 2. handle the ready sockets, peer links before clients, so that an update
//!    that arrived before a client's question is known when it is answered,
//!    and the HTTP endpoint last, so that it never delays either; then the
//!    connections that still had input after their last read, in that order;
//!    then write what they asked for: the floods (one write per neighbour per
//!    turn), the state file, the log (one write), the replies;
//! 3. run the timers that are due (`call_later` callbacks);
//! 4. flush the state file and the log, then free the connections closed
//!    during the turn (so a close is logged before the other side sees it).
//!
//! **Registration model**: every socket is registered once, for both READABLE
//! and WRITABLE, edge-triggered, and never re-registered. An edge means
//! "something changed", so every handler tolerates a spurious event (a
//! wake-up that finds nothing). Writes go until `WouldBlock`; a writable edge
//! with nothing queued costs one wake-up and nothing else.
//!
//! **Fairness**: asyncio gives each ready socket one `recv` per iteration;
//! so does this loop. A connection gets one read of at most `READ_CHUNK` (64 KiB)
//! bytes per turn. A read that filled the buffer may have left more in the
//! kernel, and an edge-triggered poll will not say so again, so the
//! connection goes on a list served in the next turn, after the others. Each
//! turn's replies are written in that turn, so a client that pipelines and
//! reads is never mistaken for one that does not read (one read's replies
//! are far below the 1 MiB bound).
//!
//! Tokens: the listeners and the signal pipe have named constant tokens; every
//! other token is a slab key. Slab keys are reused, so timers and requests that
//! name a connection carry a [`ConnRef`] (key + generation) and are ignored when
//! the slot has since been given to someone else. Connections closed during a
//! turn leave the slab only in phase 4, so a key is never reused within a turn.
//!
//! The protocols are sans-IO objects that decide everything
//! ([`crate::herd::client_protocol`], [`crate::herd::peer_protocol`],
//! [`crate::places::client`]); this module owns every socket and carries out
//! what they ask ([`Action`], [`crate::places::PlacesAction`]). Its files: this one (the
//! loop, the slab, reading, the one close path, carrying out actions,
//! timers), `peers.rs` (dialing and flooding), `places.rs` (Places
//! connections) and `http.rs` (the read-only HTTP endpoint, `--http`).

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::conn_ref::ConnRef;
use crate::herd::actions::{Action, CloseReason, Ctx, HerdEvent};
use crate::herd::auth::Secret;
use crate::herd::client_protocol::ClientProtocol;
use crate::herd::peer_protocol::{PeerInProtocol, PeerOutProtocol, HEARTBEAT};
use crate::herd::state::StateFile;
use crate::herd::{Herd, Limits};
use crate::log::Log;
use crate::places::resolver::Resolver;
use crate::places::{PlacesClient, PlacesConn, PlacesEvent, PlacesSettings};
use crate::timers::{Scheduler, Timers};
use crate::tls::link::PeerTransport;
use crate::tls::peer::PeerTls;
use crate::transport::{Flushed, StreamTransport, Transport};

mod http;
mod peers;
mod places;
mod tls;

pub use http::HttpSettings;
use http::HttpSide;

/// The client listener (asyncio's `create_server`).
pub const CLIENT_LISTENER: Token = Token(usize::MAX - 1);
/// The peer listener: neighbours dial this port, clients never see it.
pub const PEER_LISTENER: Token = Token(usize::MAX - 2);
/// SIGINT, SIGTERM, SIGQUIT (stop cleanly), SIGHUP (reopen the log), and
/// SIGUSR1, SIGUSR2 (logged, nothing else), delivered as a readiness event
/// by `signal-hook-mio` (docs/reliability.md has the table).
pub const SIGNALS: Token = Token(usize::MAX - 3);
/// The Places resolver thread's wake-up (see [`crate::places::resolver`]).
pub const WAKER: Token = Token(usize::MAX - 4);
/// The HTTP endpoint's listener (`--http`).
pub const HTTP_LISTENER: Token = Token(usize::MAX - 5);

/// How much one `read` takes, and so one connection's share of a turn. The
/// buffer is shared by every connection, so an idle one owns no read buffer.
const READ_CHUNK: usize = 64 * 1024;
/// All connections' unfinished lines together may hold this much (Redis's
/// `maxmemory-clients`, for partial lines): past it, the largest holders are
/// closed until the total is back under three quarters of it.
pub const UNFINISHED_BUDGET: usize = 32 * 1024 * 1024;
/// How many slices ([`crate::herd::peer_protocol::SLICE`]) a link's
/// catch-up may write in one turn before the others get theirs.
const SLICES_PER_TURN: usize = 4;
/// What one turn reads of the state file while it loads, or writes of a
/// compaction: a millisecond or so of work.
const STATE_STEP: usize = 256 * 1024;
/// The first step, before anything is served: a file this small is read whole.
const FIRST_STATE_STEP: usize = 4 * 1024 * 1024;
/// After EMFILE, accepting is retried this much later rather than spinning.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// What this server needs to run, resolved from the command line and herd file.
#[derive(Debug)]
pub struct Settings {
    pub name: String,
    pub client_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    /// Each neighbour's name and peer address(es).
    pub neighbours: Vec<(String, Vec<SocketAddr>)>,
    pub log: Log,
    pub places: PlacesSettings,
    pub limits: Limits,
    /// The state file (`--state`), if any.
    pub state_path: Option<std::path::PathBuf>,
    /// The herd secret (`--herd-secret-file`), if any.
    pub secret: Option<Secret>,
    /// Peer links over mutual TLS (`--peer-cert`, `--peer-key`, `--peer-ca`).
    pub peer_tls: Option<PeerTls>,
    /// The read-only HTTP endpoint (`--http`, `http=`), if on.
    pub http: Option<HttpSettings>,
}

/// Why the loop could not start.
#[derive(Debug)]
pub enum StartError {
    /// A listening address is taken (exit status 1).
    AddrInUse(SocketAddr),
    /// A bad setting found while setting up (exit status 2).
    Config(String),
    /// Anything else (exit status 1, with the message).
    Io(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            StartError::AddrInUse(a) => write!(f, "address {a} is already in use"),
            StartError::Config(m) | StartError::Io(m) => f.write_str(m),
        }
    }
}

/// What a timer does when it comes due (asyncio's `call_later` callbacks, as
/// data): the loop's own, and those the herd and the Places client set.
#[derive(Debug)]
pub enum TimerEvent {
    /// Accepting paused after EMFILE; try again.
    ResumeAccepting(Token),
    Herd(HerdEvent),
    Places(PlacesEvent),
    /// An HTTP connection's head or keep-alive deadline may have come.
    Http(ConnRef),
}

/// One slab entry.
struct Slot {
    gen: u32,
    /// Closed this turn; freed in phase 4. Events for it are ignored.
    closing: bool,
    /// On the list of connections to read again next turn.
    more_input: bool,
    /// On the list of links to write more to next turn.
    more_output: bool,
    /// The last flush left bytes the socket would not take.
    write_blocked: bool,
    /// An event said the other side has closed its sending half: read on
    /// until the end of file, which no further edge will announce.
    read_closed: bool,
    /// Done, but the socket has not taken everything yet: closes once it has.
    draining: Option<CloseReason>,
    /// Bytes of an unfinished line its protocol holds, as last counted.
    unfinished: usize,
    conn: Conn,
}

/// The kinds of connection in the slab: a transport and its protocol.
enum Conn {
    Client {
        transport: Transport,
        proto: ClientProtocol,
        addr: SocketAddr,
    },
    /// Our link to a neighbour (we dialed); `connected` once the connect is done.
    PeerOut {
        transport: PeerTransport,
        proto: PeerOutProtocol,
        connected: bool,
    },
    /// A neighbour's link to us (it dialed).
    PeerIn {
        transport: PeerTransport,
        proto: PeerInProtocol,
    },
    /// An HTTPS connection to Places (its TLS transport is inside).
    Places(Box<PlacesConn>),
    /// A connection to the HTTP endpoint (`http#ID` in the log).
    Http {
        transport: Transport,
        proto: crate::http::HttpProtocol,
        id: u64,
        addr: SocketAddr,
    },
}

impl Conn {
    fn transport(&mut self) -> Option<&mut dyn StreamTransport> {
        match self {
            Conn::Client { transport, .. } | Conn::Http { transport, .. } => Some(transport),
            Conn::PeerOut { transport, .. } | Conn::PeerIn { transport, .. } => Some(transport),
            Conn::Places(_) => None,
        }
    }

    /// Phase 2's order: peers (0), clients and the rest (1), HTTP (2).
    fn rank(&self) -> u8 {
        match self {
            Conn::PeerOut { .. } | Conn::PeerIn { .. } => 0,
            Conn::Http { .. } => 2,
            _ => 1,
        }
    }

    /// Bytes of an unfinished line held for the next read.
    fn unfinished(&self) -> usize {
        match self {
            Conn::Client { proto, .. } => proto.unfinished(),
            Conn::PeerIn { proto, .. } => proto.unfinished(),
            Conn::PeerOut { .. } | Conn::Places(_) | Conn::Http { .. } => 0,
        }
    }
}

/// What one read gave.
enum Input {
    Data(usize),
    Eof,
    /// Nothing now (`WouldBlock`): wait for the next edge.
    Nothing,
    Failed(io::Error),
}

/// The one read helper: a single `read`, retried on EINTR.
fn read_once(transport: &mut dyn StreamTransport, buf: &mut [u8]) -> Input {
    match transport.read(buf) {
        Ok(0) => Input::Eof,
        Ok(n) => Input::Data(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Input::Nothing,
        Err(e) => Input::Failed(e),
    }
}

/// The event loop and everything it owns.
pub struct EventLoop {
    poll: Poll,
    conns: Slab<Slot>,
    timers: Timers<TimerEvent>,
    herd: Herd,
    places: PlacesClient,
    client_listener: TcpListener,
    peer_listener: TcpListener,
    signals: Signals,
    /// Listeners paused after EMFILE.
    accept_paused: Vec<Token>,
    read_buf: Box<[u8]>,
    /// What the protocols asked for and the loop has yet to carry out.
    actions: Vec<Action>,
    /// Connections whose last read filled the buffer: read again next turn.
    more_input: Vec<ConnRef>,
    /// Links with more of a catch-up to write than one turn's share.
    more_output: Vec<ConnRef>,
    /// The state file is loading or compacting: a step every turn.
    state_busy: bool,
    /// Bytes of unfinished lines held by all connections together.
    unfinished: usize,
    /// Peers written to during the turn: flushed before the clients.
    dirty_peers: Vec<usize>,
    /// Other connections to flush at the end of phase 2.
    dirty: Vec<ConnRef>,
    to_reap: Vec<usize>,
    next_gen: u32,
    next_id: u64,
    clients: usize,
    stop: Option<&'static str>,
    /// `--peer-cert` and company: every peer connection is TLS.
    peer_tls: Option<PeerTls>,
    /// The HTTP endpoint, when on.
    http: Option<HttpSide>,
}

/// Nanoseconds since the epoch, for AT time differences.
fn now_ns() -> i128 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => StartError::AddrInUse(addr),
        _ => StartError::Io(format!("cannot listen on {addr}: {e}")),
    })
}

impl EventLoop {
    /// Binds the listeners and registers them; nothing runs until [`run`](Self::run).
    pub fn new(settings: Settings) -> Result<EventLoop, StartError> {
        let io_err = |what: &str, e: io::Error| StartError::Io(format!("{what}: {e}"));
        let poll = Poll::new().map_err(|e| io_err("cannot create the poll", e))?;
        // Signals first: a SIGINT that comes as soon as the port answers
        // must find its handler in place, not kill the process unlogged.
        // Signals a user may send by habit must never kill the server
        // silently and lose the turn's log: each one here is handled.
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2])
            .map_err(|e| io_err("cannot catch signals", e))?;
        // The client port last: once it answers, so do the HTTP and peer
        // ports (tests and tools wait for the client port only).
        let mut http = match settings.http {
            Some(h) => Some(HttpSide::bind(h, poll.registry())?),
            None => None,
        };
        let mut peer_listener = bind(settings.peer_addr)?;
        let mut client_listener = bind(settings.client_addr)?;
        let registry = poll.registry();
        registry
            .register(&mut client_listener, CLIENT_LISTENER, Interest::READABLE)
            .and_then(|()| registry.register(&mut peer_listener, PEER_LISTENER, Interest::READABLE))
            .and_then(|()| registry.register(&mut signals, SIGNALS, Interest::READABLE))
            .map_err(|e| io_err("cannot register", e))?;
        let resolver = Resolver::new(
            &settings.places.endpoint.host,
            settings.places.endpoint.port,
            registry,
            WAKER,
        )
        .map_err(|e| io_err("cannot start the resolver", e))?;
        let places =
            PlacesClient::new(settings.places, Box::new(resolver)).map_err(StartError::Config)?;
        let mut herd = Herd::new(
            settings.name,
            settings.neighbours,
            settings.log,
            settings.limits,
        );
        herd.secret = settings.secret;
        if let Some(path) = &settings.state_path {
            // Read in slices from the first turns on (`state_step`), so
            // clients are served while a big file loads.
            let state = StateFile::open_for_loading(path).map_err(|e| {
                StartError::Io(format!(
                    "cannot open the state file {}: {e}",
                    path.display()
                ))
            })?;
            herd.log.event(format_args!(
                "state file {}: loading {} bytes of records",
                path.display(),
                state.load_stats().bytes
            ));
            herd.state = Some(state);
        }
        let client_addr = client_listener.local_addr().unwrap_or(settings.client_addr);
        let peer_addr = peer_listener.local_addr().unwrap_or(settings.peer_addr);
        if let Some(h) = http.as_mut() {
            h.addresses(client_addr, peer_addr);
        }
        herd.log.event(format_args!(
            "{} listening for clients on {client_addr} and for peers on {peer_addr}",
            herd.name
        ));
        if let Some(h) = &http {
            herd.log
                .event(format_args!("HTTP endpoint on http://{}/", h.addr()));
        }
        herd.log.flush();
        let herd_state_busy = herd.state.is_some();
        Ok(EventLoop {
            poll,
            conns: Slab::new(),
            timers: Timers::default(),
            herd,
            places,
            client_listener,
            peer_listener,
            signals,
            accept_paused: Vec::new(),
            read_buf: vec![0; READ_CHUNK].into_boxed_slice(),
            actions: Vec::new(),
            more_input: Vec::new(),
            more_output: Vec::new(),
            state_busy: herd_state_busy,
            unfinished: 0,
            dirty_peers: Vec::new(),
            dirty: Vec::new(),
            to_reap: Vec::new(),
            next_gen: 0,
            next_id: 0,
            clients: 0,
            stop: None,
            peer_tls: settings.peer_tls,
            http,
        })
    }

    /// The client listener's address (useful when bound to port 0).
    pub fn client_addr(&self) -> io::Result<SocketAddr> {
        self.client_listener.local_addr()
    }

    /// asyncio's `run_forever`: turns until SIGINT or SIGTERM. Only a failure of
    /// `poll` itself ends it with an error; a connection's error closes that
    /// connection.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        // A small state file is read whole before anything is served; a
        // big one goes on a slice a turn.
        if self.state_busy {
            self.state_step(FIRST_STATE_STEP);
        }
        for link in 0..self.herd.links.len() {
            self.dial(link);
        }
        self.timers.call_later(
            Instant::now(),
            HEARTBEAT,
            TimerEvent::Herd(HerdEvent::Heartbeat),
        );
        while self.stop.is_none() {
            // Phase 1: sleep until something is ready or a timer is due; not
            // at all if a connection still has input from the last turn.
            let timeout =
                if self.more_input.is_empty() && self.more_output.is_empty() && !self.state_busy {
                    self.timers.time_until_next(Instant::now())
                } else {
                    Some(Duration::ZERO)
                };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            // Phase 2: ready sockets, peers first and HTTP last; then the
            // connections that had more input than one read took last turn.
            self.herd.log.tick();
            let carried = std::mem::take(&mut self.more_input);
            let carried_out = std::mem::take(&mut self.more_output);
            for conn in carried_out {
                if let Some(slot) = self.conns.get_mut(conn.key).filter(|s| s.gen == conn.gen) {
                    slot.more_output = false;
                    self.flush(conn);
                }
            }
            self.http_turn_begins();
            for rank in 0..3 {
                for event in events.iter() {
                    if self.rank(event.token()) == rank {
                        self.dispatch(event);
                    }
                }
                for conn in &carried {
                    if self.rank(Token(conn.key)) == rank {
                        self.read_carried(*conn);
                    }
                }
            }
            self.flush_turn();
            // Phase 3: timers that are due.
            let now = Instant::now();
            while let Some(event) = self.timers.pop_expired(now) {
                self.on_timer(event, now);
            }
            // Phase 4: a step of the state file's load or compaction, write
            // the state and the log, then free what closed (its FIN goes out
            // after the log line that says why).
            if self.state_busy {
                self.state_step(STATE_STEP);
            }
            self.herd.flush_state();
            self.herd.log.flush();
            self.reap();
        }
        self.shut_down();
        Ok(())
    }

    /// When in phase 2 a token is handled (see [`Conn::rank`]).
    fn rank(&self, token: Token) -> u8 {
        match token {
            HTTP_LISTENER => 2,
            Token(key) => self.conns.get(key).map_or(1, |s| s.conn.rank()),
        }
    }

    fn dispatch(&mut self, event: &Event) {
        match event.token() {
            CLIENT_LISTENER | PEER_LISTENER | HTTP_LISTENER => self.accept(event.token()),
            SIGNALS => self.signal_received(),
            WAKER => {
                let now = Instant::now();
                let actions = self.places.resolved(now, &mut self.herd.log);
                self.apply_places(actions);
            }
            Token(key) => {
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                let writable = event.is_writable() || event.is_write_closed() || event.is_error();
                if event.is_read_closed() || event.is_error() {
                    if let Some(slot) = self.conns.get_mut(key) {
                        slot.read_closed = true;
                    }
                }
                self.conn_ready(key, readable, writable);
            }
        }
    }

    /// A readiness event on a connection: finish a connect, read one chunk,
    /// write what is queued.
    fn conn_ready(&mut self, key: usize, readable: bool, writable: bool) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        if slot.closing {
            return;
        }
        let conn = ConnRef { key, gen: slot.gen };
        let connecting = matches!(
            slot.conn,
            Conn::PeerOut {
                connected: false,
                ..
            }
        );
        if matches!(slot.conn, Conn::Places(_)) {
            return self.places_ready(conn, readable);
        }
        if connecting && !self.connect_done(conn) {
            return;
        }
        if readable && slot_open(&self.conns, conn) {
            self.read_ready(conn);
        }
        if writable || readable {
            self.mark_dirty(conn);
        }
    }

    /// `conn` has something to write, or its socket room for it: flushed at
    /// the end of phase 2 ([`flush_turn`](Self::flush_turn)).
    fn mark_dirty(&mut self, conn: ConnRef) {
        if self
            .conns
            .get(conn.key)
            .is_some_and(|s| matches!(s.conn, Conn::PeerOut { .. } | Conn::PeerIn { .. }))
        {
            self.peer_written(conn.key);
        } else {
            self.dirty.push(conn);
        }
    }

    /// Peer connection `key` was written to: flushed with the turn's floods.
    fn peer_written(&mut self, key: usize) {
        if !self.dirty_peers.contains(&key) {
            self.dirty_peers.push(key);
        }
    }

    /// The end of phase 2: what the turn's reads asked for goes out, in this
    /// order, so that a client that gets its AT line and asks a neighbour
    /// finds the update there, a kill cannot lose what it saw acknowledged,
    /// and what it saw is logged: the floods (one write per neighbour for
    /// the whole turn), the state file, the log (one write), then the
    /// replies.
    fn flush_turn(&mut self) {
        self.flush_dirty_peers();
        self.herd.flush_state();
        self.herd.log.flush();
        for conn in std::mem::take(&mut self.dirty) {
            self.flush(conn);
        }
        // A flush may close a client, which may ask for more (a Places
        // request's end): those writes go out now too.
        self.flush_dirty_peers();
    }

    /// A connection on last turn's list: one more read, if it is still ours.
    fn read_carried(&mut self, conn: ConnRef) {
        if let Some(slot) = self.conns.get_mut(conn.key) {
            if slot.gen == conn.gen {
                slot.more_input = false;
                if !slot.closing {
                    self.read_ready(conn);
                    self.mark_dirty(conn);
                }
            }
        }
    }

    /// One read on a connection, handed to its protocol; what it writes goes
    /// out at the end of phase 2 ([`flush_turn`](Self::flush_turn)).
    fn read_ready(&mut self, conn: ConnRef) {
        if self.http_deferred(conn) {
            return;
        }
        // The lines this read logs share one timestamp.
        self.herd.log.tick();
        let mut buf = std::mem::take(&mut self.read_buf);
        let input = match self
            .conns
            .get_mut(conn.key)
            .and_then(|s| s.conn.transport())
        {
            Some(transport) => read_once(transport, &mut buf),
            None => Input::Nothing,
        };
        self.log_handshake(conn);
        match input {
            Input::Data(n) => {
                if let Some(slot) = self.conns.get_mut(conn.key) {
                    if (n == buf.len() || slot.read_closed) && !slot.more_input {
                        slot.more_input = true;
                        self.more_input.push(conn);
                    }
                }
                let data = &buf[..n];
                self.with_conn(conn, |c, ctx| match c {
                    Conn::Client {
                        transport, proto, ..
                    } => proto.data_received(ctx, data, transport),
                    Conn::PeerOut {
                        transport, proto, ..
                    } => proto.data_received(ctx, data, transport),
                    Conn::PeerIn { transport, proto } => proto.data_received(ctx, data, transport),
                    Conn::Places(_) | Conn::Http { .. } => {}
                });
                self.http_received(conn, Some(data));
            }
            Input::Eof => {
                self.with_conn(conn, |c, ctx| match c {
                    Conn::Client {
                        transport, proto, ..
                    } => proto.eof_received(ctx, transport),
                    Conn::PeerOut { proto, .. } => proto.eof_received(ctx),
                    Conn::PeerIn { transport, proto } => proto.eof_received(ctx, transport),
                    Conn::Places(_) | Conn::Http { .. } => {}
                });
                self.http_received(conn, None);
            }
            Input::Nothing => {}
            // A TLS failure says what failed (docs/protocol.md).
            Input::Failed(e) if e.kind() == io::ErrorKind::InvalidData => {
                self.close(conn, CloseReason::Io(e.to_string()))
            }
            Input::Failed(e) => self.close(conn, CloseReason::Io(format!("read error: {e}"))),
        }
        self.read_buf = buf;
        self.count_unfinished(conn);
        self.apply();
    }

    /// Keeps the total of unfinished lines up to date after a read; past the
    /// budget, the largest holders are closed. The scan over all connections
    /// happens only then, and each one frees at least a quarter of the budget.
    fn count_unfinished(&mut self, conn: ConnRef) {
        let Some(slot) = self.conns.get_mut(conn.key).filter(|s| s.gen == conn.gen) else {
            return;
        };
        let now = if slot.closing {
            0
        } else {
            slot.conn.unfinished()
        };
        self.unfinished = self.unfinished - slot.unfinished + now;
        slot.unfinished = now;
        if self.unfinished <= UNFINISHED_BUDGET {
            return;
        }
        let mut holders: Vec<(usize, ConnRef)> = self
            .conns
            .iter()
            .filter(|(_, s)| !s.closing && s.unfinished > 0)
            .map(|(key, s)| (s.unfinished, ConnRef { key, gen: s.gen }))
            .collect();
        holders.sort_unstable_by(|a, b| b.cmp(a));
        for (_, holder) in holders {
            if self.unfinished <= UNFINISHED_BUDGET / 4 * 3 {
                break;
            }
            self.close(holder, CloseReason::InputBudget);
        }
        self.apply();
    }

    /// Runs `f` on a live connection with the context its protocol needs.
    fn with_conn<R>(
        &mut self,
        conn: ConnRef,
        f: impl FnOnce(&mut Conn, &mut Ctx) -> R,
    ) -> Option<R> {
        match self.conns.get(conn.key) {
            Some(s) if s.gen == conn.gen && !s.closing => {}
            _ => return None,
        }
        self.with_slot(conn, f)
    }

    /// [`with_conn`](Self::with_conn) for a connection being closed too.
    fn with_slot<R>(
        &mut self,
        conn: ConnRef,
        f: impl FnOnce(&mut Conn, &mut Ctx) -> R,
    ) -> Option<R> {
        let EventLoop {
            conns,
            herd,
            timers,
            actions,
            ..
        } = self;
        let slot = conns.get_mut(conn.key).filter(|s| s.gen == conn.gen)?;
        let now = Instant::now();
        let mut scheduler = Scheduler {
            timers,
            now,
            wrap: TimerEvent::Herd,
        };
        let mut ctx = Ctx {
            herd,
            timers: &mut scheduler,
            now,
            now_ns: now_ns(),
            me: conn,
            actions,
        };
        Some(f(&mut slot.conn, &mut ctx))
    }

    /// Carries out what the protocols asked for, until nothing is left (an
    /// action may lead to more: a close tells a link to back off and dial).
    fn apply(&mut self) {
        while !self.actions.is_empty() {
            for action in std::mem::take(&mut self.actions) {
                match action {
                    Action::Flood { at, from } => self.flood(&at, from),
                    Action::FetchPlaces {
                        client,
                        client_id,
                        request,
                        query,
                    } => {
                        let now = Instant::now();
                        let mut scheduler = Scheduler {
                            timers: &mut self.timers,
                            now,
                            wrap: TimerEvent::Places,
                        };
                        let actions = self.places.request(
                            client,
                            client_id,
                            request,
                            query,
                            now,
                            &mut self.herd.log,
                            &mut scheduler,
                        );
                        self.apply_places(actions);
                    }
                    Action::Dial { link } => self.dial(link),
                    Action::Resync { except } => self.resync(except),
                    Action::ResumeCatchUps => self.resume_catch_ups(),
                    Action::Close { conn, reason } => self.close(conn, reason),
                }
            }
        }
    }

    /// Writes what is queued on a connection. A client that is done closes
    /// once the socket has taken everything. A peer link whose socket took
    /// everything is asked for more (asyncio's `drain()` returning: the
    /// catch-up's next slice, the updates that waited), a few slices a
    /// turn; if it has still more, it goes on next turn, after the others.
    fn flush(&mut self, conn: ConnRef) {
        for _ in 0..SLICES_PER_TURN {
            let Some(slot) = self.conns.get_mut(conn.key) else {
                return;
            };
            if slot.gen != conn.gen || slot.closing {
                return;
            }
            let is_link = matches!(slot.conn, Conn::PeerOut { .. });
            let Some(transport) = slot.conn.transport() else {
                return;
            };
            let had = transport.get_write_buffer_size();
            let flushed = transport.flush();
            // A socket that was full and takes bytes again has had them
            // acknowledged: the neighbour reads, however slowly. (Bytes a
            // socket with room takes say nothing: a cut link takes PINGs.)
            let took_some = slot.write_blocked && transport.get_write_buffer_size() < had;
            slot.write_blocked = matches!(flushed, Ok(Flushed::Pending));
            match flushed {
                Err(e) => return self.close(conn, CloseReason::Io(format!("write error: {e}"))),
                Ok(Flushed::Pending) => {
                    if let (true, Conn::PeerOut { proto, .. }) = (took_some, &mut slot.conn) {
                        proto.took_some(Instant::now());
                    }
                    return;
                }
                Ok(Flushed::All) => {}
            }
            if let Some(reason) = slot.draining.take() {
                return self.close(conn, reason);
            }
            if !is_link {
                return;
            }
            let wrote = self.with_conn(conn, |c, ctx| match c {
                Conn::PeerOut {
                    transport, proto, ..
                } => {
                    if took_some {
                        proto.took_some(ctx.now);
                    }
                    proto.drained(ctx, transport)
                }
                _ => false,
            });
            self.apply();
            if wrote != Some(true) {
                return;
            }
        }
        if let Some(slot) = self.conns.get_mut(conn.key) {
            if !slot.more_output {
                slot.more_output = true;
                self.more_output.push(conn);
            }
        }
    }

    fn signal_received(&mut self) {
        for signal in self.signals.pending() {
            match signal {
                // Log rotation (docs/logging.md): the last lines go to the
                // old file, then the first line of the new one says why.
                SIGHUP => match self.herd.log.reopen() {
                    Ok(()) => self.herd.log.event(format_args!("log reopened on SIGHUP")),
                    Err(e) => {
                        eprintln!("proxy-herd: SIGHUP: cannot reopen the log: {e}");
                        self.herd
                            .log
                            .event(format_args!("SIGHUP: cannot reopen the log: {e}"));
                    }
                },
                SIGUSR1 | SIGUSR2 => {
                    let name = if signal == SIGUSR1 {
                        "SIGUSR1"
                    } else {
                        "SIGUSR2"
                    };
                    self.herd.log.event(format_args!(
                        "{name} received: ignored (SIGHUP reopens the log)"
                    ));
                }
                SIGINT => self.stop = Some("SIGINT"),
                SIGQUIT => self.stop = Some("SIGQUIT"),
                _ => self.stop = Some("SIGTERM"),
            }
        }
    }

    /// Stops accepting, gives every connection one last flush, writes the log.
    fn shut_down(&mut self) {
        let why = self.stop.unwrap_or("stop");
        let registry = self.poll.registry();
        let _ = registry.deregister(&mut self.client_listener);
        let _ = registry.deregister(&mut self.peer_listener);
        if let Some(h) = self.http.as_mut() {
            let _ = registry.deregister(&mut h.listener);
        }
        for (_, slot) in self.conns.iter_mut() {
            if let Some(transport) = slot.conn.transport() {
                let _ = transport.flush();
            }
        }
        self.herd.flush_state();
        self.herd
            .log
            .event(format_args!("{} stopping on {why}", self.herd.name));
        self.herd.log.flush();
    }

    // ----- connections: insert, close, reap ---------------------------------

    /// Puts a new connection in the slab and registers it (once, for both
    /// directions: see the registration model above). `make` builds the
    /// connection from its transport and log number, with the context its
    /// protocol's `connection_made` needs.
    fn insert(
        &mut self,
        mut stream: TcpStream,
        make: impl FnOnce(Transport, u64, &mut Ctx) -> Conn,
    ) -> Option<ConnRef> {
        // We batch our own writes; Nagle would only hold replies and floods
        // back behind a delayed ACK (~40 ms on loopback).
        if let Err(e) = stream.set_nodelay(true) {
            self.herd
                .log
                .event(format_args!("cannot set TCP_NODELAY: {e}"));
        }
        let EventLoop {
            conns,
            herd,
            timers,
            actions,
            poll,
            ..
        } = self;
        let entry = conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            herd.log
                .event(format_args!("cannot register a connection: {e}"));
            return None;
        }
        self.next_gen = self.next_gen.wrapping_add(1);
        self.next_id += 1;
        let me = ConnRef {
            key,
            gen: self.next_gen,
        };
        let now = Instant::now();
        let mut scheduler = Scheduler {
            timers,
            now,
            wrap: TimerEvent::Herd,
        };
        let mut ctx = Ctx {
            herd,
            timers: &mut scheduler,
            now,
            now_ns: now_ns(),
            me,
            actions,
        };
        let conn = make(Transport::new(stream), self.next_id, &mut ctx);
        entry.insert(Slot {
            gen: me.gen,
            closing: false,
            more_input: false,
            more_output: false,
            write_blocked: false,
            read_closed: false,
            draining: None,
            unfinished: 0,
            conn,
        });
        Some(me)
    }

    /// The one close path (asyncio's `transport.close()` then the protocol's
    /// `connection_lost`): logs why, and tells the protocol and whatever the
    /// connection was part of (a link, a Places request). Nothing more is
    /// read from it; in phase 4 its transport gets a last flush and FIN, and
    /// the slot is freed. A client that is done but whose socket has not
    /// taken everything yet is closed once it has.
    fn close(&mut self, conn: ConnRef, reason: CloseReason) {
        let Some(slot) = self.conns.get_mut(conn.key) else {
            return;
        };
        if slot.gen != conn.gen || slot.closing {
            return;
        }
        if let Conn::Client { transport, .. } = &mut slot.conn {
            if reason == CloseReason::DoneAfterEof
                && !matches!(transport.flush(), Ok(Flushed::All) | Err(_))
            {
                slot.draining = Some(reason);
                return;
            }
        }
        slot.closing = true;
        self.to_reap.push(conn.key);
        self.unfinished -= std::mem::take(&mut slot.unfinished);
        self.herd.metrics.disconnect(slot.conn.kind(), &reason);
        let herd = &mut self.herd;
        match &mut slot.conn {
            Conn::Client { proto, addr, .. } => {
                self.clients -= 1;
                herd.log
                    .event(format_args!("client#{} {addr} closed: {reason}", proto.id));
            }
            Conn::PeerOut { proto, .. } => {
                herd.log.event(format_args!(
                    "peer-out {}#{} closed: {reason}",
                    herd.links[proto.link].name, proto.id
                ));
            }
            Conn::PeerIn { proto, .. } => {
                let name = proto.link.map_or("?", |l| herd.links[l].name.as_str());
                herd.log
                    .event(format_args!("peer-in {name}#{} closed: {reason}", proto.id));
            }
            Conn::Places(p) => {
                herd.log
                    .event(format_args!("places conn#{} closed: {reason}", p.id));
            }
            Conn::Http { id, addr, .. } => {
                herd.log
                    .event(format_args!("http#{id} {addr} closed: {reason}"));
            }
        }
        let is_client = self.with_slot(conn, |c, ctx| match c {
            Conn::Client { proto, .. } => {
                proto.connection_lost(ctx, &reason);
                true
            }
            Conn::PeerOut { proto, .. } => {
                proto.connection_lost(ctx, &reason);
                false
            }
            Conn::PeerIn { proto, .. } => {
                proto.connection_lost(ctx, &reason);
                false
            }
            Conn::Places(_) | Conn::Http { .. } => false,
        });
        let now = Instant::now();
        let mut scheduler = Scheduler {
            timers: &mut self.timers,
            now,
            wrap: TimerEvent::Places,
        };
        match is_client {
            Some(true) => self.places.client_gone(conn, &mut scheduler),
            Some(false) if matches!(self.conns[conn.key].conn, Conn::Places(_)) => {
                let why = reason.to_string();
                let actions = self.places.conn_closed(conn, &why, now, &mut self.herd.log);
                self.apply_places(actions);
            }
            Some(false) if matches!(self.conns[conn.key].conn, Conn::Http { .. }) => {
                self.http_closed(conn.key);
            }
            _ => {}
        }
    }

    /// Phase 4: a last flush and FIN (asyncio's `transport.close()`), then
    /// deregister and drop what closed this turn.
    fn reap(&mut self) {
        for key in std::mem::take(&mut self.to_reap) {
            if let Some(mut slot) = self.conns.try_remove(key) {
                let registry = self.poll.registry();
                let _ = match &mut slot.conn {
                    Conn::Places(p) => {
                        p.close();
                        registry.deregister(p.stream_mut())
                    }
                    other => match other.transport() {
                        Some(t) => {
                            t.close();
                            registry.deregister(t.stream_mut())
                        }
                        None => Ok(()),
                    },
                };
            }
        }
    }

    // ----- accepting (asyncio's create_server) ------------------------------

    fn accept(&mut self, token: Token) {
        if self.accept_paused.contains(&token) {
            return;
        }
        loop {
            let listener = match (token, &self.http) {
                (CLIENT_LISTENER, _) => &self.client_listener,
                (HTTP_LISTENER, Some(h)) => &h.listener,
                (HTTP_LISTENER, None) => return,
                _ => &self.peer_listener,
            };
            match listener.accept() {
                Ok((stream, addr)) => match token {
                    CLIENT_LISTENER => self.client_made(stream, addr),
                    HTTP_LISTENER => self.http_made(stream, addr),
                    _ => self.peer_accepted(stream, addr),
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if is_out_of_descriptors(&e) => {
                    // The pending connection stays in the backlog and epoll will
                    // not tell us again; retry from the timer queue, not a spin.
                    self.herd.log.event(format_args!(
                        "accept paused for {} ms: {e}",
                        ACCEPT_RETRY.as_millis()
                    ));
                    self.accept_paused.push(token);
                    self.timers.call_later(
                        Instant::now(),
                        ACCEPT_RETRY,
                        TimerEvent::ResumeAccepting(token),
                    );
                    return;
                }
                // ECONNABORTED and the like concern one connection only.
                Err(e) => self.herd.log.event(format_args!("accept failed: {e}")),
            }
        }
    }

    /// A client connected: refuse it politely over `--max-clients`, or give
    /// it a slot and a protocol.
    fn client_made(&mut self, stream: TcpStream, addr: SocketAddr) {
        if self
            .herd
            .limits
            .max_clients
            .is_some_and(|max| self.clients >= max)
        {
            // One line, then close: the socket is new, so it takes the line.
            use std::io::Write;
            let mut stream = stream;
            let _ = stream.write(b"? server busy: too many clients\n");
            self.herd
                .log
                .event(format_args!("client {addr} refused: too many clients"));
            return;
        }
        if self
            .insert(stream, |transport, id, ctx| Conn::Client {
                transport,
                proto: ClientProtocol::connection_made(id, &addr, ctx),
                addr,
            })
            .is_some()
        {
            self.clients += 1;
        }
    }

    // ----- timers (the call_later callbacks) ---------------------------------

    fn on_timer(&mut self, event: TimerEvent, now: Instant) {
        match event {
            TimerEvent::ResumeAccepting(token) => {
                self.accept_paused.retain(|t| *t != token);
                self.accept(token);
            }
            TimerEvent::Herd(event) => self.herd_timer(event, now),
            TimerEvent::Http(conn) => self.http_timer(conn, now),
            TimerEvent::Places(event) => {
                let actions = self.places.on_timer(event, now, &mut self.herd.log);
                self.apply_places(actions);
            }
        }
        self.apply();
        self.flush_dirty_peers();
    }

    fn herd_timer(&mut self, event: HerdEvent, now: Instant) {
        match event {
            HerdEvent::Redial { link } => {
                if self.herd.links[link].state.conn().is_none() {
                    self.dial(link);
                }
            }
            HerdEvent::LinkTimeout { link, conn } => {
                if self.herd.links[link].state.conn() == Some(conn) {
                    self.close(conn, CloseReason::LinkFailed("timed out".to_string()));
                }
            }
            HerdEvent::HelloTimeout { conn } => {
                self.with_conn(conn, |c, ctx| {
                    if let Conn::PeerIn { proto, .. } = c {
                        proto.hello_timer(ctx);
                    }
                });
            }
            HerdEvent::ClientIdle { conn } => {
                self.with_conn(conn, |c, ctx| {
                    if let Conn::Client { proto, .. } = c {
                        proto.idle_timer(ctx);
                    }
                });
            }
            HerdEvent::Heartbeat => {
                self.heartbeat();
                if !self.state_busy {
                    self.state_step(STATE_STEP);
                }
                self.timers
                    .call_later(now, HEARTBEAT, TimerEvent::Herd(HerdEvent::Heartbeat));
            }
        }
    }

    /// One step of the state file's load or compaction, about `budget` bytes
    /// of file. When the load ends, the catch-ups that waited for it go on:
    /// ours to the neighbours, and theirs to us.
    fn state_step(&mut self, budget: usize) {
        let loading = self.herd.is_loading();
        self.state_busy = self.herd.state_step(budget);
        if loading && !self.herd.is_loading() {
            self.resync(None);
            self.resume_catch_ups();
            self.flush_dirty_peers();
        }
    }

    /// Every link's connections, both ways, hear the heartbeat.
    fn heartbeat(&mut self) {
        for link in 0..self.herd.links.len() {
            let l = &self.herd.links[link];
            for conn in [l.up_conn(), l.incoming].into_iter().flatten() {
                self.with_conn(conn, |c, ctx| match c {
                    Conn::PeerOut {
                        transport, proto, ..
                    } => proto.heartbeat(ctx, transport),
                    Conn::PeerIn { proto, .. } => proto.heartbeat(ctx),
                    _ => {}
                });
                self.peer_written(conn.key);
            }
        }
    }
}

/// True when `conn` still names a slot that is open.
fn slot_open(conns: &Slab<Slot>, conn: ConnRef) -> bool {
    conns
        .get(conn.key)
        .is_some_and(|s| s.gen == conn.gen && !s.closing)
}

/// EMFILE, ENFILE, ENOBUFS, ENOMEM: the process or system is out of something
/// that a later accept may find again.
fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12))
}
