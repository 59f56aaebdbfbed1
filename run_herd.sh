#!/usr/bin/env bash
# run_herd.sh: start, stop and inspect a whole proxy-herd herd on this machine
# (SPEC section 3).
#
#   ./run_herd.sh start [NAME...]     build (release) if needed, start in the background
#   ./run_herd.sh stop [NAME...]      stop (all by default), cleanly
#   ./run_herd.sh restart [NAME...]
#   ./run_herd.sh status              which servers run, their pids, ports and pages
#
# Environment:
#   HERD_CONFIG          herd file (default docs/herds/default.herd)
#   HERD_DIR             where logs/ and run/ go (default: this repository)
#   PLACES_API_KEY       Google Places key; when unset or empty, the offline
#                        Places service (places-offline) is started and used
#   PLACES_OFFLINE_PORT  the offline service's port on 127.0.0.1 (default 18443)
#   HERD_SERVER_ARGS     extra options for every server, split on white space
#                        (for example "--places-api new")
#
# Every server serves its read-only HTTP endpoint (/metrics, /status and the
# herd's live page at /) on its herd-file line's http=ADDR, or else on its
# client port + 20000 (so http://127.0.0.1:32000/ for Riley in the default herd).
#
# Each server runs as target/release/proxy-herd with its log in
# $HERD_DIR/logs/NAME.log, its stdout and stderr appended to
# $HERD_DIR/logs/NAME.stderr, and its pid in $HERD_DIR/run/NAME.pid.
# Servers run with this repository as their working directory, so relative
# paths they are given (data/tls/ca.pem) are relative to it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Absolute paths, so that servers started from $ROOT see the same files.
absolute() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s\n' "$PWD/$1" ;;
    esac
}

HERD_CONFIG="$(absolute "${HERD_CONFIG:-$ROOT/docs/herds/default.herd}")"
HERD_DIR="$(absolute "${HERD_DIR:-$ROOT}")"
LOG_DIR="$HERD_DIR/logs"
RUN_DIR="$HERD_DIR/run"
SERVER_BIN="$ROOT/target/release/proxy-herd"
OFFLINE_BIN="$ROOT/target/release/places-offline"
OFFLINE_NAME="places-offline"
OFFLINE_PORT="${PLACES_OFFLINE_PORT:-18443}"
OFFLINE_KEY="offline-dev-key"
OFFLINE_CA="data/tls/ca.pem"
# Polls are 0.1 s apart: 50 polls is the ~5 s bound for starting and stopping.
POLLS=50

# The comment block at the top of this file.
usage() {
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "${BASH_SOURCE[0]}"
}

die() {
    printf 'run_herd.sh: %s\n' "$*" >&2
    exit "${EXIT_CODE:-1}"
}

# Prints "NAME HOST PORT" for each server of the herd file: first field the
# name, second the client address (host:port or [ipv6]:port).
herd_servers() {
    [[ -r "$HERD_CONFIG" ]] || die "cannot read the herd file $HERD_CONFIG"
    awk '{
        sub(/#.*/, "")
        if (NF < 2) next
        addr = $2
        n = split(addr, parts, ":")
        port = parts[n]
        host = substr(addr, 1, length(addr) - length(port) - 1)
        gsub(/^\[|\]$/, "", host)
        print $1, host, port
    }' "$HERD_CONFIG"
}

# Prints server $1's HTTP address (host:port): the herd file's http=ADDR, or
# the client host and port + 20000; nothing when that port is above 65535.
server_http() {
    awk -v name="$1" '{
        sub(/#.*/, "")
        if ($1 != name || NF < 2) next
        for (i = 3; i <= NF; i++) if ($i ~ /^http=/) { print substr($i, 6); exit }
        n = split($2, parts, ":")
        port = parts[n] + 20000
        if (port <= 65535) print substr($2, 1, length($2) - length(parts[n])) port
        exit
    }' "$HERD_CONFIG"
}

