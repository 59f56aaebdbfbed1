//! The Places client: asyncio's `aiohttp.ClientSession.get`, as two state
//! machines the event loop drives.
//!
//! - [`PlacesConn`], one HTTPS connection, lives in the loop's slab like every
//!   other connection: `Connecting → Handshaking → Busy ⇄ Idle`, and
//!   `Closed` at the end whatever happened; every transition goes through
//!   one `set_state`, which logs it. On each readiness event the loop calls
//!   [`PlacesConn::ready`], which moves bytes through TLS ([`super::tls`])
//!   and HTTP ([`super::http`]) and says what happened ([`ConnEvent`]).
//! - [`PlacesClient`] owns the requests: it picks an idle connection or asks
//!   for a new one, retries once a request whose reused connection was closed
//!   under it, times out what takes too long, and turns answers into reply
//!   bytes ([`super::reply`]). It is sans-IO: it returns [`PlacesAction`]s
//!   that the loop carries out (`event_loop/places.rs`, `apply_places`), sets
//!   its timers through [`Schedule`], and resolves names through an injected
//!   [`Resolve`]; its unit tests run it on a fake clock. The pool is not kept
//!   apart: it is the connections whose state is `Idle`.
//!
//! Every request waits only for its own answer: each has its own connection
//! while it is in flight (no pipelining), up to [`MAX_CONNS`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use super::google_json::error_json;
use super::http::{
    build_request, describe_request, Api, Endpoint, NearbyQuery, Progress, Response, ResponseReader,
};
use super::reply::render_reply;
use super::resolver::{Lookup, Resolve};
use super::tls::{self, TlsTransport};
use super::PlacesQuery;
use crate::conn_ref::ConnRef;
use crate::log::Log;
use crate::timers::{Schedule, TimerId};

/// At most this many connections to Places at once; more requests queue.
pub const MAX_CONNS: usize = 32;
/// At most this many idle connections are kept for reuse.
pub const MAX_IDLE: usize = 16;
/// An idle connection is closed after this long.
pub const IDLE_FOR: Duration = Duration::from_secs(20);
/// Connecting plus the TLS handshake must take less than this.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// A whole request, queueing included, must take less than this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A response body larger than this is an error.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// How to reach Places, from the command line.
#[derive(Debug, Clone)]
pub struct PlacesSettings {
    pub endpoint: Endpoint,
    pub api: Api,
    /// From `PLACES_API_KEY`; never logged.
    pub key: Option<String>,
    pub ca_file: Option<PathBuf>,
}

/// Places timers (the loop wraps them in its own timer event).
#[derive(Debug)]
pub enum PlacesEvent {
    /// A request has taken [`REQUEST_TIMEOUT`].
    RequestTimeout { request: u64 },
    /// A connection is still not open after [`OPEN_TIMEOUT`].
    OpenTimeout { conn: ConnRef },
    /// A connection idle since `since` has been idle [`IDLE_FOR`].
    IdleTimeout { conn: ConnRef, since: Instant },
}

/// Where one HTTPS connection stands.
pub enum ConnState {
    /// The TCP connect is in progress, for `request`.
    Connecting { request: u64 },
    /// The TLS handshake is in progress, for `request`.
    Handshaking { request: u64 },
    /// A request is out; its response is being read.
    Busy {
        request: u64,
        reader: ResponseReader,
        reused: bool,
    },
    /// Open, in the pool, waiting for a request.
    Idle,
    /// Failed or finished with: nothing more happens on it; the loop closes it.
    Closed,
}

impl ConnState {
    fn label(&self) -> &'static str {
        match self {
            ConnState::Connecting { .. } => "Connecting",
            ConnState::Handshaking { .. } => "Handshaking",
            ConnState::Busy { .. } => "Busy",
            ConnState::Idle => "Idle",
            ConnState::Closed => "Closed",
        }
    }

    fn request(&self) -> Option<u64> {
        match *self {
            ConnState::Connecting { request }
            | ConnState::Handshaking { request }
            | ConnState::Busy { request, .. } => Some(request),
            ConnState::Idle | ConnState::Closed => None,
        }
    }
}

/// One HTTPS connection to Places, in the loop's slab.
pub struct PlacesConn {
    /// The connection number in the log.
    pub id: u64,
    tls: TlsTransport,
    state: ConnState,
}

