//! Breaking the herd on purpose: durability across restarts, peer
//! authentication, limits under abuse, and chaos (random SIGKILLs and
//! restarts under load). `CHAOS_SECONDS` lengthens the chaos run
//! (`tests/chaos.sh SECONDS`).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

// ----- durability ---------------------------------------------------------------

fn with_state(herd: &mut Herd) {
    let dir = herd.dir.0.display().to_string();
    herd.extra_args.push("--state".into());
    // One file per server: the harness passes the same arguments to all, so
    // the server's name goes in through a per-server path below.
    herd.extra_args.push(format!("{dir}/state-NAME"));
}

/// Starts server `name` with its own state file.
fn start_with_state(herd: &mut Herd, name: &str) {
    let saved = herd.extra_args.clone();
    for a in herd.extra_args.iter_mut() {
        *a = a.replace("state-NAME", &format!("state-{name}"));
    }
    herd.start_named(name);
    herd.extra_args = saved;
}

#[test]
fn a_server_with_a_state_file_answers_from_where_it_was() {
    let mut herd = Herd::new("state-one", &[("Riley", &[])]);
    with_state(&mut herd);
    start_with_state(&mut herd, "Riley");
    let at = herd.iamat("Riley", "kiwi", "+1-1", "10");
    herd.kill("Riley");
    // A power cut in the middle of the next record: cut off, not trusted.
    let state = herd.dir.path("state-Riley");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&state)
        .unwrap();
    f.write_all(b"P 0123456789abcdef AT Riley +0.000000001 kiwi +9-9 99")
        .unwrap();
    drop(f);
    start_with_state(&mut herd, "Riley");
    assert_eq!(herd.known_at("Riley", "kiwi").as_deref(), Some(at.as_str()));
    let log = herd.server("Riley").log_text();
    assert!(
        log.contains("1 good records, 1 positions, 0 damaged records skipped, 53 torn bytes cut"),
        "{log}"
    );
}

#[test]
fn nothing_acknowledged_is_lost_when_every_server_stops() {
    let mut herd = Herd::new("state-all", DEFAULT_HERD);
    with_state(&mut herd);
    for m in DEFAULT_HERD {
        start_with_state(&mut herd, m.0);
    }
    herd.wait_all_links_up();
    let mut acked = Vec::new();
    for (i, (name, _)) in DEFAULT_HERD.iter().enumerate() {
        let client = format!("durable{i}");
        acked.push((
            client.clone(),
            herd.iamat(name, &client, "+1-1", &format!("{i}")),
        ));
    }
    // Some stop cleanly, some are killed; then all come back.
    for (i, (name, _)) in DEFAULT_HERD.iter().enumerate() {
        if i % 2 == 0 {
            herd.kill(name);
        } else {
            let idx = herd.index(name);
            let mut s = herd.servers[idx].take().unwrap();
            s.signal("TERM");
            assert_eq!(s.wait_exit(), Some(0));
        }
    }
    for (name, _) in DEFAULT_HERD {
        start_with_state(&mut herd, name);
    }
    for (client, at) in &acked {
        herd.wait_everywhere(client, at);
    }
}

// ----- peer authentication ------------------------------------------------------

const SECRET: &str = "the herd's shared secret 1f9c";

fn secret_herd(test: &str, secret: &str) -> Herd {
    let mut herd = Herd::new(test, &[("Riley", &["Jaquez"]), ("Jaquez", &["Riley"])]);
    let file = herd.dir.path("secret");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    herd.extra_args
        .extend(["--herd-secret-file".to_string(), file.display().to_string()]);
    herd
}

#[test]
fn peers_sharing_the_secret_link_up_and_flood() {
    let mut herd = secret_herd("auth-ok", SECRET);
    herd.start_named("Riley");
    herd.start_named("Jaquez");
    herd.wait_all_links_up();
    let at = herd.iamat("Riley", "kiwi", "+1-1", "1");
    herd.wait_everywhere("kiwi", &at);
    for m in ["Riley", "Jaquez"] {
        let log = herd.server(m).log_text();
        assert!(log.contains("CHALLENGE") || log.contains("PROOF"), "{log}");
        assert!(!log.contains(SECRET), "the secret is in the log");
    }
}

