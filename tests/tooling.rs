//! The operator's and the grader's paths: `run_herd.sh` and the grading shim
//! (`docs/grading/server.py`), run as a user runs them, against the debug
//! binaries and the offline Places service on fresh ports.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

/// The folder holding this build's proxy-herd and places-offline.
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_proxy-herd"))
        .parent()
        .expect("a folder")
        .to_path_buf()
}

/// [`lone_herd_file`] with an explicit `http=`: run_herd.sh's default, the
/// client port + 20000, falls in the kernel's ephemeral range for test
/// ports, where the TIME_WAIT of a test client's connection can hold it.
/// (run_herd.sh always runs the Rust server, which knows `http=`.)
fn lone_herd_file_with_http(dir: &TempDir) -> (PathBuf, u16) {
    let (config, port) = lone_herd_file(dir);
    let line = std::fs::read_to_string(&config).unwrap();
    let line = format!("{} http=127.0.0.1:{}\n", line.trim_end(), free_port());
    std::fs::write(&config, line).unwrap();
    (config, port)
}

/// `run_herd.sh` for a herd of one in `dir`, without a Places key.
fn run_herd(dir: &TempDir, config: &Path, offline_port: u16) -> Command {
    let mut c = Command::new(repo_root().join("run_herd.sh"));
    c.env("HERD_CONFIG", config)
        .env("HERD_DIR", &dir.0)
        .env("HERD_BIN_DIR", bin_dir())
        .env("PLACES_OFFLINE_PORT", offline_port.to_string())
        .env_remove("PLACES_API_KEY")
        .env_remove("HERD_SERVER_ARGS")
        .stdin(Stdio::null());
    c
}

fn output(c: &mut Command) -> Output {
    let out = c.output().expect("cannot run the command");
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Stops the herd of `run_herd.sh` even when the test fails.
struct Stop<'a>(&'a TempDir, &'a Path, u16);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        let mut c = run_herd(self.0, self.1, self.2);
        c.arg("stop").stdout(Stdio::null()).stderr(Stdio::null());
        let _ = c.status();
    }
}

/// An IAMAT near UCLA, then a WHATSAT: the JSON answer's status.
fn whatsat_status(port: u16) -> String {
    let mut c = Client::connect(([127, 0, 0, 1], port).into());
    c.send(b"IAMAT kiwi +34.068930-118.445127 1621464827.959498503\n");
    assert!(c.read_line().starts_with("AT Riley "));
    c.send(b"WHATSAT kiwi 10 3\n");
    let answer = c.read_until_blank_line();
    let status = answer
        .lines()
        .filter_map(|l| l.trim().strip_prefix("\"status\" : "))
        .next_back()
        .unwrap_or_else(|| panic!("no status in {answer}"));
    status.trim_matches('"').to_string()
}

fn port_closed(port: u16) -> Option<()> {
    TcpStream::connect(("127.0.0.1", port))
        .is_err()
        .then_some(())
}

#[test]
fn run_herd_stop_returns_once_the_servers_have_exited_even_unreaped() {
    // The servers' parent here is a subreaper that never reaps them, so
    // they stay zombies after exiting: stop must take that for gone.
    let dir = TempDir::new("zombies");
    let (config, port) = lone_herd_file_with_http(&dir);
    let mut c = Command::new("python3");
    c.arg(repo_root().join("tests/data/subreaper.py"))
        .arg(repo_root().join("run_herd.sh"));
    let offline = free_port();
    for (k, v) in run_herd(&dir, &config, offline).get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let _stop = Stop(&dir, &config, offline);
    let out = output(&mut c);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if text.starts_with("SKIP") {
        eprintln!("SKIPPED: {text}");
        return;
    }
    assert!(out.status.success(), "{text}");
    assert!(text.contains("STOP STATUS 0"), "{text}");
    assert!(text.contains("stopped Riley (pid "), "{text}");
    assert!(text.contains("stopped places-offline (pid "), "{text}");
    // Before the fix, a zombie looked alive: 5 s of polling, then SIGKILL.
    assert!(!text.contains("SIGKILL"), "{text}");
    let states: Vec<&str> = text.lines().filter(|l| l.starts_with("STATE ")).collect();
    assert_eq!(states.len(), 2, "{text}");
    for line in states {
        // Exited but not reaped when stop returned: the case stop once
        // waited 5 s for, per process.
        assert!(line.ends_with(" Z"), "{line}");
    }
    port_closed(port).expect("Riley still listens");
    port_closed(offline).expect("places-offline still listens");
}

