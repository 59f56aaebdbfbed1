//! The peer protocol's two ends, sans-IO: [`PeerOutProtocol`] on the
//! connection we dial to a neighbour (we send HELLO, then our updates) and
//! [`PeerInProtocol`] on the connection a neighbour dials to us (it says
//! HELLO, then sends its updates). The messages are in
//! [`crate::protocol::peer`]; the link's state machine in [`super::link`];
//! the herd-secret proofs in [`super::auth`].
//!
//! Like [`super::client_protocol`], each end writes into its transport's
//! queue, schedules through [`Ctx::timers`] and returns [`Action`]s; the loop
//! (`event_loop/`) owns the sockets, the connect and the close.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::actions::{Action, CloseReason, Ctx, HerdEvent};
use super::auth::Role;
use super::link::LinkState;
use super::store::{client_field, EntryId};
use super::sync::{CatchUp, Incoming, Progress, MAX_REQUESTS_IN_FLIGHT};
use crate::log::Escaped;
use crate::log::Part::{self, Bytes, Num, Str};
use crate::protocol::peer::{self, PeerMessage, TreeNode, MAX_PEER_LINE};
use crate::transport::{LineReader, WriteTransport};

/// A dial or a greeting that takes longer than this failed.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(2);
/// Links send PING this often...
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// ...and a link silent this long is dead, even if TCP has not noticed.
pub const SILENCE: Duration = Duration::from_secs(5);
/// Past this much unsent output on a link, flooded updates wait in the
/// link's queue, coalesced by client, instead of in the transport: so what
/// waits for a slow neighbour is bounded by the number of clients, not by
/// the update rate (see docs/protocol.md, "Backpressure").
pub const COALESCE_ABOVE: usize = 1024 * 1024;
/// What one [`PeerOutProtocol::drained`] writes at most: a slice of the
/// catch-up or of the waiting updates (asyncio's `drain()` then `write`).
pub const SLICE: usize = 64 * 1024;
/// What we may owe a neighbour on its own connection to us (WELCOME,
/// REFUSED, PONGs, a catch-up's answers: at most
/// [`super::sync::MAX_REQUESTS_IN_FLIGHT`] of them, each at most about 11 KiB): one
/// that sends PINGs and never reads is dropped here.
pub const PEER_IN_BACKLOG: usize = 1024 * 1024;

/// Our dialed connection to a neighbour: we send, it answers.
#[derive(Debug)]
pub struct PeerOutProtocol {
    /// The connection's number in the log.
    pub id: u64,
    pub link: usize,
    lines: LineReader,
    /// The last time the neighbour said something, or acknowledged bytes
    /// (see [`PeerOutProtocol::took_some`]).
    last_heard: Instant,
    handshake: OutHandshake,
    /// This direction's catch-up, while it runs ([`sync::CatchUp`]).
    catch_up: Option<Box<CatchUp>>,
    /// Another catch-up is wanted once this one is over.
    again: bool,
    /// Whether the neighbour answers `TREE` (the counterparts do not).
    trees: Trees,
    /// PINGs sent and not yet answered.
    pings_in_flight: u32,
    /// Updates waiting for the socket to drain, coalesced by client: each
    /// entry is sent once, as the client's position when it goes out.
    waiting: VecDeque<EntryId>,
    queued: HashSet<EntryId>,
}

/// What the neighbour is known to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trees {
    Unknown {
        /// PINGs sent before our first `TREE /`: their PONGs say nothing.
        pongs_to_skip: u32,
    },
    Yes,
    No,
}

/// The herd-secret handshake, seen from the dialer.
#[derive(Debug, PartialEq, Eq)]
enum OutHandshake {
    /// No secret: a WELCOME is enough.
    Open,
    /// Our HELLO carried this nonce, which the CHALLENGE must prove.
    Sent { nonce: String },
    /// The neighbour proved it knows the secret.
    Verified,
}

/// A neighbour's connection to us: it sends, we answer.
#[derive(Debug)]
pub struct PeerInProtocol {
    pub id: u64,
    /// The neighbour, once its HELLO (and proof) is accepted.
    pub link: Option<usize>,
    lines: LineReader,
    last_heard: Instant,
    /// With a herd secret: our CHALLENGE to neighbour `link` carried `nonce`.
    challenged: Option<(usize, String)>,
    closed: bool,
    /// The catch-up the neighbour is sending us, counted for its summary.
    incoming: Incoming,
    /// `TREE` requests that wait (with their lines' lengths): for the state
    /// file's load, or for another neighbour's catch-up into this server.
    deferred: Vec<(TreeNode, usize)>,
}

/// Writes an update on our link (`link`, to `name`, connection `id`),
/// counted and logged. (Over the herd's parts, so that `at` may be a line
/// the store holds.)
fn send_update(
    log: &mut crate::log::Log,
    metrics: &mut crate::observe::Metrics,
    (link, name, id): (usize, &str, u64),
    at: &[u8],
    transport: &mut dyn WriteTransport,
) {
    peer::write_update(transport.out_buf(), at);
    metrics.flood_sent(link, at.len());
    log.line(&sent_line(name, id, at));
}

/// The log line for an update sent on our link to `name` (connection `id`).
fn sent_line<'a>(name: &'a str, id: u64, at: &'a [u8]) -> [Part<'a>; 6] {
    [
        Str("peer-out "),
        Str(name),
        Str("#"),
        Num(id),
        Str(" > "),
        Bytes(at),
    ]
}

impl PeerOutProtocol {
    /// A new dial for `link`; nothing is sent until the connect completes.
    pub fn new(id: u64, link: usize, now: Instant) -> Self {
        PeerOutProtocol {
            id,
            link,
            lines: LineReader::default(),
            last_heard: now,
            handshake: OutHandshake::Open,
            catch_up: None,
            again: false,
            trees: Trees::Unknown { pongs_to_skip: 0 },
            pings_in_flight: 0,
            waiting: VecDeque::new(),
            queued: HashSet::new(),
        }
    }

