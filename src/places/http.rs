//! HTTP/1.1 for the Places client, sans-IO: request bytes out, response bytes in.
//!
//! This module owns the Places endpoint URL ([`Endpoint`]), the request bytes
//! for either Places API ([`build_request`]), the log line that describes a
//! request without its key ([`describe_request`]), and an incremental response
//! parser ([`ResponseReader`]) that accepts bytes split anywhere. It never
//! touches a socket or a clock: the TLS transport and the Places request state
//! machine in the event loop feed it bytes and own connecting, timeouts and
//! retries. What a response body means is [`super::reply`]'s business.

use std::fmt;
use std::net::Ipv6Addr;

/// Google's legacy Nearby Search endpoint, the default `--places-url`.
pub const LEGACY_URL: &str = "https://maps.googleapis.com/maps/api/place/nearbysearch/json";
/// Places API (New) Nearby Search endpoint.
pub const NEW_URL: &str = "https://places.googleapis.com/v1/places:searchNearby";
/// The fields asked of Places API (New): exactly those the legacy shape needs.
pub const FIELD_MASK: &str = "places.id,places.displayName,places.location,places.types,\
places.businessStatus,places.rating,places.userRatingCount,places.shortFormattedAddress,\
places.formattedAddress";
/// The `User-Agent` header value.
pub const USER_AGENT: &str = concat!("proxy-herd/", env!("CARGO_PKG_VERSION"));
/// Largest response head (status line and headers) accepted, and largest trailer section.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields accepted in one response head.
pub const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (size and extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// Which Places API an endpoint speaks (`--places-api legacy|new`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// Nearby Search (legacy): `GET ...?location=..&radius=..&key=..`.
    Legacy,
    /// Places API (New): `POST .../v1/places:searchNearby` with a JSON body.
    New,
}

impl Api {
    /// Parses the `--places-api` value: `legacy` or `new`.
    pub fn parse(text: &str) -> Result<Api, String> {
        match text {
            "legacy" => Ok(Api::Legacy),
            "new" => Ok(Api::New),
            _ => Err(format!(
                "unknown Places API {:?}: expected legacy or new",
                text
            )),
        }
    }

    /// Google's endpoint for this API, used when no `--places-url` is given.
    pub fn default_url(self) -> &'static str {
        match self {
            Api::Legacy => LEGACY_URL,
            Api::New => NEW_URL,
        }
    }
}

/// Where Places lives: an `https://` URL taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// A name, an IPv4 address, or an IPv6 address without brackets.
    pub host: String,
    /// TCP port, 443 unless the URL says otherwise.
    pub port: u16,
    /// Absolute path, `/` when the URL has none.
    pub path: String,
    /// The URL's own query without `?`, possibly empty; request parameters are appended.
    pub query: String,
}

impl Endpoint {
    /// Parses an `https://host[:port][/path][?query]` URL; any other scheme is an error.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let err = |why: &str| Err(format!("bad Places URL {:?}: {}", url, why));
        let Some((scheme, rest)) = url.split_once("://") else {
            return err("expected https://host/path");
        };
        if !scheme.eq_ignore_ascii_case("https") {
            // Never plain HTTP: the key travels in every request.
            return err("only https:// is supported");
        }
        // The fragment is never sent to a server.
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_query) = rest.split_at(split);
        if authority.contains('@') {
            return err("user information in the URL is not supported");
        }
        let (host, port) = match split_authority(authority) {
            Ok(hp) => hp,
            Err(why) => return err(&why),
        };
        let (path, query) = match path_query.split_once('?') {
            Some((p, q)) => (p, q),
            None => (path_query, ""),
        };
        // These bytes go into the request line verbatim: nothing that could
        // end it or the line (space, CR, LF) may pass.
        if !path.bytes().chain(query.bytes()).all(is_visible_ascii) {
            return err("the path and query must be printable ASCII without spaces (percent-encode the rest)");
        }
        Ok(Endpoint {
            host,
            port,
            path: if path.is_empty() {
                "/".into()
            } else {
                path.into()
            },
            query: query.into(),
        })
    }

    /// The `Host` header value: IPv6 in brackets, `:port` unless 443.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 443 {
            host
        } else {
            format!("{}:{}", host, self.port)
        }
    }
}

fn split_authority(authority: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let Some((v6, after)) = inner.split_once(']') else {
            return Err("unclosed [ in the host".into());
        };
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err("bad IPv6 address".into());
        }
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(p) => Some(p),
                None => return Err("unexpected text after ]".into()),
            },
        };
        (v6, port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    if !authority.starts_with('[')
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        return Err("the host must be a name, an IPv4 address or [IPv6]".into());
    }
    let port = match port {
        None => 443,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => match p.parse() {
            Ok(0) | Err(_) => return Err("port out of range".into()),
            Ok(n) => n,
        },
        Some(_) => return Err("bad port".into()),
    };
    Ok((host.to_string(), port))
}

fn is_visible_ascii(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

/// Checks an API key can be sent as given (non-empty printable ASCII); the error never quotes it.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        Err("PLACES_API_KEY is empty".into())
    } else if !key.bytes().all(is_visible_ascii) {
        Err("PLACES_API_KEY holds spaces, control or non-ASCII characters".into())
    } else {
        Ok(())
    }
}

/// What the herd asks Places for: texts exactly as the client sent them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NearbyQuery<'a> {
    /// Latitude as sent, e.g. `+34.068930`.
    pub lat: &'a str,
    /// Longitude as sent, e.g. `-118.445127`.
    pub lon: &'a str,
    /// Radius in metres, e.g. `10000` or `1234.5`.
    pub radius_m: &'a str,
    /// At most this many places (1 to 20).
    pub bound: u8,
}

