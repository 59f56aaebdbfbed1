use super::*;
use crate::herd::store::tests::{at, contents, Rng};
use crate::protocol::peer::{parse_peer_message, PeerMessage};
use std::collections::{BTreeMap, BTreeSet};

/// What one catch-up cost, from the harness's side of the wire.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub sent: Sent,
    pub received: Received,
    /// Bytes that crossed sender -> receiver and receiver -> sender.
    pub to_receiver: u64,
    pub to_sender: u64,
    /// Lines the receiver took as new, in arrival order.
    pub new_lines: Vec<Vec<u8>>,
    /// The most bytes one `next_slice` call wrote.
    pub largest_slice: usize,
}

fn lines(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    buf.split(|&b| b == b'\n').filter(|l| !l.is_empty())
}

/// Runs a catch-up from `a` to `b` over an in-memory wire, one round trip a
/// round: the receiver reads all that was sent, the sender reads the
/// answers and writes one slice of `budget` bytes. `between` may change
/// either store between rounds (live updates).
pub(crate) fn run(
    a: &mut Store,
    b: &mut Store,
    budget: usize,
    mut between: impl FnMut(u64, &mut Store, &mut Store),
) -> Outcome {
    let now = Instant::now();
    let (mut a2b, mut b2a) = (Vec::new(), Vec::new());
    let mut c = CatchUp::start(a, now, &mut a2b);
    let mut incoming = Incoming::default();
    let (mut to_receiver, mut to_sender) = (0, 0);
    let mut new_lines = Vec::new();
    let mut largest_slice = 0;
    let mut in_flight = 0usize;
    for round in 0..10_000_000u64 {
        to_receiver += a2b.len() as u64;
        in_flight += lines(&a2b).filter(|l| l.starts_with(b"TREE ")).count();
        assert!(
            in_flight <= MAX_REQUESTS_IN_FLIGHT,
            "{in_flight} requests in flight"
        );
        for line in lines(&a2b) {
            match parse_peer_message(line) {
                PeerMessage::Tree { node } => incoming.on_tree(b, node, line.len(), now, &mut b2a),
                PeerMessage::Sync(u) => {
                    let new = b.update(&u.client, u.time_ns, &u.at_line);
                    if new {
                        new_lines.push(u.at_line.clone());
                    }
                    incoming.on_sync(line.len(), new, now);
                }
                PeerMessage::Synced { positions } => {
                    let received = incoming.on_synced(positions, line.len(), now);
                    assert!(c.is_done());
                    return Outcome {
                        sent: c.sent(now),
                        received,
                        to_receiver,
                        to_sender,
                        new_lines,
                        largest_slice,
                    };
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        a2b.clear();
        to_sender += b2a.len() as u64;
        in_flight -= lines(&b2a).count();
        for line in lines(&b2a) {
            let PeerMessage::Hashes { node, hashes } = parse_peer_message(line) else {
                panic!("not an answer: {}", String::from_utf8_lossy(line));
            };
            c.on_answer(a, node, &hashes, &mut a2b).unwrap();
        }
        b2a.clear();
        between(round, a, b);
        let before = a2b.len();
        c.next_slice(a, budget, now, &mut a2b);
        largest_slice = largest_slice.max(a2b.len() - before);
    }
    panic!("the catch-up did not end");
}

/// Both directions, one after the other.
fn both_ways(a: &mut Store, b: &mut Store) -> (Outcome, Outcome) {
    let ab = run(a, b, 64 * 1024, |_, _, _| {});
    let ba = run(b, a, 64 * 1024, |_, _, _| {});
    (ab, ba)
}

/// Both directions at once, as a link coming up runs them: each descent
/// compares against the other side's store as it was at the start (the
/// costlier case: the way back offers the lines it holds older).
fn both_at_once(a: &mut Store, b: &mut Store) -> (Outcome, Outcome) {
    let (mut a0, mut b0) = (copy(a), copy(b));
    let ab = run(&mut a0, b, 64 * 1024, |_, _, _| {});
    let ba = run(&mut b0, a, 64 * 1024, |_, _, _| {});
    (ab, ba)
}

fn filled(n: u64) -> Store {
    let mut s = Store::default();
    for i in 0..n {
        let (c, t, l) = at("Riley", &format!("client-{i:06}"), 1_621_464_827, i as u32);
        assert!(s.update(&c, t, &l));
    }
    s
}

fn copy(s: &Store) -> Store {
    let mut c = Store::default();
    for p in s.positions() {
        let client = crate::herd::store::client_field(&p.at_line).unwrap();
        c.update(client, p.time_ns, &p.at_line);
    }
    c
}

/// Newer lines for `k` distinct existing clients (of `n`).
fn change(s: &mut Store, n: u64, k: u64, seed: u64) {
    let mut rng = Rng(seed);
    let mut picked = BTreeSet::new();
    while (picked.len() as u64) < k {
        picked.insert(rng.below(n));
    }
    for i in picked {
        let (c, t, l) = at("Jaquez", &format!("client-{i:06}"), 1_621_464_900, i as u32);
        assert!(s.update(&c, t, &l));
    }
}

fn full_transfer(s: &Store) -> u64 {
    s.positions().map(|p| p.at_line.len() as u64 + 1).sum()
}

fn same(a: &Store, b: &Store) {
    assert_eq!(contents(a), contents(b));
    assert_eq!(a.node_hash(TreeNode::ROOT), b.node_hash(TreeNode::ROOT));
}

#[test]
fn stores_that_differ_in_k_positions_cost_in_proportion_to_k() {
    let n = 20_000;
    let base = filled(n);
    for k in [1, 10, 100, 1000] {
        let mut a = copy(&base);
        let mut b = copy(&base);
        change(&mut a, n, k, k);
        let (ab, ba) = both_at_once(&mut a, &mut b);
        same(&a, &b);
        // Exactly the lines the receiver lacks go out...
        assert_eq!((ab.sent.positions, ab.received.new), (k, k), "k = {k}");
        // ...and the way back offers the k lines it holds older, refused.
        assert_eq!((ba.sent.positions, ba.received.new), (k, 0), "k = {k}");
        assert_eq!(ab.received.claimed, k);
        // One after the other, the way back finds nothing to do.
        let mut c = copy(&base);
        let (_, back) = both_ways(&mut a, &mut c);
        assert_eq!((back.sent.positions, back.sent.requests), (0, 1));
        // Every byte on the wire, both links' directions, per difference:
        // the descent's hashes and requests, then the line itself.
        let bytes = ab.to_receiver + ab.to_sender + ba.to_receiver + ba.to_sender;
        assert!(bytes <= 250 + 3000 * k, "k = {k}: {bytes} bytes");
        assert!(
            k > 10 || bytes * 100 < full_transfer(&base),
            "k = {k}: {bytes}"
        );
        // The counters agree with the wire.
        assert_eq!(ab.sent.bytes, ab.to_receiver);
        assert_eq!(ab.sent.answer_bytes, ab.to_sender);
        assert_eq!(ab.received.bytes, ab.to_receiver);
        assert_eq!(ab.received.answer_bytes, ab.to_sender);
    }
}

#[test]
fn the_summary_lines_say_what_crossed() {
    let mut a = filled(300);
    let mut b = Store::default();
    let ab = run(&mut a, &mut b, 4096, |_, _, _| {});
    let sent = ab.sent.to_string();
    assert!(
        sent.starts_with("catch-up of 300 positions sent (25200 bytes, "),
        "{sent}"
    );
    assert!(
        sent.ends_with(
            "; 1 nodes compared, 25218 bytes in all sent, 181 bytes of hashes received)"
        ),
        "{sent}"
    );
    let received = ab.received.to_string();
    assert!(
        received.starts_with("catch-up of 300 positions received (300 new, 25218 bytes, "),
        "{received}"
    );
    assert!(
        received.ends_with("; 1 nodes answered, 181 bytes of hashes sent)"),
        "{received}"
    );
}

#[test]
fn an_empty_receiver_gets_everything_in_one_round_trip_of_hashes() {
    let mut a = filled(5000);
    let mut b = Store::default();
    let (ab, ba) = both_ways(&mut a, &mut b);
    same(&a, &b);
    assert_eq!((ab.sent.positions, ab.received.new), (5000, 5000));
    // The root's answer says it holds nothing anywhere: no descent.
    assert_eq!(ab.sent.requests, 1);
    // The way back: both hold the same now.
    assert_eq!((ba.sent.positions, ba.sent.requests), (0, 1));
}

#[test]
fn an_empty_sender_and_equal_stores_cost_next_to_nothing() {
    let mut a = Store::default();
    let mut b = filled(100);
    let ab = run(&mut a, &mut b, 1024, |_, _, _| {});
    assert_eq!(
        (ab.sent.positions, ab.sent.requests, ab.to_sender),
        (0, 0, 0)
    );
    assert_eq!(ab.to_receiver, b"SYNCED 0\n".len() as u64);
    let mut c = copy(&b);
    let bc = run(&mut b, &mut c, 1024, |_, _, _| {});
    assert_eq!((bc.sent.positions, bc.sent.requests), (0, 1));
    assert!(bc.to_receiver + bc.to_sender < 250);
}

#[test]
fn slices_keep_to_their_budget() {
    let mut a = filled(3000);
    let mut b = Store::default();
    let ab = run(&mut a, &mut b, 1000, |_, _, _| {});
    same(&a, &b);
    // A slice stops after the line that reaches the budget.
    assert!(ab.largest_slice <= 1000 + 100, "{}", ab.largest_slice);
    assert!(ab.largest_slice >= 1000);
}

#[test]
fn equal_times_are_settled_by_the_greater_line_whichever_side_holds_it() {
    // Both sides hold a line of the same client time for every client,
    // from different servers: after both directions, both hold the greater.
    let mut a = Store::default();
    let mut b = Store::default();
    let mut want = BTreeSet::new();
    for i in 0..2000u32 {
        let client = format!("c{i}");
        let x = at("Jaquez", &client, 77, 5);
        let y = at("Riley", &client, 77, 5);
        let (first, second) = if i % 2 == 0 { (&x, &y) } else { (&y, &x) };
        a.update(&first.0, first.1, &first.2);
        b.update(&second.0, second.1, &second.2);
        want.insert(x.2.clone().max(y.2.clone()));
    }
    let (ab, ba) = both_ways(&mut a, &mut b);
    same(&a, &b);
    assert_eq!(contents(&a), want);
    // Half the clients were settled each way.
    assert_eq!((ab.received.new, ba.received.new), (1000, 1000));
}

#[test]
fn a_bounded_herd_agrees_on_the_same_n() {
    let mut rng = Rng(42);
    let mut a = Store::bounded(300);
    let mut b = Store::bounded(300);
    let mut all = Vec::new();
    for _ in 0..3000 {
        let u = at(
            "Riley",
            &format!("c{}", rng.below(1000)),
            rng.below(1000),
            0,
        );
        let into = if rng.below(2) == 0 { &mut a } else { &mut b };
        into.update(&u.0, u.1, &u.2);
        all.push(u);
    }
    both_ways(&mut a, &mut b);
    same(&a, &b);
    // The same as one store fed everything.
    let mut one = Store::bounded(300);
    for u in &all {
        one.update(&u.0, u.1, &u.2);
    }
    same(&a, &one);
}

#[test]
fn a_leaf_too_full_to_list_gets_all_of_the_senders_lines() {
    let n = 3000;
    let mut a = filled(n);
    let mut b = copy(&a);
    change(&mut a, n, 1, 5);
    let now = Instant::now();
    let mut out = Vec::new();
    let mut c = CatchUp::start(&a, now, &mut out);
    // Answer as the receiver would, but say "too many" for the leaf.
    let mut answers = Vec::new();
    let mut sent = Vec::new();
    while !c.is_done() {
        for line in lines(&out) {
            match parse_peer_message(line) {
                PeerMessage::Tree { node } if node.is_leaf() => {
                    peer::write_too_many(&mut answers, node);
                }
                PeerMessage::Tree { node } => {
                    answer(&b, node, &mut answers);
                }
                PeerMessage::Sync(u) => sent.push(u.at_line),
                _ => {}
            }
        }
        out.clear();
        for line in lines(&answers) {
            let PeerMessage::Hashes { node, hashes } = parse_peer_message(line) else {
                panic!()
            };
            c.on_answer(&a, node, &hashes, &mut out).unwrap();
        }
        answers.clear();
        c.next_slice(&a, 1 << 20, now, &mut out);
    }
    for line in lines(&out) {
        if let PeerMessage::Sync(u) = parse_peer_message(line) {
            sent.push(u.at_line);
        }
    }
    // The changed client's whole leaf went: itself and its leaf-mates.
    let leaf = |l: &[u8]| {
        crate::herd::store::leaf_of(hash64(crate::herd::store::client_field(l).unwrap()))
    };
    let changed: Vec<_> = contents(&a).difference(&contents(&b)).cloned().collect();
    assert_eq!(changed.len(), 1);
    let mates = a.leaf_lines(leaf(&changed[0])).count();
    assert_eq!(sent.len(), mates);
    assert!(sent.iter().all(|l| leaf(l) == leaf(&changed[0])));
    for l in &sent {
        let u = crate::protocol::peer::parse_update(l).unwrap();
        b.update(&u.client, u.time_ns, &u.at_line);
    }
    same(&a, &b);
    // An answer nobody asked for is refused.
    assert_eq!(
        c.on_answer(&a, TreeNode::ROOT, &Hashes::List(vec![0; 16]), &mut out),
        Err(Unexpected(TreeNode::ROOT))
    );
}

/// Changes both stores between rounds, as live traffic would, and records
/// every line the sender held; `flood` says whether each change also reaches
/// the other side (a live flood) or stays where it was made.
fn concurrent(flood: bool) {
    let n = 4000;
    let mut a = filled(n);
    let mut b = copy(&a);
    change(&mut a, n, 300, 1);
    change(&mut b, n, 300, 2);
    let held_at_start = contents(&a);
    let mut rng = Rng(77);
    let mut changed_at_a = BTreeSet::new();
    let out = run(&mut a, &mut b, 2000, |round, a, b| {
        for _ in 0..3 {
            let i = rng.below(n + 50);
            let server = ["Juzang", "Bernard"][rng.below(2) as usize];
            let u = at(
                server,
                &format!("client-{i:06}"),
                1_621_465_000 + round,
                i as u32,
            );
            let here_a = rng.below(2) == 0;
            if here_a {
                changed_at_a.insert(u.0.clone());
            }
            let (first, other) = if here_a {
                (&mut *a, &mut *b)
            } else {
                (&mut *b, &mut *a)
            };
            if first.update(&u.0, u.1, &u.2) && flood {
                other.update(&u.0, u.1, &u.2);
            }
        }
    });
    assert!(out.sent.positions > 0);
    // Every line the sender held from start to end is at the receiver, or
    // the receiver holds something newer for that client.
    for line in &held_at_start {
        let client = crate::herd::store::client_field(line).unwrap();
        if changed_at_a.contains(client) {
            continue;
        }
        let theirs = b.get(client).expect("client missing at the receiver");
        let ours = a.get(client).unwrap();
        assert!(
            (theirs.time_ns, &*theirs.at_line) >= (ours.time_ns, &*ours.at_line),
            "{}",
            String::from_utf8_lossy(line)
        );
    }
    if flood {
        // With the floods, the way back finishes the job.
        run(&mut b, &mut a, 2000, |_, _, _| {});
        same(&a, &b);
    }
}

#[test]
fn live_updates_during_the_descent_are_not_lost() {
    concurrent(false);
    concurrent(true);
}

/// A herd of stores on a ring with chords: IAMATs at random servers while
/// some links are down, live floods with the spec's rule (docs/spec.md §5: new -> every
/// neighbour but the source), then the links come back with catch-ups. A
/// catch-up that brought something new is followed by catch-ups from the
/// receiver to its other neighbours (`rerun`), or its new positions are
/// flooded on as live updates (`!rerun`).
fn herd(rerun: bool, seed: u64) {
    let n = 7;
    let mut links: BTreeSet<(usize, usize)> = (0..n).map(|i| (i, (i + 1) % n)).collect();
    links.insert((0, 3));
    links.insert((2, 5));
    let neighbours = |i: usize, links: &BTreeSet<(usize, usize)>| -> Vec<usize> {
        links
            .iter()
            .filter_map(|&(x, y)| (x == i).then_some(y).or((y == i).then_some(x)))
            .collect()
    };
    let mut stores: Vec<Store> = (0..n).map(|_| Store::default()).collect();
    let mut rng = Rng(seed);
    let mut down: BTreeSet<(usize, usize)> = links
        .iter()
        .copied()
        .filter(|_| rng.below(3) == 0)
        .collect();
    let up =
        |x: usize, y: usize, down: &BTreeSet<(usize, usize)>| !down.contains(&(x.min(y), x.max(y)));
    // (line, from, to) deliveries, to check that floods end.
    let mut crossings: BTreeMap<(Vec<u8>, usize, usize), u32> = BTreeMap::new();
    let mut queue: VecDeque<(Vec<u8>, usize, usize)> = VecDeque::new();
    let mut all = Vec::new();
    let flood = |line: Vec<u8>,
                 at: usize,
                 from: Option<usize>,
                 queue: &mut VecDeque<_>,
                 down: &BTreeSet<_>| {
        for j in neighbours(at, &links) {
            if Some(j) != from && up(at, j, down) {
                queue.push_back((line.clone(), at, j));
            }
        }
    };
    let mut deliver = |stores: &mut Vec<Store>,
                       queue: &mut VecDeque<(Vec<u8>, usize, usize)>,
                       down: &BTreeSet<_>,
                       rng: &mut Rng| {
        let mut steps = 0;
        while !queue.is_empty() {
            steps += 1;
            assert!(steps < 1_000_000, "floods do not end");
            // Any link's next message, in a random order across links.
            let pick = rng.below(queue.len() as u64) as usize;
            let (line, from, to) = queue.remove(pick).unwrap();
            *crossings.entry((line.clone(), from, to)).or_default() += 1;
            let u = crate::protocol::peer::parse_update(&line).unwrap();
            if stores[to].update(&u.client, u.time_ns, &u.at_line) {
                flood(line, to, Some(from), queue, down);
            }
        }
    };
    for round in 0..300u64 {
        let at_server = rng.below(n as u64) as usize;
        let u = at(
            &format!("S{at_server}"),
            &format!("c{}", rng.below(60)),
            rng.below(40),
            0,
        );
        all.push(u.clone());
        if stores[at_server].update(&u.0, u.1, &u.2) {
            flood(u.2, at_server, None, &mut queue, &down);
        }
        if round % 7 == 0 {
            deliver(&mut stores, &mut queue, &down, &mut rng);
        }
    }
    deliver(&mut stores, &mut queue, &down, &mut rng);
    // Heal, link by link: each comes up with a catch-up each way.
    let mut passes = 0;
    while let Some(&(x, y)) = down.iter().next() {
        down.remove(&(x, y));
        let mut pending: VecDeque<(usize, usize)> = [(x, y), (y, x)].into();
        while let Some((from, to)) = pending.pop_front() {
            passes += 1;
            assert!(passes < 1000, "catch-ups do not end");
            let (s, r) = two(&mut stores, from, to);
            let out = run(s, r, 4096, |_, _, _| {});
            if out.new_lines.is_empty() {
                continue;
            }
            if rerun {
                for j in neighbours(to, &links) {
                    if j != from && up(to, j, &down) {
                        pending.push_back((to, j));
                    }
                }
            } else {
                for line in out.new_lines {
                    flood(line, to, Some(from), &mut queue, &down);
                }
                deliver(&mut stores, &mut queue, &down, &mut rng);
            }
        }
    }
    // Everyone agrees, on what one store fed everything holds.
    let mut one = Store::default();
    for u in &all {
        one.update(&u.0, u.1, &u.2);
    }
    for s in &stores {
        same(s, &one);
    }
    // Every line crossed each link at most once per direction.
    for ((line, from, to), times) in &crossings {
        assert_eq!(*times, 1, "{} {from}->{to}", String::from_utf8_lossy(line));
    }
}

fn two(v: &mut [Store], i: usize, j: usize) -> (&mut Store, &mut Store) {
    assert_ne!(i, j);
    if i < j {
        let (x, y) = v.split_at_mut(j);
        (&mut x[i], &mut y[0])
    } else {
        let (x, y) = v.split_at_mut(i);
        (&mut y[0], &mut x[j])
    }
}

#[test]
fn floods_end_and_a_healed_herd_agrees_under_reconciliation() {
    for seed in 1..6 {
        herd(true, seed);
        herd(false, seed);
    }
}

/// The figures in `docs/protocol.md`:
/// `cargo test --release --lib -- --ignored --nocapture measure_reconciliation`.
#[test]
#[ignore = "a measurement: run in release with --nocapture"]
fn measure_reconciliation() {
    for (n, k) in [(200_000, 250), (1_000_000, 250), (200_000, 2500)] {
        let base = filled(n);
        let mut a = copy(&base);
        // The restarted server: it holds the state file's positions and
        // missed k changes.
        let mut b = copy(&base);
        change(&mut a, n, k, 3);
        let full = full_transfer(&a);
        let (ab, ba) = both_at_once(&mut a, &mut b);
        same(&a, &b);
        // What the restarted server receives: the sender's requests and
        // positions one way, the answers to its own requests the other.
        let received = ab.to_receiver + ba.to_sender;
        let sent = ab.to_sender + ba.to_receiver;
        println!(
            "{n} positions, {k} changed: the restarted server receives {received} bytes \
             ({:.3}% of a full transfer of {full} bytes) and sends {sent}; \
             {} + {} nodes compared, {} positions received ({} new)",
            100.0 * received as f64 / full as f64,
            ab.sent.requests,
            ba.sent.requests,
            ab.received.positions,
            ab.received.new,
        );
        println!("    sender: {}\n    receiver: {}", ab.sent, ab.received);
    }
    let mut a = filled(200_000);
    let mut b = Store::default();
    let full = full_transfer(&a);
    let (ab, ba) = both_at_once(&mut a, &mut b);
    println!(
        "200000 positions, empty restart: {} bytes received ({:.2}% of the AT lines alone, \
         {full} bytes: the SYNC prefixes and one root answer), {} sent",
        ab.to_receiver + ba.to_sender,
        100.0 * (ab.to_receiver + ba.to_sender) as f64 / full as f64,
        ab.to_sender + ba.to_receiver,
    );
}
