//! The test harness: real server processes on 127.0.0.1, raw lines over TCP.
//!
//! - Ports: picked below the kernel's ephemeral range (so no test client's
//!   outgoing connection can take a port a server is about to bind or rebind
//!   after a kill), from a per-process random start, each checked free by
//!   binding it; the OS has the last word.
//! - Which implementation runs: `PROXY_HERD_IMPL=asyncio` (or `node`, `java`,
//!   `threads`) runs a counterpart from `docs/` instead of the Rust binary, so
//!   the same tests hold every implementation to the protocol.
//! - Nothing sleeps for a fixed time: every wait polls a condition until a
//!   deadline and fails the test with what it was waiting for.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long any wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Polls `check` until it returns `Some`, or panics after [`DEADLINE`] naming `what`.
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A port nobody is listening on, below the ephemeral range.
pub fn free_port() -> u16 {
    static NEXT: OnceLock<AtomicU16> = OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            ^ std::process::id();
        // 20000..30000, avoiding the default herd's 12000-12004 and 22000-22004.
        AtomicU16::new(20_100 + (seed % 9_000) as u16)
    });
    for _ in 0..10_000 {
        let mut port = next.fetch_add(1, Ordering::Relaxed);
        if port >= 30_000 {
            port = 20_100 + port % 9_000;
            next.store(port + 1, Ordering::Relaxed);
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port found");
}

/// A scratch folder for one test, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicU16 = AtomicU16::new(0);
        let dir = std::env::temp_dir().join(format!(
            "proxy-herd-test-{}-{name}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The repository's top folder, from whichever of the workspace's packages
/// the test belongs to.
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|d| d.join("run_herd.sh").exists())
        .map_or(manifest.clone(), Path::to_path_buf)
}

/// A binary of the workspace (`proxy-herd`, `places-offline`, `herd-bench`):
/// cargo puts them all beside the folder the test runs from
/// (`target/<profile>/deps/`), and builds them all for `cargo test`.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` (tests/run.sh does)",
        path.display()
    );
    path
}

/// Which implementation the tests run against: `PROXY_HERD_IMPL` names a
/// counterpart (`asyncio`, `node`, `java`, `threads`); unset, the Rust binary.
pub fn implementation() -> String {
    std::env::var("PROXY_HERD_IMPL").unwrap_or_else(|_| "rust".to_string())
}

/// True under CI (`CI=true`, as `.ci/run` is run): a test whose tool is
/// missing fails there rather than skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// True when the tests run against the asyncio counterpart.
pub fn is_asyncio() -> bool {
    implementation() == "asyncio"
}

/// True when the tests run against any counterpart rather than the Rust server.
pub fn is_counterpart() -> bool {
    implementation() != "rust"
}

/// The command that starts one server, before its arguments.
pub fn server_command() -> Command {
    let root = repo_root();
    match implementation().as_str() {
        "rust" => Command::new(workspace_bin("proxy-herd")),
        "asyncio" => {
            let mut c = Command::new("python3");
            c.arg(root.join("docs/asyncio/herd.py"));
            c
        }
        "threads" => {
            let mut c = Command::new("python3");
            c.arg(root.join("docs/threads/herd.py"));
            c
        }
        "node" => {
            let mut c = Command::new("node");
            c.arg(root.join("docs/node/herd.js"));
            c
        }
        "java" => {
            // The first start compiles the Java sources, which takes seconds on
            // a loaded machine: do it once, before any test's deadline runs.
            static BUILT: OnceLock<()> = OnceLock::new();
            BUILT.get_or_init(|| {
                let status = Command::new(root.join("docs/java/herd.sh"))
                    .arg("--version")
                    .stdout(Stdio::null())
                    .status();
                assert!(
                    status.as_ref().is_ok_and(|s| s.success()),
                    "docs/java/herd.sh did not build: {status:?}"
                );
            });
            Command::new(root.join("docs/java/herd.sh"))
        }
        other => panic!("PROXY_HERD_IMPL={other}: expected asyncio, node, java or threads"),
    }
}

