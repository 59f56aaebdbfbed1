#!/usr/bin/env bash
# The long chaos run: tests/chaos.sh SECONDS (default 60). A five-server herd
# with state files takes IAMATs for 20 clients at random servers while
# servers are SIGKILLed and restarted at random; at the end every server must
# hold, for every client, the newest position any server acknowledged.
# (cargo test runs the same test for about eight seconds.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CHAOS_SECONDS="${1:-60}" cargo test --release --test reliability chaos -- --nocapture
