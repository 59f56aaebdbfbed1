//! The counters a server keeps about itself, and their Prometheus text
//! exposition (format 0.0.4, as `GET /metrics` serves it).
//!
//! Counting must cost next to nothing on the hot path: every counter is a
//! plain `u64` field, bumped in place (`metrics.lines_iamat += 1`); series
//! per neighbour are a `Vec` indexed by the link's number (the herd file's
//! order, as in [`crate::herd::Herd::links`]); disconnect reasons and HTTP
//! statuses are small fixed arrays. Nothing is looked up by name, allocated
//! or formatted until a scrape renders it all with [`render`].
//!
//! Names follow Prometheus's rules: a `proxy_herd_` prefix, `_total` on
//! counters, base units (`_seconds`, `_bytes`), labels for what varies
//! (`kind`, `neighbour`, `direction`, `reason`, `outcome`). Labelled counters
//! whose series are not known in advance (disconnect reasons, HTTP statuses)
//! appear once they are first counted.

use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Snapshot;
use crate::herd::actions::CloseReason;

/// Counters kept by the herd and the loop.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub lines_iamat: u64,
    pub lines_whatsat: u64,
    /// Lines answered with `? `.
    pub lines_invalid: u64,
    /// AT lines sent in answer to an IAMAT.
    pub replies_at: u64,
    /// WHATSAT answers (AT line and JSON), errors included.
    pub replies_whatsat: u64,
    pub replies_invalid: u64,
    /// WHATSATs answered at once with the error JSON, not sent to Places:
    /// the client had too many waiting already (the Places client never
    /// sees them, so they are counted here).
    pub places_refused: u64,
    /// One per neighbour, by link number.
    pub links: Vec<LinkCounters>,
    /// Connections closed, by kind and [`Reason`].
    pub disconnects: [[u64; Reason::ALL.len()]; ConnKind::ALL.len()],
    /// HTTP responses by status, in [`HTTP_STATUSES`] order.
    pub http_responses: [u64; HTTP_STATUSES.len()],
}

/// Counters for one neighbour.
#[derive(Debug, Clone, Default)]
pub struct LinkCounters {
    /// New positions sent on our link (live floods, not the catch-up).
    pub floods_sent: u64,
    /// Updates from the neighbour that were new here (and flooded on).
    pub floods_received_new: u64,
    /// Updates from the neighbour that were known already (the flood ends).
    pub floods_received_known: u64,
    /// Lines sent to the neighbour, and their bytes (`\n` included).
    pub messages_sent: u64,
    pub bytes_sent: u64,
    /// Lines received from the neighbour, on either connection, and their bytes.
    pub messages_received: u64,
    pub bytes_received: u64,
    pub catch_up_positions_sent: u64,
    pub catch_up_bytes_sent: u64,
    pub catch_up_positions_received: u64,
    pub catch_up_bytes_received: u64,
    /// Times our link to it came up.
    pub ups: u64,
}

/// The statuses the endpoint answers with, in the order they are counted.
pub const HTTP_STATUSES: [u16; 10] = [200, 400, 404, 405, 408, 413, 414, 431, 503, 505];

/// Which kind of connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    Client,
    /// A peer link, either direction.
    Peer,
    Http,
    Places,
}

impl ConnKind {
    pub const ALL: [ConnKind; 4] = [
        ConnKind::Client,
        ConnKind::Peer,
        ConnKind::Http,
        ConnKind::Places,
    ];

    fn label(self) -> &'static str {
        match self {
            ConnKind::Client => "client",
            ConnKind::Peer => "peer",
            ConnKind::Http => "http",
            ConnKind::Places => "places",
        }
    }
}

/// Why a connection closed, in a few words a dashboard can group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The other side closed (after a half-close, everything owed was sent).
    Eof,
    LineTooLong,
    /// Too much output left unread (clients, peers, HTTP).
    Backlog,
    Idle,
    /// A peer link heard nothing for the silence period.
    Silent,
    /// A dial, a greeting, a HELLO, a request head or a Places request took too long.
    Timeout,
    Refused,
    ReadError,
    WriteError,
    /// A neighbour's new link replaced its old one.
    Replaced,
    /// An HTTP request that was refused (4xx/5xx) or said `Connection: close`.
    HttpDone,
    Other,
}

