//! The location store: every client's newest position, as its AT line.
//!
//! Newest wins by client time. Two positions with the same client time are
//! ordered by their AT lines' bytes (greater wins): every server applies the
//! same rule to the same lines, so all servers agree whatever order the
//! updates arrive in. An AT line equal to the stored one is not new, which is
//! what makes floods end (see `docs/protocol.md`).
//!
//! With a bound (`--max-positions N`) the store keeps the N greatest positions
//! by that same order, (client time, AT line): a new client's position that is
//! not greater than everything kept is not new, and otherwise it evicts the
//! least. Once the store is full its least position only ever grows, so a
//! client once evicted cannot come back with an older line, and every server
//! fed the same updates, in any order, keeps the same N.
//!
//! How it is laid out, for about 105 bytes per position (121 with a bound) at a million (the
//! figures are in `docs/protocol.md`):
//!
//! - the AT lines in an arena (`arena.rs`) of 1 MiB chunks, 4-byte granular;
//! - an entry per position (12 bytes): where its line is and the next entry
//!   in its leaf (the client time is read from the line);
//! - the index (`index.rs`) from client ID to entry, which reads the client ID inside
//!   the stored line rather than keeping a copy;
//! - the reconciliation tree ([`crate::protocol::peer::TreeNode`]): each
//!   position falls in one of 65,536 leaves by the hash of its client ID, and
//!   every node holds the XOR of [`hash64`] of every line beneath it. An update
//!   changes one path, leaf to root: five XORs. The tree and the leaves' lists
//!   are a fixed 800 KiB;
//! - with a bound, a min-heap of entries and their client times, and each
//!   entry's place in it (16 bytes a position).
//!
//! Nothing here is proportional to the store except through bounded steps: the
//! index grows one shard at a time, and [`Store::walk`] visits the lines in
//! slices that the caller sizes.

mod arena;
mod index;

use std::cmp::Ordering;

use crate::protocol::client::parse_time;
use crate::protocol::peer::{TreeNode, TREE_DEPTH, TREE_LEAVES, TREE_NODES};
use arena::{Arena, NONE};
use index::Index;

/// The herd's 64-bit hash: every server must compute the same, since the
/// reconciliation tree is built from it. 8 bytes at a time (little-endian),
/// each step `h = rotl((h ^ word) * K, 31)`, the last word zero-padded, the
/// length mixed in first, then MurmurHash3's finaliser for avalanche. Not
/// cryptographic: a collision only makes a catch-up miss a difference that the
/// next update of that client repairs.
pub fn hash64(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let step = |h: u64, word: u64| (h ^ word).wrapping_mul(K).rotate_left(31);
    let mut h = 0x243f_6a88_85a3_08d3 ^ bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = step(h, u64::from_le_bytes(b));
    }
    let mut b = [0u8; 8];
    b[..words.remainder().len()].copy_from_slice(words.remainder());
    h = step(h, u64::from_le_bytes(b));
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The leaf of a client whose ID hashes to `client_hash`: its top 16 bits.
pub fn leaf_of(client_hash: u64) -> u32 {
    (client_hash >> (64 - 4 * u32::from(TREE_DEPTH))) as u32
}

/// The client ID inside a canonical AT line (`AT server diff client ...`,
/// single spaces): its fourth field.
pub fn client_field(line: &[u8]) -> Option<&[u8]> {
    let mut fields = line.splitn(5, |&b| b == b' ');
    match (fields.next(), fields.next(), fields.next(), fields.next()) {
        (Some(b"AT"), Some(_), Some(_), Some(client)) if !client.is_empty() => Some(client),
        _ => None,
    }
}

/// A position as the store holds it: borrowed, valid until the next change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position<'a> {
    /// The client's own time, in nanoseconds since the epoch.
    pub time_ns: i128,
    /// The AT line as the receiving server made it, without `\n`.
    pub at_line: Line<'a>,
}

/// A stored AT line, borrowed from the store: it derefs to its bytes (so
/// `&position.at_line` is a `&[u8]`, as when the store held boxed lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a>(pub &'a [u8]);

