//! The read-only HTTP endpoint (`http=` in the herd file, `--http`), black
//! box over TCP: `/metrics` counters move as lines are sent, `/status`
//! follows a neighbour's death, and bad or slow requests get proper errors
//! while clients and other requests are still served.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::*;

/// These tests hold the Rust server to its endpoint's details (`/metrics`,
/// the limits); the asyncio herd serves `/status` and the page only, and the
/// browser test (`tests/page.rs`) checks it.
fn rust_only(test: &str) -> bool {
    if is_counterpart() {
        eprintln!(
            "SKIPPED: {test}: the {} counterpart has no /metrics or HTTP limits to test",
            implementation()
        );
        return true;
    }
    false
}

/// A two-server herd, Riley and Jaquez, both serving HTTP.
const PAIR: &[(&str, &[&str])] = &[("Riley", &["Jaquez"]), ("Jaquez", &["Riley"])];

/// One HTTP response.
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// The value of header `name` (the first one), if present.
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads one response; `head_only` for the answer to a HEAD.
fn read_reply(c: &mut Client, head_only: bool) -> Reply {
    let mut head = String::new();
    loop {
        let line = String::from_utf8(c.read_line_bytes()).expect("UTF-8 head");
        if line == "\r" {
            break;
        }
        head.push_str(&line);
        head.push('\n');
    }
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let mut reply = Reply {
        status,
        head,
        body: Vec::new(),
    };
    let len: usize = reply
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .expect("every response has a Content-Length");
    if !head_only {
        reply.body = c.read_exact_bytes(len);
    }
    reply
}

/// `GET path` on a fresh connection.
fn get(addr: SocketAddr, path: &str) -> Reply {
    let mut c = Client::connect(addr);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
    read_reply(&mut c, false)
}

/// The value of the sample `key` (name and labels exactly as printed).
fn sample(metrics: &str, key: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(' ')?;
        rest.parse().ok()
    })
}

fn metrics(addr: SocketAddr) -> String {
    let r = get(addr, "/metrics");
    assert_eq!(r.status, 200);
    r.text()
}

