#!/usr/bin/env bash
# docs/java/test.sh: the Java counterpart's unit tests (test/herd/SelfTest.java),
# compiled with the sources into a temporary folder and run.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/classes"
if ! javac -J-XX:TieredStopAtLevel=1 -encoding UTF-8 -d "$tmp/classes" \
    $(find "$here/src" "$here/test" -name '*.java') >"$tmp/javac.log" 2>&1; then
    cat "$tmp/javac.log" >&2
    exit 1
fi
java -cp "$tmp/classes" herd.SelfTest
