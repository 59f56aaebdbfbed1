//! The runtimes' own accounts of their garbage collections, read back from
//! the files the `gc` scenario asks them to write (see
//! [`super::launch::gc_trace`]):
//!
//! - Java, `-Xlog:gc:file=F`: `[0.512s][info][gc] GC(3) Pause Young (Normal)
//!   (G1 Evacuation Pause) 23M->4M(254M) 3.456ms`. Only `Pause` lines stop
//!   the application; concurrent phases are left out.
//! - Node, `--trace-gc` (on stdout): `[123:0x55d0]  1523 ms: Scavenge 9.8
//!   (12.1) -> 8.9 (13.1) MB, 1.20 / 0.00 ms  (average mu = ...)`; the pause
//!   is the first figure after `MB,`.
//! - Python, `gc.callbacks` (the threads herd's `HERD_GC_LOG=1` in its log,
//!   the bench's wrapper for the asyncio herd): `gc: generation 2 collected
//!   0 objects in 1.204 ms`.
//!
//! Pure: text in, figures out.

/// Which format a file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcFormat {
    Java,
    Node,
    Python,
}

impl GcFormat {
    /// How the report names the source of the figures.
    pub fn source(self) -> &'static str {
        match self {
            GcFormat::Java => "-Xlog:gc",
            GcFormat::Node => "--trace-gc",
            GcFormat::Python => "gc.callbacks",
        }
    }
}

/// The collections a log shows.
#[derive(Debug, Clone, PartialEq)]
pub struct GcAccount {
    pub source: &'static str,
    pub collections: u64,
    pub total_pause_ms: f64,
    pub max_pause_ms: f64,
}

/// One collection's pause in milliseconds, if `line` reports one.
pub fn pause_ms(format: GcFormat, line: &str) -> Option<f64> {
    match format {
        GcFormat::Java => {
            let (_, rest) = line.split_once("] GC(")?;
            if !rest.contains(" Pause ") {
                return None;
            }
            rest.split_whitespace()
                .last()?
                .strip_suffix("ms")?
                .parse()
                .ok()
        }
        GcFormat::Node => {
            let (_, rest) = line.split_once(" ms: ")?;
            let (_, after) = rest.split_once(" MB, ")?;
            after.split_whitespace().next()?.parse().ok()
        }
        GcFormat::Python => {
            let (_, rest) = line.split_once("gc: generation ")?;
            let (_, pause) = rest.rsplit_once(" objects in ")?;
            pause.strip_suffix(" ms")?.trim().parse().ok()
        }
    }
}

/// Sums the pauses in `text`.
pub fn account(format: GcFormat, text: &str) -> GcAccount {
    let mut a = GcAccount {
        source: format.source(),
        collections: 0,
        total_pause_ms: 0.0,
        max_pause_ms: 0.0,
    };
    for p in text.lines().filter_map(|l| pause_ms(format, l.trim_end())) {
        a.collections += 1;
        a.total_pause_ms += p;
        a.max_pause_ms = a.max_pause_ms.max(p);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_pauses_only() {
        let log = "[0.010s][info][gc] Using G1\n\
            [0.512s][info][gc] GC(0) Pause Young (Normal) (G1 Evacuation Pause) 23M->4M(254M) 3.456ms\n\
            [0.900s][info][gc] GC(1) Concurrent Mark Cycle 12.000ms\n\
            [1.100s][info][gc] GC(2) Pause Remark 10M->10M(254M) 1.044ms\n";
        let a = account(GcFormat::Java, log);
        assert_eq!(a.collections, 2);
        assert!((a.total_pause_ms - 4.5).abs() < 1e-9, "{a:?}");
        assert!((a.max_pause_ms - 3.456).abs() < 1e-9);
        assert_eq!(a.source, "-Xlog:gc");
    }

    #[test]
    fn node_trace_gc() {
        let log = "[4242:0x55d0c1e0]       36 ms: Scavenge 4.2 (4.5) -> 3.9 (5.5) MB, 0.66 / 0.00 ms  \
            (average mu = 1.000, current mu = 1.000) allocation failure;\n\
            [4242:0x55d0c1e0]     2036 ms: Mark-Compact 9.1 (12.0) -> 6.0 (11.0) MB, 4.10 / 0.02 ms  \
            (+ 1.2 ms in 3 steps since start of marking) finalize incremental marking;\n\
            not a gc line\n";
        let a = account(GcFormat::Node, log);
        assert_eq!(a.collections, 2);
        assert!((a.max_pause_ms - 4.1).abs() < 1e-9, "{a:?}");
    }

    #[test]
    fn python_callbacks() {
        let log = "2026-12-01T22:00:00.000001Z gc: generation 0 collected 12 objects in 0.250 ms\n\
            2026-12-01T22:00:01.000001Z client 127.0.0.1:5 connected\n\
            gc: generation 2 collected 0 objects in 1.204 ms\n";
        let a = account(GcFormat::Python, log);
        assert_eq!(a.collections, 2);
        assert!((a.max_pause_ms - 1.204).abs() < 1e-9);
        assert_eq!(account(GcFormat::Python, "").collections, 0);
    }
}
