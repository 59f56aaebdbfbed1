//! The event loop: asyncio's `loop.run_forever`, written out.
//!
//! One thread, one `mio::Poll`, one `Slab` of connections (clients, peer links
//! both ways, HTTPS connections to Places), and one timer queue. [`EventLoop::run`]
//! turns in fixed phases:
//!
//! 1. sleep in `poll` until a socket is ready or the nearest timer is due;
//! 2. handle the ready sockets, peer links before clients, so that an update
//!    that arrived before a client's question is known when it is answered;
//! 3. run the timers that are due (`call_later` callbacks);
//! 4. free the connections closed during the turn, and flush the log.
//!
//! **Registration model**: every socket is registered once, for both READABLE
//! and WRITABLE, edge-triggered, and never re-registered. An edge means
//! "something changed", so every handler reads, writes or accepts until
//! `WouldBlock`, and tolerates a spurious event (a wake-up that finds nothing).
//! A writable edge with nothing queued costs one wake-up and nothing else.
//!
//! Tokens: the listeners and the signal pipe have named constant tokens; every
//! other token is a slab key. Slab keys are reused, so timers and requests that
//! name a connection carry a [`ConnRef`] (key + generation) and are ignored when
//! the slot has since been given to someone else. Connections closed during a
//! turn leave the slab only in phase 4, so a key is never reused within a turn.
//!
//! The protocols are sans-IO ([`crate::herd::Herd::client_line`] and the peer
//! handlers return what to do); this module owns every socket. Its files:
//! this one (the loop, tokens, the slab's bookkeeping, accepting, timers),
//! `clients.rs` (the client port's protocol), `peers.rs` (peer links both
//! ways, flooding, the catch-up), `places.rs` (carrying out what the Places
//! client asks) and `http.rs` (the read-only HTTP endpoint, `--http`).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::herd::auth::{Role, Secret};
use crate::herd::link::{backoff_delay, Jitter, Link, LinkState};
use crate::herd::state::StateFile;
use crate::herd::store::Store;
use crate::herd::{ClientAction, Herd, PlacesQuery};
use crate::log::Part::{self, Bytes, Num, Str};
use crate::log::{Escaped, Log};
use crate::places::{PlacesAction, PlacesClient, PlacesConn, PlacesEvent, PlacesSettings};
use crate::protocol::client::{MAX_BACKLOG, MAX_LINE};
use crate::protocol::peer::{self, PeerMessage};
use crate::timers::Timers;
use crate::transport::{Flushed, LineReader, Transport};

mod clients;
mod http;
mod peers;
mod places;

use clients::ClientConn;
pub use http::HttpSettings;
use http::{HttpConn, HttpSide};
use peers::PeerConn;

/// The client listener (asyncio's `create_server`).
pub const CLIENT_LISTENER: Token = Token(usize::MAX - 1);
/// The peer listener: neighbours dial this port, clients never see it.
pub const PEER_LISTENER: Token = Token(usize::MAX - 2);
/// SIGINT and SIGTERM, delivered as a readiness event by `signal-hook-mio`.
pub const SIGNALS: Token = Token(usize::MAX - 3);
/// The Places resolver thread's wake-up (see [`crate::places::resolver`]).
pub const WAKER: Token = Token(usize::MAX - 4);
/// The HTTP endpoint's listener (`--http`).
pub const HTTP_LISTENER: Token = Token(usize::MAX - 5);

/// How much one `read` takes; the buffer is shared by every connection, so
/// an idle connection owns no read buffer at all.
const READ_CHUNK: usize = 64 * 1024;
/// A dial or a greeting that takes longer than this failed.
const LINK_TIMEOUT: Duration = Duration::from_secs(2);
/// Links send PING this often...
const HEARTBEAT: Duration = Duration::from_secs(1);
/// ...and a link silent this long is dead, even if TCP has not noticed.
const SILENCE: Duration = Duration::from_secs(5);
/// A peer whose unsent output exceeds this (beyond its catch-up) is dropped
/// and re-synced later by the catch-up.
const PEER_BACKLOG: usize = 8 * 1024 * 1024;
/// After EMFILE, accepting is retried this much later rather than spinning.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// A connection's slab key and generation: stale once the slot is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnRef {
    pub key: usize,
    pub gen: u32,
}

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
    pub max_clients: Option<usize>,
    pub idle_timeout: Option<Duration>,
    /// The state file (`--state`), if any.
    pub state_path: Option<std::path::PathBuf>,
    /// The herd secret (`--herd-secret-file`), if any.
    pub secret: Option<Secret>,
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

