//! The HTTP endpoint's request side: `http::request::parse` and
//! `HttpProtocol`, fed bytes split at fuzzer-chosen points.
//!
//! Input layout: byte 0's low four bits are how many split sizes follow
//! (0 to 15); then the sizes, one byte each (0 feeds an empty slice), used in
//! turn, round and round; the rest is what the client sends, then EOF.
//!
//! Whatever arrives: every response is one whole HTTP/1.1 response whose
//! `Content-Length` is its body's length (none after a HEAD); a refusal is a
//! 4xx/5xx with `Connection: close` followed by `Close`; nothing is written
//! after `Close`; and `parse` on the whole input agrees with itself (a
//! complete head's length is within the input and the head limit).

#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use proxy_herd::http::request::{self, Parsed, MAX_HEAD};
use proxy_herd::http::{HttpAction, HttpProtocol, Resource, Site};

struct FakeSite;

impl Site for FakeSite {
    fn render(&self, resource: Resource, out: &mut Vec<u8>) {
        out.extend_from_slice(match resource {
            Resource::Metrics => b"proxy_herd_up 1\n".as_slice(),
            Resource::Status => b"{}".as_slice(),
        });
    }
}

/// Checks one written response: head, Content-Length, body.
fn check_response(bytes: &[u8], status: u16) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head)) = resp.parse(bytes) else {
        panic!("not a whole response: {:?}", String::from_utf8_lossy(bytes));
    };
    assert_eq!(resp.code, Some(status));
    let length: usize = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
        .expect("a Content-Length");
    let body = bytes.len() - head;
    assert!(
        body == length || body == 0,
        "{body} bytes of body, {length} announced"
    );
    if status >= 400 && status != 404 {
        let close = resp
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("connection") && h.value == b"close");
        assert!(close, "an error response without Connection: close");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(first & 0x0f).min(rest.len());
    let (sizes, input) = rest.split_at(count);

    if let Parsed::Complete(req) = request::parse(input) {
        assert!(req.head_len <= input.len() && req.head_len <= MAX_HEAD);
        assert!(req.path.starts_with('/'));
    }

    let t0 = Instant::now();
    let (mut protocol, _) = HttpProtocol::connection_made(t0);
    let mut closed = false;
    let check = |actions: Vec<HttpAction>, closed: &mut bool| {
        for action in actions {
            assert!(!*closed, "an action after Close: {action:?}");
            match action {
                HttpAction::Write { bytes, status } => check_response(&bytes, status),
                HttpAction::Close(_) => *closed = true,
                HttpAction::CallLater(d) => assert!(d <= Duration::from_secs(30)),
            }
        }
    };
    let mut at = 0;
    let mut i = 0;
    while at < input.len() {
        let size = if sizes.is_empty() {
            input.len()
        } else {
            usize::from(sizes[i % sizes.len()])
        };
        i += 1;
        let end = (at + size).min(input.len());
        let now = t0 + Duration::from_millis(i as u64);
        let actions = protocol.data_received(&input[at..end], now, &FakeSite);
        check(actions, &mut closed);
        at = end;
        if i > 4 * input.len() + 16 {
            break; // only empty slices left to feed
        }
    }
    let actions = protocol.timer_fired(t0 + Duration::from_secs(60));
    check(actions, &mut closed);
    let actions = protocol.eof_received();
    check(actions, &mut closed);
});
