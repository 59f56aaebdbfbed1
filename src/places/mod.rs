//! The Places client: WHATSAT's trip to the Google Places API over HTTPS.
//!
//! - [`client`]: the request and connection state machines the loop drives;
//! - [`tls`]: the TLS transport (all of rustls's plumbing);
//! - [`resolver`]: name resolution on a thread (asyncio's `run_in_executor`);
//! - [`http`]: HTTP/1.1 requests and the incremental response reader (pure);
//! - [`reply`]: from a Places answer to the WHATSAT reply's JSON (pure);
//! - [`google_json`], [`new_api`]: the reply's JSON in Google's text style,
//!   and Places API (New) answers converted to the legacy shape (pure);
//! - [`reprint`]: legacy answers printed straight from the body's bytes, the
//!   fast path for [`reply::render_reply`] (pure).

pub mod client;
pub mod google_json;
pub mod http;
pub mod new_api;
pub mod reply;
pub mod reprint;
pub mod resolver;
pub mod tls;

pub use client::{PlacesAction, PlacesClient, PlacesConn, PlacesEvent, PlacesSettings};

use crate::protocol::client::Coordinates;

/// A WHATSAT that needs Places: the stored AT line and what to ask.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct PlacesQuery {
    pub at_line: Vec<u8>,
    pub coords: Coordinates,
    pub radius_m: String,
    pub bound: u8,
}

/// xorshift64*: deterministic noise for the tests, without a crate.
#[cfg(test)]
pub(crate) struct TestRng(pub u64);

#[cfg(test)]
impl TestRng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}
