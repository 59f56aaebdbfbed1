//! The CPU a herd spends per peer message: under the iamat load at Riley,
//! the other servers handle nothing but peer traffic, so their CPU time in
//! the window divided by the updates they received is the cost of one peer
//! message (receiving, and forwarding where it is new).
//!
//! Updates are counted from the logs, where every implementation writes
//! `peer-in NAME#ID < AT ...` for each update line it receives (duplicates
//! included): the same count for every implementation, and no endpoint
//! needed. The counting is pure and unit-tested; [`window`] reads a log.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// One server's share of an iamat window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCost {
    pub name: String,
    /// Time on a CPU in the window, ns (`None` if unreadable).
    pub cpu_ns: Option<u64>,
    /// `peer-in ... < AT` lines its log gained in the window.
    pub peer_updates: u64,
    /// All lines its log gained in the window.
    pub log_lines: u64,
    /// Bytes its log gained in the window.
    pub log_bytes: u64,
}

impl ServerCost {
    /// µs of CPU per peer update received, if any was.
    pub fn us_per_update(&self) -> Option<f64> {
        let ns = self.cpu_ns?;
        (self.peer_updates > 0).then(|| ns as f64 / 1e3 / self.peer_updates as f64)
    }
}

/// Whether a log line (`TIMESTAMP peer-in NAME#ID < AT ...`) is an update
/// received from a neighbour.
fn is_peer_update(line: &[u8]) -> bool {
    let Some(sp) = line.iter().position(|&b| b == b' ') else {
        return false;
    };
    let Some(rest) = line[sp + 1..].strip_prefix(b"peer-in ") else {
        return false;
    };
    // NAME#ID has no space; what follows it says what was received.
    let Some(sp) = rest.iter().position(|&b| b == b' ') else {
        return false;
    };
    rest[sp..].starts_with(b" < AT ")
}

/// (peer updates, lines) in a stretch of log; a line cut at either end
/// counts if what is there matches (the window's edges fall within a turn,
/// and a server writes whole turns).
pub fn count(text: &[u8]) -> (u64, u64) {
    let mut updates = 0;
    let mut lines = 0;
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        lines += 1;
        if is_peer_update(line) {
            updates += 1;
        }
    }
    (updates, lines)
}

/// The bytes of `path` between offsets `from` and `to` (what a log gained
/// in a window), at most `limit` of them.
pub fn window(path: &Path, from: u64, to: u64, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut out = Vec::new();
    f.take(to.saturating_sub(from).min(limit))
        .read_to_end(&mut out)?;
    Ok(out)
}

/// µs of CPU per peer update at the servers other than `loaded` (which
/// also serves the clients): their CPU summed over their updates summed.
pub fn us_per_update_elsewhere(servers: &[ServerCost], loaded: &str) -> Option<f64> {
    let (mut ns, mut updates) = (0u64, 0u64);
    for s in servers.iter().filter(|s| s.name != loaded) {
        ns += s.cpu_ns?;
        updates += s.peer_updates;
    }
    (updates > 0).then(|| ns as f64 / 1e3 / updates as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &[u8] = b"2026-12-02T01:06:29.100422Z client#1 < IAMAT c0 +1-1 1\n\
        2026-12-02T01:06:29.100422Z client#1 > AT Riley +0.1 c0 +1-1 1\n\
        2026-12-02T01:06:29.100425Z peer-in Riley#3 < AT Riley +0.1 c0 +1-1 1\n\
        2026-12-02T01:06:29.100425Z peer-in Riley#3 < PING 7\n\
        2026-12-02T01:06:29.100427Z peer-in Juzang#4 < AT Riley +0.1 c0 +1-1 1\n\
        2026-12-02T01:06:29.100430Z link Jaquez: up\n\
        2026-12-02T01:06:29.100431Z peer-in Jaq";

    #[test]
    fn counts_updates_from_neighbours_only() {
        // Two updates; the PING, the client's lines and the cut line are not.
        assert_eq!(count(LOG), (2, 7));
        assert_eq!(count(b""), (0, 0));
        assert_eq!(count(b"\n\n"), (0, 0));
        // A client's line that happens to contain the words is not one.
        assert_eq!(count(b"t client#1 < IAMAT peer-in x < AT \n"), (0, 1));
        assert_eq!(count(b"t peer-in R#1 sent < AT x\n"), (0, 1));
    }

    #[test]
    fn cost_per_update_leaves_out_the_loaded_server() {
        let s = |name: &str, cpu_ns, peer_updates| ServerCost {
            name: name.into(),
            cpu_ns,
            peer_updates,
            log_lines: 0,
            log_bytes: 0,
        };
        let servers = [
            s("Riley", Some(9_000_000), 1000),
            s("Jaquez", Some(1_000_000), 1000),
            s("Juzang", Some(2_000_000), 1000),
        ];
        assert_eq!(us_per_update_elsewhere(&servers, "Riley"), Some(1.5));
        assert_eq!(servers[0].us_per_update(), Some(9.0));
        assert_eq!(s("x", Some(5), 0).us_per_update(), None);
        assert_eq!(us_per_update_elsewhere(&servers[..1], "Riley"), None);
        let unreadable = [s("Riley", None, 1), s("Jaquez", None, 1)];
        assert_eq!(us_per_update_elsewhere(&unreadable, "Riley"), None);
    }

    #[test]
    fn window_reads_what_the_file_gained() {
        let dir = std::env::temp_dir().join(format!("peercost-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let f = dir.join("a.log");
        std::fs::write(&f, b"0123456789").expect("write");
        assert_eq!(window(&f, 2, 5, 100).expect("read"), b"234");
        assert_eq!(window(&f, 2, 5, 1).expect("read"), b"2");
        assert_eq!(window(&f, 8, 50, 100).expect("read"), b"89");
        assert_eq!(window(&f, 5, 2, 100).expect("read"), b"");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