/// The complete request (head and, for [`Api::New`], body) to write to the connection.
pub fn build_request(api: Api, ep: &Endpoint, key: &str, q: &NearbyQuery) -> Vec<u8> {
    let mut head = String::new();
    match api {
        Api::Legacy => {
            let target = legacy_target(ep, q, &percent_encode(key));
            head.push_str(&format!("GET {} HTTP/1.1\r\n", target));
            push_common_headers(&mut head, ep);
            head.push_str("\r\n");
            head.into_bytes()
        }
        Api::New => {
            let body = new_body(q);
            head.push_str(&format!("POST {} HTTP/1.1\r\n", new_target(ep)));
            push_common_headers(&mut head, ep);
            head.push_str("Content-Type: application/json\r\n");
            // A header value cannot carry CR, LF or other controls; `check_key`
            // rejects such keys up front, this only keeps the head well formed.
            let safe_key: String = key.chars().filter(|c| c.is_ascii_graphic()).collect();
            head.push_str(&format!("X-Goog-Api-Key: {}\r\n", safe_key));
            head.push_str(&format!("X-Goog-FieldMask: {}\r\n", FIELD_MASK));
            head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(body.as_bytes());
            bytes
        }
    }
}

/// The request for the log: method and URL (and the New API's body), the key shown as `***`.
pub fn describe_request(api: Api, ep: &Endpoint, q: &NearbyQuery) -> String {
    match api {
        Api::Legacy => format!(
            "GET https://{}{}",
            ep.authority(),
            redact_key_params(&legacy_target(ep, q, "***"))
        ),
        Api::New => format!(
            "POST https://{}{} {}",
            ep.authority(),
            redact_key_params(&new_target(ep)),
            new_body(q)
        ),
    }
}

fn push_common_headers(head: &mut String, ep: &Endpoint) {
    head.push_str(&format!("Host: {}\r\n", ep.authority()));
    head.push_str(&format!("User-Agent: {}\r\n", USER_AGENT));
    head.push_str("Accept: application/json\r\n");
    head.push_str("Connection: keep-alive\r\n");
}

/// `path?query&location=LAT,LNG&radius=M&key=KEY`, with `key_text` already encoded.
fn legacy_target(ep: &Endpoint, q: &NearbyQuery, key_text: &str) -> String {
    let mut target = format!("{}?", ep.path);
    if !ep.query.is_empty() {
        target.push_str(&ep.query);
        if !ep.query.ends_with('&') {
            target.push('&');
        }
    }
    // Google wants `location=34.068930,-118.445127`: no `+`, and the comma
    // left bare as in its documentation.
    target.push_str(&format!(
        "location={},{}&radius={}&key={}",
        percent_encode(strip_plus(q.lat)),
        percent_encode(strip_plus(q.lon)),
        percent_encode(strip_plus(q.radius_m)),
        key_text
    ));
    target
}

fn new_target(ep: &Endpoint) -> String {
    if ep.query.is_empty() {
        ep.path.clone()
    } else {
        format!("{}?{}", ep.path, ep.query)
    }
}

fn new_body(q: &NearbyQuery) -> String {
    format!(
        "{{\"maxResultCount\":{},\"locationRestriction\":{{\"circle\":{{\"center\":\
         {{\"latitude\":{},\"longitude\":{}}},\"radius\":{}}}}}}}",
        q.bound,
        json_number(q.lat),
        json_number(q.lon),
        json_number(q.radius_m)
    )
}

fn strip_plus(text: &str) -> &str {
    text.strip_prefix('+').unwrap_or(text)
}

/// A number's text as JSON accepts it: no `+`, no leading zeros (`+034.5` ->
/// `34.5`). Text that is still no JSON number goes as a JSON string, so the
/// body stays well formed and Places rejects it visibly.
fn json_number(text: &str) -> String {
    let t = strip_plus(text);
    let (sign, digits) = match t.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", t),
    };
    let int_len = digits.bytes().take_while(u8::is_ascii_digit).count();
    let zeros = digits[..int_len]
        .bytes()
        .take_while(|&b| b == b'0')
        .count()
        .min(int_len.saturating_sub(1));
    let candidate = format!("{}{}", sign, &digits[zeros..]);
    if serde_json::from_str::<serde_json::Number>(&candidate).is_ok() {
        candidate
    } else {
        serde_json::Value::String(text.to_string()).to_string()
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{:02X}", b));
        }
    }
    out
}

/// Replaces the value of any `key=` parameter with `***`: a key written into
/// `--places-url` must not reach the log either.
fn redact_key_params(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_string();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, _)) if name.eq_ignore_ascii_case("key") => format!("{}=***", name),
            _ => param.to_string(),
        })
        .collect();
    format!("{}?{}", path, params.join("&"))
}

/// A complete response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The final (non-1xx) status code.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// Whether the connection may carry another request.
    pub keep_alive: bool,
}