impl std::ops::Deref for Line<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0
    }
}

/// An entry's number: it names a client's position for as long as the
/// client stays in the store. (Under a bound, an evicted client's number may
/// later name another client; whoever holds one then sees that client's line,
/// which is a valid position too.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryId(u32);

/// 12 bytes. The client time is not kept: it is the line's last field, read
/// when needed from the line, which the lookup has just brought into cache.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The line's slot in the arena; `NONE` for a free entry.
    line: u32,
    len: u32,
    /// The next entry in the same leaf (or in the free list).
    next: u32,
}

/// Entries come in chunks of this many, never moved.
const ENTRY_CHUNK: usize = 1 << 16;

/// Client ID -> newest position, with the reconciliation tree over it.
pub struct Store {
    arena: Arena,
    entries: Vec<Vec<Entry>>,
    free_entries: u32,
    index: Index,
    /// Every node's hash, all levels, at [`TreeNode::id`].
    tree: Vec<u64>,
    /// The first entry of each leaf, or `NONE`.
    heads: Vec<u32>,
    len: usize,
    bound: Option<Bound>,
}

/// `--max-positions`: at most `max` positions, the least on top of `heap`.
struct Bound {
    max: usize,
    heap: Vec<HeapItem>,
    /// Each entry's place in `heap`, by entry number.
    place: Vec<u32>,
}

/// An entry in the bound's heap with its client time, so that sifting reads
/// the heap alone (12 bytes: `u32`s, no padding).
#[derive(Debug, Clone, Copy)]
struct HeapItem {
    /// The client time in nanoseconds, saturated at `u64::MAX` (year 2554);
    /// ties are broken by the exact time and the line, read from the entry.
    key: [u32; 2],
    entry: u32,
}

impl HeapItem {
    fn key(&self) -> u64 {
        u64::from(self.key[0]) << 32 | u64::from(self.key[1])
    }
}

impl Default for Store {
    fn default() -> Self {
        Store {
            arena: Arena::default(),
            entries: Vec::new(),
            free_entries: NONE,
            index: Index::default(),
            tree: vec![0; TREE_NODES],
            heads: vec![NONE; TREE_LEAVES as usize],
            len: 0,
            bound: None,
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("len", &self.len)
            .field("max", &self.max_positions())
            .field("root", &format_args!("{:016x}", self.tree[0]))
            .finish()
    }
}

/// The store's order on positions: client time, then the AT line's bytes.
fn order(a: (i128, &[u8]), b: (i128, &[u8])) -> Ordering {
    a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1))
}

/// The exact client time of a stored line: its last field (-1 if it is not
/// a time, which `update` refuses, so a stored line always has one).
fn line_time(line: &[u8]) -> i128 {
    line.rsplit(|&b| b == b' ')
        .next()
        .and_then(parse_time)
        .unwrap_or(-1)
}

fn time_key(time_ns: i128) -> [u32; 2] {
    let key = u64::try_from(time_ns.max(0)).unwrap_or(u64::MAX);
    [(key >> 32) as u32, key as u32]
}

/// Where a walk over the store's lines stands: a range of leaves, and within
/// the current one the entry to resume at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    leaf: u32,
    end: u32,
    resume: Option<u32>,
}

impl Walk {
    /// Every line beneath `node`.
    pub fn under(node: TreeNode) -> Walk {
        let leaves = node.leaves();
        Walk {
            leaf: leaves.start,
            end: leaves.end,
            resume: None,
        }
    }

    /// Every line in the store.
    pub fn all() -> Walk {
        Walk::under(TreeNode::ROOT)
    }

    /// True once every leaf has been visited.
    pub fn is_done(&self) -> bool {
        self.leaf >= self.end
    }
}

impl Store {
    /// A store that keeps at most `max` positions (`--max-positions`).
    pub fn bounded(max: usize) -> Store {
        Store {
            bound: Some(Bound {
                max,
                heap: Vec::new(),
                place: Vec::new(),
            }),
            ..Store::default()
        }
    }