/// A server process, killed when dropped.
pub struct Server {
    pub name: String,
    pub child: Child,
    pub client: SocketAddr,
    pub log: PathBuf,
    pub stderr: PathBuf,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by pid, as an operator would.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} {} failed", self.pid());
    }

    /// Waits for the process to end and returns its exit code (None: signal).
    pub fn wait_exit(&mut self) -> Option<i32> {
        wait_for(&format!("{} to exit", self.name), || {
            self.child.try_wait().ok().flatten()
        })
        .code()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.client)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a server with `args`, its log at `log`, and waits until it listens
/// on `client`. `PLACES_API_KEY` is unset unless `env` sets it.
pub fn start_server(name: &str, args: &[String], client: SocketAddr, log: &Path) -> Server {
    start_server_env(name, args, &[], client, log)
}

/// [`start_server`] with environment variables.
pub fn start_server_env(
    name: &str,
    args: &[String],
    env: &[(&str, &str)],
    client: SocketAddr,
    log: &Path,
) -> Server {
    let stderr = log.with_extension("stderr");
    if let Some(dir) = stderr.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let err_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&stderr)
        .unwrap();
    let child = server_command()
        .args(args)
        .env_remove("PLACES_API_KEY")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err_file)
        .spawn()
        .expect("cannot start the server");
    let mut server = Server {
        name: name.to_string(),
        child,
        client,
        log: log.to_path_buf(),
        stderr,
    };
    wait_for(&format!("{name} to listen on {client}"), || {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!(
                "{name} exited with {status} before listening: {}",
                server.stderr_text()
            );
        }
        TcpStream::connect(client).ok().map(|_| ())
    });
    server
}

/// Writes a herd of one, `Riley` on fresh ports, into `dir`; returns the
/// herd file and Riley's client port.
pub fn lone_herd_file(dir: &TempDir) -> (PathBuf, u16) {
    let port = free_port();
    let config = dir.path("herd.txt");
    std::fs::write(
        &config,
        format!("Riley 127.0.0.1:{port} peer=127.0.0.1:{}\n", free_port()),
    )
    .unwrap();
    (config, port)
}

/// One server of a herd, as the herd file has it.
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    /// The HTTP endpoint's port, written as `http=` (see [`Herd::with_http`]).
    pub http_port: Option<u16>,
    pub neighbours: Vec<String>,
}

/// A whole herd of real processes.
pub struct Herd {
    pub dir: TempDir,
    pub config: PathBuf,
    pub members: Vec<Member>,
    pub servers: Vec<Option<Server>>,
    pub extra_args: Vec<String>,
}

/// docs/spec.md's default herd: Riley, Jaquez, Juzang, Campbell, Bernard.
pub const DEFAULT_HERD: &[(&str, &[&str])] = &[
    ("Riley", &["Jaquez", "Juzang"]),
    ("Jaquez", &["Riley", "Bernard"]),
    ("Juzang", &["Riley", "Bernard", "Campbell"]),
    ("Campbell", &["Juzang", "Bernard"]),
    ("Bernard", &["Jaquez", "Juzang", "Campbell"]),
];

impl Herd {
    /// Writes a herd file with fresh ports; starts nothing.
    pub fn new(test: &str, shape: &[(&str, &[&str])]) -> Herd {
        Herd::write(test, shape, false)
    }

    /// As [`Herd::new`], with an `http=` address on every line, so that every
    /// server serves `/metrics`, `/status` and the page.
    pub fn with_http(test: &str, shape: &[(&str, &[&str])]) -> Herd {
        Herd::write(test, shape, true)
    }

    fn write(test: &str, shape: &[(&str, &[&str])], http: bool) -> Herd {
        let dir = TempDir::new(test);
        let members: Vec<Member> = shape
            .iter()
            .map(|(name, neighbours)| Member {
                name: name.to_string(),
                client_port: free_port(),
                peer_port: free_port(),
                http_port: http.then(free_port),
                neighbours: neighbours.iter().map(|s| s.to_string()).collect(),
            })
            .collect();
        let mut text = String::from("# written by the test harness\n");
        for m in &members {
            let http = m
                .http_port
                .map_or(String::new(), |p| format!(" http=127.0.0.1:{p}"));
            text.push_str(&format!(
                "{} 127.0.0.1:{} peer=127.0.0.1:{}{http} {}\n",
                m.name,
                m.client_port,
                m.peer_port,
                m.neighbours.join(" ")
            ));
        }
        let config = dir.path("herd.txt");
        std::fs::write(&config, text).unwrap();
        let servers = members.iter().map(|_| None).collect();
        // WHATSAT's Places part goes to a closed local port: fails fast.
        let places = format!("https://127.0.0.1:{}/nearbysearch/json", free_port());
        Herd {
            dir,
            config,
            members,
            servers,
            extra_args: vec!["--places-url".to_string(), places],
        }
    }

