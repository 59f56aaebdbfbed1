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

use serde_json::{json, Map, Value};

use super::{micros, Snapshot, Source};

fn timestamp(t: std::time::SystemTime) -> String {
    let mut s = String::new();
    crate::log::write_timestamp(&mut s, t);
    s
}

/// The document as a value.
pub fn to_value(s: &Snapshot) -> Value {
    let m = s.metrics;
    let servers: Vec<Value> = s
        .herd
        .servers
        .iter()
        .map(|v| {
            json!({
                "name": v.name,
                "client": v.client,
                "peer": v.peer,
                "http": v.http,
                "neighbours": v.neighbours,
            })
        })
        .collect();
    let herd_links: Vec<Value> = s.herd.links.iter().map(|(a, b)| json!([a, b])).collect();
    let links: Vec<Value> = s
        .links
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let c = m.links.get(i).cloned().unwrap_or_default();
            json!({
                "neighbour": l.neighbour,
                "state": l.state,
                "since": timestamp(l.since),
                "incoming": l.incoming,
                "tls": l.tls,
                "failures": l.failures,
                "unsent_bytes": l.unsent_bytes,
                "sent": {
                    "messages": c.messages_sent,
                    "bytes": c.bytes_sent,
                    "floods": c.floods_sent,
                },
                "received": {
                    "messages": c.messages_received,
                    "bytes": c.bytes_received,
                    "new": c.floods_received_new,
                    "known": c.floods_received_known,
                },
            })
        })
        .collect();
    let recent: Vec<Value> = s
        .recent
        .iter()
        .map(|a| {
            let client = crate::protocol::fields(&a.at_line).nth(3).unwrap_or(b"");
            let from = match a.from {
                Source::Client => "client",
                Source::Neighbour(i) => s.links.get(i).map_or("?", |l| l.neighbour),
            };
            let time = std::time::UNIX_EPOCH + std::time::Duration::from_micros(a.time_us);
            let mut o = Map::new();
            o.insert("client".into(), String::from_utf8_lossy(client).into());
            o.insert("at".into(), String::from_utf8_lossy(&a.at_line).into());
            o.insert("from".into(), from.into());
            o.insert("time".into(), timestamp(time).into());
            o.insert("time_us".into(), a.time_us.into());
            Value::Object(o)
        })
        .collect();
    let uptime = s.now.duration_since(s.started).unwrap_or_default();
    json!({
        "server": s.server,
        "version": s.version,
        "implementation": s.implementation,
        "started": timestamp(s.started),
        "now": timestamp(s.now),
        "now_us": micros(s.now),
        "uptime_seconds": (uptime.as_secs_f64() * 1000.0).round() / 1000.0,
        "addresses": {
            "client": s.client_addr,
            "peer": s.peer_addr,
            "http": s.http_addr,
        },
        "herd": { "servers": servers, "links": herd_links },
        "links": links,
        "counts": {
            "positions": s.positions,
            "clients": s.clients,
            "http_connections": s.http_connections,
        },
        "recent": recent,
    })
}

/// The document, for `GET /status`.
pub fn render(s: &Snapshot, out: &mut Vec<u8>) {
    // Writing a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &to_value(s));
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
        metrics.disconnect(ConnKind::Client, "done after EOF");
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
        let v = with_snapshot(super::to_value);
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