/// Speaks the handshake as an impostor that does not know the secret.
fn impostor(port: u16, name: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(format!("HELLO {name} 00112233445566778899aabbccddeeff\n").as_bytes())
        .unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut challenge = String::new();
    reader.read_line(&mut challenge).unwrap();
    assert!(challenge.starts_with("CHALLENGE "), "{challenge}");
    s.write_all(format!("PROOF {}\n", "ab".repeat(32)).as_bytes())
        .unwrap();
    let mut answer = String::new();
    reader.read_line(&mut answer).unwrap();
    answer
}

#[test]
fn a_peer_that_cannot_prove_the_secret_is_refused() {
    let mut herd = secret_herd("auth-bad", SECRET);
    herd.start_named("Riley");
    let port = herd.members[herd.index("Riley")].peer_port;
    // A neighbour's name, but no secret.
    assert!(impostor(port, "Jaquez").starts_with("REFUSED"));
    // No nonce at all.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"HELLO Jaquez\n").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    assert!(line.starts_with("REFUSED"), "{line}");
    wait_for("the refusals in the log", || {
        let log = herd.server("Riley").log_text();
        (log.contains("bad proof of the herd secret")
            && log.contains("no proof of the herd secret offered"))
        .then_some(())
    });
    // An update sent anyway is never stored.
    assert_eq!(herd.known_at("Riley", "kiwi"), None);
}

#[test]
fn servers_with_different_secrets_do_not_link() {
    let mut herd = secret_herd("auth-mismatch", SECRET);
    herd.start_named("Riley");
    let other = herd.dir.path("other-secret");
    std::fs::write(&other, "not the same secret").unwrap();
    let n = herd.extra_args.len();
    herd.extra_args[n - 1] = other.display().to_string();
    herd.start_named("Jaquez");
    wait_for("both sides to notice the bad proof", || {
        let riley = herd.server("Riley").log_text();
        let jaquez = herd.server("Jaquez").log_text();
        (riley.contains("failed to prove the herd secret")
            && jaquez.contains("failed to prove the herd secret"))
        .then_some(())
    });
    let at = herd.iamat("Riley", "kiwi", "+1-1", "1");
    assert!(at.starts_with("AT Riley"));
    assert_eq!(herd.known_at("Jaquez", "kiwi"), None);
    assert!(!herd.server("Riley").log_text().contains("Greeting => Up"));
}

// ----- limits under abuse ---------------------------------------------------------

fn lone_with(test: &str, extra: &[&str]) -> Herd {
    let mut herd = Herd::new(test, &[("Riley", &[])]);
    herd.extra_args.extend(extra.iter().map(|s| s.to_string()));
    herd.start_named("Riley");
    herd
}

#[test]
fn past_max_clients_new_connections_are_refused_politely() {
    let herd = lone_with("maxclients", &["--max-clients", "3"]);
    let s = herd.server("Riley");
    // The harness's readiness probe has come and gone: wait for its close.
    wait_for("the probe to be closed", || {
        s.log_text()
            .contains("closed: done after EOF")
            .then_some(())
    });
    let mut held: Vec<Client> = (0..3).map(|_| s.connect()).collect();
    for (i, c) in held.iter_mut().enumerate() {
        c.send(format!("IAMAT held{i} +1-1 1\n").as_bytes());
        assert!(c.read_line().starts_with("AT Riley "));
    }
    let mut extra = s.connect();
    assert_eq!(extra.read_line(), "? server busy: too many clients");
    assert!(extra.read_to_end().is_empty());
    assert!(s.log_text().contains("refused: too many clients"));
    // One leaves: there is room again.
    drop(held.pop());
    wait_for("room for a new client", || {
        let mut c = s.connect();
        c.send(b"IAMAT again +1-1 1\n");
        let line = c.read_line();
        line.starts_with("AT Riley ").then_some(())
    });
}

