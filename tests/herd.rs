//! The herd: real five-server herds on loopback; flooding, catch-up, kills by
//! pid, partitions, equal times, storms, strangers and stuck peers.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;

/// The default herd, started, with every link up.
fn default_herd(test: &str) -> Herd {
    let herd = Herd::start(test, DEFAULT_HERD);
    herd.wait_all_links_up();
    herd
}

#[test]
fn an_iamat_at_any_server_is_known_at_all_five_with_the_same_at_line() {
    let herd = default_herd("flood");
    for (i, m) in herd.members.iter().enumerate() {
        let client = format!("phone{i}");
        let at = herd.iamat(
            &m.name,
            &client,
            "+34.068930-118.445127",
            &format!("{}.5", 1000 + i),
        );
        assert!(at.starts_with(&format!("AT {} ", m.name)));
        herd.wait_everywhere(&client, &at);
    }
}

#[test]
fn a_neighbour_knows_the_update_as_soon_as_the_client_has_its_reply() {
    let herd = default_herd("sameturn");
    for (from, to) in [
        ("Riley", "Jaquez"),
        ("Juzang", "Campbell"),
        ("Bernard", "Jaquez"),
    ] {
        for i in 0..20 {
            let client = format!("fast-{from}-{i}");
            let at = herd.iamat(from, &client, "+1-1", &format!("{i}"));
            // No wait: the neighbour must already have it.
            assert_eq!(
                herd.known_at(to, &client).as_deref(),
                Some(at.as_str()),
                "{from} -> {to}"
            );
        }
    }
}

#[test]
fn updates_find_their_way_around_dead_servers() {
    let mut herd = default_herd("around");
    herd.kill("Juzang");
    // Riley -> Jaquez -> Bernard -> Campbell, since Juzang is gone.
    let at = herd.iamat("Riley", "kiwi", "+1-1", "10");
    herd.wait_everywhere("kiwi", &at);
    // Riley loses both neighbours: it keeps serving what it knows.
    herd.kill("Jaquez");
    assert_eq!(herd.known_at("Riley", "kiwi").as_deref(), Some(at.as_str()));
    let newer = herd.iamat("Riley", "kiwi", "+2-2", "20");
    assert_eq!(
        herd.known_at("Riley", "kiwi").as_deref(),
        Some(newer.as_str())
    );
    // The other side keeps the older one and goes on serving too.
    assert_eq!(
        herd.known_at("Campbell", "kiwi").as_deref(),
        Some(at.as_str())
    );
    let log = herd.server("Riley").log_text();
    assert!(log.contains("link Jaquez: Up => Backoff"), "{log}");
}

#[test]
fn a_server_restarted_empty_learns_every_position_without_new_iamats() {
    let mut herd = default_herd("restart");
    let mut lines = Vec::new();
    for (i, m) in herd.members.iter().enumerate() {
        let client = format!("r{i}");
        lines.push((
            client.clone(),
            herd.iamat(&m.name, &client, "+3-3", &format!("{i}")),
        ));
    }
    for (client, at) in &lines {
        herd.wait_everywhere(client, at);
    }
    herd.kill("Bernard");
    // An update Bernard misses while it is down.
    let missed = herd.iamat("Riley", "missed", "+4-4", "4");
    herd.start_named("Bernard");
    lines.push(("missed".to_string(), missed));
    for (client, at) in &lines {
        wait_for(&format!("Bernard to learn {client}"), || {
            (herd.known_at("Bernard", client).as_deref() == Some(at.as_str())).then_some(())
        });
    }
    // It came back through the catch-up, and the neighbours dialed back at once.
    herd.wait_links_up("Bernard");
    let log = herd.server("Bernard").log_text();
    assert!(log.contains("catch-up of"), "{log}");
}

