//! The peer protocol (docs/spec.md §5; `docs/protocol.md` is its prose): lines,
//! like the client protocol, on the peer port only.
//!
//! ```text
//! dialer -> acceptor   HELLO <name> [<nonce>]
//! acceptor -> dialer   CHALLENGE <nonce> <proof>  (with a herd secret: see herd/auth.rs)
//! dialer -> acceptor   PROOF <proof>              (likewise)
//! acceptor -> dialer   WELCOME <name>            or   REFUSED <reason>
//! dialer -> acceptor   AT <server> <diff> <client> <location> <time>   (live updates)
//! dialer -> acceptor   PING           acceptor -> dialer   PONG         (liveness)
//!
//! the catch-up (reconciliation), dialer's positions to the acceptor:
//! dialer -> acceptor   TREE <node>                  what do you hold under node?
//! acceptor -> dialer   HASHES <node> <hashes>       its children's hashes (a leaf: its lines')
//! dialer -> acceptor   SYNC AT <server> ...         a position the acceptor may lack
//! dialer -> acceptor   SYNCED <positions>           this catch-up pass is over
//! ```
//!
//! Updates are the AT lines themselves, exactly as the receiving server made
//! them, so every server answers WHATSAT with the same first line. A catch-up
//! position is the same AT line behind `SYNC `, so that the receiver can tell
//! it from a live flood (it logs a catch-up as one summary line). Tree nodes
//! are [`TreeNode`]s; hashes are big-endian `u64`s in base64 (see
//! [`write_hashes`]).

use super::client::{parse_location, parse_time};
use super::{fields, split_exact};

/// The longest peer line a server accepts: room for the AT line of the
/// longest IAMAT the client port accepts ([`super::client::MAX_LINE`]) plus
/// the server's name and time difference. A server never sends a longer one:
/// an IAMAT whose AT line would not fit is refused at the client port.
pub const MAX_PEER_LINE: usize = super::client::MAX_LINE + 1024;

/// One peer line, parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum PeerMessage<'a> {
    Hello {
        name: &'a [u8],
        nonce: Option<&'a [u8]>,
    },
    Challenge {
        nonce: &'a [u8],
        proof: &'a [u8],
    },
    Proof {
        proof: &'a [u8],
    },
    Welcome {
        name: &'a [u8],
    },
    Refused {
        reason: &'a [u8],
    },
    Update(Update),
    Ping,
    Pong,
    /// `TREE <node>`: the sender of a catch-up asks what we hold under node.
    Tree {
        node: TreeNode,
    },
    /// `HASHES <node> <hashes>`: the answer to `TREE`.
    Hashes {
        node: TreeNode,
        hashes: Hashes,
    },
    /// `SYNC <AT line>`: a position sent by a catch-up.
    Sync(Update),
    /// `SYNCED <positions>`: the end of a catch-up pass, with how many
    /// positions it sent.
    Synced {
        positions: u64,
    },
    /// `WAIT`: the receiver of a catch-up holds its answers for now (its
    /// state file is loading, or another neighbour's catch-up is arriving);
    /// it says so at once, since it does speak `TREE`.
    Wait,
    Blank,
    Invalid,
}

/// What a `HASHES` answer carries.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum Hashes {
    /// For an inner node, its 16 children's hashes; for a leaf, the hash of
    /// each line it holds, in no order (`-` when it holds none).
    List(Vec<u64>),
    /// A leaf holding more than [`MAX_LEAF_HASHES`] lines (`*`): the sender
    /// sends all of its own lines there.
    TooMany,
}

/// A leaf answer lists at most this many hashes (11 KiB of text), far more
/// than a leaf holds in any store of a sane size (15 at a million positions).
pub const MAX_LEAF_HASHES: usize = 1024;

/// A position travelling between servers: its client, time and AT line.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Update {
    pub client: Vec<u8>,
    pub time_ns: i128,
    /// The AT line without `\n`, fields joined by single spaces.
    pub at_line: Vec<u8>,
}

/// A server name: letters, digits, `_` and `-` (docs/spec.md §2).
pub fn is_server_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A nonce or a proof: hex digits, not too many.
fn is_token(t: &[u8]) -> bool {
    (1..=128).contains(&t.len()) && t.iter().all(u8::is_ascii_hexdigit)
}

