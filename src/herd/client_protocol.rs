//! [`ClientProtocol`]: asyncio's `Protocol` for one connection on the client
//! port, sans-IO.
//!
//! It splits the bytes it is given into lines, lets the herd decide what
//! each means ([`Herd::client_line`]), and keeps the replies in request
//! order (`Replies`): a reply that comes after a WHATSAT waiting for Places
//! waits behind it. Replies go into the transport's queue; floods and Places
//! requests come back as [`Action`]s. The loop (`event_loop/`) owns the socket
//! and calls the methods named after asyncio's: `connection_made`,
//! `data_received`, `eof_received`, `connection_lost`, plus
//! `answer_received` for a Places answer and `idle_timer` for the idle
//! timeout.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::actions::{Action, CloseReason, Ctx, HerdEvent};
use super::{ClientAction, Herd};
use crate::log::Escaped;
use crate::log::Part::{Bytes, Num, Str};
use crate::places::google_json::error_json;
use crate::protocol::client::{MAX_BACKLOG, MAX_LINE};
use crate::transport::{LineReader, WriteTransport};

/// At most this many WHATSATs may wait for Places on one connection.
pub const MAX_WAITING_PLACES: usize = 64;

/// The client port's protocol state for one connection.
#[derive(Debug)]
pub struct ClientProtocol {
    /// The connection's number in the log (`client#ID`).
    pub id: u64,
    lines: LineReader,
    replies: Replies,
    /// The client closed its sending side; close once nothing more is owed.
    eof: bool,
    /// A limit was broken and a close asked for: ignore what follows.
    closed: bool,
    last_active: Instant,
}

/// A client's replies not yet in the transport, kept in request order.
#[derive(Debug, Default)]
struct Replies {
    held: VecDeque<Held>,
    /// How many of `held` are WHATSATs still waiting for Places.
    waiting: usize,
    /// Bytes of ready replies in `held`: they count towards the backlog limit.
    held_bytes: usize,
}

#[derive(Debug)]
enum Held {
    Ready(Vec<u8>),
    Places(u64),
}

impl Replies {
    fn send(&mut self, transport: &mut dyn WriteTransport, bytes: &[u8]) {
        if self.held.is_empty() {
            transport.write(bytes);
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

    /// The answer to Places request `id` arrived: release what it held up.
    fn fulfil(&mut self, transport: &mut dyn WriteTransport, id: u64, bytes: Vec<u8>) {
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
                transport.write(&bytes);
            }
        }
    }
}

impl ClientProtocol {
    /// asyncio's `connection_made`: a client connected from `addr`.
    pub fn connection_made(id: u64, addr: &dyn std::fmt::Display, ctx: &mut Ctx) -> Self {
        ctx.herd
            .log
            .event(format_args!("client#{id} {addr} connected"));
        if let Some(idle) = ctx.herd.limits.idle_timeout {
            ctx.timers
                .call_later(idle, HerdEvent::ClientIdle { conn: ctx.me });
        }
        ClientProtocol {
            id,
            lines: LineReader::default(),
            replies: Replies::default(),
            eof: false,
            closed: false,
            last_active: ctx.now,
        }
    }

    /// asyncio's `data_received`: every complete line in `data` is handled in
    /// order; the partial last one waits for more.
    pub fn data_received(
        &mut self,
        ctx: &mut Ctx,
        data: &[u8],
        transport: &mut dyn WriteTransport,
    ) {
        if self.closed {
            return;
        }
        self.last_active = ctx.now;
        let ClientProtocol {
            id, lines, replies, ..
        } = self;
        let fed = lines.feed(data, MAX_LINE, |line| {
            line_received(ctx, *id, replies, transport, line)
        });
        if fed.is_err() {
            self.close(ctx, CloseReason::LineTooLong);
        } else {
            self.check_backlog(ctx, transport);
        }
    }