#[test]
fn a_split_herd_agrees_on_the_newest_once_joined() {
    let mut herd = default_herd("split");
    // Jaquez and Juzang join Riley to Bernard and Campbell.
    herd.kill("Jaquez");
    herd.kill("Juzang");
    let old = herd.iamat("Riley", "kiwi", "+1-1", "10");
    let new = herd.iamat("Bernard", "kiwi", "+2-2", "20");
    let only_west = herd.iamat("Riley", "west", "+5-5", "5");
    let only_east = herd.iamat("Campbell", "east", "+6-6", "6");
    assert_ne!(old, new);
    assert_eq!(
        herd.known_at("Riley", "kiwi").as_deref(),
        Some(old.as_str())
    );
    assert_eq!(
        herd.known_at("Campbell", "kiwi").as_deref(),
        Some(new.as_str())
    );
    herd.start_named("Jaquez");
    herd.start_named("Juzang");
    herd.wait_everywhere("kiwi", &new);
    herd.wait_everywhere("west", &only_west);
    herd.wait_everywhere("east", &only_east);
}

#[test]
fn equal_client_times_at_two_servers_at_once_end_in_agreement() {
    let herd = default_herd("equal");
    for round in 0..5 {
        let client = format!("twin{round}");
        let time = format!("{}.25", 5000 + round);
        // Both IAMATs go out before either reply is read.
        let mut a = herd.server("Riley").connect();
        let mut b = herd.server("Campbell").connect();
        a.send(format!("IAMAT {client} +1-1 {time}\n").as_bytes());
        b.send(format!("IAMAT {client} +2-2 {time}\n").as_bytes());
        let at_a = a.read_line();
        let at_b = b.read_line();
        // The rule: equal times are ordered by the AT line's bytes.
        let winner = std::cmp::max(at_a, at_b);
        herd.wait_everywhere(&client, &winner);
    }
}

#[test]
fn n_updates_cross_each_link_direction_at_most_n_times() {
    let herd = default_herd("storm");
    let n = 30;
    let mut last = String::new();
    for i in 0..n {
        let server = &herd.members[i % herd.members.len()].name;
        last = herd.iamat(server, &format!("storm{i}"), "+1-1", &format!("{i}"));
    }
    herd.wait_everywhere(&format!("storm{}", n - 1), &last);
    for m in &herd.members {
        let log = herd.server(&m.name).log_text();
        for neighbour in &m.neighbours {
            let sent = log
                .lines()
                .filter(|l| l.contains(&format!("peer-out {neighbour}#")) && l.contains("> AT "))
                .count();
            assert!(
                sent <= n,
                "{} sent {sent} updates to {neighbour} for {n} IAMATs",
                m.name
            );
        }
    }
    // And every update did reach every server.
    for i in 0..n {
        for m in &herd.members {
            assert!(herd.known_at(&m.name, &format!("storm{i}")).is_some());
        }
    }
}

#[test]
fn stopping_a_server_by_its_client_port_stops_only_that_server() {
    if Command::new("lsof").arg("-v").output().is_err() {
        // In CI a missing lsof must not pass as a silent skip (tests/run.sh
        // installs it); on a developer's machine, say so and go on.
        assert!(
            std::env::var_os("CI").is_none(),
            "lsof is not installed, and CI is set: this test cannot be skipped in CI"
        );
        eprintln!("SKIPPED: lsof is not installed (tests/run.sh installs it when root)");
        return;
    }
    let mut herd = default_herd("lsof");
    let port = herd.members[herd.index("Juzang")].client_port;
    // The graders' way: kill every process with a socket on the client port.
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("lsof -ti:{port} | xargs -r kill"))
        .status()
        .unwrap();
    assert!(status.success());
    let i = herd.index("Juzang");
    herd.servers[i].as_mut().unwrap().wait_exit();
    herd.servers[i] = None;
    for name in ["Riley", "Jaquez", "Campbell", "Bernard"] {
        let s = herd.server(name);
        let mut c = s.connect();
        c.send(b"IAMAT alive +1-1 1\n");
        assert!(c.read_line().starts_with(&format!("AT {name} ")));
    }
}

