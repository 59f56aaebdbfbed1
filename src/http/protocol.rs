//! [`HttpProtocol`]: one HTTP connection as a sans-IO protocol object, with
//! asyncio's names (`connection_made`, `data_received`, `eof_received`,
//! `connection_lost`). It is handed bytes and the time, and returns
//! [`HttpAction`]s; the loop owns the socket and the timer queue
//! (`src/event_loop/http.rs`). The resources that change (`/metrics`,
//! `/status`) are rendered by the loop through [`Site`]; the page is static.
//!
//! Timeouts (one deadline at a time, re-armed through [`HttpAction::CallLater`]):
//! - a request head must arrive whole within [`HEAD_TIMEOUT`] of its first
//!   byte, or the answer is 408 and the connection closes (a slow sender
//!   holds one slot for seconds, never the loop);
//! - a keep-alive connection with no request for [`KEEP_ALIVE`] is closed.
//!
//! Each request is answered in the turn it completes, with bounded work:
//! the page is a constant, `/metrics` and `/status` are a few KiB. A client
//! that pipelines more than [`MAX_PIPELINED`] requests in one read is closed
//! after the first ones are answered; the loop also bounds what a client may
//! leave unread.

use std::time::{Duration, Instant, SystemTime};

use super::request::{self, Method, Parsed};
use super::response::{self, Response};
use super::PAGE;

/// A request head must be complete this long after its first byte.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle keep-alive connection is closed after this long.
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// At most this many requests are answered from one read.
pub const MAX_PIPELINED: usize = 16;

/// Something the loop renders on request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `GET /metrics`: Prometheus text.
    Metrics,
    /// `GET /status`: JSON.
    Status,
}

/// The loop's side: renders a resource into `out`.
pub trait Site {
    fn render(&self, resource: Resource, out: &mut Vec<u8>);
}

/// What the protocol asks the loop to do.
#[derive(Debug, PartialEq, Eq)]
pub enum HttpAction {
    /// Send one whole response (`status` is for the metrics).
    Write { bytes: Vec<u8>, status: u16 },
    /// Read no more; close once what was written has been sent.
    Close(&'static str),
    /// Call [`HttpProtocol::timer_fired`] this much later.
    CallLater(Duration),
}

/// One HTTP connection's protocol state.
#[derive(Debug)]
pub struct HttpProtocol {
    /// Bytes of requests not yet answered (bounded by the head limit).
    buf: Vec<u8>,
    /// When the first byte of the request in `buf` arrived.
    request_started: Option<Instant>,
    /// When the connection was made or the last request answered.
    last_active: Instant,
    /// The earliest time a timer is set for, if one is.
    armed: Option<Instant>,
    closing: bool,
}

impl HttpProtocol {
    /// asyncio's `connection_made`: the keep-alive clock starts.
    pub fn connection_made(now: Instant) -> (HttpProtocol, Vec<HttpAction>) {
        let protocol = HttpProtocol {
            buf: Vec::new(),
            request_started: None,
            last_active: now,
            armed: Some(now + KEEP_ALIVE),
            closing: false,
        };
        (protocol, vec![HttpAction::CallLater(KEEP_ALIVE)])
    }

    /// When the connection times out if nothing more happens.
    pub fn deadline(&self) -> Instant {
        match self.request_started {
            Some(started) => started + HEAD_TIMEOUT,
            None => self.last_active + KEEP_ALIVE,
        }
    }

