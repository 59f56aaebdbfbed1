//! The herd: this server's view of it and what it does with each line.
//!
//! [`Herd`] holds the server's name, its location [`store`], its [`link`]s to
//! the neighbours and the log. Its handlers are sans-IO: they take a parsed line
//! and return what should happen ([`ClientAction`]); the event loop
//! ([`crate::event_loop`]) does the writing, flooding and Places requests.
//! The herd file lives in [`config`]; the catch-up's reconciliation in
//! [`sync`]; the state file in [`state`].

pub mod actions;
pub mod auth;
pub mod client_protocol;
pub mod config;
pub mod link;
pub mod peer_protocol;
pub mod state;
pub mod store;
pub mod sync;

use crate::conn_ref::ConnRef;
use crate::log::{Log, Part};
use crate::observe::{Metrics, Recent, Source};
use crate::places::PlacesQuery;
use crate::protocol::client::{self, parse_location, Request};
use crate::protocol::peer::{Update, MAX_PEER_LINE};
use crate::timers::Schedule;
use actions::HerdEvent;
use link::{backoff_delay, Jitter, Link, LinkState};
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

/// One server's state in the herd: what every protocol handler is given.
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
    pub limits: Limits,
    /// The last Places request number given out (they name requests in the log).
    pub next_request: u64,
    /// Heartbeats are counted, not logged line by line.
    pub heartbeats_sent: u64,
    pub heartbeats_received: u64,
    pub jitter: Jitter,
    /// The neighbour's connection whose catch-up into this server is being
    /// answered: one at a time, so that an empty server does not receive
    /// the store from every neighbour at once.
    pub incoming_catch_up: Option<ConnRef>,
    /// How many state writes have failed since the last one that worked,
    /// while the state file is failing (logged once per episode).
    pub state_failures: Option<u64>,
    /// What `/metrics` counts: the herd and the protocols count lines,
    /// updates and peer messages through it, the loop the rest.
    pub metrics: Metrics,
    /// The last updates accepted, for `/status`.
    pub recent: Recent,
}

/// The limits from the command line: the client port's, and the store's.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub max_clients: Option<usize>,
    pub idle_timeout: Option<std::time::Duration>,
    /// `--max-positions`: the store keeps this many (see [`store`]).
    pub max_positions: Option<usize>,
}

impl Herd {
    /// A server called `name` with links to `neighbours` (name, peer
    /// addresses), all backing off until the loop dials them.
    pub fn new(
        name: String,
        neighbours: Vec<(String, Vec<std::net::SocketAddr>)>,
        log: Log,
        limits: Limits,
    ) -> Herd {
        let links = neighbours
            .into_iter()
            .map(|(name, addrs)| Link {
                name,
                addrs,
                state: LinkState::Backoff {
                    timer: crate::timers::TimerId::NONE,
                },
                failures: 0,
                incoming: None,
                since: std::time::SystemTime::now(),
            })
            .collect::<Vec<Link>>();
        let links_len = links.len();
        Herd {
            name,
            store: limits
                .max_positions
                .map_or_else(Store::default, Store::bounded),
            links,
            log,
            state: None,
            secret: None,
            limits,
            next_request: 0,
            heartbeats_sent: 0,
            heartbeats_received: 0,
            jitter: Jitter::new(),
            state_failures: None,
            incoming_catch_up: None,
            metrics: Metrics::new(links_len),
            recent: Recent::default(),
        }
    }

    /// Our dial of `link` is under way on `conn`: it must connect (and be
    /// welcomed) within [`peer_protocol::LINK_TIMEOUT`].
    pub fn dialing(&mut self, link: usize, conn: ConnRef, timers: &mut dyn Schedule<HerdEvent>) {
        let timeout = timers.call_later(
            peer_protocol::LINK_TIMEOUT,
            HerdEvent::LinkTimeout { link, conn },
        );
        let l = &mut self.links[link];
        let why = match l.addrs.first() {
            Some(addr) => format!("dialing {addr}"),
            None => "dialing".to_string(),
        };
        l.set_state(LinkState::Dialing { conn, timeout }, &why, &mut self.log);
    }

