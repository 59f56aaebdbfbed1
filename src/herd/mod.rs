//! The herd: this server's view of it and what it does with each line.
//!
//! [`Herd`] holds the server's name, its location [`store`], its [`link`]s to
//! the neighbours and the log. Its handlers are sans-IO: they take a parsed line
//! and return what should happen ([`ClientAction`]); the event loop
//! ([`crate::event_loop`]) does the writing, flooding and Places requests.
//! The herd file lives in [`config`].

pub mod auth;
pub mod config;
pub mod link;
pub mod state;
pub mod store;

use crate::log::{Log, Part};
use crate::observe::{Metrics, Recent, Source};
use crate::protocol::client::{self, parse_location, Coordinates, Request};
use crate::protocol::peer::Update;
use link::Link;
use store::Store;

/// What the loop should do for one client line.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientAction {
    /// A blank line: nothing.
    Ignore,
    /// Send these bytes (an AT line for an old IAMAT, or `? ` + the line).
    Reply(Vec<u8>),
    /// Send the AT line (without `\n`) and flood it to every neighbour.
    ReplyAndFlood(Vec<u8>),
    /// Ask Places, then send the stored AT line and the JSON.
    FetchPlaces(PlacesQuery),
}

/// A WHATSAT that needs Places: the stored AT line and what to ask.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct PlacesQuery {
    pub at_line: Vec<u8>,
    pub coords: Coordinates,
    pub radius_m: String,
    pub bound: u8,
}

/// One server's state in the herd.
#[derive(Debug)]
pub struct Herd {
    pub name: String,
    pub store: Store,
    /// One per neighbour, in herd-file order; a link is named by its index.
    pub links: Vec<Link>,
    pub log: Log,
    /// Where new positions are recorded, with `--state`.
    pub state: Option<state::StateFile>,
    /// The herd secret peers must prove, with `--herd-secret-file`.
    pub secret: Option<auth::Secret>,
    /// What `/metrics` counts; the herd counts lines and updates, the loop the rest.
    pub metrics: Metrics,
    /// The last updates accepted, for `/status`.
    pub recent: Recent,
}

impl Herd {
    /// The link to the neighbour called `name`.
    pub fn link_named(&self, name: &[u8]) -> Option<usize> {
        self.links.iter().position(|l| l.name.as_bytes() == name)
    }

    /// asyncio's `data_received`, one line at a time: what a client line means
    /// given what this server knows at `now_ns` (nanoseconds since the epoch).
    pub fn client_line(&mut self, line: &[u8], now_ns: i128) -> ClientAction {
        match client::parse_request(line) {
            Request::Blank => ClientAction::Ignore,
            Request::IAmAt(req) => {
                self.metrics.lines_iamat += 1;
                let at = client::format_at(&self.name, now_ns, &req);
                if self.store.update(req.client, req.time_ns, &at) {
                    self.persist(&at);
                    // u64 division: an i128 one costs about a hundred instructions.
                    let micros = u64::try_from(now_ns).map_or(0, |ns| ns / 1000);
                    self.recent.push(&at, Source::Client, micros);
                    ClientAction::ReplyAndFlood(at)
                } else {
                    let mut reply = at;
                    reply.push(b'\n');
                    ClientAction::Reply(reply)
                }
            }
            Request::WhatsAt(req) => {
                let Some(position) = self.store.get(req.client) else {
                    return self.invalid(line);
                };
                self.metrics.lines_whatsat += 1;
                // The stored line was validated when it was stored; field 4 is
                // the location.
                let location = crate::protocol::fields(&position.at_line).nth(4);
                match location.and_then(parse_location) {
                    Some(coords) => ClientAction::FetchPlaces(PlacesQuery {
                        at_line: position.at_line.to_vec(),
                        coords,
                        radius_m: req.radius_m,
                        bound: req.bound,
                    }),
                    None => self.invalid(line),
                }
            }
            Request::Invalid => self.invalid(line),
        }
    }

    fn invalid(&mut self, line: &[u8]) -> ClientAction {
        self.metrics.lines_invalid += 1;
        invalid(line)
    }