    /// True once the protocol has asked to close.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// asyncio's `data_received`: answers every whole request in `data`.
    pub fn data_received(&mut self, data: &[u8], now: Instant, site: &dyn Site) -> Vec<HttpAction> {
        let mut actions = Vec::new();
        if self.closing {
            return actions;
        }
        self.buf.extend_from_slice(data);
        let mut answered = 0;
        while !self.buf.is_empty() {
            if answered == MAX_PIPELINED {
                return self.close(actions, "too many pipelined requests");
            }
            self.request_started.get_or_insert(now);
            match request::parse(&self.buf) {
                Parsed::Partial => break,
                Parsed::Refused(r) => {
                    let mut bytes = Vec::new();
                    response::write_error(&mut bytes, r.status, r.why, false, SystemTime::now());
                    actions.push(HttpAction::Write {
                        bytes,
                        status: r.status,
                    });
                    return self.close(actions, r.why);
                }
                Parsed::Complete(req) => {
                    self.buf.drain(..req.head_len);
                    self.request_started = None;
                    self.last_active = now;
                    answered += 1;
                    actions.push(respond(&req, site));
                    if !req.keep_alive {
                        return self.close(actions, "done (no keep-alive)");
                    }
                }
            }
        }
        if self.buf.is_empty() {
            self.request_started = None;
            if self.buf.capacity() > 2 * request::MAX_HEAD {
                self.buf = Vec::new();
            }
        }
        self.arm(now, &mut actions);
        actions
    }

    /// asyncio's `eof_received`: the client will send nothing more; what it
    /// was owed is still sent.
    pub fn eof_received(&mut self) -> Vec<HttpAction> {
        if self.closing {
            return Vec::new();
        }
        let why = if self.buf.is_empty() {
            "closed by the client"
        } else {
            "closed by the client mid-request"
        };
        self.close(Vec::new(), why)
    }

    /// A timer set by [`HttpAction::CallLater`] came due.
    pub fn timer_fired(&mut self, now: Instant) -> Vec<HttpAction> {
        let mut actions = Vec::new();
        if self.closing {
            return actions;
        }
        if self.armed.is_some_and(|a| a <= now) {
            self.armed = None;
        }
        if now < self.deadline() {
            self.arm(now, &mut actions);
            return actions;
        }
        if self.request_started.is_some() {
            let why = "request head not complete in 5 s";
            let mut bytes = Vec::new();
            response::write_error(&mut bytes, 408, why, false, SystemTime::now());
            actions.push(HttpAction::Write { bytes, status: 408 });
            self.close(actions, why)
        } else {
            self.close(actions, "idle keep-alive connection")
        }
    }

    /// asyncio's `connection_lost`: nothing is held outside this object.
    pub fn connection_lost(&mut self) {
        self.closing = true;
        self.buf = Vec::new();
    }

    /// Sets a timer for the deadline unless one is set for no later.
    fn arm(&mut self, now: Instant, actions: &mut Vec<HttpAction>) {
        let deadline = self.deadline();
        if self.armed.is_none_or(|a| a > deadline) {
            self.armed = Some(deadline);
            actions.push(HttpAction::CallLater(
                deadline.saturating_duration_since(now),
            ));
        }
    }

