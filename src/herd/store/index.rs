//! The client index: client ID -> entry number, by open addressing.
//!
//! A slot is 8 bytes: the entry number and 32 bits of the client's (mixed)
//! hash. The client ID itself is read from the entry's stored AT line, so it
//! is never stored twice; the hash bits let a probe pass nearly every other
//! slot without touching a line, and let a shard be rebuilt from the slots
//! alone, never touching the entries.
//!
//! The index is split in 256 shards by the top byte of the client's hash. A
//! shard grows (or sheds its tombstones) by rebuilding itself alone, so no
//! single update rehashes more than 1/256 of the store: growth costs tens of
//! microseconds at a million positions, not a stall.
//!
//! Where a client lands in its shard comes from its hash mixed with a
//! per-process seed, so a client that invents IDs to collide in one shard
//! cannot also line them up on one probe sequence.

const SHARDS: usize = 256;
/// A slot's entry half when the slot is empty...
const EMPTY: u32 = u32::MAX;
/// ...or was emptied (probes go on past it).
const TOMBSTONE: u32 = u32::MAX - 1;
/// Entry numbers must stay below this.
pub const MAX_ENTRY: u32 = TOMBSTONE;
/// A shard is rebuilt when live slots plus tombstones pass 7/8 of it...
const MAX_LOAD: (usize, usize) = (7, 8);
/// ...to a size where they fill 5/8 of it: growth by 1.4, so that the
/// index stays between 5/8 and 7/8 full (8 to 13 bytes a position), whatever
/// the store's size. (Start positions are a multiply-high, so a shard's
/// size need not be a power of two.)
const REBUILT_LOAD: (usize, usize) = (5, 8);
const MIN_SLOTS: usize = 8;

pub struct Index {
    shards: Vec<Shard>,
    seed: u64,
}

#[derive(Default)]
struct Shard {
    /// Low half: the entry (or `EMPTY`, `TOMBSTONE`); high half: the mixed hash's top 32 bits.
    slots: Vec<u64>,
    live: usize,
    /// Live slots and tombstones.
    used: usize,
}

impl Default for Index {
    fn default() -> Self {
        use std::hash::BuildHasher;
        let seed = std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64);
        Index::with_seed(seed)
    }
}

