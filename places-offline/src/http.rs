//! HTTP/1.1 for the service, sans-IO: find one complete request at the front
//! of the received bytes (httparse, `Content-Length` bodies, bounded sizes),
//! hand it to [`super::api`], and frame the response (fixed length or
//! chunked). The bytes come from and go to the TLS connection in
//! [`super::server`]. Also [`redact_key`], which keeps API keys out of the
//! request log.

use std::io::Write;

use httparse::Status;

use super::api::{Request, Response, Service};

/// Largest request head accepted (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;

/// One request taken off the front of the buffer, and its answer.
#[derive(Debug)]
pub struct Served {
    /// How many bytes of the buffer the request used.
    pub used: usize,
    /// The answer.
    pub response: Response,
    /// Whether the connection stays open afterwards.
    pub keep_alive: bool,
    /// Send the head only (a `HEAD` request).
    pub head_only: bool,
    /// The request's method, for the log (`-` when unparsable).
    pub method: String,
    /// The request target, for the log (`-` when unparsable).
    pub target: String,
}

/// What the front of the buffer holds.
#[derive(Debug)]
pub enum Outcome {
    /// Not a whole request yet.
    Partial,
    /// A request (or a bad one, answered with an error and `keep_alive: false`).
    Served(Served),
}

fn reject(buf: &[u8], status: u16, text: &str) -> Outcome {
    Outcome::Served(Served {
        used: buf.len(),
        response: Response::text(status, text),
        keep_alive: false,
        head_only: false,
        method: "-".into(),
        target: "-".into(),
    })
}

/// Parses and answers the request at the front of `buf`, if it is complete.
pub fn serve_one(buf: &[u8], service: &Service) -> Outcome {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(Status::Partial) if buf.len() <= MAX_HEAD => return Outcome::Partial,
        Ok(_) => return reject(buf, 431, "Request Header Fields Too Large"),
        Err(e) => return reject(buf, 400, &format!("Bad Request: {e}")),
    };
    let method = req.method.unwrap_or("-");
    let target = req.path.unwrap_or("-");
    // HTTP/1.1 keeps the connection by default; HTTP/1.0 closes it.
    let mut keep_alive = req.version == Some(1);
    let mut content_length: Option<usize> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let parsed = std::str::from_utf8(h.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok());
            match (parsed, content_length) {
                (Some(n), None) => content_length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return reject(buf, 400, "Bad Request: bad Content-Length"),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return reject(
                buf,
                501,
                "Not Implemented: request bodies need Content-Length",
            );
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in String::from_utf8_lossy(h.value).split(',') {
                match token.trim().to_ascii_lowercase().as_str() {
                    "close" => keep_alive = false,
                    "keep-alive" => keep_alive = true,
                    _ => {}
                }
            }
        }
    }
    let body_len = content_length.unwrap_or(0);
    if body_len > MAX_BODY {
        return reject(buf, 413, "Payload Too Large");
    }
    let used = head_len + body_len;
    if buf.len() < used {
        return Outcome::Partial;
    }
    let header_list: Vec<(&str, &[u8])> = req.headers.iter().map(|h| (h.name, h.value)).collect();
    let head_only = method == "HEAD";
    let request = Request {
        // A HEAD is answered as the GET would be, without the body.
        method: if head_only { "GET" } else { method },
        target,
        headers: &header_list,
        body: &buf[head_len..used],
    };
    let response = service.handle(&request);
    Outcome::Served(Served {
        used,
        response,
        keep_alive,
        head_only,
        method: method.to_string(),
        target: target.to_string(),
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        _ => "Unknown",
    }
}

/// How many chunks a `--chunked` body is split into, so clients must join them.
const CHUNKS: usize = 3;

/// The response's bytes on the wire.
pub fn frame(response: &Response, keep_alive: bool, chunked: bool, head_only: bool) -> Vec<u8> {
    let body = &response.body;
    // Sized once for head, body and chunk lines, so a 20-place answer
    // (about 18 kB) is copied into it once and never moved by a regrowth.
    let mut out =
        Vec::with_capacity(256 + body.len() + if chunked { 16 * (CHUNKS + 2) } else { 0 });
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nServer: places-offline\r\n",
        response.status,
        reason(response.status),
        response.content_type
    );
    if chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    } else {
        let _ = write!(out, "Content-Length: {}\r\n", body.len());
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if head_only {
        return out;
    }
    if chunked {
        let size = body.len().div_ceil(CHUNKS).max(1);
        for chunk in body.chunks(size) {
            let _ = write!(out, "{:x}\r\n", chunk.len());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        out.extend_from_slice(body);
    }
    out
}

/// The request target with every `key` parameter's value replaced by `***`,
/// so an API key never reaches the log.
pub fn redact_key(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_string();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|part| match part.split_once('=') {
            Some((name, _)) if name == "key" => format!("{name}=***"),
            _ => part.to_string(),
        })
        .collect();
    format!("{path}?{}", parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::places::Places;

    fn service() -> Service {
        Service::new(Places::parse(String::new()).unwrap())
    }

    fn served(buf: &[u8]) -> Served {
        match serve_one(buf, &service()) {
            Outcome::Served(s) => s,
            Outcome::Partial => panic!("partial"),
        }
    }

    #[test]
    fn waits_for_whole_head_and_body() {
        let s = service();
        assert!(matches!(
            serve_one(b"GET / HTTP/1.1\r\n", &s),
            Outcome::Partial
        ));
        let post = b"POST /v1/places:searchNearby HTTP/1.1\r\nContent-Length: 5\r\n\r\n{}";
        assert!(matches!(serve_one(post, &s), Outcome::Partial));
    }

    #[test]
    fn uses_exactly_one_request() {
        let one = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut two = one.to_vec();
        two.extend_from_slice(one);
        let s = served(&two);
        assert_eq!(s.used, one.len());
        assert_eq!(s.response.status, 404);
        assert!(s.keep_alive);
        assert!(!served(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(!served(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
    }

    #[test]
    fn refuses_what_it_does_not_speak() {
        let r = served(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!((r.response.status, r.keep_alive), (501, false));
        let r = served(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(r.response.status, 400);
        let r = served(b"G\x01T / HTTP/1.1\r\n\r\n");
        assert_eq!((r.response.status, r.keep_alive), (400, false));
        let mut long = b"GET /".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEAD + 1));
        assert_eq!(served(&long).response.status, 431);
    }

    #[test]
    fn frames_fixed_and_chunked_bodies() {
        let r = Response::text(200, "hello world");
        let fixed = String::from_utf8(frame(&r, true, false, false)).unwrap();
        assert!(fixed.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(
            fixed.contains("Content-Length: 12\r\n") && fixed.ends_with("\r\n\r\nhello world\n")
        );
        let chunked = String::from_utf8(frame(&r, false, true, false)).unwrap();
        assert!(chunked.contains("Transfer-Encoding: chunked\r\nConnection: close\r\n"));
        assert!(chunked.ends_with("\r\n\r\n4\r\nhell\r\n4\r\no wo\r\n4\r\nrld\n\r\n0\r\n\r\n"));
        let head = frame(&r, true, false, true);
        assert!(head.ends_with(b"Content-Length: 12\r\n\r\n"));
    }

    #[test]
    fn redacts_only_the_key() {
        assert_eq!(
            redact_key("/x/json?location=1,2&key=SECRET&radius=5"),
            "/x/json?location=1,2&key=***&radius=5"
        );
        assert_eq!(redact_key("/x/json?monkey=1"), "/x/json?monkey=1");
        assert_eq!(redact_key("/plain"), "/plain");
    }
}