impl Reason {
    pub const ALL: [Reason; 12] = [
        Reason::Eof,
        Reason::LineTooLong,
        Reason::Backlog,
        Reason::Idle,
        Reason::Silent,
        Reason::Timeout,
        Reason::Refused,
        Reason::ReadError,
        Reason::WriteError,
        Reason::Replaced,
        Reason::HttpDone,
        Reason::Other,
    ];

    fn label(self) -> &'static str {
        match self {
            Reason::Eof => "eof",
            Reason::LineTooLong => "line_too_long",
            Reason::Backlog => "backlog",
            Reason::Idle => "idle",
            Reason::Silent => "silent",
            Reason::Timeout => "timeout",
            Reason::Refused => "refused",
            Reason::ReadError => "read_error",
            Reason::WriteError => "write_error",
            Reason::Replaced => "replaced",
            Reason::HttpDone => "http_done",
            Reason::Other => "other",
        }
    }

    /// The reason behind one of the loop's closes; the free-text ones (a
    /// link's failure, a socket error, the HTTP endpoint's) by their words.
    pub fn of_close(why: &CloseReason) -> Reason {
        match why {
            CloseReason::DoneAfterEof | CloseReason::ClosedByPeer => Reason::Eof,
            CloseReason::LineTooLong => Reason::LineTooLong,
            CloseReason::RepliesUnread | CloseReason::PeerBacklog => Reason::Backlog,
            CloseReason::IdleTooLong => Reason::Idle,
            CloseReason::NoHelloInTime => Reason::Timeout,
            CloseReason::SilentTooLong => Reason::Silent,
            CloseReason::Replaced => Reason::Replaced,
            CloseReason::Refused(_) | CloseReason::RefusedByNeighbour(_) => Reason::Refused,
            CloseReason::LinkFailed(why) | CloseReason::Io(why) => Reason::of(why),
            CloseReason::Http(why) => Reason::of(why),
            CloseReason::InputBudget | CloseReason::Shutdown => Reason::Other,
        }
    }

    /// The reason behind a close message: the messages are the loop's own,
    /// so a few words of each are enough.
    pub fn of(why: &str) -> Reason {
        let has = |s: &str| why.contains(s);
        if has("EOF") || has("closed by") {
            Reason::Eof
        } else if has("64 KiB") || has("line too long") {
            Reason::LineTooLong
        } else if has("unread") || has("backlog") {
            Reason::Backlog
        } else if has("idle") {
            Reason::Idle
        } else if has("silent") {
            Reason::Silent
        } else if has("timed out") || has("in time") || has("not open after") || has("in 5 s") {
            Reason::Timeout
        } else if has("refused") || has("HELLO") || has("herd secret") {
            Reason::Refused
        } else if has("read error") {
            Reason::ReadError
        } else if has("write error") {
            Reason::WriteError
        } else if has("replaced") {
            Reason::Replaced
        } else if has("keep-alive")
            || has("pipelined")
            || has("request")
            || has("HTTP")
            || has("served")
            || has("accepted")
            || has("Host")
        {
            Reason::HttpDone
        } else {
            Reason::Other
        }
    }
}

impl Metrics {
    /// Counters for `links` neighbours.
    pub fn new(links: usize) -> Metrics {
        Metrics {
            links: vec![LinkCounters::default(); links],
            ..Metrics::default()
        }
    }

    /// A connection of `kind` closed for `why` (the loop's one close path).
    pub fn disconnect(&mut self, kind: ConnKind, why: &CloseReason) {
        let reason = Reason::of_close(why);
        let k = ConnKind::ALL.iter().position(|c| *c == kind).unwrap_or(0);
        let r = Reason::ALL.iter().position(|x| *x == reason).unwrap_or(0);
        self.disconnects[k][r] += 1;
    }

    /// The endpoint answered with `status`.
    pub fn http_response(&mut self, status: u16) {
        if let Some(i) = HTTP_STATUSES.iter().position(|s| *s == status) {
            self.http_responses[i] += 1;
        }
    }

    /// An immediate reply to a client line: an AT line, or `? ` and the line.
    pub fn reply(&mut self, bytes: &[u8]) {
        if bytes.first() == Some(&b'?') {
            self.replies_invalid += 1;
        } else {
            self.replies_at += 1;
        }
    }

    /// A new position of `len` bytes was flooded to neighbour `link`.
    pub fn flood_sent(&mut self, link: usize, len: usize) {
        if let Some(l) = self.links.get_mut(link) {
            l.floods_sent += 1;
        }
        self.peer_sent(link, len);
    }