/// Why a response could not be read; the connection must then be closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// The status line or headers do not parse.
    BadHead(String),
    /// The head (or the trailer section) exceeds [`MAX_HEAD`] bytes.
    HeadTooLarge(usize),
    /// The body's framing is missing, conflicting or unsupported.
    BadFraming(String),
    /// A chunk of a chunked body is malformed.
    BadChunk(String),
    /// The body exceeds the reader's limit.
    BodyTooLarge(usize),
    /// The server closed before the response was complete (where it stopped).
    Eof(&'static str),
    /// Bytes or EOF given after the response was complete or failed.
    AfterEnd,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            HttpError::BadHead(why) => write!(f, "bad response head: {}", why),
            HttpError::HeadTooLarge(limit) => {
                write!(f, "response head larger than {} bytes", limit)
            }
            HttpError::BadFraming(why) => write!(f, "bad response framing: {}", why),
            HttpError::BadChunk(why) => write!(f, "bad chunk: {}", why),
            HttpError::BodyTooLarge(limit) => {
                write!(f, "response body larger than {} bytes", limit)
            }
            HttpError::Eof(during) => write!(f, "connection closed {}", during),
            HttpError::AfterEnd => write!(f, "response already complete"),
        }
    }
}

impl std::error::Error for HttpError {}

/// What [`ResponseReader::feed`] made of the bytes so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// The response is not complete yet.
    NeedMore,
    /// The response is complete.
    Done(Response),
}

/// How the body's end is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// `Content-Length`: this many bytes still to come.
    Length(u64),
    /// `Transfer-Encoding: chunked`, in this part of the chunk syntax.
    Chunked(ChunkState),
    /// Neither: the body ends when the server closes.
    Close,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    /// Reading a `size[;ext]` line.
    Size,
    /// Inside a chunk's data, this many bytes still to come.
    Data(u64),
    /// After a chunk's data, expecting its CRLF.
    DataEnd,
    /// After the last chunk, reading trailer lines: `seen` bytes so far.
    Trailers { seen: usize, line: TrailerLine },
}

/// Where in a trailer line the reader is: the section ends at an empty line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TrailerLine {
    Start,
    /// A lone CR so far: the line is still empty if LF follows.
    Cr,
    Text,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadState {
    /// Waiting for a complete head; `scanned` bytes of the buffer hold no end of head.
    Head { scanned: usize },
    /// Reading the body of a response with this status.
    Body {
        status: u16,
        keep_alive: bool,
        framing: Framing,
    },
    /// The response was returned, or reading failed: nothing more is accepted.
    Finished,
}

/// Incremental parser for one response: bytes may arrive split anywhere.
#[derive(Debug)]
pub struct ResponseReader {
    max_body: usize,
    state: ReadState,
    /// Received bytes not yet consumed (a partial head, chunk line or trailer).
    buf: Vec<u8>,
    body: Vec<u8>,
    started: bool,
}

impl ResponseReader {
    /// A reader for one response whose body may hold at most `max_body` bytes.
    pub fn new(max_body: usize) -> Self {
        ResponseReader {
            max_body,
            state: ReadState::Head { scanned: 0 },
            buf: Vec::new(),
            body: Vec::new(),
            started: false,
        }
    }

    /// Whether any byte has arrived (if not, a closed keep-alive connection may be retried).
    pub fn started(&self) -> bool {
        self.started
    }

    /// Takes the next bytes from the connection.
    pub fn feed(&mut self, data: &[u8]) -> Result<Progress, HttpError> {
        if self.state == ReadState::Finished {
            return Err(HttpError::AfterEnd);
        }
        self.started |= !data.is_empty();
        self.buf.extend_from_slice(data);
        let result = self.advance();
        if result.is_err() {
            self.state = ReadState::Finished;
        }
        result
    }

    /// The server closed the connection: completes a close-delimited body, else an error.
    pub fn eof(&mut self) -> Result<Response, HttpError> {
        let state = std::mem::replace(&mut self.state, ReadState::Finished);
        match state {
            ReadState::Head { .. } if !self.started => Err(HttpError::Eof("before the response")),
            ReadState::Head { .. } => Err(HttpError::Eof("in the response head")),
            ReadState::Body {
                status,
                framing: Framing::Close,
                ..
            } => Ok(Response {
                status,
                body: std::mem::take(&mut self.body),
                keep_alive: false,
            }),
            ReadState::Body { .. } => Err(HttpError::Eof("in the response body")),
            ReadState::Finished => Err(HttpError::AfterEnd),
        }
    }

    /// Consumes as much of `buf` as the state allows.
    fn advance(&mut self) -> Result<Progress, HttpError> {
        // Taken out so body bytes can be read from it while `self` changes.
        let mut buf = std::mem::take(&mut self.buf);
        let mut pos = 0;
        let progress = loop {
            match self.state {
                ReadState::Head { scanned } => match self.parse_head(&buf, scanned)? {
                    None => break Progress::NeedMore,
                    // Heads are parsed from the start of `buf`, so `pos` is 0 here.
                    Some(used) => {
                        buf.drain(..used);
                    }
                },
                ReadState::Body {
                    status,
                    keep_alive,
                    framing,
                } => {
                    let (next, used) = self.read_body(framing, &buf[pos..])?;
                    pos += used;
                    let Some(framing) = next else {
                        // Bytes after the response were never asked for: the
                        // connection's state is unknown, so it is not reused.
                        let extra = pos < buf.len();
                        self.state = ReadState::Finished;
                        return Ok(Progress::Done(Response {
                            status,
                            body: std::mem::take(&mut self.body),
                            keep_alive: keep_alive && !extra,
                        }));
                    };
                    self.state = ReadState::Body {
                        status,
                        keep_alive,
                        framing,
                    };
                    if pos == buf.len() || used == 0 {
                        break Progress::NeedMore;
                    }
                }
                ReadState::Finished => return Err(HttpError::AfterEnd),
            }
        };
        buf.drain(..pos);
        self.buf = buf;
        Ok(progress)
    }

