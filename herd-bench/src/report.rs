//! What a run found, as text tables and as JSON. Pure formatting: the
//! measurements come from the scenario modules, the header's facts from
//! [`super::run`]; the chart is [`super::svg`].

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::args::Scenario;
use super::catchup::CatchupResult;
use super::flood::FloodResult;
use super::gclog::GcAccount;
use super::herdsize::HerdsizeResult;
use super::idle::IdleResult;
use super::load::LoadResult;
use super::relink::RelinkResult;
use super::stats::{human_ns, Summary};

/// The facts that make figures comparable: when, where, what.
#[derive(Debug, Clone, Default)]
pub struct Header {
    pub date: String,
    pub nproc: usize,
    pub kernel: String,
    pub commit: String,
    /// `/proc/loadavg` at the start: the machine may be shared.
    pub loadavg: String,
    /// The bench's own build: a debug bench measures itself.
    pub bench_build: &'static str,
    /// Where the server binaries come from, when not `target/release`.
    pub servers_from: Option<String>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub connections: usize,
    pub depth: usize,
    pub clients: usize,
    pub idle: usize,
    /// The gc scenario's open-loop rate.
    pub gc_rate: f64,
    /// Where the load went: a herd the bench started, or `--target`.
    pub setup: String,
}

/// How one measurement ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Load(LoadResult),
    Idle(IdleResult),
    Flood(FloodResult),
    Gc(GcResult),
    Relink(RelinkResult),
    Catchup(Box<CatchupResult>),
    Herdsize(HerdsizeResult),
    Skipped(String),
    Failed(String),
}

/// The gc scenario: a steady open-loop load, and the runtime's own account
/// of its collections in the measured window (`None` for Rust, which has no
/// collector).
#[derive(Debug, Clone)]
pub struct GcResult {
    pub load: LoadResult,
    pub gc: Option<GcAccount>,
}

/// One scenario against one implementation.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// `rust`, `rust+tls`, `asyncio`, `uvloop`, `limit` or `target`.
    pub implementation: String,
    pub scenario: Scenario,
    pub outcome: Outcome,
}

/// The whole run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub header: Header,
    pub measurements: Vec<Measurement>,
}

/// One line of the comparison: a metric for each implementation, and
/// whether a larger value is better.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: &'static str,
    pub unit: &'static str,
    pub higher_is_better: bool,
    /// (implementation, value), in run order; missing values left out.
    pub values: Vec<(String, f64)>,
}

impl Report {
    fn find(&self, imp: &str, scenario: Scenario) -> Option<&Outcome> {
        self.measurements
            .iter()
            .find(|m| m.implementation == imp && m.scenario == scenario)
            .map(|m| &m.outcome)
    }

    /// The implementations measured, in run order, without duplicates.
    pub fn implementations(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for m in &self.measurements {
            if !out.contains(&m.implementation) {
                out.push(m.implementation.clone());
            }
        }
        out
    }

