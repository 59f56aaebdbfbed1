//! Writing HTTP/1.1 responses: the status line, the headers every response
//! carries, and the body unless the request was HEAD. Pure.
//!
//! Every response has `Content-Length` (so keep-alive works without chunking),
//! `Date` (RFC 9110 asks it of an origin server with a clock),
//! `Cache-Control: no-store` (every resource but the page changes each
//! second) and `Connection: keep-alive` or `close`.

use std::time::{SystemTime, UNIX_EPOCH};

/// `text/html` for the page.
pub const HTML: &str = "text/html; charset=utf-8";
/// The Prometheus text exposition format, version 0.0.4.
pub const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";
/// `/status`.
pub const JSON: &str = "application/json";
/// Error bodies.
pub const TEXT: &str = "text/plain; charset=utf-8";

/// One response to write.
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    pub status: u16,
    pub content_type: &'a str,
    pub body: &'a [u8],
    /// HEAD: the headers as for GET, no body.
    pub head_only: bool,
    pub keep_alive: bool,
    /// `Access-Control-Allow-Origin: *`, so a page from another server may read it.
    pub cors: bool,
}

/// The reason phrase of the statuses this server sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Appends the whole response to `out`, dated `now`.
pub fn write(out: &mut Vec<u8>, r: &Response, now: SystemTime) {
    use std::io::Write;
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nDate: ",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    write_http_date(out, now);
    out.extend_from_slice(b"\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n");
    if r.cors {
        out.extend_from_slice(b"Access-Control-Allow-Origin: *\r\n");
    }
    if r.status == 405 {
        out.extend_from_slice(b"Allow: GET, HEAD\r\n");
    }
    out.extend_from_slice(if r.keep_alive {
        b"Connection: keep-alive\r\n\r\n"
    } else {
        b"Connection: close\r\n\r\n"
    });
    if !r.head_only {
        out.extend_from_slice(r.body);
    }
}

/// An error response: the status, a one-line text body, then close.
pub fn write_error(out: &mut Vec<u8>, status: u16, why: &str, head_only: bool, now: SystemTime) {
    let body = format!("{status} {}: {why}\n", reason(status));
    write(
        out,
        &Response {
            status,
            content_type: TEXT,
            body: body.as_bytes(),
            head_only,
            keep_alive: false,
            cors: false,
        },
        now,
    );
}

/// IMF-fixdate (RFC 9110 section 5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn write_http_date(out: &mut Vec<u8>, now: SystemTime) {
    use std::io::Write;
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = crate::log::civil_from_days(days);
    let _ = write!(
        out,
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(m as usize).clamp(1, 12) - 1],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn text(out: &[u8]) -> &str {
        std::str::from_utf8(out).unwrap()
    }

    #[test]
    fn dates() {
        let mut out = Vec::new();
        write_http_date(&mut out, at(784_111_777));
        assert_eq!(text(&out), "Sun, 06 Nov 1994 08:49:37 GMT");
        out.clear();
        write_http_date(&mut out, at(0));
        assert_eq!(text(&out), "Thu, 01 Jan 1970 00:00:00 GMT");
        out.clear();
        write_http_date(&mut out, at(1_709_164_800));
        assert_eq!(text(&out), "Thu, 29 Feb 2024 00:00:00 GMT");
    }

    #[test]
    fn a_json_response_with_cors() {
        let mut out = Vec::new();
        let r = Response {
            status: 200,
            content_type: JSON,
            body: b"{}",
            head_only: false,
            keep_alive: true,
            cors: true,
        };
        write(&mut out, &r, at(0));
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
             Date: Thu, 01 Jan 1970 00:00:00 GMT\r\nCache-Control: no-store\r\n\
             X-Content-Type-Options: nosniff\r\nAccess-Control-Allow-Origin: *\r\n\
             Connection: keep-alive\r\n\r\n{}"
        );
        out.clear();
        write(
            &mut out,
            &Response {
                head_only: true,
                ..r
            },
            at(0),
        );
        assert!(text(&out).contains("Content-Length: 2\r\n"));
        assert!(text(&out).ends_with("\r\n\r\n"));
    }

    #[test]
    fn errors_close_and_405_says_what_is_allowed() {
        let mut out = Vec::new();
        write_error(&mut out, 405, "only GET and HEAD are served", false, at(0));
        let t = text(&out);
        assert!(t.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{t}");
        assert!(t.contains("\r\nAllow: GET, HEAD\r\n"));
        assert!(t.contains("\r\nConnection: close\r\n\r\n"));
        assert!(t.ends_with("405 Method Not Allowed: only GET and HEAD are served\n"));
        assert!(!t.contains("Access-Control"));
    }
}
