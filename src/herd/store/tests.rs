use super::*;
use std::collections::{BTreeMap, BTreeSet};

/// A small deterministic generator, so failures replay.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

/// An update as the herd makes them: client, time, canonical AT line.
pub(crate) fn at(server: &str, client: &str, secs: u64, nanos: u32) -> (Vec<u8>, i128, Vec<u8>) {
    let line = format!("AT {server} +0.000000001 {client} +34.068930-118.445127 {secs}.{nanos:09}");
    (
        client.as_bytes().to_vec(),
        i128::from(secs) * 1_000_000_000 + i128::from(nanos),
        line.into_bytes(),
    )
}

/// What a store holds, in an order-free form.
pub(crate) fn contents(s: &Store) -> BTreeSet<Vec<u8>> {
    s.positions().map(|p| p.at_line.to_vec()).collect()
}

/// Updates, checking that `is_new` said beforehand what `update` did.
fn apply(s: &mut Store, u: &(Vec<u8>, i128, Vec<u8>)) -> bool {
    let said = s.is_new(&u.0, u.1, &u.2);
    let did = s.update(&u.0, u.1, &u.2);
    assert_eq!(said, did, "{}", String::from_utf8_lossy(&u.2));
    did
}

const S: i128 = 1_000_000_000;

#[test]
fn hash64_is_pinned() {
    // Part of the peer protocol: servers of different versions must agree.
    for (bytes, want) in [
        (&b""[..], 0x5ab7_f56e_7b12_884d_u64),
        (b"kiwi", 0xad6d_aa6c_e8ad_f535),
        (b"client-000123", 0x130c_f141_f983_ba58),
        (
            b"AT Riley +0.263873386 kiwi +34.068930-118.445127 1621464827.959498503",
            0x36b8_e383_f282_472b,
        ),
    ] {
        assert_eq!(hash64(bytes), want, "{:?}", String::from_utf8_lossy(bytes));
    }
    // The leaf is the client hash's top 16 bits.
    assert_eq!(leaf_of(0xad6d_aa6c_e8ad_f535), 0xad6d);
}

#[test]
fn newest_client_time_wins() {
    let mut s = Store::default();
    assert!(s.update(b"kiwi", 10 * S, b"AT A +0.000000001 kiwi +1+1 10"));
    assert!(!s.update(b"kiwi", 9 * S, b"AT B +0.000000001 kiwi +1+1 9"));
    assert!(s.update(b"kiwi", 11 * S, b"AT B +0.000000001 kiwi +1+1 11"));
    assert_eq!(
        &*s.get(b"kiwi").unwrap().at_line,
        b"AT B +0.000000001 kiwi +1+1 11"
    );
    assert_eq!(s.get(b"kiwi").unwrap().time_ns, 11 * S);
    assert_eq!(s.len(), 1);
    assert_eq!(s.get(b"kiw"), None);
}

#[test]
fn equal_times_agree_in_any_order_and_repeats_are_not_new() {
    let a: &[u8] = b"AT Jaquez +0.5 kiwi +1+1 10";
    let b: &[u8] = b"AT Riley +0.1 kiwi +2+2 10";
    let mut one = Store::default();
    let mut two = Store::default();
    assert!(one.update(b"kiwi", 10 * S, a));
    assert!(one.update(b"kiwi", 10 * S, b));
    assert!(two.update(b"kiwi", 10 * S, b));
    assert!(!two.update(b"kiwi", 10 * S, a));
    assert!(!two.update(b"kiwi", 10 * S, b));
    assert_eq!(one.get(b"kiwi"), two.get(b"kiwi"));
    assert_eq!(one.node_hash(TreeNode::ROOT), two.node_hash(TreeNode::ROOT));
}

#[test]
fn times_beyond_u64_nanoseconds_still_order_exactly() {
    // 10^11 seconds is past u64 nanoseconds: the exact times decide.
    let mut s = Store::default();
    let t = |secs: i128| secs * 1_000_000_000;
    assert!(s.update(
        b"k",
        t(100_000_000_000),
        b"AT Z +0.000000001 k +1+1 100000000000"
    ));
    assert!(s.update(
        b"k",
        t(100_000_000_001),
        b"AT A +0.000000001 k +1+1 100000000001"
    ));
    assert!(!s.update(
        b"k",
        t(100_000_000_000),
        b"AT Z +0.000000001 k +1+1 100000000000"
    ));
    assert_eq!(s.get(b"k").unwrap().time_ns, t(100_000_000_001));
}

#[test]
fn a_line_that_does_not_name_its_client_is_refused() {
    let mut s = Store::default();
    assert!(!s.update(b"pear", S, b"AT A +0.000000001 kiwi +1+1 1"));
    assert!(!s.update(b"kiwi", S, b"AT  A +0.000000001 kiwi +1+1 1"));
    assert!(!s.update(b"kiwi", S, b"XX A +0.000000001 kiwi +1+1 1"));
    // Nor one whose time is not the one given.
    assert!(!s.update(b"kiwi", 2 * S, b"AT A +0.000000001 kiwi +1+1 1"));
    assert!(!s.update(b"kiwi", S, b"AT A +0.000000001 kiwi +1+1 x"));
    assert!(s.is_empty());
    assert_eq!(s.node_hash(TreeNode::ROOT), 0);
}

