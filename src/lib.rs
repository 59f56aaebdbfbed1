//! proxy-herd: an application server herd on one hand-rolled `mio` event loop.
//!
//! Where things live (each file's own `//!` comment says more):
//!
//! - [`event_loop`]: the loop itself (`run_forever`): owns the `Poll`, the slab of
//!   connections and the timer queue, and is the only place that calls `poll`;
//!   one file each for clients, peer links and the Places connections.
//! - [`timers`]: `call_later` / `cancel`; the nearest deadline is the poll timeout.
//! - [`transport`]: buffered, non-blocking TCP transports and the line splitter.
//! - [`protocol`]: client lines and peer messages, parsed and formatted as pure functions.
//! - [`herd`]: the herd file, the location store, the peer links' state machines,
//!   peer authentication and the state file.
//! - [`places`]: the Places client: HTTP/1.1 over TLS, and the Google-style JSON printer.
//! - [`offline`]: the offline Places service (`places-offline`).
//! - [`http`]: the read-only HTTP endpoint (`--http`): requests, responses, the
//!   sans-IO connection object and the herd's live page.
//! - [`observe`]: what a server says about itself: the Prometheus metrics, the
//!   `/status` JSON and the ring of recent updates.
//! - [`log`]: the buffered event log.
//! - [`cli`]: the `proxy-herd` command line.
//! - [`bench`](mod@bench): `herd-bench`, which drives a running herd (either implementation)
//!   over loopback and measures it.

pub mod bench;
pub mod cli;
pub mod event_loop;
pub mod herd;
pub mod http;
pub mod log;
pub mod observe;
pub mod offline;
pub mod places;
pub mod protocol;
pub mod timers;
pub mod transport;