/// Parses one peer line (without `\n`).
pub fn parse_peer_message(line: &[u8]) -> PeerMessage<'_> {
    let Some(command) = fields(line).next() else {
        return PeerMessage::Blank;
    };
    let named = |line| {
        split_exact::<2>(line)
            .map(|[_, n]| n)
            .filter(|n| is_server_name(n))
    };
    let parsed = match command {
        b"HELLO" => match fields(line).collect::<Vec<_>>()[..] {
            [_, name] if is_server_name(name) => Some(PeerMessage::Hello { name, nonce: None }),
            [_, name, nonce] if is_server_name(name) && is_token(nonce) => {
                Some(PeerMessage::Hello {
                    name,
                    nonce: Some(nonce),
                })
            }
            _ => None,
        },
        b"CHALLENGE" => split_exact::<3>(line)
            .filter(|[_, n, p]| is_token(n) && is_token(p))
            .map(|[_, nonce, proof]| PeerMessage::Challenge { nonce, proof }),
        b"PROOF" => split_exact::<2>(line)
            .filter(|[_, p]| is_token(p))
            .map(|[_, proof]| PeerMessage::Proof { proof }),
        b"WELCOME" => named(line).map(|name| PeerMessage::Welcome { name }),
        b"REFUSED" => {
            // The reason is the rest of the line after the command.
            let start = line.iter().position(|&b| !super::is_space(b)).unwrap_or(0);
            Some(PeerMessage::Refused {
                reason: trim(&line[start + command.len()..]),
            })
        }
        b"AT" => parse_update(line).map(PeerMessage::Update),
        b"PING" => split_exact::<1>(line).map(|_| PeerMessage::Ping),
        b"PONG" => split_exact::<1>(line).map(|_| PeerMessage::Pong),
        b"TREE" => split_exact::<2>(line)
            .and_then(|[_, n]| TreeNode::parse(n))
            .map(|node| PeerMessage::Tree { node }),
        b"HASHES" => split_exact::<3>(line).and_then(|[_, n, h]| {
            let node = TreeNode::parse(n)?;
            let hashes = parse_hashes(node, h)?;
            Some(PeerMessage::Hashes { node, hashes })
        }),
        b"SYNC" => {
            let start = line.iter().position(|&b| !super::is_space(b)).unwrap_or(0);
            parse_update(&line[start + command.len()..]).map(PeerMessage::Sync)
        }
        b"WAIT" => split_exact::<1>(line).map(|_| PeerMessage::Wait),
        b"SYNCED" => split_exact::<2>(line)
            .and_then(|[_, n]| parse_count(n))
            .map(|positions| PeerMessage::Synced { positions }),
        _ => None,
    };
    parsed.unwrap_or(PeerMessage::Invalid)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|&b| !super::is_space(b))
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| !super::is_space(b))
        .map_or(start, |e| e + 1);
    &s[start..end]
}

/// Validates an AT line from a peer; a peer is trusted no more than a client.
pub fn parse_update(line: &[u8]) -> Option<Update> {
    let [at, server, diff, client, location, time] = split_exact::<6>(line)?;
    if at != b"AT" || !is_server_name(server) || !is_diff(diff) {
        return None;
    }
    parse_location(location)?;
    let time_ns = parse_time(time)?;
    Some(Update {
        client: client.to_vec(),
        time_ns,
        at_line: [at, server, diff, client, location, time].join(&b' '),
    })
}

/// The client ID and client time of an AT line in canonical form (single
/// spaces), without checking anything else: enough to ask the store whether
/// the update is new, which for most updates a neighbour sends it is not
/// (a flood reaches a server once per link into it). A line that is new is
/// checked in full before it is stored ([`parse_canonical_update`]).
pub fn update_key(line: &[u8]) -> Option<(&[u8], i128)> {
    let rest = line.strip_prefix(b"AT ")?;
    let mut fields = rest.splitn(5, |&b| b == b' ');
    let (_server, _diff, client) = (fields.next()?, fields.next()?, fields.next()?);
    let (_location, time) = (fields.next()?, fields.next()?);
    if client.is_empty() || time.contains(&b' ') {
        return None;
    }
    Some((client, parse_time(time)?))
}

/// Checks an AT line in the canonical form [`parse_update`] gives (single
/// spaces, nothing else) without copying it: its client ID and client time.
/// For lines read back from the state file, a million at a start.
pub fn parse_canonical_update(line: &[u8]) -> Option<(&[u8], i128)> {
    let mut fields = line.split(|&b| b == b' ');
    let mut next = || {
        fields
            .next()
            .filter(|f| !f.is_empty() && !f.iter().any(|&b| super::is_space(b)))
    };
    let (at, server, diff, client, location, time) =
        (next()?, next()?, next()?, next()?, next()?, next()?);
    if next().is_some() || at != b"AT" || !is_server_name(server) || !is_diff(diff) {
        return None;
    }
    if !super::client::is_location(location) {
        return None;
    }
    Some((client, parse_time(time)?))
}

