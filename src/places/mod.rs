//! The Places client: WHATSAT's trip to the Google Places API over HTTPS.
//!
//! - [`client`]: the request and connection state machines the loop drives;
//! - [`tls`]: the TLS transport (all of rustls's plumbing);
//! - [`resolver`]: name resolution on a thread (asyncio's `run_in_executor`);
//! - [`http`]: HTTP/1.1 requests and the incremental response reader (pure);
//! - [`google_json`], [`new_api`]: the reply's JSON in Google's text style,
//!   and Places API (New) answers converted to the legacy shape (pure);
//! - [`reprint`]: legacy answers printed straight from the body's bytes, the
//!   fast path for [`new_api::render_reply`] (pure).

pub mod client;
pub mod google_json;
pub mod http;
pub mod new_api;
pub mod reprint;
pub mod resolver;
pub mod tls;

pub use client::{PlacesAction, PlacesClient, PlacesConn, PlacesEvent, PlacesSettings};