/// What a timer does when it comes due (asyncio's `call_later` callbacks, as data).
#[derive(Debug)]
pub enum TimerEvent {
    /// Accepting paused after EMFILE; try again.
    ResumeAccepting(Token),
    /// A link's backoff is over: dial.
    Redial { link: usize },
    /// A link's dial or greeting took too long.
    LinkTimeout { link: usize, conn: ConnRef },
    /// A neighbour's connection never said HELLO.
    HelloTimeout { conn: ConnRef },
    /// PING the links; drop the silent ones.
    Heartbeat,
    /// A client has been idle; close it if it still is.
    ClientIdle { conn: ConnRef },
    /// A Places timer (see [`crate::places`]).
    Places(PlacesEvent),
    /// An HTTP connection's head or keep-alive deadline may have come.
    Http { conn: ConnRef },
}

/// One slab entry.
struct Slot {
    gen: u32,
    /// Closed this turn; freed in phase 4. Events for it are ignored.
    closing: bool,
    conn: Conn,
}

/// The kinds of connection in the slab.
enum Conn {
    Client(ClientConn),
    /// Our link to a neighbour (we dialed).
    PeerOut(PeerConn),
    /// A neighbour's link to us (it dialed).
    PeerIn(PeerConn),
    /// An HTTPS connection to Places.
    Places(Box<crate::places::PlacesConn>),
    /// A connection to the HTTP endpoint.
    Http(HttpConn),
}

/// What handling a batch of lines asks the loop to do next.
#[derive(Default)]
struct Effects {
    /// AT lines to flood, and the link each came from.
    floods: Vec<(Vec<u8>, Option<usize>)>,
    /// Places requests to start: (client, its log number, request id, query).
    places: Vec<(ConnRef, u64, u64, PlacesQuery)>,
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
    effects: Effects,
    /// Peers written to while handling an event: flushed before the client.
    dirty_peers: Vec<usize>,
    to_reap: Vec<usize>,
    next_gen: u32,
    next_id: u64,
    next_request: u64,
    clients: usize,
    max_clients: Option<usize>,
    idle_timeout: Option<Duration>,
    jitter: Jitter,
    stop: Option<&'static str>,
    /// The HTTP endpoint, when on.
    http: Option<HttpSide>,
    started: SystemTime,
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
        // Bound first: once the client port answers, so does the HTTP one.
        let http = match settings.http {
            Some(h) => Some(HttpSide::bind(h, poll.registry())?),
            None => None,
        };
        let mut client_listener = bind(settings.client_addr)?;
        let mut peer_listener = bind(settings.peer_addr)?;
        let mut signals =
            Signals::new([SIGINT, SIGTERM]).map_err(|e| io_err("cannot catch signals", e))?;
        let registry = poll.registry();
        registry
            .register(&mut client_listener, CLIENT_LISTENER, Interest::READABLE)
            .and_then(|()| registry.register(&mut peer_listener, PEER_LISTENER, Interest::READABLE))
            .and_then(|()| registry.register(&mut signals, SIGNALS, Interest::READABLE))
            .map_err(|e| io_err("cannot register", e))?;
        let places =
            PlacesClient::new(settings.places, registry, WAKER).map_err(StartError::Config)?;
        let links: Vec<Link> = settings
            .neighbours
            .into_iter()
            .map(|(name, addrs)| Link {
                name,
                addrs,
                state: LinkState::Backoff {
                    timer: crate::timers::TimerId::NONE,
                },
                failures: 0,
                incoming: None,
                since: SystemTime::now(),
            })
            .collect();
        let metrics = crate::observe::Metrics::new(links.len());
        let mut herd = Herd {
            name: settings.name,
            store: Store::default(),
            links,
            log: settings.log,
            state: None,
            secret: settings.secret,
            metrics,
            recent: crate::observe::Recent::default(),
        };
        if let Some(path) = &settings.state_path {
            let (state, loaded) = StateFile::open(path).map_err(|e| {
                StartError::Io(format!(
                    "cannot open the state file {}: {e}",
                    path.display()
                ))
            })?;
            for u in &loaded.positions {
                herd.store.update(&u.client, u.time_ns, &u.at_line);
            }
            herd.log.event(format_args!(
                "state file {}: {} good records, {} positions, {} damaged records skipped, {} torn bytes cut",
                path.display(),
                loaded.positions.len(),
                herd.store.len(),
                loaded.skipped,
                loaded.torn_bytes
            ));
            herd.state = Some(state);
        }
        let client_addr = client_listener.local_addr().unwrap_or(settings.client_addr);
        let peer_addr = peer_listener.local_addr().unwrap_or(settings.peer_addr);
        herd.log.event(format_args!(
            "{} listening for clients on {client_addr} and for peers on {peer_addr}",
            herd.name
        ));
        if let Some(h) = &http {
            herd.log
                .event(format_args!("HTTP endpoint on http://{}/", h.addr));
        }
        herd.log.flush();
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
            effects: Effects::default(),
            dirty_peers: Vec::new(),
            to_reap: Vec::new(),
            next_gen: 0,
            next_id: 0,
            next_request: 0,
            clients: 0,
            max_clients: settings.max_clients,
            idle_timeout: settings.idle_timeout,
            jitter: Jitter::new(),
            stop: None,
            http,
            started: SystemTime::now(),
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
        for link in 0..self.herd.links.len() {
            self.dial(link);
        }
        self.timers
            .call_later(Instant::now(), HEARTBEAT, TimerEvent::Heartbeat);
        while self.stop.is_none() {
            // Phase 1: sleep until something is ready or a timer is due.
            let timeout = self.timers.time_until_next(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            // Phase 2: ready sockets, peers first.
            for peers_first in [true, false] {
                for event in events.iter() {
                    if self.is_peer(event.token()) == peers_first {
                        self.dispatch(event);
                    }
                }
            }
            // Phase 3: timers that are due.
            let now = Instant::now();
            while let Some(event) = self.timers.pop_expired(now) {
                self.on_timer(event, now);
            }
            // Phase 4: free what closed, write the state and the log.
            self.reap();
            self.herd.flush_state();
            self.herd.log.flush();
        }
        self.shut_down();
        Ok(())
    }

