//! The loop's side of the read-only HTTP endpoint (`--http ADDR`,
//! docs/spec.md §10): its listener, its connections in the slab, and the
//! [`Site`] that renders `/metrics` and `/status` from the loop's state. What
//! a request means is decided by [`HttpProtocol`], which never sees a socket.
//!
//! An HTTP connection is one more kind in the slab (`Conn::Http`), read by
//! the same `read_ready` (one read per turn) and written by the same `flush`,
//! with its own limits: at most [`MAX_HTTP_CONNS`] at once (more get a 503
//! and are closed), at most [`HTTP_BACKLOG`] of responses left unread, and a
//! timer per connection for the head and keep-alive deadlines
//! (`TimerEvent::Http`). Its events are handled after those of peers and
//! clients, and each request is answered in the turn that completes it, with
//! bounded work, so the endpoint never holds up clients or peers.

use std::io;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use mio::net::{TcpListener, TcpStream};
use mio::Interest;
use slab::Slab;

use super::{bind, Conn, EventLoop, Slot, StartError, TimerEvent, HTTP_LISTENER};
use crate::conn_ref::ConnRef;
use crate::herd::actions::CloseReason;
use crate::herd::link::LinkState;
use crate::herd::Herd;
use crate::http::{HttpAction, HttpProtocol, Resource, Site};
use crate::observe::{self, ConnKind, HerdView, LinkSnapshot, PlacesMetrics, Snapshot};

/// At most this many HTTP connections at once.
pub const MAX_HTTP_CONNS: usize = 64;
/// An HTTP client leaving more than this unread is closed.
pub const HTTP_BACKLOG: usize = 256 * 1024;
/// At most this many HTTP connections are read in one turn; the others wait
/// for the next (on `more_input`). With [`MAX_PIPELINED`] requests a read,
/// that bounds what the endpoint can add to a turn, and so to a client's
/// wait, to 64 renders (about 22 M instructions of `/status`), however many
/// connections pipeline at once.
///
/// [`MAX_PIPELINED`]: crate::http::protocol::MAX_PIPELINED
pub const HTTP_READS_PER_TURN: usize = 4;

/// What the loop needs to serve HTTP (`--http`, or the herd file's `http=`).
#[derive(Debug)]
pub struct HttpSettings {
    pub addr: SocketAddr,
    /// The herd file, as `/status` shows it.
    pub herd: HerdView,
}

/// The endpoint: its listener and what `/status` says that never changes.
pub(super) struct HttpSide {
    pub(super) listener: TcpListener,
    addr: SocketAddr,
    herd: HerdView,
    client_addr: String,
    peer_addr: String,
    started: SystemTime,
    /// HTTP connections in the slab now.
    conns: usize,
    /// HTTP connections read this turn.
    reads: usize,
}

impl HttpSide {
    /// Binds the listener and registers it.
    pub(super) fn bind(
        settings: HttpSettings,
        registry: &mio::Registry,
    ) -> Result<HttpSide, StartError> {
        let mut listener = bind(settings.addr)?;
        registry
            .register(&mut listener, HTTP_LISTENER, Interest::READABLE)
            .map_err(|e| StartError::Io(format!("cannot register: {e}")))?;
        let addr = listener.local_addr().unwrap_or(settings.addr);
        Ok(HttpSide {
            listener,
            addr,
            herd: settings.herd,
            client_addr: String::new(),
            peer_addr: String::new(),
            started: SystemTime::now(),
            conns: 0,
            reads: 0,
        })
    }

    /// The server's other addresses, as `/status` shows them.
    pub(super) fn addresses(&mut self, client: SocketAddr, peer: SocketAddr) {
        self.client_addr = client.to_string();
        self.peer_addr = peer.to_string();
    }

    /// Where it listens (useful when bound to port 0).
    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Conn {
    /// Which kind of connection this is, for the disconnect counters.
    pub(super) fn kind(&self) -> ConnKind {
        match self {
            Conn::Client { .. } => ConnKind::Client,
            Conn::PeerOut { .. } | Conn::PeerIn { .. } => ConnKind::Peer,
            Conn::Http { .. } => ConnKind::Http,
            Conn::Places(_) => ConnKind::Places,
        }
    }
}

/// What a request renders from: borrowed from the loop beside the
/// connection being served, so no state is copied until a request asks.
struct View<'a> {
    herd: &'a Herd,
    places: &'a PlacesMetrics,
    side: &'a HttpSide,
    /// Each link's unsent bytes, in link order.
    unsent: &'a [usize],
    clients: usize,
    /// Peer links are mutual TLS (`--peer-cert` and company).
    peer_tls: bool,
}

