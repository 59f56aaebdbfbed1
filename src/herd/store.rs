//! The location store: every client's newest position, as its AT line.
//!
//! Newest wins by client time. Two positions with the same client time are
//! ordered by their AT lines' bytes (greater wins): every server applies the
//! same rule to the same lines, so all servers agree whatever order the
//! updates arrive in. An AT line equal to the stored one is not new, which is
//! what makes floods end (see `docs/protocol.md`).

use std::collections::HashMap;

/// A client's newest known position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The client's own time, in nanoseconds since the epoch.
    pub time_ns: i128,
    /// The AT line as the receiving server made it, without `\n`.
    pub at_line: Box<[u8]>,
}

/// Client ID -> newest position.
#[derive(Debug, Default)]
pub struct Store {
    positions: HashMap<Box<[u8]>, Position>,
}

impl Store {
    /// Records a position if it is newer than the one known; true if it was.
    pub fn update(&mut self, client: &[u8], time_ns: i128, at_line: &[u8]) -> bool {
        match self.positions.get_mut(client) {
            Some(known) if (time_ns, at_line) <= (known.time_ns, &known.at_line[..]) => false,
            Some(known) => {
                *known = Position {
                    time_ns,
                    at_line: at_line.into(),
                };
                true
            }
            None => {
                let position = Position {
                    time_ns,
                    at_line: at_line.into(),
                };
                self.positions.insert(client.into(), position);
                true
            }
        }
    }

    /// True if this position would replace what is known (or is the first).
    pub fn is_new(&self, client: &[u8], time_ns: i128, at_line: &[u8]) -> bool {
        match self.positions.get(client) {
            Some(known) => (time_ns, at_line) > (known.time_ns, &known.at_line[..]),
            None => true,
        }
    }

    /// The newest position of `client`, if known.
    pub fn get(&self, client: &[u8]) -> Option<&Position> {
        self.positions.get(client)
    }

    /// Every known position, for the catch-up.
    pub fn positions(&self) -> impl Iterator<Item = &Position> {
        self.positions.values()
    }

    /// How many clients are known.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// True when no position is known.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_client_time_wins() {
        let mut s = Store::default();
        assert!(s.update(b"kiwi", 10, b"AT A +0.000000001 kiwi +1+1 10"));
        assert!(!s.update(b"kiwi", 9, b"AT B +0.000000001 kiwi +1+1 9"));
        assert!(s.update(b"kiwi", 11, b"AT B +0.000000001 kiwi +1+1 11"));
        assert_eq!(
            &*s.get(b"kiwi").unwrap().at_line,
            b"AT B +0.000000001 kiwi +1+1 11"
        );
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn equal_times_agree_in_any_order_and_repeats_are_not_new() {
        let a: &[u8] = b"AT Jaquez +0.5 kiwi +1+1 10";
        let b: &[u8] = b"AT Riley +0.1 kiwi +2+2 10";
        let mut one = Store::default();
        let mut two = Store::default();
        assert!(one.update(b"kiwi", 10, a));
        assert!(one.update(b"kiwi", 10, b));
        assert!(two.update(b"kiwi", 10, b));
        assert!(!two.update(b"kiwi", 10, a));
        assert!(!two.update(b"kiwi", 10, b));
        assert_eq!(one.get(b"kiwi"), two.get(b"kiwi"));
    }
}
