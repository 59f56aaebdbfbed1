//! The state file (`--state FILE`): positions kept across restarts.
//!
//! One record a line, appended whenever a position becomes new:
//!
//! ```text
//! P 6c5d0e0b8a3f21c4 AT Riley +0.263873386 kiwi +34.068930-118.445127 1621464827.959498503
//! ```
//!
//! The hex field is the FNV-1a 64 checksum of the AT line. A record that does
//! not end in `\n` or whose checksum does not match (a write cut short by a
//! power cut, a damaged disk) is skipped, never trusted; a torn last record is
//! cut off the file before anything is appended after it.
//!
//! Records are written to the file before the turn's replies are sent, so a
//! position that a client saw acknowledged is in the kernel's hands even if
//! the process is killed the next instant. (Surviving a power cut as well would
//! need an `fsync` per turn; compaction does sync.) The file is rewritten with
//! only the live positions once it holds many more records than positions.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::protocol::peer::{parse_update, Update};

/// Compaction waits until the file holds this many more records than positions.
const COMPACT_SLACK: u64 = 10_000;

/// What was found in the file at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub positions: Vec<Update>,
    /// Records skipped for a bad checksum or a bad AT line.
    pub skipped: usize,
    /// Bytes of a torn last record that were cut off.
    pub torn_bytes: usize,
}

/// The open state file and the records waiting to be written.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    records: u64,
    /// The file's length after the last write that succeeded: a failed
    /// write is cut back to it, so no torn record is left mid-file.
    len: u64,
}

/// FNV-1a, 64 bits: enough to tell a damaged record, and no crate needed.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Appends the record for `at_line`.
pub fn write_record(out: &mut Vec<u8>, at_line: &[u8]) {
    out.extend_from_slice(format!("P {:016x} ", fnv1a64(at_line)).as_bytes());
    out.extend_from_slice(at_line);
    out.push(b'\n');
}

/// Parses one record (without its `\n`); `None` if it cannot be trusted.
pub fn parse_record(line: &[u8]) -> Option<Update> {
    let rest = line.strip_prefix(b"P ")?;
    let (sum, at_line) = (rest.get(..16)?, rest.get(17..)?);
    if rest.get(16) != Some(&b' ') {
        return None;
    }
    let sum = u64::from_str_radix(std::str::from_utf8(sum).ok()?, 16).ok()?;
    if sum != fnv1a64(at_line) {
        return None;
    }
    parse_update(at_line).filter(|u| u.at_line == at_line)
}

impl StateFile {
    /// Opens (or creates) the file, reads what it holds, and cuts off a torn
    /// last record.
    pub fn open(path: &Path) -> io::Result<(StateFile, Loaded)> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        let complete = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut loaded = Loaded {
            torn_bytes: data.len() - complete,
            ..Loaded::default()
        };
        if loaded.torn_bytes > 0 {
            file.set_len(complete as u64)?;
        }
        let mut records = 0;
        for line in data[..complete]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
        {
            records += 1;
            match parse_record(line) {
                Some(update) => loaded.positions.push(update),
                None => loaded.skipped += 1,
            }
        }
        let len = file.metadata()?.len();
        let state = StateFile {
            path: path.to_path_buf(),
            file,
            buf: Vec::new(),
            records,
            len,
        };
        Ok((state, loaded))
    }

    /// Queues the record of a new position.
    pub fn record(&mut self, at_line: &[u8]) {
        write_record(&mut self.buf, at_line);
        self.records += 1;
    }

    /// Writes the queued records (to the kernel; see the module comment).
    /// On failure (ENOSPC, EIO) they are dropped and the file is cut back to
    /// what was whole before, so later records still parse.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = self.file.write_all(&self.buf);
        match &result {
            Ok(()) => self.len += self.buf.len() as u64,
            Err(_) => {
                let _ = self.file.set_len(self.len);
            }
        }
        self.buf.clear();
        result
    }

    /// True when records are queued and not yet written.
    pub fn has_pending(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Records and writes one position at once: the caller acknowledges it
    /// only if this succeeds.
    pub fn write_now(&mut self, at_line: &[u8]) -> io::Result<()> {
        self.record(at_line);
        self.flush()
    }

    /// True once the file holds many more records than the `live` positions.
    pub fn wants_compaction(&self, live: usize) -> bool {
        self.records > 2 * live as u64 + COMPACT_SLACK
    }

    /// Rewrites the file with just `positions`: a new file, synced, renamed
    /// over the old one, so a crash at any point leaves one whole file.
    pub fn compact<'a>(&mut self, positions: impl Iterator<Item = &'a [u8]>) -> io::Result<()> {
        self.flush()?;
        let tmp = self.path.with_extension("compacting");
        let mut out = Vec::new();
        let mut records = 0;
        for at_line in positions {
            write_record(&mut out, at_line);
            records += 1;
        }
        let mut file = File::create(&tmp)?;
        file.write_all(&out)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.records = records;
        self.len = out.len() as u64;
        Ok(())
    }
}