    /// The link failed: wait, then dial again (asyncio: `call_later(delay,
    /// dial)`). Returns the connection it held, which the caller closes.
    pub fn back_off(
        &mut self,
        link: usize,
        why: &str,
        timers: &mut dyn Schedule<HerdEvent>,
    ) -> Option<ConnRef> {
        let l = &mut self.links[link];
        let held = l.state.conn();
        if let LinkState::Dialing { timeout, .. } | LinkState::Greeting { timeout, .. } = l.state {
            timers.cancel(timeout);
        }
        let delay = backoff_delay(l.failures, self.jitter.next_unit());
        l.failures = l.failures.saturating_add(1);
        let timer = timers.call_later(delay, HerdEvent::Redial { link });
        let why = format!("{why}; retry in {} ms", delay.as_millis());
        l.set_state(LinkState::Backoff { timer }, &why, &mut self.log);
        held
    }

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
                if at.len() > MAX_PEER_LINE {
                    // Its AT line could not travel to the neighbours.
                    return invalid(line);
                }
                if !self.store.is_new(req.client, req.time_ns, &at) {
                    let mut reply = at;
                    reply.push(b'\n');
                    return ClientAction::Reply(reply);
                }
                // Durable before acknowledged: an IAMAT whose record cannot
                // be written is not answered with AT (docs/reliability.md).
                if !self.write_state_now(&at) {
                    return invalid(line);
                }
                if self.store.update(req.client, req.time_ns, &at) {
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
                    // Counted as invalid: a WHATSAT for an unknown client.
                    self.metrics.lines_invalid += 1;
                    return invalid(line);
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
                    None => invalid(line),
                }
            }
            Request::Invalid => {
                self.metrics.lines_invalid += 1;
                invalid(line)
            }
        }
    }

    /// An update from the neighbour on link `from`: true if it is new here
    /// (and so must be flooded on, except back to `from`).
    pub fn peer_update(&mut self, from: usize, update: &Update) -> bool {
        self.peer_update_line(from, &update.client, update.time_ns, &update.at_line)
    }

    /// [`Herd::peer_update`] for a canonical AT line, its client ID and
    /// client time (as [`crate::protocol::peer::update_key`] reads them).
    pub fn peer_update_line(
        &mut self,
        from: usize,
        client: &[u8],
        time_ns: i128,
        at_line: &[u8],
    ) -> bool {
        let new = self.store.update(client, time_ns, at_line);
        if new {
            self.persist(at_line);
            let now = crate::observe::micros(std::time::SystemTime::now());
            self.recent.push(at_line, Source::Neighbour(from), now);
        }
        self.note_update(from, client, new);
        new
    }

    /// An update from link `from` that is not new here: dropped, and logged.
    pub fn peer_update_known(&mut self, from: usize, client: &[u8]) {
        self.note_update(from, client, false);
    }

    /// Counts and logs an update from link `from`.
    fn note_update(&mut self, from: usize, client: &[u8], new: bool) {
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
            Part::Bytes(client),
        ]);
    }
}

impl Herd {
    /// A position from a neighbour's catch-up (`SYNC`): stored and recorded
    /// like an update, true if it is new here, but not logged line by line:
    /// the catch-up logs one summary ([`sync::Incoming`]). What is new here
    /// need not be flooded on: see `docs/protocol.md`, "The catch-up".
    pub fn catch_up_update(&mut self, update: &Update) -> bool {
        self.catch_up_line(&update.client, update.time_ns, &update.at_line)
    }

    /// [`Herd::catch_up_update`] for a canonical AT line, its client ID and
    /// client time.
    pub fn catch_up_line(&mut self, client: &[u8], time_ns: i128, at_line: &[u8]) -> bool {
        let new = self.store.update(client, time_ns, at_line);
        if new {
            self.persist(at_line);
        }
        new
    }

    fn persist(&mut self, at_line: &[u8]) {
        if let Some(state) = self.state.as_mut() {
            state.record(at_line);
        }
    }

    /// Writes a client's new position to the state file now; false if it
    /// could not be written (true without a state file).
    fn write_state_now(&mut self, at_line: &[u8]) -> bool {
        let Some(state) = self.state.as_mut() else {
            return true;
        };
        let result = state.write_now(at_line);
        self.state_outcome(result)
    }

    /// Writes what neighbours sent to the state file (they are not
    /// acknowledged, so this waits for the end of the read).
    pub fn flush_state(&mut self) {
        // Only a write that was tried says whether the file works.
        if let Some(result) = self
            .state
            .as_mut()
            .filter(|s| s.has_pending())
            .map(|s| s.flush())
        {
            self.state_outcome(result);
        }
    }

    /// Logs a failing state file once per episode, and its recovery.
    fn state_outcome(&mut self, result: std::io::Result<()>) -> bool {
        match result {
            Ok(()) => {
                if let Some(failed) = self.state_failures.take() {
                    self.log.event(format_args!(
                        "state file: writing again after {failed} failed writes; IAMATs are acknowledged again"
                    ));
                }
                true
            }
            Err(e) => {
                if self.state_failures.is_none() {
                    self.log.event(format_args!(
                        "state file: write failed: {e}; new IAMATs are answered with `?` until it can be written"
                    ));
                }
                *self.state_failures.get_or_insert(0) += 1;
                false
            }
        }
    }

