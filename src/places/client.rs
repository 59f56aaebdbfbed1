//! The Places client: asyncio's `aiohttp.ClientSession.get`, as two state
//! machines the event loop drives.
//!
//! - [`PlacesConn`], one HTTPS connection, lives in the loop's slab like every
//!   other connection: `Connecting → Handshaking → Busy ⇄ Idle`. On each
//!   readiness event the loop calls [`PlacesConn::ready`], which moves bytes
//!   through TLS ([`super::tls`]) and HTTP ([`super::http`]) and says what
//!   happened ([`ConnEvent`]).
//! - [`PlacesClient`] owns the requests: it picks an idle connection or asks
//!   for a new one, retries once a request whose reused connection was closed
//!   under it, times out what takes too long, and turns answers into reply
//!   bytes. It never touches a socket: it returns [`PlacesAction`]s and the loop
//!   carries them out (`event_loop/places.rs`, `apply_places`).
//!
//! Every request waits only for its own answer: each has its own connection
//! while it is in flight (no pipelining), up to [`MAX_CONNS`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Registry, Token};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use super::google_json::error_json;
use super::http::{
    build_request, describe_request, Api, Endpoint, NearbyQuery, Progress, Response, ResponseReader,
};
use super::new_api::render_reply;
use super::resolver::{Lookup, Resolver};
use super::tls::{self, TlsTransport};
use crate::event_loop::{ConnRef, TimerEvent};
use crate::herd::PlacesQuery;
use crate::log::Log;
use crate::timers::{TimerId, Timers};

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

