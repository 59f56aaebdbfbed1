use super::*;
use crate::herd::store::tests::{at, contents};

const AT: &[u8] = b"AT Riley +0.263873386 kiwi +34.068930-118.445127 1621464827.959498503";

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("proxy-herd-state-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("state")
}

fn cleanup(path: &Path) {
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

fn reload(path: &Path) -> (Store, LoadStats) {
    let mut store = Store::default();
    let (_, stats) = StateFile::open_into(path, &mut store).unwrap();
    (store, stats)
}

#[test]
fn records_round_trip_and_damage_is_refused() {
    let mut out = Vec::new();
    write_record(&mut out, AT);
    assert_eq!(
        out,
        format!("P {:016x} ", fnv1a64(AT))
            .into_bytes()
            .into_iter()
            .chain(AT.iter().copied())
            .chain([b'\n'])
            .collect::<Vec<u8>>()
    );
    let line = &out[..out.len() - 1];
    assert_eq!(parse_record(line).unwrap().at_line, AT);
    let mut damaged = line.to_vec();
    let last = damaged.len() - 1;
    damaged[last] = b'4';
    assert_eq!(parse_record(&damaged), None);
    assert_eq!(parse_record(&line[..line.len() - 3]), None);
    assert_eq!(parse_record(b"P 0000 AT"), None);
    assert_eq!(parse_record(b""), None);
    // A good checksum over a line that is not a canonical AT line.
    let mut odd = Vec::new();
    write_record(
        &mut odd,
        b"AT Riley +0.263873386 kiwi  +34.068930-118.445127 1",
    );
    assert_eq!(parse_record(&odd[..odd.len() - 1]), None);
}

#[test]
fn positions_survive_reopening_and_a_torn_tail_is_cut() {
    let path = temp("torn");
    let (mut s, loaded) = StateFile::open(&path).unwrap();
    assert!(loaded.positions.is_empty());
    s.record(AT);
    s.record(b"AT Jaquez +0.000000001 pear +1-1 5");
    s.flush().unwrap();
    drop(s);
    // A power cut in the middle of a third record.
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(b"P 0123456789abcdef AT Riley +0.1").unwrap();
    drop(f);
    let (mut s, loaded) = StateFile::open(&path).unwrap();
    assert_eq!(loaded.positions.len(), 2);
    assert_eq!(loaded.torn_bytes, 32);
    // What comes next is not glued to the torn bytes.
    s.record(b"AT Juzang +0.000000001 fig +1-1 6");
    s.flush().unwrap();
    drop(s);
    let (store, stats) = reload(&path);
    assert_eq!(store.len(), 3);
    assert_eq!((stats.records, stats.skipped, stats.torn_bytes), (3, 0, 0));
    cleanup(&path);
}

#[test]
fn a_load_reads_records_across_chunk_boundaries() {
    let path = temp("chunks");
    let (mut s, _) = StateFile::open(&path).unwrap();
    // Enough records for several 1 MiB reads, one of them damaged.
    let n = 30_000;
    for i in 0..n {
        let (_, _, line) = at("Riley", &format!("client-{i:06}"), 1_621_464_827, i);
        s.record(&line);
    }
    s.flush().unwrap();
    drop(s);
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > 2 * READ_CHUNK as u64);
    let mut data = std::fs::read(&path).unwrap();
    // Damage one byte inside the AT line of a record half way through.
    let record = data[data.len() / 2..]
        .iter()
        .position(|&b| b == b'\n')
        .unwrap()
        + data.len() / 2
        + 1;
    data[record + 30] ^= 0x01;
    data.extend_from_slice(b"P 00");
    std::fs::write(&path, &data).unwrap();
    let (store, stats) = reload(&path);
    assert_eq!(
        (stats.records, stats.skipped, stats.torn_bytes),
        (n as u64 - 1, 1, 4)
    );
    assert_eq!(store.len(), n as usize - 1);
    // The old reader finds the same.
    let (_, loaded) = StateFile::open(&path).unwrap();
    assert_eq!(
        (loaded.positions.len(), loaded.skipped),
        (n as usize - 1, 1)
    );
    cleanup(&path);
}

