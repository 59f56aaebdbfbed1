//! What the herd's protocols ask of the event loop, and what they are told.
//!
//! The protocol objects ([`super::client_protocol`], [`super::peer_protocol`])
//! are sans-IO, like quiche's connections: they write bytes into their
//! transport's queue (a [`WriteTransport`](crate::transport::WriteTransport),
//! which is only a buffer) and schedule their timers through
//! [`Schedule`]; everything else they want done
//! they return as an [`Action`] for the loop to carry out
//! (`event_loop/mod.rs`, `apply`). Every handler gets the same [`Ctx`].

use std::fmt;
use std::time::Instant;

use super::Herd;
use crate::conn_ref::ConnRef;
use crate::places::PlacesQuery;
use crate::timers::Schedule;

/// Something only the loop can do, asked for by a protocol.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a new position (an AT line without `\n`) to every neighbour
    /// whose link is up, except the one it came from.
    Flood { at: Vec<u8>, from: Option<usize> },
    /// Ask Places for a client's WHATSAT; the answer is handed to that
    /// client's `answer_received` with the same `request`.
    FetchPlaces {
        client: ConnRef,
        client_id: u64,
        request: u64,
        query: PlacesQuery,
    },
    /// Open our link to neighbour `link` (asyncio's `open_connection`).
    Dial { link: usize },
    /// A catch-up brought something new: run a catch-up to every neighbour
    /// whose link is up, except `except` (where it came from).
    Resync { except: Option<usize> },
    /// An incoming catch-up is over: one of those that wait may go on
    /// ([`crate::herd::peer_protocol::PeerInProtocol::resume`]).
    ResumeCatchUps,
    /// Close a connection (asyncio's `transport.close()`): one last flush of
    /// what is queued, FIN, and the slot is freed at the end of the turn.
    Close { conn: ConnRef, reason: CloseReason },
}

/// Timers the herd's protocols set (the payload of the loop's
/// `TimerEvent::Herd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HerdEvent {
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
}

/// Why a connection closed: every close is logged with one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client half-closed and has been sent everything it was owed.
    DoneAfterEof,
    /// The other side closed its sending half (or the whole connection).
    ClosedByPeer,
    LineTooLong,
    /// Among the largest holders of unfinished lines when the server's
    /// budget for them ran out.
    InputBudget,
    /// A client that does not read its replies.
    RepliesUnread,
    /// A neighbour that does not read what we send it.
    PeerBacklog,
    IdleTooLong,
    NoHelloInTime,
    SilentTooLong,
    /// The neighbour dialed us again; this older connection is dropped.
    Replaced,
    /// We refused the other side (the text says whom and why).
    Refused(String),
    /// The neighbour refused us (its reason, escaped).
    RefusedByNeighbour(String),
    /// Our link failed or timed out and is backing off.
    LinkFailed(String),
    /// A socket error.
    Io(String),
    /// The HTTP endpoint is done with a connection (the text says why).
    Http(&'static str),
    /// The server is stopping.
    Shutdown,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            CloseReason::DoneAfterEof => f.write_str("done after EOF"),
            CloseReason::ClosedByPeer => f.write_str("closed by the other side"),
            CloseReason::LineTooLong => f.write_str("line longer than 64 KiB"),
            CloseReason::InputBudget => {
                f.write_str("one of the largest unfinished lines when the server's budget ran out")
            }
            CloseReason::RepliesUnread => f.write_str("over 1 MiB of replies left unread"),
            CloseReason::PeerBacklog => f.write_str("peer output backlog over its bound"),
            CloseReason::IdleTooLong => f.write_str("idle too long"),
            CloseReason::NoHelloInTime => f.write_str("no HELLO in time"),
            CloseReason::SilentTooLong => f.write_str("silent too long"),
            CloseReason::Replaced => f.write_str("replaced by a new link from the same neighbour"),
            CloseReason::RefusedByNeighbour(why) => write!(f, "refused: {why}"),
            CloseReason::Refused(why) | CloseReason::LinkFailed(why) | CloseReason::Io(why) => {
                f.write_str(why)
            }
            CloseReason::Http(why) => f.write_str(why),
            CloseReason::Shutdown => f.write_str("server stopping"),
        }
    }
}

/// What every protocol handler is given: the herd's state, the clock, the
/// timer queue, the connection it runs for, and where to put its actions.
pub struct Ctx<'a> {
    pub herd: &'a mut Herd,
    pub timers: &'a mut dyn Schedule<HerdEvent>,
    /// The loop's clock (deadlines, idle and silence checks).
    pub now: Instant,
    /// The wall clock in nanoseconds since the epoch (AT time differences).
    pub now_ns: i128,
    /// The connection this handler runs for.
    pub me: ConnRef,
    pub actions: &'a mut Vec<Action>,
}

impl Ctx<'_> {
    /// Asks the loop to close this connection.
    pub fn close(&mut self, reason: CloseReason) {
        self.actions.push(Action::Close {
            conn: self.me,
            reason,
        });
    }
}