# True when server $1's herd-file line gives http=ADDR itself.
has_http_field() {
    awk -v name="$1" '{ sub(/#.*/, ""); if ($1 == name) for (i = 3; i <= NF; i++) if ($i ~ /^http=/) found = 1 }
        END { exit !found }' "$HERD_CONFIG"
}

herd_names() {
    herd_servers | awk '{ print $1 }'
}

# Prints "HOST PORT" of server $1, or fails if the herd has no such server.
server_address() {
    herd_servers | awk -v name="$1" '$1 == name { print $2, $3; found = 1 } END { exit !found }'
}

# Checks that every argument is a server of the herd; exit 2 otherwise.
check_names() {
    local name
    for name in "$@"; do
        if ! server_address "$name" >/dev/null; then
            EXIT_CODE=2 die "unknown server '$name': $HERD_CONFIG has $(herd_names | paste -sd ' ' -)"
        fi
    done
}

# A host to connect to for a listening address: wildcards mean this machine.
connect_host() {
    case "$1" in
        0.0.0.0 | "") echo 127.0.0.1 ;;
        ::) echo ::1 ;;
        *) echo "$1" ;;
    esac
}

# True when something accepts TCP connections on host $1, port $2.
port_open() {
    local host
    host="$(connect_host "$1")"
    # shellcheck disable=SC2016 # $1 and $2 are the inner bash's arguments.
    if command -v nc >/dev/null 2>&1; then
        nc -z -w 1 "$host" "$2" >/dev/null 2>&1
    elif command -v timeout >/dev/null 2>&1; then
        # timeout: a connect to a remote host that drops packets can hang.
        timeout 1 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$2" 2>/dev/null
    else
        bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$2" 2>/dev/null
    fi
}

pid_file() {
    printf '%s/%s.pid\n' "$RUN_DIR" "$1"
}

# True when pid $1 is alive and (where /proc tells) runs binary $2, so that a
# pid reused by an unrelated process after a crash is not taken for ours.
pid_alive() {
    local cmdline
    kill -0 "$1" 2>/dev/null || return 1
    if [[ -r "/proc/$1/cmdline" ]]; then
        cmdline="$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true)"
        [[ "$cmdline" == *"$2"* ]]
    fi
}

# True when $1 is one of the remaining arguments.
contains() {
    local needle="$1" item
    shift
    for item in "$@"; do
        [[ "$item" == "$needle" ]] && return 0
    done
    return 1
}

# The binary name a pid file's process must run.
binary_of() {
    if [[ "$1" == "$OFFLINE_NAME" ]]; then echo places-offline; else echo proxy-herd; fi
}

# Prints the live pid of $1 and succeeds, or removes a stale pid file and fails.
running_pid() {
    local file pid
    file="$(pid_file "$1")"
    [[ -f "$file" ]] || return 1
    pid="$(head -n 1 "$file" 2>/dev/null || true)"
    if [[ "$pid" =~ ^[0-9]+$ ]] && pid_alive "$pid" "$(binary_of "$1")"; then
        echo "$pid"
        return 0
    fi
    rm -f "$file"
    return 1
}

