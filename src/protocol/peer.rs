//! The peer protocol (docs/spec.md §5; `docs/protocol.md` is its prose): lines,
//! like the client protocol, on the peer port only.
//!
//! ```text
//! dialer -> acceptor   HELLO <name> [<nonce>]
//! acceptor -> dialer   CHALLENGE <nonce> <proof>  (with a herd secret: see herd/auth.rs)
//! dialer -> acceptor   PROOF <proof>              (likewise)
//! acceptor -> dialer   WELCOME <name>            or   REFUSED <reason>
//! dialer -> acceptor   AT <server> <diff> <client> <location> <time>   (updates, catch-up)
//! dialer -> acceptor   PING           acceptor -> dialer   PONG         (liveness)
//! ```
//!
//! Updates are the AT lines themselves, exactly as the receiving server made
//! them, so every server answers WHATSAT with the same first line.

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
    Blank,
    Invalid,
}

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
    if !is_server_name(server) || !is_diff(diff) {
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

/// Appends the AT line of `update` and `\n`: the whole update message.
pub fn write_update(out: &mut Vec<u8>, update_line: &[u8]) {
    out.extend_from_slice(update_line);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn updates_are_validated_and_made_canonical() {
        let line = b"AT  Riley +0.263873386 kiwi +34.068930-118.445127\t1621464827.959498503";
        let PeerMessage::Update(u) = parse_peer_message(line) else {
            panic!("not an update");
        };
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
        }
    }
}
