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
//! cut off the file before anything is appended after it. Records are applied
//! with the store's own rule, so their order in the file does not matter.
//!
//! Records are written to the file before the turn's replies are sent, so a
//! position that a client saw acknowledged is in the kernel's hands even if
//! the process is killed the next instant. (Surviving a power cut as well would
//! need an `fsync` per turn; compaction does sync.)
//!
//! **Compaction** rewrites the file with only the live positions once it holds
//! many more records than positions, without ever holding the loop for long:
//!
//! 1. [`StateFile::begin_compaction`] creates `FILE.compacting`;
//! 2. each [`StateFile::compact_step`] writes one slice of the store's lines
//!    there ([`Store::walk_entries`]: the store may change between slices), and every
//!    record appended meanwhile goes to both files, the old one first: until
//!    the rename the old file is the one a restart reads, and the new one
//!    misses nothing that happened after the walk passed;
//! 3. once the walk is done, a helper thread (as the resolver runs off the
//!    loop, `places/resolver.rs`) does the blocking part: `fsync` of the new
//!    file, `rename` over the old, `fsync` of the folder. Appends go on to
//!    both files meanwhile; a later step sees the thread's answer and drops
//!    the old file.
//!
//! A crash at any point leaves one whole file at FILE holding every record:
//! before the rename the old one, after it the new one.
//!
//! **Loading** reads the file in 1 MiB chunks and puts each record straight
//! into the store, checked without copying ([`parse_canonical_update`]): no
//! list of every record in memory first. [`StateFile::open_into`] does it all
//! at once; [`StateFile::open_for_loading`] and [`StateFile::load_step`] do
//! it in slices, so that clients are served from the start: the torn tail is
//! cut at open, appends go on after the records present then, and each step
//! reads a slice of those.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, TryRecvError};

use crate::herd::store::Store;
use crate::protocol::peer::{parse_canonical_update, Update};

/// Compaction waits until the file holds this many more records than positions.
const COMPACT_SLACK: u64 = 10_000;
/// How much of the file a load reads at once.
const READ_CHUNK: usize = 1 << 20;
/// Entries a compaction step may look at (bounds a step over free entries).
const ENTRIES_PER_STEP: u32 = 65_536;

/// What was found in the file at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub positions: Vec<Update>,
    /// Records skipped for a bad checksum or a bad AT line.
    pub skipped: usize,
    /// Bytes of a torn last record that were cut off.
    pub torn_bytes: usize,
}

/// What [`StateFile::open_into`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadStats {
    /// Good records read (each applied to the store).
    pub records: u64,
    /// Records skipped for a bad checksum or a bad AT line.
    pub skipped: u64,
    /// Bytes of a torn last record that were cut off.
    pub torn_bytes: u64,
    /// The file's size as read.
    pub bytes: u64,
}

/// Where a compaction stands, after a [`StateFile::compact_step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compacting {
    /// No compaction in progress.
    Idle,
    /// Copying the store: call again (each call is one slice).
    Copying,
    /// The copy is written; the helper thread syncs and renames it. Call
    /// again later (a heartbeat later is soon enough).
    Syncing,
    /// Done: the file now holds this many records.
    Done { records: u64 },
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
    compaction: Option<Compaction>,
    loading: Option<Loading>,
    /// What the load found, once it is over.
    loaded: LoadStats,
    /// The load was given up: the store lacks some of the file's records.
    incomplete: bool,
}

/// A compaction in progress: the new file and how far the copy is.
#[derive(Debug)]
struct Compaction {
    tmp: PathBuf,
    file: File,
    /// The next entry of the store to copy ([`Store::walk_entries`]).
    cursor: u32,
    /// Records in the new file: the copy's and the appends since it began,
    /// and its length.
    records: u64,
    len: u64,
    /// The helper thread's answer, once the copy is complete.
    synced: Option<Receiver<io::Result<()>>>,
}

/// FNV-1a, 64 bits: enough to tell a damaged record, and no crate needed.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Appends the record for `at_line`.
pub fn write_record(out: &mut Vec<u8>, at_line: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let sum = fnv1a64(at_line);
    out.extend_from_slice(b"P ");
    out.extend(
        (0..16)
            .rev()
            .map(|i| HEX[((sum >> (4 * i)) & 0xf) as usize]),
    );
    out.push(b' ');
    out.extend_from_slice(at_line);
    out.push(b'\n');
}

