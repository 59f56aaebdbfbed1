//! The read-only HTTP endpoint (`--http ADDR`, docs/spec.md §10): what a
//! request means, apart from any socket.
//!
//! - [`request`]: one request head read with `httparse`, within limits;
//! - [`response`]: status line, headers, body;
//! - [`protocol`]: [`HttpProtocol`], one connection as a sans-IO protocol
//!   object that returns actions;
//! - [`PAGE`]: the live page of the whole herd (`page.html`, one file with
//!   inline CSS and JavaScript, embedded in the binary).
//!
//! What `/metrics` and `/status` say is in [`crate::observe`]; the loop's side
//! (the listener, the connections in the slab, rendering through [`Site`]) is
//! `src/event_loop/http.rs`.

pub mod protocol;
pub mod request;
pub mod response;

pub use protocol::{HttpAction, HttpProtocol, Resource, Site};

/// `GET /`: the page that draws the herd and polls every server's `/status`.
pub const PAGE: &str = include_str!("page.html");