    /// The bound, if any.
    pub fn max_positions(&self) -> Option<usize> {
        self.bound.as_ref().map(|b| b.max)
    }

    fn entry(&self, e: u32) -> &Entry {
        &self.entries[e as usize / ENTRY_CHUNK][e as usize % ENTRY_CHUNK]
    }

    fn entry_mut(&mut self, e: u32) -> &mut Entry {
        &mut self.entries[e as usize / ENTRY_CHUNK][e as usize % ENTRY_CHUNK]
    }

    fn line(&self, e: u32) -> &[u8] {
        let ent = self.entry(e);
        self.arena.get(ent.line, ent.len as usize)
    }

    fn find(&self, h: u64, client: &[u8]) -> Option<u32> {
        self.index
            .find(h, |e| client_field(self.line(e)) == Some(client))
    }

    /// Records a position if it is newer than the one known (and, in a full
    /// bounded store, newer than the least kept); true if it was. `at_line`
    /// must be canonical (single spaces) with `client` as its fourth field and
    /// `time_ns` the value of its last; anything else is refused, since the
    /// store reads both back from the line.
    pub fn update(&mut self, client: &[u8], time_ns: i128, at_line: &[u8]) -> bool {
        if at_line.len() > arena::MAX_LINE
            || client_field(at_line) != Some(client)
            || line_time(at_line) != time_ns
        {
            return false;
        }
        let h = hash64(client);
        match self.find(h, client) {
            Some(e) => self.replace(e, h, time_ns, at_line),
            None => self.insert(h, time_ns, at_line),
        }
    }

    /// True if [`Store::update`] would take this position (it is newer than
    /// the one known, or the first, and in a full bounded store newer than
    /// the least kept), without taking it: a caller that must write the
    /// state file before acknowledging asks first.
    pub fn is_new(&self, client: &[u8], time_ns: i128, at_line: &[u8]) -> bool {
        if at_line.len() > arena::MAX_LINE
            || client_field(at_line) != Some(client)
            || line_time(at_line) != time_ns
        {
            return false;
        }
        match self.find(hash64(client), client) {
            Some(e) => {
                let old = self.line(e);
                order((time_ns, at_line), (line_time(old), old)) == Ordering::Greater
            }
            None => match &self.bound {
                Some(b) if b.max == 0 => false,
                Some(b) if self.len >= b.max => self.beats_least(b.heap[0], time_ns, at_line),
                _ => true,
            },
        }
    }

    /// True if a new client's position is greater than the least kept.
    fn beats_least(&self, least: HeapItem, time_ns: i128, at_line: &[u8]) -> bool {
        let key = time_key(time_ns);
        match (key[0], key[1]).cmp(&(least.key[0], least.key[1])) {
            Ordering::Equal => {
                let least_line = self.line(least.entry);
                order((time_ns, at_line), (line_time(least_line), least_line)) == Ordering::Greater
            }
            o => o == Ordering::Greater,
        }
    }

    fn replace(&mut self, e: u32, h: u64, time_ns: i128, at_line: &[u8]) -> bool {
        let old = *self.entry(e);
        let old_line = self.arena.get(old.line, old.len as usize);
        if order((time_ns, at_line), (line_time(old_line), old_line)) != Ordering::Greater {
            return false;
        }
        let delta = hash64(old_line) ^ hash64(at_line);
        let slot = if Arena::same_slot(old.len as usize, at_line.len()) {
            old.line
        } else {
            let Some(slot) = self.arena.alloc(at_line.len()) else {
                return false;
            };
            self.arena.free(old.line, old.len as usize);
            slot
        };
        self.arena.put(slot, at_line);
        let ent = self.entry_mut(e);
        ent.line = slot;
        ent.len = at_line.len() as u32;
        self.xor_path(leaf_of(h), delta);
        if let Some(b) = self.bound.as_mut() {
            // Its key grew: in a min-heap it can only sink.
            let at = b.place[e as usize] as usize;
            b.heap[at].key = time_key(time_ns);
            self.sift_down(at);
        }
        true
    }