    /// asyncio's `connection_made`: the connect completed. Says HELLO (with
    /// a nonce when there is a herd secret) and waits for the WELCOME.
    pub fn connection_made(&mut self, ctx: &mut Ctx, transport: &mut dyn WriteTransport) {
        let link = self.link;
        if let LinkState::Dialing { timeout, .. } = ctx.herd.links[link].state {
            ctx.timers.cancel(timeout);
        }
        let mut hello = format!("HELLO {}", ctx.herd.name);
        if let Some(secret) = &ctx.herd.secret {
            match secret.nonce() {
                Ok(nonce) => {
                    hello = format!("{hello} {nonce}");
                    self.handshake = OutHandshake::Sent { nonce };
                }
                Err(e) => return self.fail(ctx, e),
            }
        }
        transport.write(hello.as_bytes());
        transport.write(b"\n");
        self.last_heard = ctx.now;
        let herd = &mut *ctx.herd;
        herd.log.event(format_args!(
            "peer-out {}#{} > {hello}",
            herd.links[link].name, self.id
        ));
        let timeout = ctx
            .timers
            .call_later(LINK_TIMEOUT, HerdEvent::LinkTimeout { link, conn: ctx.me });
        herd.links[link].set_state(
            LinkState::Greeting {
                conn: ctx.me,
                timeout,
            },
            "connected, HELLO sent",
            &mut herd.log,
        );
    }

    /// The neighbour's side of our link says little: CHALLENGE, WELCOME,
    /// REFUSED, PONG.
    pub fn data_received(
        &mut self,
        ctx: &mut Ctx,
        data: &[u8],
        transport: &mut dyn WriteTransport,
    ) {
        self.last_heard = ctx.now;
        let mut lines = std::mem::take(&mut self.lines);
        let mut done = false;
        let fed = lines.feed(data, MAX_PEER_LINE, |line| {
            if !done {
                done = self.line_received(ctx, line, transport);
            }
        });
        self.lines = lines;
        if fed.is_err() && !done {
            self.fail(ctx, CloseReason::LineTooLong.to_string());
        }
    }

    /// asyncio's `eof_received`: the neighbour closed our link.
    pub fn eof_received(&mut self, ctx: &mut Ctx) {
        self.fail(ctx, "closed by the neighbour".to_string());
    }

    /// asyncio's `connection_lost`: if this was the link's connection, the
    /// link backs off and will dial again.
    pub fn connection_lost(&mut self, ctx: &mut Ctx, reason: &CloseReason) {
        let link = self.link;
        if ctx.herd.links[link].state.conn() == Some(ctx.me) {
            let why = reason.to_string();
            ctx.herd.back_off(link, &why, ctx.timers);
        }
    }

    /// Handles one line; true when the connection is over.
    fn line_received(
        &mut self,
        ctx: &mut Ctx,
        line: &[u8],
        transport: &mut dyn WriteTransport,
    ) -> bool {
        let link = self.link;
        ctx.herd.metrics.peer_received(link, line.len());
        let message = peer::parse_peer_message(line);
        // A catch-up's answers are summed up in one line, not logged each.
        if !matches!(
            message,
            PeerMessage::Pong | PeerMessage::Blank | PeerMessage::Hashes { .. }
        ) {
            ctx.herd.log.event(format_args!(
                "peer-out {}#{} < {}",
                ctx.herd.links[link].name,
                self.id,
                Escaped(line)
            ));
        }
        match message {
            PeerMessage::Challenge { nonce, proof } => {
                match self.answer_challenge(ctx, nonce, proof, transport) {
                    Ok(()) => false,
                    Err(why) => {
                        self.fail(ctx, why);
                        true
                    }
                }
            }
            PeerMessage::Welcome { name } if name == ctx.herd.links[link].name.as_bytes() => {
                if ctx.herd.secret.is_some() && self.handshake != OutHandshake::Verified {
                    let why = "welcomed without proving the herd secret";
                    ctx.herd
                        .log
                        .event(format_args!("link {}: {why}", ctx.herd.links[link].name));
                    self.fail(ctx, why.to_string());
                    return true;
                }
                let herd = &mut *ctx.herd;
                if let LinkState::Greeting { timeout, conn } = herd.links[link].state {
                    if conn == ctx.me {
                        ctx.timers.cancel(timeout);
                        herd.links[link].failures = 0;
                        herd.metrics.links[link].ups += 1;
                        herd.links[link].set_state(
                            LinkState::Up { conn },
                            "WELCOME received",
                            &mut herd.log,
                        );
                        self.start_catch_up(ctx, transport);
                    }
                }
                false
            }
            PeerMessage::Refused { reason } => {
                ctx.close(CloseReason::RefusedByNeighbour(Escaped(reason).to_string()));
                true
            }
            PeerMessage::Pong => {
                ctx.herd.heartbeats_received += 1;
                self.pong_received(ctx);
                false
            }
            // The neighbour holds its answers for now, and speaks trees.
            PeerMessage::Wait => {
                self.trees = Trees::Yes;
                false
            }
            PeerMessage::Hashes { node, hashes } => {
                self.trees = Trees::Yes;
                let Some(c) = self.catch_up.as_mut() else {
                    self.fail(ctx, "HASHES with no catch-up running".to_string());
                    return true;
                };
                match c.on_answer(&ctx.herd.store, node, &hashes, transport.out_buf()) {
                    Ok(()) => false,
                    Err(e) => {
                        self.fail(ctx, e.to_string());
                        true
                    }
                }
            }
            PeerMessage::Blank => false,
            _ => {
                ctx.herd.log.event(format_args!(
                    "peer-out {}: unexpected line ignored",
                    ctx.herd.links[link].name
                ));
                false
            }
        }
    }

    /// The neighbour we dialed proves it knows the herd secret (its proof
    /// over our nonce) and challenges us to prove it too (over its nonce).
    fn answer_challenge(
        &mut self,
        ctx: &mut Ctx,
        nonce: &[u8],
        proof: &[u8],
        transport: &mut dyn WriteTransport,
    ) -> Result<(), String> {
        let herd = &mut *ctx.herd;
        let Some(secret) = herd.secret.as_ref() else {
            return Err("the neighbour asks for a herd secret we do not have".to_string());
        };
        let OutHandshake::Sent { nonce: ours } = &self.handshake else {
            return Err("unexpected CHALLENGE".to_string());
        };
        let name = &herd.links[self.link].name;
        let (me, them) = (herd.name.as_bytes(), name.as_bytes());
        if !secret.verify(Role::Acceptor, ours.as_bytes(), me, them, proof) {
            herd.log.event(format_args!(
                "link {name}: the neighbour failed to prove the herd secret"
            ));
            return Err("the neighbour failed to prove the herd secret".to_string());
        }
        let answer = secret.proof(Role::Dialer, nonce, me, them);
        transport.write(format!("PROOF {answer}\n").as_bytes());
        herd.log
            .event(format_args!("peer-out {name}#{} > PROOF {answer}", self.id));
        self.handshake = OutHandshake::Verified;
        Ok(())
    }

