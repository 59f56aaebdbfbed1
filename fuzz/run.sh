#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each, one after
# another, one process at a time, and prints one summary line per target
# (installing cargo-fuzz first when it is missing):
#
#   fuzz/run.sh SECONDS [TARGET...]
#
# Seeds are read from corpus/<target>/ (committed); what libFuzzer adds goes
# to corpus-grown/<target>/, crashes to artifacts/<target>/, full output to
# logs/<target>.log (all three ignored by git).
# Targets run under AddressSanitizer, except google_json: it allocates a
# JSON tree per run and ASan's allocator makes it about 9 times slower
# (2,000 runs/s against 18,000). The library has no `unsafe`, so ASan has
# little to find there; overflow checks and debug assertions stay on.
# FUZZ_SANITIZER=address|none sets the sanitizer of every target.
# Exits non-zero if any target crashed or could not run.
set -u -o pipefail

cd "$(dirname "$0")" || exit 1
if [[ $# -lt 1 || ! $1 =~ ^[0-9]+$ ]]; then
    echo "usage: $0 SECONDS [TARGET...]" >&2
    exit 2
fi
seconds=$1
shift
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=(client_line peer_message herd_file http_response http_request google_json)
fi

# A fresh machine has no cargo-fuzz: install it (into ~/.cargo/bin) first.
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
    if ! cargo install cargo-fuzz --locked; then
        echo "fuzz: cannot install cargo-fuzz" >&2
        exit 1
    fi
fi

# cargo-fuzz passes nightly-only flags (-Z, sanitizers); this lets the
# stable toolchain accept them.
export RUSTC_BOOTSTRAP=1
# The sanitizer of a target, and cargo-fuzz's flags for it: release code
# with debug assertions and overflow checks on, one target dir per sanitizer
# so switching does not rebuild everything.
sanitizer_of() {
    if [[ -n ${FUZZ_SANITIZER:-} ]]; then
        echo "$FUZZ_SANITIZER"
    elif [[ $1 == google_json ]]; then
        echo none
    else
        echo address
    fi
}
flags_for() {
    local sanitizer
    sanitizer=$(sanitizer_of "$1")
    echo -O --debug-assertions --sanitizer "$sanitizer" --target-dir "target/$sanitizer"
}

# Longest input per target: a client or peer line; a herd file; an HTTP
# response or JSON body large enough for the real legacy answer (3 KB).
max_len() {
    case $1 in
        client_line | peer_message) echo 512 ;;
        herd_file) echo 4096 ;;
        http_response) echo 8192 ;;
        http_request) echo 12288 ;;
        google_json) echo 2048 ;;
        *) echo 4096 ;;
    esac
}

# Build each target before any runs, so build time is not fuzzing time.
: > build.log
for target in "${targets[@]}"; do
    # shellcheck disable=SC2046 # the flags are words
    if ! cargo fuzz build $(flags_for "$target") "$target" >> build.log 2>&1; then
        tail -20 build.log >&2
        echo "fuzz: building $target failed (full output in fuzz/build.log)" >&2
        exit 1
    fi
done

mkdir -p logs
failed=0
summary=()
for target in "${targets[@]}"; do
    mkdir -p "corpus-grown/$target" "corpus/$target"
    log="logs/$target.log"
    start=$(date +%s)
    # -jobs=1 runs one worker process, whose output libFuzzer writes to
    # fuzz-0.log and prints when it ends.
    # shellcheck disable=SC2046
    cargo fuzz run $(flags_for "$target") "$target" "corpus-grown/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=5 \
        -max_len="$(max_len "$target")" -jobs=1 -print_final_stats=1 \
        > "$log" 2>&1
    status=$?
    elapsed=$(( $(date +%s) - start ))
    rm -f fuzz-0.log
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
    if [[ -z $runs ]]; then
        runs=$(grep -o '^#[0-9]*[[:space:]]*DONE' "$log" | tail -1 | tr -dc 0-9)
    fi
    artifact=$(grep -o 'Test unit written to [^ ]*' "$log" | tail -1 | sed 's/Test unit written to //')
    if [[ $status -eq 0 && -z $artifact ]]; then
        verdict="no crash"
    else
        failed=1
        verdict="CRASHED (exit $status${artifact:+, input $artifact}; see fuzz/$log)"
    fi
    line=$(printf '%-14s %12s inputs in %4s s (sanitizer %s), %s' \
        "$target" "${runs:-?}" "$elapsed" "$(sanitizer_of "$target")" "$verdict")
    echo "$line"
    summary+=("$line")
done

echo
echo "fuzz summary ($seconds s per target):"
printf '  %s\n' "${summary[@]}"
exit $failed