    /// The five figures the comparison (and the chart) are about.
    pub fn metrics(&self) -> Vec<Metric> {
        let imps = self.implementations();
        let collect = |f: &dyn Fn(&str) -> Option<f64>| -> Vec<(String, f64)> {
            imps.iter()
                .filter_map(|i| f(i).map(|v| (i.clone(), v)))
                .collect()
        };
        let load = |i: &str, sc: Scenario| match self.find(i, sc) {
            Some(Outcome::Load(r)) => Some(r.clone()),
            _ => None,
        };
        vec![
            Metric {
                name: "iamat throughput",
                unit: "replies/s",
                higher_is_better: true,
                values: collect(&|i| {
                    load(i, Scenario::Iamat)
                        .or_else(|| load(i, Scenario::Limit))
                        .map(|r| r.throughput())
                }),
            },
            Metric {
                name: "iamat p99 latency",
                unit: "ms",
                higher_is_better: false,
                values: collect(&|i| {
                    load(i, Scenario::Iamat)
                        .or_else(|| load(i, Scenario::Limit))
                        .and_then(|r| r.latency)
                        .map(|l| l.p99 as f64 / 1e6)
                }),
            },
            Metric {
                name: "memory per idle connection",
                unit: "bytes",
                higher_is_better: false,
                values: collect(&|i| match self.find(i, Scenario::Idle) {
                    Some(Outcome::Idle(r)) => r.bytes_per_conn(),
                    _ => None,
                }),
            },
            Metric {
                name: "flood p99 to the far server",
                unit: "ms",
                higher_is_better: false,
                values: collect(&|i| match self.find(i, Scenario::Flood) {
                    Some(Outcome::Flood(r)) => r.latency.map(|l| l.p99 as f64 / 1e6),
                    _ => None,
                }),
            },
            Metric {
                name: "whatsat throughput",
                unit: "replies/s",
                higher_is_better: true,
                values: collect(&|i| load(i, Scenario::Whatsat).map(|r| r.throughput())),
            },
            Metric {
                name: "context switches per iamat",
                unit: "vol + invol, all threads",
                higher_is_better: false,
                values: collect(&|i| {
                    load(i, Scenario::Iamat)
                        .and_then(|r| r.switches_per_reply())
                        .map(|(v, n)| v + n)
                }),
            },
            Metric {
                name: "threads, most idle connections",
                unit: "threads",
                higher_is_better: false,
                values: collect(&|i| match self.find(i, Scenario::Idle) {
                    Some(Outcome::Idle(r)) => {
                        r.steps.last().and_then(|s| s.threads).map(|t| t as f64)
                    }
                    _ => None,
                }),
            },
            Metric {
                name: "p99.9 at a steady rate",
                unit: "ms",
                higher_is_better: false,
                values: collect(&|i| {
                    self.gc(i)
                        .and_then(|g| g.load.latency)
                        .map(|l| l.p999 as f64 / 1e6)
                }),
            },
            Metric {
                name: "max at a steady rate",
                unit: "ms",
                higher_is_better: false,
                values: collect(&|i| {
                    self.gc(i)
                        .and_then(|g| g.load.latency)
                        .map(|l| l.max as f64 / 1e6)
                }),
            },
            Metric {
                name: "longest GC pause (own account)",
                unit: "ms",
                higher_is_better: false,
                values: collect(&|i| {
                    let g = self.gc(i)?;
                    // Rust has no collector: its longest pause is none.
                    Some(g.gc.as_ref().map_or(0.0, |a| a.max_pause_ms))
                }),
            },
        ]
    }

    fn gc(&self, imp: &str) -> Option<&GcResult> {
        match self.find(imp, Scenario::Gc) {
            Some(Outcome::Gc(g)) => Some(g),
            _ => None,
        }
    }

