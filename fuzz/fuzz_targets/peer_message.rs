//! One peer line: `parse_peer_message` on arbitrary bytes.
//!
//! An update's `at_line` is canonical: parsing it again gives the same
//! update, so a line flooded on through the herd never changes, and the
//! state file's quick check agrees with it. Greetings carry valid server
//! names, nonces and proofs are 1 to 128 hex digits, a refusal's reason is
//! trimmed, and the catch-up's messages round-trip through their writers.

#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_herd::protocol::is_space;
use proxy_herd::protocol::peer::{
    self, is_server_name, parse_canonical_update, parse_peer_message, parse_update, Hashes,
    PeerMessage,
};

fn reparsed(out: &[u8]) -> PeerMessage<'_> {
    parse_peer_message(out.strip_suffix(b"\n").unwrap())
}

fuzz_target!(|line: &[u8]| {
    match parse_peer_message(line) {
        PeerMessage::Update(update) | PeerMessage::Sync(update) => {
            let again = parse_peer_message(&update.at_line);
            assert_eq!(again, PeerMessage::Update(update.clone()));
            assert_eq!(parse_update(&update.at_line).as_ref(), Some(&update));
            assert!(update.at_line.starts_with(b"AT "));
            assert_eq!(
                parse_canonical_update(&update.at_line),
                Some((&update.client[..], update.time_ns))
            );
        }
        PeerMessage::Hello { name, nonce } => {
            assert!(is_server_name(name));
            assert!(nonce.is_none_or(is_token));
        }
        PeerMessage::Welcome { name } => assert!(is_server_name(name)),
        PeerMessage::Challenge { nonce, proof } => assert!(is_token(nonce) && is_token(proof)),
        PeerMessage::Proof { proof } => assert!(is_token(proof)),
        PeerMessage::Refused { reason } => {
            assert!(!reason.first().is_some_and(|&b| is_space(b)));
            assert!(!reason.last().is_some_and(|&b| is_space(b)));
        }
        PeerMessage::Tree { node } => {
            let mut out = Vec::new();
            peer::write_tree(&mut out, node);
            assert_eq!(reparsed(&out), PeerMessage::Tree { node });
        }
        PeerMessage::Hashes { node, hashes } => {
            let mut out = Vec::new();
            match &hashes {
                Hashes::List(h) => peer::write_hashes(&mut out, node, h),
                Hashes::TooMany => peer::write_too_many(&mut out, node),
            }
            assert_eq!(reparsed(&out), PeerMessage::Hashes { node, hashes });
        }
        PeerMessage::Synced { positions } => {
            let mut out = Vec::new();
            peer::write_synced(&mut out, positions);
            assert_eq!(reparsed(&out), PeerMessage::Synced { positions });
        }
        PeerMessage::Ping
        | PeerMessage::Pong
        | PeerMessage::Wait
        | PeerMessage::Blank
        | PeerMessage::Invalid => {}
    }
});

/// What the parser accepts as a nonce or a proof (herd/auth.rs).
fn is_token(t: &[u8]) -> bool {
    (1..=128).contains(&t.len()) && t.iter().all(u8::is_ascii_hexdigit)
}
