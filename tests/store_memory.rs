//! What a stored position costs in memory, counted by a counting allocator
//! (every byte the store asks the allocator for, per thread, so the test
//! harness's own threads do not count), and what an update costs in time.
//!
//! `cargo test --test store_memory` checks the 128-byte bound at 200,000
//! positions. The figures in `docs/protocol.md` come from
//! `cargo test --release --test store_memory -- --ignored --nocapture`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proxy_herd::herd::store::{hash64, Store};

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with`: a thread being torn down has no counter left.
    let _ = LIVE.try_with(|c| c.set(c.get() + delta));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.with(Cell::get)
}

/// Nanoseconds this thread has spent on a CPU: unlike the wall clock, not
/// inflated when other processes share the cores.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// On-CPU nanoseconds per call of `f` over `n` calls.
fn per_op(n: usize, f: impl FnOnce()) -> f64 {
    let start = cpu_ns();
    f();
    (cpu_ns() - start) as f64 / n as f64
}

/// A realistic update: the AT line, with a client ID and a client
/// time (nanoseconds apart) per position.
fn line(i: usize, server: &str, diff: &str, secs: u64) -> (Vec<u8>, i128, Vec<u8>) {
    let client = format!("client-{i:06}");
    let nanos = i % 1_000_000_000;
    let line = format!("AT {server} {diff} {client} +34.068930-118.445127 {secs}.{nanos:09}");
    let time = i128::from(secs) * 1_000_000_000 + nanos as i128;
    (client.into_bytes(), time, line.into_bytes())
}

struct Filled {
    store: Store,
    bytes: usize,
    line_bytes: usize,
    insert_ns: f64,
}

fn fill(n: usize, max: Option<usize>) -> Filled {
    let updates: Vec<_> = (0..n)
        .map(|i| line(i, "Riley", "+0.263873386", 1_621_464_827))
        .collect();
    let line_bytes = updates.iter().map(|u| u.2.len()).sum();
    let before = live();
    let mut store = max.map_or_else(Store::default, Store::bounded);
    let insert_ns = per_op(n, || {
        for (client, time, at) in &updates {
            assert!(store.update(client, *time, at));
        }
    });
    let bytes = (live() - before) as usize;
    Filled {
        store,
        bytes,
        line_bytes,
        insert_ns,
    }
}

#[test]
fn a_position_costs_at_most_128_bytes_at_200k() {
    let n = 200_000;
    let f = fill(n, None);
    let per = f.bytes as f64 / n as f64;
    assert!(per <= 128.0, "{per:.1} B per position");
    // The store's own account matches the allocator's (but for a few
    // hundred bytes of small vectors' headers).
    assert!(f.store.memory().total().abs_diff(f.bytes) < 4096);
    assert_eq!(f.store.len(), n);
}

#[test]
#[ignore = "a measurement: run in release with --nocapture"]
fn measure_memory_and_update_cost() {
    // What the tree adds to an update: the old line's hash out, the new
    // one's in (five XORs up the tree besides).
    let lines: Vec<_> = (0..1_000_000)
        .map(|i| line(i, "Riley", "+0.263873386", 1))
        .collect();
    let mut sink = 0;
    let hash_ns = per_op(lines.len(), || {
        for (_, _, at) in &lines {
            sink ^= hash64(at);
        }
    });
    println!("hash64 of a 78-byte AT line: {hash_ns:.1} ns on-CPU ({sink:x})");
    drop(lines);
    for (n, max) in [
        (200_000, None),
        (1_000_000, None),
        (1_000_000, Some(1_000_000)),
        (2_000_000, None),
    ] {
        let f = fill(n, max);
        let m = f.store.memory();
        println!(
            "{n} positions{}: {:.1} B per position allocated ({:.1} B of it the AT line itself); \
             arena {:.1}, entries {:.1}, index {:.1}, tree {:.1}, heap {:.1} B per position; \
             insert {:.0} ns on-CPU",
            max.map_or(String::new(), |m| format!(" (--max-positions {m})")),
            f.bytes as f64 / n as f64,
            f.line_bytes as f64 / n as f64,
            m.arena as f64 / n as f64,
            m.entries as f64 / n as f64,
            m.index as f64 / n as f64,
            m.tree as f64 / n as f64,
            m.heap as f64 / n as f64,
            f.insert_ns,
        );
        let mut store = f.store;
        // Each client moves on: a newer line from another server, replaced in
        // place (five XORs up the tree, the heap fixed if bounded).
        let updates: Vec<_> = (0..n)
            .map(|i| line(i, "Jaquez", "+0.000120000", 1_621_464_828))
            .collect();
        let replace_ns = per_op(n, || {
            for (client, time, at) in &updates {
                assert!(store.update(client, *time, at));
            }
        });
        let known_ns = per_op(n, || {
            for (client, time, at) in &updates {
                assert!(!store.update(client, *time, at));
            }
        });
        println!("    newer line for a known client {replace_ns:.0} ns; a line already known {known_ns:.0} ns");
        if max.is_some() {
            // A full store: each new client evicts the least.
            let fresh: Vec<_> = (n..n + n / 10)
                .map(|i| line(i, "Juzang", "+0.000120000", 1_621_464_829))
                .collect();
            let evict_ns = per_op(fresh.len(), || {
                for (client, time, at) in &fresh {
                    assert!(store.update(client, *time, at));
                }
            });
            assert_eq!(store.len(), n);
            println!("    a new client evicting the least {evict_ns:.0} ns");
        }
    }
}