/// `[+-]D+.DDDDDDDDD`, as `format_diff` writes it.
fn is_diff(s: &[u8]) -> bool {
    let Some((sign, rest)) = s.split_first() else {
        return false;
    };
    let Some(dot) = rest.iter().position(|&b| b == b'.') else {
        return false;
    };
    matches!(sign, b'+' | b'-')
        && (1..=20).contains(&dot)
        && rest.len() - dot - 1 == 9
        && rest
            .iter()
            .enumerate()
            .all(|(i, b)| i == dot || b.is_ascii_digit())
}

/// Levels of the reconciliation tree below its root; fan-out 16, so
/// 16^4 = 65,536 leaves. The shape is part of the protocol: every server
/// builds the same tree (`docs/protocol.md`, "The catch-up").
pub const TREE_DEPTH: u8 = 4;
/// Children of each inner node.
pub const TREE_FANOUT: u32 = 16;
/// Leaves of the tree.
pub const TREE_LEAVES: u32 = 1 << (4 * TREE_DEPTH as u32);
/// Nodes of the tree, all levels: 1 + 16 + ... + 65,536.
pub const TREE_NODES: usize = ((1 << (4 * (TREE_DEPTH as u32 + 1))) - 1) / 15;

/// A node of the reconciliation tree: its depth (0 is the root, 4 a leaf) and
/// its index within that depth. Written `/` followed by one hex digit per
/// level: `/` is the root, `/3a` the 11th child of the root's 4th child,
/// `/3a7f` a leaf. A leaf holds the positions whose client ID hashes there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TreeNode {
    depth: u8,
    index: u32,
}

impl TreeNode {
    /// The root.
    pub const ROOT: TreeNode = TreeNode { depth: 0, index: 0 };

    /// The node at `depth` with `index`, if both are in the tree.
    pub fn new(depth: u8, index: u32) -> Option<TreeNode> {
        (depth <= TREE_DEPTH && u64::from(index) < 1u64 << (4 * u32::from(depth)))
            .then_some(TreeNode { depth, index })
    }

    /// Leaf number `leaf` (only the low 16 bits count).
    pub fn leaf(leaf: u32) -> TreeNode {
        TreeNode {
            depth: TREE_DEPTH,
            index: leaf % TREE_LEAVES,
        }
    }

    pub fn depth(self) -> u8 {
        self.depth
    }

    pub fn index(self) -> u32 {
        self.index
    }

    pub fn is_leaf(self) -> bool {
        self.depth == TREE_DEPTH
    }

    /// Its `i`th child (`i` < 16); `None` for a leaf.
    pub fn child(self, i: u32) -> Option<TreeNode> {
        (!self.is_leaf() && i < TREE_FANOUT).then(|| TreeNode {
            depth: self.depth + 1,
            index: self.index * TREE_FANOUT + i,
        })
    }

    /// The leaves beneath it (itself, for a leaf), as a range of leaf numbers.
    pub fn leaves(self) -> std::ops::Range<u32> {
        let shift = 4 * u32::from(TREE_DEPTH - self.depth);
        (self.index << shift)..((self.index + 1) << shift)
    }

    /// A number unique to the node among all levels, below [`TREE_NODES`]:
    /// where a flat array of the whole tree keeps it.
    pub fn id(self) -> usize {
        ((1usize << (4 * u32::from(self.depth))) - 1) / 15 + self.index as usize
    }

    /// Parses `/` and 0 to 4 hex digits.
    pub fn parse(text: &[u8]) -> Option<TreeNode> {
        let digits = text.strip_prefix(b"/")?;
        if digits.len() > usize::from(TREE_DEPTH) {
            return None;
        }
        let mut index = 0;
        for &d in digits {
            index = index * 16 + char::from(d).to_digit(16)?;
        }
        TreeNode::new(digits.len() as u8, index)
    }

    /// Appends `/` and its hex digits.
    pub fn write(self, out: &mut Vec<u8>) {
        out.push(b'/');
        for level in (0..self.depth).rev() {
            let nibble = (self.index >> (4 * u32::from(level))) & 0xf;
            out.push(b"0123456789abcdef"[nibble as usize]);
        }
    }
}

