//! What the kernel says about a server process: its threads and their
//! context switches, from `/proc/PID/task/*/status`.
//!
//! `/proc/PID/status` counts the switches of the main thread only, so a
//! threaded server (Java, Python threads, and the worker threads of Node and
//! the JVM) must be summed over its tasks. Threads that exit while a window
//! is open take their counts with them; the servers measured here keep a
//! client's thread for as long as its connection, and the load keeps its
//! connections open, so only short-lived helpers are lost.
//!
//! The parsers are pure and unit-tested; [`sched`] reads the files.

/// One `status` file's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Switches {
    /// The task gave up the CPU itself (blocked in `epoll_wait`, `read`,
    /// a lock, a condition variable).
    pub voluntary: u64,
    /// The scheduler took the CPU away (time slice over, another task woke).
    pub involuntary: u64,
}

impl Switches {
    pub fn total(self) -> u64 {
        self.voluntary + self.involuntary
    }

    /// `self - earlier`, per field, never below zero (a thread that exited
    /// in between can make a sum shrink).
    pub fn since(self, earlier: Switches) -> Switches {
        Switches {
            voluntary: self.voluntary.saturating_sub(earlier.voluntary),
            involuntary: self.involuntary.saturating_sub(earlier.involuntary),
        }
    }
}

/// A process at one moment: its main thread, all of its threads summed, and
/// how many threads it has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sched {
    pub main: Switches,
    pub all: Switches,
    pub threads: u64,
}

impl Sched {
    /// The switches between `earlier` and `self`; the threads now.
    pub fn since(self, earlier: Sched) -> Sched {
        Sched {
            main: self.main.since(earlier.main),
            all: self.all.since(earlier.all),
            threads: self.threads,
        }
    }
}

/// The two context-switch counters of a `/proc/.../status` text.
pub fn parse_switches(status: &str) -> Option<Switches> {
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .parse()
            .ok()
    };
    Some(Switches {
        voluntary: field("voluntary_ctxt_switches:")?,
        involuntary: field("nonvoluntary_ctxt_switches:")?,
    })
}

/// The `Threads:` figure of a `/proc/PID/status` text.
pub fn parse_threads(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}

/// Reads process `pid`'s threads and switches; `None` if it is gone.
pub fn sched(pid: u32) -> Option<Sched> {
    let main_status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let main = parse_switches(&main_status)?;
    let mut all = Switches::default();
    let mut tasks = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        // A thread may exit between the listing and the read: skip it.
        let Ok(text) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        if let Some(s) = parse_switches(&text) {
            all.voluntary += s.voluntary;
            all.involuntary += s.involuntary;
            tasks += 1;
        }
    }
    Some(Sched {
        main,
        all,
        threads: parse_threads(&main_status).unwrap_or(tasks),
    })
}

/// Nanoseconds on a CPU so far, all of the process's threads summed (the
/// first field of each `/proc/PID/task/*/schedstat`): finer than the clock
/// ticks of `/proc/PID/stat`, so a few seconds of load measure a
/// microsecond per request.
pub fn cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        // A thread may exit between the listing and the read: skip it.
        let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        total += parse_schedstat(&text).unwrap_or(0);
    }
    Some(total)
}

/// Nanoseconds on a CPU and waiting for one (runnable, on the run queue)
/// so far, all threads summed (`/proc/PID/task/*/schedstat`'s first two
/// fields): the wait says whether a late reply was the loop's work or the
/// scheduler's.
pub fn run_and_wait_ns(pid: u32) -> Option<(u64, u64)> {
    let (mut run, mut wait) = (0, 0);
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        let mut f = text.split_whitespace().map(|x| x.parse::<u64>().ok());
        if let (Some(Some(r)), Some(Some(w))) = (f.next(), f.next()) {
            run += r;
            wait += w;
        }
    }
    Some((run, wait))
}

/// The time on a CPU, in ns, from a `schedstat` text.
pub fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tjava\nThreads:\t21\nVmRSS:\t 4242 kB\n\
        voluntary_ctxt_switches:\t150\nnonvoluntary_ctxt_switches:\t7\n";

    #[test]
    fn reads_switches_and_threads() {
        assert_eq!(
            parse_switches(STATUS),
            Some(Switches {
                voluntary: 150,
                involuntary: 7
            })
        );
        assert_eq!(parse_threads(STATUS), Some(21));
        assert_eq!(
            parse_switches("Name: x\nvoluntary_ctxt_switches: 3\n"),
            None
        );
        assert_eq!(parse_threads("Threads: many\n"), None);
    }

    #[test]
    fn differences_do_not_go_negative() {
        let a = Switches {
            voluntary: 10,
            involuntary: 5,
        };
        let b = Switches {
            voluntary: 14,
            involuntary: 3,
        };
        assert_eq!(
            b.since(a),
            Switches {
                voluntary: 4,
                involuntary: 0
            }
        );
        assert_eq!(b.total(), 17);
    }

    #[test]
    fn own_process_is_readable() {
        let s = sched(std::process::id()).expect("own /proc");
        assert!(s.threads >= 1);
        assert!(s.all.total() >= s.main.total());
    }

    #[test]
    fn schedstat_gives_the_time_on_a_cpu() {
        assert_eq!(parse_schedstat("5093340 1213 44\n"), Some(5093340));
        assert_eq!(parse_schedstat(""), None);
        assert!(cpu_ns(std::process::id()).is_some_and(|ns| ns > 0));
    }
}
