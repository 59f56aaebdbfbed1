#!/usr/bin/env bash
# Partition tests: the default herd (docs/spec.md §2) with each server in its
# own network namespace and one point-to-point veth pair per herd link, so a
# single link can be cut (`ip link set down`), slowed (`tc netem`) and healed
# without touching the others. Checks that updates flood around a cut, that a
# split herd agrees again once joined, and that no server keeps its clients
# waiting while a neighbour is unreachable. See tests/partition.md.
#
# Needs root and a working `ip netns`; otherwise prints
# `partition tests skipped: <why>` and exits 0. Exits non-zero if any case
# fails. Everything it makes is named ph-<pid>-... and removed on exit.
#
# Environment: PROXY_HERD_BIN (default target/release/proxy-herd, built if
# missing); PARTITION_KEEP=1 keeps the work folder (logs) after the run;
# PARTITION_QDISC replaces case 4's `netem delay 100ms loss 10%` (e.g. with a
# `tbf ...` to try the case's plumbing on a kernel without sch_netem).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

skip() {
    echo "partition tests skipped: $*"
    exit 0
}

[ "$(id -u)" = 0 ] || skip "not root"
command -v ip >/dev/null 2>&1 || skip "no ip command (iproute2)"
command -v python3 >/dev/null 2>&1 || skip "no python3"
command -v timeout >/dev/null 2>&1 || skip "no timeout command"

PFX="ph-$$-"
if ! ip netns add "${PFX}probe" 2>/dev/null; then
    skip "ip netns does not work here"
fi
ip netns del "${PFX}probe"

BIN=${PROXY_HERD_BIN:-target/release/proxy-herd}
if [ ! -x "$BIN" ]; then
    echo "== building $BIN"
    cargo build --release --bin proxy-herd || { echo "partition: build failed"; exit 1; }
fi
BIN=$(realpath "$BIN")

# ---------------------------------------------------------------- the herd

NAMES=(Riley Jaquez Juzang Campbell Bernard)
declare -A IP=([Riley]=10.77.0.1 [Jaquez]=10.77.0.2 [Juzang]=10.77.0.3
               [Campbell]=10.77.0.4 [Bernard]=10.77.0.5)
declare -A PORT=([Riley]=12000 [Jaquez]=12001 [Juzang]=12002
                 [Campbell]=12003 [Bernard]=12004)
LINKS=(Riley-Jaquez Riley-Juzang Jaquez-Bernard Juzang-Bernard
       Juzang-Campbell Bernard-Campbell)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/${PFX}XXXXXX")
declare -A PID=() FROM=()
STARTED=$(date +%s)

