//! The catch-up at scale, black-box: real servers, a counting proxy on
//! the links, positions by the tens of thousands (docs/protocol.md, "The
//! catch-up"; issue 9). The counterparts keep the full catch-up by design,
//! so these run against the Rust herd only and say so otherwise.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// True (after saying so) when a counterpart runs: they keep the full catch-up.
fn skip_for_counterparts() -> bool {
    if is_counterpart() {
        eprintln!(
            "skipped for PROXY_HERD_IMPL={}: the counterparts keep the full catch-up",
            implementation()
        );
    }
    is_counterpart()
}

/// A TCP proxy to `target` that counts the bytes going each way.
struct CountingProxy {
    port: u16,
    /// Bytes from the dialer to the target, and back.
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl CountingProxy {
    fn start(target: u16) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let (u, d, s) = (up.clone(), down.clone(), stop.clone());
        std::thread::spawn(move || {
            // At most a few dozen links in a test; a connection from Drop ends it.
            for _ in 0..64 {
                let Ok((client, _)) = listener.accept() else {
                    return;
                };
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                pipe(&client, &server, u.clone());
                pipe(&server, &client, d.clone());
            }
        });
        CountingProxy {
            port,
            up,
            down,
            stop,
        }
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` to `to`, counting, until either side closes.
fn pipe(from: &TcpStream, to: &TcpStream, counter: Arc<AtomicU64>) {
    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
        let _ = to.shutdown(Shutdown::Write);
        let _ = from.shutdown(Shutdown::Read);
    });
}

/// Sends `IAMAT {prefix}{i} +1+1 {time}` for `i` in `range` to `port`,
/// pipelined in batches, and returns the bytes of the AT lines answered.
fn load(port: u16, prefix: &str, range: std::ops::Range<usize>, time: &str) -> usize {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut replies = BufReader::new(stream.try_clone().unwrap());
    let mut bytes = 0;
    let ids: Vec<usize> = range.collect();
    for batch in ids.chunks(2_000) {
        let mut out = String::new();
        for i in batch {
            out.push_str(&format!("IAMAT {prefix}{i} +1+1 {time}\n"));
        }
        (&stream).write_all(out.as_bytes()).unwrap();
        for _ in batch {
            let mut line = String::new();
            replies.read_line(&mut line).unwrap();
            assert!(line.starts_with("AT "), "{line:?}");
            bytes += line.len();
        }
    }
    bytes
}

/// What `name` has logged since it last started (a restart appends).
fn log_since_start(herd: &Herd, name: &str) -> String {
    let log = herd.server(name).log_text();
    let start = log.rfind(" listening for clients on ").unwrap_or(0);
    log[start..].to_string()
}

/// The first line `name` logged since it started containing `needle`,
/// once there is one.
fn wait_log_line(herd: &Herd, name: &str, needle: &str) -> String {
    wait_for(&format!("{name}'s log to say {needle:?}"), || {
        log_since_start(herd, name)
            .lines()
            .find(|l| l.contains(needle))
            .map(str::to_string)
    })
}

/// The positions and new positions of a `catch-up of N positions received
/// (M new, ...` line.
fn received(line: &str) -> (u64, u64) {
    let number = |s: Option<&str>| s.and_then(|s| s.parse::<u64>().ok());
    let after = line.split("catch-up of ").nth(1).unwrap_or_default();
    let positions = number(after.split(' ').next());
    let new = number(
        after
            .split(" positions received (")
            .nth(1)
            .and_then(|r| r.split(' ').next()),
    );
    positions
        .zip(new)
        .unwrap_or_else(|| panic!("not a summary: {line}"))
}

/// A herd file for `name` in which neighbour `other`'s peer port is `port`.
fn herd_file_with_peer(herd: &Herd, name: &str, other: &str, port: u16) -> std::path::PathBuf {
    let text = std::fs::read_to_string(&herd.config).unwrap();
    let real = herd.members[herd.index(other)].peer_port;
    let path = herd.dir.path(&format!("herd-for-{name}.txt"));
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with(&format!("{other} ")) {
            out.push_str(&line.replace(
                &format!("peer=127.0.0.1:{real}"),
                &format!("peer=127.0.0.1:{port}"),
            ));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    std::fs::write(&path, out).unwrap();
    path
}

/// Starts `name` with its own herd file and state file.
fn start_as(herd: &mut Herd, name: &str, config: &std::path::Path) {
    let (saved_config, saved_args) = (herd.config.clone(), herd.extra_args.clone());
    herd.config = config.to_path_buf();
    let state = herd.dir.path(&format!("state-{name}"));
    herd.extra_args
        .extend(["--state".to_string(), state.display().to_string()]);
    herd.start_named(name);
    herd.config = saved_config;
    herd.extra_args = saved_args;
}

#[test]
fn a_restart_on_the_state_file_receives_what_it_missed_not_the_store() {
    if skip_for_counterparts() {
        return;
    }
    // 30,000 positions of about 190 bytes: a state file of 5.7 MB, more
    // than a server reads before its first turn, so the links come up
    // while it loads (and the catch-ups must wait for the load).
    const POSITIONS: usize = 30_000;
    const MISSED: usize = 25;
    let mut herd = Herd::new(
        "sync-state",
        &[("Riley", &["Jaquez"]), ("Jaquez", &["Riley"])],
    );
    // Every byte Jaquez receives from Riley crosses a proxy: Riley's link
    // to it (the catch-up), and the answers on Jaquez's link to Riley.
    let to_jaquez = CountingProxy::start(herd.members[herd.index("Jaquez")].peer_port);
    let to_riley = CountingProxy::start(herd.members[herd.index("Riley")].peer_port);
    let riley_cfg = herd_file_with_peer(&herd, "Riley", "Jaquez", to_jaquez.port);
    let jaquez_cfg = herd_file_with_peer(&herd, "Jaquez", "Riley", to_riley.port);
    start_as(&mut herd, "Riley", &riley_cfg);
    start_as(&mut herd, "Jaquez", &jaquez_cfg);
    herd.wait_all_links_up();
    let riley = herd.members[herd.index("Riley")].client_port;
    let prefix = format!("{}-", "c".repeat(100));
    let full = load(riley, &prefix, 0..POSITIONS, "1000");
    let last = format!("{prefix}{}", POSITIONS - 1);
    wait_for("Jaquez to hold every position", || {
        herd.known_at("Jaquez", &last).map(|_| ())
    });
    herd.kill("Jaquez");
    // What Jaquez misses while it is down: a few clients move.
    load(riley, &prefix, 0..MISSED, "2000");
    // What Jaquez receives: Riley's catch-up on Riley's link to it, and
    // Riley's answers on Jaquez's link to Riley.
    let received = || to_jaquez.up.load(Ordering::Relaxed) + to_riley.down.load(Ordering::Relaxed);
    let sent = || to_jaquez.down.load(Ordering::Relaxed) + to_riley.up.load(Ordering::Relaxed);
    let (received0, sent0) = (received(), sent());
    start_as(&mut herd, "Jaquez", &jaquez_cfg);
    let summary = wait_log_line(&herd, "Jaquez", "link from Riley: catch-up of");
    // Both directions' catch-ups are over.
    wait_log_line(&herd, "Jaquez", "link Riley: catch-up of");
    let (received, sent) = (received() - received0, sent() - sent0);
    assert!(summary.contains(&format!("({MISSED} new,")), "{summary}");
    // The difference, not the store: well under 5% of a full transfer.
    assert!(
        (received as usize) * 20 < full,
        "Jaquez received {received} bytes (and sent {sent}) after missing {MISSED} changes; a full transfer is {full}"
    );
    for i in (0..MISSED).chain([POSITIONS / 2, POSITIONS - 1]) {
        let client = format!("{prefix}{i}");
        let at = herd.known_at("Riley", &client);
        assert!(at.is_some(), "{client}");
        assert_eq!(herd.known_at("Jaquez", &client), at, "{client}");
    }
}

#[test]
fn an_empty_restart_gets_everything_in_one_catch_up_and_clients_are_served_meanwhile() {
    if skip_for_counterparts() {
        return;
    }
    const POSITIONS: usize = 60_000;
    let mut herd = Herd::start(
        "sync-empty",
        &[
            ("Riley", &["Jaquez"]),
            ("Jaquez", &["Riley", "Juzang"]),
            ("Juzang", &["Jaquez"]),
        ],
    );
    herd.wait_all_links_up();
    let riley = herd.members[herd.index("Riley")].client_port;
    load(riley, "c", 0..POSITIONS, "1000");
    let last = format!("c{}", POSITIONS - 1);
    wait_for("Juzang to hold every position", || {
        herd.known_at("Juzang", &last).map(|_| ())
    });
    herd.kill("Jaquez");
    herd.start_named("Jaquez");
    // While the catch-up streams to Jaquez, Riley's clients are answered.
    let at = herd.iamat("Riley", "probe", "+2+2", "3000");
    wait_log_line(&herd, "Jaquez", "link from Riley: catch-up of");
    wait_log_line(&herd, "Jaquez", "link from Juzang: catch-up of");
    // Riley and Juzang both caught Jaquez up: between them, every position
    // arrived new once.
    let log = log_since_start(&herd, "Jaquez");
    let new: u64 = log
        .lines()
        .filter(|l| l.contains(" positions received ("))
        .map(|l| received(l).1)
        .sum();
    // (The probe too, if it came before the link was up.)
    assert!(
        new == POSITIONS as u64 || new == POSITIONS as u64 + 1,
        "{log}"
    );
    // Once: the two catch-ups into Jaquez were answered one after the other,
    // so the second compared against what the first had brought.
    let positions: u64 = log
        .lines()
        .filter(|l| l.contains(" positions received ("))
        .map(|l| received(l).0)
        .sum();
    assert!(positions <= POSITIONS as u64 + 2, "{log}");
    herd.wait_everywhere("probe", &at);
    for name in ["Riley", "Jaquez", "Juzang"] {
        assert!(herd.known_at(name, "c0").is_some(), "{name}");
        assert!(herd.known_at(name, &last).is_some(), "{name}");
    }
    // Once per link direction: no catch-up was repeated.
    wait_for("Riley's second catch-up to Jaquez", || {
        (count(&herd.server("Riley").log_text(), "link Jaquez: catch-up of") >= 2).then_some(())
    });
    let log = herd.server("Riley").log_text();
    assert_eq!(count(&log, "link Jaquez: catch-up of"), 2, "{log}");
    // Juzang already held everything: its catch-ups with Jaquez cost a
    // comparison, not the store.
    // (The probe is the one thing it may lack: if it came before Riley's
    // link to Jaquez was up, it reached Jaquez by the catch-up, and goes on
    // by catch-ups too.)
    let juzang = herd.server("Juzang").log_text();
    for line in juzang
        .lines()
        .filter(|l| l.contains("link from Jaquez: catch-up of"))
    {
        assert!(received(line).0 <= 1, "{line}");
    }
}

#[test]
fn a_burst_against_a_slow_neighbour_is_coalesced_not_dropped() {
    if skip_for_counterparts() {
        return;
    }
    const CLIENTS: usize = 100;
    const ROUNDS: usize = 600;
    // Riley's neighbour is the test: it says WELCOME, then reads slowly.
    let fake = TcpListener::bind("127.0.0.1:0").unwrap();
    // Set on the listener, so the connection starts with a small window:
    // the kernel then holds little of what Riley sends while the test waits.
    shrink_receive_buffer(&fake, 64 * 1024);
    let (herd, theirs) = Herd::riley_with_a_fake_neighbour("sync-burst", &fake);
    let mut lines = BufReader::new(theirs.try_clone().unwrap());
    wait_log_line(&herd, "Riley", "link Tester: Greeting => Up");
    // The slow neighbour reads 64 KiB every half second until the burst
    // is over (slow, but never silent: a link that makes no progress at
    // all for 5 s is dropped), then everything, answering PINGs, until it
    // has seen every client's last position.
    let last = format!("+1+1 {}", 1000 + ROUNDS - 1);
    let (burst_over, wait_burst) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut newest = HashSet::new();
        let (mut lines_read, start) = (0usize, std::time::Instant::now());
        let (mut slow, mut bytes) = (true, 0);
        while newest.len() < CLIENTS && start.elapsed() < Duration::from_secs(60) {
            let mut l = String::new();
            if lines.read_line(&mut l).unwrap_or(0) == 0 {
                return Err(format!("Riley closed the link after {lines_read} lines"));
            }
            lines_read += 1;
            bytes += l.len();
            if l == "PING\n" {
                let _ = (&theirs).write_all(b"PONG\n");
            } else if l.trim_end().ends_with(&last) {
                newest.insert(l);
            }
            if slow && bytes >= 64 * 1024 {
                bytes = 0;
                slow = wait_burst.recv_timeout(Duration::from_millis(500)).is_err();
            }
        }
        // The connection goes back to the test, which closes it at the end.
        Ok((newest.len(), lines_read, theirs, lines))
    });
    // 60,000 updates of 100 clients with long IDs, about 17 MB: more than
    // the kernel holds, and than the 8 MiB that used to drop the link.
    let riley = herd.members[herd.index("Riley")].client_port;
    let prefix = format!("{}-", "x".repeat(200));
    for round in 0..ROUNDS {
        load(riley, &prefix, 0..CLIENTS, &format!("{}", 1000 + round));
    }
    let _ = burst_over.send(());
    let (seen, lines_read, _theirs, _lines) = reader.join().unwrap().unwrap();
    assert_eq!(seen, CLIENTS, "every client's newest position arrived");
    // Coalesced: far fewer lines than updates crossed.
    assert!(
        lines_read < CLIENTS * ROUNDS,
        "{lines_read} lines for {} updates",
        CLIENTS * ROUNDS
    );
    let log = herd.server("Riley").log_text();
    assert_eq!(
        count(&log, "link Tester: Up =>"),
        0,
        "the link stayed up: {log}"
    );
}

/// Which of the clients `b0`..`b119` server `name` holds.
fn kept(herd: &Herd, name: &str) -> Vec<usize> {
    (0..120)
        .filter(|i| herd.known_at(name, &format!("b{i}")).is_some())
        .collect()
}

#[test]
fn max_positions_agree_across_the_herd_whatever_the_arrival_order() {
    if skip_for_counterparts() {
        return;
    }
    const BOUND: usize = 40;
    let mut herd = Herd::new(
        "sync-bound",
        &[
            ("Riley", &["Jaquez", "Juzang"]),
            ("Jaquez", &["Riley", "Juzang"]),
            ("Juzang", &["Riley", "Jaquez"]),
        ],
    );
    herd.extra_args
        .extend(["--max-positions".to_string(), BOUND.to_string()]);
    for i in 0..3 {
        herd.start_one(i);
    }
    herd.wait_all_links_up();
    // 120 clients, sent to the three servers in interleaved, shuffled order
    // of time: every server must keep the 40 newest.
    let names = ["Riley", "Jaquez", "Juzang"];
    for k in 0..120usize {
        let i = (k * 37) % 120;
        let name = names[k % 3];
        herd.iamat(name, &format!("b{i}"), "+1+1", &format!("{}", 5000 + i));
    }
    let newest: Vec<usize> = (120 - BOUND..120).collect();
    for name in names {
        wait_for(&format!("{name} to keep the {BOUND} newest"), || {
            (kept(&herd, name) == newest).then_some(())
        });
    }
    // Late joiners too: Juzang restarts empty and catches up to the same.
    herd.kill("Juzang");
    herd.start_named("Juzang");
    herd.wait_all_links_up();
    wait_log_line(&herd, "Juzang", "link from Riley: catch-up of");
    wait_log_line(&herd, "Juzang", "link from Jaquez: catch-up of");
    for name in names {
        assert_eq!(kept(&herd, name), newest, "{name}");
    }
}