    /// True while the state file is still being read into the store.
    pub fn is_loading(&self) -> bool {
        self.state.as_ref().is_some_and(|s| s.is_loading())
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

fn invalid(line: &[u8]) -> ClientAction {
    let mut reply = Vec::with_capacity(line.len() + 3);
    client::write_invalid(&mut reply, line);
    ClientAction::Reply(reply)
}

/// A fake world for the protocols' unit tests: a herd, a timer queue on a
/// fake clock, and the actions asked for. No sockets, no sleeps.
#[cfg(test)]
pub(crate) mod testing {
    use std::time::{Duration, Instant};

    use super::actions::{Action, Ctx, HerdEvent};
    use super::{Herd, Limits};
    use crate::conn_ref::ConnRef;
    use crate::log::Log;
    use crate::timers::{Scheduler, Timers};

    pub struct World {
        pub herd: Herd,
        pub timers: Timers<HerdEvent>,
        pub now: Instant,
        pub actions: Vec<Action>,
    }

    /// The connection the tests' handlers run for.
    pub const ME: ConnRef = ConnRef { key: 7, gen: 1 };

    impl World {
        /// Server `name` with links to `neighbours`.
        pub fn new(name: &str, neighbours: &[&str], limits: Limits) -> World {
            let addr = "127.0.0.1:1".parse().expect("an address");
            let links = neighbours
                .iter()
                .map(|n| (n.to_string(), vec![addr]))
                .collect();
            World {
                herd: Herd::new(name.to_string(), links, Log::discard(), limits),
                timers: Timers::default(),
                now: Instant::now(),
                actions: Vec::new(),
            }
        }

        /// Runs `f` with a context for connection `me` at the fake time.
        pub fn with<R>(&mut self, me: ConnRef, f: impl FnOnce(&mut Ctx) -> R) -> R {
            let mut scheduler = Scheduler {
                timers: &mut self.timers,
                now: self.now,
                wrap: |e| e,
            };
            let mut ctx = Ctx {
                herd: &mut self.herd,
                timers: &mut scheduler,
                now: self.now,
                now_ns: 1_700_000_000_000_000_000,
                me,
                actions: &mut self.actions,
            };
            f(&mut ctx)
        }

        /// Moves the fake clock on and returns the timers that came due.
        pub fn advance(&mut self, by: Duration) -> Vec<HerdEvent> {
            self.now += by;
            std::iter::from_fn(|| self.timers.pop_expired(self.now)).collect()
        }

        /// The actions asked for since the last call.
        pub fn take_actions(&mut self) -> Vec<Action> {
            std::mem::take(&mut self.actions)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn herd() -> Herd {
        Herd::new(
            "Riley".into(),
            Vec::new(),
            Log::discard(),
            Limits::default(),
        )
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
    fn an_iamat_whose_record_cannot_be_written_is_not_acknowledged() {
        let dir = std::env::temp_dir().join(format!("herd-state-unit-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("state");
        let _ = std::fs::remove_file(&path);
        let mut h = herd();
        let (mut state, _) = state::StateFile::open(&path).unwrap();
        state.fail_writes().unwrap();
        h.state = Some(state);
        let line: &[u8] = b"IAMAT kiwi +1-1 5";
        assert_eq!(
            h.client_line(line, 10),
            ClientAction::Reply(b"? IAMAT kiwi +1-1 5\n".to_vec())
        );
        assert!(h.store.get(b"kiwi").is_none(), "not stored, so not flooded");
        h.client_line(line, 10);
        assert_eq!(h.state_failures, Some(2), "one episode, counted");
        // Space comes back: acknowledged again, and the record is whole.
        h.state.as_mut().unwrap().heal().unwrap();
        assert!(matches!(
            h.client_line(line, 10),
            ClientAction::ReplyAndFlood(_)
        ));
        assert_eq!(h.state_failures, None);
        let (_, loaded) = state::StateFile::open(&path).unwrap();
        assert_eq!(loaded.positions.len(), 1);
        assert_eq!(loaded.skipped, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_iamat_whose_at_line_could_not_travel_is_refused() {
        let mut h = herd();
        let mut line = b"IAMAT ".to_vec();
        line.extend(std::iter::repeat_n(b'k', MAX_PEER_LINE));
        line.extend_from_slice(b" +1-1 5");
        assert!(
            matches!(h.client_line(&line, 10), ClientAction::Reply(r) if r.starts_with(b"? IAMAT"))
        );
        // The longest IAMAT the client port takes fits a peer line.
        let mut line = b"IAMAT ".to_vec();
        let id_len = crate::protocol::client::MAX_LINE - line.len() - b" +1-1 5".len();
        line.extend(std::iter::repeat_n(b'k', id_len));
        line.extend_from_slice(b" +1-1 5");
        assert!(
            matches!(h.client_line(&line, 10), ClientAction::ReplyAndFlood(at) if at.len() <= MAX_PEER_LINE)
        );
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