/// Runs a compaction to its end, appending `appends` records between the
/// steps; the store gets them too.
fn compact_with_appends(
    s: &mut StateFile,
    store: &mut Store,
    appends: &[(Vec<u8>, i128, Vec<u8>)],
) -> u64 {
    s.begin_compaction().unwrap();
    let mut pending = appends.iter();
    for _ in 0..100_000 {
        match s.compact_step(store, 4096).unwrap() {
            Compacting::Copying => {}
            Compacting::Syncing => s.wait_for_sync(),
            Compacting::Done { records } => return records,
            Compacting::Idle => panic!("no compaction"),
        }
        // Live updates between steps, recorded as the herd records them.
        for (client, time, line) in pending.by_ref().take(3) {
            if store.update(client, *time, line) {
                s.record(line);
            }
        }
        s.flush().unwrap();
    }
    panic!("the compaction did not end");
}

#[test]
fn compaction_interleaved_with_appends_keeps_everything() {
    let path = temp("interleaved");
    let (mut s, _) = StateFile::open(&path).unwrap();
    let mut store = Store::default();
    // Many records for few positions: each client moved ten times.
    for round in 0..10 {
        for i in 0..2000 {
            let (c, t, l) = at("Riley", &format!("c{i}"), 100 + round, 0);
            assert!(store.update(&c, t, &l));
            s.record(&l);
        }
    }
    s.flush().unwrap();
    assert!(s.wants_compaction(store.len()));
    let size_before = std::fs::metadata(&path).unwrap().len();
    // While it runs: newer lines for old clients, and new clients.
    let appends: Vec<_> = (0..2500)
        .map(|i| at("Jaquez", &format!("c{}", i * 7 % 3000), 200, i))
        .collect();
    let records = compact_with_appends(&mut s, &mut store, &appends);
    assert!(!s.is_compacting());
    assert!(!path.with_extension("compacting").exists());
    assert!(records < 20_000, "{records} records");
    assert!(std::fs::metadata(&path).unwrap().len() < size_before / 3);
    // Appends after the compaction land in the new file.
    let (c, t, l) = at("Juzang", "late", 300, 0);
    store.update(&c, t, &l);
    s.record(&l);
    s.flush().unwrap();
    let (again, stats) = reload(&path);
    assert_eq!(stats.skipped, 0);
    assert_eq!(contents(&again), contents(&store));
    assert_eq!(
        again.node_hash(crate::protocol::peer::TreeNode::ROOT),
        store.node_hash(crate::protocol::peer::TreeNode::ROOT)
    );
    cleanup(&path);
}

#[test]
fn a_crash_during_compaction_leaves_one_whole_file() {
    // Killed while copying: the old file is intact and complete.
    let path = temp("crash-copying");
    let (mut s, _) = StateFile::open(&path).unwrap();
    let mut store = Store::default();
    for i in 0..3000 {
        let (c, t, l) = at("Riley", &format!("c{i}"), 1, 0);
        store.update(&c, t, &l);
        s.record(&l);
    }
    s.flush().unwrap();
    s.begin_compaction().unwrap();
    assert_eq!(s.compact_step(&store, 1000).unwrap(), Compacting::Copying);
    let (c, t, l) = at("Jaquez", "during", 2, 0);
    store.update(&c, t, &l);
    s.record(&l);
    s.flush().unwrap();
    drop(s);
    let (again, _) = reload(&path);
    assert_eq!(contents(&again), contents(&store));
    // The next compaction starts afresh over the leftover.
    let (mut s, _) = StateFile::open(&path).unwrap();
    compact_with_appends(&mut s, &mut store, &[]);
    assert_eq!(contents(&reload(&path).0), contents(&store));
    cleanup(&path);

    // Killed after the rename but before the loop heard of it: the new file
    // holds the copy and every append.
    let path = temp("crash-renamed");
    let (mut s, _) = StateFile::open(&path).unwrap();
    let mut store = Store::default();
    for i in 0..3000 {
        let (c, t, l) = at("Riley", &format!("c{i}"), 1, 0);
        store.update(&c, t, &l);
        s.record(&l);
    }
    s.flush().unwrap();
    s.begin_compaction().unwrap();
    while s.compact_step(&store, 1 << 20).unwrap() == Compacting::Copying {}
    let (c, t, l) = at("Jaquez", "while-syncing", 2, 0);
    store.update(&c, t, &l);
    s.record(&l);
    s.flush().unwrap();
    s.wait_for_sync();
    drop(s);
    assert!(!path.with_extension("compacting").exists());
    let (again, _) = reload(&path);
    assert_eq!(contents(&again), contents(&store));
    cleanup(&path);
}