    /// A catch-up to neighbour `link` is over: it sent `positions` in
    /// `bytes`, in `lines` lines of `all_bytes` in all (the positions, the
    /// requests and the end), which count as messages sent too.
    pub fn catch_up_sent(
        &mut self,
        link: usize,
        (positions, bytes): (u64, u64),
        (lines, all_bytes): (u64, u64),
    ) {
        if let Some(l) = self.links.get_mut(link) {
            l.catch_up_positions_sent += positions;
            l.catch_up_bytes_sent += bytes;
            l.messages_sent += lines;
            l.bytes_sent += all_bytes;
        }
    }

    /// A catch-up from neighbour `link` brought `positions` in `bytes` (its
    /// lines are counted one by one with [`peer_received`](Self::peer_received)).
    pub fn catch_up_received(&mut self, link: usize, positions: usize, bytes: usize) {
        if let Some(l) = self.links.get_mut(link) {
            l.catch_up_positions_received += positions as u64;
            l.catch_up_bytes_received += bytes as u64;
        }
    }

    /// A line of `len` bytes (without `\n`) went to neighbour `link`.
    pub fn peer_sent(&mut self, link: usize, len: usize) {
        if let Some(l) = self.links.get_mut(link) {
            l.messages_sent += 1;
            l.bytes_sent += len as u64 + 1;
        }
    }

    /// A line of `len` bytes (without `\n`) came from neighbour `link`.
    pub fn peer_received(&mut self, link: usize, len: usize) {
        if let Some(l) = self.links.get_mut(link) {
            l.messages_received += 1;
            l.bytes_received += len as u64 + 1;
        }
    }
}

/// The latency buckets' upper bounds, in seconds.
pub const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A latency histogram with fixed buckets: observing is a few comparisons.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative), the last one for `+Inf`.
    counts: [u64; BUCKETS.len() + 1],
    sum: Duration,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i] += 1;
        self.sum += d;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// The Places client's counters (kept in [`crate::places::PlacesClient`]).
#[derive(Debug, Clone, Default)]
pub struct PlacesMetrics {
    /// Answered, with results or none.
    pub ok: u64,
    /// Answered with an error (an HTTP error, a Google error status, bad JSON).
    pub error: u64,
    /// No answer in time.
    pub timeout: u64,
    /// No answer at all: connect, TLS, resolution or the connection failed.
    pub failed: u64,
    /// From the WHATSAT to its answer or failure.
    pub latency: Histogram,
}