    /// A herd with every server started.
    pub fn start(test: &str, shape: &[(&str, &[&str])]) -> Herd {
        let mut herd = Herd::new(test, shape);
        for i in 0..herd.members.len() {
            herd.start_one(i);
        }
        herd
    }

    /// A herd [`with_http`](Herd::with_http), every server started.
    pub fn start_with_http(test: &str, shape: &[(&str, &[&str])]) -> Herd {
        let mut herd = Herd::with_http(test, shape);
        for i in 0..herd.members.len() {
            herd.start_one(i);
        }
        herd
    }

    /// Server `name`'s HTTP endpoint (a herd made [`with_http`](Herd::with_http)).
    pub fn http_addr(&self, name: &str) -> SocketAddr {
        let port = self.members[self.index(name)]
            .http_port
            .unwrap_or_else(|| panic!("{name} has no http= in this herd"));
        ([127, 0, 0, 1], port).into()
    }

    pub fn index(&self, name: &str) -> usize {
        self.members
            .iter()
            .position(|m| m.name == name)
            .unwrap_or_else(|| panic!("no server {name}"))
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path(&format!("{name}.log"))
    }

    /// Starts (or restarts) server `i` with the herd's ports.
    pub fn start_one(&mut self, i: usize) -> &Server {
        let m = &self.members[i];
        let log = self.log_path(&m.name);
        let mut args = vec![
            "-c".to_string(),
            self.config.display().to_string(),
            "-l".to_string(),
            log.display().to_string(),
        ];
        args.extend(self.extra_args.iter().cloned());
        args.push(m.name.clone());
        let addr: SocketAddr = ([127, 0, 0, 1], m.client_port).into();
        let server = start_server(&m.name, &args, addr, &log);
        self.servers[i] = Some(server);
        self.servers[i].as_ref().unwrap()
    }

    pub fn start_named(&mut self, name: &str) {
        let i = self.index(name);
        self.start_one(i);
    }

    pub fn server(&self, name: &str) -> &Server {
        self.servers[self.index(name)]
            .as_ref()
            .unwrap_or_else(|| panic!("{name} is not running"))
    }

    /// SIGKILL by pid, and wait until the process is gone.
    pub fn kill(&mut self, name: &str) {
        let i = self.index(name);
        if let Some(mut s) = self.servers[i].take() {
            s.signal("KILL");
            s.wait_exit();
        }
    }

    /// Sends IAMAT to `name` and returns the AT line it answered.
    pub fn iamat(&self, name: &str, client: &str, location: &str, time: &str) -> String {
        let mut c = self.server(name).connect();
        c.send(format!("IAMAT {client} {location} {time}\n").as_bytes());
        let line = c.read_line();
        assert!(line.starts_with("AT "), "unexpected reply {line:?}");
        line
    }

    /// The AT line `name` holds for `client`, if any: asks with WHATSAT and
    /// reads the first line (the Places part is not needed here).
    pub fn known_at(&self, name: &str, client: &str) -> Option<String> {
        let mut c = self.server(name).connect();
        c.send(format!("WHATSAT {client} 1 1\n").as_bytes());
        let line = c.read_line();
        if line.starts_with("? ") {
            None
        } else {
            c.read_until_blank_line();
            Some(line)
        }
    }

    /// Waits until every running server holds `at` for `client`.
    pub fn wait_everywhere(&self, client: &str, at: &str) {
        for (m, s) in self.members.iter().zip(&self.servers) {
            if s.is_some() {
                wait_for(&format!("{} to know {at}", m.name), || {
                    (self.known_at(&m.name, client).as_deref() == Some(at)).then_some(())
                });
            }
        }
    }