    /// Starts this direction's catch-up ([`sync`]): the first request now,
    /// the positions in slices as the socket drains ([`Self::drained`]).
    fn start_catch_up(&mut self, ctx: &mut Ctx, transport: &mut dyn WriteTransport) {
        // While the state file loads the store is incomplete: the load's end
        // starts every link's catch-up (Action::Resync from the loop).
        if ctx.herd.is_loading() {
            return;
        }
        let catch_up = match self.trees {
            Trees::No => CatchUp::plain(ctx.now),
            Trees::Unknown { .. } => {
                self.trees = Trees::Unknown {
                    pongs_to_skip: self.pings_in_flight,
                };
                CatchUp::start(&ctx.herd.store, ctx.now, transport.out_buf())
            }
            Trees::Yes => CatchUp::start(&ctx.herd.store, ctx.now, transport.out_buf()),
        };
        self.catch_up = Some(Box::new(catch_up));
        self.end_catch_up_if_done(ctx);
    }

    /// Something new arrived from elsewhere by a catch-up: this neighbour may
    /// lack it too, so catch up again (after the one running, if any).
    pub fn resync(&mut self, ctx: &mut Ctx, transport: &mut dyn WriteTransport) {
        if ctx.herd.links[self.link].up_conn() != Some(ctx.me) {
            return;
        }
        if self.catch_up.is_some() {
            self.again = true;
        } else {
            self.start_catch_up(ctx, transport);
        }
    }

    /// A PONG: with our first `TREE /` still unanswered, it answers a PING
    /// sent after it, so the neighbour ignored the request: it keeps the
    /// full catch-up (the counterparts do), and gets that instead.
    fn pong_received(&mut self, ctx: &mut Ctx) {
        self.pings_in_flight = self.pings_in_flight.saturating_sub(1);
        let Trees::Unknown { pongs_to_skip } = &mut self.trees else {
            return;
        };
        if *pongs_to_skip > 0 {
            *pongs_to_skip -= 1;
            return;
        }
        if self
            .catch_up
            .as_ref()
            .is_some_and(|c| c.awaits_first_answer())
        {
            self.trees = Trees::No;
            self.catch_up = Some(Box::new(CatchUp::plain(ctx.now)));
            ctx.herd.log.event(format_args!(
                "link {}: the neighbour does not answer TREE: sending every position",
                ctx.herd.links[self.link].name
            ));
        }
    }

    /// Logs a catch-up that is over, and starts the next one if one is wanted.
    fn end_catch_up_if_done(&mut self, ctx: &mut Ctx) {
        let Some(c) = self.catch_up.take_if(|c| c.is_done()) else {
            return;
        };
        let sent = c.sent(ctx.now);
        let herd = &mut *ctx.herd;
        herd.metrics.catch_up_sent(
            self.link,
            (sent.positions, sent.position_bytes),
            (sent.positions + sent.requests + 1, sent.bytes),
        );
        herd.log
            .event(format_args!("link {}: {sent}", herd.links[self.link].name));
    }

    /// Sends one flooded update. Behind a full socket it waits in the queue
    /// instead, coalesced with the client's later updates.
    pub fn send_update(&mut self, ctx: &mut Ctx, at: &[u8], transport: &mut dyn WriteTransport) {
        if !self.waiting.is_empty() || transport.get_write_buffer_size() > COALESCE_ABOVE {
            if let Some(id) = client_field(at).and_then(|c| ctx.herd.store.entry_id(c)) {
                if self.queued.insert(id) {
                    self.waiting.push_back(id);
                }
                return;
            }
        }
        self.write_update(ctx, at, transport);
    }

    fn write_update(&self, ctx: &mut Ctx, at: &[u8], transport: &mut dyn WriteTransport) {
        let herd = &mut *ctx.herd;
        let name = &herd.links[self.link].name;
        let (log, metrics) = (&mut herd.log, &mut herd.metrics);
        send_update(log, metrics, (self.link, name, self.id), at, transport);
    }

    /// asyncio's `drain()` returning: the socket has taken everything. Writes
    /// the next slice: the updates that waited first, then the catch-up's.
    /// True if it wrote something or has more to write (the loop then
    /// flushes and asks again, a few times a turn).
    pub fn drained(&mut self, ctx: &mut Ctx, transport: &mut dyn WriteTransport) -> bool {
        let before = transport.get_write_buffer_size();
        while transport.get_write_buffer_size() - before < SLICE {
            let Some(id) = self.waiting.pop_front() else {
                break;
            };
            self.queued.remove(&id);
            // The client's position now: what superseded the queued one.
            let herd = &mut *ctx.herd;
            if let Some(p) = herd.store.position_of(id) {
                let name = &herd.links[self.link].name;
                let (log, metrics) = (&mut herd.log, &mut herd.metrics);
                send_update(
                    log,
                    metrics,
                    (self.link, name, self.id),
                    p.at_line.0,
                    transport,
                );
            }
        }
        let written = transport.get_write_buffer_size() - before;
        let mut more = !self.waiting.is_empty();
        if !more && written < SLICE {
            if let Some(c) = self.catch_up.as_mut() {
                match c.next_slice(
                    &ctx.herd.store,
                    SLICE - written,
                    ctx.now,
                    transport.out_buf(),
                ) {
                    Progress::More => more = true,
                    Progress::Waiting => {}
                    Progress::Done => {
                        self.end_catch_up_if_done(ctx);
                        if std::mem::take(&mut self.again) {
                            self.start_catch_up(ctx, transport);
                        }
                    }
                }
            }
        }
        more || transport.get_write_buffer_size() > before
    }