    fn close(&mut self, mut actions: Vec<HttpAction>, why: &'static str) -> Vec<HttpAction> {
        self.closing = true;
        self.buf = Vec::new();
        actions.push(HttpAction::Close(why));
        actions
    }
}

/// The response to one acceptable request.
fn respond(req: &request::Request, site: &dyn Site) -> HttpAction {
    let mut body = Vec::new();
    let (status, content_type, cors) = match req.path.as_str() {
        "/" | "/index.html" => (200, response::HTML, false),
        "/metrics" => {
            site.render(Resource::Metrics, &mut body);
            (200, response::PROMETHEUS, false)
        }
        "/status" => {
            site.render(Resource::Status, &mut body);
            (200, response::JSON, true)
        }
        _ => {
            body.extend_from_slice(b"404 Not Found: try /, /metrics or /status\n");
            (404, response::TEXT, false)
        }
    };
    let body: &[u8] = if content_type == response::HTML {
        PAGE.as_bytes()
    } else {
        &body
    };
    let mut bytes = Vec::with_capacity(body.len() + 256);
    response::write(
        &mut bytes,
        &Response {
            status,
            content_type,
            body,
            head_only: req.method == Method::Head,
            keep_alive: req.keep_alive,
            cors,
        },
        SystemTime::now(),
    );
    HttpAction::Write { bytes, status }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders fixed bodies, as the loop would render live ones.
    struct FakeSite;

    impl Site for FakeSite {
        fn render(&self, resource: Resource, out: &mut Vec<u8>) {
            out.extend_from_slice(match resource {
                Resource::Metrics => b"proxy_herd_up 1\n".as_slice(),
                Resource::Status => b"{\"server\":\"Riley\"}".as_slice(),
            });
        }
    }

    const GET_METRICS: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";

    /// The responses written, as text, and everything else.
    fn split(actions: Vec<HttpAction>) -> (Vec<String>, Vec<HttpAction>) {
        let mut written = Vec::new();
        let mut rest = Vec::new();
        for a in actions {
            match a {
                HttpAction::Write { bytes, .. } => written.push(String::from_utf8(bytes).unwrap()),
                other => rest.push(other),
            }
        }
        (written, rest)
    }

    fn start() -> (HttpProtocol, Instant) {
        let t0 = Instant::now();
        let (p, actions) = HttpProtocol::connection_made(t0);
        assert_eq!(actions, [HttpAction::CallLater(KEEP_ALIVE)]);
        (p, t0)
    }

    #[test]
    fn metrics_status_page_and_404_on_one_connection() {
        let (mut p, t0) = start();
        let (w, rest) = split(p.data_received(GET_METRICS, t0, &FakeSite));
        assert!(rest.is_empty(), "{rest:?}");
        assert!(w[0].starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(w[0].contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        assert!(w[0].contains("Connection: keep-alive\r\n"));
        assert!(w[0].ends_with("\r\n\r\nproxy_herd_up 1\n"));
        assert!(!w[0].contains("Access-Control-Allow-Origin"));

        let (w, _) = split(p.data_received(
            b"GET /status HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
            t0,
            &FakeSite,
        ));
        assert_eq!(w.len(), 3);
        assert!(w[0].contains("Content-Type: application/json\r\n"));
        assert!(w[0].contains("Access-Control-Allow-Origin: *\r\n"));
        assert!(w[0].ends_with("{\"server\":\"Riley\"}"));
        assert!(w[1].contains("Content-Type: text/html; charset=utf-8\r\n"));
        assert!(w[1].contains(&format!("Content-Length: {}\r\n", PAGE.len())));
        assert!(w[1].ends_with("</html>\n"));
        assert!(w[2].starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(w[2].contains("Connection: keep-alive\r\n"));
        assert!(!p.is_closing());
    }

    #[test]
    fn head_has_the_length_but_no_body() {
        let (mut p, t0) = start();
        let (w, _) = split(p.data_received(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", t0, &FakeSite));
        assert!(w[0].contains(&format!("Content-Length: {}\r\n", PAGE.len())));
        assert!(w[0].ends_with("\r\n\r\n"));
    }

    #[test]
    fn a_request_in_pieces() {
        let (mut p, t0) = start();
        for (i, byte) in GET_METRICS.iter().enumerate() {
            let now = t0 + Duration::from_millis(i as u64);
            let (w, _) = split(p.data_received(&[*byte], now, &FakeSite));
            assert_eq!(w.len(), usize::from(i == GET_METRICS.len() - 1));
        }
    }

    #[test]
    fn connection_close_and_http_1_0_close_after_the_answer() {
        let (mut p, t0) = start();
        let (w, rest) = split(p.data_received(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n",
            t0,
            &FakeSite,
        ));
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("Connection: close\r\n"));
        assert_eq!(rest, [HttpAction::Close("done (no keep-alive)")]);
        assert!(p.is_closing());
        assert!(p.data_received(GET_METRICS, t0, &FakeSite).is_empty());
        let (mut p, t0) = start();
        let (w, rest) = split(p.data_received(b"GET / HTTP/1.0\r\n\r\n", t0, &FakeSite));
        assert_eq!((w.len(), rest.len()), (1, 1));
    }

    #[test]
    fn refusals_answer_then_close() {
        for (input, status) in [
            (
                &b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"[..],
                "405",
            ),
            (b"GET / HTTP/1.1\r\n\r\n", "400"),
            (b"\x16\x03\x01\x00", "400"),
        ] {
            let (mut p, t0) = start();
            let (w, rest) = split(p.data_received(input, t0, &FakeSite));
            assert!(w[0].starts_with(&format!("HTTP/1.1 {status} ")), "{}", w[0]);
            assert!(w[0].contains("Connection: close\r\n"));
            assert!(matches!(rest[..], [HttpAction::Close(_)]), "{rest:?}");
        }
    }

    #[test]
    fn an_endless_head_is_refused_at_the_limit() {
        let (mut p, t0) = start();
        let (w, _) = split(p.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n", t0, &FakeSite));
        assert!(w.is_empty());
        let chunk = [b'a'; 1000];
        let mut answered = Vec::new();
        for _ in 0..20 {
            let (w, rest) = split(p.data_received(&chunk, t0, &FakeSite));
            answered.extend(w);
            if !rest.is_empty() {
                assert!(matches!(rest[..], [HttpAction::Close(_)]));
                break;
            }
        }
        assert_eq!(answered.len(), 1);
        assert!(answered[0].starts_with("HTTP/1.1 431 "));
    }

    #[test]
    fn too_many_pipelined_requests() {
        let (mut p, t0) = start();
        let many = GET_METRICS.repeat(MAX_PIPELINED + 1);
        let (w, rest) = split(p.data_received(&many, t0, &FakeSite));
        assert_eq!(w.len(), MAX_PIPELINED);
        assert_eq!(rest, [HttpAction::Close("too many pipelined requests")]);
    }

    #[test]
    fn a_slow_head_gets_408_at_its_deadline() {
        let (mut p, t0) = start();
        let t1 = t0 + Duration::from_secs(10);
        // The first byte of a request arms the earlier head deadline.
        let actions = p.data_received(b"GET / HTTP/1.1\r\n", t1, &FakeSite);
        assert_eq!(actions, [HttpAction::CallLater(HEAD_TIMEOUT)]);
        assert_eq!(p.deadline(), t1 + HEAD_TIMEOUT);
        // More bytes do not arm another timer.
        assert!(p
            .data_received(b"Host: x\r\n", t1 + Duration::from_secs(1), &FakeSite)
            .is_empty());
        // Early: nothing, and the timer already set is enough.
        assert!(p.timer_fired(t1 + Duration::from_secs(4)).is_empty());
        let (w, rest) = split(p.timer_fired(t1 + HEAD_TIMEOUT));
        assert!(w[0].starts_with("HTTP/1.1 408 Request Timeout\r\n"));
        assert_eq!(
            rest,
            [HttpAction::Close("request head not complete in 5 s")]
        );
        // The keep-alive timer set at the start finds it closed.
        assert!(p.timer_fired(t0 + KEEP_ALIVE).is_empty());
    }

    #[test]
    fn keep_alive_idles_out_and_each_request_pushes_it_back() {
        let (mut p, t0) = start();
        let t1 = t0 + Duration::from_secs(20);
        let (_, rest) = split(p.data_received(GET_METRICS, t1, &FakeSite));
        // The timer set for t0 + 30 s is earlier than the new deadline.
        assert!(rest.is_empty());
        // It fires, finds the deadline moved, and sets one for it.
        assert_eq!(
            p.timer_fired(t0 + KEEP_ALIVE),
            [HttpAction::CallLater(Duration::from_secs(20))]
        );
        assert_eq!(
            p.timer_fired(t1 + KEEP_ALIVE),
            [HttpAction::Close("idle keep-alive connection")]
        );
    }

    #[test]
    fn eof_closes_after_what_is_owed() {
        let (mut p, t0) = start();
        let (w, _) = split(p.data_received(GET_METRICS, t0, &FakeSite));
        assert_eq!(w.len(), 1);
        assert_eq!(
            p.eof_received(),
            [HttpAction::Close("closed by the client")]
        );
        let (mut p, t0) = start();
        p.data_received(b"GET /", t0, &FakeSite);
        assert_eq!(
            p.eof_received(),
            [HttpAction::Close("closed by the client mid-request")]
        );
        p.connection_lost();
        assert!(p.eof_received().is_empty());
    }
}
