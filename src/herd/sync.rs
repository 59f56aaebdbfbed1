//! The catch-up as a reconciliation: what a link costs when it comes up is
//! what the two sides' stores differ by, not what they hold.
//!
//! Each direction of a link runs its own catch-up, on the connection that
//! carries that direction's updates: the dialer (the *sender*) sends the
//! acceptor (the *receiver*) what the receiver lacks. Both stores keep the
//! same hash tree (see [`crate::herd::store`]: 65,536 leaves by the hash of
//! the client ID, each node the XOR of the hashes of the AT lines beneath).
//! The sender descends it:
//!
//! 1. it asks `TREE /` and the receiver answers with the root's 16 children's
//!    hashes ([`answer`]);
//! 2. for each child, the sender compares the receiver's hash with its own:
//!    equal, or ours 0 (we hold nothing there): nothing to do; theirs 0 (it
//!    holds nothing there): send every line beneath, without descending;
//!    otherwise ask about that child in turn;
//! 3. at a leaf the receiver answers with the hash of each line it holds
//!    there, and the sender sends its lines whose hash is not among them;
//! 4. once nothing is asked and nothing left to send: `SYNCED`.
//!
//! Live floods go on during the descent, on the same connection: a position
//! that changes after the descent passed it is carried by its flood. So the
//! result is exact: every line the sender holds from start to end of a
//! catch-up is, at its end, at the receiver or superseded there (the tests
//! below check this under concurrent changes on both sides).
//!
//! [`CatchUp`] is the sender's side, sans-IO: it writes its messages into the
//! caller's buffer and never touches a socket. Requests (`TREE`) are small
//! and written as answers come in; positions (`SYNC`) are written only by
//! [`CatchUp::next_slice`], a bounded slice per call, which the loop calls as
//! the socket drains (asyncio's `drain()`). [`Incoming`] is the receiver's
//! side: it answers `TREE` and counts what arrives, for the summary line.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::herd::store::{hash64, Store, Walk};
use crate::protocol::peer::{self, Hashes, TreeNode, MAX_LEAF_HASHES, TREE_NODES};

/// A slice finishes at most this many leaves, even if they are empty, so
/// that a call's work is bounded in a sparse store too.
const MAX_LEAVES_PER_SLICE: u32 = 4096;
/// At most this many `TREE` requests wait for their answers; the rest wait
/// their turn here. So the receiver's unsent answers stay small (about
/// 12 KiB of 16-hash answers) however much the stores differ, and a slow
/// sender cannot make them pile up on the receiver's side of the link.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 64;

/// What [`CatchUp::next_slice`] leaves to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// It stopped at the budget: call again when the socket has drained.
    More,
    /// Nothing to send until answers arrive ([`CatchUp::on_answer`]).
    Waiting,
    /// `SYNCED` is written: the catch-up is over.
    Done,
}

/// An answer the catch-up did not ask for, or that does not fit the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unexpected(pub TreeNode);

impl fmt::Display for Unexpected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut node = Vec::new();
        self.0.write(&mut node);
        write!(
            f,
            "HASHES for {} was not asked for",
            String::from_utf8_lossy(&node)
        )
    }
}

/// What one catch-up has sent so far, for its summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Positions sent (`SYNC` lines).
    pub positions: u64,
    /// Bytes of those `SYNC` lines.
    pub position_bytes: u64,
    /// Every byte written: the positions, the `TREE` requests, `SYNCED`.
    pub bytes: u64,
    /// Nodes asked about (`TREE`), and the bytes of their answers.
    pub requests: u64,
    pub answer_bytes: u64,
    /// How long it took: up to now, or to its end once it is over.
    pub elapsed: Duration,
}

impl fmt::Display for Sent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "catch-up of {} positions sent ({} bytes, {:.1} ms; {} nodes compared, {} bytes in all sent, {} bytes of hashes received)",
            self.positions,
            self.position_bytes,
            self.elapsed.as_secs_f64() * 1000.0,
            self.requests,
            self.bytes,
            self.answer_bytes,
        )
    }
}

