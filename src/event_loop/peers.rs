//! Peer links: our dialed link to each neighbour (asyncio's
//! `open_connection`, [`EventLoop::dial`]) and the links neighbours dial to us,
//! with the HELLO/WELCOME greeting, the herd-secret handshake, flooding, the
//! catch-up and the heartbeat. The link's states live in
//! [`crate::herd::link`]; the messages in [`crate::protocol::peer`].

use super::*;

/// A peer connection, either direction.
pub(super) struct PeerConn {
    pub(super) id: u64,
    /// The neighbour: known from the start when we dialed, after HELLO when it did.
    pub(super) link: Option<usize>,
    pub(super) transport: Transport,
    pub(super) lines: LineReader,
    pub(super) last_heard: Instant,
    /// How much unsent output is tolerated (more while a catch-up drains).
    pub(super) allowance: usize,
    /// Where the herd-secret handshake stands (see `herd/auth.rs`).
    pub(super) handshake: Handshake,
}

/// The herd-secret handshake on one peer connection.
pub(super) enum Handshake {
    /// Nothing pending: no secret, or the handshake is over.
    Done,
    /// We dialed; our HELLO carried this nonce, which the CHALLENGE must prove.
    Sent { nonce: String },
    /// We dialed, and the neighbour proved it knows the secret.
    Verified,
    /// It dialed; our CHALLENGE to neighbour `link` carried this nonce.
    Challenged { link: usize, nonce: String },
}

/// The log line for an update sent on our link to `name` (connection `id`).
pub(super) fn peer_sent<'a>(name: &'a str, id: u64, at: &'a [u8]) -> [Part<'a>; 6] {
    [
        Str("peer-out "),
        Str(name),
        Str("#"),
        Num(id),
        Str(" > "),
        Bytes(at),
    ]
}

/// One line from a neighbour's link to us. Returns why the link must end, if it must.
pub(super) fn peer_line_received(
    herd: &mut Herd,
    effects: &mut Effects,
    transport: &mut Transport,
    (link, handshake, greeted): (&mut Option<usize>, &mut Handshake, &mut Option<usize>),
    id: u64,
    line: &[u8],
) -> Option<String> {
    if let Some(l) = *link {
        herd.metrics.peer_received(l, line.len());
    }
    let name = link.map_or("?", |l| herd.links[l].name.as_str());
    herd.log.line(&[
        Str("peer-in "),
        Str(name),
        Str("#"),
        Num(id),
        Str(" < "),
        Bytes(line),
    ]);
    match (peer::parse_peer_message(line), *link) {
        (PeerMessage::Update(update), Some(from)) => {
            if herd.peer_update(from, &update) {
                effects.floods.push((update.at_line, Some(from)));
            }
        }
        (PeerMessage::Ping, Some(l)) => {
            transport.write(b"PONG\n");
            herd.metrics.peer_sent(l, 4);
        }
        (PeerMessage::Blank, _) => {}
        (PeerMessage::Hello { name, nonce }, None) => {
            let Some(l) = herd.link_named(name) else {
                transport.write(b"REFUSED not a neighbour\n");
                return Some(format!(
                    "refused HELLO from {}: not a neighbour",
                    Escaped(name)
                ));
            };
            if matches!(handshake, Handshake::Challenged { .. }) {
                transport.write(b"REFUSED PROOF expected\n");
                return Some("a second HELLO".to_string());
            }
            match (&herd.secret, nonce) {
                (None, _) => {
                    *link = Some(l);
                    *greeted = Some(l);
                    transport.write(format!("WELCOME {}\n", herd.name).as_bytes());
                }
                (Some(_), None) => {
                    transport.write(b"REFUSED herd secret required\n");
                    return Some(format!(
                        "refused HELLO from {}: no proof of the herd secret offered",
                        Escaped(name)
                    ));
                }
                (Some(secret), Some(theirs)) => {
                    let ours = match secret.nonce() {
                        Ok(n) => n,
                        Err(e) => return Some(e),
                    };
                    let proof = secret.proof(Role::Acceptor, theirs, name, herd.name.as_bytes());
                    transport.write(format!("CHALLENGE {ours} {proof}\n").as_bytes());
                    *handshake = Handshake::Challenged {
                        link: l,
                        nonce: ours,
                    };
                }
            }
        }
        (PeerMessage::Proof { proof }, None) => {
            let Handshake::Challenged { link: l, nonce } = handshake else {
                transport.write(b"REFUSED HELLO expected\n");
                return Some("PROOF before HELLO".to_string());
            };
            let l = *l;
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
                transport.write(b"REFUSED bad proof of the herd secret\n");
                return Some(format!(
                    "refused HELLO from {}: bad proof of the herd secret",
                    herd.links[l].name
                ));
            }
            *handshake = Handshake::Done;
            *link = Some(l);
            *greeted = Some(l);
            transport.write(format!("WELCOME {}\n", herd.name).as_bytes());
        }
        (_, None) => {
            transport.write(b"REFUSED HELLO expected\n");
            return Some("no HELLO".to_string());
        }
        (_, Some(_)) => herd
            .log
            .event(format_args!("peer-in {name}#{id}: invalid line ignored")),
    }
    None
}

