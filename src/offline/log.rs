//! The request log: one line per request and per completed TLS handshake,
//! each starting with an RFC 3339 UTC timestamp. Buffered; the loop flushes
//! it after every batch of events and on a clean stop. What goes into a line
//! is decided in [`super::server`]; redacting the key is [`redact_key`].

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// An append-only, buffered log file (or nothing, when no `--log` was given).
#[derive(Debug)]
pub struct Log(Option<BufWriter<File>>);

impl Log {
    /// A log that drops every line.
    pub fn disabled() -> Log {
        Log(None)
    }

    /// Opens `path` for appending, creating it and its folder if needed.
    pub fn open(path: &Path) -> io::Result<Log> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Log(Some(BufWriter::new(file))))
    }

    /// Appends one line, prefixed with the current time.
    pub fn line(&mut self, text: &str) {
        if let Some(w) = &mut self.0 {
            // A log that cannot be written must not stop the service.
            let _ = writeln!(w, "{} {text}", rfc3339_now());
        }
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) {
        if let Some(w) = &mut self.0 {
            let _ = w.flush();
        }
    }
}

/// The current UTC time as RFC 3339 with microseconds.
pub fn rfc3339_now() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(since.as_secs(), since.subsec_micros())
}

/// Formats seconds since the epoch (UTC) plus microseconds as RFC 3339.
pub fn rfc3339(secs: u64, micros: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The request target with every `key` parameter's value replaced by `***`,
/// so an API key never reaches the log.
pub fn redact_key(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_string();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|part| match part.split_once('=') {
            Some((name, _)) if name == "key" => format!("{name}=***"),
            _ => part.to_string(),
        })
        .collect();
    format!("{path}?{}", parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(1_621_464_827, 959_498),
            "2021-05-19T22:53:47.959498Z"
        );
        assert_eq!(rfc3339(951_782_400, 1), "2000-02-29T00:00:00.000001Z");
    }

    #[test]
    fn redacts_only_the_key() {
        assert_eq!(
            redact_key("/x/json?location=1,2&key=SECRET&radius=5"),
            "/x/json?location=1,2&key=***&radius=5"
        );
        assert_eq!(redact_key("/x/json?monkey=1"), "/x/json?monkey=1");
        assert_eq!(redact_key("/plain"), "/plain");
    }
}
