//! proxy-herd: an application server herd on one hand-rolled `mio` event loop.
//!
//! Where things live (each file's own `//!` comment says more):
//!
//! - [`event_loop`]: the loop itself (`run_forever`): owns the `Poll`, the slab of
//!   connections and the timer queue, and is the only place that calls `poll`;
//!   one file each for clients, peer links and the Places connections.
//! - [`timers`]: `call_later` / `cancel`; the nearest deadline is the poll timeout.
//! - [`conn_ref`]: how the protocols and timers name a connection of the loop's.
//! - [`transport`]: buffered, non-blocking TCP transports and the line splitter.
//! - [`protocol`]: client lines and peer messages, parsed and formatted as pure functions.
//! - [`herd`]: the herd file, the location store, the peer links' state machines,
//!   the catch-up's reconciliation, peer authentication and the state file.
//! - [`places`]: the Places client: HTTP/1.1 over TLS, and the Google-style JSON printer.
//! - [`tls`]: the one TLS transport (Places, `places-offline`, peer links), peer-link
//!   TLS configuration and `proxy-herd certs`.
//! - [`http`], [`observe`]: the read-only HTTP endpoint's parts (requests,
//!   responses, the sans-IO connection object, the live page; the metrics,
//!   `/status` and recent updates), built and unit-tested but not yet wired
//!   into the loop (issue 11; docs/http.md).
//! - [`log`]: the buffered event log.
//! - [`cli`]: the `proxy-herd` command line.
//!
//! The tools have crates of their own beside this one: `places-offline/`
//! (the offline Places service) and `herd-bench/` (the benchmark).

pub mod cli;
pub mod conn_ref;
pub mod event_loop;
pub mod herd;
pub mod http;
pub mod log;
pub mod observe;
pub mod places;
pub mod protocol;
pub mod timers;
pub mod tls;
pub mod transport;