/// Appends the AT line of `update` and `\n`: the whole update message.
pub fn write_update(out: &mut Vec<u8>, update_line: &[u8]) {
    out.extend_from_slice(update_line);
    out.push(b'\n');
}

/// Appends `TREE <node>\n`.
pub fn write_tree(out: &mut Vec<u8>, node: TreeNode) {
    out.extend_from_slice(b"TREE ");
    node.write(out);
    out.push(b'\n');
}

/// Appends `HASHES <node> <hashes>\n`: the hashes as big-endian `u64`s in
/// standard base64 without padding (11 characters each, 171 for an inner
/// node's 16), or `-` for none. A leaf with more than [`MAX_LEAF_HASHES`]
/// lines is answered with `*` instead ([`write_too_many`]).
pub fn write_hashes(out: &mut Vec<u8>, node: TreeNode, hashes: &[u64]) {
    out.extend_from_slice(b"HASHES ");
    node.write(out);
    out.push(b' ');
    if hashes.is_empty() {
        out.push(b'-');
    } else {
        let bytes: Vec<u8> = hashes.iter().flat_map(|h| h.to_be_bytes()).collect();
        base64_encode(&bytes, out);
    }
    out.push(b'\n');
}

/// Appends `HASHES <leaf> *\n`: more lines there than an answer lists.
pub fn write_too_many(out: &mut Vec<u8>, leaf: TreeNode) {
    out.extend_from_slice(b"HASHES ");
    leaf.write(out);
    out.extend_from_slice(b" *\n");
}

/// Appends `SYNC <AT line>\n`: a catch-up's position.
pub fn write_sync(out: &mut Vec<u8>, at_line: &[u8]) {
    out.extend_from_slice(b"SYNC ");
    out.extend_from_slice(at_line);
    out.push(b'\n');
}

/// Appends `SYNCED <positions>\n`.
pub fn write_synced(out: &mut Vec<u8>, positions: u64) {
    out.extend_from_slice(format!("SYNCED {positions}\n").as_bytes());
}

/// A decimal count: digits only, no more than 19 of them.
fn parse_count(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 19 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

fn parse_hashes(node: TreeNode, text: &[u8]) -> Option<Hashes> {
    match (text, node.is_leaf()) {
        (b"*", true) => return Some(Hashes::TooMany),
        (b"-", true) => return Some(Hashes::List(Vec::new())),
        _ => {}
    }
    let bytes = base64_decode(text)?;
    if bytes.len() % 8 != 0 {
        return None;
    }
    let hashes: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|c| c.iter().fold(0, |h, &b| h << 8 | u64::from(b)))
        .collect();
    let fits = if node.is_leaf() {
        (1..=MAX_LEAF_HASHES).contains(&hashes.len())
    } else {
        hashes.len() == TREE_FANOUT as usize
    };
    fits.then_some(Hashes::List(hashes))
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64, no padding.
fn base64_encode(bytes: &[u8], out: &mut Vec<u8>) {
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(BASE64[(n >> (18 - 6 * i) & 63) as usize]);
        }
    }
}