#[test]
fn a_strangers_hello_on_the_peer_port_is_refused() {
    let herd = default_herd("stranger");
    let m = &herd.members[herd.index("Riley")];
    let mut s = TcpStream::connect(("127.0.0.1", m.peer_port)).unwrap();
    s.write_all(b"HELLO Mallory\n").unwrap();
    let mut reply = String::new();
    BufReader::new(&s).read_line(&mut reply).unwrap();
    assert!(reply.starts_with("REFUSED"), "{reply}");
    wait_for("the refusal in the log", || {
        herd.server("Riley")
            .log_text()
            .contains("refused HELLO from Mallory")
            .then_some(())
    });
    // A client line on the peer port is refused too, and never stored.
    let mut s = TcpStream::connect(("127.0.0.1", m.peer_port)).unwrap();
    s.write_all(b"IAMAT sneaky +1-1 1\n").unwrap();
    let mut reply = String::new();
    BufReader::new(&s).read_line(&mut reply).unwrap();
    assert!(reply.starts_with("REFUSED"), "{reply}");
    assert_eq!(herd.known_at("Riley", "sneaky"), None);
}

#[test]
fn a_peer_that_never_reads_does_not_hold_up_clients() {
    // Riley's only neighbour is played by the test: it says WELCOME, then
    // never reads again.
    let mut herd = Herd::new(
        "stuckpeer",
        &[("Riley", &["Jaquez"]), ("Jaquez", &["Riley"])],
    );
    let j = herd.index("Jaquez");
    let fake = TcpListener::bind(("127.0.0.1", herd.members[j].peer_port)).unwrap();
    herd.start_named("Riley");
    let (conn, _) = fake.accept().unwrap();
    let mut hello = String::new();
    BufReader::new(&conn).read_line(&mut hello).unwrap();
    assert_eq!(hello, "HELLO Riley\n");
    (&conn).write_all(b"WELCOME Jaquez\n").unwrap();
    herd.wait_links_up("Riley");
    // Many updates, each flooded to the stuck peer; every client is answered.
    let riley = herd.server("Riley");
    let mut c = riley.connect();
    let pad = "x".repeat(200);
    for batch in 0..50 {
        let mut lines = String::new();
        for i in 0..400 {
            lines.push_str(&format!("IAMAT {pad}{batch}-{i} +1-1 1\n"));
        }
        c.send(lines.as_bytes());
        for _ in 0..400 {
            assert!(c.read_line().starts_with("AT Riley "));
        }
    }
    // The link was dropped: for its backlog, or for its silence (no PONG).
    wait_for("the stuck link to be dropped", || {
        riley
            .log_text()
            .contains("link Jaquez: Up => Backoff")
            .then_some(())
    });
    drop(conn);
}

#[test]
fn a_returning_neighbours_hello_cancels_the_backoff() {
    let mut herd = default_herd("rejoin");
    herd.kill("Jaquez");
    // Wait until Riley has failed a few dials and sits in a long backoff.
    wait_for("Riley to back off for longer", || {
        let log = herd.server("Riley").log_text();
        log.lines()
            .filter(|l| l.contains("link Jaquez: Dialing => Backoff"))
            .count()
            .ge(&3)
            .then_some(())
    });
    herd.start_named("Jaquez");
    wait_for("Riley to dial back on HELLO", || {
        herd.server("Riley")
            .log_text()
            .contains("link Jaquez: HELLO from it, dialing back now")
            .then_some(())
    });
    herd.wait_links_up("Riley");
    herd.wait_links_up("Jaquez");
    let at = herd.iamat("Jaquez", "back", "+1-1", "1");
    assert_eq!(herd.known_at("Riley", "back").as_deref(), Some(at.as_str()));
}