cleanup() {
    local name pid
    trap - EXIT INT TERM
    # Only this shell's own jobs still running (servers, client loops): a pid
    # already waited for may belong to someone else by now.
    for pid in $(jobs -pr); do kill "$pid" 2>/dev/null; done
    wait 2>/dev/null
    for name in "${NAMES[@]}"; do
        ip netns del "$PFX$name" 2>/dev/null
    done
    if [ "${PARTITION_KEEP:-}" = 1 ]; then
        echo "partition: logs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'echo "partition: interrupted"; exit 130' INT TERM

ns() { echo "$PFX$1"; }

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# The client used from inside the namespaces: one connection per request,
# the first reply line only, every loop bounded by a count and a deadline.
cat >"$WORK/client.py" <<'EOF'
import socket, sys, time

def ask(host, port, line, limit):
    """Sends one line, returns (first reply line, seconds) or raises."""
    start = time.monotonic()
    with socket.create_connection((host, port), timeout=limit) as s:
        s.settimeout(limit)
        s.sendall(line.encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            if time.monotonic() - start > limit:
                raise TimeoutError("no full line within %.1f s" % limit)
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    return buf.split(b"\n", 1)[0].decode(errors="replace"), time.monotonic() - start

def main():
    cmd, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if cmd == "send":
        # send HOST PORT LINE: prints the first reply line.
        print(ask(host, port, sys.argv[4], 3.0)[0])
        return 0
    elif cmd == "wait":
        # wait HOST PORT ID WANT SECONDS: WHATSAT until the AT line is WANT.
        client, want, limit = sys.argv[4], sys.argv[5], float(sys.argv[6])
        start, seen = time.monotonic(), "(nothing)"
        for _ in range(int(limit / 0.05) + 1):
            try:
                seen = ask(host, port, "WHATSAT %s 1 1" % client, 2.0)[0]
            except OSError as e:
                seen = "error: %s" % e
            if seen == want:
                print("%.3f" % (time.monotonic() - start))
                return 0
            if time.monotonic() - start > limit:
                break
            time.sleep(0.05)
        print("still %r after %.1f s" % (seen, time.monotonic() - start))
        return 1
    elif cmd == "load":
        # load HOST PORT ID COUNT GAP MAXLAT: IAMATs, each answered within MAXLAT.
        client, count, gap, maxlat = sys.argv[4], int(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
        worst, bad = 0.0, []
        for i in range(count):
            line = "IAMAT %s +34.068930-118.445127 %.9f" % (client, time.time())
            try:
                reply, took = ask(host, port, line, maxlat + 2.0)
                if not reply.startswith("AT "):
                    bad.append("#%d: reply %r" % (i, reply))
            except OSError as e:
                took = maxlat + 2.0
                bad.append("#%d: %s" % (i, e))
            worst = max(worst, took)
            if took > maxlat:
                bad.append("#%d: %.3f s" % (i, took))
            time.sleep(gap)
        print("%d requests, worst %.0f ms%s" % (count, worst * 1000,
              "; " + ", ".join(bad[:5]) if bad else ""))
        return 1 if bad else 0
    return 2

sys.exit(main() or 0)
EOF

# client NAME LIMIT CMD ARGS...: client.py CMD inside NAME's namespace, at
# NAME, killed after LIMIT s. It execs, so that a job's pid is the client's
# own and cleanup can stop it: call it only in a subshell, $(...) or with &.
client() {
    local name=$1 limit=$2 cmd=$3
    shift 3
    exec timeout "$limit" ip netns exec "$(ns "$name")" \
        python3 "$WORK/client.py" "$cmd" "${IP[$name]}" "${PORT[$name]}" "$@"
}

# iamat NAME ID TIME: prints the AT reply.
iamat() { client "$1" 5 send "IAMAT $2 +34.068930-118.445127 $3"; }

# wait_all ID WANT SECONDS NAME...: every NAME answers WHATSAT ID with WANT.
wait_all() {
    local id=$1 want=$2 limit=$3 name rc=0
    shift 3
    local -A job=()
    for name in "$@"; do
        client "$name" $((${limit%.*} + 5)) wait "$id" "$want" "$limit" >"$WORK/wait.$name" 2>&1 &
        job[$name]=$!
    done
    for name in "$@"; do
        if wait "${job[$name]}"; then
            echo "    $name has it after $(cat "$WORK/wait.$name") s"
        else
            echo "    $name: $(cat "$WORK/wait.$name")"
            rc=1
        fi
    done
    return $rc
}

# Link ends: in A's namespace the veth to B is called to-B.
link_set() { # link_set A B up|down
    ip -n "$(ns "$1")" link set "to-$2" "$3" && ip -n "$(ns "$2")" link set "to-$1" "$3"
}
routes() { # routes A B: each end's /32 route to the other (a link going down drops it)
    ip -n "$(ns "$1")" route replace "${IP[$2]}/32" dev "to-$2" src "${IP[$1]}" &&
        ip -n "$(ns "$2")" route replace "${IP[$1]}/32" dev "to-$1" src "${IP[$2]}"
}
cut() { echo "    cut $1-$2"; link_set "$1" "$2" down; }
heal() { echo "    heal $1-$2"; link_set "$1" "$2" up && routes "$1" "$2"; }

log_lines() { wc -l <"$WORK/$1.log"; }

# wait_log NAME FROM REGEX SECONDS: a log line after line FROM matches REGEX.
wait_log() {
    local name=$1 from=$2 re=$3 limit=$4 i
    local end=$(( $(now_ms) + limit * 1000 ))
    for ((i = 0; i < limit * 20 + 1; i++)); do
        if tail -n +"$((from + 1))" "$WORK/$name.log" 2>/dev/null | grep -Eq -- "$re"; then
            return 0
        fi
        [ "$(now_ms)" -lt "$end" ] || break
        sleep 0.05
    done
    echo "    $name's log has no /$re/ within $limit s"
    return 1
}

# wait_up A B FROM_A FROM_B SECONDS: both ends log the link Up again.
wait_up() {
    local t0 rc=0
    t0=$(now_ms)
    wait_log "$1" "$3" "link $2: .*=> Up" "$5" || rc=1
    wait_log "$2" "$4" "link $1: .*=> Up" "$5" || rc=1
    [ $rc = 0 ] && echo "    $1-$2 up again after $(( $(now_ms) - t0 )) ms"
    return $rc
}

# ---------------------------------------------------------------- set-up

echo "== partition tests: namespaces ${PFX}*, work folder $WORK"
{
    echo "# The default herd, one network namespace per server (tests/partition.sh)."
    declare -A nbrs=()
    for l in "${LINKS[@]}"; do
        nbrs[${l%-*}]+=" ${l#*-}"
        nbrs[${l#*-}]+=" ${l%-*}"
    done
    for name in "${NAMES[@]}"; do
        echo "$name ${IP[$name]}:${PORT[$name]} peer=${IP[$name]}:$((PORT[$name] + 10000))${nbrs[$name]}"
    done
} >"$WORK/herd"

setup() {
    local name a b
    for name in "${NAMES[@]}"; do
        ip netns add "$(ns "$name")" || return 1
        ip -n "$(ns "$name")" link set lo up || return 1
        # The server's own address lives on lo, so it stays local whichever links are down.
        ip -n "$(ns "$name")" addr add "${IP[$name]}/32" dev lo || return 1
    done
    for l in "${LINKS[@]}"; do
        a=${l%-*} b=${l#*-}
        ip -n "$(ns "$a")" link add "to-$b" type veth peer name "to-$a" netns "$(ns "$b")" || return 1
        link_set "$a" "$b" up && routes "$a" "$b" || return 1
    done
    start_servers
    wait_all_links_up
}

# start_servers [tls]: every server in its namespace (appending to its log),
# with peer TLS (the certificates in $WORK/tls) if asked.
start_servers() {
    local name tls=()
    for name in "${NAMES[@]}"; do
        FROM[$name]=$(log_lines "$name" 2>/dev/null || echo 0)
        if [ "${1:-}" = tls ]; then
            tls=(--peer-cert "$WORK/tls/$name.pem" --peer-key "$WORK/tls/$name.key"
                 --peer-ca "$WORK/tls/ca.pem")
        fi
        ip netns exec "$(ns "$name")" "$BIN" -c "$WORK/herd" -l "$WORK/$name.log" \
            --places-url https://127.0.0.1:9/x "${tls[@]}" "$name" >>"$WORK/$name.out" 2>&1 &
        PID[$name]=$!
    done
}

# Every server logs every one of its links up since start_servers.
wait_all_links_up() {
    local l a b
    for l in "${LINKS[@]}"; do
        a=${l%-*} b=${l#*-}
        wait_log "$a" "${FROM[$a]}" "link $b: .*=> Up" 5 || return 1
        wait_log "$b" "${FROM[$b]}" "link $a: .*=> Up" 5 || return 1
    done
}

# Stops every server (SIGTERM; they are this shell's own jobs) and waits.
stop_servers() {
    local name
    for name in "${NAMES[@]}"; do kill "${PID[$name]}" 2>/dev/null; done
    for name in "${NAMES[@]}"; do wait "${PID[$name]}" 2>/dev/null; done
}

if ! setup; then
    echo "partition: set-up failed"
    for name in "${NAMES[@]}"; do
        echo "--- $name"; tail -n 5 "$WORK/$name.out" "$WORK/$name.log" 2>/dev/null
    done
    echo "partition: 0 passed, 1 failed"
    exit 1
fi
echo "    five servers up, all six links up ($(( $(date +%s) - STARTED )) s)"

alive() { # every server still running
    local name rc=0
    for name in "${NAMES[@]}"; do
        kill -0 "${PID[$name]}" 2>/dev/null || { echo "    $name has exited"; rc=1; }
    done
    return $rc
}

T0=$(date +%s)
stamp() { printf '%d.%09d' "$((T0 + $1))" "$2"; } # a client time, seconds after T0

# ---------------------------------------------------------------- cases

case_baseline() {
    local id="base-$$" at
    at=$(iamat Riley "$id" "$(stamp 0 1)") || return 1
    echo "    Riley: $at"
    wait_all "$id" "$at" 5 "${NAMES[@]}"
}

case_one_link() {
    local rc=0 at1 at2 lr lj
    lr=$(log_lines Riley) lj=$(log_lines Juzang)
    cut Riley Juzang
    client Riley 30 load "load2r-$$" 60 0.1 1.0 >"$WORK/load.Riley" 2>&1 &
    local p1=$!
    client Juzang 30 load "load2j-$$" 60 0.1 1.0 >"$WORK/load.Juzang" 2>&1 &
    local p2=$!
    at1=$(iamat Riley "cut1r-$$" "$(stamp 1 1)") || rc=1
    echo "    Riley: $at1"
    wait_all "cut1r-$$" "$at1" 5 Campbell Juzang Bernard Jaquez || rc=1
    at2=$(iamat Juzang "cut1j-$$" "$(stamp 1 2)") || rc=1
    echo "    Juzang: $at2"
    wait_all "cut1j-$$" "$at2" 5 Riley Jaquez || rc=1
    # The cut is seen: silence (5 s) closes the link on both ends.
    wait_log Riley "$lr" "link Juzang: Up => " 8 || rc=1
    wait_log Juzang "$lj" "link Riley: Up => " 8 || rc=1
    wait "$p1" || rc=1
    echo "    Riley's clients: $(cat "$WORK/load.Riley")"
    wait "$p2" || rc=1
    echo "    Juzang's clients: $(cat "$WORK/load.Juzang")"
    lr=$(log_lines Riley) lj=$(log_lines Juzang)
    heal Riley Juzang
    wait_up Riley Juzang "$lr" "$lj" 10 || rc=1
    alive || rc=1
    return $rc
}

case_split() {
    local rc=0 lr lj lu a_r a_o b_r b_o
    lr=$(log_lines Riley) lj=$(log_lines Jaquez) lu=$(log_lines Juzang)
    cut Riley Jaquez
    cut Riley Juzang
    # Client A: Riley's update is the newer. Client B: the other side's is.
    a_r=$(iamat Riley "splitA-$$" "$(stamp 2 2)") || rc=1
    a_o=$(iamat Bernard "splitA-$$" "$(stamp 2 1)") || rc=1
    b_r=$(iamat Riley "splitB-$$" "$(stamp 2 1)") || rc=1
    b_o=$(iamat Campbell "splitB-$$" "$(stamp 2 2)") || rc=1
    printf '    %s\n' "Riley: $a_r" "Bernard: $a_o" "Riley: $b_r" "Campbell: $b_o"
    echo "    while split, each side keeps its own view:"
    wait_all "splitA-$$" "$a_o" 5 Jaquez Juzang Campbell Bernard || rc=1
    wait_all "splitB-$$" "$b_o" 5 Jaquez Juzang Campbell Bernard || rc=1
    wait_all "splitA-$$" "$a_r" 1 Riley || rc=1
    wait_all "splitB-$$" "$b_r" 1 Riley || rc=1
    # Let both sides notice (silence, 5 s), so the join goes through catch-up.
    wait_log Riley "$lr" "link Jaquez: Up => " 8 || rc=1
    wait_log Riley "$lr" "link Juzang: Up => " 8 || rc=1
    lr=$(log_lines Riley) lj=$(log_lines Jaquez) lu=$(log_lines Juzang)
    heal Riley Jaquez
    heal Riley Juzang
    echo "    after the join, all five agree on the newest:"
    wait_all "splitA-$$" "$a_r" 15 "${NAMES[@]}" || rc=1
    wait_all "splitB-$$" "$b_o" 15 "${NAMES[@]}" || rc=1
    wait_up Riley Jaquez "$lr" "$lj" 10 || rc=1
    wait_up Riley Juzang "$lr" "$lu" 10 || rc=1
    alive || rc=1
    return $rc
}

NETEM_LINKS=(Riley-Jaquez Jaquez-Bernard Juzang-Campbell)
QDISC=${PARTITION_QDISC:-netem delay 100ms loss 10%}
qdisc_clear() {
    local l
    for l in "${NETEM_LINKS[@]}"; do
        ip -n "$(ns "${l%-*}")" qdisc del dev "to-${l#*-}" root 2>/dev/null
        ip -n "$(ns "${l#*-}")" qdisc del dev "to-${l%-*}" root 2>/dev/null
    done
}

case_netem() {
    local rc=0 l a b at1 at2
    command -v tc >/dev/null 2>&1 || { echo "    skipped: no tc command"; return 2; }
    for l in "${NETEM_LINKS[@]}"; do
        a=${l%-*} b=${l#*-}
        # shellcheck disable=SC2086 # QDISC is words on purpose
        if ! ip netns exec "$(ns "$a")" tc qdisc add dev "to-$b" root $QDISC 2>"$WORK/tc.err" ||
            ! ip netns exec "$(ns "$b")" tc qdisc add dev "to-$a" root $QDISC 2>"$WORK/tc.err"; then
            echo "    skipped: tc $QDISC unavailable ($(head -n 1 "$WORK/tc.err"))"
            qdisc_clear
            return 2
        fi
        echo "    $a-$b: $QDISC, both ways"
    done
    at1=$(iamat Riley "netemR-$$" "$(stamp 3 1)") || rc=1
    at2=$(iamat Campbell "netemC-$$" "$(stamp 3 2)") || rc=1
    echo "    Riley: $at1"
    echo "    Campbell: $at2"
    wait_all "netemR-$$" "$at1" 10 "${NAMES[@]}" || rc=1
    wait_all "netemC-$$" "$at2" 10 "${NAMES[@]}" || rc=1
    (client Riley 30 load "load4r-$$" 20 0.05 1.0) >"$WORK/load.netem" 2>&1 || rc=1
    echo "    Riley's clients: $(cat "$WORK/load.netem")"
    qdisc_clear
    alive || rc=1
    return $rc
}

case_silent_cut() {
    # Only one end goes down: the other end keeps its route but no carrier, so
    # what it sends is dropped without an error (its dials hang until timed out).
    local rc=0 name at lj lu lb lc
    local -A job=()
    lj=$(log_lines Jaquez) lu=$(log_lines Juzang) lb=$(log_lines Bernard) lc=$(log_lines Campbell)
    echo "    cut Jaquez-Bernard at Bernard's end only (Jaquez sends into the void)"
    ip -n "$(ns Bernard)" link set to-Jaquez down || rc=1
    echo "    cut Juzang-Campbell at Campbell's end only (Juzang sends into the void)"
    ip -n "$(ns Campbell)" link set to-Juzang down || rc=1
    for name in "${NAMES[@]}"; do
        client "$name" 30 load "load5-$name-$$" 80 0.1 1.0 >"$WORK/load5.$name" 2>&1 &
        job[$name]=$!
    done
    at=$(iamat Riley "silent-$$" "$(stamp 4 1)") || rc=1
    echo "    Riley: $at"
    wait_all "silent-$$" "$at" 5 "${NAMES[@]}" || rc=1
    wait_log Jaquez "$lj" "link Bernard: Up => " 8 || rc=1
    wait_log Juzang "$lu" "link Campbell: Up => " 8 || rc=1
    for name in "${NAMES[@]}"; do
        wait "${job[$name]}" || rc=1
        echo "    $name's clients: $(cat "$WORK/load5.$name")"
    done
    lj=$(log_lines Jaquez) lu=$(log_lines Juzang) lb=$(log_lines Bernard) lc=$(log_lines Campbell)
    heal Jaquez Bernard
    heal Juzang Campbell
    wait_up Jaquez Bernard "$lj" "$lb" 10 || rc=1
    wait_up Juzang Campbell "$lu" "$lc" 10 || rc=1
    alive || rc=1
    return $rc
}

case_tls() {
    # The same herd again with peer TLS: every link a mutual TLS 1.3
    # connection, through a cut and a heal (fresh handshakes on the way back).
    local rc=0 name at1 at2 lr lj
    "$BIN" certs "$WORK/herd" "$WORK/tls" >"$WORK/certs.out" 2>&1 ||
        { echo "    proxy-herd certs failed: $(tail -n 1 "$WORK/certs.out")"; return 1; }
    stop_servers
    start_servers tls
    wait_all_links_up || return 1
    for name in "${NAMES[@]}"; do
        wait_log "$name" "${FROM[$name]}" "peer-out .*: TLS up \(TLSv1_3" 1 || rc=1
        if tail -n +"$((FROM[$name] + 1))" "$WORK/$name.log" | grep -q plaintext; then
            echo "    $name logged plaintext on a TLS herd"
            rc=1
        fi
    done
    [ $rc = 0 ] && echo "    five servers restarted with peer TLS, all six links up over TLS 1.3"
    at1=$(iamat Riley "tls1-$$" "$(stamp 5 1)") || rc=1
    echo "    Riley: $at1"
    wait_all "tls1-$$" "$at1" 5 "${NAMES[@]}" || rc=1
    lr=$(log_lines Riley) lj=$(log_lines Juzang)
    cut Riley Juzang
    client Riley 30 load "load6r-$$" 40 0.1 1.0 >"$WORK/load.tls" 2>&1 &
    local p1=$!
    at2=$(iamat Riley "tls2-$$" "$(stamp 5 2)") || rc=1
    echo "    Riley: $at2"
    wait_all "tls2-$$" "$at2" 5 Juzang Campbell Bernard || rc=1
    wait_log Riley "$lr" "link Juzang: Up => " 8 || rc=1
    wait_log Juzang "$lj" "link Riley: Up => " 8 || rc=1
    wait "$p1" || rc=1
    echo "    Riley's clients: $(cat "$WORK/load.tls")"
    lr=$(log_lines Riley) lj=$(log_lines Juzang)
    heal Riley Juzang
    wait_up Riley Juzang "$lr" "$lj" 10 || rc=1
    wait_log Riley "$lr" "peer-out Juzang#[0-9]+: TLS up" 1 || rc=1
    wait_log Juzang "$lj" "peer-out Riley#[0-9]+: TLS up" 1 || rc=1
    alive || rc=1
    return $rc
}

PASSED=0 FAILED=0 SKIPPED=0
run_case() {
    local title=$1 fn=$2 t0 rc
    echo "== $title"
    t0=$(now_ms)
    $fn
    rc=$?
    case $rc in
        0) echo "PASS $title ($(( $(now_ms) - t0 )) ms)"; PASSED=$((PASSED + 1)) ;;
        2) echo "SKIP $title"; SKIPPED=$((SKIPPED + 1)) ;;
        *) echo "FAIL $title ($(( $(now_ms) - t0 )) ms)"; FAILED=$((FAILED + 1)) ;;
    esac
}

run_case "1 baseline: an update at Riley reaches all five" case_baseline
run_case "2 Riley-Juzang cut: updates go around, Riley and Juzang stay prompt" case_one_link
run_case "3 Riley split off, updated on both sides, joined: all agree on the newest" case_split
run_case "4 netem delay and loss on three links: updates still converge" case_netem
run_case "5 one-sided cuts: clients of every server stay served" case_silent_cut
run_case "6 the herd on peer TLS: linked over TLS, a cut goes around and heals with new handshakes" case_tls

[ "$FAILED" = 0 ] || PARTITION_KEEP=1
echo "== $SKIPPED skipped, $(( $(date +%s) - STARTED )) s in all"
echo "partition: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
