//! The loop's side of the peer links: dialing (asyncio's `open_connection`),
//! seeing the connect complete, and carrying out a flood. What is said on a
//! link is decided by [`crate::herd::peer_protocol`]; the link's states live
//! in [`crate::herd::link`].

use std::io;
use std::time::Instant;

use mio::net::TcpStream;

use super::tls::PeerSide;
use super::{Conn, EventLoop, TimerEvent};
use crate::conn_ref::ConnRef;
use crate::herd::actions::CloseReason;
use crate::herd::peer_protocol::PeerOutProtocol;
use crate::timers::Scheduler;

impl EventLoop {
    /// asyncio's `open_connection`: a non-blocking connect whose completion
    /// shows up as the first writable event ([`connect_done`](Self::connect_done)).
    pub(super) fn dial(&mut self, link: usize) {
        let Some(&addr) = self.herd.links[link].addrs.first() else {
            return;
        };
        let now = Instant::now();
        let opened =
            PeerSide::dial(self.peer_tls.as_ref(), &self.herd.links[link].name).and_then(|side| {
                match TcpStream::connect(addr) {
                    Ok(stream) => self
                        .insert(stream, |transport, id, _| Conn::PeerOut {
                            transport: side.wrap(transport),
                            proto: PeerOutProtocol::new(id, link, now),
                            connected: false,
                        })
                        .ok_or_else(|| "cannot register".to_string()),
                    Err(e) => Err(format!("dial {addr} failed: {e}")),
                }
            });
        let mut scheduler = Scheduler {
            timers: &mut self.timers,
            now,
            wrap: TimerEvent::Herd,
        };
        match opened {
            Ok(conn) => self.herd.dialing(link, conn, &mut scheduler),
            Err(why) => {
                // Nothing was opened, so there is nothing to close.
                let _ = self.herd.back_off(link, &why, &mut scheduler);
            }
        }
    }

    /// A dialed connection became ready: did the connect succeed? Returns
    /// true once it has, after the protocol's `connection_made` (HELLO).
    pub(super) fn connect_done(&mut self, conn: ConnRef) -> bool {
        let Some(Conn::PeerOut {
            transport,
            connected,
            ..
        }) = self.conns.get_mut(conn.key).map(|s| &mut s.conn)
        else {
            return false;
        };
        let stream = transport.stream();
        let failed = match stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => None,
                // Still in progress: a spurious event.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return false,
                Err(e) => Some(e),
            },
        };
        if let Some(e) = failed {
            self.close(conn, CloseReason::LinkFailed(format!("dial failed: {e}")));
            return false;
        }
        *connected = true;
        self.with_conn(conn, |c, ctx| {
            if let Conn::PeerOut {
                transport, proto, ..
            } = c
            {
                proto.connection_made(ctx, transport);
            }
        });
        self.apply();
        true
    }

    /// Sends a new position to every neighbour whose link is up, except the
    /// one it came from. Written now, flushed before the turn's client replies.
    pub(super) fn flood(&mut self, at: &[u8], from: Option<usize>) {
        for link in 0..self.herd.links.len() {
            if Some(link) == from {
                continue;
            }
            // A link that is not up gets it from the catch-up when it is.
            let Some(conn) = self.herd.links[link].up_conn() else {
                continue;
            };
            self.with_conn(conn, |c, ctx| {
                if let Conn::PeerOut {
                    transport, proto, ..
                } = c
                {
                    proto.send_update(ctx, at, transport);
                }
            });
            self.peer_written(conn.key);
        }
    }

    /// A catch-up on every link that is up, except `except`'s
    /// ([`crate::herd::actions::Action::Resync`]).
    pub(super) fn resync(&mut self, except: Option<usize>) {
        for link in 0..self.herd.links.len() {
            if Some(link) == except {
                continue;
            }
            let Some(conn) = self.herd.links[link].up_conn() else {
                continue;
            };
            self.with_conn(conn, |c, ctx| {
                if let Conn::PeerOut {
                    transport, proto, ..
                } = c
                {
                    proto.resync(ctx, transport);
                }
            });
            self.peer_written(conn.key);
        }
    }

    /// Neighbours' catch-up requests that waited (for the state file's
    /// load, or for another neighbour's catch-up) are answered, one
    /// neighbour's at a time ([`crate::herd::actions::Action::ResumeCatchUps`]).
    pub(super) fn resume_catch_ups(&mut self) {
        for link in 0..self.herd.links.len() {
            let Some(conn) = self.herd.links[link].incoming else {
                continue;
            };
            self.with_conn(conn, |c, ctx| {
                if let Conn::PeerIn { transport, proto } = c {
                    proto.resume(ctx, transport);
                }
            });
            self.peer_written(conn.key);
        }
    }

    /// Writes every peer connection written to since the last call.
    pub(super) fn flush_dirty_peers(&mut self) {
        // A flush may close a link, and what that asks for may write more.
        while !self.dirty_peers.is_empty() {
            for key in std::mem::take(&mut self.dirty_peers) {
                if let Some(slot) = self.conns.get(key) {
                    let conn = ConnRef { key, gen: slot.gen };
                    self.flush(conn);
                }
            }
            self.apply();
        }
    }
}
