//! The loop's side of the Places client: readiness on a Places connection
//! goes to [`crate::places::PlacesConn::ready`], and the actions the
//! [`crate::places::PlacesClient`] returns are carried out here.

use super::*;

impl EventLoop {
    pub(super) fn places_ready(&mut self, key: usize, readable: bool) {
        let Some(Slot {
            conn: Conn::Places(p),
            gen,
            ..
        }) = self.conns.get_mut(key)
        else {
            return;
        };
        let conn = ConnRef { key, gen: *gen };
        let event = p.ready(readable);
        let actions = self.places.conn_event(
            conn,
            p.id,
            event,
            Instant::now(),
            &mut self.herd.log,
            &mut self.timers,
        );
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
                            self.insert(stream, |transport, id| {
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
                    self.places
                        .opened(request, opened, now, &mut self.herd.log, &mut self.timers)
                }
                PlacesAction::Send {
                    conn,
                    request,
                    bytes,
                    reused,
                } => match self.conns.get_mut(conn.key) {
                    Some(Slot {
                        conn: Conn::Places(p),
                        gen,
                        closing: false,
                    }) if *gen == conn.gen => {
                        p.send(request, &bytes, reused);
                        let event = p.ready(false);
                        self.places.conn_event(
                            conn,
                            p.id,
                            event,
                            now,
                            &mut self.herd.log,
                            &mut self.timers,
                        )
                    }
                    _ => Vec::new(),
                },
                PlacesAction::Close { conn, why } => {
                    if self.is_live(conn) {
                        self.close(conn.key, &why);
                    }
                    Vec::new()
                }
                PlacesAction::Answer {
                    client,
                    request,
                    bytes,
                } => {
                    self.deliver_answer(client, request, bytes);
                    Vec::new()
                }
            };
            work.extend(more);
        }
    }
}