/// Something the receiver lacks, to be sent by the slices.
#[derive(Debug)]
enum Work {
    /// Every line beneath `node`: the receiver holds nothing there.
    All(TreeNode),
    /// The lines of a leaf whose hashes are not in `theirs` (sorted).
    Except { leaf: TreeNode, theirs: Vec<u64> },
}

/// The work in progress: where its walk stands.
#[derive(Debug)]
struct Current {
    walk: Walk,
    except: Option<Vec<u64>>,
}

/// The sender's side of one catch-up on one link direction.
#[derive(Debug)]
pub struct CatchUp {
    started: Instant,
    ended: Option<Instant>,
    /// A bit per tree node: asked about, answer not yet in.
    asked: Vec<u64>,
    outstanding: usize,
    /// Requests waiting for a place in flight.
    to_ask: VecDeque<TreeNode>,
    work: VecDeque<Work>,
    current: Option<Current>,
    sent: Sent,
    /// A neighbour that does not answer `TREE` (the counterparts keep the
    /// full catch-up): every line, as plain `AT` updates, and no `SYNCED`.
    plain: bool,
}

impl CatchUp {
    /// Starts a catch-up when the link comes up: writes the first request
    /// (or, with nothing to send, `SYNCED 0`) into `out`.
    pub fn start(store: &Store, now: Instant, out: &mut Vec<u8>) -> CatchUp {
        let mut c = CatchUp::new(now);
        if store.is_empty() {
            c.finish(now, out);
        } else {
            c.ask(TreeNode::ROOT, out);
        }
        c
    }

    /// The full catch-up, for a neighbour that does not answer `TREE`: every
    /// line the store holds, in slices, as `AT` updates that any server
    /// accepts.
    pub fn plain(now: Instant) -> CatchUp {
        let mut c = CatchUp::new(now);
        c.plain = true;
        c.work.push_back(Work::All(TreeNode::ROOT));
        c
    }

    fn new(now: Instant) -> CatchUp {
        CatchUp {
            started: now,
            ended: None,
            asked: vec![0; TREE_NODES.div_ceil(64)],
            outstanding: 0,
            to_ask: VecDeque::new(),
            work: VecDeque::new(),
            current: None,
            sent: Sent {
                positions: 0,
                position_bytes: 0,
                bytes: 0,
                requests: 0,
                answer_bytes: 0,
                elapsed: Duration::ZERO,
            },
            plain: false,
        }
    }

    fn ask(&mut self, node: TreeNode, out: &mut Vec<u8>) {
        if self.outstanding >= MAX_REQUESTS_IN_FLIGHT {
            self.to_ask.push_back(node);
            return;
        }
        let id = node.id();
        if self.asked[id / 64] & 1 << (id % 64) != 0 {
            return;
        }
        self.asked[id / 64] |= 1 << (id % 64);
        self.outstanding += 1;
        self.sent.requests += 1;
        let before = out.len();
        peer::write_tree(out, node);
        self.sent.bytes += (out.len() - before) as u64;
    }

    fn finish(&mut self, now: Instant, out: &mut Vec<u8>) {
        if !self.plain {
            let before = out.len();
            peer::write_synced(out, self.sent.positions);
            self.sent.bytes += (out.len() - before) as u64;
        }
        self.ended = Some(now);
    }

    /// True for the full catch-up of [`CatchUp::plain`].
    pub fn is_plain(&self) -> bool {
        self.plain
    }

    /// True until the first answer arrives (a neighbour that answers a
    /// `PING` sent after our `TREE /` before answering it does not speak
    /// trees).
    pub fn awaits_first_answer(&self) -> bool {
        !self.plain && self.ended.is_none() && self.sent.answer_bytes == 0
    }

    /// True once `SYNCED` is written.
    pub fn is_done(&self) -> bool {
        self.ended.is_some()
    }