    /// The socket, full until now, took some of what was queued: the
    /// neighbour acknowledged bytes, so it reads, however slowly, and is
    /// not silent.
    pub fn took_some(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// The heartbeat: PING, or drop a link that has made no progress (said
    /// nothing, taken nothing) for too long.
    pub fn heartbeat(&mut self, ctx: &mut Ctx, transport: &mut dyn WriteTransport) {
        if ctx.now.duration_since(self.last_heard) > SILENCE {
            ctx.close(CloseReason::SilentTooLong);
        } else if ctx.herd.links[self.link].up_conn() == Some(ctx.me) {
            transport.write(b"PING\n");
            self.pings_in_flight += 1;
            ctx.herd.heartbeats_sent += 1;
            ctx.herd.metrics.peer_sent(self.link, 4);
        }
    }

    /// The link's connect or greeting failed: close it, and back off.
    fn fail(&mut self, ctx: &mut Ctx, why: String) {
        ctx.close(CloseReason::LinkFailed(why));
    }
}

impl PeerInProtocol {
    /// asyncio's `connection_made`: someone dialed our peer port. It has
    /// [`LINK_TIMEOUT`] to say HELLO.
    pub fn connection_made(id: u64, addr: &dyn std::fmt::Display, ctx: &mut Ctx) -> Self {
        ctx.herd
            .log
            .event(format_args!("peer-in #{id} {addr} connected"));
        ctx.timers
            .call_later(LINK_TIMEOUT, HerdEvent::HelloTimeout { conn: ctx.me });
        PeerInProtocol {
            id,
            link: None,
            lines: LineReader::default(),
            last_heard: ctx.now,
            challenged: None,
            closed: false,
            incoming: Incoming::default(),
            deferred: Vec::new(),
        }
    }

    /// Updates from a neighbour: store what is new and flood it on.
    pub fn data_received(
        &mut self,
        ctx: &mut Ctx,
        data: &[u8],
        transport: &mut dyn WriteTransport,
    ) {
        if self.closed {
            return;
        }
        self.last_heard = ctx.now;
        let mut lines = std::mem::take(&mut self.lines);
        let fed = lines.feed(data, MAX_PEER_LINE, |line| {
            if !self.closed {
                if let Err(reason) = self.line_received(ctx, line, transport) {
                    self.close(ctx, reason);
                }
            }
        });
        self.lines = lines;
        if fed.is_err() {
            self.close(ctx, CloseReason::LineTooLong);
        } else if transport.get_write_buffer_size() > PEER_IN_BACKLOG {
            self.close(ctx, CloseReason::PeerBacklog);
        }
    }

    /// asyncio's `eof_received`: a last line without `\n` still counts.
    pub fn eof_received(&mut self, ctx: &mut Ctx, transport: &mut dyn WriteTransport) {
        let mut lines = std::mem::take(&mut self.lines);
        lines.finish(|line| {
            if !self.closed {
                if let Err(reason) = self.line_received(ctx, line, transport) {
                    self.close(ctx, reason);
                }
            }
        });
        self.close(ctx, CloseReason::ClosedByPeer);
    }

    /// Bytes of an unfinished line held for the next read.
    pub fn unfinished(&self) -> usize {
        self.lines.pending()
    }

    /// A catch-up's `TREE` request. It is answered at once, unless the
    /// state file is still loading (an answer from a half-loaded store
    /// would make the sender send what the file is about to bring) or
    /// another neighbour's catch-up is arriving (an empty server would get
    /// the whole store from every neighbour at once): then it waits, and
    /// the sender is told so (`WAIT`). The sender has at most 64 requests
    /// in flight; past that (a misbehaving neighbour) they are answered at
    /// once, which costs bytes, not correctness.
    fn tree_received(
        &mut self,
        ctx: &mut Ctx,
        node: TreeNode,
        len: usize,
        transport: &mut dyn WriteTransport,
    ) {
        let herd = &mut *ctx.herd;
        let other = herd.incoming_catch_up.is_some_and(|c| c != ctx.me);
        if (herd.is_loading() || other) && self.deferred.len() < MAX_REQUESTS_IN_FLIGHT {
            if self.deferred.is_empty() {
                transport.write(b"WAIT\n");
            }
            self.deferred.push((node, len));
            return;
        }
        if !herd.is_loading() {
            herd.incoming_catch_up.get_or_insert(ctx.me);
        }
        self.incoming
            .on_tree(&herd.store, node, len, ctx.now, transport.out_buf());
    }

    /// The state file has loaded, or another neighbour's catch-up has
    /// ended: the requests that waited are answered now, if it is this
    /// connection's turn.
    pub fn resume(&mut self, ctx: &mut Ctx, transport: &mut dyn WriteTransport) {
        let herd = &mut *ctx.herd;
        if self.deferred.is_empty()
            || herd.is_loading()
            || herd.incoming_catch_up.is_some_and(|c| c != ctx.me)
        {
            return;
        }
        herd.incoming_catch_up = Some(ctx.me);
        for (node, len) in std::mem::take(&mut self.deferred) {
            self.incoming
                .on_tree(&herd.store, node, len, ctx.now, transport.out_buf());
        }
    }

    /// This connection's incoming catch-up is over (or the connection is):
    /// another neighbour's may go on.
    fn end_incoming(&mut self, ctx: &mut Ctx) {
        if ctx.herd.incoming_catch_up == Some(ctx.me) {
            ctx.herd.incoming_catch_up = None;
            ctx.actions.push(Action::ResumeCatchUps);
        }
    }

    /// The HELLO timer came due: a connection that has not greeted is dropped.
    pub fn hello_timer(&mut self, ctx: &mut Ctx) {
        if self.link.is_none() {
            self.close(ctx, CloseReason::NoHelloInTime);
        }
    }

    /// The heartbeat: a neighbour silent for too long is gone.
    pub fn heartbeat(&mut self, ctx: &mut Ctx) {
        if ctx.now.duration_since(self.last_heard) > SILENCE {
            self.close(ctx, CloseReason::SilentTooLong);
        }
    }

    /// asyncio's `connection_lost`: the link from the neighbour is down.
    pub fn connection_lost(&mut self, ctx: &mut Ctx, reason: &CloseReason) {
        self.closed = true;
        let Some(link) = self.link else {
            return;
        };
        // A catch-up cut short may have brought something new all the same.
        if self.incoming.new_so_far() > 0 {
            ctx.actions.push(Action::Resync { except: Some(link) });
        }
        self.end_incoming(ctx);
        let l = &mut ctx.herd.links[link];
        if l.incoming == Some(ctx.me) {
            l.incoming = None;
            ctx.herd
                .log
                .event(format_args!("link from {}: down ({reason})", l.name));
        }
    }