#[test]
fn an_idle_herds_logs_grow_by_nothing_but_real_events() {
    // Riley has a real neighbour, Jaquez, and one the test plays, Tester,
    // whose PINGs are the test's clock: no sleeps.
    let mut herd = Herd::new(
        "idlelog",
        &[
            ("Riley", &["Jaquez", "Tester"]),
            ("Jaquez", &["Riley"]),
            ("Tester", &["Riley"]),
        ],
    );
    let t = herd.index("Tester");
    let fake = TcpListener::bind(("127.0.0.1", herd.members[t].peer_port)).unwrap();
    // Riley first, and its link to the test up and beating before Jaquez
    // starts, so that a slow start cannot time out Riley's greeting or
    // silence rule on the test's link.
    herd.start_named("Riley");
    let (theirs, _) = fake.accept().unwrap();
    theirs.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut their_lines = BufReader::new(theirs.try_clone().unwrap());
    let mut line = String::new();
    their_lines.read_line(&mut line).unwrap();
    assert_eq!(line, "HELLO Riley\n");
    (&theirs).write_all(b"WELCOME Tester\n").unwrap();
    let riley_peer = herd.members[herd.index("Riley")].peer_port;
    let ours = TcpStream::connect(("127.0.0.1", riley_peer)).unwrap();
    ours.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut our_lines = BufReader::new(ours.try_clone().unwrap());
    (&ours).write_all(b"HELLO Tester\nPING\n").unwrap();
    line.clear();
    our_lines.read_line(&mut line).unwrap();
    assert_eq!(line, "WELCOME Riley\n");
    // The test's side of both connections, from now on: a PONG for each of
    // Riley's PINGs, and a PING of its own each time. Anything else is noted.
    let beats = Arc::new(AtomicUsize::new(0));
    let odd = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let (beats, odd) = (beats.clone(), odd.clone());
        // Ends when Riley closes (the herd is dropped at the end of the test).
        std::thread::spawn(move || {
            for _ in 0..1_000 {
                let mut l = String::new();
                if their_lines.read_line(&mut l).unwrap_or(0) == 0 {
                    odd.lock()
                        .unwrap()
                        .push("Riley closed its link".to_string());
                    return;
                }
                // Riley's store is empty, so its catch-up is `SYNCED 0`.
                if l == "SYNCED 0\n" {
                    continue;
                }
                if l != "PING\n" {
                    odd.lock().unwrap().push(l);
                    continue;
                }
                let _ = (&theirs).write_all(b"PONG\n");
                let _ = (&ours).write_all(b"PING\n");
                l.clear();
                if our_lines.read_line(&mut l).unwrap_or(0) == 0 || l != "PONG\n" {
                    odd.lock().unwrap().push(format!("to our PING: {l:?}"));
                    return;
                }
                beats.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    herd.start_named("Jaquez");
    herd.wait_links_up("Riley");
    herd.wait_links_up("Jaquez");
    let wait_beats = |n: usize| {
        let goal = beats.load(Ordering::Relaxed) + n;
        wait_for(&format!("{n} more heartbeats"), || {
            let odd = odd.lock().unwrap();
            assert!(
                odd.is_empty(),
                "an idle link carries only heartbeats: {odd:?}"
            );
            (beats.load(Ordering::Relaxed) >= goal).then_some(())
        });
    };
    // Three of Riley's beats (two seconds or more) let every side's first
    // heartbeats, and whatever the links' start logs, pass.
    wait_beats(3);
    let before: Vec<String> = ["Riley", "Jaquez"]
        .iter()
        .map(|n| herd.server(n).log_text())
        .collect();
    // Three more: every link direction has carried heartbeats meanwhile.
    wait_beats(3);
    assert_eq!(
        *odd.lock().unwrap(),
        Vec::<String>::new(),
        "an idle link carries only heartbeats"
    );
    for (name, before) in ["Riley", "Jaquez"].iter().zip(&before) {
        let after = herd.server(name).log_text();
        assert!(
            after.starts_with(before.as_str()),
            "{name}'s log was rewritten"
        );
        assert_eq!(
            &after[before.len()..],
            "",
            "{name}'s log grew while the herd was idle"
        );
        for l in after.lines() {
            assert!(
                !l.ends_with("PING") && !l.ends_with("PONG"),
                "{name} logged a heartbeat: {l}"
            );
        }
    }
    // A real event is still logged at once, on both servers.
    let at = herd.iamat("Jaquez", "wakes", "+1-1", "1");
    herd.wait_everywhere("wakes", &at);
    for name in ["Riley", "Jaquez"] {
        assert!(herd.server(name).log_text().contains("wakes"), "{name}");
    }
}
