//! The `herdsize` scenario (issue 9): `--servers` N Rust servers on
//! loopback, ring plus chords (each linked to i±1 and i±k, k = N/4 rounded,
//! duplicates and self-links dropped), logs on. Measured, from the servers'
//! own log timestamps:
//!
//! - the time from the first server's start until every link is up both
//!   ways (each server's `link N: ... => Up` and `link from N: up` for every
//!   neighbour);
//! - for each of [`ROUNDS`] updates sent to server 0, one after another: the
//!   time until the last server logged it (`peer-in ... < AT ...`), and the
//!   messages the flood cost (those lines in all logs, the origin's too),
//!   against the 2E-(N-1) a flood over E links sends (the origin writes to
//!   each neighbour, every other server to all but the one it heard from)
//!   and the N-1 that bring something new.
//!
//! proxy-herd's log lines only: the counterparts are skipped.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use super::catchup::LogTail;
use super::launch::{self, Flavour, Processes, ServerSpec};
use super::load::LOCATION;
use super::relink::line_time;
use super::Error;

/// Updates sent to server 0, one after another.
pub const ROUNDS: usize = 5;
const POLL: Duration = Duration::from_millis(10);
/// A flood's message count that stops growing for this long is complete.
const SETTLED: Duration = Duration::from_secs(1);

/// The chord length for `n` servers: n/4 rounded, at least 1.
pub fn chord(n: usize) -> usize {
    ((n + 2) / 4).max(1)
}

/// The links of ring plus chords on `n` servers, each as (i, j) with i < j,
/// without duplicates or self-links.
pub fn topology(n: usize) -> Vec<(usize, usize)> {
    let k = chord(n);
    let mut edges = BTreeSet::new();
    for i in 0..n {
        for d in [1, k] {
            let j = (i + d) % n;
            if j != i {
                edges.insert((i.min(j), i.max(j)));
            }
        }
    }
    edges.into_iter().collect()
}

/// Server `i`'s name.
pub fn name(i: usize) -> String {
    format!("S{i:03}")
}

/// The herd of `n` servers on the given (client, peer) ports.
pub fn specs(n: usize, ports: &[(u16, u16)]) -> Result<Vec<ServerSpec>, Error> {
    if ports.len() < n {
        return Err(Error::new("not enough ports for the herd"));
    }
    let edges = topology(n);
    Ok((0..n)
        .map(|i| ServerSpec {
            name: name(i),
            client: SocketAddr::from(([127, 0, 0, 1], ports[i].0)),
            peer: SocketAddr::from(([127, 0, 0, 1], ports[i].1)),
            neighbours: edges
                .iter()
                .filter_map(|&(a, b)| match (a == i, b == i) {
                    (true, _) => Some(name(b)),
                    (_, true) => Some(name(a)),
                    _ => None,
                })
                .collect(),
        })
        .collect())
}

/// One update's flood.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    /// From the IAMAT's send to the last server's log line of it.
    pub everywhere_s: f64,
    /// `peer-in ... < AT` lines of it in all logs.
    pub messages: usize,
}

/// What the herdsize scenario measured.
#[derive(Debug, Clone)]
pub struct HerdsizeResult {
    pub servers: usize,
    pub chord: usize,
    pub links: usize,
    /// From the first start to the last link up; `None` if not all came up.
    pub linked_s: Option<f64>,
    pub rounds: Vec<Round>,
}

impl HerdsizeResult {
    /// What a flood sends: 2E-(N-1).
    pub fn flood_messages(&self) -> usize {
        (2 * self.links).saturating_sub(self.servers - 1)
    }

    fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> Option<T> {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        v.get(v.len() / 2).copied()
    }

    pub fn median_everywhere_s(&self) -> Option<f64> {
        Self::median(self.rounds.iter().map(|r| r.everywhere_s).collect())
    }

    pub fn median_messages(&self) -> Option<usize> {
        Self::median(self.rounds.iter().map(|r| r.messages).collect())
    }

    pub fn row(&self, imp: &str) -> Vec<String> {
        vec![
            imp.to_string(),
            self.servers.to_string(),
            format!("{} (k={})", self.links, self.chord),
            self.linked_s
                .map_or("not linked".into(), |s| format!("{:.3} s", s)),
            self.median_everywhere_s()
                .map_or("-".into(), |s| format!("{:.1} ms", s * 1e3)),
            self.rounds
                .iter()
                .map(|r| format!("{:.1}", r.everywhere_s * 1e3))
                .collect::<Vec<_>>()
                .join(" "),
            self.median_messages().map_or("-".into(), |m| m.to_string()),
            self.flood_messages().to_string(),
            (self.servers - 1).to_string(),
        ]
    }

