//! TLS, for every side of the server: one transport and the herd's own PKI.
//!
//! - [`transport`]: the TLS transport (all of rustls's plumbing), generic over
//!   rustls's client and server connections; the Places client,
//!   `places-offline` and peer links all use it;
//! - [`link`]: a peer connection's transport, plaintext or TLS, behind the
//!   plaintext transport's methods, turning the other kind away in words;
//! - [`peer`]: peer-link TLS (`--peer-cert`, `--peer-key`, `--peer-ca`): the
//!   herd CA as the only trust anchor, certificates checked both ways, and the
//!   check that a neighbour's HELLO names a server its certificate is for;
//! - [`certs`]: `proxy-herd certs HERDFILE DIR`, a herd CA and one certificate
//!   per server.
//!
//! The Places client's trust (the web PKI roots plus `--places-ca`) stays in
//! [`crate::places::tls`]; `places-offline`'s identity in
//! `places-offline/src/tls.rs`.

pub mod certs;
pub mod link;
pub mod peer;
pub mod transport;

pub use transport::{Closed, Flushed, Pumped, Received, TlsConnection, TlsError, TlsTransport};
