#!/usr/bin/env bash
# docs/java/herd.sh [OPTIONS] NAME [PORT]: the Java counterpart of proxy-herd.
#
# Compiles src/ with plain javac into build/herd.jar (git ignores build/) the
# first time, and again only when a source is newer than the jar; then execs
# the JVM, so the server's pid is this script's and signals reach it.
#
# Many servers may start at the same moment: the compile runs under flock,
# into a temporary folder, and the jar is renamed into place, so a starting
# server sees either the old jar or the new one, never half of one (a server
# already running keeps the old file open; rename does not disturb it).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=$here/build
jar=$build/herd.jar

stale() {
    [ ! -f "$jar" ] || [ -n "$(find "$here/src" -name '*.java' -newer "$jar" -print -quit)" ]
}

if stale; then
    mkdir -p "$build"
    exec 9>"$build/.lock"
    flock 9 # one compile at a time; whoever waited finds the jar fresh
    if stale; then
        tmp=$(mktemp -d "$build/tmp.XXXXXX")
        trap 'rm -rf "$tmp"' EXIT
        # javac's own JVM starts faster with C1 only; its output goes to
        # stderr only on failure (a server's stderr is one line when it fails).
        if ! javac -J-XX:TieredStopAtLevel=1 -J-XX:+UseSerialGC -encoding UTF-8 -Xlint:all,-options \
            -d "$tmp/classes" $(find "$here/src" -name '*.java') >"$tmp/javac.log" 2>&1; then
            cat "$tmp/javac.log" >&2
            exit 1
        fi
        cp "$tmp/javac.log" "$build/javac.log"
        jar --create --file "$tmp/herd.jar" --main-class herd.Main -C "$tmp/classes" . >/dev/null
        mv -f "$tmp/herd.jar" "$jar"
        rm -rf "$tmp"
        trap - EXIT
    fi
    exec 9>&-
fi

# -XX:TieredStopAtLevel=1 (the C1 compiler only): measured on this 2-core
# machine, it cuts a fresh JVM's first TLS handshake to Places from about 1.2 s
# to 0.7 s of CPU, because C2 compiler threads no longer compete for the cores
# while the cold code runs (README). HERD_JAVA_OPTS comes after it, so
# HERD_JAVA_OPTS=-XX:TieredStopAtLevel=4 restores C2 for a peak-throughput run;
# it also takes e.g. -Xlog:gc:file=gc.log to trace the collector. The
# collector is the JVM's default (G1): SerialGC measured no different.
# shellcheck disable=SC2086
exec java -XX:TieredStopAtLevel=1 ${HERD_JAVA_OPTS:-} -cp "$jar" herd.Main "$@"