    /// Waits until `name`'s log shows its links to all running neighbours up.
    pub fn wait_links_up(&self, name: &str) {
        let i = self.index(name);
        for n in &self.members[i].neighbours {
            if self.servers[self.index(n)].is_none() {
                continue;
            }
            wait_for(&format!("link {name} -> {n} up"), || {
                let log = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
                let up = format!("link {n}: Greeting => Up");
                let down = format!("link {n}: Up => Backoff");
                let last_up = log.rfind(&up)?;
                (log.rfind(&down).is_none_or(|d| d < last_up)).then_some(())
            });
        }
    }

    /// Riley alone, started, with one neighbour, Tester, played by the test
    /// on `fake`: Riley's dial is accepted, its HELLO read and WELCOMEd.
    /// Returns the herd and the link's socket (read timeout [`DEADLINE`]);
    /// nothing past the HELLO has been read from it.
    pub fn riley_with_a_fake_neighbour(test: &str, fake: &TcpListener) -> (Herd, TcpStream) {
        let mut herd = Herd::new(test, &[("Riley", &["Tester"])]);
        let text = std::fs::read_to_string(&herd.config).unwrap();
        let tester = format!(
            "Tester 127.0.0.1:{} peer=127.0.0.1:{} Riley\n",
            free_port(),
            fake.local_addr().unwrap().port()
        );
        std::fs::write(&herd.config, text + &tester).unwrap();
        herd.start_named("Riley");
        let (link, _) = fake.accept().unwrap();
        link.set_read_timeout(Some(DEADLINE)).unwrap();
        // Byte by byte, so that nothing after the HELLO is taken from the socket.
        let mut hello = Vec::new();
        let mut byte = [0u8; 1];
        while hello.last() != Some(&b'\n') && (&link).read(&mut byte).unwrap_or(0) == 1 {
            hello.push(byte[0]);
        }
        assert!(hello.starts_with(b"HELLO Riley"), "{hello:?}");
        (&link).write_all(b"WELCOME Tester\n").unwrap();
        (herd, link)
    }

    pub fn wait_all_links_up(&self) {
        for (m, s) in self.members.iter().zip(&self.servers) {
            if s.is_some() {
                self.wait_links_up(&m.name);
            }
        }
    }
}

