//! Client connections: asyncio's `Protocol` for the client port.
//!
//! `connection_made` ([`EventLoop::client_made`]), `data_received`
//! ([`EventLoop::client_data_received`]), the reply queue that keeps request
//! order ([`Replies`]), and the write side (`client_flush`). What a line
//! means is decided by [`crate::herd::Herd::client_line`]; this file owns the
//! client sockets.

use super::*;
use crate::places::google_json::error_json;

/// At most this many WHATSATs may wait for Places on one connection.
pub(super) const MAX_WAITING_PLACES: usize = 64;

/// A client connection: asyncio's protocol instance plus its transport.
pub(super) struct ClientConn {
    pub(super) id: u64,
    pub(super) addr: SocketAddr,
    pub(super) lines: LineReader,
    pub(super) replies: Replies,
    /// The client closed its sending side; close when nothing more is owed.
    pub(super) eof: bool,
    pub(super) last_active: Instant,
}

/// A client's replies, kept in request order: a reply that comes after a
/// WHATSAT waiting for Places waits behind it.
pub(super) struct Replies {
    pub(super) transport: Transport,
    pub(super) held: VecDeque<Held>,
    /// How many of `held` are WHATSATs still waiting for Places.
    waiting: usize,
    /// Bytes of ready replies in `held`: they count towards the backlog limit.
    held_bytes: usize,
}

pub(super) enum Held {
    Ready(Vec<u8>),
    Places(u64),
}

impl Replies {
    pub(super) fn new(transport: Transport) -> Self {
        Replies {
            transport,
            held: VecDeque::new(),
            waiting: 0,
            held_bytes: 0,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        if self.held.is_empty() {
            self.transport.write(bytes);
        } else {
            self.held_bytes += bytes.len();
            self.held.push_back(Held::Ready(bytes.to_vec()));
        }
    }

    /// Keeps a place, in order, for the answer to Places request `id`.
    fn hold(&mut self, id: u64) {
        self.waiting += 1;
        self.held.push_back(Held::Places(id));
    }

    /// Bytes owed to the client and not yet taken by the socket, held
    /// replies included: what the 1 MiB limit is about.
    pub(super) fn unsent(&self) -> usize {
        self.transport.backlog() + self.held_bytes
    }

    /// The answer to Places request `id` arrived: release what it held up.
    fn fulfil(&mut self, id: u64, bytes: Vec<u8>) {
        if let Some(slot) = self
            .held
            .iter_mut()
            .find(|h| matches!(h, Held::Places(r) if *r == id))
        {
            self.waiting -= 1;
            self.held_bytes += bytes.len();
            *slot = Held::Ready(bytes);
        }
        while let Some(Held::Ready(_)) = self.held.front() {
            if let Some(Held::Ready(bytes)) = self.held.pop_front() {
                self.held_bytes -= bytes.len();
                self.transport.write(&bytes);
            }
        }
    }

    fn owed(&self) -> bool {
        !self.held.is_empty() || self.transport.backlog() > 0
    }
}

/// One client line: log it, let the herd decide, queue the reply in order, and
/// note the floods and Places requests for the loop.
pub(super) fn client_line_received(
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
            herd.metrics.reply(&bytes);
            let shown = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
            herd.log.line(&client(" > ", shown));
            replies.send(&bytes);
        }
        ClientAction::ReplyAndFlood(mut at) => {
            herd.metrics.replies_at += 1;
            herd.log.line(&client(" > ", &at));
            at.push(b'\n');
            replies.send(&at);
            at.pop();
            effects.floods.push((at, None));
        }
        ClientAction::FetchPlaces(query) if replies.waiting >= MAX_WAITING_PLACES => {
            // A client may not queue Places requests without end: past the
            // limit it gets the error answer at once (still in order).
            herd.metrics.replies_whatsat += 1;
            herd.metrics.places_refused += 1;
            herd.log.line(&client(" > ", &query.at_line));
            let mut bytes = query.at_line;
            bytes.push(b'\n');
            bytes.extend_from_slice(
                error_json(
                    "too many WHATSATs waiting for Places on this connection",
                    "UNKNOWN_ERROR",
                )
                .as_bytes(),
            );
            replies.send(&bytes);
        }
        ClientAction::FetchPlaces(query) => {
            *next_request += 1;
            replies.hold(*next_request);
            effects.places.push((me, id, *next_request, query));
        }
    }
}

impl EventLoop {
    /// asyncio's `connection_made` for a client.
    pub(super) fn client_made(&mut self, stream: TcpStream, addr: SocketAddr) {
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
                replies: Replies::new(transport),
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

    pub(super) fn client_ready(&mut self, key: usize, readable: bool, writable: bool) {
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
    pub(super) fn client_data_received(&mut self, key: usize) {
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
                    if replies.unsent() > MAX_BACKLOG {
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

    /// Writes what a client is owed; closes it once it has half-closed and
    /// nothing more is owed.
    pub(super) fn client_flush(&mut self, key: usize) {
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

    pub(super) fn client_idle(&mut self, conn: ConnRef, now: Instant) {
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

    pub(super) fn deliver_answer(&mut self, client: ConnRef, request: u64, bytes: Vec<u8>) {
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
            self.herd.metrics.replies_whatsat += 1;
            c.replies.fulfil(request, bytes);
            if c.replies.unsent() > MAX_BACKLOG {
                self.close(client.key, "over 1 MiB of replies left unread");
                return;
            }
        }
        self.client_flush(client.key);
    }
}