    /// An update from the neighbour on link `from`: true if it is new here
    /// (and so must be flooded on, except back to `from`).
    pub fn peer_update(&mut self, from: usize, update: &Update) -> bool {
        let new = self
            .store
            .update(&update.client, update.time_ns, &update.at_line);
        if new {
            self.persist(&update.at_line);
            let now = crate::observe::micros(std::time::SystemTime::now());
            self.recent
                .push(&update.at_line, Source::Neighbour(from), now);
        }
        if let Some(c) = self.metrics.links.get_mut(from) {
            if new {
                c.floods_received_new += 1;
            } else {
                c.floods_received_known += 1;
            }
        }
        self.log.line(&[
            Part::Str("update from "),
            Part::Str(&self.links[from].name),
            Part::Str(if new { " new: " } else { " known: " }),
            Part::Bytes(&update.client),
        ]);
        new
    }
}

impl Herd {
    fn persist(&mut self, at_line: &[u8]) {
        if let Some(state) = self.state.as_mut() {
            state.record(at_line);
        }
    }

    /// Writes the recorded positions to the state file: called before the
    /// turn's replies go out, so what a client saw acknowledged is written.
    pub fn flush_state(&mut self) {
        if let Some(Err(e)) = self.state.as_mut().map(|s| s.flush()) {
            self.log
                .event(format_args!("state file: write failed: {e}"));
        }
    }

    /// Rewrites the state file with just the live positions, now and then.
    pub fn compact_state(&mut self) {
        let Some(state) = self.state.as_mut() else {
            return;
        };
        if !state.wants_compaction(self.store.len()) {
            return;
        }
        let result = state.compact(self.store.positions().map(|p| &p.at_line[..]));
        match result {
            Ok(()) => self.log.event(format_args!(
                "state file: compacted to {} positions",
                self.store.len()
            )),
            Err(e) => self
                .log
                .event(format_args!("state file: compaction failed: {e}")),
        }
    }
}

fn invalid(line: &[u8]) -> ClientAction {
    let mut reply = Vec::with_capacity(line.len() + 3);
    client::write_invalid(&mut reply, line);
    ClientAction::Reply(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn herd() -> Herd {
        Herd {
            name: "Riley".into(),
            store: Store::default(),
            links: Vec::new(),
            log: Log::discard(),
            state: None,
            secret: None,
            metrics: Metrics::default(),
            recent: Recent::default(),
        }
    }

    #[test]
    fn iamat_then_whatsat() {
        let mut h = herd();
        let now = 1_621_464_828_223_371_889;
        let at = b"AT Riley +0.263873386 kiwi +34.068930-118.445127 1621464827.959498503".to_vec();
        assert_eq!(
            h.client_line(
                b"IAMAT kiwi +34.068930-118.445127 1621464827.959498503",
                now
            ),
            ClientAction::ReplyAndFlood(at.clone())
        );
        // The same IAMAT again is answered but not new.
        let mut again = at.clone();
        again.push(b'\n');
        assert_eq!(
            h.client_line(
                b"IAMAT kiwi +34.068930-118.445127 1621464827.959498503",
                now
            ),
            ClientAction::Reply(again)
        );
        let ClientAction::FetchPlaces(q) = h.client_line(b"WHATSAT kiwi 10 5", now) else {
            panic!("expected a Places query");
        };
        assert_eq!(q.at_line, at);
        assert_eq!(
            (q.coords.lat.as_str(), q.coords.lon.as_str()),
            ("34.068930", "-118.445127")
        );
        assert_eq!((q.radius_m.as_str(), q.bound), ("10000", 5));
    }

    #[test]
    fn unknown_clients_and_bad_lines_are_echoed() {
        let mut h = herd();
        assert_eq!(
            h.client_line(b"WHATSAT nobody 10 5\r", 0),
            ClientAction::Reply(b"? WHATSAT nobody 10 5\n".to_vec())
        );
        assert_eq!(h.client_line(b"  ", 0), ClientAction::Ignore);
    }
}
