//! The Places client: requests, responses and the Google-style JSON reply.

pub mod client;
pub mod google_json;
pub mod http;
pub mod new_api;

pub use client::{PlacesAction, PlacesClient, PlacesConn, PlacesEvent, PlacesSettings};
