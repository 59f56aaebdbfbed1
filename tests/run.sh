#!/usr/bin/env bash
# The project's test command (README, .ci/run): every Rust test, then the
# protocol, herd and WHATSAT integration tests again against each counterpart
# in docs/ (asyncio, Python threads, Node.js, Java) whose runtime is present,
# so the implementations never drift apart; then the partition script
# (each server in its own network namespace), which skips itself unless it
# runs as root where `ip netns` works.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo test "$@"

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
counterpart threads threads/herd.py python3 "$@"
counterpart node node/herd.js node "$@"
counterpart java java/herd.sh javac "$@"
if command -v javac >/dev/null 2>&1; then
    echo "== the Java counterpart's unit tests (docs/java/test.sh)"
    docs/java/test.sh
fi

echo "== partitions across network namespaces"
if [ "$(id -u)" = 0 ]; then
    # The script would use a stale release binary; this is a no-op when fresh.
    cargo build --release --bin proxy-herd
fi
tests/partition.sh