impl EventLoop {
    /// Sends a new position to every neighbour whose link is up, except the
    /// one it came from. Written now, flushed before the turn's client replies.
    pub(super) fn flood(&mut self, at: &[u8], from: Option<usize>) {
        for link in 0..self.herd.links.len() {
            if Some(link) == from {
                continue;
            }
            let Some(conn) = self.herd.links[link].up_conn() else {
                // Not up: the catch-up will carry it when the link comes back.
                continue;
            };
            let Some(Slot {
                conn: Conn::PeerOut(p),
                ..
            }) = self.conns.get_mut(conn.key)
            else {
                continue;
            };
            peer::write_update(p.transport.out_buf(), at);
            self.herd.metrics.flood_sent(link, at.len());
            let name = &self.herd.links[link].name;
            self.herd.log.line(&peer_sent(name, p.id, at));
            if p.transport.backlog() > p.allowance {
                self.close(conn.key, "peer output backlog over its bound");
            } else if !self.dirty_peers.contains(&conn.key) {
                self.dirty_peers.push(conn.key);
            }
        }
    }

    pub(super) fn flush_dirty_peers(&mut self) {
        for key in std::mem::take(&mut self.dirty_peers) {
            self.peer_flush(key);
        }
    }

    pub(super) fn peer_flush(&mut self, key: usize) {
        let Some(Slot {
            conn: Conn::PeerOut(p) | Conn::PeerIn(p),
            closing: false,
            ..
        }) = self.conns.get_mut(key)
        else {
            return;
        };
        match p.transport.flush() {
            Ok(Flushed::All) => p.allowance = PEER_BACKLOG,
            Ok(Flushed::Pending) => {}
            Err(e) => self.close(key, &format!("write error: {e}")),
        }
    }

    /// asyncio's `open_connection`: a non-blocking connect whose completion
    /// shows up as the first writable event.
    pub(super) fn dial(&mut self, link: usize) {
        let now = Instant::now();
        let Some(&addr) = self.herd.links[link].addrs.first() else {
            return;
        };
        match TcpStream::connect(addr) {
            Ok(stream) => {
                let conn = self.insert(stream, |transport, id| {
                    Conn::PeerOut(PeerConn {
                        id,
                        link: Some(link),
                        transport,
                        lines: LineReader::default(),
                        last_heard: now,
                        allowance: PEER_BACKLOG,
                        handshake: Handshake::Done,
                    })
                });
                match conn {
                    Some(conn) => {
                        let timeout = self.timers.call_later(
                            now,
                            LINK_TIMEOUT,
                            TimerEvent::LinkTimeout { link, conn },
                        );
                        let why = format!("dialing {addr}");
                        self.herd.links[link].set_state(
                            LinkState::Dialing { conn, timeout },
                            &why,
                            &mut self.herd.log,
                        );
                    }
                    None => self.back_off(link, "cannot register"),
                }
            }
            Err(e) => self.back_off(link, &format!("dial {addr} failed: {e}")),
        }
    }

