//! The herd file (docs/spec.md §2): which servers exist, where they listen and
//! whom they link with, parsed and validated as a pure function of the text.
//!
//! This module only describes a herd. Resolving names to sockets happens once
//! at start-up ([`Addr::to_socket_addrs`]); the peer links themselves live in
//! the rest of [`crate::herd`], and the command line in [`crate::cli`].
//!
//! Format, one server a line:
//!
//! ```text
//! # name    client address    [peer address]        [HTTP address]        neighbours
//! Riley     127.0.0.1:12000                                               Jaquez Juzang
//! Jaquez    127.0.0.1:12001   peer=127.0.0.1:22001  http=127.0.0.1:32001  Riley Bernard
//! ```
//!
//! Choices where docs/spec.md is silent:
//!
//! - Names are case-sensitive: `Riley` and `riley` are two servers.
//! - `peer=ADDR` and `http=ADDR` may stand anywhere after the client
//!   address, each at most once (the herd files write them before the
//!   neighbours).
//! - `http=ADDR` turns on the server's read-only HTTP endpoint (docs/spec.md section
//!   10) at that address. Without it the endpoint is off unless `--http` is
//!   given; [`ServerSpec::http_or_default`] is where `run_herd.sh` starts it
//!   (the client port + 20000), which the status page uses to find servers.
//!   An HTTP address takes part in the port-collision check like the others.
//! - A server with no neighbours is allowed (a herd of one).
//! - The port-collision check compares hosts by their text, not by what they
//!   resolve to: `localhost` and `127.0.0.1` are different hosts to it, and so
//!   are `0.0.0.0` and `127.0.0.1`. Host names compare case-insensitively and
//!   IPv6 addresses are stored in their canonical form (`[0:0::1]` is `::1`),
//!   so those spellings do collide.
//! - IPv6 zone ids (`fe80::1%eth0`) are not accepted.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::str::FromStr;

/// Ports are offset by this much when a server's peer address is not given,
/// as Redis Cluster does for its bus port.
pub const DEFAULT_PEER_PORT_OFFSET: u32 = 10000;

/// `run_herd.sh` serves a server's HTTP endpoint at its client port + this,
/// unless the herd file gives `http=ADDR`.
pub const DEFAULT_HTTP_PORT_OFFSET: u32 = 20000;

/// The source name reported in errors about the built-in herd.
pub const BUILT_IN_SOURCE: &str = "<built-in>";

/// The built-in default herd (docs/spec.md §2), in the herd file format.
pub const DEFAULT_HERD_TEXT: &str = "\
# The default herd (docs/spec.md §2). Peer ports default to client port + 10000.
# name      client address     neighbours
Riley       127.0.0.1:12000    Jaquez Juzang
Jaquez      127.0.0.1:12001    Riley Bernard
Juzang      127.0.0.1:12002    Riley Bernard Campbell
Campbell    127.0.0.1:12003    Juzang Bernard
Bernard     127.0.0.1:12004    Jaquez Juzang Campbell
";

/// A `host:port` address as written in a herd file; IPv6 hosts are kept without brackets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Addr {
    /// A host name, an IPv4 address, or an IPv6 address (canonical form, no brackets).
    pub host: String,
    /// The TCP port, 1..=65535.
    pub port: u16,
}

/// One server of the herd: its name, its two addresses and its neighbours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// The server's name (letters, digits, `_`, `-`).
    pub name: String,
    /// Where clients connect.
    pub client: Addr,
    /// Where neighbours connect (defaults to the client port + 10000).
    pub peer: Addr,
    /// Where the read-only HTTP endpoint listens (`http=ADDR`), if the file says.
    pub http: Option<Addr>,
    /// The names of the servers this one links with, in file order.
    pub neighbours: Vec<String>,
}

/// A whole herd, servers in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HerdConfig {
    /// The servers, in the order the file lists them.
    pub servers: Vec<ServerSpec>,
}

/// Why a herd file was rejected: the file, the line when there is one, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    file: String,
    line: Option<usize>,
    message: String,
}