/// Writes one metric family's `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value, escaped as the format asks (`\\`, `\"`, `\n`).
fn label(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The whole exposition, for `GET /metrics`.
pub fn render(s: &Snapshot, out: &mut String) {
    let m = s.metrics;
    let names: Vec<String> = s.links.iter().map(|l| label(l.neighbour)).collect();
    let per_link =
        |out: &mut String, name: &str, kind: &str, help: &str, f: &dyn Fn(&LinkCounters) -> u64| {
            family(out, name, kind, help);
            for (n, c) in names.iter().zip(&m.links) {
                let _ = writeln!(out, "{name}{{neighbour=\"{n}\"}} {}", f(c));
            }
        };
    let per_direction = |out: &mut String,
                         name: &str,
                         help: &str,
                         sent: &dyn Fn(&LinkCounters) -> u64,
                         received: &dyn Fn(&LinkCounters) -> u64| {
        family(out, name, "counter", help);
        for (n, c) in names.iter().zip(&m.links) {
            let _ = writeln!(
                out,
                "{name}{{neighbour=\"{n}\",direction=\"sent\"}} {}",
                sent(c)
            );
            let _ = writeln!(
                out,
                "{name}{{neighbour=\"{n}\",direction=\"received\"}} {}",
                received(c)
            );
        }
    };

    family(
        out,
        "proxy_herd_build_info",
        "gauge",
        "The server's name and version (always 1).",
    );
    let _ = writeln!(
        out,
        "proxy_herd_build_info{{server=\"{}\",version=\"{}\",implementation=\"{}\"}} 1",
        label(s.server),
        label(s.version),
        label(s.implementation)
    );
    family(
        out,
        "proxy_herd_start_time_seconds",
        "gauge",
        "When the server started, in seconds since the epoch.",
    );
    let _ = writeln!(
        out,
        "proxy_herd_start_time_seconds {:.6}",
        seconds(s.started)
    );

    family(
        out,
        "proxy_herd_lines_received_total",
        "counter",
        "Client lines received, by kind (blank lines are not counted).",
    );
    for (kind, n) in [
        ("iamat", m.lines_iamat),
        ("whatsat", m.lines_whatsat),
        ("invalid", m.lines_invalid),
    ] {
        let _ = writeln!(
            out,
            "proxy_herd_lines_received_total{{kind=\"{kind}\"}} {n}"
        );
    }
    family(
        out,
        "proxy_herd_replies_total",
        "counter",
        "Replies sent to clients, by kind (whatsat: an AT line and the Places JSON).",
    );
    for (kind, n) in [
        ("at", m.replies_at),
        ("whatsat", m.replies_whatsat),
        ("invalid", m.replies_invalid),
    ] {
        let _ = writeln!(out, "proxy_herd_replies_total{{kind=\"{kind}\"}} {n}");
    }

    per_link(
        out,
        "proxy_herd_floods_sent_total",
        "counter",
        "New positions flooded to each neighbour (the catch-up is counted apart).",
        &|c| c.floods_sent,
    );
    family(
        out,
        "proxy_herd_floods_received_total",
        "counter",
        "Updates received from each neighbour: new here (flooded on) or known (the flood ends).",
    );
    for (n, c) in names.iter().zip(&m.links) {
        let _ = writeln!(
            out,
            "proxy_herd_floods_received_total{{neighbour=\"{n}\",result=\"new\"}} {}",
            c.floods_received_new
        );
        let _ = writeln!(
            out,
            "proxy_herd_floods_received_total{{neighbour=\"{n}\",result=\"known\"}} {}",
            c.floods_received_known
        );
    }
    per_direction(
        out,
        "proxy_herd_peer_messages_total",
        "Lines exchanged with each neighbour, both connections of the link.",
        &|c| c.messages_sent,
        &|c| c.messages_received,
    );
    per_direction(
        out,
        "proxy_herd_peer_bytes_total",
        "Bytes of those lines.",
        &|c| c.bytes_sent,
        &|c| c.bytes_received,
    );
    per_direction(
        out,
        "proxy_herd_catchup_positions_total",
        "Positions sent or received in catch-ups when a link comes up.",
        &|c| c.catch_up_positions_sent,
        &|c| c.catch_up_positions_received,
    );
    per_direction(
        out,
        "proxy_herd_catchup_bytes_total",
        "Bytes of those catch-ups.",
        &|c| c.catch_up_bytes_sent,
        &|c| c.catch_up_bytes_received,
    );
    per_link(
        out,
        "proxy_herd_link_ups_total",
        "counter",
        "Times our link to each neighbour came up.",
        &|c| c.ups,
    );

    let p = s.places;
    family(
        out,
        "proxy_herd_places_requests_total",
        "counter",
        "WHATSATs' Places requests, by outcome.",
    );
    for (outcome, n) in [
        ("ok", p.ok),
        ("error", p.error),
        ("timeout", p.timeout),
        ("failed", p.failed),
        ("refused", m.places_refused),
    ] {
        let _ = writeln!(
            out,
            "proxy_herd_places_requests_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
    let h = &p.latency;
    let name = "proxy_herd_places_request_duration_seconds";
    family(
        out,
        name,
        "histogram",
        "Time from a WHATSAT to its Places answer or failure.",
    );
    let mut cumulative = 0;
    for (bound, n) in BUCKETS.iter().zip(&h.counts) {
        cumulative += n;
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count());
    let _ = writeln!(out, "{name}_sum {:.6}", h.sum.as_secs_f64());
    let _ = writeln!(out, "{name}_count {}", h.count());

    family(
        out,
        "proxy_herd_disconnects_total",
        "counter",
        "Connections closed, by kind and reason.",
    );
    for (k, kind) in ConnKind::ALL.iter().enumerate() {
        for (r, reason) in Reason::ALL.iter().enumerate() {
            let n = m.disconnects[k][r];
            if n > 0 {
                let _ = writeln!(
                    out,
                    "proxy_herd_disconnects_total{{conn=\"{}\",reason=\"{}\"}} {n}",
                    kind.label(),
                    reason.label()
                );
            }
        }
    }
    family(
        out,
        "proxy_herd_http_responses_total",
        "counter",
        "Responses of this HTTP endpoint, by status.",
    );
    for (code, n) in HTTP_STATUSES.iter().zip(&m.http_responses) {
        if *n > 0 {
            let _ = writeln!(
                out,
                "proxy_herd_http_responses_total{{code=\"{code}\"}} {n}"
            );
        }
    }

    family(
        out,
        "proxy_herd_clients_connected",
        "gauge",
        "Client connections open now.",
    );
    let _ = writeln!(out, "proxy_herd_clients_connected {}", s.clients);
    family(
        out,
        "proxy_herd_positions_stored",
        "gauge",
        "Client positions this server knows.",
    );
    let _ = writeln!(out, "proxy_herd_positions_stored {}", s.positions);
    family(
        out,
        "proxy_herd_http_connections",
        "gauge",
        "HTTP connections open now, this scrape's included.",
    );
    let _ = writeln!(out, "proxy_herd_http_connections {}", s.http_connections);
    family(
        out,
        "proxy_herd_link_state",
        "gauge",
        "Our link to each neighbour: 1 for the state it is in, 0 for the others.",
    );
    for l in &s.links {
        for state in super::LINK_STATES {
            let _ = writeln!(
                out,
                "proxy_herd_link_state{{neighbour=\"{}\",state=\"{state}\"}} {}",
                label(l.neighbour),
                u8::from(l.state == state)
            );
        }
    }
    family(
        out,
        "proxy_herd_link_incoming",
        "gauge",
        "1 when the neighbour's own link to us is up (it said HELLO), else 0.",
    );
    for l in &s.links {
        let _ = writeln!(
            out,
            "proxy_herd_link_incoming{{neighbour=\"{}\"}} {}",
            label(l.neighbour),
            u8::from(l.incoming)
        );
    }
    family(
        out,
        "proxy_herd_peer_unsent_bytes",
        "gauge",
        "Bytes queued for each neighbour that its socket has not taken yet.",
    );
    for l in &s.links {
        let _ = writeln!(
            out,
            "proxy_herd_peer_unsent_bytes{{neighbour=\"{}\"}} {}",
            label(l.neighbour),
            l.unsent_bytes
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_with_inf() {
        let mut h = Histogram::default();
        for ms in [0, 1, 3, 40, 20_000] {
            h.observe(Duration::from_millis(ms));
        }
        assert_eq!(h.count(), 5);
        assert_eq!(h.counts[0], 2); // 0 ms and exactly 1 ms: le="0.001"
        assert_eq!(h.counts[2], 1);
        assert_eq!(h.counts[BUCKETS.len()], 1); // 20 s: only +Inf
        assert_eq!(h.sum, Duration::from_millis(20_044));
    }

    #[test]
    fn reasons_of_the_loops_close_messages() {
        for (why, reason) in [
            ("done after EOF", Reason::Eof),
            ("closed by the neighbour", Reason::Eof),
            ("closed by the client", Reason::Eof),
            ("line longer than 64 KiB", Reason::LineTooLong),
            ("line too long", Reason::LineTooLong),
            ("over 1 MiB of replies left unread", Reason::Backlog),
            ("peer output backlog over its bound", Reason::Backlog),
            ("idle too long", Reason::Idle),
            ("idle keep-alive connection", Reason::Idle),
            ("silent too long", Reason::Silent),
            ("no HELLO in time", Reason::Timeout),
            ("request timed out", Reason::Timeout),
            ("not open after 5 s", Reason::Timeout),
            ("request head not complete in 5 s", Reason::Timeout),
            ("refused: not a neighbour", Reason::Refused),
            ("refused HELLO from X: not a neighbour", Reason::Refused),
            ("a second HELLO", Reason::Refused),
            ("read error: connection reset", Reason::ReadError),
            ("write error: broken pipe", Reason::WriteError),
            (
                "replaced by a new link from the same neighbour",
                Reason::Replaced,
            ),
            ("done (no keep-alive)", Reason::HttpDone),
            ("too many pipelined requests", Reason::HttpDone),
            ("only GET and HEAD are served", Reason::HttpDone),
            ("malformed request head", Reason::HttpDone),
            ("HTTP/1.1 request without Host", Reason::HttpDone),
            ("request bodies are not accepted", Reason::HttpDone),
            ("something new", Reason::Other),
        ] {
            assert_eq!(Reason::of(why), reason, "{why}");
        }
    }

    #[test]
    fn counting_by_index_ignores_unknown_links_and_statuses() {
        let mut m = Metrics::new(2);
        m.peer_sent(1, 9);
        m.peer_sent(7, 9);
        m.peer_received(0, 4);
        m.http_response(200);
        m.http_response(299);
        m.disconnect(
            ConnKind::Http,
            &CloseReason::Http("idle keep-alive connection"),
        );
        m.disconnect(ConnKind::Client, &CloseReason::DoneAfterEof);
        m.disconnect(
            ConnKind::Peer,
            &CloseReason::LinkFailed("timed out".to_string()),
        );
        assert_eq!((m.links[1].messages_sent, m.links[1].bytes_sent), (1, 10));
        assert_eq!(
            (m.links[0].messages_received, m.links[0].bytes_received),
            (1, 5)
        );
        assert_eq!(m.http_responses.iter().sum::<u64>(), 1);
        assert_eq!(m.disconnects[2][3], 1);
        assert_eq!(m.disconnects[0][0], 1);
        assert_eq!(m.disconnects[1][5], 1);
        m.reply(b"? x");
        m.reply(b"AT x");
        m.flood_sent(1, 9);
        m.catch_up_sent(1, (3, 30), (4, 40));
        m.catch_up_received(0, 2, 20);
        assert_eq!((m.replies_invalid, m.replies_at), (1, 1));
        assert_eq!(m.links[1].floods_sent, 1);
        assert_eq!(m.links[1].messages_sent, 6);
        assert_eq!(m.links[1].catch_up_bytes_sent, 30);
        assert_eq!(m.links[0].catch_up_positions_received, 2);
        assert_eq!(m.links[0].catch_up_bytes_received, 20);
    }

    fn rendered() -> String {
        let mut out = String::new();
        crate::observe::status::tests::with_snapshot(|s| render(s, &mut out));
        out
    }

    #[test]
    fn the_exposition() {
        let text = rendered();
        for line in [
            "proxy_herd_build_info{server=\"Riley\",version=\"0.1.0\",implementation=\"rust\"} 1",
            "proxy_herd_start_time_seconds 1700000000.000000",
            "proxy_herd_lines_received_total{kind=\"iamat\"} 3",
            "proxy_herd_floods_sent_total{neighbour=\"Jaquez\"} 2",
            "proxy_herd_floods_received_total{neighbour=\"Juzang\",result=\"new\"} 1",
            "proxy_herd_peer_bytes_total{neighbour=\"Jaquez\",direction=\"sent\"} 71",
            "proxy_herd_places_requests_total{outcome=\"ok\"} 1",
            "proxy_herd_places_request_duration_seconds_bucket{le=\"0.0025\"} 0",
            "proxy_herd_places_request_duration_seconds_bucket{le=\"0.005\"} 1",
            "proxy_herd_places_request_duration_seconds_bucket{le=\"+Inf\"} 1",
            "proxy_herd_places_request_duration_seconds_sum 0.003000",
            "proxy_herd_places_request_duration_seconds_count 1",
            "proxy_herd_disconnects_total{conn=\"client\",reason=\"eof\"} 1",
            "proxy_herd_http_responses_total{code=\"200\"} 1",
            "proxy_herd_clients_connected 1",
            "proxy_herd_positions_stored 2",
            "proxy_herd_link_state{neighbour=\"Juzang\",state=\"backoff\"} 1",
            "proxy_herd_link_state{neighbour=\"Juzang\",state=\"up\"} 0",
            "proxy_herd_link_incoming{neighbour=\"Jaquez\"} 1",
            "proxy_herd_peer_unsent_bytes{neighbour=\"Juzang\"} 12",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // Only counted reasons and statuses appear.
        assert!(!text.contains("reason=\"idle\""));
        assert!(!text.contains("code=\"404\""));
        // Every sample belongs to a family announced just before.
        let mut family = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap().to_string();
            } else if !line.starts_with('#') {
                assert!(line.starts_with(&family), "{line} outside {family}");
            }
        }
    }

    /// `promtool check metrics` (Debian's `prometheus` package) accepts the
    /// exposition; the black-box tests check a live server's too.
    #[test]
    fn promtool_accepts_the_exposition() {
        use std::io::Write as _;
        use std::process::{Command, Stdio};
        let Ok(mut child) = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        else {
            eprintln!("SKIPPED: promtool is not installed (apt-get install prometheus)");
            return;
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(rendered().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
