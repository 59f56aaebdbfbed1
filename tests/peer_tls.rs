//! Peer links over mutual TLS, black-box: real servers on 127.0.0.1, a
//! sniffing and tampering TCP proxy between two of them, impostors dialled
//! from the test with rustls, mixed plaintext/TLS pairs, a stalled handshake,
//! the herd secret over TLS, a large catch-up, and a TLS herd of
//! five through flooding, catch-up and rejoin.
//!
//! The certificates come from the library's `HerdCa` rather than `proxy-herd
//! certs`, because that command drops the CA key and these tests need the
//! herd's CA to issue more: an expired certificate, another server's.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::*;
use proxy_herd::tls::certs::{HerdCa, Issued, Validity};
use proxy_herd::tls::peer::{PeerTls, PeerTlsFiles};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// A herd CA that stays in memory, and the files it wrote.
struct Pki {
    ca: HerdCa,
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path, names: &[&str]) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let ca = HerdCa::new("proxy-herd test CA", Validity::from_now(1)).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.cert_pem()).unwrap();
        let pki = Pki {
            ca,
            dir: dir.to_path_buf(),
        };
        for name in names {
            pki.write(name, &pki.issue(name));
        }
        pki
    }

    fn issue(&self, name: &str) -> Issued {
        self.ca.issue(name, Validity::from_now(1)).unwrap()
    }

    fn write(&self, file_name: &str, issued: &Issued) {
        std::fs::write(self.dir.join(format!("{file_name}.pem")), &issued.cert_pem).unwrap();
        std::fs::write(self.dir.join(format!("{file_name}.key")), &issued.key_pem).unwrap();
    }

    fn files(&self, file_name: &str) -> PeerTlsFiles {
        PeerTlsFiles {
            cert: self.dir.join(format!("{file_name}.pem")),
            key: self.dir.join(format!("{file_name}.key")),
            ca: self.dir.join("ca.pem"),
        }
    }

    /// The options that give server `name` its certificate.
    fn args(&self, name: &str) -> Vec<String> {
        let f = self.files(name);
        [
            "--peer-cert".to_string(),
            f.cert.display().to_string(),
            "--peer-key".to_string(),
            f.key.display().to_string(),
            "--peer-ca".to_string(),
            f.ca.display().to_string(),
        ]
        .into()
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca.cert_pem().as_bytes()).unwrap())
            .unwrap();
        roots
    }
}

/// A rustls client config that trusts `pki`'s CA and presents `issued`,
/// whoever signed it (what an impostor would build).
fn impostor_config(pki: &Pki, issued: &Issued) -> Arc<ClientConfig> {
    let chain = vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(pki.roots())
            .with_client_auth_cert(chain, key)
            .unwrap(),
    )
}

/// Dials `port` over TLS as a neighbour would, says `hello`, and returns
/// what came back before the server closed (or the error that ended it).
fn dial_and_greet(port: u16, config: Arc<ClientConfig>, server: &str, hello: &str) -> String {
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let name = ServerName::try_from(server.to_string()).unwrap();
    let mut tls = StreamOwned::new(ClientConnection::new(config, name).unwrap(), sock);
    if let Err(e) = tls.write_all(format!("{hello}\n").as_bytes()) {
        return format!("error: {e}");
    }
    let mut got = Vec::new();
    match tls.read_to_end(&mut got) {
        Ok(_) => String::from_utf8_lossy(&got).into_owned(),
        Err(e) => format!("{}error: {e}", String::from_utf8_lossy(&got)),
    }
}

// ----- a TCP proxy that counts, sniffs and tampers ---------------------------

const PASS: u8 = 0;
/// Flip one bit in the next chunk from the dialer, then pass again.
const FLIP: u8 = 1;
/// Put a plaintext AT line into the dialer's stream once, then pass again.
const INJECT: u8 = 2;

/// What the dialer's direction of a pipe records into, and how it tampers.
type Tamper = (Arc<Mutex<Vec<u8>>>, Arc<AtomicU8>);

