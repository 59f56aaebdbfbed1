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

/// `compare` for Rust alone, short: the figures the course's questions need
/// are in the JSON (context switches per iamat, threads and RSS at each idle
/// step, the tail at a steady rate with the GC account) and the chart has
/// their panels. Presence and sanity only, no timing thresholds.
#[test]
fn compare_reports_switches_steps_and_the_gc_tail() {
    let server = common::workspace_bin("proxy-herd");
    let bin_dir = server.parent().expect("binaries' folder");
    let stem = std::env::temp_dir().join(format!("herd-bench-compare-{}", std::process::id()));
    let json = stem.with_extension("json");
    let svg = stem.with_extension("svg");
    let out = Command::new(env!("CARGO_BIN_EXE_herd-bench"))
        .args([
            "compare",
            "--duration",
            "1",
            "--impl",
            "rust",
            "--connections",
            "4",
            "--idle",
            "150",
            "--gc-rate",
            "200",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .env("HERD_BENCH_BIN_DIR", bin_dir)
        .output()
        .expect("run herd-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = std::fs::read_to_string(&json).unwrap_or_default();
    let chart = std::fs::read_to_string(&svg).unwrap_or_default();
    let _ = std::fs::remove_file(&json);
    let _ = std::fs::remove_file(&svg);
    assert!(
        out.status.success(),
        "herd-bench failed:\n{stdout}\n{stderr}"
    );
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let results = v["results"].as_array().expect("results");
    let find = |sc: &str| {
        results
            .iter()
            .find(|r| r["implementation"] == "rust" && r["scenario"] == sc)
            .unwrap_or_else(|| panic!("no rust {sc} in {text}"))
    };

    let iamat = find("iamat");
    let cs = &iamat["context_switches"];
    assert!(cs["threads"].as_u64().is_some_and(|t| t >= 1), "{text}");
    assert!(cs["voluntary"].as_u64().is_some(), "{text}");
    assert!(cs["involuntary"].as_u64().is_some(), "{text}");
    assert!(cs["voluntary_per_reply"].as_f64().is_some(), "{text}");

    let steps = find("idle")["steps"].as_array().expect("idle steps");
    let at: Vec<u64> = steps
        .iter()
        .filter_map(|s| s["connections"].as_u64())
        .collect();
    assert_eq!(at, [1, 100, 150], "{text}");
    for s in steps {
        assert!(s["threads"].as_u64().is_some_and(|t| t >= 1), "{text}");
        assert!(s["rss_kb"].as_u64().is_some_and(|k| k > 0), "{text}");
    }

    let gc = find("gc");
    assert_eq!(gc["status"], "ok", "{text}");
    assert!(
        gc["latency_ns"]["p999"].as_u64().is_some_and(|p| p > 0),
        "{text}"
    );
    assert!(gc["latency_ns"]["max"].as_u64().is_some(), "{text}");
    assert_eq!(gc["gc"]["collections"], 0, "{text}");
    assert_eq!(v["header"]["gc_rate"].as_f64(), Some(200.0), "{text}");

    for name in ["context switches per iamat", "p99.9 at a steady rate"] {
        assert!(chart.contains(name), "{name} not in the chart:\n{chart}");
    }
}