#[test]
fn the_blocking_compaction_keeps_only_what_is_given() {
    let path = temp("compact");
    let (mut s, _) = StateFile::open(&path).unwrap();
    for _ in 0..5 {
        s.record(AT);
    }
    s.compact([AT].into_iter()).unwrap();
    s.record(b"AT Jaquez +0.000000001 pear +1-1 5");
    s.flush().unwrap();
    let (_, loaded) = StateFile::open(&path).unwrap();
    assert_eq!(loaded.positions.len(), 2);
    cleanup(&path);
}

fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The figures in `docs/protocol.md`:
/// `cargo test --release --lib -- --ignored --nocapture measure_state_file`.
#[test]
#[ignore = "a measurement: run in release with --nocapture"]
fn measure_state_file() {
    use std::time::Instant;
    let path = temp("measure");
    let n = 1_000_000u32;
    let (mut s, _) = StateFile::open(&path).unwrap();
    let mut store = Store::default();
    for i in 0..n {
        let (c, t, l) = at("Riley", &format!("client-{i:06}"), 1_621_464_827, i);
        store.update(&c, t, &l);
        s.record(&l);
        if i % 10_000 == 0 {
            s.flush().unwrap();
        }
    }
    s.flush().unwrap();
    drop(s);
    let bytes = std::fs::metadata(&path).unwrap().len();
    // Loading, as the server starts: straight into the store...
    let (wall, cpu) = (Instant::now(), cpu_ns());
    let (loaded, stats) = reload(&path);
    let (wall, cpu) = (wall.elapsed(), cpu_ns() - cpu);
    assert_eq!((loaded.len() as u32, stats.records), (n, u64::from(n)));
    println!(
        "load {n} records ({bytes} bytes) into the store: {:.0} ms wall, {:.0} ms on-CPU",
        wall.as_secs_f64() * 1000.0,
        cpu as f64 / 1e6
    );
    // ...and the old way: every record in a list, then into the store.
    let (wall, cpu) = (Instant::now(), cpu_ns());
    let (_, list) = StateFile::open(&path).unwrap();
    let mut old = Store::default();
    for u in &list.positions {
        old.update(&u.client, u.time_ns, &u.at_line);
    }
    let (wall, cpu) = (wall.elapsed(), cpu_ns() - cpu);
    println!(
        "    through a list of updates first: {:.0} ms wall, {:.0} ms on-CPU",
        wall.as_secs_f64() * 1000.0,
        cpu as f64 / 1e6
    );
    drop((list, old, loaded));
    // In slices of 256 KiB, as a loop serving clients meanwhile would.
    let mut s = StateFile::open_for_loading(&path).unwrap();
    let mut sliced = Store::default();
    let (mut steps, mut longest, started) = (0, 0u64, Instant::now());
    loop {
        let cpu = cpu_ns();
        let done = s.load_step(&mut sliced, 256 * 1024).unwrap();
        longest = longest.max(cpu_ns() - cpu);
        steps += 1;
        if done {
            break;
        }
    }
    println!(
        "    in {steps} steps of 256 KiB: longest step {:.2} ms on-CPU, {:.0} ms wall in all",
        longest as f64 / 1e6,
        started.elapsed().as_secs_f64() * 1000.0
    );
    drop((s, sliced));
    // Compaction in steps of 256 KiB: the longest step is what the loop waits.
    let (mut s, _) = StateFile::open_into(&path, &mut Store::default()).unwrap();
    s.begin_compaction().unwrap();
    let (mut steps, mut longest, mut total) = (0, 0u64, 0u64);
    let started = Instant::now();
    loop {
        let cpu = cpu_ns();
        let step = s.compact_step(&store, 256 * 1024).unwrap();
        let took = cpu_ns() - cpu;
        longest = longest.max(took);
        total += took;
        steps += 1;
        match step {
            Compacting::Copying => {}
            Compacting::Syncing => s.wait_for_sync(),
            Compacting::Done { .. } => break,
            Compacting::Idle => unreachable!(),
        }
    }
    println!(
        "compact {n} positions in {steps} steps of 256 KiB: longest step {:.2} ms on-CPU,          {:.0} ms on-CPU in all, {:.0} ms wall with the off-loop fsync",
        longest as f64 / 1e6,
        total as f64 / 1e6,
        started.elapsed().as_secs_f64() * 1000.0
    );
    cleanup(&path);
}