impl ConfigError {
    /// An error about one line (1-based) of `file`.
    pub fn at_line(file: &str, line: usize, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_string(),
            line: Some(line),
            message: message.into(),
        }
    }

    /// An error about `file` as a whole.
    pub fn in_file(file: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_string(),
            line: None,
            message: message.into(),
        }
    }

    /// The file (or `<built-in>`) the error is about.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The 1-based line the error is about, if it is about one line.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// What is wrong, without the file and line.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for Addr {
    type Err = String;

    /// Parses `host:port` (host name, IPv4 or `[IPv6]`); the error says what is wrong.
    fn from_str(text: &str) -> Result<Addr, String> {
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("bad address {text:?}: missing ']' after the IPv6 host"))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| format!("bad address {text:?}: expected [IPv6]:PORT"))?;
            let ip = Ipv6Addr::from_str(inside)
                .map_err(|_| format!("bad address {text:?}: {inside:?} is not an IPv6 address"))?;
            (ip.to_string(), port)
        } else {
            let (host, port) = text
                .rsplit_once(':')
                .ok_or_else(|| format!("bad address {text:?}: expected HOST:PORT"))?;
            if host.contains(':') {
                return Err(format!(
                    "bad address {text:?}: write an IPv6 host in brackets, as [::1]:PORT"
                ));
            }
            check_host(host).map_err(|why| format!("bad address {text:?}: {why}"))?;
            (host.to_string(), port)
        };
        let port = parse_port(port).map_err(|why| format!("bad address {text:?}: {why}"))?;
        Ok(Addr { host, port })
    }
}

impl Addr {
    /// Resolves the address to socket addresses (may block on DNS: start-up only).
    pub fn to_socket_addrs(&self) -> std::io::Result<Vec<SocketAddr>> {
        Ok((self.host.as_str(), self.port).to_socket_addrs()?.collect())
    }

    /// The host as the collision check compares it: host names are case-insensitive.
    fn host_key(&self) -> String {
        self.host.to_ascii_lowercase()
    }
}

/// Checks a host name or IPv4 address (IPv6 is handled by the caller).
fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("empty host".to_string());
    }
    // Anything made of digits and dots is meant as IPv4, so `127.0.0.300`
    // is an error here rather than a host name that fails later in DNS.
    if host.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Ipv4Addr::from_str(host)
            .map(|_| ())
            .map_err(|_| format!("{host:?} is not an IPv4 address"));
    }
    if host.len() > 253 {
        return Err("host name longer than 253 characters".to_string());
    }
    for label in host.split('.') {
        let good = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !good {
            return Err(format!("{host:?} is not a valid host name"));
        }
    }
    Ok(())
}

/// Parses a port: decimal digits only, 1..=65535.
fn parse_port(text: &str) -> Result<u16, String> {
    if text.is_empty() {
        return Err("missing port".to_string());
    }
    // u16::from_str would also take "+80"; a port is digits only.
    if !text.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("port {text:?} is not a number"));
    }
    match text.parse::<u32>() {
        Ok(port @ 1..=65535) => Ok(port as u16),
        _ => Err(format!("port {text} is out of range 1..65535")),
    }
}

/// True when `name` is a valid server name: letters, digits, `_` and `-`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A server as parsed, with the line it came from, before cross-line checks.
struct Entry {
    spec: ServerSpec,
    line: usize,
}

/// Parses one non-blank line (comment already removed) into a server.
fn parse_line(fields: &[&str], source: &str, line: usize) -> Result<ServerSpec, ConfigError> {
    let err = |message: String| ConfigError::at_line(source, line, message);
    let name = fields[0];
    if !is_valid_name(name) {
        return Err(err(format!(
            "bad server name {name:?}: use letters, digits, '_' and '-'"
        )));
    }
    let Some(client_text) = fields.get(1) else {
        return Err(err(format!("server {name} has no client address")));
    };
    let client = Addr::from_str(client_text).map_err(|why| err(format!("{name}: {why}")))?;

    let mut peer = None;
    let mut http = None;
    let mut neighbours: Vec<String> = Vec::new();
    for field in &fields[2..] {
        if let Some(http_text) = field.strip_prefix("http=") {
            if http.is_some() {
                return Err(err(format!("{name}: http= given twice")));
            }
            let addr =
                Addr::from_str(http_text).map_err(|why| err(format!("{name}: http {why}")))?;
            http = Some(addr);
        } else if let Some(peer_text) = field.strip_prefix("peer=") {
            if peer.is_some() {
                return Err(err(format!("{name}: peer= given twice")));
            }
            let addr =
                Addr::from_str(peer_text).map_err(|why| err(format!("{name}: peer {why}")))?;
            peer = Some(addr);
        } else if field.contains('=') {
            return Err(err(format!(
                "{name}: unknown setting {field:?} (only peer=ADDR and http=ADDR are known)"
            )));
        } else if !is_valid_name(field) {
            return Err(err(format!(
                "{name}: bad neighbour name {field:?}: use letters, digits, '_' and '-'"
            )));
        } else if *field == name {
            return Err(err(format!("{name} lists itself as a neighbour")));
        } else if neighbours.iter().any(|n| n == field) {
            return Err(err(format!("{name} lists neighbour {field} twice")));
        } else {
            neighbours.push(field.to_string());
        }
    }

    let peer = match peer {
        Some(peer) => peer,
        None => {
            let port = u32::from(client.port) + DEFAULT_PEER_PORT_OFFSET;
            let port = u16::try_from(port).map_err(|_| {
                err(format!(
                    "{name}: the default peer port {port} (client port + {DEFAULT_PEER_PORT_OFFSET}) \
                     is above 65535; give one with peer=HOST:PORT"
                ))
            })?;
            Addr {
                host: client.host.clone(),
                port,
            }
        }
    };

    Ok(ServerSpec {
        name: name.to_string(),
        client,
        peer,
        http,
        neighbours,
    })
}

