//! Latency samples and their percentiles: pure arithmetic, no clocks. The
//! load generators record one sample per reply; the report prints a
//! [`Summary`].

use std::time::Duration;

/// Latencies in nanoseconds, one per reply, unsorted until summarised.
#[derive(Debug, Default, Clone)]
pub struct Samples(Vec<u64>);

/// No more samples than this are kept (about 128 MB); later ones are counted
/// in the throughput but not in the percentiles, so memory stays bounded.
pub const MAX_SAMPLES: usize = 16 << 20;

impl Samples {
    pub fn new() -> Samples {
        Samples(Vec::with_capacity(1 << 16))
    }

    pub fn record(&mut self, latency: Duration) {
        if self.0.len() < MAX_SAMPLES {
            self.0
                .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn extend(&mut self, other: Samples) {
        let room = MAX_SAMPLES.saturating_sub(self.0.len());
        self.0.extend(other.0.into_iter().take(room));
    }

    /// Sorts and reads off the percentiles; `None` without samples.
    pub fn summary(mut self) -> Option<Summary> {
        self.0.sort_unstable();
        let s = &self.0;
        Some(Summary {
            count: s.len(),
            p50: percentile(s, 50.0)?,
            p90: percentile(s, 90.0)?,
            p99: percentile(s, 99.0)?,
            p999: percentile(s, 99.9)?,
            max: *s.last()?,
        })
    }
}

/// The percentiles of a set of latencies, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub count: usize,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    /// The worst 0.1 %: where a rare pause (a collection) shows first.
    pub p999: u64,
    pub max: u64,
}

/// The nearest-rank percentile of sorted samples: the smallest sample with at
/// least `p` percent of the samples at or below it. No interpolation, so the
/// figure is always a latency that some request really had.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    // Less a hair, so that float noise (99.9 / 100 is not exact) cannot
    // push a whole rank up.
    let rank = (p * sorted.len() as f64 / 100.0 - 1e-9).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Nanoseconds as a short human figure: `850us`, `1.25ms`, `2.0s`.
pub fn human_ns(ns: u64) -> String {
    let ns = ns as f64;
    if ns < 1e3 {
        format!("{ns:.0}ns")
    } else if ns < 1e6 {
        format!("{:.0}us", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2}ms", ns / 1e6)
    } else {
        format!("{:.2}s", ns / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let s: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&s, 50.0), Some(50));
        assert_eq!(percentile(&s, 90.0), Some(90));
        assert_eq!(percentile(&s, 99.0), Some(99));
        assert_eq!(percentile(&s, 100.0), Some(100));
        let k: Vec<u64> = (1..=2000).collect();
        assert_eq!(percentile(&k, 99.9), Some(1998));
        assert_eq!(percentile(&s, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[1, 2], 50.0), Some(1));
        assert_eq!(percentile(&[1, 2], 51.0), Some(2));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&s, 101.0), None);
    }

    #[test]
    fn summary_sorts_first() {
        let mut s = Samples::new();
        for us in [5u64, 1, 4, 2, 3, 10, 9, 8, 7, 6] {
            s.record(Duration::from_micros(us));
        }
        let sum = s.summary().expect("samples");
        assert_eq!(sum.count, 10);
        assert_eq!(sum.p50, 5_000);
        assert_eq!(sum.p90, 9_000);
        assert_eq!(sum.p99, 10_000);
        assert_eq!(sum.p999, 10_000);
        assert_eq!(sum.max, 10_000);
        assert_eq!(Samples::new().summary(), None);
    }

    #[test]
    fn human_units() {
        assert_eq!(human_ns(999), "999ns");
        assert_eq!(human_ns(850_000), "850us");
        assert_eq!(human_ns(1_250_000), "1.25ms");
        assert_eq!(human_ns(2_000_000_000), "2.00s");
    }
}
