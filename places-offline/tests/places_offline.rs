//! Black-box tests of the `places-offline` binary: a real process on
//! 127.0.0.1, spoken to over HTTPS by a small blocking rustls client that
//! trusts only `data/tls/ca.pem`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::Value;

#[path = "../../tests/common/mod.rs"]
mod common;

const BIN: &str = env!("CARGO_BIN_EXE_places-offline");
const UCLA: &str = "location=34.068930,-118.445127";
const TIMEOUT: Duration = Duration::from_secs(30);

fn repo(path: &str) -> PathBuf {
    common::repo_root().join(path)
}

fn temp_path(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!(
        "places-offline-{}-{nanos}-{name}",
        std::process::id()
    ))
}

/// The running service; killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str]) -> Server {
    let (child, port) = common::spawn_places_offline(args);
    Server { child, port }
}

fn client_config(ca: &str) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(repo(ca)).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// How many chunks a chunked body came in (0 when not chunked).
    chunks: usize,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A blocking HTTPS client connection with its own receive buffer, so
/// pipelined responses that arrive together are split correctly.
struct Client {
    stream: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl Client {
    fn connect(port: u16, name: &str) -> Client {
        Client::connect_with(port, name, client_config("data/tls/ca.pem")).unwrap()
    }

    fn connect_with(port: u16, name: &str, config: Arc<ClientConfig>) -> std::io::Result<Client> {
        let sock = TcpStream::connect(("127.0.0.1", port))?;
        sock.set_read_timeout(Some(TIMEOUT))?;
        let server_name = ServerName::try_from(name.to_string()).unwrap();
        let conn = ClientConnection::new(config, server_name).unwrap();
        let mut stream = StreamOwned::new(conn, sock);
        // Finish the handshake now, so certificate errors show here.
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(Client {
            stream,
            buf: Vec::new(),
        })
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
        self.stream.flush().unwrap();
    }

    fn get(&mut self, target: &str) -> Resp {
        self.send(format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
        self.response()
            .expect("connection closed without an answer")
    }

    /// Reads more bytes; false at EOF.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        let n = self.stream.read(&mut chunk).unwrap();
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next response, or None if the server closed first.
    fn response(&mut self) -> Option<Resp> {
        let (status, headers, head_len) = loop {
            let mut hs = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Response::new(&mut hs);
            if let httparse::Status::Complete(n) = r.parse(&self.buf).unwrap() {
                let headers = r
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect::<Vec<_>>();
                break (r.code.unwrap(), headers, n);
            }
            if !self.fill() {
                assert!(self.buf.is_empty(), "EOF inside a response head");
                return None;
            }
        };
        self.buf.drain(..head_len);
        let mut resp = Resp {
            status,
            headers,
            body: Vec::new(),
            chunks: 0,
        };
        if resp.header("transfer-encoding") == Some("chunked") {
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    assert!(self.fill(), "EOF inside a chunk size");
                };
                let size_text = String::from_utf8(self.buf[..line_end].to_vec()).unwrap();
                let size = usize::from_str_radix(size_text.trim(), 16).unwrap();
                while self.buf.len() < line_end + 2 + size + 2 {
                    assert!(self.fill(), "EOF inside a chunk");
                }
                let data = &self.buf[line_end + 2..line_end + 2 + size];
                resp.body.extend_from_slice(data);
                assert_eq!(&self.buf[line_end + 2 + size..line_end + 4 + size], b"\r\n");
                self.buf.drain(..line_end + 4 + size);
                if size == 0 {
                    break;
                }
                resp.chunks += 1;
            }
        } else {
            let len: usize = resp.header("content-length").unwrap().parse().unwrap();
            while self.buf.len() < len {
                assert!(self.fill(), "EOF inside a body");
            }
            resp.body = self.buf.drain(..len).collect();
        }
        Some(resp)
    }
}

fn get(port: u16, target: &str) -> Resp {
    Client::connect(port, "localhost").get(target)
}