#[test]
fn a_connection_that_stalls_halfway_is_closed_after_the_idle_limit() {
    let herd = lone_with("idle", &["--idle-timeout", "1"]);
    let s = herd.server("Riley");
    let mut stalled = s.connect();
    stalled.send(b"IAMAT half");
    wait_for("the stalled client to be closed", || {
        stalled.is_closed().then_some(())
    });
    assert!(s.log_text().contains("idle too long"));
    let mut c = s.connect();
    c.send(b"IAMAT fine +1-1 1\n");
    assert!(c.read_line().starts_with("AT Riley "));
}

#[test]
fn a_flood_of_connects_and_disconnects_leaves_the_server_serving() {
    let herd = lone_with("connflood", &[]);
    let s = herd.server("Riley");
    let start = Instant::now();
    for i in 0..2000 {
        if start.elapsed() > DEADLINE {
            break;
        }
        let mut c = TcpStream::connect(s.client).unwrap();
        if i % 3 == 0 {
            let _ = c.write_all(b"IAMAT x");
        }
    }
    let mut c = s.connect();
    c.send(b"IAMAT after +1-1 1\n");
    assert!(c.read_line().starts_with("AT Riley "));
}

#[test]
fn running_out_of_file_descriptors_pauses_accepting_without_spinning() {
    // The server runs with a small descriptor limit, set by the shell.
    let dir = TempDir::new("emfile");
    let (config, port) = lone_herd_file(&dir);
    let log = dir.path("Riley.log");
    let command = format!(
        "ulimit -n 48 && exec {} -c {} -l {} --places-url https://127.0.0.1:9/x Riley",
        env!("CARGO_BIN_EXE_proxy-herd"),
        config.display(),
        log.display()
    );
    let child = Command::new("sh")
        .args(["-c", &command])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Server {
        name: "Riley".into(),
        child,
        client: ([127, 0, 0, 1], port).into(),
        log: log.clone(),
        stderr: dir.path("Riley.stderr"),
    };
    wait_for("Riley to listen", || TcpStream::connect(server.client).ok());
    // More connections than descriptors: the kernel queues the rest.
    let hogs: Vec<TcpStream> = (0..80)
        .filter_map(|_| TcpStream::connect(server.client).ok())
        .collect();
    wait_for("the pause in the log", || {
        server.log_text().contains("accept paused").then_some(())
    });
    let paused_at = Instant::now();
    // Stay out of descriptors for a while; a spinning loop would log (or
    // burn) thousands of times, the timer queue retries ten times a second.
    std::thread::sleep(Duration::from_millis(500));
    let pauses = count(&server.log_text(), "accept paused");
    let ticks = (paused_at.elapsed().as_millis() / 100 + 3) as usize;
    assert!(pauses <= ticks, "{pauses} pauses in {ticks} ticks");
    drop(hogs);
    wait_for("a client to be served again", || {
        let mut c = Client::connect(server.client);
        c.send(b"IAMAT back +1-1 1\n");
        c.read_line().starts_with("AT Riley ").then_some(())
    });
    server.signal("TERM");
    assert_eq!(server.wait_exit(), Some(0));
}

// ----- chaos ------------------------------------------------------------------------

/// A small xorshift generator: the seed is printed so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Sends one IAMAT; the AT line if the server acknowledged it.
fn try_iamat(server: &Server, client: &str, time: u64) -> Option<String> {
    let mut s = TcpStream::connect(server.client).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("IAMAT {client} +1-1 {time}\n").as_bytes())
        .ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    line.strip_suffix('\n')
        .filter(|l| l.starts_with("AT "))
        .map(str::to_string)
}

