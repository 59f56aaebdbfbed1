//! The loop's timer queue (asyncio's `call_later`): deadlines in a heap; the
//! nearest one is the poll timeout. Payloads are plain enums, so firing a
//! timer is data the loop interprets, not a closure.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// What a timer does when it fires. Each names a connection by slab key and
/// by connection number, so a timer for a connection that has since closed
/// (its slot reused) is recognised and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerEvent {
    /// Send the connection's answers whose delay (`--latency-ms`) is over.
    Answer {
        /// Slab key.
        key: usize,
        /// Connection number.
        conn: u64,
    },
    /// Stop waiting for a closing peer's EOF and free the slot.
    DrainDeadline {
        /// Slab key.
        key: usize,
        /// Connection number.
        conn: u64,
    },
}

/// Pending timers, earliest first.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, TimerEvent)>>,
    seq: u64,
}

impl Timers {
    /// Schedules `event` to fire after `delay`.
    pub fn call_later(&mut self, delay: Duration, event: TimerEvent) {
        self.call_at(Instant::now() + delay, event);
    }

    /// Schedules `event` to fire at `when`.
    pub fn call_at(&mut self, when: Instant, event: TimerEvent) {
        // The sequence number keeps timers with equal deadlines in FIFO order.
        self.seq += 1;
        self.heap.push(Reverse((when, self.seq, event)));
    }

    /// How long poll may sleep: until the nearest deadline, or forever.
    pub fn time_until_next(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((when, _, _))| when.saturating_duration_since(now))
    }

    /// Removes and returns the next timer due by `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<TimerEvent> {
        match self.heap.peek() {
            Some(Reverse((when, _, _))) if *when <= now => {
                self.heap.pop().map(|Reverse((_, _, event))| event)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_deadline_then_fifo_order() {
        let mut t = Timers::default();
        let now = Instant::now();
        let a = TimerEvent::Answer { key: 1, conn: 1 };
        let b = TimerEvent::DrainDeadline { key: 2, conn: 2 };
        let c = TimerEvent::Answer { key: 3, conn: 3 };
        t.call_at(now + Duration::from_millis(5), a);
        t.call_at(now, b);
        t.call_at(now + Duration::from_millis(5), c);
        assert_eq!(t.time_until_next(now), Some(Duration::ZERO));
        assert_eq!(t.pop_expired(now), Some(b));
        assert_eq!(t.pop_expired(now), None);
        let later = now + Duration::from_millis(5);
        assert_eq!(t.pop_expired(later), Some(a));
        assert_eq!(t.pop_expired(later), Some(c));
        assert_eq!(t.time_until_next(later), None);
    }
}