/// What a readiness event amounted to on a Places connection.
#[derive(Debug)]
pub enum ConnEvent {
    /// Nothing worth telling (a partial read, a spurious event).
    Nothing,
    /// Connected and the handshake is done: `request` can go out.
    Opened { request: u64, version: String },
    /// The response to `request` is complete.
    Response { request: u64, response: Response },
    /// The connection failed, with `request` on it if any. `retry` says the
    /// server closed a reused connection before answering a byte.
    Failed {
        request: Option<u64>,
        why: String,
        retry: bool,
    },
}

impl PlacesConn {
    /// A connection being opened for `request`.
    pub fn new(id: u64, stream: TcpStream, tls: ClientConnection, request: u64) -> Self {
        PlacesConn {
            id,
            tls: TlsTransport::new(stream, tls),
            state: ConnState::Connecting { request },
        }
    }

    /// The socket, for the loop's registration.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        self.tls.stream_mut()
    }

    /// Moves to `next`, logging `from => to` (as smoltcp's `set_state` does).
    fn set_state(&mut self, next: ConnState, log: &mut Log) {
        log.event(format_args!(
            "places conn#{}: {} => {}",
            self.id,
            self.state.label(),
            next.label()
        ));
        self.state = next;
    }

    /// Puts `bytes` (a whole HTTP request) on an open connection.
    pub fn send(&mut self, request: u64, bytes: &[u8], reused: bool, log: &mut Log) {
        self.tls.write(bytes);
        let busy = ConnState::Busy {
            request,
            reader: ResponseReader::new(MAX_BODY),
            reused,
        };
        self.set_state(busy, log);
    }

    /// close_notify and FIN (asyncio's `transport.close()`).
    pub fn close(&mut self) {
        self.tls.close();
    }

    /// Drives the connection after a readiness event (or after `send`).
    pub fn ready(&mut self, readable: bool, log: &mut Log) -> ConnEvent {
        if let ConnState::Connecting { request } = self.state {
            // asyncio's open_connection: the connect's outcome shows up as
            // writability; a spurious event finds it still in progress.
            let stream = self.tls.stream();
            match stream.take_error() {
                Ok(Some(e)) | Err(e) => return self.failed(format!("connect failed: {e}"), log),
                Ok(None) => {}
            }
            match stream.peer_addr() {
                Ok(_) => self.set_state(ConnState::Handshaking { request }, log),
                Err(e) if e.kind() == std::io::ErrorKind::NotConnected => {
                    return ConnEvent::Nothing
                }
                Err(e) => return self.failed(format!("connect failed: {e}"), log),
            }
        }
        if matches!(self.state, ConnState::Closed) {
            return ConnEvent::Nothing;
        }
        let pumped = match self.tls.pump(readable) {
            Ok(p) => p,
            Err(why) => return self.failed(why, log),
        };
        match &mut self.state {
            ConnState::Connecting { .. } | ConnState::Closed => ConnEvent::Nothing,
            ConnState::Handshaking { request } => {
                let request = *request;
                if !self.tls.is_handshaking() {
                    self.set_state(ConnState::Idle, log);
                    ConnEvent::Opened {
                        request,
                        version: self.tls.version(),
                    }
                } else if pumped.eof {
                    self.failed("closed during the TLS handshake".to_string(), log)
                } else {
                    ConnEvent::Nothing
                }
            }
            ConnState::Idle => {
                if pumped.eof || !pumped.data.is_empty() {
                    self.failed("closed by Places while idle".to_string(), log)
                } else {
                    ConnEvent::Nothing
                }
            }
            ConnState::Busy {
                request,
                reader,
                reused,
            } => {
                let request = *request;
                let result = if pumped.data.is_empty() {
                    Ok(Progress::NeedMore)
                } else {
                    reader.feed(&pumped.data)
                };
                match result {
                    Ok(Progress::Done(response)) => {
                        // Kept alive or not, the client decides what comes next.
                        let next = if response.keep_alive {
                            ConnState::Idle
                        } else {
                            ConnState::Closed
                        };
                        self.set_state(next, log);
                        ConnEvent::Response { request, response }
                    }
                    Ok(Progress::NeedMore) if pumped.eof => match reader.eof() {
                        Ok(response) => {
                            self.set_state(ConnState::Closed, log);
                            ConnEvent::Response { request, response }
                        }
                        Err(e) => {
                            let retry = *reused && !reader.started();
                            self.set_state(ConnState::Closed, log);
                            ConnEvent::Failed {
                                request: Some(request),
                                why: format!("HTTP: {e}"),
                                retry,
                            }
                        }
                    },
                    Ok(Progress::NeedMore) => ConnEvent::Nothing,
                    Err(e) => self.failed(format!("HTTP: {e}"), log),
                }
            }
        }
    }

    /// The connection is done for: say which request it carried.
    fn failed(&mut self, why: String, log: &mut Log) -> ConnEvent {
        let request = self.state.request();
        self.set_state(ConnState::Closed, log);
        ConnEvent::Failed {
            request,
            why,
            retry: false,
        }
    }
}