    fn insert(&mut self, h: u64, time_ns: i128, at_line: &[u8]) -> bool {
        let key = time_key(time_ns);
        let full = match &self.bound {
            Some(b) if b.max == 0 => return false,
            Some(b) if self.len >= b.max => {
                // The saturated keys decide but for a tie, when the lines do.
                let least = b.heap[0];
                if !self.beats_least(least, time_ns, at_line) {
                    return false;
                }
                Some(least.entry)
            }
            _ => None,
        };
        let Some(slot) = self.arena.alloc(at_line.len()) else {
            return false;
        };
        if let Some(least) = full {
            self.evict(least);
        }
        self.arena.put(slot, at_line);
        let leaf = leaf_of(h);
        let entry = Entry {
            line: slot,
            len: at_line.len() as u32,
            next: self.heads[leaf as usize],
        };
        let Some(e) = self.new_entry(entry) else {
            self.arena.free(slot, at_line.len());
            return false;
        };
        self.heads[leaf as usize] = e;
        self.index.insert(h, e);
        self.xor_path(leaf, hash64(at_line));
        self.len += 1;
        let at = self.bound.as_mut().map(|b| {
            b.heap.push(HeapItem { key, entry: e });
            let at = b.heap.len() - 1;
            if b.place.len() <= e as usize {
                b.place.resize(e as usize + 1, NONE);
            }
            b.place[e as usize] = at as u32;
            at
        });
        if let Some(at) = at {
            self.sift_up(at);
        }
        true
    }

    fn new_entry(&mut self, entry: Entry) -> Option<u32> {
        if self.free_entries != NONE {
            let e = self.free_entries;
            self.free_entries = self.entry(e).next;
            *self.entry_mut(e) = entry;
            return Some(e);
        }
        if self.entries.last().is_none_or(|c| c.len() == ENTRY_CHUNK) {
            self.entries.push(Vec::with_capacity(ENTRY_CHUNK));
        }
        let n = (self.entries.len() - 1) * ENTRY_CHUNK + self.entries.last()?.len();
        let e = u32::try_from(n).ok().filter(|&e| e < index::MAX_ENTRY)?;
        self.entries.last_mut()?.push(entry);
        Some(e)
    }

    /// Removes the least position, which `heap[0]` names.
    fn evict(&mut self, e: u32) {
        let ent = *self.entry(e);
        let line = self.arena.get(ent.line, ent.len as usize);
        let line_hash = hash64(line);
        let h = hash64(client_field(line).unwrap_or_default());
        let leaf = leaf_of(h);
        self.xor_path(leaf, line_hash);
        // Unlink from its leaf: a leaf holds a handful of entries.
        if self.heads[leaf as usize] == e {
            self.heads[leaf as usize] = ent.next;
        } else {
            let mut at = self.heads[leaf as usize];
            while at != NONE {
                let next = self.entry(at).next;
                if next == e {
                    self.entry_mut(at).next = ent.next;
                    break;
                }
                at = next;
            }
        }
        self.index.remove(h, e);
        self.arena.free(ent.line, ent.len as usize);
        // Out of the heap: the last element takes its place.
        let moved = self.bound.as_mut().and_then(|b| {
            let at = *b.place.get(e as usize)? as usize;
            let last = b.heap.pop()?;
            (last.entry != e && at < b.heap.len()).then(|| {
                b.heap[at] = last;
                b.place[last.entry as usize] = at as u32;
                at
            })
        });
        if let Some(at) = moved {
            self.sift_down(at);
        }
        let free = self.free_entries;
        let slot = self.entry_mut(e);
        slot.line = NONE;
        slot.next = free;
        self.free_entries = e;
        self.len -= 1;
    }

