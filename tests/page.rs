//! The herd's live page in a real browser: headless Chromium (Debian's
//! `chromium` package) opens `GET /` of a running five-server herd, and the
//! test reads the DOM that the page's script built, over the DevTools
//! protocol: five servers and six links drawn and `up` (as text), an update's
//! flood path, a killed server shown `down`, and back `up` once restarted.
//! A screenshot is kept under `target/herd-page/`.
//!
//! Without Chromium the test says so and passes (`tests/run.sh` installs it
//! where it can), except under `CI=true`, where a missing browser fails it:
//! CI must not go green on a test that never ran. It runs against the Rust server and, with
//! `PROXY_HERD_IMPL=asyncio`, against the asyncio herd, which serves the same
//! `/status`. The DevTools client below is the least that works: a
//! WebSocket (RFC 6455) over a `TcpStream`, JSON with `serde_json`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// The browser, from the PATH.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// A WebSocket client: text frames out (masked, as a client must), whole
/// messages in.
struct WebSocket {
    stream: TcpStream,
}

impl WebSocket {
    /// Opens `ws://host:port/path`.
    fn connect(url: &str) -> WebSocket {
        let rest = url.strip_prefix("ws://").expect("a ws:// URL");
        let (host, path) = rest.split_once('/').expect("a path");
        let mut stream = TcpStream::connect(host).expect("connect to DevTools");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        write!(
            stream,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).expect("the upgrade answer");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "no upgrade: {head}");
        WebSocket { stream }
    }

    fn send(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x12, 0x34, 0x56, 0x78];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).expect("send to DevTools");
    }

    /// The next whole text message.
    fn receive(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            let mut head = [0u8; 2];
            self.stream
                .read_exact(&mut head)
                .expect("a frame from DevTools");
            let (fin, opcode) = (head[0] & 0x80 != 0, head[0] & 0x0f);
            let len = match head[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    self.stream.read_exact(&mut b).unwrap();
                    u64::from(u16::from_be_bytes(b))
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.stream.read_exact(&mut b).unwrap();
                    u64::from_be_bytes(b)
                }
                n => u64::from(n),
            };
            let mut payload = vec![0u8; len as usize];
            self.stream.read_exact(&mut payload).unwrap();
            match opcode {
                0x8 => panic!("DevTools closed the connection"),
                0x9 | 0xa => continue, // ping, pong: not used by DevTools
                _ => message.extend_from_slice(&payload),
            }
            if fin {
                return String::from_utf8(message).expect("UTF-8 message");
            }
        }
    }
}

/// A headless Chromium with one page, driven over the DevTools protocol.
struct Browser {
    child: Child,
    ws: WebSocket,
    next_id: u64,
    _profile: TempDir,
}

