//! What a server says about itself: counters ([`metrics`]), the `/status`
//! document ([`status`]) and the ring of the last updates it accepted
//! ([`Recent`]).
//!
//! The herd and the loop count into [`Metrics`] and [`Recent`] as things
//! happen (a field increment, a copy into a reused buffer). When a request
//! for `/metrics` or `/status` comes, the loop fills a [`Snapshot`] of what
//! the counters do not hold (the links' states, the gauges, the herd file)
//! and the renderers here turn it into text. Nothing here touches a socket.

pub mod metrics;
pub mod status;

use std::time::SystemTime;

pub use metrics::{ConnKind, Metrics, PlacesMetrics};

/// How many accepted updates [`Recent`] keeps.
pub const RECENT: usize = 50;

/// The link states as `/metrics` and `/status` name them.
pub const LINK_STATES: [&str; 4] = ["backoff", "dialing", "greeting", "up"];

/// Where an accepted update came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A client's IAMAT to this server.
    Client,
    /// A flood from the neighbour on this link.
    Neighbour(usize),
}

/// One accepted update.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The AT line, as stored.
    pub at_line: Vec<u8>,
    pub from: Source,
    /// When this server accepted it: microseconds since the epoch.
    pub time_us: u64,
}

/// The last [`RECENT`] updates this server accepted (new positions only),
/// in a ring whose buffers are reused: recording one is a copy, not an
/// allocation, once the ring is full.
#[derive(Debug, Default)]
pub struct Recent {
    ring: Vec<Accepted>,
    /// Where the next one goes once the ring is full.
    next: usize,
}

impl Recent {
    pub fn push(&mut self, at_line: &[u8], from: Source, time_us: u64) {
        if self.ring.len() < RECENT {
            self.ring.push(Accepted {
                at_line: at_line.to_vec(),
                from,
                time_us,
            });
            return;
        }
        let slot = &mut self.ring[self.next];
        slot.at_line.clear();
        slot.at_line.extend_from_slice(at_line);
        slot.from = from;
        slot.time_us = time_us;
        self.next = (self.next + 1) % RECENT;
    }

    /// Newest first.
    pub fn iter(&self) -> impl Iterator<Item = &Accepted> {
        // Once the ring has wrapped, the slots before `next` are the newer ones.
        let (newer, older) = self.ring.split_at(self.next.min(self.ring.len()));
        older.iter().chain(newer).rev()
    }

    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }
}

/// Microseconds since the epoch, for [`Recent`] and `/status`.
pub fn micros(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A server of the herd file, as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerView {
    pub name: String,
    pub client: String,
    pub peer: String,
    /// The herd file's `http=`, or `run_herd.sh`'s default (client port + 20000).
    pub http: Option<String>,
    pub neighbours: Vec<String>,
}

/// The whole herd file, as `/status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HerdView {
    pub servers: Vec<ServerView>,
    /// Each link once, in file order.
    pub links: Vec<(String, String)>,
}

impl HerdView {
    /// The view of a loaded herd file.
    pub fn of(herd: &crate::herd::config::HerdConfig) -> HerdView {
        HerdView {
            servers: herd
                .servers
                .iter()
                .map(|s| ServerView {
                    name: s.name.clone(),
                    client: s.client.to_string(),
                    peer: s.peer.to_string(),
                    http: s.http_or_default().map(|a| a.to_string()),
                    neighbours: s.neighbours.clone(),
                })
                .collect(),
            links: herd
                .links()
                .into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }
    }
}

/// One of our links, as the loop sees it when asked.
#[derive(Debug, Clone)]
pub struct LinkSnapshot<'a> {
    pub neighbour: &'a str,
    /// One of [`LINK_STATES`].
    pub state: &'static str,
    /// When our link entered that state.
    pub since: SystemTime,
    /// The neighbour's link to us is up (it said HELLO).
    pub incoming: bool,
    /// The link is TLS.
    pub tls: bool,
    /// Bytes queued for the neighbour and not yet taken by its socket.
    pub unsent_bytes: usize,
    /// Failed attempts since it was last up.
    pub failures: u32,
}

/// What the renderers need that the counters do not hold, filled by the loop
/// for one request.
#[derive(Debug)]
pub struct Snapshot<'a> {
    pub server: &'a str,
    pub version: &'a str,
    /// `rust` here; the asyncio herd says `asyncio`.
    pub implementation: &'a str,
    pub started: SystemTime,
    pub now: SystemTime,
    pub client_addr: String,
    pub peer_addr: String,
    pub http_addr: String,
    pub herd: &'a HerdView,
    /// In link order, as [`Metrics::links`].
    pub links: Vec<LinkSnapshot<'a>>,
    pub positions: usize,
    pub clients: usize,
    pub http_connections: usize,
    pub metrics: &'a Metrics,
    pub places: &'a PlacesMetrics,
    pub recent: &'a Recent,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_fifty_newest_first() {
        let mut r = Recent::default();
        assert!(r.is_empty());
        for i in 0..120u64 {
            let from = if i % 2 == 0 {
                Source::Client
            } else {
                Source::Neighbour(1)
            };
            r.push(format!("AT x +0 c{i} +1+1 {i}").as_bytes(), from, i);
        }
        assert_eq!(r.len(), RECENT);
        let times: Vec<u64> = r.iter().map(|a| a.time_us).collect();
        assert_eq!(times, (70..120).rev().collect::<Vec<_>>());
        let newest = r.iter().next().unwrap();
        assert_eq!(newest.at_line, b"AT x +0 c119 +1+1 119");
        assert_eq!(newest.from, Source::Neighbour(1));
        let mut few = Recent::default();
        few.push(b"a", Source::Client, 1);
        few.push(b"b", Source::Client, 2);
        assert_eq!(few.iter().map(|a| a.time_us).collect::<Vec<_>>(), [2, 1]);
    }

    #[test]
    fn the_herd_view_of_the_default_herd() {
        let view = HerdView::of(&crate::herd::config::HerdConfig::default_herd());
        assert_eq!(view.servers.len(), 5);
        assert_eq!(view.servers[0].http.as_deref(), Some("127.0.0.1:32000"));
        assert_eq!(view.servers[4].peer, "127.0.0.1:22004");
        assert_eq!(view.links.len(), 6);
        assert_eq!(view.links[0], ("Riley".to_string(), "Jaquez".to_string()));
    }
}