#[test]
fn a_load_in_slices_lets_appends_go_on_meanwhile() {
    let path = temp("slices");
    let (mut s, _) = StateFile::open(&path).unwrap();
    let mut want = Store::default();
    for i in 0..5000 {
        let (c, t, l) = at("Riley", &format!("c{i}"), 10, i);
        want.update(&c, t, &l);
        s.record(&l);
    }
    s.flush().unwrap();
    drop(s);
    // A torn record at the end: cut before anything is appended.
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(b"P 0123456789abcdef AT Ri").unwrap();
    drop(f);
    let mut s = StateFile::open_for_loading(&path).unwrap();
    assert_eq!(s.load_stats().torn_bytes, 24);
    let mut store = Store::default();
    let mut steps = 0;
    while !s.load_step(&mut store, 4096).unwrap() {
        steps += 1;
        assert!(s.is_loading());
        assert!(
            !s.wants_compaction(0),
            "no compaction before the load is over"
        );
        // A client's IAMAT meanwhile: sometimes newer than what the file
        // holds, sometimes older (and taken only until the file's arrives).
        let i = steps * 37 % 5000;
        let (c, t, l) = at(
            "Jaquez",
            &format!("c{i}"),
            if steps % 2 == 0 { 11 } else { 9 },
            0,
        );
        want.update(&c, t, &l);
        if store.update(&c, t, &l) {
            s.record(&l);
        }
        s.flush().unwrap();
    }
    assert!(steps > 50, "{steps} steps");
    assert!(!s.is_loading());
    assert_eq!(contents(&store), contents(&want));
    let stats = s.load_stats();
    assert_eq!(
        (stats.records, stats.skipped, stats.torn_bytes),
        (5000, 0, 24)
    );
    drop(s);
    // A load given up half way never lets a compaction drop the rest.
    let mut half = StateFile::open_for_loading(&path).unwrap();
    half.load_step(&mut Store::default(), 4096).unwrap();
    half.stop_loading();
    assert!(!half.wants_compaction(0));
    half.begin_compaction().unwrap();
    assert!(!half.is_compacting());
    drop(half);
    // The file now holds the records and the appends, not glued to the tail.
    let (again, stats) = reload(&path);
    assert_eq!((stats.skipped, stats.torn_bytes), (0, 0));
    assert_eq!(contents(&again), contents(&want));
    cleanup(&path);
}