fn legacy(query: &str) -> String {
    format!("/maps/api/place/nearbysearch/json?{query}")
}

fn haversine_m(lat1: f64, lng1: f64, lat2: f64, lng2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let a = ((p2 - p1) / 2.0).sin().powi(2)
        + p1.cos() * p2.cos() * ((lng2 - lng1).to_radians() / 2.0).sin().powi(2);
    2.0 * 6_371_008.8 * a.sqrt().asin()
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

fn post_new(client: &mut Client, headers: &str, body: &str) -> Resp {
    client.send(
        format!(
            "POST /v1/places:searchNearby HTTP/1.1\r\nHost: localhost\r\n\
             Content-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    client.response().unwrap()
}

fn circle(lat: f64, lng: f64, radius: f64, max: Option<u32>) -> String {
    let max = max.map_or(String::new(), |n| format!("\"maxResultCount\": {n}, "));
    format!(
        "{{{max}\"locationRestriction\": {{\"circle\": {{\"center\": \
         {{\"latitude\": {lat}, \"longitude\": {lng}}}, \"radius\": {radius}}}}}}}"
    )
}

/// Polls the file until it holds a line containing `needle`.
fn wait_for_line(path: &PathBuf, needle: &str) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no line with {needle:?} in {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn legacy_answers_near_ucla_nearest_first() {
    let server = start(&[]);
    let resp = get(server.port, &legacy(&format!("{UCLA}&radius=10000&key=K")));
    assert_eq!(resp.status, 200);
    assert!(resp
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let v = resp.json();
    assert_eq!(keys(&v), ["html_attributions", "results", "status"]);
    assert_eq!(v["status"], "OK");
    let results = v["results"].as_array().unwrap();
    assert!((1..=20).contains(&results.len()), "{}", results.len());
    let mut last = 0.0;
    for r in results {
        assert_eq!(
            keys(r),
            [
                "business_status",
                "geometry",
                "icon",
                "name",
                "place_id",
                "reference",
                "scope",
                "types",
                "vicinity"
            ]
        );
        assert_eq!(keys(&r["geometry"]), ["location", "viewport"]);
        assert_eq!(keys(&r["geometry"]["viewport"]), ["northeast", "southwest"]);
        assert_eq!(r["vicinity"], "CA, US");
        assert_eq!(r["types"], serde_json::json!(["locality", "political"]));
        assert_eq!(r["place_id"], r["reference"]);
        let loc = &r["geometry"]["location"];
        let d = haversine_m(
            34.068930,
            -118.445127,
            loc["lat"].as_f64().unwrap(),
            loc["lng"].as_f64().unwrap(),
        );
        assert!(d <= 10_000.0 && d >= last, "{d} after {last}");
        last = d;
    }
    let names: Vec<&str> = results
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names[0], "Bel Air", "{names:?}");
    assert!(names.contains(&"Beverly Hills") && names.contains(&"Santa Monica"));

    // A bigger radius reaches downtown Los Angeles but is capped at 20.
    let v = get(server.port, &legacy(&format!("{UCLA}&radius=50000&key=K"))).json();
    assert_eq!(v["results"].as_array().unwrap().len(), 20);
    // Percent-encoded parameters are decoded.
    let v = get(
        server.port,
        &legacy("location=34.068930%2C-118.445127&radius=10000&key=K"),
    )
    .json();
    assert_eq!(v["results"][0]["name"], "Bel Air");
}

#[test]
fn legacy_errors_have_googles_shape() {
    let server = start(&[]);
    let v = get(server.port, &legacy("location=0,-140&radius=10000&key=K")).json();
    assert_eq!(
        v,
        serde_json::json!({"html_attributions": [], "results": [], "status": "ZERO_RESULTS"})
    );

    let resp = get(server.port, &legacy(&format!("{UCLA}&radius=10000")));
    assert_eq!(resp.status, 200);
    let v = resp.json();
    assert_eq!(
        keys(&v),
        ["error_message", "html_attributions", "results", "status"]
    );
    assert_eq!(v["status"], "REQUEST_DENIED");
    assert!(v["error_message"]
        .as_str()
        .unwrap()
        .starts_with("You must use an API key"));

    for bad in [
        format!("{UCLA}&radius=0&key=K"),
        format!("{UCLA}&radius=50001&key=K"),
        format!("{UCLA}&radius=ten&key=K"),
        format!("{UCLA}&key=K"),
        "location=91,0&radius=10&key=K".to_string(),
        "location=nowhere&radius=10&key=K".to_string(),
        "radius=10&key=K".to_string(),
    ] {
        let resp = get(server.port, &legacy(&bad));
        assert_eq!(resp.status, 200);
        let v = resp.json();
        assert_eq!(v["status"], "INVALID_REQUEST", "{bad}");
        assert_eq!(
            keys(&v),
            ["error_message", "html_attributions", "results", "status"]
        );
    }
    // Any path ending in /nearbysearch/json is the legacy API.
    let v = get(
        server.port,
        &format!("/x/nearbysearch/json?{UCLA}&radius=3000&key=K"),
    )
    .json();
    assert_eq!(v["status"], "OK");
    assert_eq!(get(server.port, "/nope").status, 404);
}

#[test]
fn new_api_answers_and_errors() {
    let server = start(&[]);
    let mut c = Client::connect(server.port, "localhost");
    let ok_headers = "X-Goog-Api-Key: K\r\nX-Goog-FieldMask: *\r\n";
    let resp = post_new(
        &mut c,
        ok_headers,
        &circle(34.068930, -118.445127, 10000.0, Some(3)),
    );
    assert_eq!(resp.status, 200);
    let v = resp.json();
    assert_eq!(keys(&v), ["places"]);
    let places = v["places"].as_array().unwrap();
    assert_eq!(places.len(), 3);
    assert_eq!(
        keys(&places[0]),
        [
            "name",
            "id",
            "types",
            "formattedAddress",
            "location",
            "displayName",
            "businessStatus",
            "shortFormattedAddress"
        ]
    );
    assert_eq!(places[0]["displayName"]["text"], "Bel Air");
    assert_eq!(places[0]["displayName"]["languageCode"], "en");
    assert_eq!(places[0]["formattedAddress"], "Bel Air, CA, US");
    assert_eq!(keys(&places[0]["location"]), ["latitude", "longitude"]);

    // The field mask picks fields; the default count is 20.
    let masked = "X-Goog-Api-Key: K\r\nX-Goog-FieldMask: places.displayName,places.location\r\n";
    let v = post_new(
        &mut c,
        masked,
        &circle(34.068930, -118.445127, 50000.0, None),
    )
    .json();
    let places = v["places"].as_array().unwrap();
    assert_eq!(places.len(), 20);
    assert_eq!(keys(&places[0]), ["location", "displayName"]);

    let v = post_new(&mut c, ok_headers, &circle(0.0, -140.0, 10000.0, None)).json();
    assert_eq!(v, serde_json::json!({}));

    let resp = post_new(
        &mut c,
        "X-Goog-FieldMask: *\r\n",
        &circle(34.0, -118.0, 10.0, None),
    );
    assert_eq!(resp.status, 403);
    assert_eq!(resp.json()["error"]["status"], "PERMISSION_DENIED");
    assert_eq!(resp.json()["error"]["code"], 403);

    for body in [
        "not json".to_string(),
        "[]".to_string(),
        circle(34.0, -118.0, 0.0, None),
        circle(34.0, -118.0, 50000.5, None),
        circle(95.0, -118.0, 10.0, None),
        circle(34.0, -118.0, 10.0, Some(0)),
        circle(34.0, -118.0, 10.0, Some(21)),
        "{}".to_string(),
    ] {
        let resp = post_new(&mut c, ok_headers, &body);
        assert_eq!(resp.status, 400, "{body}");
        let v = resp.json();
        assert_eq!(keys(&v["error"]), ["code", "message", "status"]);
        assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
    }
    let resp = post_new(
        &mut c,
        "X-Goog-Api-Key: K\r\n",
        &circle(34.0, -118.0, 10.0, None),
    );
    assert_eq!(resp.status, 400, "a field mask is required");
}

#[test]
fn keep_alive_and_pipelining() {
    let server = start(&[]);
    let mut c = Client::connect(server.port, "127.0.0.1");
    let a = c.get(&legacy(&format!("{UCLA}&radius=3000&key=K")));
    let b = c.get(&legacy("location=0,-140&radius=10000&key=K"));
    assert_eq!(a.json()["status"], "OK");
    assert_eq!(b.json()["status"], "ZERO_RESULTS");
    assert_eq!(a.header("connection"), None);

    // Three requests in one write; the last asks to close.
    let one = |q: &str, close: &str| {
        format!(
            "GET {} HTTP/1.1\r\nHost: localhost\r\n{close}\r\n",
            legacy(q)
        )
    };
    let burst = one(&format!("{UCLA}&radius=3000&key=K"), "")
        + &one("location=0,-140&radius=10&key=K", "")
        + &one(&format!("{UCLA}&radius=10"), "Connection: close\r\n");
    c.send(burst.as_bytes());
    assert_eq!(c.response().unwrap().json()["status"], "OK");
    assert_eq!(c.response().unwrap().json()["status"], "ZERO_RESULTS");
    let last = c.response().unwrap();
    assert_eq!(last.json()["status"], "REQUEST_DENIED");
    assert_eq!(last.header("connection"), Some("close"));
    assert!(c.response().is_none(), "closed after Connection: close");
}

#[test]
fn bad_connections_close_only_themselves() {
    let server = start(&[]);
    // Not TLS at all.
    let mut raw = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    raw.set_read_timeout(Some(TIMEOUT)).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut sink = Vec::new();
    let _ = raw.read_to_end(&mut sink);
    // TLS, then not HTTP.
    let mut c = Client::connect(server.port, "localhost");
    c.send(b"\x00\x01garbage\r\n\r\n");
    let resp = c.response().unwrap();
    assert_eq!(resp.status, 400);
    assert!(c.response().is_none());
    // An oversized body is refused.
    let mut c = Client::connect(server.port, "localhost");
    c.send(b"POST /v1/places:searchNearby HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n");
    assert_eq!(c.response().unwrap().status, 413);
    // The service still answers others.
    let v = get(server.port, &legacy(&format!("{UCLA}&radius=3000&key=K"))).json();
    assert_eq!(v["status"], "OK");
}

#[test]
fn certificates_validate_for_both_names_and_untrusted_is_rejected() {
    let server = start(&[]);
    for name in ["localhost", "127.0.0.1"] {
        let v = Client::connect(server.port, name)
            .get(&legacy(&format!("{UCLA}&radius=3000&key=K")))
            .json();
        assert_eq!(v["status"], "OK");
    }
    let untrusted = start(&[
        "--cert",
        repo("data/tls/untrusted.pem").to_str().unwrap(),
        "--key",
        repo("data/tls/untrusted.key").to_str().unwrap(),
    ]);
    let err = Client::connect_with(
        untrusted.port,
        "localhost",
        client_config("data/tls/ca.pem"),
    )
    .err()
    .expect("a client trusting only ca.pem must reject untrusted.pem");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    // The pair itself is sound: a client that trusts it explicitly accepts it,
    // so the rejection above is about trust alone.
    let v = Client::connect_with(
        untrusted.port,
        "localhost",
        client_config("data/tls/untrusted.pem"),
    )
    .unwrap()
    .get(&legacy(&format!("{UCLA}&radius=3000&key=K")))
    .json();
    assert_eq!(v["status"], "OK");
}

#[test]
fn fail_modes() {
    let target = legacy(&format!("{UCLA}&radius=3000&key=K"));
    let server = start(&["--fail", "http500"]);
    let mut c = Client::connect(server.port, "localhost");
    assert_eq!(c.get(&target).status, 500);
    assert_eq!(c.get(&target).status, 500, "the connection stays usable");

    let server = start(&["--fail", "not-json"]);
    let resp = get(server.port, &target);
    assert_eq!(resp.status, 200);
    assert!(serde_json::from_slice::<Value>(&resp.body).is_err());

    let server = start(&["--fail", "close"]);
    let mut c = Client::connect(server.port, "localhost");
    c.send(format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
    assert!(c.response().is_none(), "closed without an answer");
}

#[test]
fn chunked_bodies() {
    let server = start(&["--chunked"]);
    let mut c = Client::connect(server.port, "localhost");
    for _ in 0..2 {
        let resp = c.get(&legacy(&format!("{UCLA}&radius=10000&key=K")));
        assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
        assert!(resp.chunks > 1, "{} chunks", resp.chunks);
        assert_eq!(resp.json()["status"], "OK");
    }
}

#[test]
fn latency_still_answers_in_order() {
    let server = start(&["--latency-ms", "150"]);
    let mut c = Client::connect(server.port, "localhost");
    let a = legacy(&format!("{UCLA}&radius=3000&key=K"));
    let b = legacy("location=0,-140&radius=10&key=K");
    let d = legacy(&format!("{UCLA}&radius=10"));
    // Three in one write share one deadline (their timers tie): the answers
    // still come in request order, and not before the delay.
    let sent = Instant::now();
    c.send(
        format!("GET {a} HTTP/1.1\r\n\r\nGET {b} HTTP/1.1\r\n\r\nGET {d} HTTP/1.1\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(c.response().unwrap().json()["status"], "OK");
    assert!(sent.elapsed() >= Duration::from_millis(150));
    assert_eq!(c.response().unwrap().json()["status"], "ZERO_RESULTS");
    assert_eq!(c.response().unwrap().json()["status"], "REQUEST_DENIED");
    // A later request on the same connection waits its own delay.
    let again = Instant::now();
    assert_eq!(c.get(&b).json()["status"], "ZERO_RESULTS");
    assert!(again.elapsed() >= Duration::from_millis(150));
}

#[test]
fn log_lines_name_request_and_handshake_without_the_key() {
    let log = temp_path("log/places.log");
    let server = start(&["--log", log.to_str().unwrap()]);
    let resp = get(
        server.port,
        &legacy(&format!("{UCLA}&radius=10000&key=SECRET123")),
    );
    assert_eq!(resp.status, 200);
    let line = wait_for_line(&log, "request conn=1 ");
    assert!(
        line.contains(" GET /maps/api/place/nearbysearch/json?"),
        "{line}"
    );
    assert!(line.contains("key=***"), "{line}");
    assert!(line.contains("location=34.06893,-118.445127"), "{line}");
    assert!(line.contains("radius_m=10000"), "{line}");
    assert!(line.contains("status=200"), "{line}");
    assert!(line.contains("results=15"), "{line}");
    let tls = wait_for_line(&log, "tls conn=1 ");
    assert!(tls.contains("handshake done"), "{tls}");
    // RFC 3339 UTC with microseconds: 2021-05-19T22:53:47.959498Z
    let stamp = line.split(' ').next().unwrap();
    assert_eq!(stamp.len(), 27, "{stamp}");
    assert!(
        stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
        "{stamp}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("SECRET123"));

    // SIGTERM: a clean exit 0 with the log flushed.
    let mut server = server;
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + TIMEOUT;
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0));
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("stopping on signal"));
    let _ = std::fs::remove_dir_all(log.parent().unwrap());
}

#[test]
fn bad_options_exit_2_and_port_in_use_exits_1() {
    for args in [
        &["--fail", "boom"][..],
        &["--latency-ms", "soon"],
        &["--bogus"],
        &["--data", "/nonexistent/places.tsv"],
    ] {
        let out = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for option in ["--latency-ms", "--no-keep-alive", "--drop-reused"] {
        assert!(help.contains(option), "{help}");
    }
    assert!(help.ends_with('\n'), "{help}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["--listen", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr).unwrap().contains("in use"));
}

#[test]
fn no_keep_alive_closes_after_every_answer() {
    let server = start(&["--no-keep-alive"]);
    let target = legacy(&format!("{UCLA}&radius=3000&key=K"));
    for _ in 0..2 {
        // A fresh TLS connection per request: that is what the option forces.
        let mut c = Client::connect(server.port, "localhost");
        let resp = c.get(&target);
        assert_eq!(resp.json()["status"], "OK");
        assert_eq!(resp.header("connection"), Some("close"));
        assert!(c.response().is_none(), "EOF after the first answer");
    }
    // Pipelined requests: only the first is answered, then EOF.
    let mut c = Client::connect(server.port, "localhost");
    c.send(format!("GET {target} HTTP/1.1\r\n\r\nGET {target} HTTP/1.1\r\n\r\n").as_bytes());
    assert_eq!(c.response().unwrap().header("connection"), Some("close"));
    assert!(c.response().is_none());
}

#[test]
fn drop_reused_closes_a_reused_connection_without_answering() {
    let log = temp_path("drop/places.log");
    let server = start(&["--drop-reused", "--log", log.to_str().unwrap()]);
    let target = legacy(&format!("{UCLA}&radius=3000&key=SECRET9"));
    let mut c = Client::connect(server.port, "localhost");
    let first = c.get(&target);
    assert_eq!(first.json()["status"], "OK");
    assert_eq!(first.header("connection"), None, "offered for reuse");
    c.send(format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
    // `response` asserts that not one byte came before the close (close_notify).
    assert!(c.response().is_none(), "closed without an answer");
    let line = wait_for_line(&log, "dropped a reused connection");
    assert!(line.contains("conn=1 "), "{line}");
    assert!(!line.contains("SECRET9"), "{line}");

    // A fresh connection is answered, as the herd's retry expects; pipelined
    // requests get the first answer, then the close.
    let mut c = Client::connect(server.port, "localhost");
    assert_eq!(c.get(&target).json()["status"], "OK");
    let mut c = Client::connect(server.port, "localhost");
    c.send(format!("GET {target} HTTP/1.1\r\n\r\nGET {target} HTTP/1.1\r\n\r\n").as_bytes());
    assert_eq!(c.response().unwrap().json()["status"], "OK");
    assert!(c.response().is_none());
    // The log is flushed at the end of the loop's turn, after the answer.
    wait_for_line(&log, "request conn=3 ");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(text.matches("request conn=").count(), 3, "{text}");
    assert_eq!(text.matches("dropped a reused").count(), 2, "{text}");
    let _ = std::fs::remove_dir_all(log.parent().unwrap());
}

#[test]
fn drop_reused_waits_for_a_delayed_first_answer() {
    let server = start(&["--drop-reused", "--latency-ms", "100"]);
    let target = legacy(&format!("{UCLA}&radius=3000&key=K"));
    let mut c = Client::connect(server.port, "localhost");
    c.send(format!("GET {target} HTTP/1.1\r\n\r\nGET {target} HTTP/1.1\r\n\r\n").as_bytes());
    assert_eq!(c.response().unwrap().json()["status"], "OK");
    assert!(c.response().is_none());
}

/// A small deterministic generator (xorshift64*), so benchmark runs ask the
/// same questions and can be compared.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Legacy targets near UCLA, radius 10 km, the point jittered by up to
/// ±0.02° so the answers are not all the same 20 places.
fn ucla_targets(n: usize) -> Vec<String> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    (0..n)
        .map(|_| {
            let lat = 34.068930 + (rng.next_f64() - 0.5) * 0.04;
            let lng = -118.445127 + (rng.next_f64() - 0.5) * 0.04;
            legacy(&format!("location={lat:.6},{lng:.6}&radius=10000&key=K"))
        })
        .collect()
}

/// In-process cost of one legacy answer, no sockets:
/// `cargo test --release --test places_offline answer_cost -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark; run in release with --ignored --nocapture"]
fn answer_cost() {
    use places_offline::api::{Request, Service};
    use places_offline::places::Places;
    let t0 = Instant::now();
    let places = Places::load(&repo("data/places/cities1000.tsv")).unwrap();
    let service = Service::new(places);
    println!(
        "start-up: {} places loaded and indexed in {:.3} s",
        service.len(),
        t0.elapsed().as_secs_f64()
    );
    let targets = ucla_targets(10_000);
    let answer = |target: &str| {
        service.handle(&Request {
            method: "GET",
            target,
            headers: &[],
            body: b"",
        })
    };
    // One pass to warm caches (and any lazily built state), one to measure.
    for pass in ["cold", "warm"] {
        let t = Instant::now();
        let mut bytes = 0;
        for target in &targets {
            let r = answer(target);
            assert_eq!(r.status, 200);
            bytes += r.body.len();
        }
        let per = t.elapsed().as_secs_f64() * 1e6 / targets.len() as f64;
        println!(
            "{pass}: {per:.2} µs per answer ({} answers, {} bytes on average)",
            targets.len(),
            bytes / targets.len()
        );
    }
}

/// Answers per second over real HTTPS: 16 keep-alive client threads for 3 s,
/// on the same machine as the server (so clients take CPU too):
/// `cargo test --release --test places_offline https_throughput -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark; run in release with --ignored --nocapture"]
fn https_throughput() {
    let server = start(&[]);
    let port = server.port;
    let targets = Arc::new(ucla_targets(1_000));
    let run_for = Duration::from_secs(3);
    let t = Instant::now();
    let threads: Vec<_> = (0..16)
        .map(|k| {
            let targets = Arc::clone(&targets);
            std::thread::spawn(move || {
                let mut client = Client::connect(port, "localhost");
                let mut n = 0usize;
                while t.elapsed() < run_for {
                    let resp = client.get(&targets[(k * 61 + n) % targets.len()]);
                    assert_eq!(resp.status, 200);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: usize = threads.into_iter().map(|h| h.join().unwrap()).sum();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "https: {total} answers in {secs:.2} s = {:.0} answers/s (16 keep-alive clients)",
        total as f64 / secs
    );
}

#[test]
fn a_stalled_tls_handshake_is_dropped() {
    let dir = common::TempDir::new("offline-stall");
    let log = dir.path("offline.log");
    let server = start(&["--log", log.to_str().unwrap()]);
    // Connects and never says anything: no ClientHello.
    let mut stalled = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 16];
    // The server closes it (0 bytes or a reset), within its handshake time.
    let closed = matches!(stalled.read(&mut buf), Ok(0) | Err(_));
    assert!(closed);
    common::wait_for("the drop to be logged", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("TLS handshake not done in time")
            .then_some(())
    });
    // Others are still served.
    assert_eq!(
        get(server.port, &legacy(&format!("{UCLA}&radius=1000&key=K"))).status,
        200
    );
}

#[test]
fn out_of_descriptors_it_pauses_accepting_and_serves_again_once_they_free() {
    // A low descriptor limit for this process only (sh's ulimit), and more
    // connections than it allows.
    let dir = common::TempDir::new("offline-emfile");
    let log = dir.path("offline.log");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 40 && exec {BIN} --listen 127.0.0.1:0 --log {}",
            log.display()
        ))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let port: u16 = line.trim().rsplit(':').next().unwrap().parse().unwrap();
    let server = Server { child, port };
    let many: Vec<TcpStream> = (0..60)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    assert!(many.len() > 40, "the backlog takes them all");
    drop(many);
    // Once they are gone, a real request is answered: accepting resumed.
    common::wait_for("places-offline to accept again", || {
        Client::connect_with(server.port, "localhost", client_config("data/tls/ca.pem"))
            .ok()
            .map(|mut c| c.get(&legacy(&format!("{UCLA}&radius=1000&key=K"))).status)
            .filter(|s| *s == 200)
    });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("accept paused"), "{text}");
}