    fn is_peer(&self, token: Token) -> bool {
        matches!(
            self.conns.get(token.0).map(|s| &s.conn),
            Some(Conn::PeerIn(_) | Conn::PeerOut(_))
        )
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
                match self.conns.get(key) {
                    Some(Slot { closing: true, .. }) | None => {}
                    Some(Slot {
                        conn: Conn::Client(_),
                        ..
                    }) => self.client_ready(key, readable, writable),
                    Some(Slot {
                        conn: Conn::PeerOut(_),
                        ..
                    }) => self.peer_out_ready(key, readable, writable),
                    Some(Slot {
                        conn: Conn::PeerIn(_),
                        ..
                    }) => self.peer_in_ready(key, readable),
                    Some(Slot {
                        conn: Conn::Places(_),
                        ..
                    }) => self.places_ready(key, readable),
                    Some(Slot {
                        conn: Conn::Http(_),
                        ..
                    }) => self.http_ready(key, readable),
                }
            }
        }
    }

    fn signal_received(&mut self) {
        for signal in self.signals.pending() {
            self.stop = Some(if signal == SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            });
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
            match &mut slot.conn {
                Conn::Client(c) => {
                    let _ = c.replies.transport.flush();
                }
                Conn::PeerOut(p) | Conn::PeerIn(p) => {
                    let _ = p.transport.flush();
                }
                Conn::Http(h) => {
                    let _ = h.transport.flush();
                }
                Conn::Places(_) => {}
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
    /// directions: see the registration model above).
    fn insert(
        &mut self,
        mut stream: TcpStream,
        make: impl FnOnce(Transport, u64) -> Conn,
    ) -> Option<ConnRef> {
        // We batch our own writes; Nagle would only hold replies and floods
        // back behind a delayed ACK (~40 ms on loopback).
        if let Err(e) = stream.set_nodelay(true) {
            self.herd
                .log
                .event(format_args!("cannot set TCP_NODELAY: {e}"));
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.herd
                .log
                .event(format_args!("cannot register a connection: {e}"));
            return None;
        }
        self.next_gen = self.next_gen.wrapping_add(1);
        self.next_id += 1;
        let gen = self.next_gen;
        entry.insert(Slot {
            gen,
            closing: false,
            conn: make(Transport::new(stream), self.next_id),
        });
        Some(ConnRef { key, gen })
    }

    fn is_live(&self, conn: ConnRef) -> bool {
        matches!(self.conns.get(conn.key), Some(s) if s.gen == conn.gen && !s.closing)
    }

    /// asyncio's `transport.close()` / `connection_lost`: the connection stops
    /// here; its slot is freed in phase 4. What it was part of (a link, a Places
    /// request) is told now.
    fn close(&mut self, key: usize, why: &str) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        if slot.closing {
            return;
        }
        slot.closing = true;
        self.to_reap.push(key);
        self.herd.metrics.disconnect(slot.conn.kind(), why);
        let conn = ConnRef { key, gen: slot.gen };
        match &slot.conn {
            Conn::Client(c) => {
                self.clients -= 1;
                self.herd
                    .log
                    .event(format_args!("client#{} {} closed: {why}", c.id, c.addr));
                self.places.client_gone(conn, &mut self.timers);
            }
            Conn::PeerOut(p) => {
                let (id, link) = (p.id, p.link);
                if let Some(link) = link {
                    self.herd.log.event(format_args!(
                        "peer-out {}#{id} closed: {why}",
                        self.herd.links[link].name
                    ));
                    if self.herd.links[link].state.conn() == Some(conn) {
                        self.back_off(link, why);
                    }
                }
            }
            Conn::PeerIn(p) => {
                let name = p.link.map_or("?", |l| self.herd.links[l].name.as_str());
                self.herd
                    .log
                    .event(format_args!("peer-in {name}#{} closed: {why}", p.id));
                if let Some(link) = p.link {
                    if self.herd.links[link].incoming == Some(conn) {
                        self.herd.links[link].incoming = None;
                        self.herd.log.event(format_args!(
                            "link from {}: down ({why})",
                            self.herd.links[link].name
                        ));
                    }
                }
            }
            Conn::Places(p) => {
                self.herd
                    .log
                    .event(format_args!("places conn#{} closed: {why}", p.id));
                let actions =
                    self.places
                        .conn_closed(conn, why, Instant::now(), &mut self.herd.log);
                self.apply_places(actions);
            }
            Conn::Http(h) => {
                if let Some(side) = self.http.as_mut() {
                    side.conns -= 1;
                }
                self.herd
                    .log
                    .event(format_args!("http#{} {} closed: {why}", h.id, h.addr));
            }
        }
    }

    /// Phase 4: deregister and drop what closed this turn.
    fn reap(&mut self) {
        for key in std::mem::take(&mut self.to_reap) {
            if let Some(mut slot) = self.conns.try_remove(key) {
                match &mut slot.conn {
                    Conn::Client(c) => {
                        let _ = self
                            .poll
                            .registry()
                            .deregister(c.replies.transport.stream_mut());
                    }
                    Conn::PeerOut(p) | Conn::PeerIn(p) => {
                        let _ = self.poll.registry().deregister(p.transport.stream_mut());
                    }
                    Conn::Places(p) => {
                        p.close();
                        let _ = self.poll.registry().deregister(p.stream_mut());
                    }
                    Conn::Http(h) => {
                        let _ = self.poll.registry().deregister(h.transport.stream_mut());
                    }
                }
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
                    _ => self.peer_in_made(stream, addr),
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

    // ----- clients (asyncio's Protocol for the client port) -----------------

    fn conn_id(&self, key: usize) -> u64 {
        match self.conns.get(key).map(|s| &s.conn) {
            Some(Conn::Client(c)) => c.id,
            Some(Conn::PeerIn(p) | Conn::PeerOut(p)) => p.id,
            _ => 0,
        }
    }

    // ----- flooding ----------------------------------------------------------

    fn apply_effects(&mut self) {
        let mut effects = std::mem::take(&mut self.effects);
        for (at, from) in effects.floods.drain(..) {
            self.flood(&at, from);
        }
        for (client, client_id, id, query) in effects.places.drain(..) {
            let actions = self.places.request(
                client,
                client_id,
                id,
                query,
                Instant::now(),
                &mut self.herd.log,
                &mut self.timers,
            );
            self.apply_places(actions);
        }
        // Hand the (empty, allocated) buffers back for the next event.
        self.effects = effects;
    }

    // ----- peer links: our side (we dial) -------------------------------------

    // ----- peer links: their side (they dial us) -----------------------------

    // ----- timers (the call_later callbacks) ---------------------------------

    fn on_timer(&mut self, event: TimerEvent, now: Instant) {
        match event {
            TimerEvent::ResumeAccepting(token) => {
                self.accept_paused.retain(|t| *t != token);
                self.accept(token);
            }
            TimerEvent::Redial { link } => {
                if matches!(self.herd.links[link].state, LinkState::Backoff { .. }) {
                    self.dial(link);
                }
            }
            TimerEvent::LinkTimeout { link, conn } => {
                if self.herd.links[link].state.conn() == Some(conn) {
                    self.back_off(link, "timed out");
                }
            }
            TimerEvent::HelloTimeout { conn } => {
                if self.is_live(conn) {
                    if let Some(Conn::PeerIn(PeerConn { link: None, .. })) =
                        self.conns.get(conn.key).map(|s| &s.conn)
                    {
                        self.close(conn.key, "no HELLO in time");
                    }
                }
            }
            TimerEvent::Heartbeat => {
                self.heartbeat(now);
                self.herd.compact_state();
                self.timers
                    .call_later(now, HEARTBEAT, TimerEvent::Heartbeat);
            }
            TimerEvent::ClientIdle { conn } => self.client_idle(conn, now),
            TimerEvent::Http { conn } => self.http_timer(conn, now),
            TimerEvent::Places(event) => {
                let actions = self.places.on_timer(event, now, &mut self.herd.log);
                self.apply_places(actions);
            }
        }
        self.flush_dirty_peers();
    }

    // ----- Places --------------------------------------------------------------
}

/// EMFILE, ENFILE, ENOBUFS, ENOMEM: the process or system is out of something
/// that a later accept may find again.
fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12))
}