    pub fn json(&self) -> Value {
        json!({
            "status": "ok",
            "servers": self.servers,
            "chord": self.chord,
            "links": self.links,
            "linked_s": self.linked_s,
            "flood_messages_expected": self.flood_messages(),
            "useful_messages": self.servers - 1,
            "median_everywhere_s": self.median_everywhere_s(),
            "median_messages": self.median_messages(),
            "rounds": self.rounds.iter().map(|r| json!({
                "everywhere_s": r.everywhere_s,
                "messages": r.messages,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The time of the last link line once every server has all of its links
/// up both ways, from `logs` (one text per server, in `specs` order).
pub fn all_linked(specs: &[ServerSpec], logs: &[&str]) -> Option<f64> {
    let mut last: Option<f64> = None;
    for (s, log) in specs.iter().zip(logs) {
        for n in &s.neighbours {
            let out = format!(" link {n}: ");
            let dialled = log
                .lines()
                .find(|l| l.contains(&out) && l.contains(" => Up"))
                .and_then(line_time)?;
            let accepted = log
                .lines()
                .find(|l| l.contains(&format!(" link from {n}: up")))
                .and_then(line_time)?;
            last = Some(last.map_or(dialled, |t: f64| t.max(dialled)).max(accepted));
        }
    }
    last
}

/// The log lines of a neighbour's `AT` for `client`.
fn flood_lines<'a>(log: &'a str, client: &str) -> impl Iterator<Item = &'a str> {
    let id = format!(" {client} ");
    log.lines()
        .filter(move |l| l.contains("peer-in ") && l.contains(" < AT ") && l.contains(&id))
}

/// Runs the scenario: `n` servers of `flavour` in `dir`.
pub fn run(
    flavour: Flavour,
    n: usize,
    places_url: &str,
    dir: &Path,
) -> Result<HerdsizeResult, Error> {
    let flat = launch::free_ports(2 * n)?;
    let ports: Vec<(u16, u16)> = flat.chunks(2).map(|p| (p[0], p[1])).collect();
    let specs = specs(n, &ports)?;
    let links = topology(n).len();
    let deadline = Duration::from_secs(60) + Duration::from_millis(500) * n as u32;
    let mut procs = Processes::default();
    let t0 = SystemTime::now();
    let started = launch::start_herd(
        flavour,
        &specs,
        &[],
        places_url,
        launch::ServerFlags::default(),
        &mut procs,
        dir,
    )?;
    let mut tails: Vec<LogTail> = specs
        .iter()
        .map(|s| LogTail::from_start(&started.log(&s.name)))
        .collect();
    let since = |t: SystemTime, at: f64| (at - super::catchup::day_seconds(t)).rem_euclid(86_400.0);
    let mut linked_s = None;
    let end = Instant::now() + deadline;
    while Instant::now() < end && !super::interrupted() {
        for t in tails.iter_mut() {
            t.poll();
        }
        let logs: Vec<&str> = tails.iter().map(|t| t.text.as_str()).collect();
        if let Some(at) = all_linked(&specs, &logs) {
            linked_s = Some(since(t0, at));
            break;
        }
        procs.check_alive(dir)?;
        std::thread::sleep(POLL);
    }
    let mut result = HerdsizeResult {
        servers: n,
        chord: chord(n),
        links,
        linked_s,
        rounds: Vec::new(),
    };
    if linked_s.is_none() {
        return Ok(result);
    }
    let expected = result.flood_messages();
    for r in 0..ROUNDS {
        let client = format!("hs-{}-{r}", std::process::id());
        let sent = SystemTime::now();
        iamat(specs[0].client, &client)?;
        let end = Instant::now() + deadline;
        let mut everywhere: Option<f64> = None;
        let mut count = 0;
        let mut changed = Instant::now();
        while Instant::now() < end && !super::interrupted() {
            for t in tails.iter_mut() {
                t.poll();
            }
            if everywhere.is_none() {
                let firsts: Option<Vec<f64>> = tails
                    .iter()
                    .skip(1)
                    .map(|t| flood_lines(&t.text, &client).next().and_then(line_time))
                    .collect();
                everywhere = firsts
                    .and_then(|f| f.into_iter().reduce(f64::max))
                    .map(|at| since(sent, at));
            }
            let now: usize = tails
                .iter()
                .map(|t| flood_lines(&t.text, &client).count())
                .sum();
            if now != count {
                count = now;
                changed = Instant::now();
            }
            // Complete once every server has it and the count is what a
            // flood sends, or has stopped growing.
            if everywhere.is_some() && (count >= expected || changed.elapsed() >= SETTLED) {
                break;
            }
            std::thread::sleep(POLL);
        }
        let Some(everywhere_s) = everywhere else {
            return Err(Error::new(format!(
                "herdsize: update {client} did not reach every server within {deadline:?}"
            )));
        };
        result.rounds.push(Round {
            everywhere_s,
            messages: count,
        });
    }
    Ok(result)
}

/// One IAMAT, its reply read.
fn iamat(addr: SocketAddr, client: &str) -> Result<(), Error> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    (&stream).write_all(
        format!(
            "IAMAT {client} {LOCATION} {}.{:09}\n",
            d.as_secs(),
            d.subsec_nanos()
        )
        .as_bytes(),
    )?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    if line.starts_with("AT ") {
        Ok(())
    } else {
        Err(Error::new(format!(
            "IAMAT {client}: answered {:?}",
            line.trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_plus_chords() {
        // Five: k = 1, the chords are the ring.
        assert_eq!(chord(5), 1);
        assert_eq!(topology(5), vec![(0, 1), (0, 4), (1, 2), (2, 3), (3, 4)]);
        // Twenty: k = 5, each server has four neighbours.
        assert_eq!(chord(20), 5);
        let e = topology(20);
        assert_eq!(e.len(), 40);
        for i in 0..20 {
            let degree = e.iter().filter(|&&(a, b)| a == i || b == i).count();
            assert_eq!(degree, 4, "S{i}");
        }
        assert!(e.contains(&(0, 5)) && e.contains(&(0, 15)) && e.contains(&(0, 19)));
        // Fifty: 12.5 rounds to 13.
        assert_eq!(chord(50), 13);
        assert_eq!(topology(50).len(), 100);
        // Two: one link, not two; four: k = 1.
        assert_eq!(topology(2), vec![(0, 1)]);
        assert_eq!(topology(4).len(), 4);
        // Eight: k = 2.
        assert_eq!(topology(8).len(), 16);
        assert!(topology(7).iter().all(|&(a, b)| a < b && b < 7));
    }

    #[test]
    fn specs_name_each_neighbour_once() {
        let ports: Vec<(u16, u16)> = (0..20).map(|i| (1000 + i, 2000 + i)).collect();
        let s = specs(20, &ports).unwrap();
        assert_eq!(s[0].name, "S000");
        assert_eq!(s[0].neighbours, ["S001", "S005", "S015", "S019"]);
        assert!(specs(30, &ports).is_err());
    }

    #[test]
    fn links_and_floods_are_read_from_the_logs() {
        let ports: Vec<(u16, u16)> = (0..2).map(|i| (1000 + i, 2000 + i)).collect();
        let s = specs(2, &ports).unwrap();
        let a = "2026-12-02T00:00:01.000000Z link S001: Greeting => Up (WELCOME received)\n\
                 2026-12-02T00:00:01.500000Z link from S001: up\n";
        let b = "2026-12-02T00:00:01.200000Z link from S000: up\n";
        assert_eq!(all_linked(&s, &[a, b]), None);
        let b2 = format!("{b}2026-12-02T00:00:02.250000Z link S000: Greeting => Up (x)\n");
        let t = all_linked(&s, &[a, &b2]).unwrap();
        assert!((t - 2.25).abs() < 1e-6, "{t}");
        let log = "2026-12-02T00:00:03.000000Z peer-in S000#3 < AT S000 +0.1 hs-1-0 +1+1 5\n\
                   2026-12-02T00:00:03.000000Z peer-in S000#3 < AT S000 +0.1 hs-1-01 +1+1 5\n\
                   2026-12-02T00:00:03.000000Z S001 < IAMAT hs-1-0 +1+1 5\n";
        assert_eq!(flood_lines(log, "hs-1-0").count(), 1);
        let r = HerdsizeResult {
            servers: 20,
            chord: 5,
            links: 40,
            linked_s: Some(1.0),
            rounds: vec![],
        };
        assert_eq!(r.flood_messages(), 61);
    }
}
