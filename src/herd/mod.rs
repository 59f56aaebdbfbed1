//! The herd: this server's view of it and what it does with each line.
//!
//! [`Herd`] holds the server's name, its location [`store`], its [`link`]s to
//! the neighbours and the log. Its handlers are sans-IO: they take a parsed line
//! and return what should happen ([`ClientAction`]); the event loop
//! ([`crate::event_loop`]) does the writing, flooding and Places requests.
//! The herd file lives in [`config`]; the catch-up's reconciliation in
//! [`sync`]; the state file in [`state`].

pub mod auth;
pub mod config;
pub mod link;
pub mod state;
pub mod store;
pub mod sync;

use crate::log::{Log, Part};
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
                let at = client::format_at(&self.name, now_ns, &req);
                if self.store.update(req.client, req.time_ns, &at) {
                    self.persist(&at);
                    ClientAction::ReplyAndFlood(at)
                } else {
                    let mut reply = at;
                    reply.push(b'\n');
                    ClientAction::Reply(reply)
                }
            }
            Request::WhatsAt(req) => {
                let Some(position) = self.store.get(req.client) else {
                    return invalid(line);
                };
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
                    None => invalid(line),
                }
            }
            Request::Invalid => invalid(line),
        }
    }

    /// An update from the neighbour on link `from`: true if it is new here
    /// (and so must be flooded on, except back to `from`).
    pub fn peer_update(&mut self, from: usize, update: &Update) -> bool {
        let new = self
            .store
            .update(&update.client, update.time_ns, &update.at_line);
        if new {
            self.persist(&update.at_line);
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
    /// A position from a neighbour's catch-up (`SYNC`): stored and recorded
    /// like an update, true if it is new here, but not logged line by line:
    /// the catch-up logs one summary ([`sync::Incoming`]). What is new here
    /// need not be flooded on: see `docs/protocol.md`, "The catch-up".
    pub fn catch_up_update(&mut self, update: &Update) -> bool {
        let new = self
            .store
            .update(&update.client, update.time_ns, &update.at_line);
        if new {
            self.persist(&update.at_line);
        }
        new
    }

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

    /// The state file's upkeep, from the heartbeat: one step of a
    /// compaction, begun when the file has grown to many more records than
    /// positions. (A loop that calls [`Herd::state_step`] every turn while it
    /// returns true gets it done faster, in smaller steps.)
    pub fn compact_state(&mut self) {
        self.state_step(COMPACT_STEP_FROM_HEARTBEAT);
    }

    /// One bounded step of the state file's work: reading its records into
    /// the store while a load ([`state::StateFile::open_for_loading`]) runs,
    /// else a slice of a compaction, begun when the file has grown. About
    /// `budget` bytes of file each call. True while there is more to do:
    /// call again next turn.
    pub fn state_step(&mut self, budget: usize) -> bool {
        let Some(state) = self.state.as_mut() else {
            return false;
        };
        if state.is_loading() {
            return match state.load_step(&mut self.store, budget) {
                Ok(false) => true,
                Ok(true) => {
                    let l = state.load_stats();
                    self.log.event(format_args!(
                        "state file {}: loaded {} good records, {} positions, {} damaged records skipped, {} torn bytes cut",
                        state.path().display(),
                        l.records,
                        self.store.len(),
                        l.skipped,
                        l.torn_bytes
                    ));
                    false
                }
                Err(e) => {
                    self.log.event(format_args!(
                        "state file: reading failed: {e}; load stopped"
                    ));
                    state.stop_loading();
                    false
                }
            };
        }
        if state.wants_compaction(self.store.len()) {
            match state.begin_compaction() {
                Ok(()) => self.log.event(format_args!(
                    "state file: compacting {} positions",
                    self.store.len()
                )),
                Err(e) => {
                    self.log
                        .event(format_args!("state file: compaction failed: {e}"));
                    return false;
                }
            }
        }
        match state.compact_step(&self.store, budget) {
            Ok(state::Compacting::Idle) => false,
            Ok(state::Compacting::Copying | state::Compacting::Syncing) => true,
            Ok(state::Compacting::Done { records }) => {
                self.log.event(format_args!(
                    "state file: compacted to {records} records ({} positions)",
                    self.store.len()
                ));
                false
            }
            Err(e) => {
                self.log
                    .event(format_args!("state file: compaction failed: {e}"));
                false
            }
        }
    }
}

/// What one heartbeat's compaction step writes: 1 MiB, a millisecond or so.
const COMPACT_STEP_FROM_HEARTBEAT: usize = 1 << 20;

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
    fn a_catch_up_position_is_stored_once() {
        let mut h = herd();
        let u = crate::protocol::peer::parse_update(
            b"AT Jaquez +0.000120000 kiwi +34.068930-118.445127 1621464827.959498503",
        )
        .unwrap();
        assert!(h.catch_up_update(&u));
        assert!(!h.catch_up_update(&u));
        assert_eq!(&*h.store.get(b"kiwi").unwrap().at_line, &u.at_line[..]);
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
