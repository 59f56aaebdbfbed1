//! The HTTP endpoint's side of the loop (`--http ADDR`): its listener, its
//! connections in the slab, and the [`Site`] that renders `/metrics` and
//! `/status` from the loop's state. What a request means is decided by
//! [`crate::http::HttpProtocol`], which never sees a socket.
//!
//! An HTTP connection is handled like a client's, with its own limits: at
//! most [`MAX_HTTP_CONNS`] at once (more get a 503 and are closed), at most
//! [`HTTP_BACKLOG`] of responses left unread, a timer per connection for the
//! head and keep-alive timeouts. Each request is answered in the turn that
//! completes it, with bounded work, so the endpoint never holds up clients
//! or peers.

use std::time::SystemTime;

use super::*;
use crate::http::{HttpAction, HttpProtocol, Resource, Site};
use crate::observe::{self, ConnKind, HerdView, LinkSnapshot, Snapshot};

/// At most this many HTTP connections at once.
pub const MAX_HTTP_CONNS: usize = 64;
/// An HTTP client leaving more than this unread is closed.
const HTTP_BACKLOG: usize = 256 * 1024;

/// What the loop needs to serve HTTP.
#[derive(Debug)]
pub struct HttpSettings {
    pub addr: SocketAddr,
    /// The herd file, as `/status` shows it.
    pub herd: HerdView,
}

/// The endpoint: its listener and what `/status` says about the herd.
pub(super) struct HttpSide {
    pub(super) listener: TcpListener,
    pub(super) addr: SocketAddr,
    pub(super) herd: HerdView,
    pub(super) conns: usize,
}

/// One HTTP connection: the protocol object and its transport.
pub(super) struct HttpConn {
    pub(super) id: u64,
    pub(super) addr: SocketAddr,
    pub(super) transport: Transport,
    /// Taken out while it handles an event, so that it can read the loop.
    pub(super) protocol: Option<HttpProtocol>,
    /// The protocol asked to close once what it wrote is sent.
    pub(super) close_after: Option<&'static str>,
}

impl HttpSide {
    /// Binds the listener and registers it.
    pub(super) fn bind(
        settings: HttpSettings,
        registry: &mio::Registry,
    ) -> Result<Self, StartError> {
        let mut listener = bind(settings.addr)?;
        registry
            .register(&mut listener, HTTP_LISTENER, Interest::READABLE)
            .map_err(|e| StartError::Io(format!("cannot register: {e}")))?;
        let addr = listener.local_addr().unwrap_or(settings.addr);
        Ok(HttpSide {
            listener,
            addr,
            herd: settings.herd,
            conns: 0,
        })
    }
}

impl Conn {
    /// Which kind of connection this is, for the disconnect counters.
    pub(super) fn kind(&self) -> ConnKind {
        match self {
            Conn::Client(_) => ConnKind::Client,
            Conn::PeerOut(_) | Conn::PeerIn(_) => ConnKind::Peer,
            Conn::Http(_) => ConnKind::Http,
            Conn::Places(_) => ConnKind::Places,
        }
    }
}

impl Site for EventLoop {
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

impl EventLoop {
    /// What `/metrics` and `/status` need beyond the counters: a few fields
    /// per link, so cheap enough for every request.
    fn snapshot(&self) -> Snapshot<'_> {
        let links = self
            .herd
            .links
            .iter()
            .map(|l| {
                let unsent_bytes = match l.up_conn().and_then(|c| self.conns.get(c.key)) {
                    Some(Slot {
                        conn: Conn::PeerOut(p),
                        ..
                    }) => p.transport.backlog(),
                    _ => 0,
                };
                LinkSnapshot {
                    neighbour: &l.name,
                    state: match l.state {
                        LinkState::Backoff { .. } => "backoff",
                        LinkState::Dialing { .. } => "dialing",
                        LinkState::Greeting { .. } => "greeting",
                        LinkState::Up { .. } => "up",
                    },
                    since: l.since,
                    incoming: l.incoming.is_some(),
                    tls: false,
                    unsent_bytes,
                    failures: l.failures,
                }
            })
            .collect();
        let addr =
            |a: io::Result<SocketAddr>| a.map_or_else(|_| "?".to_string(), |a| a.to_string());
        let empty = &EMPTY_HERD;
        let http = self.http.as_ref();
        Snapshot {
            server: &self.herd.name,
            version: env!("CARGO_PKG_VERSION"),
            implementation: "rust",
            started: self.started,
            now: SystemTime::now(),
            client_addr: addr(self.client_listener.local_addr()),
            peer_addr: addr(self.peer_listener.local_addr()),
            http_addr: http.map_or_else(String::new, |h| h.addr.to_string()),
            herd: http.map_or(empty, |h| &h.herd),
            links,
            positions: self.herd.store.len(),
            clients: self.clients,
            http_connections: http.map_or(0, |h| h.conns),
            metrics: &self.herd.metrics,
            places: &self.places.metrics,
            recent: &self.herd.recent,
        }
    }