    fn heap_less(&self, a: HeapItem, b: HeapItem) -> bool {
        match a.key().cmp(&b.key()) {
            Ordering::Equal => {
                let (la, lb) = (self.line(a.entry), self.line(b.entry));
                order((line_time(la), la), (line_time(lb), lb)) == Ordering::Less
            }
            o => o == Ordering::Less,
        }
    }

    fn heap_swap(&mut self, i: usize, j: usize) {
        let Some(b) = self.bound.as_mut() else {
            return;
        };
        b.heap.swap(i, j);
        let (ei, ej) = (b.heap[i].entry, b.heap[j].entry);
        b.place[ei as usize] = i as u32;
        b.place[ej as usize] = j as u32;
    }

    fn heap_at(&self, i: usize) -> Option<HeapItem> {
        self.bound.as_ref().and_then(|b| b.heap.get(i).copied())
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            match (self.heap_at(i), self.heap_at(parent)) {
                (Some(x), Some(p)) if self.heap_less(x, p) => {
                    self.heap_swap(i, parent);
                    i = parent;
                }
                _ => return,
            }
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let Some(x) = self.heap_at(i) else { return };
            let mut least = (i, x);
            for child in [2 * i + 1, 2 * i + 2] {
                if let Some(c) = self.heap_at(child) {
                    if self.heap_less(c, least.1) {
                        least = (child, c);
                    }
                }
            }
            if least.0 == i {
                return;
            }
            self.heap_swap(i, least.0);
            i = least.0;
        }
    }

    fn xor_path(&mut self, leaf: u32, delta: u64) {
        let mut node = TreeNode::leaf(leaf);
        loop {
            self.tree[node.id()] ^= delta;
            if node.depth() == 0 {
                return;
            }
            node = TreeNode::new(node.depth() - 1, node.index() / 16).unwrap_or(TreeNode::ROOT);
        }
    }

    /// Reads the memory an update of `client` touches first (its index slot,
    /// its leaf's hash and list), and returns something of it so the reads
    /// are not optimised away. A load calls this for a batch of records and
    /// then updates them: the batch's cache misses overlap instead of coming
    /// one at a time, which is most of what a million inserts cost.
    pub fn warm(&self, client: &[u8]) -> u64 {
        let h = hash64(client);
        let leaf = leaf_of(h);
        self.index.peek(h)
            ^ self.tree[TreeNode::leaf(leaf).id()]
            ^ u64::from(self.heads[leaf as usize])
    }

    /// The newest position of `client`, if known.
    pub fn get(&self, client: &[u8]) -> Option<Position<'_>> {
        let e = self.find(hash64(client), client)?;
        Some(self.position(e))
    }

    fn position(&self, e: u32) -> Position<'_> {
        let at_line = self.line(e);
        Position {
            time_ns: line_time(at_line),
            at_line: Line(at_line),
        }
    }

    /// The entry holding `client`'s position, to name it cheaply (a queue of
    /// updates waiting for a slow peer, say).
    pub fn entry_id(&self, client: &[u8]) -> Option<EntryId> {
        self.find(hash64(client), client).map(EntryId)
    }

    /// The current position held by entry `id`, if it holds one.
    pub fn position_of(&self, id: EntryId) -> Option<Position<'_>> {
        let chunk = self.entries.get(id.0 as usize / ENTRY_CHUNK)?;
        let ent = chunk.get(id.0 as usize % ENTRY_CHUNK)?;
        (ent.line != NONE).then(|| self.position(id.0))
    }

    /// Every known position, in no particular order.
    pub fn positions(&self) -> impl Iterator<Item = Position<'_>> {
        (0..self.entries.iter().map(Vec::len).sum::<usize>() as u32)
            .filter(|&e| self.entry(e).line != NONE)
            .map(|e| self.position(e))
    }

    /// How many clients are known.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no position is known.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The hash of `node`: the XOR of [`hash64`] of every AT line beneath it
    /// (0 for an empty subtree).
    pub fn node_hash(&self, node: TreeNode) -> u64 {
        self.tree[node.id()]
    }

    /// The AT lines in leaf `leaf`.
    pub fn leaf_lines(&self, leaf: u32) -> impl Iterator<Item = &[u8]> {
        let mut e = self.heads.get(leaf as usize).copied().unwrap_or(NONE);
        std::iter::from_fn(move || {
            (e != NONE).then(|| {
                let line = self.line(e);
                e = self.entry(e).next;
                line
            })
        })
    }

    /// True if entry `e` is live and in leaf `leaf`.
    fn in_leaf(&self, e: u32, leaf: u32) -> bool {
        let live = self
            .entries
            .get(e as usize / ENTRY_CHUNK)
            .and_then(|c| c.get(e as usize % ENTRY_CHUNK))
            .is_some_and(|ent| ent.line != NONE);
        live && client_field(self.line(e)).is_some_and(|c| leaf_of(hash64(c)) == leaf)
    }

    /// Visits the lines of `walk` from where it stands, a leaf at a time,
    /// until `visit` returns false (it has had enough for now) or
    /// `max_leaves` leaves have been finished; returns how many were. Lines
    /// added or changed after a walk passed them are not visited; a line that
    /// stays in the store from start to end of a walk is visited at least
    /// once (a leaf may be visited again from its start if the entry to
    /// resume at has gone).
    pub fn walk(
        &self,
        walk: &mut Walk,
        max_leaves: u32,
        mut visit: impl FnMut(&[u8]) -> bool,
    ) -> u32 {
        let mut finished = 0;
        while walk.leaf < walk.end && finished < max_leaves {
            let mut e = match walk.resume.take() {
                Some(e) if self.in_leaf(e, walk.leaf) => e,
                _ => self.heads[walk.leaf as usize],
            };
            while e != NONE {
                let next = self.entry(e).next;
                if !visit(self.line(e)) {
                    if next == NONE {
                        walk.leaf += 1;
                        finished += 1;
                    } else {
                        walk.resume = Some(next);
                    }
                    return finished;
                }
                e = next;
            }
            walk.leaf += 1;
            finished += 1;
        }
        finished
    }

    /// Visits the lines in the order of their entries, from `cursor` on, until
    /// `visit` returns false or `max_entries` entries have been looked at;
    /// true once past the last entry. Entries are never moved, so a line that
    /// stays in the store from start to end is visited once, and sequential
    /// memory makes this cheaper than [`Store::walk`] when the order does not
    /// matter (a compaction of the state file).
    pub fn walk_entries(
        &self,
        cursor: &mut u32,
        max_entries: u32,
        mut visit: impl FnMut(&[u8]) -> bool,
    ) -> bool {
        let total = self.entries.iter().map(Vec::len).sum::<usize>() as u32;
        let end = total.min(cursor.saturating_add(max_entries));
        while *cursor < end {
            let e = *cursor;
            *cursor += 1;
            if self.entry(e).line != NONE && !visit(self.line(e)) {
                break;
            }
        }
        *cursor >= total
    }

    /// Where the store's memory goes.
    pub fn memory(&self) -> Memory {
        let (arena, arena_free) = self.arena.memory();
        Memory {
            arena,
            arena_free,
            entries: self.entries.len() * ENTRY_CHUNK * std::mem::size_of::<Entry>(),
            index: self.index.memory(),
            tree: self.tree.capacity() * 8 + self.heads.capacity() * 4,
            heap: self
                .bound
                .as_ref()
                .map_or(0, |b| b.heap.capacity() * 12 + b.place.capacity() * 4),
        }
    }
}

/// Bytes allocated by a store, by part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// The line arena's chunks...
    pub arena: usize,
    /// ...of which this much is in free slots.
    pub arena_free: usize,
    pub entries: usize,
    pub index: usize,
    /// The tree's hashes and the leaves' list heads: fixed.
    pub tree: usize,
    pub heap: usize,
}

impl Memory {
    pub fn total(&self) -> usize {
        self.arena + self.entries + self.index + self.tree + self.heap
    }
}

#[cfg(test)]
pub(crate) mod tests;
