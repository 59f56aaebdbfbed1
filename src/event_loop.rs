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
//! handlers below return what to do); this file owns every socket.

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

/// The client listener (asyncio's `create_server`).
pub const CLIENT_LISTENER: Token = Token(usize::MAX - 1);
/// The peer listener: neighbours dial this port, clients never see it.
pub const PEER_LISTENER: Token = Token(usize::MAX - 2);
/// SIGINT and SIGTERM, delivered as a readiness event by `signal-hook-mio`.
pub const SIGNALS: Token = Token(usize::MAX - 3);
/// The Places resolver thread's wake-up (see [`crate::places::resolver`]).
pub const WAKER: Token = Token(usize::MAX - 4);

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
}

/// A client connection: asyncio's protocol instance plus its transport.
struct ClientConn {
    id: u64,
    addr: SocketAddr,
    lines: LineReader,
    replies: Replies,
    /// The client closed its sending side; close when nothing more is owed.
    eof: bool,
    last_active: Instant,
}

/// A client's replies, kept in request order: a reply that comes after a
/// WHATSAT waiting for Places waits behind it.
struct Replies {
    transport: Transport,
    held: VecDeque<Held>,
}

enum Held {
    Ready(Vec<u8>),
    Places(u64),
}

impl Replies {
    fn send(&mut self, bytes: &[u8]) {
        if self.held.is_empty() {
            self.transport.write(bytes);
        } else {
            self.held.push_back(Held::Ready(bytes.to_vec()));
        }
    }

    /// The answer to Places request `id` arrived: release what it held up.
    fn fulfil(&mut self, id: u64, bytes: Vec<u8>) {
        if let Some(slot) = self
            .held
            .iter_mut()
            .find(|h| matches!(h, Held::Places(r) if *r == id))
        {
            *slot = Held::Ready(bytes);
        }
        while let Some(Held::Ready(_)) = self.held.front() {
            if let Some(Held::Ready(bytes)) = self.held.pop_front() {
                self.transport.write(&bytes);
            }
        }
    }

    fn owed(&self) -> bool {
        !self.held.is_empty() || self.transport.backlog() > 0
    }
}

/// A peer connection, either direction.
struct PeerConn {
    id: u64,
    /// The neighbour: known from the start when we dialed, after HELLO when it did.
    link: Option<usize>,
    transport: Transport,
    lines: LineReader,
    last_heard: Instant,
    /// How much unsent output is tolerated (more while a catch-up drains).
    allowance: usize,
    /// Where the herd-secret handshake stands (see `herd/auth.rs`).
    handshake: Handshake,
}