/// Every link must be written on both sides, and name a server of the file.
fn check_links(entries: &[Entry], source: &str) -> Result<(), ConfigError> {
    for entry in entries {
        for neighbour in &entry.spec.neighbours {
            let Some(other) = entries.iter().find(|e| &e.spec.name == neighbour) else {
                return Err(ConfigError::at_line(
                    source,
                    entry.line,
                    format!(
                        "{} lists unknown neighbour {neighbour} (no server of that name in this file)",
                        entry.spec.name
                    ),
                ));
            };
            if !other.spec.neighbours.contains(&entry.spec.name) {
                return Err(ConfigError::at_line(
                    source,
                    entry.line,
                    format!(
                        "{} lists {neighbour} as a neighbour but {neighbour} (line {}) does not \
                         list {}: links are bidirectional, write them on both lines",
                        entry.spec.name, other.line, entry.spec.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// No two addresses of the herd (client or peer, any servers) may share a host and port.
fn check_ports(entries: &[Entry], source: &str) -> Result<(), ConfigError> {
    // (entry, which address, the address) in file order: client, peer, HTTP.
    let mut seen: Vec<(&Entry, &str, &Addr)> = Vec::new();
    for entry in entries {
        let http = entry.spec.http.as_ref().map(|a| ("HTTP", a));
        let own = [("client", &entry.spec.client), ("peer", &entry.spec.peer)];
        for (kind, addr) in own.into_iter().chain(http) {
            let clash = seen
                .iter()
                .find(|(_, _, a)| a.port == addr.port && a.host_key() == addr.host_key());
            if let Some((other, other_kind, _)) = clash {
                let whose = if other.spec.name == entry.spec.name {
                    format!("its own {other_kind} address")
                } else {
                    format!(
                        "the {other_kind} address of {} (line {})",
                        other.spec.name, other.line
                    )
                };
                return Err(ConfigError::at_line(
                    source,
                    entry.line,
                    format!(
                        "{}: {kind} address {addr} collides with {whose}",
                        entry.spec.name
                    ),
                ));
            }
            seen.push((entry, kind, addr));
        }
    }
    Ok(())
}

impl HerdConfig {
    /// Parses and validates herd file text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<HerdConfig, ConfigError> {
        let mut entries: Vec<Entry> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.split('#').next().unwrap_or("");
            let fields: Vec<&str> = content.split_whitespace().collect();
            if fields.is_empty() {
                continue;
            }
            let spec = parse_line(&fields, source, line)?;
            if let Some(first) = entries.iter().find(|e| e.spec.name == spec.name) {
                return Err(ConfigError::at_line(
                    source,
                    line,
                    format!(
                        "duplicate server name {} (first on line {})",
                        spec.name, first.line
                    ),
                ));
            }
            entries.push(Entry { spec, line });
        }
        if entries.is_empty() {
            return Err(ConfigError::in_file(source, "no servers in the herd file"));
        }
        check_links(&entries, source)?;
        check_ports(&entries, source)?;
        Ok(HerdConfig {
            servers: entries.into_iter().map(|e| e.spec).collect(),
        })
    }

    /// Reads and parses a herd file; unreadable or non-UTF-8 files are errors too.
    pub fn load(path: &Path) -> Result<HerdConfig, ConfigError> {
        let source = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| {
            ConfigError::in_file(&source, format!("cannot read the herd file: {e}"))
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
            ConfigError::at_line(&source, line, "the herd file is not valid UTF-8")
        })?;
        HerdConfig::parse(&text, &source)
    }

    /// The built-in default herd (docs/spec.md §2), parsed from [`DEFAULT_HERD_TEXT`].
    pub fn default_herd() -> HerdConfig {
        // The text is a constant checked by the unit tests, so this cannot fail at run time.
        HerdConfig::parse(DEFAULT_HERD_TEXT, BUILT_IN_SOURCE)
            .expect("the built-in default herd is valid")
    }

    /// The server of this name, if the herd has one.
    pub fn server(&self, name: &str) -> Option<&ServerSpec> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// The servers' names, in file order.
    pub fn names(&self) -> Vec<&str> {
        self.servers.iter().map(|s| s.name.as_str()).collect()
    }

    /// Every link once, as (earlier server, later server) in file order.
    pub fn links(&self) -> Vec<(&str, &str)> {
        let mut links = Vec::new();
        for (i, s) in self.servers.iter().enumerate() {
            for n in &s.neighbours {
                let later = self.servers[i + 1..].iter().any(|o| &o.name == n);
                if later {
                    links.push((s.name.as_str(), n.as_str()));
                }
            }
        }
        links
    }
}

impl ServerSpec {
    /// Where this server's HTTP endpoint is when `run_herd.sh` starts it: the
    /// herd file's `http=`, else the client host and port + 20000 (None when
    /// that is above 65535).
    pub fn http_or_default(&self) -> Option<Addr> {
        if let Some(http) = &self.http {
            return Some(http.clone());
        }
        let port = u32::from(self.client.port) + DEFAULT_HTTP_PORT_OFFSET;
        u16::try_from(port).ok().map(|port| Addr {
            host: self.client.host.clone(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn parse(text: &str) -> Result<HerdConfig, ConfigError> {
        HerdConfig::parse(text, "test.herd")
    }

    /// Asserts that `text` is rejected on `line` with a message containing `needle`.
    fn rejects(text: &str, line: Option<usize>, needle: &str) {
        let err = parse(text).unwrap_err();
        assert_eq!(err.line(), line, "wrong line for {err}");
        assert!(err.message().contains(needle), "{err:?} lacks {needle:?}");
        assert!(
            err.to_string().starts_with("test.herd:"),
            "{err} does not name the file"
        );
    }

    fn addr(host: &str, port: u16) -> Addr {
        Addr {
            host: host.to_string(),
            port,
        }
    }

    #[test]
    fn default_herd_matches_the_spec() {
        let herd = HerdConfig::default_herd();
        assert_eq!(
            herd.names(),
            ["Riley", "Jaquez", "Juzang", "Campbell", "Bernard"]
        );
        let juzang = herd.server("Juzang").unwrap();
        assert_eq!(juzang.client, addr("127.0.0.1", 12002));
        assert_eq!(juzang.peer, addr("127.0.0.1", 22002));
        assert_eq!(juzang.neighbours, ["Riley", "Bernard", "Campbell"]);
        assert_eq!(
            herd.server("Bernard").unwrap().neighbours,
            ["Jaquez", "Juzang", "Campbell"]
        );
        assert!(herd.server("Nobody").is_none());
    }

    #[test]
    fn comments_blank_lines_and_tabs() {
        let herd = parse(
            "# a herd\n\n   \nA\t127.0.0.1:1000 B # trailing comment\n\
             \x20  B 127.0.0.1:1001\tA#glued comment\r\n# end",
        )
        .unwrap();
        assert_eq!(herd.names(), ["A", "B"]);
        assert_eq!(herd.server("A").unwrap().neighbours, ["B"]);
        assert_eq!(herd.server("B").unwrap().neighbours, ["A"]);
    }

    #[test]
    fn comment_can_hide_a_neighbour() {
        // The link B-A is commented out on B's line, so A's side is one-sided.
        rejects(
            "A 127.0.0.1:1000 B\nB 127.0.0.1:1001 # A\n",
            Some(1),
            "does not list A",
        );
    }

    #[test]
    fn single_server_without_neighbours() {
        let herd = parse("Solo localhost:8000").unwrap();
        let solo = herd.server("Solo").unwrap();
        assert_eq!(solo.client, addr("localhost", 8000));
        assert_eq!(solo.peer, addr("localhost", 18000));
        assert!(solo.neighbours.is_empty());
    }

    #[test]
    fn peer_override() {
        let herd = parse(
            "Riley 127.0.0.1:12000 Jaquez\nJaquez 127.0.0.1:12001 peer=10.0.0.2:9000 Riley\n",
        )
        .unwrap();
        assert_eq!(herd.server("Riley").unwrap().peer, addr("127.0.0.1", 22000));
        assert_eq!(herd.server("Jaquez").unwrap().peer, addr("10.0.0.2", 9000));
    }

    #[test]
    fn peer_override_may_follow_neighbours() {
        let herd = parse("A 127.0.0.1:1000 B peer=127.0.0.1:5000\nB 127.0.0.1:1001 A\n").unwrap();
        assert_eq!(herd.server("A").unwrap().peer, addr("127.0.0.1", 5000));
        assert_eq!(herd.server("A").unwrap().neighbours, ["B"]);
    }

    #[test]
    fn peer_override_allows_high_client_ports() {
        let herd = parse("A 127.0.0.1:60000 peer=127.0.0.1:60001").unwrap();
        assert_eq!(herd.servers[0].peer.port, 60001);
    }

    #[test]
    fn ipv6_addresses() {
        let herd = parse("A [::1]:12000 B\nB [0:0::1]:12001 peer=[::1]:30000 A\n").unwrap();
        let a = herd.server("A").unwrap();
        assert_eq!(a.client, addr("::1", 12000));
        assert_eq!(a.peer, addr("::1", 22000));
        assert_eq!(a.client.to_string(), "[::1]:12000");
        // Stored canonical, so different spellings of one address compare equal.
        assert_eq!(herd.server("B").unwrap().client, addr("::1", 12001));
        assert_eq!(herd.server("B").unwrap().peer.to_string(), "[::1]:30000");
    }

    #[test]
    fn addr_display_and_parse() {
        assert_eq!(addr("127.0.0.1", 80).to_string(), "127.0.0.1:80");
        assert_eq!(addr("example.com", 443).to_string(), "example.com:443");
        assert_eq!(
            "host-1.example:1".parse::<Addr>(),
            Ok(addr("host-1.example", 1))
        );
        assert_eq!(
            "[fe80::1]:65535".parse::<Addr>(),
            Ok(addr("fe80::1", 65535))
        );
    }

    #[test]
    fn addr_resolves() {
        let addrs = addr("127.0.0.1", 12000).to_socket_addrs().unwrap();
        assert_eq!(addrs, ["127.0.0.1:12000".parse::<SocketAddr>().unwrap()]);
        let addrs = addr("::1", 12000).to_socket_addrs().unwrap();
        assert_eq!(addrs, ["[::1]:12000".parse::<SocketAddr>().unwrap()]);
    }

    #[test]
    fn bad_addresses() {
        for bad in [
            "127.0.0.1",
            "127.0.0.1:",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "127.0.0.1:99999999999",
            "127.0.0.1:+80",
            "127.0.0.1:http",
            ":80",
            "127.0.0.300:80",
            "::1:80",
            "[::1:80",
            "[::1]80",
            "[nope]:80",
            "[127.0.0.1]:80",
            "bad_host:80",
            "-bad.example:80",
            "a..b:80",
        ] {
            let text = format!("A {bad}\n");
            let err = parse(&text).unwrap_err();
            assert_eq!(err.line(), Some(1), "{bad}");
            assert!(err.message().contains("bad address"), "{bad}: {err}");
        }
    }

    #[test]
    fn bad_peer_address() {
        rejects(
            "A 127.0.0.1:1000 peer=127.0.0.1\n",
            Some(1),
            "peer bad address",
        );
        rejects("A 127.0.0.1:1000 peer=\n", Some(1), "peer bad address");
    }

    #[test]
    fn missing_client_address() {
        rejects("\nA\n", Some(2), "no client address");
    }

    #[test]
    fn bad_names() {
        rejects("Ri.ley 127.0.0.1:1000\n", Some(1), "bad server name");
        rejects("Rïley 127.0.0.1:1000\n", Some(1), "bad server name");
        rejects(
            "A 127.0.0.1:1000 B/C\n",
            Some(1),
            "bad neighbour name \"B/C\"",
        );
    }

    #[test]
    fn unknown_setting() {
        rejects("A 127.0.0.1:1000 port=5\n", Some(1), "unknown setting");
    }

    #[test]
    fn http_address() {
        let herd = parse(
            "A 127.0.0.1:1000 peer=127.0.0.1:2000 http=127.0.0.1:3000 B\n\
             B 127.0.0.1:1001 http=[::1]:3001 A\n\
             C 127.0.0.1:50000",
        )
        .unwrap();
        let a = herd.server("A").unwrap();
        assert_eq!(a.http, Some(addr("127.0.0.1", 3000)));
        assert_eq!(a.peer, addr("127.0.0.1", 2000));
        assert_eq!(a.neighbours, ["B"]);
        assert_eq!(a.http_or_default(), Some(addr("127.0.0.1", 3000)));
        let b = herd.server("B").unwrap();
        assert_eq!(b.http, Some(addr("::1", 3001)));
        assert_eq!(b.peer, addr("127.0.0.1", 11001));
        let c = herd.server("C").unwrap();
        assert_eq!(c.http, None);
        // run_herd.sh's default is the client port + 20000, when it fits.
        assert_eq!(c.http_or_default(), None);
        let d = parse("D 127.0.0.1:12000").unwrap();
        assert_eq!(
            d.servers[0].http_or_default(),
            Some(addr("127.0.0.1", 32000))
        );
    }

    #[test]
    fn bad_http_addresses() {
        rejects(
            "A 127.0.0.1:1000 http=127.0.0.1\n",
            Some(1),
            "A: http bad address",
        );
        rejects(
            "A 127.0.0.1:1000 http=127.0.0.1:3000 http=127.0.0.1:3001\n",
            Some(1),
            "http= given twice",
        );
        rejects(
            "A 127.0.0.1:1000 http=127.0.0.1:11000\n",
            Some(1),
            "HTTP address 127.0.0.1:11000 collides with its own peer address",
        );
        rejects(
            "A 127.0.0.1:1000 http=127.0.0.1:5000\nB 127.0.0.1:5000\n",
            Some(2),
            "client address 127.0.0.1:5000 collides with the HTTP address of A (line 1)",
        );
        rejects(
            "A 127.0.0.1:1000 http=127.0.0.1:5000\nB 127.0.0.1:1001 http=127.0.0.1:5000\n",
            Some(2),
            "HTTP address 127.0.0.1:5000 collides with the HTTP address of A",
        );
    }

    #[test]
    fn links_are_listed_once_in_file_order() {
        let herd = HerdConfig::default_herd();
        assert_eq!(
            herd.links(),
            [
                ("Riley", "Jaquez"),
                ("Riley", "Juzang"),
                ("Jaquez", "Bernard"),
                ("Juzang", "Bernard"),
                ("Juzang", "Campbell"),
                ("Campbell", "Bernard"),
            ]
        );
    }

    #[test]
    fn peer_given_twice() {
        rejects(
            "A 127.0.0.1:1000 peer=127.0.0.1:2000 peer=127.0.0.1:3000\n",
            Some(1),
            "peer= given twice",
        );
    }

    #[test]
    fn duplicate_names() {
        rejects(
            "A 127.0.0.1:1000\n# x\nA 127.0.0.1:1001\n",
            Some(3),
            "duplicate server name A (first on line 1)",
        );
    }

    #[test]
    fn names_are_case_sensitive() {
        let herd = parse("a 127.0.0.1:1000\nA 127.0.0.1:1001\n").unwrap();
        assert_eq!(herd.names(), ["a", "A"]);
    }

    #[test]
    fn unknown_neighbour() {
        rejects(
            "A 127.0.0.1:1000 B\nB 127.0.0.1:1001 A C\n",
            Some(2),
            "unknown neighbour C",
        );
    }

    #[test]
    fn one_sided_link() {
        rejects(
            "A 127.0.0.1:1000 B\nB 127.0.0.1:1001\n",
            Some(1),
            "A lists B as a neighbour but B (line 2) does not list A",
        );
        rejects(
            "A 127.0.0.1:1000\nB 127.0.0.1:1001 A\n",
            Some(2),
            "B lists A as a neighbour but A (line 1) does not list B",
        );
    }

    #[test]
    fn own_neighbour() {
        rejects("A 127.0.0.1:1000 A\n", Some(1), "lists itself");
    }

    #[test]
    fn neighbour_listed_twice() {
        rejects(
            "A 127.0.0.1:1000 B B\nB 127.0.0.1:1001 A\n",
            Some(1),
            "lists neighbour B twice",
        );
    }

    #[test]
    fn client_ports_collide() {
        rejects(
            "A 127.0.0.1:1000\nB 127.0.0.1:1000\n",
            Some(2),
            "client address 127.0.0.1:1000 collides with the client address of A (line 1)",
        );
    }

    #[test]
    fn default_peer_port_collides_with_a_client_port() {
        rejects(
            "A 127.0.0.1:1000\nB 127.0.0.1:11000\n",
            Some(2),
            "client address 127.0.0.1:11000 collides with the peer address of A (line 1)",
        );
    }

    #[test]
    fn peer_ports_collide() {
        rejects(
            "A 127.0.0.1:1000 peer=127.0.0.1:5000\nB 127.0.0.1:1001 peer=127.0.0.1:5000\n",
            Some(2),
            "peer address 127.0.0.1:5000 collides with the peer address of A",
        );
    }

    #[test]
    fn peer_port_collides_with_own_client_port() {
        rejects(
            "A 127.0.0.1:1000 peer=127.0.0.1:1000\n",
            Some(1),
            "collides with its own client address",
        );
    }

    #[test]
    fn collisions_compare_hosts_by_text() {
        // Documented: localhost and 127.0.0.1 are different hosts to the check.
        parse("A localhost:1000\nB 127.0.0.1:1000\n").unwrap();
        // Host names are case-insensitive, IPv6 canonical.
        rejects("A LocalHost:1000\nB localhost:1000\n", Some(2), "collides");
        rejects("A [::1]:1000\nB [0::1]:1000\n", Some(2), "collides");
    }

    #[test]
    fn default_peer_port_above_65535() {
        rejects(
            "A 127.0.0.1:55536\n",
            Some(1),
            "default peer port 65536 (client port + 10000) is above 65535",
        );
        parse("A 127.0.0.1:55535\n").unwrap();
    }

    #[test]
    fn empty_files() {
        for text in ["", "\n\n", "# only a comment\n   # another\n"] {
            let err = parse(text).unwrap_err();
            assert_eq!(err.line(), None);
            assert_eq!(err.to_string(), "test.herd: no servers in the herd file");
        }
    }

    #[test]
    fn error_display() {
        let err = ConfigError::at_line("h.herd", 3, "oops");
        assert_eq!(err.to_string(), "h.herd:3: oops");
        assert_eq!(err.file(), "h.herd");
        let err = ConfigError::in_file("h.herd", "oops");
        assert_eq!(err.to_string(), "h.herd: oops");
    }

    fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("proxy-herd-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn load_reads_a_file() {
        let path = temp_file("ok.herd", b"A 127.0.0.1:1000\n");
        let herd = HerdConfig::load(&path).unwrap();
        assert_eq!(herd.names(), ["A"]);
    }

    #[test]
    fn load_names_the_file_in_errors() {
        let path = temp_file("dup.herd", b"A 127.0.0.1:1000\nA 127.0.0.1:1001\n");
        let err = HerdConfig::load(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}:2: duplicate server name A (first on line 1)",
                path.display()
            )
        );
    }

    #[test]
    fn load_missing_file() {
        let path = std::env::temp_dir().join("proxy-herd-no-such-dir/none.herd");
        let err = HerdConfig::load(&path).unwrap_err();
        assert_eq!(err.line(), None);
        assert!(err
            .to_string()
            .starts_with(&format!("{}: cannot read", path.display())));
    }

    #[test]
    fn load_rejects_non_utf8() {
        let path = temp_file("latin1.herd", b"A 127.0.0.1:1000\n# caf\xe9\n");
        let err = HerdConfig::load(&path).unwrap_err();
        assert_eq!(err.line(), Some(2));
        assert!(err.message().contains("not valid UTF-8"));
    }

    /// Every herd file shipped in docs/herds/ parses.
    #[test]
    fn shipped_herd_files_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/herds");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "herd") {
                let herd = HerdConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(herd.servers.len(), 5, "{}", path.display());
                assert_eq!(herd.servers[0].client.port, 12000, "{}", path.display());
                count += 1;
            }
        }
        assert!(count >= 5, "only {count} herd files in {}", dir.display());
    }

    #[test]
    fn shipped_default_herd_is_the_built_in_one() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/herds/default.herd");
        assert_eq!(HerdConfig::load(&path).unwrap(), HerdConfig::default_herd());
    }

    /// A shipped herd file's stem, its servers in order, and its links.
    type ShippedHerd = (
        &'static str,
        [&'static str; 5],
        [(&'static str, &'static str); 6],
    );

    /// The links of a herd as sorted (smaller name, larger name) pairs.
    fn links(herd: &HerdConfig) -> Vec<(&str, &str)> {
        let mut links = Vec::new();
        for s in &herd.servers {
            for n in &s.neighbours {
                if s.name < *n {
                    links.push((s.name.as_str(), n.as_str()));
                }
            }
        }
        links.sort();
        links
    }

    #[test]
    fn shipped_herds_have_the_listed_servers_and_links() {
        let table: [ShippedHerd; 5] = [
            (
                "default",
                ["Riley", "Jaquez", "Juzang", "Campbell", "Bernard"],
                [
                    ("Riley", "Jaquez"),
                    ("Riley", "Juzang"),
                    ("Jaquez", "Bernard"),
                    ("Juzang", "Bernard"),
                    ("Juzang", "Campbell"),
                    ("Campbell", "Bernard"),
                ],
            ),
            (
                "goloman",
                ["Goloman", "Hands", "Holiday", "Welsh", "Wilkes"],
                [
                    ("Goloman", "Hands"),
                    ("Goloman", "Holiday"),
                    ("Goloman", "Wilkes"),
                    ("Hands", "Wilkes"),
                    ("Holiday", "Welsh"),
                    ("Holiday", "Wilkes"),
                ],
            ),
            (
                "hill",
                ["Hill", "Jaquez", "Smith", "Campbell", "Singleton"],
                [
                    ("Hill", "Jaquez"),
                    ("Hill", "Smith"),
                    ("Smith", "Campbell"),
                    ("Singleton", "Jaquez"),
                    ("Singleton", "Smith"),
                    ("Singleton", "Campbell"),
                ],
            ),
            (
                "juzang",
                ["Juzang", "Bernard", "Jaquez", "Johnson", "Clark"],
                [
                    ("Clark", "Jaquez"),
                    ("Clark", "Juzang"),
                    ("Juzang", "Johnson"),
                    ("Bernard", "Juzang"),
                    ("Bernard", "Jaquez"),
                    ("Bernard", "Johnson"),
                ],
            ),
            (
                "bailey",
                ["Bailey", "Bona", "Campbell", "Clark", "Jaquez"],
                [
                    ("Clark", "Jaquez"),
                    ("Clark", "Bona"),
                    ("Bona", "Bailey"),
                    ("Campbell", "Bailey"),
                    ("Campbell", "Bona"),
                    ("Campbell", "Jaquez"),
                ],
            ),
        ];
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/herds");
        for (file, names, expected) in table {
            let herd = HerdConfig::load(&dir.join(format!("{file}.herd"))).unwrap();
            assert_eq!(herd.names(), names, "{file}");
            for (i, server) in herd.servers.iter().enumerate() {
                assert_eq!(server.client, addr("127.0.0.1", 12000 + i as u16), "{file}");
            }
            let mut expected: Vec<(&str, &str)> = expected
                .iter()
                .map(|&(a, b)| if a < b { (a, b) } else { (b, a) })
                .collect();
            expected.sort();
            assert_eq!(links(&herd), expected, "{file}");
        }
    }

    /// docs/herds/graders/ holds the classic herds on the ports of the
    /// course's public grading scripts (docs/grading.md): same servers and
    /// links, only the client ports differ.
    #[test]
    fn grader_herds_are_the_classic_herds_on_the_graders_ports() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/herds");
        for (grader, classic, first_port) in
            [("cs131-ta", "hill", 8000), ("cs131-w22", "juzang", 9991)]
        {
            let herd = HerdConfig::load(&dir.join(format!("graders/{grader}.herd"))).unwrap();
            let base = HerdConfig::load(&dir.join(format!("{classic}.herd"))).unwrap();
            assert_eq!(herd.names(), base.names(), "{grader}");
            assert_eq!(links(&herd), links(&base), "{grader}");
            for (i, server) in herd.servers.iter().enumerate() {
                assert_eq!(
                    server.client,
                    addr("127.0.0.1", first_port + i as u16),
                    "{grader}"
                );
            }
        }
    }
}