/// Every node's hash is the XOR of the line hashes beneath it.
fn check_tree(s: &Store) {
    let mut leaves = vec![0u64; TREE_LEAVES as usize];
    for p in s.positions() {
        let leaf = leaf_of(hash64(client_field(&p.at_line).unwrap()));
        leaves[leaf as usize] ^= hash64(&p.at_line);
    }
    for depth in 0..=TREE_DEPTH {
        for index in 0..1u32 << (4 * u32::from(depth)) {
            let node = TreeNode::new(depth, index).unwrap();
            let want = node.leaves().fold(0, |h, l| h ^ leaves[l as usize]);
            assert_eq!(s.node_hash(node), want, "node {node:?}");
        }
    }
    let listed: usize = (0..TREE_LEAVES).map(|l| s.leaf_lines(l).count()).sum();
    assert_eq!(listed, s.len());
}

#[test]
fn the_tree_follows_every_change() {
    let mut rng = Rng(0x1234_5678);
    let mut s = Store::bounded(300);
    for i in 0..3000 {
        let client = format!("c{}", rng.below(500));
        let u = at(["A", "B"][i % 2], &client, 1000 + rng.below(100), 0);
        apply(&mut s, &u);
    }
    assert_eq!(s.len(), 300);
    check_tree(&s);
    let mut u = Store::default();
    for i in 0..2000u64 {
        apply(&mut u, &at("A", &format!("client-{i:06}"), i, 0));
    }
    check_tree(&u);
}

/// The bounded store keeps the `max` greatest of the clients' newest lines.
fn ideal(updates: &[(Vec<u8>, i128, Vec<u8>)], max: usize) -> BTreeSet<Vec<u8>> {
    let mut newest: BTreeMap<&[u8], (i128, &[u8])> = BTreeMap::new();
    for (client, time, line) in updates {
        let e = newest.entry(client).or_insert((*time, line));
        if (*time, &line[..]) > *e {
            *e = (*time, line);
        }
    }
    let mut all: Vec<(i128, &[u8])> = newest.into_values().collect();
    all.sort();
    all.iter()
        .rev()
        .take(max)
        .map(|(_, l)| l.to_vec())
        .collect()
}

#[test]
fn stores_fed_the_same_updates_in_any_order_end_identical() {
    let mut rng = Rng(0xfeed_beef);
    let mut updates = Vec::new();
    for _ in 0..4000 {
        let client = format!("client-{}", rng.below(700));
        // Few distinct times, so equal-time ties are common.
        let u = at(
            ["Riley", "Jaquez", "Juzang"][rng.below(3) as usize],
            &client,
            rng.below(30),
            0,
        );
        updates.push(u);
    }
    for max in [None, Some(1), Some(50), Some(699), Some(5000)] {
        let mut reference: Option<(BTreeSet<Vec<u8>>, u64)> = None;
        for round in 0..6 {
            rng.shuffle(&mut updates);
            let mut s = max.map_or_else(Store::default, Store::bounded);
            for u in &updates {
                apply(&mut s, u);
            }
            let got = (contents(&s), s.node_hash(TreeNode::ROOT));
            assert_eq!(got.0, ideal(&updates, max.unwrap_or(usize::MAX)), "{max:?}");
            if let Some(r) = &reference {
                assert_eq!(&got, r, "max {max:?}, round {round}");
            }
            reference = Some(got);
        }
    }
}

#[test]
fn a_full_store_refuses_what_is_older_than_all_it_keeps() {
    let mut s = Store::bounded(2);
    assert!(apply(&mut s, &at("A", "a", 5, 0)));
    assert!(apply(&mut s, &at("A", "b", 6, 0)));
    // Older than both kept: not new (so not flooded either).
    assert!(!apply(&mut s, &at("A", "c", 4, 0)));
    // Newer than the least: the least (a) goes.
    assert!(apply(&mut s, &at("A", "c", 7, 0)));
    assert_eq!(s.get(b"a"), None);
    // a cannot come back with an older line than the one evicted...
    assert!(!apply(&mut s, &at("A", "a", 5, 0)));
    // ...but can with a newer one.
    assert!(apply(&mut s, &at("A", "a", 8, 0)));
    assert_eq!(s.len(), 2);
    assert_eq!(
        contents(&s),
        [at("A", "c", 7, 0).2, at("A", "a", 8, 0).2].into()
    );
    // A client already kept moves up in the order when it updates.
    assert!(apply(&mut s, &at("A", "c", 9, 0)));
    assert!(apply(&mut s, &at("A", "d", 10, 0)));
    assert_eq!(s.get(b"a"), None);
    assert!(!Store::bounded(0).update(b"a", S, b"AT A +0.000000001 a +1+1 1"));
}