    /// asyncio's `eof_received`: the client half-closed. A last line without
    /// `\n` is still a line; the connection closes once nothing is owed.
    pub fn eof_received(&mut self, ctx: &mut Ctx, transport: &mut dyn WriteTransport) {
        if self.closed {
            return;
        }
        let ClientProtocol {
            id, lines, replies, ..
        } = self;
        lines.finish(|line| line_received(ctx, *id, replies, transport, line));
        self.eof = true;
        ctx.herd
            .log
            .event(format_args!("client#{} sent EOF", self.id));
        self.check_backlog(ctx, transport);
        self.close_if_done(ctx);
    }

    /// The answer to this client's Places request `request` arrived.
    pub fn answer_received(
        &mut self,
        ctx: &mut Ctx,
        request: u64,
        bytes: Vec<u8>,
        transport: &mut dyn WriteTransport,
    ) {
        if self.closed {
            return;
        }
        let first_line = bytes.split(|&b| b == b'\n').next().unwrap_or(&[]);
        ctx.herd.log.event(format_args!(
            "client#{} > {} (+ Places JSON, {} bytes)",
            self.id,
            Escaped(first_line),
            bytes.len()
        ));
        ctx.herd.metrics.replies_whatsat += 1;
        self.replies.fulfil(transport, request, bytes);
        self.check_backlog(ctx, transport);
        self.close_if_done(ctx);
    }

    /// The idle timer came due: close if the client has been quiet for the
    /// whole timeout and is owed nothing, or look again later.
    pub fn idle_timer(&mut self, ctx: &mut Ctx) {
        let Some(idle) = ctx.herd.limits.idle_timeout else {
            return;
        };
        if self.closed {
            return;
        }
        let quiet = ctx.now.duration_since(self.last_active);
        if quiet >= idle && self.replies.held.is_empty() {
            self.close(ctx, CloseReason::IdleTooLong);
        } else {
            ctx.timers.call_later(
                idle.saturating_sub(quiet).max(Duration::from_millis(10)),
                HerdEvent::ClientIdle { conn: ctx.me },
            );
        }
    }

    /// asyncio's `connection_lost`. Nothing is left to do here: the loop
    /// tells the Places client that nobody wants this client's answers.
    pub fn connection_lost(&mut self, _ctx: &mut Ctx, _reason: &CloseReason) {
        self.closed = true;
    }

    /// Bytes of an unfinished line held for the next read (the loop keeps
    /// their total across connections under a budget).
    pub fn unfinished(&self) -> usize {
        self.lines.pending()
    }

    /// True once the client has half-closed and every reply is in the
    /// transport: the loop closes the connection when the transport is empty.
    pub fn is_done(&self) -> bool {
        self.eof && self.replies.held.is_empty()
    }

    fn close_if_done(&mut self, ctx: &mut Ctx) {
        if self.is_done() && !self.closed {
            self.close(ctx, CloseReason::DoneAfterEof);
        }
    }

    /// The 1 MiB rule: replies queued and held, but not taken by the client.
    fn check_backlog(&mut self, ctx: &mut Ctx, transport: &dyn WriteTransport) {
        if transport.get_write_buffer_size() + self.replies.held_bytes > MAX_BACKLOG {
            self.close(ctx, CloseReason::RepliesUnread);
        }
    }

    fn close(&mut self, ctx: &mut Ctx, reason: CloseReason) {
        if !self.closed {
            self.closed = true;
            // Requests this connection asked for in the same read must not
            // reach Places now that nobody will read the answers.
            let me = ctx.me;
            ctx.actions
                .retain(|a| !matches!(a, Action::FetchPlaces { client, .. } if *client == me));
            ctx.close(reason);
        }
    }
}