    /// The receiver's `HASHES` for `node`: compares them with ours, writes the
    /// requests for the children that differ into `out` (at most
    /// [`MAX_REQUESTS_IN_FLIGHT`] unanswered at once), and queues what the
    /// receiver lacks for the slices to send. Call [`CatchUp::next_slice`]
    /// afterwards: there may be something to send now.
    pub fn on_answer(
        &mut self,
        store: &Store,
        node: TreeNode,
        hashes: &Hashes,
        out: &mut Vec<u8>,
    ) -> Result<(), Unexpected> {
        let id = node.id();
        if self.asked[id / 64] & 1 << (id % 64) == 0 {
            return Err(Unexpected(node));
        }
        self.asked[id / 64] &= !(1 << (id % 64));
        self.outstanding -= 1;
        self.sent.answer_bytes += answer_len(node, hashes) as u64;
        match hashes {
            Hashes::TooMany if node.is_leaf() => self.work.push_back(Work::All(node)),
            Hashes::List(theirs) if node.is_leaf() => {
                let mut theirs = theirs.clone();
                theirs.sort_unstable();
                self.work.push_back(Work::Except { leaf: node, theirs });
            }
            Hashes::List(theirs) if theirs.len() == 16 => {
                for (i, &theirs) in (0..16).zip(theirs) {
                    let Some(child) = node.child(i) else { break };
                    let ours = store.node_hash(child);
                    if ours == theirs || ours == 0 {
                        continue;
                    }
                    if theirs == 0 {
                        self.work.push_back(Work::All(child));
                    } else {
                        self.ask(child, out);
                    }
                }
            }
            _ => return Err(Unexpected(node)),
        }
        while self.outstanding < MAX_REQUESTS_IN_FLIGHT {
            let Some(next) = self.to_ask.pop_front() else {
                break;
            };
            self.ask(next, out);
        }
        Ok(())
    }

    /// Writes the next positions the receiver lacks into `out`: about
    /// `budget` bytes (it stops after the line that reaches it), and at most
    /// a few thousand leaves walked, so a call's work is bounded whatever the
    /// store's size. Writes `SYNCED` once everything is sent and answered.
    pub fn next_slice(
        &mut self,
        store: &Store,
        budget: usize,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Progress {
        if self.ended.is_some() {
            return Progress::Done;
        }
        let start = out.len();
        let mut leaves = 0;
        loop {
            if out.len() - start >= budget || leaves >= MAX_LEAVES_PER_SLICE {
                self.sent.bytes += (out.len() - start) as u64;
                return Progress::More;
            }
            let mut current = match self.current.take() {
                Some(c) => c,
                None => match self.work.pop_front() {
                    Some(Work::All(node)) => Current {
                        walk: Walk::under(node),
                        except: None,
                    },
                    Some(Work::Except { leaf, theirs }) => Current {
                        walk: Walk::under(leaf),
                        except: Some(theirs),
                    },
                    None => {
                        self.sent.bytes += (out.len() - start) as u64;
                        // Requests still to ask wait for answers to make room.
                        if self.outstanding > 0 {
                            return Progress::Waiting;
                        }
                        self.finish(now, out);
                        return Progress::Done;
                    }
                },
            };
            let sent = &mut self.sent;
            let plain = self.plain;
            leaves += store.walk(&mut current.walk, MAX_LEAVES_PER_SLICE - leaves, |line| {
                let known = current
                    .except
                    .as_ref()
                    .is_some_and(|theirs| theirs.binary_search(&hash64(line)).is_ok());
                if !known {
                    let before = out.len();
                    if plain {
                        peer::write_update(out, line);
                    } else {
                        peer::write_sync(out, line);
                    }
                    sent.positions += 1;
                    sent.position_bytes += (out.len() - before) as u64;
                }
                out.len() - start < budget
            });
            if !current.walk.is_done() {
                self.current = Some(current);
            }
        }
    }

    /// What it has sent so far (and how long it has taken), for the summary
    /// line the loop logs when it is done.
    pub fn sent(&self, now: Instant) -> Sent {
        Sent {
            elapsed: self.ended.unwrap_or(now).duration_since(self.started),
            ..self.sent
        }
    }
}

/// The size of a `HASHES` line as [`answer`] writes it.
fn answer_len(node: TreeNode, hashes: &Hashes) -> usize {
    let node_len = 1 + usize::from(node.depth());
    let body = match hashes {
        Hashes::TooMany => 1,
        Hashes::List(h) if h.is_empty() => 1,
        Hashes::List(h) => (h.len() * 8 * 4).div_ceil(3),
    };
    "HASHES ".len() + node_len + 1 + body + 1
}

/// The receiver's answer to `TREE <node>`: `HASHES` with the hashes of the
/// node's 16 children, or for a leaf the hash of each of its lines. Returns
/// the bytes written.
pub fn answer(store: &Store, node: TreeNode, out: &mut Vec<u8>) -> usize {
    let before = out.len();
    if node.is_leaf() {
        let mut hashes = Vec::new();
        for line in store.leaf_lines(node.index()) {
            if hashes.len() == MAX_LEAF_HASHES {
                peer::write_too_many(out, node);
                return out.len() - before;
            }
            hashes.push(hash64(line));
        }
        peer::write_hashes(out, node, &hashes);
    } else {
        let children: Vec<u64> = (0..16)
            .filter_map(|i| node.child(i))
            .map(|c| store.node_hash(c))
            .collect();
        peer::write_hashes(out, node, &children);
    }
    out.len() - before
}

/// The receiver's side of a catch-up on one link direction: it answers the
/// sender's requests and counts what arrives, for one summary line.
#[derive(Debug, Default)]
pub struct Incoming {
    started: Option<Instant>,
    received: Received,
}

/// What one catch-up brought in, for its summary line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Positions received (`SYNC` lines), and how many were new here.
    pub positions: u64,
    pub new: u64,
    /// Bytes received: the positions, the requests and `SYNCED`.
    pub bytes: u64,
    /// Requests answered, and the bytes of the answers.
    pub requests: u64,
    pub answer_bytes: u64,
    /// What the sender says it sent (`SYNCED <n>`).
    pub claimed: u64,
    pub elapsed: Duration,
}