/// `promtool check metrics` on a live exposition, when promtool is installed.
fn promtool_check(text: &str) {
    use std::io::Write;
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        let why = "promtool is not installed (Debian: apt-get install prometheus; \
                   tests/run.sh installs it as root)";
        assert!(!in_ci(), "promtool check metrics under CI=true: {why}");
        eprintln!("SKIPPED: promtool check metrics: {why}");
        return;
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

#[test]
fn metrics_counters_move_when_lines_are_sent() {
    if rust_only("metrics_counters_move_when_lines_are_sent") {
        return;
    }
    let herd = Herd::start_with_http("metrics", PAIR);
    herd.wait_all_links_up();
    let riley = herd.http_addr("Riley");
    let before = metrics(riley);
    assert_eq!(
        sample(&before, "proxy_herd_lines_received_total{kind=\"iamat\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &before,
            "proxy_herd_link_state{neighbour=\"Jaquez\",state=\"up\"}"
        ),
        Some(1.0)
    );
    let mut c = herd.server("Riley").connect();
    c.send(format!("IAMAT kiwi +34.068930-118.445127 {}\n", now()).as_bytes());
    assert!(c.read_line().starts_with("AT Riley "));
    c.send(b"WHATSIT kiwi\n");
    assert_eq!(c.read_line(), "? WHATSIT kiwi");
    c.send(b"WHATSAT kiwi 10 2\n");
    c.read_until_blank_line();
    herd.wait_everywhere("kiwi", &herd.known_at("Riley", "kiwi").expect("known"));

    let after = metrics(riley);
    for (key, value) in [
        // known_at asks with WHATSATs too: at least the one above.
        ("proxy_herd_lines_received_total{kind=\"iamat\"}", 1.0),
        ("proxy_herd_lines_received_total{kind=\"invalid\"}", 1.0),
        ("proxy_herd_replies_total{kind=\"at\"}", 1.0),
        ("proxy_herd_replies_total{kind=\"invalid\"}", 1.0),
        ("proxy_herd_floods_sent_total{neighbour=\"Jaquez\"}", 1.0),
        ("proxy_herd_positions_stored", 1.0),
    ] {
        assert_eq!(sample(&after, key), Some(value), "{key} in\n{after}");
    }
    for key in [
        "proxy_herd_lines_received_total{kind=\"whatsat\"}",
        "proxy_herd_replies_total{kind=\"whatsat\"}",
        "proxy_herd_places_request_duration_seconds_count",
        "proxy_herd_clients_connected",
    ] {
        assert!(sample(&after, key) >= Some(1.0), "{key} in\n{after}");
    }
    // The Places URL is a closed port: every request failed, none timed out.
    let failed = sample(
        &after,
        "proxy_herd_places_requests_total{outcome=\"failed\"}",
    );
    assert!(failed >= Some(1.0), "{after}");
    let jaquez = metrics(herd.http_addr("Jaquez"));
    assert_eq!(
        sample(
            &jaquez,
            "proxy_herd_floods_received_total{neighbour=\"Riley\",result=\"new\"}"
        ),
        Some(1.0),
        "{jaquez}"
    );
    promtool_check(&after);
    promtool_check(&jaquez);
}

#[test]
fn status_shows_where_updates_came_from_and_a_killed_neighbour() {
    if rust_only("status_shows_where_updates_came_from_and_a_killed_neighbour") {
        return;
    }
    let mut herd = Herd::start_with_http("status", PAIR);
    herd.wait_all_links_up();
    let riley = herd.http_addr("Riley");
    let r = get(riley, "/status");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let s = r.json();
    assert_eq!(s["server"], "Riley");
    assert_eq!(s["implementation"], "rust");
    assert_eq!(s["addresses"]["http"], riley.to_string());
    assert_eq!(s["herd"]["servers"][1]["name"], "Jaquez");
    assert_eq!(
        s["herd"]["servers"][1]["http"],
        herd.http_addr("Jaquez").to_string()
    );
    assert_eq!(s["herd"]["links"], serde_json::json!([["Riley", "Jaquez"]]));
    assert_eq!(s["links"][0]["neighbour"], "Jaquez");
    assert_eq!(s["links"][0]["state"], "up");
    assert_eq!(s["links"][0]["incoming"], true);
    assert_eq!(s["links"][0]["tls"], false);

    // An update sent to Jaquez reaches Riley's ring with its source.
    let at = herd.iamat("Jaquez", "pear", "+1.5-2.5", &now());
    let entry = wait_for("Riley to record the update from Jaquez", || {
        let s = get(riley, "/status").json();
        s["recent"]
            .as_array()?
            .iter()
            .find(|u| u["at"] == at.as_str())
            .cloned()
    });
    assert_eq!(entry["from"], "Jaquez");
    assert_eq!(entry["client"], "pear");
    let jaquez = get(herd.http_addr("Jaquez"), "/status").json();
    let origin = &jaquez["recent"][0];
    assert_eq!(
        (origin["at"].as_str(), origin["from"].as_str()),
        (Some(at.as_str()), Some("client"))
    );
    // Riley got it after Jaquez did, on one clock: microseconds apart.
    let hop = entry["time_us"].as_i64().unwrap() - origin["time_us"].as_i64().unwrap();
    assert!((0..10_000_000).contains(&hop), "{hop} µs");

    herd.kill("Jaquez");
    let link = wait_for("Riley's /status to show Jaquez's link down", || {
        let s = get(riley, "/status").json();
        let link = s["links"][0].clone();
        (link["state"] != "up" && link["incoming"] == false).then_some(link)
    });
    assert!(
        ["backoff", "dialing", "greeting"].contains(&link["state"].as_str().unwrap()),
        "{link}"
    );
    let m = metrics(riley);
    assert_eq!(
        sample(
            &m,
            "proxy_herd_link_state{neighbour=\"Jaquez\",state=\"up\"}"
        ),
        Some(0.0)
    );
    assert!(
        m.lines()
            .any(|l| l.starts_with("proxy_herd_disconnects_total{conn=\"peer\"")),
        "{m}"
    );
}

#[test]
fn a_catch_up_is_counted_when_a_link_comes_up() {
    if rust_only("a_catch_up_is_counted_when_a_link_comes_up") {
        return;
    }
    let mut herd = Herd::with_http("catchup", PAIR);
    herd.start_named("Riley");
    herd.iamat("Riley", "early", "+1-1", &now());
    herd.start_named("Jaquez");
    herd.wait_all_links_up();
    let riley = metrics(herd.http_addr("Riley"));
    let sent = "{neighbour=\"Jaquez\",direction=\"sent\"}";
    let positions = sample(&riley, &format!("proxy_herd_catchup_positions_total{sent}"));
    assert!(positions >= Some(1.0), "{riley}");
    let bytes = sample(&riley, &format!("proxy_herd_catchup_bytes_total{sent}"));
    assert!(bytes >= Some(20.0), "{riley}");
    let ups = sample(&riley, "proxy_herd_link_ups_total{neighbour=\"Jaquez\"}");
    assert!(ups >= Some(1.0), "{riley}");
    promtool_check(&riley);
}

/// A lone Riley serving HTTP on a fresh port.
fn lone() -> Herd {
    Herd::start_with_http("lone-http", &[("Riley", &[])])
}

#[test]
fn keep_alive_head_page_and_404_on_one_connection() {
    if rust_only("keep_alive_head_page_and_404_on_one_connection") {
        return;
    }
    let herd = lone();
    let mut c = Client::connect(herd.http_addr("Riley"));
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nHEAD /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    let page = read_reply(&mut c, false);
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("connection"), Some("keep-alive"));
    assert!(page.text().contains("<svg id=\"herd\""));
    let head = read_reply(&mut c, true);
    assert_eq!(head.status, 200);
    assert!(
        head.header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 100
    );
    c.send(b"GET /nothing-here HTTP/1.1\r\nHost: t\r\n\r\n");
    let missing = read_reply(&mut c, false);
    assert_eq!(missing.status, 404);
    c.send(b"GET /status?now HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let status = read_reply(&mut c, false);
    assert_eq!(status.json()["server"], "Riley");
    assert_eq!(status.header("connection"), Some("close"));
    assert!(c.read_to_end().is_empty(), "closed after Connection: close");
}

#[test]
fn bad_requests_get_proper_errors_then_close() {
    if rust_only("bad_requests_get_proper_errors_then_close") {
        return;
    }
    let herd = lone();
    let addr = herd.http_addr("Riley");
    let long_header = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(9000));
    let many_headers = format!(
        "GET / HTTP/1.1\r\nHost: t\r\n{}\r\n",
        (0..40).map(|i| format!("X-{i}: y\r\n")).collect::<String>()
    );
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("a head over 8 KiB", long_header.into_bytes(), 431),
        ("a request line over 8 KiB", long_line.into_bytes(), 414),
        ("40 headers", many_headers.into_bytes(), 431),
        (
            "garbage",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n".to_vec(),
            400,
        ),
        ("no Host", b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400),
        (
            "POST",
            b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi".to_vec(),
            405,
        ),
        (
            "DELETE",
            b"DELETE / HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            405,
        ),
        (
            "a body",
            b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc".to_vec(),
            413,
        ),
    ];
    for (what, request, status) in cases {
        let mut c = Client::connect(addr);
        c.send(&request);
        let r = read_reply(&mut c, false);
        assert_eq!(r.status, status, "{what}: {}", r.head);
        assert_eq!(r.header("connection"), Some("close"), "{what}");
        if status == 405 {
            assert_eq!(r.header("allow"), Some("GET, HEAD"));
        }
        assert!(
            c.read_to_end().is_empty(),
            "{what}: nothing after the error"
        );
    }
    // The server is fine and counted them.
    let m = metrics(addr);
    assert_eq!(
        sample(&m, "proxy_herd_http_responses_total{code=\"405\"}"),
        Some(2.0)
    );
    assert_eq!(
        sample(&m, "proxy_herd_http_responses_total{code=\"431\"}"),
        Some(2.0)
    );
}