/// What the Places client asks the loop to do.
pub enum PlacesAction {
    /// Open a connection to `addr` for `request` (asyncio's `open_connection`
    /// with `ssl=`); the loop answers with [`PlacesClient::opened`].
    Open {
        addr: SocketAddr,
        tls: Box<ClientConnection>,
        request: u64,
    },
    /// Send a request on an open connection.
    Send {
        conn: ConnRef,
        request: u64,
        bytes: Vec<u8>,
        reused: bool,
    },
    /// Close a connection.
    Close { conn: ConnRef, why: String },
    /// Deliver the reply bytes of a client's WHATSAT.
    Answer {
        client: ConnRef,
        request: u64,
        bytes: Vec<u8>,
    },
}

/// One WHATSAT waiting for Places.
struct Request {
    /// Who asked (None once the client has gone: the answer is dropped).
    client: Option<ConnRef>,
    query: PlacesQuery,
    started: Instant,
    timer: TimerId,
    /// The connection carrying it, once it has one.
    conn: Option<ConnRef>,
    retried: bool,
}

/// Requests in flight, the connections, and the resolver.
pub struct PlacesClient {
    endpoint: Endpoint,
    api: Api,
    key: String,
    tls_config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    resolver: Box<dyn Resolve>,
    requests: HashMap<u64, Request>,
    /// Requests waiting for an address or a free connection, oldest first.
    queue: VecDeque<u64>,
    /// Every open connection and what it is doing: the pool is the `Idle`
    /// ones, and the connection limit counts them all.
    conns: HashMap<ConnRef, Pooled>,
    /// Connections asked of the loop and not yet opened (`opened` says).
    dialing: usize,
    /// The request each connection carries, so a close finds it at once.
    carrying: HashMap<ConnRef, u64>,
    /// Each client's requests (at most 64 wait per client), so a client
    /// that leaves costs what it asked for, not a scan of every request.
    by_client: HashMap<ConnRef, Vec<u64>>,
    /// Requests by outcome and their latency, for `/metrics`.
    pub metrics: crate::observe::PlacesMetrics,
}

/// What an open connection is doing, as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pooled {
    /// Connecting or handshaking (log number `id`).
    Opening { id: u64 },
    /// Carrying a request.
    Busy { id: u64 },
    /// In the pool since `since`.
    Idle { id: u64, since: Instant },
}

impl PlacesClient {
    /// Sets up TLS; names are resolved by `resolver` (the loop's resolver
    /// thread, or a test's stand-in).
    pub fn new(settings: PlacesSettings, resolver: Box<dyn Resolve>) -> Result<Self, String> {
        let tls_config = tls::client_config(settings.ca_file.as_deref())?;
        let server_name = tls::server_name(&settings.endpoint.host)?;
        Ok(PlacesClient {
            endpoint: settings.endpoint,
            api: settings.api,
            key: settings.key.unwrap_or_default(),
            tls_config,
            server_name,
            resolver,
            requests: HashMap::new(),
            queue: VecDeque::new(),
            conns: HashMap::new(),
            dialing: 0,
            carrying: HashMap::new(),
            by_client: HashMap::new(),
            metrics: crate::observe::PlacesMetrics::default(),
        })
    }

    /// The most recently pooled idle connection, if any.
    fn take_idle(&mut self) -> Option<(ConnRef, u64)> {
        let (conn, id) = self
            .conns
            .iter()
            .filter_map(|(c, p)| match *p {
                Pooled::Idle { id, since } => Some((since, *c, id)),
                _ => None,
            })
            .max()
            .map(|(_, c, id)| (c, id))?;
        self.conns.insert(conn, Pooled::Busy { id });
        Some((conn, id))
    }

    fn idle_count(&self) -> usize {
        self.conns
            .values()
            .filter(|p| matches!(p, Pooled::Idle { .. }))
            .count()
    }

    /// How many connections are open or being opened.
    fn open_count(&self) -> usize {
        self.conns.len() + self.dialing
    }

