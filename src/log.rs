//! The event log (docs/spec.md §6): one line per event, each starting with an
//! RFC 3339 UTC timestamp with microseconds.
//!
//! Lines go into a memory buffer; the event loop calls [`Log::flush`] once per
//! turn and on stop, so a busy turn costs one `write` to the file, not one per
//! line. Writing a regular file does not wait on the network, so the loop is
//! never held for long; a buffer past [`FLUSH_AT`] is written early to bound
//! memory. Client bytes are escaped ([`Escaped`]) so one event stays one line.
//!
//! [`Log::reopen`] is for log rotation (`SIGHUP`, docs/logging.md): what is
//! buffered goes to the old file, then the path is opened again, so a
//! `logrotate` that renamed the file (its default `create` mode) loses no line.

use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A buffer this large is written at once rather than at the end of the turn.
pub const FLUSH_AT: usize = 256 * 1024;

/// An append-only log file with a buffer in front of it.
#[derive(Debug)]
pub struct Log {
    file: Option<File>,
    /// Where `file` was opened, for [`Log::reopen`].
    path: Option<PathBuf>,
    buf: Vec<u8>,
    /// `2026-11-22T05:50:00.` for the second last stamped, so most lines
    /// format only their microseconds.
    stamp: (u64, String),
    /// The current line stamp (`...00.123456Z `), made once per loop turn:
    /// see [`Log::tick`].
    now: Option<[u8; STAMP_LEN]>,
}

/// `2026-11-22T05:50:00.123456Z ` (with the space).
const STAMP_LEN: usize = 28;

/// A piece of a hot log line (see [`Log::line`]).
#[derive(Debug, Clone, Copy)]
pub enum Part<'a> {
    Str(&'a str),
    /// Bytes from the network, escaped as [`Escaped`] does.
    Bytes(&'a [u8]),
    Num(u64),
}

impl Log {
    /// Opens (appending) `path`, creating its folder.
    pub fn open(path: &Path) -> io::Result<Log> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Log {
            file: Some(open_append(path)?),
            path: Some(path.to_path_buf()),
            buf: Vec::with_capacity(FLUSH_AT),
            stamp: (u64::MAX, String::new()),
            now: None,
        })
    }

    /// A log that keeps nothing (unit tests, benchmarks of the bare loop).
    pub fn discard() -> Log {
        Log {
            file: None,
            path: None,
            buf: Vec::new(),
            stamp: (u64::MAX, String::new()),
            now: None,
        }
    }

    /// Appends one event, stamped with the current time.
    pub fn event(&mut self, args: fmt::Arguments) {
        if self.file.is_none() {
            return;
        }
        self.stamp_now();
        // Writing into a Vec cannot fail.
        let _ = io::Write::write_fmt(&mut self.buf, args);
        self.end_line();
    }

    /// Appends one event made of `parts`, without `core::fmt`: for the lines
    /// written for every message (a line received, a reply, an update sent),
    /// where formatting machinery was a tenth of a busy server's time.
    pub fn line(&mut self, parts: &[Part]) {
        if self.file.is_none() {
            return;
        }
        self.stamp_now();
        for part in parts {
            match *part {
                Part::Str(s) => self.buf.extend_from_slice(s.as_bytes()),
                Part::Bytes(b) => push_escaped(&mut self.buf, b),
                Part::Num(n) => push_num(&mut self.buf, n),
            }
        }
        self.end_line();
    }

    /// A new loop turn: the next line takes a fresh timestamp ([`Log::flush`]
    /// does the same). The lines logged in between share it, so a line
    /// costs one copy of its bytes, not a clock read and a conversion each
    /// (docs/logging.md).
    pub fn tick(&mut self) {
        self.now = None;
    }

    fn stamp_now(&mut self) {
        let stamp = match self.now {
            Some(stamp) => stamp,
            None => {
                let stamp = self.make_stamp();
                self.now = Some(stamp);
                stamp
            }
        };
        self.buf.extend_from_slice(&stamp);
    }

    fn make_stamp(&mut self) -> [u8; STAMP_LEN] {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        if self.stamp.0 != d.as_secs() {
            let mut prefix = String::with_capacity(27);
            write_timestamp(&mut prefix, UNIX_EPOCH + Duration::from_secs(d.as_secs()));
            prefix.truncate(prefix.len() - "000000Z".len());
            self.stamp = (d.as_secs(), prefix);
        }
        let mut stamp = [b' '; STAMP_LEN];
        let prefix = self.stamp.1.as_bytes();
        let n = prefix.len().min(STAMP_LEN - 8);
        stamp[..n].copy_from_slice(&prefix[..n]);
        let mut m = d.subsec_micros();
        for slot in stamp[n..n + 6].iter_mut().rev() {
            *slot = b'0' + (m % 10) as u8;
            m /= 10;
        }
        stamp[n + 6] = b'Z';
        stamp
    }

    fn end_line(&mut self) {
        self.buf.push(b'\n');
        if self.buf.len() >= FLUSH_AT {
            self.flush();
        }
    }

    /// Writes the buffer out. A failing log disk must not stop the server, so
    /// the error is reported on stderr and the lines are dropped.
    pub fn flush(&mut self) {
        // What is logged after a flush is stamped afresh.
        self.now = None;
        if self.buf.is_empty() {
            return;
        }
        if let Some(file) = self.file.as_mut() {
            if let Err(e) = file.write_all(&self.buf) {
                eprintln!("proxy-herd: cannot write the log: {e}");
            }
        }
        self.buf.clear();
    }
}