impl StateFile {
    /// Unit tests: every write fails from now on, as on a full disk.
    #[cfg(test)]
    pub(crate) fn fail_writes(&mut self) -> io::Result<()> {
        self.file = OpenOptions::new().append(true).open("/dev/full")?;
        Ok(())
    }

    /// Unit tests: writes go to the real file again (space came back).
    #[cfg(test)]
    pub(crate) fn heal(&mut self) -> io::Result<()> {
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: &[u8] = b"AT Riley +0.263873386 kiwi +34.068930-118.445127 1621464827.959498503";

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("proxy-herd-state-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("state")
    }

    #[test]
    fn records_round_trip_and_damage_is_refused() {
        let mut out = Vec::new();
        write_record(&mut out, AT);
        let line = &out[..out.len() - 1];
        assert_eq!(parse_record(line).unwrap().at_line, AT);
        let mut damaged = line.to_vec();
        let last = damaged.len() - 1;
        damaged[last] = b'4';
        assert_eq!(parse_record(&damaged), None);
        assert_eq!(parse_record(&line[..line.len() - 3]), None);
        assert_eq!(parse_record(b"P 0000 AT"), None);
        assert_eq!(parse_record(b""), None);
    }

    #[test]
    fn positions_survive_reopening_and_a_torn_tail_is_cut() {
        let path = temp("torn");
        let (mut s, loaded) = StateFile::open(&path).unwrap();
        assert!(loaded.positions.is_empty());
        s.record(AT);
        s.record(b"AT Jaquez +0.000000001 pear +1-1 5");
        s.flush().unwrap();
        drop(s);
        // A power cut in the middle of a third record.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"P 0123456789abcdef AT Riley +0.1").unwrap();
        drop(f);
        let (mut s, loaded) = StateFile::open(&path).unwrap();
        assert_eq!(loaded.positions.len(), 2);
        assert_eq!(loaded.torn_bytes, 32);
        // What comes next is not glued to the torn bytes.
        s.record(b"AT Juzang +0.000000001 fig +1-1 6");
        s.flush().unwrap();
        drop(s);
        let (_, loaded) = StateFile::open(&path).unwrap();
        assert_eq!(loaded.positions.len(), 3);
        assert_eq!((loaded.skipped, loaded.torn_bytes), (0, 0));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn compaction_keeps_only_what_is_given() {
        let path = temp("compact");
        let (mut s, _) = StateFile::open(&path).unwrap();
        for _ in 0..5 {
            s.record(AT);
        }
        s.compact([AT].into_iter()).unwrap();
        s.record(b"AT Jaquez +0.000000001 pear +1-1 5");
        s.flush().unwrap();
        let (_, loaded) = StateFile::open(&path).unwrap();
        assert_eq!(loaded.positions.len(), 2);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
