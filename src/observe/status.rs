//! The `/status` document: JSON, for the live page and for people.
//!
//! ```text
//! { "server", "version", "implementation", "started", "now", "uptime_seconds",
//!   "addresses": { "client", "peer", "http" },
//!   "herd": { "servers": [ { "name", "client", "peer", "http", "neighbours" } ],
//!             "links": [ [a, b] ] },
//!   "links": [ { "neighbour", "state", "since", "incoming", "tls", "failures",
//!                "unsent_bytes", "sent": { "messages", "bytes", "floods" },
//!                "received": { "messages", "bytes", "new", "known" } } ],
//!   "counts": { "positions", "clients", "http_connections" },
//!   "recent": [ { "client", "at", "from", "time", "time_us" } ] }
//! ```
//!
//! Times are RFC 3339 UTC with microseconds, and `time_us` is the same
//! instant in microseconds since the epoch, so that the page can subtract
//! one server's time from another's (servers on one machine share a clock).
//! `from` is `client` or the neighbour's name. Keys keep this order
//! (`serde_json` with `preserve_order`). Client IDs and AT lines are bytes;
//! they are shown as UTF-8, with anything else replaced.

//!
//! It is written straight into the response buffer, not built as a
//! `serde_json::Value` first: with `preserve_order` and `arbitrary_precision`
//! a value tree of 50 updates cost about 1.3 M instructions to build and
//! print (callgrind); writing it costs about 350 k. `serde_json` still
//! escapes every string.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{micros, Snapshot, Source};