/// How many segments carrying data this socket has received, from the
/// kernel's `TCP_INFO` (`tcpi_data_segs_in`, Linux 4.6 and later). On
/// loopback a write smaller than the MSS (64 KiB) arrives as one segment, so
/// this tells at the socket how many writes a reply took.
pub fn data_segments_received(stream: &TcpStream) -> u32 {
    use std::os::fd::AsRawFd;
    extern "C" {
        fn getsockopt(fd: i32, level: i32, name: i32, value: *mut u8, len: *mut u32) -> i32;
    }
    const SOL_TCP: i32 = 6;
    const TCP_INFO: i32 = 11;
    /// The offset of `tcpi_data_segs_in` in `struct tcp_info`.
    const DATA_SEGS_IN: usize = 152;
    let mut info = [0u8; 256];
    let mut len = info.len() as u32;
    // SAFETY: the buffer and its length are valid for the kernel to fill.
    let rc = unsafe {
        getsockopt(
            stream.as_raw_fd(),
            SOL_TCP,
            TCP_INFO,
            info.as_mut_ptr(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt(TCP_INFO) failed");
    assert!(
        len as usize >= DATA_SEGS_IN + 4,
        "this kernel's tcp_info is too old"
    );
    let field = &info[DATA_SEGS_IN..DATA_SEGS_IN + 4];
    u32::from_ne_bytes([field[0], field[1], field[2], field[3]])
}

/// Shrinks a socket's receive buffer (`SO_RCVBUF`), so that the kernel holds
/// little of what a server sends to a client that does not read: the
/// server's own backlog rule then meets it after a few hundred kilobytes
/// rather than megabytes, whatever the implementation.
pub fn shrink_receive_buffer(stream: &impl std::os::fd::AsRawFd, bytes: i32) {
    extern "C" {
        fn setsockopt(fd: i32, level: i32, name: i32, value: *const i32, len: u32) -> i32;
    }
    const SOL_SOCKET: i32 = 1;
    const SO_RCVBUF: i32 = 8;
    // SAFETY: a valid socket and a pointer to one i32 of the given length.
    let rc = unsafe { setsockopt(stream.as_raw_fd(), SOL_SOCKET, SO_RCVBUF, &bytes, 4) };
    assert_eq!(rc, 0, "setsockopt(SO_RCVBUF) failed");
}

/// A test client: raw bytes over TCP, reads with deadlines.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        // Lines are often sent in pieces; Nagle would hold the pieces back.
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, data: &[u8]) {
        self.stream.write_all(data).expect("send");
    }

    /// Closes the sending side, as the course's graders do.
    pub fn half_close(&mut self) {
        self.stream.shutdown(Shutdown::Write).expect("shutdown");
    }

    /// Reads once into the buffer; false at end of file.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => true,
            Err(e) => {
                eprintln!("test client read error: {e}");
                false
            }
        }
    }

    /// Reads until `n` bytes are buffered and takes them.
    pub fn read_exact_bytes(&mut self, n: usize) -> Vec<u8> {
        wait_for(&format!("{n} bytes"), || {
            (self.buf.len() >= n || !self.fill()).then_some(())
        });
        assert!(
            self.buf.len() >= n,
            "connection closed early: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.buf.drain(..n).collect()
    }

    /// Reads one line (without `\n`), as bytes.
    pub fn read_line_bytes(&mut self) -> Vec<u8> {
        let end = wait_for("a line", || {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                return Some(i);
            }
            if !self.fill() {
                panic!(
                    "closed before a line: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
            None
        });
        let mut line: Vec<u8> = self.buf.drain(..=end).collect();
        line.pop();
        line
    }

    pub fn read_line(&mut self) -> String {
        String::from_utf8(self.read_line_bytes()).expect("utf-8 line")
    }

    /// Reads a WHATSAT answer: everything up to and including the empty line.
    pub fn read_until_blank_line(&mut self) -> String {
        let end = wait_for("a blank line", || {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\n\n") {
                return Some(i + 2);
            }
            if !self.fill() {
                panic!(
                    "closed before a blank line: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
            None
        });
        String::from_utf8(self.buf.drain(..end).collect()).expect("utf-8 answer")
    }

    /// Reads until the server closes; returns everything.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        wait_for("the server to close", || (!self.fill()).then_some(()));
        std::mem::take(&mut self.buf)
    }

    /// True once the server has closed (or reset) the connection.
    pub fn is_closed(&mut self) -> bool {
        !self.fill()
    }
}

/// Counts the lines of `text` containing `needle`.
pub fn count(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

/// Starts `places-offline` with `args` on a port the OS picks, and reads
/// the port from its first line (`listening on ADDR`), which it prints once
/// it listens.
pub fn spawn_places_offline(args: &[&str]) -> (Child, u16) {
    use std::io::BufRead;
    let mut child = Command::new(workspace_bin("places-offline"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot start places-offline");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    // Read on a thread, so that a child that hangs cannot hang the test.
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(DEADLINE * 3)
        .expect("places-offline said nothing");
    let port = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (child, port)
}

/// The offline Places service, a real HTTPS server, killed when dropped.
pub struct PlacesOffline {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl PlacesOffline {
    /// Starts `places-offline` on a port the OS picks, with `args`, logging
    /// into `dir`.
    pub fn start(dir: &TempDir, args: &[&str]) -> PlacesOffline {
        static N: AtomicU16 = AtomicU16::new(0);
        let log = dir.path(&format!("places-{}.log", N.fetch_add(1, Ordering::Relaxed)));
        let log_arg = log.display().to_string();
        let mut all = vec!["--log", log_arg.as_str()];
        all.extend_from_slice(args);
        let (child, port) = spawn_places_offline(&all);
        PlacesOffline { child, port, log }
    }

    /// The legacy endpoint's URL.
    pub fn legacy_url(&self) -> String {
        format!(
            "https://127.0.0.1:{}/maps/api/place/nearbysearch/json",
            self.port
        )
    }

    /// The new API's endpoint URL.
    pub fn new_url(&self) -> String {
        format!("https://127.0.0.1:{}/v1/places:searchNearby", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PlacesOffline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The development CA that signs places-offline's certificate.
pub fn dev_ca() -> String {
    repo_root().join("data/tls/ca.pem").display().to_string()
}
