//! The loop's side of peer TLS: which transport a peer connection gets, and
//! the log line when its handshake is done. Everything about TLS itself
//! (records, certificates, refusals in words) is in [`crate::tls`]; the
//! protocols see a [`PeerTransport`] only as a `WriteTransport`.

use std::net::SocketAddr;

use mio::net::TcpStream;
use rustls::{ClientConnection, ServerConnection};

use super::{Conn, EventLoop};
use crate::conn_ref::ConnRef;
use crate::herd::peer_protocol::PeerInProtocol;
use crate::tls::link::PeerTransport;
use crate::tls::peer::PeerTls;
use crate::transport::Transport;

/// The TLS side a new peer connection starts with, made before the socket
/// is in the slab (so that a failure opens nothing).
pub(super) enum PeerSide {
    Plain,
    Dialled(ClientConnection),
    Accepted(ServerConnection),
}

impl PeerSide {
    /// For a connection we dial to neighbour `name`: with peer TLS, its
    /// certificate must carry that name.
    pub(super) fn dial(tls: Option<&PeerTls>, name: &str) -> Result<PeerSide, String> {
        tls.map_or(Ok(PeerSide::Plain), |t| t.dial(name).map(PeerSide::Dialled))
    }

    /// Wraps the connection's plaintext transport.
    pub(super) fn wrap(self, transport: Transport) -> PeerTransport {
        match self {
            PeerSide::Plain => PeerTransport::plain(transport),
            PeerSide::Dialled(tls) => PeerTransport::dialled(transport.into_stream(), tls),
            PeerSide::Accepted(tls) => PeerTransport::accepted(transport.into_stream(), tls),
        }
    }
}

impl EventLoop {
    /// A neighbour dialled our peer port: TLS's server side with peer TLS,
    /// plaintext otherwise. Its HELLO timer, from now, bounds the handshake.
    pub(super) fn peer_accepted(&mut self, stream: TcpStream, addr: SocketAddr) {
        let side = match self.peer_tls.as_ref().map(PeerTls::accept) {
            None => PeerSide::Plain,
            Some(Ok(tls)) => PeerSide::Accepted(tls),
            Some(Err(e)) => {
                self.herd
                    .log
                    .event(format_args!("peer-in {addr} dropped: {e}"));
                return;
            }
        };
        self.insert(stream, |transport, id, ctx| Conn::PeerIn {
            transport: side.wrap(transport),
            proto: PeerInProtocol::connection_made(id, &addr, ctx),
        });
    }

    /// After a read: once per TLS connection, log that its handshake is done
    /// and what it agreed (so a log shows which links are TLS).
    pub(super) fn log_handshake(&mut self, conn: ConnRef) {
        let Some(slot) = self.conns.get_mut(conn.key).filter(|s| s.gen == conn.gen) else {
            return;
        };
        let news = match &mut slot.conn {
            Conn::PeerOut { transport, .. } | Conn::PeerIn { transport, .. } => {
                transport.take_handshake_done()
            }
            _ => false,
        };
        if !news {
            return;
        }
        let herd = &mut self.herd;
        match &slot.conn {
            Conn::PeerOut {
                transport, proto, ..
            } => {
                let name = &herd.links[proto.link].name;
                herd.log.event(format_args!(
                    "peer-out {name}#{}: TLS up ({}, certificate for {name} checked)",
                    proto.id,
                    transport.describe(),
                ));
            }
            Conn::PeerIn { transport, proto } => herd.log.event(format_args!(
                "peer-in #{}: TLS up ({}, herd certificate checked)",
                proto.id,
                transport.describe()
            )),
            _ => {}
        }
    }
}