    /// Parses a head if `buf` holds a complete one; returns the bytes it used.
    fn parse_head(&mut self, buf: &[u8], scanned: usize) -> Result<Option<usize>, HttpError> {
        // Look for the blank line only in new bytes, so a head fed byte by
        // byte costs linear time, not quadratic.
        let Some(end) = find_head_end(buf, scanned) else {
            if buf.len() > MAX_HEAD {
                return Err(HttpError::HeadTooLarge(MAX_HEAD));
            }
            self.state = ReadState::Head { scanned: buf.len() };
            return Ok(None);
        };
        if end > MAX_HEAD {
            return Err(HttpError::HeadTooLarge(MAX_HEAD));
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let used = match resp.parse(&buf[..end]) {
            Ok(httparse::Status::Complete(used)) => used,
            Ok(httparse::Status::Partial) => {
                return Err(HttpError::BadHead("incomplete head".into()))
            }
            Err(e) => return Err(HttpError::BadHead(e.to_string())),
        };
        let status = resp.code.unwrap_or(0);
        let version = resp.version.unwrap_or(0);
        if !(100..=599).contains(&status) {
            return Err(HttpError::BadHead(format!(
                "status {status} is not an HTTP status"
            )));
        }
        if status == 101 {
            return Err(HttpError::BadHead(
                "unexpected 101 Switching Protocols".into(),
            ));
        }
        if (100..200).contains(&status) {
            // An interim response (100 Continue, 103 Early Hints): the real
            // one follows on the same connection.
            self.state = ReadState::Head { scanned: 0 };
            return Ok(Some(used));
        }
        let framing = body_framing(status, version, resp.headers, self.max_body)?;
        let keep_alive = version == 1
            && framing != Framing::Close
            && !header_has_token(resp.headers, "connection", "close");
        self.state = ReadState::Body {
            status,
            keep_alive,
            framing,
        };
        Ok(Some(used))
    }

    /// Reads body bytes from `input` in state `framing`; returns the next
    /// framing state (`None` when the body is complete) and the bytes used.
    fn read_body(
        &mut self,
        framing: Framing,
        input: &[u8],
    ) -> Result<(Option<Framing>, usize), HttpError> {
        match framing {
            Framing::Length(0) => Ok((None, 0)),
            Framing::Length(remaining) => {
                let n = take_len(remaining, input.len());
                self.push_body(&input[..n])?;
                let left = remaining - n as u64;
                Ok((
                    if left == 0 {
                        None
                    } else {
                        Some(Framing::Length(left))
                    },
                    n,
                ))
            }
            Framing::Close => {
                self.push_body(input)?;
                Ok((Some(Framing::Close), input.len()))
            }
            Framing::Chunked(chunk) => {
                let (next, used) = self.read_chunked(chunk, input)?;
                Ok((next.map(Framing::Chunked), used))
            }
        }
    }

    fn read_chunked(
        &mut self,
        chunk: ChunkState,
        input: &[u8],
    ) -> Result<(Option<ChunkState>, usize), HttpError> {
        match chunk {
            ChunkState::Size => {
                let Some(nl) = input.iter().position(|&b| b == b'\n') else {
                    if input.len() > MAX_CHUNK_LINE {
                        return Err(HttpError::BadChunk("chunk-size line too long".into()));
                    }
                    return Ok((Some(ChunkState::Size), 0));
                };
                if nl > MAX_CHUNK_LINE {
                    return Err(HttpError::BadChunk("chunk-size line too long".into()));
                }
                let size = parse_chunk_size(&input[..nl])?;
                if size == 0 {
                    return Ok((
                        Some(ChunkState::Trailers {
                            seen: 0,
                            line: TrailerLine::Start,
                        }),
                        nl + 1,
                    ));
                }
                if size > (self.max_body - self.body.len()) as u64 {
                    return Err(HttpError::BodyTooLarge(self.max_body));
                }
                Ok((Some(ChunkState::Data(size)), nl + 1))
            }
            ChunkState::Data(remaining) => {
                let n = take_len(remaining, input.len());
                self.push_body(&input[..n])?;
                let left = remaining - n as u64;
                let next = if left == 0 {
                    ChunkState::DataEnd
                } else {
                    ChunkState::Data(left)
                };
                Ok((Some(next), n))
            }
            ChunkState::DataEnd => match input {
                [] | [b'\r'] => Ok((Some(ChunkState::DataEnd), 0)),
                [b'\n', ..] => Ok((Some(ChunkState::Size), 1)),
                [b'\r', b'\n', ..] => Ok((Some(ChunkState::Size), 2)),
                _ => Err(HttpError::BadChunk("no CRLF after chunk data".into())),
            },
            ChunkState::Trailers { seen, line } => {
                // Trailer fields carry nothing Places needs: they are consumed
                // as they come (so a long one costs linear time) and dropped.
                let mut line = line;
                for (i, &b) in input.iter().enumerate() {
                    line = match (line, b) {
                        (TrailerLine::Start | TrailerLine::Cr, b'\n') => return Ok((None, i + 1)),
                        (TrailerLine::Start, b'\r') => TrailerLine::Cr,
                        (_, b'\n') => TrailerLine::Start,
                        _ => TrailerLine::Text,
                    };
                    if seen + i + 1 > MAX_HEAD {
                        return Err(HttpError::HeadTooLarge(MAX_HEAD));
                    }
                }
                let seen = seen + input.len();
                Ok((Some(ChunkState::Trailers { seen, line }), input.len()))
            }
        }
    }

    fn push_body(&mut self, bytes: &[u8]) -> Result<(), HttpError> {
        if bytes.len() > self.max_body - self.body.len() {
            return Err(HttpError::BodyTooLarge(self.max_body));
        }
        self.body.extend_from_slice(bytes);
        Ok(())
    }
}

fn take_len(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

/// Index just past the blank line ending a head (`\n\n` or `\n\r\n`), if any,
/// looking only from a few bytes before `scanned`.
fn find_head_end(buf: &[u8], scanned: usize) -> Option<usize> {
    let start = scanned.saturating_sub(2);
    (start..buf.len()).find_map(|i| {
        if buf[i] != b'\n' {
            return None;
        }
        let before = &buf[..i];
        if before.ends_with(b"\n") || before.ends_with(b"\n\r") {
            Some(i + 1)
        } else {
            None
        }
    })
}

/// Decides how the body ends (RFC 9112 section 6.3), refusing ambiguity.
fn body_framing(
    status: u16,
    version: u8,
    headers: &[httparse::Header],
    max_body: usize,
) -> Result<Framing, HttpError> {
    if status == 204 || status == 304 {
        // No body by definition, whatever the headers say.
        return Ok(Framing::Length(0));
    }
    if let Some(coding) = header_values(headers, "content-encoding")
        .flat_map(list_items)
        .find(|c| !c.eq_ignore_ascii_case(b"identity"))
    {
        // We never send Accept-Encoding, so a compressed body is a server bug
        // that would otherwise surface as "body is not JSON".
        return Err(HttpError::BadFraming(format!(
            "unsupported Content-Encoding {}",
            shown(coding)
        )));
    }
    let codings: Vec<&[u8]> = header_values(headers, "transfer-encoding")
        .flat_map(list_items)
        .collect();
    let lengths: Vec<&[u8]> = header_values(headers, "content-length")
        .flat_map(list_items)
        .collect();
    let has_length_header = header_values(headers, "content-length").next().is_some();
    let has_te_header = header_values(headers, "transfer-encoding").next().is_some();
    if has_te_header {
        if has_length_header {
            // The classic request-smuggling ambiguity: refuse it.
            return Err(HttpError::BadFraming(
                "both Content-Length and Transfer-Encoding".into(),
            ));
        }
        if version == 0 {
            return Err(HttpError::BadFraming(
                "Transfer-Encoding in an HTTP/1.0 response".into(),
            ));
        }
        return match codings.as_slice() {
            [only] if only.eq_ignore_ascii_case(b"chunked") => {
                Ok(Framing::Chunked(ChunkState::Size))
            }
            _ => Err(HttpError::BadFraming(format!(
                "unsupported Transfer-Encoding {}",
                codings
                    .iter()
                    .map(|c| shown(c))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        };
    }
    if has_length_header {
        let Some((first, rest)) = lengths.split_first() else {
            return Err(HttpError::BadFraming("empty Content-Length".into()));
        };
        // Repeated identical values are allowed (RFC 9110 8.6); different ones are not.
        if rest.iter().any(|other| other != first) {
            return Err(HttpError::BadFraming(
                "conflicting Content-Length values".into(),
            ));
        }
        let length = parse_decimal(first)
            .ok_or_else(|| HttpError::BadFraming(format!("bad Content-Length {}", shown(first))))?;
        if length > max_body as u64 {
            return Err(HttpError::BodyTooLarge(max_body));
        }
        return Ok(Framing::Length(length));
    }
    Ok(Framing::Close)
}

fn header_values<'h>(
    headers: &'h [httparse::Header<'h>],
    name: &'h str,
) -> impl Iterator<Item = &'h [u8]> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// The non-empty, trimmed items of a comma-separated header value.
fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|item| item.trim_ascii())
        .filter(|item| !item.is_empty())
}

fn header_has_token(headers: &[httparse::Header], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .flat_map(|h| list_items(h.value))
        .any(|item| item.eq_ignore_ascii_case(token.as_bytes()))
}

fn parse_decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    text.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// `size [; extensions]` (line without its LF) to the chunk size.
fn parse_chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(HttpError::BadChunk("no chunk size".into()));
    }
    let rest = line[digits..].trim_ascii_start();
    if !(rest.is_empty() || rest.starts_with(b";")) {
        return Err(HttpError::BadChunk("bad chunk size".into()));
    }
    line[..digits]
        .iter()
        .try_fold(0u64, |n, &d| {
            let v = (d as char).to_digit(16)?;
            n.checked_mul(16)?.checked_add(u64::from(v))
        })
        .ok_or_else(|| HttpError::BadChunk("chunk size too large".into()))
}

