#!/usr/bin/env bash
# run_herd.sh: start, stop and inspect a whole proxy-herd herd on this machine
# (docs/spec.md §3).
#
#   ./run_herd.sh start [NAME...]     build (release) if needed, start in the background
#   ./run_herd.sh stop [NAME...]      stop (all by default), cleanly
#   ./run_herd.sh restart [NAME...]   stop, then start (the servers; the
#                                     offline Places service keeps running)
#   ./run_herd.sh status              which servers run, their pids, ports,
#                                     whether their peer links are TLS, and
#                                     the URL of each one's page
#
# Environment:
#   HERD_CONFIG          herd file (default docs/herds/default.herd)
#   HERD_DIR             where logs/ and run/ go (default: this repository)
#   PLACES_API_KEY       Google Places key; when unset or empty, the offline
#                        Places service (places-offline) is started and used
#   PLACES_OFFLINE_PORT  the offline service's port on 127.0.0.1 (default 18443)
#   HERD_SERVER_ARGS     extra options for every server, split on white space
#                        (for example "--places-api new"; without a key, the
#                        offline service's endpoint for that API is used)
#   HERD_BIN_DIR         where proxy-herd and places-offline are (default
#                        target/release, built when missing or stale; a
#                        folder given here is used as it is)
#   HERD_TLS             1: peer links over mutual TLS. The herd's certificates
#                        are made once, by proxy-herd certs, in
#                        $HERD_DIR/run/tls (ca.pem, NAME.pem, NAME.key), and
#                        every server gets --peer-cert, --peer-key, --peer-ca
#
# Every server serves its read-only HTTP endpoint (/metrics, /status and the
# herd's live page at /) on its herd-file line's http=ADDR, or else on its
# client port + 20000 (http://127.0.0.1:32000/ for Riley in the default
# herd); a default port that another process holds is skipped with a warning.
#
# Each server runs as target/release/proxy-herd with its log in
# $HERD_DIR/logs/NAME.log, its stdout and stderr appended to
# $HERD_DIR/logs/NAME.stderr, and its pid in $HERD_DIR/run/NAME.pid.
# Servers run with this repository as their working directory, so relative
# paths given in HERD_SERVER_ARGS are relative to it; the paths run_herd.sh
# gives them itself are absolute.
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
BIN_DIR="$(absolute "${HERD_BIN_DIR:-$ROOT/target/release}")"
SERVER_BIN="$BIN_DIR/proxy-herd"
OFFLINE_BIN="$BIN_DIR/places-offline"
TLS_DIR="$RUN_DIR/tls"
OFFLINE_NAME="places-offline"
OFFLINE_PORT="${PLACES_OFFLINE_PORT:-18443}"
OFFLINE_KEY="offline-dev-key"
OFFLINE_CA="$ROOT/data/tls/ca.pem"
OFFLINE_LEGACY_PATH="/maps/api/place/nearbysearch/json"
OFFLINE_NEW_PATH="/v1/places:searchNearby"
# Polls are 0.02 s apart: 250 polls is the ~5 s bound for starting and
# for stopping.
POLL=0.02
POLLS=250

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