    /// The text report: header, one table per scenario, ratios.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let h = &self.header;
        let _ = writeln!(
            s,
            "herd-bench  {}  nproc {}  kernel {}  commit {}  load average {}",
            h.date, h.nproc, h.kernel, h.commit, h.loadavg
        );
        let _ = writeln!(
            s,
            "servers: {}, logging on (they always log); bench: {} build",
            h.servers_from
                .as_deref()
                .map_or("release builds".to_string(), |d| format!(
                    "binaries from {d}"
                )),
            h.bench_build
        );
        let _ = writeln!(s, "setup: {}", h.setup);
        let _ = writeln!(
            s,
            "each measurement {:.1} s ({:.1} s warm-up not counted); iamat {} connections x {} in flight; \
             whatsat {} clients; idle {} connections; gc {:.0} IAMATs/s for twice as long, the first half \
             not counted",
            h.duration_s, h.warmup_s, h.connections, h.depth, h.clients, h.idle, h.gc_rate
        );
        let load_rows = |sc: Scenario| -> Vec<Vec<String>> {
            self.measurements
                .iter()
                .filter(|m| m.scenario == sc)
                .map(|m| match &m.outcome {
                    Outcome::Load(r) => {
                        let mut row = vec![
                            m.implementation.clone(),
                            r.connections.to_string(),
                            format!("{:.0}", r.throughput()),
                        ];
                        row.extend(latency_cells(r.latency.as_ref()));
                        row.push(r.errors.to_string());
                        row.push(r.lost.to_string());
                        row
                    }
                    other => other_row(&m.implementation, other),
                })
                .collect()
        };
        let load_head = [
            "impl",
            "conns",
            "replies/s",
            "p50",
            "p90",
            "p99",
            "max",
            "errors",
            "lost",
        ];
        for (sc, title) in [
            (Scenario::Iamat, "iamat: pipelined IAMATs"),
            (
                Scenario::Limit,
                "limit: the same load against a bare mio line server in the bench",
            ),
            (
                Scenario::Whatsat,
                "whatsat: WHATSAT ID 10 5 through places-offline, one in flight per client",
            ),
            (
                Scenario::Fairness,
                "fairness: one IAMAT at a time from a probe while another connection floods blank lines",
            ),
        ] {
            let rows = load_rows(sc);
            if !rows.is_empty() {
                let _ = writeln!(s, "\n{title}");
                s.push_str(&table(&load_head, &rows));
            }
            for m in self.measurements.iter().filter(|m| m.scenario == sc) {
                if let Outcome::Load(LoadResult {
                    first_error: Some(e),
                    errors,
                    replies,
                    ..
                }) = &m.outcome
                {
                    let _ = writeln!(
                        s,
                        "  note ({}): {errors} of {replies} replies were not answers \
                         (not in replies/s or latency); the first: {:?}",
                        m.implementation, e
                    );
                }
            }
        }
        let sched: Vec<Vec<String>> = self
            .measurements
            .iter()
            .filter(|m| m.scenario == Scenario::Iamat)
            .filter_map(|m| match &m.outcome {
                Outcome::Load(r) => {
                    let sc = r.sched?;
                    let (v, n) = r.switches_per_reply()?;
                    Some(vec![
                        m.implementation.clone(),
                        sc.threads.to_string(),
                        format!("{v:.3}"),
                        format!("{n:.3}"),
                        format!("{:.3}", v + n),
                        format!("{}/{}", sc.main.voluntary, sc.main.involuntary),
                        format!("{}/{}", sc.all.voluntary, sc.all.involuntary),
                    ])
                }
                _ => None,
            })
            .collect();
        if !sched.is_empty() {
            let _ = writeln!(
                s,
                "\niamat: the loaded server's context switches in the window \
                 (/proc/PID/task/*/status), per reply counted"
            );
            s.push_str(&table(
                &[
                    "impl",
                    "threads",
                    "vol/reply",
                    "invol/reply",
                    "total/reply",
                    "main vol/invol",
                    "all vol/invol",
                ],
                &sched,
            ));
        }
        s.push_str(&self.peer_cost_text());
        let flood: Vec<Vec<String>> = self
            .measurements
            .iter()
            .filter(|m| m.scenario == Scenario::Flood)
            .map(|m| match &m.outcome {
                Outcome::Flood(r) => {
                    let mut row = vec![
                        m.implementation.clone(),
                        format!("{} ({} hops)", r.path, r.hops),
                        format!("{:.0}", r.rate()),
                    ];
                    row.extend(latency_cells(r.latency.as_ref()));
                    row.push(format!("{}/{}", r.seen, r.sent));
                    row
                }
                other => other_row(&m.implementation, other),
            })
            .collect();
        if !flood.is_empty() {
            let _ = writeln!(
                s,
                "\nflood: IAMATs at the origin ({} in flight on one connection) until the far server \
                 floods them to the bench's Observer",
                h.depth
            );
            s.push_str(&table(
                &[
                    "impl",
                    "origin -> far",
                    "updates/s",
                    "p50",
                    "p90",
                    "p99",
                    "max",
                    "seen/sent",
                ],
                &flood,
            ));
        }
        let idle: Vec<Vec<String>> = self
            .measurements
            .iter()
            .filter(|m| m.scenario == Scenario::Idle)
            .map(|m| match &m.outcome {
                Outcome::Idle(r) => vec![
                    m.implementation.clone(),
                    format!("{}/{}", r.opened, r.requested),
                    r.rss_before_kb.map_or("-".into(), |k| format!("{k} kB")),
                    r.rss_after_kb.map_or("-".into(), |k| format!("{k} kB")),
                    r.bytes_per_conn().map_or("-".into(), |b| format!("{b:.0}")),
                    match &r.check {
                        Ok(d) => format!("answered in {}", human_ns(d.as_nanos() as u64)),
                        Err(e) => format!("FAILED: {e}"),
                    },
                ],
                other => other_row(&m.implementation, other),
            })
            .collect();
        if !idle.is_empty() {
            let _ = writeln!(
                s,
                "\nidle: connections held open, server RSS (VmRSS) before and after"
            );
            s.push_str(&table(
                &[
                    "impl",
                    "open",
                    "RSS before",
                    "RSS after",
                    "bytes/conn",
                    "IAMAT with all open",
                ],
                &idle,
            ));
            for m in &self.measurements {
                if let Outcome::Idle(IdleResult { note: Some(n), .. }) = &m.outcome {
                    let _ = writeln!(s, "  note ({}): {n}", m.implementation);
                }
            }
            let steps: Vec<Vec<String>> = self
                .measurements
                .iter()
                .filter_map(|m| match &m.outcome {
                    Outcome::Idle(r) if !r.steps.is_empty() => Some(
                        std::iter::once(m.implementation.clone())
                            .chain(r.steps.iter().map(|st| {
                                format!(
                                    "{}: {} thr, {}",
                                    st.connections,
                                    st.threads.map_or("-".into(), |t| t.to_string()),
                                    st.rss_kb.map_or("-".into(), |k| format!("{k} kB"))
                                )
                            }))
                            .collect(),
                    ),
                    _ => None,
                })
                .collect();
            if !steps.is_empty() {
                let _ = writeln!(s, "\nidle, on the way: connections: threads, RSS");
                let width = steps.iter().map(Vec::len).max().unwrap_or(1);
                let mut head = vec!["impl"];
                head.extend(std::iter::repeat_n("step", width - 1));
                s.push_str(&table(&head, &steps));
            }
        }
        let gc: Vec<Vec<String>> = self
            .measurements
            .iter()
            .filter(|m| m.scenario == Scenario::Gc)
            .map(|m| match &m.outcome {
                Outcome::Gc(g) => {
                    let l = g.load.latency.as_ref();
                    let mut row = vec![
                        m.implementation.clone(),
                        format!("{:.0}", g.load.throughput()),
                    ];
                    row.extend(
                        [
                            l.map(|l| l.p50),
                            l.map(|l| l.p99),
                            l.map(|l| l.p999),
                            l.map(|l| l.max),
                        ]
                        .map(|v| v.map_or("-".into(), human_ns)),
                    );
                    row.push(match &g.gc {
                        None => "no collector".into(),
                        Some(a) => format!(
                            "{}: {} collections, {:.1} ms in all, longest {:.2} ms",
                            a.source, a.collections, a.total_pause_ms, a.max_pause_ms
                        ),
                    });
                    row
                }
                other => other_row(&m.implementation, other),
            })
            .collect();
        if !gc.is_empty() {
            let _ = writeln!(
                s,
                "\ngc: IAMATs at a steady {:.0}/s (open loop), the tail, and the runtime's own GC account \
                 in the same window",
                h.gc_rate
            );
            s.push_str(&table(
                &[
                    "impl",
                    "replies/s",
                    "p50",
                    "p99",
                    "p99.9",
                    "max",
                    "GC's own account",
                ],
                &gc,
            ));
        }
        let relink: Vec<Vec<String>> = self
            .measurements
            .iter()
            .filter(|m| m.scenario == Scenario::Relink)
            .map(|m| match &m.outcome {
                Outcome::Relink(r) => vec![
                    m.implementation.clone(),
                    r.server.to_string(),
                    r.median().map_or("-".into(), duration_ms),
                    r.max().map_or("-".into(), duration_ms),
                    r.rounds
                        .iter()
                        .map(|d| duration_ms(*d))
                        .collect::<Vec<_>>()
                        .join(" "),
                ],
                other => other_row(&m.implementation, other),
            })
            .collect();
        if !relink.is_empty() {
            let _ = writeln!(
                s,
                "\nrelink: a server restarted in a running herd, from its `listening` line to linked \
                 both ways with each neighbour (its own log's timestamps)"
            );
            s.push_str(&table(
                &["impl", "server", "median", "max", "rounds"],
                &relink,
            ));
        }
        s.push_str(&self.catchup_text());
        let tls = self.tls_rows();
        if !tls.is_empty() {
            let _ = writeln!(
                s,
                "\nwhat peer TLS adds (each pair measured one after the other; herd CPU is all five \
                 servers' time on a CPU in the window, per reply)"
            );
            s.push_str(&table(&["figure", "plaintext", "TLS", "TLS adds"], &tls));
        }
        let ratios = self.ratio_rows();
        if !ratios.is_empty() {
            let _ = writeln!(s, "\nratios (first implementation / each other)");
            s.push_str(&table(&["metric", "vs", "ratio", "better"], &ratios));
        }
        s
    }

    /// For each `X+tls` measured beside `X`: what TLS adds, per figure.
    /// iamat: each server's CPU and the peer updates it received, and the
    /// µs per peer update at the servers that handle only peer traffic.
    fn peer_cost_text(&self) -> String {
        let mut rows = Vec::new();
        let mut notes = String::new();
        for m in self
            .measurements
            .iter()
            .filter(|m| m.scenario == Scenario::Iamat)
        {
            let Outcome::Load(r) = &m.outcome else {
                continue;
            };
            for c in &r.servers {
                let per_reply = c
                    .cpu_ns
                    .filter(|_| r.replies > 0)
                    .map(|ns| ns as f64 / 1e3 / r.replies as f64);
                rows.push(vec![
                    m.implementation.clone(),
                    c.name.clone(),
                    c.cpu_ns
                        .map_or("-".into(), |ns| format!("{:.0}", ns as f64 / 1e6)),
                    per_reply.map_or("-".into(), |u| format!("{u:.2}")),
                    c.peer_updates.to_string(),
                    c.us_per_update().map_or("-".into(), |u| format!("{u:.2}")),
                    c.log_lines.to_string(),
                    format!("{:.1}", c.log_bytes as f64 / 1e6),
                ]);
            }
            let loaded = r.servers.first().map(|c| c.name.as_str()).unwrap_or("");
            if let Some(us) = crate::peercost::us_per_update_elsewhere(&r.servers, loaded) {
                let _ = writeln!(
                    notes,
                    "  {}: {us:.2} µs of CPU per peer update at the servers other than {loaded}",
                    m.implementation
                );
            }
        }
        if rows.is_empty() {
            return String::new();
        }
        let mut s = String::from(
            "\niamat: each server's CPU in the window (schedstat) and the updates it received \
             from neighbours (peer-in ... < AT lines in its log, duplicates included)\n",
        );
        s.push_str(&table(
            &[
                "impl",
                "server",
                "cpu ms",
                "cpu µs/reply",
                "peer updates",
                "µs/update",
                "log lines",
                "log MB",
            ],
            &rows,
        ));
        s.push_str(&notes);
        s
    }

    fn tls_rows(&self) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        for imp in self.implementations() {
            let Some(base) = imp.strip_suffix("+tls") else {
                continue;
            };
            let pair = |sc: Scenario| Some((self.find(base, sc)?, self.find(&imp, sc)?));
            if let Some((Outcome::Load(p), Outcome::Load(t))) = pair(Scenario::Iamat) {
                rows.push(vec![
                    "iamat replies/s".into(),
                    format!("{:.0}", p.throughput()),
                    format!("{:.0}", t.throughput()),
                    format!("{:+.1}%", (t.throughput() / p.throughput() - 1.0) * 100.0),
                ]);
                if let (Some(pc), Some(tc)) = (p.cpu_us_per_reply(), t.cpu_us_per_reply()) {
                    rows.push(vec![
                        "iamat herd CPU per update".into(),
                        format!("{pc:.1} us"),
                        format!("{tc:.1} us"),
                        format!("{:+.1} us", tc - pc),
                    ]);
                }
            }
            if let Some((Outcome::Flood(p), Outcome::Flood(t))) = pair(Scenario::Flood) {
                if let (Some(pl), Some(tl)) = (p.latency, t.latency) {
                    let added = (tl.p50 as f64 - pl.p50 as f64) / 1e3 / p.hops.max(1) as f64;
                    rows.push(vec![
                        format!("flood p50, {} hops", p.hops),
                        human_ns(pl.p50),
                        human_ns(tl.p50),
                        format!("{added:+.1} us per hop"),
                    ]);
                }
            }
            if let Some((Outcome::Relink(p), Outcome::Relink(t))) = pair(Scenario::Relink) {
                if let (Some(pm), Some(tm)) = (p.median(), t.median()) {
                    rows.push(vec![
                        "relink median".into(),
                        duration_ms(pm),
                        duration_ms(tm),
                        format!("{:+.1} ms", (tm.as_secs_f64() - pm.as_secs_f64()) * 1e3),
                    ]);
                }
            }
        }
        rows
    }

    /// For each metric, the first implementation's value over each other's.
    fn ratio_rows(&self) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        for m in self.metrics() {
            let Some((base, bv)) = m.values.first() else {
                continue;
            };
            for (other, ov) in m.values.iter().skip(1) {
                // A zero (Rust's GC pause) has no meaningful ratio.
                if *ov == 0.0 || *bv == 0.0 {
                    continue;
                }
                let r = bv / ov;
                let better = if (r > 1.0) == m.higher_is_better {
                    base
                } else {
                    other
                };
                rows.push(vec![
                    format!("{} ({})", m.name, m.unit),
                    format!("{base}/{other}"),
                    format!("{r:.2}"),
                    better.clone(),
                ]);
            }
        }
        rows
    }

    /// The catchup and herdsize tables (empty without them).
    fn catchup_text(&self) -> String {
        let mut s = String::new();
        let of = |sc: Scenario| self.measurements.iter().filter(move |m| m.scenario == sc);
        let mut rows = Vec::new();
        let mut notes = Vec::new();
        for m in of(Scenario::Catchup) {
            match &m.outcome {
                Outcome::Catchup(r) => {
                    rows.extend(r.rows(&m.implementation));
                    let per = r.b_bytes_per_position().map_or("-".into(), |(w, g)| {
                        format!("{w:.0} B per position ({g:.0} B of growth)")
                    });
                    notes.push(format!(
                        "  {}: {} positions loaded in {:.1} s ({} bytes of AT lines); {}'s RSS after the \
                         load {per}; state files: {}",
                        m.implementation,
                        r.positions,
                        r.load_s,
                        r.full_bytes,
                        super::catchup::B,
                        if r.state_files { "yes" } else { "no" },
                    ));
                    for why in &r.skipped {
                        notes.push(format!("  {}: skipped {why}", m.implementation));
                    }
                    for x in &r.restarts {
                        for l in &x.received {
                            let text = l.split_once(' ').map_or(l.as_str(), |(_, t)| t);
                            notes.push(format!("  {} {}: {text}", m.implementation, x.case.name()));
                        }
                    }
                }
                other => rows.push(other_row(&m.implementation, other)),
            }
        }
        if !rows.is_empty() {
            let _ = writeln!(
                s,
                "\ncatchup: {} restarted (SIGKILL) empty, or on its state file after {} changes at {}; \
                 converged = from its start to the end of the catch-ups; bytes on its links until then; \
                 bytes to B (from A's side + C's); probes' reply delay p50/p99/max; A's and C's time on a CPU \
                 and waiting for one, % of the window; catch-up lines/link drops per log from the kill on \
                 (the kill drops A's and C's links once)",
                super::catchup::B,
                super::catchup::CHANGES,
                super::catchup::A
            );
            s.push_str(&table(
                &[
                    "impl",
                    "positions",
                    "restart",
                    "converged",
                    "bytes to B",
                    "of full",
                    "bytes from B",
                    "probe at A",
                    "probe at C",
                    "A, C cpu/runq %",
                    "catch-ups/drops",
                    "agree",
                ],
                &rows,
            ));
            for n in notes {
                s.push_str(&n);
                s.push('\n');
            }
        }
        let rows: Vec<Vec<String>> = of(Scenario::Herdsize)
            .map(|m| match &m.outcome {
                Outcome::Herdsize(r) => r.row(&m.implementation),
                other => other_row(&m.implementation, other),
            })
            .collect();
        if !rows.is_empty() {
            let _ = writeln!(
                s,
                "\nherdsize: from the first start to every link up; an update sent to server 0 until \
                 the last server logged it (median and each of {}); messages per update in all logs, \
                 what a flood sends (2E-(N-1)), and the useful N-1",
                super::herdsize::ROUNDS
            );
            s.push_str(&table(
                &[
                    "impl",
                    "servers",
                    "links",
                    "linked",
                    "everywhere",
                    "rounds (ms)",
                    "messages",
                    "2E-(N-1)",
                    "N-1",
                ],
                &rows,
            ));
        }
        s
    }

    /// The same report as JSON.
    pub fn json(&self) -> Value {
        let h = &self.header;
        let results: Vec<Value> = self
            .measurements
            .iter()
            .map(|m| {
                let mut v = json!({
                    "implementation": m.implementation,
                    "scenario": m.scenario.name(),
                });
                let extra = match &m.outcome {
                    Outcome::Load(r) => load_json(r),
                    Outcome::Gc(g) => {
                        let mut v = load_json(&g.load);
                        if let Some(obj) = v.as_object_mut() {
                            obj.insert(
                                "gc".into(),
                                match &g.gc {
                                    None => {
                                        json!({"source": "none (no collector)", "collections": 0})
                                    }
                                    Some(a) => json!({
                                        "source": a.source,
                                        "collections": a.collections,
                                        "total_pause_ms": a.total_pause_ms,
                                        "max_pause_ms": a.max_pause_ms,
                                    }),
                                },
                            );
                            obj.insert("rate".into(), json!(h.gc_rate));
                        }
                        v
                    }
                    Outcome::Flood(r) => json!({
                        "status": "ok",
                        "origin": r.origin,
                        "far": r.far,
                        "path": r.path,
                        "hops": r.hops,
                        "sent": r.sent,
                        "seen": r.seen,
                        "seconds": r.seconds,
                        "updates_per_s": r.rate(),
                        "latency_ns": latency_json(r.latency.as_ref()),
                    }),
                    Outcome::Idle(r) => json!({
                        "status": "ok",
                        "requested": r.requested,
                        "opened": r.opened,
                        "note": r.note,
                        "rss_before_kb": r.rss_before_kb,
                        "rss_after_kb": r.rss_after_kb,
                        "bytes_per_connection": r.bytes_per_conn(),
                        "iamat_check_ok": r.check.is_ok(),
                        "iamat_check_ns": r.check.as_ref().ok().map(|d| d.as_nanos() as u64),
                        "iamat_check_error": r.check.as_ref().err(),
                        "steps": r.steps.iter().map(|st| json!({
                            "connections": st.connections,
                            "threads": st.threads,
                            "rss_kb": st.rss_kb,
                        })).collect::<Vec<_>>(),
                    }),
                    Outcome::Relink(r) => json!({
                        "status": "ok",
                        "server": r.server,
                        "rounds_ns": r.rounds.iter().map(|d| d.as_nanos() as u64).collect::<Vec<_>>(),
                        "median_ns": r.median().map(|d| d.as_nanos() as u64),
                        "max_ns": r.max().map(|d| d.as_nanos() as u64),
                    }),
                    Outcome::Catchup(r) => r.json(),
                    Outcome::Herdsize(r) => r.json(),
                    Outcome::Skipped(why) => json!({"status": "skipped", "reason": why}),
                    Outcome::Failed(why) => json!({"status": "failed", "error": why}),
                };
                if let (Some(obj), Value::Object(more)) = (v.as_object_mut(), extra) {
                    obj.extend(more);
                }
                v
            })
            .collect();
        let metrics: Vec<Value> = self
            .metrics()
            .into_iter()
            .map(|m| {
                json!({
                    "metric": m.name,
                    "unit": m.unit,
                    "higher_is_better": m.higher_is_better,
                    "values": m.values.iter().map(|(i, v)| json!({"implementation": i, "value": v})).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "header": {
                "date": h.date,
                "nproc": h.nproc,
                "kernel": h.kernel,
                "commit": h.commit,
                "loadavg": h.loadavg,
                "servers": h.servers_from.as_deref().unwrap_or("release builds"),
                "servers_log": true,
                "bench_build": h.bench_build,
                "setup": h.setup,
                "duration_s": h.duration_s,
                "warmup_s": h.warmup_s,
                "connections": h.connections,
                "depth": h.depth,
                "clients": h.clients,
                "idle": h.idle,
                "gc_rate": h.gc_rate,
            },
            "results": results,
            "metrics": metrics,
        })
    }
}

fn load_json(r: &LoadResult) -> Value {
    json!({
        "status": "ok",
        "connections": r.connections,
        "replies": r.replies,
        "errors": r.errors,
        "first_error": r.first_error,
        "lost_connections": r.lost,
        "seconds": r.seconds,
        "throughput": r.throughput(),
        "latency_ns": latency_json(r.latency.as_ref()),
        "herd_cpu_ns": r.cpu_ns,
        "herd_cpu_us_per_reply": r.cpu_us_per_reply(),
        "servers": r.servers.iter().map(|c| json!({
            "name": c.name,
            "cpu_ns": c.cpu_ns,
            "peer_updates": c.peer_updates,
            "us_per_update": c.us_per_update(),
            "log_lines": c.log_lines,
            "log_bytes": c.log_bytes,
        })).collect::<Vec<_>>(),
        "us_per_peer_update_elsewhere": r.servers.first().and_then(|c| {
            crate::peercost::us_per_update_elsewhere(&r.servers, &c.name)
        }),
        "context_switches": r.sched.map(|sc| {
            let per = r.switches_per_reply();
            json!({
                "threads": sc.threads,
                "main_voluntary": sc.main.voluntary,
                "main_involuntary": sc.main.involuntary,
                "voluntary": sc.all.voluntary,
                "involuntary": sc.all.involuntary,
                "voluntary_per_reply": per.map(|p| p.0),
                "involuntary_per_reply": per.map(|p| p.1),
            })
        }),
    })
}

fn duration_ms(d: std::time::Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn latency_cells(l: Option<&Summary>) -> Vec<String> {
    match l {
        Some(l) => [l.p50, l.p90, l.p99, l.max].map(human_ns).to_vec(),
        None => vec!["-".into(); 4],
    }
}

fn latency_json(l: Option<&Summary>) -> Value {
    match l {
        Some(l) => {
            json!({"count": l.count, "p50": l.p50, "p90": l.p90, "p99": l.p99, "p999": l.p999, "max": l.max})
        }
        None => Value::Null,
    }
}

fn other_row(imp: &str, outcome: &Outcome) -> Vec<String> {
    let what = match outcome {
        Outcome::Skipped(why) => format!("skipped: {why}"),
        Outcome::Failed(why) => format!("FAILED: {why}"),
        _ => String::new(),
    };
    vec![imp.to_string(), what]
}

/// Left-aligned columns; a row shorter than the header (a skipped run) runs
/// its last cell across the rest.
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for row in rows.iter().filter(|r| r.len() == head.len()) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut s = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::from("  ");
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ", w = widths[i]);
            }
        }
        s.push_str(l.trim_end());
        s.push('\n');
    };
    line(head.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(tput_replies: u64) -> LoadResult {
        LoadResult {
            connections: 4,
            replies: tput_replies,
            errors: 0,
            first_error: None,
            lost: 0,
            seconds: 1.0,
            sched: None,
            marks: Vec::new(),
            cpu_ns: Some(tput_replies * 20_000),
            cpu_each_ns: Vec::new(),
            servers: Vec::new(),
            latency: Some(Summary {
                count: 3,
                p50: 1_000,
                p90: 2_000,
                p99: 3_000_000,
                p999: 3_500_000,
                max: 4_000_000,
            }),
        }
    }

    fn report() -> Report {
        let m = |imp: &str, scenario, outcome| Measurement {
            implementation: imp.into(),
            scenario,
            outcome,
        };
        Report {
            header: Header::default(),
            measurements: vec![
                m("rust", Scenario::Iamat, Outcome::Load(load(4000))),
                m("asyncio", Scenario::Iamat, Outcome::Load(load(1000))),
                m(
                    "uvloop",
                    Scenario::Iamat,
                    Outcome::Skipped("no uvloop".into()),
                ),
            ],
        }
    }

    #[test]
    fn text_has_the_figures_and_the_ratio() {
        let t = report().text();
        assert!(t.contains("4000"), "{t}");
        assert!(t.contains("3.00ms"), "{t}");
        assert!(t.contains("skipped: no uvloop"), "{t}");
        assert!(t.contains("rust/asyncio  4.00   rust"), "{t}");
    }

    #[test]
    fn each_servers_cpu_and_the_cost_per_peer_update_are_reported() {
        let mut r = report();
        if let Outcome::Load(l) = &mut r.measurements[0].outcome {
            let s = |name: &str, ms: u64, peer_updates| crate::peercost::ServerCost {
                name: name.into(),
                cpu_ns: Some(ms * 1_000_000),
                peer_updates,
                log_lines: 2 * peer_updates,
                log_bytes: 100 * peer_updates,
            };
            l.servers = vec![
                s("Riley", 900, 8000),
                s("Jaquez", 10, 8000),
                s("Juzang", 14, 8000),
            ];
        }
        let t = r.text();
        assert!(t.contains("rust  Jaquez  10"), "{t}");
        assert!(
            t.contains("rust: 1.50 µs of CPU per peer update at the servers other than Riley"),
            "{t}"
        );
        let j = r.json();
        assert_eq!(j["results"][0]["us_per_peer_update_elsewhere"], 1.5, "{j}");
        assert_eq!(j["results"][0]["servers"][1]["peer_updates"], 8000, "{j}");
    }

    #[test]
    fn json_has_the_figures() {
        let j = report().json();
        let r = &j["results"];
        assert_eq!(r[0]["implementation"], "rust");
        assert_eq!(r[0]["scenario"], "iamat");
        assert_eq!(r[0]["throughput"].as_f64(), Some(4000.0));
        assert_eq!(r[0]["latency_ns"]["p99"].as_u64(), Some(3_000_000));
        assert_eq!(r[2]["status"], "skipped");
        assert_eq!(j["metrics"][0]["values"][1]["value"].as_f64(), Some(1000.0));
    }

    #[test]
    fn what_tls_adds_is_reported_beside_plaintext() {
        let relink = |ms: [u64; 3]| {
            Outcome::Relink(RelinkResult {
                server: "Campbell",
                rounds: ms.map(std::time::Duration::from_millis).to_vec(),
            })
        };
        let mut tls = load(2000);
        tls.cpu_ns = Some(2000 * 26_000);
        let r = Report {
            header: Header::default(),
            measurements: vec![
                Measurement {
                    implementation: "rust".into(),
                    scenario: Scenario::Iamat,
                    outcome: Outcome::Load(load(4000)),
                },
                Measurement {
                    implementation: "rust+tls".into(),
                    scenario: Scenario::Iamat,
                    outcome: Outcome::Load(tls),
                },
                Measurement {
                    implementation: "rust".into(),
                    scenario: Scenario::Relink,
                    outcome: relink([5, 3, 9]),
                },
                Measurement {
                    implementation: "rust+tls".into(),
                    scenario: Scenario::Relink,
                    outcome: relink([12, 30, 10]),
                },
            ],
        };
        let t = r.text();
        assert!(
            t.contains("iamat herd CPU per update  20.0 us    26.0 us  +6.0 us"),
            "{t}"
        );
        assert!(
            t.contains("iamat replies/s            4000       2000     -50.0%"),
            "{t}"
        );
        assert!(
            t.contains("relink median              5.0 ms     12.0 ms  +7.0 ms"),
            "{t}"
        );
        assert!(
            t.contains("rust+tls  Campbell  12.0 ms  30.0 ms  12.0 ms 30.0 ms 10.0 ms"),
            "{t}"
        );
    }

    #[test]
    fn tables_align() {
        let t = table(&["a", "bb"], &[vec!["xxx".into(), "1".into()]]);
        assert_eq!(t, "  a    bb\n  xxx  1\n");
    }
}
