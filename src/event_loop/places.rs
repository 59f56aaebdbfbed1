//! The loop's side of the Places client: readiness on a Places connection
//! goes to [`crate::places::PlacesConn::ready`], and the actions the
//! [`crate::places::PlacesClient`] returns are carried out here.

use std::collections::VecDeque;
use std::time::Instant;

use mio::net::TcpStream;

use super::{Conn, EventLoop, TimerEvent};
use crate::conn_ref::ConnRef;
use crate::herd::actions::CloseReason;
use crate::places::{PlacesAction, PlacesConn};
use crate::timers::Scheduler;

impl EventLoop {
    pub(super) fn places_ready(&mut self, conn: ConnRef, readable: bool) {
        let Some(Conn::Places(p)) = self.conns.get_mut(conn.key).map(|s| &mut s.conn) else {
            return;
        };
        let event = p.ready(readable, &mut self.herd.log);
        let now = Instant::now();
        let mut scheduler = Scheduler {
            timers: &mut self.timers,
            now,
            wrap: TimerEvent::Places,
        };
        let actions =
            self.places
                .conn_event(conn, p.id, event, now, &mut self.herd.log, &mut scheduler);
        self.apply_places(actions);
    }

    /// Carries out what the Places client asked for: open connections, send
    /// requests, close connections, deliver answers to the waiting clients.
    pub(super) fn apply_places(&mut self, actions: Vec<PlacesAction>) {
        let mut work: VecDeque<PlacesAction> = actions.into();
        while let Some(action) = work.pop_front() {
            let now = Instant::now();
            let more = match action {
                PlacesAction::Open { addr, tls, request } => {
                    let opened = match TcpStream::connect(addr) {
                        Ok(stream) => {
                            let mut conn_id = 0;
                            self.insert(stream, |transport, id, _| {
                                conn_id = id;
                                Conn::Places(Box::new(PlacesConn::new(
                                    id,
                                    transport.into_stream(),
                                    *tls,
                                    request,
                                )))
                            })
                            .map(|conn| (conn, conn_id))
                            .ok_or_else(|| "cannot register".to_string())
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    let mut scheduler = Scheduler {
                        timers: &mut self.timers,
                        now,
                        wrap: TimerEvent::Places,
                    };
                    self.places
                        .opened(request, opened, now, &mut self.herd.log, &mut scheduler)
                }
                PlacesAction::Send {
                    conn,
                    request,
                    bytes,
                    reused,
                } => match self.conns.get_mut(conn.key) {
                    Some(slot) if slot.gen == conn.gen && !slot.closing => match &mut slot.conn {
                        Conn::Places(p) => {
                            p.send(request, &bytes, reused, &mut self.herd.log);
                            let event = p.ready(false, &mut self.herd.log);
                            let mut scheduler = Scheduler {
                                timers: &mut self.timers,
                                now,
                                wrap: TimerEvent::Places,
                            };
                            self.places.conn_event(
                                conn,
                                p.id,
                                event,
                                now,
                                &mut self.herd.log,
                                &mut scheduler,
                            )
                        }
                        _ => Vec::new(),
                    },
                    _ => Vec::new(),
                },
                PlacesAction::Close { conn, why } => {
                    self.close(conn, CloseReason::Io(why));
                    Vec::new()
                }
                PlacesAction::Answer {
                    client,
                    request,
                    bytes,
                } => {
                    self.with_conn(client, |c, ctx| {
                        if let Conn::Client {
                            transport, proto, ..
                        } = c
                        {
                            proto.answer_received(ctx, request, bytes, transport);
                        }
                    });
                    self.apply();
                    self.herd.log.flush();
                    self.flush(client);
                    Vec::new()
                }
            };
            work.extend(more);
        }
    }
}