# The herd file, read once (each awk is a process, and start and stop ask
# for every server's address): HERD_LINES holds "NAME HOST PORT" lines.
HERD_LINES=()
load_herd() {
    if ((${#HERD_LINES[@]} == 0)); then
        mapfile -t HERD_LINES < <(herd_servers)
    fi
}

# Prints "NAME ADDR FIELD" for each server: its HTTP address, from the herd
# file's http=ADDR (FIELD 1) or else the client host and port + 20000 (FIELD
# 0; ADDR "-" when that is above 65535).
herd_http() {
    awk '{
        sub(/#.*/, "")
        if (NF < 2) next
        for (i = 3; i <= NF; i++) if ($i ~ /^http=/) { print $1, substr($i, 6), 1; next }
        n = split($2, parts, ":")
        port = parts[n] + 20000
        if (port <= 65535) print $1, substr($2, 1, length($2) - length(parts[n])) port, 0
        else print $1, "-", 0
    }' "$HERD_CONFIG"
}

# Read once, as HERD_LINES: "NAME ADDR FIELD" lines.
HTTP_LINES=()

# Sets the caller's http_addr and http_field for server $1, in this shell.
set_http() {
    local line rest
    if ((${#HTTP_LINES[@]} == 0)); then
        mapfile -t HTTP_LINES < <(herd_http)
    fi
    http_addr=- http_field=0
    for line in ${HTTP_LINES[@]+"${HTTP_LINES[@]}"}; do
        if [[ "${line%% *}" == "$1" ]]; then
            rest="${line#* }"
            http_addr="${rest% *}"
            http_field="${rest##* }"
            return 0
        fi
    done
    return 1
}

# The URL of server $1's page, or "-" when it has no HTTP address.
http_url() {
    local http_addr http_field
    set_http "$1" || true
    if [[ "$http_addr" == - ]]; then echo -; else echo "http://$http_addr/"; fi
}

herd_names() {
    local line
    load_herd
    for line in ${HERD_LINES[@]+"${HERD_LINES[@]}"}; do
        echo "${line%% *}"
    done
}

# Sets the caller's host and port to server $1's address, in this shell.
set_address() {
    local line rest
    load_herd
    for line in ${HERD_LINES[@]+"${HERD_LINES[@]}"}; do
        if [[ "${line%% *}" == "$1" ]]; then
            rest="${line#* }"
            host="${rest% *}"
            port="${rest##* }"
            return 0
        fi
    done
    return 1
}

# Prints "HOST PORT" of server $1, or fails if the herd has no such server.
server_address() {
    local line
    load_herd
    for line in ${HERD_LINES[@]+"${HERD_LINES[@]}"}; do
        if [[ "${line%% *}" == "$1" ]]; then
            echo "${line#* }"
            return 0
        fi
    done
    return 1
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
    case "$host" in
        127.* | ::1 | localhost)
            # Loopback answers or refuses at once: bash's /dev/tcp in this
            # shell, no process started (start polls this for every server).
            if { exec 3<>"/dev/tcp/$host/$2"; } 2>/dev/null; then
                exec 3>&-
                return 0
            fi
            return 1
            ;;
    esac
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

# True when pid $1 exists and has not exited. kill -0 also succeeds on a
# zombie (exited, not yet reaped by its parent, which for a server started
# here is PID 1 and may be slow), so the state in /proc/PID/stat counts too.
pid_running() {
    local stat
    kill -0 "$1" 2>/dev/null || return 1
    if [[ -r "/proc/$1/stat" ]]; then
        # A builtin read, no process: stop polls this for every pid.
        read -r stat <"/proc/$1/stat" 2>/dev/null || return 1
        # "PID (COMM) STATE ...": COMM may hold spaces and parentheses.
        stat="${stat##*) }"
        [[ "${stat%% *}" != Z ]]
    fi
}

# True when pid $1 is alive and (where /proc tells) runs binary $2, so that a
# pid reused by an unrelated process after a crash is not taken for ours.
pid_alive() {
    local cmdline
    pid_running "$1" || return 1
    if [[ -r "/proc/$1/cmdline" ]]; then
        # The first NUL-terminated word: the binary's path.
        IFS= read -r -d '' cmdline <"/proc/$1/cmdline" 2>/dev/null || true
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
    if [[ -n "${HERD_BIN_DIR:-}" ]]; then
        for bin in "$SERVER_BIN" "$OFFLINE_BIN"; do
            [[ -x "$bin" ]] || die "HERD_BIN_DIR: no $bin"
        done
        return 0
    fi
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
    TZ=UTC printf '=== %(%Y-%m-%dT%H:%M:%SZ)T: starting %s\n' -1 "$*" >>"$errfile"
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
        if ! pid_running "$pid"; then
            echo "$name (pid $pid) exited before listening on $host:$port" >&2
            rm -f "$(pid_file "$name")"
            show_tails "$@"
            return 1
        fi
        sleep "$POLL"
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

# True when the options given ask for Places API (New): the offline
# service answers it on its own path (a legacy URL would get HTTP 405).
places_api_new() {
    local prev="" arg
    for arg in "$@"; do
        if [[ "$arg" == "--places-api=new" ]] || [[ "$prev" == "--places-api" && "$arg" == new ]]; then
            return 0
        fi
        prev="$arg"
    done
    return 1
}

# With HERD_TLS=1: makes the herd's certificates in $TLS_DIR unless there.
# A herd that gained a server since is refused rather than re-issued: a new
# CA would cut off the servers still running with the old one.
ensure_certs() {
    local name missing=()
    if [[ ! -e "$TLS_DIR/ca.pem" ]]; then
        "$SERVER_BIN" certs "$HERD_CONFIG" "$TLS_DIR" >/dev/null ||
            die "cannot make the herd's certificates in $TLS_DIR"
        echo "made the herd's certificates in $TLS_DIR"
        return 0
    fi
    while read -r name; do
        if [[ ! -r "$TLS_DIR/$name.pem" || ! -r "$TLS_DIR/$name.key" ]]; then
            missing+=("$name")
        fi
    done < <(herd_names)
    ((${#missing[@]} == 0)) ||
        die "$TLS_DIR has no certificate for ${missing[*]}: stop the herd, remove $TLS_DIR and start again"
}

# The peer TLS options of server $1 (none unless HERD_TLS=1).
tls_args() {
    if [[ "${HERD_TLS:-}" == 1 ]]; then
        printf '%s\n' --peer-cert "$TLS_DIR/$1.pem" --peer-key "$TLS_DIR/$1.key" \
            --peer-ca "$TLS_DIR/ca.pem"
    fi
}

cmd_start() {
    local names=("$@") name pid host port failed=0
    local server_args=() extra=() peer_tls=()
    if ((${#names[@]} == 0)); then
        mapfile -t names < <(herd_names)
        ((${#names[@]} > 0)) || die "no servers in $HERD_CONFIG"
    fi
    check_names "${names[@]}"
    build_if_needed
    mkdir -p "$LOG_DIR" "$RUN_DIR"
    if [[ "${HERD_TLS:-}" == 1 ]]; then ensure_certs; fi

    read -r -a extra <<<"${HERD_SERVER_ARGS:-}"
    if [[ -z "${PLACES_API_KEY:-}" ]]; then
        start_offline
        export PLACES_API_KEY="$OFFLINE_KEY"
        local path="$OFFLINE_LEGACY_PATH"
        if places_api_new "${extra[@]}"; then path="$OFFLINE_NEW_PATH"; fi
        server_args+=(--places-url "https://127.0.0.1:$OFFLINE_PORT$path"
            --places-ca "$OFFLINE_CA")
    fi
    server_args+=("${extra[@]}")

    # Launch them all first, then wait, so the ~5 s bound is for the herd.
    local launched=() http_args=() http_addr http_field http_host
    declare -A page=()
    for name in "${names[@]}"; do
        set_address "$name"
        if pid="$(running_pid "$name")"; then
            echo "$name already running (pid $pid)"
            continue
        fi
        if port_open "$host" "$port"; then
            echo "$name: port $port on $host is already in use by another process" >&2
            failed=1
            continue
        fi
        mapfile -t peer_tls < <(tls_args "$name")
        # The herd file's http= turns the endpoint on by itself; else the
        # default, unless another process holds that port.
        http_args=()
        set_http "$name" || true
        page[$name]=""
        if [[ "$http_field" == 1 ]]; then
            page[$name]="http://$http_addr/"
        elif [[ "$http_addr" != - ]]; then
            http_host="${http_addr%:*}"
            http_host="${http_host#[}"
            if port_open "${http_host%]}" "${http_addr##*:}"; then
                echo "$name: HTTP port ${http_addr##*:} is in use by another process: starting it without its page" >&2
            else
                http_args=(--http "$http_addr")
                page[$name]="http://$http_addr/"
            fi
        fi
        launch "$name" "$LOG_DIR/$name.stderr" "$SERVER_BIN" -c "$HERD_CONFIG" \
            -l "$LOG_DIR/$name.log" "${server_args[@]}" "${peer_tls[@]}" "${http_args[@]}" "$name"
        launched+=("$name")
    done
    for name in "${launched[@]}"; do
        set_address "$name"
        pid="$(head -n 1 "$(pid_file "$name")")"
        if wait_listening "$name" "$pid" "$host" "$port" "$LOG_DIR/$name.log" "$LOG_DIR/$name.stderr"; then
            echo "started $name (pid $pid) on $host:$port${page[$name]:+, page at ${page[$name]}}"
        else
            # Alive but deaf: stop it, so that status does not report it running.
            if running_pid "$name" >/dev/null; then stop_one "$name" >&2; fi
            failed=1
        fi
    done
    return "$failed"
}

# Waits until none of the pids given runs (an exited zombie counts as
# gone); fails if some still run after ~5 s.
wait_gone() {
    local i pid alive
    for ((i = 0; i < POLLS; i++)); do
        alive=""
        for pid in "$@"; do
            if pid_running "$pid"; then alive=yes; break; fi
        done
        [[ -z "$alive" ]] && return 0
        sleep "$POLL"
    done
    return 1
}

# Stops every name given that runs, all at once: SIGTERM to each, one wait
# for them all, SIGKILL to any still running after ~5 s.
stop_many() {
    local name pid i names=() pids=()
    for name in "$@"; do
        if pid="$(running_pid "$name")"; then
            kill -TERM "$pid" 2>/dev/null || true
            names+=("$name")
            pids+=("$pid")
        else
            echo "$name is not running"
        fi
    done
    ((${#pids[@]} > 0)) || return 0
    if ! wait_gone "${pids[@]}"; then
        for i in "${!pids[@]}"; do
            if pid_running "${pids[$i]}"; then
                echo "${names[$i]} (pid ${pids[$i]}) ignored SIGTERM for 5 s: sending SIGKILL" >&2
                kill -KILL "${pids[$i]}" 2>/dev/null || true
            fi
        done
        wait_gone "${pids[@]}" || true
    fi
    for i in "${!pids[@]}"; do
        rm -f "$(pid_file "${names[$i]}")"
        echo "stopped ${names[$i]} (pid ${pids[$i]})"
    done
}

stop_one() {
    stop_many "$1"
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
    local servers=() offline=()
    for name in "${names[@]}"; do
        [[ "$name" =~ ^[A-Za-z0-9_-]+$ ]] || EXIT_CODE=2 die "bad server name '$name'"
        if [[ "$name" == "$OFFLINE_NAME" ]]; then offline+=("$name"); else servers+=("$name"); fi
    done
    # The servers together, then the Places service they may still be using.
    if ((${#servers[@]} > 0)); then stop_many "${servers[@]}"; fi
    if ((${#offline[@]} > 0)); then stop_many "${offline[@]}"; fi
}

# How server pid $1's peer links are set up: "tls" when it was started with
# the peer TLS options, "plain" otherwise ("-" when /proc cannot tell).
peer_mode() {
    local cmdline
    [[ -r "/proc/$1/cmdline" ]] || { echo -; return; }
    cmdline="$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true)"
    if [[ "$cmdline" == *"--peer-cert "* ]]; then echo tls; else echo plain; fi
}

cmd_status() {
    local name host port pid
    (($# == 0)) || EXIT_CODE=2 die "status takes no arguments"
    set_http "" || true
    printf '%-16s %-8s %-8s %-6s %-24s %s\n' NAME STATE PID PEERS ADDRESS PAGE
    while read -r name host port; do
        if [[ "$host" == *:* ]]; then host="[$host]"; fi
        if pid="$(running_pid "$name")"; then
            printf '%-16s %-8s %-8s %-6s %-24s %s\n' "$name" running "$pid" "$(peer_mode "$pid")" "$host:$port" "$(http_url "$name")"
        else
            printf '%-16s %-8s %-8s %-6s %-24s %s\n' "$name" stopped - - "$host:$port" "$(http_url "$name")"
        fi
    done < <(herd_servers)
    if pid="$(running_pid "$OFFLINE_NAME")"; then
        printf '%-16s %-8s %-8s %-6s %-24s %s\n' "$OFFLINE_NAME" running "$pid" - "127.0.0.1:$OFFLINE_PORT" "https://127.0.0.1:$OFFLINE_PORT"
    else
        printf '%-16s %-8s %-8s %-6s %-24s %s\n' "$OFFLINE_NAME" stopped - - "127.0.0.1:$OFFLINE_PORT" "https://127.0.0.1:$OFFLINE_PORT"
    fi
}

main() {
    local command="${1:-}"
    shift || true
    case "$command" in
        start | stop | restart | status)
            [[ -r "$HERD_CONFIG" ]] || die "cannot read the herd file $HERD_CONFIG"
            load_herd
            ;;
    esac
    case "$command" in
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        restart)
            # The servers only (the offline Places service, which takes a
            # moment to load its places, keeps running), unless named.
            if (($# == 0)); then
                local names=()
                mapfile -t names < <(herd_names)
                cmd_stop "${names[@]}"
            else
                cmd_stop "$@"
            fi
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