/// The top 32 bits of the client hash mixed with the seed: where it probes
/// from (the top bits) and what a slot keeps of it.
fn mixed(h: u64, seed: u64) -> u32 {
    ((h ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32
}

fn start(m: u32, len: usize) -> usize {
    ((u64::from(m) * len as u64) >> 32) as usize
}

fn entry(slot: u64) -> u32 {
    slot as u32
}

fn slot(e: u32, m: u32) -> u64 {
    u64::from(m) << 32 | u64::from(e)
}

impl Index {
    pub fn with_seed(seed: u64) -> Self {
        Index {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            seed,
        }
    }

    fn shard(h: u64) -> usize {
        (h >> 56) as usize
    }

    /// The entry whose client hashes to `h` and for which `is_it` holds.
    pub fn find(&self, h: u64, is_it: impl Fn(u32) -> bool) -> Option<u32> {
        let s = &self.shards[Self::shard(h)];
        if s.slots.is_empty() {
            return None;
        }
        let m = mixed(h, self.seed);
        let mut i = start(m, s.slots.len());
        // The load bound keeps an empty slot in every shard: the probe ends.
        loop {
            let x = s.slots[i];
            match entry(x) {
                EMPTY => return None,
                e if e != TOMBSTONE && (x >> 32) as u32 == m && is_it(e) => return Some(e),
                _ => i = s.after(i),
            }
        }
    }

    /// Reads the slot a lookup of `h` starts at (for [`crate::herd::store::Store::warm`]).
    pub fn peek(&self, h: u64) -> u64 {
        let s = &self.shards[Self::shard(h)];
        if s.slots.is_empty() {
            return 0;
        }
        s.slots[start(mixed(h, self.seed), s.slots.len())]
    }

    /// Adds entry `e` (not yet in the index) whose client hashes to `h`.
    pub fn insert(&mut self, h: u64, e: u32) {
        let m = mixed(h, self.seed);
        let s = &mut self.shards[Self::shard(h)];
        if (s.used + 1) * MAX_LOAD.1 > s.slots.len() * MAX_LOAD.0 {
            s.rebuild();
        }
        let mut i = start(m, s.slots.len());
        while !matches!(entry(s.slots[i]), EMPTY | TOMBSTONE) {
            i = s.after(i);
        }
        if entry(s.slots[i]) == EMPTY {
            s.used += 1;
        }
        s.slots[i] = slot(e, m);
        s.live += 1;
    }

    /// Removes entry `e`, whose client hashes to `h`.
    pub fn remove(&mut self, h: u64, e: u32) {
        let m = mixed(h, self.seed);
        let s = &mut self.shards[Self::shard(h)];
        if s.slots.is_empty() {
            return;
        }
        let mut i = start(m, s.slots.len());
        loop {
            match entry(s.slots[i]) {
                EMPTY => return,
                x if x == e => break,
                _ => i = s.after(i),
            }
        }
        s.live -= 1;
        if entry(s.slots[s.after(i)]) == EMPTY {
            // Nothing probes past an empty slot: this one can be empty too.
            s.slots[i] = u64::from(EMPTY);
            s.used -= 1;
        } else {
            s.slots[i] = u64::from(TOMBSTONE);
        }
    }

    /// Bytes allocated.
    pub fn memory(&self) -> usize {
        self.shards
            .iter()
            .map(|s| 8 * s.slots.capacity())
            .sum::<usize>()
            + self.shards.capacity() * std::mem::size_of::<Shard>()
    }
}

impl Shard {
    /// The slot probed after slot `i`.
    fn after(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() {
            0
        } else {
            i + 1
        }
    }

    /// Re-places the live entries in a table sized for them (growing it, or
    /// just dropping the tombstones), from the slots alone.
    fn rebuild(&mut self) {
        let len = ((self.live + 1) * REBUILT_LOAD.1 / REBUILT_LOAD.0 + 1).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, vec![u64::from(EMPTY); len]);
        for x in old {
            if !matches!(entry(x), EMPTY | TOMBSTONE) {
                let mut i = start((x >> 32) as u32, len);
                while entry(self.slots[i]) != EMPTY {
                    i = self.after(i);
                }
                self.slots[i] = x;
            }
        }
        self.used = self.live;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries are numbers; an entry's "client" hash spreads them across the
    /// shards, but entries from 1000 on all share one hash.
    fn h(e: u32) -> u64 {
        if e >= 1000 {
            0xab00_0000_0000_0000
        } else {
            u64::from(e).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
        }
    }

    #[test]
    fn finds_what_was_inserted_and_forgets_what_was_removed() {
        let mut ix = Index::with_seed(7);
        for e in (0..500).chain(1000..1100) {
            ix.insert(h(e), e);
        }
        for e in (0..500).chain(1000..1100) {
            assert_eq!(ix.find(h(e), |x| x == e), Some(e), "entry {e}");
        }
        assert_eq!(ix.find(h(600), |x| x == 600), None);
        for e in (0..500).step_by(2).chain(1000..1050) {
            ix.remove(h(e), e);
        }
        for e in (0..500).chain(1000..1100) {
            let kept = (e < 500 && e % 2 == 1) || e >= 1050;
            assert_eq!(ix.find(h(e), |x| x == e).is_some(), kept, "entry {e}");
        }
        // Tombstones are reused or shed: churn does not grow the shard forever.
        for round in 0..50u32 {
            for e in 1050..1100 {
                ix.remove(h(e), e);
            }
            for e in 1050..1100 {
                ix.insert(h(e), e);
            }
            assert!(ix.shards[0xab].slots.len() <= 256, "round {round}");
        }
        for e in 1050..1100 {
            assert_eq!(ix.find(h(e), |x| x == e), Some(e));
        }
    }
}