    fn close(&mut self, ctx: &mut Ctx, reason: CloseReason) {
        if !self.closed {
            self.closed = true;
            ctx.close(reason);
        }
    }

    /// Refuses the other side: tells it why, and closes.
    fn refuse(
        transport: &mut dyn WriteTransport,
        said: &str,
        why: String,
    ) -> Result<(), CloseReason> {
        transport.write(b"REFUSED ");
        transport.write(said.as_bytes());
        transport.write(b"\n");
        Err(CloseReason::Refused(why))
    }

    /// One line from the neighbour; an error ends the connection.
    fn line_received(
        &mut self,
        ctx: &mut Ctx,
        line: &[u8],
        transport: &mut dyn WriteTransport,
    ) -> Result<(), CloseReason> {
        if let Some(l) = self.link {
            ctx.herd.metrics.peer_received(l, line.len());
        }
        // An update is the commonest message, and most are duplicates (a
        // flood reaches a server once per link into it): those cost a
        // lookup, with no parse beyond their client and time, and no copy.
        if let (Some(from), Some((client, time_ns))) = (self.link, peer::update_key(line)) {
            let herd = &mut *ctx.herd;
            if !herd.store.is_new(client, time_ns, line) {
                self.log_received(herd, line);
                herd.peer_update_known(from, client);
                return Ok(());
            }
            if peer::parse_canonical_update(line).is_some() {
                self.log_received(herd, line);
                if herd.peer_update_line(from, client, time_ns, line) {
                    ctx.actions.push(Action::Flood {
                        at: line.to_vec(),
                        from: Some(from),
                    });
                }
                return Ok(());
            }
        }
        // A catch-up's positions, likewise (not logged one by one).
        if let (Some(_), Some(at)) = (self.link, line.strip_prefix(b"SYNC ")) {
            if let Some((client, time_ns)) = peer::update_key(at) {
                let herd = &mut *ctx.herd;
                let known = !herd.store.is_new(client, time_ns, at);
                if known || peer::parse_canonical_update(at).is_some() {
                    let new = !known && herd.catch_up_line(client, time_ns, at);
                    self.incoming.on_sync(line.len(), new, ctx.now);
                    return Ok(());
                }
            }
        }
        let message = peer::parse_peer_message(line);
        let herd = &mut *ctx.herd;
        // A catch-up is summed up in one line when it ends, not logged each.
        if !matches!(
            message,
            PeerMessage::Ping
                | PeerMessage::Blank
                | PeerMessage::Tree { .. }
                | PeerMessage::Sync(_)
                | PeerMessage::Synced { .. }
        ) {
            self.log_received(herd, line);
        }
        match (message, self.link) {
            (PeerMessage::Update(update), Some(from)) => {
                if herd.peer_update(from, &update) {
                    ctx.actions.push(Action::Flood {
                        at: update.at_line,
                        from: Some(from),
                    });
                }
            }
            (PeerMessage::Ping, Some(l)) => {
                herd.heartbeats_received += 1;
                transport.write(b"PONG\n");
                herd.metrics.peer_sent(l, 4);
            }
            (PeerMessage::Tree { node }, Some(_)) => {
                self.tree_received(ctx, node, line.len(), transport);
            }
            (PeerMessage::Sync(update), Some(_)) => {
                // Stored, not flooded on: what the catch-up brought goes to
                // the other neighbours by their catch-ups (docs/protocol.md).
                let new = herd.catch_up_update(&update);
                self.incoming.on_sync(line.len(), new, ctx.now);
            }
            (PeerMessage::Synced { positions }, Some(from)) => {
                let r = self.incoming.on_synced(positions, line.len(), ctx.now);
                herd.metrics
                    .catch_up_received(from, r.positions as usize, r.bytes as usize);
                herd.log
                    .event(format_args!("link from {}: {r}", herd.links[from].name));
                if r.new > 0 {
                    ctx.actions.push(Action::Resync { except: Some(from) });
                }
                self.end_incoming(ctx);
            }
            (PeerMessage::Blank, _) => {}
            (PeerMessage::Hello { name, nonce }, None) => {
                let Some(l) = herd.link_named(name) else {
                    let why = format!("refused HELLO from {}: not a neighbour", Escaped(name));
                    return Self::refuse(transport, "not a neighbour", why);
                };
                // Over TLS, a herd certificate speaks only for its own name.
                let claimed = &herd.links[l].name;
                if let Err(e) = transport.check_peer_name(claimed) {
                    let why = format!("refused HELLO from {claimed}: {e}");
                    return Self::refuse(transport, &format!("certificate not for {claimed}"), why);
                }
                if self.challenged.is_some() {
                    return Self::refuse(transport, "PROOF expected", "a second HELLO".into());
                }
                match (&herd.secret, nonce) {
                    (None, _) => self.greeted(ctx, l, transport),
                    (Some(_), None) => {
                        let why = format!(
                            "refused HELLO from {}: no proof of the herd secret offered",
                            Escaped(name)
                        );
                        return Self::refuse(transport, "herd secret required", why);
                    }
                    (Some(secret), Some(theirs)) => {
                        let ours = secret.nonce().map_err(CloseReason::Io)?;
                        let proof =
                            secret.proof(Role::Acceptor, theirs, name, herd.name.as_bytes());
                        transport.write(format!("CHALLENGE {ours} {proof}\n").as_bytes());
                        self.challenged = Some((l, ours));
                    }
                }
            }
            (PeerMessage::Proof { proof }, None) => {
                let Some((l, nonce)) = self.challenged.take() else {
                    return Self::refuse(transport, "HELLO expected", "PROOF before HELLO".into());
                };
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
                    let why = format!(
                        "refused HELLO from {}: bad proof of the herd secret",
                        herd.links[l].name
                    );
                    return Self::refuse(transport, "bad proof of the herd secret", why);
                }
                self.greeted(ctx, l, transport);
            }
            (_, None) => return Self::refuse(transport, "HELLO expected", "no HELLO".into()),
            (_, Some(l)) => herd.log.event(format_args!(
                "peer-in {}#{}: invalid line ignored",
                herd.links[l].name, self.id
            )),
        }
        Ok(())
    }