    /// A client's WHATSAT needs Places (the `aiohttp` call).
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &mut self,
        client: ConnRef,
        client_id: u64,
        request: u64,
        query: PlacesQuery,
        now: Instant,
        log: &mut Log,
        timers: &mut dyn Schedule<PlacesEvent>,
    ) -> Vec<PlacesAction> {
        let q = near(&query);
        log.event(format_args!(
            "places#{request} request {} for client#{client_id}",
            describe_request(self.api, &self.endpoint, &q)
        ));
        let timer = timers.call_later(REQUEST_TIMEOUT, PlacesEvent::RequestTimeout { request });
        self.requests.insert(
            request,
            Request {
                client: Some(client),
                query,
                started: now,
                timer,
                conn: None,
                retried: false,
            },
        );
        self.queue.push_back(request);
        self.by_client.entry(client).or_default().push(request);
        self.dispatch(now, log)
    }

    /// Gives queued requests a connection: an idle one, or a new one.
    fn dispatch(&mut self, now: Instant, log: &mut Log) -> Vec<PlacesAction> {
        let mut actions = Vec::new();
        while let Some(&request) = self.queue.front() {
            // Requests that failed or were dropped while queued leave the
            // queue here, not by a search when they go.
            if !self.requests.contains_key(&request) {
                self.queue.pop_front();
                continue;
            }
            if let Some((conn, id)) = self.take_idle() {
                self.queue.pop_front();
                log.event(format_args!("places conn#{id} reused for places#{request}"));
                actions.extend(self.send_on(conn, request, true));
                continue;
            }
            if self.open_count() >= MAX_CONNS {
                break;
            }
            match self.resolver.lookup(now) {
                Ok(Lookup::Ready(addr)) => {
                    self.queue.pop_front();
                    match ClientConnection::new(self.tls_config.clone(), self.server_name.clone()) {
                        Ok(tls) => {
                            self.dialing += 1;
                            actions.push(PlacesAction::Open {
                                addr,
                                tls: Box::new(tls),
                                request,
                            });
                        }
                        Err(e) => {
                            actions.extend(self.fail(request, &format!("TLS: {e}"), now, log))
                        }
                    }
                }
                // The resolver thread will wake the loop.
                Ok(Lookup::Pending) => break,
                Err(why) => {
                    self.queue.pop_front();
                    actions.extend(self.fail(request, &why, now, log));
                }
            }
        }
        actions
    }

    fn send_on(&mut self, conn: ConnRef, request: u64, reused: bool) -> Vec<PlacesAction> {
        let Some(r) = self.requests.get_mut(&request) else {
            return Vec::new();
        };
        r.conn = Some(conn);
        self.carrying.insert(conn, request);
        let bytes = build_request(self.api, &self.endpoint, &self.key, &near(&r.query));
        vec![PlacesAction::Send {
            conn,
            request,
            bytes,
            reused,
        }]
    }

    /// The resolver thread has answered (the loop's WAKER fired).
    pub fn resolved(&mut self, now: Instant, log: &mut Log) -> Vec<PlacesAction> {
        let mut actions = Vec::new();
        if let Some(Err(why)) = self.resolver.answers(now) {
            let why = format!("cannot resolve {}: {why}", self.endpoint.host);
            for request in std::mem::take(&mut self.queue) {
                actions.extend(self.fail(request, &why, now, log));
            }
        }
        actions.extend(self.dispatch(now, log));
        actions
    }

    /// The loop opened (or failed to open) the connection asked for `request`.
    pub fn opened(
        &mut self,
        request: u64,
        result: Result<(ConnRef, u64), String>,
        now: Instant,
        log: &mut Log,
        timers: &mut dyn Schedule<PlacesEvent>,
    ) -> Vec<PlacesAction> {
        self.dialing = self.dialing.saturating_sub(1);
        match result {
            Ok((conn, conn_id)) => {
                log.event(format_args!(
                    "places conn#{conn_id} connecting for places#{request}"
                ));
                if let Some(r) = self.requests.get_mut(&request) {
                    r.conn = Some(conn);
                    self.carrying.insert(conn, request);
                }
                self.conns.insert(conn, Pooled::Opening { id: conn_id });
                timers.call_later(OPEN_TIMEOUT, PlacesEvent::OpenTimeout { conn });
                Vec::new()
            }
            Err(why) => {
                let mut actions = self.fail(request, &format!("connect failed: {why}"), now, log);
                actions.extend(self.dispatch(now, log));
                actions
            }
        }
    }

    /// What to do about an event on connection `conn` (log number `conn_id`).
    pub fn conn_event(
        &mut self,
        conn: ConnRef,
        conn_id: u64,
        event: ConnEvent,
        now: Instant,
        log: &mut Log,
        timers: &mut dyn Schedule<PlacesEvent>,
    ) -> Vec<PlacesAction> {
        match event {
            ConnEvent::Nothing => Vec::new(),
            ConnEvent::Opened { request, version } => {
                self.conns.insert(conn, Pooled::Busy { id: conn_id });
                log.event(format_args!(
                    "places conn#{conn_id} TLS handshake done ({version})"
                ));
                if self.requests.contains_key(&request) {
                    self.send_on(conn, request, false)
                } else {
                    // Its request timed out or its client left: pool it.
                    self.make_idle(conn, conn_id, now, timers)
                }
            }
            ConnEvent::Response { request, response } => {
                let mut actions = self.answer(request, &response, now, log);
                if response.keep_alive {
                    actions.extend(self.make_idle(conn, conn_id, now, timers));
                } else {
                    actions.push(PlacesAction::Close {
                        conn,
                        why: "Places asked to close".to_string(),
                    });
                }
                actions.extend(self.dispatch(now, log));
                actions
            }
            ConnEvent::Failed {
                request,
                why,
                retry,
            } => {
                let mut actions = vec![PlacesAction::Close {
                    conn,
                    why: why.clone(),
                }];
                if let Some(request) = request {
                    let retry_it = retry && self.requests.get(&request).is_some_and(|r| !r.retried);
                    if let Some(r) = self.requests.get_mut(&request) {
                        r.conn = None;
                        self.carrying.remove(&conn);
                        if retry_it {
                            // A kept-alive connection the server had closed:
                            // the request never reached it, so try once more.
                            r.retried = true;
                            log.event(format_args!(
                                "places#{request} retried on a fresh connection: {why}"
                            ));
                            self.queue.push_front(request);
                        }
                    }
                    if !retry_it {
                        actions.extend(self.fail(request, &why, now, log));
                    }
                }
                actions
            }
        }
    }

    fn make_idle(
        &mut self,
        conn: ConnRef,
        conn_id: u64,
        now: Instant,
        timers: &mut dyn Schedule<PlacesEvent>,
    ) -> Vec<PlacesAction> {
        if self.idle_count() >= MAX_IDLE {
            return vec![PlacesAction::Close {
                conn,
                why: "the idle pool is full".to_string(),
            }];
        }
        self.conns.insert(
            conn,
            Pooled::Idle {
                id: conn_id,
                since: now,
            },
        );
        timers.call_later(IDLE_FOR, PlacesEvent::IdleTimeout { conn, since: now });
        Vec::new()
    }

    /// Turns a response into the client's reply.
    /// A request leaves: forget it, and which connection and client had it.
    fn take_request(&mut self, request: u64) -> Option<Request> {
        let r = self.requests.remove(&request)?;
        if let Some(conn) = r.conn {
            if self.carrying.get(&conn) == Some(&request) {
                self.carrying.remove(&conn);
            }
        }
        if let Some(client) = r.client {
            if let Some(mine) = self.by_client.get_mut(&client) {
                mine.retain(|q| *q != request);
                if mine.is_empty() {
                    self.by_client.remove(&client);
                }
            }
        }
        Some(r)
    }

    fn answer(
        &mut self,
        request: u64,
        response: &Response,
        now: Instant,
        log: &mut Log,
    ) -> Vec<PlacesAction> {
        let Some(r) = self.take_request(request) else {
            return Vec::new();
        };
        let rendered = render_reply(
            self.api,
            response.status,
            &response.body,
            usize::from(r.query.bound),
        );
        let ms = millis(now - r.started);
        self.metrics.latency.observe(now - r.started);
        match &rendered.outcome {
            Ok(_) => self.metrics.ok += 1,
            Err(_) => self.metrics.error += 1,
        }
        match &rendered.outcome {
            Ok(n) => log.event(format_args!(
                "places#{request} answered: HTTP {}, {n} results, in {ms} ms",
                response.status
            )),
            Err(why) => log.event(format_args!("places#{request} failed: {why} after {ms} ms")),
        }
        self.reply(r, request, rendered.json, log)
    }

    /// Answers `request` with the error JSON.
    fn fail(&mut self, request: u64, why: &str, now: Instant, log: &mut Log) -> Vec<PlacesAction> {
        self.fail_as(false, request, why, now, log)
    }

    /// [`fail`](Self::fail), counted as a timeout or as a failure.
    fn fail_as(
        &mut self,
        timed_out: bool,
        request: u64,
        why: &str,
        now: Instant,
        log: &mut Log,
    ) -> Vec<PlacesAction> {
        let Some(r) = self.take_request(request) else {
            return Vec::new();
        };
        self.metrics.latency.observe(now - r.started);
        if timed_out {
            self.metrics.timeout += 1;
        } else {
            self.metrics.failed += 1;
        }
        let ms = millis(now - r.started);
        log.event(format_args!("places#{request} failed: {why} after {ms} ms"));
        let json = error_json(&format!("Places request failed: {why}"), "UNKNOWN_ERROR");
        self.reply(r, request, json, log)
    }

    fn reply(
        &mut self,
        r: Request,
        request: u64,
        json: String,
        log: &mut Log,
    ) -> Vec<PlacesAction> {
        let Some(client) = r.client else {
            log.event(format_args!(
                "places#{request} answer dropped: its client has gone"
            ));
            return Vec::new();
        };
        let mut bytes = r.query.at_line;
        bytes.push(b'\n');
        bytes.extend_from_slice(json.as_bytes());
        vec![PlacesAction::Answer {
            client,
            request,
            bytes,
        }]
    }

    /// A Places connection closed (the loop's `close`): fail what it carried.
    pub fn conn_closed(
        &mut self,
        conn: ConnRef,
        why: &str,
        now: Instant,
        log: &mut Log,
    ) -> Vec<PlacesAction> {
        self.conns.remove(&conn);
        let mut actions = Vec::new();
        if let Some(request) = self.carrying.remove(&conn) {
            actions.extend(self.fail(request, why, now, log));
        }
        actions.extend(self.dispatch(now, log));
        actions
    }

    /// The client that asked went away: nobody wants its answers. Queued
    /// requests are dropped; one in flight finishes, so its connection can
    /// be reused, and its answer is thrown away.
    pub fn client_gone(&mut self, client: ConnRef, timers: &mut dyn Schedule<PlacesEvent>) {
        for id in self.by_client.remove(&client).unwrap_or_default() {
            let Some(r) = self.requests.get_mut(&id) else {
                continue;
            };
            r.client = None;
            if r.conn.is_none() {
                // Still queued: it leaves the queue when dispatch reaches it.
                if let Some(r) = self.requests.remove(&id) {
                    timers.cancel(r.timer);
                }
            }
        }
    }

    /// A Places timer came due.
    pub fn on_timer(
        &mut self,
        event: PlacesEvent,
        now: Instant,
        log: &mut Log,
    ) -> Vec<PlacesAction> {
        match event {
            PlacesEvent::RequestTimeout { request } => {
                let conn = self.requests.get(&request).and_then(|r| r.conn);
                let secs = REQUEST_TIMEOUT.as_secs();
                let why = format!("no answer in {secs} s");
                let mut actions = self.fail_as(true, request, &why, now, log);
                if let Some(conn) = conn {
                    actions.push(PlacesAction::Close {
                        conn,
                        why: "request timed out".to_string(),
                    });
                }
                actions
            }
            PlacesEvent::OpenTimeout { conn } => {
                if matches!(self.conns.get(&conn), Some(Pooled::Opening { .. })) {
                    vec![PlacesAction::Close {
                        conn,
                        why: format!("not open after {} s", OPEN_TIMEOUT.as_secs()),
                    }]
                } else {
                    Vec::new()
                }
            }
            PlacesEvent::IdleTimeout { conn, since } => {
                // Only if it has been idle ever since this timer was set.
                if matches!(self.conns.get(&conn), Some(Pooled::Idle { since: s, .. }) if *s == since)
                {
                    vec![PlacesAction::Close {
                        conn,
                        why: "idle too long".to_string(),
                    }]
                } else {
                    Vec::new()
                }
            }
        }
    }
}

