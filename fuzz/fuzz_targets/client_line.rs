//! One client line: `parse_request` on arbitrary bytes.
//!
//! - An IAMAT's `AT` reply, formatted for any plausible receive time, is an
//!   update that `parse_update` accepts with the same client and time, and is
//!   already in the canonical form peers pass on.
//! - A WHATSAT's radius and bound are within docs/spec.md's limits.
//! - `write_invalid` echoes the line (without its terminator) after `? `.

#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_herd::protocol::client::{
    format_at, parse_request, strip_terminator, write_invalid, Request,
};
use proxy_herd::protocol::peer::parse_update;

/// Server names: the shortest, a real one, and every kind of allowed character.
const SERVERS: [&str; 3] = ["a", "Riley", "Server_name-0123456789"];

fuzz_target!(|line: &[u8]| {
    match parse_request(line) {
        Request::IAmAt(req) => {
            // The clock can be anywhere from the epoch to year 2554 (u64
            // nanoseconds), and the client's time just before or after it.
            let nows = [
                0,
                1_621_464_828_223_371_889,
                i128::from(u64::MAX),
                req.time_ns,
                req.time_ns - 1,
                req.time_ns + 1,
            ];
            for server in SERVERS {
                for now in nows {
                    let at = format_at(server, now, &req);
                    let update = parse_update(&at).unwrap_or_else(|| {
                        panic!("AT line not accepted: {:?}", at.escape_ascii().to_string())
                    });
                    assert_eq!(update.client, req.client);
                    assert_eq!(update.time_ns, req.time_ns);
                    // format_at writes single spaces: already canonical.
                    assert_eq!(update.at_line, at);
                }
            }
        }
        Request::WhatsAt(w) => {
            assert!((1..=20).contains(&w.bound), "bound {}", w.bound);
            let metres: f64 = w.radius_m.parse().expect("radius is a decimal");
            assert!(metres > 0.0 && metres <= 50_000.0, "radius {}", w.radius_m);
        }
        Request::Blank | Request::Invalid => {}
    }
    let mut out = b"earlier output\n".to_vec();
    write_invalid(&mut out, line);
    let echoed = &out[b"earlier output\n".len()..];
    assert_eq!(&echoed[..2], b"? ");
    assert_eq!(&echoed[2..echoed.len() - 1], strip_terminator(line));
    assert_eq!(echoed.last(), Some(&b'\n'));
});