/// The dialer's side of a link goes through here on its way to the acceptor.
struct Proxy {
    /// Every byte the dialer sent, as the proxy saw it.
    seen: Arc<Mutex<Vec<u8>>>,
    mode: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Proxy {
    fn start(port: u16, target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mode = Arc::new(AtomicU8::new(PASS));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, m, st) = (seen.clone(), mode.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            let mut pipes = Vec::new();
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((from, _)) => {
                        let Ok(to) = TcpStream::connect(target) else {
                            continue;
                        };
                        from.set_nonblocking(false).unwrap();
                        pipes.push(pipe(
                            from.try_clone().unwrap(),
                            to.try_clone().unwrap(),
                            Some((s.clone(), m.clone())),
                            st.clone(),
                        ));
                        pipes.push(pipe(to, from, None, st.clone()));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            for p in pipes {
                let _ = p.join();
            }
        });
        Proxy {
            seen,
            mode,
            stop,
            threads: vec![accept],
        }
    }

    fn seen(&self) -> Vec<u8> {
        self.seen.lock().unwrap().clone()
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    /// True once a one-shot tampering has been done.
    fn tampered(&self) -> bool {
        self.mode.load(Ordering::SeqCst) == PASS
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Copies `from` to `to` until either closes or the proxy stops; the
/// dialer's direction records and tampers.
fn pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    tamper: Option<Tamper>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        from.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut buf = [0u8; 16384];
        while !stop.load(Ordering::Relaxed) {
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(_) => break,
            };
            let mut chunk = buf[..n].to_vec();
            if let Some((seen, mode)) = &tamper {
                seen.lock().unwrap().extend_from_slice(&chunk);
                match mode.load(Ordering::SeqCst) {
                    FLIP => {
                        let last = chunk.len() - 1;
                        chunk[last] ^= 0x20;
                        mode.store(PASS, Ordering::SeqCst);
                    }
                    INJECT => {
                        chunk.extend_from_slice(b"AT Riley +0.000000001 evil.example +01+001 1\n");
                        mode.store(PASS, Ordering::SeqCst);
                    }
                    _ => {}
                }
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    })
}

// ----- two servers with the proxy on Riley's link to Jaquez -----------------

/// Riley and Jaquez over TLS, Riley's link to Jaquez through a proxy (each
/// server has its own herd file: Riley's puts Jaquez at the proxy).
struct ProxiedPair {
    herd: Herd,
    proxy: Proxy,
    _pki: Pki,
}

fn proxied_pair(test: &str) -> ProxiedPair {
    let shape: &[(&str, &[&str])] = &[("Riley", &["Jaquez"]), ("Jaquez", &["Riley"])];
    let mut herd = Herd::new(test, shape);
    let pki = Pki::new(&herd.dir.path("tls"), &["Riley", "Jaquez"]);
    let (riley, jaquez) = (&herd.members[0], &herd.members[1]);
    let proxy_port = free_port();
    let line = |name: &str, client: u16, peer: u16, n: &str| {
        format!("{name} 127.0.0.1:{client} peer=127.0.0.1:{peer} {n}\n")
    };
    let riley_view = herd.dir.path("riley.herd");
    std::fs::write(
        &riley_view,
        line("Riley", riley.client_port, riley.peer_port, "Jaquez")
            + &line("Jaquez", jaquez.client_port, proxy_port, "Riley"),
    )
    .unwrap();
    let target: SocketAddr = ([127, 0, 0, 1], jaquez.peer_port).into();
    let proxy = Proxy::start(proxy_port, target);
    start_tls(&mut herd, &pki, 1, None);
    start_tls(&mut herd, &pki, 0, Some(&riley_view));
    ProxiedPair {
        herd,
        proxy,
        _pki: pki,
    }
}

/// Starts server `i` of `herd` with its peer TLS options (and, if given,
/// its own view of the herd file).
fn start_tls(herd: &mut Herd, pki: &Pki, i: usize, config: Option<&Path>) {
    let m = &herd.members[i];
    let log = herd.log_path(&m.name);
    let config = config.unwrap_or(&herd.config);
    let mut args = vec![
        "-c".to_string(),
        config.display().to_string(),
        "-l".to_string(),
        log.display().to_string(),
    ];
    args.extend(herd.extra_args.iter().cloned());
    args.extend(pki.args(&m.name));
    args.push(m.name.clone());
    let addr: SocketAddr = ([127, 0, 0, 1], m.client_port).into();
    herd.servers[i] = Some(start_server(&m.name, &args, addr, &log));
}

const KIWI: &str = "+34.068930-118.445127";

#[test]
fn a_sniffing_proxy_between_two_tls_servers_sees_no_at_text() {
    let p = proxied_pair("tls-sniff");
    p.herd.wait_all_links_up();
    let at = p
        .herd
        .iamat("Riley", "kiwi.cs.ucla.edu", KIWI, "1621464827.959498503");
    p.herd.wait_everywhere("kiwi.cs.ucla.edu", &at);
    let seen = p.proxy.seen();
    assert!(seen.len() > 500, "the proxy saw only {} bytes", seen.len());
    let text = String::from_utf8_lossy(&seen);
    for plain in ["AT ", "kiwi", "HELLO", "PING", "Riley"] {
        assert!(
            !text.contains(plain),
            "the proxy read {plain:?} on the wire"
        );
    }
    // The TLS record header of application data, not text.
    assert_eq!(seen[0], 22, "the link does not start with a TLS handshake");
}

#[test]
fn bytes_flipped_or_injected_on_the_path_break_the_link_and_are_never_stored() {
    let p = proxied_pair("tls-tamper");
    p.herd.wait_all_links_up();
    let downs = |log: &str| count(log, "link from Riley: down");
    for (round, mode) in [FLIP, INJECT].into_iter().enumerate() {
        let before = downs(&p.herd.server("Jaquez").log_text());
        p.proxy.set(mode);
        // Riley's next bytes (this flood, or a PING) cross the tampering proxy.
        let time = format!("{}.5", 1621464827 + round);
        let at = p.herd.iamat("Riley", "kiwi.cs.ucla.edu", KIWI, &time);
        wait_for("the proxy to tamper", || p.proxy.tampered().then_some(()));
        wait_for("Jaquez to drop the tampered link", || {
            (downs(&p.herd.server("Jaquez").log_text()) > before).then_some(())
        });
        // The proxy behaves again: the link comes back by itself, and the
        // catch-up brings the genuine position.
        p.herd.wait_links_up("Riley");
        p.herd.wait_everywhere("kiwi.cs.ucla.edu", &at);
        assert_eq!(p.herd.known_at("Jaquez", "evil.example"), None);
    }
    // (The test's own WHATSATs for evil.example are in the log as client lines.)
    let log = p.herd.server("Jaquez").log_text();
    let heard = log
        .lines()
        .find(|l| l.contains("peer-in") && l.contains("evil.example"));
    assert_eq!(heard, None, "the injected line was read as a peer line");
}

#[test]
fn certificates_from_another_ca_for_another_name_or_expired_are_refused() {
    let shape: &[(&str, &[&str])] = &[("Riley", &["Jaquez"]), ("Jaquez", &["Riley"])];
    let mut herd = Herd::new("tls-refused", shape);
    let pki = Pki::new(&herd.dir.path("tls"), &["Riley", "Jaquez", "Juzang"]);
    // Only Jaquez runs; the test dials it as Riley would.
    start_tls(&mut herd, &pki, 1, None);
    let jaquez_peer = herd.members[1].peer_port;
    let stranger = Pki::new(&herd.dir.path("other"), &[]);
    let past = Validity {
        not_before: rcgen::date_time_ymd(2020, 1, 1),
        not_after: rcgen::date_time_ymd(2021, 1, 1),
    };
    let cases = [
        (
            "another CA",
            impostor_config(&pki, &stranger.issue("Riley")),
            "HELLO Riley",
        ),
        (
            "expired",
            impostor_config(&pki, &pki.ca.issue("Riley", past).unwrap()),
            "HELLO Riley",
        ),
        // A good herd certificate, for Juzang, claiming to be Riley.
        (
            "another name",
            impostor_config(&pki, &pki.issue("Juzang")),
            "HELLO Riley",
        ),
    ];
    for (what, config, hello) in cases {
        let answer = dial_and_greet(jaquez_peer, config, "Jaquez", hello);
        assert!(!answer.contains("WELCOME"), "{what}: welcomed: {answer}");
        if what == "another name" {
            assert!(answer.contains("REFUSED"), "{what}: {answer}");
        }
    }
    // The log is written once per turn: wait for the refusals to reach it.
    let log = wait_for("Jaquez to log the refusals", || {
        let log = herd.server("Jaquez").log_text();
        (log.to_lowercase().contains("expired") && log.contains("not for Riley")).then_some(log)
    });
    assert!(!log.contains("link from Riley: up"), "{log}");
    // And the real Riley still links.
    let good = PeerTls::load(&pki.files("Riley"), "Riley").unwrap();
    let answer = dial_and_greet(jaquez_peer, good.client_config(), "Jaquez", "HELLO Riley");
    assert!(answer.starts_with("WELCOME Jaquez"), "{answer}");
}

#[test]
fn a_dialler_refuses_a_neighbour_whose_certificate_is_for_another_name() {
    let shape: &[(&str, &[&str])] = &[("Riley", &["Jaquez"]), ("Jaquez", &["Riley"])];
    let mut herd = Herd::new("tls-wrong-neighbour", shape);
    let pki = Pki::new(&herd.dir.path("tls"), &["Riley", "Juzang"]);
    start_tls(&mut herd, &pki, 0, None);
    // Juzang, with its own good herd certificate, listens where the herd
    // file puts Jaquez.
    let jaquez = &herd.members[1];
    let fake_herd = herd.dir.path("juzang.herd");
    std::fs::write(
        &fake_herd,
        format!(
            "Juzang 127.0.0.1:{} peer=127.0.0.1:{}\n",
            jaquez.client_port, jaquez.peer_port
        ),
    )
    .unwrap();
    let log = herd.dir.path("Juzang.log");
    let mut args = vec![
        "-c".to_string(),
        fake_herd.display().to_string(),
        "-l".to_string(),
        log.display().to_string(),
    ];
    args.extend(pki.args("Juzang"));
    args.push("Juzang".to_string());
    let addr: SocketAddr = ([127, 0, 0, 1], jaquez.client_port).into();
    let _juzang = start_server("Juzang", &args, addr, &log);
    let riley = herd.server("Riley");
    let log = wait_for("Riley to refuse Juzang's certificate for Jaquez", || {
        let log = riley.log_text();
        (log.contains("not valid for name") || log.contains("NotValidForName")).then_some(log)
    });
    assert!(!log.contains("link Jaquez: Greeting => Up"), "{log}");
}

#[test]
fn a_mixed_plaintext_and_tls_pair_is_refused_on_both_sides_at_once() {
    let shape: &[(&str, &[&str])] = &[("Riley", &["Jaquez"]), ("Jaquez", &["Riley"])];
    let mut herd = Herd::new("tls-mixed", shape);
    let pki = Pki::new(&herd.dir.path("tls"), &["Riley"]);
    start_tls(&mut herd, &pki, 0, None);
    herd.start_named("Jaquez"); // plaintext
    for name in ["Riley", "Jaquez"] {
        wait_for(&format!("{name} to log the other side's kind"), || {
            herd.server(name)
                .log_text()
                .contains("plaintext")
                .then_some(())
        });
    }
    let at = herd.iamat("Riley", "kiwi.cs.ucla.edu", KIWI, "1621464827.5");
    assert!(at.starts_with("AT Riley"));
    for name in ["Riley", "Jaquez"] {
        let log = herd.server(name).log_text();
        assert!(!log.contains("Greeting => Up"), "{name}: {log}");
        assert!(
            !log.contains("no HELLO in time"),
            "{name} waited for a timeout: {log}"
        );
    }
    assert_eq!(herd.known_at("Jaquez", "kiwi.cs.ucla.edu"), None);
}

#[test]
fn a_tls_herd_of_five_floods_catches_up_and_rejoins() {
    let mut herd = Herd::new("tls-five", DEFAULT_HERD);
    let names: Vec<&str> = DEFAULT_HERD.iter().map(|(n, _)| *n).collect();
    let pki = Pki::new(&herd.dir.path("tls"), &names);
    // Riley serves /status too, which says its links are TLS.
    let http = free_port();
    for i in 0..names.len() {
        let plain = herd.extra_args.clone();
        if i == 0 {
            herd.extra_args
                .extend(["--http".to_string(), format!("127.0.0.1:{http}")]);
        }
        start_tls(&mut herd, &pki, i, None);
        herd.extra_args = plain;
    }
    herd.wait_all_links_up();
    let mut status = TcpStream::connect(("127.0.0.1", http)).unwrap();
    status.set_read_timeout(Some(DEADLINE)).unwrap();
    status
        .write_all(b"GET /status HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    status.read_to_string(&mut body).unwrap();
    assert_eq!(body.matches("\"tls\":true").count(), 2, "{body}");
    assert!(!body.contains("\"tls\":false"), "{body}");
    // Flooding: Riley to Campbell, two hops.
    let at = herd.iamat("Riley", "kiwi.cs.ucla.edu", KIWI, "1621464827.1");
    herd.wait_everywhere("kiwi.cs.ucla.edu", &at);
    // Catch-up: Campbell misses an update while down, learns it on return.
    herd.kill("Campbell");
    let at = herd.iamat("Jaquez", "kiwi.cs.ucla.edu", "+1-1", "1621464828.2");
    herd.wait_everywhere("kiwi.cs.ucla.edu", &at);
    let i = herd.index("Campbell");
    start_tls(&mut herd, &pki, i, None);
    // Rejoin: linked both ways with each neighbour again, its HELLO heard
    // over TLS. (Whether a neighbour dials back on that HELLO or on its own
    // backoff timer is a race with the handshake's time, which a loaded
    // machine stretches; tests/herd.rs checks the dial-back itself.)
    herd.wait_links_up("Campbell");
    for n in ["Juzang", "Bernard"] {
        herd.wait_links_up(n);
        wait_for(&format!("{n} to hear Campbell's HELLO again"), || {
            let log = herd.server(n).log_text();
            (count(&log, "link from Campbell: up") >= 2).then_some(())
        });
    }
    assert_eq!(
        herd.known_at("Campbell", "kiwi.cs.ucla.edu").as_deref(),
        Some(at.as_str())
    );
    for name in &names {
        let log = herd.server(name).log_text();
        assert!(!log.contains("plaintext"), "{name} speaks plaintext: {log}");
        let key = std::fs::read_to_string(pki.files(name).key).unwrap();
        assert!(
            !log.contains(key.lines().nth(1).unwrap()),
            "{name} logged its key"
        );
    }
}

#[test]
fn a_stalled_handshake_blocks_nobody_and_is_dropped_in_time() {
    let shape: &[(&str, &[&str])] = &[("Riley", &["Jaquez"]), ("Jaquez", &["Riley"])];
    let mut herd = Herd::new("tls-stalled", shape);
    let pki = Pki::new(&herd.dir.path("tls"), &["Riley", "Jaquez"]);
    start_tls(&mut herd, &pki, 1, None);
    let jaquez_peer = herd.members[1].peer_port;
    // Half a ClientHello record, then nothing: the handshake stalls.
    let mut stalled = TcpStream::connect(("127.0.0.1", jaquez_peer)).unwrap();
    stalled.write_all(&[22, 3, 1, 0, 200, 1, 0]).unwrap();
    // Meanwhile a client is answered and a real neighbour links.
    let at = herd.iamat("Jaquez", "kiwi.cs.ucla.edu", KIWI, "1621464827.5");
    assert!(at.starts_with("AT Jaquez"), "{at}");
    let good = PeerTls::load(&pki.files("Riley"), "Riley").unwrap();
    let answer = dial_and_greet(jaquez_peer, good.client_config(), "Jaquez", "HELLO Riley");
    assert!(answer.starts_with("WELCOME Jaquez"), "{answer}");
    // The HELLO timer bounds the handshake: the stalled one is closed.
    stalled.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest);
    wait_for("Jaquez to drop the stalled handshake", || {
        herd.server("Jaquez")
            .log_text()
            .contains("closed: no HELLO in time")
            .then_some(())
    });
}

#[test]
fn over_tls_the_herd_secret_is_a_second_factor() {
    let shape: &[(&str, &[&str])] = &[("Riley", &["Jaquez"]), ("Jaquez", &["Riley"])];
    let mut herd = Herd::new("tls-secret", shape);
    let pki = Pki::new(&herd.dir.path("tls"), &["Riley", "Jaquez"]);
    let (ours, theirs) = (herd.dir.path("secret"), herd.dir.path("other-secret"));
    std::fs::write(&ours, "the herd's shared secret 1f9c\n").unwrap();
    std::fs::write(&theirs, "not the same secret\n").unwrap();
    herd.extra_args
        .extend(["--herd-secret-file".to_string(), ours.display().to_string()]);
    start_tls(&mut herd, &pki, 0, None);
    // Good certificates, a different secret: no link either way.
    let n = herd.extra_args.len();
    herd.extra_args[n - 1] = theirs.display().to_string();
    start_tls(&mut herd, &pki, 1, None);
    wait_for("both sides to notice the bad proof over TLS", || {
        let riley = herd.server("Riley").log_text();
        let jaquez = herd.server("Jaquez").log_text();
        (riley.contains("failed to prove the herd secret")
            && jaquez.contains("failed to prove the herd secret")
            && riley.contains("TLS up"))
        .then_some(())
    });
    assert!(!herd.server("Riley").log_text().contains("Greeting => Up"));
    // The same secret on both: linked, over TLS.
    herd.kill("Jaquez");
    herd.extra_args[n - 1] = ours.display().to_string();
    start_tls(&mut herd, &pki, 1, None);
    herd.wait_all_links_up();
    let at = herd.iamat("Riley", "kiwi.cs.ucla.edu", KIWI, "1621464827.5");
    herd.wait_everywhere("kiwi.cs.ucla.edu", &at);
    for name in ["Riley", "Jaquez"] {
        let log = herd.server(name).log_text();
        assert!(!log.contains("1f9c"), "{name} logged the secret");
    }
}

#[test]
fn a_catch_up_larger_than_many_reads_arrives_whole_over_tls() {
    let shape: &[(&str, &[&str])] = &[("Riley", &["Jaquez"]), ("Jaquez", &["Riley"])];
    let mut herd = Herd::new("tls-big-catch-up", shape);
    let pki = Pki::new(&herd.dir.path("tls"), &["Riley", "Jaquez"]);
    start_tls(&mut herd, &pki, 0, None);
    // 3,000 positions (about 250 KB of AT lines, many TLS records and many
    // of the loop's 64 KiB reads) at Riley while Jaquez is down.
    let n = 3000;
    let lines: String = (0..n)
        .map(|i| format!("IAMAT big-{i} {KIWI} 1621464827.{i:09}\n"))
        .collect();
    let mut c = herd.server("Riley").connect();
    c.send(lines.as_bytes());
    c.half_close();
    let replies = String::from_utf8(c.read_to_end()).unwrap();
    assert_eq!(count(&replies, "AT Riley"), n);
    start_tls(&mut herd, &pki, 1, None);
    herd.wait_all_links_up();
    let last = format!("big-{}", n - 1);
    wait_for("Jaquez to hold the catch-up's last position", || {
        herd.known_at("Jaquez", &last).map(|_| ())
    });
    for i in [0, n / 2] {
        assert!(
            herd.known_at("Jaquez", &format!("big-{i}")).is_some(),
            "big-{i}"
        );
    }
}
