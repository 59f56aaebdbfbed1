//! herd-bench end to end: one short iamat run against a herd it starts
//! itself (the servers cargo built for this test, via `HERD_BENCH_BIN_DIR`),
//! checked through its JSON. No timing thresholds: only that replies came.

use std::process::Command;

#[path = "../../tests/common/mod.rs"]
mod common;

#[test]
fn iamat_run_reports_positive_throughput() {
    let server = common::workspace_bin("proxy-herd");
    let bin_dir = server.parent().expect("binaries' folder");
    let json = std::env::temp_dir().join(format!("herd-bench-test-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_herd-bench"))
        .args([
            "iamat",
            "--duration",
            "1",
            "--impl",
            "rust",
            "--connections",
            "4",
        ])
        .arg("--json")
        .arg(&json)
        .env("HERD_BENCH_BIN_DIR", bin_dir)
        .output()
        .expect("run herd-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "herd-bench failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("iamat"), "{stdout}");
    let text = std::fs::read_to_string(&json).expect("JSON written");
    let _ = std::fs::remove_file(&json);
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let r = &v["results"][0];
    assert_eq!(r["implementation"], "rust", "{text}");
    assert_eq!(r["scenario"], "iamat", "{text}");
    assert_eq!(r["status"], "ok", "{text}");
    assert!(r["throughput"].as_f64().is_some_and(|t| t > 0.0), "{text}");
    assert!(
        r["latency_ns"]["p99"].as_u64().is_some_and(|p| p > 0),
        "{text}"
    );
    assert!(
        v["header"]["nproc"].as_u64().is_some_and(|n| n > 0),
        "{text}"
    );
}
