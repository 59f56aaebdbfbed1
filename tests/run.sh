#!/usr/bin/env bash
# The project's test command (README, .ci/run): every Rust test, then the
# protocol, herd and WHATSAT integration tests again against the Python
# asyncio counterpart (docs/asyncio/herd.py) when python3 and it are present,
# so the two implementations never drift apart.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo test "$@"

if [ -f docs/asyncio/herd.py ] && command -v python3 >/dev/null 2>&1; then
    echo "== the same integration tests against the asyncio counterpart"
    PROXY_HERD_IMPL=asyncio cargo test --test server --test herd --test whatsat "$@"
else
    echo "== asyncio counterpart tests skipped: no python3 or no docs/asyncio/herd.py"
fi