impl Log {
    /// Writes out what is buffered, then opens the log's path again
    /// (appending, creating it): after a rotation renamed the file, later
    /// lines go to a new file at the old name. On failure the old file is
    /// kept, so no line is lost, and the error is returned. A discarding log
    /// has nothing to reopen.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.flush();
        let Some(path) = self.path.as_ref() else {
            return Ok(());
        };
        self.file = Some(open_append(path)?);
        Ok(())
    }
}

/// Opens `path` for appending, creating it (not its folder).
fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Drop for Log {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Writes `t` as `2026-11-22T05:50:00.123456Z`.
pub fn write_timestamp(out: &mut String, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    );
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch.
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Appends `n` in decimal.
fn push_num(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends bytes as [`Escaped`] displays them: runs of printable ASCII are
/// copied as they are (lines are mostly that), anything else as `\xNN`.
fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    // Nearly always all plain: one check without an early exit (which the
    // compiler vectorises), then one copy.
    if bytes.iter().fold(true, |plain, &b| plain & is_plain(b)) {
        out.extend_from_slice(bytes);
        return;
    }
    let mut rest = bytes;
    while !rest.is_empty() {
        let run = rest.iter().take_while(|b| is_plain(**b)).count();
        let (text, tail) = rest.split_at(run);
        out.extend_from_slice(text);
        let Some((&b, tail)) = tail.split_first() else {
            break;
        };
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.extend_from_slice(&[
            b'\\',
            b'x',
            HEX[usize::from(b >> 4)],
            HEX[usize::from(b & 15)],
        ]);
        rest = tail;
    }
}

/// Printable ASCII other than the backslash: logged as it is.
fn is_plain(b: u8) -> bool {
    (0x20..0x7f).contains(&b) && b != b'\\'
}

/// Displays bytes from the network on one line: printable ASCII as is,
/// anything else (and `\`) as `\xNN`.
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let mut rest = self.0;
        while !rest.is_empty() {
            // Write each run of printable ASCII in one go: lines are mostly that.
            let run = rest.iter().take_while(|b| is_plain(**b)).count();
            let (text, tail) = rest.split_at(run);
            f.write_str(std::str::from_utf8(text).map_err(|_| fmt::Error)?)?;
            let Some((&b, tail)) = tail.split_first() else {
                break;
            };
            write!(f, "\\x{b:02x}")?;
            rest = tail;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn stamp(secs: u64, micros: u64) -> String {
        let mut s = String::new();
        write_timestamp(
            &mut s,
            UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros),
        );
        s
    }

    #[test]
    fn rfc3339_with_microseconds() {
        assert_eq!(stamp(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(stamp(1_621_464_827, 959_498), "2021-05-19T22:53:47.959498Z");
        assert_eq!(stamp(951_782_400, 1), "2000-02-29T00:00:00.000001Z");
        assert_eq!(stamp(4_102_444_799, 999_999), "2099-12-31T23:59:59.999999Z");
    }

    #[test]
    fn parts_make_the_same_line_as_format() {
        let dir = std::env::temp_dir().join(format!("proxy-herd-log-parts-{}", std::process::id()));
        let path = dir.join("p.log");
        let mut log = Log::open(&path).unwrap();
        log.line(&[
            Part::Str("client#"),
            Part::Num(0),
            Part::Str(" < "),
            Part::Bytes(b"a\xff"),
        ]);
        log.line(&[Part::Num(u64::MAX), Part::Num(1_000_000)]);
        log.event(format_args!("client#{} < {}", 0, Escaped(b"a\xff")));
        log.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(&lines[0][28..], "client#0 < a\\xff");
        assert_eq!(&lines[1][28..], "184467440737095516151000000");
        assert_eq!(&lines[0][28..], &lines[2][28..]);
        for line in &lines {
            assert_eq!(line.as_bytes()[27], b' ');
            assert!(
                line[..27].ends_with('Z') && line.as_bytes()[19] == b'.',
                "{line}"
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn escaped_bytes_stay_on_one_line() {
        assert_eq!(Escaped(b"ok \\ \n\xff").to_string(), "ok \\x5c \\x0a\\xff");
    }

    #[test]
    fn reopen_after_a_rename_loses_no_line() {
        let dir =
            std::env::temp_dir().join(format!("proxy-herd-log-reopen-{}", std::process::id()));
        let path = dir.join("r.log");
        let rotated = dir.join("r.log.1");
        let mut log = Log::open(&path).unwrap();
        log.event(format_args!("one"));
        log.flush();
        // logrotate's `create` mode: rename, then tell the server.
        std::fs::rename(&path, &rotated).unwrap();
        log.event(format_args!("two")); // buffered: still owed to the old file
        log.reopen().unwrap();
        log.event(format_args!("three"));
        log.flush();
        let old = std::fs::read_to_string(&rotated).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            old.lines().map(|l| &l[28..]).collect::<Vec<_>>(),
            ["one", "two"]
        );
        assert_eq!(new.lines().map(|l| &l[28..]).collect::<Vec<_>>(), ["three"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_failed_reopen_keeps_the_old_file() {
        let dir =
            std::env::temp_dir().join(format!("proxy-herd-log-nofolder-{}", std::process::id()));
        let path = dir.join("gone").join("g.log");
        let mut log = Log::open(&path).unwrap();
        let kept = dir.join("kept.log");
        std::fs::rename(&path, &kept).unwrap();
        std::fs::remove_dir(dir.join("gone")).unwrap();
        assert!(log.reopen().is_err());
        log.event(format_args!("still here"));
        log.flush();
        assert!(std::fs::read_to_string(&kept)
            .unwrap()
            .ends_with("Z still here\n"));
        assert!(Log::discard().reopen().is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn lines_reach_the_file_on_flush() {
        let dir = std::env::temp_dir().join(format!("proxy-herd-log-{}", std::process::id()));
        let path = dir.join("sub").join("t.log");
        let mut log = Log::open(&path).unwrap();
        log.event(format_args!("hello {}", 1));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        log.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("Z hello 1\n"), "{text}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