/// Places timers (payloads of [`TimerEvent::Places`]).
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

    /// Puts `bytes` (a whole HTTP request) on an open connection.
    pub fn send(&mut self, request: u64, bytes: &[u8], reused: bool) {
        self.tls.write(bytes);
        self.state = ConnState::Busy {
            request,
            reader: ResponseReader::new(MAX_BODY),
            reused,
        };
    }

    /// close_notify and FIN (asyncio's `transport.close()`).
    pub fn close(&mut self) {
        self.tls.close();
    }

    /// Drives the connection after a readiness event (or after `send`).
    pub fn ready(&mut self, readable: bool) -> ConnEvent {
        if let ConnState::Connecting { request } = self.state {
            // asyncio's open_connection: the connect's outcome shows up as
            // writability; a spurious event finds it still in progress.
            let stream = self.tls.stream();
            match stream.take_error() {
                Ok(Some(e)) | Err(e) => return self.failed(format!("connect failed: {e}")),
                Ok(None) => {}
            }
            match stream.peer_addr() {
                Ok(_) => self.state = ConnState::Handshaking { request },
                Err(e) if e.kind() == std::io::ErrorKind::NotConnected => {
                    return ConnEvent::Nothing
                }
                Err(e) => return self.failed(format!("connect failed: {e}")),
            }
        }
        let pumped = match self.tls.pump(readable) {
            Ok(p) => p,
            Err(why) => return self.failed(why),
        };
        match &mut self.state {
            ConnState::Connecting { .. } => ConnEvent::Nothing,
            ConnState::Handshaking { request } => {
                let request = *request;
                if !self.tls.is_handshaking() {
                    self.state = ConnState::Idle;
                    ConnEvent::Opened {
                        request,
                        version: self.tls.version(),
                    }
                } else if pumped.eof {
                    self.failed("closed during the TLS handshake".to_string())
                } else {
                    ConnEvent::Nothing
                }
            }
            ConnState::Idle => {
                if pumped.eof || !pumped.data.is_empty() {
                    self.failed("closed by Places while idle".to_string())
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
                        self.state = ConnState::Idle;
                        ConnEvent::Response { request, response }
                    }
                    Ok(Progress::NeedMore) if pumped.eof => match reader.eof() {
                        Ok(response) => {
                            self.state = ConnState::Idle;
                            ConnEvent::Response { request, response }
                        }
                        Err(e) => {
                            let retry = *reused && !reader.started();
                            self.state = ConnState::Idle;
                            ConnEvent::Failed {
                                request: Some(request),
                                why: format!("HTTP: {e}"),
                                retry,
                            }
                        }
                    },
                    Ok(Progress::NeedMore) => ConnEvent::Nothing,
                    Err(e) => self.failed(format!("HTTP: {e}")),
                }
            }
        }
    }

    fn failed(&mut self, why: String) -> ConnEvent {
        let request = match self.state {
            ConnState::Connecting { request }
            | ConnState::Handshaking { request }
            | ConnState::Busy { request, .. } => Some(request),
            ConnState::Idle => None,
        };
        self.state = ConnState::Idle;
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

/// Requests in flight, the pool of idle connections, and the resolver.
pub struct PlacesClient {
    endpoint: Endpoint,
    api: Api,
    key: String,
    tls_config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    resolver: Resolver,
    requests: HashMap<u64, Request>,
    /// Requests waiting for an address or a free connection, oldest first.
    queue: VecDeque<u64>,
    /// Open connections waiting for a request, most recently used last.
    idle: Vec<IdleConn>,
    /// Connections still connecting or handshaking.
    opening: Vec<ConnRef>,
    open: usize,
    /// Requests by outcome and their latency, for `/metrics`.
    pub metrics: crate::observe::PlacesMetrics,
}

/// A pooled connection and since when it has been idle.
struct IdleConn {
    conn: ConnRef,
    id: u64,
    since: Instant,
}

impl PlacesClient {
    /// Sets up TLS and the resolver thread (which wakes the loop via `waker`).
    pub fn new(
        settings: PlacesSettings,
        registry: &Registry,
        waker: Token,
    ) -> Result<Self, String> {
        let tls_config = tls::client_config(settings.ca_file.as_deref())?;
        let server_name = tls::server_name(&settings.endpoint.host)?;
        let resolver = Resolver::new(
            &settings.endpoint.host,
            settings.endpoint.port,
            registry,
            waker,
        )
        .map_err(|e| format!("cannot start the resolver: {e}"))?;
        Ok(PlacesClient {
            endpoint: settings.endpoint,
            api: settings.api,
            key: settings.key.unwrap_or_default(),
            tls_config,
            server_name,
            resolver,
            requests: HashMap::new(),
            queue: VecDeque::new(),
            idle: Vec::new(),
            opening: Vec::new(),
            open: 0,
            metrics: crate::observe::PlacesMetrics::default(),
        })
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
        timers: &mut Timers<TimerEvent>,
    ) -> Vec<PlacesAction> {
        let q = near(&query);
        log.event(format_args!(
            "places#{request} request {} for client#{client_id}",
            describe_request(self.api, &self.endpoint, &q)
        ));
        let timer = timers.call_later(
            now,
            REQUEST_TIMEOUT,
            TimerEvent::Places(PlacesEvent::RequestTimeout { request }),
        );
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
        self.dispatch(now, log)
    }

    /// Gives queued requests a connection: an idle one, or a new one.
    fn dispatch(&mut self, now: Instant, log: &mut Log) -> Vec<PlacesAction> {
        let mut actions = Vec::new();
        while let Some(&request) = self.queue.front() {
            if let Some(idle) = self.idle.pop() {
                self.queue.pop_front();
                log.event(format_args!(
                    "places conn#{} reused for places#{request}",
                    idle.id
                ));
                actions.extend(self.send_on(idle.conn, request, true));
                continue;
            }
            if self.open >= MAX_CONNS {
                break;
            }
            match self.resolver.lookup(now) {
                Ok(Lookup::Ready(addr)) => {
                    self.queue.pop_front();
                    match ClientConnection::new(self.tls_config.clone(), self.server_name.clone()) {
                        Ok(tls) => {
                            self.open += 1;
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
        timers: &mut Timers<TimerEvent>,
    ) -> Vec<PlacesAction> {
        match result {
            Ok((conn, conn_id)) => {
                log.event(format_args!(
                    "places conn#{conn_id} connecting for places#{request}"
                ));
                if let Some(r) = self.requests.get_mut(&request) {
                    r.conn = Some(conn);
                }
                self.opening.push(conn);
                timers.call_later(
                    now,
                    OPEN_TIMEOUT,
                    TimerEvent::Places(PlacesEvent::OpenTimeout { conn }),
                );
                Vec::new()
            }
            Err(why) => {
                self.open -= 1;
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
        timers: &mut Timers<TimerEvent>,
    ) -> Vec<PlacesAction> {
        match event {
            ConnEvent::Nothing => Vec::new(),
            ConnEvent::Opened { request, version } => {
                self.opening.retain(|c| *c != conn);
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
        timers: &mut Timers<TimerEvent>,
    ) -> Vec<PlacesAction> {
        if self.idle.len() >= MAX_IDLE {
            return vec![PlacesAction::Close {
                conn,
                why: "the idle pool is full".to_string(),
            }];
        }
        self.idle.push(IdleConn {
            conn,
            id: conn_id,
            since: now,
        });
        timers.call_later(
            now,
            IDLE_FOR,
            TimerEvent::Places(PlacesEvent::IdleTimeout { conn, since: now }),
        );
        Vec::new()
    }

    /// Turns a response into the client's reply.
    fn answer(
        &mut self,
        request: u64,
        response: &Response,
        now: Instant,
        log: &mut Log,
    ) -> Vec<PlacesAction> {
        let Some(r) = self.requests.remove(&request) else {
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
        let Some(r) = self.requests.remove(&request) else {
            return Vec::new();
        };
        self.metrics.latency.observe(now - r.started);
        if timed_out {
            self.metrics.timeout += 1;
        } else {
            self.metrics.failed += 1;
        }
        self.queue.retain(|q| *q != request);
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
        self.open = self.open.saturating_sub(1);
        self.idle.retain(|i| i.conn != conn);
        self.opening.retain(|c| *c != conn);
        let carried: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, r)| r.conn == Some(conn))
            .map(|(id, _)| *id)
            .collect();
        let mut actions = Vec::new();
        for request in carried {
            actions.extend(self.fail(request, why, now, log));
        }
        actions.extend(self.dispatch(now, log));
        actions
    }

    /// The client that asked went away: nobody wants its answers. Queued
    /// requests are dropped; one in flight finishes, so its connection can
    /// be reused, and its answer is thrown away.
    pub fn client_gone(&mut self, client: ConnRef, timers: &mut Timers<TimerEvent>) {
        let mut dropped = Vec::new();
        for (id, r) in self.requests.iter_mut() {
            if r.client == Some(client) {
                r.client = None;
                if r.conn.is_none() {
                    dropped.push(*id);
                }
            }
        }
        for id in dropped {
            if let Some(r) = self.requests.remove(&id) {
                timers.cancel(r.timer);
            }
            self.queue.retain(|q| *q != id);
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
                if self.opening.contains(&conn) {
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
                if self.idle.iter().any(|i| i.conn == conn && i.since == since) {
                    self.idle.retain(|i| i.conn != conn);
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
