//! Reading one HTTP/1.1 request head with `httparse`, within limits.
//!
//! Pure: bytes in, a [`Parsed`] out. The endpoint is read-only, so a request
//! is only its head; anything that would need a body, or that overruns a
//! limit, is refused with the status that says why, and the connection is
//! then closed (the rest of its bytes cannot be trusted to frame anything).
//!
//! Limits (where the RFCs leave them to the server):
//! - the head, request line and headers together: at most [`MAX_HEAD`] bytes
//!   (431, or 414 when the request line alone does not fit);
//! - at most [`MAX_HEADERS`] header fields (431);
//! - GET and HEAD only (405 with `Allow`); a body, announced by a non-zero
//!   `Content-Length` or any `Transfer-Encoding`, is refused (413);
//! - HTTP/1.1 needs a `Host` (400, RFC 9112 section 3.2); HTTP/1.0 is served
//!   too, without keep-alive unless it asks for it.

/// The most bytes a request head may take, request line included.
pub const MAX_HEAD: usize = 8 * 1024;
/// The most header fields a request may have.
pub const MAX_HEADERS: usize = 32;

/// The methods served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    /// As GET, without the body.
    Head,
}

/// A request head that was read whole and is acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The path, without the query string.
    pub path: String,
    /// The connection may carry another request after this one.
    pub keep_alive: bool,
    /// How many bytes of the input the head took.
    pub head_len: usize,
}

/// A request refused: the status to answer with, then close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    /// Why, for the log and the response's text body.
    pub why: &'static str,
}

/// What the input holds so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole head yet, and still within the limits: read more.
    Partial,
    /// One whole request head; more requests may follow it in the input.
    Complete(Request),
    /// Refused: answer with this status and close.
    Refused(Refusal),
}

fn refuse(status: u16, why: &'static str) -> Parsed {
    Parsed::Refused(Refusal { status, why })
}

/// A head over the limit: 414 when the request line alone is, else 431.
fn too_big(input: &[u8]) -> Parsed {
    let line = input
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(input.len());
    if line > MAX_HEAD {
        refuse(414, "request line over 8 KiB")
    } else {
        refuse(431, "request head over 8 KiB")
    }
}

/// Reads the request head at the start of `input`.
pub fn parse(input: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(input) {
        Ok(httparse::Status::Partial) if input.len() > MAX_HEAD => return too_big(input),
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => return too_big(input),
        Ok(httparse::Status::Complete(n)) => n,
        Err(httparse::Error::TooManyHeaders) => return refuse(431, "more than 32 header fields"),
        Err(httparse::Error::Version) => return refuse(505, "not HTTP/1.x"),
        Err(_) => return refuse(400, "malformed request head"),
    };
    // httparse fills these in on Complete.
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return refuse(400, "malformed request head");
    };
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => return refuse(405, "only GET and HEAD are served"),
    };
    if !target.starts_with('/') {
        return refuse(400, "the request target is not a path");
    }
    let path = target.split(['?', '#']).next().unwrap_or("/").to_string();

    let mut keep_alive = version == 1;
    let mut has_host = false;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("host") {
            has_host = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && version == 0 {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            if value != "0" {
                return refuse(413, "request bodies are not accepted");
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return refuse(413, "request bodies are not accepted");
        }
    }
    if version == 1 && !has_host {
        return refuse(400, "HTTP/1.1 request without Host");
    }
    Parsed::Complete(Request {
        method,
        path,
        keep_alive,
        head_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(input: &[u8]) -> Request {
        match parse(input) {
            Parsed::Complete(r) => r,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    fn status(input: &[u8]) -> u16 {
        match parse(input) {
            Parsed::Refused(r) => r.status,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    #[test]
    fn a_plain_get() {
        let input = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n";
        let r = complete(input);
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.path, "/metrics");
        assert!(r.keep_alive);
        assert_eq!(r.head_len, 34);
        assert_eq!(parse(&input[r.head_len..]), Parsed::Partial);
    }

    #[test]
    fn head_query_strings_and_bare_newlines() {
        let r = complete(b"HEAD /status?x=1 HTTP/1.1\nHost: x\n\n");
        assert_eq!((r.method, r.path.as_str()), (Method::Head, "/status"));
        assert_eq!(complete(b"GET /?a#b HTTP/1.0\r\n\r\n").path, "/");
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        let ka = |input: &[u8]| complete(input).keep_alive;
        assert!(ka(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!ka(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ));
        assert!(!ka(
            b"GET / HTTP/1.1\r\nHost: x\r\nconnection: Upgrade, CLOSE\r\n\r\n"
        ));
        assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(ka(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    }

    #[test]
    fn partial_heads_wait_for_more() {
        for input in [
            &b""[..],
            b"G",
            b"GET / HTTP/1.1\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n",
        ] {
            assert_eq!(parse(input), Parsed::Partial, "{input:?}");
        }
    }

    #[test]
    fn limits() {
        let mut long_line = b"GET /".to_vec();
        long_line.resize(MAX_HEAD + 1, b'a');
        assert_eq!(status(&long_line), 414);
        long_line.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(status(&long_line), 414);
        let mut long_head = b"GET / HTTP/1.1\r\nHost: x\r\nX: ".to_vec();
        long_head.resize(MAX_HEAD + 1, b'a');
        assert_eq!(status(&long_head), 431);
        // A whole head just over the limit, in one read.
        let mut whole = b"GET / HTTP/1.1\r\nHost: x\r\nX: ".to_vec();
        whole.resize(MAX_HEAD, b'a');
        whole.extend_from_slice(b"\r\n\r\n");
        assert_eq!(status(&whole), 431);
        let mut many = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(status(&many), 431);
    }

    #[test]
    fn refusals() {
        assert_eq!(status(b"POST / HTTP/1.1\r\nHost: x\r\n\r\n"), 405);
        assert_eq!(status(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"), 405);
        assert_eq!(status(b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n"), 405);
        assert_eq!(status(b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n"), 505);
        assert_eq!(status(b"GET / FTP/1.1\r\n\r\n"), 505);
        assert_eq!(status(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), 400);
        assert_eq!(status(b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"),
            413
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"),
            413
        );
        assert!(complete(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").keep_alive);
    }
}
