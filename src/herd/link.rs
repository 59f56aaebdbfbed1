//! A peer link: this server's connection to one neighbour, as a state machine.
//!
//! ```text
//!            dial                connected, HELLO sent     WELCOME
//! Backoff ---------> Dialing ---------------------> Greeting ------> Up
//!    ^                  |                              |              |
//!    +------------------+------------------------------+--------------+
//!        failed dial, refused, timeout, silence, EOF, backlog: back off
//! ```
//!
//! Each server dials each neighbour and sends its updates on that connection;
//! it receives the neighbour's updates on the connection the neighbour dialed
//! (`incoming`). So every update crosses a link once per direction, and a
//! neighbour's HELLO tells us it is back: we cancel the backoff and dial at once.
//! The loop drives the transitions ([`crate::event_loop`]); every one goes
//! through [`Link::set_state`], which logs it.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::conn_ref::ConnRef;
use crate::log::Log;
use crate::timers::TimerId;

/// The first retry comes this soon after a failure...
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// ...and doubles up to this.
pub const BACKOFF_MAX: Duration = Duration::from_millis(3200);

/// Where a link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Waiting for the timer to dial again.
    Backoff { timer: TimerId },
    /// A non-blocking connect is in progress (asyncio's `open_connection`).
    Dialing { conn: ConnRef, timeout: TimerId },
    /// Connected; our HELLO is out, the neighbour's WELCOME is awaited.
    Greeting { conn: ConnRef, timeout: TimerId },
    /// Updates flow to the neighbour.
    Up { conn: ConnRef },
}

impl LinkState {
    fn label(&self) -> &'static str {
        match self {
            LinkState::Backoff { .. } => "Backoff",
            LinkState::Dialing { .. } => "Dialing",
            LinkState::Greeting { .. } => "Greeting",
            LinkState::Up { .. } => "Up",
        }
    }

    /// The connection this state holds, if any.
    pub fn conn(&self) -> Option<ConnRef> {
        match *self {
            LinkState::Backoff { .. } => None,
            LinkState::Dialing { conn, .. }
            | LinkState::Greeting { conn, .. }
            | LinkState::Up { conn } => Some(conn),
        }
    }
}

/// One neighbour and our link to it.
#[derive(Debug)]
pub struct Link {
    pub name: String,
    /// The neighbour's peer address(es), resolved at start.
    pub addrs: Vec<SocketAddr>,
    pub state: LinkState,
    /// Failed attempts since the link was last up: sets the next backoff.
    pub failures: u32,
    /// The connection the neighbour dialed to us, once it said HELLO.
    pub incoming: Option<ConnRef>,
    /// When `state` was entered (for `/status`).
    pub since: SystemTime,
}

impl Link {
    /// Moves to `next`, logging `from => to` (as smoltcp's `set_state` does).
    pub fn set_state(&mut self, next: LinkState, why: &str, log: &mut Log) {
        log.event(format_args!(
            "link {}: {} => {} ({why})",
            self.name,
            self.state.label(),
            next.label()
        ));
        self.state = next;
        self.since = SystemTime::now();
    }

    /// The connection of the link when it is up.
    pub fn up_conn(&self) -> Option<ConnRef> {
        match self.state {
            LinkState::Up { conn } => Some(conn),
            _ => None,
        }
    }
}

/// The wait before the next dial after `failures` failures: 100 ms doubling
/// to 3.2 s, times a jitter factor in [0.75, 1.25) so that servers that fell
/// together do not all dial back in the same instant. `jitter` is in [0, 1).
pub fn backoff_delay(failures: u32, jitter: f64) -> Duration {
    let base = BACKOFF_MIN
        .saturating_mul(1u32 << failures.min(10))
        .min(BACKOFF_MAX);
    base.mul_f64(0.75 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A small xorshift generator for jitter: no cryptographic need, no crate.
#[derive(Debug)]
pub struct Jitter(u64);

impl Jitter {
    /// Seeded from the clock and the pid, so restarted servers differ.
    pub fn new() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        Jitter((t ^ u64::from(std::process::id()).rotate_left(32)) | 1)
    }

    /// The next number in [0, 1).
    pub fn next_unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff_delay(0, 0.5), Duration::from_millis(100));
        assert_eq!(backoff_delay(1, 0.5), Duration::from_millis(200));
        assert_eq!(backoff_delay(5, 0.5), BACKOFF_MAX);
        assert_eq!(backoff_delay(u32::MAX, 0.5), BACKOFF_MAX);
        assert_eq!(backoff_delay(0, 0.0), Duration::from_millis(75));
        assert!(backoff_delay(0, 0.999) < Duration::from_millis(125));
    }

    #[test]
    fn jitter_stays_in_the_unit_interval() {
        let mut j = Jitter::new();
        for _ in 0..1000 {
            let x = j.next_unit();
            assert!((0.0..1.0).contains(&x));
        }
    }
}
