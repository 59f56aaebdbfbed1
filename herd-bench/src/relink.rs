//! The `relink` scenario: how long a restarted server takes to be linked
//! both ways with each of its neighbours again (the quick rejoin, with the
//! TLS handshakes on a TLS herd). The herd runs whole; `Campbell` (two
//! neighbours, Juzang and Bernard) is stopped with SIGTERM and started
//! again, `ROUNDS` times. Each round is timed in the restarted server's own
//! log, from its `listening` line to the last of its four link lines (`link
//! N: ... => Up` for its dial to N, `link from N: up` for N's dial to it),
//! so polling the file adds nothing to the figure. proxy-herd's log lines
//! only: the counterparts are skipped.

use std::path::Path;
use std::time::{Duration, Instant};

use super::launch::{self, Processes, ServerSpec, Started};
use super::Error;

/// The server restarted, and its neighbours in the default herd.
pub const SERVER: &str = "Campbell";
pub const NEIGHBOURS: [&str; 2] = ["Juzang", "Bernard"];
/// Restarts per measurement.
pub const ROUNDS: usize = 7;
/// A round whose links are not all up by then failed.
const ROUND_DEADLINE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(10);

/// What the relink scenario measured.
#[derive(Debug, Clone)]
pub struct RelinkResult {
    pub server: &'static str,
    /// Each round: from the `listening` line to the last link up.
    pub rounds: Vec<Duration>,
}

impl RelinkResult {
    /// The median round.
    pub fn median(&self) -> Option<Duration> {
        let mut r = self.rounds.clone();
        r.sort_unstable();
        r.get(r.len() / 2).copied()
    }

    pub fn max(&self) -> Option<Duration> {
        self.rounds.iter().max().copied()
    }
}

/// Seconds since midnight of a log line's RFC 3339 timestamp
/// (`2026-12-02T00:13:31.029666Z ...`).
pub fn line_time(line: &str) -> Option<f64> {
    let t = line.get(11..26)?;
    let h: f64 = t.get(0..2)?.parse().ok()?;
    let m: f64 = t.get(3..5)?.parse().ok()?;
    let s: f64 = t.get(6..)?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// In the log text of one start: the time from the `listening` line to the
/// last of the four link lines, once all are there.
pub fn relink_time(log: &str, server: &str, neighbours: &[&str]) -> Option<Duration> {
    let started = log
        .lines()
        .find(|l| l.contains(&format!(" {server} listening for clients")))
        .and_then(line_time)?;
    // Seconds after the start, through midnight if need be.
    let after = |t: f64| (t - started).rem_euclid(86_400.0);
    let mut last: f64 = 0.0;
    for n in neighbours {
        let out = format!(" link {n}: ");
        let dialled = log
            .lines()
            .find(|l| l.contains(&out) && l.contains(" => Up"))
            .and_then(line_time)?;
        let accepted = log
            .lines()
            .find(|l| l.contains(&format!(" link from {n}: up")))
            .and_then(line_time)?;
        last = last.max(after(dialled)).max(after(accepted));
    }
    Some(Duration::from_secs_f64(last))
}

/// What the log holds from byte `from` on.
fn log_since(path: &Path, from: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(bytes.get(from as usize..).unwrap_or_default()).into_owned()
}

/// Polls `log` from byte `from` until the relink is complete.
fn wait_relinked(log: &Path, from: u64) -> Result<Duration, Error> {
    let deadline = Instant::now() + ROUND_DEADLINE;
    while Instant::now() < deadline && !super::interrupted() {
        if let Some(d) = relink_time(&log_since(log, from), SERVER, &NEIGHBOURS) {
            return Ok(d);
        }
        std::thread::sleep(POLL);
    }
    Err(Error::new(format!(
        "relink: {SERVER} not linked both ways with {NEIGHBOURS:?} within {ROUND_DEADLINE:?}"
    )))
}

/// Runs the rounds on a started herd.
pub fn run(
    herd: &Started,
    specs: &[ServerSpec],
    procs: &mut Processes,
) -> Result<RelinkResult, Error> {
    let spec = specs
        .iter()
        .find(|s| s.name == SERVER)
        .ok_or_else(|| Error::new(format!("{SERVER} is not in the herd")))?;
    let log = herd.log(SERVER);
    // The first start counts as no round: every server starts at once then.
    wait_relinked(&log, 0)?;
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        procs.stop(&herd.tag(SERVER));
        let from = std::fs::metadata(&log).map_or(0, |m| m.len());
        launch::start_server(herd, SERVER, false, procs)?;
        launch::wait_listening(spec.client, procs, &herd.dir)?;
        rounds.push(wait_relinked(&log, from)?);
    }
    Ok(RelinkResult {
        server: SERVER,
        rounds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
2026-12-02T23:59:59.900000Z Campbell listening for clients on 127.0.0.1:1 and for peers on 127.0.0.1:2
2026-12-02T23:59:59.950000Z link Juzang: Dialing => Greeting (connected, HELLO sent)
2026-12-02T23:59:59.990000Z link Juzang: Greeting => Up (WELCOME received)
2026-12-03T00:00:00.010000Z link from Juzang: up
2026-12-03T00:00:00.020000Z link from Bernard: up
";

    #[test]
    fn a_relink_is_timed_from_listening_to_the_last_link_up() {
        assert_eq!(line_time(LOG), Some(86_399.9));
        let incomplete = relink_time(LOG, "Campbell", &["Juzang", "Bernard"]);
        assert_eq!(incomplete, None, "Bernard's dial is not up yet");
        let done = format!(
            "{LOG}2026-12-03T00:00:00.030000Z link Bernard: Greeting => Up (WELCOME received)\n"
        );
        let d = relink_time(&done, "Campbell", &["Juzang", "Bernard"]).unwrap();
        assert!((d.as_secs_f64() - 0.13).abs() < 1e-6, "{d:?}");
    }
}