# Builds the release binaries when missing or older than the sources.
build_if_needed() {
    local bin stale=""
    for bin in "$SERVER_BIN" "$OFFLINE_BIN"; do
        if [[ ! -x "$bin" ]] ||
            [[ -n "$(find "$ROOT/src" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" -newer "$bin" -print -quit 2>/dev/null)" ]]; then
            stale=yes
        fi
    done
    if [[ -n "$stale" ]]; then
        command -v cargo >/dev/null 2>&1 || die "cannot build: cargo is not on PATH"
        echo "building (cargo build --release)..."
        (cd "$ROOT" && cargo build --release --bin proxy-herd --bin places-offline) ||
            die "the build failed"
    fi
}

# Prints the last lines of each existing file among the arguments.
show_tails() {
    local file
    for file in "$@"; do
        if [[ -s "$file" ]]; then
            echo "--- last lines of $file:" >&2
            tail -n 15 "$file" >&2
        fi
    done
}

# Launches "$@" in the background as $name, its output appended to $errfile.
launch() {
    local name="$1" errfile="$2"
    shift 2
    printf '=== %s: starting %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >>"$errfile"
    # nohup execs the binary, so $! is the server's own pid.
    (
        cd "$ROOT" || exit 1
        nohup "$@" </dev/null >>"$errfile" 2>&1 &
        echo $! >"$(pid_file "$name")"
    )
}

# Waits until $name (pid $2) accepts connections on host $3 port $4; on
# failure shows its files (the rest of the arguments) and fails.
wait_listening() {
    local name="$1" pid="$2" host="$3" port="$4" i
    shift 4
    for ((i = 0; i < POLLS; i++)); do
        if port_open "$host" "$port"; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name (pid $pid) exited before listening on $host:$port" >&2
            rm -f "$(pid_file "$name")"
            show_tails "$@"
            return 1
        fi
        sleep 0.1
    done
    echo "$name (pid $pid) is not listening on $host:$port after 5 s" >&2
    show_tails "$@"
    return 1
}

# Starts the offline Places service unless it runs already.
start_offline() {
    local pid errfile="$LOG_DIR/$OFFLINE_NAME.stderr"
    if pid="$(running_pid "$OFFLINE_NAME")"; then
        echo "$OFFLINE_NAME already running (pid $pid)"
    else
        if port_open 127.0.0.1 "$OFFLINE_PORT"; then
            die "port $OFFLINE_PORT is already in use by another process (set PLACES_OFFLINE_PORT)"
        fi
        launch "$OFFLINE_NAME" "$errfile" "$OFFLINE_BIN" --listen "127.0.0.1:$OFFLINE_PORT"
        pid="$(head -n 1 "$(pid_file "$OFFLINE_NAME")")"
        wait_listening "$OFFLINE_NAME" "$pid" 127.0.0.1 "$OFFLINE_PORT" "$errfile" ||
            { stop_one "$OFFLINE_NAME" >&2; die "$OFFLINE_NAME did not start"; }
        echo "started $OFFLINE_NAME (pid $pid)"
    fi
    echo "PLACES_API_KEY is not set: using the offline Places service at https://127.0.0.1:$OFFLINE_PORT"
}

cmd_start() {
    local names=("$@") name pid host port failed=0
    local server_args=() extra=()
    if ((${#names[@]} == 0)); then
        mapfile -t names < <(herd_names)
        ((${#names[@]} > 0)) || die "no servers in $HERD_CONFIG"
    fi
    check_names "${names[@]}"
    build_if_needed
    mkdir -p "$LOG_DIR" "$RUN_DIR"

    if [[ -z "${PLACES_API_KEY:-}" ]]; then
        start_offline
        export PLACES_API_KEY="$OFFLINE_KEY"
        server_args+=(--places-url "https://127.0.0.1:$OFFLINE_PORT/maps/api/place/nearbysearch/json"
            --places-ca "$OFFLINE_CA")
    fi
    read -r -a extra <<<"${HERD_SERVER_ARGS:-}"
    server_args+=("${extra[@]}")

    # Launch them all first, then wait, so the ~5 s bound is for the herd.
    local launched=()
    for name in "${names[@]}"; do
        read -r host port < <(server_address "$name")
        if pid="$(running_pid "$name")"; then
            echo "$name already running (pid $pid)"
            continue
        fi
        if port_open "$host" "$port"; then
            echo "$name: port $port on $host is already in use by another process" >&2
            failed=1
            continue
        fi
        # The herd file's http= turns the endpoint on by itself; else the default.
        local http_args=()
        if ! has_http_field "$name" && [[ -n "$(server_http "$name")" ]]; then
            http_args=(--http "$(server_http "$name")")
        fi
        launch "$name" "$LOG_DIR/$name.stderr" "$SERVER_BIN" -c "$HERD_CONFIG" \
            -l "$LOG_DIR/$name.log" "${server_args[@]}" "${http_args[@]}" "$name"
        launched+=("$name")
    done
    for name in "${launched[@]}"; do
        read -r host port < <(server_address "$name")
        pid="$(head -n 1 "$(pid_file "$name")")"
        if wait_listening "$name" "$pid" "$host" "$port" "$LOG_DIR/$name.log" "$LOG_DIR/$name.stderr"; then
            echo "started $name (pid $pid) on $host:$port, page at $(http_url "$name")"
        else
            # Alive but deaf: stop it, so that status does not report it running.
            if running_pid "$name" >/dev/null; then stop_one "$name" >&2; fi
            failed=1
        fi
    done
    return "$failed"
}

# Stops $1 if it runs: SIGTERM, wait, SIGKILL after ~5 s.
stop_one() {
    local name="$1" pid i
    if ! pid="$(running_pid "$name")"; then
        echo "$name is not running"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < POLLS; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$name (pid $pid) ignored SIGTERM for 5 s: sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < POLLS; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -f "$(pid_file "$name")"
    echo "stopped $name (pid $pid)"
}

cmd_stop() {
    local names=("$@") name file
    if ((${#names[@]} == 0)); then
        # Everything: the herd's servers, and any other pid file left by a
        # herd started with another HERD_CONFIG; the Places service last.
        mapfile -t names < <(herd_names)
        if [[ -d "$RUN_DIR" ]]; then
            for file in "$RUN_DIR"/*.pid; do
                [[ -e "$file" ]] || continue
                name="$(basename "$file" .pid)"
                if [[ "$name" != "$OFFLINE_NAME" ]] && ! contains "$name" "${names[@]}"; then
                    names+=("$name")
                fi
            done
        fi
        names+=("$OFFLINE_NAME")
    else
        for name in "${names[@]}"; do
            # A server of another herd may still have a pid file here.
            if [[ "$name" != "$OFFLINE_NAME" ]] && [[ ! -f "$(pid_file "$name")" ]]; then
                check_names "$name"
            fi
        done
    fi
    for name in "${names[@]}"; do
        [[ "$name" =~ ^[A-Za-z0-9_-]+$ ]] || EXIT_CODE=2 die "bad server name '$name'"
        stop_one "$name"
    done
}

# The URL of server $1's page, or "-" when it has no HTTP port.
http_url() {
    local addr
    addr="$(server_http "$1")"
    if [[ -z "$addr" ]]; then
        echo -
    else
        echo "http://$addr/"
    fi
}

cmd_status() {
    local name host port pid
    (($# == 0)) || EXIT_CODE=2 die "status takes no arguments"
    printf '%-16s %-8s %-8s %-24s %s\n' NAME STATE PID ADDRESS URL
    while read -r name host port; do
        if [[ "$host" == *:* ]]; then host="[$host]"; fi
        if pid="$(running_pid "$name")"; then
            printf '%-16s %-8s %-8s %-24s %s\n' "$name" running "$pid" "$host:$port" "$(http_url "$name")"
        else
            printf '%-16s %-8s %-8s %-24s %s\n' "$name" stopped - "$host:$port" "$(http_url "$name")"
        fi
    done < <(herd_servers)
    if pid="$(running_pid "$OFFLINE_NAME")"; then
        printf '%-16s %-8s %-8s %-24s %s\n' "$OFFLINE_NAME" running "$pid" "127.0.0.1:$OFFLINE_PORT" "https://127.0.0.1:$OFFLINE_PORT"
    else
        printf '%-16s %-8s %-8s %-24s %s\n' "$OFFLINE_NAME" stopped - "127.0.0.1:$OFFLINE_PORT" "https://127.0.0.1:$OFFLINE_PORT"
    fi
}

main() {
    local command="${1:-}"
    shift || true
    case "$command" in
        start | stop | restart | status)
            [[ -r "$HERD_CONFIG" ]] || die "cannot read the herd file $HERD_CONFIG"
            ;;
    esac
    case "$command" in
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        restart)
            cmd_stop "$@"
            cmd_start "$@"
            ;;
        status) cmd_status "$@" ;;
        -h | --help | help) usage ;;
        *)
            usage >&2
            exit 2
            ;;
    esac
}

main "$@"
