//! A herd file: `HerdConfig::parse` on arbitrary UTF-8.
//!
//! A herd it accepts is one the servers can run: valid, unique names;
//! every neighbour exists and lists the server back; no address is used
//! twice; every address prints as text that parses back to itself.

#![no_main]

use std::collections::HashSet;
use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use proxy_herd::herd::config::{is_valid_name, Addr, HerdConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match HerdConfig::parse(text, "fuzz") {
        Ok(config) => config,
        Err(e) => {
            assert_eq!(e.file(), "fuzz");
            assert!(!e.message().is_empty());
            if let Some(line) = e.line() {
                assert!(line >= 1 && line <= text.lines().count(), "line {line}");
            }
            let _ = e.to_string();
            return;
        }
    };
    assert!(!config.servers.is_empty());
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for server in &config.servers {
        assert!(is_valid_name(&server.name), "{:?}", server.name);
        assert!(
            names.insert(server.name.as_str()),
            "duplicate {}",
            server.name
        );
        assert!(config.server(&server.name) == Some(server));
        let mut seen = HashSet::new();
        for neighbour in &server.neighbours {
            assert!(is_valid_name(neighbour), "{neighbour:?}");
            assert_ne!(neighbour, &server.name, "links to itself");
            assert!(seen.insert(neighbour), "{neighbour} twice");
            let other = config
                .server(neighbour)
                .unwrap_or_else(|| panic!("{} lists unknown {neighbour}", server.name));
            assert!(
                other.neighbours.contains(&server.name),
                "{} -> {neighbour} is one-sided",
                server.name
            );
        }
        for addr in [&server.client, &server.peer] {
            assert_ne!(addr.port, 0);
            assert!(
                addrs.insert((addr.host.to_ascii_lowercase(), addr.port)),
                "address {addr} used twice"
            );
            let text = addr.to_string();
            assert_eq!(Addr::from_str(&text).as_ref(), Ok(addr), "{text}");
        }
    }
});
