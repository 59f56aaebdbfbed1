//! The line arena: every stored AT line, packed into 1 MiB chunks.
//!
//! A line is addressed by a `u32` counted in 4-byte units, so the arena spans
//! 16 GiB without a pointer per line. A slot is the line's length rounded up to
//! a unit; a freed slot goes on the free list of its size (the list's link is
//! written in the slot itself) and the next line of that size takes it. A
//! client's successive lines nearly always round to the same size, so an
//! update overwrites its slot in place. Chunks are never moved or grown: the
//! arena grows by one chunk at a time, with no reallocation copying it all.

/// Bytes in a chunk.
const CHUNK: usize = 1 << 20;
/// Bytes in a unit, the arena's granularity.
const UNIT: usize = 4;
/// Units in a chunk.
const CHUNK_UNITS: u32 = (CHUNK / UNIT) as u32;
/// No slot (the end of a free list).
pub const NONE: u32 = u32::MAX;
/// The longest line the arena holds: a slot never spans two chunks. Lines are
/// at most 64 KiB (the line limit), far below this.
pub const MAX_LINE: usize = CHUNK;

#[derive(Default)]
pub struct Arena {
    chunks: Vec<Box<[u8]>>,
    /// The first unit never handed out (bump allocation in the last chunk).
    bump: u64,
    /// `free[units]`: the first free slot of that many units, or `NONE`.
    free: Vec<u32>,
    /// Units in free slots, for the memory report.
    free_units: u64,
}

/// A line's slot size in units (at least one, to hold a free-list link).
fn units(len: usize) -> u32 {
    len.div_ceil(UNIT).max(1) as u32
}

impl Arena {
    /// A slot for `len` bytes (contents unspecified), or `None` past the
    /// arena's reach.
    pub fn alloc(&mut self, len: usize) -> Option<u32> {
        if len > MAX_LINE {
            return None;
        }
        let n = units(len);
        if let Some(&head) = self.free.get(n as usize).filter(|&&h| h != NONE) {
            let next = self.read_link(head);
            self.free[n as usize] = next;
            self.free_units -= u64::from(n);
            return Some(head);
        }
        let within = (self.bump % u64::from(CHUNK_UNITS)) as u32;
        if within != 0 && within + n > CHUNK_UNITS {
            // The rest of this chunk is too short: keep it for a shorter line.
            let rest = (CHUNK_UNITS - within) as usize * UNIT;
            let at = u32::try_from(self.bump).ok()?;
            self.bump += u64::from(CHUNK_UNITS - within);
            self.free(at, rest);
        }
        let at = u32::try_from(self.bump).ok().filter(|&a| a != NONE)?;
        let chunk = (self.bump / u64::from(CHUNK_UNITS)) as usize;
        if chunk == self.chunks.len() {
            // Zeroed memory comes from the kernel untouched: a page costs
            // resident memory only once a line is written to it.
            self.chunks.push(vec![0u8; CHUNK].into_boxed_slice());
        }
        self.bump += u64::from(n);
        Some(at)
    }

    /// Gives back the slot at `at` that held `len` bytes.
    pub fn free(&mut self, at: u32, len: usize) {
        let n = units(len) as usize;
        if self.free.len() <= n {
            self.free.resize(n + 1, NONE);
        }
        let head = self.free[n];
        self.write_link(at, head);
        self.free[n] = at;
        self.free_units += n as u64;
    }

    /// True if a line of `new` bytes fits the slot of one of `old` bytes exactly.
    pub fn same_slot(old: usize, new: usize) -> bool {
        units(old) == units(new)
    }

    fn place(at: u32) -> (usize, usize) {
        (
            (at / CHUNK_UNITS) as usize,
            (at % CHUNK_UNITS) as usize * UNIT,
        )
    }

    /// The `len` bytes at `at`.
    pub fn get(&self, at: u32, len: usize) -> &[u8] {
        let (chunk, offset) = Self::place(at);
        &self.chunks[chunk][offset..offset + len]
    }

    /// Writes `bytes` into the slot at `at`.
    pub fn put(&mut self, at: u32, bytes: &[u8]) {
        let (chunk, offset) = Self::place(at);
        self.chunks[chunk][offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    fn read_link(&self, at: u32) -> u32 {
        let b = self.get(at, 4);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    fn write_link(&mut self, at: u32, next: u32) {
        self.put(at, &next.to_le_bytes());
    }

    /// Bytes allocated for chunks and bytes in free slots.
    pub fn memory(&self) -> (usize, usize) {
        (
            self.chunks.len() * CHUNK + self.free.capacity() * 4,
            self.free_units as usize * UNIT,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_by_size_and_never_span_chunks() {
        let mut a = Arena::default();
        let x = a.alloc(10).unwrap();
        a.put(x, b"0123456789");
        let y = a.alloc(10).unwrap();
        a.put(y, b"abcdefghij");
        assert_eq!(a.get(x, 10), b"0123456789");
        a.free(x, 10);
        // 9 to 12 bytes share a 3-unit slot.
        assert_eq!(a.alloc(12), Some(x));
        assert_ne!(a.alloc(10), Some(x));
        assert_eq!(a.get(y, 10), b"abcdefghij");
        // A big line that does not fit the rest of the chunk starts the next
        // one, and the rest is kept for a line of its size.
        let big = a.alloc(CHUNK - 10).unwrap();
        assert_eq!(big % CHUNK_UNITS, 0);
        assert_eq!(a.chunks.len(), 2);
        assert!(a.memory().1 > 0);
        assert_eq!(a.alloc(MAX_LINE + 1), None);
        // Three 3-unit slots were handed out of the first chunk.
        let rest = (CHUNK_UNITS - 9) as usize * UNIT;
        assert_eq!(a.alloc(rest), Some(9));
    }

    #[test]
    fn an_empty_line_still_has_room_for_its_link() {
        let mut a = Arena::default();
        let x = a.alloc(0).unwrap();
        a.free(x, 0);
        assert_eq!(a.alloc(1), Some(x));
    }
}