/// One client line: log it, let the herd decide, queue the reply in order,
/// and ask the loop for floods and Places requests.
fn line_received(
    ctx: &mut Ctx,
    id: u64,
    replies: &mut Replies,
    transport: &mut dyn WriteTransport,
    line: &[u8],
) {
    let herd: &mut Herd = ctx.herd;
    let logged = |dir, bytes| [Str("client#"), Num(id), Str(dir), Bytes(bytes)];
    let action = herd.client_line(line, ctx.now_ns);
    if action != ClientAction::Ignore {
        herd.log.line(&logged(" < ", line));
    }
    match action {
        ClientAction::Ignore => {}
        ClientAction::Reply(bytes) => {
            herd.metrics.reply(&bytes);
            let shown = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
            herd.log.line(&logged(" > ", shown));
            replies.send(transport, &bytes);
        }
        ClientAction::ReplyAndFlood(mut at) => {
            herd.metrics.replies_at += 1;
            herd.log.line(&logged(" > ", &at));
            at.push(b'\n');
            replies.send(transport, &at);
            at.pop();
            ctx.actions.push(Action::Flood { at, from: None });
        }
        ClientAction::FetchPlaces(query) if replies.waiting >= MAX_WAITING_PLACES => {
            // A client may not queue Places requests without end: past the
            // limit it gets the error answer at once (still in order).
            herd.metrics.replies_whatsat += 1;
            herd.metrics.places_refused += 1;
            herd.log.line(&logged(" > ", &query.at_line));
            let mut bytes = query.at_line;
            bytes.push(b'\n');
            bytes.extend_from_slice(
                error_json(
                    "too many WHATSATs waiting for Places on this connection",
                    "UNKNOWN_ERROR",
                )
                .as_bytes(),
            );
            replies.send(transport, &bytes);
        }
        ClientAction::FetchPlaces(query) => {
            // Request numbers are the server's, not the connection's: the
            // Places client and its log name requests by them.
            herd.next_request += 1;
            let request = herd.next_request;
            replies.hold(request);
            ctx.actions.push(Action::FetchPlaces {
                client: ctx.me,
                client_id: id,
                request,
                query,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::herd::testing::{World, ME};
    use crate::herd::Limits;

    const IAMAT: &[u8] = b"IAMAT kiwi +34.068930-118.445127 1621464827.959498503\n";

    fn client(world: &mut World) -> ClientProtocol {
        world.with(ME, |ctx| ClientProtocol::connection_made(1, &"peer", ctx))
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    fn places_requests(actions: &[Action]) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::FetchPlaces { request, .. } => Some(*request),
                _ => None,
            })
            .collect()
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

    #[test]
    fn replies_keep_request_order_behind_a_whatsat_waiting_for_places() {
        let mut w = World::new("Riley", &[], Limits::default());
        let mut c = client(&mut w);
        let mut out = Vec::new();
        let mut input = IAMAT.to_vec();
        input.extend_from_slice(b"WHATSAT kiwi 10 5\nbogus\n");
        w.with(ME, |ctx| c.data_received(ctx, &input, &mut out));
        // The IAMAT's reply is out at once; the `? bogus` waits behind the WHATSAT.
        assert!(text(&out).starts_with("AT Riley "), "{}", text(&out));
        assert_eq!(text(&out).lines().count(), 1);
        let actions = w.take_actions();
        assert!(matches!(&actions[0], Action::Flood { from: None, .. }));
        let requests = places_requests(&actions);
        assert_eq!(requests.len(), 1);
        w.with(ME, |ctx| {
            c.answer_received(ctx, requests[0], b"AT x\n{}\n\n".to_vec(), &mut out)
        });
        assert!(
            text(&out).ends_with("AT x\n{}\n\n? bogus\n"),
            "{}",
            text(&out)
        );
    }

    #[test]
    fn at_most_64_whatsats_wait_for_places_and_the_rest_are_answered_in_order() {
        let mut w = World::new("Riley", &[], Limits::default());
        let mut c = client(&mut w);
        let mut out = Vec::new();
        let mut input = IAMAT.to_vec();
        for _ in 0..MAX_WAITING_PLACES + 2 {
            input.extend_from_slice(b"WHATSAT kiwi 10 5\n");
        }
        w.with(ME, |ctx| c.data_received(ctx, &input, &mut out));
        let requests = places_requests(&w.take_actions());
        assert_eq!(requests.len(), MAX_WAITING_PLACES);
        for r in requests {
            w.with(ME, |ctx| {
                c.answer_received(ctx, r, b"ok\n".to_vec(), &mut out)
            });
        }
        let all = text(&out);
        assert_eq!(all.matches("ok\n").count(), MAX_WAITING_PLACES);
        assert_eq!(all.matches("too many WHATSATs waiting").count(), 2);
        assert!(
            all.trim_end().ends_with('}'),
            "the refusals come last: {all}"
        );
    }

    #[test]
    fn a_client_that_does_not_read_is_closed_and_its_places_requests_dropped() {
        let mut w = World::new("Riley", &[], Limits::default());
        let mut c = client(&mut w);
        // The socket has not taken a megabyte of earlier replies.
        let mut out = vec![b'x'; MAX_BACKLOG];
        let mut input = IAMAT.to_vec();
        input.extend_from_slice(b"WHATSAT kiwi 10 5\n");
        w.with(ME, |ctx| c.data_received(ctx, &input, &mut out));
        let actions = w.take_actions();
        assert_eq!(closes(&actions), vec![CloseReason::RepliesUnread]);
        assert!(places_requests(&actions).is_empty());
        // Nothing more is handled once the close is asked for.
        w.with(ME, |ctx| c.data_received(ctx, IAMAT, &mut out));
        assert!(w.take_actions().is_empty());
    }

    #[test]
    fn a_line_over_64_kib_closes_the_connection() {
        let mut w = World::new("Riley", &[], Limits::default());
        let mut c = client(&mut w);
        let mut out = Vec::new();
        let long = vec![b'a'; MAX_LINE + 1];
        w.with(ME, |ctx| c.data_received(ctx, &long, &mut out));
        assert_eq!(closes(&w.take_actions()), vec![CloseReason::LineTooLong]);
    }

    #[test]
    fn a_half_close_is_answered_then_closed_once_nothing_is_owed() {
        let mut w = World::new("Riley", &[], Limits::default());
        let mut c = client(&mut w);
        let mut out = Vec::new();
        let mut input = IAMAT.to_vec();
        input.extend_from_slice(b"WHATSAT kiwi 10 5\nIAMAT last +1+1 1");
        w.with(ME, |ctx| c.data_received(ctx, &input, &mut out));
        w.with(ME, |ctx| c.eof_received(ctx, &mut out));
        let actions = w.take_actions();
        assert!(closes(&actions).is_empty(), "a WHATSAT is still owed");
        let request = places_requests(&actions)[0];
        w.with(ME, |ctx| {
            c.answer_received(ctx, request, b"json\n".to_vec(), &mut out)
        });
        assert_eq!(closes(&w.take_actions()), vec![CloseReason::DoneAfterEof]);
        // The unterminated last line was answered, after the WHATSAT.
        assert!(text(&out).contains("json\nAT Riley "), "{}", text(&out));
        assert!(c.is_done());
    }

    #[test]
    fn the_idle_timeout_closes_a_quiet_client_on_the_fake_clock() {
        let idle = Duration::from_secs(3);
        let limits = Limits {
            idle_timeout: Some(idle),
            ..Limits::default()
        };
        let mut w = World::new("Riley", &[], limits);
        let mut c = client(&mut w);
        let mut out = Vec::new();
        // Activity after 2 s pushes the deadline to 5 s.
        assert!(w.advance(Duration::from_secs(2)).is_empty());
        w.with(ME, |ctx| c.data_received(ctx, IAMAT, &mut out));
        w.take_actions();
        let due = w.advance(Duration::from_secs(1));
        assert_eq!(due, vec![HerdEvent::ClientIdle { conn: ME }]);
        w.with(ME, |ctx| c.idle_timer(ctx));
        assert!(closes(&w.take_actions()).is_empty(), "not idle for 3 s yet");
        let due = w.advance(Duration::from_secs(2));
        assert_eq!(due, vec![HerdEvent::ClientIdle { conn: ME }]);
        w.with(ME, |ctx| c.idle_timer(ctx));
        assert_eq!(closes(&w.take_actions()), vec![CloseReason::IdleTooLong]);
    }

    #[test]
    fn blank_lines_are_ignored_and_bad_lines_echoed() {
        let mut w = World::new("Riley", &[], Limits::default());
        let mut c = client(&mut w);
        let mut out = Vec::new();
        w.with(ME, |ctx| {
            c.data_received(ctx, b" \n\t\r\nnope here\r\n", &mut out)
        });
        assert_eq!(text(&out), "? nope here\n");
        assert!(w.take_actions().is_empty());
    }
}
