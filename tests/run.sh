#!/usr/bin/env bash
# The project's test command (README, .ci/run): every Rust test (the browser
# test of the herd's page included, with Chromium installed first where it
# can be), then the protocol, herd and WHATSAT integration tests again
# against each counterpart in docs/ (asyncio, Python threads, Node.js, Java)
# whose runtime is present,
# so the implementations never drift apart; then the partition script
# (each server in its own network namespace), which skips itself unless it
# runs as root where `ip netns` works.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The browser test needs Chromium and the metrics tests use promtool (Debian's
# chromium and prometheus packages): installed here when missing, as root with
# apt-get (PROXY_HERD_NO_INSTALL=1 skips this); otherwise those checks skip
# themselves with a SKIPPED line.
want=()
command -v chromium >/dev/null 2>&1 || want+=(chromium)
command -v promtool >/dev/null 2>&1 || want+=(prometheus)
if ((${#want[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ -z "${PROXY_HERD_NO_INSTALL:-}" ]; then
        echo "== installing ${want[*]} (for the browser test and promtool)"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >/dev/null; } ||
            echo "== could not install ${want[*]}: those checks will be SKIPPED"
    else
        echo "== ${want[*]} missing and not installable here (not root, no apt-get, or PROXY_HERD_NO_INSTALL): those checks will be SKIPPED"
    fi
fi

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
if [ -e docs/asyncio/herd.py ] && command -v python3 >/dev/null 2>&1; then
    echo "== the browser test against the asyncio counterpart (it serves the same GET /status)"
    PROXY_HERD_IMPL=asyncio cargo test --test page "$@"
fi
counterpart threads threads/herd.py python3 "$@"
counterpart node node/herd.js node "$@"
counterpart java java/herd.sh javac "$@"

echo "== partitions across network namespaces"
if [ "$(id -u)" = 0 ]; then
    # The script would use a stale release binary; this is a no-op when fresh.
    cargo build --release --bin proxy-herd
fi
tests/partition.sh