#[test]
fn run_herd_with_the_new_api_and_no_key_uses_the_offline_new_endpoint() {
    let dir = TempDir::new("newapi");
    let (config, port) = lone_herd_file_with_http(&dir);
    let offline = free_port();
    let _stop = Stop(&dir, &config, offline);
    let mut start = run_herd(&dir, &config, offline);
    start
        .arg("start")
        .env("HERD_SERVER_ARGS", "--places-api new");
    let out = output(&mut start);
    assert!(out.status.success());
    assert_eq!(whatsat_status(port), "OK");
    let log = std::fs::read_to_string(dir.path("logs/Riley.log")).unwrap();
    assert!(log.contains("/v1/places:searchNearby"), "{log}");
    // restart restarts the servers; the offline service keeps running.
    let offline_pid = || std::fs::read_to_string(dir.path("run/places-offline.pid")).unwrap();
    let riley_pid = || std::fs::read_to_string(dir.path("run/Riley.pid")).unwrap();
    let (before, riley_before) = (offline_pid(), riley_pid());
    let mut restart = run_herd(&dir, &config, offline);
    restart
        .arg("restart")
        .env("HERD_SERVER_ARGS", "--places-api new");
    assert!(output(&mut restart).status.success());
    assert_eq!(offline_pid(), before);
    assert_ne!(riley_pid(), riley_before);
    assert_eq!(whatsat_status(port), "OK");
    let mut stop = run_herd(&dir, &config, offline);
    stop.arg("stop");
    assert!(output(&mut stop).status.success());
    port_closed(port).expect("Riley still listens");
}

/// The shim as docs/grading.md installs it: a copy in a grader's folder.
fn install_shim(dir: &TempDir, config: &Path) -> PathBuf {
    let folder = dir.path("grader/sample_submission");
    let mut c = Command::new("python3");
    c.arg(repo_root().join("docs/grading/server.py"))
        .arg("--install")
        .arg(&folder)
        .arg("--herd")
        .arg(config);
    assert!(output(&mut c).status.success());
    folder.join("server.py")
}

/// `python3 server.py NAME` as a grader runs it: from its own folder, with
/// nothing but the environment a student exported.
fn shim(dir: &TempDir, shim: &Path, offline: u16) -> Command {
    let mut c = Command::new("python3");
    c.arg(shim)
        .current_dir(dir.path("grader"))
        .env("PROXY_HERD_BIN", env!("CARGO_BIN_EXE_proxy-herd"))
        .env("PLACES_OFFLINE_PORT", offline.to_string())
        .env_remove("PLACES_API_KEY")
        .env_remove("PROXY_HERD_ROOT")
        .env_remove("PROXY_HERD_CONFIG")
        .env_remove("PROXY_HERD_ARGS")
        .stdin(Stdio::null());
    c
}

/// Stops the offline service the shim started, even when the test fails.
struct StopOffline<'a>(&'a TempDir, &'a Path, u16);

impl Drop for StopOffline<'_> {
    fn drop(&mut self) {
        let mut c = shim(self.0, self.1, self.2);
        let _ = c.arg("--stop-offline").stdout(Stdio::null()).status();
    }
}

#[test]
fn a_copied_grading_shim_runs_the_server_with_offline_places() {
    let dir = TempDir::new("shim");
    let (config, port) = lone_herd_file_with_http(&dir);
    let offline = free_port();
    let installed = install_shim(&dir, &config);
    let _stop = StopOffline(&dir, &installed, offline);
    let addr = ([127, 0, 0, 1], port).into();
    for (args, path) in [
        ("", "/maps/api/place/nearbysearch/json"),
        ("--places-api new", "/v1/places:searchNearby"),
    ] {
        let mut c = shim(&dir, &installed, offline);
        c.arg("Riley").env("PROXY_HERD_ARGS", args);
        let log = installed.with_file_name("logs/Riley.log");
        let mut server = start_with(c, addr, &log);
        // The shim became the server: the grader's pid is the server's.
        let exe = std::fs::read_link(format!("/proc/{}/exe", server.pid())).unwrap();
        assert!(exe.ends_with("proxy-herd"), "{}", exe.display());
        assert_eq!(whatsat_status(port), "OK", "PROXY_HERD_ARGS={args:?}");
        server.signal("TERM");
        assert_eq!(server.wait_exit(), Some(0));
        // Logs beside the shim, whatever the grader's folder.
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains(path), "{text}");
    }
    let started = std::fs::read_to_string(installed.with_file_name("run/places-offline.pid"));
    assert!(
        started.is_ok(),
        "the shim did not start places-offline itself"
    );
    let mut c = shim(&dir, &installed, offline);
    assert!(output(c.arg("--stop-offline")).status.success());
    wait_for("places-offline to stop", || port_closed(offline));
}

#[test]
fn a_plain_copy_of_the_shim_says_how_to_install_it() {
    let dir = TempDir::new("shimcopy");
    std::fs::create_dir_all(dir.path("grader")).unwrap();
    let copy = dir.path("grader/server.py");
    std::fs::copy(repo_root().join("docs/grading/server.py"), &copy).unwrap();
    let mut c = shim(&dir, &copy, free_port());
    let out = output(c.arg("Riley"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("--install") && err.contains("PROXY_HERD_ROOT"),
        "{err}"
    );
}

/// Starts `c` as a [`Server`] and waits until it listens on `addr`.
fn start_with(mut c: Command, addr: std::net::SocketAddr, log: &Path) -> Server {
    let stderr = log.with_extension("stderr");
    std::fs::create_dir_all(stderr.parent().unwrap()).unwrap();
    let err = std::fs::File::create(&stderr).unwrap();
    let child = c.stdout(Stdio::null()).stderr(err).spawn().unwrap();
    let mut server = Server {
        name: "Riley".to_string(),
        child,
        client: addr,
        log: log.to_path_buf(),
        stderr,
    };
    wait_for("the shim's server to listen", || {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("exited with {status}: {}", server.stderr_text());
        }
        TcpStream::connect(addr).ok().map(|_| ())
    });
    server
}