impl fmt::Display for Received {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "catch-up of {} positions received ({} new, {} bytes, {:.1} ms; {} nodes answered, {} bytes of hashes sent)",
            self.positions,
            self.new,
            self.bytes,
            self.elapsed.as_secs_f64() * 1000.0,
            self.requests,
            self.answer_bytes,
        )
    }
}

impl Incoming {
    /// Positions new here that this catch-up has brought so far.
    pub fn new_so_far(&self) -> u64 {
        self.received.new
    }

    fn begin(&mut self, now: Instant) {
        self.started.get_or_insert(now);
    }

    /// `TREE <node>` arrived as the line `line_len` bytes long (without
    /// `\n`): writes the answer into `out`.
    pub fn on_tree(
        &mut self,
        store: &Store,
        node: TreeNode,
        line_len: usize,
        now: Instant,
        out: &mut Vec<u8>,
    ) {
        self.begin(now);
        self.received.requests += 1;
        self.received.bytes += line_len as u64 + 1;
        self.received.answer_bytes += answer(store, node, out) as u64;
    }

    /// A `SYNC` line of `line_len` bytes arrived; `new` if the store took it.
    pub fn on_sync(&mut self, line_len: usize, new: bool, now: Instant) {
        self.begin(now);
        self.received.positions += 1;
        self.received.new += u64::from(new);
        self.received.bytes += line_len as u64 + 1;
    }

    /// `SYNCED <positions>` arrived: the catch-up is over. Returns its
    /// summary and starts counting afresh for the next one.
    pub fn on_synced(&mut self, positions: u64, line_len: usize, now: Instant) -> Received {
        self.begin(now);
        let mut r = std::mem::take(&mut self.received);
        r.bytes += line_len as u64 + 1;
        r.claimed = positions;
        r.elapsed = self
            .started
            .take()
            .map_or(Duration::ZERO, |s| now.duration_since(s));
        r
    }
}

#[cfg(test)]
mod tests;
