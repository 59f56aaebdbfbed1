//! `proxy-herd certs HERDFILE DIR` and the `--peer-*` options, through the
//! binary: the files it writes, what they are good for (each certificate
//! for its own server's name only, under the herd CA), and the command-line
//! errors (one line, exit 2) for incomplete or bad peer TLS settings.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use proxy_herd::tls::peer::{check_claimed_name, PeerTls, PeerTlsFiles};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

const BIN: &str = env!("CARGO_BIN_EXE_proxy-herd");

/// Runs the binary; returns its exit code, stdout and stderr.
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run proxy-herd");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn files_for(dir: &Path, name: &str) -> PeerTlsFiles {
    PeerTlsFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
        ca: dir.join("ca.pem"),
    }
}

/// Writes the certificates of `herd_file` into `dir` and checks it worked.
fn make_certs(herd_file: &Path, dir: &Path) -> String {
    let (code, out, err) = run(&[
        "certs",
        &herd_file.display().to_string(),
        &dir.display().to_string(),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    out
}

#[test]
fn certs_writes_a_ca_and_one_certificate_per_server_each_for_its_name_only() {
    let tmp = TempDir::new("certs");
    let dir = tmp.path("tls");
    let herd_file = repo_root().join("docs/herds/default.herd");
    let out = make_certs(&herd_file, &dir);
    let names = ["Riley", "Jaquez", "Juzang", "Campbell", "Bernard"];
    assert!(out.contains("the 5 servers"), "{out}");

    let mut listed: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    listed.sort();
    let mut expected: Vec<String> = names
        .iter()
        .flat_map(|n| [format!("{n}.key"), format!("{n}.pem")])
        .chain(["ca.pem".to_string()])
        .collect();
    expected.sort();
    // The CA key is not kept: no file can mint another server's certificate.
    assert_eq!(listed, expected);

    for name in names {
        let files = files_for(&dir, name);
        let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{name}.key is mode {mode:o}");
        let key = std::fs::read_to_string(&files.key).unwrap();
        assert!(key.contains("PRIVATE KEY"), "{name}.key");

        // Good for its own server, under the herd CA...
        if let Err(e) = PeerTls::load(&files, name) {
            panic!("{name}: {e}");
        }
        let der = CertificateDer::from_pem_file(&files.cert).unwrap();
        assert!(check_claimed_name(Some(std::slice::from_ref(&der)), name).is_ok());
        // ...and for no other.
        for other in names.iter().filter(|o| **o != name) {
            let err = PeerTls::load(&files, other).unwrap_err();
            assert!(
                err.contains(&format!("not a herd certificate for {other}")),
                "{err}"
            );
            assert!(check_claimed_name(Some(std::slice::from_ref(&der)), other).is_err());
        }
        for not_a_name in ["localhost", "127.0.0.1"] {
            assert!(check_claimed_name(Some(std::slice::from_ref(&der)), not_a_name).is_err());
        }
    }

    // A second run changes nothing and says why.
    let before = std::fs::read(dir.join("ca.pem")).unwrap();
    let (code, _, err) = run(&[
        "certs",
        &herd_file.display().to_string(),
        &dir.display().to_string(),
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("exists already"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), before);
}

#[test]
fn certificates_of_two_herds_do_not_mix() {
    let tmp = TempDir::new("certs-two");
    let herd_file = repo_root().join("docs/herds/default.herd");
    let (a, b) = (tmp.path("a"), tmp.path("b"));
    make_certs(&herd_file, &a);
    make_certs(&herd_file, &b);
    let mixed = PeerTlsFiles {
        ca: b.join("ca.pem"),
        ..files_for(&a, "Riley")
    };
    let err = PeerTls::load(&mixed, "Riley").unwrap_err();
    assert!(err.contains("not a herd certificate for Riley"), "{err}");
}

#[test]
fn certs_refuses_what_cannot_go_in_a_certificate() {
    let tmp = TempDir::new("certs-names");
    let herd_file = tmp.path("case.herd");
    std::fs::write(
        &herd_file,
        "Riley 127.0.0.1:1 peer=127.0.0.1:2 riley\nriley 127.0.0.1:3 peer=127.0.0.1:4 Riley\n",
    )
    .unwrap();
    let (code, _, err) = run(&[
        "certs",
        &herd_file.display().to_string(),
        &tmp.path("out").display().to_string(),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("differ only in case"), "{err}");
    assert!(!tmp.path("out").join("ca.pem").exists());

    let (code, _, err) = run(&["certs", "/nonexistent.herd", "x"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot read the herd file"), "{err}");
    let (code, _, err) = run(&["certs", "only-one"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("usage: proxy-herd certs HERDFILE DIR"),
        "{err}"
    );
}

/// A herd of one (Riley) with its certificates; returns the herd file,
/// Riley's client port and the certificates' folder.
fn lone_tls_herd(tmp: &TempDir) -> (PathBuf, u16, PathBuf) {
    let (herd_file, port) = lone_herd_file(tmp);
    let dir = tmp.path("tls");
    make_certs(&herd_file, &dir);
    (herd_file, port, dir)
}

#[test]
fn peer_tls_options_are_all_three_or_none() {
    let tmp = TempDir::new("peer-opts");
    let (herd_file, _, dir) = lone_tls_herd(&tmp);
    let herd = herd_file.display().to_string();
    let f = files_for(&dir, "Riley");
    let (cert, key, ca) = (
        f.cert.display().to_string(),
        f.key.display().to_string(),
        f.ca.display().to_string(),
    );
    let cases: &[(&[&str], &str)] = &[
        (&["--peer-cert", &cert], "--peer-key and --peer-ca missing"),
        (
            &["--peer-cert", &cert, "--peer-key", &key],
            "--peer-ca missing",
        ),
        (&["--peer-ca", &ca], "--peer-cert and --peer-key missing"),
        // Bad files: one line, naming the file, never its contents.
        (
            &["--peer-cert", &cert, "--peer-key", &cert, "--peer-ca", &ca],
            "--peer-key",
        ),
        (
            &["--peer-cert", &key, "--peer-key", &key, "--peer-ca", &ca],
            "no certificate",
        ),
        (
            &[
                "--peer-cert",
                &cert,
                "--peer-key",
                &key,
                "--peer-ca",
                "/nonexistent/ca.pem",
            ],
            "cannot read --peer-ca /nonexistent/ca.pem",
        ),
    ];
    let secret_line = std::fs::read_to_string(&f.key)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    for (args, want) in cases {
        let mut all = vec!["-c", &herd, "-l"];
        let log = tmp.path("x.log").display().to_string();
        all.push(&log);
        all.extend_from_slice(args);
        all.push("Riley");
        let (code, _, err) = run(&all);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err:?} lacks {want:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains(&secret_line), "{args:?}: the key is quoted");
    }
}

#[test]
fn a_server_with_good_peer_tls_files_starts_and_never_shows_its_key() {
    if is_counterpart() {
        println!("skipped: the counterparts have no peer TLS options");
        return;
    }
    let tmp = TempDir::new("peer-start");
    let (herd_file, port, dir) = lone_tls_herd(&tmp);
    let f = files_for(&dir, "Riley");
    let log = tmp.path("Riley.log");
    let args: Vec<String> = [
        "-c",
        &herd_file.display().to_string(),
        "-l",
        &log.display().to_string(),
        "--peer-cert",
        &f.cert.display().to_string(),
        "--peer-key",
        &f.key.display().to_string(),
        "--peer-ca",
        &f.ca.display().to_string(),
        "Riley",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let server = start_server("Riley", &args, addr, &log);
    let mut c = server.connect();
    c.send(b"IAMAT kiwi +34.068930-118.445127 1621464827.959498503\n");
    assert!(c.read_line().starts_with("AT Riley "));
    let key = std::fs::read_to_string(&f.key).unwrap();
    let secret_line = key.lines().nth(1).unwrap();
    assert!(!server.log_text().contains(secret_line));
    assert!(!server.stderr_text().contains(secret_line));
}