#[test]
fn a_slow_request_gets_408_and_holds_up_nobody() {
    if rust_only("a_slow_request_gets_408_and_holds_up_nobody") {
        return;
    }
    let herd = lone();
    let addr = herd.http_addr("Riley");
    let mut slow = Client::connect(addr);
    slow.send(b"GET /metrics HTTP/1.1\r\nHost: t\r\n");
    // Meanwhile clients, and other HTTP requests, are answered.
    let mut c = herd.server("Riley").connect();
    c.send(format!("IAMAT slowpoke +1-1 {}\n", now()).as_bytes());
    assert!(c.read_line().starts_with("AT Riley "));
    assert_eq!(get(addr, "/status").status, 200);
    // The head timeout (5 s) answers 408 and closes.
    let r = read_reply(&mut slow, false);
    assert_eq!(r.status, 408);
    assert!(slow.read_to_end().is_empty());
}

#[test]
fn past_64_connections_a_503_and_everyone_else_is_served() {
    if rust_only("past_64_connections_a_503_and_everyone_else_is_served") {
        return;
    }
    let herd = lone();
    let addr = herd.http_addr("Riley");
    let mut held: Vec<Client> = (0..64).map(|_| Client::connect(addr)).collect();
    // The 64 are accepted (each answers) before the extra one comes.
    for c in held.iter_mut().take(1) {
        c.send(b"GET /status HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(read_reply(c, false).status, 200);
    }
    wait_for("64 HTTP connections accepted", || {
        let log = herd.server("Riley").log_text();
        let accepted = log
            .lines()
            .filter(|l| l.contains(" http#") && l.ends_with(" connected"))
            .count();
        (accepted >= 64).then_some(())
    });
    let mut extra = Client::connect(addr);
    let r = read_reply(&mut extra, false);
    assert_eq!(r.status, 503);
    // The client port does not care.
    let mut c = herd.server("Riley").connect();
    c.send(b"nonsense\n");
    assert_eq!(c.read_line(), "? nonsense");
    drop(held);
}

#[test]
fn too_many_pipelined_requests_are_answered_up_to_the_bound_then_closed() {
    if rust_only("too_many_pipelined_requests_are_answered_up_to_the_bound_then_closed") {
        return;
    }
    let herd = lone();
    let mut c = Client::connect(herd.http_addr("Riley"));
    // One write: the server reads them at once (or in a few reads).
    c.send(&b"HEAD /metrics HTTP/1.1\r\nHost: t\r\n\r\n".repeat(40));
    let all = String::from_utf8(c.read_to_end()).unwrap();
    let answered = all.matches("HTTP/1.1 200 OK\r\n").count();
    assert!((16..40).contains(&answered), "{answered} answered");
}