/// Checks one record (without its `\n`): its AT line, client ID and time, or
/// `None` if it cannot be trusted.
fn check_record(line: &[u8]) -> Option<(&[u8], &[u8], i128)> {
    let rest = line.strip_prefix(b"P ")?;
    let (sum, at_line) = (rest.get(..16)?, rest.get(17..)?);
    if rest.get(16) != Some(&b' ') {
        return None;
    }
    let sum = sum.iter().try_fold(0u64, |s, &d| {
        let d = char::from(d).to_digit(16)?;
        Some((s << 4) | u64::from(d))
    })?;
    if sum != fnv1a64(at_line) {
        return None;
    }
    let (client, time_ns) = parse_canonical_update(at_line)?;
    Some((at_line, client, time_ns))
}

/// Parses one record (without its `\n`); `None` if it cannot be trusted.
pub fn parse_record(line: &[u8]) -> Option<Update> {
    check_record(line).map(|(at_line, client, time_ns)| Update {
        client: client.to_vec(),
        time_ns,
        at_line: at_line.to_vec(),
    })
}

/// A trusted record: its AT line, client ID and client time.
type Record<'a> = (&'a [u8], &'a [u8], i128);

/// Records are handed over this many at a time.
const BATCH: usize = 32;

/// The file's records being read, a slice at a time ([`StateFile::load_step`]).
#[derive(Debug)]
struct Loading {
    /// A handle of its own for reading, so appends go on meanwhile.
    file: File,
    /// Where the records present at start end; appends come after.
    end: u64,
    pos: u64,
    buf: Vec<u8>,
    /// Bytes at the front of `buf` carried over from the last read: the
    /// start of a record whose end is in the next one.
    carried: usize,
    stats: LoadStats,
}

