//! [`ConnRef`]: how anything outside the event loop names a connection.
//!
//! The loop's slab reuses keys, so a timer, a Places request or a link that
//! names a connection carries the key *and* the generation the slot had; the
//! loop ignores a `ConnRef` whose slot has since been given to someone else.
//! This module is neutral ground: the loop, the herd's protocols and the
//! Places client all import it, and it imports none of them.

/// A connection's slab key and generation: stale once the slot is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnRef {
    pub key: usize,
    pub gen: u32,
}
