//! The Places client as the event loop sees it. (Placeholder until the HTTPS
//! state machine lands: every request is answered at once with an error.)

use std::path::PathBuf;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Registry, Token};

use crate::event_loop::{ConnRef, TimerEvent};
use crate::herd::PlacesQuery;
use crate::log::Log;
use crate::timers::Timers;
use crate::transport::Transport;

/// Which Places API the endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Legacy,
    New,
}

/// How to reach Places.
#[derive(Debug, Clone)]
pub struct PlacesSettings {
    pub url: String,
    pub api: Api,
    pub key: Option<String>,
    pub ca_file: Option<PathBuf>,
}

/// Places timers.
#[derive(Debug)]
pub enum PlacesEvent {}

/// An HTTPS connection to Places, in the loop's slab.
pub struct PlacesConn {
    transport: Transport,
}

impl PlacesConn {
    /// Takes the socket out of the poll.
    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(self.transport.stream_mut());
    }
}

/// A connection being opened, before it has a slab slot.
pub struct PendingConn;

impl PendingConn {
    /// Gives the new connection its transport.
    pub fn attach(self, transport: Transport) -> PlacesConn {
        PlacesConn { transport }
    }
}

/// What the Places client asks the loop to do.
pub enum PlacesAction {
    Open {
        stream: TcpStream,
        conn_state: PendingConn,
    },
    Close {
        conn: ConnRef,
        why: String,
    },
    Answer {
        client: ConnRef,
        request: u64,
        bytes: Vec<u8>,
    },
    Flush {
        conn: ConnRef,
    },
}

/// Requests in flight and idle connections.
pub struct PlacesClient {}

impl PlacesClient {
    /// Sets up the client (the resolver thread wakes the loop through `waker`).
    pub fn new(
        _settings: PlacesSettings,
        _registry: &Registry,
        _waker: Token,
    ) -> std::io::Result<Self> {
        Ok(PlacesClient {})
    }

    /// Starts a request for a client's WHATSAT.
    pub fn request(
        &mut self,
        client: ConnRef,
        request: u64,
        query: PlacesQuery,
        _now: Instant,
        _log: &mut Log,
        _timers: &mut Timers<TimerEvent>,
    ) -> Vec<PlacesAction> {
        let mut bytes = query.at_line;
        bytes.extend_from_slice(b"\n{\n   \"error_message\" : \"the Places client is not built yet\",\n   \"html_attributions\" : [],\n   \"results\" : [],\n   \"status\" : \"UNKNOWN_ERROR\"\n}\n\n");
        vec![PlacesAction::Answer {
            client,
            request,
            bytes,
        }]
    }

    /// The resolver thread has answers.
    pub fn resolved(&mut self, _now: Instant, _log: &mut Log) -> Vec<PlacesAction> {
        Vec::new()
    }

    /// A new connection got its slot (or could not be registered).
    pub fn opened(
        &mut self,
        _conn: Option<ConnRef>,
        _log: &mut Log,
        _timers: &mut Timers<TimerEvent>,
    ) -> Vec<PlacesAction> {
        Vec::new()
    }

    /// A connection is ready.
    #[allow(clippy::too_many_arguments)]
    pub fn ready(
        &mut self,
        _conn: ConnRef,
        _p: &mut PlacesConn,
        _readable: bool,
        _writable: bool,
        _now: Instant,
        _log: &mut Log,
        _timers: &mut Timers<TimerEvent>,
    ) -> Vec<PlacesAction> {
        Vec::new()
    }

    /// Writes what a connection has queued.
    pub fn flush(
        &mut self,
        _conn: ConnRef,
        _p: &mut PlacesConn,
        _log: &mut Log,
    ) -> Vec<PlacesAction> {
        Vec::new()
    }

    /// A connection closed.
    pub fn conn_closed(&mut self, _conn: ConnRef, _why: &str, _log: &mut Log) -> Vec<PlacesAction> {
        Vec::new()
    }

    /// The client that asked went away: its answers are no longer wanted.
    pub fn client_gone(&mut self, _client: ConnRef) {}

    /// A Places timer came due.
    pub fn on_timer(
        &mut self,
        event: PlacesEvent,
        _now: Instant,
        _log: &mut Log,
    ) -> Vec<PlacesAction> {
        match event {}
    }
}