impl Browser {
    fn open(bin: &Path, url: &str) -> Browser {
        let profile = TempDir::new("chromium-profile");
        let mut child = Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=1280,1000",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start chromium");
        // Chromium says where DevTools listens on stderr; read it on a thread
        // so that a silent browser fails the wait, not the test runner.
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("ws://") {
                    let _ = tx.send(line[i..].trim().to_string());
                }
            }
        });
        let browser_ws = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("chromium did not print its DevTools address within 60 s");
        let http = browser_ws
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .expect("host:port")
            .to_string();
        // A cold start (the first after an install) can take longer than
        // DEADLINE; the browser's own wait is bounded by the same 60 s.
        let started = Instant::now();
        let page_ws = loop {
            let found = http_get(&http, "/json/list").and_then(|list| {
                let targets: Value = serde_json::from_str(&list).ok()?;
                targets.as_array()?.iter().find_map(|t| {
                    (t["type"] == "page")
                        .then(|| t["webSocketDebuggerUrl"].as_str().map(String::from))?
                })
            });
            if let Some(url) = found {
                break url;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "chromium showed no page target within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Browser {
            child,
            ws: WebSocket::connect(&page_ws),
            next_id: 0,
            _profile: profile,
        }
    }

    /// Calls a DevTools method and returns its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.ws
            .send(&json!({ "id": id, "method": method, "params": params }).to_string());
        loop {
            let message: Value = serde_json::from_str(&self.ws.receive()).expect("JSON");
            if message["id"] == id {
                assert!(message.get("error").is_none(), "{method}: {message}");
                return message["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page; its value must be JSON.
    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        r["result"]["value"].clone()
    }

    fn screenshot(&mut self, path: &Path) {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64_decode(r["data"].as_str().expect("base64 data"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain GET, for DevTools' target list.
fn http_get(host: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    // DevTools keeps the connection open: read by Content-Length.
    let mut reader = BufReader::new(s);
    let mut len = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                len = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    String::from_utf8(body).ok()
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | u32::from(d) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// What the page drew, read from its DOM: (name, state text, data-state) for
/// each server, (a, b, state text) for each link, and the flood table.
const DRAWN: &str = r#"JSON.stringify({
  servers: [...document.querySelectorAll('#servers .server')].map(g =>
    [g.dataset.name, g.querySelector('.state').textContent, g.dataset.state]),
  links: [...document.querySelectorAll('#links .link')].map(g =>
    [g.dataset.a, g.dataset.b, g.querySelector('.state').textContent]),
  flood: [...document.querySelectorAll('#flood-table tbody tr')].map(tr =>
    [...tr.cells].map(td => td.textContent)),
})"#;

fn drawn(browser: &mut Browser) -> Value {
    let text = browser.eval(DRAWN);
    serde_json::from_str(text.as_str().unwrap_or("null")).unwrap_or(Value::Null)
}

/// Polls the page's DOM until `check` accepts it, within [`DEADLINE`]; on
/// failure the message shows the last DOM seen, so a failure says what the
/// page showed instead.
fn wait_drawn<T>(
    browser: &mut Browser,
    what: &str,
    mut check: impl FnMut(&Value) -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        let d = drawn(browser);
        if let Some(v) = check(&d) {
            return v;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}; the page showed {d}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The state text of server `name` (None if not drawn).
fn server_state(d: &Value, name: &str) -> Option<String> {
    d["servers"]
        .as_array()?
        .iter()
        .find_map(|s| (s[0] == name).then(|| s[1].as_str().unwrap_or("").to_string()))
}

/// Where a screenshot is kept: `target/herd-page/NAME.png`, or
/// `NAME-asyncio.png` for the asyncio herd.
fn artifact(name: &str) -> PathBuf {
    let name = match implementation().as_str() {
        "rust" => format!("{name}.png"),
        other => format!("{name}-{other}.png"),
    };
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("herd-page").join(name)
}

#[test]
fn the_page_draws_the_herd_and_follows_a_kill_and_a_restart() {
    if !matches!(implementation().as_str(), "rust" | "asyncio") {
        eprintln!(
            "SKIPPED: the browser test: the {} counterpart serves no GET /status",
            implementation()
        );
        return;
    }
    let Some(bin) = chromium() else {
        let why = "no chromium on the PATH \
                   (Debian: apt-get install chromium; tests/run.sh installs it as root)";
        assert!(!in_ci(), "the browser test cannot run under CI=true: {why}");
        eprintln!("SKIPPED: the browser test: {why}");
        return;
    };
    let mut herd = Herd::start_with_http("page", DEFAULT_HERD);
    herd.wait_all_links_up();
    let url = format!("http://{}/", herd.http_addr("Riley"));
    let mut browser = Browser::open(&bin, &url);

    // Five servers and six links, drawn by the script, all up.
    let d = wait_drawn(&mut browser, "5 servers and 6 links up", |d| {
        let servers = d["servers"].as_array()?;
        let links = d["links"].as_array()?;
        let all_up = servers.iter().all(|s| s[1] == "up" && s[2] == "up")
            && links.iter().all(|l| l[2] == "up");
        (servers.len() == 5 && links.len() == 6 && all_up).then(|| d.clone())
    });
    let names: Vec<&str> = d["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[0].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Riley", "Jaquez", "Juzang", "Campbell", "Bernard"]);

    // An update sent to Campbell: the page shows who got it, from whom, when.
    let time = format!(
        "{:.9}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    );
    let at = herd.iamat(
        "Campbell",
        "kiwi.cs.ucla.edu",
        "+34.068930-118.445127",
        &time,
    );
    herd.wait_everywhere("kiwi.cs.ucla.edu", &at);
    let d = wait_drawn(&mut browser, "the flood path of the update", |d| {
        let rows = d["flood"].as_array()?.clone();
        (rows.len() == 5
            && rows
                .iter()
                .all(|r| r[2].as_str().unwrap_or("").ends_with("µs")))
        .then(|| d.clone())
    });
    let rows = d["flood"].as_array().unwrap();
    let campbell = rows.iter().find(|r| r[0] == "Campbell").unwrap();
    assert_eq!(
        (campbell[1].as_str(), campbell[2].as_str()),
        (Some("its client (first)"), Some("0 µs"))
    );
    // Riley is two hops from Campbell: it heard from Jaquez or Juzang.
    let riley = rows.iter().find(|r| r[0] == "Riley").unwrap();
    assert!(
        ["Jaquez", "Juzang"].contains(&riley[1].as_str().unwrap()),
        "{riley}"
    );
    browser.screenshot(&artifact("herd-page-up"));

    // Kill Bernard: the page shows it down, and its three links.
    herd.kill("Bernard");
    let killed = Instant::now();
    let d = wait_drawn(&mut browser, "Bernard shown down", |d| {
        (server_state(d, "Bernard").as_deref() == Some("down")).then(|| d.clone())
    });
    eprintln!(
        "Bernard shown down {} ms after the kill",
        killed.elapsed().as_millis()
    );
    for link in d["links"].as_array().unwrap() {
        let touches = link[0] == "Bernard" || link[1] == "Bernard";
        if touches {
            assert_eq!(link[2], "down", "{link}");
        }
    }
    for name in ["Riley", "Jaquez", "Juzang", "Campbell"] {
        assert_eq!(server_state(&d, name).as_deref(), Some("up"), "{name}");
    }
    browser.screenshot(&artifact("herd-page"));

    // Restarted, it is up again.
    herd.start_named("Bernard");
    wait_drawn(&mut browser, "Bernard shown up again", |d| {
        (server_state(d, "Bernard").as_deref() == Some("up")).then_some(())
    });
}

#[test]
fn base64_decodes() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGVsbG8h"), b"hello!");
    assert_eq!(base64_decode("aGk="), b"hi");
}
