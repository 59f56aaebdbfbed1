//! One peer line: `parse_peer_message` on arbitrary bytes.
//!
//! An update's `at_line` is canonical: parsing it again gives the same
//! update, so a line flooded on through the herd never changes. Greetings
//! carry valid server names, and a refusal's reason is trimmed.

#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_herd::protocol::is_space;
use proxy_herd::protocol::peer::{is_server_name, parse_peer_message, parse_update, PeerMessage};

fuzz_target!(|line: &[u8]| {
    match parse_peer_message(line) {
        PeerMessage::Update(update) => {
            let again = parse_peer_message(&update.at_line);
            assert_eq!(again, PeerMessage::Update(update.clone()));
            assert_eq!(parse_update(&update.at_line).as_ref(), Some(&update));
            assert!(update.at_line.starts_with(b"AT "));
        }
        PeerMessage::Hello { name } | PeerMessage::Welcome { name } => {
            assert!(is_server_name(name));
        }
        PeerMessage::Refused { reason } => {
            assert!(!reason.first().is_some_and(|&b| is_space(b)));
            assert!(!reason.last().is_some_and(|&b| is_space(b)));
        }
        PeerMessage::Ping | PeerMessage::Pong | PeerMessage::Blank | PeerMessage::Invalid => {}
    }
});