    /// Logs a line received from the neighbour.
    fn log_received(&self, herd: &mut super::Herd, line: &[u8]) {
        let name = self.link.map_or("?", |l| herd.links[l].name.as_str());
        herd.log.line(&[
            Str("peer-in "),
            Str(name),
            Str("#"),
            Num(self.id),
            Str(" < "),
            Bytes(line),
        ]);
    }

    /// The neighbour on `link` is accepted: WELCOME it, make this its link
    /// to us, and, if our link to it is waiting out a backoff, dial now (the
    /// neighbour is evidently back).
    fn greeted(&mut self, ctx: &mut Ctx, link: usize, transport: &mut dyn WriteTransport) {
        let herd = &mut *ctx.herd;
        transport.write(format!("WELCOME {}\n", herd.name).as_bytes());
        self.link = Some(link);
        let l = &mut herd.links[link];
        if let Some(old) = l.incoming.replace(ctx.me) {
            if old != ctx.me {
                ctx.actions.push(Action::Close {
                    conn: old,
                    reason: CloseReason::Replaced,
                });
            }
        }
        herd.log.event(format_args!("link from {}: up", l.name));
        if let LinkState::Backoff { timer } = l.state {
            ctx.timers.cancel(timer);
            l.failures = 0;
            herd.log.event(format_args!(
                "link {}: HELLO from it, dialing back now",
                l.name
            ));
            ctx.actions.push(Action::Dial { link });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn_ref::ConnRef;
    use crate::herd::auth::Secret;
    use crate::herd::testing::{World, ME};
    use crate::herd::Limits;

    const THEM: ConnRef = ConnRef { key: 9, gen: 4 };

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    fn closes(actions: &[Action]) -> Vec<CloseReason> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Close { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .collect()
    }

    /// Riley (dialing Jaquez) and Jaquez (accepting Riley), each with its
    /// protocol end, connected in memory.
    struct Pair {
        riley: World,
        jaquez: World,
        out: PeerOutProtocol,
        inn: PeerInProtocol,
        /// Bytes Riley queued for Jaquez, and back.
        to_jaquez: Vec<u8>,
        to_riley: Vec<u8>,
    }

    impl Pair {
        fn new(secret: Option<(&[u8], &[u8])>) -> Pair {
            let mut riley = World::new("Riley", &["Jaquez"], Limits::default());
            let mut jaquez = World::new("Jaquez", &["Riley", "Bernard"], Limits::default());
            if let Some((a, b)) = secret {
                riley.herd.secret = Secret::new(a).ok();
                jaquez.herd.secret = Secret::new(b).ok();
            }
            riley.with(ME, |ctx| ctx.herd.dialing(0, ME, ctx.timers));
            let mut out = PeerOutProtocol::new(1, 0, riley.now);
            let mut to_jaquez = Vec::new();
            riley.with(ME, |ctx| out.connection_made(ctx, &mut to_jaquez));
            let inn = jaquez.with(THEM, |ctx| {
                PeerInProtocol::connection_made(2, &"riley", ctx)
            });
            Pair {
                riley,
                jaquez,
                out,
                inn,
                to_jaquez,
                to_riley: Vec::new(),
            }
        }

        /// Delivers what each side queued until neither has anything to say.
        fn pump(&mut self) {
            for _ in 0..10 {
                if self.to_jaquez.is_empty() && self.to_riley.is_empty() {
                    return;
                }
                let bytes = std::mem::take(&mut self.to_jaquez);
                let (inn, back) = (&mut self.inn, &mut self.to_riley);
                self.jaquez
                    .with(THEM, |ctx| inn.data_received(ctx, &bytes, back));
                let bytes = std::mem::take(&mut self.to_riley);
                let (out, fwd) = (&mut self.out, &mut self.to_jaquez);
                self.riley.with(ME, |ctx| {
                    out.data_received(ctx, &bytes, fwd);
                    // As the loop does when the socket has taken everything.
                    if fwd.is_empty() {
                        out.drained(ctx, fwd);
                    }
                });
            }
            panic!("the two ends never went quiet");
        }
    }

    #[test]
    fn hello_welcome_brings_the_link_up_and_the_catch_up_follows() {
        let mut p = Pair::new(None);
        assert!(p.riley.herd.store.update(
            b"kiwi",
            1_500_000_000,
            b"AT Riley +0.263873386 kiwi +34.068930-118.445127 1.5",
        ));
        assert_eq!(text(&p.to_jaquez), "HELLO Riley\n");
        assert!(matches!(
            p.riley.herd.links[0].state,
            LinkState::Greeting { .. }
        ));
        p.pump();
        assert_eq!(p.riley.herd.links[0].up_conn(), Some(ME));
        assert_eq!(p.jaquez.herd.links[0].incoming, Some(THEM));
        // The catch-up reached Jaquez, which stored it and would catch up
        // its other neighbours (Jaquez never dialed Riley, so the HELLO also
        // makes it dial back).
        assert!(p.jaquez.herd.store.get(b"kiwi").is_some());
        let actions = p.jaquez.take_actions();
        assert_eq!(
            actions,
            vec![
                Action::Dial { link: 0 },
                Action::Resync { except: Some(0) },
                // (its incoming catch-up is over: another may go on)
                Action::ResumeCatchUps
            ]
        );
        assert!(p.out.catch_up.is_none(), "the catch-up is over");
        // The dial's and the greeting's timeouts were cancelled.
        let due = p.riley.advance(LINK_TIMEOUT * 2);
        assert!(due.is_empty(), "{due:?}");
    }

    #[test]
    fn an_update_floods_on_once_and_its_duplicate_costs_a_lookup() {
        let mut w = World::new("Jaquez", &["Riley", "Bernard"], Limits::default());
        let mut inn = w.with(THEM, |ctx| PeerInProtocol::connection_made(2, &"x", ctx));
        let mut out = Vec::new();
        w.with(THEM, |ctx| {
            inn.data_received(ctx, b"HELLO Riley\n", &mut out)
        });
        w.take_actions();
        let at = b"AT Riley +0.100000000 kiwi +1+1 1\n";
        w.with(THEM, |ctx| inn.data_received(ctx, at, &mut out));
        assert_eq!(
            w.take_actions(),
            vec![Action::Flood {
                at: at[..at.len() - 1].to_vec(),
                from: Some(0)
            }]
        );
        w.with(THEM, |ctx| inn.data_received(ctx, at, &mut out));
        assert!(w.take_actions().is_empty(), "a duplicate goes no further");
        // A line a neighbour spaced oddly takes the full path, as before.
        w.with(THEM, |ctx| {
            inn.data_received(ctx, b"AT  Riley +0.100000000 kiwi +1+1 2\n", &mut out)
        });
        assert_eq!(
            w.take_actions(),
            vec![Action::Flood {
                at: b"AT Riley +0.100000000 kiwi +1+1 2".to_vec(),
                from: Some(0)
            }]
        );
        assert_eq!(
            w.herd.store.get(b"kiwi").map(|p| p.at_line.0.to_vec()),
            Some(b"AT Riley +0.100000000 kiwi +1+1 2".to_vec())
        );
    }

    #[test]
    fn while_the_state_file_loads_catch_ups_wait_for_it() {
        let dir = std::env::temp_dir().join(format!("proxy-herd-peer-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state");
        let mut records = Vec::new();
        crate::herd::state::write_record(&mut records, b"AT Riley +0.100000000 kiwi +1+1 1");
        std::fs::write(&path, records).unwrap();
        let mut w = World::new("Jaquez", &["Riley"], Limits::default());
        w.herd.state = Some(crate::herd::state::StateFile::open_for_loading(&path).unwrap());
        assert!(w.herd.is_loading());
        // As the acceptor: a TREE waits for the load.
        let mut inn = w.with(THEM, |ctx| PeerInProtocol::connection_made(2, &"x", ctx));
        let mut out = Vec::new();
        w.with(THEM, |ctx| {
            inn.data_received(ctx, b"HELLO Riley\nTREE /\n", &mut out)
        });
        assert_eq!(text(&out), "WELCOME Jaquez\nWAIT\n");
        // As the dialer: the WELCOME starts no catch-up yet.
        w.with(ME, |ctx| ctx.herd.dialing(0, ME, ctx.timers));
        let mut o = PeerOutProtocol::new(1, 0, w.now);
        let mut sent = Vec::new();
        w.with(ME, |ctx| o.connection_made(ctx, &mut sent));
        w.with(ME, |ctx| {
            o.data_received(ctx, b"WELCOME Riley\n", &mut sent)
        });
        assert_eq!(text(&sent), "HELLO Jaquez\n");
        // The load ends: the answer goes out, from the whole store, and the
        // loop's resync starts the catch-up.
        assert!(!w.herd.state_step(1 << 20));
        assert!(w.herd.store.get(b"kiwi").is_some());
        let mut out = Vec::new();
        w.with(THEM, |ctx| inn.resume(ctx, &mut out));
        assert!(text(&out).starts_with("HASHES / "), "{}", text(&out));
        w.with(ME, |ctx| o.resync(ctx, &mut sent));
        assert_eq!(text(&sent), "HELLO Jaquez\nTREE /\n");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn catch_ups_into_a_server_are_answered_one_neighbour_at_a_time() {
        const OTHER: ConnRef = ConnRef { key: 10, gen: 5 };
        let mut w = World::new("Jaquez", &["Riley", "Bernard"], Limits::default());
        let mut riley = w.with(THEM, |ctx| PeerInProtocol::connection_made(2, &"x", ctx));
        let mut bernard = w.with(OTHER, |ctx| PeerInProtocol::connection_made(3, &"y", ctx));
        let (mut to_riley, mut to_bernard) = (Vec::new(), Vec::new());
        w.with(THEM, |ctx| {
            riley.data_received(ctx, b"HELLO Riley\nTREE /\n", &mut to_riley)
        });
        w.with(OTHER, |ctx| {
            bernard.data_received(ctx, b"HELLO Bernard\nTREE /\n", &mut to_bernard)
        });
        assert!(text(&to_riley).contains("HASHES / "), "{}", text(&to_riley));
        assert_eq!(text(&to_bernard), "WELCOME Jaquez\nWAIT\n");
        // Riley's catch-up ends: Bernard's goes on, against what Riley brought.
        w.take_actions();
        w.with(THEM, |ctx| {
            riley.data_received(ctx, b"SYNCED 0\n", &mut to_riley)
        });
        assert!(w.take_actions().contains(&Action::ResumeCatchUps));
        w.with(OTHER, |ctx| bernard.resume(ctx, &mut to_bernard));
        assert!(text(&to_bernard).ends_with("\n") && text(&to_bernard).contains("HASHES / "));
        // And a dialer told to WAIT knows its neighbour speaks trees.
        let mut p = Pair::new(None);
        p.pump();
        let (o, r) = (&mut p.out, &mut p.riley);
        r.with(ME, |ctx| o.data_received(ctx, b"WAIT\n", &mut Vec::new()));
        assert_eq!(o.trees, Trees::Yes);
    }

    #[test]
    fn a_stranger_is_refused() {
        let mut w = World::new("Jaquez", &["Riley"], Limits::default());
        let mut inn = w.with(THEM, |ctx| PeerInProtocol::connection_made(2, &"x", ctx));
        let mut out = Vec::new();
        w.with(THEM, |ctx| {
            inn.data_received(ctx, b"HELLO Mallory\n", &mut out)
        });
        assert_eq!(text(&out), "REFUSED not a neighbour\n");
        let reasons = closes(&w.take_actions());
        assert_eq!(
            reasons,
            vec![CloseReason::Refused(
                "refused HELLO from Mallory: not a neighbour".into()
            )]
        );
        // A client line on the peer port is refused the same way.
        let mut inn = w.with(THEM, |ctx| PeerInProtocol::connection_made(3, &"x", ctx));
        let mut out = Vec::new();
        w.with(THEM, |ctx| {
            inn.data_received(ctx, b"IAMAT a +1+1 1\n", &mut out)
        });
        assert_eq!(text(&out), "REFUSED HELLO expected\n");
    }

    #[test]
    fn a_hello_from_a_neighbour_we_back_off_from_makes_us_dial_now() {
        let mut w = World::new("Jaquez", &["Riley"], Limits::default());
        w.with(ME, |ctx| ctx.herd.back_off(0, "test", ctx.timers));
        let mut inn = w.with(THEM, |ctx| PeerInProtocol::connection_made(2, &"x", ctx));
        let mut out = Vec::new();
        w.with(THEM, |ctx| {
            inn.data_received(ctx, b"HELLO Riley\n", &mut out)
        });
        assert_eq!(text(&out), "WELCOME Jaquez\n");
        assert_eq!(w.take_actions(), vec![Action::Dial { link: 0 }]);
        // The backoff's redial was cancelled: only the HELLO timeout is left.
        let due = w.advance(Duration::from_secs(60));
        assert_eq!(due, vec![HerdEvent::HelloTimeout { conn: THEM }]);
    }

    #[test]
    fn a_neighbour_that_pings_and_never_reads_is_dropped() {
        let mut w = World::new("Jaquez", &["Riley"], Limits::default());
        let mut inn = w.with(THEM, |ctx| PeerInProtocol::connection_made(2, &"x", ctx));
        let mut out = Vec::new();
        w.with(THEM, |ctx| {
            inn.data_received(ctx, b"HELLO Riley\n", &mut out)
        });
        let pings = b"PING\n".repeat(PEER_IN_BACKLOG / 5 + 10);
        w.with(THEM, |ctx| inn.data_received(ctx, &pings, &mut out));
        assert_eq!(closes(&w.take_actions()), vec![CloseReason::PeerBacklog]);
        assert!(
            out.len() <= PEER_IN_BACKLOG + 5 * 4096,
            "the queue stayed bounded"
        );
    }

    #[test]
    fn silence_drops_a_link_and_the_heartbeat_pings_otherwise() {
        let mut p = Pair::new(None);
        p.pump();
        p.riley.take_actions();
        p.riley.advance(HEARTBEAT);
        let mut out = Vec::new();
        let (o, r) = (&mut p.out, &mut p.riley);
        r.with(ME, |ctx| o.heartbeat(ctx, &mut out));
        assert_eq!(text(&out), "PING\n");
        p.riley.advance(SILENCE);
        let (o, r) = (&mut p.out, &mut p.riley);
        r.with(ME, |ctx| o.heartbeat(ctx, &mut out));
        assert_eq!(
            closes(&p.riley.take_actions()),
            vec![CloseReason::SilentTooLong]
        );
        // Losing the connection backs the link off.
        let (o, r) = (&mut p.out, &mut p.riley);
        r.with(ME, |ctx| {
            o.connection_lost(ctx, &CloseReason::SilentTooLong)
        });
        assert!(matches!(
            p.riley.herd.links[0].state,
            LinkState::Backoff { .. }
        ));
    }

    #[test]
    fn behind_a_full_socket_updates_wait_coalesced_by_client() {
        let mut p = Pair::new(None);
        p.pump();
        p.riley.take_actions();
        let mut stuck = vec![0u8; COALESCE_ABOVE + 1];
        let (o, r) = (&mut p.out, &mut p.riley);
        for t in 1..=1000 {
            let client = format!("c{}", t % 10);
            let at = format!("AT Riley +0.1 {client} +1+1 {t}");
            r.herd
                .store
                .update(client.as_bytes(), t * 1_000_000_000, at.as_bytes());
            r.with(ME, |ctx| o.send_update(ctx, at.as_bytes(), &mut stuck));
        }
        // Nothing was written behind the full socket, nothing was dropped.
        assert_eq!(stuck.len(), COALESCE_ABOVE + 1);
        assert!(r.take_actions().is_empty());
        // Once it drains, each client goes out once, at its newest.
        let mut out = Vec::new();
        r.with(ME, |ctx| assert!(o.drained(ctx, &mut out)));
        let sent = text(&out);
        assert_eq!(sent.lines().count(), 10, "{sent}");
        assert!(sent.contains("c0 +1+1 1000\n") && sent.contains("c1 +1+1 991\n"));
        r.with(ME, |ctx| assert!(!o.drained(ctx, &mut Vec::new())));
    }

    #[test]
    fn drained_goes_on_while_the_catch_up_has_leaves_to_walk() {
        let mut p = Pair::new(None);
        p.pump();
        let (o, r) = (&mut p.out, &mut p.riley);
        r.with(ME, |ctx| o.resync(ctx, &mut Vec::new()));
        o.trees = Trees::No;
        o.catch_up = Some(Box::new(CatchUp::plain(r.now)));
        let mut rounds = 0;
        r.with(ME, |ctx| {
            while o.drained(ctx, &mut Vec::new()) {
                rounds += 1;
            }
        });
        // 65,536 leaves, at most 4,096 a slice, even with nothing to send.
        assert_eq!(rounds, 16);
    }

    #[test]
    fn a_neighbour_that_ignores_tree_gets_every_position_as_updates() {
        // Riley dials a counterpart (asyncio's herd keeps the full catch-up):
        // it ignores TREE / and answers the next PING.
        let mut p = Pair::new(None);
        assert!(p
            .riley
            .herd
            .store
            .update(b"kiwi", 1_000_000_000, b"AT Riley +0.1 kiwi +1+1 1"));
        let (o, r) = (&mut p.out, &mut p.riley);
        let mut out = Vec::new();
        r.with(ME, |ctx| {
            o.data_received(ctx, b"WELCOME Jaquez\n", &mut out)
        });
        assert_eq!(text(&out), "TREE /\n");
        r.with(ME, |ctx| o.heartbeat(ctx, &mut out));
        r.with(ME, |ctx| o.data_received(ctx, b"PONG\n", &mut out));
        let mut out = Vec::new();
        r.with(ME, |ctx| while o.drained(ctx, &mut out) {});
        assert_eq!(text(&out), "AT Riley +0.1 kiwi +1+1 1\n");
        assert!(o.catch_up.is_none());
    }

    #[test]
    fn the_herd_secret_handshake_succeeds_with_the_same_secret_only() {
        let mut p = Pair::new(Some((b"s3cret", b"s3cret")));
        assert!(text(&p.to_jaquez).starts_with("HELLO Riley "));
        p.pump();
        assert_eq!(p.riley.herd.links[0].up_conn(), Some(ME));
        assert_eq!(p.jaquez.herd.links[0].incoming, Some(THEM));

        let mut p = Pair::new(Some((b"s3cret", b"other")));
        p.pump();
        assert_eq!(p.riley.herd.links[0].up_conn(), None);
        assert_eq!(p.jaquez.herd.links[0].incoming, None);
        let refused = closes(&p.riley.take_actions());
        assert!(
            matches!(&refused[..], [CloseReason::LinkFailed(why)] if why.contains("failed to prove")),
            "{refused:?}"
        );
    }
}