/// The herd-secret handshake on one peer connection.
enum Handshake {
    /// Nothing pending: no secret, or the handshake is over.
    Done,
    /// We dialed; our HELLO carried this nonce, which the CHALLENGE must prove.
    Sent { nonce: String },
    /// We dialed, and the neighbour proved it knows the secret.
    Verified,
    /// It dialed; our CHALLENGE to neighbour `link` carried this nonce.
    Challenged { link: usize, nonce: String },
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
        let links = settings
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
            })
            .collect();
        let mut herd = Herd {
            name: settings.name,
            store: Store::default(),
            links,
            log: settings.log,
            state: None,
            secret: settings.secret,
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
            CLIENT_LISTENER | PEER_LISTENER => self.accept(event.token()),
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
        for (_, slot) in self.conns.iter_mut() {
            match &mut slot.conn {
                Conn::Client(c) => {
                    let _ = c.replies.transport.flush();
                }
                Conn::PeerOut(p) | Conn::PeerIn(p) => {
                    let _ = p.transport.flush();
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
            let listener = if token == CLIENT_LISTENER {
                &self.client_listener
            } else {
                &self.peer_listener
            };
            match listener.accept() {
                Ok((stream, addr)) => {
                    if token == CLIENT_LISTENER {
                        self.client_made(stream, addr);
                    } else {
                        self.peer_in_made(stream, addr);
                    }
                }
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

    /// asyncio's `connection_made` for a client.
    fn client_made(&mut self, stream: TcpStream, addr: SocketAddr) {
        if self.max_clients.is_some_and(|max| self.clients >= max) {
            // Refuse politely: one line, then close.
            use std::io::Write;
            let mut stream = stream;
            let _ = stream.write(b"? server busy: too many clients\n");
            self.herd
                .log
                .event(format_args!("client {addr} refused: too many clients"));
            return;
        }
        let now = Instant::now();
        let Some(conn) = self.insert(stream, |transport, id| {
            Conn::Client(ClientConn {
                id,
                addr,
                lines: LineReader::default(),
                replies: Replies {
                    transport,
                    held: VecDeque::new(),
                },
                eof: false,
                last_active: now,
            })
        }) else {
            return;
        };
        self.clients += 1;
        if let Some(Conn::Client(c)) = self.conns.get(conn.key).map(|s| &s.conn) {
            self.herd
                .log
                .event(format_args!("client#{} {addr} connected", c.id));
        }
        if let Some(idle) = self.idle_timeout {
            self.timers
                .call_later(now, idle, TimerEvent::ClientIdle { conn });
        }
    }

    fn client_ready(&mut self, key: usize, readable: bool, writable: bool) {
        if readable {
            self.client_data_received(key);
        }
        // Floods leave, and new positions reach the state file, before the
        // client's reply: a client that gets its AT line and asks a neighbour
        // finds the update there, and a kill cannot lose what it saw.
        self.flush_dirty_peers();
        self.herd.flush_state();
        if readable || writable {
            self.client_flush(key);
        }
    }

    /// Reads until `WouldBlock`, handing each line to the herd (asyncio's
    /// `data_received`, with the line splitting a `StreamReader` would do).
    fn client_data_received(&mut self, key: usize) {
        let EventLoop {
            conns,
            herd,
            read_buf,
            effects,
            next_request,
            ..
        } = self;
        let Some(Slot {
            conn: Conn::Client(c),
            gen,
            ..
        }) = conns.get_mut(key)
        else {
            return;
        };
        let me = ConnRef { key, gen: *gen };
        let ClientConn {
            id,
            lines,
            replies,
            eof,
            last_active,
            ..
        } = c;
        let mut failure = None;
        loop {
            match replies.transport.read(read_buf) {
                Ok(0) => {
                    *eof = true;
                    lines.finish(|line| {
                        client_line_received(herd, replies, effects, next_request, me, *id, line)
                    });
                    break;
                }
                Ok(n) => {
                    *last_active = Instant::now();
                    let fed = lines.feed(&read_buf[..n], MAX_LINE, |line| {
                        client_line_received(herd, replies, effects, next_request, me, *id, line)
                    });
                    if fed.is_err() {
                        failure = Some("line longer than 64 KiB".to_string());
                        break;
                    }
                    if replies.transport.backlog() > MAX_BACKLOG {
                        failure = Some("over 1 MiB of replies left unread".to_string());
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    failure = Some(format!("read error: {e}"));
                    break;
                }
            }
        }
        let eof = *eof;
        if let Some(why) = failure {
            self.close(key, &why);
        } else if eof {
            self.herd
                .log
                .event(format_args!("client#{} sent EOF", self.conn_id(key)));
        }
        self.apply_effects();
    }

    fn conn_id(&self, key: usize) -> u64 {
        match self.conns.get(key).map(|s| &s.conn) {
            Some(Conn::Client(c)) => c.id,
            Some(Conn::PeerIn(p) | Conn::PeerOut(p)) => p.id,
            _ => 0,
        }
    }

    /// Writes what a client is owed; closes it once it has half-closed and
    /// nothing more is owed.
    fn client_flush(&mut self, key: usize) {
        let Some(Slot {
            conn: Conn::Client(c),
            closing: false,
            ..
        }) = self.conns.get_mut(key)
        else {
            return;
        };
        match c.replies.transport.flush() {
            Err(e) => self.close(key, &format!("write error: {e}")),
            Ok(_) if c.eof && !c.replies.owed() => {
                c.replies.transport.shutdown_write();
                self.close(key, "done after EOF");
            }
            Ok(_) => {}
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

    /// Sends a new position to every neighbour whose link is up, except the
    /// one it came from. Written now, flushed before the turn's client replies.
    fn flood(&mut self, at: &[u8], from: Option<usize>) {
        for link in 0..self.herd.links.len() {
            if Some(link) == from {
                continue;
            }
            let Some(conn) = self.herd.links[link].up_conn() else {
                // Not up: the catch-up will carry it when the link comes back.
                continue;
            };
            let Some(Slot {
                conn: Conn::PeerOut(p),
                ..
            }) = self.conns.get_mut(conn.key)
            else {
                continue;
            };
            peer::write_update(p.transport.out_buf(), at);
            let name = &self.herd.links[link].name;
            self.herd.log.line(&peer_sent(name, p.id, at));
            if p.transport.backlog() > p.allowance {
                self.close(conn.key, "peer output backlog over its bound");
            } else if !self.dirty_peers.contains(&conn.key) {
                self.dirty_peers.push(conn.key);
            }
        }
    }

    fn flush_dirty_peers(&mut self) {
        for key in std::mem::take(&mut self.dirty_peers) {
            self.peer_flush(key);
        }
    }

    fn peer_flush(&mut self, key: usize) {
        let Some(Slot {
            conn: Conn::PeerOut(p) | Conn::PeerIn(p),
            closing: false,
            ..
        }) = self.conns.get_mut(key)
        else {
            return;
        };
        match p.transport.flush() {
            Ok(Flushed::All) => p.allowance = PEER_BACKLOG,
            Ok(Flushed::Pending) => {}
            Err(e) => self.close(key, &format!("write error: {e}")),
        }
    }

    // ----- peer links: our side (we dial) -------------------------------------

    /// asyncio's `open_connection`: a non-blocking connect whose completion
    /// shows up as the first writable event.
    fn dial(&mut self, link: usize) {
        let now = Instant::now();
        let Some(&addr) = self.herd.links[link].addrs.first() else {
            return;
        };
        match TcpStream::connect(addr) {
            Ok(stream) => {
                let conn = self.insert(stream, |transport, id| {
                    Conn::PeerOut(PeerConn {
                        id,
                        link: Some(link),
                        transport,
                        lines: LineReader::default(),
                        last_heard: now,
                        allowance: PEER_BACKLOG,
                        handshake: Handshake::Done,
                    })
                });
                match conn {
                    Some(conn) => {
                        let timeout = self.timers.call_later(
                            now,
                            LINK_TIMEOUT,
                            TimerEvent::LinkTimeout { link, conn },
                        );
                        let why = format!("dialing {addr}");
                        self.herd.links[link].set_state(
                            LinkState::Dialing { conn, timeout },
                            &why,
                            &mut self.herd.log,
                        );
                    }
                    None => self.back_off(link, "cannot register"),
                }
            }
            Err(e) => self.back_off(link, &format!("dial {addr} failed: {e}")),
        }
    }

    /// The link failed: wait, then dial again (asyncio: `call_later(delay, dial)`).
    fn back_off(&mut self, link: usize, why: &str) {
        let l = &mut self.herd.links[link];
        if let Some(conn) = l.state.conn() {
            if let Some(slot) = self.conns.get_mut(conn.key) {
                if slot.gen == conn.gen && !slot.closing {
                    slot.closing = true;
                    self.to_reap.push(conn.key);
                }
            }
        }
        if let LinkState::Dialing { timeout, .. } | LinkState::Greeting { timeout, .. } = l.state {
            self.timers.cancel(timeout);
        }
        let delay = backoff_delay(l.failures, self.jitter.next_unit());
        l.failures = l.failures.saturating_add(1);
        let timer = self
            .timers
            .call_later(Instant::now(), delay, TimerEvent::Redial { link });
        let why = format!("{why}; retry in {} ms", delay.as_millis());
        l.set_state(LinkState::Backoff { timer }, &why, &mut self.herd.log);
    }

    fn peer_out_ready(&mut self, key: usize, readable: bool, writable: bool) {
        let Some(Slot {
            conn: Conn::PeerOut(p),
            gen,
            ..
        }) = self.conns.get_mut(key)
        else {
            return;
        };
        let conn = ConnRef { key, gen: *gen };
        let Some(link) = p.link else {
            return;
        };
        if let LinkState::Dialing { conn: c, timeout } = self.herd.links[link].state {
            if c != conn {
                return;
            }
            // The connect finished, one way or the other, or this is spurious.
            let stream = p.transport.stream();
            match stream.take_error() {
                Ok(Some(e)) | Err(e) => {
                    self.back_off(link, &format!("dial failed: {e}"));
                    return;
                }
                Ok(None) => {}
            }
            match stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => {
                    self.back_off(link, &format!("dial failed: {e}"));
                    return;
                }
            }
            self.timers.cancel(timeout);
            let mut hello = format!("HELLO {}", self.herd.name);
            if let Some(secret) = &self.herd.secret {
                match secret.nonce() {
                    Ok(nonce) => {
                        hello = format!("{hello} {nonce}");
                        p.handshake = Handshake::Sent { nonce };
                    }
                    Err(e) => {
                        self.back_off(link, &e);
                        return;
                    }
                }
            }
            p.transport.write(hello.as_bytes());
            p.transport.write(b"\n");
            self.herd.log.event(format_args!(
                "peer-out {}#{} > {hello}",
                self.herd.links[link].name, p.id
            ));
            let timeout = self.timers.call_later(
                Instant::now(),
                LINK_TIMEOUT,
                TimerEvent::LinkTimeout { link, conn },
            );
            self.herd.links[link].set_state(
                LinkState::Greeting { conn, timeout },
                "connected, HELLO sent",
                &mut self.herd.log,
            );
            self.peer_flush(key);
        }
        if readable {
            self.peer_out_data_received(key, conn, link);
        }
        if writable {
            self.peer_flush(key);
        }
    }

    /// The neighbour's side of our link says little: WELCOME, REFUSED, PONG.
    fn peer_out_data_received(&mut self, key: usize, conn: ConnRef, link: usize) {
        let mut messages: Vec<Vec<u8>> = Vec::new();
        let mut end = None;
        {
            let EventLoop {
                conns, read_buf, ..
            } = self;
            let Some(Slot {
                conn: Conn::PeerOut(p),
                ..
            }) = conns.get_mut(key)
            else {
                return;
            };
            loop {
                match p.transport.read(read_buf) {
                    Ok(0) => {
                        end = Some("closed by the neighbour".to_string());
                        break;
                    }
                    Ok(n) => {
                        p.last_heard = Instant::now();
                        if p.lines
                            .feed(&read_buf[..n], MAX_LINE, |l| messages.push(l.to_vec()))
                            .is_err()
                        {
                            end = Some("line too long".to_string());
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        end = Some(format!("read error: {e}"));
                        break;
                    }
                }
            }
        }
        for line in &messages {
            if !self.is_live(conn) {
                return;
            }
            let name = self.herd.links[link].name.clone();
            self.herd.log.event(format_args!(
                "peer-out {name}#{} < {}",
                self.conn_id(key),
                Escaped(line)
            ));
            match peer::parse_peer_message(line) {
                PeerMessage::Challenge { nonce, proof } => {
                    if let Err(why) = self.answer_challenge(key, link, nonce, proof) {
                        self.close(key, &why);
                    }
                }
                PeerMessage::Welcome { name: n } if n == name.as_bytes() => {
                    if self.herd.secret.is_some() && !self.handshake_verified(key) {
                        let why = "welcomed without proving the herd secret";
                        self.herd.log.event(format_args!("link {name}: {why}"));
                        self.close(key, why);
                        continue;
                    }
                    if let LinkState::Greeting { timeout, .. } = self.herd.links[link].state {
                        self.timers.cancel(timeout);
                        self.herd.links[link].failures = 0;
                        self.herd.links[link].set_state(
                            LinkState::Up { conn },
                            "WELCOME received",
                            &mut self.herd.log,
                        );
                        self.catch_up(key, link);
                    }
                }
                PeerMessage::Refused { reason } => {
                    let why = format!("refused: {}", Escaped(reason));
                    self.close(key, &why);
                }
                PeerMessage::Pong | PeerMessage::Blank => {}
                _ => self
                    .herd
                    .log
                    .event(format_args!("peer-out {name}: unexpected line ignored")),
            }
        }
        if let Some(why) = end {
            self.close(key, &why);
        }
    }

    /// The neighbour we dialed proves it knows the herd secret (its proof over
    /// our nonce) and challenges us to prove it too (over its nonce).
    fn answer_challenge(
        &mut self,
        key: usize,
        link: usize,
        nonce: &[u8],
        proof: &[u8],
    ) -> Result<(), String> {
        let EventLoop { conns, herd, .. } = self;
        let Some(secret) = herd.secret.as_ref() else {
            return Err("the neighbour asks for a herd secret we do not have".to_string());
        };
        let Some(Slot {
            conn: Conn::PeerOut(p),
            ..
        }) = conns.get_mut(key)
        else {
            return Ok(());
        };
        let Handshake::Sent { nonce: ours } = &p.handshake else {
            return Err("unexpected CHALLENGE".to_string());
        };
        let (me, them) = (herd.name.as_bytes(), herd.links[link].name.as_bytes());
        if !secret.verify(Role::Acceptor, ours.as_bytes(), me, them, proof) {
            herd.log.event(format_args!(
                "link {}: the neighbour failed to prove the herd secret",
                herd.links[link].name
            ));
            return Err("the neighbour failed to prove the herd secret".to_string());
        }
        let answer = secret.proof(Role::Dialer, nonce, me, them);
        p.transport.write(format!("PROOF {answer}\n").as_bytes());
        herd.log.event(format_args!(
            "peer-out {}#{} > PROOF {answer}",
            herd.links[link].name, p.id
        ));
        p.handshake = Handshake::Verified;
        self.peer_flush(key);
        Ok(())
    }

    fn handshake_verified(&self, key: usize) -> bool {
        matches!(
            self.conns.get(key).map(|s| &s.conn),
            Some(Conn::PeerOut(PeerConn {
                handshake: Handshake::Verified,
                ..
            }))
        )
    }

    /// When a link comes up, the neighbour gets every position we know.
    fn catch_up(&mut self, key: usize, link: usize) {
        let EventLoop { conns, herd, .. } = self;
        let Some(Slot {
            conn: Conn::PeerOut(p),
            ..
        }) = conns.get_mut(key)
        else {
            return;
        };
        let before = p.transport.backlog();
        for position in herd.store.positions() {
            peer::write_update(p.transport.out_buf(), &position.at_line);
            herd.log
                .line(&peer_sent(&herd.links[link].name, p.id, &position.at_line));
        }
        p.allowance = PEER_BACKLOG + (p.transport.backlog() - before);
        herd.log.event(format_args!(
            "link {}: catch-up of {} positions sent",
            herd.links[link].name,
            herd.store.len()
        ));
        self.peer_flush(key);
    }

    // ----- peer links: their side (they dial us) -----------------------------

    fn peer_in_made(&mut self, stream: TcpStream, addr: SocketAddr) {
        let now = Instant::now();
        if let Some(conn) = self.insert(stream, |transport, id| {
            Conn::PeerIn(PeerConn {
                id,
                link: None,
                transport,
                lines: LineReader::default(),
                last_heard: now,
                allowance: PEER_BACKLOG,
                handshake: Handshake::Done,
            })
        }) {
            self.herd.log.event(format_args!(
                "peer-in #{} {addr} connected",
                self.conn_id(conn.key)
            ));
            self.timers
                .call_later(now, LINK_TIMEOUT, TimerEvent::HelloTimeout { conn });
        }
    }

    fn peer_in_ready(&mut self, key: usize, readable: bool) {
        if readable {
            self.peer_in_data_received(key);
        }
        self.flush_dirty_peers();
        self.peer_flush(key);
    }

    /// Updates from a neighbour: store what is new and flood it on.
    fn peer_in_data_received(&mut self, key: usize) {
        let EventLoop {
            conns,
            herd,
            read_buf,
            effects,
            ..
        } = self;
        let Some(Slot {
            conn: Conn::PeerIn(p),
            gen,
            ..
        }) = conns.get_mut(key)
        else {
            return;
        };
        let me = ConnRef { key, gen: *gen };
        let PeerConn {
            id,
            link,
            transport,
            lines,
            last_heard,
            handshake,
            ..
        } = p;
        let mut greeted = None;
        let mut end: Option<String> = None;
        loop {
            let got = transport.read(read_buf);
            let mut on_line = |line: &[u8]| {
                if end.is_none() {
                    end = peer_line_received(
                        herd,
                        effects,
                        transport,
                        (link, handshake, &mut greeted),
                        *id,
                        line,
                    );
                }
            };
            match got {
                Ok(0) => {
                    lines.finish(&mut on_line);
                    end.get_or_insert_with(|| "closed by the neighbour".to_string());
                    break;
                }
                Ok(n) => {
                    *last_heard = Instant::now();
                    if lines.feed(&read_buf[..n], MAX_LINE, &mut on_line).is_err() {
                        end = Some("line too long".to_string());
                    }
                    if end.is_some() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    end = Some(format!("read error: {e}"));
                    break;
                }
            }
        }
        if let Some(l) = greeted {
            self.link_greeted(l, me);
        }
        if let Some(why) = end {
            self.peer_flush(key);
            self.close(key, &why);
        }
        self.apply_effects();
    }

    /// A neighbour said HELLO: this is now its link to us. If our link to it
    /// is waiting out a backoff, the neighbour is evidently back: dial now.
    fn link_greeted(&mut self, link: usize, conn: ConnRef) {
        if let Some(old) = self.herd.links[link].incoming.replace(conn) {
            if old != conn && self.is_live(old) {
                self.close(old.key, "replaced by a new link from the same neighbour");
            }
        }
        let name = self.herd.links[link].name.clone();
        self.herd.log.event(format_args!("link from {name}: up"));
        if let LinkState::Backoff { timer } = self.herd.links[link].state {
            self.timers.cancel(timer);
            self.herd.links[link].failures = 0;
            self.herd
                .log
                .event(format_args!("link {name}: HELLO from it, dialing back now"));
            self.dial(link);
        }
    }

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
            TimerEvent::Places(event) => {
                let actions = self.places.on_timer(event, now, &mut self.herd.log);
                self.apply_places(actions);
            }
        }
        self.flush_dirty_peers();
    }

    /// PING every link that is up; close links, either way, silent too long.
    fn heartbeat(&mut self, now: Instant) {
        for link in 0..self.herd.links.len() {
            let l = &self.herd.links[link];
            for conn in [l.up_conn(), l.incoming].into_iter().flatten() {
                let Some(Slot {
                    conn: Conn::PeerOut(p) | Conn::PeerIn(p),
                    gen,
                    closing: false,
                }) = self.conns.get_mut(conn.key)
                else {
                    continue;
                };
                if *gen != conn.gen {
                    continue;
                }
                if now.duration_since(p.last_heard) > SILENCE {
                    self.close(conn.key, "silent too long");
                } else if Some(conn) == self.herd.links[link].up_conn() {
                    p.transport.write(b"PING\n");
                    self.dirty_peers.push(conn.key);
                }
            }
        }
    }

    fn client_idle(&mut self, conn: ConnRef, now: Instant) {
        let Some(idle) = self.idle_timeout else {
            return;
        };
        let Some(Slot {
            conn: Conn::Client(c),
            gen,
            closing: false,
        }) = self.conns.get(conn.key)
        else {
            return;
        };
        if *gen != conn.gen {
            return;
        }
        let quiet = now.duration_since(c.last_active);
        if quiet >= idle && c.replies.held.is_empty() {
            self.close(conn.key, "idle too long");
        } else {
            self.timers.call_later(
                now,
                idle.saturating_sub(quiet).max(Duration::from_millis(10)),
                TimerEvent::ClientIdle { conn },
            );
        }
    }

    // ----- Places --------------------------------------------------------------

    fn places_ready(&mut self, key: usize, readable: bool) {
        let Some(Slot {
            conn: Conn::Places(p),
            gen,
            ..
        }) = self.conns.get_mut(key)
        else {
            return;
        };
        let conn = ConnRef { key, gen: *gen };
        let event = p.ready(readable);
        let actions = self.places.conn_event(
            conn,
            p.id,
            event,
            Instant::now(),
            &mut self.herd.log,
            &mut self.timers,
        );
        self.apply_places(actions);
    }

    /// Carries out what the Places client asked for: open connections, send
    /// requests, close connections, deliver answers to the waiting clients.
    fn apply_places(&mut self, actions: Vec<PlacesAction>) {
        let mut work: VecDeque<PlacesAction> = actions.into();
        while let Some(action) = work.pop_front() {
            let now = Instant::now();
            let more = match action {
                PlacesAction::Open { addr, tls, request } => {
                    let opened = match TcpStream::connect(addr) {
                        Ok(stream) => {
                            let mut conn_id = 0;
                            self.insert(stream, |transport, id| {
                                conn_id = id;
                                Conn::Places(Box::new(PlacesConn::new(
                                    id,
                                    transport.into_stream(),
                                    *tls,
                                    request,
                                )))
                            })
                            .map(|conn| (conn, conn_id))
                            .ok_or_else(|| "cannot register".to_string())
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    self.places
                        .opened(request, opened, now, &mut self.herd.log, &mut self.timers)
                }
                PlacesAction::Send {
                    conn,
                    request,
                    bytes,
                    reused,
                } => match self.conns.get_mut(conn.key) {
                    Some(Slot {
                        conn: Conn::Places(p),
                        gen,
                        closing: false,
                    }) if *gen == conn.gen => {
                        p.send(request, &bytes, reused);
                        let event = p.ready(false);
                        self.places.conn_event(
                            conn,
                            p.id,
                            event,
                            now,
                            &mut self.herd.log,
                            &mut self.timers,
                        )
                    }
                    _ => Vec::new(),
                },
                PlacesAction::Close { conn, why } => {
                    if self.is_live(conn) {
                        self.close(conn.key, &why);
                    }
                    Vec::new()
                }
                PlacesAction::Answer {
                    client,
                    request,
                    bytes,
                } => {
                    self.deliver_answer(client, request, bytes);
                    Vec::new()
                }
            };
            work.extend(more);
        }
    }

    fn deliver_answer(&mut self, client: ConnRef, request: u64, bytes: Vec<u8>) {
        if !self.is_live(client) {
            return;
        }
        if let Some(Conn::Client(c)) = self.conns.get_mut(client.key).map(|s| &mut s.conn) {
            let first_line = bytes.split(|&b| b == b'\n').next().unwrap_or(&[]);
            self.herd.log.event(format_args!(
                "client#{} > {} (+ Places JSON, {} bytes)",
                c.id,
                Escaped(first_line),
                bytes.len()
            ));
            c.replies.fulfil(request, bytes);
            if c.replies.transport.backlog() > MAX_BACKLOG {
                self.close(client.key, "over 1 MiB of replies left unread");
                return;
            }
        }
        self.client_flush(client.key);
    }
}

/// The log line for an update sent on our link to `name` (connection `id`).
fn peer_sent<'a>(name: &'a str, id: u64, at: &'a [u8]) -> [Part<'a>; 6] {
    [
        Str("peer-out "),
        Str(name),
        Str("#"),
        Num(id),
        Str(" > "),
        Bytes(at),
    ]
}

/// One client line: log it, let the herd decide, queue the reply in order, and
/// note the floods and Places requests for the loop.
fn client_line_received(
    herd: &mut Herd,
    replies: &mut Replies,
    effects: &mut Effects,
    next_request: &mut u64,
    me: ConnRef,
    id: u64,
    line: &[u8],
) {
    let client = |dir, bytes| [Str("client#"), Num(id), Str(dir), Bytes(bytes)];
    herd.log.line(&client(" < ", line));
    match herd.client_line(line, now_ns()) {
        ClientAction::Ignore => {}
        ClientAction::Reply(bytes) => {
            let shown = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
            herd.log.line(&client(" > ", shown));
            replies.send(&bytes);
        }
        ClientAction::ReplyAndFlood(mut at) => {
            herd.log.line(&client(" > ", &at));
            at.push(b'\n');
            replies.send(&at);
            at.pop();
            effects.floods.push((at, None));
        }
        ClientAction::FetchPlaces(query) => {
            *next_request += 1;
            replies.held.push_back(Held::Places(*next_request));
            effects.places.push((me, id, *next_request, query));
        }
    }
}

/// One line from a neighbour's link to us. Returns why the link must end, if it must.
fn peer_line_received(
    herd: &mut Herd,
    effects: &mut Effects,
    transport: &mut Transport,
    (link, handshake, greeted): (&mut Option<usize>, &mut Handshake, &mut Option<usize>),
    id: u64,
    line: &[u8],
) -> Option<String> {
    let name = link.map_or("?", |l| herd.links[l].name.as_str());
    herd.log.line(&[
        Str("peer-in "),
        Str(name),
        Str("#"),
        Num(id),
        Str(" < "),
        Bytes(line),
    ]);
    match (peer::parse_peer_message(line), *link) {
        (PeerMessage::Update(update), Some(from)) => {
            if herd.peer_update(from, &update) {
                effects.floods.push((update.at_line, Some(from)));
            }
        }
        (PeerMessage::Ping, Some(_)) => transport.write(b"PONG\n"),
        (PeerMessage::Blank, _) => {}
        (PeerMessage::Hello { name, nonce }, None) => {
            let Some(l) = herd.link_named(name) else {
                transport.write(b"REFUSED not a neighbour\n");
                return Some(format!(
                    "refused HELLO from {}: not a neighbour",
                    Escaped(name)
                ));
            };
            if matches!(handshake, Handshake::Challenged { .. }) {
                transport.write(b"REFUSED PROOF expected\n");
                return Some("a second HELLO".to_string());
            }
            match (&herd.secret, nonce) {
                (None, _) => {
                    *link = Some(l);
                    *greeted = Some(l);
                    transport.write(format!("WELCOME {}\n", herd.name).as_bytes());
                }
                (Some(_), None) => {
                    transport.write(b"REFUSED herd secret required\n");
                    return Some(format!(
                        "refused HELLO from {}: no proof of the herd secret offered",
                        Escaped(name)
                    ));
                }
                (Some(secret), Some(theirs)) => {
                    let ours = match secret.nonce() {
                        Ok(n) => n,
                        Err(e) => return Some(e),
                    };
                    let proof = secret.proof(Role::Acceptor, theirs, name, herd.name.as_bytes());
                    transport.write(format!("CHALLENGE {ours} {proof}\n").as_bytes());
                    *handshake = Handshake::Challenged {
                        link: l,
                        nonce: ours,
                    };
                }
            }
        }
        (PeerMessage::Proof { proof }, None) => {
            let Handshake::Challenged { link: l, nonce } = handshake else {
                transport.write(b"REFUSED HELLO expected\n");
                return Some("PROOF before HELLO".to_string());
            };
            let l = *l;
            let them = herd.links[l].name.as_bytes();
            let ok = herd.secret.as_ref().is_some_and(|secret| {
                secret.verify(
                    Role::Dialer,
                    nonce.as_bytes(),
                    them,
                    herd.name.as_bytes(),
                    proof,
                )
            });
            if !ok {
                transport.write(b"REFUSED bad proof of the herd secret\n");
                return Some(format!(
                    "refused HELLO from {}: bad proof of the herd secret",
                    herd.links[l].name
                ));
            }
            *handshake = Handshake::Done;
            *link = Some(l);
            *greeted = Some(l);
            transport.write(format!("WELCOME {}\n", herd.name).as_bytes());
        }
        (_, None) => {
            transport.write(b"REFUSED HELLO expected\n");
            return Some("no HELLO".to_string());
        }
        (_, Some(_)) => herd
            .log
            .event(format_args!("peer-in {name}#{id}: invalid line ignored")),
    }
    None
}

/// EMFILE, ENFILE, ENOBUFS, ENOMEM: the process or system is out of something
/// that a later accept may find again.
fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12))
}