impl Site for View<'_> {
    fn render(&self, resource: Resource, out: &mut Vec<u8>) {
        let s = self.snapshot();
        match resource {
            Resource::Metrics => {
                let mut text = String::with_capacity(8 * 1024);
                observe::metrics::render(&s, &mut text);
                out.extend_from_slice(text.as_bytes());
            }
            Resource::Status => observe::status::render(&s, out),
        }
    }
}

impl View<'_> {
    /// What `/metrics` and `/status` need beyond the counters: a few fields
    /// per link, so cheap enough for every request.
    fn snapshot(&self) -> Snapshot<'_> {
        let links = self
            .herd
            .links
            .iter()
            .zip(self.unsent.iter().chain(std::iter::repeat(&0)))
            .map(|(l, &unsent_bytes)| LinkSnapshot {
                neighbour: &l.name,
                state: match l.state {
                    LinkState::Backoff { .. } => "backoff",
                    LinkState::Dialing { .. } => "dialing",
                    LinkState::Greeting { .. } => "greeting",
                    LinkState::Up { .. } => "up",
                },
                since: l.since,
                incoming: l.incoming.is_some(),
                // With the peer TLS options every peer connection is TLS.
                tls: self.peer_tls,
                unsent_bytes,
                failures: l.failures,
            })
            .collect();
        let side = self.side;
        Snapshot {
            server: &self.herd.name,
            version: env!("CARGO_PKG_VERSION"),
            implementation: "rust",
            started: side.started,
            now: SystemTime::now(),
            client_addr: side.client_addr.clone(),
            peer_addr: side.peer_addr.clone(),
            http_addr: side.addr.to_string(),
            herd: &side.herd,
            links,
            positions: self.herd.store.len(),
            clients: self.clients,
            http_connections: side.conns,
            metrics: &self.herd.metrics,
            places: self.places,
            recent: &self.herd.recent,
        }
    }
}

/// Bytes queued for each neighbour on our link that its socket has not taken.
fn unsent_by_link(herd: &Herd, conns: &Slab<Slot>) -> Vec<usize> {
    herd.links
        .iter()
        .map(|l| match l.up_conn().and_then(|c| conns.get(c.key)) {
            Some(Slot {
                conn: Conn::PeerOut { transport, .. },
                ..
            }) => transport.backlog(),
            _ => 0,
        })
        .collect()
}

