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

use std::time::{Duration, Instant};

use super::actions::{Action, CloseReason, Ctx, HerdEvent};
use super::auth::Role;
use super::link::LinkState;
use crate::log::Escaped;
use crate::log::Part::{self, Bytes, Num, Str};
use crate::protocol::peer::{self, PeerMessage, MAX_PEER_LINE};
use crate::transport::{LineReader, WriteTransport};

/// A dial or a greeting that takes longer than this failed.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(2);
/// Links send PING this often...
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// ...and a link silent this long is dead, even if TCP has not noticed.
pub const SILENCE: Duration = Duration::from_secs(5);
/// A neighbour whose unsent updates exceed this (beyond its catch-up) is
/// dropped and re-synced later by the catch-up.
pub const PEER_BACKLOG: usize = 8 * 1024 * 1024;
/// What we may owe a neighbour on its own connection to us (WELCOME,
/// REFUSED, PONGs): one that sends PINGs and never reads is dropped here.
pub const PEER_IN_BACKLOG: usize = 64 * 1024;

/// Our dialed connection to a neighbour: we send, it answers.
#[derive(Debug)]
pub struct PeerOutProtocol {
    /// The connection's number in the log.
    pub id: u64,
    pub link: usize,
    lines: LineReader,
    last_heard: Instant,
    /// How much unsent output is tolerated (more while a catch-up drains).
    allowance: usize,
    handshake: OutHandshake,
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
            allowance: PEER_BACKLOG,
            handshake: OutHandshake::Open,
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
        if !matches!(message, PeerMessage::Pong | PeerMessage::Blank) {
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
                        self.catch_up(ctx, transport);
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
                false
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

    /// When the link comes up, the neighbour gets every position we know.
    fn catch_up(&mut self, ctx: &mut Ctx, transport: &mut dyn WriteTransport) {
        let herd = &mut *ctx.herd;
        let before = transport.get_write_buffer_size();
        let out = transport.out_buf();
        let start = out.len();
        for position in herd.store.positions() {
            peer::write_update(out, &position.at_line);
            herd.metrics.peer_sent(self.link, position.at_line.len());
        }
        let bytes = out.len() - start;
        herd.metrics
            .catch_up_sent(self.link, herd.store.len(), bytes);
        self.allowance = PEER_BACKLOG + (transport.get_write_buffer_size() - before);
        herd.log.event(format_args!(
            "link {}: catch-up of {} positions sent ({bytes} bytes)",
            herd.links[self.link].name,
            herd.store.len()
        ));
    }

    /// Sends one flooded update; past the backlog bound the link is dropped.
    pub fn send_update(&mut self, ctx: &mut Ctx, at: &[u8], transport: &mut dyn WriteTransport) {
        peer::write_update(transport.out_buf(), at);
        ctx.herd.metrics.flood_sent(self.link, at.len());
        let name = &ctx.herd.links[self.link].name;
        ctx.herd.log.line(&sent_line(name, self.id, at));
        if transport.get_write_buffer_size() > self.allowance {
            self.fail(ctx, CloseReason::PeerBacklog.to_string());
        }
    }

    /// The transport is empty again: the catch-up's extra allowance is spent.
    pub fn drained(&mut self) {
        self.allowance = PEER_BACKLOG;
    }

    /// The heartbeat: PING, or drop a link silent for too long.
    pub fn heartbeat(&mut self, ctx: &mut Ctx, transport: &mut dyn WriteTransport) {
        if ctx.now.duration_since(self.last_heard) > SILENCE {
            ctx.close(CloseReason::SilentTooLong);
        } else if ctx.herd.links[self.link].up_conn() == Some(ctx.me) {
            transport.write(b"PING\n");
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
        let message = peer::parse_peer_message(line);
        let herd = &mut *ctx.herd;
        if let Some(l) = self.link {
            herd.metrics.peer_received(l, line.len());
        }
        let name = self.link.map_or("?", |l| herd.links[l].name.as_str());
        if !matches!(message, PeerMessage::Ping | PeerMessage::Blank) {
            herd.log.line(&[
                Str("peer-in "),
                Str(name),
                Str("#"),
                Num(self.id),
                Str(" < "),
                Bytes(line),
            ]);
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
            (PeerMessage::Blank, _) => {}
            (PeerMessage::Hello { name, nonce }, None) => {
                let Some(l) = herd.link_named(name) else {
                    let why = format!("refused HELLO from {}: not a neighbour", Escaped(name));
                    return Self::refuse(transport, "not a neighbour", why);
                };
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
            (_, Some(_)) => herd.log.event(format_args!(
                "peer-in {name}#{}: invalid line ignored",
                self.id
            )),
        }
        Ok(())
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
                self.riley
                    .with(ME, |ctx| out.data_received(ctx, &bytes, fwd));
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
        // The catch-up reached Jaquez, which stored it and would flood it on.
        assert!(p.jaquez.herd.store.get(b"kiwi").is_some());
        // (Jaquez never dialed Riley, so the HELLO also makes it dial back.)
        let actions = p.jaquez.take_actions();
        assert!(
            matches!(
                &actions[..],
                [
                    Action::Dial { link: 0 },
                    Action::Flood { from: Some(0), .. }
                ]
            ),
            "{actions:?}"
        );
        // The dial's and the greeting's timeouts were cancelled.
        let due = p.riley.advance(LINK_TIMEOUT * 2);
        assert!(due.is_empty(), "{due:?}");
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
    fn a_flood_past_the_backlog_bound_drops_the_link() {
        let mut p = Pair::new(None);
        p.pump();
        p.riley.take_actions();
        let mut stuck = vec![0u8; PEER_BACKLOG];
        let (o, r) = (&mut p.out, &mut p.riley);
        r.with(ME, |ctx| {
            o.send_update(ctx, b"AT Riley +0.1 kiwi +1+1 1", &mut stuck)
        });
        assert!(matches!(
            &closes(&p.riley.take_actions())[..],
            [CloseReason::LinkFailed(_)]
        ));
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