    /// asyncio's `connection_made` for an HTTP connection.
    pub(super) fn http_made(&mut self, stream: TcpStream, addr: SocketAddr) {
        let Some(side) = self.http.as_mut() else {
            return;
        };
        if side.conns >= MAX_HTTP_CONNS {
            // Refuse in one write, as the client port refuses past --max-clients.
            use std::io::Write;
            let mut bytes = Vec::new();
            crate::http::response::write_error(
                &mut bytes,
                503,
                "too many HTTP connections",
                false,
                SystemTime::now(),
            );
            let mut stream = stream;
            let _ = stream.write(&bytes);
            self.herd.metrics.http_response(503);
            self.herd.log.event(format_args!(
                "http {addr} refused: too many HTTP connections"
            ));
            return;
        }
        let now = Instant::now();
        let (protocol, actions) = HttpProtocol::connection_made(now);
        let Some(conn) = self.insert(stream, |transport, id| {
            Conn::Http(HttpConn {
                id,
                addr,
                transport,
                protocol: Some(protocol),
                close_after: None,
            })
        }) else {
            return;
        };
        if let Some(side) = self.http.as_mut() {
            side.conns += 1;
        }
        self.herd
            .log
            .event(format_args!("http#{} {addr} connected", self.next_id));
        self.http_apply(conn, actions, now);
    }

    pub(super) fn http_ready(&mut self, key: usize, readable: bool) {
        let Some(Slot {
            conn: Conn::Http(h),
            gen,
            ..
        }) = self.conns.get_mut(key)
        else {
            return;
        };
        let conn = ConnRef { key, gen: *gen };
        if readable && h.close_after.is_none() {
            let Some(mut protocol) = h.protocol.take() else {
                return;
            };
            while let Some(Slot {
                conn: Conn::Http(h),
                ..
            }) = self.conns.get_mut(key)
            {
                let now = Instant::now();
                let actions = match h.transport.read(&mut self.read_buf) {
                    Ok(0) => protocol.eof_received(),
                    Ok(n) => protocol.data_received(&self.read_buf[..n], now, &*self),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        let why = format!("read error: {e}");
                        self.put_back(key, protocol);
                        self.close(key, &why);
                        return;
                    }
                };
                let was_closing = protocol.is_closing();
                self.http_apply(conn, actions, now);
                // After a refusal, one more read takes what the client had
                // already sent, so that closing sends FIN rather than RST
                // (which could destroy the error response in flight).
                if was_closing || !self.is_live(conn) {
                    break;
                }
            }
            self.put_back(key, protocol);
        }
        self.http_flush(key);
    }

    fn put_back(&mut self, key: usize, protocol: HttpProtocol) {
        if let Some(Slot {
            conn: Conn::Http(h),
            ..
        }) = self.conns.get_mut(key)
        {
            h.protocol = Some(protocol);
        }
    }

    /// Carries out what the protocol asked.
    fn http_apply(&mut self, conn: ConnRef, actions: Vec<HttpAction>, now: Instant) {
        for action in actions {
            let Some(Slot {
                conn: Conn::Http(h),
                ..
            }) = self.conns.get_mut(conn.key)
            else {
                return;
            };
            match action {
                HttpAction::Write { bytes, status } => {
                    h.transport.write(&bytes);
                    self.herd.metrics.http_response(status);
                    if h.transport.backlog() > HTTP_BACKLOG {
                        self.close(conn.key, "over 256 KiB of responses left unread");
                        return;
                    }
                }
                HttpAction::Close(why) => h.close_after = Some(why),
                HttpAction::CallLater(delay) => {
                    self.timers
                        .call_later(now, delay, TimerEvent::Http { conn });
                }
            }
        }
    }

    /// Writes what is owed; closes once the protocol asked and all is sent.
    pub(super) fn http_flush(&mut self, key: usize) {
        let Some(Slot {
            conn: Conn::Http(h),
            closing: false,
            ..
        }) = self.conns.get_mut(key)
        else {
            return;
        };
        match h.transport.flush() {
            Err(e) => self.close(key, &format!("write error: {e}")),
            Ok(Flushed::All) => {
                if let Some(why) = h.close_after {
                    h.transport.shutdown_write();
                    self.close(key, why);
                }
            }
            Ok(Flushed::Pending) => {}
        }
    }

    /// The connection's timer: a slow head gets its 408, an idle one is closed.
    pub(super) fn http_timer(&mut self, conn: ConnRef, now: Instant) {
        if !self.is_live(conn) {
            return;
        }
        let Some(Slot {
            conn: Conn::Http(h),
            ..
        }) = self.conns.get_mut(conn.key)
        else {
            return;
        };
        let Some(protocol) = h.protocol.as_mut() else {
            return;
        };
        let stuck = h.close_after.is_some();
        let actions = protocol.timer_fired(now);
        let timed_out = actions.iter().any(|a| matches!(a, HttpAction::Close(_)));
        self.http_apply(conn, actions, now);
        self.http_flush(conn.key);
        if self.is_live(conn) && (timed_out || stuck) {
            // Out of time: what the socket did not take is dropped.
            let why = if stuck {
                "responses not read in time"
            } else {
                "timed out"
            };
            self.close(conn.key, why);
        }
    }
}

/// The herd view when there is no HTTP endpoint (never rendered then).
static EMPTY_HERD: HerdView = HerdView {
    servers: Vec::new(),
    links: Vec::new(),
};
