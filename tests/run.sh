#!/usr/bin/env bash
# The project's test command (README, .ci/run), in this order:
#   1. the form checks: cargo fmt --check (the library and the fuzz crate),
#      cargo clippy --all-targets -D warnings, cargo doc with warnings denied;
#   2. every Rust test (cargo test);
#   3. the fuzz targets build (no sanitizer: this only proves they compile);
#   4. the protocol, herd and WHATSAT integration tests again against each
#      counterpart in docs/ (asyncio, Python threads, Node.js, Java) whose
#      runtime is present, so the implementations never drift apart;
#   5. the partition script (each server in its own network namespace),
#      which skips itself unless it runs as root where `ip netns` works.
# Tools the tests use (lsof, python3, a C++ compiler for libFuzzer,
# Chromium for the browser test of the herd's page, promtool from Debian's
# prometheus package for the HTTP endpoint's /metrics) are
# installed with apt-get when missing and this runs as root; otherwise a
# loud line says so, and the tests that need them skip (or fail when CI is
# set: a CI run must not pass by skipping).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# need COMMAND PACKAGE: make sure COMMAND is on the PATH.
need() {
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing $2 (for $1): apt-get update && apt-get install -y $2"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
    fi
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "== WARNING: no $1 (package $2) and cannot install it: the tests that need it are SKIPPED${CI:+, and fail because CI is set}"
    fi
}
need lsof lsof
need python3 python3
need c++ g++
need chromium chromium
need promtool prometheus

echo "== form: cargo fmt --check, cargo clippy -D warnings, cargo doc -D warnings"
cargo fmt --all --check
cargo fmt --check --manifest-path fuzz/Cargo.toml
cargo clippy --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet

cargo test "$@"

echo "== the fuzz targets build (fuzz/, no sanitizer)"
cargo build --manifest-path fuzz/Cargo.toml --bins --quiet

# counterpart NAME FILE RUNTIME: the client, herd and WHATSAT tests against
# docs/FILE when RUNTIME is on the PATH; a loud line when it is skipped.
counterpart() {
    if [ -e "docs/$2" ] && command -v "$3" >/dev/null 2>&1; then
        echo "== the same integration tests against the $1 counterpart (docs/$2)"
        PROXY_HERD_IMPL=$1 cargo test --test server --test herd --test whatsat "${@:4}"
    else
        echo "== SKIPPED: the $1 counterpart's tests: no $3 on the PATH or no docs/$2"
    fi
}
counterpart asyncio asyncio/herd.py python3 "$@"
if [ -e docs/asyncio/herd.py ] && command -v python3 >/dev/null 2>&1; then
    echo "== the browser test against the asyncio counterpart (it serves the same GET /status)"
    PROXY_HERD_IMPL=asyncio cargo test --test page "$@"
fi
counterpart threads threads/herd.py python3 "$@"
if command -v python3 >/dev/null 2>&1; then
    echo "== the Python-threads counterpart's unit tests (docs/threads/test_herd.py)"
    python3 -m unittest discover -s docs/threads -p 'test_*.py'
fi
counterpart node node/herd.js node "$@"
if [ -e docs/node/test.js ] && command -v node >/dev/null 2>&1; then
    echo "== the Node.js counterpart's unit tests (docs/node/test.js)"
    node --test docs/node/test.js
fi
counterpart java java/herd.sh javac "$@"
if command -v javac >/dev/null 2>&1; then
    echo "== the Java counterpart's unit tests (docs/java/test.sh)"
    docs/java/test.sh
fi

echo "== partitions across network namespaces"
# The debug binary cargo test has just built: the script asserts behaviour,
# not speed, and a release build would add minutes to a fresh clone's run.
PROXY_HERD_BIN=target/debug/proxy-herd tests/partition.sh