    /// The link failed: wait, then dial again (asyncio: `call_later(delay, dial)`).
    pub(super) fn back_off(&mut self, link: usize, why: &str) {
        let l = &mut self.herd.links[link];
        if let Some(conn) = l.state.conn() {
            if let Some(slot) = self.conns.get_mut(conn.key) {
                if slot.gen == conn.gen && !slot.closing {
                    slot.closing = true;
                    self.to_reap.push(conn.key);
                }
            }
        }
        if let LinkState::Dialing { timeout, .. } | LinkState::Greeting { timeout, .. } = l.state {
            self.timers.cancel(timeout);
        }
        let delay = backoff_delay(l.failures, self.jitter.next_unit());
        l.failures = l.failures.saturating_add(1);
        let timer = self
            .timers
            .call_later(Instant::now(), delay, TimerEvent::Redial { link });
        let why = format!("{why}; retry in {} ms", delay.as_millis());
        l.set_state(LinkState::Backoff { timer }, &why, &mut self.herd.log);
    }

    pub(super) fn peer_out_ready(&mut self, key: usize, readable: bool, writable: bool) {
        let Some(Slot {
            conn: Conn::PeerOut(p),
            gen,
            ..
        }) = self.conns.get_mut(key)
        else {
            return;
        };
        let conn = ConnRef { key, gen: *gen };
        let Some(link) = p.link else {
            return;
        };
        if let LinkState::Dialing { conn: c, timeout } = self.herd.links[link].state {
            if c != conn {
                return;
            }
            // The connect finished, one way or the other, or this is spurious.
            let stream = p.transport.stream();
            match stream.take_error() {
                Ok(Some(e)) | Err(e) => {
                    self.back_off(link, &format!("dial failed: {e}"));
                    return;
                }
                Ok(None) => {}
            }
            match stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => {
                    self.back_off(link, &format!("dial failed: {e}"));
                    return;
                }
            }
            self.timers.cancel(timeout);
            let mut hello = format!("HELLO {}", self.herd.name);
            if let Some(secret) = &self.herd.secret {
                match secret.nonce() {
                    Ok(nonce) => {
                        hello = format!("{hello} {nonce}");
                        p.handshake = Handshake::Sent { nonce };
                    }
                    Err(e) => {
                        self.back_off(link, &e);
                        return;
                    }
                }
            }
            p.transport.write(hello.as_bytes());
            p.transport.write(b"\n");
            self.herd.log.event(format_args!(
                "peer-out {}#{} > {hello}",
                self.herd.links[link].name, p.id
            ));
            let timeout = self.timers.call_later(
                Instant::now(),
                LINK_TIMEOUT,
                TimerEvent::LinkTimeout { link, conn },
            );
            self.herd.links[link].set_state(
                LinkState::Greeting { conn, timeout },
                "connected, HELLO sent",
                &mut self.herd.log,
            );
            self.peer_flush(key);
        }
        if readable {
            self.peer_out_data_received(key, conn, link);
        }
        if writable {
            self.peer_flush(key);
        }
    }

    /// The neighbour's side of our link says little: WELCOME, REFUSED, PONG.
    pub(super) fn peer_out_data_received(&mut self, key: usize, conn: ConnRef, link: usize) {
        let mut messages: Vec<Vec<u8>> = Vec::new();
        let mut end = None;
        {
            let EventLoop {
                conns, read_buf, ..
            } = self;
            let Some(Slot {
                conn: Conn::PeerOut(p),
                ..
            }) = conns.get_mut(key)
            else {
                return;
            };
            loop {
                match p.transport.read(read_buf) {
                    Ok(0) => {
                        end = Some("closed by the neighbour".to_string());
                        break;
                    }
                    Ok(n) => {
                        p.last_heard = Instant::now();
                        if p.lines
                            .feed(&read_buf[..n], MAX_LINE, |l| messages.push(l.to_vec()))
                            .is_err()
                        {
                            end = Some("line too long".to_string());
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        end = Some(format!("read error: {e}"));
                        break;
                    }
                }
            }
        }
        for line in &messages {
            if !self.is_live(conn) {
                return;
            }
            self.herd.metrics.peer_received(link, line.len());
            let name = self.herd.links[link].name.clone();
            self.herd.log.event(format_args!(
                "peer-out {name}#{} < {}",
                self.conn_id(key),
                Escaped(line)
            ));
            match peer::parse_peer_message(line) {
                PeerMessage::Challenge { nonce, proof } => {
                    if let Err(why) = self.answer_challenge(key, link, nonce, proof) {
                        self.close(key, &why);
                    }
                }
                PeerMessage::Welcome { name: n } if n == name.as_bytes() => {
                    if self.herd.secret.is_some() && !self.handshake_verified(key) {
                        let why = "welcomed without proving the herd secret";
                        self.herd.log.event(format_args!("link {name}: {why}"));
                        self.close(key, why);
                        continue;
                    }
                    if let LinkState::Greeting { timeout, .. } = self.herd.links[link].state {
                        self.timers.cancel(timeout);
                        self.herd.links[link].failures = 0;
                        self.herd.metrics.links[link].ups += 1;
                        self.herd.links[link].set_state(
                            LinkState::Up { conn },
                            "WELCOME received",
                            &mut self.herd.log,
                        );
                        self.catch_up(key, link);
                    }
                }
                PeerMessage::Refused { reason } => {
                    let why = format!("refused: {}", Escaped(reason));
                    self.close(key, &why);
                }
                PeerMessage::Pong | PeerMessage::Blank => {}
                _ => self
                    .herd
                    .log
                    .event(format_args!("peer-out {name}: unexpected line ignored")),
            }
        }
        if let Some(why) = end {
            self.close(key, &why);
        }
    }

    /// The neighbour we dialed proves it knows the herd secret (its proof over
    /// our nonce) and challenges us to prove it too (over its nonce).
    pub(super) fn answer_challenge(
        &mut self,
        key: usize,
        link: usize,
        nonce: &[u8],
        proof: &[u8],
    ) -> Result<(), String> {
        let EventLoop { conns, herd, .. } = self;
        let Some(secret) = herd.secret.as_ref() else {
            return Err("the neighbour asks for a herd secret we do not have".to_string());
        };
        let Some(Slot {
            conn: Conn::PeerOut(p),
            ..
        }) = conns.get_mut(key)
        else {
            return Ok(());
        };
        let Handshake::Sent { nonce: ours } = &p.handshake else {
            return Err("unexpected CHALLENGE".to_string());
        };
        let (me, them) = (herd.name.as_bytes(), herd.links[link].name.as_bytes());
        if !secret.verify(Role::Acceptor, ours.as_bytes(), me, them, proof) {
            herd.log.event(format_args!(
                "link {}: the neighbour failed to prove the herd secret",
                herd.links[link].name
            ));
            return Err("the neighbour failed to prove the herd secret".to_string());
        }
        let answer = secret.proof(Role::Dialer, nonce, me, them);
        p.transport.write(format!("PROOF {answer}\n").as_bytes());
        herd.log.event(format_args!(
            "peer-out {}#{} > PROOF {answer}",
            herd.links[link].name, p.id
        ));
        p.handshake = Handshake::Verified;
        self.peer_flush(key);
        Ok(())
    }

    pub(super) fn handshake_verified(&self, key: usize) -> bool {
        matches!(
            self.conns.get(key).map(|s| &s.conn),
            Some(Conn::PeerOut(PeerConn {
                handshake: Handshake::Verified,
                ..
            }))
        )
    }

    /// When a link comes up, the neighbour gets every position we know.
    pub(super) fn catch_up(&mut self, key: usize, link: usize) {
        let EventLoop { conns, herd, .. } = self;
        let Some(Slot {
            conn: Conn::PeerOut(p),
            ..
        }) = conns.get_mut(key)
        else {
            return;
        };
        let before = p.transport.backlog();
        for position in herd.store.positions() {
            peer::write_update(p.transport.out_buf(), &position.at_line);
            herd.metrics.peer_sent(link, position.at_line.len());
            herd.log
                .line(&peer_sent(&herd.links[link].name, p.id, &position.at_line));
        }
        p.allowance = PEER_BACKLOG + (p.transport.backlog() - before);
        let sent = p.transport.backlog() - before;
        herd.metrics.catch_up_sent(link, herd.store.len(), sent);
        herd.log.event(format_args!(
            "link {}: catch-up of {} positions sent",
            herd.links[link].name,
            herd.store.len()
        ));
        self.peer_flush(key);
    }

    pub(super) fn peer_in_made(&mut self, stream: TcpStream, addr: SocketAddr) {
        let now = Instant::now();
        if let Some(conn) = self.insert(stream, |transport, id| {
            Conn::PeerIn(PeerConn {
                id,
                link: None,
                transport,
                lines: LineReader::default(),
                last_heard: now,
                allowance: PEER_BACKLOG,
                handshake: Handshake::Done,
            })
        }) {
            self.herd.log.event(format_args!(
                "peer-in #{} {addr} connected",
                self.conn_id(conn.key)
            ));
            self.timers
                .call_later(now, LINK_TIMEOUT, TimerEvent::HelloTimeout { conn });
        }
    }

    pub(super) fn peer_in_ready(&mut self, key: usize, readable: bool) {
        if readable {
            self.peer_in_data_received(key);
        }
        self.flush_dirty_peers();
        self.peer_flush(key);
    }

    /// Updates from a neighbour: store what is new and flood it on.
    pub(super) fn peer_in_data_received(&mut self, key: usize) {
        let EventLoop {
            conns,
            herd,
            read_buf,
            effects,
            ..
        } = self;
        let Some(Slot {
            conn: Conn::PeerIn(p),
            gen,
            ..
        }) = conns.get_mut(key)
        else {
            return;
        };
        let me = ConnRef { key, gen: *gen };
        let PeerConn {
            id,
            link,
            transport,
            lines,
            last_heard,
            handshake,
            ..
        } = p;
        let mut greeted = None;
        let mut end: Option<String> = None;
        loop {
            let got = transport.read(read_buf);
            let mut on_line = |line: &[u8]| {
                if end.is_none() {
                    end = peer_line_received(
                        herd,
                        effects,
                        transport,
                        (link, handshake, &mut greeted),
                        *id,
                        line,
                    );
                }
            };
            match got {
                Ok(0) => {
                    lines.finish(&mut on_line);
                    end.get_or_insert_with(|| "closed by the neighbour".to_string());
                    break;
                }
                Ok(n) => {
                    *last_heard = Instant::now();
                    if lines.feed(&read_buf[..n], MAX_LINE, &mut on_line).is_err() {
                        end = Some("line too long".to_string());
                    }
                    if end.is_some() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    end = Some(format!("read error: {e}"));
                    break;
                }
            }
        }
        if let Some(l) = greeted {
            self.link_greeted(l, me);
        }
        if let Some(why) = end {
            self.peer_flush(key);
            self.close(key, &why);
        }
        self.apply_effects();
    }

    /// A neighbour said HELLO: this is now its link to us. If our link to it
    /// is waiting out a backoff, the neighbour is evidently back: dial now.
    pub(super) fn link_greeted(&mut self, link: usize, conn: ConnRef) {
        if let Some(old) = self.herd.links[link].incoming.replace(conn) {
            if old != conn && self.is_live(old) {
                self.close(old.key, "replaced by a new link from the same neighbour");
            }
        }
        let name = self.herd.links[link].name.clone();
        self.herd.log.event(format_args!("link from {name}: up"));
        if let LinkState::Backoff { timer } = self.herd.links[link].state {
            self.timers.cancel(timer);
            self.herd.links[link].failures = 0;
            self.herd
                .log
                .event(format_args!("link {name}: HELLO from it, dialing back now"));
            self.dial(link);
        }
    }

    /// PING every link that is up; close links, either way, silent too long.
    pub(super) fn heartbeat(&mut self, now: Instant) {
        for link in 0..self.herd.links.len() {
            let l = &self.herd.links[link];
            for conn in [l.up_conn(), l.incoming].into_iter().flatten() {
                let Some(Slot {
                    conn: Conn::PeerOut(p) | Conn::PeerIn(p),
                    gen,
                    closing: false,
                }) = self.conns.get_mut(conn.key)
                else {
                    continue;
                };
                if *gen != conn.gen {
                    continue;
                }
                if now.duration_since(p.last_heard) > SILENCE {
                    self.close(conn.key, "silent too long");
                } else if Some(conn) == self.herd.links[link].up_conn() {
                    p.transport.write(b"PING\n");
                    self.herd.metrics.peer_sent(link, 4);
                    self.dirty_peers.push(conn.key);
                }
            }
        }
    }
}