/// A JSON object being written: commas between members.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    fn open(out: &'a mut Vec<u8>) -> Object<'a> {
        out.push(b'{');
        Object { out, first: true }
    }

    /// Writes `"name":` and returns the buffer for the value.
    fn key(&mut self, name: &str) -> &mut Vec<u8> {
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
        string(self.out, name);
        self.out.push(b':');
        self.out
    }

    fn str(&mut self, name: &str, value: &str) {
        string(self.key(name), value);
    }

    fn num(&mut self, name: &str, value: impl std::fmt::Display) {
        let _ = write!(self.key(name), "{value}");
    }

    fn bool(&mut self, name: &str, value: bool) {
        let text: &[u8] = if value { b"true" } else { b"false" };
        self.key(name).extend_from_slice(text);
    }

    fn time(&mut self, name: &str, t: SystemTime) {
        let mut text = String::with_capacity(27);
        crate::log::write_timestamp(&mut text, t);
        self.str(name, &text);
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

/// A JSON string, escaped by `serde_json`.
fn string(out: &mut Vec<u8>, value: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// Writes `[item, item, ...]`.
fn array<T>(
    out: &mut Vec<u8>,
    items: impl IntoIterator<Item = T>,
    mut each: impl FnMut(&mut Vec<u8>, T),
) {
    out.push(b'[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        each(out, item);
    }
    out.push(b']');
}

/// The document, for `GET /status`: one line of JSON.
pub fn render(s: &Snapshot, out: &mut Vec<u8>) {
    let m = s.metrics;
    let mut o = Object::open(out);
    o.str("server", s.server);
    o.str("version", s.version);
    o.str("implementation", s.implementation);
    o.time("started", s.started);
    o.time("now", s.now);
    o.num("now_us", micros(s.now));
    let uptime = s.now.duration_since(s.started).unwrap_or_default();
    o.num(
        "uptime_seconds",
        format_args!("{:.3}", uptime.as_secs_f64()),
    );

    let mut a = Object::open(o.key("addresses"));
    a.str("client", &s.client_addr);
    a.str("peer", &s.peer_addr);
    a.str("http", &s.http_addr);
    a.close();

    let mut h = Object::open(o.key("herd"));
    array(h.key("servers"), &s.herd.servers, |out, v| {
        let mut e = Object::open(out);
        e.str("name", &v.name);
        e.str("client", &v.client);
        e.str("peer", &v.peer);
        match &v.http {
            Some(http) => e.str("http", http),
            None => e.key("http").extend_from_slice(b"null"),
        }
        array(e.key("neighbours"), &v.neighbours, |out, n| string(out, n));
        e.close();
    });
    array(h.key("links"), &s.herd.links, |out, (a, b)| {
        array(out, [a, b], |out, n| string(out, n));
    });
    h.close();

    array(o.key("links"), s.links.iter().enumerate(), |out, (i, l)| {
        let c = m.links.get(i).cloned().unwrap_or_default();
        let mut e = Object::open(out);
        e.str("neighbour", l.neighbour);
        e.str("state", l.state);
        e.time("since", l.since);
        e.bool("incoming", l.incoming);
        e.bool("tls", l.tls);
        e.num("failures", l.failures);
        e.num("unsent_bytes", l.unsent_bytes);
        let mut sent = Object::open(e.key("sent"));
        sent.num("messages", c.messages_sent);
        sent.num("bytes", c.bytes_sent);
        sent.num("floods", c.floods_sent);
        sent.close();
        let mut received = Object::open(e.key("received"));
        received.num("messages", c.messages_received);
        received.num("bytes", c.bytes_received);
        received.num("new", c.floods_received_new);
        received.num("known", c.floods_received_known);
        received.close();
        e.close();
    });

    let mut c = Object::open(o.key("counts"));
    c.num("positions", s.positions);
    c.num("clients", s.clients);
    c.num("http_connections", s.http_connections);
    c.close();

    array(o.key("recent"), s.recent.iter(), |out, u| {
        let client = crate::protocol::fields(&u.at_line).nth(3).unwrap_or(b"");
        let from = match u.from {
            Source::Client => "client",
            Source::Neighbour(i) => s.links.get(i).map_or("?", |l| l.neighbour),
        };
        let mut e = Object::open(out);
        e.str("client", &String::from_utf8_lossy(client));
        e.str("at", &String::from_utf8_lossy(&u.at_line));
        e.str("from", from);
        e.time("time", UNIX_EPOCH + Duration::from_micros(u.time_us));
        e.num("time_us", u.time_us);
        e.close();
    });
    o.close();
    out.push(b'\n');
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// A snapshot of Riley in the default herd, with one update of each kind.
    pub(crate) fn with_snapshot<R>(f: impl FnOnce(&Snapshot) -> R) -> R {
        let herd = HerdView::of(&crate::herd::config::HerdConfig::default_herd());
        let mut metrics = Metrics::new(2);
        metrics.lines_iamat = 3;
        metrics.links[0].floods_sent = 2;
        metrics.peer_sent(0, 70);
        metrics.links[1].floods_received_new = 1;
        metrics.disconnect(
            ConnKind::Client,
            &crate::herd::actions::CloseReason::DoneAfterEof,
        );
        metrics.http_response(200);
        let mut places = PlacesMetrics {
            ok: 1,
            ..PlacesMetrics::default()
        };
        places.latency.observe(Duration::from_millis(3));
        let mut recent = Recent::default();
        let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        recent.push(b"AT Riley +0.1 kiwi +1+1 1", Source::Client, micros(t));
        recent.push(
            b"AT Juzang +0.1 pear +1+1 2",
            Source::Neighbour(1),
            micros(t) + 250,
        );
        let since = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let links = vec![
            LinkSnapshot {
                neighbour: "Jaquez",
                state: "up",
                since,
                incoming: true,
                tls: false,
                unsent_bytes: 0,
                failures: 0,
            },
            LinkSnapshot {
                neighbour: "Juzang",
                state: "backoff",
                since,
                incoming: false,
                tls: false,
                unsent_bytes: 12,
                failures: 3,
            },
        ];
        let snapshot = Snapshot {
            server: "Riley",
            version: "0.1.0",
            implementation: "rust",
            started: since,
            now: since + Duration::from_millis(2500),
            client_addr: "127.0.0.1:12000".into(),
            peer_addr: "127.0.0.1:22000".into(),
            http_addr: "127.0.0.1:32000".into(),
            herd: &herd,
            links,
            positions: 2,
            clients: 1,
            http_connections: 1,
            metrics: &metrics,
            places: &places,
            recent: &recent,
        };
        f(&snapshot)
    }

    #[test]
    fn the_status_document() {
        let mut out = Vec::new();
        with_snapshot(|s| super::render(s, &mut out));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["server"], "Riley");
        assert_eq!(v["uptime_seconds"], 2.5);
        assert_eq!(v["started"], "2023-11-14T22:13:20.000000Z");
        assert_eq!(v["addresses"]["http"], "127.0.0.1:32000");
        assert_eq!(v["herd"]["servers"].as_array().unwrap().len(), 5);
        assert_eq!(
            v["herd"]["links"][5],
            serde_json::json!(["Campbell", "Bernard"])
        );
        assert_eq!(v["links"][0]["state"], "up");
        assert_eq!(v["links"][0]["sent"]["bytes"], 71);
        assert_eq!(v["links"][0]["sent"]["floods"], 2);
        assert_eq!(v["links"][1]["state"], "backoff");
        assert_eq!(v["links"][1]["received"]["new"], 1);
        assert_eq!(v["counts"]["positions"], 2);
        let recent = v["recent"].as_array().unwrap();
        assert_eq!(recent[0]["client"], "pear");
        assert_eq!(recent[0]["from"], "Juzang");
        assert_eq!(recent[0]["time"], "2023-11-14T22:13:20.123706Z");
        assert_eq!(recent[1]["from"], "client");
        assert_eq!(recent[1]["time_us"], 1_700_000_000_123_456u64);
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys[..3], ["server", "version", "implementation"]);
    }

    #[test]
    fn rendered_as_one_json_line() {
        let mut out = Vec::new();
        with_snapshot(|s| super::render(s, &mut out));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["implementation"], "rust");
    }
}