fn near(query: &PlacesQuery) -> NearbyQuery<'_> {
    NearbyQuery {
        lat: &query.coords.lat,
        lon: &query.coords.lon,
        radius_m: &query.radius_m,
        bound: query.bound,
    }
}

fn millis(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::places::resolver::Answer;
    use crate::protocol::client::Coordinates;
    use crate::timers::{Scheduler, Timers};

    type Sched<'a> = Scheduler<'a, PlacesEvent, fn(PlacesEvent) -> PlacesEvent>;

    fn sched(timers: &mut Timers<PlacesEvent>, now: Instant) -> Sched<'_> {
        Scheduler {
            timers,
            now,
            wrap: |e| e,
        }
    }

    /// A resolver that knows the address at once.
    struct Known;

    impl Resolve for Known {
        fn lookup(&mut self, _now: Instant) -> Result<Lookup, String> {
            Ok(Lookup::Ready("127.0.0.1:443".parse().expect("an address")))
        }
        fn answers(&mut self, _now: Instant) -> Option<Answer> {
            None
        }
    }

    const CLIENT: ConnRef = ConnRef { key: 1, gen: 1 };

    /// The client on a fake clock; connections are numbered from 100.
    struct World {
        client: PlacesClient,
        timers: Timers<PlacesEvent>,
        now: Instant,
        log: Log,
        next_conn: usize,
    }

    impl World {
        fn new() -> World {
            let settings = PlacesSettings {
                endpoint: Endpoint::parse("https://places.test/nearby").expect("a URL"),
                api: Api::Legacy,
                key: Some("KEY".into()),
                ca_file: None,
            };
            World {
                client: PlacesClient::new(settings, Box::new(Known)).expect("a client"),
                timers: Timers::default(),
                now: Instant::now(),
                log: Log::discard(),
                next_conn: 100,
            }
        }

        fn request(&mut self, id: u64) -> Vec<PlacesAction> {
            let query = PlacesQuery {
                at_line: b"AT Riley +0.1 kiwi +1+1 1".to_vec(),
                coords: Coordinates {
                    lat: "1".into(),
                    lon: "1".into(),
                },
                radius_m: "1000".into(),
                bound: 3,
            };
            let now = self.now;
            let mut sched = sched(&mut self.timers, now);
            self.client
                .request(CLIENT, 1, id, query, now, &mut self.log, &mut sched)
        }

        /// Carries out an `Open` as the loop would: a connection that is
        /// then connected and handshaken. Returns it and what followed.
        fn open(&mut self, action: PlacesAction) -> (ConnRef, Vec<PlacesAction>) {
            let PlacesAction::Open { request, .. } = action else {
                panic!("expected Open");
            };
            self.next_conn += 1;
            let conn = ConnRef {
                key: self.next_conn,
                gen: 1,
            };
            let now = self.now;
            let mut log = Log::discard();
            let mut sched = sched(&mut self.timers, now);
            let opened = self.client.opened(
                request,
                Ok((conn, conn.key as u64)),
                now,
                &mut log,
                &mut sched,
            );
            assert!(opened.is_empty());
            let event = ConnEvent::Opened {
                request,
                version: "TLSv1_3".into(),
            };
            (conn, self.event(conn, event))
        }

        fn event(&mut self, conn: ConnRef, event: ConnEvent) -> Vec<PlacesAction> {
            let now = self.now;
            let mut log = Log::discard();
            let mut sched = sched(&mut self.timers, now);
            self.client
                .conn_event(conn, conn.key as u64, event, now, &mut log, &mut sched)
        }

        fn answer(&mut self, conn: ConnRef, request: u64, keep_alive: bool) -> Vec<PlacesAction> {
            let response = Response {
                status: 200,
                body: br#"{"html_attributions":[],"results":[],"status":"ZERO_RESULTS"}"#.to_vec(),
                keep_alive,
            };
            self.event(conn, ConnEvent::Response { request, response })
        }

        fn advance(&mut self, by: Duration) -> Vec<PlacesAction> {
            self.now += by;
            let mut actions = Vec::new();
            while let Some(e) = self.timers.pop_expired(self.now) {
                actions.extend(self.client.on_timer(e, self.now, &mut self.log));
            }
            actions
        }
    }

    fn sent_on(actions: &[PlacesAction]) -> Vec<(ConnRef, u64, bool)> {
        actions
            .iter()
            .filter_map(|a| match a {
                PlacesAction::Send {
                    conn,
                    request,
                    reused,
                    ..
                } => Some((*conn, *request, *reused)),
                _ => None,
            })
            .collect()
    }

    fn answers(actions: &[PlacesAction]) -> Vec<(u64, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                PlacesAction::Answer { request, bytes, .. } => {
                    Some((*request, String::from_utf8_lossy(bytes).into_owned()))
                }
                _ => None,
            })
            .collect()
    }

    fn closed(actions: &[PlacesAction]) -> Vec<ConnRef> {
        actions
            .iter()
            .filter_map(|a| match a {
                PlacesAction::Close { conn, .. } => Some(*conn),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_kept_alive_connection_is_pooled_and_reused() {
        let mut w = World::new();
        let mut actions = w.request(1);
        assert_eq!(actions.len(), 1);
        let (conn, sent) = w.open(actions.remove(0));
        assert_eq!(sent_on(&sent), vec![(conn, 1, false)]);
        let done = w.answer(conn, 1, true);
        assert_eq!(answers(&done).len(), 1);
        assert!(answers(&done)[0].1.contains("ZERO_RESULTS"));
        // The next request goes out on the pooled connection, no new Open.
        let again = w.request(2);
        assert_eq!(sent_on(&again), vec![(conn, 2, true)]);
    }

    #[test]
    fn requests_beyond_the_connection_limit_queue_until_one_is_free() {
        let mut w = World::new();
        let mut opens = Vec::new();
        for id in 1..=MAX_CONNS as u64 + 1 {
            opens.extend(w.request(id));
        }
        assert_eq!(opens.len(), MAX_CONNS, "the last request waits");
        let (conn, _) = w.open(opens.remove(0));
        let done = w.answer(conn, 1, true);
        // Request 1 answered, and the queued one takes its connection.
        assert_eq!(answers(&done).len(), 1);
        assert_eq!(sent_on(&done), vec![(conn, MAX_CONNS as u64 + 1, true)]);
    }

    #[test]
    fn a_reused_connection_closed_before_answering_is_retried_once() {
        let mut w = World::new();
        let open = w.request(1).remove(0);
        let (conn, _) = w.open(open);
        w.answer(conn, 1, true);
        let again = w.request(2);
        assert_eq!(sent_on(&again), vec![(conn, 2, true)]);
        let failed = ConnEvent::Failed {
            request: Some(2),
            why: "closed".into(),
            retry: true,
        };
        let after = w.event(conn, failed);
        assert_eq!(closed(&after), vec![conn]);
        assert!(answers(&after).is_empty(), "retried, not failed");
        // The loop closes the connection; the retry then gets a fresh one.
        let mut log = Log::discard();
        let now = w.now;
        let reopen = w
            .client
            .conn_closed(conn, "closed", now, &mut log)
            .into_iter()
            .find(|a| matches!(a, PlacesAction::Open { .. }));
        let (fresh, sent) = w.open(reopen.expect("a fresh connection for the retry"));
        assert_eq!(sent_on(&sent), vec![(fresh, 2, false)]);
        // A second failure is not retried: the client gets the error JSON.
        let failed = ConnEvent::Failed {
            request: Some(2),
            why: "closed again".into(),
            retry: true,
        };
        let after = w.event(fresh, failed);
        let answered = answers(&after);
        assert_eq!(answered.len(), 1);
        assert!(answered[0].1.contains("UNKNOWN_ERROR"), "{}", answered[0].1);
    }

    #[test]
    fn a_request_that_takes_too_long_is_answered_with_the_error_and_its_connection_closed() {
        let mut w = World::new();
        let open = w.request(1).remove(0);
        let (conn, _) = w.open(open);
        assert!(w
            .advance(REQUEST_TIMEOUT - Duration::from_millis(1))
            .is_empty());
        let due = w.advance(Duration::from_millis(1));
        let answered = answers(&due);
        assert_eq!(answered.len(), 1);
        assert!(
            answered[0].1.contains("no answer in 10 s"),
            "{}",
            answered[0].1
        );
        assert_eq!(closed(&due), vec![conn]);
    }

    #[test]
    fn an_idle_connection_is_closed_after_its_idle_time() {
        let mut w = World::new();
        let open = w.request(1).remove(0);
        let (conn, _) = w.open(open);
        w.answer(conn, 1, true);
        let due = w.advance(IDLE_FOR);
        assert_eq!(closed(&due), vec![conn]);
    }

    #[test]
    fn a_connection_that_never_opens_is_closed_by_its_open_timeout() {
        let mut w = World::new();
        let PlacesAction::Open { request, .. } = w.request(1).remove(0) else {
            panic!("expected Open");
        };
        let conn = ConnRef { key: 5, gen: 1 };
        let now = w.now;
        let mut log = Log::discard();
        let mut sched = sched(&mut w.timers, w.now);
        w.client
            .opened(request, Ok((conn, 5)), now, &mut log, &mut sched);
        assert_eq!(closed(&w.advance(OPEN_TIMEOUT)), vec![conn]);
    }

    #[test]
    fn a_client_that_leaves_drops_its_queued_requests() {
        let mut w = World::new();
        let mut opens = Vec::new();
        for id in 1..=MAX_CONNS as u64 + 3 {
            opens.extend(w.request(id));
        }
        let (conn, _) = w.open(opens.remove(0));
        let mut sched = sched(&mut w.timers, w.now);
        w.client.client_gone(CLIENT, &mut sched);
        // What stays in the queue is only ids that dispatch will skip.
        let queue = &w.client.queue;
        assert!(queue.iter().all(|id| !w.client.requests.contains_key(id)));
        // Only the request on a connection stays (so that the connection can
        // be reused once it is answered), with nobody to answer.
        assert_eq!(w.client.requests.len(), 1);
        assert!(w.client.requests.values().all(|r| r.client.is_none()));
        let done = w.answer(conn, 1, true);
        assert!(answers(&done).is_empty());
    }
}