impl Loading {
    /// Reads about `budget` bytes of records, calling `good` for each batch
    /// of trusted ones. True once everything is read.
    fn step(&mut self, budget: usize, mut good: impl FnMut(&[Record])) -> io::Result<bool> {
        let mut read = 0;
        while self.pos < self.end && read < budget {
            let room = (self.buf.len() - self.carried)
                .min((self.end - self.pos) as usize)
                .min(budget - read);
            if room == 0 {
                // A record longer than the buffer (a damaged file): grow.
                self.buf.resize(self.buf.len() * 2, 0);
                continue;
            }
            let n = match self
                .file
                .read(&mut self.buf[self.carried..self.carried + room])
            {
                Ok(0) => {
                    // The file shrank under us: take what was read.
                    self.end = self.pos;
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.pos += n as u64;
            read += n;
            let filled = self.carried + n;
            let complete = self.buf[..filled]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            let mut batch = Vec::with_capacity(BATCH);
            for line in self.buf[..complete]
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
            {
                match check_record(line) {
                    Some(record) => {
                        self.stats.records += 1;
                        batch.push(record);
                        if batch.len() == BATCH {
                            good(&batch);
                            batch.clear();
                        }
                    }
                    None => self.stats.skipped += 1,
                }
            }
            good(&batch);
            self.buf.copy_within(complete..filled, 0);
            self.carried = filled - complete;
        }
        Ok(self.pos >= self.end)
    }
}

/// Where the records of a file of `len` bytes end: after its last `\n`.
fn complete_length(file: &mut File, len: u64) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let part = &mut chunk[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(part)?;
        if let Some(i) = part.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

fn open_file(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
}

impl StateFile {
    /// Opens (or creates) the file, reads what it holds, and cuts off a torn
    /// last record. (Holds every record in memory: [`StateFile::open_into`]
    /// does not.)
    pub fn open(path: &Path) -> io::Result<(StateFile, Loaded)> {
        let mut state = StateFile::open_for_loading(path)?;
        let mut positions = Vec::new();
        if let Some(loading) = state.loading.as_mut() {
            loading.step(usize::MAX, |batch| {
                positions.extend(batch.iter().map(|&(at_line, client, time_ns)| Update {
                    client: client.to_vec(),
                    time_ns,
                    at_line: at_line.to_vec(),
                }))
            })?;
        }
        let stats = state.finish_loading();
        let loaded = Loaded {
            positions,
            skipped: stats.skipped as usize,
            torn_bytes: stats.torn_bytes as usize,
        };
        Ok((state, loaded))
    }

    /// Opens (or creates) the file and puts what it holds straight into
    /// `store`, cutting off a torn last record.
    pub fn open_into(path: &Path, store: &mut Store) -> io::Result<(StateFile, LoadStats)> {
        let mut state = StateFile::open_for_loading(path)?;
        while !state.load_step(store, usize::MAX)? {}
        let stats = state.load_stats();
        Ok((state, stats))
    }

    /// Opens (or creates) the file, cuts off a torn last record, and is
    /// ready at once: records can be appended from now on, while what the
    /// file held is read in slices by [`StateFile::load_step`]. So a server
    /// serves its clients within milliseconds of its start, whatever the
    /// file's size. (Until the load is over the store lacks some positions;
    /// the store's rule makes the end state the same in any order.)
    pub fn open_for_loading(path: &Path) -> io::Result<StateFile> {
        let mut file = open_file(path)?;
        let len = file.metadata()?.len();
        let end = complete_length(&mut file, len)?;
        if end < len {
            file.set_len(end)?;
        }
        let reader = File::open(path)?;
        Ok(StateFile {
            path: path.to_path_buf(),
            file,
            buf: Vec::new(),
            records: 0,
            len: end,
            compaction: None,
            loading: Some(Loading {
                file: reader,
                end,
                pos: 0,
                buf: vec![0; READ_CHUNK],
                carried: 0,
                stats: LoadStats {
                    torn_bytes: len - end,
                    bytes: end,
                    ..LoadStats::default()
                },
            }),
            loaded: LoadStats::default(),
            incomplete: false,
        })
    }

    /// Reads about `budget` bytes of the file's records into `store` (a
    /// slice of a load; records read are counted in [`StateFile::load_stats`]).
    /// True once the load is over (and from then on).
    pub fn load_step(&mut self, store: &mut Store, budget: usize) -> io::Result<bool> {
        let Some(loading) = self.loading.as_mut() else {
            return Ok(true);
        };
        let done = loading.step(budget, |batch| {
            // Touch what the batch's updates will need, then update: the
            // cache misses overlap (see Store::warm).
            let warm = batch.iter().fold(0, |x, r| x ^ store.warm(r.1));
            std::hint::black_box(warm);
            for &(at_line, client, time_ns) in batch {
                store.update(client, time_ns, at_line);
            }
        })?;
        if done {
            self.finish_loading();
        }
        Ok(done)
    }

    fn finish_loading(&mut self) -> LoadStats {
        if let Some(loading) = self.loading.take() {
            self.loaded = loading.stats;
            self.records += loading.stats.records + loading.stats.skipped;
        }
        self.loaded
    }

    /// Gives up the load (after a read error): what was read stays, and the
    /// file is never compacted, since that would drop what was not read.
    pub fn stop_loading(&mut self) {
        if self.loading.is_some() {
            self.incomplete = true;
        }
        self.finish_loading();
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True while the file's records are still being read.
    pub fn is_loading(&self) -> bool {
        self.loading.is_some()
    }

    /// What the load found (so far, while it runs).
    pub fn load_stats(&self) -> LoadStats {
        self.loading.as_ref().map_or(self.loaded, |l| l.stats)
    }

    /// Queues the record of a new position.
    pub fn record(&mut self, at_line: &[u8]) {
        write_record(&mut self.buf, at_line);
        self.records += 1;
    }

    /// Writes the queued records (to the kernel; see the module comment),
    /// to the new file too while a compaction runs. On failure (ENOSPC, EIO)
    /// they are dropped and the file is cut back to what was whole before,
    /// so later records still parse. A failure to write the new file
    /// abandons the compaction (the old file stays whole).
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
        // Records that FILE did not take are not acknowledged: they do not
        // go to the new file either.
        if let (Ok(()), Some(c)) = (&result, self.compaction.as_mut()) {
            let n = self.buf.iter().filter(|&&b| b == b'\n').count() as u64;
            match c.file.write_all(&self.buf) {
                Ok(()) => {
                    c.records += n;
                    c.len += self.buf.len() as u64;
                }
                Err(e) => {
                    self.abandon_compaction();
                    self.buf.clear();
                    return Err(io::Error::new(
                        e.kind(),
                        format!("compaction abandoned: {e}"),
                    ));
                }
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

    /// True once the file holds many more records than the `live` positions
    /// (and neither a load nor a compaction is running).
    pub fn wants_compaction(&self, live: usize) -> bool {
        self.compaction.is_none()
            && self.loading.is_none()
            && !self.incomplete
            && self.records > 2 * live as u64 + COMPACT_SLACK
    }

    /// True while a compaction is in progress.
    pub fn is_compacting(&self) -> bool {
        self.compaction.is_some()
    }

    /// Starts an incremental compaction (see the module comment).
    pub fn begin_compaction(&mut self) -> io::Result<()> {
        if self.compaction.is_some() || self.loading.is_some() || self.incomplete {
            // Compacting before the store holds the file's records would
            // lose them.
            return Ok(());
        }
        self.flush()?;
        let tmp = self.path.with_extension("compacting");
        let file = File::create(&tmp)?;
        self.compaction = Some(Compaction {
            tmp,
            file,
            cursor: 0,
            records: 0,
            len: 0,
            synced: None,
        });
        Ok(())
    }

    /// One step of the compaction in progress: writes about `budget` bytes of
    /// the store's records to the new file, or checks on the helper thread.
    /// On an error the compaction is abandoned and the old file kept.
    pub fn compact_step(&mut self, store: &Store, budget: usize) -> io::Result<Compacting> {
        let Some(c) = self.compaction.as_mut() else {
            return Ok(Compacting::Idle);
        };
        if let Some(rx) = &c.synced {
            return match rx.try_recv() {
                Err(TryRecvError::Empty) => Ok(Compacting::Syncing),
                Ok(Ok(())) => {
                    let Some(c) = self.compaction.take() else {
                        return Ok(Compacting::Idle);
                    };
                    // The new file is FILE now; the old one was unlinked.
                    self.file = c.file;
                    self.records = c.records;
                    self.len = c.len;
                    Ok(Compacting::Done { records: c.records })
                }
                Ok(Err(e)) => {
                    self.abandon_compaction();
                    Err(e)
                }
                Err(TryRecvError::Disconnected) => {
                    self.abandon_compaction();
                    Err(io::Error::other(
                        "the compaction thread ended without an answer",
                    ))
                }
            };
        }
        let mut out = Vec::with_capacity(budget + 256);
        let mut n = 0;
        let copied = store.walk_entries(&mut c.cursor, ENTRIES_PER_STEP, |line| {
            write_record(&mut out, line);
            n += 1;
            out.len() < budget
        });
        if let Err(e) = c.file.write_all(&out) {
            self.abandon_compaction();
            return Err(e);
        }
        c.records += n;
        c.len += out.len() as u64;
        if !copied {
            return Ok(Compacting::Copying);
        }
        let file = match c.file.try_clone() {
            Ok(f) => f,
            Err(e) => {
                self.abandon_compaction();
                return Err(e);
            }
        };
        let (tmp, path) = (c.tmp.clone(), self.path.clone());
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("state-compaction".into())
            .spawn(move || {
                let _ = tx.send(sync_and_rename(&file, &tmp, &path));
            });
        if let Err(e) = spawned {
            self.abandon_compaction();
            return Err(e);
        }
        c.synced = Some(rx);
        Ok(Compacting::Syncing)
    }

    fn abandon_compaction(&mut self) {
        if let Some(c) = self.compaction.take() {
            // After a failed rename the temporary file is still there.
            let _ = std::fs::remove_file(&c.tmp);
        }
    }

    /// Rewrites the file with just `positions`, at once: a new file, synced,
    /// renamed over the old one, so a crash at any point leaves one whole
    /// file. (Blocks for as long as that takes; the loop uses the steps.)
    pub fn compact<'a>(&mut self, positions: impl Iterator<Item = &'a [u8]>) -> io::Result<()> {
        self.flush()?;
        self.abandon_compaction();
        let tmp = self.path.with_extension("compacting");
        let mut out = Vec::new();
        let mut records = 0;
        for at_line in positions {
            write_record(&mut out, at_line);
            records += 1;
        }
        let mut file = File::create(&tmp)?;
        file.write_all(&out)?;
        sync_and_rename(&file, &tmp, &self.path)?;
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

    #[cfg(test)]
    fn wait_for_sync(&mut self) {
        if let Some(Compaction {
            synced: Some(rx), ..
        }) = &self.compaction
        {
            // Put the answer back where compact_step will find it.
            let answer = rx
                .recv_timeout(std::time::Duration::from_secs(30))
                .expect("no answer from the compaction thread");
            let (tx, rx) = mpsc::channel();
            let _ = tx.send(answer);
            if let Some(c) = self.compaction.as_mut() {
                c.synced = Some(rx);
            }
        }
    }
}

/// The blocking end of a compaction: the new file synced, renamed over the
/// old one, the folder synced so the rename survives a power cut.
fn sync_and_rename(file: &File, tmp: &Path, path: &Path) -> io::Result<()> {
    file.sync_all()?;
    std::fs::rename(tmp, path)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Some file systems cannot sync a folder; the rename is done anyway.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests;