impl EventLoop {
    /// The HTTP endpoint's address, when it is on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(HttpSide::addr)
    }

    /// Phase 2 begins: the HTTP connections' read budget is new.
    pub(super) fn http_turn_begins(&mut self) {
        if let Some(side) = self.http.as_mut() {
            side.reads = 0;
        }
    }

    /// True when `conn` is an HTTP connection and this turn's
    /// [`HTTP_READS_PER_TURN`] are spent: it is read next turn instead.
    pub(super) fn http_deferred(&mut self, conn: ConnRef) -> bool {
        let (Some(side), Some(slot)) = (self.http.as_mut(), self.conns.get_mut(conn.key)) else {
            return false;
        };
        if !matches!(slot.conn, Conn::Http { .. }) {
            return false;
        }
        if side.reads < HTTP_READS_PER_TURN {
            side.reads += 1;
            return false;
        }
        if !slot.more_input {
            slot.more_input = true;
            self.more_input.push(conn);
        }
        true
    }

    /// asyncio's `connection_made` for an HTTP connection: a slot and a
    /// protocol, or a 503 in one write past [`MAX_HTTP_CONNS`].
    pub(super) fn http_made(&mut self, stream: TcpStream, addr: SocketAddr) {
        let Some(side) = self.http.as_mut() else {
            return;
        };
        if side.conns >= MAX_HTTP_CONNS {
            // Refuse as the client port refuses past --max-clients: the
            // socket is new, so it takes the whole response.
            use std::io::Write;
            let mut bytes = Vec::new();
            let why = "too many HTTP connections";
            crate::http::response::write_error(&mut bytes, 503, why, false, SystemTime::now());
            let mut stream = stream;
            let _ = stream.write(&bytes);
            self.herd.metrics.http_response(503);
            self.herd
                .log
                .event(format_args!("http {addr} refused: {why}"));
            return;
        }
        let now = Instant::now();
        let mut first = Vec::new();
        let made = self.insert(stream, |transport, id, ctx| {
            ctx.herd
                .log
                .event(format_args!("http#{id} {addr} connected"));
            let (proto, actions) = HttpProtocol::connection_made(now);
            first = actions;
            Conn::Http {
                transport,
                proto,
                id,
                addr,
            }
        });
        if let Some(conn) = made {
            if let Some(side) = self.http.as_mut() {
                side.conns += 1;
            }
            self.http_apply(conn, first, now);
        }
    }

    /// asyncio's `data_received` (`Some`) or `eof_received` (`None`) for an
    /// HTTP connection; nothing for the other kinds.
    pub(super) fn http_received(&mut self, conn: ConnRef, data: Option<&[u8]>) {
        let EventLoop {
            conns,
            herd,
            places,
            http,
            clients,
            peer_tls,
            ..
        } = self;
        let Some(side) = http.as_ref() else {
            return;
        };
        if !matches!(conns.get(conn.key), Some(s) if s.gen == conn.gen && !s.closing && matches!(s.conn, Conn::Http { .. }))
        {
            return;
        }
        let unsent = unsent_by_link(herd, conns);
        let Some(Slot {
            conn: Conn::Http { proto, .. },
            ..
        }) = conns.get_mut(conn.key)
        else {
            return;
        };
        let now = Instant::now();
        let view = View {
            herd,
            places: &places.metrics,
            side,
            unsent: &unsent,
            clients: *clients,
            peer_tls: peer_tls.is_some(),
        };
        let actions = match data {
            Some(data) => proto.data_received(data, now, &view),
            None => proto.eof_received(),
        };
        self.http_apply(conn, actions, now);
    }

    /// Carries out what the protocol asked.
    fn http_apply(&mut self, conn: ConnRef, actions: Vec<HttpAction>, now: Instant) {
        for action in actions {
            let Some(slot) = self
                .conns
                .get_mut(conn.key)
                .filter(|s| s.gen == conn.gen && !s.closing)
            else {
                return;
            };
            let Conn::Http { transport, .. } = &mut slot.conn else {
                return;
            };
            match action {
                HttpAction::Write { bytes, status } => {
                    transport.write(&bytes);
                    self.herd.metrics.http_response(status);
                    if transport.backlog() > HTTP_BACKLOG {
                        let why = "over 256 KiB of responses left unread";
                        self.close(conn, CloseReason::Http(why));
                        return;
                    }
                }
                // Closed once the socket has taken what is owed (`flush`).
                HttpAction::Close(why) => {
                    slot.draining.get_or_insert(CloseReason::Http(why));
                }
                HttpAction::CallLater(delay) => {
                    self.timers.call_later(now, delay, TimerEvent::Http(conn));
                }
            }
        }
    }

    /// The connection's timer: a slow head gets its 408, an idle one is
    /// closed, and one whose responses were not taken in time is dropped.
    pub(super) fn http_timer(&mut self, conn: ConnRef, now: Instant) {
        let Some(Slot {
            conn: Conn::Http { proto, .. },
            draining,
            gen,
            closing: false,
            ..
        }) = self.conns.get_mut(conn.key)
        else {
            return;
        };
        if *gen != conn.gen {
            return;
        }
        let stuck = draining.is_some();
        let actions = proto.timer_fired(now);
        let timed_out = actions.iter().any(|a| matches!(a, HttpAction::Close(_)));
        self.http_apply(conn, actions, now);
        self.flush(conn);
        if (timed_out || stuck) && super::slot_open(&self.conns, conn) {
            // Out of time: what the socket did not take is dropped.
            let why = if stuck {
                CloseReason::Http("responses not read in time")
            } else {
                self.conns[conn.key]
                    .draining
                    .take()
                    .unwrap_or(CloseReason::Http("timed out"))
            };
            self.close(conn, why);
        }
    }

    /// Part of the one close path for an HTTP connection: counted out, and
    /// what the client had already sent is read and dropped, so that the
    /// close sends FIN rather than a reset that could destroy the response.
    pub(super) fn http_closed(&mut self, key: usize) {
        if let Some(side) = self.http.as_mut() {
            side.conns = side.conns.saturating_sub(1);
        }
        let EventLoop {
            conns, read_buf, ..
        } = self;
        if let Some(Slot {
            conn: Conn::Http {
                transport, proto, ..
            },
            ..
        }) = conns.get_mut(key)
        {
            proto.connection_lost();
            if !read_buf.is_empty() {
                let _ = transport.read(read_buf).or_else(|e| match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(0),
                    _ => Err(e),
                });
            }
        }
    }
}