/// Server-sent bytes made safe for a one-line log message.
fn shown(bytes: &[u8]) -> String {
    let limit = bytes.len().min(40);
    format!("\"{}\"", bytes[..limit].escape_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::places::TestRng;

    #[test]
    fn statuses_outside_100_to_599_are_refused() {
        for head in [
            "HTTP/1.1 020 OK\r\n\r\n",
            "HTTP/1.1 600 No\r\nContent-Length: 0\r\n\r\n",
        ] {
            let mut r = ResponseReader::new(1024);
            assert!(r.feed(head.as_bytes()).is_err(), "{head}");
        }
    }

    const UCLA: NearbyQuery = NearbyQuery {
        lat: "+34.068930",
        lon: "-118.445127",
        radius_m: "10000",
        bound: 5,
    };

    fn ep(url: &str) -> Endpoint {
        Endpoint::parse(url).expect("test URL parses")
    }

    // ---- Endpoint ----

    #[test]
    fn parses_google_urls() {
        assert_eq!(
            ep(LEGACY_URL),
            Endpoint {
                host: "maps.googleapis.com".into(),
                port: 443,
                path: "/maps/api/place/nearbysearch/json".into(),
                query: "".into(),
            }
        );
        let new = ep(NEW_URL);
        assert_eq!(new.path, "/v1/places:searchNearby");
        assert_eq!(new.authority(), "places.googleapis.com");
    }

    #[test]
    fn parses_ports_queries_and_ipv6() {
        let e = ep("HTTPS://127.0.0.1:8443/nearby?language=fr&x=1#frag");
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 8443));
        assert_eq!(
            (e.path.as_str(), e.query.as_str()),
            ("/nearby", "language=fr&x=1")
        );
        assert_eq!(e.authority(), "127.0.0.1:8443");

        let e = ep("https://[::1]:9000");
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("::1", 9000, "/")
        );
        assert_eq!(e.authority(), "[::1]:9000");
        assert_eq!(ep("https://[2001:db8::5]/p").authority(), "[2001:db8::5]");

        let e = ep("https://localhost?q=1");
        assert_eq!((e.path.as_str(), e.query.as_str()), ("/", "q=1"));
    }

    #[test]
    fn rejects_bad_urls() {
        for url in [
            "http://maps.googleapis.com/x",
            "ftp://host/",
            "maps.googleapis.com/x",
            "https://",
            "https:///path",
            "https://host:/x",
            "https://host:0/x",
            "https://host:65536/x",
            "https://host:12a/x",
            "https://user:pw@host/x",
            "https://::1/x",
            "https://[::1/x",
            "https://[nothex]/x",
            "https://[::1]x/",
            "https://host/a b",
            "https://host/a\r\nX-Evil: 1",
            "https://ho st/",
            "https://host/caf\u{e9}",
        ] {
            assert!(Endpoint::parse(url).is_err(), "{url} should be rejected");
        }
    }

    #[test]
    fn api_names() {
        assert_eq!(Api::parse("legacy"), Ok(Api::Legacy));
        assert_eq!(Api::parse("new"), Ok(Api::New));
        assert!(Api::parse("New").is_err());
        assert_eq!(Api::New.default_url(), NEW_URL);
    }

    #[test]
    fn key_check_never_quotes_the_key() {
        assert!(check_key("AIzaSyA-abc_123").is_ok());
        assert!(check_key("").is_err());
        let err = check_key("secret\r\nkey").unwrap_err();
        assert!(!err.contains("secret"));
    }

    // ---- requests ----

    #[test]
    fn legacy_request_bytes() {
        let req = build_request(Api::Legacy, &ep(LEGACY_URL), "AIza/k+y&=", &UCLA);
        let expected = format!(
            "GET /maps/api/place/nearbysearch/json?location=34.068930,-118.445127&radius=10000\
             &key=AIza%2Fk%2By%26%3D HTTP/1.1\r\n\
             Host: maps.googleapis.com\r\n\
             User-Agent: proxy-herd/{}\r\n\
             Accept: application/json\r\n\
             Connection: keep-alive\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(String::from_utf8(req).unwrap(), expected);
    }

    #[test]
    fn legacy_request_keeps_the_url_query_and_port() {
        let q = NearbyQuery {
            lat: "-33.8670522",
            lon: "+151.1957362",
            radius_m: "1234.5",
            bound: 20,
        };
        let req = build_request(
            Api::Legacy,
            &ep("https://[::1]:8443/nearby?language=fr"),
            "k",
            &q,
        );
        let text = String::from_utf8(req).unwrap();
        assert!(text.starts_with(
            "GET /nearby?language=fr&location=-33.8670522,151.1957362&radius=1234.5&key=k HTTP/1.1\r\n\
             Host: [::1]:8443\r\n"
        ));
    }

    #[test]
    fn new_request_bytes() {
        let req = build_request(Api::New, &ep(NEW_URL), "AIzaKEY", &UCLA);
        let text = String::from_utf8(req).unwrap();
        let body = "{\"maxResultCount\":5,\"locationRestriction\":{\"circle\":{\"center\":\
                    {\"latitude\":34.068930,\"longitude\":-118.445127},\"radius\":10000}}}";
        let expected = format!(
            "POST /v1/places:searchNearby HTTP/1.1\r\n\
             Host: places.googleapis.com\r\n\
             User-Agent: proxy-herd/{}\r\n\
             Accept: application/json\r\n\
             Connection: keep-alive\r\n\
             Content-Type: application/json\r\n\
             X-Goog-Api-Key: AIzaKEY\r\n\
             X-Goog-FieldMask: places.id,places.displayName,places.location,places.types,\
             places.businessStatus,places.rating,places.userRatingCount,\
             places.shortFormattedAddress,places.formattedAddress\r\n\
             Content-Length: {}\r\n\r\n{}",
            env!("CARGO_PKG_VERSION"),
            body.len(),
            body
        );
        assert_eq!(text, expected);
        let parsed: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(parsed["maxResultCount"], 5);
    }

    #[test]
    fn new_request_body_is_always_valid_json() {
        let q = NearbyQuery {
            lat: "+034.5",
            lon: "-000.25",
            radius_m: "1234.5",
            bound: 1,
        };
        let req = build_request(Api::New, &ep(NEW_URL), "bad\r\nkey", &q);
        let text = String::from_utf8(req).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("X-Goog-Api-Key: badkey\r\n"));
        assert!(body.contains("\"latitude\":34.5,\"longitude\":-0.25},\"radius\":1234.5"));

        let odd = NearbyQuery { lat: "12\"}", ..q };
        let text = String::from_utf8(build_request(Api::New, &ep(NEW_URL), "k", &odd)).unwrap();
        let body = text.split_once("\r\n\r\n").unwrap().1;
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            v["locationRestriction"]["circle"]["center"]["latitude"],
            "12\"}"
        );
    }

    #[test]
    fn descriptions_hide_the_key() {
        let legacy = describe_request(Api::Legacy, &ep(LEGACY_URL), &UCLA);
        assert_eq!(
            legacy,
            "GET https://maps.googleapis.com/maps/api/place/nearbysearch/json\
             ?location=34.068930,-118.445127&radius=10000&key=***"
        );
        let with_key = ep("https://localhost:8443/x?key=SECRET&lang=en");
        let d = describe_request(Api::Legacy, &with_key, &UCLA);
        assert!(!d.contains("SECRET"), "{d}");
        assert!(d.starts_with("GET https://localhost:8443/x?key=***&lang=en&location="));
        let d = describe_request(Api::New, &with_key, &UCLA);
        assert!(!d.contains("SECRET"), "{d}");
        let new = describe_request(Api::New, &ep(NEW_URL), &UCLA);
        assert!(new.starts_with(
            "POST https://places.googleapis.com/v1/places:searchNearby {\"maxResultCount\":5,"
        ));
    }

    // ---- responses ----

    /// Feeds all at once and byte by byte; both must agree.
    fn read_all(input: &[u8], max_body: usize) -> Result<Progress, HttpError> {
        let mut whole = ResponseReader::new(max_body);
        let at_once = whole.feed(input);
        let mut single = ResponseReader::new(max_body);
        let mut by_byte = Ok(Progress::NeedMore);
        for b in input {
            by_byte = single.feed(std::slice::from_ref(b));
            if !matches!(by_byte, Ok(Progress::NeedMore)) {
                break;
            }
        }
        assert_eq!(at_once, by_byte, "split feeding changed the result");
        at_once
    }

    fn done(input: &str) -> Response {
        match read_all(input.as_bytes(), 1 << 20) {
            Ok(Progress::Done(r)) => r,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    fn failed(input: &str, max_body: usize) -> HttpError {
        match read_all(input.as_bytes(), max_body) {
            Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn content_length_body() {
        let r = done("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"a\":\"b c\"}");
        assert_eq!(
            r,
            Response {
                status: 200,
                body: b"{\"a\":\"b c\"}".to_vec(),
                keep_alive: true
            }
        );
        let r = done("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!((r.body.len(), r.keep_alive), (0, true));
        // Repeated identical lengths are fine.
        let r = done("HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\ncontent-length: 2\r\n\r\nok");
        assert_eq!(r.body, b"ok");
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let r = done(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
             4;name=value\r\n{\"a\"\r\n\
             A \r\n:[1,2,3,4]\r\n\
             1\n}\n\
             0;last\r\nX-Trailer: yes\r\nAnother: one\r\n\r\n",
        );
        assert_eq!(r.body, b"{\"a\":[1,2,3,4]}");
        assert!(r.keep_alive);
        let r = done("HTTP/1.1 404 Not Found\r\ntransfer-encoding: Chunked\r\n\r\n0\r\n\r\n");
        assert_eq!((r.status, r.body.len()), (404, 0));
    }

    #[test]
    fn close_delimited_body_ends_at_eof() {
        let mut reader = ResponseReader::new(100);
        assert_eq!(
            reader.feed(b"HTTP/1.1 200 OK\r\n\r\nhello "),
            Ok(Progress::NeedMore)
        );
        assert_eq!(reader.feed(b"world"), Ok(Progress::NeedMore));
        assert_eq!(
            reader.eof(),
            Ok(Response {
                status: 200,
                body: b"hello world".to_vec(),
                keep_alive: false
            })
        );
        assert_eq!(reader.eof(), Err(HttpError::AfterEnd));
        assert_eq!(reader.feed(b"x"), Err(HttpError::AfterEnd));
    }

    #[test]
    fn interim_responses_are_skipped() {
        let r = done(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
             HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        );
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hi"[..]));
        assert!(matches!(
            failed("HTTP/1.1 101 Switching Protocols\r\n\r\n", 10),
            HttpError::BadHead(_)
        ));
    }

    #[test]
    fn keep_alive_rules() {
        assert!(!done("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx").keep_alive);
        assert!(
            !done("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx")
                .keep_alive
        );
        assert!(
            !done("HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\nContent-Length: 1\r\n\r\nx")
                .keep_alive
        );
        assert!(
            done("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx")
                .keep_alive
        );
        // Bytes nobody asked for after the response: do not reuse the connection.
        let mut r = ResponseReader::new(10);
        match r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1") {
            Ok(Progress::Done(resp)) => assert!(!resp.keep_alive),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_body_statuses() {
        let r = done("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n");
        assert_eq!((r.status, r.body.len(), r.keep_alive), (204, 0, true));
        assert_eq!(done("HTTP/1.1 304 Not Modified\r\n\r\n").status, 304);
    }

    #[test]
    fn lf_only_line_endings_are_accepted() {
        let r = done("HTTP/1.1 200 OK\nContent-Length: 2\n\nok");
        assert_eq!(r.body, b"ok");
    }

    #[test]
    fn framing_errors() {
        for input in [
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\n",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 1\r\n\r\nx",
        ] {
            let e = failed(input, 1000);
            assert!(
                matches!(e, HttpError::BadFraming(_)),
                "{input:?} gave {e:?}"
            );
        }
    }

    #[test]
    fn chunk_errors() {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        for chunks in [
            "x\r\n",
            "\r\n",
            "-1\r\n",
            "4 4\r\n",
            "0x4\r\n",
            "11111111111111111\r\n",
            "2\r\nabXY",
            "2\r\nab\rX",
        ] {
            let e = failed(&format!("{head}{chunks}"), 1 << 20);
            assert!(matches!(e, HttpError::BadChunk(_)), "{chunks:?} gave {e:?}");
        }
        let long_line = format!("{head}1;{}", "e".repeat(MAX_CHUNK_LINE + 10));
        assert!(matches!(
            failed(&long_line, 1 << 20),
            HttpError::BadChunk(_)
        ));
    }

    #[test]
    fn bodies_are_bounded() {
        let e = failed("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n", 10);
        assert_eq!(e, HttpError::BodyTooLarge(10));
        let e = failed(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n3\r\n",
            10,
        );
        assert_eq!(e, HttpError::BodyTooLarge(10));
        let e = failed("HTTP/1.1 200 OK\r\n\r\n12345678901", 10);
        assert_eq!(e, HttpError::BodyTooLarge(10));
        // Exactly at the limit is fine.
        assert_eq!(
            done("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc").body,
            b"abc"
        );
    }

    #[test]
    fn heads_are_bounded() {
        let big = format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(failed(&big, 10), HttpError::HeadTooLarge(MAX_HEAD));
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        let e = failed(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"), 10);
        assert!(matches!(e, HttpError::BadHead(_)), "{e:?}");
        let trailers = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: {}\r\n",
            "t".repeat(MAX_HEAD)
        );
        assert_eq!(failed(&trailers, 10), HttpError::HeadTooLarge(MAX_HEAD));
    }

    #[test]
    fn bad_heads() {
        for input in [
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "SSH-2.0-OpenSSH_9.6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
            "\u{0}\u{1}\u{2}\n\n",
        ] {
            let e = failed(input, 10);
            assert!(matches!(e, HttpError::BadHead(_)), "{input:?} gave {e:?}");
        }
    }

    #[test]
    fn eof_cases_and_started() {
        let mut r = ResponseReader::new(10);
        assert!(!r.started());
        assert_eq!(r.feed(b""), Ok(Progress::NeedMore));
        assert!(!r.started());
        assert_eq!(r.eof(), Err(HttpError::Eof("before the response")));

        let mut r = ResponseReader::new(10);
        r.feed(b"HTTP/1.1 20").unwrap();
        assert!(r.started());
        assert_eq!(r.eof(), Err(HttpError::Eof("in the response head")));

        let mut r = ResponseReader::new(10);
        r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc")
            .unwrap();
        assert_eq!(r.eof(), Err(HttpError::Eof("in the response body")));

        let mut r = ResponseReader::new(10);
        r.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n")
            .unwrap();
        assert_eq!(r.eof(), Err(HttpError::Eof("in the response body")));
    }

    #[test]
    fn errors_display_on_one_line() {
        for e in [
            HttpError::BadHead("invalid token".into()),
            HttpError::HeadTooLarge(MAX_HEAD),
            HttpError::BadFraming("x".into()),
            HttpError::BadChunk("y".into()),
            HttpError::BodyTooLarge(1),
            HttpError::Eof("in the response body"),
            HttpError::AfterEnd,
        ] {
            let text = e.to_string();
            assert!(!text.is_empty() && !text.contains('\n'), "{text:?}");
        }
        let e = failed("HTTP/1.1 200 OK\r\nTransfer-Encoding: x\x7f\"\r\n\r\n", 10);
        assert!(!e.to_string().contains('\x7f'));
    }

    #[test]
    fn garbage_never_panics() {
        let seeds: [&[u8]; 4] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n",
            b"HTTP/1.0 503 Service Unavailable\r\n\r\n<html>",
            b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n",
        ];
        let alphabet = b"HTTP/1.0 2345\r\n:;,-chunkedContent-LengthTransfer-Encoding\x00\xff";
        let mut rng = TestRng(0x9E37_79B9_7F4A_7C15);
        let (mut completed, mut refused) = (0, 0);
        for round in 0..20_000 {
            let mut input: Vec<u8> = if round % 2 == 0 {
                // Mutate a valid response.
                let mut v = seeds[rng.below(seeds.len())].to_vec();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(v.len() + 1);
                    match rng.below(3) {
                        0 if at < v.len() => v[at] = rng.next() as u8,
                        1 if at < v.len() => {
                            v.remove(at);
                        }
                        _ => v.insert(at, alphabet[rng.below(alphabet.len())]),
                    }
                }
                v
            } else {
                // Pure noise, biased towards HTTP-looking bytes.
                (0..rng.below(200))
                    .map(|_| {
                        if rng.below(2) == 0 {
                            alphabet[rng.below(alphabet.len())]
                        } else {
                            rng.next() as u8
                        }
                    })
                    .collect()
            };
            if rng.below(4) == 0 {
                input.splice(0..0, b"HTTP/1.1 200 OK\r\n".iter().copied());
            }
            let mut reader = ResponseReader::new(64);
            let mut rest = input.as_slice();
            while !rest.is_empty() {
                let n = 1 + rng.below(rest.len());
                let (now, later) = rest.split_at(n);
                rest = later;
                match reader.feed(now) {
                    Ok(Progress::NeedMore) => {}
                    Ok(Progress::Done(_)) => completed += 1,
                    Err(_) => {
                        refused += 1;
                        break;
                    }
                }
            }
            let _ = reader.eof();
            let _ = reader.feed(b"more");
        }
        // Both paths were exercised, not just the first parse error.
        assert!(completed > 100 && refused > 100, "{completed} {refused}");
    }
}