#[test]
fn chaos_kills_and_restarts_lose_nothing_acknowledged() {
    let seconds: u64 = std::env::var("CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("chaos: seed {seed}, {seconds} s");
    let mut rng = Rng(seed);
    let mut herd = Herd::new("chaos", DEFAULT_HERD);
    with_state(&mut herd);
    let names: Vec<&str> = DEFAULT_HERD.iter().map(|m| m.0).collect();
    for name in &names {
        start_with_state(&mut herd, name);
    }
    herd.wait_all_links_up();
    let clients = 20;
    // For each client: the newest time acknowledged and its AT line.
    let mut newest: Vec<Option<(u64, String)>> = vec![None; clients];
    let (mut kills, mut restarts, mut acks, mut refused) = (0, 0, 0, 0);
    let start = Instant::now();
    let mut time = 1_000u64;
    // Bounded in time and in count.
    for _ in 0..1_000_000 {
        if start.elapsed() > Duration::from_secs(seconds) {
            break;
        }
        let name = names[rng.below(names.len())];
        let i = herd.index(name);
        match rng.below(40) {
            0 if herd.servers.iter().filter(|s| s.is_some()).count() > 1 => {
                if herd.servers[i].is_some() {
                    herd.kill(name);
                    kills += 1;
                }
            }
            1..=2 => {
                if herd.servers[i].is_none() {
                    start_with_state(&mut herd, name);
                    restarts += 1;
                }
            }
            _ => {
                let Some(server) = herd.servers[i].as_ref() else {
                    continue;
                };
                let c = rng.below(clients);
                // Mostly newer times; now and then an older one.
                time += 1;
                let t = if rng.below(10) == 0 { time - 500 } else { time };
                match try_iamat(server, &format!("chaos{c}"), t) {
                    Some(at) => {
                        acks += 1;
                        if newest[c].as_ref().is_none_or(|(known, _)| t > *known) {
                            newest[c] = Some((t, at));
                        }
                    }
                    None => refused += 1,
                }
            }
        }
    }
    for name in &names {
        if herd.servers[herd.index(name)].is_none() {
            start_with_state(&mut herd, name);
        }
    }
    eprintln!(
        "chaos: {kills} kills, {restarts} restarts, {acks} acknowledged updates, {refused} not acknowledged"
    );
    assert!(kills > 0 && acks > 0);
    for (c, entry) in newest.iter().enumerate() {
        if let Some((_, at)) = entry {
            herd.wait_everywhere(&format!("chaos{c}"), at);
        }
    }
}

#[test]
fn a_client_cannot_queue_whatsats_without_end() {
    // Places is slow, and one client pipelines 100 WHATSATs in one write.
    let dir = TempDir::new("waiting");
    let places = PlacesOffline::start(&dir, &["--latency-ms", "300"]);
    let (config, port) = lone_herd_file(&dir);
    let log = dir.path("Riley.log");
    let args: Vec<String> = [
        "-c",
        &config.display().to_string(),
        "-l",
        &log.display().to_string(),
        "--places-url",
        &places.legacy_url(),
        "--places-ca",
        &dev_ca(),
        "Riley",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let env = [("PLACES_API_KEY", "k")];
    let server = start_server_env("Riley", &args, &env, ([127, 0, 0, 1], port).into(), &log);
    let mut c = server.connect();
    let mut batch = "IAMAT kiwi +34.068930-118.445127 1\n".to_string();
    batch.push_str(&"WHATSAT kiwi 10 1\n".repeat(100));
    c.send(batch.as_bytes());
    let at = c.read_line();
    let (mut answered, mut refused) = (0, 0);
    for _ in 0..100 {
        let answer = c.read_until_blank_line();
        assert!(answer.starts_with(&at), "{answer}");
        if answer.contains("\"status\" : \"OK\"") {
            answered += 1;
        } else if answer.contains("too many WHATSATs waiting for Places") {
            refused += 1;
        }
    }
    // The first 64 wait for Places; the rest are answered at once, in order.
    assert_eq!((answered, refused), (64, 36));
    wait_for("places-offline's 64 requests", || {
        (count(&places.log_text(), "request conn=") == 64).then_some(())
    });
}
