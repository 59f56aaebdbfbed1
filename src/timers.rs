//! The timer queue: asyncio's `loop.call_later` and `TimerHandle.cancel`.
//!
//! A binary heap of deadlines; the event loop sleeps in `poll` no longer than
//! [`Timers::time_until_next`], then pops what is due. Payloads are plain values
//! (an enum in the server), not closures: printable, testable, and the loop
//! decides what they mean. Cancelling just forgets the payload; its heap entry
//! is skipped when it comes up, which keeps `cancel` O(1).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

/// Names a scheduled timer, for [`Timers::cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

impl TimerId {
    /// A timer that was never scheduled: cancelling it does nothing.
    pub const NONE: TimerId = TimerId(u64::MAX);
}

/// Deadlines and what to do at each.
#[derive(Debug)]
pub struct Timers<E> {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: HashMap<u64, E>,
    next_id: u64,
}

impl<E> Default for Timers<E> {
    fn default() -> Self {
        Timers {
            heap: BinaryHeap::new(),
            pending: HashMap::new(),
            next_id: 0,
        }
    }
}

impl<E> Timers<E> {
    /// Schedules `event` to come due `delay` after `now`.
    pub fn call_later(&mut self, now: Instant, delay: Duration, event: E) -> TimerId {
        self.call_at(now + delay, event)
    }

    /// Schedules `event` to come due at `when`.
    pub fn call_at(&mut self, when: Instant, event: E) -> TimerId {
        let id = self.next_id;
        self.next_id += 1;
        self.heap.push(Reverse((when, id)));
        self.pending.insert(id, event);
        TimerId(id)
    }

    /// Forgets a timer; cancelling one that already ran is harmless.
    pub fn cancel(&mut self, id: TimerId) {
        self.pending.remove(&id.0);
    }

    /// How long `poll` may sleep: until the nearest live deadline, or forever.
    pub fn time_until_next(&mut self, now: Instant) -> Option<Duration> {
        while let Some(Reverse((when, id))) = self.heap.peek() {
            if self.pending.contains_key(id) {
                return Some(when.saturating_duration_since(now));
            }
            self.heap.pop();
        }
        None
    }

    /// The next event due at `now`, if any; call until `None`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<E> {
        while let Some(&Reverse((when, id))) = self.heap.peek() {
            if when > now {
                return None;
            }
            self.heap.pop();
            if let Some(event) = self.pending.remove(&id) {
                return Some(event);
            }
        }
        None
    }

    /// How many timers are scheduled.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True when nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// The part of a timer queue that a protocol needs: asyncio's
/// `loop.call_later` and `TimerHandle.cancel`, at the current instant.
///
/// The herd's protocols and the Places client schedule their own event types
/// through this trait, so they never name the loop's [`Timers`] payload; the
/// loop hands them a [`Scheduler`] that wraps their events into its own, and
/// unit tests hand them one over a `Timers` of their own with a fake clock.
pub trait Schedule<E> {
    /// Schedules `event` to come due `delay` from now.
    fn call_later(&mut self, delay: Duration, event: E) -> TimerId;
    /// Forgets a timer (harmless if it already ran).
    fn cancel(&mut self, id: TimerId);
}

/// A timer queue seen at one instant, scheduling events of type `E` as the
/// queue's own type `T` through `wrap`.
pub struct Scheduler<'a, T, F> {
    pub timers: &'a mut Timers<T>,
    pub now: Instant,
    pub wrap: F,
}

impl<E, T, F: Fn(E) -> T> Schedule<E> for Scheduler<'_, T, F> {
    fn call_later(&mut self, delay: Duration, event: E) -> TimerId {
        self.timers.call_later(self.now, delay, (self.wrap)(event))
    }

    fn cancel(&mut self, id: TimerId) {
        self.timers.cancel(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_in_deadline_order_and_cancel_forgets() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.call_later(t0, Duration::from_millis(30), "c");
        let b = t.call_later(t0, Duration::from_millis(20), "b");
        t.call_later(t0, Duration::from_millis(10), "a");
        assert_eq!(t.time_until_next(t0), Some(Duration::from_millis(10)));
        assert_eq!(t.pop_expired(t0), None);
        t.cancel(b);
        let later = t0 + Duration::from_millis(30);
        assert_eq!(t.pop_expired(later), Some("a"));
        assert_eq!(t.pop_expired(later), Some("c"));
        assert_eq!(t.pop_expired(later), None);
        assert_eq!(t.time_until_next(later), None);
        assert!(t.is_empty());
    }

    #[test]
    fn cancelled_head_does_not_shorten_the_sleep() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        let a = t.call_later(t0, Duration::from_millis(1), 1);
        t.call_later(t0, Duration::from_millis(50), 2);
        t.cancel(a);
        assert_eq!(t.time_until_next(t0), Some(Duration::from_millis(50)));
        assert_eq!(t.len(), 1);
    }
}