/// The inverse of [`base64_encode`]; `None` for anything it would not write
/// (a bad character, a bad length, stray bits in the last character).
fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = BASE64.iter().position(|&b| b == c)? as u32;
            n |= v << (18 - 6 * i);
        }
        let bytes = chunk.len() - 1;
        if n & ((1 << (24 - 8 * bytes)) - 1) != 0 {
            return None;
        }
        out.extend((0..bytes).map(|i| (n >> (16 - 8 * i)) as u8));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_key_reads_client_and_time_of_canonical_lines_only() {
        let line = b"AT Riley +0.263873386 kiwi +34.068930-118.445127 1621464827.959498503";
        assert_eq!(
            update_key(line),
            Some((&b"kiwi"[..], 1_621_464_827_959_498_503))
        );
        assert_eq!(update_key(b"AT Riley +0.1 kiwi  +1+1 1"), None);
        assert_eq!(update_key(b"AT Riley +0.1 kiwi +1+1 1 extra"), None);
        assert_eq!(update_key(b"AT Riley +0.1 kiwi +1+1"), None);
        assert_eq!(update_key(b"PING"), None);
        assert_eq!(update_key(b"AT Riley +0.1 kiwi +1+1 x"), None);
    }

    #[test]
    fn greetings() {
        assert_eq!(
            parse_peer_message(b"HELLO Riley"),
            PeerMessage::Hello {
                name: b"Riley",
                nonce: None
            }
        );
        assert_eq!(
            parse_peer_message(b"HELLO Riley 0a1b"),
            PeerMessage::Hello {
                name: b"Riley",
                nonce: Some(b"0a1b")
            }
        );
        assert_eq!(parse_peer_message(b"HELLO Riley xyz"), PeerMessage::Invalid);
        assert_eq!(
            parse_peer_message(b"CHALLENGE 00ff abcd"),
            PeerMessage::Challenge {
                nonce: b"00ff",
                proof: b"abcd"
            }
        );
        assert_eq!(
            parse_peer_message(b"PROOF 12"),
            PeerMessage::Proof { proof: b"12" }
        );
        assert_eq!(parse_peer_message(b"PROOF"), PeerMessage::Invalid);
        assert_eq!(
            parse_peer_message(b"WELCOME Jaquez\r"),
            PeerMessage::Welcome { name: b"Jaquez" }
        );
        assert_eq!(parse_peer_message(b"HELLO"), PeerMessage::Invalid);
        assert_eq!(parse_peer_message(b"HELLO a b c"), PeerMessage::Invalid);
        assert_eq!(parse_peer_message(b"HELLO bad!name"), PeerMessage::Invalid);
        assert_eq!(
            parse_peer_message(b"REFUSED  not a neighbour "),
            PeerMessage::Refused {
                reason: b"not a neighbour"
            }
        );
        assert_eq!(parse_peer_message(b"PING"), PeerMessage::Ping);
        assert_eq!(parse_peer_message(b"PONG x"), PeerMessage::Invalid);
        assert_eq!(parse_peer_message(b" \t"), PeerMessage::Blank);
    }

    #[test]
    fn tree_nodes_are_written_one_hex_digit_a_level() {
        for (text, depth, index) in [
            (&b"/"[..], 0, 0),
            (b"/3", 1, 3),
            (b"/3a", 2, 0x3a),
            (b"/3a7f", 4, 0x3a7f),
        ] {
            let node = TreeNode::parse(text).unwrap();
            assert_eq!((node.depth(), node.index()), (depth, index));
            let mut out = Vec::new();
            node.write(&mut out);
            assert_eq!(out, text);
        }
        assert_eq!(TreeNode::parse(b"/3A7F"), TreeNode::parse(b"/3a7f"));
        for bad in [&b""[..], b"3a", b"/3a7f0", b"/g", b"//"] {
            assert_eq!(TreeNode::parse(bad), None, "{bad:?}");
        }
        let node = TreeNode::parse(b"/3a").unwrap();
        assert_eq!(node.leaves(), 0x3a00..0x3b00);
        assert_eq!(node.child(15), TreeNode::parse(b"/3af"));
        assert_eq!(TreeNode::leaf(7).child(0), None);
        assert_eq!(TreeNode::ROOT.id(), 0);
        assert_eq!(TreeNode::parse(b"/0").unwrap().id(), 1);
        assert_eq!(TreeNode::leaf(TREE_LEAVES - 1).id(), TREE_NODES - 1);
        assert_eq!(TreeNode::new(1, 16), None);
    }

    #[test]
    fn catch_up_messages_round_trip() {
        let mut out = Vec::new();
        write_tree(&mut out, TreeNode::parse(b"/3a").unwrap());
        assert_eq!(out, b"TREE /3a\n");
        assert_eq!(
            parse_peer_message(b"TREE /3a"),
            PeerMessage::Tree {
                node: TreeNode::parse(b"/3a").unwrap()
            }
        );

        let inner: Vec<u64> = (0..16u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        let node = TreeNode::parse(b"/3").unwrap();
        let mut out = Vec::new();
        write_hashes(&mut out, node, &inner);
        assert_eq!(out.len(), "HASHES /3 ".len() + 171 + 1);
        assert_eq!(
            parse_peer_message(&out[..out.len() - 1]),
            PeerMessage::Hashes {
                node,
                hashes: Hashes::List(inner.clone())
            }
        );
        // An inner node has exactly 16 children; a leaf lists 1 to 1024
        // hashes, `-` or `*`.
        let mut short = Vec::new();
        write_hashes(&mut short, node, &inner[..15]);
        assert_eq!(
            parse_peer_message(&short[..short.len() - 1]),
            PeerMessage::Invalid
        );
        let leaf = TreeNode::leaf(0x3a7f);
        for hashes in [vec![], vec![u64::MAX], inner[..3].to_vec()] {
            let mut out = Vec::new();
            write_hashes(&mut out, leaf, &hashes);
            assert_eq!(
                parse_peer_message(&out[..out.len() - 1]),
                PeerMessage::Hashes {
                    node: leaf,
                    hashes: Hashes::List(hashes)
                }
            );
        }
        let mut out = Vec::new();
        write_too_many(&mut out, leaf);
        assert_eq!(out, b"HASHES /3a7f *\n");
        assert_eq!(
            parse_peer_message(b"HASHES /3a7f *"),
            PeerMessage::Hashes {
                node: leaf,
                hashes: Hashes::TooMany
            }
        );
        for bad in [
            &b"HASHES /3 *"[..],
            b"HASHES /3 -",
            b"HASHES /3a7f",
            b"HASHES /3a7f AAAAAAAAAAB",
            b"HASHES /3a7f AAAAAAAAAA",
            b"HASHES /3a7f AAAAAAAAAA!",
            b"TREE",
            b"TREE /12345",
            b"SYNCED",
            b"SYNCED -1",
            b"SYNCED 12345678901234567890",
            b"SYNC",
            b"SYNC AT Riley",
            // Found by the fuzzer: SYNC must carry an AT line.
            b"SYNC A?T Riley +0.263873386 kiwi +34.068930-118.445127 116285628503",
        ] {
            assert_eq!(parse_peer_message(bad), PeerMessage::Invalid, "{bad:?}");
        }

        let at = b"AT Riley +0.263873386 kiwi +34.068930-118.445127 1621464827.959498503";
        let mut out = Vec::new();
        write_sync(&mut out, at);
        let PeerMessage::Sync(u) = parse_peer_message(&out[..out.len() - 1]) else {
            panic!("not a SYNC");
        };
        assert_eq!((&u.client[..], &u.at_line[..]), (&b"kiwi"[..], &at[..]));
        let mut out = Vec::new();
        write_synced(&mut out, 250);
        assert_eq!(
            parse_peer_message(&out[..out.len() - 1]),
            PeerMessage::Synced { positions: 250 }
        );
    }

    #[test]
    fn base64_round_trips_every_length() {
        for n in 0..40usize {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + n) as u8).collect();
            let mut text = Vec::new();
            base64_encode(&bytes, &mut text);
            assert_eq!(text.len(), (n * 4).div_ceil(3));
            assert_eq!(base64_decode(&text), Some(bytes));
        }
        assert_eq!(base64_decode(b"TWFu"), Some(b"Man".to_vec()));
        assert_eq!(base64_decode(b"TWE"), Some(b"Ma".to_vec()));
        assert_eq!(base64_decode(b"TWF"), None);
        assert_eq!(base64_decode(b"T"), None);
    }

    #[test]
    fn updates_are_validated_and_made_canonical() {
        let line = b"AT  Riley +0.263873386 kiwi +34.068930-118.445127\t1621464827.959498503";
        let PeerMessage::Update(u) = parse_peer_message(line) else {
            panic!("not an update");
        };
        // Only the canonical form passes the quick check, and it agrees.
        assert_eq!(parse_canonical_update(line), None);
        assert_eq!(
            parse_canonical_update(&u.at_line),
            Some((&b"kiwi"[..], u.time_ns))
        );
        assert_eq!(u.client, b"kiwi");
        assert_eq!(u.time_ns, 1_621_464_827_959_498_503);
        assert_eq!(
            u.at_line,
            b"AT Riley +0.263873386 kiwi +34.068930-118.445127 1621464827.959498503"
        );
        for bad in [
            &b"AT Riley 0.263873386 kiwi +34-118 1"[..],
            b"AT Riley +0.26387338 kiwi +34-118 1",
            b"AT Ri!ey +0.263873386 kiwi +34-118 1",
            b"AT Riley +0.263873386 kiwi +94-118 1",
            b"AT Riley +0.263873386 kiwi +34-118 1.",
            b"AT Riley +0.263873386 kiwi +34-118",
        ] {
            assert_eq!(parse_peer_message(bad), PeerMessage::Invalid, "{bad:?}");
            assert_eq!(parse_canonical_update(bad), None, "{bad:?}");
        }
        for bad in [
            &b"AT Riley +0.263873386 kiwi +34.068930-118.445127 1 x"[..],
            b"AT Riley +0.263873386 kiwi\x0b +34.068930-118.445127 1",
            b"AT Riley +0.263873386  kiwi +34.068930-118.445127 1",
            b"at Riley +0.263873386 kiwi +34.068930-118.445127 1",
        ] {
            assert_eq!(parse_canonical_update(bad), None, "{bad:?}");
        }
    }
}