#[test]
fn entry_ids_name_a_clients_current_line() {
    let mut s = Store::default();
    apply(&mut s, &at("A", "kiwi", 5, 0));
    let id = s.entry_id(b"kiwi").unwrap();
    apply(&mut s, &at("B", "kiwi", 6, 0));
    assert_eq!(*s.position_of(id).unwrap().at_line, at("B", "kiwi", 6, 0).2);
    assert_eq!(s.position_of(EntryId(12345)), None);
}

#[test]
fn lines_of_every_length_are_kept_apart() {
    let mut s = Store::default();
    let mut lines = Vec::new();
    for i in 0..300 {
        let client = "x".repeat(i + 1);
        let u = at("A", &client, 1, 0);
        assert!(apply(&mut s, &u));
        lines.push(u);
    }
    // Grow every line by a few bytes: many move to a slot of another size.
    for (i, (client, _, _)) in lines.iter().enumerate() {
        let line = format!(
            "AT Longer-{i} +0.000000001 {} +34.068930-118.445127 2",
            String::from_utf8_lossy(client)
        );
        assert!(s.update(client, 2_000_000_000, line.as_bytes()));
    }
    for (i, (client, _, _)) in lines.iter().enumerate() {
        let p = s.get(client).unwrap();
        assert!(p.at_line.starts_with(format!("AT Longer-{i} ").as_bytes()));
        assert_eq!(client_field(&p.at_line), Some(&client[..]));
    }
    check_tree(&s);
}

#[test]
fn a_walk_in_slices_visits_every_line_that_stays() {
    let mut s = Store::default();
    for i in 0..5000u64 {
        apply(&mut s, &at("A", &format!("c{i}"), 10, 0));
    }
    // In one go.
    let mut all = Vec::new();
    let mut w = Walk::all();
    s.walk(&mut w, u32::MAX, |l| {
        all.push(l.to_vec());
        true
    });
    assert!(w.is_done());
    assert_eq!(all.len(), 5000);
    // Three lines per slice, with the store changing between slices: every
    // line there from start to end is seen, and nothing else is missing but
    // what was added after the walk passed.
    let mut seen = BTreeSet::new();
    let mut w = Walk::all();
    let mut slices = 0;
    let mut rng = Rng(99);
    while !w.is_done() {
        let mut n = 0;
        s.walk(&mut w, 100, |l| {
            seen.insert(l.to_vec());
            n += 1;
            n < 3
        });
        slices += 1;
        let c = format!("c{}", rng.below(5000));
        apply(&mut s, &at("B", &c, 11, 0));
        apply(&mut s, &at("B", &format!("new{slices}"), 11, 0));
    }
    for i in 0..5000u64 {
        let c = format!("c{i}");
        let before = at("A", &c, 10, 0).2;
        let after = at("B", &c, 11, 0).2;
        assert!(seen.contains(&before) || seen.contains(&after), "{c}");
    }
    // A walk under one node stays beneath it.
    let node = TreeNode::new(2, 0x3a).unwrap();
    let mut w = Walk::under(node);
    s.walk(&mut w, u32::MAX, |l| {
        let leaf = leaf_of(hash64(client_field(l).unwrap()));
        assert!(node.leaves().contains(&leaf));
        true
    });
}

#[test]
fn a_walk_resumes_safely_when_its_entry_was_evicted() {
    let mut s = Store::bounded(2000);
    for i in 0..2000u64 {
        apply(&mut s, &at("A", &format!("c{i}"), i, 0));
    }
    let mut w = Walk::all();
    let mut seen = BTreeSet::new();
    while !w.is_done() {
        let mut n = 0;
        s.walk(&mut w, 100, |l| {
            seen.insert(l.to_vec());
            n += 1;
            n < 2
        });
        // Each slice, the least goes and a new client takes its entry.
        let fresh = format!("n{}", seen.len());
        apply(&mut s, &at("B", &fresh, 10_000 + seen.len() as u64, 0));
    }
    // Every line kept from start to end was seen.
    for p in s.positions() {
        if p.at_line.starts_with(b"AT A ") {
            assert!(seen.contains(&*p.at_line));
        }
    }
}

#[test]
fn a_walk_over_entries_sees_every_line_that_stays() {
    let mut s = Store::bounded(3000);
    for i in 0..3000u64 {
        apply(&mut s, &at("A", &format!("c{i}"), i, 0));
    }
    let mut seen = BTreeSet::new();
    let mut cursor = 0;
    let mut rng = Rng(5);
    let mut fresh = 0;
    loop {
        let mut n = 0;
        let done = s.walk_entries(&mut cursor, 500, |l| {
            seen.insert(l.to_vec());
            n += 1;
            n < 7
        });
        // Changes between slices: a newer line, and a new client evicting.
        let i = rng.below(3000);
        apply(&mut s, &at("B", &format!("c{i}"), 5000 + i, 0));
        fresh += 1;
        apply(&mut s, &at("C", &format!("new{fresh}"), 9000 + fresh, 0));
        if done {
            break;
        }
    }
    for p in s.positions() {
        if p.at_line.starts_with(b"AT A ") {
            assert!(seen.contains(&*p.at_line));
        }
    }
}
